//! Permit accounting in shared data: worker slots with heartbeats, and per-partition in-flight
//! counts kept per worker slot.
//!
//! ## Why per-worker entries inside one key per partition
//! A partition's limit must hold across every worker, so taking a permit is one compare-and-swap
//! on one key: read the partition, check the total, write it back incremented. A plain counter
//! would do that, but it cannot survive a worker VM that dies while holding permits: nobody would
//! ever decrement its share, and the partition would stay full forever. So the partition value is
//! a short list of `(worker slot, generation, count)` entries — one per worker holding permits —
//! and the total counts only entries whose worker is alive.
//!
//! ## Worker slots
//! Each worker VM (more exactly: each root context, one per worker per filter config) claims a
//! slot in the registry key with CAS the first time it needs one (never in `on_configure`, which
//! also runs in Envoy's throwaway canary VM). A slot record is `(generation, heartbeat)`. The
//! worker refreshes its heartbeat on tick; a slot whose heartbeat is older than `worker_timeout`
//! is dead. A dead slot can be claimed again: the claimer bumps its generation, so entries the
//! dead worker left behind (older generation) stop counting at once and are pruned by the next
//! write of that partition. A live worker that finds its slot's generation changed (it stalled
//! past the timeout and was declared dead) claims a new slot; releases for permits taken under
//! the old generation are then no-ops, never double decrements.
//!
//! ## Bounded keys
//! One registry key per scope, holding at most `max_workers` records (12 bytes each), plus one key
//! per partition slot (rule × `max_partitions`), each holding at most one entry per live worker.
//! Nothing else is ever written.
//!
//! ## Each worker's view
//! Reading the registry on every request would cost a hostcall, so each worker keeps a
//! [`LiveView`] refreshed at each heartbeat. A view can be stale in two ways, both handled
//! conservatively (never over-admitting because of staleness alone): an entry with a *newer*
//! generation than the view knows (a slot claimed since) counts; a slot the view has never seen
//! counts.

use palisade_core::store::{update, Step, UpdateError, Updated};
use palisade_core::{SharedStore, Timestamp};
use std::time::Duration;

/// A worker's identity in the registry: its slot and the generation it claimed it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerId {
    pub slot: u16,
    pub generation: u32,
}

/// One registry record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct SlotRecord {
    generation: u32,
    /// Milliseconds since the epoch; 0 means "released".
    heartbeat_ms: u64,
}

const SLOT_RECORD_LEN: usize = 12;
const ENTRY_LEN: usize = 10;

/// A fixed-size little-endian record of a stored list: the registry is a list of slots, a
/// partition a list of entries.
trait Record: Sized {
    const LEN: usize;
    /// The record in `bytes`, exactly [`Record::LEN`] of them.
    fn read(bytes: &[u8]) -> Self;
    fn write(&self, out: &mut Vec<u8>);
}

/// A stored list of records, read and written whole: the [`Registry`], a [`Partition`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Stored<R> {
    records: Vec<R>,
}

impl<R: Record> Stored<R> {
    /// Every whole record in `bytes` (a trailing partial one is ignored).
    fn decode(bytes: &[u8]) -> Self {
        Stored {
            records: bytes.chunks_exact(R::LEN).map(R::read).collect(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.records.len() * R::LEN);
        for r in &self.records {
            r.write(&mut out);
        }
        out
    }
}

impl Record for SlotRecord {
    const LEN: usize = SLOT_RECORD_LEN;

