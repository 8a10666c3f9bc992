//! `global` rules in the skeleton against `FakeHost`: the request pauses while the rate limit
//! service answers; every answer, failure and `on_error` gives what Envoy would show the client.

use super::{chained, standalone, Client};
use crate::global::rls::{
    Code, DescriptorStatus, HeaderValue, RateLimitRequest, RateLimitResponse, Unit, METHOD, SERVICE,
};
use crate::global::MAX_RESPONSE_BYTES;
use crate::policy::QUOTA_HEADERS;
use palisade_core::fake_host::{FakeGrpcCall, GrpcReply, SentReply};
use palisade_core::fake_proxy::{FakeProxy, Stream};
use palisade_core::plugin::host::grpc_status;
use palisade_core::plugin::runtime::Action;
use prost::Message;
use serde_json::{json, Value};
use std::time::Duration;

/// What these tests do with a worker and the rate limit service.
trait Service {
    /// Request headers from `ip`, as Envoy delivers them.
    fn begin(&self, ip: &str, headers: &[(&str, &str)]) -> Stream;
    /// The call the last request dispatched (the newest open one).
    fn last_call(&self) -> FakeGrpcCall;
    /// End a call as Envoy does (with the root context current), as the SDK adapter hands it on.
    fn end_call(&self, token: u32, reply: GrpcReply);
    /// One request answered by the service with `reply`: the status the client gets.
    fn through(&self, reply: GrpcReply) -> (u16, Option<SentReply>);
}

impl Service for FakeProxy {
    fn begin(&self, ip: &str, headers: &[(&str, &str)]) -> Stream {
        self.start_from(ip, "/api/items", headers)
    }

    fn last_call(&self) -> FakeGrpcCall {
        self.fake
            .grpc_calls_open()
            .pop()
            .expect("a gRPC call in flight")
    }

    fn end_call(&self, token: u32, reply: GrpcReply) {
        assert!(self.grpc_end(token, reply), "an open call");
    }

    fn through(&self, reply: GrpcReply) -> (u16, Option<SentReply>) {
        let r = self.begin("192.0.2.1", &[]);
        assert_eq!(r.action, Action::Pause, "waits for the service");
        let token = self.last_call().token;
        self.end_call(token, reply);
        settle(r)
    }
}

/// The client's status (200: went upstream) and reply, then the stream ends.
fn settle(r: Stream) -> (u16, Option<SentReply>) {
    let status = r.status().unwrap_or_else(|| {
        panic!(
            "neither answered nor let through: {:?}, resumed {}",
            r.action,
            r.resumed()
        )
    });
    r.finish();
    (status, r.reply())
}

fn global_rule(extra: Value) -> Value {
    let mut global = json!({"cluster": "rls", "domain": "edge",
        "descriptor": [{"key": "generic_key", "value": {"constant": "api"}},
                       {"key": "remote_address", "value": "client_ip"}]});
    if let (Some(g), Some(e)) = (global.as_object_mut(), extra.as_object()) {
        g.extend(e.clone());
    }
    json!({"name": "shared", "key": ["client_ip"],
        "limits": [{"capacity": 2, "refill": 2, "period": "1m"}], "global": global})
}

fn one_global(extra: Value) -> FakeProxy {
    let p = standalone(&json!({"rules": [global_rule(extra)]}));
    p.fake.grpc_clusters(&["rls"]);
    p
}

fn answer(code: Code) -> GrpcReply {
    GrpcReply::Message(RateLimitResponse::of(code).encode_to_vec())
}

const M: &str = "palisade.rate_limit.shared";

