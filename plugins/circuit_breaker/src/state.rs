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

/// Calls, failures and slow calls currently in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub calls: u32,
    pub failed: u32,
    pub slow: u32,
}

impl Tally {
    fn rate(part: u32, calls: u32) -> f64 {
        if calls == 0 {
            0.0
        } else {
            f64::from(part) * 100.0 / f64::from(calls)
        }
    }

    pub fn failure_rate(&self) -> f64 {
        Tally::rate(self.failed, self.calls)
    }

    pub fn slow_rate(&self) -> f64 {
        Tally::rate(self.slow, self.calls)
    }

    /// Resilience4j's rule: either rate at or above its threshold trips.
    fn trips(&self, t: &Thresholds) -> bool {
        self.failure_rate() >= t.failure_rate_threshold
            || self.slow_rate() >= t.slow_call_rate_threshold
    }
}

/// One time bucket's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    pub index: u32,
    pub calls: u32,
    pub failed: u32,
    pub slow: u32,
}

/// The sliding window of a closed breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// A ring of the last `size` outcomes, two bits each.
    Count {
        size: u32,
        head: u32,
        len: u32,
        failed: Vec<u8>,
        slow: Vec<u8>,
    },
    /// Per-bucket counters; a bucket is reused once its index is a whole window old.
    Time {
        bucket_ms: u64,
        buckets: Vec<Bucket>,
    },
}

fn set_bit(bits: &mut [u8], i: u32, on: bool) {
    if let Some(b) = bits.get_mut((i / 8) as usize) {
        if on {
            *b |= 1 << (i % 8);
        } else {
            *b &= !(1 << (i % 8));
        }
    }
}

fn popcount(bits: &[u8]) -> u32 {
    bits.iter().map(|b| b.count_ones()).sum()
}

impl Window {
    pub fn fresh(spec: &WindowSpec) -> Window {
        match *spec {
            WindowSpec::Count { size } => {
                let bytes = size.div_ceil(8) as usize;
                Window::Count {
                    size,
                    head: 0,
                    len: 0,
                    failed: vec![0; bytes],
                    slow: vec![0; bytes],
                }
            }
            WindowSpec::Time {
                buckets,
                bucket_secs,
            } => Window::Time {
                bucket_ms: u64::from(bucket_secs) * 1000,
                buckets: vec![Bucket::default(); buckets as usize],
            },
        }
    }

    fn bucket_index(bucket_ms: u64, now_ms: u64) -> u32 {
        u32::try_from(now_ms / bucket_ms.max(1)).unwrap_or(u32::MAX)
    }

    pub fn record(&mut self, call: Call, now_ms: u64) {
        match self {
            Window::Count {
                size,
                head,
                len,
                failed,
                slow,
            } => {
                set_bit(failed, *head, call.failed);
                set_bit(slow, *head, call.slow);
                *head = (*head + 1) % (*size).max(1);
                *len = (*len + 1).min(*size);
            }
            Window::Time { bucket_ms, buckets } => {
                let index = Window::bucket_index(*bucket_ms, now_ms);
                let n = buckets.len().max(1);
                if let Some(b) = buckets.get_mut(index as usize % n) {
                    if b.index != index {
                        *b = Bucket {
                            index,
                            ..Bucket::default()
                        };
                    }
                    b.calls = b.calls.saturating_add(1);
                    b.failed = b.failed.saturating_add(u32::from(call.failed));
                    b.slow = b.slow.saturating_add(u32::from(call.slow));
                }
            }
        }
    }

    /// What the window holds at `now` (time-based windows drop buckets a window old).
    pub fn tally(&self, now_ms: u64) -> Tally {
        match self {
            Window::Count {
                len, failed, slow, ..
            } => Tally {
                calls: *len,
                failed: popcount(failed),
                slow: popcount(slow),
            },
            Window::Time { bucket_ms, buckets } => {
                let cur = Window::bucket_index(*bucket_ms, now_ms);
                let n = u32::try_from(buckets.len()).unwrap_or(u32::MAX);
                buckets
                    .iter()
                    // A bucket "from the future" (the clock stepped back) still counts.
                    .filter(|b| b.calls > 0 && cur.saturating_sub(b.index) < n)
                    .fold(Tally::default(), |t, b| Tally {
                        calls: t.calls.saturating_add(b.calls),
                        failed: t.failed.saturating_add(b.failed),
                        slow: t.slow.saturating_add(b.slow),
                    })
            }
        }
    }
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

const VERSION: u8 = 1;
const HEADER_LEN: usize = 33;
const PROBE_LEN: usize = 13;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head.to_vec())
    }
}

