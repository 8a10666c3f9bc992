//! The policy in the skeleton: read the request, ask [`Authenticator`], apply its verdict, count
//! it, publish the verified claims to the rest of the chain; and, for remote JWKS, run this
//! worker's fetch/publish cycle of [`crate::remote`] from the tick. All of it runs against the
//! skeleton's `Host`, so the worker (fetch leases, key-set installation, refetch deferral, paused
//! requests) is tested natively against the fake host (`filter/tests.rs`), not only through Envoy.
//!
//! Failure modes:
//! - a bad config is rejected at `on_configure` (Envoy refuses it);
//! - a request is denied (fail closed) whenever it cannot be verified: keys unavailable (503, or
//!   a bounded pause first), or a header rewrite that fails (503: a spoofed claim header that
//!   cannot be removed must not reach the upstream);
//! - remote JWKS fetch failures keep the last good keys, with backoff; shared-data errors are
//!   logged and retried on the next tick;
//! - a local reply that cannot be sent leaves the stream paused (it is never let through).
//!
//! Per-worker state (a Rust value, one per VM): the installed key sets, the verified-token cache,
//! the streams paused waiting for keys, and this worker's in-flight JWKS calls.

use crate::cache::TokenCache;
use crate::config::{Config, JwksSource, KeysUnavailable, Remote};
use crate::jwks::KeySet;
use crate::policy::{Authenticator, Mutation, Outcome, ProviderKeys, Verdict};
use crate::remote;
use crate::Reason;
use palisade_core::plugin::{
    CallResponse, Flow, HostStore, Kind, Metric, Policy, RootCx, Setup, StreamCx, StreamPolicy,
    Wake,
};
use palisade_core::{ConfigError, Decision, LocalReply, Timestamp};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

pub const PLUGIN: &str = "jwt_auth";
/// Tick period when some provider has a remote JWKS (reads one small shared-data key per provider).
const TICK: Duration = Duration::from_millis(250);
/// Largest JWKS document accepted from a remote server.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The plugin, for `export!` and the chain.
pub const KIND: Kind = Kind {
    name: PLUGIN,
    build,
};

struct Metrics {
    allowed: Metric,
    allowed_missing: Metric,
    bypassed: Metric,
    unmatched: Metric,
    cache_hits: Metric,
    denied: Vec<(Reason, Metric)>,
    fetch_success: Metric,
    fetch_failure: Metric,
    /// A tick declined an unknown-`kid` refetch (too soon after the last, or another worker's
    /// fetch holds the lease); it stays pending.
    refetch_deferred: Metric,
    paused: Metric,
    pause_timeouts: Metric,
    rewrite_failures: Metric,
    /// How long a JWKS fetch took, dispatch to response (or timeout/reset), in milliseconds.
    fetch_ms: Metric,
}

impl Metrics {
    fn define(setup: &Setup<'_>) -> Self {
        let m = |what: &str| setup.counter(what);
        Metrics {
            allowed: m("allowed"),
            allowed_missing: m("allowed_missing"),
            bypassed: m("bypassed"),
            unmatched: m("unmatched"),
            cache_hits: m("cache_hits"),
            denied: Reason::ALL
                .into_iter()
                .map(|r| (r, m(&format!("denied.{}", r.name()))))
                .collect(),
            fetch_success: m("jwks_fetch.success"),
            fetch_failure: m("jwks_fetch.failure"),
            refetch_deferred: m("jwks_fetch.refetch_deferred"),
            fetch_ms: setup.histogram("jwks_fetch.latency_ms"),
            paused: m("paused"),
            pause_timeouts: m("pause_timeouts"),
            rewrite_failures: m("rewrite_failures"),
        }
    }

    fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Allowed { cache_hit } => {
                self.allowed.inc();
                if cache_hit {
                    self.cache_hits.inc();
                }
            }
            Outcome::AllowedMissing => self.allowed_missing.inc(),
            Outcome::Bypassed => self.bypassed.inc(),
            Outcome::Unmatched => self.unmatched.inc(),
            Outcome::Denied(reason) => self.deny(reason),
        }
    }

    fn deny(&self, reason: Reason) {
        if let Some((_, m)) = self.denied.iter().find(|(r, _)| *r == reason) {
            m.inc();
        }
    }
}

