//! The glue of `global` rules: one `ShouldRateLimit` call per matching global rule, dispatched
//! from the request headers; the request pauses until every call has ended (Envoy ends each
//! within the rule's `timeout`), then the answers decide, in rule order ([`crate::global`]).
//!
//! Nothing outlives the stream: the calls are the runtime's, which forgets them when the stream
//! ends (a client that hangs up while waiting), and their late ends reach no policy.

use super::{Shared, PLUGIN};
use crate::global::{self, rls, Answer, Failure, GlobalEvent, OnError, Step};
use crate::policy::{store_failure_reply, Event, GlobalCheck};
use palisade_core::plugin::{GrpcCall, GrpcResponse, StreamCx};
use palisade_core::{Decision, Timestamp};

/// One call of a stream.
struct Call {
    rule: usize,
    token: Option<u32>,
    started: Timestamp,
    timeout: std::time::Duration,
    answer: Option<Answer>,
}

/// The global calls of one request, in rule order.
pub(super) struct Wait {
    calls: Vec<Call>,
}

/// What the answers decided.
pub(super) struct Outcome {
    pub decision: Decision,
    pub events: Vec<(usize, Event)>,
    pub shadow_rules: Vec<usize>,
    pub allowed_headers: Vec<(String, String)>,
}

impl Wait {
    /// Dispatch one call per check. A call that cannot be dispatched has failed already.
    pub fn start(shared: &Shared, cx: &mut StreamCx<'_>, checks: Vec<GlobalCheck>) -> Wait {
        let rules = &shared.limiter.config().rules;
        let mut calls = Vec::with_capacity(checks.len());
        for check in checks {
            let Some(spec) = rules.get(check.rule).and_then(|r| r.global.as_ref()) else {
                continue;
            };
            let message = global::request_message(spec, &check.entries);
            let started = cx.now();
            let call = GrpcCall {
                cluster: &spec.cluster,
                service: rls::SERVICE,
                method: rls::METHOD,
                initial_metadata: &[],
                message: &message,
                timeout: spec.timeout,
            };
            let (token, answer) = match cx.grpc_call(&call) {
                Ok(token) => (Some(token), None),
                Err(e) => {
                    log::debug!(
                        "palisade {PLUGIN}: cannot call the rate limit service on {}: {e}",
                        spec.cluster
                    );
                    let answer = Answer::Failed(Failure::Dispatch(e.code));
                    shared.count_global(check.rule, answer.event());
                    (None, Some(answer))
                }
            };
            calls.push(Call {
                rule: check.rule,
                token,
                started,
                timeout: spec.timeout,
                answer,
            });
        }
        Wait { calls }
    }

    pub fn waiting(&self) -> bool {
        self.calls.iter().any(|c| c.answer.is_none())
    }

    /// A call of this stream ended: classify it, count it and its latency.
    pub fn answer(&mut self, shared: &Shared, cx: &StreamCx<'_>, response: GrpcResponse) {
        let Some(call) = self
            .calls
            .iter_mut()
            .find(|c| c.answer.is_none() && c.token == Some(response.token))
        else {
            return;
        };
        let elapsed = cx.now().saturating_since(call.started);
        let timed_out = global::timed_out(elapsed, call.timeout);
        let answer = global::classify(response.status, response.size, timed_out, |size| {
            cx.grpc_response(size, global::MAX_RESPONSE_BYTES)
                .ok()
                .filter(|m| m.len() == size)
        });
        if let Answer::Failed(f) = &answer {
            log::debug!(
                "palisade {PLUGIN}: rate limit service gave no answer ({f:?}, gRPC status {})",
                response.status
            );
        }
        shared.count_global(call.rule, answer.event());
        shared.record_latency(call.rule, elapsed);
        call.answer = Some(answer);
    }

    /// Every call has ended: the answers decide, in rule order; the first rule that limits
    /// ends the evaluation.
    pub fn finish(self, shared: &Shared, cx: &StreamCx<'_>) -> Outcome {
        let config = shared.limiter.config();
        let mut out = Outcome {
            decision: Decision::Continue,
            events: Vec::new(),
            shadow_rules: Vec::new(),
            allowed_headers: Vec::new(),
        };
        for call in self.calls {
            let (Some(rule), Some(answer)) = (config.rules.get(call.rule), call.answer) else {
                continue;
            };
            let i = call.rule;
            match global::step(rule, &answer, config.headers_on_allowed) {
                Step::Allow(headers) => {
                    out.events.push((i, Event::Allowed));
                    out.allowed_headers.extend(headers);
                }
                Step::ShadowLimited => {
                    out.events.push((i, Event::ShadowLimited));
                    out.shadow_rules.push(i);
                }
                Step::Limit(reply) => {
                    out.events.push((i, Event::Limited));
                    out.decision = Decision::Reply(reply);
                    return out;
                }
                Step::Fallback(on_error) => {
                    shared.count_global(i, on_error.event());
                    match on_error {
                        OnError::Allow => {}
                        OnError::Deny if rule.shadow => {
                            out.events.push((i, Event::ShadowLimited));
                            out.shadow_rules.push(i);
                        }
                        OnError::Deny => {
                            out.decision = Decision::Reply(store_failure_reply(rule));
                            return out;
                        }
                        OnError::Local => {
                            let local = shared.limiter.check_local(i, cx, &shared.store, cx.now());
                            out.events.extend(local.events);
                            out.shadow_rules.extend(local.shadow_rules);
                            out.allowed_headers.extend(local.allowed_headers);
                            if let Decision::Reply(reply) = local.decision {
                                out.decision = Decision::Reply(reply);
                                return out;
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

impl Shared {
    pub(super) fn count_global(&self, rule: usize, event: GlobalEvent) {
        if let Some(m) = self.global_metrics.get(rule).and_then(Option::as_ref) {
            m.0.count(event);
        }
    }

    fn record_latency(&self, rule: usize, elapsed: std::time::Duration) {
        if let Some(m) = self.global_metrics.get(rule).and_then(Option::as_ref) {
            m.1.record(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        }
    }
}
