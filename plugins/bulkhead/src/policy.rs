//! The bulkhead decision and the per-worker state machine behind it.
//!
//! [`Bulkhead::classify`] maps a request to a partition (first matching rule wins, so a request
//! holds at most one permit). [`Worker`] is one worker VM's state: its slot in the registry, the
//! permits its streams hold (by context id), its wait queues, and releases still to retry. Every
//! entry point takes the store and `now`, and returns what the glue must do — resume or answer
//! which paused streams, and which events to count — so the whole life of a permit is unit-tested
//! here without a proxy.
//!
//! ## Exactly-once release
//! A permit is recorded in `held` under the stream's context id when it is granted (at request
//! headers, or when a waiter is admitted). [`Worker::on_stream_end`] removes it and gives it back;
//! the glue calls it from every end-of-stream callback Envoy makes (`on_done`, `on_log`, and the
//! context's drop), so whichever comes first releases and the others find nothing. A release that
//! cannot be written (contention beyond the retry bound, or a host error) is kept in `pending`
//! and retried on every tick until it succeeds: a permit is never forgotten.
//!
//! ## Waiting
//! With `max_wait`, a request that finds its partition full is paused and queued on its worker
//! (bounded by `max_waiting` per rule). Waiters are admitted in FIFO order when a permit frees on
//! the same worker (in that stream's end callback) and on every tick (which is how waiters on
//! other workers notice permits freed elsewhere). A new request does not overtake a waiter of its
//! own partition on its worker. A waiter still queued after `max_wait` gets the rule's reply with
//! `x-palisade-bulkhead: expired`.

use crate::config::{Config, FailureMode, Level, PartitionBy, Rule};
use crate::permits::{self, Acquire, ClaimError, Heartbeat, LiveView, Release, WorkerId};
use palisade_core::key::RequestView;
use palisade_core::{LocalReply, SharedStore, Timestamp};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Response header on the plugin's replies (and, in shadow mode, on would-be rejections).
pub const HEADER: &str = "x-palisade-bulkhead";
/// Request header sent upstream naming the shadow rule that would have rejected the request.
pub const SHADOW_HEADER: &str = "x-palisade-bulkhead-shadow";

/// CAS attempts for taking a permit (a failure applies the failure mode).
const ACQUIRE_ATTEMPTS: u32 = 16;
/// CAS attempts for a release (a failure is retried on tick, so this can stay moderate).
const RELEASE_ATTEMPTS: u32 = 32;
/// How often to retry claiming a slot after a failure.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// Where `now` comes from: a [`Timestamp`] (tests) or a function reading the proxy's clock (the
/// glue). The request and stream-end paths read it only when they need it — most requests never
/// do — which saves a hostcall per callback on the hot path.
pub trait Clock {
    fn read(&self) -> Timestamp;
}

impl Clock for Timestamp {
    fn read(&self) -> Timestamp {
        *self
    }
}

impl<F: Fn() -> Timestamp> Clock for F {
    fn read(&self) -> Timestamp {
        self()
    }
}

/// A clock read at most once.
struct Lazy<'a> {
    clock: &'a dyn Clock,
    value: std::cell::OnceCell<Timestamp>,
}

impl<'a> Lazy<'a> {
    fn new(clock: &'a dyn Clock) -> Self {
        Lazy {
            clock,
            value: std::cell::OnceCell::new(),
        }
    }

    fn get(&self) -> Timestamp {
        *self.value.get_or_init(|| self.clock.read())
    }
}

/// The partition a request belongs to: its rule and its shared-data key (under the scope), and
/// its priority class when the rule has priorities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub rule: usize,
    pub key: String,
    /// Index into the rule's `priorities.classes`; `None` without priorities.
    pub class: Option<usize>,
}

/// The rules, ready to classify requests.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    config: Config,
}

