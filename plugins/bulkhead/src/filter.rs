//! The policy in the skeleton: classify the request, ask the worker's [`Worker`] state machine,
//! apply what it says (continue, pause, reply; resume or answer paused streams), count every
//! event.
//!
//! Failure modes: a bad config is rejected at `on_configure` (Envoy refuses it). When shared data
//! cannot be used (host error, contention beyond the retry bound, no free worker slot) the
//! config's `failure_mode` decides (default: let the request through uncounted). A reply that
//! cannot be sent lets the request through (logged). A paused stream that cannot be resumed gives
//! its permit back at once.
//!
//! Release point: the skeleton's stream end (once, however the stream ended, including a reply by
//! a later policy of a chain); the state machine also ignores a second end.

use crate::config::{Config, Rule};
use crate::policy::{Admission, Bulkhead, Event, Report, Wake, Worker, WorkerEvent};
use crate::policy::{HEADER, SHADOW_HEADER};
use palisade_core::plugin::{
    Flow, HostStore, Kind, Metric, Policy, RootCx, Setup, StreamCx, StreamPolicy,
};
use palisade_core::ConfigError;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

pub const PLUGIN: &str = "bulkhead";

/// The plugin, for `export!` and the chain.
pub const KIND: Kind = Kind {
    name: PLUGIN,
    build,
};

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
    wait_displaced: Metric,
    wait_ms: Metric,
    /// Per priority class (rules with priorities): `(admitted, rejected)`.
    classes: Vec<(Metric, Metric)>,
}

