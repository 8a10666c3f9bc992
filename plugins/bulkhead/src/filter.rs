//! Wasm glue: classify the request, ask the worker's [`Worker`] state machine, apply what it says
//! (continue, pause, reply; resume or answer paused streams), count every event.
//!
//! Failure modes: a bad config is rejected at `on_configure` (Envoy refuses it). When shared data
//! cannot be used (host error, contention beyond the retry bound, no free worker slot) the
//! config's `failure_mode` decides (default: let the request through uncounted). A reply that
//! cannot be sent lets the request through (logged). A paused stream that cannot be resumed gives
//! its permit back at once.
//!
//! Release points: `on_done`, `on_log` and the context's `Drop` all end the stream in the
//! state machine, which releases on the first and ignores the rest.

use crate::config::Config;
use crate::policy::{Admission, Bulkhead, Event, Report, Wake, Worker, WorkerEvent};
use crate::policy::{HEADER, SHADOW_HEADER};
use palisade_core::store::KeyPrefix;
use palisade_host::flow;
use palisade_host::http;
use palisade_host::metrics::Metric;
use palisade_host::proxy_wasm;
use palisade_host::request::HostRequest;
use palisade_host::store::HostStore;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;

const PLUGIN: &str = "bulkhead";

#[allow(unsafe_code)] // `main!` expands to the `#[no_mangle]` entry point the host calls.
mod entry {
    use super::*;
    proxy_wasm::main! {{
        palisade_host::init(PLUGIN, LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
    }}
}

/// Per-rule metrics, defined once per VM in `on_configure`.
struct RuleMetrics {
    in_flight: Metric,
    admitted: Metric,
    rejected: Metric,
    shadow_rejected: Metric,
    queued: Metric,
    wait_admitted: Metric,
    wait_expired: Metric,
    wait_abandoned: Metric,
    released: Metric,
    store_failures: Metric,
    wait_ms: Metric,
}

impl RuleMetrics {
    fn define(rule: &str) -> Self {
        let name = |what: &str| format!("palisade.bulkhead.{rule}.{what}");
        let c = |what: &str| Metric::counter(&name(what));
        RuleMetrics {
            in_flight: Metric::gauge(&name("in_flight")),
            admitted: c("admitted"),
            rejected: c("rejected"),
            shadow_rejected: c("shadow_rejected"),
            queued: c("queued"),
            wait_admitted: c("wait_admitted"),
            wait_expired: c("wait_expired"),
            wait_abandoned: c("wait_abandoned"),
            released: c("released"),
            store_failures: c("store_failures"),
            wait_ms: Metric::histogram(&name("wait_ms")),
        }
    }

    fn record(&self, event: Event) {
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match event {
            Event::Admitted => {
                self.admitted.inc();
                self.in_flight.add(1);
            }
            Event::Rejected => self.rejected.inc(),
            Event::ShadowRejected => self.shadow_rejected.inc(),
            Event::Queued => self.queued.inc(),
            Event::WaitAdmitted(d) => {
                self.wait_admitted.inc();
                self.in_flight.add(1);
                self.wait_ms.record(millis(d));
            }
            Event::WaitExpired(d) => {
                self.wait_expired.inc();
                self.wait_ms.record(millis(d));
            }
            Event::WaitAbandoned => self.wait_abandoned.inc(),
            Event::Released => {
                self.released.inc();
                self.in_flight.add(-1);
            }
            Event::ReleaseDeferred | Event::StoreFailure => self.store_failures.inc(),
        }
    }
}

struct Shared {
    worker: RefCell<Worker>,
    store: HostStore,
    metrics: Vec<RuleMetrics>,
    worker_failures: Metric,
    has_shadow_rules: bool,
}

impl Shared {
    /// Count a report's events and carry out its wakes.
    fn apply(&self, report: Report) {
        for (rule, event) in report.events {
            if let Some(m) = self.metrics.get(rule) {
                m.record(event);
            }
        }
        for event in report.worker_events {
            match event {
                WorkerEvent::SlotClaimed(id) => log::info!(
                    "palisade {PLUGIN}: worker slot {} claimed (generation {})",
                    id.slot,
                    id.generation
                ),
                WorkerEvent::SlotLost(id) => {
                    self.worker_failures.inc();
                    log::warn!(
                        "palisade {PLUGIN}: worker slot {} was reclaimed by another worker (this one stalled past worker_timeout); claiming a new one",
                        id.slot
                    );
                }
                WorkerEvent::NoFreeSlot => {
                    self.worker_failures.inc();
                    log::warn!(
                        "palisade {PLUGIN}: no free worker slot (max_workers reached); failure_mode applies until one frees"
                    );
                }
                WorkerEvent::RegistryFailure(e) => {
                    self.worker_failures.inc();
                    log::warn!("palisade {PLUGIN}: worker registry: {e}");
                }
            }
        }
        for wake in report.wakes {
            match wake {
                Wake::Resume(context) => {
                    if let Err(e) = flow::resume_stream(context) {
                        // The stream is gone: give its permit back now.
                        log::warn!("palisade {PLUGIN}: cannot resume stream {context}: {e}");
                        self.end(context);
                    }
                }
                Wake::Reply(context, reply) => {
                    if let Err(e) = flow::set_effective_context(context) {
                        // The stream is gone: nothing to answer.
                        log::warn!("palisade {PLUGIN}: cannot answer stream {context}: {e}");
                    } else if let Err(e) = http::send_reply(&reply) {
                        // As for a reply at admission: let it through (logged) rather than leave
                        // it paused with no answer until a timeout.
                        log::warn!(
                            "palisade {PLUGIN}: cannot answer stream {context} ({e}); resuming it"
                        );
                        if let Err(e) = flow::resume_http_request() {
                            log::warn!("palisade {PLUGIN}: cannot resume stream {context}: {e}");
                        }
                    }
                }
            }
        }
    }