/// A remote provider's fetch bookkeeping on this worker.
struct RemoteState {
    provider: usize,
    remote: Remote,
    keys: remote::Keys,
    /// A request saw an unknown `kid` in this key-set version (0: none installed): ask for a
    /// (rate-limited) refetch on the next tick, until a newer version is installed, whichever
    /// worker fetched it, or this worker's own refetch is dispatched.
    force: Option<u64>,
}

/// What one worker knows; shared by its root part and its streams.
struct Worker {
    auth: Authenticator,
    store: HostStore,
    metrics: Metrics,
    keys: Vec<Option<ProviderKeys>>,
    cache: TokenCache,
    remotes: Vec<RemoteState>,
    /// HTTP call token → index into `remotes`.
    calls: HashMap<u32, (usize, Timestamp)>,
    /// Streams paused until a key set arrives: context id → deadline.
    waiting: Vec<(u32, Timestamp)>,
}

impl Worker {
    /// Decide for a stream (not counted: the caller counts the final outcome).
    fn check(&mut self, cx: &StreamCx<'_>) -> Verdict {
        let verdict = self.auth.check(cx, &self.keys, &mut self.cache, cx.now());
        if let Some(p) = verdict.refetch {
            let seen = version_of(&self.keys, p);
            for r in self.remotes.iter_mut().filter(|r| r.provider == p) {
                r.force = Some(seen);
            }
        }
        verdict
    }

    /// Install a newer published key set of every remote provider, if any.
    fn install_published(&mut self) {
        for r in &mut self.remotes {
            let local = version_of(&self.keys, r.provider);
            if remote::published_version(&self.store, &r.keys) <= local {
                continue;
            }
            let Some((version, json)) = remote::read_document(&self.store, &r.keys) else {
                continue;
            };
            if version <= local {
                continue;
            }
            match KeySet::parse(&json, false) {
                Ok(set) => {
                    log::info!(
                        "palisade {PLUGIN}: installed key set version {version} ({} keys) from {}",
                        set.keys.len(),
                        r.keys.full(self.store.prefix())
                    );
                    if let Some(slot) = self.keys.get_mut(r.provider) {
                        *slot = Some(ProviderKeys {
                            version,
                            set: Rc::new(set),
                        });
                    }
                    // A set newer than the one that lacked the `kid` answers the ask.
                    if r.force.is_some_and(|seen| version > seen) {
                        r.force = None;
                    }
                }
                Err(e) => log::warn!("palisade {PLUGIN}: published key set unusable: {e}"),
            }
        }
    }

    /// Claim and dispatch due fetches (at most one in flight per provider on this worker).
    fn fetch_due(&mut self, cx: &mut RootCx<'_>) {
        let now = cx.now();
        for (i, r) in self.remotes.iter_mut().enumerate() {
            if self.calls.values().any(|(c, _)| *c == i) {
                continue;
            }
            let force = r.force.is_some();
            match remote::try_claim(&self.store, &r.keys, &r.remote, now, force) {
                Ok(false) => {
                    if force {
                        self.metrics.refetch_deferred.inc();
                    }
                    continue;
                }
                Ok(true) => {}
                Err(e) => {
                    log::warn!("palisade {PLUGIN}: JWKS fetch lease: {e}");
                    continue;
                }
            }
            r.force = None;
            let headers = [
                (":method", "GET"),
                (":path", r.remote.path.as_str()),
                (":authority", r.remote.authority.as_str()),
                ("accept", "application/json"),
                ("user-agent", "palisade-jwt-auth"),
            ];
            match cx.http_call(&r.remote.cluster, &headers, None, r.remote.timeout) {
                Ok(token) => {
                    self.calls.insert(token, (i, now));
                }
                Err(e) => {
                    log::warn!(
                        "palisade {PLUGIN}: JWKS fetch from cluster {}: {e}",
                        r.remote.cluster
                    );
                    self.metrics.fetch_failure.inc();
                    if let Err(e) = remote::record_failure(&self.store, &r.keys, now) {
                        log::warn!("palisade {PLUGIN}: {e}");
                    }
                }
            }
        }
    }

