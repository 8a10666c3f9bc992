//! The real rate_limit policy in the skeleton, driven through `load_one` / `load_chain` against
//! `FakeHost` as the SDK adapter drives it ([`FakeProxy`]): what reaches the client, the upstream
//! and the metrics.

use super::KIND;
use crate::policy::QUOTA_HEADERS;
use palisade_core::fake_host::FakeHost;
use palisade_core::fake_proxy::{Done, FakeProxy, Stream, CLAIMS};
use palisade_core::plugin::host::code;
use palisade_core::plugin::runtime::Action;
use palisade_core::plugin::Kind;
use palisade_core::ConfigError;
use serde_json::{json, Value};
use std::time::Duration;

/// `global` rules (the rate limit service).
mod global;

/// [`CLAIMS`] stands in for jwt_auth: `x-test-sub` is the verified `sub`.
const KINDS: [Kind; 2] = [CLAIMS, KIND];

/// The standalone module with this config.
fn standalone(config: &Value) -> FakeProxy {
    FakeProxy::one(&KIND, config).unwrap_or_else(|e| panic!("rejected: {e}"))
}

/// The chain module with this config.
fn chained(config: &Value) -> FakeProxy {
    FakeProxy::chain(&KINDS, config).unwrap_or_else(|e| panic!("rejected: {e}"))
}

fn chain_error(config: &Value) -> ConfigError {
    match FakeProxy::chain(&KINDS, config) {
        Ok(_) => panic!("accepted: {config}"),
        Err(e) => e,
    }
}

/// What these tests do with a worker.
trait Client {
    /// One whole request from `ip` with these headers, through to its end.
    fn request(&self, ip: &str, headers: &[(&str, &str)]) -> Done;
    fn statuses(&self, ip: &str, n: usize) -> Vec<u16>;
    fn stat(&self, name: &str) -> i64;
    /// A rule's `allowed` and `limited` counts, by its metrics' prefix (`rate_limit_2.inner`).
    fn decided(&self, rule: &str) -> [i64; 2];
    /// A request with this `x-key`, still in flight: its headers were run, its end is up to
    /// the test.
    fn open(&self, key: &str) -> Stream;
}

