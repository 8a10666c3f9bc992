//! circuit_breaker end to end: real Envoy with 2 workers, the echo upstream counting hits.
//!
//! Synchronisation is by polling (`wait_for`) on the breaker's state gauge in `/stats`, never by
//! fixed sleeps. The breakers are keyed by the upstream cluster (the default), so the gauge's
//! name (`….<rule>.backend.state`) also proves `xds.cluster_name` is known at request-headers time.
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::client::{parallel, status_counts, Request, Response};
use palisade_harness::{
    render_example, repo_root, start_upstream, wait_for, Bootstrap, Envoy, Filter, Route,
};
use serde_json::{json, Value};
use std::time::Duration;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

fn start(config: Value) -> (palisade_harness::Upstream, Envoy) {
    let upstream = start_upstream();
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("circuit_breaker", &config))
        .route(Route::backend("all", "/"))
        .render(upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    (upstream, envoy)
}

/// A breaker on the cluster: window of 10 calls, evaluated from 5, opens at ≥ 50 % failures.
fn rule(extra: Value) -> Value {
    let mut r = json!({"name": "cb", "sliding_window_size": 10, "minimum_number_of_calls": 5,
        "failure_rate_threshold": 50, "wait_duration_in_open": "5s",
        "permitted_calls_in_half_open": 3});
    if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            r.insert(k.clone(), v.clone());
        }
    }
    json!({ "rules": [r] })
}

fn stat(envoy: &Envoy, what: &str) -> u64 {
    envoy.stat(&format!("wasmcustom.palisade.circuit_breaker.cb.{what}"))
}

fn state(envoy: &Envoy) -> u64 {
    stat(envoy, "backend.state")
}

fn ok(r: &Result<Response, String>) -> &Response {
    r.as_ref()
        .unwrap_or_else(|e| panic!("transport error: {e}"))
}

fn send(envoy: &Envoy, path: &str) -> Response {
    Request::get(&envoy.url(path))
        .send()
        .unwrap_or_else(|e| panic!("transport error: {e}"))
}

