//! Shaping: a request that finds no token waits for its slot instead of being rejected.
//!
//! A limit with `shape` turns the token bucket into a leaky bucket with a queue (nginx
//! `limit_req` with `burst`/`delay`). The GCRA state already says when the next token comes: a
//! request that finds the bucket empty gets the **earliest time every limit of its rule admits
//! it**, its *departure*. If that is within each delaying limit's `max_delay` (and that limit's
//! queue on this worker has room), the slot is **reserved at once** in shared data, in the same
//! compare-and-swap that takes tokens today: the TATs are written as if the request had arrived
//! at its departure time. Later requests, on any worker, then queue behind it, so requests leave
//! at the configured rate across all workers and the departure time is fixed at decision time.
//! The worker's tick only releases what is due ([`Queue::due`]); nothing is decided then.
//!
//! - The departure time is exact: at `departure` a plain check ([`check_all`]) admits the request
//!   and writes exactly the TATs reserved ([`slot`] computes it that way).
//! - Requests never leave before their slot; they leave up to one tick late.
//! - Successive requests of one key get strictly later slots, and a worker releases due waiters
//!   in (departure, arrival) order, so waiting is FIFO per key on a worker.
//! - A limit without `shape` still rejects: a request waits only for shaped limits.
//!
//! ## A client that hangs up
//! Its waiter leaves the queue and its reservation is **given back when nobody reserved after
//! it**: if the slot still holds exactly the bytes it wrote, the previous bytes are written back
//! (compare-and-swap), as if the request had never come. Otherwise later requests already hold
//! later slots and keep them (moving them up would need every one of them to be re-timed, on
//! whichever worker holds it); the abandoned slot then stays an idle gap of one token's time: the
//! upstream sees one request fewer in that window. That never lets more through than the limit,
//! and it starves nobody: the gap is one slot per abandoned request, and the requests behind it
//! are not delayed by it (their times were fixed before it was abandoned).

use crate::bucket::{check_all, Limit, RuleOutcome, Tat};
use crate::config::Rule;
use crate::policy::claimed;
use palisade_core::config::{number_in, parse_duration, ConfigError, FieldPath};
use palisade_core::slots::SlotTable;
use palisade_core::store::{update, Step, UpdateError, DEFAULT_MAX_ATTEMPTS};
use palisade_core::{SharedStore, Timestamp};
use std::time::Duration;

/// How often a worker with shaped rules ticks to release due waiters: the release precision.
pub const TICK: Duration = Duration::from_millis(5);
pub const DEFAULT_MAX_QUEUED: u32 = 100;
pub const MAX_MAX_QUEUED: u32 = 10_000;
pub const MAX_MAX_DELAY: Duration = Duration::from_secs(60);

palisade_core::wire! {
    /// `limits[i].shape` as written.
    #[derive(Clone)]
    pub(crate) struct ShapeWire {
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        max_delay: String,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_MAX_QUEUED)))]
        max_queued: Option<u32>,
    }
}

/// A validated `shape` of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Longest this limit may delay a request; a longer wait is answered as limited.
    pub max_delay: Duration,
    /// Most requests this limit may hold waiting on each worker; more are answered as limited.
    pub max_queued: u32,
}

impl Shape {
    pub(crate) fn validate(wire: &ShapeWire, path: &FieldPath) -> Result<Shape, ConfigError> {
        let dp = path.field("max_delay");
        let max_delay = parse_duration(&wire.max_delay, &dp)?;
        if max_delay.is_zero() || max_delay > MAX_MAX_DELAY {
            return Err(dp.out_of_range(&wire.max_delay, "1ms", "60s"));
        }
        let max_queued = number_in(
            wire.max_queued,
            DEFAULT_MAX_QUEUED,
            &path.field("max_queued"),
            1,
            MAX_MAX_QUEUED,
        )?;
        Ok(Shape {
            max_delay,
            max_queued,
        })
    }
}

/// The shapes of a rule's limits, one per limit; empty when no limit shapes (the common case,
/// checked once per request).
pub(crate) fn validate_rule_shapes(
    shapes: &[Option<&ShapeWire>],
    path: &FieldPath,
    shadow: bool,
    global: bool,
) -> Result<Vec<Option<Shape>>, ConfigError> {
    if shapes.iter().all(Option::is_none) {
        return Ok(Vec::new());
    }
    shapes
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let at = path.index(i).field("shape");
            match w {
                None => Ok(None),
                Some(_) if shadow => Err(at.invalid(
                    "(shape)",
                    "a shadow rule never delays a request; remove `shape` or `shadow`",
                )),
                Some(_) if global => Err(at.invalid(
                    "(shape)",
                    "a `global` rule is decided by its rate limit service, which has no slots to wait for; shape a local rule",
                )),
                Some(w) => Shape::validate(w, &at).map(Some),
            }
        })
        .collect()
}

