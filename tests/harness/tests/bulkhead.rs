//! bulkhead end to end: real Envoy with 2 workers, the echo upstream counting its peak in-flight
//! requests, 64 concurrent clients, and every way a stream can end.
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::client::{parallel, status_counts, Request, Response};
use palisade_harness::{
    render_example, repo_root, start_upstream, wait_for, Bootstrap, Envoy, Filter, Route, Upstream,
};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Envoy's fault filter, placed after the bulkhead: a later filter that answers locally when the
/// request carries `x-envoy-fault-abort-request: <status>`.
const FAULT_FILTER: &str = r#"- name: envoy.filters.http.fault
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
    abort:
      header_abort: {}
      percentage: { numerator: 100, denominator: HUNDRED }
"#;

fn start(config: Value) -> (Upstream, Envoy) {
    let upstream = start_upstream();
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("bulkhead", &config))
        .filter(Filter::raw(FAULT_FILTER))
        .route(Route::backend("timeout", "/timeout").timeout_ms(100))
        .route(Route::backend("all", "/"))
        .render(upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    (upstream, envoy)
}

fn stat(envoy: &Envoy, rule: &str, what: &str) -> u64 {
    envoy.stat(&format!("wasmcustom.palisade.bulkhead.{rule}.{what}"))
}

/// Wait until the rule's in-flight gauge is back to 0 and every taken permit was released.
fn wait_for_no_permits(envoy: &Envoy, rule: &str) {
    wait_for(
        &format!("the {rule} in-flight gauge to return to 0"),
        Duration::from_secs(10),
        || {
            let taken = stat(envoy, rule, "admitted") + stat(envoy, rule, "wait_admitted");
            (stat(envoy, rule, "in_flight") == 0 && stat(envoy, rule, "released") == taken)
                .then_some(())
        },
    );
}

