//! The policy in the skeleton: read the request, ask [`RateLimiter`], apply its verdict, count it.
//!
//! Failure modes: a bad config is rejected at `on_configure` (Envoy refuses it); a shared-data
//! failure applies the rule's `failure_mode` (default allow); a local reply that cannot be sent
//! lets the request through (logged), since the limiter cannot do anything better with it.
//! Limits with `shape` pause delayed requests until their slot ([`shaping`]).

use crate::config::Config;
use crate::global::{GlobalEvent, LATENCY_METRIC};
use crate::policy::{Event, RateLimiter, Verdict};
use crate::shape::Shaping;
use palisade_core::plugin::{
    EventCounters, Flow, GrpcResponse, HostStore, Kind, Metric, Policy, RootCx, Setup, StreamCx,
    StreamPolicy,
};
use palisade_core::{ConfigError, Decision};
use shaping::Shaper;
use std::rc::Rc;
use std::time::Duration;

pub const PLUGIN: &str = "rate_limit";
/// Request header naming the shadow rules that would have limited the request.
const SHADOW_HEADER: &str = "x-palisade-ratelimit-shadow";

/// The plugin, for `export!` and the chain.
pub const KIND: Kind = Kind {
    name: PLUGIN,
    build,
};

fn build(bytes: &[u8], setup: &Setup<'_>) -> Result<Box<dyn Policy>, ConfigError> {
    let config = Config::parse(bytes)?;
    let store = setup.store(&config.scope);
    let metrics = setup.per_rule(&config.rules, |s, r| EventCounters::define(s, &r.name));
    let global_metrics = setup.per_rule(&config.rules, |s, r| {
        r.global.as_ref().map(|_| {
            (
                EventCounters::define(s, &r.name),
                s.histogram(&format!("{}.{LATENCY_METRIC}", r.name)),
            )
        })
    });
    let has_shadow_rules = config.rules.iter().any(|r| r.shadow);
    let shaper = Shaper::new(&config, setup);
    setup.log_configured(config.rules.len(), &store, &[]);
    Ok(Box::new(RateLimit(Rc::new(Shared {
        limiter: RateLimiter::new(config),
        store,
        metrics,
        global_metrics,
        has_shadow_rules,
        shaper,
    }))))
}

struct Shared {
    limiter: RateLimiter,
    store: HostStore,
    metrics: Vec<EventCounters<Event>>,
    /// Per rule, for `global` rules: the protocol outcomes and the answer latency.
    global_metrics: Vec<Option<GlobalMetrics>>,
    has_shadow_rules: bool,
    /// Only when some limit shapes ([`shaping`]).
    shaper: Option<Shaper>,
}

type GlobalMetrics = (EventCounters<GlobalEvent>, Metric);

struct RateLimit(Rc<Shared>);

impl Policy for RateLimit {
    fn stream(&self, _context_id: u32) -> Box<dyn StreamPolicy> {
        Box::new(Stream {
            shared: Rc::clone(&self.0),
            response_headers: Vec::new(),
            global: None,
            shaping: Shaping::default(),
        })
    }

    fn tick_period(&self) -> Option<Duration> {
        self.0.shaper.as_ref().map(Shaper::tick_period)
    }

    fn on_tick(&self, cx: &mut RootCx<'_>) {
        if let Some(s) = &self.0.shaper {
            s.on_tick(cx);
        }
    }
}

struct Stream {
    shared: Rc<Shared>,
    /// `RateLimit-*` headers to add to an allowed request's response.
    response_headers: Vec<(String, String)>,
    /// The rate limit service calls this request waits for, and the local rules' shadow rules.
    global: Option<(global::Wait, Vec<usize>)>,
    /// Slots reserved by shaping rules, held while the rate limit service decides.
    shaping: Shaping,
}

impl Stream {
    fn count(&self, verdict: &Verdict) {
        self.count_events(&verdict.events);
    }

    fn count_events(&self, events: &[(usize, Event)]) {
        for (rule, event) in events {
            if let Some(m) = self.shared.metrics.get(*rule) {
                m.count(*event);
            }
        }
    }

