//! `palisade-upstream`: a small HTTP/1.1 echo server used as the real
//! upstream behind Envoy in Palisade's end-to-end tests and in the demo.
//!
//! Every request (except the control endpoints below) is answered with
//! `200 OK`, `content-type: application/json` and a JSON description of
//! what the upstream received:
//!
//! ```json
//! {
//!   "method": "POST",
//!   "path": "/a/b",
//!   "query": "x=1&y=2",
//!   "args": {"x": "1", "y": "2"},
//!   "headers": {"content-type": "application/json", "host": "..."},
//!   "body": "{\"k\":1}",
//!   "body_json": {"k": 1},
//!   "body_len": 7
//! }
//! ```
//!
//! * `path` excludes the query; `query` is the raw query string (`""` when
//!   absent).
//! * `args` holds the percent/form-decoded query parameters; when a name is
//!   repeated, the **last value wins**.
//! * `headers` uses lowercase names; repeated headers are joined with `", "`.
//! * `body` is the body as (lossy) UTF-8 text, `body_json` the parsed body if
//!   it is valid JSON (else `null`), `body_len` its length in bytes.
//!
//! # Controls
//!
//! A request can steer the response through a request header or the
//! equivalent query parameter (the header wins when both are present):
//!
//! | Header                | Query parameter      | Effect |
//! |-----------------------|----------------------|--------|
//! | `x-upstream-status`   | `upstream_status`    | respond with this status (200–999); the body is still the echo JSON |
//! | `x-upstream-delay-ms` | `upstream_delay_ms`  | wait this many milliseconds (clamped to 60000) before responding |
//! | `x-upstream-reset`    | `upstream_reset`     | `1`/`true`: after the optional delay, reset the TCP connection (RST) without any response |
//! | `x-upstream-header`   | `upstream_header`    | `name=value` response header(s) to add; may repeat and/or be comma-separated (`a=1, b=2`) |
//! | `x-upstream-body`     | `upstream_body`      | respond with exactly this body instead of the echo JSON |
//!
//! Headers from `x-upstream-header` replace a default header of the same name
//! (e.g. `content-type`); repeating a name in the list appends further values.
//! An invalid control value gets a `400` with `{"error": "..."}`.
//!
//! # Control endpoints (not counted in [`Stats`])
//!
//! * `GET /__stats` returns the [`Stats`] as JSON.
//! * `POST /__reset_stats` resets them (see [`Upstream::reset_stats`]) and
//!   returns the new [`Stats`] as JSON.
//!
//! In process, [`Upstream::arrivals`] also gives when each counted request arrived (for tests of
//! request timing, such as rate_limit's shaping).
//!
//! Connections are HTTP/1.1 keep-alive, like Envoy expects from an upstream.
//!
//! # Example
//!
//! ```no_run
//! let upstream = palisade_upstream::Upstream::start("127.0.0.1:0")?;
//! println!("upstream on port {}", upstream.port());
//! assert_eq!(upstream.stats().hits, 0);
//! # Ok::<(), std::io::Error>(())
//! ```

mod controls;
mod echo;
mod server;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long [`Upstream`]'s `Drop` waits for its worker threads to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// A running echo server. It serves on a background multi-thread Tokio
/// runtime (2 workers) and shuts down — closing its listener and every open
/// connection — when dropped.
pub struct Upstream {
    addr: SocketAddr,
    counters: Arc<Counters>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Upstream {
    /// Binds `addr` (e.g. `"127.0.0.1:0"` for an ephemeral port) and starts
    /// serving. The socket is bound before this returns, so connections can
    /// be made as soon as it does.
    pub fn start(addr: &str) -> io::Result<Upstream> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("palisade-upstream")
            .enable_all()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };

        let counters = Arc::new(Counters::default());
        runtime.spawn(server::accept_loop(listener, Arc::clone(&counters)));

