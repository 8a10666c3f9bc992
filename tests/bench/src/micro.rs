//! Micro-benchmarks of the pure policy logic, natively, with plain `Instant` loops.
//!
//! These say what the *logic* costs, without Envoy, hostcalls or the Wasm VM around it (the
//! end-to-end cases say what the whole filter costs). Each benchmark is calibrated to a sample
//! length, run once to warm up, then sampled several times; the report gives the median and the
//! fastest sample in ns per operation. Inputs and outputs go through `black_box` so the optimiser
//! cannot delete the work.
//!
//! Adding a plugin's micro-benchmarks: depend on the plugin crate, write a `fn <plugin>() ->
//! Vec<MicroBench>` like [`rate_limit`], and add it to [`all`]. Issue 8 wants the token bucket
//! (done), the breaker, JWT verification and the transform.

use palisade_core::config::FieldPath;
use palisade_core::key::{client_ip, ClientIpSource, ClientIpWire, KeyPartWire, KeySpec};
use palisade_core::store::{update, Step, DEFAULT_MAX_ATTEMPTS};
use palisade_core::testing::{FakeRequest, FakeStore};
use palisade_core::Timestamp;
use rate_limit::bucket::{self, Limit, Tat};
use rate_limit::policy::RateLimiter;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// One benchmark: `run(n)` performs the operation `n` times.
pub struct MicroBench {
    pub group: &'static str,
    pub name: &'static str,
    pub run: Box<dyn FnMut(u64)>,
}

/// The result of one benchmark.
#[derive(Debug, Clone)]
pub struct MicroResult {
    pub group: &'static str,
    pub name: &'static str,
    pub median_ns: f64,
    pub min_ns: f64,
}

/// Every micro-benchmark.
pub fn all() -> Vec<MicroBench> {
    // Plugin logic joins here as each plugin crate lands (breaker, JWT verify, transform).
    [core(), rate_limit()].into_iter().flatten().collect()
}

fn bench(group: &'static str, name: &'static str, run: impl FnMut(u64) + 'static) -> MicroBench {
    MicroBench {
        group,
        name,
        run: Box::new(run),
    }
}

fn increment(current: &[u8]) -> Step<u64> {
    let n = std::str::from_utf8(current)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    Step::Write(n.to_string().into_bytes(), n)
}

/// palisade-core: the CAS update loop on the fake store, and request keys.
fn core() -> Vec<MicroBench> {
    const KEY: &str = "palisade/bench/default/counter";
    let hops1 = ClientIpSource::validate(&ClientIpWire { trusted_hops: 1 }, &FieldPath::root())
        .unwrap_or_default();
    let plain = FakeRequest::new("GET", "/v1/items?page=2").source("192.0.2.10:51234");
    let forwarded = FakeRequest::new("GET", "/v1/items?page=2")
        .source("10.0.0.2:51234")
        .header("x-forwarded-for", "203.0.113.9, 198.51.100.4, 192.0.2.77");
    let keyed = plain.clone().header("x-api-key", "k-0123456789");
    let spec = KeySpec::validate(
        &[
            KeyPartWire::ClientIp,
            KeyPartWire::Header("x-api-key".into()),
        ],
        &FieldPath::root(),
    );

    let write_store = FakeStore::new();
    write_store.put(KEY, b"0");
    let read_store = FakeStore::new();
    read_store.put(KEY, b"12345");

    let mut benches = vec![
        bench(
            "core",
            "store::update, write (counter +1, FakeStore)",
            move |n| {
                for _ in 0..n {
                    let _ = black_box(update(
                        &write_store,
                        black_box(KEY),
                        DEFAULT_MAX_ATTEMPTS,
                        increment,
                    ));
                }
            },
        ),
        bench(
            "core",
            "store::update, read-only (Step::Keep, FakeStore)",
            move |n| {
                for _ in 0..n {
                    let _ = black_box(update(
                        &read_store,
                        black_box(KEY),
                        DEFAULT_MAX_ATTEMPTS,
                        |v: &[u8]| Step::Keep(v.len()),
                    ));
                }
            },
        ),
        bench("core", "key::client_ip, source address", move |n| {
            for _ in 0..n {
                black_box(client_ip(black_box(&plain), ClientIpSource::SOURCE_ADDRESS));
            }
        }),
        bench(
            "core",
            "key::client_ip, X-Forwarded-For, 1 trusted hop",
            move |n| {
                for _ in 0..n {
                    black_box(client_ip(black_box(&forwarded), hops1));
                }
            },
        ),
    ];
    if let Ok(spec) = spec {
        benches.push(bench(
            "core",
            "KeySpec::build [client_ip, header]",
            move |n| {
                for _ in 0..n {
                    let _ =
                        black_box(spec.build(black_box(&keyed), ClientIpSource::SOURCE_ADDRESS));
                }
            },
        ));
    }
    benches
}