#[test]
fn the_request_waits_for_the_service_which_gets_the_rules_descriptor() {
    let p = one_global(json!({"timeout": "25ms", "hits_addend": 2}));
    let r = p.begin("192.0.2.9", &[]);
    assert_eq!(r.action, Action::Pause);
    let call = p.last_call();
    assert_eq!(call.cluster, "rls");
    assert_eq!(call.service, SERVICE);
    assert_eq!(call.method, METHOD);
    assert_eq!(call.timeout, Duration::from_millis(25));
    let req = RateLimitRequest::decode(call.message.as_slice()).unwrap();
    assert_eq!(req.domain, "edge");
    assert_eq!(req.hits_addend, 2);
    let entries: Vec<(&str, &str)> = req.descriptors[0]
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        entries,
        vec![("generic_key", "api"), ("remote_address", "192.0.2.9")]
    );
    assert_eq!((r.resumed(), r.reply()), (0, None));
    p.fake.advance(Duration::from_millis(3));
    p.end_call(call.token, answer(Code::Ok));
    assert_eq!(r.resumed(), 1);
    assert_eq!(settle(r).0, 200);
    assert_eq!(p.stat(&format!("{M}.global_ok")), 1);
    assert_eq!(p.stat(&format!("{M}.allowed")), 1);
    assert_eq!(
        p.fake.samples(&format!("{M}.global_latency_ms")).unwrap(),
        vec![3]
    );
    assert_eq!(p.runtime.grpc_calls_in_flight(), 0);
}

#[test]
fn over_limit_gets_the_rules_reply_with_quota_headers_from_the_statuses() {
    let p = one_global(json!({}));
    let mut m = RateLimitResponse::of(Code::OverLimit);
    m.statuses = vec![DescriptorStatus::of(
        Code::OverLimit,
        100,
        Unit::Minute,
        0,
        17,
    )];
    let (status, reply) = p.through(GrpcReply::Message(m.encode_to_vec()));
    let reply = reply.unwrap();
    assert_eq!(status, 429);
    assert_eq!(reply.details, "palisade_rate_limited");
    assert_eq!(reply.header("retry-after"), Some("17"));
    assert_eq!(
        QUOTA_HEADERS.map(|n| reply.header(n)),
        [Some("100"), Some("0"), Some("17"), Some("100;w=60")]
    );
    assert_eq!(reply.header("x-envoy-ratelimited"), Some("true"));
    assert_eq!(reply.body, b"rate limit exceeded\n".to_vec());
    assert_eq!(p.stat(&format!("{M}.global_over_limit")), 1);
    assert_eq!(p.stat(&format!("{M}.limited")), 1);
    // Without statuses (Limitador): the service's headers go to the client.
    let mut m = RateLimitResponse::of(Code::OverLimit);
    m.response_headers_to_add = vec![HeaderValue::text("x-ratelimit-remaining", "0")];
    let (status, reply) = p.through(GrpcReply::Message(m.encode_to_vec()));
    let reply = reply.unwrap();
    assert_eq!(status, 429);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(reply.header("ratelimit-limit"), None);
}

#[test]
fn ok_and_unknown_go_upstream_and_ok_headers_reach_the_response() {
    let p = standalone(&json!({"headers_on_allowed": true, "rules": [global_rule(json!({}))]}));
    let mut m = RateLimitResponse::of(Code::Ok);
    m.statuses = vec![DescriptorStatus::of(Code::Ok, 10, Unit::Second, 9, 1)];
    let r = p.begin("192.0.2.1", &[]);
    p.end_call(p.last_call().token, GrpcReply::Message(m.encode_to_vec()));
    assert_eq!(r.resumed(), 1);
    let action = r.respond(&[(":status", "200")], false).unwrap();
    assert_eq!(action, Action::Continue);
    let response = r.response();
    let get = |n: &str| {
        response
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(get("ratelimit-limit").as_deref(), Some("10"));
    assert_eq!(get("ratelimit-remaining").as_deref(), Some("9"));
    r.finish();
    assert_eq!(p.through(answer(Code::Unknown)).0, 200);
    assert_eq!(p.stat(&format!("{M}.global_unknown")), 1);
    assert_eq!(p.stat(&format!("{M}.allowed")), 2);
}

/// How a call fails.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Timeout,
    Unavailable,
    /// A reset stream, or framing Envoy cannot read.
    Internal,
    Malformed,
    Oversized,
    /// The cluster is unknown to Envoy: the call is never dispatched.
    NoCluster,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::Timeout,
        Fault::Unavailable,
        Fault::Internal,
        Fault::Malformed,
        Fault::Oversized,
        Fault::NoCluster,
    ];

    /// The counter a call failing this way counts in.
    fn counter(self) -> &'static str {
        match self {
            Fault::Timeout => "global_timeout",
            _ => "global_error",
        }
    }
}

