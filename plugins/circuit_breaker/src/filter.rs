//! The policy in the skeleton: read the request, ask [`Breakers`] for admission, record the
//! call's outcome once, count everything.
//!
//! - Request headers: admit or reject (the route, and so `xds.cluster_name`, is already resolved).
//! - Response headers: the outcome (status, `response.code_details`, time since request headers)
//!   is recorded here, as early as possible.
//! - stream end: the last chance, for streams that ended without response headers reaching this
//!   filter. The ticket is taken out of the stream when recorded, so a call is recorded once.
//! - A tick per worker refreshes, every 500 ms, the state gauge of every breaker this worker has
//!   seen, so the gauge moves from open to half-open without traffic; with `success_batching` it
//!   ticks at the shortest `max_delay` and writes batches that waited that long.
//!
//! Failure modes: a bad config is rejected at `on_configure`; a shared-data failure applies the
//! rule's `failure_mode` (default allow); a reply that cannot be sent lets the request through
//! (logged) — the breaker cannot do anything better with it.

use crate::config::Config;
use crate::outcome::{needs_code_details, ResponseFacts};
use crate::policy::{BreakerRef, BreakerRequest, Breakers, Event, Ticket};
use crate::state::{Phase, Transition};
use palisade_core::key::RequestView;
use palisade_core::plugin::{
    Flow, HostStore, Kind, Metric, Policy, RootCx, Setup, StreamCx, StreamPolicy,
};
use palisade_core::{ConfigError, Decision, Timestamp};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

pub const PLUGIN: &str = "circuit_breaker";
/// How often gauges are refreshed from shared data.
const GAUGE_REFRESH: Duration = Duration::from_millis(500);

/// The plugin, for `export!` and the chain.
pub const KIND: Kind = Kind {
    name: PLUGIN,
    build,
};

/// Per-rule counters, defined once per VM in `on_configure`.
struct RuleMetrics {
    name: String,
    /// For rules with `success_batching`: successes counted but not yet added to the counter,
    /// so the hot path makes no metric hostcall either (added every 64 calls and on the tick).
    batch_successes: bool,
    unreported_successes: Cell<i64>,
    rejected: Metric,
    shadow_rejected: Metric,
    store_failures: Metric,
    skipped_missing_key: Metric,
    collisions: Metric,
    probes_expired: Metric,
    success: Metric,
    failure: Metric,
    slow: Metric,
    ignored: Metric,
    stale: Metric,
    to_open: Metric,
    to_half_open: Metric,
    to_closed: Metric,
}

impl RuleMetrics {
    fn define(setup: &Setup<'_>, rule: &str, batch_successes: bool) -> Self {
        let m = |what: &str| setup.counter(&format!("{rule}.{what}"));
        RuleMetrics {
            name: rule.to_owned(),
            batch_successes,
            unreported_successes: Cell::new(0),
            rejected: m("rejected"),
            shadow_rejected: m("shadow_rejected"),
            store_failures: m("store_failures"),
            skipped_missing_key: m("skipped_missing_key"),
            collisions: m("collisions"),
            probes_expired: m("probes_expired"),
            success: m("calls_success"),
            failure: m("calls_failure"),
            slow: m("calls_slow"),
            ignored: m("calls_ignored"),
            stale: m("calls_stale"),
            to_open: m("transitions_to_open"),
            to_half_open: m("transitions_to_half_open"),
            to_closed: m("transitions_to_closed"),
        }
    }

    fn report_successes(&self) {
        let n = self.unreported_successes.replace(0);
        if n > 0 {
            self.success.add(n);
        }
    }

    fn count(&self, event: Event) {
        if event == Event::Success && self.batch_successes {
            let n = self.unreported_successes.get() + 1;
            self.unreported_successes.set(n);
            if n >= 64 {
                self.report_successes();
            }
            return;
        }
        let metric = match event {
            // Not a metric: it would cost a hostcall on every request of the hot path, and
            // admitted calls are the sum of the `calls_*` outcomes (plus those in flight).
            Event::Admitted => return,
            Event::Rejected => &self.rejected,
            Event::ShadowRejected => &self.shadow_rejected,
            Event::StoreFailure => &self.store_failures,
            Event::SkippedMissingKey => &self.skipped_missing_key,
            Event::Collision => &self.collisions,
            Event::ProbeExpired => &self.probes_expired,
            Event::Success => &self.success,
            Event::Failure => &self.failure,
            Event::Slow => &self.slow,
            Event::Ignored => &self.ignored,
            Event::Stale => &self.stale,
            Event::Transition(Transition { to, from }) => {
                log::info!(
                    "palisade {PLUGIN}: rule {} breaker {} -> {}",
                    self.name,
                    from.name(),
                    to.name()
                );
                match to {
                    Phase::Open => &self.to_open,
                    Phase::HalfOpen => &self.to_half_open,
                    Phase::Closed => &self.to_closed,
                }
            }
        };
        metric.inc();
    }
}

