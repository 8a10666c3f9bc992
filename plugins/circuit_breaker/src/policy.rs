//! Rules → breaker keys → breakers in shared data → decisions.
//!
//! ## One CAS per step
//! A breaker (phase, window, probe leases) is one shared-data value (see [`crate::state`]).
//! Admission in the closed state only *reads* it (no write: the hot path is one
//! `get_shared_data`); admission in open/half-open and every recorded outcome is one
//! read-modify-CAS through [`palisade_core::store::update`], retried a bounded number of times.
//! A rule with `success_batching` (opt-in) lets each worker batch clean successes and trust a
//! closed state it read less than `max_delay` ago; failures, slow calls and probes still go
//! straight to shared data, preceded by the worker's pending successes in the same CAS.
//!
//! ## Bounded keys
//! Envoy never frees shared-data keys, and breaker keys can come from requests (a header, a path).
//! Each rule therefore owns a fixed table of `max_breakers` slots ([`palisade_core::slots`]); a
//! breaker key is hashed (FNV-1a) to a slot, and the slot remembers the hash of the key that owns it. A different key
//! landing on an owned slot takes it over if the breaker there is closed with an empty window
//! (nothing is lost); otherwise the two keys **share** that breaker until it is idle again, and each
//! such call counts a `collisions` metric. Sharing is the conservative overflow: a shared breaker
//! can open on the other key's failures, never stay closed on them. So a rule writes at most
//! `max_breakers` keys, ever: `palisade/circuit_breaker/<scope>/<rule>/<window>/p<probes>/n<max>/<slot>`.
//! The window shape and probe budget are part of the key, so a config change that alters them
//! starts from fresh (closed) breakers instead of misreading old bytes.
//!
//! ## Failure mode
//! If shared data cannot be read or updated (CAS conflicts beyond the bound, a host error), the
//! rule's `failure_mode` decides admission: `allow` (default: a breaker that cannot see its state
//! must not take the service down) or `deny` (503). A lost outcome is only counted
//! (`store_failures`).

use crate::config::{BreakerKey, Config, FailureMode, Mode, Rule};
use crate::outcome::{classify, ResponseFacts, Verdict};
use crate::state::{Admission, Breaker, Header, Permit, Phase, Recorded, Transition};
use palisade_core::key::{url_path, RequestView};
use palisade_core::slots::{claim, Claim, SlotTable};
use palisade_core::store::{update, Step, DEFAULT_MAX_ATTEMPTS};
use palisade_core::{Decision, LocalReply, SharedStore, Timestamp};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The request as a breaker sees it: the usual view plus the upstream cluster chosen by the route.
pub trait BreakerRequest: RequestView {
    /// `xds.cluster_name`: the route is resolved before filters run, so this is known at
    /// request-headers time.
    fn cluster_name(&self) -> Option<String>;
}

/// Tests and benchmarks drive the policy with core's fake request.
impl BreakerRequest for palisade_core::testing::FakeRequest {
    fn cluster_name(&self) -> Option<String> {
        self.cluster_name.clone()
    }
}

/// Response header on every reply of an open (or saturated half-open) breaker.
pub const CIRCUIT_HEADER: &str = "x-palisade-circuit";

/// What happened, for the per-rule counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Admitted,
    Rejected,
    /// Would have been rejected, but the rule is `metrics_only`.
    ShadowRejected,
    StoreFailure,
    SkippedMissingKey,
    Collision,
    ProbeExpired,
    Success,
    Failure,
    Slow,
    /// The call said nothing about the upstream (the client left first): not recorded.
    Ignored,
    /// The call was classified (and counted as success or failure) but not recorded, because the
    /// breaker changed state while it was in flight, or its probe lease had expired.
    Stale,
    Transition(Transition),
}

/// One breaker: which rule, which slot, and the key it was reached by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerRef {
    pub rule: usize,
    pub slot: u64,
    pub hash: u64,
    /// The breaker key's value (cluster name, header value…), for the gauge's name.
    pub key: String,
    store_key: String,
}

impl BreakerRef {
    pub fn store_key(&self) -> &str {
        &self.store_key
    }
}

/// An admitted call whose outcome is still to be recorded; the filter keeps it on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub breaker: BreakerRef,
    /// `None` for `forced_closed` rules: the outcome is counted but not stored.
    pub permit: Option<Permit>,
    pub started: Timestamp,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitVerdict {
    pub decision: Decision,
    pub ticket: Option<Ticket>,
    /// The rule that matched, if any (events are counted against it).
    pub rule: Option<usize>,
    pub breaker: Option<BreakerRef>,
    pub events: Vec<Event>,
    /// The breaker's phase as this request found (or left) it, for the gauge.
    pub phase: Option<Phase>,
}