impl Bulkhead {
    pub fn new(config: Config) -> Self {
        Bulkhead { config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The first rule matching the request, and its partition. `cluster` reads
    /// `xds.cluster_name`; it is called only if a rule needs it.
    pub fn classify(
        &self,
        req: &dyn RequestView,
        cluster: &mut dyn FnMut() -> Option<String>,
    ) -> Option<Target> {
        let mut cluster_cache: Option<Option<String>> = None;
        let mut cluster_name = || cluster_cache.get_or_insert_with(&mut *cluster).clone();
        for (index, rule) in self.config.rules.iter().enumerate() {
            if !rule.matcher.matches(req) {
                continue;
            }
            if let Some(want) = &rule.cluster {
                if cluster_name().as_deref() != Some(want.as_str()) {
                    continue;
                }
            }
            let value = match &rule.partition_by {
                PartitionBy::Nothing => None,
                PartitionBy::Route => Some(req.route_name()),
                PartitionBy::Cluster => Some(cluster_name()),
                PartitionBy::Header(h) => Some(req.header(h)),
            };
            // A request without the partition's value (no route name, no header) shares one
            // partition with every other such request: still bounded, never unlimited.
            let slot = match value {
                None => 0,
                Some(v) => {
                    let v = v.unwrap_or_default();
                    palisade_core::hash::fnv1a64(v.as_bytes()) % u64::from(rule.max_partitions)
                }
            };
            // The class: the configured value's class, else the default one. A header or claim
            // is read only for a rule with priorities.
            let class = rule.priorities.as_ref().map(|p| {
                let value = p.by.extract(req);
                p.class_of(value.as_deref())
            });
            return Some(Target {
                rule: index,
                key: format!("p/{}/{}/{}", rule.name, rule.max_partitions, slot),
                class,
            });
        }
        None
    }
}

/// Something to count, per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A permit was taken at request headers.
    Admitted,
    /// Rejected: partition full (and no wait, or the wait queue was full).
    Rejected,
    /// Would have been rejected; the rule is in shadow mode.
    ShadowRejected,
    /// Paused to wait for a permit.
    Queued,
    /// A waiter got a permit after waiting this long.
    WaitAdmitted(Duration),
    /// A waiter gave up after waiting this long (it got the reply).
    WaitExpired(Duration),
    /// A waiter's stream ended (client gone) while it waited.
    WaitAbandoned,
    /// A permit was given back.
    Released,
    /// A release could not be written yet; it will be retried on tick.
    ReleaseDeferred,
    /// Shared data could not be used; the failure mode decided.
    StoreFailure,
    /// A waiter was answered `displaced`: its worker's queue was full and a request of a higher
    /// class took its place.
    WaitDisplaced,
    /// Per-class breakdown (rules with priorities): a request of this class took a permit, at
    /// its headers or after waiting (counted besides `Admitted` / `WaitAdmitted`).
    ClassAdmitted(usize),
    /// Per-class breakdown: a request of this class was shed — answered `full`, `expired` or
    /// `displaced` (counted besides `Rejected`, `WaitExpired`, `WaitDisplaced`).
    ClassRejected(usize),
}

/// Something about the worker itself (not a rule), for logs and a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    SlotClaimed(WorkerId),
    /// Our slot was reclaimed by another worker (we stalled past `worker_timeout`).
    SlotLost(WorkerId),
    /// Every slot is held by a live worker; permits fall back to the failure mode.
    NoFreeSlot,
    /// The registry could not be read or written.
    RegistryFailure(String),
}

/// What a paused stream should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// It holds a permit: continue its request.
    Resume(u32),
    /// Its wait expired: answer it with this reply.
    Reply(u32, LocalReply),
}

/// Everything a call produced: events to count, streams to wake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub events: Vec<(usize, Event)>,
    pub worker_events: Vec<WorkerEvent>,
    pub wakes: Vec<Wake>,
}

/// What to do with a request at its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Continue (with a permit, or uncounted by the failure mode, or not matched at all).
    Continue,
    /// Continue, but rule `usize` in shadow mode would have rejected it: mark it.
    ContinueShadow(usize),
    /// Pause the request; a [`Wake`] will follow.
    Wait,
    /// Answer with this reply.
    Reject(LocalReply),
}

/// A permit held by a stream of this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Permit {
    rule: usize,
    key: String,
    holder: WorkerId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiter {
    context: u32,
    key: String,
    since: Timestamp,
    class: Option<usize>,
    level: Level,
}

/// One worker VM's bulkhead state (see the module docs).
#[derive(Debug)]
pub struct Worker {
    bulkhead: Bulkhead,
    me: Option<WorkerId>,
    view: LiveView,
    next_heartbeat: Timestamp,
    next_claim: Timestamp,
    held: HashMap<u32, Permit>,
    queues: Vec<VecDeque<Waiter>>,
    pending: Vec<Permit>,
}

/// The registry key (under the scope prefix).
pub const REGISTRY_KEY: &str = "workers";

impl Worker {
    pub fn new(bulkhead: Bulkhead) -> Self {
        let rules = bulkhead.config.rules.len();
        Worker {
            bulkhead,
            me: None,
            view: LiveView::default(),
            next_heartbeat: Timestamp::ZERO,
            next_claim: Timestamp::ZERO,
            held: HashMap::new(),
            queues: vec![VecDeque::new(); rules],
            pending: Vec::new(),
        }
    }

    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// This worker's slot, once claimed.
    pub fn id(&self) -> Option<WorkerId> {
        self.me
    }

    /// How often the glue should call [`Worker::on_tick`]: often when requests can wait (that
    /// is how waiters see permits freed on other workers), rarely otherwise.
    pub fn tick_period(&self) -> Duration {
        if self.bulkhead.config.has_waits() {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(200)
        }
    }

    fn heartbeat_period(&self) -> Duration {
        (self.bulkhead.config.worker_timeout / 4).min(Duration::from_secs(1))
    }

    /// Permits held by this worker's streams (for tests and debugging).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether `context` holds a permit or waits for one (if not, its end is a no-op: the glue
    /// skips the clock read and the call).
    pub fn tracks(&self, context: u32) -> bool {
        self.held.contains_key(&context)
            || self
                .queues
                .iter()
                .any(|q| q.iter().any(|w| w.context == context))
    }

