//! The `palisade` chain module end to end: real Envoy with 2 workers, every policy in one VM, and
//! every way a chain can end early. The checks that matter are those a chain of separate filters
//! gets for free: a later policy never sees a request an earlier one answered, and every policy
//! that saw a request sees its end exactly once (the breaker records the call, the bulkhead gives
//! its permit back) whoever answered it.
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jwt_auth::testkeys;
use jwt_auth::token::Alg;
use palisade_harness::client::{parallel, status_counts, Request, Response};
use palisade_harness::{start_upstream, wait_for, Bootstrap, Envoy, Filter, Route};
use serde_json::{json, Value};
use std::time::Duration;

fn start(chain: Value) -> (palisade_harness::Upstream, Envoy) {
    let upstream = start_upstream();
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("palisade", &json!({ "chain": chain })))
        .route(Route::backend("backend", "/"))
        .render(upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    (upstream, envoy)
}

fn token(sub: &str) -> String {
    let claims = json!({"iss": "https://issuer.test", "aud": "api", "sub": sub,
        "scope": "read", "iat": 1_700_000_000, "exp": 4_102_444_800_u64});
    format!("Bearer {}", testkeys::token(Alg::Es256, &claims))
}

fn jwt_auth() -> Value {
    json!({"jwt_auth": {
        "providers": [{"name": "main", "issuer": "https://issuer.test", "audiences": ["api"],
            "jwks": {"inline": testkeys::jwks_with_all_curves()},
            "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}]}],
        "rules": [{"match": {"path_prefix": "/public"}, "bypass": true},
                  {"match": {"path_prefix": "/"}, "providers": ["main"]}]
    }})
}

/// Three requests an hour per verified subject, keyed on the claim itself (no header round trip).
fn per_subject() -> Value {
    json!({"rate_limit": {"rules": [{"name": "per_subject", "key": [{"claim": "sub"}],
        "on_missing_key": "skip",
        "limits": [{"capacity": 3, "refill": 3, "period": "1h"}]}]}})
}

fn breaker() -> Value {
    json!({"circuit_breaker": {"rules": [{"name": "per_cluster", "key": "cluster",
        "sliding_window_type": "count_based", "sliding_window_size": 10,
        "minimum_number_of_calls": 5, "failure_rate_threshold": 50,
        "wait_duration_in_open": "5s", "permitted_calls_in_half_open": 1}]}})
}

fn bulkhead(max_concurrent: u32, max_wait: Option<&str>) -> Value {
    let mut rule =
        json!({"name": "backend", "cluster": "backend", "max_concurrent": max_concurrent});
    if let Some(w) = max_wait {
        rule["max_wait"] = json!(w);
        rule["max_waiting"] = json!(8);
    }
    json!({"bulkhead": {"rules": [rule]}})
}

fn transform() -> Value {
    json!({"transform": {"body": {"max_bytes": 16, "on_too_large": "reject"},
        "rules": [{"name": "stamp", "request": {
            "headers": {"set": [{"name": "x-subject", "value": "$(claims.sub)"}]},
            "body": {"set": [{"pointer": "/via", "value": "palisade"}]}}}]}})
}

fn ok(r: &Result<Response, String>) -> &Response {
    r.as_ref()
        .unwrap_or_else(|e| panic!("transport error: {e}"))
}

fn send(r: Request) -> Response {
    r.send().unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// Every stat of the bulkhead's rule settles where a leak-free run leaves it.
fn assert_no_permit_held(envoy: &Envoy) {
    wait_for(
        "the bulkhead's in_flight gauge to return to 0",
        Duration::from_secs(5),
        || (envoy.stat("wasmcustom.palisade.bulkhead.backend.in_flight") == 0).then_some(()),
    );
    let admitted = envoy.stat("wasmcustom.palisade.bulkhead.backend.admitted")
        + envoy.stat("wasmcustom.palisade.bulkhead.backend.wait_admitted");
    assert_eq!(
        envoy.stat("wasmcustom.palisade.bulkhead.backend.released"),
        admitted,
        "every permit given back exactly once"
    );
}

fn breaker_calls(envoy: &Envoy) -> u64 {
    [
        "calls_success",
        "calls_failure",
        "calls_slow",
        "calls_ignored",
        "calls_stale",
    ]
    .iter()
    .map(|c| {
        envoy.stat(&format!(
            "wasmcustom.palisade.circuit_breaker.per_cluster.{c}"
        ))
    })
    .sum()
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn every_policy_acts_on_one_request_in_one_pass() {
    let (upstream, envoy) = start(json!([
        jwt_auth(),
        per_subject(),
        breaker(),
        bulkhead(4, None),
        transform()
    ]));
    let r = send(
        Request::new("POST", &envoy.url("/api/orders"))
            .header("authorization", &token("alice"))
            .header("content-type", "application/json")
            .body(r#"{"n":1}"#),
    );
    assert_eq!(r.status, 200, "{}\n{}", r.body, envoy.log());
    // jwt_auth's claim header, and transform's template reading the claim directly.
    assert_eq!(r.echoed_header("x-jwt-sub").as_deref(), Some("alice"));
    assert_eq!(r.echoed_header("x-subject").as_deref(), Some("alice"));
    assert_eq!(
        r.json()["body"],
        r#"{"n":1,"via":"palisade"}"#,
        "{}",
        r.body
    );
    assert_eq!(upstream.stats().hits, 1);
    for (stat, want) in [
        ("jwt_auth.allowed", 1),
        ("rate_limit.per_subject.allowed", 1),
        ("bulkhead.backend.admitted", 1),
        // One event per phase with operations: request headers, then request body.
        ("transform.stamp.transformed", 2),
        ("circuit_breaker.per_cluster.calls_success", 1),
    ] {
        assert_eq!(
            envoy.stat(&format!("wasmcustom.palisade.{stat}")),
            want,
            "{stat}"
        );
    }
    assert_no_permit_held(&envoy);
    envoy.assert_no_vm_failures();
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_jwt_rejection_ends_the_chain_before_any_later_policy_sees_the_request() {
    let (upstream, envoy) = start(json!([
        jwt_auth(),
        per_subject(),
        breaker(),
        bulkhead(4, None),
        transform()
    ]));
    let r = send(Request::get(&envoy.url("/api/orders")));
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .starts_with("Bearer"));
    assert_eq!(upstream.stats().hits, 0);
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.per_subject.allowed"),
        0
    );
    assert_eq!(
        envoy.stat("wasmcustom.palisade.bulkhead.backend.admitted"),
        0
    );
    assert_eq!(
        envoy.stat("wasmcustom.palisade.transform.stamp.transformed"),
        0
    );
    assert_eq!(breaker_calls(&envoy), 0);
    envoy.assert_no_vm_failures();
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn the_rate_limit_keys_on_the_verified_subject_and_its_429_ends_the_chain() {
    let (upstream, envoy) = start(json!([
        jwt_auth(),
        per_subject(),
        breaker(),
        bulkhead(4, None)
    ]));
    let alice = token("alice");
    let statuses: Vec<u16> = (0..5)
        .map(|_| send(Request::get(&envoy.url("/api")).header("authorization", &alice)).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let limited = send(Request::get(&envoy.url("/api")).header("authorization", &alice));
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    assert_eq!(limited.header("ratelimit-limit"), Some("3"));
    // Another subject has its own bucket; a request with no subject (a bypassed path) skips it.
    let bob = send(Request::get(&envoy.url("/api")).header("authorization", &token("bob")));
    assert_eq!(bob.status, 200);
    assert_eq!(send(Request::get(&envoy.url("/public"))).status, 200);
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.per_subject.skipped_missing_key"),
        1
    );
    // The policies after the limiter saw only the requests it let through.
    assert_eq!(upstream.stats().hits, 5);
    assert_eq!(
        envoy.stat("wasmcustom.palisade.bulkhead.backend.admitted"),
        5
    );
    assert_eq!(breaker_calls(&envoy), 5);
    assert_no_permit_held(&envoy);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn an_open_breaker_reply_gives_back_the_permit_of_the_bulkhead_before_it() {
    let (upstream, envoy) = start(json!([bulkhead(4, None), breaker()]));
    for _ in 0..5 {
        let r = send(Request::get(&envoy.url("/fail")).header("x-upstream-status", "503"));
        assert_eq!(r.status, 503);
    }
    let open = send(Request::get(&envoy.url("/")));
    assert_eq!(open.status, 503);
    assert_eq!(open.header("x-palisade-circuit"), Some("open"));
    assert_eq!(
        upstream.stats().hits,
        5,
        "the open breaker stops the request"
    );
    assert_eq!(
        envoy.stat("wasmcustom.palisade.bulkhead.backend.admitted"),
        6
    );
    assert_no_permit_held(&envoy);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_full_bulkhead_rejects_and_the_breaker_before_it_records_every_call_once() {
    let (upstream, envoy) = start(json!([breaker(), bulkhead(1, None)]));
    let results = parallel(4, 4, |_| {
        Request::get(&envoy.url("/slow")).header("x-upstream-delay-ms", "800")
    });
    let counts = status_counts(&results);
    assert_eq!(counts.get(&200).copied(), Some(1), "{counts:?}");
    assert_eq!(counts.get(&503).copied(), Some(3), "{counts:?}");
    for r in results.iter().map(ok).filter(|r| r.status == 503) {
        assert!(r.header("x-palisade-bulkhead").is_some(), "{:?}", r.headers);
    }
    assert_eq!(upstream.stats().hits, 1);
    wait_for(
        "the breaker to record all 4 calls",
        Duration::from_secs(5),
        || (breaker_calls(&envoy) == 4).then_some(()),
    );
    assert_no_permit_held(&envoy);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_transform_rejection_at_the_end_is_seen_ending_by_every_policy_before_it() {
    let (upstream, envoy) = start(json!([
        jwt_auth(),
        breaker(),
        bulkhead(4, None),
        transform()
    ]));
    let r = send(
        Request::new("POST", &envoy.url("/api"))
            .header("authorization", &token("alice"))
            .header("content-type", "application/json")
            .body(r#"{"far": "more than sixteen bytes"}"#),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(upstream.stats().hits, 0);
    assert_eq!(
        envoy.stat("wasmcustom.palisade.transform.stamp.rejected"),
        1
    );
    wait_for(
        "the breaker to record the call",
        Duration::from_secs(5),
        || (breaker_calls(&envoy) == 1).then_some(()),
    );
    assert_no_permit_held(&envoy);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_request_that_waited_in_the_bulkhead_goes_on_through_the_rest_of_the_chain() {
    let (upstream, envoy) = start(json!([jwt_auth(), bulkhead(1, Some("5s")), transform()]));
    let alice = token("alice");
    let results = parallel(3, 3, |_| {
        Request::get(&envoy.url("/slow"))
            .header("authorization", &alice)
            .header("x-upstream-delay-ms", "300")
    });
    for r in results.iter().map(ok) {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.echoed_header("x-subject").as_deref(), Some("alice"));
    }
    assert_eq!(upstream.stats().hits, 3);
    assert!(envoy.stat("wasmcustom.palisade.bulkhead.backend.wait_admitted") >= 1);
    // Bodiless GETs: only the header phase transforms.
    assert_eq!(
        envoy.stat("wasmcustom.palisade.transform.stamp.transformed"),
        3
    );
    assert_no_permit_held(&envoy);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn two_rate_limits_in_one_chain_keep_separate_buckets_and_metrics() {
    let limit = |capacity: u64| {
        json!({"rate_limit": {"rules": [{"name": "all", "key": [{"constant": "x"}],
            "limits": [{"capacity": capacity, "refill": 1, "period": "1h"}]}]}})
    };
    let (_upstream, envoy) = start(json!([limit(3), limit(2)]));
    let statuses: Vec<u16> = (0..4)
        .map(|_| send(Request::get(&envoy.url("/"))).status)
        .collect();
    // Shared buckets would let only the first request through both.
    assert_eq!(statuses, [200, 200, 429, 429]);
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.all.allowed"),
        4 - 1
    );
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit_2.all.allowed"),
        2
    );
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit_2.all.limited"),
        1
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_bad_chain_entry_is_rejected_naming_its_full_path() {
    let bad = json!({"chain": [jwt_auth(), {"rate_limit": {"rules": [{"name": "r",
        "key": ["client_ip"], "limits": [{"capacity": 0, "refill": 1, "period": "1s"}]}]}}]});
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("palisade", &bad))
        .render(1);
    let err = Envoy::start(&yaml)
        .err()
        .expect("Envoy must refuse the config");
    assert!(
        err.log.contains(
            "config field `chain[1].rate_limit.rules[0].limits[0].capacity`: value \"0\" is out of range"
        ),
        "{}",
        err.log
    );
    let unknown = json!({"chain": [{"rate_limiter": {}}]});
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("palisade", &unknown))
        .render(1);
    let err = Envoy::start(&yaml).err().expect("unknown policy");
    assert!(
        err.log.contains("config field `chain[0].rate_limiter`")
            && err.log.contains("expected one of `jwt_auth`, `rate_limit`"),
        "{}",
        err.log
    );
}
