//! Micro-benchmarks of the pure policy logic, natively, with plain `Instant` loops.
//!
//! These say what the *logic* costs, without Envoy, hostcalls or the Wasm VM around it (the
//! end-to-end cases say what the whole filter costs). Each benchmark is calibrated to a sample
//! length, run once to warm up, then sampled several times; the report gives the median and the
//! fastest sample in ns per operation. Inputs and outputs go through `black_box` so the optimiser
//! cannot delete the work.
//!
//! Adding a plugin's micro-benchmarks: depend on the plugin crate, write a `fn <plugin>() ->
//! Vec<MicroBench>` like [`rate_limit`], and add it to [`all`]. Issue 8's four are here: the token
//! bucket ([`rate_limit`]), the breaker's closed hot path ([`circuit_breaker`]), JWT verification
//! cached and uncached ([`jwt_auth`]) and the header/query transform ([`transform`]), each on the
//! same configuration and request as its end-to-end case.

use crate::cases::{FIXTURES, REQUEST_PATH};
use circuit_breaker::outcome::ResponseFacts;
use circuit_breaker::policy::Breakers;
use jwt_auth::cache::TokenCache;
use jwt_auth::config::DEFAULT_MAX_TOKEN_SIZE;
use jwt_auth::policy::{Authenticator, ProviderKeys};
use jwt_auth::verify::verify_signature;
use palisade_core::config::FieldPath;
use palisade_core::key::{client_ip, ClientIpSource, ClientIpWire, KeyPartWire, KeySpec};
use palisade_core::store::{update, Step, DEFAULT_MAX_ATTEMPTS};
use palisade_core::testing::{FakeRequest, FakeStore};
use palisade_core::Timestamp;
use rate_limit::bucket::{self, Limit, Tat};
use rate_limit::policy::RateLimiter;
use std::hint::black_box;
use std::time::{Duration, Instant};
use transform::engine::{RequestInput, Transformer};

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
    /// Allocations and bytes allocated per operation (the counting global allocator).
    pub allocs: f64,
    pub alloc_bytes: f64,
}

/// Every micro-benchmark.
pub fn all() -> Vec<MicroBench> {
    // One function per plugin whose pure logic is measured.
    [
        core(),
        rate_limit(),
        circuit_breaker(),
        bulkhead(),
        jwt_auth(),
        transform(),
        chain(),
    ]
    .into_iter()
    .flatten()
    // BENCH_MICRO_GROUP=<group> keeps one group (e.g. under valgrind, where all would take long).
    .filter(|b| std::env::var("BENCH_MICRO_GROUP").map_or(true, |g| g == b.group))
    .collect()
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
    // The same allowing decision with `shape` configured on the limit, as the filter asks it
    // (with the worker queue's room check): a token is there, so nothing waits.
    let mut shaped = crate::cases::rate_limit_config();
    shaped["rules"][0]["limits"][0]["shape"] = serde_json::json!({"max_delay": "1s"});
    if let Ok(config) = rate_limit::config::Config::parse(shaped.to_string().as_bytes()) {
        let queue = rate_limit::shape::Queue::new(config.rules.iter().map(|r| &r.shapes[..]));
        let limiter = RateLimiter::new(config);
        let store = FakeStore::new();
        let req = FakeRequest::new("GET", "/bench/item?page=2").source("192.0.2.10:51234");
        let mut now = Timestamp::from_secs(1_700_000_000);
        benches.push(bench(
            "rate_limit",
            "RateLimiter::check_shaped, allowing (shape configured)",
            move |n| {
                let room = |rule, limit| queue.has_room(rule, limit);
                for _ in 0..n {
                    now = now.saturating_add(Duration::from_micros(1));
                    black_box(limiter.check_shaped(black_box(&req), &store, now, &room));
                }
            },
        ));
    }
    benches
}

/// The bench's request (path and headers of every end-to-end case) as a [`FakeRequest`].
fn bench_request() -> FakeRequest {
    crate::cases::request_headers(&FIXTURES).iter().fold(
        FakeRequest::new("GET", REQUEST_PATH).source("192.0.2.10:51234"),
        |req, (name, value)| req.header(name, value),
    )
}