    /// Requests waiting on this worker.
    pub fn waiting(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Releases still to be written.
    pub fn pending_releases(&self) -> usize {
        self.pending.len()
    }

    fn ensure_slot(&mut self, store: &dyn SharedStore, now: &Lazy<'_>, report: &mut Report) {
        if self.me.is_some() {
            return;
        }
        let now = now.get();
        if now < self.next_claim {
            return;
        }
        let cfg = &self.bulkhead.config;
        match permits::claim(
            store,
            REGISTRY_KEY,
            cfg.max_workers,
            now,
            cfg.worker_timeout,
            ACQUIRE_ATTEMPTS,
        ) {
            Ok((me, view)) => {
                self.me = Some(me);
                self.view = view;
                self.next_heartbeat = now.saturating_add(self.heartbeat_period());
                report.worker_events.push(WorkerEvent::SlotClaimed(me));
            }
            Err(e) => {
                self.next_claim = now.saturating_add(CLAIM_RETRY);
                report.worker_events.push(match e {
                    ClaimError::NoFreeSlot => WorkerEvent::NoFreeSlot,
                    ClaimError::Store(e) => WorkerEvent::RegistryFailure(e.to_string()),
                });
            }
        }
    }

    fn reply(rule: &Rule, reason: &str) -> LocalReply {
        LocalReply::new(rule.reply.status, format!("palisade_bulkhead_{reason}"))
            .for_rule(&rule.name)
            .header("content-type", rule.reply.content_type.clone())
            .header(HEADER, reason)
            .body(rule.reply.body.clone())
    }

    fn failure(&self, rule_index: usize, report: &mut Report) -> Admission {
        report.events.push((rule_index, Event::StoreFailure));
        match self.bulkhead.config.rules.get(rule_index) {
            Some(rule) if rule.failure_mode == FailureMode::Deny && !rule.shadow => {
                Admission::Reject(Self::reply(rule, "unavailable"))
            }
            _ => Admission::Continue,
        }
    }

    /// A request's headers arrived: admit it, make it wait, or reject it.
    ///
    /// With priorities, the request's class decides its threshold: it takes a permit only while
    /// fewer than the class's `limit` are in flight in its partition (every class, every
    /// worker: one compare-and-swap, as without priorities). It waits behind waiters of its
    /// partition of the same or a higher class, overtakes lower ones, and may displace the
    /// lowest, newest waiter of a full queue if that one's class is lower.
    pub fn on_request(
        &mut self,
        context: u32,
        target: Option<Target>,
        store: &dyn SharedStore,
        clock: impl Clock,
    ) -> (Admission, Report) {
        let now = Lazy::new(&clock);
        let mut report = Report::default();
        let Some(target) = target else {
            return (Admission::Continue, report);
        };
        let Some(rule) = self.bulkhead.config.rules.get(target.rule) else {
            return (Admission::Continue, report);
        };
        let level = rule.level(target.class);
        let shadow = rule.shadow;
        let can_wait = rule.max_wait.is_some() && !shadow;
        let max_waiting = rule.max_waiting as usize;
        self.ensure_slot(store, &now, &mut report);
        let Some(me) = self.me else {
            let admission = self.failure(target.rule, &mut report);
            return (admission, report);
        };
        let queue = self.queues.get(target.rule);
        let someone_waits = can_wait
            && queue.is_some_and(|q| {
                q.iter()
                    .any(|w| w.key == target.key && w.level.rank >= level.rank)
            });
        let outcome = if someone_waits {
            // FIFO within the worker and class: do not overtake a waiter of the same partition
            // and the same or a higher class.
            None
        } else {
            match permits::try_acquire(
                store,
                &target.key,
                me,
                &self.view,
                level.limit,
                ACQUIRE_ATTEMPTS,
            ) {
                Ok(done) => Some(done.output),
                Err(_) => {
                    let admission = self.failure(target.rule, &mut report);
                    return (admission, report);
                }
            }
        };
        let admission = match outcome {
            Some(Acquire::Granted { .. }) => {
                report.events.push((target.rule, Event::Admitted));
                if let Some(c) = target.class {
                    report.events.push((target.rule, Event::ClassAdmitted(c)));
                }
                self.held.insert(
                    context,
                    Permit {
                        rule: target.rule,
                        key: target.key,
                        holder: me,
                    },
                );
                Admission::Continue
            }
            Some(Acquire::Full { .. }) | None => {
                if shadow {
                    report.events.push((target.rule, Event::ShadowRejected));
                    Admission::ContinueShadow(target.rule)
                } else if can_wait && self.make_room(target.rule, level, max_waiting, &mut report) {
                    let waiter = Waiter {
                        context,
                        key: target.key,
                        since: now.get(),
                        class: target.class,
                        level,
                    };
                    if let Some(q) = self.queues.get_mut(target.rule) {
                        // Behind every waiter of the same or a higher class, ahead of lower ones.
                        let at = q
                            .iter()
                            .position(|w| w.level.rank < level.rank)
                            .unwrap_or(q.len());
                        q.insert(at, waiter);
                    }
                    report.events.push((target.rule, Event::Queued));
                    Admission::Wait
                } else {
                    report.events.push((target.rule, Event::Rejected));
                    if let Some(c) = target.class {
                        report.events.push((target.rule, Event::ClassRejected(c)));
                    }
                    match self.bulkhead.config.rules.get(target.rule) {
                        Some(rule) => Admission::Reject(Self::reply(rule, "full")),
                        None => Admission::Continue,
                    }
                }
            }
        };
        (admission, report)
    }

    /// Whether a waiter of `level` fits in `rule`'s queue on this worker: there is room, or the
    /// last waiter (the lowest class, the newest within it) is of a lower class and is answered
    /// `displaced` to make room.
    fn make_room(
        &mut self,
        rule_index: usize,
        level: Level,
        max_waiting: usize,
        report: &mut Report,
    ) -> bool {
        let Some(queue) = self.queues.get_mut(rule_index) else {
            return false;
        };
        if queue.len() < max_waiting {
            return true;
        }
        if queue.back().is_none_or(|w| w.level.rank >= level.rank) {
            return false;
        }
        let Some(out) = queue.pop_back() else {
            return false;
        };
        report.events.push((rule_index, Event::WaitDisplaced));
        if let Some(c) = out.class {
            report.events.push((rule_index, Event::ClassRejected(c)));
        }
        if let Some(rule) = self.bulkhead.config.rules.get(rule_index) {
            report
                .wakes
                .push(Wake::Reply(out.context, Self::reply(rule, "displaced")));
        }
        true
    }

    /// A stream ended, however it ended (response done, reset, client abort, local reply,
    /// timeout). Idempotent: only the first call for a context does anything.
    pub fn on_stream_end(
        &mut self,
        context: u32,
        store: &dyn SharedStore,
        clock: impl Clock,
    ) -> Report {
        let mut report = Report::default();
        if let Some(permit) = self.held.remove(&context) {
            let rule = permit.rule;
            self.release(permit, store, &mut report);
            if self.queues.get(rule).is_some_and(|q| !q.is_empty()) {
                self.serve_queue(rule, store, clock.read(), &mut report);
            }
        } else {
            for (rule, q) in self.queues.iter_mut().enumerate() {
                if let Some(pos) = q.iter().position(|w| w.context == context) {
                    q.remove(pos);
                    report.events.push((rule, Event::WaitAbandoned));
                    break;
                }
            }
        }
        report
    }

    fn release(&mut self, permit: Permit, store: &dyn SharedStore, report: &mut Report) {
        match permits::release(
            store,
            &permit.key,
            permit.holder,
            &self.view,
            RELEASE_ATTEMPTS,
        ) {
            Ok(done) => {
                // `NotHeld`: our slot was reclaimed while we held it; the permit already stopped
                // counting. Either way it is gone now.
                let _: Release = done.output;
                report.events.push((permit.rule, Event::Released));
            }
            Err(_) => {
                report.events.push((permit.rule, Event::ReleaseDeferred));
                self.pending.push(permit);
            }
        }
    }

    /// Expire overdue waiters of `rule`, then admit the rest in FIFO order while permits last.
    fn serve_queue(
        &mut self,
        rule_index: usize,
        store: &dyn SharedStore,
        now: Timestamp,
        report: &mut Report,
    ) {
        let Some(rule) = self.bulkhead.config.rules.get(rule_index) else {
            return;
        };
        let Some(max_wait) = rule.max_wait else {
            return;
        };
        let Some(queue) = self.queues.get_mut(rule_index) else {
            return;
        };
        if queue.is_empty() {
            return;
        }
        let mut kept = VecDeque::with_capacity(queue.len());
        // Partitions found full, with the threshold they were full at: a waiter of a threshold
        // no higher is full too. The queue is in class order, highest first, so a lower class
        // never takes a permit a higher one of its partition could not.
        let mut full_keys: Vec<(String, u32)> = Vec::new();
        let mut store_down = false;
        while let Some(w) = queue.pop_front() {
            let waited = now.saturating_since(w.since);
            if waited >= max_wait {
                report.events.push((rule_index, Event::WaitExpired(waited)));
                if let Some(c) = w.class {
                    report.events.push((rule_index, Event::ClassRejected(c)));
                }
                report
                    .wakes
                    .push(Wake::Reply(w.context, Self::reply(rule, "expired")));
                continue;
            }
            let Some(me) = self.me else {
                kept.push_back(w);
                continue;
            };
            if store_down
                || full_keys
                    .iter()
                    .any(|(k, limit)| *k == w.key && w.level.limit <= *limit)
            {
                kept.push_back(w);
                continue;
            }
            match permits::try_acquire(
                store,
                &w.key,
                me,
                &self.view,
                w.level.limit,
                ACQUIRE_ATTEMPTS,
            ) {
                Ok(done) => match done.output {
                    Acquire::Granted { .. } => {
                        report
                            .events
                            .push((rule_index, Event::WaitAdmitted(waited)));
                        if let Some(c) = w.class {
                            report.events.push((rule_index, Event::ClassAdmitted(c)));
                        }
                        report.wakes.push(Wake::Resume(w.context));
                        self.held.insert(
                            w.context,
                            Permit {
                                rule: rule_index,
                                key: w.key,
                                holder: me,
                            },
                        );
                    }
                    Acquire::Full { .. } => {
                        full_keys.push((w.key.clone(), w.level.limit));
                        kept.push_back(w);
                    }
                },
                Err(_) => {
                    // Leave them waiting; they are retried next tick or expire.
                    store_down = true;
                    report.events.push((rule_index, Event::StoreFailure));
                    kept.push_back(w);
                }
            }
        }
        *queue = kept;
    }

    /// Periodic work: claim or keep our slot, retry deferred releases, serve every wait queue.
    pub fn on_tick(&mut self, store: &dyn SharedStore, now: Timestamp) -> Report {
        let mut report = Report::default();
        self.ensure_slot(store, &Lazy::new(&now), &mut report);
        if let Some(me) = self.me {
            if now >= self.next_heartbeat {
                let cfg = &self.bulkhead.config;
                match permits::heartbeat(
                    store,
                    REGISTRY_KEY,
                    me,
                    now,
                    cfg.worker_timeout,
                    ACQUIRE_ATTEMPTS,
                ) {
                    Ok(Heartbeat::Alive(view)) => {
                        self.view = view;
                        self.next_heartbeat = now.saturating_add(self.heartbeat_period());
                    }
                    Ok(Heartbeat::Lost) => {
                        report.worker_events.push(WorkerEvent::SlotLost(me));
                        self.me = None;
                        self.next_claim = Timestamp::ZERO;
                        self.ensure_slot(store, &Lazy::new(&now), &mut report);
                    }
                    Err(e) => report
                        .worker_events
                        .push(WorkerEvent::RegistryFailure(e.to_string())),
                }
            }
        }
        for permit in std::mem::take(&mut self.pending) {
            self.release(permit, store, &mut report);
        }
        // A failed retry re-queued itself as `ReleaseDeferred`; only report it once per permit.
        report.events.retain(|(_, e)| *e != Event::ReleaseDeferred);
        for rule in 0..self.queues.len() {
            self.serve_queue(rule, store, now, &mut report);
        }
        report
    }

    /// The worker is going away (graceful VM shutdown): give its slot back so it can be reused
    /// at once. Permits still held (there should be none after drain) stop counting.
    pub fn shutdown(&mut self, store: &dyn SharedStore) -> Result<(), String> {
        match self.me.take() {
            Some(me) => permits::release_slot(store, REGISTRY_KEY, me, RELEASE_ATTEMPTS)
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod priority_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::store::Version;
    use palisade_core::testing::{FakeRequest, FakeStore};
    use palisade_core::StoreError;

    fn config(json: &str) -> Config {
        Config::parse(json.as_bytes()).unwrap()
    }

    fn worker(json: &str) -> Worker {
        Worker::new(Bulkhead::new(config(json)))
    }

    const TWO: &str = r#"{"rules": [{"name": "b", "max_concurrent": 2}]}"#;
    const WAIT: &str =
        r#"{"rules": [{"name": "b", "max_concurrent": 1, "max_wait": "100ms", "max_waiting": 2}]}"#;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + ms)
    }

    fn target(w: &Worker, req: &FakeRequest) -> Option<Target> {
        w.bulkhead().classify(req, &mut || Some("backend".into()))
    }

    fn any_target(w: &Worker) -> Option<Target> {
        target(w, &FakeRequest::new("GET", "/"))
    }

    /// An empty store, a worker on `json`, and the target of a plain request.
    fn fixture(json: &str) -> (FakeStore, Worker, Option<Target>) {
        let w = worker(json);
        let tg = any_target(&w);
        (FakeStore::new(), w, tg)
    }

    /// What a request for `tg` on stream `c` at `ms` gets.
    fn ask(w: &mut Worker, store: &FakeStore, tg: &Option<Target>, c: u32, ms: u64) -> Admission {
        w.on_request(c, tg.clone(), store, t(ms)).0
    }

    fn in_flight(store: &FakeStore, w: &Worker, key: &str) -> u64 {
        // A fresh view, as a third worker would see it.
        let (_, view) =
            permits::claim(store, REGISTRY_KEY, 64, t(0), Duration::from_secs(10), 8).unwrap();
        let _ = w;
        permits::in_flight(store, key, &view).unwrap()
    }

    const KEY: &str = "p/b/1/0";

    #[test]
    fn requests_beyond_the_limit_are_rejected_with_503_and_the_full_header() {
        let (store, mut w, tg) = fixture(TWO);
        assert_eq!(ask(&mut w, &store, &tg, 1, 0), Admission::Continue);
        assert_eq!(ask(&mut w, &store, &tg, 2, 0), Admission::Continue);
        let (adm, report) = w.on_request(3, tg, &store, t(0));
        let Admission::Reject(reply) = adm else {
            panic!("{adm:?}")
        };
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header_value(HEADER), Some("full"));
        assert_eq!(report.events, vec![(0, Event::Rejected)]);
        assert_eq!(in_flight(&store, &w, KEY), 2);
    }

    #[test]
    fn release_happens_exactly_once_whichever_end_callbacks_fire() {
        // Every way a stream can end reaches the glue as some subset of on_done, on_log and the
        // context's drop, each calling on_stream_end; only the first may release.
        let end_paths: [&[&str]; 4] = [
            &["done", "log", "drop"], // response complete / upstream reset / timeout
            &["log", "done", "drop"], // another callback order
            &["drop"],                // VM tore the context down without callbacks
            &["done", "done", "log", "log"],
        ];
        for path in end_paths {
            let (store, mut w, tg) = fixture(TWO);
            w.on_request(1, tg.clone(), &store, t(0));
            w.on_request(2, tg, &store, t(0));
            let mut released = 0;
            for _ in path {
                let r = w.on_stream_end(1, &store, t(5));
                released += r
                    .events
                    .iter()
                    .filter(|(_, e)| *e == Event::Released)
                    .count();
            }
            assert_eq!(released, 1, "{path:?}");
            assert_eq!(in_flight(&store, &w, KEY), 1, "{path:?}");
            assert_eq!(w.held(), 1);
        }
    }

    #[test]
    fn a_rejected_or_unmatched_stream_releases_nothing_when_it_ends() {
        let store = FakeStore::new();
        let mut w = worker(
            r#"{"rules": [{"name": "b", "match": {"path_prefix": "/api"}, "max_concurrent": 1}]}"#,
        );
        let api = target(&w, &FakeRequest::new("GET", "/api/x"));
        let other = target(&w, &FakeRequest::new("GET", "/other"));
        assert_eq!(other, None);
        w.on_request(1, api.clone(), &store, t(0));
        assert!(matches!(
            w.on_request(2, api, &store, t(0)).0,
            Admission::Reject(_)
        ));
        w.on_request(3, other, &store, t(0));
        assert_eq!(w.on_stream_end(2, &store, t(1)), Report::default());
        assert_eq!(w.on_stream_end(3, &store, t(1)), Report::default());
        assert_eq!(in_flight(&store, &w, "p/b/1/0"), 1);
        w.on_stream_end(1, &store, t(1));
        assert_eq!(in_flight(&store, &w, "p/b/1/0"), 0);
    }

    #[test]
    fn permits_are_counted_exactly_under_injected_cas_conflicts() {
        let (store, mut w, tg) = fixture(TWO);
        w.on_request(1, None, &store, t(0)); // nothing; claim happens with the first match
        store.inject_conflicts(5);
        assert_eq!(ask(&mut w, &store, &tg, 1, 0), Admission::Continue);
        store.inject_conflicts(5);
        assert_eq!(ask(&mut w, &store, &tg, 2, 0), Admission::Continue);
        store.inject_conflicts(5);
        assert!(matches!(
            w.on_request(3, tg, &store, t(0)).0,
            Admission::Reject(_)
        ));
        store.inject_conflicts(7);
        w.on_stream_end(1, &store, t(1));
        store.inject_conflicts(7);
        w.on_stream_end(2, &store, t(1));
        assert_eq!(in_flight(&store, &w, KEY), 0);
        assert_eq!(w.pending_releases(), 0);
    }

    #[test]
    fn a_release_that_loses_every_cas_is_retried_on_tick_until_written() {
        let (store, mut w, tg) = fixture(TWO);
        w.on_request(1, tg, &store, t(0));
        store.inject_conflicts(RELEASE_ATTEMPTS);
        let r = w.on_stream_end(1, &store, t(1));
        assert_eq!(r.events, vec![(0, Event::ReleaseDeferred)]);
        assert_eq!(w.pending_releases(), 1);
        assert_eq!(in_flight(&store, &w, KEY), 1);
        // Ending the stream again must not release twice later.
        assert_eq!(w.on_stream_end(1, &store, t(2)), Report::default());
        let r = w.on_tick(&store, t(3));
        assert!(r.events.contains(&(0, Event::Released)));
        assert_eq!(w.pending_releases(), 0);
        assert_eq!(in_flight(&store, &w, KEY), 0);
        // And the tick after that has nothing left to do.
        assert!(w.on_tick(&store, t(4)).events.is_empty());
    }

    #[test]
    fn a_full_partition_queues_waiters_in_fifo_order_and_hands_over_on_release() {
        let (store, mut w, tg) = fixture(WAIT);
        assert_eq!(ask(&mut w, &store, &tg, 1, 0), Admission::Continue);
        assert_eq!(ask(&mut w, &store, &tg, 2, 1), Admission::Wait);
        assert_eq!(ask(&mut w, &store, &tg, 3, 2), Admission::Wait);
        // The queue holds 2: the next one is rejected at once.
        let (adm, rep) = w.on_request(4, tg, &store, t(3));
        assert!(matches!(adm, Admission::Reject(_)));
        assert_eq!(rep.events, vec![(0, Event::Rejected)]);
        // Stream 1 ends: stream 2 (first in) gets the permit, in the same callback.
        let r = w.on_stream_end(1, &store, t(20));
        assert_eq!(r.wakes, vec![Wake::Resume(2)]);
        assert!(r
            .events
            .contains(&(0, Event::WaitAdmitted(Duration::from_millis(19)))));
        assert_eq!(in_flight(&store, &w, KEY), 1);
        let r = w.on_stream_end(2, &store, t(30));
        assert_eq!(r.wakes, vec![Wake::Resume(3)]);
        w.on_stream_end(3, &store, t(40));
        assert_eq!(in_flight(&store, &w, KEY), 0);
    }

    #[test]
    fn a_new_request_does_not_overtake_a_waiter_of_its_partition() {
        let (store, mut w, tg) = fixture(WAIT);
        w.on_request(1, tg.clone(), &store, t(0));
        w.on_request(2, tg.clone(), &store, t(1));
        // Permit freed on another worker (simulated: our holder's entry is emptied by a release
        // that this worker's queue did not see yet).
        let holder = w.id().unwrap();
        let (_, view) =
            permits::claim(&store, REGISTRY_KEY, 64, t(0), Duration::from_secs(10), 8).unwrap();
        permits::release(&store, KEY, holder, &view, 8).unwrap();
        assert_eq!(w.on_request(3, tg, &store, t(2)).0, Admission::Wait);
        let r = w.on_tick(&store, t(3));
        assert_eq!(r.wakes, vec![Wake::Resume(2)]);
    }

    #[test]
    fn waiters_expire_after_max_wait_with_a_503() {
        let (store, mut w, tg) = fixture(WAIT);
        w.on_request(1, tg.clone(), &store, t(0));
        w.on_request(2, tg, &store, t(0));
        assert!(w.on_tick(&store, t(99)).wakes.is_empty());
        let r = w.on_tick(&store, t(100));
        let [Wake::Reply(2, reply)] = r.wakes.as_slice() else {
            panic!("{:?}", r.wakes)
        };
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header_value(HEADER), Some("expired"));
        assert!(r
            .events
            .contains(&(0, Event::WaitExpired(Duration::from_millis(100)))));
        // The expired stream's end (after its reply) releases nothing.
        assert_eq!(w.on_stream_end(2, &store, t(101)), Report::default());
        assert_eq!(in_flight(&store, &w, KEY), 1);
    }

