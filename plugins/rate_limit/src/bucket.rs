//! Token buckets as GCRA, in exact integer arithmetic.
//!
//! A limit is "`capacity` tokens, refilled at `refill` tokens per `period`". Instead of storing a
//! token count and a last-refill time (two fields, and rounding every time tokens are added), each
//! limit stores one number: the *theoretical arrival time* (TAT) of the next request, as in the
//! Generic Cell Rate Algorithm. A request is admitted if, after it, the TAT is no further ahead of
//! `now` than the bucket's capacity allows. This is exactly a token bucket, and:
//!
//! - time is scaled by `refill`, so one token costs exactly `period` scaled nanoseconds — no
//!   division, no rounding, no drift however odd the rate (7 per hour is as exact as 10 per second);
//! - a long idle gap is just `max(tat, now)`: nothing to refill, nothing to overflow (u128 holds
//!   `now × refill` with room to spare for the allowed ranges);
//! - a clock that steps back only delays refill, never grants tokens.
//!
//! All limits of a rule live in one stored value and are updated in one compare-and-swap, so a
//! request is admitted only if every limit admits it, and a denied request consumes nothing.

use palisade_core::Timestamp;
use std::time::Duration;

/// One validated limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Maximum tokens (the burst).
    pub capacity: u64,
    /// Tokens added per `period`.
    pub refill: u64,
    /// Refill period; at least 1 ms.
    pub period: Duration,
}

impl Limit {
    fn period_nanos(&self) -> u128 {
        self.period.as_nanos()
    }

    /// Cost of one token in scaled time units.
    pub(crate) fn cost(&self) -> u128 {
        self.period_nanos()
    }

    /// How far ahead of now the TAT may run (the burst) in scaled units.
    pub(crate) fn tolerance(&self) -> u128 {
        u128::from(self.capacity) * self.cost()
    }

    pub(crate) fn scaled(&self, now: Timestamp) -> u128 {
        u128::from(now.as_nanos()) * u128::from(self.refill)
    }

    fn unscale(&self, scaled: u128) -> Duration {
        let nanos = scaled.div_ceil(u128::from(self.refill));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Seconds for an empty bucket to fill completely (the `w` of `RateLimit-Policy`).
    pub fn window_secs(&self) -> u64 {
        ceil_secs(self.unscale(self.tolerance()))
    }
}

/// The state of one limit: its theoretical arrival time, in scaled units. Zero means "fresh".
pub type Tat = u128;

/// What one limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOutcome {
    pub allowed: bool,
    /// Tokens left after this request (0 if denied).
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
    /// When denied: time until one token is available.
    pub retry_after: Duration,
}

/// Check one limit against its state at `now`; returns the new state if the request is admitted.
pub fn check(limit: &Limit, tat: Tat, now: Timestamp) -> (LimitOutcome, Option<Tat>) {
    let now_s = limit.scaled(now);
    let base = tat.max(now_s);
    // Saturating: a TAT read from a corrupt or foreign slot can be anything up to `u128::MAX`
    // (found by the `rate_limit_policy` fuzz target); such a slot denies, it does not overflow.
    let new_tat = base.saturating_add(limit.cost());
    let ahead = new_tat - now_s;
    if ahead <= limit.tolerance() {
        let remaining = (limit.tolerance() - ahead) / limit.cost();
        let outcome = LimitOutcome {
            allowed: true,
            remaining: u64::try_from(remaining).unwrap_or(u64::MAX),
            reset: limit.unscale(ahead),
            retry_after: Duration::ZERO,
        };
        (outcome, Some(new_tat))
    } else {
        let outcome = LimitOutcome {
            allowed: false,
            remaining: 0,
            reset: limit.unscale(base - now_s),
            retry_after: limit.unscale(ahead - limit.tolerance()),
        };
        (outcome, None)
    }
}

/// True if the bucket is full at `now` (indistinguishable from a fresh one).
pub fn is_idle(limit: &Limit, tat: Tat, now: Timestamp) -> bool {
    tat <= limit.scaled(now)
}

/// The combined outcome of all limits of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOutcome {
    pub allowed: bool,
    /// The limit that binds: the denying one with the longest wait, or else the one with the
    /// fewest tokens left. Its figures go into the `RateLimit-*` headers.
    pub binding: usize,
    pub outcomes: Vec<LimitOutcome>,
}

impl RuleOutcome {
    pub fn binding_outcome(&self) -> Option<&LimitOutcome> {
        self.outcomes.get(self.binding)
    }
}