/// Three requests through a service failing with `fault` (a rule with this `global` `extra`):
/// the worker, and the statuses the client got.
fn three_failing(fault: Fault, extra: Value) -> (FakeProxy, Vec<u16>) {
    let p = one_global(extra);
    if let Fault::NoCluster = fault {
        p.fake.grpc_clusters(&["other"]);
    }
    let statuses = (0..3).map(|_| failing(&p, fault)).collect();
    (p, statuses)
}

/// One request through a service failing with `fault`.
fn failing(p: &FakeProxy, fault: Fault) -> u16 {
    let r = p.begin("192.0.2.1", &[]);
    match fault {
        Fault::NoCluster => {
            assert!(p.fake.grpc_calls_open().is_empty());
            return settle(r).0;
        }
        Fault::Timeout => {
            assert_eq!(r.action, Action::Pause);
            p.fake.advance(Duration::from_millis(19));
            p.grpc_expire();
            assert_eq!(
                (r.resumed(), r.reply()),
                (0, None),
                "not before the timeout"
            );
            p.fake.advance(Duration::from_millis(1));
            p.grpc_expire();
        }
        other => {
            let reply = match other {
                Fault::Unavailable => GrpcReply::Status(grpc_status::UNAVAILABLE),
                Fault::Internal => GrpcReply::Status(grpc_status::INTERNAL),
                Fault::Malformed => GrpcReply::Message(b"\xff\xff\xff\xff not protobuf".to_vec()),
                _ => GrpcReply::Message(vec![0u8; MAX_RESPONSE_BYTES + 1]),
            };
            p.end_call(p.last_call().token, reply);
        }
    }
    settle(r).0
}

#[test]
fn every_failure_applies_on_error_local_allow_or_deny() {
    for fault in Fault::ALL {
        // local (default): the rule's own buckets (2 a minute) decide.
        let (p, statuses) = three_failing(fault, json!({}));
        assert_eq!(statuses, vec![200, 200, 429], "local, {fault:?}");
        assert_eq!(p.stat(&format!("{M}.{}", fault.counter())), 3, "{fault:?}");
        assert_eq!(p.stat(&format!("{M}.global_fallback_local")), 3);
        assert_eq!(p.stat(&format!("{M}.allowed")), 2);
        assert_eq!(p.stat(&format!("{M}.limited")), 1);
        assert_eq!(p.runtime.grpc_calls_in_flight(), 0);
        for (on_error, expected, fallback) in [
            ("allow", 200, "global_fallback_allow"),
            ("deny", 429, "global_fallback_deny"),
        ] {
            let (p, statuses) = three_failing(fault, json!({ "on_error": on_error }));
            assert_eq!(statuses, vec![expected; 3], "{on_error}, {fault:?}");
            assert_eq!(p.stat(&format!("{M}.{fallback}")), 3);
            assert_eq!(p.stat(&format!("{M}.global_fallback_local")), 0);
        }
    }
}

#[test]
fn a_deny_fallback_replies_with_retry_after_1_and_no_quota() {
    let p = one_global(json!({"on_error": "deny"}));
    let r = p.begin("192.0.2.1", &[]);
    p.end_call(
        p.last_call().token,
        GrpcReply::Status(grpc_status::UNAVAILABLE),
    );
    let reply = r.reply().unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("ratelimit-limit"), None);
    r.finish();
}

