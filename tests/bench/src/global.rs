//! The `global` case (issue 17): rate_limit's global rule calling a rate limit service against
//! Envoy's native `envoy.filters.http.ratelimit` calling the same service with the same
//! descriptor, in one run.
//!
//! The native filter skips direct-response routes (it needs a route to a cluster), so unlike the
//! other cases every Envoy here routes to a real upstream (the echo server) and the request goes
//! all the way: `routed_none` (no filter) and `routed_floor` (the probe) are this section's
//! baselines. Each Envoy runs `--concurrency 1`; rounds are interleaved and shuffled as in the main
//! table. For each request the client records its latency (send to last body byte), so the table
//! shows p50 and p99 besides Envoy's CPU per request; "added" is against `routed_none` of the same
//! round.
//!
//! The service is the real engine (Limitador on Redis, `make rls-engine`) when the harness can
//! start it, otherwise the fault-injecting stand-in answering OK (`palisade_harness::rls_fake`);
//! the report says which. Its own CPU is not Envoy's and is not counted; its latency is in both
//! filters' figures alike.

use crate::load::{connect, send, RequestTemplate};
use crate::procfs::{self, Ticks};
use crate::{floor_filter, stats, tail, Args};
use palisade_harness::envoy::LocalBinary;
use palisade_harness::rls::{engine_binary, Redis, RlsEngine};
use palisade_harness::rls_fake::{cluster_yaml, RlsFake, Script};
use palisade_harness::{Bootstrap, Envoy, EnvoyOptions, Filter, Route, Upstream};
use serde_json::json;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// The descriptor both filters send: `generic_key = bench`, domain `bench`.
const DOMAIN: &str = "bench";
const DESCRIPTOR_VALUE: &str = "bench";

struct Variant {
    name: &'static str,
    what: &'static str,
    filters: Vec<Filter>,
    /// The native filter reads its descriptors from the route's `rate_limits`.
    route_rate_limits: bool,
}

fn variants() -> Vec<Variant> {
    let ours = Filter::wasm(
        "rate_limit",
        &json!({"rules": [{"name": "bench", "key": [{"constant": "bench"}],
            "global": {"cluster": "rls", "domain": DOMAIN, "timeout": "20ms", "on_error": "allow",
                "descriptor": [{"key": "generic_key", "value": {"constant": DESCRIPTOR_VALUE}}]}}]}),
    );
    let native = Filter::raw(&format!(
        r#"- name: envoy.filters.http.ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
    domain: {DOMAIN}
    timeout: 0.02s
    failure_mode_deny: false
    rate_limit_service:
      transport_api_version: V3
      grpc_service:
        envoy_grpc: {{ cluster_name: rls }}
"#
    ));
    vec![
        Variant {
            name: "routed_none",
            what: "no filter, routed to the upstream",
            filters: Vec::new(),
            route_rate_limits: false,
        },
        Variant {
            name: "routed_floor",
            what: "probe (the Wasm floor), routed",
            filters: vec![floor_filter()],
            route_rate_limits: false,
        },
        Variant {
            name: "native_ratelimit",
            what: "envoy.filters.http.ratelimit, one RLS call per request",
            filters: vec![native],
            route_rate_limits: true,
        },
        Variant {
            name: "global",
            what: "rate_limit global rule, one RLS call per request",
            filters: vec![ours],
            route_rate_limits: false,
        },
    ]
}

struct Slot {
    variant: Variant,
    envoy: Option<Envoy>,
    problem: Option<String>,
    cpu_us: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
}

/// The service both filters call, held (and killed on drop) for the section's length.
enum Service {
    /// The real engine: Limitador on Redis (`make rls-engine`, Debian's redis-server).
    Engine {
        _engine: RlsEngine,
        // Dropped after the engine (field order).
        _redis: Redis,
    },
    Fake {
        _fake: RlsFake,
    },
}

