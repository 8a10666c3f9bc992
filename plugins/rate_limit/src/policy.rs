//! The rate-limit decision for one request: match rules, build keys, update buckets in shared
//! data, and say what to do.
//!
//! ## Bounded memory
//! Envoy never frees shared-data keys, so a bucket per distinct client would grow without bound
//! (and an attacker controls how many distinct clients there are). Each rule instead owns a fixed
//! table of `max_keys` slots ([`palisade_core::slots`]); a request key is hashed (FNV-1a, stable
//! across builds) to a slot. The slot stores the full 64-bit hash of the key that owns it:
//!
//! - same key → its own bucket, exact;
//! - another key whose bucket is full (idle) → the slot is taken over; an idle bucket is
//!   indistinguishable from a fresh one, so nothing is lost;
//! - another key whose bucket is in use → the two keys *share* the bucket until it goes idle.
//!   Both see a stricter limit, never a looser one; each such request counts a `collisions` metric.
//!
//! So a rule writes at most `max_keys` shared-data keys, ever. Size it above the number of keys
//! active at once (within one refill window); collisions then stay rare.
//!
//! Shared-data key: `palisade/rate_limit/<scope>/<rule>/<limits>/k<max_keys>/<slot>`. The limits are
//! spelled out in the key, so a config reload that keeps a rule's name, limits and `max_keys` keeps
//! its counters, and one that changes them starts from full buckets.

use crate::bucket::{ceil_secs, check_all, is_idle, Limit, RuleOutcome, SlotState};
use crate::config::{Config, FailureMode, MissingKey, Mode, Rule};
use crate::shape::{self, Shaping};
use palisade_core::key::RequestView;
use palisade_core::slots::{claim, Claim, SlotTable};
use palisade_core::store::{update, Step, UpdateError, DEFAULT_MAX_ATTEMPTS};
use palisade_core::{Decision, LocalReply, SharedStore, Timestamp};

/// What happened to one rule for one request; each becomes a per-rule metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Allowed,
    Limited,
    /// Would have been limited, but the rule is in shadow mode.
    ShadowLimited,
    /// The store could not be updated; the rule's failure mode decided.
    StoreFailure,
    /// The request lacked a key part and the rule skips such requests.
    SkippedMissingKey,
    /// The key shared a slot with another active key.
    Collision,
}

impl palisade_core::plugin::MetricEvent for Event {
    const NAMES: &'static [&'static str] = &[
        "allowed",
        "limited",
        "shadow_limited",
        "store_failures",
        "skipped_missing_key",
        "collisions",
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// `(rule index, event)` in evaluation order.
    pub events: Vec<(usize, Event)>,
    /// Rules in shadow mode that would have limited this request.
    pub shadow_rules: Vec<usize>,
    /// `RateLimit-*` headers for the response of an allowed request (only when configured).
    pub allowed_headers: Vec<(String, String)>,
    /// Matching `global` rules, for the rate limit service to decide (`crate::global`); the
    /// local rules were decided first.
    pub global: Vec<GlobalCheck>,
    /// Slots reserved by rules that shape, and queue-full refusals ([`crate::shape`]); boxed, so
    /// the allow path carries one null pointer.
    pub shaping: Option<Box<Shaping>>,
}

impl Verdict {
    /// Let the request through, nothing recorded yet.
    fn allow() -> Self {
        Verdict {
            decision: Decision::Continue,
            events: Vec::new(),
            shadow_rules: Vec::new(),
            allowed_headers: Vec::new(),
            global: Vec::new(),
            shaping: None,
        }
    }