#[test]
fn a_client_that_hangs_up_while_waiting_leaves_nothing_behind() {
    let p = one_global(json!({}));
    let r = p.begin("192.0.2.1", &[]);
    let token = p.last_call().token;
    assert_eq!(p.runtime.grpc_calls_in_flight(), 1);
    r.finish();
    assert_eq!(p.runtime.grpc_calls_in_flight(), 0);
    // Envoy still ends the call; its answer reaches nothing and is not counted.
    p.end_call(token, answer(Code::OverLimit));
    assert_eq!(p.stat(&format!("{M}.global_over_limit")), 0);
    assert!(p
        .fake
        .samples(&format!("{M}.global_latency_ms"))
        .unwrap()
        .is_empty());
    // The next request is served as usual.
    assert_eq!(p.through(answer(Code::Ok)).0, 200);
}

#[test]
fn a_shadow_global_rule_marks_the_request_instead_of_limiting_it() {
    let mut rule = global_rule(json!({"on_error": "deny"}));
    rule["shadow"] = json!(true);
    let p = standalone(&json!({"rules": [rule]}));
    for reply in [
        answer(Code::OverLimit),
        GrpcReply::Status(grpc_status::UNAVAILABLE),
    ] {
        let r = p.begin("192.0.2.1", &[("x-palisade-ratelimit-shadow", "forged")]);
        p.end_call(p.last_call().token, reply);
        assert_eq!(r.resumed(), 1);
        assert_eq!(
            r.upstream_header("x-palisade-ratelimit-shadow").as_deref(),
            Some("shared")
        );
        assert_eq!(settle(r).0, 200);
    }
    assert_eq!(p.stat(&format!("{M}.shadow_limited")), 2);
    // Allowed: the forged mark is removed all the same.
    let r = p.begin("192.0.2.1", &[("x-palisade-ratelimit-shadow", "forged")]);
    p.end_call(p.last_call().token, answer(Code::Ok));
    assert_eq!(r.upstream_header("x-palisade-ratelimit-shadow"), None);
    r.finish();
}

#[test]
fn a_local_rule_that_limits_first_spares_the_service_call() {
    let p = standalone(&json!({"mode": "all", "rules": [
        {"name": "local", "key": ["client_ip"], "limits": [{"capacity": 1, "refill": 1, "period": "1m"}]},
        global_rule(json!({}))]}));
    assert_eq!(p.through(answer(Code::Ok)).0, 200);
    let r = p.begin("192.0.2.1", &[]);
    assert_eq!(r.reply().map(|r| r.status), Some(429));
    assert_eq!(p.fake.grpc_calls().len(), 1);
    r.finish();
}

#[test]
fn two_global_rules_in_mode_all_each_ask_and_the_first_that_limits_replies() {
    let mut second = global_rule(json!({"domain": "other"}));
    second["name"] = json!("second");
    second["response"] = json!({"status": 503});
    let p = standalone(&json!({"mode": "all", "rules": [global_rule(json!({})), second]}));
    let r = p.begin("192.0.2.1", &[]);
    let calls = p.fake.grpc_calls_open();
    assert_eq!(calls.len(), 2);
    let domain = |c: &FakeGrpcCall| {
        RateLimitRequest::decode(c.message.as_slice())
            .unwrap()
            .domain
    };
    assert_eq!(
        (domain(&calls[0]).as_str(), domain(&calls[1]).as_str()),
        ("edge", "other")
    );
    p.end_call(calls[1].token, answer(Code::OverLimit));
    assert_eq!((r.resumed(), r.reply()), (0, None), "waits for both");
    p.end_call(calls[0].token, answer(Code::Ok));
    assert_eq!(settle(r).0, 503);
}

