//! The policy in the skeleton: read the request, ask [`RateLimiter`], apply its verdict, count it.
//!
//! Failure modes: a bad config is rejected at `on_configure` (Envoy refuses it); a shared-data
//! failure applies the rule's `failure_mode` (default allow); a local reply that cannot be sent
//! lets the request through (logged), since the limiter cannot do anything better with it.

use crate::config::Config;
use crate::global::{GlobalEvent, LATENCY_METRIC};
use crate::policy::{Event, RateLimiter, Verdict};
use palisade_core::plugin::{
    EventCounters, Flow, GrpcResponse, HostStore, Kind, Metric, Policy, Setup, StreamCx,
    StreamPolicy,
};
use palisade_core::{ConfigError, Decision};
use std::rc::Rc;

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
    let metrics = config
        .rules
        .iter()
        .map(|r| EventCounters::define(setup, &r.name))
        .collect();
    let global_metrics = config
        .rules
        .iter()
        .map(|r| {
            r.global.as_ref().map(|_| {
                (
                    EventCounters::define(setup, &r.name),
                    setup.histogram(&format!("{}.{LATENCY_METRIC}", r.name)),
                )
            })
        })
        .collect();
    let has_shadow_rules = config.rules.iter().any(|r| r.shadow);
    setup.log_configured(config.rules.len(), &store, &[]);
    Ok(Box::new(RateLimit(Rc::new(Shared {
        limiter: RateLimiter::new(config),
        store,
        metrics,
        global_metrics,
        has_shadow_rules,
    }))))
}

struct Shared {
    limiter: RateLimiter,
    store: HostStore,
    metrics: Vec<EventCounters<Event>>,
    /// Per rule, for `global` rules: the protocol outcomes and the answer latency.
    global_metrics: Vec<Option<GlobalMetrics>>,
    has_shadow_rules: bool,
}

type GlobalMetrics = (EventCounters<GlobalEvent>, Metric);

struct RateLimit(Rc<Shared>);

impl Policy for RateLimit {
    fn stream(&self, _context_id: u32) -> Box<dyn StreamPolicy> {
        Box::new(Stream {
            shared: Rc::clone(&self.0),
            response_headers: Vec::new(),
            global: None,
        })
    }
}

struct Stream {
    shared: Rc<Shared>,
    /// `RateLimit-*` headers to add to an allowed request's response.
    response_headers: Vec<(String, String)>,
    /// The rate limit service calls this request waits for, and the local rules' shadow rules.
    global: Option<(global::Wait, Vec<usize>)>,
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
        let verdict = self
            .shared
            .limiter
            .check(&*cx, &self.shared.store, cx.now());
        self.count(&verdict);
        self.response_headers = verdict.allowed_headers;
        if verdict.global.is_empty() || verdict.decision != Decision::Continue {
            self.mark_shadow(cx, &verdict.shadow_rules);
            return flow(verdict.decision);
        }
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
}

impl Stream {
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
        flow(outcome.decision)
    }
}

fn flow(decision: Decision) -> Flow {
    match decision {
        Decision::Continue => Flow::Continue,
        Decision::Reply(reply) => Flow::reply_or_continue(reply),
    }
}

mod global;

#[cfg(test)]
mod tests;
