//! Wasm glue: read the request, ask [`RateLimiter`], apply its verdict, count it.
//!
//! Failure modes: a bad config is rejected at `on_configure` (Envoy refuses it); a shared-data
//! failure applies the rule's `failure_mode` (default allow); a local reply that cannot be sent
//! lets the request through (logged), since the limiter cannot do anything better with it.

use crate::config::Config;
use crate::policy::{Event, RateLimiter, Verdict};
use palisade_core::store::KeyPrefix;
use palisade_host::http;
use palisade_host::metrics::Metric;
use palisade_host::proxy_wasm;
use palisade_host::request::HostRequest;
use palisade_host::store::HostStore;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;

const PLUGIN: &str = "rate_limit";
/// Request header naming the shadow rules that would have limited the request.
const SHADOW_HEADER: &str = "x-palisade-ratelimit-shadow";

#[allow(unsafe_code)] // `main!` expands to the `#[no_mangle]` entry point the host calls.
mod entry {
    use super::*;
    proxy_wasm::main! {{
        palisade_host::init(PLUGIN, LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
    }}
}

/// Per-rule counters, defined once per VM in `on_configure`.
struct RuleMetrics {
    allowed: Metric,
    limited: Metric,
    shadow_limited: Metric,
    store_failures: Metric,
    skipped_missing_key: Metric,
    collisions: Metric,
}

impl RuleMetrics {
    fn define(rule: &str) -> Self {
        let m = |what: &str| Metric::counter(&format!("palisade.rate_limit.{rule}.{what}"));
        RuleMetrics {
            allowed: m("allowed"),
            limited: m("limited"),
            shadow_limited: m("shadow_limited"),
            store_failures: m("store_failures"),
            skipped_missing_key: m("skipped_missing_key"),
            collisions: m("collisions"),
        }
    }

    fn record(&self, event: Event) {
        match event {
            Event::Allowed => self.allowed.inc(),
            Event::Limited => self.limited.inc(),
            Event::ShadowLimited => self.shadow_limited.inc(),
            Event::StoreFailure => self.store_failures.inc(),
            Event::SkippedMissingKey => self.skipped_missing_key.inc(),
            Event::Collision => self.collisions.inc(),
        }
    }
}

struct Shared {
    limiter: RateLimiter,
    store: HostStore,
    metrics: Vec<RuleMetrics>,
    has_shadow_rules: bool,
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

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
        self.shared = Some(Rc::new(Shared {
            limiter: RateLimiter::new(config),
            store,
            metrics,
            has_shadow_rules,
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Stream {
            shared,
            response_headers: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    shared: Rc<Shared>,
    /// `RateLimit-*` headers to add to an allowed request's response.
    response_headers: Vec<(String, String)>,
}

impl Stream {
    fn count(&self, verdict: &Verdict) {
        for (rule, event) in &verdict.events {
            if let Some(m) = self.shared.metrics.get(*rule) {
                m.record(*event);
            }
        }
    }

    /// Replace any client-sent shadow header with ours (or none), so upstreams can trust it.
    fn mark_shadow(&self, verdict: &Verdict) {
        if !self.shared.has_shadow_rules {
            return;
        }
        let rules = &self.shared.limiter.config().rules;
        let names: Vec<&str> = verdict
            .shadow_rules
            .iter()
            .filter_map(|i| rules.get(*i).map(|r| r.name.as_str()))
            .collect();
        let value = (!names.is_empty()).then(|| names.join(","));
        if let Err(e) = http::set_request_header(SHADOW_HEADER, value.as_deref()) {
            log::warn!("palisade {PLUGIN}: {e}");
        }
        if let Some(v) = &value {
            log::info!("palisade {PLUGIN}: shadow rule(s) {v} would have limited this request");
        }
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _eos: bool) -> Action {
        let verdict =
            self.shared
                .limiter
                .check(&HostRequest, &self.shared.store, palisade_host::now());
        self.count(&verdict);
        self.mark_shadow(&verdict);
        let action = http::apply(&verdict.decision, Action::Continue);
        self.response_headers = verdict.allowed_headers;
        action
    }

    fn on_http_response_headers(&mut self, _headers: usize, _eos: bool) -> Action {
        for (name, value) in &self.response_headers {
            if let Err(e) = http::set_response_header(name, Some(value)) {
                log::warn!("palisade {PLUGIN}: {e}");
            }
        }
        Action::Continue
    }
}
