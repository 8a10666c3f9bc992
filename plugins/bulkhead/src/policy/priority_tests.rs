//! Priority classes: thresholds per class, shedding order, and priority in the wait queue.

use super::*;
use palisade_core::testing::{FakeRequest, FakeStore};

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_000_000 + ms)
}

fn worker(json: &str) -> Worker {
    match Config::parse(json.as_bytes()) {
        Ok(c) => Worker::new(Bulkhead::new(c)),
        Err(e) => panic!("{e}"),
    }
}

/// A rule of `max` permits with classes low 60 %, normal 90 %, critical 100 % chosen by the
/// `x-priority` header (unclassified: normal); `wait` adds `max_wait` and `max_waiting`.
fn classes(max: u32, wait: &str) -> String {
    format!(
        r#"{{"worker_timeout": "1h", "rules": [{{"name": "b", "max_concurrent": {max}{wait},
          "priorities": {{"by": {{"header": "x-priority"}}, "default": "normal", "classes": [
            {{"name": "low", "share": 60, "values": ["low"]}},
            {{"name": "normal", "share": 90, "values": ["normal"]}},
            {{"name": "critical", "share": 100, "values": ["critical"]}}]}}}}]}}"#
    )
}

const LOW: usize = 0;
const NORMAL: usize = 1;
const CRITICAL: usize = 2;

fn of(w: &Worker, class: &str) -> Option<Target> {
    let req = FakeRequest::new("GET", "/").header("x-priority", class);
    w.bulkhead().classify(&req, &mut || None)
}

/// What a request of `class` on stream `c` at `ms` gets.
fn ask(w: &mut Worker, store: &FakeStore, c: u32, class: &str, ms: u64) -> Admission {
    let target = of(w, class);
    w.on_request(c, target, store, t(ms)).0
}

fn in_flight(store: &FakeStore) -> u64 {
    permits::in_flight(store, "p/b/1/0", &LiveView::default()).unwrap_or(u64::MAX)
}

fn admitted(a: &Admission) -> bool {
    *a == Admission::Continue
}

#[test]
fn requests_are_classified_by_their_value_and_unlisted_ones_get_the_default_class() {
    let w = worker(&classes(10, ""));
    assert_eq!(of(&w, "low").and_then(|t| t.class), Some(LOW));
    assert_eq!(of(&w, "critical").and_then(|t| t.class), Some(CRITICAL));
    assert_eq!(of(&w, "urgent!").and_then(|t| t.class), Some(NORMAL));
    let bare = w
        .bulkhead()
        .classify(&FakeRequest::new("GET", "/"), &mut || None);
    assert_eq!(bare.and_then(|t| t.class), Some(NORMAL));
}

#[test]
fn low_traffic_is_shed_first_as_the_partition_fills_and_critical_gets_the_last_permits() {
    let store = FakeStore::new();
    let mut w = worker(&classes(10, ""));
    let mut ctx = 0;
    let mut send = |w: &mut Worker, class: &str| {
        ctx += 1;
        let target = of(w, class);
        w.on_request(ctx, target, &store, t(0)).0
    };
    // Up to 6 in flight (60 %), low is admitted; the 7th low is shed.
    for _ in 0..6 {
        assert!(admitted(&send(&mut w, "low")));
    }
    let Admission::Reject(reply) = send(&mut w, "low") else {
        panic!("low admitted at 60 %")
    };
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header_value(HEADER), Some("full"));
    // Normal up to 9 (90 %), then shed; critical up to 10.
    for _ in 0..3 {
        assert!(admitted(&send(&mut w, "normal")));
    }
    assert!(!admitted(&send(&mut w, "normal")));
    assert!(!admitted(&send(&mut w, "low")));
    assert!(admitted(&send(&mut w, "critical")));
    assert!(!admitted(&send(&mut w, "critical")));
    assert_eq!(in_flight(&store), 10);
}

#[test]
fn a_class_threshold_counts_every_class_on_every_worker() {
    let store = FakeStore::new();
    let mut a = worker(&classes(10, ""));
    let mut b = worker(&classes(10, ""));
    for c in 1..=5 {
        let target = of(&a, "critical");
        assert!(admitted(&a.on_request(c, target, &store, t(0)).0));
    }
    let low = of(&b, "low");
    assert!(admitted(&b.on_request(1, low.clone(), &store, t(0)).0));
    // 6 in flight across both workers: the next low is shed on either.
    assert!(!admitted(&b.on_request(2, low.clone(), &store, t(0)).0));
    assert!(!admitted(&a.on_request(6, low.clone(), &store, t(0)).0));
    // Below 60 % again once a permit comes back, wherever it was held.
    a.on_stream_end(1, &store, t(1));
    assert!(admitted(&b.on_request(3, low, &store, t(1)).0));
}