/// rate_limit: the GCRA bucket alone, and the whole allowing decision (rule match, key, slot
/// update through the CAS loop on the fake store) with the benchmark's end-to-end config.
fn rate_limit() -> Vec<MicroBench> {
    let limit = Limit {
        capacity: 1_000_000_000,
        refill: 1_000_000_000,
        period: Duration::from_secs(1),
    };
    let mut tat: Tat = 0;
    let mut now_bucket = Timestamp::from_secs(1_700_000_000);
    let mut benches = vec![bench("rate_limit", "bucket::check, allowing", move |n| {
        for _ in 0..n {
            now_bucket = now_bucket.saturating_add(Duration::from_micros(1));
            let (outcome, new_tat) = bucket::check(black_box(&limit), tat, now_bucket);
            tat = new_tat.unwrap_or(tat);
            black_box(outcome);
        }
    })];
    let config = crate::cases::rate_limit_config().to_string();
    if let Ok(config) = rate_limit::config::Config::parse(config.as_bytes()) {
        let limiter = RateLimiter::new(config);
        let store = FakeStore::new();
        let req = FakeRequest::new("GET", "/bench/item?page=2").source("192.0.2.10:51234");
        let mut now = Timestamp::from_secs(1_700_000_000);
        benches.push(bench(
            "rate_limit",
            "RateLimiter::check, allowing (1 rule, client_ip, FakeStore)",
            move |n| {
                for _ in 0..n {
                    now = now.saturating_add(Duration::from_micros(1));
                    black_box(limiter.check(black_box(&req), &store, now));
                }
            },
        ));
    }
    benches
}

/// Calibrate `b` so one sample takes about `sample`, warm it up, and take `samples` samples.
pub fn measure(b: &mut MicroBench, sample: Duration, samples: usize) -> MicroResult {
    let mut iterations: u64 = 1;
    let elapsed = loop {
        let t = time(&mut b.run, iterations);
        if t >= sample / 4 || iterations >= 1 << 40 {
            break t;
        }
        iterations *= 2;
    };
    let scale = sample.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
    iterations = ((iterations as f64 * scale) as u64).max(1);
    time(&mut b.run, iterations); // warm-up at the final size
    let mut per_op: Vec<f64> = (0..samples.max(1))
        .map(|_| time(&mut b.run, iterations).as_nanos() as f64 / iterations as f64)
        .collect();
    per_op.sort_by(f64::total_cmp);
    MicroResult {
        group: b.group,
        name: b.name,
        median_ns: crate::stats::median(&per_op),
        min_ns: per_op.first().copied().unwrap_or(f64::NAN),
    }
}

fn time(run: &mut Box<dyn FnMut(u64)>, n: u64) -> Duration {
    let start = Instant::now();
    run(n);
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_benchmark_runs_and_reports_a_positive_time() {
        for mut b in all() {
            let r = measure(&mut b, Duration::from_micros(200), 3);
            assert!(
                r.median_ns > 0.0 && r.min_ns <= r.median_ns,
                "{}: {r:?}",
                b.name
            );
        }
    }
}