    fn read(c: &[u8]) -> Self {
        let mut gen = [0u8; 4];
        let mut hb = [0u8; 8];
        gen.copy_from_slice(&c[..4]);
        hb.copy_from_slice(&c[4..]);
        SlotRecord {
            generation: u32::from_le_bytes(gen),
            heartbeat_ms: u64::from_le_bytes(hb),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.heartbeat_ms.to_le_bytes());
    }
}

/// The registry: one record per worker slot, by slot index.
type Registry = Stored<SlotRecord>;

impl Registry {
    fn view(&self, me: Option<WorkerId>, now: Timestamp, timeout: Duration) -> LiveView {
        let slots = self
            .records
            .iter()
            .map(|s| (s.generation, is_live(s, now, timeout)))
            .collect();
        LiveView { slots, me }
    }
}

fn timeout_ms(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
}

fn is_live(record: &SlotRecord, now: Timestamp, timeout: Duration) -> bool {
    // A heartbeat in the future (clock stepped back) counts as fresh.
    record.heartbeat_ms != 0
        && now.as_millis().saturating_sub(record.heartbeat_ms) < timeout_ms(timeout)
}

/// Which workers are alive, as this worker last saw the registry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveView {
    /// Per slot: `(generation, live)`.
    slots: Vec<(u32, bool)>,
    me: Option<WorkerId>,
}

/// Whether generation `a` was claimed after `b` (wrapping comparison).
fn newer(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < u32::MAX / 2
}

impl LiveView {
    /// Whether an entry held by `holder` counts against the limit.
    pub fn counts(&self, holder: WorkerId) -> bool {
        if self.me == Some(holder) {
            return true;
        }
        match self.slots.get(usize::from(holder.slot)) {
            // A slot claimed after our last look at the registry.
            None => true,
            Some(&(generation, live)) => {
                (generation == holder.generation && live) || newer(holder.generation, generation)
            }
        }
    }
}

/// Why a worker has no slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimError {
    /// `max_workers` slots are all held by live workers.
    NoFreeSlot,
    Store(UpdateError),
}

/// Claim the first free (never used, released, or dead) slot below `max_workers`.
pub fn claim(
    store: &dyn SharedStore,
    key: &str,
    max_workers: u16,
    now: Timestamp,
    timeout: Duration,
    attempts: u32,
) -> Result<(WorkerId, LiveView), ClaimError> {
    let done = update(store, key, attempts, |bytes| {
        let mut reg = Registry::decode(bytes);
        let free = (0..usize::from(max_workers))
            .find(|&i| reg.records.get(i).is_none_or(|s| !is_live(s, now, timeout)));
        let Some(i) = free else {
            return Step::Keep(None);
        };
        if reg.records.len() <= i {
            reg.records.resize(i + 1, SlotRecord::default());
        }
        let generation = reg.records[i].generation.wrapping_add(1).max(1);
        reg.records[i] = SlotRecord {
            generation,
            heartbeat_ms: now.as_millis().max(1),
        };
        let slot = u16::try_from(i).unwrap_or(u16::MAX);
        let me = WorkerId { slot, generation };
        let view = reg.view(Some(me), now, timeout);
        Step::Write(reg.encode(), Some((me, view)))
    })
    .map_err(ClaimError::Store)?;
    done.output.ok_or(ClaimError::NoFreeSlot)
}

/// The outcome of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heartbeat {
    /// Still ours; here is the fresh view.
    Alive(LiveView),
    /// Another worker claimed our slot (we were declared dead): claim a new one.
    Lost,
}

/// Refresh `me`'s heartbeat and read a fresh view of the registry.
pub fn heartbeat(
    store: &dyn SharedStore,
    key: &str,
    me: WorkerId,
    now: Timestamp,
    timeout: Duration,
    attempts: u32,
) -> Result<Heartbeat, UpdateError> {
    let done = update(store, key, attempts, |bytes| {
        let mut reg = Registry::decode(bytes);
        match reg.records.get_mut(usize::from(me.slot)) {
            Some(rec) if rec.generation == me.generation => {
                rec.heartbeat_ms = now.as_millis().max(1);
                let view = reg.view(Some(me), now, timeout);
                Step::Write(reg.encode(), Heartbeat::Alive(view))
            }
            _ => Step::Keep(Heartbeat::Lost),
        }
    })?;
    Ok(done.output)
}

/// Give a slot back (graceful shutdown), so it can be claimed at once.
pub fn release_slot(
    store: &dyn SharedStore,
    key: &str,
    me: WorkerId,
    attempts: u32,
) -> Result<(), UpdateError> {
    update(store, key, attempts, |bytes| {
        let mut reg = Registry::decode(bytes);
        match reg.records.get_mut(usize::from(me.slot)) {
            Some(rec) if rec.generation == me.generation => {
                rec.heartbeat_ms = 0;
                Step::Write(reg.encode(), ())
            }
            _ => Step::Keep(()),
        }
    })?;
    Ok(())
}

