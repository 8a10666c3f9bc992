//! The load generator: K keep-alive HTTP/1.1 connections driven from one thread, each sending its
//! requests one after another (the next only once the previous response is fully read).
//!
//! One current-thread tokio runtime is enough to keep Envoy's single worker busy, and it leaves the
//! machine's other core to Envoy: on a 2-core box a multi-threaded client would compete with the
//! process being measured. The client's own CPU is never counted; only Envoy's is.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use crate::procfs;

/// A request that takes longer than this counts as an error (Envoy answers direct responses in
/// microseconds; this only keeps a wedged Envoy from hanging the benchmark).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The one request every case is sent, prepared once.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    uri: Uri,
    headers: HeaderMap,
}

impl RequestTemplate {
    /// `GET path` with these headers (plus `host`).
    pub fn new(path: &str, headers: &[(&str, &str)]) -> Result<RequestTemplate, String> {
        let uri: Uri = path
            .parse()
            .map_err(|e| format!("bad path {path:?}: {e}"))?;
        let mut map = HeaderMap::new();
        map.insert("host", HeaderValue::from_static("bench.palisade.test"));
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("bad header name {name:?}: {e}"))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| format!("bad header value: {e}"))?;
            map.append(name, value);
        }
        Ok(RequestTemplate { uri, headers: map })
    }

    fn build(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// One load phase against one Envoy.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Envoy's listener port on 127.0.0.1.
    pub port: u16,
    /// Envoy's process id, whose CPU time is measured.
    pub pid: u32,
    /// K: keep-alive connections, each with one request in flight at a time.
    pub connections: usize,
    /// Requests sent (over the same connections) before measuring starts.
    pub warmup: u64,
    /// Requests in the measured phase.
    pub requests: u64,
}

/// Responses that were not a plain 200, and transport errors.
#[derive(Debug, Clone, Default)]
pub struct Failures {
    /// Non-200 statuses by code.
    pub statuses: BTreeMap<u16, u64>,
    /// Connection or protocol errors, and timeouts.
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Failures {
    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty() && self.errors == 0
    }

    fn merge(&mut self, other: Failures) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_insert(0) += n;
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{n}× status {s}"))
            .collect();
        if self.errors > 0 {
            parts.push(format!(
                "{} errors (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        f.write_str(&parts.join(", "))
    }
}

/// What one measured phase cost Envoy.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Envoy's user + system CPU over the measured phase, in clock ticks.
    pub cpu_ticks: u64,
    /// Wall time of the measured phase.
    pub wall: Duration,
    /// Responses received in the measured phase (200 or not).
    pub completed: u64,
    /// Failures in either phase; a phase with failures measures the wrong thing.
    pub failures: Failures,
}

pub(crate) type Sender = SendRequest<Empty<Bytes>>;

/// Open `load.connections` connections, send `load.warmup` requests, then measure Envoy's CPU
/// over `load.requests` more. Connections are closed afterwards.
pub fn run(rt: &Runtime, load: Load, template: &RequestTemplate) -> Result<Measured, String> {
    let template = Arc::new(template.clone());
    rt.block_on(async move {
        let mut senders = Vec::with_capacity(load.connections);
        for _ in 0..load.connections.max(1) {
            senders.push(connect(load.port).await?);
        }
        let mut failures = Failures::default();
        let warm_started = Instant::now();
        let (senders, warmed, warm_failures) = phase(senders, load.warmup, &template).await;
        failures.merge(warm_failures);
        let requests = measured_requests(load.requests, warmed, warm_started.elapsed());

        let cpu_before = procfs::cpu_ticks(load.pid)?;
        let started = Instant::now();
        let (senders, completed, measured_failures) = phase(senders, requests, &template).await;
        let wall = started.elapsed();
        let cpu_after = procfs::cpu_ticks(load.pid)?;
        drop(senders);
        failures.merge(measured_failures);
        Ok(Measured {
            cpu_ticks: cpu_after.saturating_sub(cpu_before),
            wall,
            completed,
            failures,
        })
    })
}

/// Longest a measured phase should take. A case slow enough to exceed it at the requested count
/// (jwt_auth verifying RSA on every request: ~0.5 ms each) is measured over fewer requests, sized
/// from its warm-up rate, so `make bench` stays within its time budget. CPU per request is an
/// average, so the figure stays comparable; at least 1000 requests are always measured.
const MEASURED_PHASE_BUDGET: Duration = Duration::from_secs(3);

fn measured_requests(requested: u64, warmed: u64, warm_wall: Duration) -> u64 {
    if warmed == 0 || warm_wall.is_zero() {
        return requested;
    }
    let rate = warmed as f64 / warm_wall.as_secs_f64();
    let affordable = (rate * MEASURED_PHASE_BUDGET.as_secs_f64()) as u64;
    requested.min(affordable.max(1_000))
}

pub(crate) async fn connect(port: u16) -> Result<Sender, String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
    tokio::spawn(async move {
        // Ends when the sender is dropped (or the peer closes); errors surface on the sender.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Send `total` requests over `senders`, one in flight per connection; connections take the next
/// request number from a shared counter, so a slow connection does not leave a tail. Connections
/// that fail are dropped (the others take over their share).
async fn phase(
    senders: Vec<Sender>,
    total: u64,
    template: &Arc<RequestTemplate>,
) -> (Vec<Sender>, u64, Failures) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for sender in senders {
        tasks.spawn(drive(
            sender,
            Arc::clone(&next),
            total,
            Arc::clone(template),
        ));
    }
    let mut alive = Vec::new();
    let mut completed = 0;
    let mut failures = Failures::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((sender, done, f)) => {
                alive.extend(sender);
                completed += done;
                failures.merge(f);
            }
            Err(e) => {
                failures.errors += 1;
                failures.first_error.get_or_insert(format!("task: {e}"));
            }
        }
    }
    (alive, completed, failures)
}

async fn drive(
    mut sender: Sender,
    next: Arc<AtomicU64>,
    total: u64,
    template: Arc<RequestTemplate>,
) -> (Option<Sender>, u64, Failures) {
    let mut done = 0;
    let mut failures = Failures::default();
    while next.fetch_add(1, Ordering::Relaxed) < total {
        match tokio::time::timeout(REQUEST_TIMEOUT, send(&mut sender, &template)).await {
            Ok(Ok(status)) => {
                done += 1;
                if status != 200 {
                    *failures.statuses.entry(status).or_insert(0) += 1;
                }
            }
            Ok(Err(e)) => {
                failures.errors += 1;
                failures.first_error = Some(e);
                return (None, done, failures);
            }
            Err(_) => {
                failures.errors += 1;
                failures.first_error = Some(format!("no response within {REQUEST_TIMEOUT:?}"));
                return (None, done, failures);
            }
        }
    }
    (Some(sender), done, failures)
}

pub(crate) async fn send(sender: &mut Sender, template: &RequestTemplate) -> Result<u16, String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let response = sender
        .send_request(template.build())
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?;
    Ok(status)
}
