//! Wasm glue: read the request, ask [`Authenticator`], apply its verdict, count it; and, for remote
//! JWKS, run the fetch/publish cycle of [`crate::remote`] from the root context's `on_tick`.
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
use palisade_core::store::KeyPrefix;
use palisade_core::{Decision, Timestamp};
use palisade_host::metrics::Metric;
use palisade_host::proxy_wasm;
use palisade_host::request::HostRequest;
use palisade_host::store::HostStore;
use palisade_host::{dispatch, flow, http};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

const PLUGIN: &str = "jwt_auth";
/// Tick period when some provider has a remote JWKS (reads one small shared-data key per provider).
const TICK: Duration = Duration::from_millis(250);
/// Largest JWKS document accepted from a remote server.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[allow(unsafe_code)] // `main!` expands to the `#[no_mangle]` entry point the host calls.
mod entry {
    use super::*;
    proxy_wasm::main! {{
        palisade_host::init(PLUGIN, LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
    }}
}

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
}

impl Metrics {
    fn define() -> Self {
        let m = |what: &str| Metric::counter(&format!("palisade.{PLUGIN}.{what}"));
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
    /// A request saw an unknown `kid`: ask for a (rate-limited) refetch on the next tick.
    force: bool,
}

/// What one worker knows; shared by its root context and its streams.
struct Worker {
    auth: Authenticator,
    store: HostStore,
    metrics: Metrics,
    keys: Vec<Option<ProviderKeys>>,
    cache: TokenCache,
    remotes: Vec<RemoteState>,
    /// HTTP call token → index into `remotes`.
    calls: HashMap<u32, usize>,
    /// Streams paused until a key set arrives: context id → deadline.
    waiting: Vec<(u32, Timestamp)>,
}

impl Worker {
    /// Decide for the current stream (not counted: the caller counts the final outcome).
    fn check(&mut self, now: Timestamp) -> Verdict {
        let verdict = self
            .auth
            .check(&HostRequest, &self.keys, &mut self.cache, now);
        if let Some(p) = verdict.refetch {
            for r in self.remotes.iter_mut().filter(|r| r.provider == p) {
                r.force = true;
            }
        }
        verdict
    }