    /// Record what taking a token from `rule` (rule `index`) came to: its events, and the
    /// reply when the rule limits the request or its store failed and it fails closed. The
    /// outcome when the request was allowed (for its quota headers).
    fn record(
        &mut self,
        index: usize,
        rule: &Rule,
        taken: Result<(RuleOutcome, bool), UpdateError>,
    ) -> Option<RuleOutcome> {
        match taken {
            Ok((outcome, collision)) => {
                if collision {
                    self.events.push((index, Event::Collision));
                }
                if outcome.allowed {
                    self.events.push((index, Event::Allowed));
                    return Some(outcome);
                }
                if rule.shadow {
                    self.events.push((index, Event::ShadowLimited));
                    self.shadow_rules.push(index);
                } else {
                    self.events.push((index, Event::Limited));
                    self.decision = Decision::Reply(limited_reply(rule, &outcome));
                }
            }
            Err(_) => {
                self.events.push((index, Event::StoreFailure));
                if rule.failure_mode == FailureMode::Deny && !rule.shadow {
                    self.decision = Decision::Reply(store_failure_reply(rule));
                }
            }
        }
        None
    }
}

/// A `global` rule that applies to the request, and its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalCheck {
    pub rule: usize,
    pub entries: Vec<(String, String)>,
}

/// Marks a key that lacks a part, for rules with `on_missing_key: shared_bucket`. Real keys are
/// length-prefixed (`3:abc`), so they never equal this.
const MISSING_KEY: &str = "<missing>";

/// The limiter for one configuration.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    config: Config,
    /// Per rule: `max_keys` slots under `<rule>/<limits>/k<max_keys>/`.
    tables: Vec<SlotTable>,
}

