//! Property tests (issue 9): permits are never negative and never above the maximum, whatever
//! the interleaving of acquires and releases from several workers on one store, with CAS
//! conflicts injected; and every permit acquired and released exactly once leaves nothing behind.
//!
//! Two levels are driven: the permit accounting itself ([`permits`]), and the per-worker state
//! machine ([`Worker`]) that decides when to acquire and release, with end-of-stream callbacks
//! that may fire more than once.

use crate::config::Config;
use crate::permits::{self, Acquire, LiveView, Release, WorkerId};
use crate::policy::{Admission, Bulkhead, Event, Target, Wake, Worker};
use palisade_core::store::UpdateError;
use palisade_core::testing::{FakeRequest, FakeStore};
use palisade_core::Timestamp;
use proptest::prelude::*;
use std::time::Duration;

const REGISTRY: &str = "workers";
const PARTITION: &str = "p/b/1/0";
/// Long enough that no worker is ever declared dead during a run: liveness is not under test
/// here, and a dead worker's permits rightly stop counting.
const WORKER_TIMEOUT: Duration = Duration::from_secs(3_600);

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(1_000_000 + ms)
}

/// The partition's in-flight total counting every entry, live or not (a view that has never
/// seen the registry counts them all): what the store actually holds.
fn stored_total(store: &FakeStore, key: &str) -> Result<u64, TestCaseError> {
    permits::in_flight(store, key, &LiveView::default())
        .map_err(|e| TestCaseError::fail(format!("store: {e}")))
}

#[derive(Debug, Clone)]
enum PermitOp {
    /// Worker `w % n` asks for a permit.
    Acquire(usize),
    /// Worker `w % n` gives one of its permits back (nothing if it holds none).
    Release(usize),
    /// The next `n` compare-and-swaps lose their race.
    Conflicts(u32),
}

fn permit_op() -> impl Strategy<Value = PermitOp> {
    prop_oneof![
        4 => any::<usize>().prop_map(PermitOp::Acquire),
        4 => any::<usize>().prop_map(PermitOp::Release),
        1 => (0u32..=6).prop_map(PermitOp::Conflicts),
    ]
}

/// Retries small enough that injected conflicts sometimes exhaust them.
const ATTEMPTS: u32 = 4;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `try_acquire` and `release` from several workers, interleaved arbitrarily and losing CAS
    /// races: the stored total is exactly the permits granted and not yet released, so it stays
    /// within `0..=max`, and it is 0 once each is released exactly once.
    #[test]
    fn permits_are_never_negative_and_never_above_the_maximum(
        max in 1u32..=5,
        workers in 1usize..=4,
        ops in prop::collection::vec(permit_op(), 1..150),
    ) {
        let store = FakeStore::new();
        let mut ids: Vec<WorkerId> = Vec::new();
        for _ in 0..workers {
            let (id, _) = permits::claim(&store, REGISTRY, 8, at(0), WORKER_TIMEOUT, 8)
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            ids.push(id);
        }
        // Each worker's view, read once all have claimed (as after a heartbeat).
        let view = |id: WorkerId| match permits::heartbeat(&store, REGISTRY, id, at(0), WORKER_TIMEOUT, 8) {
            Ok(permits::Heartbeat::Alive(v)) => Ok(v),
            other => Err(TestCaseError::fail(format!("heartbeat: {other:?}"))),
        };
        let views = ids.iter().map(|id| view(*id)).collect::<Result<Vec<_>, _>>()?;
        let mut held = vec![0u64; workers];
        for op in ops {
            match op {
                PermitOp::Acquire(w) => {
                    let w = w % workers;
                    let in_flight: u64 = held.iter().sum();
                    match permits::try_acquire(&store, PARTITION, ids[w], &views[w], max, ATTEMPTS) {
                        Ok(done) => match done.output {
                            Acquire::Granted { in_flight: now } => {
                                prop_assert!(in_flight < u64::from(max), "granted beyond the limit");
                                prop_assert_eq!(now, in_flight + 1);
                                held[w] += 1;
                            }
                            Acquire::Full { in_flight: now } => {
                                prop_assert_eq!(now, in_flight);
                                prop_assert!(now >= u64::from(max), "refused below the limit");
                            }
                        },
                        Err(UpdateError::Exhausted { .. }) => {}
                        Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
                    }
                }
                PermitOp::Release(w) => {
                    let w = w % workers;
                    if held[w] == 0 {
                        continue;
                    }
                    match permits::release(&store, PARTITION, ids[w], &views[w], ATTEMPTS) {
                        Ok(done) => {
                            held[w] -= 1;
                            let rest: u64 = held.iter().sum();
                            prop_assert_eq!(done.output, Release::Released { in_flight: rest });
                        }
                        // Not written: the worker still holds it and will retry.
                        Err(UpdateError::Exhausted { .. }) => {}
                        Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
                    }
                }
                PermitOp::Conflicts(n) => store.inject_conflicts(n),
            }
            let total = stored_total(&store, PARTITION)?;
            prop_assert!(total <= u64::from(max), "{total} in flight, max {max}");
            prop_assert_eq!(total, held.iter().sum::<u64>(), "stored total drifted");
        }
        // Every permit is released exactly once (a release that loses its races is retried).
        for w in 0..workers {
            while held[w] > 0 {
                if permits::release(&store, PARTITION, ids[w], &views[w], ATTEMPTS).is_ok() {
                    held[w] -= 1;
                }
            }
        }
        prop_assert_eq!(stored_total(&store, PARTITION)?, 0);
        // One more release finds nothing: the total cannot go below zero.
        let extra = permits::release(&store, PARTITION, ids[0], &views[0], 8)
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(extra.output, Release::NotHeld);
        prop_assert_eq!(stored_total(&store, PARTITION)?, 0);
    }
}