/// Check every limit; admit only if all admit. Returns the new states if admitted.
pub fn check_all(
    limits: &[Limit],
    tats: &[Tat],
    now: Timestamp,
) -> (RuleOutcome, Option<Vec<Tat>>) {
    let mut outcomes = Vec::with_capacity(limits.len());
    let mut new_tats = Vec::with_capacity(limits.len());
    for (i, limit) in limits.iter().enumerate() {
        let (outcome, new_tat) = check(limit, tats.get(i).copied().unwrap_or(0), now);
        outcomes.push(outcome);
        new_tats.push(new_tat.unwrap_or(0));
    }
    let allowed = outcomes.iter().all(|o| o.allowed);
    // Allowed: the limit with the fewest tokens left (the first of equals); limited: the one
    // with the longest wait (the last of equals).
    let indexed = outcomes.iter().enumerate();
    let binding = if allowed {
        indexed.min_by_key(|(_, o)| o.remaining)
    } else {
        indexed.max_by_key(|(_, o)| {
            if o.allowed {
                Duration::ZERO
            } else {
                o.retry_after
            }
        })
    }
    .map_or(0, |(i, _)| i);
    let outcome = RuleOutcome {
        allowed,
        binding,
        outcomes,
    };
    (outcome, allowed.then_some(new_tats))
}

/// Whole seconds, rounded up (a client told "0" would retry at once).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Stored form of a slot: format byte, key fingerprint, then one TAT per limit (little-endian).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    pub fingerprint: u64,
    pub tats: Vec<Tat>,
}

const FORMAT: u8 = 1;