/// `n` clients start together (a barrier), each sending one request built by `make(i)` on its own
/// connection. Returns each result with its latency, in client order.
fn burst(
    n: usize,
    make: impl Fn(usize) -> Request + Sync,
) -> Vec<(Result<Response, String>, Duration)> {
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, make) = (&barrier, &make);
                s.spawn(move || {
                    let req = make(i);
                    barrier.wait();
                    let started = Instant::now();
                    let result = req.send();
                    (result, started.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn statuses(results: &[(Result<Response, String>, Duration)]) -> Vec<u16> {
    results
        .iter()
        .map(|(r, _)| r.as_ref().map(|r| r.status).unwrap_or(0))
        .collect()
}

fn count(statuses: &[u16], want: u16) -> usize {
    statuses.iter().filter(|s| **s == want).count()
}

fn delayed(envoy: &Envoy, path: &str, ms: u64) -> Request {
    Request::get(&envoy.url(path)).header("x-upstream-delay-ms", &ms.to_string())
}

/// A client that sends a request and hangs up before the answer: it gives Envoy `patience` to
/// start the request, then closes the connection.
fn abort_after(envoy: &Envoy, path: &str, patience: Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", envoy.listener_port())).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: bulkhead\r\n\r\n").unwrap();
    s.set_read_timeout(Some(patience)).unwrap();
    let mut buf = [0u8; 64];
    let _ = s.read(&mut buf);
    // Dropping the stream closes the connection mid-request.
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn sixty_four_clients_never_push_the_upstream_past_the_limit_and_the_excess_gets_503_fast() {
    const LIMIT: u64 = 4;
    let (upstream, envoy) = start(json!({"rules": [{"name": "backend", "max_concurrent": LIMIT}]}));
    let results = burst(64, |_| delayed(&envoy, "/slow", 200));
    let st = statuses(&results);
    assert_eq!(count(&st, 200) + count(&st, 503), 64, "{st:?}");
    assert!(count(&st, 200) >= LIMIT as usize, "{st:?}");
    assert!(count(&st, 503) > 0, "{st:?}");
    assert!(
        upstream.stats().peak_in_flight <= LIMIT,
        "{:?}",
        upstream.stats()
    );
    // Rejections are immediate: they do not wait for the 200 ms upstream. Generous bounds, the
    // machine is shared.
    let mut rejected: Vec<Duration> = results
        .iter()
        .filter_map(|(r, d)| r.as_ref().ok().filter(|r| r.status == 503).map(|_| *d))
        .collect();
    rejected.sort();
    let median = rejected[rejected.len() / 2];
    assert!(
        median < Duration::from_millis(150),
        "median 503 latency {median:?}"
    );
    for (r, _) in &results {
        let r = r.as_ref().unwrap();
        if r.status == 503 {
            assert_eq!(r.header("x-palisade-bulkhead"), Some("full"));
            assert_eq!(r.body, "bulkhead full\n");
        }
    }
    assert_eq!(upstream.stats().hits, count(&st, 200) as u64);
    assert_eq!(stat(&envoy, "backend", "rejected"), count(&st, 503) as u64);
    assert!(
        envoy.worker_connections().iter().all(|c| *c > 0),
        "both workers must take connections: {:?}",
        envoy.worker_connections()
    );
    wait_for_no_permits(&envoy, "backend");
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn with_max_wait_every_waiter_is_served_in_turn_without_exceeding_the_limit() {
    let (upstream, envoy) = start(json!({"rules": [{"name": "backend", "max_concurrent": 2,
        "max_wait": "10s"}]}));
    let started = Instant::now();
    let results = burst(8, |_| delayed(&envoy, "/wait", 200));
    let elapsed = started.elapsed();
    assert_eq!(statuses(&results), vec![200; 8]);
    assert!(
        upstream.stats().peak_in_flight <= 2,
        "{:?}",
        upstream.stats()
    );
    // Four waves of two, 200 ms each: the waits really happened.
    assert!(elapsed >= Duration::from_millis(750), "{elapsed:?}");
    assert_eq!(
        stat(&envoy, "backend", "admitted") + stat(&envoy, "backend", "wait_admitted"),
        8
    );
    assert!(stat(&envoy, "backend", "wait_admitted") >= 6);
    assert_eq!(
        stat(&envoy, "backend", "queued"),
        stat(&envoy, "backend", "wait_admitted")
    );
    // The wait-time histogram is published (Envoy lists histograms with their quantiles).
    wait_for("the wait_ms histogram", Duration::from_secs(10), || {
        let stats = palisade_harness::client::get(&format!("{}/stats", envoy.admin_url())).ok()?;
        stats
            .body
            .lines()
            .any(|l| l.starts_with("wasmcustom.palisade.bulkhead.backend.wait_ms: P0("))
            .then_some(())
    });
    wait_for_no_permits(&envoy, "backend");
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn with_max_wait_sixty_four_clients_either_wait_and_succeed_or_expire_with_503() {
    let (upstream, envoy) = start(json!({"rules": [{"name": "backend", "max_concurrent": 2,
        "max_wait": "500ms"}]}));
    let results = burst(64, |_| delayed(&envoy, "/wait", 200));
    let st = statuses(&results);
    assert_eq!(count(&st, 200) + count(&st, 503), 64, "{st:?}");
    assert!(
        upstream.stats().peak_in_flight <= 2,
        "{:?}",
        upstream.stats()
    );
    let waited_ok = stat(&envoy, "backend", "wait_admitted");
    let expired = stat(&envoy, "backend", "wait_expired");
    assert!(waited_ok >= 1, "some waiters must get a permit");
    assert!(expired >= 1, "some waiters must expire");
    assert_eq!(
        count(&st, 200) as u64,
        stat(&envoy, "backend", "admitted") + waited_ok
    );
    for ((r, latency), _) in results.iter().zip(0..) {
        let r = r.as_ref().unwrap();
        if r.status == 503 && r.header("x-palisade-bulkhead") == Some("expired") {
            // It waited for max_wait (a tick of slack below, generous slack above).
            assert!(*latency >= Duration::from_millis(480), "{latency:?}");
            assert!(*latency < Duration::from_secs(5), "{latency:?}");
        }
    }
    assert_eq!(
        results
            .iter()
            .filter(|(r, _)| r.as_ref().unwrap().header("x-palisade-bulkhead") == Some("expired"))
            .count() as u64,
        expired
    );
    wait_for_no_permits(&envoy, "backend");
    assert_eq!(
        envoy.stat("wasmcustom.palisade.bulkhead.worker_slot_failures"),
        0
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn no_permit_leaks_whichever_way_a_stream_ends() {
    const LIMIT: u64 = 2;
    let (upstream, envoy) = start(
        json!({"rules": [{"name": "backend", "max_concurrent": LIMIT,
        "max_wait": "2s"}]}),
    );
    // (how it ends, request, expected status; None: the client hangs up)
    type Case = (
        &'static str,
        Box<dyn Fn(&Envoy) -> Request + Sync>,
        Option<u16>,
    );
    let cases: Vec<Case> = vec![
        (
            "response complete",
            Box::new(|e| delayed(e, "/ok", 50)),
            Some(200),
        ),
        (
            "upstream reset",
            Box::new(|e| delayed(e, "/reset", 50).header("x-upstream-reset", "1")),
            Some(503),
        ),
        (
            "local reply from a later filter",
            Box::new(|e| delayed(e, "/fault", 50).header("x-envoy-fault-abort-request", "418")),
            Some(418),
        ),
        (
            "route timeout",
            Box::new(|e| delayed(e, "/timeout", 1_000)),
            Some(504),
        ),
        (
            "client abort",
            Box::new(|e| delayed(e, "/abort", 1_000)),
            None,
        ),
    ];
    for (name, make, want) in &cases {
        let results = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| match want {
                        Some(_) => Some(make(&envoy).send()),
                        None => {
                            abort_after(
                                &envoy,
                                "/abort?upstream_delay_ms=1000",
                                Duration::from_millis(100),
                            );
                            None
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        if let Some(want) = want {
            for r in results.iter().flatten() {
                assert_eq!(r.as_ref().unwrap().status, *want, "{name}");
            }
        }
        wait_for_no_permits(&envoy, "backend");
        // Not just the gauge: the full limit is available again in shared data.
        upstream.reset_stats();
        let again = burst(LIMIT as usize, |_| delayed(&envoy, "/after", 100));
        assert_eq!(statuses(&again), vec![200; LIMIT as usize], "after {name}");
        wait_for_no_permits(&envoy, "backend");
    }
    assert_eq!(stat(&envoy, "backend", "store_failures"), 0);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn after_a_thousand_requests_some_aborted_by_the_client_the_gauge_returns_to_zero() {
    const LIMIT: u64 = 8;
    let (upstream, envoy) = start(
        json!({"rules": [{"name": "backend", "max_concurrent": LIMIT,
        "max_wait": "100ms", "max_waiting": 16}]}),
    );
    let aborted = std::sync::atomic::AtomicUsize::new(0);
    let results = parallel(64, 1_000, |i| {
        if i % 10 == 3 {
            // One in ten hangs up mid-flight.
            abort_after(
                &envoy,
                "/abort?upstream_delay_ms=200",
                Duration::from_millis(20),
            );
            aborted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Request::get(&envoy.url("/quick"))
        } else {
            delayed(&envoy, "/load", 200)
        }
    });
    assert_eq!(aborted.into_inner(), 100);
    let counts = status_counts(&results);
    assert_eq!(
        counts
            .keys()
            .copied()
            .filter(|s| *s != 200 && *s != 503)
            .count(),
        0,
        "{counts:?}"
    );
    assert!(counts.get(&200).copied().unwrap_or(0) > 0, "{counts:?}");
    wait_for_no_permits(&envoy, "backend");
    wait_for("the upstream to finish", Duration::from_secs(5), || {
        (upstream.stats().in_flight == 0).then_some(())
    });
    // Clients really hung up on active requests (holding permits, or waiting for one).
    assert!(
        envoy.stat("http.ingress.downstream_rq_rx_reset") >= 10,
        "{}",
        envoy.stat("http.ingress.downstream_rq_rx_reset")
    );
    let taken = stat(&envoy, "backend", "admitted") + stat(&envoy, "backend", "wait_admitted");
    assert!(taken >= 50, "{taken}");
    assert_eq!(stat(&envoy, "backend", "released"), taken);
    assert_eq!(stat(&envoy, "backend", "store_failures"), 0);
    // The full limit is usable again.
    let again = burst(LIMIT as usize, |_| delayed(&envoy, "/after", 100));
    assert_eq!(statuses(&again), vec![200; LIMIT as usize]);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn shadow_mode_counts_and_marks_but_rejects_nothing() {
    let (upstream, envoy) = start(json!({"rules": [{"name": "trial", "max_concurrent": 1,
        "shadow": true}]}));
    let results = burst(8, |_| {
        delayed(&envoy, "/s", 200).header("x-palisade-bulkhead-shadow", "spoofed")
    });
    assert_eq!(statuses(&results), vec![200; 8]);
    assert!(
        upstream.stats().peak_in_flight > 1,
        "{:?}",
        upstream.stats()
    );
    let shadowed = stat(&envoy, "trial", "shadow_rejected");
    assert!(shadowed >= 1);
    assert_eq!(stat(&envoy, "trial", "admitted") + shadowed, 8);
    let marked: Vec<&Response> = results
        .iter()
        .map(|(r, _)| r.as_ref().unwrap())
        .filter(|r| r.header("x-palisade-bulkhead") == Some("shadow"))
        .collect();
    assert_eq!(marked.len() as u64, shadowed);
    for r in &marked {
        assert_eq!(
            r.echoed_header("x-palisade-bulkhead-shadow").as_deref(),
            Some("trial")
        );
    }
    // The client's spoofed mark never reaches the upstream.
    let unmarked = results
        .iter()
        .map(|(r, _)| r.as_ref().unwrap())
        .filter(|r| r.echoed_header("x-palisade-bulkhead-shadow").is_none())
        .count() as u64;
    assert_eq!(unmarked, 8 - shadowed);
    wait_for_no_permits(&envoy, "trial");
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn partitions_by_header_route_cluster_and_path_prefix_are_independent() {
    let (_upstream, envoy) = start(json!({"rules": [
        {"name": "api", "match": {"path_prefix": "/api/"}, "max_concurrent": 1},
        {"name": "tenant", "match": {"headers": [{"name": "x-tenant"}]},
         "partition_by": {"header": "x-tenant"}, "max_concurrent": 1},
        {"name": "per_route", "match": {"path_prefix": "/timeout"}, "partition_by": "route",
         "max_concurrent": 1},
        {"name": "cluster", "cluster": "backend", "max_concurrent": 1}
    ]}));
    // (requests sent together, expected statuses in any order)
    let table: Vec<(Vec<Request>, Vec<u16>)> = vec![
        (
            vec![
                delayed(&envoy, "/api/a", 300),
                delayed(&envoy, "/api/b", 300),
            ],
            vec![200, 503],
        ),
        (
            vec![
                delayed(&envoy, "/t", 300).header("x-tenant", "a"),
                delayed(&envoy, "/t", 300).header("x-tenant", "a"),
                delayed(&envoy, "/t", 300).header("x-tenant", "b"),
                delayed(&envoy, "/t", 300).header("x-tenant", "b"),
            ],
            vec![200, 200, 503, 503],
        ),
        (
            vec![
                delayed(&envoy, "/timeout", 50),
                delayed(&envoy, "/timeout", 50),
            ],
            vec![200, 503],
        ),
        (
            vec![delayed(&envoy, "/other", 300), delayed(&envoy, "/x", 300)],
            vec![200, 503],
        ),
        // Different rules do not share permits.
        (
            vec![
                delayed(&envoy, "/api/c", 300),
                delayed(&envoy, "/t", 300).header("x-tenant", "c"),
                delayed(&envoy, "/y", 300),
            ],
            vec![200, 200, 200],
        ),
    ];
    for (i, (requests, want)) in table.iter().enumerate() {
        let results = burst(requests.len(), |j| requests[j].clone());
        let mut got = statuses(&results);
        got.sort();
        let mut want = want.clone();
        want.sort();
        assert_eq!(got, want, "row {i}");
        for rule in ["api", "tenant", "per_route", "cluster"] {
            wait_for_no_permits(&envoy, rule);
        }
    }
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_malformed_config_is_rejected_naming_the_field() {
    let bad = json!({"rules": [{"name": "b", "max_concurrent": 0}]});
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("bulkhead", &bad))
        .render(1);
    let err = Envoy::start(&yaml)
        .err()
        .expect("Envoy must refuse the config");
    assert!(
        err.log.contains(
            "config field `rules[0].max_concurrent`: value \"0\" is out of range (allowed 1 to 1000000)"
        ),
        "{}",
        err.log
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn the_shipped_example_allows_two_concurrent_requests_to_the_backend() {
    let upstream = start_upstream();
    let yaml = render_example(&repo_root().join("envoy/bulkhead.yaml"), upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let results = burst(8, |_| delayed(&envoy, "/", 300));
    let st = statuses(&results);
    assert_eq!(count(&st, 200) + count(&st, 503), 8, "{st:?}");
    assert!(count(&st, 200) >= 2, "{st:?}");
    assert!(
        upstream.stats().peak_in_flight <= 2,
        "{:?}",
        upstream.stats()
    );
    wait_for_no_permits(&envoy, "backend");
}