impl Client for FakeProxy {
    fn request(&self, ip: &str, headers: &[(&str, &str)]) -> Done {
        self.request_from(ip, "/", headers)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn statuses(&self, ip: &str, n: usize) -> Vec<u16> {
        (0..n).map(|_| self.request(ip, &[]).status).collect()
    }

    fn stat(&self, name: &str) -> i64 {
        self.fake.stat(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn decided(&self, rule: &str) -> [i64; 2] {
        ["allowed", "limited"].map(|e| self.stat(&format!("palisade.{rule}.{e}")))
    }

    fn open(&self, key: &str) -> Stream {
        self.start("/", &[("x-key", key)])
    }
}
fn rule(name: &str, capacity: u64) -> Value {
    json!({"name": name, "key": ["client_ip"],
        "limits": [{"capacity": capacity, "refill": 1, "period": "1s"}]})
}

#[test]
fn requests_are_allowed_up_to_capacity_then_answered_429_with_retry_after_and_quota_headers() {
    let p = standalone(&json!({"rules": [rule("per-ip", 3)]}));
    assert_eq!(p.runtime.name(), "rate_limit");
    assert_eq!(p.statuses("192.0.2.1", 3), vec![200, 200, 200]);
    let limited = p.request("192.0.2.1", &[]);
    assert_eq!(limited.action, Action::Pause);
    let reply = limited.reply.expect("a local reply");
    assert_eq!(reply.status, 429);
    assert_eq!(reply.details, "palisade_rate_limited");
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("x-envoy-ratelimited"), Some("true"));
    assert_eq!(
        QUOTA_HEADERS.map(|n| reply.header(n)),
        [Some("3"), Some("0"), Some("3"), Some("3;w=3")]
    );
    assert_eq!(reply.body, b"rate limit exceeded\n".to_vec());
    // Another client has its own bucket.
    assert_eq!(p.statuses("192.0.2.2", 1), vec![200]);
    // Refill: one more token a second later.
    p.fake.advance(Duration::from_secs(1));
    assert_eq!(p.statuses("192.0.2.1", 2), vec![200, 429]);
}

#[test]
fn every_decision_is_counted_in_its_rule_metric_exactly() {
    let p = standalone(&json!({"rules": [rule("per-ip", 2)]}));
    p.statuses("192.0.2.1", 5);
    p.statuses("192.0.2.2", 1);
    assert_eq!(p.stat("palisade.rate_limit.per-ip.allowed"), 3);
    assert_eq!(p.stat("palisade.rate_limit.per-ip.limited"), 3);
    assert_eq!(p.stat("palisade.rate_limit.per-ip.shadow_limited"), 0);
    assert_eq!(p.stat("palisade.rate_limit.per-ip.store_failures"), 0);
    assert_eq!(p.stat("palisade.rate_limit.per-ip.skipped_missing_key"), 0);
    assert_eq!(p.stat("palisade.rate_limit.per-ip.collisions"), 0);
    assert!(p.fake.stat("palisade.rate_limit.per_ip.allowed").is_err());
}

#[test]
fn allowed_responses_carry_the_quota_headers_when_configured() {
    let p = standalone(&json!({"headers_on_allowed": true, "rules": [rule("per-ip", 3)]}));
    let first = p.request("192.0.2.1", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(first.response_header("ratelimit-limit"), Some("3"));
    assert_eq!(first.response_header("ratelimit-remaining"), Some("2"));
    assert_eq!(first.response_header("ratelimit-policy"), Some("3;w=3"));
    let quiet = standalone(&json!({"rules": [rule("per-ip", 3)]}));
    let r = quiet.request("192.0.2.1", &[]);
    assert_eq!(r.response_header("ratelimit-limit"), None);
}

#[test]
fn a_shadow_rule_marks_the_request_it_would_limit_and_strips_a_client_sent_mark() {
    let mut trial = rule("trial", 1);
    trial["shadow"] = json!(true);
    let p = standalone(&json!({"rules": [trial]}));
    let spoof = [("x-palisade-ratelimit-shadow", "forged")];
    let first = p.request("192.0.2.1", &spoof);
    assert_eq!(first.status, 200);
    assert_eq!(first.upstream_header("x-palisade-ratelimit-shadow"), None);
    let second = p.request("192.0.2.1", &spoof);
    assert_eq!(second.status, 200, "shadow rules never reject");
    assert_eq!(
        second.upstream_header("x-palisade-ratelimit-shadow"),
        Some("trial")
    );
    assert_eq!(p.stat("palisade.rate_limit.trial.allowed"), 1);
    assert_eq!(p.stat("palisade.rate_limit.trial.shadow_limited"), 1);
    assert_eq!(p.stat("palisade.rate_limit.trial.limited"), 0);
}

#[test]
fn a_shared_data_outage_fails_open_by_default_and_is_counted() {
    let p = standalone(&json!({"rules": [rule("per-ip", 1)]}));
    p.fake.fail("shared_data", code::INTERNAL_FAILURE);
    assert_eq!(p.statuses("192.0.2.1", 3), vec![200, 200, 200]);
    assert_eq!(p.stat("palisade.rate_limit.per-ip.store_failures"), 3);
    assert_eq!(p.stat("palisade.rate_limit.per-ip.allowed"), 0);
}

#[test]
fn a_shared_data_outage_fails_closed_when_the_rule_says_deny() {
    let mut strict = rule("strict", 5);
    strict["failure_mode"] = json!("deny");
    let p = standalone(&json!({"rules": [strict]}));
    p.fake.fail("set_shared_data", code::INTERNAL_FAILURE);
    let r = p.request("192.0.2.1", &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.reply.unwrap().header("retry-after"), Some("1"));
    assert_eq!(p.stat("palisade.rate_limit.strict.store_failures"), 1);
}

#[test]
fn a_limit_reply_that_cannot_be_sent_lets_the_request_through_and_is_still_counted() {
    let p = standalone(&json!({"rules": [rule("per-ip", 1)]}));
    p.fake.fail("send_reply", code::INTERNAL_FAILURE);
    assert_eq!(p.statuses("192.0.2.1", 2), vec![200, 200]);
    assert_eq!(p.stat("palisade.rate_limit.per-ip.limited"), 1);
}

#[test]
fn the_buckets_live_under_the_instance_namespace() {
    let p = standalone(&json!({"scope": "api", "rules": [rule("per-ip", 1)]}));
    p.statuses("192.0.2.1", 1);
    let keys = p.fake.shared_keys();
    assert_eq!(keys.len(), 1);
    assert!(
        keys[0].starts_with("palisade/rate_limit/edge/api/per-ip/"),
        "{keys:?}"
    );
}

/// A chain of two rate_limit stages, with one rule each.
fn two_instances(first: Value, second: Value) -> FakeProxy {
    chained(&json!({"chain": [
        {"rate_limit": {"rules": [first]}},
        {"rate_limit": {"rules": [second]}},
    ]}))
}

#[test]
fn two_rate_limit_instances_in_one_chain_keep_separate_buckets_and_metrics() {
    let p = two_instances(rule("r", 2), rule("r", 2));
    // One shared bucket would be drained by both stages: two tokens a request.
    assert_eq!(p.statuses("192.0.2.1", 3), vec![200, 200, 429]);
    assert_eq!(p.decided("rate_limit.r"), [2, 1]);
    assert_eq!(p.decided("rate_limit_2.r"), [2, 0]);
    let keys = p.fake.shared_keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[0].starts_with("palisade/rate_limit/edge#2/default/r/"));
    assert!(keys[1].starts_with("palisade/rate_limit/edge/default/r/"));
}

#[test]
fn the_second_instance_sees_only_requests_the_first_let_through() {
    let p = two_instances(rule("outer", 1), rule("inner", 5));
    assert_eq!(p.statuses("192.0.2.1", 3), vec![200, 429, 429]);
    assert_eq!(p.decided("rate_limit.outer"), [1, 2]);
    assert_eq!(p.decided("rate_limit_2.inner"), [1, 0]);
}

#[test]
fn a_chain_config_error_names_the_full_path_of_the_bad_field() {
    let e = chain_error(&json!({"chain": [
        {"claims": {}},
        {"rate_limit": {"rules": [{"name": "r", "key": ["client_ip"],
            "limits": [{"capacity": 0, "refill": 1, "period": "1s"}]}]}},
    ]}));
    assert_eq!(
        e.field.as_str(),
        "chain[1].rate_limit.rules[0].limits[0].capacity"
    );
    assert_eq!(
        e.to_string(),
        "config field `chain[1].rate_limit.rules[0].limits[0].capacity`: value \"0\" is out of range (allowed 1 to 1000000000)"
    );
    let unknown = chain_error(&json!({"chain": [{"rate_limit": {"rules": [], "bogus": 1}}]}));
    assert!(
        unknown.field.as_str().starts_with("chain[0].rate_limit"),
        "{unknown}"
    );
    assert!(unknown.to_string().contains("bogus"), "{unknown}");
}

#[test]
fn a_claim_key_part_reads_the_claims_an_earlier_stage_published() {
    let p = chained(&json!({"chain": [
        {"claims": {}},
        {"rate_limit": {"rules": [{"name": "per-user", "key": [{"claim": "sub"}],
            "limits": [{"capacity": 1, "refill": 1, "period": "1m"}]}]}},
    ]}));
    let as_user = |sub: &str| p.request("192.0.2.1", &[("x-test-sub", sub)]).status;
    assert_eq!(as_user("alice"), 200);
    assert_eq!(as_user("alice"), 429);
    assert_eq!(as_user("bob"), 200, "another subject, same client address");
    // No verified token: no claim, the rule is skipped (and says so).
    assert_eq!(p.request("192.0.2.1", &[]).status, 200);
    assert_eq!(p.stat("palisade.rate_limit.per-user.allowed"), 2);
    assert_eq!(p.stat("palisade.rate_limit.per-user.limited"), 1);
    assert_eq!(
        p.stat("palisade.rate_limit.per-user.skipped_missing_key"),
        1
    );
}

#[test]
fn a_claim_key_part_in_a_standalone_module_finds_no_claims() {
    let p = standalone(
        &json!({"rules": [{"name": "per-user", "key": [{"claim": "sub"}],
        "limits": [{"capacity": 1, "refill": 1, "period": "1m"}]}]}),
    );
    // A client-sent header is not a verified claim.
    assert_eq!(p.request("192.0.2.1", &[("sub", "alice")]).status, 200);
    assert_eq!(p.request("192.0.2.1", &[("sub", "alice")]).status, 200);
    assert_eq!(
        p.stat("palisade.rate_limit.per-user.skipped_missing_key"),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// Shaping: paused requests, woken by the tick at their slot.

/// 10 per second without burst, shaped: waits of up to `max_delay`, `max_queued` per worker.
fn shaped(max_delay: &str, max_queued: u32) -> Value {
    json!({"rules": [{"name": "shaped", "key": [{"header": "x-key"}], "limits": [{"capacity": 1,
        "refill": 10, "period": "1s", "shape": {"max_delay": max_delay, "max_queued": max_queued}}]}]})
}

#[test]
fn a_request_without_a_token_is_paused_and_the_tick_resumes_it_at_its_slot() {
    let p = standalone(&shaped("1s", 10));
    assert_eq!(p.runtime.tick_period(), Some(crate::shape::TICK));
    let first = p.open("a");
    assert_eq!(first.action, Action::Continue);
    let second = p.open("a");
    assert_eq!(second.action, Action::Pause);
    assert_eq!(p.fake.reply_of(second.id), None, "paused, not answered");
    p.tick_after(Duration::from_millis(95));
    assert_eq!(second.resumed(), 0, "not before its slot");
    p.tick_after(Duration::from_millis(5));
    assert_eq!(
        second.resumed(),
        1,
        "resumed at its slot, 100 ms after the first"
    );
    p.tick_after(Duration::from_millis(5));
    assert_eq!(second.resumed(), 1, "once");
    assert_eq!(p.stat("palisade.rate_limit.shaped.allowed"), 2);
    assert_eq!(p.stat("palisade.rate_limit.shaped.delayed"), 1);
    assert_eq!(p.stat("palisade.rate_limit.shaped.released"), 1);
    assert_eq!(p.stat("palisade.rate_limit.shaped.waiting"), 0);
    assert_eq!(
        p.fake
            .samples("palisade.rate_limit.shaped.wait_ms")
            .unwrap(),
        vec![100]
    );
    first.finish();
    second.finish();
}

#[test]
fn a_rule_without_shape_never_ticks_and_never_pauses() {
    let p = standalone(&json!({"rules": [rule("per-ip", 1)]}));
    assert_eq!(p.runtime.tick_period(), None);
    assert_eq!(p.statuses("192.0.2.1", 2), vec![200, 429]);
    assert!(p.fake.stat("palisade.rate_limit.per-ip.delayed").is_err());
}

#[test]
fn waiters_of_one_key_leave_in_order_one_slot_apart_and_past_max_delay_is_429() {
    let p = standalone(&shaped("300ms", 10));
    let _first = p.open("a");
    let waiting: Vec<Stream> = (0..3).map(|_| p.open("a")).collect();
    assert!(waiting.iter().all(|o| o.action == Action::Pause));
    // The fifth would wait 400 ms: answered as limited, with today's headers.
    let over = p.open("a");
    assert_eq!(over.action, Action::Pause);
    let reply = p.fake.reply_of(over.id).expect("a 429");
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("ratelimit-limit"), Some("1"));
    assert_eq!(reply.header("x-envoy-ratelimited"), Some("true"));
    for (k, _) in waiting.iter().enumerate() {
        p.tick_after(Duration::from_millis(100));
        let resumed: Vec<u32> = waiting.iter().map(Stream::resumed).collect();
        let want: Vec<u32> = (0..3).map(|i| u32::from(i <= k)).collect();
        assert_eq!(resumed, want, "after {} ms", (k + 1) * 100);
    }
    assert_eq!(p.stat("palisade.rate_limit.shaped.limited"), 1);
    assert_eq!(
        p.fake
            .samples("palisade.rate_limit.shaped.wait_ms")
            .unwrap(),
        vec![100, 200, 300]
    );
}

#[test]
fn a_client_hanging_up_leaves_the_queue_and_the_last_slot_is_given_back() {
    let p = standalone(&shaped("1s", 10));
    let _first = p.open("a");
    let at_100 = p.open("a");
    let at_200 = p.open("a");
    // The last in line hangs up: its slot is given back, the next request gets it.
    at_200.finish();
    assert_eq!(p.stat("palisade.rate_limit.shaped.abandoned"), 1);
    assert_eq!(p.stat("palisade.rate_limit.shaped.slots_returned"), 1);
    let again_200 = p.open("a");
    // One in the middle hangs up: later slots keep their times; its own stays a gap.
    at_100.finish();
    assert_eq!(p.stat("palisade.rate_limit.shaped.abandoned"), 2);
    assert_eq!(p.stat("palisade.rate_limit.shaped.slots_returned"), 1);
    assert_eq!(p.stat("palisade.rate_limit.shaped.waiting"), 1);
    p.tick_after(Duration::from_millis(150));
    assert_eq!(again_200.resumed(), 0, "its slot did not move up");
    assert_eq!(at_100.resumed(), 0, "gone streams are never resumed");
    p.tick_after(Duration::from_millis(50));
    assert_eq!(again_200.resumed(), 1);
    assert_eq!(p.stat("palisade.rate_limit.shaped.released"), 1);
}

#[test]
fn max_queued_bounds_each_workers_waiters_and_the_overflow_is_limited() {
    let p = standalone(&shaped("10s", 2));
    let _first = p.open("a");
    let w1 = p.open("a");
    let w2 = p.open("b");
    assert_eq!(w2.action, Action::Continue, "another key has its own token");
    let w3 = p.open("b");
    assert_eq!((w1.action, w3.action), (Action::Pause, Action::Pause));
    // Two wait on this worker: the next is limited, whatever its key.
    let full = p.open("c");
    assert_eq!(full.action, Action::Continue);
    let full = p.open("c");
    assert_eq!(p.fake.reply_of(full.id).map(|r| r.status), Some(429));
    assert_eq!(p.stat("palisade.rate_limit.shaped.queue_full"), 1);
    assert_eq!(p.stat("palisade.rate_limit.shaped.limited"), 1);
    // A refused request reserved nothing: once a waiter leaves, the next one gets the first slot.
    p.tick_after(Duration::from_millis(100));
    assert_eq!((w1.resumed(), w3.resumed()), (1, 1));
    let later = p.open("c");
    assert_eq!(
        later.action,
        Action::Continue,
        "c's slot at 100 ms has come"
    );
}

#[test]
fn two_workers_sharing_data_hold_interleaved_slots_and_each_releases_its_own() {
    let a = standalone(&shaped("1s", 10));
    let b = FakeProxy::one_on(
        FakeHost::sharing_data_with(&a.fake),
        &KIND,
        &shaped("1s", 10),
    )
    .unwrap()
    .streams_from(100);
    let _first = a.open("k");
    let on_b = b.open("k");
    let on_a = a.open("k");
    let on_b2 = b.open("k");
    // Slots 100 (b), 200 (a), 300 (b): each worker's tick releases only its own, at its time.
    let (mut a_t, mut b_t) = (0, 0);
    let mut step = |ms: u64| {
        a.tick_after(Duration::from_millis(ms - a_t));
        b.tick_after(Duration::from_millis(ms - b_t));
        (a_t, b_t) = (ms, ms);
        (on_b.resumed(), on_a.resumed(), on_b2.resumed())
    };
    assert_eq!(step(100), (1, 0, 0));
    assert_eq!(step(200), (1, 1, 0));
    assert_eq!(step(300), (1, 1, 1));
}

#[test]
fn in_a_chain_a_shaped_stage_pauses_and_the_later_stage_runs_on_release() {
    let p = chained(&json!({"chain": [
        {"rate_limit": shaped("1s", 10)},
        {"rate_limit": {"rules": [{"name": "inner", "key": [{"header": "x-key"}],
            "limits": [{"capacity": 1, "refill": 1, "period": "1m"}]}]}},
    ]}));
    let _first = p.open("a");
    let second = p.open("a");
    assert_eq!(second.action, Action::Pause);
    assert_eq!(p.stat("palisade.rate_limit_2.inner.allowed"), 1, "not yet");
    p.tick_after(Duration::from_millis(100));
    // Released: on to the second stage, whose bucket of 1 is spent (same key).
    assert_eq!(p.stat("palisade.rate_limit_2.inner.limited"), 1);
    assert_eq!(p.fake.reply_of(second.id).map(|r| r.status), Some(429));
}