/// A metric-safe rendering of a breaker key (`outbound|80||svc.ns` → `outbound_80__svc_ns`).
fn metric_key(key: &str) -> String {
    key.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

struct Shared {
    host: palisade_core::plugin::HostRef,
    /// `palisade.circuit_breaker` (or `…_2` for a second breaker in one chain).
    metric_prefix: String,
    gauges_refreshed: Cell<Timestamp>,
    breakers: Breakers,
    store: HostStore,
    metrics: Vec<RuleMetrics>,
    /// Breakers this worker has seen, with their state gauge; at most `max_breakers` per rule
    /// (plus keys sharing a slot, each of which has its own gauge name).
    /// The last value each gauge was set to by this worker is kept, so an unchanged state costs
    /// no hostcall.
    gauges: RefCell<HashMap<(usize, u64), Gauge>>,
}

/// A breaker's state gauge and what this worker last set it to.
struct Gauge {
    breaker: BreakerRef,
    metric: Metric,
    shown: Option<Phase>,
}

impl Gauge {
    fn set(&mut self, phase: Phase) {
        if self.shown != Some(phase) {
            self.metric.record(phase as u64);
            self.shown = Some(phase);
        }
    }
}

/// At most this many gauges per worker: beyond it, new keys are still broken, just not graphed.
const MAX_GAUGES: usize = 1024;

impl Shared {
    fn count(&self, rule: usize, events: &[Event]) {
        if let Some(m) = self.metrics.get(rule) {
            for e in events {
                m.count(*e);
            }
        }
    }

    fn show(&self, breaker: &BreakerRef, phase: Option<Phase>) {
        let Some(phase) = phase else { return };
        let mut gauges = self.gauges.borrow_mut();
        let id = (breaker.rule, breaker.hash);
        if !gauges.contains_key(&id) {
            if gauges.len() >= MAX_GAUGES {
                return;
            }
            let rule = self
                .metrics
                .get(breaker.rule)
                .map(|m| m.name.as_str())
                .unwrap_or("unknown");
            let gauge = Metric::gauge(
                &self.host,
                &format!(
                    "{}.{rule}.{}.state",
                    self.metric_prefix,
                    metric_key(&breaker.key)
                ),
            );
            gauges.insert(
                id,
                Gauge {
                    breaker: breaker.clone(),
                    metric: gauge,
                    shown: None,
                },
            );
        }
        if let Some(gauge) = gauges.get_mut(&id) {
            gauge.set(phase);
        }
    }
}

fn config_tick(config: &Config) -> Duration {
    config
        .rules
        .iter()
        .filter_map(|r| r.batching.map(|b| b.max_delay))
        .min()
        .unwrap_or(GAUGE_REFRESH)
        .min(GAUGE_REFRESH)
}

fn build(bytes: &[u8], setup: &Setup<'_>) -> Result<Box<dyn Policy>, ConfigError> {
    let config = Config::parse(bytes)?;
    let store = setup.store(&config.scope);
    let metrics = setup.per_rule(&config.rules, |s, r| {
        RuleMetrics::define(s, &r.name, r.batching.is_some())
    });
    setup.log_configured(config.rules.len(), &store, &config.warnings);
    // Tick at the shortest `success_batching.max_delay` (so a quiet worker's batch waits at
    // most about twice that), and at least every 500 ms for the gauges.
    let tick = config_tick(&config);
    Ok(Box::new(CircuitBreaker {
        tick,
        shared: Rc::new(Shared {
            host: Rc::clone(setup.host()),
            metric_prefix: setup.metric_prefix(),
            gauges_refreshed: Cell::new(Timestamp::ZERO),
            breakers: Breakers::new(config),
            store,
            metrics,
            gauges: RefCell::new(HashMap::new()),
        }),
    }))
}

struct CircuitBreaker {
    tick: Duration,
    shared: Rc<Shared>,
}

impl Policy for CircuitBreaker {
    fn stream(&self, _context_id: u32) -> Box<dyn StreamPolicy> {
        Box::new(Stream {
            shared: Rc::clone(&self.shared),
            ticket: None,
        })
    }

    fn tick_period(&self) -> Option<Duration> {
        Some(self.tick)
    }

    fn on_tick(&self, cx: &mut RootCx<'_>) {
        let shared = &self.shared;
        let now = cx.now();
        for (breaker, v) in shared.breakers.flush(&shared.store, now) {
            shared.count(breaker.rule, &v.events);
            shared.show(&breaker, v.phase);
        }
        for m in &shared.metrics {
            m.report_successes();
        }
        if now.saturating_since(shared.gauges_refreshed.get()) < GAUGE_REFRESH {
            return;
        }
        shared.gauges_refreshed.set(now);
        let mut gauges = shared.gauges.borrow_mut();
        for gauge in gauges.values_mut() {
            if let Some(phase) = shared.breakers.observe(&gauge.breaker, &shared.store, now) {
                // Another worker may have moved it: set it even if unchanged from our view.
                gauge.metric.record(phase as u64);
                gauge.shown = Some(phase);
            }
        }
    }
}

/// The current stream's request, plus the cluster its route chose.
struct CxRequest<'a, 'b>(&'a StreamCx<'b>);

impl RequestView for CxRequest<'_, '_> {
    fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }
    fn header_values(&self, name: &str) -> Vec<String> {
        self.0.header_values(name)
    }
    fn path(&self) -> Option<String> {
        self.0.path()
    }
    fn method(&self) -> Option<String> {
        self.0.method()
    }
    fn source_address(&self) -> Option<String> {
        self.0.source_address()
    }
    fn route_name(&self) -> Option<String> {
        self.0.route_name()
    }
    fn claim(&self, name: &str) -> Option<String> {
        self.0.claim(name)
    }
}