/// A limit on the bench's descriptor that the run never reaches: every call is a real Redis
/// read and increment that answers OK.
const ENGINE_LIMITS: &str = r#"
- namespace: bench
  max_value: 1000000000000
  seconds: 3600
  conditions: []
  variables:
    - descriptors[0].generic_key
"#;

impl Service {
    fn start() -> (Service, u16, String) {
        if engine_binary().is_file() && redis_available() {
            let redis = Redis::start();
            let engine = RlsEngine::start(&redis, ENGINE_LIMITS);
            let port = engine.port();
            return (
                Service::Engine {
                    _engine: engine,
                    _redis: redis,
                },
                port,
                "the real engine (`palisade-rls`: limitador 0.14 on Redis, `make rls-engine`), \
                 one Redis increment per request"
                    .to_owned(),
            );
        }
        let fake = RlsFake::start(Script::Ok);
        let port = fake.port();
        (
            Service::Fake { _fake: fake },
            port,
            "the fault-injecting stand-in (`palisade_harness::rls_fake`, answering OK in-process; \
             the real engine was not available to this run: `make rls-engine` builds it)"
                .to_owned(),
        )
    }
}

fn redis_available() -> bool {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn section(args: &Args, rt: &Runtime, template: &RequestTemplate, ticks: Ticks) -> String {
    let upstream = match Upstream::start("127.0.0.1:0") {
        Ok(u) => u,
        Err(e) => return format!("\n## Global rate limiting\n\nno upstream: {e}\n"),
    };
    let (service, rls_port, service_what) = Service::start();
    let mut slots: Vec<Slot> = variants()
        .into_iter()
        .map(|variant| Slot {
            variant,
            envoy: None,
            problem: None,
            cpu_us: Vec::new(),
            p50_us: Vec::new(),
            p99_us: Vec::new(),
        })
        .collect();
    for slot in &mut slots {
        eprintln!("starting Envoy for {}…", slot.variant.name);
        match start(&slot.variant, upstream.port(), rls_port) {
            Ok(envoy) => slot.envoy = Some(envoy),
            Err(e) => slot.problem = Some(e),
        }
    }
    // Each filter really calls the service: one preflight request each.
    for slot in slots.iter_mut().filter(|s| s.envoy.is_some()) {
        let Some(envoy) = &slot.envoy else { continue };
        // Both filters call the cluster `rls`: Envoy's own count of its requests works for the
        // engine and the stand-in alike.
        let rls_calls = || envoy.stat_or_zero("cluster.rls.upstream_rq_total");
        let before = rls_calls();
        if let Err(e) = measure(rt, envoy, template, 1, 0, 2) {
            slot.problem = Some(e);
            continue;
        }
        let calls = rls_calls() - before;
        let expected = if slot.variant.name.starts_with("routed_") {
            0
        } else {
            2
        };
        if calls != expected {
            slot.problem = Some(format!(
                "{calls} service calls for 2 requests (expected {expected})\n{}",
                tail(&envoy.log(), 20)
            ));
        }
    }
    let connections = args.connections.min(4);
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..slots.len())
            .filter(|i| slots[*i].problem.is_none())
            .collect();
        stats::SplitMix64::new(args.seed.wrapping_add(1000 + round as u64)).shuffle(&mut order);
        eprintln!("global round {}/{}", round + 1, args.rounds);
        for i in order {
            let slot = &mut slots[i];
            let Some(envoy) = &slot.envoy else { continue };
            let requests = (args.requests / 4).max(1_000);
            match measure(
                rt,
                envoy,
                template,
                connections,
                args.warmup() / 4,
                requests,
            ) {
                Ok(m) => {
                    let cpu = ticks.to_duration(m.cpu_ticks).as_secs_f64() * 1e6 / m.n as f64;
                    eprintln!(
                        "  {:<18} {cpu:7.1} µs/req  p50 {:6.0} µs  p99 {:6.0} µs",
                        slot.variant.name, m.p50_us, m.p99_us
                    );
                    slot.cpu_us.push(cpu);
                    slot.p50_us.push(m.p50_us);
                    slot.p99_us.push(m.p99_us);
                }
                Err(e) => slot.problem = Some(e),
            }
        }
    }
    for slot in &mut slots {
        if let (Some(why), Some(envoy)) = (&slot.problem, &slot.envoy) {
            eprintln!(
                "----- envoy log of {} ({why}) -----\n{}",
                slot.variant.name,
                tail(&envoy.log(), 40)
            );
        }
        slot.envoy = None;
    }
    drop(service);
    render(args, &slots, &service_what, connections)
}