/// One worker's permits in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    holder: WorkerId,
    count: u32,
}

impl Record for Entry {
    const LEN: usize = ENTRY_LEN;

    fn read(c: &[u8]) -> Self {
        Entry {
            holder: WorkerId {
                slot: u16::from_le_bytes([c[0], c[1]]),
                generation: u32::from_le_bytes([c[2], c[3], c[4], c[5]]),
            },
            count: u32::from_le_bytes([c[6], c[7], c[8], c[9]]),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.holder.slot.to_le_bytes());
        out.extend_from_slice(&self.holder.generation.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
    }
}

/// A partition's value: who holds how many permits, one entry per holder.
type Partition = Stored<Entry>;

impl Partition {
    fn total(&self, view: &LiveView) -> u64 {
        self.records
            .iter()
            .filter(|e| view.counts(e.holder))
            .map(|e| u64::from(e.count))
            .sum()
    }

    /// Drop empty entries and entries of dead workers.
    fn prune(&mut self, view: &LiveView) {
        self.records
            .retain(|e| e.count > 0 && view.counts(e.holder));
    }
}

/// The result of asking for a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// Taken; `in_flight` includes it.
    Granted { in_flight: u64 },
    /// The partition already has `in_flight` ≥ the limit.
    Full { in_flight: u64 },
}

/// Take one permit in partition `key` for `me` if fewer than `max` are in flight.
pub fn try_acquire(
    store: &dyn SharedStore,
    key: &str,
    me: WorkerId,
    view: &LiveView,
    max: u32,
    attempts: u32,
) -> Result<Updated<Acquire>, UpdateError> {
    update(store, key, attempts, |bytes| {
        let mut p = Partition::decode(bytes);
        let in_flight = p.total(view);
        if in_flight >= u64::from(max) {
            return Step::Keep(Acquire::Full { in_flight });
        }
        p.prune(view);
        match p.records.iter_mut().find(|e| e.holder == me) {
            Some(e) => e.count = e.count.saturating_add(1),
            None => p.records.push(Entry {
                holder: me,
                count: 1,
            }),
        }
        Step::Write(
            p.encode(),
            Acquire::Granted {
                in_flight: in_flight + 1,
            },
        )
    })
}

/// The result of giving a permit back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Returned; `in_flight` is what remains (as this worker counts it).
    Released { in_flight: u64 },
    /// `holder` has no permit recorded here (its slot was reclaimed after it was declared dead):
    /// nothing to return.
    NotHeld,
}

/// Give back one permit of `holder` in partition `key`.
pub fn release(
    store: &dyn SharedStore,
    key: &str,
    holder: WorkerId,
    view: &LiveView,
    attempts: u32,
) -> Result<Updated<Release>, UpdateError> {
    update(store, key, attempts, |bytes| {
        let mut p = Partition::decode(bytes);
        let Some(e) = p
            .records
            .iter_mut()
            .find(|e| e.holder == holder && e.count > 0)
        else {
            return Step::Keep(Release::NotHeld);
        };
        e.count -= 1;
        p.prune(view);
        let in_flight = p.total(view);
        Step::Write(p.encode(), Release::Released { in_flight })
    })
}

