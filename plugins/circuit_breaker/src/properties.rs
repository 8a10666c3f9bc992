//! Property tests (issue 9): the breaker's transitions are always legal, whatever the sequence of
//! admissions, outcomes, clock moves and CAS conflicts.
//!
//! Two levels are driven: the policy ([`Breakers`] over a [`FakeStore`] that injects CAS
//! conflicts, observed through the stored value after every step), and the pure [`Breaker`]
//! with arbitrary (including stale and replayed) permits.

use crate::config::{Config, Thresholds, WindowSpec};
use crate::outcome::ResponseFacts;
use crate::policy::{AdmitVerdict, Breakers, Event, Ticket};
use crate::state::{Admission, Breaker, Call, Permit, Phase, Probe, Transition};
use palisade_core::testing::{FakeRequest, FakeStore};
use palisade_core::Timestamp;
use proptest::prelude::*;
use std::time::Duration;

fn legal(t: Transition) -> bool {
    matches!(
        (t.from, t.to),
        (Phase::Closed, Phase::Open)
            | (Phase::Open, Phase::HalfOpen)
            | (Phase::HalfOpen, Phase::Closed)
            | (Phase::HalfOpen, Phase::Open)
    )
}

/// A chain of reported transitions must be legal link by link and lead from `before` to `after`;
/// no transition reported means no phase change and no new epoch.
fn check_chain(
    transitions: &[Transition],
    before: &Breaker,
    after: &Breaker,
) -> Result<(), TestCaseError> {
    for t in transitions {
        prop_assert!(legal(*t), "illegal transition {t:?}");
    }
    for w in transitions.windows(2) {
        prop_assert_eq!(w[0].to, w[1].from, "broken chain {:?}", transitions);
    }
    match (transitions.first(), transitions.last()) {
        (Some(first), Some(last)) => {
            prop_assert_eq!(first.from, before.phase);
            prop_assert_eq!(last.to, after.phase);
            prop_assert_ne!(before.epoch, after.epoch, "a transition bumps the epoch");
        }
        _ => {
            prop_assert_eq!(before.phase, after.phase, "unreported phase change");
            prop_assert_eq!(before.epoch, after.epoch, "unreported epoch change");
        }
    }
    if before.phase != after.phase {
        let observed = Transition {
            from: before.phase,
            to: after.phase,
        };
        // One step makes at most one transition, so the observed change is itself legal.
        prop_assert!(legal(observed), "illegal observed change {observed:?}");
    }
    Ok(())
}

/// Probe leases a caller still holds and that have not expired: never more than the budget.
fn check_probe_budget(
    held: &[(Permit, u64)],
    b: &Breaker,
    t: &Thresholds,
    now: u64,
) -> Result<(), TestCaseError> {
    let budget = t.permitted_calls_in_half_open as usize;
    if b.phase != Phase::HalfOpen {
        prop_assert!(b.probes.is_empty(), "probes outside half-open: {:?}", b);
        return Ok(());
    }
    prop_assert_eq!(b.probes.len(), budget);
    let timeout = u64::try_from(t.half_open_probe_timeout.as_millis()).unwrap_or(u64::MAX);
    let live = held
        .iter()
        .filter(|(p, at)| p.epoch == b.epoch && p.probe.is_some() && at + timeout > now)
        .count();
    prop_assert!(
        live <= budget,
        "{live} live probes outstanding, budget {budget}: {b:?}"
    );
    let leased = b
        .probes
        .iter()
        .filter(|p| matches!(p, Probe::Leased { deadline_ms, .. } if *deadline_ms > now))
        .count();
    prop_assert!(live <= leased, "a held probe lost its lease before expiry");
    Ok(())
}

#[derive(Debug, Clone)]
struct Setup {
    time_window: bool,
    window_size: u32,
    minimum: u32,
    failure_rate: f64,
    slow_rate: f64,
    consecutive_failures: Option<u32>,
    wait_ms: u64,
    backoff: bool,
    probes: u32,
    probe_timeout_ms: u64,
    metrics_only: bool,
    deny: bool,
}

