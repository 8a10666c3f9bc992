//! The test engine itself (tests/rls: Envoy's RLS v3 over Kuadrant's limitador, Redis storage),
//! called natively over gRPC, before any Envoy: what the global rate limit tests rely on.
//! `#[ignore]`d like every end-to-end test (they need `make rls-engine` and redis-server); run by
//! `make e2e`.

// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::rls::proto::{Code, RateLimitRequest};
use palisade_harness::rls::tonic;
use palisade_harness::rls::{Redis, RlsClient, RlsEngine};
use std::time::{Duration, Instant};

/// Five per minute per `user` in domain `api`; GETs of domain `methods` ten per minute.
const LIMITS: &str = r#"
- namespace: api
  max_value: 5
  seconds: 60
  conditions: []
  variables:
    - descriptors[0].user
- namespace: methods
  max_value: 2
  seconds: 60
  conditions:
    - "descriptors[0].method == 'GET'"
  variables: []
"#;

const CALL_TIMEOUT: Duration = Duration::from_secs(2);

fn user(name: &str) -> RateLimitRequest {
    RateLimitRequest::new("api", &[&[("user", name)]], 0)
}

fn code(client: &mut RlsClient, req: RateLimitRequest) -> Code {
    let resp = client.should_rate_limit(req).expect("ShouldRateLimit");
    Code::try_from(resp.overall_code).expect("a known code")
}

/// `n` calls, their codes.
fn codes(client: &mut RlsClient, n: usize, req: impl Fn() -> RateLimitRequest) -> Vec<Code> {
    (0..n).map(|_| code(client, req())).collect()
}

fn expected(ok: usize, over: usize) -> Vec<Code> {
    let mut v = vec![Code::Ok; ok];
    v.extend(vec![Code::OverLimit; over]);
    v
}

#[test]
#[ignore]
fn a_window_admits_exactly_max_value_per_variable_then_answers_over_limit() {
    let redis = Redis::start();
    let engine = RlsEngine::start(&redis, LIMITS);
    let mut client = RlsClient::connect(engine.addr(), CALL_TIMEOUT);
    assert_eq!(codes(&mut client, 7, || user("alice")), expected(5, 2));
    // Another value of the variable has its own counter.
    assert_eq!(codes(&mut client, 6, || user("bob")), expected(5, 1));
}

#[test]
#[ignore]
fn conditions_select_the_requests_a_limit_counts() {
    let redis = Redis::start();
    let engine = RlsEngine::start(&redis, LIMITS);
    let mut client = RlsClient::connect(engine.addr(), CALL_TIMEOUT);
    let method = |m: &'static str| move || RateLimitRequest::new("methods", &[&[("method", m)]], 0);
    assert_eq!(codes(&mut client, 3, method("GET")), expected(2, 1));
    assert_eq!(codes(&mut client, 3, method("POST")), expected(3, 0));
}

#[test]
#[ignore]
fn hits_addend_counts_that_many_hits() {
    let redis = Redis::start();
    let engine = RlsEngine::start(&redis, LIMITS);
    let mut client = RlsClient::connect(engine.addr(), CALL_TIMEOUT);
    let three = || RateLimitRequest::new("api", &[&[("user", "carol")]], 3);
    assert_eq!(codes(&mut client, 2, three), expected(1, 1));
    // 3 of 5 used: two single hits fit, a third does not.
    assert_eq!(codes(&mut client, 3, || user("carol")), expected(2, 1));
}

#[test]
#[ignore]
fn a_domain_without_limits_is_ok_and_an_empty_domain_unknown() {
    let redis = Redis::start();
    let engine = RlsEngine::start(&redis, LIMITS);
    let mut client = RlsClient::connect(engine.addr(), CALL_TIMEOUT);
    let other = || RateLimitRequest::new("other", &[&[("user", "alice")]], 0);
    assert_eq!(codes(&mut client, 8, other), expected(8, 0));
    let empty = RateLimitRequest::new("", &[&[("user", "alice")]], 0);
    assert_eq!(code(&mut client, empty), Code::Unknown);
}

