//! The real bulkhead policy in the skeleton, driven through `load_one` / `load_chain` against
//! `FakeHost` as the SDK adapter drives it: what reaches the client and the metrics, which
//! streams are paused, resumed or answered, and how many hostcalls the allow path makes.

use super::KIND;
use palisade_core::fake_host::{FakeHost, SentReply};
use palisade_core::plugin::runtime::{with_chain, Action, Chain, Runtime};
use palisade_core::plugin::{
    load_chain, load_one, Flow, HostRef, Kind, Policy, Setup, StreamCx, StreamPolicy,
};
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// A stage standing in for jwt_auth: publishes `{"tier": <x-test-tier>}` as verified claims.
const CLAIMS: Kind = Kind {
    name: "claims",
    build: |_, _: &Setup<'_>| Ok(Box::new(Claims)),
};
const KINDS: [Kind; 2] = [CLAIMS, KIND];

struct Claims;

impl Policy for Claims {
    fn stream(&self, _: u32) -> Box<dyn StreamPolicy> {
        Box::new(Claims)
    }
}

impl StreamPolicy for Claims {
    fn on_request_headers(&mut self, cx: &mut StreamCx<'_>, _: bool) -> Flow {
        if let Ok(Some(tier)) = cx.request_header("x-test-tier") {
            let mut claims = Map::new();
            claims.insert("tier".to_owned(), Value::String(tier));
            cx.set_claims(Rc::new(claims));
        }
        Flow::Continue
    }
}

struct Proxy {
    fake: Rc<FakeHost>,
    runtime: Rc<Runtime>,
    chains: RefCell<HashMap<u32, Rc<RefCell<Chain>>>>,
    next_id: std::cell::Cell<u32>,
}

fn host() -> (Rc<FakeHost>, HostRef) {
    let fake = Rc::new(FakeHost::new());
    let host: HostRef = fake.clone();
    (fake, host)
}

fn standalone(config: &Value) -> Proxy {
    let (fake, host) = host();
    let runtime = load_one(&host, &KIND, config.to_string().as_bytes(), "edge")
        .unwrap_or_else(|e| panic!("rejected: {e}"));
    Proxy::new(fake, runtime)
}

fn chained(config: &Value) -> Proxy {
    let (fake, host) = host();
    let runtime = load_chain(&host, &KINDS, config.to_string().as_bytes(), "edge")
        .unwrap_or_else(|e| panic!("rejected: {e}"));
    Proxy::new(fake, runtime)
}

impl Proxy {
    fn new(fake: Rc<FakeHost>, runtime: Rc<Runtime>) -> Self {
        Proxy {
            fake,
            runtime,
            chains: RefCell::new(HashMap::new()),
            next_id: 1.into(),
        }
    }

    /// A request with these headers reaches the filter; the stream stays open.
    fn open(&self, headers: &[(&str, &str)]) -> (u32, Action) {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let mut all = vec![(":method", "GET"), (":path", "/"), (":authority", "api")];
        all.extend_from_slice(headers);
        self.fake.open_stream(id, &all);
        self.fake
            .set_stream_property(id, &["source", "address"], "192.0.2.1:40000");
        let chain = self.runtime.stream(id);
        self.fake.enter(id);
        let action = with_chain(&chain, |c| c.on_request_headers(true)).expect("not re-entered");
        self.chains.borrow_mut().insert(id, chain);
        (id, action)
    }

    /// A request of priority `class` (the `x-priority` header).
    fn send(&self, class: &str) -> (u32, Action) {
        self.open(&[("x-priority", class)])
    }

    /// The stream ends (its response went out, or the client hung up).
    fn finish(&self, id: u32) {
        let chain = self
            .chains
            .borrow_mut()
            .remove(&id)
            .expect("an open stream");
        self.fake.enter(id);
        let _ = with_chain(&chain, Chain::end);
        self.fake.close_stream(id);
    }

    fn reply(&self, id: u32) -> Option<SentReply> {
        self.fake.reply_of(id)
    }

    fn resumed(&self, id: u32) -> u32 {
        self.fake.stream(id).map_or(0, |s| s.resumed)
    }