/// The result of recording one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordVerdict {
    pub events: Vec<Event>,
    pub phase: Option<Phase>,
}

/// What one worker keeps for a breaker when its rule batches successes: never shared, so it
/// lives in the worker's own [`Breakers`].
#[derive(Debug, Clone)]
struct LocalEntry {
    breaker: BreakerRef,
    /// The last closed header this worker read or wrote, and when.
    header: Option<(Header, u64)>,
    /// Clean successes not yet written, all admitted in closed epoch `pending_epoch`.
    pending: u32,
    pending_epoch: u32,
    pending_since_ms: u64,
}

/// The breakers of one configuration, as one worker sees them.
#[derive(Debug)]
pub struct Breakers {
    config: Config,
    /// Per rule: `max_breakers` slots under `<rule>/<window>/p<probes>/n<max_breakers>/`.
    tables: Vec<SlotTable>,
    /// Per-worker batching state, by shared-data key (bounded by the rules' `max_breakers`).
    /// A mutex only so that tests can share a `Breakers` between threads; a VM is single-threaded.
    local: Mutex<HashMap<String, LocalEntry>>,
}

/// Pending successes taken out of a worker's batch, to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    epoch: u32,
    n: u32,
}

fn ms(t: Timestamp) -> u64 {
    t.as_millis()
}

fn ms_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

fn first_segments(path: &str, n: u32) -> String {
    let p = url_path(path);
    let mut end = p.len();
    let mut seen = 0;
    for (i, c) in p.char_indices().skip(1) {
        if c == '/' {
            seen += 1;
            if seen == n {
                end = i;
                break;
            }
        }
    }
    p.get(..end).unwrap_or(p).to_owned()
}