impl SlotState {
    pub fn fresh(fingerprint: u64, limits: usize) -> Self {
        SlotState {
            fingerprint,
            tats: vec![0; limits],
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + 16 * self.tats.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        for tat in &self.tats {
            out.extend_from_slice(&tat.to_le_bytes());
        }
        out
    }

    /// Decode a stored slot; `None` for an empty, foreign or corrupt value (treated as fresh).
    pub fn decode(bytes: &[u8], limits: usize) -> Option<Self> {
        let (&format, rest) = bytes.split_first()?;
        if format != FORMAT || rest.len() != 8 + 16 * limits {
            return None;
        }
        let (fp, tats) = rest.split_at(8);
        let fingerprint = u64::from_le_bytes(fp.try_into().ok()?);
        let tats = tats
            .chunks_exact(16)
            .map(|c| c.try_into().ok().map(u128::from_le_bytes))
            .collect::<Option<Vec<_>>>()?;
        Some(SlotState { fingerprint, tats })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(capacity: u64, refill: u64, period_ms: u64) -> Limit {
        Limit {
            capacity,
            refill,
            period: Duration::from_millis(period_ms),
        }
    }

    /// Regression (fuzz target `rate_limit_policy`): a slot overwritten with garbage decoded to a
    /// TAT near `u128::MAX`, and adding one token's cost overflowed (a panic with overflow checks,
    /// a wrap-around without).
    #[test]
    fn a_corrupt_tat_at_the_top_of_the_range_denies_without_overflowing() {
        let l = limit(5, 1, 1000);
        let now = Timestamp::from_secs(1_700_000_000);
        for tat in [u128::MAX, u128::MAX - 1, u128::MAX - l.cost() + 1] {
            let (outcome, new_tat) = check(&l, tat, now);
            assert!(!outcome.allowed);
            assert_eq!(new_tat, None);
            assert_eq!(outcome.remaining, 0);
            assert!(outcome.retry_after > Duration::from_secs(3600));
        }
    }

    /// Run `n` requests at `now` against one limit, returning how many were admitted.
    fn burst(l: &Limit, tat: &mut Tat, now: Timestamp, n: usize) -> usize {
        let mut admitted = 0;
        for _ in 0..n {
            if let (o, Some(t)) = check(l, *tat, now) {
                assert!(o.allowed);
                *tat = t;
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn a_fresh_bucket_admits_exactly_its_capacity_in_a_burst() {
        let l = limit(5, 1, 1000);
        let mut tat = 0;
        let now = Timestamp::from_secs(1_700_000_000);
        assert_eq!(burst(&l, &mut tat, now, 20), 5);
    }

    #[test]
    fn remaining_counts_down_and_the_denial_says_when_to_retry() {
        let l = limit(3, 1, 1000);
        let now = Timestamp::from_secs(100);
        let (o1, t1) = check(&l, 0, now);
        assert_eq!((o1.allowed, o1.remaining), (true, 2));
        let (o2, t2) = check(&l, t1.unwrap(), now);
        assert_eq!(o2.remaining, 1);
        let (o3, t3) = check(&l, t2.unwrap(), now);
        assert_eq!(o3.remaining, 0);
        assert_eq!(o3.reset, Duration::from_secs(3));
        let (o4, t4) = check(&l, t3.unwrap(), now);
        assert!(!o4.allowed);
        assert_eq!(t4, None);
        assert_eq!(o4.retry_after, Duration::from_secs(1));
        assert_eq!(o4.reset, Duration::from_secs(3));
    }

    #[test]
    fn refill_admits_one_token_per_interval() {
        let l = limit(2, 1, 1000);
        let mut tat = 0;
        let t0 = Timestamp::from_secs(50);
        assert_eq!(burst(&l, &mut tat, t0, 5), 2);
        // 999 ms later: still nothing; at 1000 ms: exactly one.
        assert_eq!(burst(&l, &mut tat, Timestamp::from_millis(50_999), 5), 0);
        assert_eq!(burst(&l, &mut tat, Timestamp::from_millis(51_000), 5), 1);
        // 2 s later the bucket is full again (capacity 2), not 3.
        assert_eq!(burst(&l, &mut tat, Timestamp::from_millis(60_000), 5), 2);
    }

    #[test]
    fn odd_rates_are_exact_over_many_periods() {
        // 7 tokens per hour, burst 100, drained by a request every second for 10 hours: the
        // burst plus exactly 70 refilled tokens, with no drift from 3600/7 not being whole.
        let l = limit(100, 7, 3_600_000);
        let mut tat = 0;
        let mut admitted = 0;
        let start = 1_000_000u64;
        for step in 0..=36_000u64 {
            admitted += burst(&l, &mut tat, Timestamp::from_secs(start + step), 1);
        }
        assert_eq!(admitted, 170);
    }

    #[test]
    fn a_very_long_idle_gap_refills_to_capacity_and_no_more() {
        let l = limit(10, 1_000_000_000, 1000);
        let mut tat = 0;
        assert_eq!(burst(&l, &mut tat, Timestamp::from_secs(1), 10), 10);
        // Centuries later (near the end of u64 nanoseconds): capacity, not billions.
        let far = Timestamp::from_nanos(u64::MAX - 1);
        assert_eq!(burst(&l, &mut tat, far, 100), 10);
    }

    #[test]
    fn a_clock_stepping_back_grants_nothing() {
        let l = limit(2, 1, 1000);
        let mut tat = 0;
        assert_eq!(burst(&l, &mut tat, Timestamp::from_secs(100), 2), 2);
        assert_eq!(burst(&l, &mut tat, Timestamp::from_secs(90), 5), 0);
        assert_eq!(burst(&l, &mut tat, Timestamp::from_secs(101), 5), 1);
    }

    #[test]
    fn multiple_limits_all_must_admit_and_a_denial_consumes_nothing() {
        // 3 per second and 5 per minute.
        let limits = [limit(3, 3, 1000), limit(5, 5, 60_000)];
        let mut tats = vec![0, 0];
        let mut admitted = 0;
        for second in 0..10u64 {
            for _ in 0..3 {
                let (o, new) = check_all(&limits, &tats, Timestamp::from_secs(1000 + second));
                if let Some(new) = new {
                    assert!(o.allowed);
                    tats = new;
                    admitted += 1;
                } else {
                    assert!(!o.allowed);
                    // The per-minute limit binds, and tells the client to wait for it.
                    assert_eq!(o.binding, 1);
                    assert!(o.binding_outcome().unwrap().retry_after > Duration::from_secs(1));
                }
            }
        }
        // 5 in the burst, then one every 12 s: by second 9 nothing more.
        assert_eq!(admitted, 5);
    }

    #[test]
    fn the_binding_limit_on_admission_is_the_one_with_fewest_tokens() {
        let limits = [limit(100, 100, 1000), limit(3, 3, 60_000)];
        let (o, _) = check_all(&limits, &[0, 0], Timestamp::from_secs(5));
        assert!(o.allowed);
        assert_eq!(o.binding, 1);
        assert_eq!(o.binding_outcome().unwrap().remaining, 2);
    }

    #[test]
    fn window_is_the_time_to_refill_from_empty() {
        assert_eq!(limit(10, 1, 1000).window_secs(), 10);
        assert_eq!(limit(1000, 1000, 3_600_000).window_secs(), 3600);
        assert_eq!(limit(1, 3, 1000).window_secs(), 1);
    }

    #[test]
    fn slot_state_round_trips_and_rejects_foreign_bytes() {
        let s = SlotState {
            fingerprint: 0xDEAD_BEEF,
            tats: vec![1, u128::MAX],
        };
        assert_eq!(SlotState::decode(&s.encode(), 2), Some(s.clone()));
        assert_eq!(SlotState::decode(&s.encode(), 3), None);
        assert_eq!(SlotState::decode(b"", 2), None);
        assert_eq!(SlotState::decode(&[9; 41], 2), None);
    }

    #[test]
    fn idle_detection_matches_a_full_bucket() {
        let l = limit(2, 1, 1000);
        let (_, t) = check(&l, 0, Timestamp::from_secs(10));
        let t = t.unwrap();
        assert!(!is_idle(&l, t, Timestamp::from_secs(10)));
        assert!(is_idle(&l, t, Timestamp::from_secs(11)));
    }
}

#[cfg(test)]
mod properties {
    //! The bucket against a reference: a plain token bucket in exact rationals (tokens scaled by
    //! the period), which is what GCRA claims to be.
    use super::*;
    use proptest::prelude::*;

    /// Tokens × period_ns, so refill is exact integer arithmetic.
    struct Reference {
        scaled_tokens: u128,
        last_ns: u64,
    }

    impl Reference {
        fn new(limit: &Limit, start_ns: u64) -> Self {
            Reference {
                scaled_tokens: u128::from(limit.capacity) * limit.period.as_nanos(),
                last_ns: start_ns,
            }
        }

        fn admit(&mut self, limit: &Limit, now_ns: u64) -> bool {
            let full = u128::from(limit.capacity) * limit.period.as_nanos();
            let elapsed = u128::from(now_ns.saturating_sub(self.last_ns));
            self.last_ns = self.last_ns.max(now_ns);
            self.scaled_tokens =
                (self.scaled_tokens + elapsed * u128::from(limit.refill)).min(full);
            if self.scaled_tokens >= limit.period.as_nanos() {
                self.scaled_tokens -= limit.period.as_nanos();
                true
            } else {
                false
            }
        }
    }

    fn any_limit() -> impl Strategy<Value = Limit> {
        (1u64..50, 1u64..20, 1u64..5_000).prop_map(|(capacity, refill, period_ms)| Limit {
            capacity,
            refill,
            period: Duration::from_millis(period_ms),
        })
    }

    /// Gaps between requests: mostly bursts (0), sometimes short, sometimes long.
    fn any_gaps() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(
            prop_oneof![Just(0u64), 0u64..2_000_000_000, 0u64..50_000_000_000],
            1..200,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn gcra_admits_exactly_what_a_token_bucket_admits(limit in any_limit(), gaps in any_gaps()) {
            let mut now = 1_700_000_000_000_000_000u64;
            let mut tat: Tat = 0;
            let mut reference = Reference::new(&limit, now);
            for gap in gaps {
                now += gap;
                let (outcome, new_tat) = check(&limit, tat, Timestamp::from_nanos(now));
                prop_assert_eq!(outcome.allowed, reference.admit(&limit, now));
                if let Some(t) = new_tat {
                    tat = t;
                }
            }
        }

        #[test]
        fn no_window_admits_more_than_capacity_plus_refill(limit in any_limit(), gaps in any_gaps()) {
            let mut now = 1_000_000_000_000u64;
            let mut tat: Tat = 0;
            let mut admitted_at = Vec::new();
            for gap in gaps {
                now += gap;
                if let (_, Some(t)) = check(&limit, tat, Timestamp::from_nanos(now)) {
                    tat = t;
                    admitted_at.push(now);
                }
            }
            let period = limit.period.as_nanos();
            for (i, first) in admitted_at.iter().enumerate() {
                for (j, last) in admitted_at.iter().enumerate().skip(i) {
                    let in_window = (j - i + 1) as u128;
                    let refilled = u128::from(last - first) * u128::from(limit.refill) / period;
                    prop_assert!(
                        in_window <= u128::from(limit.capacity) + refilled,
                        "{} admitted in {} ns with capacity {} and {} refilled",
                        in_window, last - first, limit.capacity, refilled
                    );
                }
            }
        }

        #[test]
        fn a_clock_stepping_back_never_admits_more_than_the_time_really_elapsed(
            limit in any_limit(),
            steps in prop::collection::vec(-5_000_000_000i64..5_000_000_000, 1..100),
        ) {
            // However the clock jumps around, admissions never exceed capacity plus the refill
            // between the first request and the furthest time ever seen: stepping back grants
            // nothing.
            let mut now = 1_000_000_000_000i64;
            let mut first: Option<i64> = None;
            let mut furthest = i64::MIN;
            let mut tat: Tat = 0;
            let mut admitted = 0u128;
            for step in steps {
                now = (now + step).max(0);
                let first = *first.get_or_insert(now);
                furthest = furthest.max(now);
                if let (_, Some(t)) = check(&limit, tat, Timestamp::from_nanos(now as u64)) {
                    tat = t;
                    admitted += 1;
                }
                let refilled =
                    ((furthest - first) as u128) * u128::from(limit.refill) / limit.period.as_nanos();
                prop_assert!(admitted <= u128::from(limit.capacity) + refilled);
            }
        }
    }
}
