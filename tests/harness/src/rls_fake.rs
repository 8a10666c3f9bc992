//! A fault-injecting stand-in for a rate limit service (Envoy's RLS v3 gRPC API): a native HTTP/2
//! server on a free loopback port that answers `ShouldRateLimit` as the test scripts it — OK,
//! OVER_LIMIT with or without `statuses` or headers, UNKNOWN, slow past any timeout, gRPC error
//! statuses, malformed bytes in a well-framed message, a body that is not gRPC framing at all, an
//! oversized message, a reset stream — and records every request it got (decoded), so a test can
//! check what the module sent. The real engine (Limitador on Redis) is `rls.rs`'s; this one exists
//! for the faults a real engine does not produce on demand.
//!
//! hyper's HTTP/2 server with prost messages (the module's own, `rate_limit::global::rls`); no
//! tonic. Stopped, connections closed, on drop.

use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use prost::Message;
use rate_limit::global::rls::{
    Code, DescriptorStatus, HeaderValue as RlsHeader, ProtoDuration, RateLimit, RateLimitRequest,
    RateLimitResponse, Unit,
};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// How the stand-in answers the next requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Script {
    /// `overall_code: OK`, nothing else.
    Ok,
    /// OK with one status (limit per minute, remaining, seconds to reset).
    OkWithStatus {
        limit: u32,
        remaining: u32,
        reset_secs: i64,
    },
    /// `overall_code: OVER_LIMIT`, nothing else (what Limitador sends).
    OverLimit,
    /// OVER_LIMIT with one status, as envoyproxy/ratelimit sends it.
    OverLimitWithStatus { limit: u32, reset_secs: i64 },
    /// OVER_LIMIT with `response_headers_to_add`.
    OverLimitWithHeaders(Vec<(String, String)>),
    /// `overall_code: UNKNOWN`.
    Unknown,
    /// Answer OK after this long.
    Slow(Duration),
    /// A gRPC error status (trailers only).
    Status(u32),
    /// A well-framed gRPC message whose bytes are not a `RateLimitResponse`.
    Malformed,
    /// A response body that is not gRPC length-prefixed framing.
    BadFraming,
    /// A valid `RateLimitResponse` (OVER_LIMIT) of at least this many bytes.
    Oversized(usize),
    /// Reset the stream (RST_STREAM) instead of answering.
    Reset,
}

/// One request as the stand-in received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// `:path`, e.g. `/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
    pub path: String,
    pub content_type: Option<String>,
    /// The decoded message, if it decoded.
    pub request: Option<RateLimitRequest>,
}