impl Setup {
    fn json(&self) -> String {
        let mut rule = format!(
            r#""name":"b","sliding_window_type":"{}","sliding_window_size":{},
            "minimum_number_of_calls":{},"failure_rate_threshold":{},
            "slow_call_rate_threshold":{},"slow_call_duration":"100ms",
            "wait_duration_in_open":"{}ms","permitted_calls_in_half_open":{},
            "half_open_probe_timeout":"{}ms","mode":"{}","failure_mode":"{}""#,
            if self.time_window {
                "time_based"
            } else {
                "count_based"
            },
            self.window_size,
            self.minimum,
            self.failure_rate,
            self.slow_rate,
            self.wait_ms,
            self.probes,
            self.probe_timeout_ms,
            if self.metrics_only {
                "metrics_only"
            } else {
                "normal"
            },
            if self.deny { "deny" } else { "allow" },
        );
        if let Some(n) = self.consecutive_failures {
            rule.push_str(&format!(r#","consecutive_failures":{n}"#));
        }
        if self.backoff {
            rule.push_str(r#","exponential_backoff":{"multiplier":2}"#);
        }
        format!(r#"{{"rules":[{{{rule}}}]}}"#)
    }
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        (
            any::<bool>(),
            1u32..=8,
            1u32..=6,
            prop::sample::select(vec![1.0, 25.0, 50.0, 100.0]),
            prop::sample::select(vec![50.0, 100.0]),
            prop::option::of(1u32..=3),
        ),
        (
            // Short waits and probe timeouts too, so that clock steps land on their edges.
            prop_oneof![1u64..=10, 1u64..=2_000],
            any::<bool>(),
            1u32..=4,
            prop_oneof![1u64..=10, 1u64..=3_000],
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (time_window, window_size, minimum, failure_rate, slow_rate, consecutive_failures),
                (wait_ms, backoff, probes, probe_timeout_ms, metrics_only, deny),
            )| Setup {
                time_window,
                window_size,
                minimum,
                failure_rate,
                slow_rate,
                consecutive_failures,
                wait_ms,
                backoff,
                probes,
                probe_timeout_ms,
                metrics_only,
                deny,
            },
        )
}

/// How a call ends, as the filter would report it.
#[derive(Debug, Clone, Copy)]
enum End {
    Success,
    Failure,
    Slow,
    SlowFailure,
    /// The client left first: ignored, and a probe lease is given back.
    Gone,
}

impl End {
    fn facts(self) -> ResponseFacts {
        let (status, ms) = match self {
            End::Success => (Some(200), 5),
            End::Failure => (Some(503), 5),
            End::Slow => (Some(200), 500),
            End::SlowFailure => (Some(503), 500),
            End::Gone => (None, 5),
        };
        ResponseFacts {
            status,
            code_details: status.map(|_| "via_upstream".to_owned()),
            elapsed: Duration::from_millis(ms),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Admit,
    /// Record the outcome of the held call at `index % held` (nothing if none is held).
    Finish(usize, End),
    /// Pure level only: record an outcome for any permit ever issued (stale, used or current).
    Replay(usize, End),
    /// Pure level only: a worker's batch of `n` clean successes for the current epoch.
    Batch(u32),
    Advance(u64),
    Conflicts(u32),
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        3 => Just(End::Success),
        3 => Just(End::Failure),
        1 => Just(End::Slow),
        1 => Just(End::SlowFailure),
        1 => Just(End::Gone),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Admit),
        4 => (any::<usize>(), end()).prop_map(|(i, e)| Op::Finish(i, e)),
        2 => prop_oneof![0u64..=50, 0u64..=5_000].prop_map(Op::Advance),
        1 => (0u32..=10).prop_map(Op::Conflicts),
    ]
}

/// The fake clock starts well after the epoch, as a real one does.
const START_MS: u64 = 1_000_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn transitions(events: &[Event]) -> Vec<Transition> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Transition(t) => Some(*t),
            _ => None,
        })
        .collect()
}