/// The end-to-end circuit_breaker case's config, with its (default) count-based window of 100
/// calls spelled out.
fn circuit_breaker_policy() -> Option<Breakers> {
    let case = crate::cases::PLUGIN_CASES
        .iter()
        .find(|c| c.name == "circuit_breaker")?;
    let mut config = (case.config)(&FIXTURES)?;
    let rule = config.get_mut("rules")?.get_mut(0)?.as_object_mut()?;
    rule.insert("sliding_window_type".into(), "count_based".into());
    rule.insert("sliding_window_size".into(), 100.into());
    let config = circuit_breaker::config::Config::parse(config.to_string().as_bytes()).ok()?;
    Some(Breakers::new(config))
}

/// A clean upstream success: 200 from upstream, well under the slow-call duration.
fn upstream_success() -> ResponseFacts {
    ResponseFacts {
        status: Some(200),
        code_details: Some("via_upstream".to_owned()),
        elapsed: Duration::from_millis(5),
    }
}

/// circuit_breaker: the closed-state hot path of one call — admission (a read of the breaker's
/// header) and the recording of its success (one CAS of the window) — on the fake store.
fn circuit_breaker() -> Vec<MicroBench> {
    let Some(breakers) = circuit_breaker_policy() else {
        return Vec::new();
    };
    let store = FakeStore::new();
    let req = bench_request().cluster("bench");
    let facts = upstream_success();
    let mut now = Timestamp::from_secs(1_700_000_000);
    vec![bench(
        "circuit_breaker",
        "Breakers::admit + record success, closed (count window 100, FakeStore)",
        move |n| {
            for _ in 0..n {
                now = now.saturating_add(Duration::from_micros(1));
                let admitted = breakers.admit(black_box(&req), &store, now);
                if let Some(ticket) = &admitted.ticket {
                    black_box(breakers.record(ticket, black_box(&facts), &store, now));
                }
                black_box(admitted);
            }
        },
    )]
}

/// bulkhead: the allowing path of one request under the end-to-end case's config — classify,
/// take a permit (one CAS), and give it back at the end of the stream (one CAS) — on the fake
/// store. The worker claims its slot once, before the loop. The second benchmark is the same rule
/// with three priority classes chosen by a request header (issue 20: it must cost no more than
/// the first + 5 %).
fn bulkhead() -> Vec<MicroBench> {
    let Some(config) = crate::cases::PLUGIN_CASES
        .iter()
        .find(|c| c.name == "bulkhead")
        .and_then(|case| (case.config)(&FIXTURES))
    else {
        return Vec::new();
    };
    let prioritised = bulkhead_with_priorities(&config);
    [
        (
            "classify + on_request (admitted) + on_stream_end (released), FakeStore",
            config,
        ),
        (
            "the same with 3 priority classes by a header (x-priority: normal), FakeStore",
            prioritised,
        ),
    ]
    .into_iter()
    .filter_map(|(name, config)| {
        let config = bulkhead::config::Config::parse(config.to_string().as_bytes()).ok()?;
        let mut worker = bulkhead::policy::Worker::new(bulkhead::policy::Bulkhead::new(config));
        let store = FakeStore::new();
        let req = bulkhead_request();
        let now = Timestamp::from_secs(1_700_000_000);
        let target = worker
            .bulkhead()
            .classify(&req, &mut || Some("bench".into()));
        let _ = worker.on_request(0, target.clone(), &store, now);
        let _ = worker.on_stream_end(0, &store, now);
        Some(bench("bulkhead", name, move |n| {
            for i in 0..n {
                let context = (i % 1000) as u32 + 1;
                let target = worker
                    .bulkhead()
                    .classify(black_box(&req), &mut || Some("bench".into()));
                black_box(worker.on_request(context, target, &store, now));
                black_box(worker.on_stream_end(context, &store, now));
            }
        }))
    })
    .collect()
}

/// The bench request with the header the priority benchmark classifies by (both bulkhead
/// benchmarks use it, so they differ only in the config).
fn bulkhead_request() -> FakeRequest {
    bench_request().header("x-priority", "normal")
}

/// The bulkhead case's rules with three priority classes by the `x-priority` header.
fn bulkhead_with_priorities(config: &serde_json::Value) -> serde_json::Value {
    let mut config = config.clone();
    for rule in config["rules"].as_array_mut().into_iter().flatten() {
        rule["priorities"] = serde_json::json!({"by": {"header": "x-priority"}, "classes": [
            {"name": "low", "share": 60, "values": ["low", "batch"]},
            {"name": "normal", "share": 90, "values": ["normal"]},
            {"name": "critical", "share": 100, "values": ["critical"]}],
            "default": "normal"});
    }
    config
}

