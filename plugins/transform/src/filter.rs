//! The policy in the skeleton: read the stream's parts, ask the [`Transformer`], apply the edits,
//! count the events.
//!
//! Flow per stream:
//! - request headers: all headers are read once (as bytes, shared with the rest of the chain); the
//!   engine returns header edits (`:path`/`:method` included — Envoy clears the route cache when a
//!   Wasm filter changes request headers, so routing follows a rewritten path), an optional
//!   request body plan and the rendered response plan;
//! - request body (only with a body plan): buffered until end of stream (or until `body.max_bytes`
//!   is exceeded), then replaced whole;
//! - response headers / body: the same, from the response plan.
//!
//! Failure modes: a bad config is rejected at `on_configure`. A hostcall that fails while
//! reading or writing leaves that part of the stream untouched (fail open: traffic is never
//! stopped because a transformation could not be applied), logged and counted in
//! `palisade.transform.host_errors`. A local reply that cannot be sent lets the request through.

use crate::config::Config;
use crate::engine::{BodyPlan, Event, RequestInput, ResponsePlan, Transformer};
use crate::ops::HeaderEdit;
use palisade_core::plugin::host::{Buffer, HeaderMap};
use palisade_core::plugin::{
    EventCounters, Flow, HostError, Kind, Metric, MetricEvent, Policy, Setup, StreamCx,
    StreamPolicy,
};
use palisade_core::{ConfigError, Decision};
use std::rc::Rc;

pub const PLUGIN: &str = "transform";

/// The plugin, for `export!` and the chain.
pub const KIND: Kind = Kind {
    name: PLUGIN,
    build,
};

impl MetricEvent for Event {
    const NAMES: &'static [&'static str] = &[
        "transformed",
        "shadow_transformed",
        "skipped",
        "errors",
        "rejected",
    ];

    fn index(self) -> usize {
        self as usize
    }
}

fn build(bytes: &[u8], setup: &Setup<'_>) -> Result<Box<dyn Policy>, ConfigError> {
    let config = Config::parse(bytes)?;
    let metrics = config
        .rules
        .iter()
        .map(|r| EventCounters::define(setup, &r.name))
        .collect();
    log::info!(
        "palisade {PLUGIN}: configured {} rule(s)",
        config.rules.len()
    );
    Ok(Box::new(Transform(Rc::new(Shared {
        engine: Transformer::new(config),
        metrics,
        host_errors: setup.counter("host_errors"),
    }))))
}

struct Shared {
    engine: Transformer,
    metrics: Vec<EventCounters<Event>>,
    host_errors: Metric,
}

impl Shared {
    fn count(&self, events: &[(usize, Event)]) {
        for (rule, event) in events {
            if let Some(m) = self.metrics.get(*rule) {
                m.count(*event);
            }
        }
    }

    fn host_error(&self, e: &HostError) {
        log::warn!("palisade {PLUGIN}: {e}; this part of the stream is left untouched");
        self.host_errors.inc();
    }

    fn notes(&self, notes: &[String]) {
        for n in notes {
            log::info!("palisade {PLUGIN}: {n}");
        }
    }

    fn apply_edits(&self, cx: &mut StreamCx<'_>, map: HeaderMap, edits: &[HeaderEdit]) {
        for e in edits {
            let done = match map {
                HeaderMap::Request => cx.set_request_values(&e.name, &e.values),
                _ => cx.set_response_values(&e.name, &e.values),
            };
            if let Err(err) = done {
                self.host_error(&err);
            }
        }
    }
}

fn flow(decision: Decision) -> Flow {
    match decision {
        Decision::Continue => Flow::Continue,
        Decision::Reply(reply) => Flow::reply_or_continue(reply),
    }
}

struct Transform(Rc<Shared>);

impl Policy for Transform {
    fn stream(&self, _context_id: u32) -> Box<dyn StreamPolicy> {
        Box::new(Stream {
            shared: Rc::clone(&self.0),
            request_body: None,
            response: None,
            response_body: None,
        })
    }
}

struct Stream {
    shared: Rc<Shared>,
    request_body: Option<BodyPlan>,
    response: Option<ResponsePlan>,
    response_body: Option<BodyPlan>,
}