/// Where a stream stands, as the glue would track it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Holding,
    Waiting,
    /// Ended, rejected, expired, or let through without a permit.
    Done,
}

#[derive(Debug, Clone)]
enum WorkerOp {
    /// A request arrives on worker `w % n`.
    Request(usize),
    /// An end-of-stream callback for one of worker `w`'s streams (any, even one already ended:
    /// Envoy calls several).
    End(usize, usize),
    Tick(usize),
    Advance(u64),
    Conflicts(u32),
}

fn worker_op() -> impl Strategy<Value = WorkerOp> {
    prop_oneof![
        4 => any::<usize>().prop_map(WorkerOp::Request),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(w, s)| WorkerOp::End(w, s)),
        2 => any::<usize>().prop_map(WorkerOp::Tick),
        1 => (0u64..=40).prop_map(WorkerOp::Advance),
        1 => prop_oneof![0u32..=6, 0u32..=40].prop_map(WorkerOp::Conflicts),
    ]
}

struct Sim {
    workers: Vec<Worker>,
    /// Per worker: its streams by context id, in arrival order.
    streams: Vec<Vec<(u32, Stream)>>,
}

impl Sim {
    fn wake(&mut self, w: usize, wakes: &[Wake]) -> Result<(), TestCaseError> {
        for wake in wakes {
            let (context, to) = match wake {
                Wake::Resume(c) => (*c, Stream::Holding),
                Wake::Reply(c, _) => (*c, Stream::Done),
            };
            let Some(s) = self.streams[w].iter_mut().find(|(c, _)| *c == context) else {
                return Err(TestCaseError::fail(format!(
                    "woke unknown stream {context}"
                )));
            };
            prop_assert_eq!(s.1, Stream::Waiting, "woke a stream that was not waiting");
            s.1 = to;
        }
        Ok(())
    }

