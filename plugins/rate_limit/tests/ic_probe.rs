//! Instruction-count probe of the allow path (BENCHMARKS.md, "rate_limit shape"): `IC_N`
//! allowing decisions, to run under `valgrind --tool=cachegrind` at two values of `IC_N`; the
//! difference divided by the difference in `IC_N` is the exact instructions per decision, free of
//! the machine's noise. `plain` uses only the API that predates shaping, so the same test runs on
//! an older checkout for the comparison. Ignored: it measures nothing without valgrind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use palisade_core::testing::{FakeRequest, FakeStore};
use palisade_core::Timestamp;
use rate_limit::config::Config;
use rate_limit::policy::RateLimiter;
use std::hint::black_box;
use std::time::Duration;

const PLAIN: &str = r#"{"rules": [{"name": "bench", "key": ["client_ip"], "limits": [{"capacity": 1000000000, "refill": 1000000000, "period": "1s"}]}]}"#;

fn n() -> u64 {
    std::env::var("IC_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "an instruction-count probe: run under valgrind (BENCHMARKS.md)"]
fn plain() {
    let l = RateLimiter::new(Config::parse(PLAIN.as_bytes()).unwrap());
    let store = FakeStore::new();
    let req = FakeRequest::new("GET", "/bench/item?page=2").source("192.0.2.10:51234");
    let mut now = Timestamp::from_secs(1_700_000_000);
    for _ in 0..n() {
        now = now.saturating_add(Duration::from_micros(1));
        black_box(l.check(black_box(&req), &store, now));
    }
}

#[test]
#[ignore = "an instruction-count probe: run under valgrind (BENCHMARKS.md)"]
fn shaped() {
    let json = PLAIN.replace(
        r#""period": "1s"}"#,
        r#""period": "1s", "shape": {"max_delay": "1s"}}"#,
    );
    let config = Config::parse(json.as_bytes()).unwrap();
    assert!(!config.rules[0].shapes.is_empty());
    let queue = rate_limit::shape::Queue::new(config.rules.iter().map(|r| &r.shapes[..]));
    let l = RateLimiter::new(config);
    let store = FakeStore::new();
    let req = FakeRequest::new("GET", "/bench/item?page=2").source("192.0.2.10:51234");
    let room = |rule, limit| queue.has_room(rule, limit);
    let mut now = Timestamp::from_secs(1_700_000_000);
    for _ in 0..n() {
        now = now.saturating_add(Duration::from_micros(1));
        black_box(l.check_shaped(black_box(&req), &store, now, &room));
    }
}