/// Well before the bench token's `exp` (2100).
const JWT_NOW: u64 = 1_800_000_000;

/// The authenticator of the end-to-end jwt_auth case, its inline keys and its token cache.
fn jwt_authenticator(
    cached: bool,
) -> Option<(Authenticator, Vec<Option<ProviderKeys>>, TokenCache)> {
    let config = crate::cases::jwt_auth_config(&FIXTURES, cached).to_string();
    let config = jwt_auth::config::Config::parse(config.as_bytes()).ok()?;
    let cache = TokenCache::new(config.cache_max_entries);
    let auth = Authenticator::new(config);
    let keys = auth.inline_keys();
    Some((auth, keys, cache))
}

/// jwt_auth: the whole decision for the bench's RS256 bearer token (token lookup, parse, RSA
/// signature, times, issuer, audience, mutations) with the verified-token cache off and on, and
/// the signature verification alone.
fn jwt_auth() -> Vec<MicroBench> {
    let now = Timestamp::from_secs(JWT_NOW);
    let mut benches = Vec::new();
    for (cached, name) in [
        (
            false,
            "Authenticator::check, RS256 bearer, cache off (verified every time)",
        ),
        (
            true,
            "Authenticator::check, RS256 bearer, cache on (repeated token)",
        ),
    ] {
        let Some((auth, keys, mut cache)) = jwt_authenticator(cached) else {
            continue;
        };
        let req = bench_request();
        benches.push(bench("jwt_auth", name, move |n| {
            for _ in 0..n {
                black_box(auth.check(black_box(&req), &keys, &mut cache, now));
            }
        }));
    }
    let key_set = jwt_authenticator(false)
        .and_then(|(_, keys, _)| keys.into_iter().next().flatten())
        .map(|k| k.set);
    let parsed = jwt_auth::token::parse(FIXTURES.token(), DEFAULT_MAX_TOKEN_SIZE).ok();
    if let (Some(key_set), Some(parsed)) = (key_set, parsed) {
        benches.push(bench(
            "jwt_auth",
            "verify::verify_signature, RS256 (token already parsed)",
            move |n| {
                for _ in 0..n {
                    let _ = black_box(verify_signature(black_box(&parsed), &key_set));
                }
            },
        ));
    }
    benches
}

/// The bench's request as the transform engine receives it: pseudo-headers, then the headers.
fn transform_input() -> RequestInput {
    let pseudo = [
        (":authority", "bench.palisade.test".to_owned()),
        (":path", REQUEST_PATH.to_owned()),
        (":method", "GET".to_owned()),
        (":scheme", "http".to_owned()),
    ];
    RequestInput {
        headers: pseudo
            .into_iter()
            .chain(crate::cases::request_headers(&FIXTURES))
            .map(|(name, value)| (name.to_owned(), value.into_bytes()))
            .collect::<Vec<_>>()
            .into(),
        end_of_stream: true,
        source_address: Some("192.0.2.10:51234".to_owned()),
        route_name: None,
        claims: None,
    }
}

/// transform: the request-headers phase of the end-to-end case's config (5 header operations and
/// a query set) on the bench's request.
fn transform() -> Vec<MicroBench> {
    let config = crate::cases::transform_config().to_string();
    let Ok(config) = transform::config::Config::parse(config.as_bytes()) else {
        return Vec::new();
    };
    let engine = Transformer::new(config);
    let input = transform_input();
    vec![bench(
        "transform",
        "Transformer::on_request_headers (3 set, 1 append, 1 remove, 1 query set)",
        move |n| {
            for _ in 0..n {
                black_box(engine.on_request_headers(black_box(&input)));
            }
        },
    )]
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
    // Allocations over a separate, untimed run (counting costs an atomic per allocation).
    let counted = iterations.clamp(1, 1000);
    let (count0, bytes0) = crate::alloc_count::snapshot();
    (b.run)(counted);
    let (count1, bytes1) = crate::alloc_count::snapshot();
    MicroResult {
        group: b.group,
        name: b.name,
        median_ns: crate::stats::median(&per_op),
        min_ns: per_op.first().copied().unwrap_or(f64::NAN),
        allocs: (count1 - count0) as f64 / counted as f64,
        alloc_bytes: (bytes1 - bytes0) as f64 / counted as f64,
    }
}