#[test]
fn every_decision_is_also_counted_for_its_class() {
    let store = FakeStore::new();
    let mut w = worker(&classes(1, ""));
    let (_, r) = w.on_request(1, of(&w, "critical"), &store, t(0));
    assert_eq!(
        r.events,
        vec![(0, Event::Admitted), (0, Event::ClassAdmitted(CRITICAL))]
    );
    let (_, r) = w.on_request(2, of(&w, "low"), &store, t(0));
    assert_eq!(
        r.events,
        vec![(0, Event::Rejected), (0, Event::ClassRejected(LOW))]
    );
}

#[test]
fn without_priorities_no_class_event_is_reported() {
    let store = FakeStore::new();
    let mut w = worker(r#"{"rules": [{"name": "b", "max_concurrent": 1}]}"#);
    let target = w
        .bulkhead()
        .classify(&FakeRequest::new("GET", "/"), &mut || None);
    assert_eq!(target.as_ref().and_then(|t| t.class), None);
    let (_, r) = w.on_request(1, target, &store, t(0));
    assert_eq!(r.events, vec![(0, Event::Admitted)]);
}

const WAIT: &str = r#", "max_wait": "1s", "max_waiting": 2"#;

#[test]
fn a_critical_waiter_is_admitted_before_an_older_low_one() {
    // One permit: every class's threshold is 1, so only the queue order decides.
    let store = FakeStore::new();
    let mut w = worker(&classes(1, WAIT));
    assert!(admitted(&ask(&mut w, &store, 1, "normal", 0)));
    assert_eq!(ask(&mut w, &store, 2, "low", 1), Admission::Wait);
    assert_eq!(ask(&mut w, &store, 3, "critical", 2), Admission::Wait);
    let r = w.on_stream_end(1, &store, t(10));
    assert_eq!(r.wakes, vec![Wake::Resume(3)]);
    assert!(r.events.contains(&(0, Event::ClassAdmitted(CRITICAL))));
    let r = w.on_stream_end(3, &store, t(20));
    assert_eq!(r.wakes, vec![Wake::Resume(2)]);
    w.on_stream_end(2, &store, t(30));
    assert_eq!(in_flight(&store), 0);
}

#[test]
fn waiters_of_one_class_are_served_in_arrival_order() {
    let store = FakeStore::new();
    let mut w = worker(&classes(1, r#", "max_wait": "1s", "max_waiting": 4"#));
    ask(&mut w, &store, 1, "critical", 0);
    for (c, class) in [(2, "low"), (3, "critical"), (4, "low"), (5, "critical")] {
        assert_eq!(ask(&mut w, &store, c, class, c.into()), Admission::Wait);
    }
    let mut order = Vec::new();
    let mut ending = 1;
    for step in 0..4 {
        let r = w.on_stream_end(ending, &store, t(100 + step));
        let [Wake::Resume(next)] = r.wakes.as_slice() else {
            panic!("{:?}", r.wakes)
        };
        order.push(*next);
        ending = *next;
    }
    assert_eq!(order, vec![3, 5, 2, 4]);
}

#[test]
fn a_low_waiter_is_not_admitted_above_its_threshold_while_a_critical_one_is() {
    let store = FakeStore::new();
    // 5 permits: low's threshold is 3.
    let mut w = worker(&classes(5, r#", "max_wait": "1s", "max_waiting": 4"#));
    for c in 1..=5 {
        ask(&mut w, &store, c, "critical", 0);
    }
    assert_eq!(ask(&mut w, &store, 6, "low", 1), Admission::Wait);
    assert_eq!(ask(&mut w, &store, 7, "critical", 2), Admission::Wait);
    // 4 in flight after this end: the critical waiter gets the permit; low stays (4 ≥ 3).
    assert_eq!(
        w.on_stream_end(1, &store, t(3)).wakes,
        vec![Wake::Resume(7)]
    );
    assert!(w.on_stream_end(2, &store, t(4)).wakes.is_empty());
    assert!(w.on_stream_end(3, &store, t(5)).wakes.is_empty());
    // 2 in flight after this one: below 3, low gets in.
    assert_eq!(
        w.on_stream_end(4, &store, t(6)).wakes,
        vec![Wake::Resume(6)]
    );
}

#[test]
fn a_new_critical_request_overtakes_a_low_waiter_and_a_new_low_one_does_not_overtake_a_critical_waiter(
) {
    let store = FakeStore::new();
    // 2 permits: low's threshold is 1.
    let mut w = worker(&classes(2, WAIT));
    assert!(admitted(&ask(&mut w, &store, 1, "low", 0)));
    assert_eq!(ask(&mut w, &store, 2, "low", 1), Admission::Wait);
    // 1 in flight < 2: a new critical request goes ahead of the waiting low one.
    assert!(admitted(&ask(&mut w, &store, 3, "critical", 2)));
    assert_eq!(ask(&mut w, &store, 4, "critical", 3), Admission::Wait);
    // Both permits freed elsewhere (simulated: another worker's view releases ours).
    let me = w.id().unwrap_or(WorkerId {
        slot: 0,
        generation: 0,
    });
    for _ in 0..2 {
        permits::release(&store, "p/b/1/0", me, &LiveView::default(), 8).ok();
    }
    // A new low request finds a critical waiter of its partition: it queues behind it (the
    // queue is full of a critical and a low waiter, and it displaces nobody of its own class).
    let (adm, _) = w.on_request(5, of(&w, "low"), &store, t(4));
    assert!(matches!(adm, Admission::Reject(_)), "{adm:?}");
    let r = w.on_tick(&store, t(5));
    // The tick serves the critical waiter first; the low one then finds 1 in flight, its
    // threshold, and keeps waiting.
    assert_eq!(r.wakes, vec![Wake::Resume(4)]);
    assert_eq!(w.waiting(), 1);
}

#[test]
fn a_full_queue_makes_room_for_a_higher_class_by_displacing_its_lowest_newest_waiter() {
    let store = FakeStore::new();
    let mut w = worker(&classes(1, WAIT));
    ask(&mut w, &store, 1, "critical", 0);
    assert_eq!(ask(&mut w, &store, 2, "low", 1), Admission::Wait);
    assert_eq!(ask(&mut w, &store, 3, "low", 2), Admission::Wait);
    // Full (2 waiters): a low request is rejected, a critical one displaces the newest low.
    assert!(matches!(
        ask(&mut w, &store, 4, "low", 3),
        Admission::Reject(_)
    ));
    let (adm, r) = w.on_request(5, of(&w, "critical"), &store, t(4));
    assert_eq!(adm, Admission::Wait);
    let [Wake::Reply(3, reply)] = r.wakes.as_slice() else {
        panic!("{:?}", r.wakes)
    };
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header_value(HEADER), Some("displaced"));
    assert!(r.events.contains(&(0, Event::WaitDisplaced)));
    assert!(r.events.contains(&(0, Event::ClassRejected(LOW))));
    assert!(r.events.contains(&(0, Event::Queued)));
    // The displaced stream's end is a no-op; the next critical displaces the other low one.
    assert_eq!(w.on_stream_end(3, &store, t(5)), Report::default());
    let (_, r) = w.on_request(6, of(&w, "critical"), &store, t(6));
    assert!(matches!(r.wakes.as_slice(), [Wake::Reply(2, _)]));
    // Now two critical waiters: another critical request is rejected, nobody is displaced.
    let (adm, r) = w.on_request(7, of(&w, "critical"), &store, t(7));
    assert!(matches!(adm, Admission::Reject(_)));
    assert!(r.wakes.is_empty());
    assert_eq!(w.waiting(), 2);
    assert_eq!(
        w.on_stream_end(1, &store, t(8)).wakes,
        vec![Wake::Resume(5)]
    );
}

#[test]
fn an_expired_waiter_is_counted_as_shed_for_its_class() {
    let store = FakeStore::new();
    let mut w = worker(&classes(1, WAIT));
    ask(&mut w, &store, 1, "critical", 0);
    ask(&mut w, &store, 2, "low", 0);
    let r = w.on_tick(&store, t(1_000));
    assert!(matches!(r.wakes.as_slice(), [Wake::Reply(2, _)]));
    assert!(r.events.contains(&(0, Event::ClassRejected(LOW))));
}

#[test]
fn priorities_apply_per_partition() {
    let store = FakeStore::new();
    let mut w = worker(
        r#"{"rules": [{"name": "b", "max_concurrent": 2, "partition_by": {"header": "x-tenant"},
          "priorities": {"by": {"header": "x-priority"}, "classes": [
            {"name": "low", "share": 50}, {"name": "critical", "share": 100, "values": ["critical"]}]}}]}"#,
    );
    let req = |tenant: &str, prio: &str| {
        FakeRequest::new("GET", "/")
            .header("x-tenant", tenant)
            .header("x-priority", prio)
    };
    let mut ctx = 0;
    let mut send = |w: &mut Worker, tenant: &str, prio: &str| {
        ctx += 1;
        let target = w.bulkhead().classify(&req(tenant, prio), &mut || None);
        admitted(&w.on_request(ctx, target, &store, t(0)).0)
    };
    assert!(send(&mut w, "a", "low"));
    assert!(!send(&mut w, "a", "low"));
    assert!(send(&mut w, "b", "low"));
    assert!(send(&mut w, "a", "critical"));
    assert!(!send(&mut w, "a", "critical"));
}