impl Breakers {
    pub fn new(config: Config) -> Self {
        let tables = config
            .rules
            .iter()
            .map(|r| {
                let prefix = format!(
                    "{}/{}/p{}/n{}/",
                    r.name,
                    r.thresholds.window.tag(),
                    r.thresholds.permitted_calls_in_half_open,
                    r.max_breakers
                );
                SlotTable::new(prefix, u64::from(r.max_breakers))
            })
            .collect();
        Breakers {
            config,
            tables,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn local(&self) -> MutexGuard<'_, HashMap<String, LocalEntry>> {
        self.local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A closed header this worker may trust without reading shared data.
    fn cached_closed(&self, breaker: &BreakerRef, rule: &Rule, now_ms: u64) -> Option<Header> {
        let batching = rule.batching?;
        let local = self.local();
        let (header, at) = local.get(breaker.store_key())?.header?;
        let fresh = now_ms.saturating_sub(at) < ms_of(batching.max_delay) && now_ms >= at;
        (fresh && header.phase == Phase::Closed).then_some(header)
    }

    fn remember(&self, breaker: &BreakerRef, rule: &Rule, header: Option<Header>, now_ms: u64) {
        if rule.batching.is_none() {
            return;
        }
        let mut local = self.local();
        let entry = local
            .entry(breaker.store_key().to_owned())
            .or_insert_with(|| LocalEntry {
                breaker: breaker.clone(),
                header: None,
                pending: 0,
                pending_epoch: 0,
                pending_since_ms: now_ms,
            });
        entry.header = header.map(|h| (h, now_ms));
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn key_value(rule: &Rule, req: &dyn BreakerRequest) -> Option<String> {
        match &rule.key {
            BreakerKey::Cluster => req.cluster_name(),
            BreakerKey::Route => req.route_name(),
            BreakerKey::Header(name) => req.header(name),
            BreakerKey::PathSegments(n) => req.path().map(|p| first_segments(&p, *n)),
            BreakerKey::Constant(c) => Some(c.clone()),
        }
        .filter(|k| !k.is_empty())
    }

    /// The breaker a request belongs to: the first matching rule's, if the request has its key.
    pub fn locate(&self, req: &dyn BreakerRequest) -> Result<Option<BreakerRef>, usize> {
        let Some((index, (rule, table))) = self
            .config
            .rules
            .iter()
            .zip(&self.tables)
            .enumerate()
            .find(|(_, (r, _))| r.matcher.matches(req))
        else {
            return Ok(None);
        };
        let key = Breakers::key_value(rule, req).ok_or(index)?;
        let slot = table.slot(&key);
        Ok(Some(BreakerRef {
            rule: index,
            slot: slot.index,
            hash: slot.hash,
            key,
            store_key: slot.store_key,
        }))
    }

    fn rule(&self, b: &BreakerRef) -> Option<&Rule> {
        self.config.rules.get(b.rule)
    }

    /// Decide for one request at `now`.
    pub fn admit(
        &self,
        req: &dyn BreakerRequest,
        store: &dyn SharedStore,
        now: Timestamp,
    ) -> AdmitVerdict {
        let mut v = AdmitVerdict {
            decision: Decision::Continue,
            ticket: None,
            rule: None,
            breaker: None,
            events: Vec::new(),
            phase: None,
        };
        let breaker = match self.locate(req) {
            Ok(Some(b)) => b,
            Ok(None) => return v,
            Err(rule) => {
                v.rule = Some(rule);
                v.events.push(Event::SkippedMissingKey);
                return v;
            }
        };
        v.rule = Some(breaker.rule);
        let Some(rule) = self.rule(&breaker) else {
            return v;
        };
        v.breaker = Some(breaker.clone());
        match rule.mode {
            Mode::ForcedOpen => {
                v.events.push(Event::Rejected);
                v.phase = Some(Phase::Open);
                v.decision = Decision::Reply(reject_reply(rule, "open", None));
                return v;
            }
            Mode::ForcedClosed => {
                v.events.push(Event::Admitted);
                v.phase = Some(Phase::Closed);
                v.ticket = Some(Ticket {
                    breaker,
                    permit: None,
                    started: now,
                });
                return v;
            }
            Mode::Normal | Mode::MetricsOnly => {}
        }
        let t = &rule.thresholds;
        let now_ms = ms(now);
        if let Some(h) = self.cached_closed(&breaker, rule, now_ms) {
            v.phase = Some(Phase::Closed);
            v.events.push(Event::Admitted);
            v.ticket = Some(Ticket {
                breaker,
                permit: Some(Permit {
                    epoch: h.epoch,
                    probe: None,
                }),
                started: now,
            });
            return v;
        }
        let result = update(
            store,
            breaker.store_key(),
            DEFAULT_MAX_ATTEMPTS,
            |current| {
                // Hot path: a closed breaker admits on its header alone, writing nothing.
                let header = Header::decode(current);
                match header {
                    None => {
                        let s = Breaker::fresh(&t.window, breaker.hash).admit(t, now_ms);
                        return Step::Keep((s, Phase::Closed, false));
                    }
                    Some(h) if h.phase == Phase::Closed => {
                        let permit = Permit {
                            epoch: h.epoch,
                            probe: None,
                        };
                        let s = crate::state::Stepped {
                            output: Admission::Allowed(permit),
                            changed: false,
                            transitions: Vec::new(),
                            expired_probes: 0,
                        };
                        return Step::Keep((s, Phase::Closed, h.owner != breaker.hash));
                    }
                    Some(_) => {}
                }
                let mut b = match Breaker::decode(current, &t.window) {
                    Some(b) => b,
                    None => Breaker::fresh(&t.window, breaker.hash),
                };
                let collision = b.owner != breaker.hash;
                let s = b.admit(t, now_ms);
                let phase = b.phase;
                if s.changed {
                    Step::Write(b.encode(), (s, phase, collision))
                } else {
                    Step::Keep((s, phase, collision))
                }
            },
        );
        let (stepped, phase, collision) = match result {
            Ok(done) => {
                let (stepped, phase, collision) = done.output;
                if phase == Phase::Closed {
                    let epoch = match stepped.output {
                        Admission::Allowed(p) => p.epoch,
                        Admission::Rejected { .. } => 0,
                    };
                    let header = Header {
                        owner: breaker.hash,
                        phase,
                        epoch,
                        open_until_ms: 0,
                    };
                    self.remember(&breaker, rule, Some(header), now_ms);
                }
                (stepped, phase, collision)
            }
            Err(e) => {
                log::debug!("circuit_breaker {}: {e}", rule.name);
                v.events.push(Event::StoreFailure);
                if rule.failure_mode == FailureMode::Deny && rule.mode == Mode::Normal {
                    v.events.push(Event::Rejected);
                    v.decision = Decision::Reply(reject_reply(rule, "unknown", None));
                }
                return v;
            }
        };
        v.phase = Some(phase);
        if collision {
            v.events.push(Event::Collision);
        }
        for _ in 0..stepped.expired_probes {
            v.events.push(Event::ProbeExpired);
        }
        v.events
            .extend(stepped.transitions.iter().map(|t| Event::Transition(*t)));
        match stepped.output {
            Admission::Allowed(permit) => {
                v.events.push(Event::Admitted);
                v.ticket = Some(Ticket {
                    breaker,
                    permit: Some(permit),
                    started: now,
                });
            }
            Admission::Rejected { .. } if rule.mode == Mode::MetricsOnly => {
                v.events.push(Event::ShadowRejected);
            }
            Admission::Rejected { retry_after } => {
                v.events.push(Event::Rejected);
                let state = if phase == Phase::HalfOpen {
                    "half-open"
                } else {
                    "open"
                };
                v.decision = Decision::Reply(reject_reply(rule, state, Some(retry_after)));
            }
        }
        v
    }

    /// Record how an admitted call ended. Call at most once per ticket.
    pub fn record(
        &self,
        ticket: &Ticket,
        facts: &ResponseFacts,
        store: &dyn SharedStore,
        now: Timestamp,
    ) -> RecordVerdict {
        let mut v = RecordVerdict {
            events: Vec::new(),
            phase: None,
        };
        let Some(rule) = self.rule(&ticket.breaker) else {
            return v;
        };
        let verdict = classify(rule, facts);
        match verdict {
            Verdict::Record(c) => {
                v.events.push(if c.failed {
                    Event::Failure
                } else {
                    Event::Success
                });
                if c.slow {
                    v.events.push(Event::Slow);
                }
            }
            Verdict::Ignore => v.events.push(Event::Ignored),
        }
        let Some(permit) = ticket.permit else {
            return v;
        };
        let now_ms = ms(now);
        let clean = matches!(verdict, Verdict::Record(c) if !c.failed && !c.slow);
        let pending = match rule.batching {
            Some(batching) if clean && permit.probe.is_none() => {
                let mut local = self.local();
                let Some(entry) = local.get_mut(ticket.breaker.store_key()) else {
                    drop(local);
                    return self.write(
                        rule,
                        &ticket.breaker,
                        None,
                        Some((permit, verdict)),
                        store,
                        now_ms,
                        v,
                    );
                };
                if entry.pending > 0 && entry.pending_epoch != permit.epoch {
                    // The breaker moved on since those calls were admitted.
                    for _ in 0..entry.pending {
                        v.events.push(Event::Stale);
                    }
                    entry.pending = 0;
                }
                if entry.pending == 0 {
                    entry.pending_epoch = permit.epoch;
                    entry.pending_since_ms = now_ms;
                }
                entry.pending += 1;
                let due = entry.pending >= batching.max_calls
                    || now_ms.saturating_sub(entry.pending_since_ms) >= ms_of(batching.max_delay);
                if !due {
                    return v;
                }
                let p = Pending {
                    epoch: entry.pending_epoch,
                    n: entry.pending,
                };
                entry.pending = 0;
                drop(local);
                return self.write(rule, &ticket.breaker, Some(p), None, store, now_ms, v);
            }
            Some(_) => self.take_pending(&ticket.breaker),
            None => None,
        };
        self.write(
            rule,
            &ticket.breaker,
            pending,
            Some((permit, verdict)),
            store,
            now_ms,
            v,
        )
    }

    fn take_pending(&self, breaker: &BreakerRef) -> Option<Pending> {
        let mut local = self.local();
        let entry = local.get_mut(breaker.store_key())?;
        let n = std::mem::take(&mut entry.pending);
        (n > 0).then_some(Pending {
            epoch: entry.pending_epoch,
            n,
        })
    }

    /// Write pending successes, then one call's outcome, in one compare-and-swap.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        rule: &Rule,
        breaker: &BreakerRef,
        pending: Option<Pending>,
        call: Option<(Permit, Verdict)>,
        store: &dyn SharedStore,
        now_ms: u64,
        mut v: RecordVerdict,
    ) -> RecordVerdict {
        let t = &rule.thresholds;
        let hash = breaker.hash;
        let result = update(
            store,
            breaker.store_key(),
            DEFAULT_MAX_ATTEMPTS,
            |current| {
                let mut b = Breaker::decode(current, &t.window)
                    .unwrap_or_else(|| Breaker::fresh(&t.window, hash));
                let idle = || b.phase == Phase::Closed && b.window.tally(now_ms).calls == 0;
                let mut changed = false;
                if claim(b.owner, hash, idle) == Claim::TakeOver {
                    b.owner = hash;
                    changed = true;
                }
                let mut transitions = Vec::new();
                let mut stale = 0u32;
                if let Some(p) = pending {
                    let s = b.record_successes(t, p.epoch, p.n, now_ms);
                    changed |= s.changed;
                    transitions.extend(s.transitions);
                    if s.output == Recorded::Stale {
                        stale += p.n;
                    }
                }
                match call {
                    Some((permit, Verdict::Record(c))) => {
                        let s = b.record(t, permit, c, now_ms);
                        changed |= s.changed;
                        transitions.extend(s.transitions);
                        if s.output == Recorded::Stale {
                            stale += 1;
                        }
                    }
                    Some((permit, Verdict::Ignore)) => changed |= b.release(permit),
                    None => {}
                }
                let out = (stale, transitions, b.header());
                if changed {
                    Step::Write(b.encode(), out)
                } else {
                    Step::Keep(out)
                }
            },
        );
        match result {
            Ok(done) => {
                let (stale, transitions, header) = done.output;
                for _ in 0..stale {
                    v.events.push(Event::Stale);
                }
                v.events
                    .extend(transitions.into_iter().map(Event::Transition));
                v.phase = Some(header.effective_phase(now_ms));
                self.remember(
                    breaker,
                    rule,
                    (header.phase == Phase::Closed).then_some(header),
                    now_ms,
                );
            }
            Err(e) => {
                log::debug!("circuit_breaker {}: {e}", rule.name);
                v.events.push(Event::StoreFailure);
            }
        }
        v
    }

    /// Write every batch of successes that has waited `max_delay` (call it from a timer, so a
    /// worker that goes quiet does not hold its successes). Returns `(rule, verdict)` pairs for
    /// the metrics and gauges.
    pub fn flush(
        &self,
        store: &dyn SharedStore,
        now: Timestamp,
    ) -> Vec<(BreakerRef, RecordVerdict)> {
        let now_ms = ms(now);
        let due: Vec<(BreakerRef, Pending)> = {
            let mut local = self.local();
            local
                .values_mut()
                .filter_map(|e| {
                    let rule = self.config.rules.get(e.breaker.rule)?;
                    let delay = ms_of(rule.batching?.max_delay);
                    if e.pending == 0 || now_ms.saturating_sub(e.pending_since_ms) < delay {
                        return None;
                    }
                    let p = Pending {
                        epoch: e.pending_epoch,
                        n: std::mem::take(&mut e.pending),
                    };
                    Some((e.breaker.clone(), p))
                })
                .collect()
        };
        due.into_iter()
            .filter_map(|(breaker, p)| {
                let rule = self.rule(&breaker)?;
                let v = RecordVerdict {
                    events: Vec::new(),
                    phase: None,
                };
                let v = self.write(rule, &breaker, Some(p), None, store, now_ms, v);
                Some((breaker, v))
            })
            .collect()
    }

    /// The phase the gauge should show for a breaker (an open breaker past its wait shows as
    /// half-open). `None` if the store cannot be read.
    pub fn observe(
        &self,
        breaker: &BreakerRef,
        store: &dyn SharedStore,
        now: Timestamp,
    ) -> Option<Phase> {
        let rule = self.rule(breaker)?;
        match rule.mode {
            Mode::ForcedOpen => return Some(Phase::Open),
            Mode::ForcedClosed => return Some(Phase::Closed),
            Mode::Normal | Mode::MetricsOnly => {}
        }
        let current = store.get(breaker.store_key()).ok()?;
        Some(
            Header::decode(&current.value)
                .map(|h| h.effective_phase(ms(now)))
                .unwrap_or(Phase::Closed),
        )
    }
}

fn reject_reply(rule: &Rule, state: &str, retry_after: Option<Duration>) -> LocalReply {
    let mut reply = LocalReply::new(rule.reply.status, "palisade_circuit_open")
        .for_rule(&rule.name)
        .header("content-type", rule.reply.content_type.clone())
        .header(CIRCUIT_HEADER, state)
        .body(rule.reply.body.clone());
    if let Some(d) = retry_after {
        reply = reply.header("retry-after", ceil_secs(d).to_string());
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::store::StoreError;
    use palisade_core::testing::{FakeRequest, FakeStore};
    use std::sync::Arc;

    fn to(cluster: &str) -> FakeRequest {
        FakeRequest::new("GET", "/a/b/c?x=1")
            .route("r1")
            .cluster(cluster)
    }

    fn breakers(extra: &str) -> Breakers {
        let probes = if extra.contains("permitted_calls_in_half_open") {
            ""
        } else {
            r#","permitted_calls_in_half_open":3"#
        };
        let json = format!(
            r#"{{"rules":[{{"name":"b","sliding_window_size":10,"minimum_number_of_calls":4,
                "wait_duration_in_open":"5s","half_open_probe_timeout":"10s",
                "slow_call_duration":"1s"{probes}{extra}}}]}}"#
        );
        Breakers::new(Config::parse(json.as_bytes()).unwrap())
    }

    fn facts(status: u16, ms: u64) -> ResponseFacts {
        ResponseFacts {
            status: Some(status),
            code_details: Some("via_upstream".into()),
            elapsed: Duration::from_millis(ms),
        }
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + ms)
    }

    /// One whole call: admit, and record `status` if admitted. Returns the admit verdict.
    fn call_with(b: &Breakers, s: &FakeStore, now: u64, status: u16) -> AdmitVerdict {
        let v = b.admit(&to("backend"), s, at(now));
        if let Some(t) = &v.ticket {
            b.record(t, &facts(status, 5), s, at(now));
        }
        v
    }

    /// A worker's breakers (`breakers(extra)`) whose `backend` breaker opened at 0, and their
    /// store.
    fn opened(extra: &str) -> (FakeStore, Breakers) {
        let (s, b) = (FakeStore::new(), breakers(extra));
        open(&b, &s, 0);
        (s, b)
    }

    /// `tries` calls to `backend` at `now`: the tickets of those admitted.
    fn probes(b: &Breakers, s: &FakeStore, now: u64, tries: usize) -> Vec<Ticket> {
        (0..tries)
            .filter_map(|_| b.admit(&to("backend"), s, at(now)).ticket)
            .collect()
    }

    /// Each of these calls succeeds (200 in 5 ms), reported at `now`.
    fn succeed(b: &Breakers, s: &FakeStore, tickets: &[Ticket], now: u64) {
        for t in tickets {
            b.record(t, &facts(200, 5), s, at(now));
        }
    }

    /// Whether a call to `backend` at `now` would be let through.
    fn admits(b: &Breakers, s: &FakeStore, now: u64) -> bool {
        b.admit(&to("backend"), s, at(now)).decision.is_continue()
    }

    fn open(b: &Breakers, s: &FakeStore, now: u64) {
        for _ in 0..4 {
            call_with(b, s, now, 503);
        }
        assert_eq!(b.admit(&to("backend"), s, at(now)).phase, Some(Phase::Open));
    }

    #[test]
    fn the_default_key_is_the_cluster_and_others_can_be_chosen() {
        let r = to("backend");
        assert_eq!(breakers("").locate(&r).unwrap().unwrap().key, "backend");
        for (key, want) in [
            (r#""route""#, "r1"),
            (r#"{"path_segments":2}"#, "/a/b"),
            (r#"{"path_segments":5}"#, "/a/b/c"),
            (r#"{"constant":"k"}"#, "k"),
        ] {
            let b = breakers(&format!(r#","key":{key}"#));
            assert_eq!(b.locate(&r).unwrap().unwrap().key, want, "{key}");
        }
        let b = breakers(r#","key":{"header":"x-tenant"}"#);
        assert_eq!(b.locate(&r), Err(0), "a missing key is reported");
    }

    #[test]
    fn unmatched_requests_and_missing_keys_pass_untouched() {
        let s = FakeStore::new();
        let b = breakers(r#","match":{"path_prefix":"/other"}"#);
        let v = b.admit(&to("backend"), &s, at(0));
        assert!(v.decision.is_continue() && v.ticket.is_none() && v.events.is_empty());
        let b = breakers(r#","key":{"header":"x-tenant"}"#);
        let v = b.admit(&to("backend"), &s, at(0));
        assert_eq!(v.events, vec![Event::SkippedMissingKey]);
        assert!(v.decision.is_continue());
        assert_eq!(s.key_count(), 0);
    }

    #[test]
    fn closed_admission_reads_but_never_writes() {
        let s = FakeStore::new();
        let b = breakers("");
        for _ in 0..3 {
            let v = b.admit(&to("backend"), &s, at(0));
            assert!(v.ticket.is_some());
        }
        assert_eq!(s.sets_attempted(), 0);
    }

    #[test]
    fn failures_open_the_breaker_and_it_rejects_with_503_and_retry_after() {
        let (s, b) = opened("");
        let v = b.admit(&to("backend"), &s, at(1_200));
        let Decision::Reply(reply) = &v.decision else {
            panic!("expected a rejection")
        };
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header_value("x-palisade-circuit"), Some("open"));
        assert_eq!(reply.header_value("retry-after"), Some("4"));
        assert!(v.ticket.is_none());
        assert!(v.events.contains(&Event::Rejected));
    }

    #[test]
    fn breakers_of_different_clusters_are_independent() {
        let (s, b) = opened("");
        let v = b.admit(&to("other"), &s, at(0));
        assert!(v.decision.is_continue());
    }

    #[test]
    fn half_open_admits_exactly_the_budget_and_recovery_closes() {
        let (s, b) = opened("");
        let tickets = probes(&b, &s, 5_000, 10);
        assert_eq!(tickets.len(), 3);
        succeed(&b, &s, &tickets, 5_100);
        let v = b.admit(&to("backend"), &s, at(5_200));
        assert_eq!(v.phase, Some(Phase::Closed));
    }

    #[test]
    fn the_half_open_budget_holds_under_concurrent_probes_with_cas_conflicts() {
        let s = Arc::new(FakeStore::new());
        open(&breakers(""), &s, 0);
        // Eight "workers", each with its own policy (as each Envoy worker has its own VM),
        // racing on one store that keeps injecting CAS conflicts.
        let admitted: usize = (0..8)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let worker = breakers("");
                    (0..50)
                        .filter(|i| {
                            if i % 7 == 0 {
                                s.inject_conflicts(2);
                            }
                            worker
                                .admit(&to("backend"), &*s, at(5_000))
                                .ticket
                                .is_some()
                        })
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        // An admission that exhausted its CAS attempts would fail open without a ticket (and
        // count a store failure); every ticket issued is a real probe lease: exactly 3.
        assert_eq!(admitted, 3);
    }

    #[test]
    fn cas_conflicts_within_the_bound_are_retried_invisibly() {
        let (s, b) = opened("");
        s.inject_conflicts(3);
        let v = b.admit(&to("backend"), &s, at(5_000));
        assert!(v.ticket.unwrap().permit.unwrap().probe.is_some());
        assert!(!v.events.contains(&Event::StoreFailure));
    }

    #[test]
    fn lost_probes_do_not_wedge_the_breaker() {
        let (s, b) = opened("");
        // Three probes are admitted and never report (their streams vanished).
        for _ in 0..3 {
            assert!(b.admit(&to("backend"), &s, at(5_000)).ticket.is_some());
        }
        let v = b.admit(&to("backend"), &s, at(14_000));
        assert!(
            !v.decision.is_continue(),
            "budget still out before the probe timeout"
        );
        // After the probe timeout, fresh probes are admitted and recovery closes the breaker.
        let tickets = probes(&b, &s, 15_000, 5);
        assert_eq!(tickets.len(), 3);
        succeed(&b, &s, &tickets, 15_100);
        assert_eq!(
            b.admit(&to("backend"), &s, at(15_200)).phase,
            Some(Phase::Closed)
        );
    }

    #[test]
    fn a_probe_whose_client_left_gives_its_lease_back() {
        let (s, b) = opened(r#","permitted_calls_in_half_open":1"#);
        let t = b.admit(&to("backend"), &s, at(5_000)).ticket.unwrap();
        assert!(b.admit(&to("backend"), &s, at(5_001)).ticket.is_none());
        let gone = ResponseFacts {
            status: None,
            code_details: None,
            elapsed: Duration::from_millis(3),
        };
        assert_eq!(
            b.record(&t, &gone, &s, at(5_002)).events,
            vec![Event::Ignored]
        );
        assert!(b.admit(&to("backend"), &s, at(5_003)).ticket.is_some());
    }

    #[test]
    fn slow_calls_open_the_breaker() {
        let s = FakeStore::new();
        let b = breakers(r#","slow_call_rate_threshold":50"#);
        for _ in 0..4 {
            let t = b.admit(&to("backend"), &s, at(0)).ticket.unwrap();
            let v = b.record(&t, &facts(200, 1_500), &s, at(1_500));
            assert!(v.events.contains(&Event::Slow));
        }
        assert!(!admits(&b, &s, 1_600));
    }

    #[test]
    fn metrics_only_runs_the_state_machine_but_never_rejects() {
        let s = FakeStore::new();
        let b = breakers(r#","mode":"metrics_only""#);
        for _ in 0..4 {
            call_with(&b, &s, 0, 503);
        }
        let v = b.admit(&to("backend"), &s, at(10));
        assert!(v.decision.is_continue());
        assert_eq!(v.phase, Some(Phase::Open));
        assert!(v.events.contains(&Event::ShadowRejected));
        assert!(
            v.ticket.is_none(),
            "the real breaker would not have sent it"
        );
    }

    #[test]
    fn forced_modes_never_touch_shared_data() {
        let s = FakeStore::new();
        let b = breakers(r#","mode":"forced_open""#);
        let v = b.admit(&to("backend"), &s, at(0));
        let Decision::Reply(r) = v.decision else {
            panic!("forced open must reject")
        };
        assert_eq!(r.header_value("x-palisade-circuit"), Some("open"));
        let b = breakers(r#","mode":"forced_closed""#);
        for _ in 0..10 {
            let v = call_with(&b, &s, 0, 503);
            assert!(v.decision.is_continue());
        }
        assert_eq!(s.key_count(), 0);
        assert_eq!(s.sets_attempted(), 0);
    }

    #[test]
    fn store_failures_follow_the_failure_mode() {
        let (s, b) = opened("");
        s.fail_with(StoreError::Host("down".into()));
        let v = b.admit(&to("backend"), &s, at(10));
        assert!(v.decision.is_continue(), "allow by default");
        assert_eq!(v.events, vec![Event::StoreFailure]);
        let b = breakers(r#","failure_mode":"deny""#);
        let v = b.admit(&to("backend"), &s, at(10));
        assert!(!v.decision.is_continue());
    }

    #[test]
    fn keys_are_bounded_by_max_breakers_and_colliding_keys_share() {
        let s = FakeStore::new();
        let b = breakers(r#","max_breakers":2"#);
        for i in 0..50 {
            call_with(&b, &s, 0, 200);
            let r = FakeRequest::new("GET", "/").cluster(&format!("c{i}"));
            if let Some(t) = b.admit(&r, &s, at(0)).ticket {
                b.record(&t, &facts(200, 1), &s, at(0));
            }
        }
        assert!(s.key_count() <= 2, "{}", s.key_count());
    }

    #[test]
    fn a_stale_outcome_after_a_transition_is_ignored() {
        let s = FakeStore::new();
        let b = breakers("");
        let early = b.admit(&to("backend"), &s, at(0)).ticket.unwrap();
        open(&b, &s, 0);
        let v = b.record(&early, &facts(503, 1), &s, at(1));
        assert_eq!(v.events, vec![Event::Failure, Event::Stale]);
    }

    fn window(b: &Breakers, s: &FakeStore, now: u64) -> crate::state::Tally {
        let r = b.locate(&to("backend")).unwrap().unwrap();
        let t = &b.config().rules[0].thresholds;
        Breaker::decode(&s.value(r.store_key()).unwrap(), &t.window)
            .unwrap()
            .window
            .tally(now)
    }

    const BATCHING: &str = r#","success_batching":{"max_calls":4,"max_delay":"100ms"}"#;

    #[test]
    fn batched_successes_are_written_once_per_max_calls() {
        let s = FakeStore::new();
        let b = breakers(BATCHING);
        for _ in 0..3 {
            call_with(&b, &s, 0, 200);
        }
        assert_eq!(s.sets_attempted(), 0, "three successes wait in the batch");
        call_with(&b, &s, 0, 200);
        assert_eq!(s.sets_attempted(), 1);
        assert_eq!(window(&b, &s, 0).calls, 4);
    }

    #[test]
    fn a_failure_writes_the_pending_successes_first_in_the_same_cas() {
        let s = FakeStore::new();
        let b = breakers(BATCHING);
        call_with(&b, &s, 0, 200);
        call_with(&b, &s, 0, 200);
        call_with(&b, &s, 0, 503);
        assert_eq!(s.sets_attempted(), 1);
        let w = window(&b, &s, 0);
        assert_eq!((w.calls, w.failed), (3, 1));
    }

    #[test]
    fn batches_older_than_max_delay_are_written_by_the_next_call_or_the_timer() {
        let s = FakeStore::new();
        let b = breakers(BATCHING);
        call_with(&b, &s, 0, 200);
        assert!(b.flush(&s, at(99)).is_empty());
        assert_eq!(b.flush(&s, at(100)).len(), 1);
        assert_eq!(window(&b, &s, 100).calls, 1);
        call_with(&b, &s, 200, 200);
        call_with(&b, &s, 300, 200); // 100 ms after the batch started: due
        assert_eq!(window(&b, &s, 300).calls, 3);
    }

    #[test]
    fn with_batching_a_worker_trusts_a_closed_state_for_at_most_max_delay() {
        let s = FakeStore::new();
        let worker_a = breakers(BATCHING);
        let worker_b = breakers(BATCHING);
        assert!(worker_a.admit(&to("backend"), &s, at(0)).ticket.is_some());
        open(&worker_b, &s, 10);
        // Worker A read "closed" at 0 and trusts it until 100 ms later…
        let stale = worker_a.admit(&to("backend"), &s, at(50)).ticket.unwrap();
        // …but what such a call reports is not recorded against the open breaker.
        let v = worker_a.record(&stale, &facts(503, 1), &s, at(60));
        assert!(v.events.contains(&Event::Stale), "{:?}", v.events);
        let v = worker_a.admit(&to("backend"), &s, at(100));
        assert!(
            !v.decision.is_continue(),
            "after max_delay it reads the open state"
        );
    }

    #[test]
    fn without_batching_every_call_reads_the_shared_state() {
        let s = FakeStore::new();
        let worker_a = breakers("");
        let worker_b = breakers("");
        assert!(worker_a.admit(&to("backend"), &s, at(0)).ticket.is_some());
        open(&worker_b, &s, 1);
        assert!(!admits(&worker_a, &s, 2));
    }

    #[test]
    fn batched_successes_from_before_an_opening_are_stale() {
        let s = FakeStore::new();
        let worker_a = breakers(BATCHING);
        let worker_b = breakers(BATCHING);
        call_with(&worker_a, &s, 0, 200);
        call_with(&worker_a, &s, 0, 200);
        open(&worker_b, &s, 1);
        let flushed = worker_a.flush(&s, at(200));
        assert_eq!(flushed[0].1.events, vec![Event::Stale, Event::Stale]);
    }

    #[test]
    fn the_gauge_shows_half_open_once_the_wait_is_over() {
        let s = FakeStore::new();
        let b = breakers("");
        let r = b.locate(&to("backend")).unwrap().unwrap();
        assert_eq!(b.observe(&r, &s, at(0)), Some(Phase::Closed));
        open(&b, &s, 0);
        assert_eq!(b.observe(&r, &s, at(4_999)), Some(Phase::Open));
        assert_eq!(b.observe(&r, &s, at(5_000)), Some(Phase::HalfOpen));
    }
}