    #[test]
    fn a_waiter_whose_client_goes_away_leaves_the_queue_without_taking_a_permit() {
        let (store, mut w, tg) = fixture(WAIT);
        w.on_request(1, tg.clone(), &store, t(0));
        w.on_request(2, tg, &store, t(0));
        let r = w.on_stream_end(2, &store, t(10));
        assert_eq!(r.events, vec![(0, Event::WaitAbandoned)]);
        assert_eq!(w.waiting(), 0);
        let r = w.on_stream_end(1, &store, t(11));
        assert!(r.wakes.is_empty());
        assert_eq!(in_flight(&store, &w, KEY), 0);
    }

    #[test]
    fn waiters_on_one_worker_get_permits_freed_on_another_at_the_next_tick() {
        let (store, mut a, tg) = fixture(WAIT);
        let mut b = worker(WAIT);
        assert_eq!(
            a.on_request(1, tg.clone(), &store, t(0)).0,
            Admission::Continue
        );
        assert_eq!(b.on_request(1, tg.clone(), &store, t(1)).0, Admission::Wait);
        assert_ne!(a.id(), b.id());
        // A's stream ends; A has no waiter, so the permit goes back to the pool.
        assert!(a.on_stream_end(1, &store, t(5)).wakes.is_empty());
        assert_eq!(b.on_tick(&store, t(10)).wakes, vec![Wake::Resume(1)]);
        assert_eq!(in_flight(&store, &a, KEY), 1);
        b.on_stream_end(1, &store, t(20));
        assert_eq!(in_flight(&store, &a, KEY), 0);
    }

