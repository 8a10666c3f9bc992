//! Shaping, natively: the slot maths against the plain bucket, reservations in a fake store (CAS
//! conflicts, several "workers", threads), giving slots back, the worker's queue.

use super::*;
use crate::config::Config;
use crate::policy::{Event, RateLimiter, Verdict};
use palisade_core::testing::{FakeRequest, FakeStore};
use palisade_core::Decision;
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

fn t0() -> Timestamp {
    Timestamp::from_secs(1_700_000_000)
}

fn at_ms(ms: u64) -> Timestamp {
    t0().saturating_add(MS * u32::try_from(ms).unwrap())
}

fn limit(capacity: u64, refill: u64, period_ms: u64) -> Limit {
    Limit {
        capacity,
        refill,
        period: MS * u32::try_from(period_ms).unwrap(),
    }
}

fn shape(max_delay_ms: u64) -> Option<Shape> {
    Some(Shape {
        max_delay: MS * u32::try_from(max_delay_ms).unwrap(),
        max_queued: 100,
    })
}

fn any_room(_: usize) -> bool {
    true
}

/// A rule of 10 per second, no burst (capacity 1), shaped with `max_delay`.
fn ten_per_second(max_delay: &str) -> RateLimiter {
    let json = format!(
        r#"{{"rules": [{{"name": "shaped", "key": [{{"header": "x-key"}}],
        "limits": [{{"capacity": 1, "refill": 10, "period": "1s", "shape": {{"max_delay": "{max_delay}", "max_queued": 50}}}}]}}]}}"#
    );
    RateLimiter::new(Config::parse(json.as_bytes()).unwrap())
}

/// [`ten_per_second`] (`max_delay` 1 s) once key `a` has taken its token: its next requests are
/// shaped.
fn token_taken() -> (RateLimiter, FakeStore) {
    let l = ten_per_second("1s");
    let store = FakeStore::new();
    l.check(&req("a"), &store, t0());
    (l, store)
}

fn req(key: &str) -> FakeRequest {
    FakeRequest::new("GET", "/").header("x-key", key)
}

/// What one request came to: `Ok(None)` through now, `Ok(Some(ms))` a slot `ms` after t0,
/// `Err(status)` a reply.
fn outcome(v: &Verdict) -> Result<Option<u64>, u16> {
    match &v.decision {
        Decision::Reply(r) => Err(r.status),
        Decision::Continue => Ok(v
            .shaping
            .as_ref()
            .and_then(|s| s.departure())
            .map(|d| d.saturating_since(t0()).as_millis() as u64)),
    }
}

#[test]
fn a_burst_gets_slots_one_token_apart_up_to_max_delay_then_is_limited_with_headers() {
    let l = ten_per_second("1s");
    let store = FakeStore::new();
    let verdicts: Vec<Verdict> = (0..20).map(|_| l.check(&req("a"), &store, t0())).collect();
    let got: Vec<_> = verdicts.iter().map(outcome).collect();
    let mut want = vec![Ok(None)];
    want.extend((1..=10).map(|k| Ok(Some(k * 100))));
    want.extend((0..9).map(|_| Err(429)));
    assert_eq!(got, want);
    // A delayed request was admitted (a slot is a token); a refused one is limited as today.
    assert_eq!(verdicts[5].events, vec![(0, Event::Allowed)]);
    assert_eq!(verdicts[15].events, vec![(0, Event::Limited)]);
    let Decision::Reply(reply) = &verdicts[15].decision else {
        unreachable!()
    };
    assert_eq!(reply.header_value("retry-after"), Some("2"));
    assert_eq!(reply.header_value("ratelimit-limit"), Some("1"));
    assert_eq!(reply.header_value("ratelimit-remaining"), Some("0"));
    assert!(reply.header_value("ratelimit-reset").is_some());
    assert!(verdicts[15].shaping.is_none());
}

#[test]
fn requests_arriving_later_queue_behind_the_reserved_slots() {
    let l = ten_per_second("500ms");
    let store = FakeStore::new();
    assert_eq!(outcome(&l.check(&req("a"), &store, t0())), Ok(None));
    assert_eq!(
        outcome(&l.check(&req("a"), &store, at_ms(30))),
        Ok(Some(100))
    );
    // 250 ms in, the next token (due at 200 ms) is there: straight through; the one after waits
    // one token's time from then.
    assert_eq!(outcome(&l.check(&req("a"), &store, at_ms(250))), Ok(None));
    assert_eq!(
        outcome(&l.check(&req("a"), &store, at_ms(260))),
        Ok(Some(350))
    );
    // After a quiet second the bucket is full again: straight through.
    assert_eq!(outcome(&l.check(&req("a"), &store, at_ms(2_000))), Ok(None));
    // Another key has its own bucket.
    assert_eq!(outcome(&l.check(&req("b"), &store, at_ms(2_000))), Ok(None));
}