/// The fixed part of an encoded breaker, readable without decoding the window: enough to admit a
/// call in the closed state (the hot path) without copying anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub owner: u64,
    pub phase: Phase,
    pub epoch: u32,
    pub open_until_ms: u64,
}

impl Header {
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return None;
        }
        let phase = Phase::from_u8(r.u8()?)?;
        let owner = r.u64()?;
        let epoch = r.u32()?;
        let open_until_ms = r.u64()?;
        Some(Header {
            owner,
            phase,
            epoch,
            open_until_ms,
        })
    }

    /// The phase as the next request would find it: an open breaker whose wait is over is
    /// reported half-open (the next request moves it there). This is what the gauge shows.
    pub fn effective_phase(&self, now_ms: u64) -> Phase {
        if self.phase == Phase::Open && now_ms >= self.open_until_ms {
            Phase::HalfOpen
        } else {
            self.phase
        }
    }
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

    pub fn header(&self) -> Header {
        Header {
            owner: self.owner,
            phase: self.phase,
            epoch: self.epoch,
            open_until_ms: self.open_until_ms,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.probes.len() * PROBE_LEN + 64);
        v.push(VERSION);
        v.push(self.phase as u8);
        v.extend_from_slice(&self.owner.to_le_bytes());
        v.extend_from_slice(&self.epoch.to_le_bytes());
        v.extend_from_slice(&self.open_until_ms.to_le_bytes());
        v.extend_from_slice(&self.opens.to_le_bytes());
        v.extend_from_slice(&self.consecutive_failures.to_le_bytes());
        v.extend_from_slice(&self.next_token.to_le_bytes());
        v.push(u8::try_from(self.probes.len()).unwrap_or(u8::MAX));
        for p in self.probes.iter().take(usize::from(u8::MAX)) {
            let (tag, a, b) = match *p {
                Probe::Free => (0u8, 0u32, 0u64),
                Probe::Leased { token, deadline_ms } => (1, token, deadline_ms),
                Probe::Done(c) => (2, u32::from(c.failed) | (u32::from(c.slow) << 1), 0),
            };
            v.push(tag);
            v.extend_from_slice(&a.to_le_bytes());
            v.extend_from_slice(&b.to_le_bytes());
        }
        match &self.window {
            Window::Count {
                head,
                len,
                failed,
                slow,
                ..
            } => {
                v.extend_from_slice(&head.to_le_bytes());
                v.extend_from_slice(&len.to_le_bytes());
                v.extend_from_slice(failed);
                v.extend_from_slice(slow);
            }
            Window::Time { buckets, .. } => {
                for b in buckets {
                    for x in [b.index, b.calls, b.failed, b.slow] {
                        v.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
        }
        v
    }

    /// Decode a value written by [`Breaker::encode`] for a window of shape `spec`; `None` if it
    /// is not one (absent, another version, another shape).
    pub fn decode(bytes: &[u8], spec: &WindowSpec) -> Option<Breaker> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return None;
        }
        let phase = Phase::from_u8(r.u8()?)?;
        let owner = r.u64()?;
        let epoch = r.u32()?;
        let open_until_ms = r.u64()?;
        let opens = r.u16()?;
        let consecutive_failures = r.u32()?;
        let next_token = r.u32()?;
        let n = r.u8()?;
        let mut probes = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let tag = r.u8()?;
            let a = r.u32()?;
            let b = r.u64()?;
            probes.push(match tag {
                0 => Probe::Free,
                1 => Probe::Leased {
                    token: a,
                    deadline_ms: b,
                },
                2 => Probe::Done(Call {
                    failed: a & 1 != 0,
                    slow: a & 2 != 0,
                }),
                _ => return None,
            });
        }
        let window = match *spec {
            WindowSpec::Count { size } => {
                let bytes = size.div_ceil(8) as usize;
                let head = r.u32()?;
                let len = r.u32()?;
                if head >= size || len > size {
                    return None;
                }
                Window::Count {
                    size,
                    head,
                    len,
                    failed: r.bytes(bytes)?,
                    slow: r.bytes(bytes)?,
                }
            }
            WindowSpec::Time {
                buckets: count,
                bucket_secs,
            } => {
                let mut buckets = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    buckets.push(Bucket {
                        index: r.u32()?,
                        calls: r.u32()?,
                        failed: r.u32()?,
                        slow: r.u32()?,
                    });
                }
                Window::Time {
                    bucket_ms: u64::from(bucket_secs) * 1000,
                    buckets,
                }
            }
        };
        if !r.0.is_empty() {
            return None;
        }
        Some(Breaker {
            owner,
            phase,
            epoch,
            open_until_ms,
            opens,
            consecutive_failures,
            next_token,
            probes,
            window,
        })
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
                let index = Window::bucket_index(*bucket_ms, now_ms);
                let len = buckets.len().max(1);
                if let Some(b) = buckets.get_mut(index as usize % len) {
                    if b.index != index {
                        *b = Bucket {
                            index,
                            ..Bucket::default()
                        };
                    }
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
mod tests {
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

    fn open_breaker(t: &Thresholds, now: u64) -> Breaker {
        let mut b = Breaker::fresh(&t.window, 7);
        for _ in 0..4 {
            call(&mut b, t, now, FAIL);
        }
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
        for c in [OK, FAIL, OK] {
            call(&mut b, &t, 0, c);
        }
        assert_eq!(b.phase, Phase::Closed);
        call(&mut b, &t, 0, FAIL); // 2 of 4 = 50 %
        assert_eq!(b.phase, Phase::Open);
    }

    #[test]
    fn closed_stays_closed_below_the_threshold() {
        let t = count10();
        let mut b = Breaker::fresh(&t.window, 1);
        for c in [OK, OK, FAIL, OK, OK, OK, FAIL, OK, OK, OK] {
            call(&mut b, &t, 0, c);
        }
        assert_eq!(b.phase, Phase::Closed);
        assert_eq!(
            b.window.tally(0),
            Tally {
                calls: 10,
                failed: 2,
                slow: 0
            }
        );
    }

    #[test]
    fn a_count_window_forgets_calls_older_than_its_size() {
        let mut t = count10();
        t.minimum_number_of_calls = 10;
        let mut b = Breaker::fresh(&t.window, 1);
        // 4 failures, then 10 successes push them out.
        for _ in 0..4 {
            call(&mut b, &t, 0, FAIL);
        }
        for _ in 0..10 {
            call(&mut b, &t, 0, OK);
        }
        assert_eq!(b.window.tally(0).failed, 0);
        assert_eq!(b.window.tally(0).calls, 10);
        for _ in 0..4 {
            call(&mut b, &t, 0, FAIL);
        }
        assert_eq!(b.phase, Phase::Closed, "4 of the last 10 is 40 %");
        call(&mut b, &t, 0, FAIL);
        assert_eq!(b.phase, Phase::Open, "5 of the last 10 is 50 %");
    }

    #[test]
    fn a_time_window_forgets_calls_older_than_its_duration() {
        let t = thresholds(WindowSpec::Time {
            buckets: 10,
            bucket_secs: 1,
        });
        let mut b = Breaker::fresh(&t.window, 1);
        for _ in 0..3 {
            call(&mut b, &t, 1_000, FAIL);
        }
        assert_eq!(b.window.tally(1_000).calls, 3);
        // Ten seconds later those calls are out of the window: 3 more failures are not enough.
        assert_eq!(b.window.tally(11_000).calls, 0);
        for _ in 0..3 {
            call(&mut b, &t, 11_000, FAIL);
        }
        assert_eq!(b.phase, Phase::Closed);
        // Within the window they add up.
        call(&mut b, &t, 15_500, FAIL);
        assert_eq!(b.phase, Phase::Open);
    }

    #[test]
    fn a_time_window_reuses_a_stale_bucket_from_zero() {
        let t = thresholds(WindowSpec::Time {
            buckets: 2,
            bucket_secs: 1,
        });
        let mut w = Window::fresh(&t.window);
        w.record(FAIL, 0);
        w.record(OK, 1_000);
        assert_eq!(w.tally(1_500).calls, 2);
        w.record(OK, 2_000); // bucket 2 replaces bucket 0
        assert_eq!(
            w.tally(2_000),
            Tally {
                calls: 2,
                failed: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn slow_calls_open_at_the_slow_call_rate_threshold() {
        let mut t = count10();
        t.slow_call_rate_threshold = 75.0;
        let mut b = Breaker::fresh(&t.window, 1);
        for c in [SLOW, OK, SLOW] {
            call(&mut b, &t, 0, c);
        }
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
        assert_eq!(
            w.tally(0),
            Tally {
                calls: 1,
                failed: 1,
                slow: 1
            }
        );
    }

    #[test]
    fn consecutive_failures_open_before_the_minimum_and_a_success_resets_the_streak() {
        let mut t = count10();
        t.minimum_number_of_calls = 10;
        t.consecutive_failures = Some(3);
        let mut b = Breaker::fresh(&t.window, 1);
        for c in [FAIL, FAIL, OK, FAIL, FAIL] {
            call(&mut b, &t, 0, c);
        }
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
        let t = count10();
        let mut b = open_breaker(&t, 0);
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
        let t = count10();
        let mut b = open_breaker(&t, 0);
        let p1 = permit(&mut b, &t, 5_000);
        let p2 = permit(&mut b, &t, 5_000);
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
        let t = count10();
        let mut b = open_breaker(&t, 0);
        let p1 = permit(&mut b, &t, 5_000);
        let p2 = permit(&mut b, &t, 5_000);
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
        for _ in 0..4 {
            call(&mut b, &t, now, FAIL);
        }
        assert_eq!(b.open_until_ms - now, 5_000);
    }

    #[test]
    fn a_lost_probe_frees_its_slot_after_the_probe_timeout() {
        let t = count10();
        let mut b = open_breaker(&t, 0);
        let _lost1 = permit(&mut b, &t, 5_000);
        let _lost2 = permit(&mut b, &t, 5_000);
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
        let t = count10();
        let mut b = open_breaker(&t, 0);
        let late = permit(&mut b, &t, 5_000);
        let _other = permit(&mut b, &t, 5_000);
        let fresh = permit(&mut b, &t, 15_000); // reissues the late probe's slot
        assert_eq!(b.record(&t, late, FAIL, 15_001).output, Recorded::Stale);
        assert_eq!(b.record(&t, fresh, OK, 15_002).output, Recorded::Counted);
        assert_eq!(b.phase, Phase::HalfOpen);
    }

    #[test]
    fn a_released_probe_can_be_taken_again_at_once() {
        let t = count10();
        let mut b = open_breaker(&t, 0);
        let p1 = permit(&mut b, &t, 5_000);
        let _p2 = permit(&mut b, &t, 5_000);
        assert!(b.release(p1));
        assert!(!b.release(p1), "released once");
        assert!(matches!(b.admit(&t, 5_001).output, Admission::Allowed(_)));
    }

    #[test]
    fn outcomes_from_another_epoch_are_not_recorded() {
        let t = count10();
        let mut b = Breaker::fresh(&t.window, 1);
        let before = permit(&mut b, &t, 0);
        for _ in 0..4 {
            call(&mut b, &t, 0, FAIL);
        }
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
        for t in [
            count10(),
            thresholds(WindowSpec::Time {
                buckets: 10,
                bucket_secs: 1,
            }),
        ] {
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
        for _ in 0..3 {
            call(&mut b, &t, 0, FAIL);
        }
        let s = b.record_successes(&t, 0, 1, 0); // 3 of 4 failed
        assert_eq!(s.transitions[0].to, Phase::Open);
    }

    #[test]
    fn a_batch_from_another_epoch_or_state_is_stale() {
        let t = count10();
        let mut b = open_breaker(&t, 0);
        assert_eq!(b.record_successes(&t, 0, 3, 1).output, Recorded::Stale);
        assert!(!b.record_successes(&t, b.epoch, 3, 1).changed);
        let mut c = Breaker::fresh(&t.window, 1);
        assert_eq!(c.record_successes(&t, 0, 50, 1).output, Recorded::Counted);
        assert_eq!(c.window.tally(1).calls, 10, "capped at the window");
    }

    #[test]
    fn encoding_round_trips_in_every_phase() {
        for t in [
            count10(),
            thresholds(WindowSpec::Time {
                buckets: 5,
                bucket_secs: 2,
            }),
        ] {
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
}