    fn end(&self, context: u32) {
        let report = match self.worker.try_borrow_mut() {
            Ok(w) if !w.tracks(context) => return,
            Ok(mut w) => w.on_stream_end(context, &self.store, palisade_host::now),
            Err(_) => {
                log::error!("palisade {PLUGIN}: re-entrant stream end for {context}");
                return;
            }
        };
        self.apply(report);
    }
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {
    fn on_done(&mut self) -> bool {
        if let Some(shared) = &self.shared {
            if let Ok(mut w) = shared.worker.try_borrow_mut() {
                if let Err(e) = w.shutdown(&shared.store) {
                    log::warn!("palisade {PLUGIN}: could not give the worker slot back: {e}");
                }
            }
        }
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = palisade_host::load_config(PLUGIN, Config::parse) else {
            return false;
        };
        let store = HostStore::new(KeyPrefix::new(PLUGIN, &config.scope));
        let metrics = config
            .rules
            .iter()
            .map(|r| RuleMetrics::define(&r.name))
            .collect();
        let has_shadow_rules = config.rules.iter().any(|r| r.shadow);
        log::info!(
            "palisade {PLUGIN}: configured {} rule(s), scope {}",
            config.rules.len(),
            config.scope
        );
        // No shared-data writes here: this also runs in Envoy's throwaway canary VM. The worker
        // claims its slot on its first tick or request.
        let worker = Worker::new(Bulkhead::new(config));
        if let Err(e) = flow::set_tick_period(worker.tick_period()) {
            log::error!("palisade {PLUGIN}: cannot start ticks: {e}");
            return false;
        }
        self.shared = Some(Rc::new(Shared {
            worker: RefCell::new(worker),
            store,
            metrics,
            worker_failures: Metric::counter("palisade.bulkhead.worker_slot_failures"),
            has_shadow_rules,
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let report = match shared.worker.try_borrow_mut() {
            Ok(mut w) => w.on_tick(&shared.store, palisade_host::now()),
            Err(_) => return,
        };
        shared.apply(report);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Stream {
            context_id,
            shared,
            shadow: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    context_id: u32,
    shared: Rc<Shared>,
    /// A shadow rule would have rejected this request: mark the response.
    shadow: bool,
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        self.shared.end(self.context_id);
        true
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.end(self.context_id);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _eos: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        let (admission, report) = {
            let Ok(mut worker) = shared.worker.try_borrow_mut() else {
                return Action::Continue;
            };
            let target = worker.bulkhead().classify(&HostRequest, &mut || {
                http::property_string(&["xds", "cluster_name"])
                    .ok()
                    .flatten()
            });
            worker.on_request(self.context_id, target, &shared.store, palisade_host::now)
        };
        shared.apply(report);
        // Never trust a client-sent shadow mark.
        let shadow_rule = match &admission {
            Admission::ContinueShadow(rule) => shared.worker.try_borrow().ok().and_then(|w| {
                w.bulkhead()
                    .config()
                    .rules
                    .get(*rule)
                    .map(|r| r.name.clone())
            }),
            _ => None,
        };
        if shared.has_shadow_rules {
            if let Err(e) = http::set_request_header(SHADOW_HEADER, shadow_rule.as_deref()) {
                log::warn!("palisade {PLUGIN}: {e}");
            }
        }
        match admission {
            Admission::Continue => Action::Continue,
            Admission::ContinueShadow(_) => {
                self.shadow = true;
                if let Some(rule) = &shadow_rule {
                    log::info!(
                        "palisade {PLUGIN}: shadow rule {rule} would have rejected this request"
                    );
                }
                Action::Continue
            }
            Admission::Wait => Action::Pause,
            Admission::Reject(reply) => match http::send_reply(&reply) {
                Ok(()) => Action::Pause,
                Err(e) => {
                    log::error!("palisade {PLUGIN}: {e}");
                    Action::Continue
                }
            },
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _eos: bool) -> Action {
        if self.shadow {
            if let Err(e) = http::set_response_header(HEADER, Some("shadow")) {
                log::warn!("palisade {PLUGIN}: {e}");
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.shared.end(self.context_id);
    }
}