#[test]
fn two_workers_sharing_the_store_get_distinct_slots_one_token_apart() {
    // Two limiters (two workers' VMs) over one store, taking turns, with CAS conflicts injected.
    let (a, b) = (ten_per_second("2s"), ten_per_second("2s"));
    let store = FakeStore::new();
    let mut slots = Vec::new();
    for i in 0..16u64 {
        let l = if i % 2 == 0 { &a } else { &b };
        if i % 3 == 0 {
            store.inject_conflicts(3);
        }
        let now = at_ms(i);
        match outcome(&l.check(&req("k"), &store, now)) {
            Ok(Some(ms)) => slots.push(ms),
            Ok(None) => slots.push(0),
            Err(s) => panic!("request {i} limited ({s})"),
        }
    }
    let want: Vec<u64> = (0..16).map(|k| k * 100).collect();
    assert_eq!(slots, want);
}

#[test]
fn concurrent_threads_reserve_every_slot_exactly_once() {
    use std::sync::Arc;
    let l = Arc::new(ten_per_second("60s"));
    let store = Arc::new(FakeStore::new());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (l, store) = (Arc::clone(&l), Arc::clone(&store));
            std::thread::spawn(move || {
                (0..50)
                    .map(|_| outcome(&l.check(&req("k"), &*store, t0())))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut slots: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .map(|o| o.unwrap().unwrap_or(0))
        .collect();
    slots.sort_unstable();
    // 200 requests, 10 per second: slots 0, 100, …, 19,900 ms, each exactly once.
    assert_eq!(slots, (0..200).map(|k| k * 100).collect::<Vec<_>>());
}

#[test]
fn a_limit_without_shape_still_rejects_and_a_shaped_one_waits() {
    // 10/s shaped, and a quota of 3 per hour that rejects.
    let l = RateLimiter::new(
        Config::parse(
            br#"{"rules": [{"name": "r", "key": ["method"], "limits": [
            {"capacity": 1, "refill": 10, "period": "1s", "shape": {"max_delay": "1s"}},
            {"capacity": 3, "refill": 3, "period": "1h"}]}]}"#,
        )
        .unwrap(),
    );
    let store = FakeStore::new();
    let got: Vec<_> = (0..5)
        .map(|_| outcome(&l.check(&FakeRequest::new("GET", "/"), &store, t0())))
        .collect();
    assert_eq!(
        got,
        vec![Ok(None), Ok(Some(100)), Ok(Some(200)), Err(429), Err(429)]
    );
}

#[test]
fn a_request_delayed_by_two_limits_waits_for_the_later_one_within_each_max_delay() {
    let limits = [limit(1, 10, 1000), limit(2, 1, 1000)];
    let shapes = [shape(300), shape(2000)];
    // Both buckets empty: the first has its next token in 100 ms, the second in 1 s.
    let (_, Some(tats)) = check_all(&limits, &[0, 0], t0()) else {
        unreachable!()
    };
    let (_, Some(tats)) = check_all(&limits, &tats, at_ms(100)) else {
        unreachable!()
    };
    let s = slot(&limits, &shapes, &tats, at_ms(100), &any_room).unwrap();
    assert_eq!(s.departure, at_ms(1000));
    assert_eq!(s.delaying, vec![0, 1]);
    // The first limit delays by only 100 ms (within its 300 ms); the wait is the second's.
    let tight = [shape(300), shape(500)];
    assert_eq!(
        slot(&limits, &tight, &tats, at_ms(100), &any_room),
        Err(Refused::TooLate)
    );
}

#[test]
fn a_full_queue_refuses_without_reserving() {
    let limits = [limit(1, 10, 1000)];
    let (_, Some(tats)) = check_all(&limits, &[0], t0()) else {
        unreachable!()
    };
    assert_eq!(
        slot(&limits, &[shape(1000)], &tats, t0(), &|_| false),
        Err(Refused::QueueFull)
    );
    let (l, store) = token_taken();
    let before = store.sets_attempted();
    let v = l.check_shaped(&req("a"), &store, t0(), &|_, _| false);
    assert_eq!(outcome(&v), Err(429));
    assert_eq!(v.shaping.unwrap().queue_full, vec![0]);
    assert_eq!(store.sets_attempted(), before, "nothing written");
    // The next request, with room, gets the first slot: nothing was consumed.
    assert_eq!(outcome(&l.check(&req("a"), &store, t0())), Ok(Some(100)));
}