    fn stat(&self, name: &str) -> i64 {
        self.fake.stat(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn tick(&self, after: Duration) {
        self.fake.advance(after);
        self.runtime.on_tick();
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
    let mut rejected = Vec::new();
    for (class, want) in expected {
        let (id, action) = p.send(class);
        assert_eq!(action, want, "{class}");
        if want == Action::Pause {
            let reply = p.reply(id).expect("a 503");
            assert_eq!(reply.status, 503);
            assert_eq!(reply.header("x-palisade-bulkhead"), Some("full"));
            assert_eq!(reply.details, "palisade_bulkhead_full");
            rejected.push(id);
        }
    }
    for id in rejected {
        p.finish(id);
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
    for id in 1..=6 {
        if p.chains.borrow().contains_key(&id) {
            p.finish(id);
        }
    }
    assert_eq!(p.stat("palisade.bulkhead.api.in_flight"), 0);
    assert_eq!(p.stat("palisade.bulkhead.api.released"), 4);
}

#[test]
fn an_unclassified_request_gets_the_default_class() {
    let p = standalone(&classes(4, json!({})));
    let (_, a) = p.open(&[]);
    let (_, b) = p.send("gold");
    assert_eq!((a, b), (Action::Continue, Action::Continue));
    assert_eq!(p.stat("palisade.bulkhead.api.class.normal.admitted"), 2);
}

#[test]
fn a_critical_waiter_is_resumed_before_an_older_low_one_when_a_permit_frees() {
    let p = standalone(&classes(1, json!({"max_wait": "1s", "max_waiting": 4})));
    let (holder, a) = p.send("critical");
    assert_eq!(a, Action::Continue);
    let (low, a) = p.send("low");
    assert_eq!(a, Action::Pause);
    let (critical, a) = p.send("critical");
    assert_eq!(a, Action::Pause);
    p.finish(holder);
    assert_eq!((p.resumed(critical), p.resumed(low)), (1, 0));
    p.finish(critical);
    assert_eq!(p.resumed(low), 1);
    assert_eq!(p.reply(low), None);
    p.finish(low);
    assert_eq!(p.stat("palisade.bulkhead.api.wait_admitted"), 2);
    assert_eq!(p.stat("palisade.bulkhead.api.class.low.admitted"), 1);
    assert_eq!(p.stat("palisade.bulkhead.api.class.critical.admitted"), 2);
    assert_eq!(p.stat("palisade.bulkhead.api.in_flight"), 0);
}

#[test]
fn a_full_wait_queue_answers_its_low_waiter_displaced_to_queue_a_critical_request() {
    let p = standalone(&classes(1, json!({"max_wait": "1s", "max_waiting": 1})));
    let (holder, _) = p.send("normal");
    let (low, a) = p.send("low");
    assert_eq!(a, Action::Pause);
    assert_eq!(p.reply(low), None);
    let (critical, a) = p.send("critical");
    assert_eq!(a, Action::Pause);
    let reply = p.reply(low).expect("the displaced waiter is answered");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("x-palisade-bulkhead"), Some("displaced"));
    assert_eq!(reply.details, "palisade_bulkhead_displaced");
    assert_eq!(p.stat("palisade.bulkhead.api.wait_displaced"), 1);
    assert_eq!(p.stat("palisade.bulkhead.api.class.low.rejected"), 1);
    p.finish(low);
    p.finish(holder);
    assert_eq!(p.resumed(critical), 1);
    p.finish(critical);
    assert_eq!(p.stat("palisade.bulkhead.api.in_flight"), 0);
}

#[test]
fn a_low_waiter_expires_while_critical_traffic_keeps_the_partition_above_its_share() {
    let p = standalone(&classes(2, json!({"max_wait": "100ms"})));
    let (c1, _) = p.send("critical");
    let (c2, _) = p.send("critical");
    let (low, a) = p.send("low");
    assert_eq!(a, Action::Pause);
    // One permit back: 1 in flight is still at low's threshold (50 % of 2).
    p.finish(c1);
    assert_eq!(p.resumed(low), 0);
    p.tick(Duration::from_millis(100));
    let reply = p.reply(low).expect("expired");
    assert_eq!(reply.header("x-palisade-bulkhead"), Some("expired"));
    assert_eq!(p.stat("palisade.bulkhead.api.class.low.rejected"), 1);
    p.finish(low);
    p.finish(c2);
    assert_eq!(p.stat("palisade.bulkhead.api.in_flight"), 0);
}

#[test]
fn in_a_chain_requests_are_classified_by_a_verified_claim() {
    let p = chained(&json!({"chain": [{"claims": {}}, {"bulkhead": {"rules": [{
        "name": "api", "max_concurrent": 2,
        "priorities": {"by": {"claim": "tier"}, "classes": [
            {"name": "free", "share": 50},
            {"name": "paid", "share": 100, "values": ["gold", "silver"]}]}}]}}]}));
    let (_, a) = p.open(&[("x-test-tier", "free")]);
    assert_eq!(a, Action::Continue);
    // A second free-tier request is shed at 1 in flight; no token at all counts as free too.
    let (_, a) = p.open(&[("x-test-tier", "bronze")]);
    assert_eq!(a, Action::Pause);
    let (_, a) = p.open(&[]);
    assert_eq!(a, Action::Pause);
    let (_, a) = p.open(&[("x-test-tier", "gold")]);
    assert_eq!(a, Action::Continue);
    assert_eq!(p.stat("palisade.bulkhead.api.class.free.rejected"), 2);
    assert_eq!(p.stat("palisade.bulkhead.api.class.paid.admitted"), 1);
}

#[test]
fn a_bad_priorities_config_is_rejected_naming_the_field() {
    let (_, host) = host();
    let bad = json!({"rules": [{"name": "api", "max_concurrent": 2, "priorities": {
        "by": "route_name", "classes": [{"name": "a", "share": 100}], "default": "b"}}]});
    match load_one(&host, &KIND, bad.to_string().as_bytes(), "edge") {
        Ok(_) => panic!("accepted"),
        Err(e) => assert_eq!(e.field.as_str(), "rules[0].priorities.default", "{e}"),
    }
}

/// Hostcalls of one request admitted and ended, after a first one (which claims the worker
/// slot), by operation.
fn allow_path_hostcalls(config: &Value, headers: &[(&str, &str)]) -> Vec<(&'static str, usize)> {
    let p = standalone(config);
    let (id, a) = p.open(headers);
    assert_eq!(a, Action::Continue);
    p.finish(id);
    let before: HashMap<&str, usize> = p.fake.hostcall_counts().into_iter().collect();
    let (id, a) = p.open(headers);
    assert_eq!(a, Action::Continue);
    p.finish(id);
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