    #[test]
    fn shadow_rules_count_and_mark_but_never_reject_or_wait() {
        let store = FakeStore::new();
        let mut w = worker(
            r#"{"rules": [{"name": "s", "max_concurrent": 1, "shadow": true, "max_wait": "1s"}]}"#,
        );
        let tg = any_target(&w);
        assert_eq!(ask(&mut w, &store, &tg, 1, 0), Admission::Continue);
        let (adm, rep) = w.on_request(2, tg, &store, t(0));
        assert_eq!(adm, Admission::ContinueShadow(0));
        assert_eq!(rep.events, vec![(0, Event::ShadowRejected)]);
        // The shadow-admitted stream holds no permit.
        assert_eq!(w.held(), 1);
        assert_eq!(w.on_stream_end(2, &store, t(1)), Report::default());
    }

    #[test]
    fn store_failures_apply_the_failure_mode() {
        for (mode, reject) in [("allow", false), ("deny", true)] {
            let store = FakeStore::new();
            let mut w = worker(&format!(
                r#"{{"failure_mode": "{mode}", "rules": [{{"name": "b", "max_concurrent": 1}}]}}"#
            ));
            let tg = any_target(&w);
            store.fail_with(StoreError::Host("InternalFailure".into()));
            let (adm, rep) = w.on_request(1, tg, &store, t(0));
            assert_eq!(matches!(adm, Admission::Reject(_)), reject, "{mode}");
            assert_eq!(rep.events, vec![(0, Event::StoreFailure)]);
            assert_eq!(rep.worker_events.len(), 1);
            assert_eq!(w.held(), 0);
        }
    }