    /// Install a newer published key set of every remote provider, if any.
    fn install_published(&mut self) {
        for r in &self.remotes {
            let local = self
                .keys
                .get(r.provider)
                .and_then(Option::as_ref)
                .map_or(0, |k| k.version);
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
                }
                Err(e) => log::warn!("palisade {PLUGIN}: published key set unusable: {e}"),
            }
        }
    }

    /// Claim and dispatch due fetches (at most one in flight per provider on this worker).
    fn fetch_due(&mut self, now: Timestamp) {
        for (i, r) in self.remotes.iter_mut().enumerate() {
            if self.calls.values().any(|c| *c == i) {
                continue;
            }
            match remote::try_claim(&self.store, &r.keys, &r.remote, now, r.force) {
                Ok(false) => {
                    if r.force {
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
            r.force = false;
            let headers = [
                (":method", "GET"),
                (":path", r.remote.path.as_str()),
                (":authority", r.remote.authority.as_str()),
                ("accept", "application/json"),
                ("user-agent", "palisade-jwt-auth"),
            ];
            match dispatch::http_call(&r.remote.cluster, &headers, None, r.remote.timeout) {
                Ok(token) => {
                    self.calls.insert(token, i);
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
}

#[derive(Default)]
struct Root {
    worker: Option<Rc<RefCell<Worker>>>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let now = palisade_host::now();
        {
            let Ok(mut w) = worker.try_borrow_mut() else {
                return;
            };
            let Some(index) = w.calls.remove(&token) else {
                return;
            };
            let status = dispatch::call_response_status();
            let body = if body_size > MAX_JWKS_BYTES {
                None
            } else {
                dispatch::call_response_body(body_size, MAX_JWKS_BYTES)
                    .ok()
                    .flatten()
            };
            let status = if body_size > MAX_JWKS_BYTES {
                Some(413)
            } else {
                status
            };
            let Some(r) = w.remotes.get(index) else {
                return;
            };
            let keys = r.keys.clone();
            let cluster = r.remote.cluster.clone();
            match remote::accept_response(status, body) {
                Ok(json) => match remote::publish(&w.store, &keys, &json, now) {
                    Ok(version) => {
                        w.metrics.fetch_success.inc();
                        log::info!("palisade {PLUGIN}: fetched JWKS from cluster {cluster}, published version {version}");
                    }
                    Err(e) => {
                        w.metrics.fetch_failure.inc();
                        log::warn!("palisade {PLUGIN}: cannot publish JWKS: {e}");
                    }
                },
                Err(why) => {
                    w.metrics.fetch_failure.inc();
                    let wait = remote::record_failure(&w.store, &keys, now);
                    log::warn!(
                        "palisade {PLUGIN}: JWKS fetch from cluster {cluster} failed: {why}; keeping the last good keys, retry in {:?}",
                        wait.ok()
                    );
                }
            }
            w.install_published();
        }
        resume_waiting(&worker, now);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = palisade_host::load_config(PLUGIN, Config::parse) else {
            return false;
        };
        let remotes: Vec<RemoteState> = config
            .providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.jwks {
                JwksSource::Remote(r) => Some(RemoteState {
                    provider: i,
                    remote: r.clone(),
                    keys: remote::Keys::new(&p.name, r),
                    force: false,
                }),
                JwksSource::Inline(_) => None,
            })
            .collect();
        if !remotes.is_empty() {
            if let Err(e) = flow::set_tick_period(TICK) {
                log::error!("palisade {PLUGIN}: cannot start ticks for remote JWKS: {e}");
                return false;
            }
        }
        log::info!(
            "palisade {PLUGIN}: configured {} provider(s) ({} remote), {} rule(s), scope {}",
            config.providers.len(),
            remotes.len(),
            config.rules.len(),
            config.scope
        );
        let store = HostStore::new(KeyPrefix::new(PLUGIN, &config.scope));
        let cache = TokenCache::new(config.cache_max_entries);
        let auth = Authenticator::new(config);
        let keys = auth.inline_keys();
        let mut worker = Worker {
            auth,
            store,
            metrics: Metrics::define(),
            keys,
            cache,
            remotes,
            calls: HashMap::new(),
            waiting: Vec::new(),
        };
        // Another worker may have published already (a reload, or a later-starting worker).
        worker.install_published();
        self.worker = Some(Rc::new(RefCell::new(worker)));
        true
    }

    fn on_tick(&mut self) {
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let now = palisade_host::now();
        if let Ok(mut w) = worker.try_borrow_mut() {
            w.install_published();
            w.fetch_due(now);
        }
        resume_waiting(&worker, now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(Stream { worker, context_id }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Re-decide every paused stream whose keys have arrived, and time out the others.
fn resume_waiting(worker: &Rc<RefCell<Worker>>, now: Timestamp) {
    let ids: Vec<(u32, Timestamp)> = match worker.try_borrow() {
        Ok(w) if !w.waiting.is_empty() => w.waiting.clone(),
        _ => return,
    };
    for (id, deadline) in ids {
        if flow::set_effective_context(id).is_err() {
            // The stream is gone (client went away).
            forget(worker, id);
            continue;
        }
        let verdict = match worker.try_borrow_mut() {
            Ok(mut w) => w.check(now),
            Err(_) => return,
        };
        if verdict.keys_pending.is_some() && now < deadline {
            continue; // still waiting
        }
        forget(worker, id);
        let Ok(w) = worker.try_borrow() else {
            return;
        };
        if verdict.keys_pending.is_some() {
            w.metrics.pause_timeouts.inc();
        }
        w.metrics.record(verdict.outcome);
        let action = apply(&w, &verdict);
        drop(w);
        if action == Action::Continue {
            if let Err(e) = flow::resume_stream(id) {
                log::warn!("palisade {PLUGIN}: cannot resume a paused request: {e}");
            }
        }
    }
}

fn forget(worker: &Rc<RefCell<Worker>>, id: u32) {
    if let Ok(mut w) = worker.try_borrow_mut() {
        w.waiting.retain(|(i, _)| *i != id);
    }
}

/// Apply a verdict to the current (effective) stream: rewrite and continue, or reply.
fn apply(w: &Worker, verdict: &Verdict) -> Action {
    if verdict.decision.is_continue() {
        for m in &verdict.mutations {
            let result = match m {
                Mutation::Remove(name) => http::set_request_header(name, None),
                Mutation::Set(name, value) => http::set_request_header(name, Some(value)),
                Mutation::Path(path) => http::set_request_header(":path", Some(path)),
            };
            if let Err(e) = result {
                // Fail closed: a spoofed claim header we cannot remove must not go upstream.
                log::error!("palisade {PLUGIN}: cannot rewrite the request ({e}); denying it");
                w.metrics.rewrite_failures.inc();
                let reply = palisade_core::LocalReply::new(503, "palisade_jwt_rewrite_failed")
                    .header("retry-after", "1")
                    .body("temporarily unavailable\n");
                return http::apply(&Decision::Reply(reply), Action::Pause);
            }
        }
    }
    // A reply that cannot be sent resets the stream (`apply` with `Pause`): never let an unverified
    // request through, nor leave it hanging paused with no answer.
    http::apply(&verdict.decision, Action::Pause)
}

struct Stream {
    worker: Rc<RefCell<Worker>>,
    context_id: u32,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _eos: bool) -> Action {
        let now = palisade_host::now();
        let Ok(mut w) = self.worker.try_borrow_mut() else {
            log::error!("palisade {PLUGIN}: worker state busy; denying the request");
            return deny_busy();
        };
        let verdict = w.check(now);
        if verdict.keys_pending.is_some() {
            if let KeysUnavailable::Pause(max_wait) = w.auth.config().keys_unavailable {
                // Counted when finally decided (in `resume_waiting`).
                w.metrics.paused.inc();
                w.waiting
                    .push((self.context_id, now.saturating_add(max_wait)));
                return Action::Pause;
            }
        }
        w.metrics.record(verdict.outcome);
        apply(&w, &verdict)
    }

    fn on_log(&mut self) {
        let id = self.context_id;
        if let Ok(mut w) = self.worker.try_borrow_mut() {
            w.waiting.retain(|(i, _)| *i != id);
        }
    }
}

fn deny_busy() -> Action {
    let reply = palisade_core::LocalReply::new(503, "palisade_jwt_busy")
        .header("retry-after", "1")
        .body("temporarily unavailable\n");
    http::apply(&Decision::Reply(reply), Action::Pause)
}