#[test]
fn mode_first_asks_only_the_first_matching_global_rule() {
    let mut second = global_rule(json!({"domain": "other"}));
    second["name"] = json!("second");
    let p = standalone(&json!({"rules": [global_rule(json!({})), second]}));
    assert_eq!(p.through(answer(Code::Ok)).0, 200);
    assert_eq!(p.fake.grpc_calls().len(), 1);
}

#[test]
fn a_claim_descriptor_entry_reads_the_subject_jwt_auth_verified() {
    let mut rule = global_rule(json!({}));
    rule["global"]["descriptor"] = json!([{"key": "user", "value": {"claim": "sub"}}]);
    let p = chained(&json!({"chain": [{"claims": {}}, {"rate_limit": {"rules": [rule]}}]}));
    let r = p.begin("192.0.2.1", &[("x-test-sub", "alice")]);
    let call = p.last_call();
    let req = RateLimitRequest::decode(call.message.as_slice()).unwrap();
    assert_eq!(req.descriptors[0].entries[0].key, "user");
    assert_eq!(req.descriptors[0].entries[0].value, "alice");
    p.end_call(call.token, answer(Code::OverLimit));
    assert_eq!(settle(r).0, 429);
    // No verified subject: the rule is skipped, no call.
    assert_eq!(settle(p.begin("192.0.2.1", &[])).0, 200);
    assert_eq!(p.fake.grpc_calls().len(), 1);
    assert_eq!(p.stat(&format!("{M}.skipped_missing_key")), 1);
}

#[test]
fn a_rule_without_global_makes_no_grpc_call() {
    let p = standalone(&json!({"rules": [{"name": "local", "key": ["client_ip"],
        "limits": [{"capacity": 5, "refill": 5, "period": "1s"}]}]}));
    let r = p.begin("192.0.2.1", &[]);
    assert_eq!(r.action, Action::Continue);
    r.finish();
    assert_eq!(p.fake.hostcalls("grpc_call"), 0);
    assert!(p.fake.stat("palisade.rate_limit.local.global_ok").is_err());
}

#[test]
fn a_request_a_shaped_rule_delays_asks_the_service_first_then_waits_for_its_slot() {
    let p = standalone(&json!({"mode": "all", "rules": [
        {"name": "shaped", "key": ["client_ip"], "limits": [{"capacity": 1, "refill": 10,
            "period": "1s", "shape": {"max_delay": "1s"}}]},
        global_rule(json!({}))]}));
    p.fake.grpc_clusters(&["rls"]);
    assert_eq!(
        p.through(answer(Code::Ok)).0,
        200,
        "the token, then the service"
    );
    // The next gets the slot 100 ms on, asks the service, then waits for the slot.
    let r = p.begin("192.0.2.1", &[]);
    assert_eq!(r.action, Action::Pause);
    let token = p.last_call().token;
    p.end_call(token, answer(Code::Ok));
    assert_eq!(
        (r.resumed(), r.reply()),
        (0, None),
        "now waiting for its slot"
    );
    p.fake.advance(Duration::from_millis(100));
    p.runtime.on_tick();
    assert_eq!(r.resumed(), 1);
    r.finish();
    // One the service limits gives its slot back (it was the last reserved).
    let r = p.begin("192.0.2.1", &[]);
    let token = p.last_call().token;
    p.end_call(token, answer(Code::OverLimit));
    assert_eq!(r.reply().map(|r| r.status), Some(429));
    r.finish();
    assert_eq!(p.stat("palisade.rate_limit.shaped.delayed"), 1);
    assert_eq!(p.stat("palisade.rate_limit.shaped.released"), 1);
    assert_eq!(p.stat("palisade.rate_limit.shaped.slots_returned"), 1);
    // A client that hangs up while the service decides gives its slot back too.
    let r = p.begin("192.0.2.1", &[]);
    assert_eq!(r.action, Action::Pause);
    r.finish();
    assert_eq!(p.stat("palisade.rate_limit.shaped.slots_returned"), 2);
}