impl RateLimiter {
    pub fn new(config: Config) -> Self {
        let tables = config
            .rules
            .iter()
            .map(|r| SlotTable::new(rule_key_prefix(r), r.max_keys))
            .collect();
        RateLimiter { config, tables }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decide for one request at `now` (shaped limits with room in every queue).
    pub fn check(&self, req: &dyn RequestView, store: &dyn SharedStore, now: Timestamp) -> Verdict {
        self.check_shaped(req, store, now, &|_, _| true)
    }

    /// Decide for one request at `now`; `room(rule, limit)` says whether a shaped limit's queue
    /// on this worker can hold one more waiter. Once a rule has given the request a later slot,
    /// the rules after it (`mode: all`) take their tokens as of that slot.
    pub fn check_shaped(
        &self,
        req: &dyn RequestView,
        store: &dyn SharedStore,
        now: Timestamp,
        room: &dyn Fn(usize, usize) -> bool,
    ) -> Verdict {
        let mut verdict = Verdict::allow();
        let mut tightest: Option<(u64, Vec<(String, String)>)> = None;
        let rules = self.config.rules.iter().zip(&self.tables);
        for (index, (rule, table)) in rules.enumerate() {
            if !rule.matcher.matches(req) {
                continue;
            }
            if let Some(spec) = &rule.global {
                let shared = rule.on_missing_key == MissingKey::SharedBucket;
                match crate::global::descriptor(spec, req, self.config.client_ip, shared) {
                    Some(entries) => verdict.global.push(GlobalCheck {
                        rule: index,
                        entries,
                    }),
                    None => {
                        verdict.events.push((index, Event::SkippedMissingKey));
                        continue;
                    }
                }
                if self.config.mode == Mode::First {
                    break;
                }
                continue;
            }
            let Some(key) = self.key(rule, req) else {
                verdict.events.push((index, Event::SkippedMissingKey));
                continue;
            };
            let at = match &verdict.shaping {
                None => now,
                Some(s) => s.departure().map_or(now, |d| d.max(now)),
            };
            let taken = if rule.shapes.is_empty() {
                take(rule, table, &key, store, at)
            } else {
                let shaping = &mut verdict.shaping;
                shape::take(rule, index, table, &key, store, at, room, shaping)
            };
            match verdict.record(index, rule, taken) {
                Some(outcome) if self.config.headers_on_allowed => {
                    let remaining = outcome.binding_outcome().map(|o| o.remaining).unwrap_or(0);
                    if tightest.as_ref().is_none_or(|(r, _)| remaining < *r) {
                        tightest = Some((remaining, quota_headers(rule, &outcome)));
                    }
                }
                Some(_) => {}
                None if matches!(verdict.decision, Decision::Reply(_)) => return verdict,
                None => {}
            }
            if self.config.mode == Mode::First {
                break;
            }
        }
        if let Some((_, headers)) = tightest {
            verdict.allowed_headers = headers;
        }
        verdict
    }

    /// Rule `index` decided by its local limits alone (a `global` rule's local tier, when the
    /// service gave no answer): the same steps as a local rule in [`RateLimiter::check`].
    pub fn check_local(
        &self,
        index: usize,
        req: &dyn RequestView,
        store: &dyn SharedStore,
        now: Timestamp,
    ) -> Verdict {
        let mut verdict = Verdict::allow();
        let (Some(rule), Some(table)) = (self.config.rules.get(index), self.tables.get(index))
        else {
            return verdict;
        };
        let Some(key) = self.key(rule, req) else {
            verdict.events.push((index, Event::SkippedMissingKey));
            return verdict;
        };
        let taken = take(rule, table, &key, store, now);
        if let Some(outcome) = verdict.record(index, rule, taken) {
            if self.config.headers_on_allowed {
                verdict.allowed_headers = quota_headers(rule, &outcome);
            }
        }
        verdict
    }

    /// The request's key for `rule`; `None` when it lacks a part and the rule skips such
    /// requests.
    fn key(&self, rule: &Rule, req: &dyn RequestView) -> Option<String> {
        match rule.key.build(req, self.config.client_ip) {
            Ok(k) => Some(k),
            Err(_) if rule.on_missing_key == MissingKey::SharedBucket => {
                Some(MISSING_KEY.to_owned())
            }
            Err(_) => None,
        }
    }
}

/// Take one token from every limit of `rule` for `key`, atomically.
fn take(
    rule: &Rule,
    table: &SlotTable,
    key: &str,
    store: &dyn SharedStore,
    now: Timestamp,
) -> Result<(RuleOutcome, bool), UpdateError> {
    let slot = table.slot(key);
    update(store, &slot.store_key, DEFAULT_MAX_ATTEMPTS, |current| {
        let (mut state, collision) = claimed(rule, slot.hash, current, now);
        let (outcome, new_tats) = check_all(&rule.limits, &state.tats, now);
        match new_tats {
            Some(tats) => {
                state.tats = tats;
                Step::Write(state.encode(), (outcome, collision))
            }
            None => Step::Keep((outcome, collision)),
        }
    })
    .map(|done| done.output)
}

/// The slot's stored state (`current`, if it decodes) as the key with `hash` gets to use it:
/// its own, taken over (fresh) from an idle other key, or shared with a busy one (`true`).
pub(crate) fn claimed(rule: &Rule, hash: u64, current: &[u8], now: Timestamp) -> (SlotState, bool) {
    let n = rule.limits.len();
    let state = SlotState::decode(current, n).unwrap_or_else(|| SlotState::fresh(hash, n));
    match claim(state.fingerprint, hash, || {
        all_idle(&rule.limits, &state.tats, now)
    }) {
        Claim::Own => (state, false),
        Claim::TakeOver => (SlotState::fresh(hash, n), false),
        Claim::Share => (state, true),
    }
}

pub(crate) fn all_idle(limits: &[Limit], tats: &[u128], now: Timestamp) -> bool {
    limits.iter().zip(tats).all(|(l, t)| is_idle(l, *t, now))
}

fn rule_key_prefix(rule: &Rule) -> String {
    let limits: Vec<String> = rule
        .limits
        .iter()
        .map(|l| format!("{}-{}-{}ms", l.capacity, l.refill, l.period.as_millis()))
        .collect();
    format!("{}/{}/k{}/", rule.name, limits.join("."), rule.max_keys)
}

/// The quota headers, in the order [`quota_headers`] gives them.
pub(crate) const QUOTA_HEADERS: [&str; 4] = [
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-policy",
];

/// `RateLimit-Limit`, `-Remaining`, `-Reset` for the binding limit, and `-Policy` for all.
fn quota_headers(rule: &Rule, outcome: &RuleOutcome) -> Vec<(String, String)> {
    let (limit, o) = match (rule.limits.get(outcome.binding), outcome.binding_outcome()) {
        (Some(l), Some(o)) => (l, o),
        _ => return Vec::new(),
    };
    let policy: Vec<String> = rule
        .limits
        .iter()
        .map(|l| format!("{};w={}", l.capacity, l.window_secs()))
        .collect();
    let values = [
        limit.capacity.to_string(),
        o.remaining.to_string(),
        ceil_secs(o.reset).to_string(),
        policy.join(", "),
    ];
    QUOTA_HEADERS
        .map(str::to_owned)
        .into_iter()
        .zip(values)
        .collect()
}

fn limited_reply(rule: &Rule, outcome: &RuleOutcome) -> LocalReply {
    let retry = outcome
        .binding_outcome()
        .map(|o| ceil_secs(o.retry_after))
        .unwrap_or(1)
        .max(1);
    let mut reply = base_reply(rule).header("retry-after", retry.to_string());
    reply.headers.extend(quota_headers(rule, outcome));
    reply
}

/// The reply when the store failed and the rule fails closed: we do not know the quota, so only
/// `Retry-After: 1`.
pub(crate) fn store_failure_reply(rule: &Rule) -> LocalReply {
    base_reply(rule).header("retry-after", "1")
}

pub(crate) fn base_reply(rule: &Rule) -> LocalReply {
    LocalReply::new(rule.reply.status, "palisade_rate_limited")
        .for_rule(&rule.name)
        .header("content-type", rule.reply.content_type.clone())
        .header("x-envoy-ratelimited", "true")
        .body(rule.reply.body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::store::StoreError;
    use palisade_core::testing::{FakeRequest, FakeStore};

    fn limiter(json: &str) -> RateLimiter {
        RateLimiter::new(Config::parse(json.as_bytes()).unwrap())
    }

    fn from(ip: &str) -> FakeRequest {
        FakeRequest::new("GET", "/").source(&format!("{ip}:1234"))
    }

    const PER_IP: &str = r#"{"rules": [{"name": "per-ip", "key": ["client_ip"],
        "limits": [{"capacity": 3, "refill": 1, "period": "1s"}]}]}"#;

    /// The [`PER_IP`] limiter, and a store with no buckets yet.
    fn per_ip() -> (RateLimiter, FakeStore) {
        (limiter(PER_IP), FakeStore::new())
    }

    fn statuses(
        l: &RateLimiter,
        req: &FakeRequest,
        store: &FakeStore,
        now: Timestamp,
        n: usize,
    ) -> Vec<u16> {
        (0..n)
            .map(|_| match l.check(req, store, now).decision {
                Decision::Continue => 200,
                Decision::Reply(r) => r.status,
            })
            .collect()
    }

    #[test]
    fn a_burst_is_admitted_up_to_capacity_then_limited_with_standard_headers() {
        let (l, store) = per_ip();
        let now = Timestamp::from_secs(1_000);
        assert_eq!(
            statuses(&l, &from("192.0.2.1"), &store, now, 3),
            vec![200, 200, 200]
        );
        let v = l.check(&from("192.0.2.1"), &store, now);
        let Decision::Reply(reply) = v.decision else {
            panic!("expected a 429")
        };
        assert_eq!(reply.status, 429);
        assert_eq!(reply.header_value("retry-after"), Some("1"));
        assert_eq!(reply.header_value("x-envoy-ratelimited"), Some("true"));
        assert_eq!(
            QUOTA_HEADERS.map(|n| reply.header_value(n)),
            [Some("3"), Some("0"), Some("3"), Some("3;w=3")]
        );
        assert_eq!(v.events, vec![(0, Event::Limited)]);
    }

    #[test]
    fn two_keys_have_independent_buckets() {
        let (l, store) = per_ip();
        let now = Timestamp::from_secs(1_000);
        assert_eq!(
            statuses(&l, &from("192.0.2.1"), &store, now, 4),
            vec![200, 200, 200, 429]
        );
        assert_eq!(
            statuses(&l, &from("192.0.2.2"), &store, now, 4),
            vec![200, 200, 200, 429]
        );
    }

    #[test]
    fn refill_admits_again_after_the_period() {
        let (l, store) = per_ip();
        let req = from("192.0.2.1");
        assert_eq!(
            statuses(&l, &req, &store, Timestamp::from_secs(10), 4),
            vec![200, 200, 200, 429]
        );
        assert_eq!(
            statuses(&l, &req, &store, Timestamp::from_millis(11_000), 2),
            vec![200, 429]
        );
    }

    #[test]
    fn cas_conflicts_are_retried_and_the_count_stays_exact() {
        let (l, store) = per_ip();
        let req = from("192.0.2.1");
        let now = Timestamp::from_secs(10);
        store.inject_conflicts(DEFAULT_MAX_ATTEMPTS - 1);
        assert_eq!(statuses(&l, &req, &store, now, 1), vec![200]);
        store.inject_conflicts(3);
        assert_eq!(statuses(&l, &req, &store, now, 3), vec![200, 200, 429]);
    }

    #[test]
    fn exhausted_retries_fail_open_by_default_and_are_counted() {
        let (l, store) = per_ip();
        store.inject_conflicts(DEFAULT_MAX_ATTEMPTS);
        let v = l.check(&from("192.0.2.1"), &store, Timestamp::from_secs(10));
        assert_eq!(v.decision, Decision::Continue);
        assert_eq!(v.events, vec![(0, Event::StoreFailure)]);
    }

    #[test]
    fn a_store_outage_fails_closed_when_configured() {
        let l = limiter(
            r#"{"rules": [{"name": "strict", "key": ["client_ip"], "failure_mode": "deny",
            "limits": [{"capacity": 3, "refill": 1, "period": "1s"}]}]}"#,
        );
        let store = FakeStore::new();
        store.fail_with(StoreError::Host("InternalFailure".into()));
        let v = l.check(&from("192.0.2.1"), &store, Timestamp::from_secs(10));
        let Decision::Reply(reply) = v.decision else {
            panic!("expected a denial")
        };
        assert_eq!(reply.status, 429);
        assert_eq!(reply.header_value("retry-after"), Some("1"));
        assert_eq!(v.events, vec![(0, Event::StoreFailure)]);
    }

    #[test]
    fn shadow_mode_counts_but_never_rejects() {
        let l = limiter(
            r#"{"rules": [{"name": "trial", "key": ["client_ip"], "shadow": true,
            "limits": [{"capacity": 1, "refill": 1, "period": "1m"}]}]}"#,
        );
        let store = FakeStore::new();
        let now = Timestamp::from_secs(10);
        assert_eq!(
            l.check(&from("192.0.2.1"), &store, now).events,
            vec![(0, Event::Allowed)]
        );
        let v = l.check(&from("192.0.2.1"), &store, now);
        assert_eq!(v.decision, Decision::Continue);
        assert_eq!(v.events, vec![(0, Event::ShadowLimited)]);
        assert_eq!(v.shadow_rules, vec![0]);
    }

    #[test]
    fn missing_key_parts_skip_the_rule_or_share_one_bucket() {
        let skip = limiter(
            r#"{"rules": [{"name": "by-key", "key": [{"header": "x-api-key"}],
            "limits": [{"capacity": 1, "refill": 1, "period": "1m"}]}]}"#,
        );
        let shared = limiter(
            r#"{"rules": [{"name": "by-key", "key": [{"header": "x-api-key"}], "on_missing_key": "shared_bucket",
            "limits": [{"capacity": 1, "refill": 1, "period": "1m"}]}]}"#,
        );
        let now = Timestamp::from_secs(10);
        let anon = FakeRequest::new("GET", "/");
        let store = FakeStore::new();
        assert_eq!(statuses(&skip, &anon, &store, now, 3), vec![200, 200, 200]);
        assert_eq!(
            skip.check(&anon, &store, now).events,
            vec![(0, Event::SkippedMissingKey)]
        );
        let store = FakeStore::new();
        assert_eq!(
            statuses(&shared, &anon, &store, now, 3),
            vec![200, 429, 429]
        );
        // A real key is not the shared bucket.
        let keyed = FakeRequest::new("GET", "/").header("x-api-key", MISSING_KEY);
        assert_eq!(statuses(&shared, &keyed, &store, now, 1), vec![200]);
    }

    const TWO_RULES: &str = r#"{"mode": "MODE", "rules": [
        {"name": "login", "match": {"path": "/login"}, "key": ["client_ip"], "limits": [{"capacity": 1, "refill": 1, "period": "1m"}]},
        {"name": "global", "key": ["client_ip"], "limits": [{"capacity": 2, "refill": 1, "period": "1m"}]}]}"#;

    #[test]
    fn first_mode_applies_only_the_first_matching_rule() {
        let l = limiter(&TWO_RULES.replace("MODE", "first"));
        let store = FakeStore::new();
        let now = Timestamp::from_secs(10);
        let login = FakeRequest::new("POST", "/login").source("192.0.2.1:1");
        let v = l.check(&login, &store, now);
        assert_eq!(v.events, vec![(0, Event::Allowed)]);
        assert_eq!(statuses(&l, &login, &store, now, 1), vec![429]);
        // Other paths only see the global rule, untouched by the login requests.
        let other = FakeRequest::new("GET", "/x").source("192.0.2.1:1");
        assert_eq!(statuses(&l, &other, &store, now, 3), vec![200, 200, 429]);
    }

    #[test]
    fn all_mode_applies_every_matching_rule_and_stops_at_the_first_denial() {
        let l = limiter(&TWO_RULES.replace("MODE", "all"));
        let store = FakeStore::new();
        let now = Timestamp::from_secs(10);
        let login = FakeRequest::new("POST", "/login").source("192.0.2.1:1");
        assert_eq!(
            l.check(&login, &store, now).events,
            vec![(0, Event::Allowed), (1, Event::Allowed)]
        );
        // Login is now exhausted; the denial stops before the global rule, which keeps its token.
        assert_eq!(
            l.check(&login, &store, now).events,
            vec![(0, Event::Limited)]
        );
        let other = FakeRequest::new("GET", "/x").source("192.0.2.1:1");
        assert_eq!(statuses(&l, &other, &store, now, 2), vec![200, 429]);
    }

    #[test]
    fn memory_is_bounded_by_max_keys_and_collisions_never_loosen_a_limit() {
        let l = limiter(
            r#"{"rules": [{"name": "tiny", "key": [{"header": "x-user"}], "max_keys": 4,
            "limits": [{"capacity": 2, "refill": 1, "period": "1h"}]}]}"#,
        );
        let store = FakeStore::new();
        let now = Timestamp::from_secs(10);
        let mut admitted = 0;
        let mut collisions = 0;
        for user in 0..1000 {
            let req = FakeRequest::new("GET", "/").header("x-user", &format!("u{user}"));
            for _ in 0..3 {
                let v = l.check(&req, &store, now);
                admitted += usize::from(v.decision.is_continue());
                collisions += v
                    .events
                    .iter()
                    .filter(|(_, e)| *e == Event::Collision)
                    .count();
            }
        }
        assert!(store.key_count() <= 4, "{} keys", store.key_count());
        // 4 slots of capacity 2 within one instant: at most 8 admissions in total, never 2 per user.
        assert!(admitted <= 8, "admitted {admitted}");
        assert!(collisions > 0);
    }

    #[test]
    fn an_idle_slot_is_taken_over_by_a_new_key() {
        let l = limiter(
            r#"{"rules": [{"name": "one", "key": [{"header": "x-user"}], "max_keys": 1,
            "limits": [{"capacity": 1, "refill": 1, "period": "1s"}]}]}"#,
        );
        let store = FakeStore::new();
        let a = FakeRequest::new("GET", "/").header("x-user", "a");
        let b = FakeRequest::new("GET", "/").header("x-user", "b");
        assert_eq!(
            statuses(&l, &a, &store, Timestamp::from_secs(10), 1),
            vec![200]
        );
        // Same instant: b shares a's exhausted bucket.
        let v = l.check(&b, &store, Timestamp::from_secs(10));
        assert!(!v.decision.is_continue());
        assert!(v.events.contains(&(0, Event::Collision)));
        // Once a's bucket is full again, b takes the slot over without a collision.
        let v = l.check(&b, &store, Timestamp::from_secs(12));
        assert_eq!(v.events, vec![(0, Event::Allowed)]);
    }

    #[test]
    fn allowed_responses_carry_quota_headers_when_configured() {
        let l = limiter(
            r#"{"headers_on_allowed": true, "rules": [{"name": "per-ip", "key": ["client_ip"],
            "limits": [{"capacity": 10, "refill": 10, "period": "1s"}, {"capacity": 100, "refill": 100, "period": "1h"}]}]}"#,
        );
        let v = l.check(
            &from("192.0.2.1"),
            &FakeStore::new(),
            Timestamp::from_secs(10),
        );
        assert_eq!(
            v.allowed_headers,
            vec![
                ("ratelimit-limit".to_owned(), "10".to_owned()),
                ("ratelimit-remaining".to_owned(), "9".to_owned()),
                ("ratelimit-reset".to_owned(), "1".to_owned()),
                (
                    "ratelimit-policy".to_owned(),
                    "10;w=1, 100;w=3600".to_owned()
                ),
            ]
        );
        let quiet = limiter(PER_IP).check(
            &from("192.0.2.1"),
            &FakeStore::new(),
            Timestamp::from_secs(10),
        );
        assert!(quiet.allowed_headers.is_empty());
    }

    #[test]
    fn counters_survive_a_reload_that_keeps_name_and_limits_only() {
        let store = FakeStore::new();
        let now = Timestamp::from_secs(10);
        let req = from("192.0.2.1");
        assert_eq!(
            statuses(&limiter(PER_IP), &req, &store, now, 3),
            vec![200, 200, 200]
        );
        // Same rule re-parsed (a reload): still exhausted.
        assert_eq!(statuses(&limiter(PER_IP), &req, &store, now, 1), vec![429]);
        // Changed limits: fresh buckets.
        let changed = PER_IP.replace("\"capacity\": 3", "\"capacity\": 4");
        assert_eq!(
            statuses(&limiter(&changed), &req, &store, now, 1),
            vec![200]
        );
    }

    #[test]
    fn custom_reply_status_and_body_are_used() {
        let l = limiter(
            r#"{"rules": [{"name": "r", "key": ["client_ip"], "limits": [{"capacity": 1, "refill": 1, "period": "1m"}],
            "response": {"status": 503, "body": "{\"error\":\"slow down\"}", "content_type": "application/json"}}]}"#,
        );
        let store = FakeStore::new();
        let now = Timestamp::from_secs(10);
        l.check(&from("192.0.2.1"), &store, now);
        let Decision::Reply(reply) = l.check(&from("192.0.2.1"), &store, now).decision else {
            panic!()
        };
        assert_eq!(reply.status, 503);
        assert_eq!(reply.body, br#"{"error":"slow down"}"#);
        assert_eq!(reply.header_value("content-type"), Some("application/json"));
        assert_eq!(reply.header_value("retry-after"), Some("60"));
    }

    #[test]
    fn concurrent_workers_never_admit_more_than_capacity() {
        use std::sync::Arc;
        let l = Arc::new(limiter(
            r#"{"rules": [{"name": "r", "key": [{"constant": "all"}], "limits": [{"capacity": 100, "refill": 1, "period": "1h"}]}]}"#,
        ));
        let store = Arc::new(FakeStore::new());
        let now = Timestamp::from_secs(10);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (l, store) = (Arc::clone(&l), Arc::clone(&store));
                std::thread::spawn(move || {
                    let req = FakeRequest::new("GET", "/");
                    (0..100)
                        .filter(|_| {
                            let v = l.check(&req, &*store, now);
                            v.decision.is_continue() && v.events.contains(&(0, Event::Allowed))
                        })
                        .count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 100);
    }
}
