//! The breaker state machine, its windows and its encoding, driven with an injected clock.

use super::*;
use crate::config::Backoff;

fn thresholds(window: WindowSpec) -> Thresholds {
    Thresholds {
        window,
        minimum_number_of_calls: 4,
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_duration: Duration::from_secs(1),
        consecutive_failures: None,
        wait_duration_in_open: Duration::from_secs(5),
        backoff: None,
        permitted_calls_in_half_open: 2,
        half_open_probe_timeout: Duration::from_secs(10),
    }
}

/// A time window of `buckets` buckets of `bucket_secs` each.
fn time_window(buckets: u32, bucket_secs: u32) -> Thresholds {
    thresholds(WindowSpec::Time {
        buckets,
        bucket_secs,
    })
}

fn count10() -> Thresholds {
    thresholds(WindowSpec::Count { size: 10 })
}

const OK: Call = Call {
    failed: false,
    slow: false,
};
const FAIL: Call = Call {
    failed: true,
    slow: false,
};
const SLOW: Call = Call {
    failed: false,
    slow: true,
};

fn permit(b: &mut Breaker, t: &Thresholds, now: u64) -> Permit {
    match b.admit(t, now).output {
        Admission::Allowed(p) => p,
        other => panic!("expected a permit, got {other:?}"),
    }
}

fn call(b: &mut Breaker, t: &Thresholds, now: u64, c: Call) -> Stepped<Recorded> {
    let p = permit(b, t, now);
    b.record(t, p, c, now)
}

/// `call` with each of `cs` in turn, all at `now`.
fn calls(b: &mut Breaker, t: &Thresholds, now: u64, cs: impl IntoIterator<Item = Call>) {
    for c in cs {
        call(b, t, now, c);
    }
}

fn tally(calls: u32, failed: u32, slow: u32) -> Tally {
    Tally {
        calls,
        failed,
        slow,
    }
}

/// A count-10 breaker opened at 0, and its thresholds.
fn opened() -> (Thresholds, Breaker) {
    let t = count10();
    let b = open_breaker(&t, 0);
    (t, b)
}

/// [`opened`], half-open at 5 s with both its probes taken.
fn probing() -> (Thresholds, Breaker, [Permit; 2]) {
    let (t, mut b) = opened();
    let probes = [permit(&mut b, &t, 5_000), permit(&mut b, &t, 5_000)];
    (t, b, probes)
}

fn open_breaker(t: &Thresholds, now: u64) -> Breaker {
    let mut b = Breaker::fresh(&t.window, 7);
    calls(&mut b, t, now, [FAIL; 4]);
    assert_eq!(b.phase, Phase::Open);
    b
}

#[test]
fn closed_admits_without_changing_anything() {
    let t = count10();
    let mut b = Breaker::fresh(&t.window, 1);
    let s = b.admit(&t, 0);
    assert!(!s.changed);
    assert_eq!(
        s.output,
        Admission::Allowed(Permit {
            epoch: 0,
            probe: None
        })
    );
}

#[test]
fn nothing_is_evaluated_before_the_minimum_number_of_calls() {
    let t = count10();
    let mut b = Breaker::fresh(&t.window, 1);
    for _ in 0..3 {
        let s = call(&mut b, &t, 0, FAIL);
        assert!(s.transitions.is_empty());
    }
    assert_eq!(b.phase, Phase::Closed);
    let s = call(&mut b, &t, 0, FAIL);
    assert_eq!(
        s.transitions,
        vec![Transition {
            from: Phase::Closed,
            to: Phase::Open
        }]
    );
}

#[test]
fn closed_opens_at_a_failure_rate_equal_to_the_threshold() {
    let t = count10();
    let mut b = Breaker::fresh(&t.window, 1);
    calls(&mut b, &t, 0, [OK, FAIL, OK]);
    assert_eq!(b.phase, Phase::Closed);
    call(&mut b, &t, 0, FAIL); // 2 of 4 = 50 %
    assert_eq!(b.phase, Phase::Open);
}

#[test]
fn closed_stays_closed_below_the_threshold() {
    let t = count10();
    let mut b = Breaker::fresh(&t.window, 1);
    calls(&mut b, &t, 0, [OK, OK, FAIL, OK, OK, OK, FAIL, OK, OK, OK]);
    assert_eq!(b.phase, Phase::Closed);
    assert_eq!(b.window.tally(0), tally(10, 2, 0));
}

