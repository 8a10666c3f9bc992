//! `rate_limit::policy::RateLimiter::check` on fuzzer-chosen request sequences: attacker-chosen
//! `X-Forwarded-For` and key headers, a clock that jumps (forwards by any amount, or backwards),
//! CAS conflicts from "other workers", and shared-data slots overwritten with garbage (another
//! plugin with the same vm_id, or a module upgrade, may leave anything there). Invariants: no
//! panic; the number of shared-data keys stays within the configured `max_keys` per rule; a limited
//! request is a 429 with a `retry-after` of whole seconds; while the clock does not move and the
//! slots are not tampered with, one key of the `strict` rule is allowed at most `capacity` times.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use palisade_core::store::{Version, Versioned};
use palisade_core::testing::{FakeRequest, FakeStore};
use palisade_core::{Decision, SharedStore, StoreError, Timestamp};
use rate_limit::config::Config;
use rate_limit::policy::{Event, RateLimiter};
use std::cell::RefCell;
use std::sync::LazyLock;
use std::time::Duration;

const CONFIG: &str = r#"{
  "headers_on_allowed": true,
  "client_ip": {"trusted_hops": 2},
  "rules": [
    {"name": "strict", "key": [{"header": "x-user"}], "max_keys": 8,
     "limits": [{"capacity": 3, "refill": 1, "period": "1s"}, {"capacity": 5, "refill": 5, "period": "1h"}]},
    {"name": "per_ip", "key": ["client_ip", {"query": "k"}], "on_missing_key": "shared_bucket", "max_keys": 16,
     "failure_mode": "deny", "limits": [{"capacity": 1000000, "refill": 1, "period": "1ms"}]},
    {"name": "shadowed", "shadow": true, "key": ["path", "method"], "max_keys": 4,
     "limits": [{"capacity": 1, "refill": 1, "period": "1d"}]}
  ]
}"#;

static LIMITER: LazyLock<RateLimiter> =
    LazyLock::new(|| RateLimiter::new(Config::parse(CONFIG.as_bytes()).unwrap()));

/// A store whose values can be replaced by garbage on read, keeping the real version.
struct Tampered {
    inner: FakeStore,
    garbage: RefCell<Option<Vec<u8>>>,
}

impl SharedStore for Tampered {
    fn get(&self, key: &str) -> Result<Versioned, StoreError> {
        let mut v = self.inner.get(key)?;
        if let (Some(g), Version::Cas(_)) = (self.garbage.borrow().as_ref(), v.version) {
            v.value = g.clone();
        }
        Ok(v)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        value: &[u8],
        expected: Version,
    ) -> Result<(), StoreError> {
        self.inner.compare_and_swap(key, value, expected)
    }
}

#[derive(Debug, Arbitrary)]
enum Clock {
    Same,
    Forward(u64),
    Back(u64),
}

#[derive(Debug, Arbitrary)]
struct Step {
    clock: Clock,
    user: Option<String>,
    xff: Option<String>,
    source: String,
    path: String,
    conflicts: u8,
    garbage: Option<Vec<u8>>,
}

fuzz_target!(|steps: Vec<Step>| {
    let store = Tampered {
        inner: FakeStore::new(),
        garbage: RefCell::new(None),
    };
    let mut now = Timestamp::from_secs(1_700_000_000);
    let mut allowed_at_same_time: std::collections::HashMap<String, u32> = Default::default();
    for step in steps.iter().take(64) {
        match step.clock {
            Clock::Same => {}
            Clock::Forward(n) => now = now.saturating_add(Duration::from_nanos(n)),
            Clock::Back(n) => now = Timestamp::from_nanos(now.as_nanos().saturating_sub(n)),
        }
        if !matches!(step.clock, Clock::Same) || step.garbage.is_some() {
            allowed_at_same_time.clear();
        }
        *store.garbage.borrow_mut() = step.garbage.clone();
        store.inner.inject_conflicts(u32::from(step.conflicts % 8));
        let mut req = FakeRequest::new("GET", &step.path).source(&step.source);
        if let Some(u) = &step.user {
            req = req.header("x-user", u);
        }
        if let Some(x) = &step.xff {
            req = req.header("x-forwarded-for", x);
        }
        let verdict = LIMITER.check(&req, &store, now);
        if let Decision::Reply(reply) = &verdict.decision {
            if reply.status == 429 {
                let retry = reply
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("retry-after"));
                let (_, v) = retry.expect("429 without retry-after");
                v.parse::<u64>().expect("retry-after is not whole seconds");
            } else {
                assert_eq!(reply.status, 503, "unexpected reply {}", reply.status);
            }
        }
        let strict_allowed = verdict.events.contains(&(0, Event::Allowed));
        let collided = verdict.events.contains(&(0, Event::Collision));
        if let (Some(u), true, false) = (&step.user, strict_allowed, collided) {
            let n = allowed_at_same_time.entry(u.clone()).or_default();
            *n += 1;
            assert!(
                *n <= 3,
                "key {u:?} allowed {n} times at one instant (capacity 3)"
            );
        }
        assert!(
            store.inner.key_count() <= 8 + 16 + 4,
            "shared-data keys unbounded"
        );
    }
});
