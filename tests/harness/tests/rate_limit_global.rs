//! rate_limit's `global` rules end to end: real Envoy (2 workers) calling a fault-injecting rate
//! limit service stand-in (`palisade_harness::rls_fake`) over gRPC. Each answer and each fault
//! gives the client the documented status and headers under each `on_error`; no fault fails the
//! VM; every outcome is visible in `/stats`. (The real engine, Limitador on Redis, across two
//! Envoys, is the real-engine tests' part.)
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::client::{Request, Response};
use palisade_harness::rls_fake::{RlsFake, Script};
use palisade_harness::{start_upstream, wait_for, Bootstrap, Envoy, Filter, Route, Upstream};
use serde_json::{json, Value};
use std::time::Duration;

const RULE: &str = "shared";

fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy.stat_or_zero(&format!("wasmcustom.palisade.rate_limit.{RULE}.{name}"))
}

/// The rule: per `x-key`, a local tier of 2 an hour; the service asked with the key.
fn config(on_error: &str, timeout: &str, headers_on_allowed: bool) -> Value {
    json!({"headers_on_allowed": headers_on_allowed, "rules": [{
        "name": RULE, "key": [{"header": "x-key"}],
        "limits": [{"capacity": 2, "refill": 2, "period": "1h"}],
        "global": {"cluster": "rls", "domain": "e2e", "timeout": timeout, "on_error": on_error,
            "descriptor": [{"key": "generic_key", "value": {"constant": "api"}},
                           {"key": "api_key", "value": {"header": "x-key"}}]}}]})
}

fn start(rls_port: u16, config: &Value) -> (Upstream, Envoy) {
    let upstream = start_upstream();
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("rate_limit", config))
        .route(Route::backend("all", "/"))
        .extra_cluster(&palisade_harness::rls_fake::cluster_yaml("rls", rls_port))
        .render(upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    (upstream, envoy)
}

fn get(envoy: &Envoy, key: &str) -> Response {
    Request::get(&envoy.url("/api"))
        .header("x-key", key)
        .timeout(Duration::from_secs(10))
        .send()
        .unwrap_or_else(|e| panic!("transport error: {e}\n{}", envoy.log()))
}