#[test]
fn a_count_window_forgets_calls_older_than_its_size() {
    let mut t = count10();
    t.minimum_number_of_calls = 10;
    let mut b = Breaker::fresh(&t.window, 1);
    // 4 failures, then 10 successes push them out.
    calls(&mut b, &t, 0, [FAIL; 4]);
    calls(&mut b, &t, 0, [OK; 10]);
    assert_eq!(b.window.tally(0).failed, 0);
    assert_eq!(b.window.tally(0).calls, 10);
    calls(&mut b, &t, 0, [FAIL; 4]);
    assert_eq!(b.phase, Phase::Closed, "4 of the last 10 is 40 %");
    call(&mut b, &t, 0, FAIL);
    assert_eq!(b.phase, Phase::Open, "5 of the last 10 is 50 %");
}

#[test]
fn a_time_window_forgets_calls_older_than_its_duration() {
    let t = time_window(10, 1);
    let mut b = Breaker::fresh(&t.window, 1);
    calls(&mut b, &t, 1_000, [FAIL; 3]);
    assert_eq!(b.window.tally(1_000).calls, 3);
    // Ten seconds later those calls are out of the window: 3 more failures are not enough.
    assert_eq!(b.window.tally(11_000).calls, 0);
    calls(&mut b, &t, 11_000, [FAIL; 3]);
    assert_eq!(b.phase, Phase::Closed);
    // Within the window they add up.
    call(&mut b, &t, 15_500, FAIL);
    assert_eq!(b.phase, Phase::Open);
}

#[test]
fn a_time_window_reuses_a_stale_bucket_from_zero() {
    let t = time_window(2, 1);
    let mut w = Window::fresh(&t.window);
    w.record(FAIL, 0);
    w.record(OK, 1_000);
    assert_eq!(w.tally(1_500).calls, 2);
    w.record(OK, 2_000); // bucket 2 replaces bucket 0
    assert_eq!(w.tally(2_000), tally(2, 0, 0));
}

#[test]
fn slow_calls_open_at_the_slow_call_rate_threshold() {
    let mut t = count10();
    t.slow_call_rate_threshold = 75.0;
    let mut b = Breaker::fresh(&t.window, 1);
    calls(&mut b, &t, 0, [SLOW, OK, SLOW]);
    call(&mut b, &t, 0, SLOW); // 3 of 4 = 75 % slow, 0 % failed
    assert_eq!(b.phase, Phase::Open);
}

#[test]
fn a_slow_failure_counts_as_both() {
    let t = count10();
    let mut w = Window::fresh(&t.window);
    w.record(
        Call {
            failed: true,
            slow: true,
        },
        0,
    );
    assert_eq!(w.tally(0), tally(1, 1, 1));
}

#[test]
fn consecutive_failures_open_before_the_minimum_and_a_success_resets_the_streak() {
    let mut t = count10();
    t.minimum_number_of_calls = 10;
    t.consecutive_failures = Some(3);
    let mut b = Breaker::fresh(&t.window, 1);
    calls(&mut b, &t, 0, [FAIL, FAIL, OK, FAIL, FAIL]);
    assert_eq!(b.phase, Phase::Closed);
    call(&mut b, &t, 0, FAIL);
    assert_eq!(b.phase, Phase::Open);
}

#[test]
fn open_rejects_with_the_time_left_until_half_open() {
    let t = count10();
    let mut b = open_breaker(&t, 1_000);
    assert_eq!(b.open_until_ms, 6_000);
    let s = b.admit(&t, 2_500);
    assert!(!s.changed);
    assert_eq!(
        s.output,
        Admission::Rejected {
            retry_after: Duration::from_millis(3_500)
        }
    );
    assert_eq!(b.header().effective_phase(5_999), Phase::Open);
    assert_eq!(b.header().effective_phase(6_000), Phase::HalfOpen);
}

#[test]
fn open_moves_to_half_open_after_the_wait_and_admits_only_the_probe_budget() {
    let (t, mut b) = opened();
    let s = b.admit(&t, 5_000);
    assert_eq!(
        s.transitions,
        vec![Transition {
            from: Phase::Open,
            to: Phase::HalfOpen
        }]
    );
    assert!(matches!(
        s.output,
        Admission::Allowed(Permit { probe: Some(_), .. })
    ));
    assert!(matches!(b.admit(&t, 5_000).output, Admission::Allowed(_)));
    assert!(matches!(
        b.admit(&t, 5_000).output,
        Admission::Rejected { .. }
    ));
}

