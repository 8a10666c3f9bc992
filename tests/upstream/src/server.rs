//! Accept loop, per-connection serving (with abortive reset on request) and
//! request handling.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::controls::Controls;
use crate::{echo, Counters, Stats};

type Body = Full<Bytes>;

/// Back-off after a failed `accept` (e.g. EMFILE), so we never spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

const STATS_PATH: &str = "/__stats";
const RESET_STATS_PATH: &str = "/__reset_stats";

/// Accepts connections forever; each one is served on its own task.
pub(crate) async fn accept_loop(listener: TcpListener, counters: Arc<Counters>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(serve_connection(stream, Arc::clone(&counters)));
            }
            // Per-connection failures (ECONNABORTED) or resource exhaustion
            // (EMFILE): back off briefly and keep serving.
            Err(_) => tokio::time::sleep(ACCEPT_RETRY).await,
        }
    }
}

/// Serves one keep-alive HTTP/1.1 connection. A request carrying the reset
/// control signals `reset`; the connection is then dropped with `SO_LINGER`
/// set to zero so the peer receives an RST instead of a response. Every other
/// close stays graceful (FIN).
async fn serve_connection(mut stream: TcpStream, counters: Arc<Counters>) {
    // Best effort: small responses should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let reset = Arc::new(Notify::new());
    let service = {
        let reset = Arc::clone(&reset);
        service_fn(move |request| handle(request, Arc::clone(&counters), Arc::clone(&reset)))
    };
    let reset_requested = {
        // hyper only borrows the stream, so it is still ours after a reset.
        let connection = http1::Builder::new().serve_connection(TokioIo::new(&mut stream), service);
        tokio::select! {
            // Finished, closed by the peer or failed: nothing left to do.
            _ = connection => false,
            () = reset.notified() => true,
        }
    };
    if reset_requested {
        abort(stream);
    }
}

/// Closes `stream` abortively: with a zero linger, close() sends an RST.
fn abort(stream: TcpStream) {
    // If the option cannot be set the close is merely graceful; the client
    // still gets no response.
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Handles one request: control endpoint, or echo honouring the controls.
async fn handle(
    request: Request<Incoming>,
    counters: Arc<Counters>,
    reset: Arc<Notify>,
) -> Result<Response<Body>, hyper::Error> {
    if let Some(response) = control_endpoint(&request, &counters) {
        return Ok(response);
    }
    // Dropped when this future completes or is dropped with the connection.
    let _in_flight = counters.request_started();
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    counters.arrived(request.method().as_str(), path);

    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let query = echo::query_pairs(parts.uri.query().unwrap_or(""));
    let controls = match Controls::parse(&parts.headers, &query) {
        Ok(controls) => controls,
        Err(message) => return Ok(error_response(StatusCode::BAD_REQUEST, &message)),
    };

    if let Some(delay) = controls.delay {
        tokio::time::sleep(delay).await;
    }
    if controls.reset {
        reset.notify_one();
        // The connection task now drops this future along with the socket.
        return std::future::pending().await;
    }
    Ok(echo_response(&parts, &query, &body, controls))
}

/// Answers `GET /__stats` and `POST /__reset_stats` (405 for other methods);
/// `None` for any other path.
fn control_endpoint(request: &Request<Incoming>, counters: &Counters) -> Option<Response<Body>> {
    let path = request.uri().path();
    let method = request.method();
    if path == STATS_PATH {
        Some(if method == Method::GET {
            stats_response(counters.snapshot())
        } else {
            method_not_allowed("GET")
        })
    } else if path == RESET_STATS_PATH {
        Some(if method == Method::POST {
            counters.reset();
            stats_response(counters.snapshot())
        } else {
            method_not_allowed("POST")
        })
    } else {
        None
    }
}

fn echo_response(
    parts: &Parts,
    query: &[(String, String)],
    body: &[u8],
    controls: Controls,
) -> Response<Body> {
    let payload = match controls.body {
        Some(custom) => custom,
        None => Bytes::from(echo::echo_json(parts, query, body).to_string()),
    };
    let mut response = json_response(controls.status, payload);
    apply_extra_headers(response.headers_mut(), controls.headers);
    response
}

/// The first occurrence of a name replaces any default header of that name;
/// later occurrences add further values.
fn apply_extra_headers(target: &mut HeaderMap, extra: Vec<(HeaderName, HeaderValue)>) {
    let mut seen = HashSet::new();
    for (name, value) in extra {
        if seen.insert(name.clone()) {
            target.insert(name, value);
        } else {
            target.append(name, value);
        }
    }
}

fn stats_response(stats: Stats) -> Response<Body> {
    match serde_json::to_vec(&stats) {
        Ok(json) => json_response(StatusCode::OK, Bytes::from(json)),
        Err(err) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

fn method_not_allowed(allowed: &'static str) -> Response<Body> {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("use {allowed} for this endpoint"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    response
}

fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let json = serde_json::json!({ "error": message }).to_string();
    json_response(status, Bytes::from(json))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