/// Why a request that found no token gets no slot either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A limit without `shape` has no token, or a shaped one would delay past its `max_delay`.
    TooLate,
    /// A limit that would delay it already holds `max_queued` waiters on this worker.
    QueueFull,
}

/// A slot: when the request may leave, the limit outcome then, and the state to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub departure: Timestamp,
    pub outcome: RuleOutcome,
    pub tats: Vec<Tat>,
    /// The limits that delay the request (whose next token comes after `now`).
    pub delaying: Vec<usize>,
}

/// The earliest time at which each limit admits one more request: `now` if it has a token.
fn earliest(limit: &Limit, tat: Tat, now: Timestamp) -> Option<Timestamp> {
    let now_s = limit.scaled(now);
    // Admitted at time t (scaled t_s) iff max(tat, t_s) + cost - t_s <= tolerance, that is
    // t_s >= tat + cost - tolerance (for t_s <= tat; later t_s only add refill).
    let need = tat.max(now_s).saturating_add(limit.cost());
    let need = need.saturating_sub(limit.tolerance());
    if need <= now_s {
        return Some(now);
    }
    let nanos = need.div_ceil(u128::from(limit.refill));
    u64::try_from(nanos).ok().map(Timestamp::from_nanos)
}

/// The slot of a request that found no token at `now`: the earliest time every limit admits it,
/// if each shaped limit's delay is within its `max_delay` and `room(limit)` says that limit's
/// queue can take one more. `shapes` has one entry per limit.
pub fn slot(
    limits: &[Limit],
    shapes: &[Option<Shape>],
    tats: &[Tat],
    now: Timestamp,
    room: &dyn Fn(usize) -> bool,
) -> Result<Slot, Refused> {
    let mut departure = now;
    let mut delaying = Vec::new();
    for (i, limit) in limits.iter().enumerate() {
        let tat = tats.get(i).copied().unwrap_or(0);
        let at = earliest(limit, tat, now).ok_or(Refused::TooLate)?;
        if at <= now {
            continue;
        }
        match shapes.get(i).copied().flatten() {
            Some(shape) if at.saturating_since(now) <= shape.max_delay => delaying.push(i),
            _ => return Err(Refused::TooLate),
        }
        departure = departure.max(at);
    }
    if delaying.iter().any(|i| !room(*i)) {
        return Err(Refused::QueueFull);
    }
    // At `departure` a plain check admits it: that check's state is the reservation.
    match check_all(limits, tats, departure) {
        (outcome, Some(tats)) if !delaying.is_empty() => Ok(Slot {
            departure,
            outcome,
            tats,
            delaying,
        }),
        _ => Err(Refused::TooLate),
    }
}

/// A slot reserved in shared data, and how to give it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub rule: usize,
    pub departure: Timestamp,
    /// The limits (indices into the rule's limits) that delay the request.
    pub delaying: Vec<usize>,
    key: String,
    /// The stored value before the reservation, and the one it wrote.
    previous: Vec<u8>,
    written: Vec<u8>,
}

/// What shaping did to one request, part of its [`crate::policy::Verdict`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shaping {
    /// Slots reserved for this request, one per shaping rule that delays it.
    pub reservations: Vec<Reservation>,
    /// Rules that limited the request because their queue on this worker was full.
    pub queue_full: Vec<usize>,
}

impl Shaping {
    /// When the request may leave: the latest of its slots (`None`: it need not wait).
    pub fn departure(&self) -> Option<Timestamp> {
        self.reservations.iter().map(|r| r.departure).max()
    }
}

/// `take` for a rule with shaped limits: take a token as today, or else reserve a slot (recorded
/// in `shaping`); a request that gets neither is denied with today's outcome.
#[allow(clippy::too_many_arguments)]
pub(crate) fn take(
    rule: &Rule,
    index: usize,
    table: &SlotTable,
    key: &str,
    store: &dyn SharedStore,
    now: Timestamp,
    room: &dyn Fn(usize, usize) -> bool,
    shaping: &mut Option<Box<Shaping>>,
) -> Result<(RuleOutcome, bool), UpdateError> {
    let slot_of = table.slot(key);
    let room = |limit: usize| room(index, limit);
    let done = update(store, &slot_of.store_key, DEFAULT_MAX_ATTEMPTS, |current| {
        let (mut state, collision) = claimed(rule, slot_of.hash, current, now);
        let (outcome, new_tats) = check_all(&rule.limits, &state.tats, now);
        if let Some(tats) = new_tats {
            state.tats = tats;
            return Step::Write(state.encode(), (outcome, collision, None));
        }
        match slot(&rule.limits, &rule.shapes, &state.tats, now, &room) {
            Ok(s) => {
                state.tats = s.tats;
                let written = state.encode();
                let reservation = Reservation {
                    rule: index,
                    departure: s.departure,
                    delaying: s.delaying,
                    key: slot_of.store_key.clone(),
                    previous: current.to_vec(),
                    written: written.clone(),
                };
                Step::Write(
                    written,
                    (s.outcome, collision, Some(Ok(Box::new(reservation)))),
                )
            }
            Err(Refused::QueueFull) => {
                Step::Keep((outcome, collision, Some(Err(Refused::QueueFull))))
            }
            Err(Refused::TooLate) => Step::Keep((outcome, collision, None)),
        }
    })?;
    let (outcome, collision, shaped) = done.output;
    match shaped {
        Some(Ok(r)) => shaping.get_or_insert_default().reservations.push(*r),
        Some(Err(_)) => shaping.get_or_insert_default().queue_full.push(index),
        None => {}
    }
    Ok((outcome, collision))
}