/// A fault, and the counter it shows in.
fn faults() -> Vec<(&'static str, Script, &'static str)> {
    vec![
        (
            "slow",
            Script::Slow(Duration::from_secs(2)),
            "global_timeout",
        ),
        ("unavailable", Script::Status(14), "global_error"),
        ("resource_exhausted", Script::Status(8), "global_error"),
        ("malformed", Script::Malformed, "global_error"),
        ("bad_framing", Script::BadFraming, "global_error"),
        ("oversized", Script::Oversized(64 * 1024), "global_error"),
        ("reset", Script::Reset, "global_error"),
    ]
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn every_answer_gives_the_client_its_documented_status_and_headers() {
    let rls = RlsFake::start(Script::Ok);
    let (upstream, envoy) = start(rls.port(), &config("deny", "1s", true));
    struct Case {
        script: Script,
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        absent: &'static [&'static str],
    }
    let cases = [
        Case {
            script: Script::Ok,
            status: 200,
            headers: &[],
            absent: &["ratelimit-limit", "x-envoy-ratelimited"],
        },
        Case {
            script: Script::OkWithStatus {
                limit: 100,
                remaining: 41,
                reset_secs: 30,
            },
            status: 200,
            headers: &[
                ("ratelimit-limit", "100"),
                ("ratelimit-remaining", "41"),
                ("ratelimit-reset", "30"),
                ("ratelimit-policy", "100;w=60"),
            ],
            absent: &[],
        },
        Case {
            script: Script::Unknown,
            status: 200,
            headers: &[],
            absent: &["x-envoy-ratelimited"],
        },
        Case {
            script: Script::OverLimit,
            status: 429,
            headers: &[("retry-after", "1"), ("x-envoy-ratelimited", "true")],
            absent: &["ratelimit-limit"],
        },
        Case {
            script: Script::OverLimitWithStatus {
                limit: 10,
                reset_secs: 42,
            },
            status: 429,
            headers: &[
                ("retry-after", "42"),
                ("ratelimit-limit", "10"),
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", "42"),
                ("ratelimit-policy", "10;w=60"),
                ("x-envoy-ratelimited", "true"),
            ],
            absent: &[],
        },
        Case {
            script: Script::OverLimitWithHeaders(vec![
                ("x-ratelimit-limit".into(), "10, 10;w=60".into()),
                ("x-ratelimit-remaining".into(), "0".into()),
            ]),
            status: 429,
            headers: &[
                ("retry-after", "1"),
                ("x-ratelimit-limit", "10, 10;w=60"),
                ("x-ratelimit-remaining", "0"),
            ],
            absent: &["ratelimit-limit"],
        },
        // With the reset header too (Limitador's DRAFT_VERSION_03): retry-after is its seconds.
        Case {
            script: Script::OverLimitWithHeaders(vec![
                ("x-ratelimit-limit".into(), "10, 10;w=60".into()),
                ("x-ratelimit-remaining".into(), "0".into()),
                ("x-ratelimit-reset".into(), "7".into()),
            ]),
            status: 429,
            headers: &[
                ("retry-after", "7"),
                ("x-ratelimit-reset", "7"),
                ("x-ratelimit-remaining", "0"),
            ],
            absent: &["ratelimit-limit"],
        },
    ];
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        rls.set(case.script.clone());
        let r = get(&envoy, &format!("answer-{i}"));
        if r.status != case.status {
            failures.push(format!("{:?}: status {}", case.script, r.status));
        }
        for (name, value) in case.headers {
            if r.header(name) != Some(value) {
                failures.push(format!(
                    "{:?}: {name} = {:?}, want {value}",
                    case.script,
                    r.header(name)
                ));
            }
        }
        for name in case.absent {
            if r.header(name).is_some() {
                failures.push(format!("{:?}: unexpected {name}", case.script));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", envoy.log());
    // What the service got: the gRPC method, the domain and the descriptor.
    let received = rls.received();
    assert_eq!(received.len(), cases.len());
    let first = &received[0];
    assert_eq!(
        first.path,
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
    );
    assert_eq!(first.content_type.as_deref(), Some("application/grpc"));
    let request = first.request.as_ref().expect("a RateLimitRequest");
    assert_eq!(request.domain, "e2e");
    assert_eq!(
        first.entries(),
        vec![
            ("generic_key".to_owned(), "api".to_owned()),
            ("api_key".to_owned(), "answer-0".to_owned())
        ]
    );
    // Three let through, four limited.
    assert_eq!(upstream.stats().hits, 3);
    assert_eq!(stat(&envoy, "global_ok"), 2);
    assert_eq!(stat(&envoy, "global_unknown"), 1);
    assert_eq!(stat(&envoy, "global_over_limit"), 4);
    assert_eq!(stat(&envoy, "allowed"), 3);
    assert_eq!(stat(&envoy, "limited"), 4);
    assert!(
        envoy_stats_text(&envoy).contains("palisade.rate_limit.shared.global_latency_ms"),
        "the latency histogram is in /stats"
    );
    envoy.assert_no_vm_failures();
}

fn envoy_stats_text(envoy: &Envoy) -> String {
    ureq::get(&format!("{}/stats", envoy.admin_url()))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn every_fault_applies_on_error_and_never_fails_the_vm() {
    let rls = RlsFake::start(Script::Ok);
    // on_error → the statuses of three requests with one key (local tier: 2 an hour).
    let modes = [
        ("local", [200, 200, 429], "global_fallback_local"),
        ("allow", [200, 200, 200], "global_fallback_allow"),
        ("deny", [429, 429, 429], "global_fallback_deny"),
    ];
    let mut failures = Vec::new();
    for (on_error, want, fallback) in modes {
        let (_upstream, envoy) = start(rls.port(), &config(on_error, "100ms", false));
        let faults = faults();
        for (name, script, counter) in &faults {
            rls.set(script.clone());
            let before = stat(&envoy, counter);
            let got: Vec<u16> = (0..3)
                .map(|_| get(&envoy, &format!("{on_error}-{name}")).status)
                .collect();
            if got != want {
                failures.push(format!(
                    "on_error {on_error}, {name}: {got:?}, want {want:?}"
                ));
            }
            let after = stat(&envoy, counter);
            if after != before + 3 {
                failures.push(format!(
                    "on_error {on_error}, {name}: {counter} went {before} -> {after}"
                ));
            }
        }
        assert_eq!(
            stat(&envoy, fallback),
            3 * faults.len() as u64,
            "on_error {on_error}"
        );
        // A deny fallback's reply: the rule's, with retry-after 1 and no quota.
        if on_error == "deny" {
            let r = get(&envoy, "deny-reply");
            assert_eq!(r.status, 429);
            assert_eq!(r.header("retry-after"), Some("1"));
            assert_eq!(r.header("ratelimit-limit"), None);
        }
        // And once the service answers again, it decides again.
        rls.set(Script::OverLimit);
        if get(&envoy, &format!("{on_error}-recovered")).status != 429 {
            failures.push(format!("on_error {on_error}: not enforced after recovery"));
        }
        rls.set(Script::Ok);
        if get(&envoy, &format!("{on_error}-recovered-ok")).status != 200 {
            failures.push(format!("on_error {on_error}: not admitted after recovery"));
        }
        envoy.assert_no_vm_failures();
        assert!(
            !envoy.log().contains("panic"),
            "a panic in Envoy's log:\n{}",
            envoy.log()
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_service_nobody_listens_on_falls_back_to_the_local_tier() {
    // A port that was free a moment ago: connection refused, Envoy's UNAVAILABLE.
    let port = palisade_harness::free_port();
    let (_upstream, envoy) = start(port, &config("local", "100ms", false));
    let got: Vec<u16> = (0..3).map(|_| get(&envoy, "nobody").status).collect();
    assert_eq!(got, vec![200, 200, 429], "{}", envoy.log());
    assert_eq!(
        stat(&envoy, "global_error") + stat(&envoy, "global_timeout"),
        3
    );
    assert_eq!(stat(&envoy, "global_fallback_local"), 3);
    envoy.assert_no_vm_failures();
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_client_that_hangs_up_while_the_service_is_slow_leaves_envoy_serving() {
    let rls = RlsFake::start(Script::Slow(Duration::from_millis(1500)));
    let (_upstream, envoy) = start(rls.port(), &config("allow", "1s", false));
    for i in 0..4 {
        let r = Request::get(&envoy.url("/api"))
            .header("x-key", &format!("gone-{i}"))
            .timeout(Duration::from_millis(100))
            .send();
        assert!(r.is_err(), "the client gave up first: {r:?}");
    }
    // The calls end (Envoy's timeout on them) with nobody waiting: no answer is counted, and
    // the next requests are served normally.
    wait_for(
        "the abandoned calls to end",
        Duration::from_secs(10),
        || {
            let total = envoy.stat_or_zero("cluster.rls.upstream_rq_total");
            let active = envoy.stat_or_zero("cluster.rls.upstream_rq_active");
            (total >= 4 && active == 0).then_some(())
        },
    );
    assert_eq!(rls.received().len(), 4);
    assert_eq!(stat(&envoy, "global_timeout"), 0);
    assert_eq!(stat(&envoy, "global_fallback_allow"), 0);
    rls.set(Script::Ok);
    assert_eq!(get(&envoy, "after").status, 200);
    rls.set(Script::OverLimit);
    assert_eq!(get(&envoy, "after").status, 429);
    envoy.assert_no_vm_failures();
}