impl BreakerRequest for CxRequest<'_, '_> {
    fn cluster_name(&self) -> Option<String> {
        self.0.cluster_name()
    }
}

struct Stream {
    shared: Rc<Shared>,
    /// The admitted call still waiting for its outcome; taken when recorded (once).
    ticket: Option<Ticket>,
}

impl Stream {
    fn finish(&mut self, cx: &StreamCx<'_>, status: Option<u16>) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let now = cx.now();
        let needed = self
            .shared
            .breakers
            .config()
            .rules
            .get(ticket.breaker.rule)
            .is_some_and(|rule| needs_code_details(rule, status));
        let code_details = if needed {
            cx.response_code_details()
        } else {
            None
        };
        let facts = ResponseFacts {
            status,
            code_details,
            elapsed: now.saturating_since(ticket.started),
        };
        let v = self
            .shared
            .breakers
            .record(&ticket, &facts, &self.shared.store, now);
        self.shared.count(ticket.breaker.rule, &v.events);
        self.shared.show(&ticket.breaker, v.phase);
    }
}

impl StreamPolicy for Stream {
    fn on_request_headers(&mut self, cx: &mut StreamCx<'_>, _eos: bool) -> Flow {
        let v = self
            .shared
            .breakers
            .admit(&CxRequest(cx), &self.shared.store, cx.now());
        if let Some(rule) = v.rule {
            self.shared.count(rule, &v.events);
        }
        if let Some(b) = &v.breaker {
            self.shared.show(b, v.phase);
        }
        self.ticket = v.ticket;
        match v.decision {
            Decision::Continue => Flow::Continue,
            Decision::Reply(reply) => Flow::reply_or_continue(reply),
        }
    }

    fn on_response_headers(&mut self, cx: &mut StreamCx<'_>, _eos: bool) -> Flow {
        if self.ticket.is_some() {
            let status = cx.response_status();
            self.finish(cx, status);
        }
        Flow::Continue
    }

    fn on_end(&mut self, cx: &mut StreamCx<'_>) {
        // Only streams that never showed us response headers still hold their ticket.
        self.finish(cx, None);
    }
}