/// A body phase (request or response) of the plan in `slot`, if any: the plan stays there while
/// the body buffers, and is dropped once the body is handled.
fn on_body(
    shared: &Shared,
    cx: &StreamCx<'_>,
    slot: &mut Option<BodyPlan>,
    size: usize,
    eos: bool,
    which: Buffer,
) -> Flow {
    let Some(plan) = slot.as_ref() else {
        return Flow::Continue;
    };
    let (flow, done) = body_step(shared, cx, plan, size, eos, which);
    if done {
        *slot = None;
    }
    flow
}

/// Body handling: buffer, enforce the limit, transform at end of stream. Returns the flow and
/// whether the plan is done with.
fn body_step(
    shared: &Shared,
    cx: &StreamCx<'_>,
    plan: &BodyPlan,
    size: usize,
    eos: bool,
    which: Buffer,
) -> (Flow, bool) {
    if u64::try_from(size).map_or(true, |n| n > plan.max_bytes) {
        let (decision, events) = shared.engine.body_too_large(plan);
        shared.count(&events);
        return (flow(decision), true);
    }
    if !eos {
        return (Flow::Buffer, false);
    }
    let bytes = match cx.body(which, size) {
        Ok(b) => b,
        Err(e) => {
            shared.host_error(&e);
            return (Flow::Continue, true);
        }
    };
    let outcome = shared.engine.transform_body(plan, &bytes);
    shared.count(&outcome.events);
    shared.notes(&outcome.shadow_notes);
    if !outcome.decision.is_continue() {
        return (flow(outcome.decision), true);
    }
    if let Some(new) = outcome.body {
        if let Err(e) = cx.set_body(which, size, &new) {
            shared.host_error(&e);
        }
    }
    (Flow::Continue, true)
}

impl StreamPolicy for Stream {
    fn on_request_headers(&mut self, cx: &mut StreamCx<'_>, end_of_stream: bool) -> Flow {
        let shared = Rc::clone(&self.shared);
        let config = shared.engine.config();
        let headers = match cx.request_headers() {
            Ok(h) => h,
            Err(e) => {
                shared.host_error(&e);
                return Flow::Continue;
            }
        };
        let property = |path: &'static [&'static str]| match cx.property(path) {
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
            claims: cx.claims(),
        };
        let outcome = shared.engine.on_request_headers(&input);
        // The input holds the stream's cached header map: let it go before editing, or the
        // first edit copies the whole map to keep this reference unchanged.
        drop(input);
        shared.count(&outcome.events);
        shared.notes(&outcome.shadow_notes);
        if !outcome.decision.is_continue() {
            return flow(outcome.decision);
        }
        shared.apply_edits(cx, HeaderMap::Request, &outcome.edits);
        self.request_body = outcome.body;
        self.response = outcome.response;
        Flow::Continue
    }

    fn on_request_body(&mut self, cx: &mut StreamCx<'_>, size: usize, eos: bool) -> Flow {
        let slot = &mut self.request_body;
        on_body(&self.shared, cx, slot, size, eos, Buffer::RequestBody)
    }

    fn on_response_headers(&mut self, cx: &mut StreamCx<'_>, end_of_stream: bool) -> Flow {
        let Some(plan) = self.response.take() else {
            return Flow::Continue;
        };
        let shared = Rc::clone(&self.shared);
        let headers = match cx.response_headers() {
            Ok(h) => h,
            Err(e) => {
                shared.host_error(&e);
                return Flow::Continue;
            }
        };
        let outcome = shared
            .engine
            .on_response_headers(&plan, &headers, end_of_stream);
        drop(headers); // as on the request: no copy of the cached map on the first edit
        shared.count(&outcome.events);
        shared.notes(&outcome.shadow_notes);
        shared.apply_edits(cx, HeaderMap::Response, &outcome.edits);
        self.response_body = outcome.body;
        Flow::Continue
    }

    fn on_response_body(&mut self, cx: &mut StreamCx<'_>, size: usize, eos: bool) -> Flow {
        let slot = &mut self.response_body;
        on_body(&self.shared, cx, slot, size, eos, Buffer::ResponseBody)
    }
}
