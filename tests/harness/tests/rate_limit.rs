//! rate_limit end to end: real Envoy with 2 workers, the echo upstream counting hits.
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::client::{parallel, status_counts, Request, Response};
use palisade_harness::{
    render_example, repo_root, start_upstream, wait_for, Bootstrap, Envoy, Filter, Route,
};
use serde_json::{json, Value};
use std::time::Duration;

fn start(config: Value) -> (palisade_harness::Upstream, Envoy) {
    let upstream = start_upstream();
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("rate_limit", &config))
        .route(Route::backend("all", "/"))
        .render(upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    (upstream, envoy)
}

fn per_key(capacity: u64, refill: u64, period: &str) -> Value {
    json!({"rules": [{"name": "per_key", "key": [{"header": "x-key"}],
        "limits": [{"capacity": capacity, "refill": refill, "period": period}]}]})
}

fn ok(r: &Result<Response, String>) -> &Response {
    r.as_ref()
        .unwrap_or_else(|e| panic!("transport error: {e}"))
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_burst_from_eight_threads_lets_exactly_capacity_through_across_two_workers() {
    const N: u64 = 25;
    const M: usize = 200;
    let (upstream, envoy) = start(per_key(N, 1, "1h"));
    let results = parallel(8, M, |_| {
        Request::get(&envoy.url("/burst")).header("x-key", "one")
    });
    let counts = status_counts(&results);
    assert_eq!(counts.get(&200).copied(), Some(N as usize), "{counts:?}");
    assert_eq!(
        counts.get(&429).copied(),
        Some(M - N as usize),
        "{counts:?}"
    );
    assert_eq!(
        upstream.stats().hits,
        N,
        "the upstream must see exactly N requests"
    );

    // Every 429 carries the standard headers.
    for r in results.iter().map(ok).filter(|r| r.status == 429) {
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry), "retry-after {retry}");
        assert_eq!(r.header("ratelimit-limit"), Some("25"));
        assert_eq!(r.header("ratelimit-remaining"), Some("0"));
        assert!(r.header("ratelimit-reset").is_some());
        assert_eq!(r.header("ratelimit-policy"), Some("25;w=90000"));
        assert_eq!(r.header("x-envoy-ratelimited"), Some("true"));
    }
    // Both workers took connections, so the exactness was across workers.
    assert!(
        envoy.worker_connections().iter().all(|c| *c > 0),
        "{:?}",
        envoy.worker_connections()
    );
    // Decisions are visible on the admin endpoint.
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.per_key.allowed"),
        N
    );
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.per_key.limited"),
        M as u64 - N
    );
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.per_key.store_failures"),
        0
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn two_keys_are_independent_and_a_missing_key_skips_the_rule() {
    let (upstream, envoy) = start(per_key(2, 1, "1h"));
    let table = [
        (Some("a"), 200),
        (Some("a"), 200),
        (Some("a"), 429),
        (Some("b"), 200),
        (Some("b"), 200),
        (Some("b"), 429),
        (None, 200),
        (None, 200),
        (None, 200),
    ];
    for (i, (key, want)) in table.iter().enumerate() {
        let mut req = Request::get(&envoy.url("/k"));
        if let Some(k) = key {
            req = req.header("x-key", k);
        }
        assert_eq!(req.send().unwrap().status, *want, "row {i}: key {key:?}");
    }
    assert_eq!(upstream.stats().hits, 7);
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.per_key.skipped_missing_key"),
        3
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn refill_admits_again_after_the_period() {
    let (_upstream, envoy) = start(per_key(1, 1, "1s"));
    let send = || {
        Request::get(&envoy.url("/r"))
            .header("x-key", "refill")
            .send()
            .unwrap()
    };
    assert_eq!(send().status, 200);
    let limited = send();
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    // Poll until the token is back; it must come within about one period, not immediately.
    let started = std::time::Instant::now();
    wait_for("a token to refill", Duration::from_secs(5), || {
        (send().status == 200).then_some(())
    });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refill took {:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn shadow_mode_lets_everything_through_and_counts_what_it_would_limit() {
    let config = json!({"rules": [{"name": "trial", "shadow": true, "key": [{"constant": "all"}],
        "limits": [{"capacity": 3, "refill": 1, "period": "1h"}]}]});
    let (upstream, envoy) = start(config);
    let results = parallel(4, 20, |_| {
        Request::get(&envoy.url("/s")).header("x-palisade-ratelimit-shadow", "spoofed")
    });
    assert_eq!(status_counts(&results).get(&200), Some(&20));
    assert_eq!(upstream.stats().hits, 20);
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.trial.shadow_limited"),
        17
    );
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.trial.allowed"),
        3
    );
    // The upstream sees our marker on shadow-limited requests and never the client's spoofed one.
    let marks: Vec<Option<String>> = results
        .iter()
        .map(|r| ok(r).echoed_header("x-palisade-ratelimit-shadow"))
        .collect();
    assert_eq!(
        marks
            .iter()
            .filter(|m| m.as_deref() == Some("trial"))
            .count(),
        17
    );
    assert_eq!(marks.iter().filter(|m| m.is_none()).count(), 3);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn quota_headers_go_on_allowed_responses_when_configured() {
    let config = json!({"headers_on_allowed": true, "rules": [{"name": "q", "key": ["client_ip"],
        "limits": [{"capacity": 10, "refill": 10, "period": "1s"}, {"capacity": 100, "refill": 100, "period": "1h"}]}]});
    let (_upstream, envoy) = start(config);
    let r = Request::get(&envoy.url("/q")).send().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-limit"), Some("10"));
    assert_eq!(r.header("ratelimit-remaining"), Some("9"));
    assert_eq!(r.header("ratelimit-policy"), Some("10;w=1, 100;w=3600"));
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_malformed_config_is_rejected_naming_the_field() {
    let bad = json!({"rules": [{"name": "r", "key": ["client_ip"],
        "limits": [{"capacity": 0, "refill": 1, "period": "1s"}]}]});
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("rate_limit", &bad))
        .render(1);
    let err = Envoy::start(&yaml)
        .err()
        .expect("Envoy must refuse the config");
    assert!(
        err.log
            .contains("config field `rules[0].limits[0].capacity`: value \"0\" is out of range"),
        "{}",
        err.log
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn the_shipped_example_limits_each_client_ip_to_a_burst_of_five() {
    let upstream = start_upstream();
    let yaml = render_example(&repo_root().join("envoy/rate_limit.yaml"), upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let statuses: Vec<u16> = (0..8)
        .map(|_| Request::get(&envoy.url("/")).send().unwrap().status)
        .collect();
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429, 429]);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn different_routes_get_different_limits_by_route_name() {
    let upstream = start_upstream();
    let config = json!({"rules": [
        {"name": "strict", "match": {"route_name": "search"}, "key": ["client_ip"],
         "limits": [{"capacity": 1, "refill": 1, "period": "1h"}]},
        {"name": "lenient", "match": {"route_name": "browse"}, "key": ["client_ip"],
         "limits": [{"capacity": 3, "refill": 1, "period": "1h"}]}]});
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("rate_limit", &config))
        .route(Route::backend("search", "/search"))
        .route(Route::backend("browse", "/"))
        .render(upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let table = [
        ("/search", 200),
        ("/search", 429),
        ("/items", 200),
        ("/items", 200),
        ("/items", 200),
        ("/items", 429),
    ];
    for (i, (path, want)) in table.iter().enumerate() {
        assert_eq!(
            Request::get(&envoy.url(path)).send().unwrap().status,
            *want,
            "row {i}: {path}"
        );
    }
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.strict.limited"),
        1
    );
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.lenient.limited"),
        1
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn counters_survive_a_config_reload_that_keeps_the_rule() {
    use palisade_harness::{free_port, LdsFile};
    let upstream = start_upstream();
    let rule = |capacity: u64| {
        json!({"name": "kept", "key": [{"header": "x-key"}],
        "limits": [{"capacity": capacity, "refill": 1, "period": "1h"}]})
    };
    let bootstrap = |config: Value| {
        Bootstrap::new()
            .filter(Filter::wasm("rate_limit", &config))
            .route(Route::backend("all", "/"))
    };
    let lds = LdsFile::new();
    let port = free_port();
    let first = bootstrap(json!({"rules": [rule(5)]}));
    lds.write(&first.lds_resources(port));
    let envoy = Envoy::start(&first.render_with_lds(upstream.port(), &lds))
        .unwrap_or_else(|e| panic!("{e}"));
    let send = || {
        Request::get(&envoy.url("/"))
            .header("x-key", "k")
            .send()
            .unwrap()
            .status
    };
    let reload = |b: Bootstrap, updates: u64| {
        lds.write(&b.lds_resources(port));
        wait_for("the listener update", Duration::from_secs(30), || {
            (envoy.stat("listener_manager.lds.update_success") >= updates
                && envoy.stat("listener_manager.total_listeners_draining") == 0
                && envoy.stat("listener_manager.total_listeners_warming") == 0)
                .then_some(())
        });
    };
    assert_eq!(
        (0..3).map(|_| send()).collect::<Vec<_>>(),
        vec![200, 200, 200]
    );

    // A new plugin configuration (a second rule added) that keeps the rule: 2 tokens left, not 5.
    let extra = json!({"name": "other", "match": {"path": "/never"}, "key": ["path"],
        "limits": [{"capacity": 1, "refill": 1, "period": "1s"}]});
    reload(bootstrap(json!({"rules": [rule(5), extra]})), 2);
    assert_eq!(
        (0..3).map(|_| send()).collect::<Vec<_>>(),
        vec![200, 200, 429]
    );

    // Changing the rule's limits starts from a full bucket.
    reload(bootstrap(json!({"rules": [rule(6)]})), 3);
    assert_eq!(
        (0..7).map(|_| send()).collect::<Vec<_>>(),
        vec![200, 200, 200, 200, 200, 200, 429]
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_key_header_that_is_not_utf8_neither_crashes_the_vm_nor_escapes_the_limit() {
    let (_upstream, envoy) = start(per_key(2, 1, "1h"));
    let raw =
        b"GET /bytes HTTP/1.1\r\nhost: test\r\nx-key: caf\xe9\xff\r\nconnection: close\r\n\r\n";
    let statuses: Vec<u16> = (0..3)
        .map(|_| palisade_harness::client::raw_status(envoy.listener_port(), raw).unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 200, 429]);
    // The VMs are alive and still limiting normal traffic.
    let send = || {
        Request::get(&envoy.url("/"))
            .header("x-key", "fine")
            .send()
            .unwrap()
            .status
    };
    assert_eq!(
        (0..3).map(|_| send()).collect::<Vec<_>>(),
        vec![200, 200, 429]
    );
    assert!(!envoy.log().contains("panic"), "{}", envoy.log());
}