impl RuleMetrics {
    fn define(setup: &Setup<'_>, rule: &Rule) -> Self {
        let rule_name = rule.name.as_str();
        let name = |what: &str| format!("{rule_name}.{what}");
        let c = |what: &str| setup.counter(&name(what));
        RuleMetrics {
            in_flight: setup.gauge(&name("in_flight")),
            admitted: c("admitted"),
            rejected: c("rejected"),
            shadow_rejected: c("shadow_rejected"),
            queued: c("queued"),
            wait_admitted: c("wait_admitted"),
            wait_expired: c("wait_expired"),
            wait_abandoned: c("wait_abandoned"),
            released: c("released"),
            store_failures: c("store_failures"),
            wait_displaced: c("wait_displaced"),
            wait_ms: setup.histogram(&name("wait_ms")),
            classes: rule
                .priorities
                .iter()
                .flat_map(|p| p.classes.iter())
                .map(|class| {
                    let n = &class.name;
                    (
                        c(&format!("class.{n}.admitted")),
                        c(&format!("class.{n}.rejected")),
                    )
                })
                .collect(),
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
            Event::WaitDisplaced => self.wait_displaced.inc(),
            Event::ClassAdmitted(c) => {
                if let Some((admitted, _)) = self.classes.get(c) {
                    admitted.inc();
                }
            }
            Event::ClassRejected(c) => {
                if let Some((_, rejected)) = self.classes.get(c) {
                    rejected.inc();
                }
            }
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
    /// Count a report's events and hand its wakes to the skeleton.
    fn apply(&self, report: Report, wake: &mut dyn FnMut(palisade_core::plugin::Wake)) {
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
        // A stream the skeleton cannot wake (gone) is ended by it, which gives its permit back.
        for w in report.wakes {
            wake(match w {
                Wake::Resume(context) => palisade_core::plugin::Wake::Resume(context),
                // Expired waits fail open, as replies at admission do.
                Wake::Reply(context, reply) => palisade_core::plugin::Wake::Reply(
                    context,
                    reply,
                    palisade_core::plugin::OnReplyFailure::Continue,
                ),
            });
        }
    }

    fn end(&self, context: u32, cx: &mut StreamCx<'_>) {
        let report = match self.worker.try_borrow_mut() {
            Ok(w) if !w.tracks(context) => return,
            Ok(mut w) => w.on_stream_end(context, &self.store, || cx.now()),
            Err(_) => {
                log::error!("palisade {PLUGIN}: re-entrant stream end for {context}");
                return;
            }
        };
        self.apply(report, &mut |w| cx.wake(w));
    }
}

fn build(bytes: &[u8], setup: &Setup<'_>) -> Result<Box<dyn Policy>, ConfigError> {
    let config = Config::parse(bytes)?;
    let store = setup.store(&config.scope);
    let metrics = setup.per_rule(&config.rules, RuleMetrics::define);
    let has_shadow_rules = config.rules.iter().any(|r| r.shadow);
    setup.log_configured(config.rules.len(), &store, &[]);
    // No shared-data writes here: this also runs in Envoy's throwaway canary VM. The worker
    // claims its slot on its first tick or request.
    let worker = Worker::new(Bulkhead::new(config));
    let tick = worker.tick_period();
    Ok(Box::new(BulkheadPolicy {
        tick,
        shared: Rc::new(Shared {
            worker: RefCell::new(worker),
            store,
            metrics,
            worker_failures: setup.counter("worker_slot_failures"),
            has_shadow_rules,
        }),
    }))
}

struct BulkheadPolicy {
    tick: Duration,
    shared: Rc<Shared>,
}

impl Policy for BulkheadPolicy {
    fn stream(&self, context_id: u32) -> Box<dyn StreamPolicy> {
        Box::new(Stream {
            context_id,
            shared: Rc::clone(&self.shared),
            shadow: false,
        })
    }

    fn tick_period(&self) -> Option<Duration> {
        Some(self.tick)
    }

    fn on_tick(&self, cx: &mut RootCx<'_>) {
        let shared = &self.shared;
        let report = match shared.worker.try_borrow_mut() {
            Ok(mut w) => w.on_tick(&shared.store, cx.now()),
            Err(_) => return,
        };
        shared.apply(report, &mut |w| cx.wake(w));
    }

    fn on_done(&self, _cx: &mut RootCx<'_>) {
        let shared = &self.shared;
        if let Ok(mut w) = shared.worker.try_borrow_mut() {
            if let Err(e) = w.shutdown(&shared.store) {
                log::warn!("palisade {PLUGIN}: could not give the worker slot back: {e}");
            }
        }
    }
}

struct Stream {
    context_id: u32,
    shared: Rc<Shared>,
    /// A shadow rule would have rejected this request: mark the response.
    shadow: bool,
}

impl StreamPolicy for Stream {
    fn on_request_headers(&mut self, cx: &mut StreamCx<'_>, _eos: bool) -> Flow {
        let shared = Rc::clone(&self.shared);
        let (admission, report) = {
            let Ok(mut worker) = shared.worker.try_borrow_mut() else {
                return Flow::Continue;
            };
            let target = worker.bulkhead().classify(&*cx, &mut || cx.cluster_name());
            worker.on_request(self.context_id, target, &shared.store, || cx.now())
        };
        shared.apply(report, &mut |w| cx.wake(w));
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
            if let Err(e) = cx.set_request_header(SHADOW_HEADER, shadow_rule.as_deref()) {
                log::warn!("palisade {PLUGIN}: {e}");
            }
        }
        match admission {
            Admission::Continue => Flow::Continue,
            Admission::ContinueShadow(_) => {
                self.shadow = true;
                if let Some(rule) = &shadow_rule {
                    log::info!(
                        "palisade {PLUGIN}: shadow rule {rule} would have rejected this request"
                    );
                }
                Flow::Continue
            }
            Admission::Wait => Flow::Pause,
            Admission::Reject(reply) => Flow::reply_or_continue(reply),
        }
    }

    fn on_response_headers(&mut self, cx: &mut StreamCx<'_>, _eos: bool) -> Flow {
        if self.shadow {
            if let Err(e) = cx.set_response_header(HEADER, Some("shadow")) {
                log::warn!("palisade {PLUGIN}: {e}");
            }
        }
        Flow::Continue
    }

    fn on_end(&mut self, cx: &mut StreamCx<'_>) {
        self.shared.end(self.context_id, cx);
    }
}

#[cfg(test)]
mod tests;