        Ok(Upstream {
            addr,
            counters,
            runtime: Some(runtime),
        })
    }

    /// The address actually bound (with the real port when `:0` was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A snapshot of the request counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Sets `hits` to 0 and `peak_in_flight` to the current `in_flight`, and forgets the
    /// arrivals.
    pub fn reset_stats(&self) {
        self.counters.reset();
    }

    /// When each counted request arrived (its headers were read), oldest first: the most recent
    /// [`MAX_ARRIVALS`] since start or the last reset. For tests of request timing (shaping).
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.counters.arrivals()
    }
}

/// Most arrivals an [`Upstream`] remembers (the oldest are dropped first).
pub const MAX_ARRIVALS: usize = 10_000;

/// One request as it reached the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// When its headers were read (monotonic clock).
    pub at: std::time::Instant,
    pub method: String,
    /// The path with the query, as received.
    pub path: String,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking is not allowed inside an async context: stop without
            // waiting for the worker threads.
            runtime.shutdown_background();
        } else {
            // Wait for the workers, so the listener is closed on return.
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Request counters of an [`Upstream`]; control endpoints are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests currently being handled (arrived, not yet answered/aborted).
    pub in_flight: u64,
    /// Highest `in_flight` seen since start or the last reset.
    pub peak_in_flight: u64,
    /// Requests received since start or the last reset.
    pub hits: u64,
}

/// Shared, lock-free counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    hits: AtomicU64,
    arrivals: std::sync::Mutex<std::collections::VecDeque<Arrival>>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            peak_in_flight: self.peak_in_flight.load(Ordering::SeqCst),
            hits: self.hits.load(Ordering::SeqCst),
        }
    }

    fn arrivals_lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Arrival>> {
        self.arrivals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals_lock().iter().cloned().collect()
    }

    /// Records when a counted request arrived.
    pub(crate) fn arrived(&self, method: &str, path: &str) {
        let mut arrivals = self.arrivals_lock();
        if arrivals.len() >= MAX_ARRIVALS {
            arrivals.pop_front();
        }
        arrivals.push_back(Arrival {
            at: std::time::Instant::now(),
            method: method.to_owned(),
            path: path.to_owned(),
        });
    }

    pub(crate) fn reset(&self) {
        self.arrivals_lock().clear();
        self.hits.store(0, Ordering::SeqCst);
        self.peak_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Records an arriving request; the returned guard marks it finished
    /// when dropped (handler done, or connection aborted mid-request).
    pub(crate) fn request_started(self: &Arc<Self>) -> InFlightGuard {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(Arc::clone(self))
    }
}

/// Decrements `in_flight` exactly once, on drop.
pub(crate) struct InFlightGuard(Arc<Counters>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_tracks_in_flight_and_peak() {
        let counters = Arc::new(Counters::default());
        let a = counters.request_started();
        let b = counters.request_started();
        assert_eq!(
            counters.snapshot(),
            Stats {
                in_flight: 2,
                peak_in_flight: 2,
                hits: 2
            }
        );
        drop(a);
        counters.reset();
        assert_eq!(
            counters.snapshot(),
            Stats {
                in_flight: 1,
                peak_in_flight: 1,
                hits: 0
            }
        );
        drop(b);
        assert_eq!(counters.snapshot().in_flight, 0);
    }

    #[test]
    fn arrivals_are_kept_in_order_bounded_and_cleared_by_reset() {
        let counters = Counters::default();
        counters.arrived("GET", "/a");
        counters.arrived("POST", "/b?x=1");
        let got = counters.arrivals();
        assert_eq!(
            got.iter()
                .map(|a| (a.method.as_str(), a.path.as_str()))
                .collect::<Vec<_>>(),
            vec![("GET", "/a"), ("POST", "/b?x=1")]
        );
        assert!(got[0].at <= got[1].at);
        for _ in 0..MAX_ARRIVALS {
            counters.arrived("GET", "/c");
        }
        let got = counters.arrivals();
        assert_eq!(got.len(), MAX_ARRIVALS);
        assert!(got.iter().all(|a| a.path == "/c"), "the oldest went first");
        counters.reset();
        assert!(counters.arrivals().is_empty());
    }
}