    #[test]
    fn a_rules_own_failure_mode_overrides_the_top_level_one_on_store_failures() {
        let store = FakeStore::new();
        let mut w = worker(
            r#"{"failure_mode": "allow", "rules": [{"name": "b", "max_concurrent": 1, "failure_mode": "deny"}]}"#,
        );
        let tg = any_target(&w);
        store.fail_with(StoreError::Host("InternalFailure".into()));
        let (adm, rep) = w.on_request(1, tg, &store, t(0));
        assert!(matches!(adm, Admission::Reject(_)), "{adm:?}");
        assert_eq!(rep.events, vec![(0, Event::StoreFailure)]);
    }

    #[test]
    fn without_a_free_worker_slot_the_failure_mode_applies_and_claiming_is_retried() {
        let store = FakeStore::new();
        let json = r#"{"max_workers": 1, "rules": [{"name": "b", "max_concurrent": 5}]}"#;
        let mut a = worker(json);
        let mut b = worker(json);
        let tg = any_target(&a);
        assert_eq!(
            a.on_request(1, tg.clone(), &store, t(0)).0,
            Admission::Continue
        );
        let (adm, rep) = b.on_request(1, tg.clone(), &store, t(0));
        assert_eq!(adm, Admission::Continue);
        assert_eq!(rep.worker_events, vec![WorkerEvent::NoFreeSlot]);
        assert_eq!(b.held(), 0);
        // A shuts down gracefully; B's next attempt (after the retry delay) gets the slot.
        a.shutdown(&store).unwrap();
        let r = b.on_tick(&store, t(1_000));
        assert!(matches!(
            r.worker_events.as_slice(),
            [WorkerEvent::SlotClaimed(_)]
        ));
        b.on_request(2, tg, &store, t(1_001));
        assert_eq!(b.held(), 1);
    }

