//! The real bulkhead policy in the skeleton, driven through `load_one` / `load_chain` against
//! `FakeHost` as the SDK adapter drives it ([`FakeProxy`]): what reaches the client and the
//! metrics, which streams are paused, resumed or answered, and how many hostcalls the allow path
//! makes.

use super::KIND;
use palisade_core::fake_proxy::{FakeProxy, Stream, CLAIMS};
use palisade_core::plugin::runtime::Action;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

fn standalone(config: &Value) -> FakeProxy {
    FakeProxy::one(&KIND, config).unwrap_or_else(|e| panic!("rejected: {e}"))
}

/// What these tests do with a worker.
trait Client {
    /// A request of priority `class` (the `x-priority` header); the stream stays open.
    fn send(&self, class: &str) -> Stream;
    fn stat(&self, name: &str) -> i64;
}

impl Client for FakeProxy {
    fn send(&self, class: &str) -> Stream {
        self.start("/", &[("x-priority", class)])
    }

    fn stat(&self, name: &str) -> i64 {
        self.fake.stat(name).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn classes(max: u32, extra: Value) -> Value {
    let mut rule = json!({"name": "api", "max_concurrent": max,
        "priorities": {"by": {"header": "x-priority"}, "default": "normal", "classes": [
            {"name": "low", "share": 50, "values": ["low"]},
            {"name": "normal", "share": 75, "values": ["normal"]},
            {"name": "critical", "share": 100, "values": ["critical"]}]}});
    if let (Some(r), Some(e)) = (rule.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    json!({"rules": [rule]})
}

#[test]
fn low_priority_requests_get_503_first_and_critical_ones_the_last_permits() {
    let p = standalone(&classes(4, json!({})));
    // 4 permits: low up to 2 in flight, normal up to 3, critical up to 4.
    let expected = [
        ("low", Action::Continue),
        ("low", Action::Continue),
        ("low", Action::Pause),
        ("normal", Action::Continue),
        ("normal", Action::Pause),
        ("critical", Action::Continue),
        ("critical", Action::Pause),
    ];
    let (mut admitted, mut rejected) = (Vec::new(), Vec::new());
    for (class, want) in expected {
        let s = p.send(class);
        assert_eq!(s.action, want, "{class}");
        if want == Action::Pause {
            let reply = s.reply().expect("a 503");
            assert_eq!(reply.status, 503);
            assert_eq!(reply.header("x-palisade-bulkhead"), Some("full"));
            assert_eq!(reply.details, "palisade_bulkhead_full");
            rejected.push(s);
        } else {
            admitted.push(s);
        }
    }
    for s in &rejected {
        s.finish();
    }
    assert_eq!(p.stat("palisade.bulkhead.api.in_flight"), 4);
    assert_eq!(p.stat("palisade.bulkhead.api.admitted"), 4);
    assert_eq!(p.stat("palisade.bulkhead.api.rejected"), 3);
    for (class, admitted, rejected) in [("low", 2, 1), ("normal", 1, 1), ("critical", 1, 1)] {
        assert_eq!(
            p.stat(&format!("palisade.bulkhead.api.class.{class}.admitted")),
            admitted,
            "{class}"
        );
        assert_eq!(
            p.stat(&format!("palisade.bulkhead.api.class.{class}.rejected")),
            rejected,
            "{class}"
        );
    }
    for s in &admitted {
        s.finish();
    }
    assert_eq!(p.stat("palisade.bulkhead.api.in_flight"), 0);
    assert_eq!(p.stat("palisade.bulkhead.api.released"), 4);
}

#[test]
fn an_unclassified_request_gets_the_default_class() {
    let p = standalone(&classes(4, json!({})));
    let (a, b) = (p.start("/", &[]), p.send("gold"));
    assert_eq!((a.action, b.action), (Action::Continue, Action::Continue));
    assert_eq!(p.stat("palisade.bulkhead.api.class.normal.admitted"), 2);
}

#[test]
fn a_critical_waiter_is_resumed_before_an_older_low_one_when_a_permit_frees() {
    let p = standalone(&classes(1, json!({"max_wait": "1s", "max_waiting": 4})));
    let holder = p.send("critical");
    assert_eq!(holder.action, Action::Continue);
    let low = p.send("low");
    assert_eq!(low.action, Action::Pause);
    let critical = p.send("critical");
    assert_eq!(critical.action, Action::Pause);
    holder.finish();
    assert_eq!((critical.resumed(), low.resumed()), (1, 0));
    critical.finish();
    assert_eq!(low.resumed(), 1);
    assert_eq!(low.reply(), None);
    low.finish();
    assert_eq!(p.stat("palisade.bulkhead.api.wait_admitted"), 2);
    assert_eq!(p.stat("palisade.bulkhead.api.class.low.admitted"), 1);
    assert_eq!(p.stat("palisade.bulkhead.api.class.critical.admitted"), 2);
    assert_eq!(p.stat("palisade.bulkhead.api.in_flight"), 0);
}

#[test]
fn a_full_wait_queue_answers_its_low_waiter_displaced_to_queue_a_critical_request() {
    let p = standalone(&classes(1, json!({"max_wait": "1s", "max_waiting": 1})));
    let holder = p.send("normal");
    let low = p.send("low");
    assert_eq!(low.action, Action::Pause);
    assert_eq!(low.reply(), None);
    let critical = p.send("critical");
    assert_eq!(critical.action, Action::Pause);
    let reply = low.reply().expect("the displaced waiter is answered");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("x-palisade-bulkhead"), Some("displaced"));
    assert_eq!(reply.details, "palisade_bulkhead_displaced");
    assert_eq!(p.stat("palisade.bulkhead.api.wait_displaced"), 1);
    assert_eq!(p.stat("palisade.bulkhead.api.class.low.rejected"), 1);
    low.finish();
    holder.finish();
    assert_eq!(critical.resumed(), 1);
    critical.finish();
    assert_eq!(p.stat("palisade.bulkhead.api.in_flight"), 0);
}

#[test]
fn a_low_waiter_expires_while_critical_traffic_keeps_the_partition_above_its_share() {
    let p = standalone(&classes(2, json!({"max_wait": "100ms"})));
    let c1 = p.send("critical");
    let c2 = p.send("critical");
    let low = p.send("low");
    assert_eq!(low.action, Action::Pause);
    // One permit back: 1 in flight is still at low's threshold (50 % of 2).
    c1.finish();
    assert_eq!(low.resumed(), 0);
    p.tick_after(Duration::from_millis(100));
    let reply = low.reply().expect("expired");
    assert_eq!(reply.header("x-palisade-bulkhead"), Some("expired"));
    assert_eq!(p.stat("palisade.bulkhead.api.class.low.rejected"), 1);
    low.finish();
    c2.finish();
    assert_eq!(p.stat("palisade.bulkhead.api.in_flight"), 0);
}

#[test]
fn in_a_chain_requests_are_classified_by_a_verified_claim() {
    let p = FakeProxy::chain(
        &[CLAIMS, KIND],
        &json!({"chain": [{"claims": {}}, {"bulkhead": {"rules": [{
        "name": "api", "max_concurrent": 2,
        "priorities": {"by": {"claim": "tier"}, "classes": [
            {"name": "free", "share": 50},
            {"name": "paid", "share": 100, "values": ["gold", "silver"]}]}}]}}]}),
    )
    .unwrap_or_else(|e| panic!("rejected: {e}"));
    // [`CLAIMS`] stands in for jwt_auth: `x-test-tier` is the verified `tier`.
    let free = p.start("/", &[("x-test-tier", "free")]);
    assert_eq!(free.action, Action::Continue);
    // A second free-tier request is shed at 1 in flight; no token at all counts as free too.
    let bronze = p.start("/", &[("x-test-tier", "bronze")]);
    assert_eq!(bronze.action, Action::Pause);
    let anonymous = p.start("/", &[]);
    assert_eq!(anonymous.action, Action::Pause);
    let gold = p.start("/", &[("x-test-tier", "gold")]);
    assert_eq!(gold.action, Action::Continue);
    assert_eq!(p.stat("palisade.bulkhead.api.class.free.rejected"), 2);
    assert_eq!(p.stat("palisade.bulkhead.api.class.paid.admitted"), 1);
}

#[test]
fn a_bad_priorities_config_is_rejected_naming_the_field() {
    let bad = json!({"rules": [{"name": "api", "max_concurrent": 2, "priorities": {
        "by": "route_name", "classes": [{"name": "a", "share": 100}], "default": "b"}}]});
    match FakeProxy::one(&KIND, &bad) {
        Ok(_) => panic!("accepted"),
        Err(e) => assert_eq!(e.field.as_str(), "rules[0].priorities.default", "{e}"),
    }
}

/// Hostcalls of one request admitted and ended, after a first one (which claims the worker
/// slot), by operation.
fn allow_path_hostcalls(config: &Value, headers: &[(&str, &str)]) -> Vec<(&'static str, usize)> {
    let p = standalone(config);
    let first = p.start("/", headers);
    assert_eq!(first.action, Action::Continue);
    first.finish();
    let before: HashMap<&str, usize> = p.fake.hostcall_counts().into_iter().collect();
    let second = p.start("/", headers);
    assert_eq!(second.action, Action::Continue);
    second.finish();
    p.fake
        .hostcall_counts()
        .into_iter()
        .map(|(op, n)| (op, n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn without_priorities_the_allow_path_makes_the_hostcalls_it_made_before_them() {
    // Counted on the code before priorities existed: two shared-data reads and writes (take and
    // give back the permit), the admitted and released counters, the gauge up and down.
    let plain = json!({"rules": [{"name": "api", "max_concurrent": 10}]});
    assert_eq!(
        allow_path_hostcalls(&plain, &[]),
        vec![
            ("increment_metric", 4),
            ("set_shared_data", 2),
            ("shared_data", 2),
        ]
    );
}

#[test]
fn with_priorities_the_allow_path_adds_the_classifying_read_and_the_class_counter() {
    let plain = json!({"rules": [{"name": "api", "max_concurrent": 10}]});
    let prio = classes(10, json!({}));
    let without: HashMap<&str, usize> = allow_path_hostcalls(&plain, &[("x-priority", "low")])
        .into_iter()
        .collect();
    let with: HashMap<&str, usize> = allow_path_hostcalls(&prio, &[("x-priority", "low")])
        .into_iter()
        .collect();
    let mut extra: Vec<(&str, i64)> = with
        .iter()
        .map(|(op, n)| {
            (
                *op,
                *n as i64 - without.get(op).copied().unwrap_or(0) as i64,
            )
        })
        .filter(|(_, d)| *d != 0)
        .collect();
    extra.sort();
    assert_eq!(extra, vec![("header", 1), ("increment_metric", 1)]);
}