/// The in-flight total of partition `key` as `view` counts it (for gauges and tests).
pub fn in_flight(
    store: &dyn SharedStore,
    key: &str,
    view: &LiveView,
) -> Result<u64, palisade_core::StoreError> {
    let v = store.get(key)?;
    Ok(Partition::decode(&v.value).total(view))
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::testing::FakeStore;

    const REG: &str = "workers";
    const P: &str = "p/a/1/0";
    const T: Duration = Duration::from_secs(10);

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_secs(1_000 + secs)
    }

    fn worker(store: &FakeStore, now: Timestamp) -> (WorkerId, LiveView) {
        claim(store, REG, 8, now, T, 8).unwrap()
    }

    fn granted(r: Result<Updated<Acquire>, UpdateError>) -> bool {
        matches!(r.unwrap().output, Acquire::Granted { .. })
    }

    #[test]
    fn workers_claim_distinct_slots() {
        let store = FakeStore::new();
        let (a, _) = worker(&store, at(0));
        let (b, _) = worker(&store, at(0));
        assert_ne!(a.slot, b.slot);
        assert_eq!((a.slot, b.slot), (0, 1));
    }

    #[test]
    fn no_slot_is_available_when_every_slot_is_live() {
        let store = FakeStore::new();
        claim(&store, REG, 1, at(0), T, 8).unwrap();
        assert_eq!(
            claim(&store, REG, 1, at(1), T, 8).unwrap_err(),
            ClaimError::NoFreeSlot
        );
        // Once the holder is dead (no heartbeat for the timeout), the slot is reusable.
        let (again, _) = claim(&store, REG, 1, at(11), T, 8).unwrap();
        assert_eq!(again.slot, 0);
        assert_eq!(again.generation, 2);
    }

    #[test]
    fn a_canary_that_claims_and_vanishes_frees_its_slot_after_the_timeout() {
        let store = FakeStore::new();
        let (canary, _) = worker(&store, at(0));
        let (w, _) = worker(&store, at(5));
        assert_ne!(canary.slot, w.slot);
        // The real worker keeps its heartbeat; the canary's slot is taken over later.
        heartbeat(&store, REG, w, at(12), T, 8).unwrap();
        let (next, _) = worker(&store, at(12));
        assert_eq!(next.slot, canary.slot);
        assert_ne!(next.generation, canary.generation);
    }

    #[test]
    fn permits_are_limited_across_workers() {
        let store = FakeStore::new();
        let (a, _) = worker(&store, at(0));
        let (b, view) = worker(&store, at(0));
        let view_a = heartbeat_view(&store, a, at(0));
        assert!(granted(try_acquire(&store, P, a, &view_a, 2, 8)));
        assert!(granted(try_acquire(&store, P, b, &view, 2, 8)));
        assert_eq!(
            try_acquire(&store, P, a, &view_a, 2, 8).unwrap().output,
            Acquire::Full { in_flight: 2 }
        );
        assert_eq!(
            release(&store, P, b, &view, 8).unwrap().output,
            Release::Released { in_flight: 1 }
        );
        assert!(granted(try_acquire(&store, P, a, &view_a, 2, 8)));
    }

    fn heartbeat_view(store: &FakeStore, me: WorkerId, now: Timestamp) -> LiveView {
        match heartbeat(store, REG, me, now, T, 8).unwrap() {
            Heartbeat::Alive(v) => v,
            Heartbeat::Lost => panic!("lost"),
        }
    }

    #[test]
    fn acquire_and_release_survive_injected_cas_conflicts() {
        let store = FakeStore::new();
        let (a, view) = worker(&store, at(0));
        store.inject_conflicts(3);
        let done = try_acquire(&store, P, a, &view, 1, 8).unwrap();
        assert_eq!(done.conflicts, 3);
        assert_eq!(done.output, Acquire::Granted { in_flight: 1 });
        store.inject_conflicts(2);
        let done = release(&store, P, a, &view, 8).unwrap();
        assert_eq!(done.conflicts, 2);
        assert_eq!(in_flight(&store, P, &view).unwrap(), 0);
    }

    #[test]
    fn exhausted_retries_change_nothing() {
        let store = FakeStore::new();
        let (a, view) = worker(&store, at(0));
        store.inject_conflicts(4);
        assert_eq!(
            try_acquire(&store, P, a, &view, 1, 4).unwrap_err(),
            UpdateError::Exhausted { attempts: 4 }
        );
        assert_eq!(in_flight(&store, P, &view).unwrap(), 0);
    }

    #[test]
    fn a_dead_workers_permits_stop_counting_and_are_pruned() {
        let store = FakeStore::new();
        let (dead, view_dead) = worker(&store, at(0));
        assert!(granted(try_acquire(&store, P, dead, &view_dead, 2, 8)));
        assert!(granted(try_acquire(&store, P, dead, &view_dead, 2, 8)));
        let (alive, view) = worker(&store, at(1));
        assert_eq!(
            try_acquire(&store, P, alive, &view, 2, 8).unwrap().output,
            Acquire::Full { in_flight: 2 }
        );
        // Ten seconds without a heartbeat from `dead`.
        let view = heartbeat_view(&store, alive, at(11));
        assert_eq!(in_flight(&store, P, &view).unwrap(), 0);
        assert!(granted(try_acquire(&store, P, alive, &view, 2, 8)));
        // The write pruned the dead entry: the value holds only the live worker.
        assert_eq!(store.value(P).unwrap().len(), ENTRY_LEN);
    }

    #[test]
    fn a_reclaimed_slot_does_not_inherit_the_dead_generations_permits() {
        let store = FakeStore::new();
        let (dead, view_dead) = claim(&store, REG, 1, at(0), T, 8).unwrap();
        assert!(granted(try_acquire(&store, P, dead, &view_dead, 1, 8)));
        let (heir, view) = claim(&store, REG, 1, at(20), T, 8).unwrap();
        assert_eq!(heir.slot, dead.slot);
        assert!(granted(try_acquire(&store, P, heir, &view, 1, 8)));
        // The heir's write pruned the dead generation's entry, so a late release from the dead
        // generation (say its VM limped on) is a no-op, not a decrement of the heir's permit.
        assert_eq!(
            release(&store, P, dead, &view_dead, 8).unwrap().output,
            Release::NotHeld
        );
        assert_eq!(in_flight(&store, P, &view).unwrap(), 1);
    }

    #[test]
    fn a_stale_view_still_counts_a_newly_claimed_worker() {
        let store = FakeStore::new();
        let (a, view_a) = worker(&store, at(0)); // view knows only slot 0
        let (b, view_b) = worker(&store, at(0));
        assert!(granted(try_acquire(&store, P, b, &view_b, 1, 8)));
        assert_eq!(
            try_acquire(&store, P, a, &view_a, 1, 8).unwrap().output,
            Acquire::Full { in_flight: 1 }
        );
    }

    #[test]
    fn a_worker_declared_dead_learns_it_at_its_next_heartbeat() {
        let store = FakeStore::new();
        let (slow, _) = claim(&store, REG, 1, at(0), T, 8).unwrap();
        claim(&store, REG, 1, at(30), T, 8).unwrap();
        assert_eq!(
            heartbeat(&store, REG, slow, at(31), T, 8).unwrap(),
            Heartbeat::Lost
        );
    }

    #[test]
    fn a_released_slot_is_claimable_at_once() {
        let store = FakeStore::new();
        let (a, _) = claim(&store, REG, 1, at(0), T, 8).unwrap();
        release_slot(&store, REG, a, 8).unwrap();
        let (b, _) = claim(&store, REG, 1, at(1), T, 8).unwrap();
        assert_eq!(b.slot, a.slot);
    }

    #[test]
    fn generations_compare_across_wrap_around() {
        assert!(newer(1, u32::MAX));
        assert!(newer(5, 4));
        assert!(!newer(4, 5));
        assert!(!newer(7, 7));
    }

    #[test]
    fn concurrent_workers_never_exceed_the_limit() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let store = Arc::new(FakeStore::new());
        let peak = Arc::new(AtomicU64::new(0));
        let current = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (store, peak, current) = (store.clone(), peak.clone(), current.clone());
                std::thread::spawn(move || {
                    let (me, view) = claim(&*store, REG, 8, at(0), T, u32::MAX).unwrap();
                    for _ in 0..300 {
                        let r = try_acquire(&*store, P, me, &view, 3, u32::MAX).unwrap();
                        if let Acquire::Granted { .. } = r.output {
                            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            current.fetch_sub(1, Ordering::SeqCst);
                            release(&*store, P, me, &view, u32::MAX).unwrap();
                        }
                    }
                    view
                })
            })
            .collect();
        let views: Vec<LiveView> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(in_flight(&*store, P, &views[0]).unwrap(), 0);
    }
}
