//! Wasm glue: read the stream's parts, ask the [`Transformer`], apply the edits, count the events.
//!
//! Flow per stream:
//! - request headers: all headers are read once (as bytes); the engine returns header edits
//!   (`:path`/`:method` included — Envoy clears the route cache when a Wasm filter changes
//!   request headers, so routing follows a rewritten path), an optional request body plan and
//!   the rendered response plan;
//! - request body (only with a body plan): `Action::Pause` buffers until end of stream (or until
//!   `body.max_bytes` is exceeded), then the body is replaced whole;
//! - response headers / body: the same, from the response plan.
//!
//! Failure modes: a bad config is rejected at `on_configure`. A hostcall that fails while
//! reading or writing leaves that part of the stream untouched (fail open: traffic is never
//! stopped because a transformation could not be applied), logged and counted in
//! `palisade.transform.host_errors`. A local reply that cannot be sent lets the request through.

use crate::config::Config;
use crate::engine::{BodyPlan, Event, RequestInput, ResponsePlan, Transformer};
use crate::ops::HeaderEdit;
use palisade_core::Decision;
use palisade_host::metrics::Metric;
use palisade_host::proxy_wasm;
use palisade_host::{body, header_map, http};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use std::rc::Rc;

const PLUGIN: &str = "transform";

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
    transformed: Metric,
    shadow_transformed: Metric,
    skipped: Metric,
    errors: Metric,
    rejected: Metric,
}

impl RuleMetrics {
    fn define(rule: &str) -> Self {
        let m = |what: &str| Metric::counter(&format!("palisade.transform.{rule}.{what}"));
        RuleMetrics {
            transformed: m("transformed"),
            shadow_transformed: m("shadow_transformed"),
            skipped: m("skipped"),
            errors: m("errors"),
            rejected: m("rejected"),
        }
    }

    fn record(&self, event: Event) {
        match event {
            Event::Transformed => self.transformed.inc(),
            Event::ShadowTransformed => self.shadow_transformed.inc(),
            Event::Skipped => self.skipped.inc(),
            Event::Error => self.errors.inc(),
            Event::Rejected => self.rejected.inc(),
        }
    }
}

struct Shared {
    engine: Transformer,
    metrics: Vec<RuleMetrics>,
    host_errors: Metric,
}

impl Shared {
    fn count(&self, events: &[(usize, Event)]) {
        for (rule, event) in events {
            if let Some(m) = self.metrics.get(*rule) {
                m.record(*event);
            }
        }
    }

    fn host_error(&self, e: &palisade_host::HostError) {
        log::warn!("palisade {PLUGIN}: {e}; this part of the stream is left untouched");
        self.host_errors.inc();
    }

    fn notes(&self, notes: &[String]) {
        for n in notes {
            log::info!("palisade {PLUGIN}: {n}");
        }
    }

    fn apply_edits(&self, map: MapType, edits: &[HeaderEdit]) {
        for e in edits {
            if let Err(err) = header_map::replace_values(map, &e.name, &e.values) {
                self.host_error(&err);
            }
        }
    }
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
        let metrics = config
            .rules
            .iter()
            .map(|r| RuleMetrics::define(&r.name))
            .collect();
        log::info!(
            "palisade {PLUGIN}: configured {} rule(s)",
            config.rules.len()
        );
        self.shared = Some(Rc::new(Shared {
            engine: Transformer::new(config),
            metrics,
            host_errors: Metric::counter("palisade.transform.host_errors"),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Stream {
            shared,
            request_body: None,
            response: None,
            response_body: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    shared: Rc<Shared>,
    request_body: Option<BodyPlan>,
    response: Option<ResponsePlan>,
    response_body: Option<BodyPlan>,
}

impl Stream {
    /// Send a reply decided by the engine; `Pause` if sent, `Continue` if it could not be.
    fn reply(&self, decision: &Decision) -> Action {
        http::apply(decision, Action::Continue)
    }

    /// Shared body handling: buffer, enforce the limit, transform at end of stream.
    fn on_body(
        &self,
        plan: &BodyPlan,
        size: usize,
        end_of_stream: bool,
        request: bool,
    ) -> (Action, bool) {
        let shared = &self.shared;
        if u64::try_from(size).map_or(true, |n| n > plan.max_bytes) {
            let (decision, events) = shared.engine.body_too_large(plan);
            shared.count(&events);
            return (self.reply(&decision), true);
        }
        if !end_of_stream {
            return (Action::Pause, false);
        }
        let read = if request {
            body::request_body(size)
        } else {
            body::response_body(size)
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                shared.host_error(&e);
                return (Action::Continue, true);
            }
        };
        let outcome = shared.engine.transform_body(plan, &bytes);
        shared.count(&outcome.events);
        shared.notes(&outcome.shadow_notes);
        if !outcome.decision.is_continue() {
            return (self.reply(&outcome.decision), true);
        }
        if let Some(new) = outcome.body {
            let written = if request {
                body::set_request_body(size, &new)
            } else {
                body::set_response_body(size, &new)
            };
            if let Err(e) = written {
                shared.host_error(&e);
            }
        }
        (Action::Continue, true)
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        let config = shared.engine.config();
        let headers = match header_map::request_headers() {
            Ok(h) => h,
            Err(e) => {
                shared.host_error(&e);
                return Action::Continue;
            }
        };
        let property = |path: &[&str]| match http::property_string(path) {
            Ok(v) => v,
            Err(e) => {
                shared.host_error(&e);
                None
            }
        };
        let input = RequestInput {
            headers,
            end_of_stream,
            source_address: if config.needs_client_ip {
                property(&["source", "address"])
            } else {
                None
            },
            route_name: if config.needs_route_name {
                property(&["xds", "route_name"])
            } else {
                None
            },
        };
        let outcome = shared.engine.on_request_headers(&input);
        shared.count(&outcome.events);
        shared.notes(&outcome.shadow_notes);
        if !outcome.decision.is_continue() {
            return self.reply(&outcome.decision);
        }
        shared.apply_edits(MapType::HttpRequestHeaders, &outcome.edits);
        self.request_body = outcome.body;
        self.response = outcome.response;
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(plan) = self.request_body.take() else {
            return Action::Continue;
        };
        let (action, done) = self.on_body(&plan, body_size, end_of_stream, true);
        if !done {
            self.request_body = Some(plan);
        }
        action
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(plan) = self.response.take() else {
            return Action::Continue;
        };
        let shared = Rc::clone(&self.shared);
        let headers = match header_map::response_headers() {
            Ok(h) => h,
            Err(e) => {
                shared.host_error(&e);
                return Action::Continue;
            }
        };
        let outcome = shared
            .engine
            .on_response_headers(&plan, &headers, end_of_stream);
        shared.count(&outcome.events);
        shared.notes(&outcome.shadow_notes);
        shared.apply_edits(MapType::HttpResponseHeaders, &outcome.edits);
        self.response_body = outcome.body;
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(plan) = self.response_body.take() else {
            return Action::Continue;
        };
        let (action, done) = self.on_body(&plan, body_size, end_of_stream, false);
        if !done {
            self.response_body = Some(plan);
        }
        action
    }
}