#[test]
#[ignore]
fn draft_rate_limit_headers_are_added_when_asked() {
    let redis = Redis::start();
    let engine =
        RlsEngine::start_with(&redis, LIMITS, &["--rate-limit-headers", "draft-version03"]);
    let mut client = RlsClient::connect(engine.addr(), CALL_TIMEOUT);
    let header = |resp: &palisade_harness::rls::proto::RateLimitResponse, name: &str| {
        resp.response_headers_to_add
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(name))
            .map(|h| h.value.clone())
    };
    let first = client.should_rate_limit(user("dave")).expect("call");
    assert_eq!(
        header(&first, "X-RateLimit-Limit").as_deref(),
        Some("5, 5;w=60")
    );
    assert_eq!(
        header(&first, "X-RateLimit-Remaining").as_deref(),
        Some("4")
    );
    let reset: u64 = header(&first, "X-RateLimit-Reset")
        .expect("X-RateLimit-Reset")
        .parse()
        .expect("seconds");
    assert!(reset <= 60, "reset {reset}");
    for _ in 0..4 {
        client.should_rate_limit(user("dave")).expect("call");
    }
    let over = client.should_rate_limit(user("dave")).expect("call");
    assert_eq!(over.overall_code, Code::OverLimit as i32);
    assert_eq!(header(&over, "X-RateLimit-Remaining").as_deref(), Some("0"));
    // Without the flag, no headers.
    let plain = RlsEngine::start(&redis, LIMITS);
    let mut plain_client = RlsClient::connect(plain.addr(), CALL_TIMEOUT);
    let resp = plain_client.should_rate_limit(user("erin")).expect("call");
    assert!(resp.response_headers_to_add.is_empty(), "{resp:?}");
}

#[test]
#[ignore]
fn two_engines_on_one_redis_hold_one_limit() {
    let redis = Redis::start();
    let a = RlsEngine::start(&redis, LIMITS);
    let b = RlsEngine::start(&redis, LIMITS);
    let mut ca = RlsClient::connect(a.addr(), CALL_TIMEOUT);
    let mut cb = RlsClient::connect(b.addr(), CALL_TIMEOUT);
    let got: Vec<Code> = (0..8)
        .map(|i| {
            let c = if i % 2 == 0 { &mut ca } else { &mut cb };
            code(c, user("frank"))
        })
        .collect();
    assert_eq!(got, expected(5, 3));
}

#[test]
#[ignore]
fn redis_down_answers_unavailable_and_a_restarted_redis_serves_again() {
    let mut redis = Redis::start();
    let engine = RlsEngine::start(&redis, LIMITS);
    let mut client = RlsClient::connect(engine.addr(), CALL_TIMEOUT);
    assert_eq!(codes(&mut client, 3, || user("gina")), expected(3, 0));

    redis.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let err = client
            .should_rate_limit(user("gina"))
            .expect_err("no Redis, no answer");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        // The engine's Redis timeouts (500 ms by default) bound it.
        assert!(started.elapsed() < CALL_TIMEOUT, "{:?}", started.elapsed());
    }

    // Same port, persistence off: an empty Redis, so the window starts afresh.
    redis.restart();
    let got = palisade_harness::wait_for(
        "the engine to reach Redis again",
        Duration::from_secs(10),
        || client.should_rate_limit(user("gina")).ok(),
    );
    assert_eq!(got.overall_code, Code::Ok as i32);
    assert_eq!(codes(&mut client, 5, || user("gina")), expected(4, 1));
}

#[test]
#[ignore]
fn an_engine_restarted_on_its_port_carries_on_with_the_counters_in_redis() {
    let redis = Redis::start();
    let mut engine = RlsEngine::start(&redis, LIMITS);
    let port = engine.port();
    let mut client = RlsClient::connect(engine.addr(), CALL_TIMEOUT);
    assert_eq!(codes(&mut client, 3, || user("hank")), expected(3, 0));

    engine.kill();
    // The client's own error: its connection broke (tonic: UNKNOWN "transport error"), or
    // nothing listens (UNAVAILABLE).
    let err = client
        .should_rate_limit(user("hank"))
        .expect_err("nothing listens");
    assert!(
        matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
        "{err:?}"
    );

    engine.restart();
    assert_eq!(engine.port(), port);
    // The same client: its channel reconnects.
    let first =
        palisade_harness::wait_for("the client to reconnect", Duration::from_secs(10), || {
            client.should_rate_limit(user("hank")).ok()
        });
    assert_eq!(first.overall_code, Code::Ok as i32);
    assert_eq!(codes(&mut client, 2, || user("hank")), expected(1, 1));
}

#[test]
#[ignore]
fn sigterm_stops_the_engine_cleanly() {
    let redis = Redis::start();
    let mut engine = RlsEngine::start(&redis, LIMITS);
    let mut client = RlsClient::connect(engine.addr(), CALL_TIMEOUT);
    assert_eq!(code(&mut client, user("ivy")), Code::Ok);
    let status = engine.terminate();
    assert!(status.success(), "{status}");
}