#[test]
fn half_open_closes_when_the_probes_succeed() {
    let (t, mut b, [p1, p2]) = probing();
    assert!(b.record(&t, p1, OK, 5_100).transitions.is_empty());
    let s = b.record(&t, p2, OK, 5_200);
    assert_eq!(
        s.transitions,
        vec![Transition {
            from: Phase::HalfOpen,
            to: Phase::Closed
        }]
    );
    assert_eq!(
        b.window.tally(5_200).calls,
        0,
        "a closed breaker starts afresh"
    );
    assert_eq!(b.opens, 0);
}

#[test]
fn half_open_reopens_when_the_probes_fail_at_the_threshold() {
    let (t, mut b, [p1, p2]) = probing();
    b.record(&t, p1, OK, 5_100);
    let s = b.record(&t, p2, FAIL, 5_200); // 1 of 2 = 50 %
    assert_eq!(s.transitions[0].to, Phase::Open);
    assert_eq!(b.open_until_ms, 10_200);
}

#[test]
fn repeated_openings_back_off_exponentially_up_to_the_cap() {
    let mut t = count10();
    t.backoff = Some(Backoff {
        multiplier: 2.0,
        max_wait: Duration::from_secs(15),
    });
    assert_eq!(open_duration(&t, 1), Duration::from_secs(5));
    assert_eq!(open_duration(&t, 2), Duration::from_secs(10));
    assert_eq!(open_duration(&t, 3), Duration::from_secs(15));
    assert_eq!(open_duration(&t, 60_000), Duration::from_secs(15));
    let mut b = open_breaker(&t, 0);
    let mut now = b.open_until_ms;
    let mut waits = Vec::new();
    for _ in 0..3 {
        let p1 = permit(&mut b, &t, now);
        let p2 = permit(&mut b, &t, now);
        b.record(&t, p1, FAIL, now);
        b.record(&t, p2, FAIL, now);
        assert_eq!(b.phase, Phase::Open);
        waits.push(b.open_until_ms - now);
        now = b.open_until_ms;
    }
    assert_eq!(waits, vec![10_000, 15_000, 15_000]);
    // A close resets the backoff.
    let p1 = permit(&mut b, &t, now);
    let p2 = permit(&mut b, &t, now);
    b.record(&t, p1, OK, now);
    b.record(&t, p2, OK, now);
    assert_eq!(b.phase, Phase::Closed);
    calls(&mut b, &t, now, [FAIL; 4]);
    assert_eq!(b.open_until_ms - now, 5_000);
}

#[test]
fn a_lost_probe_frees_its_slot_after_the_probe_timeout() {
    let (t, mut b, [_lost1, _lost2]) = probing();
    // Both probes vanish (their worker died). Until the timeout, nothing else is admitted.
    match b.admit(&t, 14_999).output {
        Admission::Rejected { retry_after } => {
            assert_eq!(retry_after, Duration::from_millis(1))
        }
        other => panic!("{other:?}"),
    }
    // After it, new probes are admitted and can close the breaker: no wedge.
    let s = b.admit(&t, 15_000);
    assert_eq!(s.expired_probes, 1);
    let Admission::Allowed(p1) = s.output else {
        panic!("expected a probe")
    };
    let p2 = permit(&mut b, &t, 15_000);
    b.record(&t, p1, OK, 15_100);
    b.record(&t, p2, OK, 15_100);
    assert_eq!(b.phase, Phase::Closed);
}

#[test]
fn a_late_outcome_of_an_expired_probe_is_dropped() {
    let (t, mut b, [late, _other]) = probing();
    let fresh = permit(&mut b, &t, 15_000); // reissues the late probe's slot
    assert_eq!(b.record(&t, late, FAIL, 15_001).output, Recorded::Stale);
    assert_eq!(b.record(&t, fresh, OK, 15_002).output, Recorded::Counted);
    assert_eq!(b.phase, Phase::HalfOpen);
}