    /// A JWKS response: publish it (or back off), install what is published.
    fn on_fetched(&mut self, cx: &RootCx<'_>, index: usize, response: CallResponse) {
        let now = cx.now();
        let too_large = response.body_size > MAX_JWKS_BYTES;
        let body = if too_large {
            None
        } else {
            cx.call_response_body(response.body_size, MAX_JWKS_BYTES)
                .ok()
                .flatten()
        };
        let status = if too_large {
            Some(413)
        } else {
            response.status
        };
        let Some(r) = self.remotes.get(index) else {
            return;
        };
        let keys = r.keys.clone();
        let cluster = r.remote.cluster.clone();
        match remote::accept_response(status, body) {
            Ok(json) => match remote::publish(&self.store, &keys, &json, now) {
                Ok(version) => {
                    self.metrics.fetch_success.inc();
                    log::info!("palisade {PLUGIN}: fetched JWKS from cluster {cluster}, published version {version}");
                }
                Err(e) => {
                    self.metrics.fetch_failure.inc();
                    log::warn!("palisade {PLUGIN}: cannot publish JWKS: {e}");
                }
            },
            Err(why) => {
                self.metrics.fetch_failure.inc();
                let wait = remote::record_failure(&self.store, &keys, now);
                log::warn!(
                    "palisade {PLUGIN}: JWKS fetch from cluster {cluster} failed: {why}; keeping the last good keys, retry in {:?}",
                    wait.ok()
                );
            }
        }
        self.install_published();
    }

    /// Ask the skeleton to re-decide every paused stream (keys may have arrived, deadlines pass).
    fn retry_waiting(&self, cx: &mut RootCx<'_>) {
        for (id, _) in &self.waiting {
            cx.wake(Wake::Retry(*id));
        }
    }

    /// Carry out a final verdict for the current stream: rewrite or reply, and count it. A request
    /// whose rewrite fails is counted as a rewrite failure only (it never reaches the upstream).
    fn finish(&self, cx: &mut StreamCx<'_>, verdict: Verdict) -> Flow {
        if verdict.decision.is_continue() {
            for m in &verdict.mutations {
                let result = match m {
                    Mutation::Remove(name) => cx.set_request_header(name, None),
                    Mutation::Set(name, value) => cx.set_request_header(name, Some(value)),
                    Mutation::Path(path) => cx.set_request_header(":path", Some(path)),
                };
                if let Err(e) = result {
                    // Fail closed: a spoofed claim header we cannot remove must not go upstream.
                    log::error!("palisade {PLUGIN}: cannot rewrite the request ({e}); denying it");
                    self.metrics.rewrite_failures.inc();
                    let reply = LocalReply::new(503, "palisade_jwt_rewrite_failed")
                        .header("retry-after", "1")
                        .body("temporarily unavailable\n");
                    return Flow::reply_or_reset(reply);
                }
            }
            if let Some(claims) = verdict.claims {
                cx.set_claims(claims);
            }
        }
        self.metrics.record(verdict.outcome);
        // A reply that cannot be sent resets the stream: never let an unverified request through,
        // nor leave it hanging paused with no answer.
        match verdict.decision {
            Decision::Continue => Flow::Continue,
            Decision::Reply(reply) => Flow::reply_or_reset(reply),
        }
    }
}

fn build(bytes: &[u8], setup: &Setup<'_>) -> Result<Box<dyn Policy>, ConfigError> {
    let config = Config::parse(bytes)?;
    let remotes: Vec<RemoteState> = config
        .providers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match &p.jwks {
            JwksSource::Remote(r) => Some(RemoteState {
                provider: i,
                remote: r.clone(),
                keys: remote::Keys::new(&p.name, r),
                force: None,
            }),
            JwksSource::Inline(_) => None,
        })
        .collect();
    let store = setup.store(&config.scope);
    log::info!(
        "palisade {PLUGIN}: configured {} provider(s) ({} remote), {} rule(s), shared data under {}",
        config.providers.len(),
        remotes.len(),
        config.rules.len(),
        store.prefix().as_str()
    );
    let tick = (!remotes.is_empty()).then_some(TICK);
    let cache = TokenCache::new(config.cache_max_entries);
    if config.cache_max_entries > 0 && !cache.is_keyed() {
        log::warn!(
            "palisade {PLUGIN}: no random source for the token cache's key: caching is off, every token is verified"
        );
    }
    let auth = Authenticator::new(config);
    let keys = auth.inline_keys();
    let mut worker = Worker {
        auth,
        store,
        metrics: Metrics::define(setup),
        keys,
        cache,
        remotes,
        calls: HashMap::new(),
        waiting: Vec::new(),
    };
    // Another worker may have published already (a reload, or a later-starting worker).
    worker.install_published();
    Ok(Box::new(JwtAuth {
        tick,
        worker: Rc::new(RefCell::new(worker)),
    }))
}

