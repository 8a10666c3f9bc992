//! The skeleton end to end: a module built from this workspace, in real Envoy with 2 workers,
//! in front of the real upstream.
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::client::{parallel, status_counts, Request};
use palisade_harness::{start_upstream, wait_for, Bootstrap, Envoy, Filter, Route};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn probe_passes_requests_to_the_upstream_and_counts_exactly_across_two_workers() {
    let upstream = start_upstream();
    let yaml = Bootstrap::new()
        .filter(Filter::wasm(
            "probe",
            &json!({"header": "x-palisade-probe", "count": true}),
        ))
        .route(Route::backend("all", "/"))
        .render(upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));

    const N: usize = 400;
    let results = parallel(8, N, |i| {
        Request::get(&envoy.url(&format!("/item/{i}?q={i}")))
    });
    assert_eq!(
        status_counts(&results).get(&200),
        Some(&N),
        "statuses: {:?}",
        status_counts(&results)
    );

    // The upstream saw every request, with the path and query intact.
    assert_eq!(upstream.stats().hits, N as u64);
    let first = results[7].as_ref().unwrap().json();
    assert_eq!(first["path"], "/item/7");
    assert_eq!(first["query"], "q=7");

    // Each request got a distinct count from the shared CAS counter: 1..=N, no duplicates and no
    // gaps, although two worker VMs incremented it concurrently.
    let counts: BTreeSet<u64> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .unwrap()
                .echoed_header("x-palisade-probe")
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .collect();
    assert_eq!(counts, (1..=N as u64).collect::<BTreeSet<_>>());

    // Both workers served traffic, and the module's metric shows up in Envoy's stats.
    assert_eq!(envoy.stat("wasmcustom.palisade.probe.requests"), N as u64);
    assert_eq!(envoy.stat("wasmcustom.palisade.probe.count_failures"), 0);
    let per_worker = envoy.worker_connections();
    let workers_used = per_worker.iter().filter(|c| **c > 0).count();
    assert_eq!(
        workers_used, 2,
        "expected both workers to take connections: {per_worker:?}"
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_malformed_config_makes_envoy_refuse_to_start_and_names_the_field() {
    let yaml = Bootstrap::new()
        .filter(Filter::wasm(
            "probe",
            &json!({"header": "not a header", "count": true}),
        ))
        .render(1);
    let err = match Envoy::start(&yaml) {
        Ok(_) => panic!("Envoy started with an invalid plugin config"),
        Err(e) => e,
    };
    assert!(
        err.log.contains(
            "config field `header`: invalid value \"not a header\": not a valid HTTP header name"
        ),
        "the plugin's error is not in Envoy's log:\n{}",
        err.log
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn an_unknown_config_field_is_rejected_by_name() {
    let yaml = Bootstrap::new()
        .filter(Filter::wasm(
            "probe",
            &json!({"header": "x-probe", "cuont": true}),
        ))
        .render(1);
    let err = Envoy::start(&yaml)
        .err()
        .expect("Envoy must refuse an unknown field");
    assert!(
        err.log.contains("config field `cuont`: unknown field"),
        "{}",
        err.log
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn upstream_controls_pass_through_envoy() {
    let upstream = start_upstream();
    let yaml = Bootstrap::new()
        .filter(Filter::wasm(
            "probe",
            &json!({"header": "x-palisade-probe"}),
        ))
        .render(upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let cases = [
        (
            Request::get(&envoy.url("/s")).header("x-upstream-status", "503"),
            503,
        ),
        (Request::get(&envoy.url("/s?upstream_status=429")), 429),
        (
            Request::new("POST", &envoy.url("/b")).body(r#"{"a":1}"#),
            200,
        ),
    ];
    for (req, want) in cases {
        let resp = req.send().unwrap();
        assert_eq!(resp.status, want, "{req:?}");
    }
    // The probe without counting writes the request path into its header.
    let resp = Request::get(&envoy.url("/echo/me")).send().unwrap();
    assert_eq!(
        resp.echoed_header("x-palisade-probe").as_deref(),
        Some("/echo/me")
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn the_demo_shows_every_plugin_acting() {
    use palisade_harness::demo::{assert_walkthrough, DemoTarget, Global};
    use palisade_harness::rls::{Redis, RlsEngine};
    use palisade_harness::{render_example_with_rls, repo_root};
    // As `make demo` runs it with the engine built: Redis, the engine with the demo's limits, and
    // a second Envoy of the same config sharing it.
    let redis = Redis::start();
    let limits = std::fs::read_to_string(repo_root().join("deploy/compose/limits.yaml")).unwrap();
    let engine = RlsEngine::start_with(
        &redis,
        &limits,
        &["--rate-limit-headers", "DRAFT_VERSION_03"],
    );
    let upstream = start_upstream();
    let yaml = render_example_with_rls(
        &repo_root().join("envoy/demo.yaml"),
        upstream.port(),
        engine.port(),
    );
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let peer = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_walkthrough(&DemoTarget {
        base: envoy.url(""),
        admin: envoy.admin_url().to_owned(),
        cluster: "backend".to_owned(),
        global: Global::SharedWith {
            peer: peer.url(""),
            peer_admin: peer.admin_url().to_owned(),
        },
    });
    // The access log says which policy answered each local reply, and why.
    let log = wait_for(
        "the access log to show the 429",
        Duration::from_secs(5),
        || {
            let log = envoy.log();
            log.contains("access: GET /limited 429").then_some(log)
        },
    );
    for line in [
        "access: GET /limited 429 palisade_rate_limited palisade=rate_limit/per_client_ip/palisade_rate_limited",
        "access: GET /secure 401 palisade_jwt_missing palisade=jwt_auth/-/palisade_jwt_missing",
        "access: GET /hello?x=1 200 via_upstream palisade=-/-/-",
    ] {
        assert!(log.contains(line), "no access-log line {line:?} in\n{log}");
    }
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn the_harness_spreads_connections_evenly_over_both_workers() {
    // Every cross-worker assertion in the suite relies on this: 8 keep-alive connections are
    // 4 per worker (exact balance), never all on one by the luck of a hash.
    let yaml = Bootstrap::new()
        .route(Route::direct("all", "/", 200, "ok"))
        .render(1);
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let agent = palisade_harness::client::agent();
                let first = Request::get(&envoy.url("/")).send_with(&agent).unwrap();
                assert_eq!(first.status, 200);
                // Hold the connection open until all 8 are established.
                barrier.wait();
            });
        }
    });
    assert_eq!(envoy.worker_connections(), vec![4, 4]);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
#[should_panic(expected = "Envoy has no stat")]
fn a_misspelled_stat_name_fails_instead_of_reading_zero() {
    let yaml = Bootstrap::new()
        .filter(Filter::wasm(
            "probe",
            &json!({"header": "x-palisade-probe", "count": true}),
        ))
        .route(Route::direct("all", "/", 200, "ok"))
        .render(1);
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    // The real one is `...probe.count_failures`: a typo must not pass a `== 0` check.
    assert_eq!(envoy.stat("wasmcustom.palisade.probe.count_failure"), 0);
}
