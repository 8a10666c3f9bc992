//! The skeleton end to end: a module built from this workspace, in real Envoy with 2 workers,
//! in front of the real upstream.
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::client::{parallel, status_counts, Request};
use palisade_harness::{start_upstream, Bootstrap, Envoy, Filter, Route};
use serde_json::json;
use std::collections::BTreeSet;

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
    use palisade_harness::{render_example, repo_root};
    let upstream = start_upstream();
    let yaml = render_example(&repo_root().join("envoy/demo.yaml"), upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let token = std::fs::read_to_string(repo_root().join("envoy/jwt_auth.token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());

    // jwt_auth: open paths bypass, /secure needs a token, /admin needs the admin scope.
    let open = Request::get(&envoy.url("/hello")).send().unwrap();
    assert_eq!(open.status, 200);
    assert!(
        open.echoed_header("x-palisade-probe").is_some(),
        "probe ran"
    );
    let denied = Request::get(&envoy.url("/secure")).send().unwrap();
    assert_eq!(denied.status, 401);
    assert!(denied
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer realm="));
    let ok = Request::get(&envoy.url("/secure"))
        .header("authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.echoed_header("x-jwt-sub").as_deref(), Some("demo-user"));
    let admin = Request::get(&envoy.url("/admin"))
        .header("authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(admin.status, 403);

    // rate_limit: a burst of 5 under /limited.
    let statuses: Vec<u16> = (0..7)
        .map(|_| Request::get(&envoy.url("/limited")).send().unwrap().status)
        .collect();
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429]);

    // transform: path, headers, query and body rewritten; the response is marked.
    let r = Request::new("POST", &envoy.url("/v1/users/42?debug=1"))
        .header("content-type", "application/json")
        .header("x-internal-secret", "1")
        .body(r#"{"name": "ada", "password": "hunter2"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-palisade-transformed"), Some("true"));
    let echo = r.json();
    assert_eq!(echo["path"], "/v2/users/42");
    assert_eq!(echo["args"]["api_version"], "2");
    assert!(echo["args"].get("debug").is_none());
    assert_eq!(echo["headers"]["x-user-id"], "42");
    assert!(echo["headers"].get("x-internal-secret").is_none());
    assert_eq!(echo["body_json"]["source"], "gateway");
    assert!(echo["body_json"].get("password").is_none());

    // circuit_breaker: five upstream failures open it; the next request fails fast.
    for _ in 0..5 {
        let r = Request::get(&envoy.url("/fail"))
            .header("x-upstream-status", "503")
            .send()
            .unwrap();
        assert_eq!(r.status, 503);
    }
    let hits = upstream.stats().hits;
    let fast = Request::get(&envoy.url("/")).send().unwrap();
    assert_eq!(fast.status, 503);
    assert_eq!(fast.header("x-palisade-circuit"), Some("open"));
    assert_eq!(
        upstream.stats().hits,
        hits,
        "an open breaker sends nothing upstream"
    );
}
