//! The state machine of one breaker, pure and time-injected, and its compact encoding.
//!
//! ## Why everything lives in one value
//! The failure rate is a property of all traffic, not of one worker's share, so the sliding window
//! is shared like the state. Keeping state, window and half-open probe leases in **one** shared-data
//! value means an admission or a call outcome is one read-modify-CAS, and a transition (the window
//! crossing a threshold) happens in the same atomic step as the outcome that caused it — two
//! workers can never both open the breaker, or both take the last probe.
//!
//! ## Encoding (little endian)
//! ```text
//! 0      version (1)
//! 1      phase: 0 closed, 1 open, 2 half-open
//! 2..10  owner: hash of the breaker key that owns this slot
//! 10..14 epoch: bumped on every transition; a call admitted in another epoch is not recorded
//! 14..22 open_until (ms since the epoch)
//! 22..24 opens: consecutive openings without a close (the backoff exponent)
//! 24..28 consecutive failures (closed state)
//! 28..32 next probe token
//! 32     probe count P (0 unless half-open), then P × 13 bytes: tag, token u32, deadline u64
//! ...    window: count-based: head u32, len u32, failure bits, slow bits (⌈N/8⌉ bytes each);
//!        time-based: B × (bucket index u32, calls u32, failures u32, slow u32)
//! ```
//! A count window of 100 calls costs 67 bytes in all; a 60-bucket time window about 1 KiB.
//! A value that does not decode (another module version, another window shape) reads as a fresh
//! closed breaker: losing a window is harmless, wedging is not.
//!
//! ## Half-open probes are leases
//! Each of the `permitted_calls_in_half_open` probe slots is free, leased (with a token and a
//! deadline) or done (with its outcome). A probe's outcome is recorded only against the lease
//! whose token it carries. A lease whose deadline passed — the stream was lost, or the worker's VM
//! died before it could report — is free again, so a lost probe delays recovery by at most
//! `half_open_probe_timeout` but can never wedge the breaker. A late outcome for a lease that was
//! reissued carries a stale token and is dropped.
//!
//! The parts live in their own files: [`window`] (the sliding windows and their tallies),
//! [`codec`] (the byte encoding above, and the header read on the hot path), and this file, the
//! transitions.

mod codec;
mod window;

pub use codec::Header;
pub use window::{Bucket, Tally, Window};

use crate::config::{Thresholds, WindowSpec};
use std::time::Duration;

/// The state of a breaker. The discriminants are the values of the `state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl Phase {
    fn from_u8(v: u8) -> Option<Phase> {
        match v {
            0 => Some(Phase::Closed),
            1 => Some(Phase::Open),
            2 => Some(Phase::HalfOpen),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half_open",
        }
    }
}

/// The outcome of one finished call, as recorded in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Call {
    pub failed: bool,
    pub slow: bool,
}

/// One half-open probe slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Free,
    Leased { token: u32, deadline_ms: u64 },
    Done(Call),
}

/// A call admitted by [`Breaker::admit`]; its outcome is recorded against it exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    pub epoch: u32,
    /// The probe lease token, for calls admitted in half-open.
    pub probe: Option<u32>,
}

/// What [`Breaker::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed(Permit),
    Rejected { retry_after: Duration },
}

/// A state change, for the transition counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
}

/// The result of one step of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stepped<T> {
    pub output: T,
    /// The breaker changed and must be written back.
    pub changed: bool,
    pub transitions: Vec<Transition>,
    /// Expired probe leases reclaimed in this step (lost probes).
    pub expired_probes: u32,
}

/// What became of a recorded outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// It went into the window or its probe slot.
    Counted,
    /// It belonged to another epoch, or to a probe lease that expired and was reissued.
    Stale,
}