    /// The store holds exactly the permits held by streams plus releases not yet written, and
    /// that is within `0..=max`.
    fn check(&self, store: &FakeStore, max: u32) -> Result<(), TestCaseError> {
        let total = stored_total(store, PARTITION)?;
        prop_assert!(total <= u64::from(max), "{total} in flight, max {max}");
        let mut expected = 0u64;
        for (w, worker) in self.workers.iter().enumerate() {
            let holding = self.streams[w]
                .iter()
                .filter(|(_, s)| *s == Stream::Holding)
                .count();
            let waiting = self.streams[w]
                .iter()
                .filter(|(_, s)| *s == Stream::Waiting)
                .count();
            prop_assert_eq!(worker.held(), holding, "worker {} held", w);
            prop_assert_eq!(worker.waiting(), waiting, "worker {} waiting", w);
            expected += (holding + worker.pending_releases()) as u64;
        }
        prop_assert_eq!(total, expected, "stored total drifted");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Several workers (each its own `Worker`, as each Envoy worker has its own VM) admitting,
    /// queueing and ending streams on one store that loses CAS races, with end callbacks firing
    /// more than once: the stored total never exceeds `max_concurrent`, always equals the
    /// permits streams hold plus deferred releases, and is 0 once every stream has ended.
    #[test]
    fn worker_permits_stay_within_the_limit_and_drain_to_zero(
        max in 1u32..=4,
        wait in prop::option::of((1u64..=60, 1u32..=3)),
        workers in 1usize..=4,
        ops in prop::collection::vec(worker_op(), 1..150),
    ) {
        let waits = wait.map_or(String::new(), |(ms, n)| {
            format!(r#","max_wait":"{ms}ms","max_waiting":{n}"#)
        });
        let json = format!(
            r#"{{"worker_timeout":"1h","rules":[{{"name":"b","max_concurrent":{max}{waits}}}]}}"#
        );
        let config = Config::parse(json.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let bulkhead = Bulkhead::new(config);
        let target: Option<Target> =
            bulkhead.classify(&FakeRequest::new("GET", "/"), &mut || None);
        prop_assert_eq!(target.as_ref().map(|t| t.key.as_str()), Some(PARTITION));
        let store = FakeStore::new();
        let mut sim = Sim {
            workers: (0..workers).map(|_| Worker::new(bulkhead.clone())).collect(),
            streams: vec![Vec::new(); workers],
        };
        let mut now = 0u64;
        let mut next_context = 1u32;
        for op in ops {
            match op {
                WorkerOp::Request(w) => {
                    let w = w % workers;
                    let context = next_context;
                    next_context += 1;
                    let (admission, report) =
                        sim.workers[w].on_request(context, target.clone(), &store, at(now));
                    let admitted = report.events.iter().any(|(_, e)| *e == Event::Admitted);
                    let state = match admission {
                        Admission::Continue if admitted => Stream::Holding,
                        Admission::Wait => Stream::Waiting,
                        _ => Stream::Done,
                    };
                    sim.streams[w].push((context, state));
                }
                WorkerOp::End(w, s) => {
                    let w = w % workers;
                    if sim.streams[w].is_empty() {
                        continue;
                    }
                    let i = s % sim.streams[w].len();
                    let context = sim.streams[w][i].0;
                    sim.streams[w][i].1 = Stream::Done;
                    let report = sim.workers[w].on_stream_end(context, &store, at(now));
                    sim.wake(w, &report.wakes)?;
                }
                WorkerOp::Tick(w) => {
                    let w = w % workers;
                    let report = sim.workers[w].on_tick(&store, at(now));
                    sim.wake(w, &report.wakes)?;
                }
                WorkerOp::Advance(ms) => now += ms,
                WorkerOp::Conflicts(n) => store.inject_conflicts(n),
            }
            sim.check(&store, max)?;
        }
        // Every stream ends (each end callback possibly twice); deferred releases are retried
        // on tick until written.
        store.inject_conflicts(0);
        for _ in 0..4 {
            for w in 0..workers {
                let contexts: Vec<u32> = sim.streams[w].iter().map(|(c, _)| *c).collect();
                for context in contexts {
                    if let Some(s) = sim.streams[w].iter_mut().find(|(c, _)| *c == context) {
                        if s.1 == Stream::Done {
                            continue;
                        }
                        s.1 = Stream::Done;
                    }
                    for _ in 0..2 {
                        let report = sim.workers[w].on_stream_end(context, &store, at(now));
                        sim.wake(w, &report.wakes)?;
                    }
                }
                let report = sim.workers[w].on_tick(&store, at(now));
                sim.wake(w, &report.wakes)?;
                sim.check(&store, max)?;
            }
        }
        for (w, worker) in sim.workers.iter().enumerate() {
            prop_assert_eq!(worker.held(), 0, "worker {} still holds permits", w);
            prop_assert_eq!(worker.pending_releases(), 0, "worker {} has releases pending", w);
            prop_assert_eq!(worker.waiting(), 0, "worker {} has waiters", w);
        }
        prop_assert_eq!(stored_total(&store, PARTITION)?, 0);
    }
}

#[test]
fn the_stored_total_counts_entries_of_every_worker() {
    // The oracle above reads the store with an empty view; it must count every holder.
    let store = FakeStore::new();
    for _ in 0..2 {
        let (id, view) =
            permits::claim(&store, REGISTRY, 8, at(0), WORKER_TIMEOUT, 8).expect("claim");
        assert!(matches!(
            permits::try_acquire(&store, PARTITION, id, &view, 5, 8)
                .expect("acquire")
                .output,
            Acquire::Granted { .. }
        ));
    }
    assert_eq!(stored_total(&store, PARTITION).ok(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// Priority classes (issue 20): the admission rule is "a request of class c takes a permit only
// while fewer than threshold(c) are in flight in its partition" — every class, every worker, one
// compare-and-swap. Properties below, first on the permit accounting with class thresholds, then
// on the per-worker state machine with classes, waits and priority queues.

use crate::config::threshold;

#[derive(Debug, Clone)]
enum ClassOp {
    /// Worker `w % n` asks for a permit for class `c % classes`.
    Acquire(usize, usize),
    /// Worker `w % n` gives back one permit of class `c % classes` (nothing if it holds none).
    Release(usize, usize),
    Conflicts(u32),
}

fn class_op() -> impl Strategy<Value = ClassOp> {
    prop_oneof![
        5 => (any::<usize>(), any::<usize>()).prop_map(|(w, c)| ClassOp::Acquire(w, c)),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(w, c)| ClassOp::Release(w, c)),
        1 => (0u32..=6).prop_map(ClassOp::Conflicts),
    ]
}

/// Shares (hundredths of a percent) of 1 to 4 classes, the last one 100 %.
fn shares() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1u32..=10_000, 0..=3).prop_map(|mut v| {
        v.push(10_000);
        v
    })
}

/// For every class's threshold T: the permits held by classes whose threshold is at most T
/// number at most T. (With T = a class's own threshold: a class never holds more than its share;
/// with the lowest classes together: they can never crowd out the higher ones.)
fn within_thresholds(held_by_class: &[u64], limits: &[u32]) -> Result<(), TestCaseError> {
    for &t in limits {
        let below: u64 = limits
            .iter()
            .zip(held_by_class)
            .filter(|(l, _)| **l <= t)
            .map(|(_, h)| *h)
            .sum();
        prop_assert!(
            below <= u64::from(t),
            "{below} permits held by classes of threshold <= {t}: {held_by_class:?} {limits:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Acquires and releases of several classes from several workers, interleaved arbitrarily,
    /// losing CAS races: in flight never exceeds `max_concurrent`; the classes at or below each
    /// threshold never hold more than it (so each class stays within its share); a request is
    /// admitted exactly when fewer than its class's threshold are in flight — so a 100 % class
    /// whenever in flight < `max_concurrent`; and every permit comes back (no leak).
    #[test]
    fn class_thresholds_hold_across_workers_and_every_permit_comes_back(
        max in 1u32..=12,
        shares in shares(),
        workers in 1usize..=4,
        ops in prop::collection::vec(class_op(), 1..200),
    ) {
        let limits: Vec<u32> = shares.iter().map(|s| threshold(max, *s)).collect();
        let classes = limits.len();
        prop_assert_eq!(limits[classes - 1], max);
        let store = FakeStore::new();
        let mut ids: Vec<WorkerId> = Vec::new();
        for _ in 0..workers {
            let (id, _) = permits::claim(&store, REGISTRY, 8, at(0), WORKER_TIMEOUT, 8)
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            ids.push(id);
        }
        let view = LiveView::default();
        // held[w][c]: permits of class c worker w holds.
        let mut held = vec![vec![0u64; classes]; workers];
        for op in ops {
            match op {
                ClassOp::Acquire(w, c) => {
                    let (w, c) = (w % workers, c % classes);
                    let before: u64 = held.iter().flatten().sum();
                    match permits::try_acquire(&store, PARTITION, ids[w], &view, limits[c], ATTEMPTS) {
                        Ok(done) => {
                            let granted = matches!(done.output, Acquire::Granted { .. });
                            prop_assert_eq!(granted, before < u64::from(limits[c]),
                                "class {} (threshold {}) with {} in flight", c, limits[c], before);
                            if c == classes - 1 {
                                // The 100 % class: admitted whenever in flight < max_concurrent.
                                prop_assert_eq!(granted, before < u64::from(max));
                            }
                            if granted {
                                held[w][c] += 1;
                            }
                        }
                        Err(UpdateError::Exhausted { .. }) => {}
                        Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
                    }
                }
                ClassOp::Release(w, c) => {
                    let (w, c) = (w % workers, c % classes);
                    if held[w][c] == 0 {
                        continue;
                    }
                    match permits::release(&store, PARTITION, ids[w], &view, ATTEMPTS) {
                        Ok(_) => held[w][c] -= 1,
                        Err(UpdateError::Exhausted { .. }) => {}
                        Err(e) => return Err(TestCaseError::fail(format!("{e:?}"))),
                    }
                }
                ClassOp::Conflicts(n) => store.inject_conflicts(n),
            }
            let total = stored_total(&store, PARTITION)?;
            prop_assert!(total <= u64::from(max), "{total} in flight, max {max}");
            prop_assert_eq!(total, held.iter().flatten().sum::<u64>(), "stored total drifted");
            let by_class: Vec<u64> = (0..classes).map(|c| held.iter().map(|h| h[c]).sum()).collect();
            within_thresholds(&by_class, &limits)?;
        }
        store.inject_conflicts(0);
        for w in 0..workers {
            while held[w].iter().sum::<u64>() > 0 {
                if permits::release(&store, PARTITION, ids[w], &view, ATTEMPTS).is_ok() {
                    if let Some(h) = held[w].iter_mut().find(|h| **h > 0) {
                        *h -= 1;
                    }
                }
            }
        }
        prop_assert_eq!(stored_total(&store, PARTITION)?, 0);
    }
}

#[derive(Debug, Clone)]
enum PrioOp {
    /// A request of class `c % 3` arrives on worker `w % n`.
    Request(usize, usize),
    End(usize, usize),
    Tick(usize),
    Advance(u64),
    Conflicts(u32),
}

fn prio_op() -> impl Strategy<Value = PrioOp> {
    prop_oneof![
        5 => (any::<usize>(), any::<usize>()).prop_map(|(w, c)| PrioOp::Request(w, c)),
        4 => (any::<usize>(), any::<usize>()).prop_map(|(w, s)| PrioOp::End(w, s)),
        2 => any::<usize>().prop_map(PrioOp::Tick),
        1 => (0u64..=40).prop_map(PrioOp::Advance),
        1 => prop_oneof![0u32..=6, 0u32..=40].prop_map(PrioOp::Conflicts),
    ]
}

const CLASS_NAMES: [&str; 3] = ["low", "normal", "critical"];

struct PrioSim {
    sim: Sim,
    /// Per worker, per context: the class of the stream.
    class: Vec<std::collections::HashMap<u32, usize>>,
    limits: [u32; 3],
    ranks: [u32; 3],
}

impl PrioSim {
    fn waiting_classes(&self, w: usize) -> Vec<usize> {
        self.sim.streams[w]
            .iter()
            .filter(|(_, s)| *s == Stream::Waiting)
            .filter_map(|(c, _)| self.class[w].get(c).copied())
            .collect()
    }

    /// Apply a callback's wakes on worker `w`, then check per-worker priority order: a waiter
    /// still queued while one of a lower class was admitted in the same callback must have found
    /// its partition at or above its own threshold *before* those lower admissions (the queue is
    /// served highest class first: it could not have been admitted instead).
    fn wake(&mut self, w: usize, wakes: &[Wake], store: &FakeStore) -> Result<(), TestCaseError> {
        self.sim.wake(w, wakes)?;
        let admitted: Vec<u32> = wakes
            .iter()
            .filter_map(|wk| match wk {
                Wake::Resume(c) => self.class[w].get(c).map(|k| self.ranks[*k]),
                Wake::Reply(..) => None,
            })
            .collect();
        if admitted.is_empty() {
            return Ok(());
        }
        let total = stored_total(store, PARTITION)?;
        for k in self.waiting_classes(w) {
            let lower = admitted.iter().filter(|r| **r < self.ranks[k]).count() as u64;
            if lower > 0 {
                prop_assert!(
                    total - lower >= u64::from(self.limits[k]),
                    "a {} waiter was passed over by {} lower ones with {} in flight before them",
                    CLASS_NAMES[k],
                    lower,
                    total - lower
                );
            }
        }
        Ok(())
    }

    fn check(&self, store: &FakeStore, max: u32) -> Result<(), TestCaseError> {
        self.sim.check(store, max)?;
        let mut by_class = [0u64; 3];
        for (w, streams) in self.sim.streams.iter().enumerate() {
            for (c, s) in streams {
                if *s == Stream::Holding {
                    if let Some(k) = self.class[w].get(c) {
                        by_class[*k] += 1;
                    }
                }
            }
        }
        within_thresholds(&by_class, &self.limits)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Workers admitting, queueing (in class order) and ending streams of three classes on one
    /// store that loses CAS races: in flight never exceeds `max_concurrent`, the classes stay
    /// within their thresholds, a critical request is admitted whenever fewer than
    /// `max_concurrent` are in flight (unless a waiter of its worker with as high a share is ahead
    /// of it, or shared data failed), a lower class is never admitted on a worker ahead of a
    /// higher waiter that could have been, and everything drains to zero.
    #[test]
    fn priority_workers_stay_within_thresholds_serve_higher_classes_first_and_drain(
        max in 1u32..=8,
        low in 1u32..=100,
        normal in 1u32..=100,
        wait in prop::option::of((1u64..=60, 1u32..=4)),
        workers in 1usize..=3,
        ops in prop::collection::vec(prio_op(), 1..150),
    ) {
        let (low, normal) = (low.min(normal), low.max(normal));
        let waits = wait.map_or(String::new(), |(ms, n)| {
            format!(r#","max_wait":"{ms}ms","max_waiting":{n}"#)
        });
        let json = format!(
            r#"{{"worker_timeout":"1h","rules":[{{"name":"b","max_concurrent":{max}{waits},
              "priorities":{{"by":{{"header":"x-priority"}},"classes":[
                {{"name":"low","share":{low},"values":["low"]}},
                {{"name":"normal","share":{normal},"values":["normal"]}},
                {{"name":"critical","share":100,"values":["critical"]}}]}}}}]}}"#
        );
        let config = Config::parse(json.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let limits = [threshold(max, low * 100), threshold(max, normal * 100), max];
        let ranks = [low * 100, normal * 100, 10_000];
        let bulkhead = Bulkhead::new(config);
        let targets: Vec<Option<Target>> = CLASS_NAMES
            .iter()
            .map(|c| bulkhead.classify(&FakeRequest::new("GET", "/").header("x-priority", c), &mut || None))
            .collect();
        for (k, t) in targets.iter().enumerate() {
            prop_assert_eq!(t.as_ref().and_then(|t| t.class), Some(k));
        }
        let store = FakeStore::new();
        let mut p = PrioSim {
            sim: Sim {
                workers: (0..workers).map(|_| Worker::new(bulkhead.clone())).collect(),
                streams: vec![Vec::new(); workers],
            },
            class: vec![Default::default(); workers],
            limits,
            ranks,
        };
        let mut now = 0u64;
        let mut next_context = 1u32;
        for op in ops {
            match op {
                PrioOp::Request(w, k) => {
                    let (w, k) = (w % workers, k % 3);
                    let context = next_context;
                    next_context += 1;
                    let before = stored_total(&store, PARTITION)?;
                    // Equal shares are equal priorities: a `normal` class with a share of 100
                    // waits in the same FIFO as `critical` (docs/bulkhead.md, "Priority").
                    let critical_ahead = p
                        .waiting_classes(w)
                        .iter()
                        .any(|k| p.ranks[*k] >= p.ranks[2]);
                    p.class[w].insert(context, k);
                    let (admission, report) =
                        p.sim.workers[w].on_request(context, targets[k].clone(), &store, at(now));
                    let admitted = report.events.iter().any(|(_, e)| *e == Event::Admitted);
                    let failed = report.events.iter().any(|(_, e)| *e == Event::StoreFailure);
                    if k == 2 && before < u64::from(max) && !critical_ahead {
                        prop_assert!(admitted || failed,
                            "critical not admitted with {} in flight of {}: {:?}", before, max, admission);
                    }
                    if admitted {
                        prop_assert!(before < u64::from(limits[k]), "admitted above its threshold");
                    }
                    let state = match admission {
                        Admission::Continue if admitted => Stream::Holding,
                        Admission::Wait => Stream::Waiting,
                        _ => Stream::Done,
                    };
                    p.sim.streams[w].push((context, state));
                    // Displaced waiters are answered from this callback.
                    p.wake(w, &report.wakes, &store)?;
                }
                PrioOp::End(w, s) => {
                    let w = w % workers;
                    if p.sim.streams[w].is_empty() {
                        continue;
                    }
                    let i = s % p.sim.streams[w].len();
                    let context = p.sim.streams[w][i].0;
                    p.sim.streams[w][i].1 = Stream::Done;
                    let report = p.sim.workers[w].on_stream_end(context, &store, at(now));
                    p.wake(w, &report.wakes, &store)?;
                }
                PrioOp::Tick(w) => {
                    let w = w % workers;
                    let report = p.sim.workers[w].on_tick(&store, at(now));
                    p.wake(w, &report.wakes, &store)?;
                }
                PrioOp::Advance(ms) => now += ms,
                PrioOp::Conflicts(n) => store.inject_conflicts(n),
            }
            p.check(&store, max)?;
        }
        store.inject_conflicts(0);
        for _ in 0..4 {
            for w in 0..workers {
                let contexts: Vec<u32> = p.sim.streams[w].iter().map(|(c, _)| *c).collect();
                for context in contexts {
                    if let Some(s) = p.sim.streams[w].iter_mut().find(|(c, _)| *c == context) {
                        if s.1 == Stream::Done {
                            continue;
                        }
                        s.1 = Stream::Done;
                    }
                    for _ in 0..2 {
                        let report = p.sim.workers[w].on_stream_end(context, &store, at(now));
                        p.sim.wake(w, &report.wakes)?;
                    }
                }
                let report = p.sim.workers[w].on_tick(&store, at(now));
                p.sim.wake(w, &report.wakes)?;
                p.check(&store, max)?;
            }
        }
        for (w, worker) in p.sim.workers.iter().enumerate() {
            prop_assert_eq!(worker.held(), 0, "worker {} still holds permits", w);
            prop_assert_eq!(worker.pending_releases(), 0, "worker {} has releases pending", w);
            prop_assert_eq!(worker.waiting(), 0, "worker {} has waiters", w);
        }
        prop_assert_eq!(stored_total(&store, PARTITION)?, 0);
    }
}