    #[test]
    fn a_dead_worker_does_not_keep_the_partition_full() {
        let (store, mut dead, tg) = fixture(TWO);
        let mut alive = worker(TWO);
        dead.on_request(1, tg.clone(), &store, t(0));
        dead.on_request(2, tg.clone(), &store, t(0));
        assert!(matches!(
            alive.on_request(1, tg.clone(), &store, t(0)).0,
            Admission::Reject(_)
        ));
        // `dead` never ticks again; `alive` keeps its heartbeat.
        for s in 1..=11 {
            alive.on_tick(&store, t(s * 1_000));
        }
        assert_eq!(
            alive.on_request(2, tg, &store, t(11_001)).0,
            Admission::Continue
        );
    }

    #[test]
    fn a_worker_that_lost_its_slot_reclaims_one_and_old_permits_release_harmlessly() {
        let store = FakeStore::new();
        let json = r#"{"max_workers": 1, "rules": [{"name": "b", "max_concurrent": 1}]}"#;
        let mut slow = worker(json);
        let tg = any_target(&slow);
        slow.on_request(1, tg.clone(), &store, t(0));
        let old = slow.id().unwrap();
        // Someone else takes the slot while `slow` stalls past the timeout, then dies too.
        let (heir, _) = permits::claim(
            &store,
            REGISTRY_KEY,
            1,
            t(20_000),
            Duration::from_secs(10),
            8,
        )
        .unwrap();
        permits::release_slot(&store, REGISTRY_KEY, heir, 8).unwrap();
        let r = slow.on_tick(&store, t(20_001));
        assert_eq!(r.worker_events[0], WorkerEvent::SlotLost(old));
        assert!(matches!(r.worker_events[1], WorkerEvent::SlotClaimed(_)));
        assert_ne!(slow.id(), Some(old));
        // The old permit stopped counting; a new request is admitted; the old release is safe.
        assert_eq!(
            slow.on_request(2, tg, &store, t(20_002)).0,
            Admission::Continue
        );
        slow.on_stream_end(1, &store, t(20_003));
        assert_eq!(in_flight(&store, &slow, KEY), 1);
        slow.on_stream_end(2, &store, t(20_004));
        assert_eq!(in_flight(&store, &slow, KEY), 0);
    }