/// Give a reservation back if nobody reserved after it (the slot still holds what it wrote).
/// True if given back.
pub fn give_back(store: &dyn SharedStore, r: &Reservation) -> Result<bool, UpdateError> {
    update(store, &r.key, DEFAULT_MAX_ATTEMPTS, |current| {
        if current == r.written.as_slice() {
            Step::Write(r.previous.clone(), true)
        } else {
            Step::Keep(false)
        }
    })
    .map(|done| done.output)
}

/// One request waiting on this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub context: u32,
    pub arrived: Timestamp,
    pub departure: Timestamp,
    seq: u64,
    pub shaping: Shaping,
}

/// The requests waiting on this worker, in departure order, with how many each shaped limit
/// holds (for `max_queued`).
#[derive(Debug, Clone, Default)]
pub struct Queue {
    waiters: Vec<Waiter>,
    next_seq: u64,
    /// Per rule, per limit: `(waiting now, max_queued)`; empty for a rule that does not shape.
    counts: Vec<Vec<(u32, u32)>>,
}

impl Queue {
    /// A queue for rules with these shapes (one list per rule, as in [`Rule::shapes`]).
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a [Option<Shape>]>) -> Self {
        let counts = rules
            .into_iter()
            .map(|shapes| {
                shapes
                    .iter()
                    .map(|s| (0, s.map_or(0, |s| s.max_queued)))
                    .collect()
            })
            .collect();
        Queue {
            waiters: Vec::new(),
            next_seq: 0,
            counts,
        }
    }

    /// Can limit `limit` of rule `rule` hold one more waiter on this worker?
    pub fn has_room(&self, rule: usize, limit: usize) -> bool {
        self.counts
            .get(rule)
            .and_then(|c| c.get(limit))
            .is_some_and(|(n, max)| n < max)
    }

    fn adjust(&mut self, shaping: &Shaping, up: bool) {
        for r in &shaping.reservations {
            for l in &r.delaying {
                if let Some((n, _)) = self.counts.get_mut(r.rule).and_then(|c| c.get_mut(*l)) {
                    *n = if up {
                        n.saturating_add(1)
                    } else {
                        n.saturating_sub(1)
                    };
                }
            }
        }
    }

    /// Queue a stream until its departure (the latest of its reservations).
    pub fn push(&mut self, context: u32, arrived: Timestamp, shaping: Shaping) {
        let departure = shaping.departure().unwrap_or(arrived);
        self.adjust(&shaping, true);
        let seq = self.next_seq;
        self.next_seq += 1;
        let at = self
            .waiters
            .partition_point(|w| (w.departure, w.seq) <= (departure, seq));
        self.waiters.insert(
            at,
            Waiter {
                context,
                arrived,
                departure,
                seq,
                shaping,
            },
        );
    }

    /// The waiters due at `now`, in release order (departure, then arrival), out of the queue.
    pub fn due(&mut self, now: Timestamp) -> Vec<Waiter> {
        let n = self.waiters.partition_point(|w| w.departure <= now);
        let due: Vec<Waiter> = self.waiters.drain(..n).collect();
        for w in &due {
            self.adjust(&w.shaping, false);
        }
        due
    }

    /// Take a stream out of the queue (its client went away).
    pub fn remove(&mut self, context: u32) -> Option<Waiter> {
        let i = self.waiters.iter().position(|w| w.context == context)?;
        let w = self.waiters.remove(i);
        self.adjust(&w.shaping, false);
        Some(w)
    }

    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    pub fn contains(&self, context: u32) -> bool {
        self.waiters.iter().any(|w| w.context == context)
    }
}

/// What shaping does, per shaping rule; each is a per-rule metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeEvent {
    /// The request got a later slot and waits for it.
    Delayed,
    /// A delayed request left at its slot.
    Released,
    /// A delayed request's client went away before its slot.
    Abandoned,
    /// A slot was given back (the abandoned or refused request was the last one reserved).
    SlotReturned,
    /// Limited because the worker's queue for a delaying limit was full.
    QueueFull,
}

impl palisade_core::plugin::MetricEvent for ShapeEvent {
    const NAMES: &'static [&'static str] = &[
        "delayed",
        "released",
        "abandoned",
        "slots_returned",
        "queue_full",
    ];

    fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests;