#[test]
fn the_last_reservation_is_given_back_and_an_earlier_one_stays_a_gap() {
    let (l, store) = token_taken();
    let first = l.check(&req("a"), &store, t0()).shaping.unwrap();
    let second = l.check(&req("a"), &store, t0()).shaping.unwrap();
    assert_eq!(second.departure(), Some(at_ms(200)));
    // The first is not the last: its slot stays reserved (later ones keep their times).
    assert_eq!(give_back(&store, &first.reservations[0]), Ok(false));
    // The second is the last: given back, the next request gets its slot.
    assert_eq!(give_back(&store, &second.reservations[0]), Ok(true));
    assert_eq!(
        give_back(&store, &second.reservations[0]),
        Ok(false),
        "not twice"
    );
    assert_eq!(outcome(&l.check(&req("a"), &store, t0())), Ok(Some(200)));
}

#[test]
fn a_give_back_that_meets_cas_conflicts_still_lands() {
    let (l, store) = token_taken();
    let r = l.check(&req("a"), &store, t0()).shaping.unwrap();
    store.inject_conflicts(DEFAULT_MAX_ATTEMPTS - 1);
    assert_eq!(give_back(&store, &r.reservations[0]), Ok(true));
    assert_eq!(outcome(&l.check(&req("a"), &store, t0())), Ok(Some(100)));
}

#[test]
fn a_store_outage_on_a_shaped_rule_fails_open_without_a_wait() {
    let l = ten_per_second("1s");
    let store = FakeStore::new();
    store.fail_with(palisade_core::store::StoreError::Host("down".into()));
    let v = l.check(&req("a"), &store, t0());
    assert_eq!(outcome(&v), Ok(None));
    assert_eq!(v.events, vec![(0, Event::StoreFailure)]);
}

#[test]
fn in_all_mode_later_rules_take_their_token_as_of_the_slot() {
    let l = RateLimiter::new(
        Config::parse(
            br#"{"mode": "all", "rules": [
            {"name": "shaped", "key": ["method"], "limits": [{"capacity": 1, "refill": 10, "period": "1s", "shape": {"max_delay": "1s"}}]},
            {"name": "quota", "key": ["method"], "limits": [{"capacity": 2, "refill": 2, "period": "1h"}]}]}"#,
        )
        .unwrap(),
    );
    let store = FakeStore::new();
    let get = FakeRequest::new("GET", "/");
    assert_eq!(outcome(&l.check(&get, &store, t0())), Ok(None));
    assert_eq!(outcome(&l.check(&get, &store, t0())), Ok(Some(100)));
    // The quota is spent: the third is limited by it after the first rule reserved a slot, which
    // the verdict carries so the glue can give it back.
    let v = l.check(&get, &store, t0());
    assert_eq!(outcome(&v), Err(429));
    assert_eq!(v.events, vec![(0, Event::Allowed), (1, Event::Limited)]);
    let shaping = v.shaping.unwrap();
    assert_eq!(shaping.departure(), Some(at_ms(200)));
    assert_eq!(give_back(&store, &shaping.reservations[0]), Ok(true));
}

#[test]
fn the_queue_releases_in_departure_then_arrival_order_and_counts_per_limit() {
    let shapes = [shape(1000)];
    let mut q = Queue::new([&shapes[..], &[][..]]);
    let reservation = |ms: u64| Shaping {
        reservations: vec![Reservation {
            rule: 0,
            departure: at_ms(ms),
            delaying: vec![0],
            key: String::new(),
            previous: Vec::new(),
            written: Vec::new(),
        }],
        queue_full: Vec::new(),
    };
    q.push(1, t0(), reservation(300));
    q.push(2, t0(), reservation(100));
    q.push(3, t0(), reservation(300));
    q.push(4, t0(), reservation(200));
    assert_eq!(q.counts[0][0].0, 4);
    assert!(q.has_room(0, 0));
    assert!(!q.has_room(1, 0), "a rule without shape has no queue");
    assert!(q.due(at_ms(99)).is_empty());
    let order = |w: Vec<Waiter>| w.iter().map(|w| w.context).collect::<Vec<_>>();
    assert_eq!(order(q.due(at_ms(200))), vec![2, 4]);
    assert_eq!(q.remove(1).map(|w| w.context), Some(1));
    assert_eq!(q.remove(1), None);
    assert_eq!(order(q.due(at_ms(1000))), vec![3]);
    assert!(q.is_empty());
    assert_eq!(q.counts[0][0].0, 0);
}