impl Received {
    /// The first descriptor's entries as `(key, value)`.
    pub fn entries(&self) -> Vec<(String, String)> {
        self.request
            .as_ref()
            .and_then(|r| r.descriptors.first())
            .map(|d| {
                d.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct State {
    script: Mutex<Script>,
    received: Mutex<Vec<Received>>,
}

/// A running stand-in.
pub struct RlsFake {
    port: u16,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl RlsFake {
    /// Start on a free loopback port, answering `script`.
    pub fn start(script: Script) -> RlsFake {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("addr").port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("palisade-rls-fake")
            .enable_all()
            .build()
            .expect("runtime");
        let state = Arc::new(State {
            script: Mutex::new(script),
            received: Mutex::new(Vec::new()),
        });
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).expect("listener")
        };
        runtime.spawn(accept_loop(listener, Arc::clone(&state)));
        RlsFake {
            port,
            state,
            runtime: Some(runtime),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answer the next requests with `script`.
    pub fn set(&self, script: Script) {
        *lock(&self.state.script) = script;
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state.received).clone()
    }

    /// An Envoy cluster named `name` pointing at the stand-in over HTTP/2 (a YAML list item).
    pub fn cluster_yaml(&self, name: &str) -> String {
        cluster_yaml(name, self.port)
    }
}

/// An HTTP/2 cluster `name` at `127.0.0.1:<port>`, as a rate limit service needs
/// ([`crate::rls::grpc_cluster`] on loopback).
pub fn cluster_yaml(name: &str, port: u16) -> String {
    crate::rls::grpc_cluster(name, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

impl Drop for RlsFake {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { handle(req, state).await }
            });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The stream reset the service's error makes hyper send.
#[derive(Debug)]
struct ResetStream;

impl std::fmt::Display for ResetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted reset")
    }
}

impl std::error::Error for ResetStream {}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<GrpcBody>, ResetStream> {
    use http_body_util::BodyExt;
    let path = req.uri().path().to_owned();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request = body.get(5..).and_then(|m| RateLimitRequest::decode(m).ok());
    lock(&state.received).push(Received {
        path,
        content_type,
        request,
    });
    let script = lock(&state.script).clone();
    let message = match script {
        Script::Ok => answer(Code::Ok),
        Script::OkWithStatus {
            limit,
            remaining,
            reset_secs,
        } => {
            let mut r = answer(Code::Ok);
            r.statuses = vec![status(Code::Ok, limit, remaining, reset_secs)];
            r
        }
        Script::OverLimit => answer(Code::OverLimit),
        Script::OverLimitWithStatus { limit, reset_secs } => {
            let mut r = answer(Code::OverLimit);
            r.statuses = vec![status(Code::OverLimit, limit, 0, reset_secs)];
            r
        }
        Script::OverLimitWithHeaders(headers) => {
            let mut r = answer(Code::OverLimit);
            r.response_headers_to_add = headers
                .into_iter()
                .map(|(key, value)| RlsHeader {
                    key,
                    value,
                    raw_value: Vec::new(),
                })
                .collect();
            r
        }
        Script::Unknown => answer(Code::Unknown),
        Script::Slow(d) => {
            tokio::time::sleep(d).await;
            answer(Code::Ok)
        }
        Script::Status(code) => return Ok(trailers_only(code)),
        Script::Malformed => {
            return Ok(grpc_response(
                framed(b"\xff\xff\xff\xff not a RateLimitResponse"),
                0,
            ))
        }
        Script::BadFraming => {
            return Ok(grpc_response(
                Bytes::from_static(b"this is not gRPC framing"),
                0,
            ))
        }
        Script::Oversized(n) => {
            let mut r = answer(Code::OverLimit);
            r.raw_body = vec![b'x'; n];
            r
        }
        Script::Reset => return Err(ResetStream),
    };
    Ok(grpc_response(framed(&message.encode_to_vec()), 0))
}

fn answer(code: Code) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: code as i32,
        ..RateLimitResponse::default()
    }
}

fn status(code: Code, limit: u32, remaining: u32, reset_secs: i64) -> DescriptorStatus {
    DescriptorStatus {
        code: code as i32,
        current_limit: Some(RateLimit {
            requests_per_unit: limit,
            unit: Unit::Minute as i32,
            name: String::new(),
        }),
        limit_remaining: remaining,
        duration_until_reset: Some(ProtoDuration {
            seconds: reset_secs,
            nanos: 0,
        }),
    }
}

/// gRPC's length-prefixed message: not compressed, 4-byte big-endian length, the bytes.
fn framed(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    Bytes::from(out)
}

fn grpc_headers(response: &mut Response<GrpcBody>) {
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
}

/// A unary answer: headers, one data frame, trailers with `grpc-status`.
fn grpc_response(data: Bytes, code: u32) -> Response<GrpcBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code));
    let mut response = Response::new(GrpcBody {
        data: Some(data),
        trailers: Some(trailers),
    });
    grpc_headers(&mut response);
    response
}

/// An error: `grpc-status` in the headers and no body (gRPC's trailers-only response).
fn trailers_only(code: u32) -> Response<GrpcBody> {
    let mut response = Response::new(GrpcBody {
        data: None,
        trailers: None,
    });
    grpc_headers(&mut response);
    response
        .headers_mut()
        .insert("grpc-status", HeaderValue::from(code));
    response
        .headers_mut()
        .insert("grpc-message", HeaderValue::from_static("scripted%20error"));
    response
}

/// A body of at most one data frame, then trailers.
pub struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}