#[test]
fn a_released_probe_can_be_taken_again_at_once() {
    let (t, mut b, [p1, _p2]) = probing();
    assert!(b.release(p1));
    assert!(!b.release(p1), "released once");
    assert!(matches!(b.admit(&t, 5_001).output, Admission::Allowed(_)));
}

#[test]
fn outcomes_from_another_epoch_are_not_recorded() {
    let t = count10();
    let mut b = Breaker::fresh(&t.window, 1);
    let before = permit(&mut b, &t, 0);
    calls(&mut b, &t, 0, [FAIL; 4]);
    assert_eq!(b.phase, Phase::Open);
    // A call admitted while closed finishes after the breaker opened.
    assert_eq!(b.record(&t, before, FAIL, 1).output, Recorded::Stale);
    // A closed-state permit is never taken for a probe.
    let p = permit(&mut b, &t, 5_000);
    let wrong = Permit {
        epoch: p.epoch,
        probe: None,
    };
    assert_eq!(b.record(&t, wrong, OK, 5_000).output, Recorded::Stale);
}

#[test]
fn a_batch_of_successes_counts_like_single_successes() {
    for t in [count10(), time_window(10, 1)] {
        let mut one_by_one = Breaker::fresh(&t.window, 1);
        let mut batched = Breaker::fresh(&t.window, 1);
        call(&mut one_by_one, &t, 0, FAIL);
        call(&mut batched, &t, 0, FAIL);
        for _ in 0..5 {
            call(&mut one_by_one, &t, 100, OK);
        }
        batched.record_successes(&t, 0, 5, 100);
        assert_eq!(one_by_one.window.tally(100), batched.window.tally(100));
        assert_eq!(batched.consecutive_failures, 0);
    }
}

#[test]
fn a_batch_of_successes_can_reach_the_minimum_and_trip() {
    let t = count10();
    let mut b = Breaker::fresh(&t.window, 1);
    calls(&mut b, &t, 0, [FAIL; 3]);
    let s = b.record_successes(&t, 0, 1, 0); // 3 of 4 failed
    assert_eq!(s.transitions[0].to, Phase::Open);
}

#[test]
fn a_batch_from_another_epoch_or_state_is_stale() {
    let (t, mut b) = opened();
    assert_eq!(b.record_successes(&t, 0, 3, 1).output, Recorded::Stale);
    assert!(!b.record_successes(&t, b.epoch, 3, 1).changed);
    let mut c = Breaker::fresh(&t.window, 1);
    assert_eq!(c.record_successes(&t, 0, 50, 1).output, Recorded::Counted);
    assert_eq!(c.window.tally(1).calls, 10, "capped at the window");
}

#[test]
fn encoding_round_trips_in_every_phase() {
    for t in [count10(), time_window(5, 2)] {
        let mut b = Breaker::fresh(&t.window, 42);
        call(&mut b, &t, 100, SLOW);
        assert_eq!(Breaker::decode(&b.encode(), &t.window).as_ref(), Some(&b));
        let mut b = open_breaker(&t, 0);
        assert_eq!(Breaker::decode(&b.encode(), &t.window).as_ref(), Some(&b));
        let p = permit(&mut b, &t, 10_000);
        b.record(
            &t,
            p,
            Call {
                failed: true,
                slow: true,
            },
            10_000,
        );
        permit(&mut b, &t, 10_000);
        let bytes = b.encode();
        assert_eq!(Breaker::decode(&bytes, &t.window).as_ref(), Some(&b));
        assert_eq!(Header::decode(&bytes), Some(b.header()));
    }
}

#[test]
fn a_count_window_of_one_hundred_encodes_in_under_seventy_bytes() {
    let spec = WindowSpec::Count { size: 100 };
    assert_eq!(Breaker::fresh(&spec, 0).encode().len(), 33 + 8 + 26);
}

#[test]
fn garbage_or_another_shape_does_not_decode() {
    let t = count10();
    let bytes = Breaker::fresh(&t.window, 1).encode();
    assert!(Breaker::decode(&bytes, &WindowSpec::Count { size: 20 }).is_none());
    assert!(Breaker::decode(&bytes[..bytes.len() - 1], &t.window).is_none());
    assert!(Breaker::decode(b"", &t.window).is_none());
    assert!(Header::decode(b"\x02").is_none());
    let mut bad = bytes.clone();
    bad[1] = 9;
    assert!(Breaker::decode(&bad, &t.window).is_none());
}