fn check_admission(
    v: &AdmitVerdict,
    before: &Breaker,
    setup: &Setup,
    now: u64,
) -> Result<(), TestCaseError> {
    match before.phase {
        Phase::Open if now < before.open_until_ms => {
            prop_assert!(v.ticket.is_none(), "admitted while open: {v:?}");
            prop_assert_eq!(v.decision.is_continue(), setup.metrics_only);
        }
        Phase::Closed => {
            let ticket = v.ticket.as_ref();
            prop_assert!(
                ticket.is_some_and(|t| t.permit.is_some_and(|p| p.probe.is_none())),
                "a closed breaker admits every call (reading only): {v:?}"
            );
        }
        _ => {}
    }
    if let Some(p) = v.ticket.as_ref().and_then(|t| t.permit) {
        prop_assert!(
            p.probe.is_none() || v.phase == Some(Phase::HalfOpen),
            "a probe outside half-open: {v:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Through the policy and a store that loses CAS races: every reported and every observed
    /// state change is legal, an open breaker admits nothing before its wait is over, and
    /// half-open never has more live probes out than its budget.
    #[test]
    fn breaker_transitions_are_always_legal(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let config = Config::parse(setup.json().as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let breakers = Breakers::new(config);
        let t = breakers.config().rules[0].thresholds.clone();
        let req = FakeRequest::new("GET", "/").cluster("backend");
        let store = FakeStore::new();
        let key = breakers
            .locate(&req)
            .ok()
            .flatten()
            .map(|r| r.store_key().to_owned())
            .unwrap_or_default();
        let read = |store: &FakeStore| {
            store
                .value(&key)
                .and_then(|v| Breaker::decode(&v, &t.window))
                .unwrap_or_else(|| Breaker::fresh(&t.window, 0))
        };
        let mut now = START_MS;
        let mut held: Vec<(Ticket, u64)> = Vec::new();
        for op in ops {
            let before = read(&store);
            let reported = match op {
                Op::Admit => {
                    let v = breakers.admit(&req, &store, at(now));
                    check_admission(&v, &before, &setup, now)?;
                    if let Some(ticket) = v.ticket.clone() {
                        held.push((ticket, now));
                    }
                    transitions(&v.events)
                }
                Op::Finish(i, end) => {
                    if held.is_empty() {
                        continue;
                    }
                    let (ticket, _) = held.remove(i % held.len());
                    let v = breakers.record(&ticket, &end.facts(), &store, at(now));
                    transitions(&v.events)
                }
                Op::Advance(ms) => {
                    now += ms;
                    Vec::new()
                }
                Op::Conflicts(n) => {
                    store.inject_conflicts(n);
                    Vec::new()
                }
                Op::Replay(..) | Op::Batch(_) => continue,
            };
            let after = read(&store);
            check_chain(&reported, &before, &after)?;
            let permits: Vec<(Permit, u64)> = held
                .iter()
                .filter_map(|(ticket, at)| ticket.permit.map(|p| (p, *at)))
                .collect();
            check_probe_budget(&permits, &after, &t, now)?;
        }
    }

    /// The pure state machine, fed any permit (current, stale, released, replayed): transitions are
    /// legal, nothing is admitted while open, the probe budget holds.
    #[test]
    fn pure_breaker_transitions_are_always_legal(
        setup in setup(),
        ops in prop::collection::vec(
            prop_oneof![
                4 => Just(Op::Admit),
                4 => (any::<usize>(), end()).prop_map(|(i, e)| Op::Finish(i, e)),
                2 => prop_oneof![0u64..=50, 0u64..=5_000].prop_map(Op::Advance),
                1 => (any::<usize>(), end()).prop_map(|(i, e)| Op::Replay(i, e)),
                1 => (0u32..=12).prop_map(Op::Batch),
            ],
            1..150,
        ),
    ) {
        let config = Config::parse(setup.json().as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let t = config.rules[0].thresholds.clone();
        let mut b = Breaker::fresh(&t.window, 1);
        let mut now = START_MS;
        // Permits not yet used, and every permit ever issued (for replays).
        let mut held: Vec<(Permit, u64)> = Vec::new();
        let mut issued: Vec<Permit> = Vec::new();
        for op in ops {
            let before = b.clone();
            let reported = match op {
                Op::Admit => {
                    let s = b.admit(&t, now);
                    match s.output {
                        Admission::Allowed(p) => {
                            prop_assert!(
                                !(before.phase == Phase::Open && now < before.open_until_ms),
                                "admitted while open"
                            );
                            held.push((p, now));
                            issued.push(p);
                        }
                        Admission::Rejected { retry_after } => {
                            prop_assert!(before.phase != Phase::Closed, "closed rejected a call");
                            prop_assert!(!retry_after.is_zero());
                        }
                    }
                    s.transitions
                }
                Op::Finish(_, end) | Op::Replay(_, end) => {
                    let permit = match op {
                        Op::Replay(i, _) if !issued.is_empty() => {
                            let p = issued[i % issued.len()];
                            // If it was still outstanding, it is used now.
                            if let Some(pos) = held.iter().position(|(h, _)| *h == p) {
                                held.remove(pos);
                            }
                            p
                        }
                        Op::Finish(i, _) if !held.is_empty() => held.remove(i % held.len()).0,
                        _ => continue,
                    };
                    let call = match end {
                        End::Success => Some((false, false)),
                        End::Failure => Some((true, false)),
                        End::Slow => Some((false, true)),
                        End::SlowFailure => Some((true, true)),
                        // The client left: the lease is given back, nothing is recorded.
                        End::Gone => None,
                    };
                    match call {
                        Some((failed, slow)) => {
                            b.record(&t, permit, Call { failed, slow }, now).transitions
                        }
                        None => {
                            b.release(permit);
                            Vec::new()
                        }
                    }
                }
                Op::Advance(ms) => {
                    now += ms;
                    Vec::new()
                }
                Op::Batch(n) => b.record_successes(&t, b.epoch, n, now).transitions,
                Op::Conflicts(_) => continue,
            };
            check_chain(&reported, &before, &b)?;
            check_probe_budget(&held, &b, &t, now)?;
            // What gets stored is what gets read back.
            let decoded = Breaker::decode(&b.encode(), &t.window);
            prop_assert_eq!(decoded.as_ref(), Some(&b));
        }
    }
}

#[test]
fn the_transition_check_rejects_illegal_changes() {
    let spec = WindowSpec::Count { size: 4 };
    let closed = Breaker::fresh(&spec, 1);
    let mut half_open = closed.clone();
    half_open.phase = Phase::HalfOpen;
    half_open.epoch = 1;
    let jump = Transition {
        from: Phase::Closed,
        to: Phase::HalfOpen,
    };
    assert!(check_chain(&[jump], &closed, &half_open).is_err());
    assert!(check_chain(&[], &closed, &half_open).is_err());
}