fn start(variant: &Variant, upstream_port: u16, rls_port: u16) -> Result<Envoy, String> {
    let mut bootstrap = Bootstrap::new()
        .route(Route::backend("bench", "/"))
        .extra_cluster(&cluster_yaml("rls", rls_port));
    for f in &variant.filters {
        bootstrap = bootstrap.filter(f.clone());
    }
    let mut yaml = bootstrap.render(upstream_port);
    if variant.route_rate_limits {
        let route = "route: { cluster: ";
        if !yaml.contains(route) {
            return Err("the bootstrap has no backend route to add rate_limits to".to_owned());
        }
        yaml = yaml.replacen(
            route,
            &format!(
                "route: {{ rate_limits: [{{ actions: [{{ generic_key: {{ descriptor_value: {DESCRIPTOR_VALUE} }} }}] }}], cluster: "
            ),
            1,
        );
    }
    let opts = EnvoyOptions {
        concurrency: 1,
        log_level: "warning".to_owned(),
        component_log_level: None,
    };
    Envoy::start_with(&yaml, &opts, &LocalBinary::from_env())
        .map_err(|e| format!("failed to start: {}", first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_owned()
}

struct Measured {
    cpu_ticks: u64,
    n: u64,
    p50_us: f64,
    p99_us: f64,
}

/// Warm up, then `requests` over `connections` (one in flight each), recording each latency and
/// Envoy's CPU over the measured phase. Any non-200 fails the measurement.
fn measure(
    rt: &Runtime,
    envoy: &Envoy,
    template: &RequestTemplate,
    connections: usize,
    warmup: u64,
    requests: u64,
) -> Result<Measured, String> {
    let port = envoy.listener_port();
    let pid = envoy.pid();
    rt.block_on(async move {
        let mut senders = Vec::new();
        for _ in 0..connections.max(1) {
            senders.push(connect(port).await?);
        }
        let per = |total: u64, i: usize| -> u64 {
            let k = senders_len(connections) as u64;
            total / k + u64::from((i as u64) < total % k)
        };
        // Warm-up.
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mut s) in senders.into_iter().enumerate() {
            let n = per(warmup, i);
            let t = template.clone();
            tasks.spawn(async move {
                for _ in 0..n {
                    check(send(&mut s, &t).await)?;
                }
                Ok::<_, String>(s)
            });
        }
        let mut senders = Vec::new();
        while let Some(j) = tasks.join_next().await {
            senders.push(j.map_err(|e| e.to_string())??);
        }
        let cpu_before = procfs::cpu_ticks(pid)?;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mut s) in senders.into_iter().enumerate() {
            let n = per(requests, i);
            let t = template.clone();
            tasks.spawn(async move {
                let mut lat = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let started = Instant::now();
                    check(send(&mut s, &t).await)?;
                    lat.push(started.elapsed());
                }
                Ok::<_, String>(lat)
            });
        }
        let mut all: Vec<Duration> = Vec::new();
        while let Some(j) = tasks.join_next().await {
            all.extend(j.map_err(|e| e.to_string())??);
        }
        let cpu_after = procfs::cpu_ticks(pid)?;
        all.sort();
        let pct = |p: f64| -> f64 {
            if all.is_empty() {
                return 0.0;
            }
            let i = ((all.len() as f64 - 1.0) * p).round() as usize;
            all[i.min(all.len() - 1)].as_secs_f64() * 1e6
        };
        Ok(Measured {
            cpu_ticks: cpu_after.saturating_sub(cpu_before),
            n: all.len() as u64,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
        })
    })
}