/// One breaker: its phase, window and probe leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    pub owner: u64,
    pub phase: Phase,
    pub epoch: u32,
    pub open_until_ms: u64,
    pub opens: u16,
    pub consecutive_failures: u32,
    pub next_token: u32,
    pub probes: Vec<Probe>,
    pub window: Window,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Breaker {
    pub fn fresh(spec: &WindowSpec, owner: u64) -> Breaker {
        Breaker {
            owner,
            phase: Phase::Closed,
            epoch: 0,
            open_until_ms: 0,
            opens: 0,
            consecutive_failures: 0,
            next_token: 1,
            probes: Vec::new(),
            window: Window::fresh(spec),
        }
    }

    fn stepped<T>(&self, output: T, changed: bool) -> Stepped<T> {
        Stepped {
            output,
            changed,
            transitions: Vec::new(),
            expired_probes: 0,
        }
    }

    fn enter(&mut self, to: Phase, t: &Thresholds, now_ms: u64, out: &mut Vec<Transition>) {
        out.push(Transition {
            from: self.phase,
            to,
        });
        self.phase = to;
        self.epoch = self.epoch.wrapping_add(1);
        self.consecutive_failures = 0;
        self.probes.clear();
        match to {
            Phase::Open => {
                self.opens = self.opens.saturating_add(1);
                self.open_until_ms = now_ms.saturating_add(ms(open_duration(t, self.opens)));
                self.window = Window::fresh(&t.window);
            }
            Phase::HalfOpen => {
                self.probes = vec![Probe::Free; t.permitted_calls_in_half_open as usize];
            }
            Phase::Closed => {
                self.opens = 0;
                self.open_until_ms = 0;
                self.window = Window::fresh(&t.window);
            }
        }
    }

    /// May a call go through at `now`? Moves open → half-open when the wait is over, and takes a
    /// probe lease in half-open.
    pub fn admit(&mut self, t: &Thresholds, now_ms: u64) -> Stepped<Admission> {
        match self.phase {
            Phase::Closed => self.stepped(
                Admission::Allowed(Permit {
                    epoch: self.epoch,
                    probe: None,
                }),
                false,
            ),
            Phase::Open if now_ms < self.open_until_ms => self.stepped(
                Admission::Rejected {
                    retry_after: Duration::from_millis(self.open_until_ms - now_ms),
                },
                false,
            ),
            Phase::Open => {
                let mut transitions = Vec::new();
                self.enter(Phase::HalfOpen, t, now_ms, &mut transitions);
                let mut s = self.lease_probe(t, now_ms);
                s.changed = true;
                s.transitions = transitions;
                s
            }
            Phase::HalfOpen => self.lease_probe(t, now_ms),
        }
    }

    fn lease_probe(&mut self, t: &Thresholds, now_ms: u64) -> Stepped<Admission> {
        let mut expired = 0;
        let slot = self.probes.iter().position(|p| match p {
            Probe::Free => true,
            Probe::Leased { deadline_ms, .. } => *deadline_ms <= now_ms,
            Probe::Done(_) => false,
        });
        let Some(i) = slot else {
            // Every probe is out: come back when the earliest lease could expire, or in a second.
            let next = self
                .probes
                .iter()
                .filter_map(|p| match p {
                    Probe::Leased { deadline_ms, .. } => Some(deadline_ms.saturating_sub(now_ms)),
                    _ => None,
                })
                .min()
                .unwrap_or(1000)
                .clamp(1, 1000);
            return self.stepped(
                Admission::Rejected {
                    retry_after: Duration::from_millis(next),
                },
                false,
            );
        };
        if matches!(self.probes.get(i), Some(Probe::Leased { .. })) {
            expired = 1;
        }
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(1);
        if let Some(p) = self.probes.get_mut(i) {
            *p = Probe::Leased {
                token,
                deadline_ms: now_ms.saturating_add(ms(t.half_open_probe_timeout)),
            };
        }
        let mut s = self.stepped(
            Admission::Allowed(Permit {
                epoch: self.epoch,
                probe: Some(token),
            }),
            true,
        );
        s.expired_probes = expired;
        s
    }

    /// Record the outcome of a call admitted with `permit`, and make any transition it causes.
    pub fn record(
        &mut self,
        t: &Thresholds,
        permit: Permit,
        call: Call,
        now_ms: u64,
    ) -> Stepped<Recorded> {
        if permit.epoch != self.epoch {
            return self.stepped(Recorded::Stale, false);
        }
        let mut transitions = Vec::new();
        match (self.phase, permit.probe) {
            (Phase::Closed, None) => {
                self.window.record(call, now_ms);
                self.consecutive_failures = if call.failed {
                    self.consecutive_failures.saturating_add(1)
                } else {
                    0
                };
                let tally = self.window.tally(now_ms);
                let by_rate = tally.calls >= t.minimum_number_of_calls && tally.trips(t);
                let by_streak = t
                    .consecutive_failures
                    .is_some_and(|n| self.consecutive_failures >= n);
                if by_rate || by_streak {
                    self.enter(Phase::Open, t, now_ms, &mut transitions);
                }
            }
            (Phase::HalfOpen, Some(token)) => {
                let slot = self
                    .probes
                    .iter_mut()
                    .find(|p| matches!(p, Probe::Leased { token: held, .. } if *held == token));
                let Some(slot) = slot else {
                    return self.stepped(Recorded::Stale, false);
                };
                *slot = Probe::Done(call);
                let done: Vec<Call> = self
                    .probes
                    .iter()
                    .filter_map(|p| match p {
                        Probe::Done(c) => Some(*c),
                        _ => None,
                    })
                    .collect();
                if done.len() == self.probes.len() {
                    let tally = done.iter().fold(Tally::default(), |t, c| Tally {
                        calls: t.calls + 1,
                        failed: t.failed + u32::from(c.failed),
                        slow: t.slow + u32::from(c.slow),
                    });
                    let to = if tally.trips(t) {
                        Phase::Open
                    } else {
                        Phase::Closed
                    };
                    self.enter(to, t, now_ms, &mut transitions);
                }
            }
            _ => return self.stepped(Recorded::Stale, false),
        }
        let mut s = self.stepped(Recorded::Counted, true);
        s.transitions = transitions;
        s
    }

    /// Record `n` clean successes (neither failed nor slow) admitted in the closed state of
    /// `epoch`, as one step: the flush of a worker's batch (see `success_batching`). A success can
    /// still trip the breaker, by bringing the window up to `minimum_number_of_calls`.
    pub fn record_successes(
        &mut self,
        t: &Thresholds,
        epoch: u32,
        n: u32,
        now_ms: u64,
    ) -> Stepped<Recorded> {
        if n == 0 {
            return self.stepped(Recorded::Counted, false);
        }
        if epoch != self.epoch || self.phase != Phase::Closed {
            return self.stepped(Recorded::Stale, false);
        }
        // Older outcomes leave a count window anyway: more than its size is the same as its size.
        let cap = match t.window {
            WindowSpec::Count { size } => n.min(size),
            WindowSpec::Time { .. } => n,
        };
        match &mut self.window {
            Window::Time { bucket_ms, buckets } => {
                if let Some(b) = Window::bucket_at(*bucket_ms, buckets, now_ms) {
                    b.calls = b.calls.saturating_add(cap);
                }
            }
            Window::Count { .. } => {
                for _ in 0..cap {
                    self.window.record(Call::default(), now_ms);
                }
            }
        }
        self.consecutive_failures = 0;
        let mut transitions = Vec::new();
        let tally = self.window.tally(now_ms);
        if tally.calls >= t.minimum_number_of_calls && tally.trips(t) {
            self.enter(Phase::Open, t, now_ms, &mut transitions);
        }
        let mut s = self.stepped(Recorded::Counted, true);
        s.transitions = transitions;
        s
    }

    /// Give back a probe lease whose call will not be judged (the client went away first).
    pub fn release(&mut self, permit: Permit) -> bool {
        let (Some(token), true) = (permit.probe, permit.epoch == self.epoch) else {
            return false;
        };
        match self
            .probes
            .iter_mut()
            .find(|p| matches!(p, Probe::Leased { token: held, .. } if *held == token))
        {
            Some(p) => {
                *p = Probe::Free;
                true
            }
            None => false,
        }
    }
}

/// How long the breaker stays open on its `opens`-th consecutive opening.
pub fn open_duration(t: &Thresholds, opens: u16) -> Duration {
    let base = t.wait_duration_in_open;
    match t.backoff {
        None => base,
        Some(b) => {
            let exp = i32::from(opens.saturating_sub(1)).min(64);
            let secs = base.as_secs_f64() * b.multiplier.powi(exp);
            if secs.is_finite() && secs < b.max_wait.as_secs_f64() {
                Duration::from_secs_f64(secs)
            } else {
                b.max_wait
            }
        }
    }
}

#[cfg(test)]
mod tests;