fn time(run: &mut Box<dyn FnMut(u64)>, n: u64) -> Duration {
    let start = Instant::now();
    run(n);
    start.elapsed()
}

/// The whole `palisade` chain with the end-to-end suite's five configs ([`crate::cases::suite_configs`]),
/// driven through the plugin skeleton against `FakeHost` as the SDK adapter drives it: request
/// headers, response headers and the stream end of one allowed request. The figure is the chain's
/// own work in the VM plus FakeHost's (a HashMap per hostcall, where Envoy pays a VM exit): what
/// changes to the skeleton or a policy's hot path do to the chain, without Envoy's noise.
fn chain() -> Vec<MicroBench> {
    use palisade_core::fake_host::FakeHost;
    use palisade_core::plugin::host::HostRef;
    use palisade_core::plugin::runtime::{with_chain, Chain};
    use std::rc::Rc;

    let configs: Vec<serde_json::Value> = crate::cases::suite_configs(&FIXTURES)
        .into_iter()
        .map(|(kind, config)| serde_json::json!({ kind: config }))
        .collect();
    let config = serde_json::json!({ "chain": configs }).to_string();
    let fake = Rc::new(FakeHost::new());
    let host: HostRef = fake.clone();
    let Ok(runtime) =
        palisade_core::plugin::load_chain(&host, &palisade::KINDS, config.as_bytes(), "bench")
    else {
        return Vec::new();
    };
    let headers = crate::cases::request_headers(&FIXTURES);
    let mut request: Vec<(&str, &str)> = vec![
        (":method", "GET"),
        (":path", REQUEST_PATH),
        (":authority", "bench"),
    ];
    request.extend(headers.iter().map(|(n, v)| (*n, v.as_str())));
    let request: Vec<(String, String)> = request
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let mut id = 1;
    vec![bench(
        "palisade",
        "chain: the five policies' allow path, one request (FakeHost)",
        move |n| {
            for _ in 0..n {
                id += 1;
                let pairs: Vec<(&str, &str)> = request
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                fake.open_stream(id, &pairs);
                fake.set_stream_property(id, &["source", "address"], "192.0.2.10:51234");
                let chain = runtime.stream(id);
                let run = |f: &dyn Fn(&mut Chain)| {
                    fake.enter(id);
                    black_box(with_chain(&chain, |c| f(c)));
                };
                run(&|c| {
                    black_box(c.on_request_headers(true));
                });
                fake.set_response(id, &[(":status", "200")]);
                run(&|c| {
                    black_box(c.on_response_headers(true));
                });
                run(&|c| c.end());
                fake.close_stream(id);
            }
        },
    )]
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

    #[test]
    fn the_plugin_benchmarks_exist_and_take_the_paths_they_claim() {
        let groups: Vec<&str> = all().iter().map(|b| b.group).collect();
        for (group, n) in [
            ("circuit_breaker", 1),
            ("bulkhead", 2),
            ("jwt_auth", 3),
            ("transform", 1),
        ] {
            let have = groups.iter().filter(|g| **g == group).count();
            assert_eq!(have, n, "{group}");
        }

        // The shaped rate_limit case takes the allow path: through at once, no slot reserved.
        assert_eq!(groups.iter().filter(|g| **g == "rate_limit").count(), 3);
        let mut shaped = crate::cases::rate_limit_config();
        shaped["rules"][0]["limits"][0]["shape"] = serde_json::json!({"max_delay": "1s"});
        let config = rate_limit::config::Config::parse(shaped.to_string().as_bytes()).unwrap();
        assert!(!config.rules[0].shapes.is_empty());
        let limiter = RateLimiter::new(config);
        let req = FakeRequest::new("GET", "/bench/item?page=2").source("192.0.2.10:51234");
        let v = limiter.check_shaped(&req, &FakeStore::new(), Timestamp::from_secs(9), &|_, _| {
            true
        });
        assert!(v.decision.is_continue());
        assert!(v.shaping.is_none(), "no slot reserved");

        // The breaker stays closed, admits, and records successes.
        let breakers = circuit_breaker_policy().unwrap();
        let rule = &breakers.config().rules[0];
        assert_eq!(
            rule.thresholds.window,
            circuit_breaker::config::WindowSpec::Count { size: 100 }
        );
        let store = FakeStore::new();
        let req = bench_request().cluster("bench");
        let now = Timestamp::from_secs(1_700_000_000);
        for _ in 0..3 {
            let v = breakers.admit(&req, &store, now);
            assert_eq!(v.phase, Some(circuit_breaker::state::Phase::Closed));
            let recorded = breakers.record(&v.ticket.unwrap(), &upstream_success(), &store, now);
            assert_eq!(
                recorded.events,
                vec![circuit_breaker::policy::Event::Success]
            );
        }

        // The bulkhead admits (a permit taken, then released).
        let config = (crate::cases::PLUGIN_CASES
            .iter()
            .find(|c| c.name == "bulkhead")
            .unwrap()
            .config)(&FIXTURES)
        .unwrap();
        let config = bulkhead::config::Config::parse(config.to_string().as_bytes()).unwrap();
        let mut worker = bulkhead::policy::Worker::new(bulkhead::policy::Bulkhead::new(config));
        let target = worker
            .bulkhead()
            .classify(&bulkhead_request(), &mut || None);
        assert!(target.is_some());
        let (admission, report) = worker.on_request(1, target, &store, now);
        assert_eq!(admission, bulkhead::policy::Admission::Continue);
        assert_eq!(report.events, vec![(0, bulkhead::policy::Event::Admitted)]);
        assert_eq!(worker.held(), 1);
        worker.on_stream_end(1, &store, now);
        assert_eq!(worker.held(), 0);
        // With priorities: classified into `normal` by the header, admitted.
        let config = (crate::cases::PLUGIN_CASES
            .iter()
            .find(|c| c.name == "bulkhead")
            .unwrap()
            .config)(&FIXTURES)
        .unwrap();
        let config = bulkhead::config::Config::parse(
            bulkhead_with_priorities(&config).to_string().as_bytes(),
        )
        .unwrap();
        let mut worker = bulkhead::policy::Worker::new(bulkhead::policy::Bulkhead::new(config));
        let target = worker
            .bulkhead()
            .classify(&bulkhead_request(), &mut || None);
        assert_eq!(target.as_ref().and_then(|t| t.class), Some(1));
        let (admission, report) = worker.on_request(1, target, &store, now);
        assert_eq!(admission, bulkhead::policy::Admission::Continue);
        assert_eq!(
            report.events,
            vec![
                (0, bulkhead::policy::Event::Admitted),
                (0, bulkhead::policy::Event::ClassAdmitted(1))
            ]
        );
        worker.on_stream_end(1, &store, now);
        assert_eq!(worker.held(), 0);

        // The token verifies; the uncached authenticator verifies it every time, the cached one
        // only the first time.
        for (cached, hit) in [(false, false), (true, true)] {
            let (auth, keys, mut cache) = jwt_authenticator(cached).unwrap();
            let now = Timestamp::from_secs(JWT_NOW);
            let first = auth.check(&bench_request(), &keys, &mut cache, now);
            assert_eq!(
                first.outcome,
                jwt_auth::policy::Outcome::Allowed { cache_hit: false }
            );
            let again = auth.check(&bench_request(), &keys, &mut cache, now);
            assert_eq!(
                again.outcome,
                jwt_auth::policy::Outcome::Allowed { cache_hit: hit },
                "cached: {cached}"
            );
        }

        // The transform changes the request (five header edits and the query).
        let config = crate::cases::transform_config().to_string();
        let engine = Transformer::new(transform::config::Config::parse(config.as_bytes()).unwrap());
        let out = engine.on_request_headers(&transform_input());
        assert!(out.decision.is_continue());
        assert_eq!(out.events, vec![(0, transform::engine::Event::Transformed)]);
        let names: Vec<&str> = out.edits.iter().map(|e| e.name.as_str()).collect();
        for name in [
            "x-bench-remove",
            "x-bench-set-1",
            "x-bench-set-2",
            "x-bench-set-3",
            "x-bench-append",
            ":path",
        ] {
            assert!(names.contains(&name), "{name} not edited: {names:?}");
        }
    }
}