/// Five upstream 503s in a row: at ≥ 5 calls and 100 % failures the breaker opens.
fn trip(envoy: &Envoy) {
    for i in 0..5 {
        let r = send(envoy, "/fail?upstream_status=503");
        assert_eq!(r.status, 503, "call {i}");
        assert_eq!(
            r.header("x-palisade-circuit"),
            None,
            "call {i} reached the upstream"
        );
    }
    wait_for(
        "the state gauge to show open",
        Duration::from_secs(5),
        || (state(envoy) == OPEN).then_some(()),
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn after_the_failure_threshold_the_upstream_sees_nothing_while_open() {
    let (upstream, envoy) = start(rule(json!({"wait_duration_in_open": "60s"})));
    // Below the minimum number of calls nothing is evaluated: 2 failures of 4 calls is 50 %.
    for status in [500, 200, 500, 200] {
        let path = format!("/?upstream_status={status}");
        assert_eq!(send(&envoy, &path).status, status);
    }
    assert_eq!(stat(&envoy, "transitions_to_open"), 0);
    assert_eq!(state(&envoy), CLOSED);
    // The fifth call reaches the minimum: 3 failures of 5 calls is 60 %.
    assert_eq!(send(&envoy, "/?upstream_status=502").status, 502);
    wait_for("the breaker to open", Duration::from_secs(5), || {
        (state(&envoy) == OPEN).then_some(())
    });
    let hits = upstream.stats().hits;
    assert_eq!(hits, 5);

    let results = parallel(8, 80, |_| Request::get(&envoy.url("/healthy-again")));
    for r in results.iter().map(ok) {
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-palisade-circuit"), Some("open"));
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "retry-after {retry}");
        assert_eq!(r.body, "circuit open\n");
    }
    assert_eq!(
        upstream.stats().hits,
        hits,
        "no request may reach the upstream"
    );
    assert!(
        envoy.worker_connections().iter().all(|c| *c > 0),
        "both workers must have taken connections: {:?}",
        envoy.worker_connections()
    );
    assert_eq!(stat(&envoy, "rejected"), 80);
    assert_eq!(stat(&envoy, "calls_failure"), 3);
    assert_eq!(stat(&envoy, "calls_success"), 2);
    assert_eq!(stat(&envoy, "transitions_to_open"), 1);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn half_open_admits_exactly_the_probe_budget_across_both_workers_then_recovery_closes() {
    let (upstream, envoy) = start(rule(json!({"wait_duration_in_open": "1s"})));
    trip(&envoy);
    wait_for(
        "the breaker to become half-open",
        Duration::from_secs(10),
        || (state(&envoy) == HALF_OPEN).then_some(()),
    );
    let before = upstream.stats().hits;
    // One request per client thread, all at once. The probes stay at the upstream for 4 s, far
    // longer than the burst takes, so every other request finds the budget taken.
    let results = parallel(48, 48, |_| {
        Request::get(&envoy.url("/probe")).header("x-upstream-delay-ms", "4000")
    });
    let counts = status_counts(&results);
    assert_eq!(counts.get(&200).copied(), Some(3), "{counts:?}");
    assert_eq!(counts.get(&503).copied(), Some(45), "{counts:?}");
    assert_eq!(
        upstream.stats().hits - before,
        3,
        "exactly the probe budget"
    );
    for r in results.iter().map(ok).filter(|r| r.status == 503) {
        assert_eq!(r.header("x-palisade-circuit"), Some("half-open"));
        assert!(r.header("retry-after").is_some());
    }
    assert!(
        envoy.worker_connections().iter().all(|c| *c > 0),
        "{:?}",
        envoy.worker_connections()
    );
    // Three successful probes close the breaker.
    wait_for("the breaker to close", Duration::from_secs(10), || {
        (state(&envoy) == CLOSED).then_some(())
    });
    let results = parallel(4, 20, |_| Request::get(&envoy.url("/after")));
    assert_eq!(status_counts(&results).get(&200), Some(&20));
    assert_eq!(stat(&envoy, "transitions_to_half_open"), 1);
    assert_eq!(stat(&envoy, "transitions_to_closed"), 1);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_failed_probe_reopens_the_breaker() {
    let (upstream, envoy) = start(rule(
        json!({"wait_duration_in_open": "1s", "permitted_calls_in_half_open": 1}),
    ));
    trip(&envoy);
    wait_for("half-open", Duration::from_secs(10), || {
        (state(&envoy) == HALF_OPEN).then_some(())
    });
    assert_eq!(send(&envoy, "/?upstream_status=503").status, 503);
    let hits = upstream.stats().hits;
    let r = send(&envoy, "/");
    assert_eq!(r.header("x-palisade-circuit"), Some("open"));
    assert_eq!(upstream.stats().hits, hits);
    assert_eq!(stat(&envoy, "transitions_to_open"), 2);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn upstream_resets_count_as_failures() {
    let (_upstream, envoy) = start(rule(json!({})));
    for i in 0..5 {
        let r = send(&envoy, "/?upstream_reset=true");
        assert_eq!(
            r.status, 503,
            "call {i}: Envoy answers a reset with a local 503"
        );
        assert_eq!(r.header("x-palisade-circuit"), None);
    }
    wait_for("open", Duration::from_secs(5), || {
        (state(&envoy) == OPEN).then_some(())
    });
    assert_eq!(stat(&envoy, "calls_failure"), 5);
    assert_eq!(send(&envoy, "/").header("x-palisade-circuit"), Some("open"));
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn slow_calls_open_the_breaker() {
    let (upstream, envoy) = start(rule(json!({"slow_call_duration": "200ms",
        "slow_call_rate_threshold": 80, "minimum_number_of_calls": 4,
        "sliding_window_size": 4, "wait_duration_in_open": "60s"})));
    for i in 0..4 {
        let r = Request::get(&envoy.url("/slow"))
            .header("x-upstream-delay-ms", "400")
            .send()
            .unwrap();
        assert_eq!(r.status, 200, "call {i}: slow, not failed");
    }
    wait_for("open", Duration::from_secs(5), || {
        (state(&envoy) == OPEN).then_some(())
    });
    assert_eq!(stat(&envoy, "calls_slow"), 4);
    assert_eq!(stat(&envoy, "calls_failure"), 0);
    let hits = upstream.stats().hits;
    assert_eq!(send(&envoy, "/fast").status, 503);
    assert_eq!(upstream.stats().hits, hits);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn metrics_only_mode_never_rejects_but_counts_what_it_would_have() {
    // The deprecated spelling of `shadow: true`: still a dry run.
    dry_run_never_rejects_but_counts_what_it_would_have(
        json!({"mode": "metrics_only", "wait_duration_in_open": "60s"}),
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_shadow_rule_never_rejects_but_counts_what_it_would_have() {
    dry_run_never_rejects_but_counts_what_it_would_have(
        json!({"shadow": true, "wait_duration_in_open": "60s"}),
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn the_metrics_only_spelling_is_logged_as_deprecated_at_configure_and_shadow_is_not() {
    let warning = "config field `rules[0].mode`: `\"metrics_only\"` is deprecated; \
                   write `\"shadow\": true` (and no `mode`) instead";
    for (fields, warned) in [
        (json!({"mode": "metrics_only"}), true),
        (json!({"shadow": true}), false),
    ] {
        let (_upstream, envoy) = start(rule(fields.clone()));
        // Configure runs before Envoy reports ready, so the line is already there.
        let log = envoy.log();
        assert_eq!(
            log.contains(warning),
            warned,
            "{fields}: Envoy's log:\n{log}"
        );
        assert_eq!(
            log.contains("deprecated"),
            warned,
            "{fields}: Envoy's log:\n{log}"
        );
    }
}

fn dry_run_never_rejects_but_counts_what_it_would_have(fields: Value) {
    let (upstream, envoy) = start(rule(fields));
    trip(&envoy);
    let results = parallel(4, 20, |_| Request::get(&envoy.url("/through")));
    assert_eq!(status_counts(&results).get(&200), Some(&20));
    assert_eq!(upstream.stats().hits, 25);
    assert_eq!(stat(&envoy, "shadow_rejected"), 20);
    assert_eq!(stat(&envoy, "rejected"), 0);
    assert_eq!(state(&envoy), OPEN);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn breakers_are_per_key_and_forced_open_rejects_everything() {
    // Keyed by path segment: /a failing does not open /b's breaker.
    let config = json!({"rules": [
        {"name": "off", "mode": "forced_open", "match": {"path_prefix": "/maintenance"}},
        {"name": "cb", "key": {"path_segments": 1}, "sliding_window_size": 10,
         "minimum_number_of_calls": 5, "wait_duration_in_open": "60s"}
    ]});
    let (upstream, envoy) = start(config);
    for _ in 0..5 {
        assert_eq!(send(&envoy, "/a/x?upstream_status=500").status, 500);
    }
    wait_for("/a's breaker to open", Duration::from_secs(5), || {
        (stat(&envoy, "_a.state") == OPEN).then_some(())
    });
    let table: [(&str, u16, Option<&str>); 4] = [
        ("/a/y", 503, Some("open")),
        ("/b/y", 200, None),
        ("/maintenance", 503, Some("open")),
        ("/b/z", 200, None),
    ];
    let before = upstream.stats().hits;
    for (path, status, header) in table {
        let r = send(&envoy, path);
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("x-palisade-circuit"), header, "{path}");
    }
    assert_eq!(upstream.stats().hits - before, 2);
    assert_eq!(
        envoy.stat("wasmcustom.palisade.circuit_breaker.off.rejected"),
        1
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_malformed_config_is_rejected_naming_the_field() {
    let bad = json!({"rules": [{"name": "cb", "failure_rate_threshold": 150}]});
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("circuit_breaker", &bad))
        .render(1);
    let err = Envoy::start(&yaml)
        .err()
        .expect("Envoy must refuse the config");
    assert!(
        err.log.contains(
            "config field `rules[0].failure_rate_threshold`: value \"150\" is out of range"
        ),
        "{}",
        err.log
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn the_shipped_example_opens_after_five_failures_and_half_opens_after_five_seconds() {
    let upstream = start_upstream();
    let yaml = render_example(
        &repo_root().join("envoy/circuit_breaker.yaml"),
        upstream.port(),
    );
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..5 {
        assert_eq!(send(&envoy, "/?upstream_status=503").status, 503);
    }
    let r = send(&envoy, "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-palisade-circuit"), Some("open"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "retry-after {retry}");
    let gauge = "wasmcustom.palisade.circuit_breaker.per_cluster.backend.state";
    assert_eq!(envoy.stat(gauge), OPEN);
    let started = std::time::Instant::now();
    wait_for("half-open", Duration::from_secs(15), || {
        (envoy.stat(gauge) == HALF_OPEN).then_some(())
    });
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "opened for {:?}",
        started.elapsed()
    );
    assert_eq!(send(&envoy, "/").status, 200);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn upstream_timeouts_count_as_failures() {
    let upstream = start_upstream();
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("circuit_breaker", &rule(json!({}))))
        .route(Route::backend("all", "/").timeout_ms(300))
        .render(upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..5 {
        let r = Request::get(&envoy.url("/t"))
            .header("x-upstream-delay-ms", "2000")
            .send()
            .unwrap();
        assert_eq!(r.status, 504, "call {i}: the route timeout answers");
    }
    wait_for("open", Duration::from_secs(5), || {
        (state(&envoy) == OPEN).then_some(())
    });
    assert_eq!(stat(&envoy, "calls_failure"), 5);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_probe_abandoned_by_its_client_gives_its_lease_back_at_once() {
    // A one-probe budget and a 60 s probe timeout: if the abandoned probe kept its lease, the
    // breaker would reject everything for a minute.
    let (upstream, envoy) = start(rule(json!({"wait_duration_in_open": "1s",
        "permitted_calls_in_half_open": 1, "half_open_probe_timeout": "60s"})));
    trip(&envoy);
    wait_for("half-open", Duration::from_secs(10), || {
        (state(&envoy) == HALF_OPEN).then_some(())
    });
    let abandoned = Request::get(&envoy.url("/slow"))
        .header("x-upstream-delay-ms", "3000")
        .timeout(Duration::from_millis(300))
        .send();
    assert!(abandoned.is_err(), "the client gives up: {abandoned:?}");
    wait_for(
        "the upstream to see the probe",
        Duration::from_secs(5),
        || (upstream.stats().hits == 6).then_some(()),
    );
    // Envoy resets the upstream stream and runs on_log without response headers: the call is
    // ignored and the lease freed, so the next request is admitted as the probe.
    let r = wait_for(
        "a new probe to be admitted",
        Duration::from_secs(10),
        || {
            let r = send(&envoy, "/");
            (r.status == 200).then_some(r)
        },
    );
    assert_eq!(r.header("x-palisade-circuit"), None);
    assert!(stat(&envoy, "calls_ignored") >= 1);
    wait_for("close", Duration::from_secs(5), || {
        (state(&envoy) == CLOSED).then_some(())
    });
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn success_batching_opens_on_failures_and_trusts_a_closed_state_for_at_most_max_delay() {
    let (upstream, envoy) = start(rule(json!({"wait_duration_in_open": "60s",
        "success_batching": {"max_calls": 8, "max_delay": "10ms"}})));
    let results = parallel(4, 20, |_| Request::get(&envoy.url("/ok")));
    assert_eq!(status_counts(&results).get(&200), Some(&20));
    // Successes are counted in batches: all of them, once the batches are written.
    wait_for(
        "the batched successes to be reported",
        Duration::from_secs(5),
        || (stat(&envoy, "calls_success") == 20).then_some(()),
    );
    // Failures are written at once (after the worker's pending successes). Another worker's
    // batch may still land after them (documented: batching delays successes by up to about
    // 2 × max_delay), so the breaker opens within a few failures, not necessarily the fifth.
    let mut failures = 0;
    wait_for(
        "failures to open the breaker",
        Duration::from_secs(10),
        || {
            if state(&envoy) == OPEN {
                return Some(());
            }
            assert!(failures < 20, "still closed after {failures} failures");
            let r = send(&envoy, "/fail?upstream_status=503");
            failures += u32::from(r.header("x-palisade-circuit").is_none());
            None
        },
    );
    assert!(failures >= 5, "opened after only {failures} failures");
    let opened = std::time::Instant::now();
    // A worker may admit on a closed state it read up to max_delay (10 ms) ago; after that,
    // every worker sees the breaker open.
    let hits = wait_for(
        "every worker to see the open state",
        Duration::from_secs(5),
        || {
            let r = send(&envoy, "/");
            let open = r.header("x-palisade-circuit") == Some("open");
            (open && opened.elapsed() > Duration::from_millis(50)).then(|| upstream.stats().hits)
        },
    );
    let results = parallel(8, 40, |_| Request::get(&envoy.url("/dark")));
    for r in results.iter().map(ok) {
        assert_eq!(r.header("x-palisade-circuit"), Some("open"));
    }
    assert_eq!(upstream.stats().hits, hits);
}