fn senders_len(connections: usize) -> usize {
    connections.max(1)
}

fn check(r: Result<u16, String>) -> Result<(), String> {
    match r {
        Ok(200) => Ok(()),
        Ok(s) => Err(format!("status {s}")),
        Err(e) => Err(e),
    }
}

fn render(args: &Args, slots: &[Slot], service: &str, connections: usize) -> String {
    let find = |name: &str| {
        slots
            .iter()
            .find(|s| s.variant.name == name && !s.cpu_us.is_empty())
    };
    let paired = |a: &[f64], b: &[f64]| -> Option<f64> {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        (!d.is_empty()).then(|| stats::median(&d))
    };
    let none = find("routed_none");
    let mut s = format!(
        "\n## Global rate limiting: rate_limit's `global` rule against Envoy's `ratelimit` filter\n\n\
         Both call the same rate limit service with the same descriptor (domain `{DOMAIN}`, \
         `generic_key = {DESCRIPTOR_VALUE}`), on a request routed to the upstream (the native filter \
         skips direct responses). Service: {service}. Envoy `--concurrency 1`, {connections} \
         keep-alive connections, median of {} rounds; added = against `routed_none` of the same \
         round.\n\n\
         | case | what | CPU µs/req | added CPU µs/req | p50 µs | p99 µs | added p50 µs | added p99 µs |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
        args.rounds
    );
    for slot in slots {
        let v = &slot.variant;
        if slot.cpu_us.is_empty() {
            let why = slot.problem.as_deref().map(first_line).unwrap_or_default();
            let _ = writeln!(s, "| {} | {} | {why} | | | | | |", v.name, v.what);
            continue;
        }
        let added = |own: &[f64], base: fn(&Slot) -> &[f64]| {
            none.and_then(|n| paired(own, base(n)))
                .map_or("—".to_owned(), |d| format!("{d:.1}"))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {} | {:.0} | {:.0} | {} | {} |",
            v.name,
            v.what,
            stats::median(&slot.cpu_us),
            added(&slot.cpu_us, |n| &n.cpu_us),
            stats::median(&slot.p50_us),
            stats::median(&slot.p99_us),
            added(&slot.p50_us, |n| &n.p50_us),
            added(&slot.p99_us, |n| &n.p99_us),
        );
    }
    let added_cpu = |name: &str| -> Option<f64> {
        let n = none?;
        paired(&find(name)?.cpu_us, &n.cpu_us)
    };
    let (ours, native, floor) = (
        added_cpu("global"),
        added_cpu("native_ratelimit"),
        added_cpu("routed_floor"),
    );
    let p99_vs =
        |base: &str| -> Option<f64> { paired(&find("global")?.p99_us, &find(base)?.p99_us) };
    if let (Some(o), Some(n), Some(f)) = (ours, native, floor) {
        let bound = 1.3 * n + f;
        let _ = writeln!(
            s,
            "\nGoal 1 (issue 17), added CPU within 1.3× the native filter's plus the Wasm floor: \
             {o:.1} µs against 1.3 × {n:.1} + {f:.1} = {bound:.1} µs: **{}** (ours / native added: {:.2}×).",
            if o <= bound { "met" } else { "not met" },
            o / n.max(1e-9)
        );
    }
    if let Some(p) = p99_vs("routed_none") {
        let _ = writeln!(
            s,
            "Goal 2, p99 added latency under 1 ms on loopback: {p:.0} µs over no filter (the \
             service's round trip included): **{}**; against the native filter's p99: {:+.0} µs.",
            if p < 1000.0 { "met" } else { "not met" },
            p99_vs("native_ratelimit").unwrap_or(f64::NAN)
        );
    }
    s
}