    /// Replace any client-sent shadow header with ours (or none), so upstreams can trust it.
    fn mark_shadow(&self, cx: &mut StreamCx<'_>, shadow_rules: &[usize]) {
        if !self.shared.has_shadow_rules {
            return;
        }
        let rules = &self.shared.limiter.config().rules;
        let names: Vec<&str> = shadow_rules
            .iter()
            .filter_map(|i| rules.get(*i).map(|r| r.name.as_str()))
            .collect();
        let value = (!names.is_empty()).then(|| names.join(","));
        if let Err(e) = cx.set_request_header(SHADOW_HEADER, value.as_deref()) {
            log::warn!("palisade {PLUGIN}: {e}");
        }
        if let Some(v) = &value {
            log::info!("palisade {PLUGIN}: shadow rule(s) {v} would have limited this request");
        }
    }
}

impl StreamPolicy for Stream {
    fn on_request_headers(&mut self, cx: &mut StreamCx<'_>, _eos: bool) -> Flow {
        let shared = Rc::clone(&self.shared);
        let mut verdict = match &shared.shaper {
            None => shared.limiter.check(&*cx, &shared.store, cx.now()),
            Some(s) => {
                let room = |rule, limit| s.has_room(rule, limit);
                shared
                    .limiter
                    .check_shaped(&*cx, &shared.store, cx.now(), &room)
            }
        };
        self.count(&verdict);
        self.response_headers = std::mem::take(&mut verdict.allowed_headers);
        let shaping = verdict.shaping.take().map(|s| *s).unwrap_or_default();
        if verdict.global.is_empty() || verdict.decision != Decision::Continue {
            self.mark_shadow(cx, &verdict.shadow_rules);
            return self.shape(cx, shaping, verdict.decision);
        }
        // Slots are held while the service decides; the wait for them (if any) comes after.
        self.shaping = shaping;
        let wait = global::Wait::start(&self.shared, cx, verdict.global);
        self.global = Some((wait, verdict.shadow_rules));
        self.global_decided(cx)
    }

    fn on_grpc_response(&mut self, cx: &mut StreamCx<'_>, response: GrpcResponse) -> Flow {
        if let Some((wait, _)) = &mut self.global {
            wait.answer(&self.shared, cx, response);
        }
        self.global_decided(cx)
    }

    fn on_response_headers(&mut self, cx: &mut StreamCx<'_>, _eos: bool) -> Flow {
        for (name, value) in &self.response_headers {
            if let Err(e) = cx.set_response_header(name, Some(value)) {
                log::warn!("palisade {PLUGIN}: {e}");
            }
        }
        Flow::Continue
    }

    fn on_end(&mut self, cx: &mut StreamCx<'_>) {
        if let Some(s) = &self.shared.shaper {
            s.end(
                cx.context_id(),
                &self.shared.store,
                std::mem::take(&mut self.shaping),
            );
        }
    }
}

impl Stream {
    /// Apply the decision, with the wait for the slots shaping reserved (if any).
    fn shape(&mut self, cx: &mut StreamCx<'_>, shaping: Shaping, decision: Decision) -> Flow {
        let shared = Rc::clone(&self.shared);
        match &shared.shaper {
            Some(s) => s.after(cx, &shared.store, shaping, decision),
            None => flow(decision),
        }
    }

    /// Pause while a global call is in flight; once all have ended, apply their decision.
    fn global_decided(&mut self, cx: &mut StreamCx<'_>) -> Flow {
        match &self.global {
            None => return Flow::Continue,
            Some((wait, _)) if wait.waiting() => return Flow::Pause,
            Some(_) => {}
        }
        let Some((wait, mut shadow_rules)) = self.global.take() else {
            return Flow::Continue;
        };
        let outcome = wait.finish(&self.shared, cx);
        self.count_events(&outcome.events);
        shadow_rules.extend(outcome.shadow_rules);
        self.mark_shadow(cx, &shadow_rules);
        self.response_headers.extend(outcome.allowed_headers);
        let shaping = std::mem::take(&mut self.shaping);
        self.shape(cx, shaping, outcome.decision)
    }
}

fn flow(decision: Decision) -> Flow {
    match decision {
        Decision::Continue => Flow::Continue,
        Decision::Reply(reply) => Flow::reply_or_continue(reply),
    }
}

mod global;
mod shaping;

#[cfg(test)]
mod tests;