#[test]
fn max_queued_bounds_the_waiters_a_limit_holds() {
    let shapes = [Some(Shape {
        max_delay: Duration::from_secs(1),
        max_queued: 2,
    })];
    let mut q = Queue::new([&shapes[..]]);
    let one = || Shaping {
        reservations: vec![Reservation {
            rule: 0,
            departure: at_ms(100),
            delaying: vec![0],
            key: String::new(),
            previous: Vec::new(),
            written: Vec::new(),
        }],
        queue_full: Vec::new(),
    };
    q.push(1, t0(), one());
    assert!(q.has_room(0, 0));
    q.push(2, t0(), one());
    assert!(!q.has_room(0, 0));
    q.remove(2);
    assert!(q.has_room(0, 0));
}

#[test]
fn shape_config_has_documented_defaults_and_names_every_bad_field() {
    let with = |shape: &str| {
        format!(
            r#"{{"rules": [{{"name": "r", "key": ["path"], "limits": [{{"capacity": 1, "refill": 1, "period": "1s"}},
            {{"capacity": 1, "refill": 10, "period": "1s", "shape": {shape}}}]}}]}}"#
        )
    };
    let c = Config::parse(with(r#"{"max_delay": "2s"}"#).as_bytes()).unwrap();
    assert_eq!(
        c.rules[0].shapes,
        vec![
            None,
            Some(Shape {
                max_delay: Duration::from_secs(2),
                max_queued: DEFAULT_MAX_QUEUED
            })
        ]
    );
    let plain = Config::parse(
        br#"{"rules": [{"name": "r", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "1s"}]}]}"#,
    )
    .unwrap();
    assert!(plain.rules[0].shapes.is_empty());
    let cases = [
        (
            r#"{"max_delay": "0ms"}"#,
            "rules[0].limits[1].shape.max_delay",
        ),
        (
            r#"{"max_delay": "61s"}"#,
            "rules[0].limits[1].shape.max_delay",
        ),
        (
            r#"{"max_delay": "1 s"}"#,
            "rules[0].limits[1].shape.max_delay",
        ),
        (
            r#"{"max_delay": "1s", "max_queued": 0}"#,
            "rules[0].limits[1].shape.max_queued",
        ),
        (
            r#"{"max_delay": "1s", "max_queued": 10001}"#,
            "rules[0].limits[1].shape.max_queued",
        ),
        (
            r#"{"max_delay": "1s", "burst": 3}"#,
            "rules[0].limits[1].shape",
        ),
        (r#"{}"#, "rules[0].limits[1].shape"),
    ];
    for (shape, field) in cases {
        let e = Config::parse(with(shape).as_bytes()).unwrap_err();
        assert!(e.field.as_str().starts_with(field), "{shape}: {e}");
    }
    let e = Config::parse(
        with(r#"{"max_delay": "1s"}"#)
            .replace(r#""key""#, r#""shadow": true, "key""#)
            .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(e.field.as_str(), "rules[0].limits[1].shape", "{e}");
    // A `global` rule's limits are the service's fallback: nothing to wait for there.
    let e = Config::parse(
        with(r#"{"max_delay": "1s"}"#)
            .replace(
                r#""key""#,
                r#""global": {"cluster": "rls", "domain": "d", "descriptor": [{"key": "k", "value": "path"}]}, "key""#,
            )
            .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(e.field.as_str(), "rules[0].limits[1].shape", "{e}");
    assert!(e.to_string().contains("global"), "{e}");
}

fn any_limit() -> impl Strategy<Value = Limit> {
    (1u64..20, 1u64..50, 1u64..5_000)
        .prop_map(|(capacity, refill, period_ms)| limit(capacity, refill, period_ms))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The slot is the earliest time a plain check admits the request, and the state written is
    /// exactly what that check writes.
    #[test]
    fn a_slot_is_the_first_instant_the_plain_bucket_admits(
        limits in prop::collection::vec(any_limit(), 1..4),
        gaps in prop::collection::vec(0u64..300_000_000, 1..40),
    ) {
        let shapes: Vec<Option<Shape>> = limits.iter().map(|_| shape(60_000)).collect();
        let mut tats = vec![0; limits.len()];
        let mut now = t0();
        let mut last_departure = Timestamp::ZERO;
        for gap in gaps {
            now = now.saturating_add(Duration::from_nanos(gap));
            if let (_, Some(t)) = check_all(&limits, &tats, now) {
                tats = t;
                continue;
            }
            let Ok(s) = slot(&limits, &shapes, &tats, now, &any_room) else { continue };
            prop_assert!(s.departure > now);
            let (o, plain) = check_all(&limits, &tats, s.departure);
            prop_assert!(o.allowed);
            prop_assert_eq!(plain.as_ref(), Some(&s.tats));
            let just_before = Timestamp::from_nanos(s.departure.as_nanos() - 1);
            prop_assert!(!check_all(&limits, &tats, just_before).0.allowed);
            // Slots of one bucket come in order.
            prop_assert!(s.departure > last_departure);
            last_departure = s.departure;
            tats = s.tats;
        }
    }
}