struct JwtAuth {
    tick: Option<Duration>,
    worker: Rc<RefCell<Worker>>,
}

impl Policy for JwtAuth {
    fn stream(&self, context_id: u32) -> Box<dyn StreamPolicy> {
        Box::new(Stream {
            worker: Rc::clone(&self.worker),
            context_id,
        })
    }

    fn tick_period(&self) -> Option<Duration> {
        self.tick
    }

    fn on_tick(&self, cx: &mut RootCx<'_>) {
        if let Ok(mut w) = self.worker.try_borrow_mut() {
            w.install_published();
            w.fetch_due(cx);
            w.retry_waiting(cx);
        }
    }

    fn on_call_response(&self, cx: &mut RootCx<'_>, response: CallResponse) {
        let Ok(mut w) = self.worker.try_borrow_mut() else {
            return;
        };
        let Some((index, started)) = w.calls.remove(&response.token) else {
            return;
        };
        let took = cx.now().saturating_since(started);
        w.metrics
            .fetch_ms
            .record(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
        w.on_fetched(cx, index, response);
        w.retry_waiting(cx);
    }
}

struct Stream {
    worker: Rc<RefCell<Worker>>,
    context_id: u32,
}

impl StreamPolicy for Stream {
    fn on_request_headers(&mut self, cx: &mut StreamCx<'_>, _eos: bool) -> Flow {
        let Ok(mut w) = self.worker.try_borrow_mut() else {
            log::error!("palisade {PLUGIN}: worker state busy; denying the request");
            return deny_busy();
        };
        let verdict = w.check(cx);
        if verdict.keys_pending.is_some() {
            if let KeysUnavailable::Pause(max_wait) = w.auth.config().keys_unavailable {
                // Counted when finally decided (in `on_retry`).
                w.metrics.paused.inc();
                let deadline = cx.now().saturating_add(max_wait);
                w.waiting.push((self.context_id, deadline));
                return Flow::Pause;
            }
        }
        w.finish(cx, verdict)
    }

    /// Keys arrived, or a tick passed: decide again, or keep waiting until the deadline.
    fn on_retry(&mut self, cx: &mut StreamCx<'_>) -> Flow {
        let Ok(mut w) = self.worker.try_borrow_mut() else {
            return Flow::Pause;
        };
        let id = self.context_id;
        let Some(deadline) = w.waiting.iter().find(|(i, _)| *i == id).map(|(_, d)| *d) else {
            return Flow::Pause;
        };
        let verdict = w.check(cx);
        if verdict.keys_pending.is_some() && cx.now() < deadline {
            return Flow::Pause;
        }
        w.waiting.retain(|(i, _)| *i != id);
        if verdict.keys_pending.is_some() {
            w.metrics.pause_timeouts.inc();
        }
        w.finish(cx, verdict)
    }

    fn on_end(&mut self, _cx: &mut StreamCx<'_>) {
        let id = self.context_id;
        if let Ok(mut w) = self.worker.try_borrow_mut() {
            w.waiting.retain(|(i, _)| *i != id);
        }
    }
}

/// The version of a provider's installed key set (0: none yet).
fn version_of(keys: &[Option<ProviderKeys>], provider: usize) -> u64 {
    keys.get(provider)
        .and_then(Option::as_ref)
        .map_or(0, |k| k.version)
}

fn deny_busy() -> Flow {
    let reply = LocalReply::new(503, "palisade_jwt_busy")
        .header("retry-after", "1")
        .body("temporarily unavailable\n");
    Flow::reply_or_reset(reply)
}

#[cfg(test)]
mod tests;