    #[test]
    fn partitions_by_route_cluster_header_and_path_prefix() {
        let w = worker(
            r#"{"rules": [
              {"name": "api", "match": {"path_prefix": "/api/"}, "max_concurrent": 1},
              {"name": "tenant", "partition_by": {"header": "x-tenant"}, "match": {"headers": [{"name": "x-tenant"}]}, "max_concurrent": 1, "max_partitions": 1024},
              {"name": "cl", "cluster": "slow", "max_concurrent": 1},
              {"name": "route", "partition_by": "route", "max_concurrent": 1}
            ]}"#,
        );
        let classify = |req: FakeRequest, cluster: &str| {
            let cluster = cluster.to_owned();
            w.bulkhead().classify(&req, &mut || Some(cluster.clone()))
        };
        let api = classify(FakeRequest::new("GET", "/api/v1"), "x").unwrap();
        assert_eq!((api.rule, api.key.as_str()), (0, "p/api/1/0"));
        let t1 = classify(FakeRequest::new("GET", "/").header("x-tenant", "a"), "x").unwrap();
        let t2 = classify(FakeRequest::new("GET", "/").header("x-tenant", "b"), "x").unwrap();
        let t1b = classify(FakeRequest::new("GET", "/z").header("x-tenant", "a"), "x").unwrap();
        assert_eq!(t1.rule, 1);
        assert_ne!(t1.key, t2.key);
        assert_eq!(t1.key, t1b.key);
        let cl = classify(FakeRequest::new("GET", "/"), "slow").unwrap();
        assert_eq!(cl.rule, 2);
        let r1 = classify(FakeRequest::new("GET", "/").route("one"), "x").unwrap();
        let r2 = classify(FakeRequest::new("GET", "/").route("two"), "x").unwrap();
        assert_eq!((r1.rule, r2.rule), (3, 3));
        assert_ne!(r1.key, r2.key);
    }

    #[test]
    fn the_cluster_is_read_only_when_a_rule_needs_it() {
        let w = worker(TWO);
        let mut calls = 0;
        w.bulkhead()
            .classify(&FakeRequest::new("GET", "/"), &mut || {
                calls += 1;
                None
            });
        assert_eq!(calls, 0);
    }

    #[test]
    fn keys_stay_bounded_however_many_partition_values_arrive() {
        let store = FakeStore::new();
        let mut w = worker(
            r#"{"rules": [{"name": "t", "partition_by": {"header": "x-t"}, "max_partitions": 8, "max_concurrent": 1}]}"#,
        );
        for i in 0..500u32 {
            let req = FakeRequest::new("GET", "/").header("x-t", &i.to_string());
            let tg = target(&w, &req);
            w.on_request(i, tg, &store, t(0));
            w.on_stream_end(i, &store, t(1));
        }
        // 8 partition slots + the worker registry.
        assert!(store.key_count() <= 9, "{}", store.key_count());
    }

    #[test]
    fn the_hot_path_does_not_read_the_clock() {
        let (store, mut w, tg) = fixture(TWO);
        let reads = std::cell::Cell::new(0);
        let clock = || {
            reads.set(reads.get() + 1);
            t(0)
        };
        // The first request claims the worker slot: one read.
        w.on_request(1, tg.clone(), &store, clock);
        assert_eq!(reads.get(), 1);
        w.on_stream_end(1, &store, clock);
        w.on_request(2, tg, &store, clock);
        w.on_stream_end(2, &store, clock);
        assert_eq!(reads.get(), 1);
        assert!(!w.tracks(2));
    }

    #[test]
    fn nothing_is_claimed_before_the_first_request_or_tick() {
        // Envoy runs on_configure in a throwaway canary VM: building a Worker must not write.
        let store = FakeStore::new();
        let _w = worker(TWO);
        assert_eq!(store.get(REGISTRY_KEY).unwrap().version, Version::Absent);
    }
}
