//! jwt_auth's worker glue natively: the real policy in the skeleton, driven through `load_one` /
//! `load_chain` against `FakeHost` exactly as the SDK adapter (`palisade-host`'s `skeleton.rs`)
//! drives it ([`FakeProxy`]). Two workers of one Envoy are two runtimes on two fakes sharing one shared-data map
//! (`FakeHost::sharing_data_with`), so the remote-JWKS cycle (fetch lease, publish, install,
//! backoff, refetch deferral) and the paused requests are checked here in milliseconds, what the
//! end-to-end suite (`tests/harness/tests/jwt_auth.rs`) checks through real Envoy in minutes.

use super::{KIND, MAX_JWKS_BYTES, TICK};
use crate::testkeys::{self, Signer};
use crate::token::Alg;
use palisade_core::fake_host::FakeHost;
use palisade_core::fake_proxy::{Done, FakeProxy, OnRequest, Stream, CLIENT};
use palisade_core::key::RequestView;
use palisade_core::plugin::host::{code, Host};
use palisade_core::plugin::runtime::Action;
use palisade_core::plugin::{Flow, Kind, Setup, StreamCx};
use serde_json::{json, Value};
use std::time::Duration;

const ISSUER: &str = "https://issuer.test";
const JWKS_PATH: &str = "/.well-known/jwks.json";

fn jwks() -> Value {
    serde_json::from_str(testkeys::JWKS).unwrap()
}

/// The test JWKS plus the rotation key (`test-rsa-2`).
fn jwks_with_rotated() -> Value {
    let mut both = jwks();
    let rotated: Value = serde_json::from_str(testkeys::JWKS_ROTATED).unwrap();
    both["keys"]
        .as_array_mut()
        .unwrap()
        .push(rotated["keys"][0].clone());
    both
}

fn provider(jwks_source: Value) -> Value {
    json!({
        "name": "main", "issuer": ISSUER, "audiences": ["api"],
        "jwks": jwks_source,
        "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}, {"claim": "roles", "header": "x-jwt-roles"}],
        "payload_header": "x-jwt-payload"
    })
}

/// The e2e suite's inline config.
fn inline_config() -> Value {
    json!({
        "providers": [provider(json!({"inline": jwks()}))],
        "rules": [
            {"match": {"path_prefix": "/public"}, "bypass": true},
            {"match": {"path_prefix": "/admin"}, "providers": ["main"], "claims": [{"claim": "scope", "contains": "admin"}]},
            {"match": {"path_prefix": "/"}, "providers": ["main"]}
        ]
    })
}

/// A remote-JWKS config (`remote` adds to cluster `jwks` and its uri) with this
/// `keys_unavailable`.
fn remote_config(remote: Value, keys_unavailable: Value) -> Value {
    let mut r = json!({"cluster": "jwks", "uri": format!("http://jwks.test{JWKS_PATH}")});
    if let Value::Object(extra) = remote {
        for (k, v) in extra {
            r[k] = v;
        }
    }
    json!({
        "providers": [provider(json!({"remote": r}))],
        "rules": [{"providers": ["main"]}],
        "keys_unavailable": keys_unavailable
    })
}

fn reject() -> Value {
    json!({"action": "reject"})
}

fn pause(max_wait: &str) -> Value {
    json!({"action": "pause", "max_wait": max_wait})
}

/// One Envoy worker: its fake host (streams, clock, metrics, calls) and its runtime.
type Worker = FakeProxy;

/// Two workers of one Envoy with this (remote-JWKS) config, once A fetched the test JWKS and B
/// installed it on its tick.
fn serving_two(config: &Value) -> (Worker, Worker) {
    let a = worker(config);
    let b = sibling(&a, config);
    a.fetch_serving(&jwks());
    b.tick();
    (a, b)
}

/// A worker of the default remote-JWKS config, with this `keys_unavailable`.
fn remote(keys_unavailable: Value) -> Worker {
    worker(&remote_config(json!({}), keys_unavailable))
}

/// [`remote`], its first JWKS fetch dispatched by its first tick and not answered yet.
fn fetching(keys_unavailable: Value) -> Worker {
    let a = remote(keys_unavailable);
    a.tick();
    a
}

/// The standalone module on a worker of its own.
fn worker(config: &Value) -> Worker {
    FakeProxy::one(&KIND, config).unwrap_or_else(|e| panic!("rejected: {e}"))
}

/// Another worker of the same Envoy (same shared data, same clock now), same config.
fn sibling(of: &Worker, config: &Value) -> Worker {
    FakeProxy::one_on(FakeHost::sharing_data_with(&of.fake), &KIND, config)
        .unwrap_or_else(|e| panic!("rejected: {e}"))
}

/// A stage after jwt_auth in a chain: copies what `RequestView::claim` gives it into request
/// headers the upstream sees (`x-stage-sub`, `x-stage-scope`, or `x-stage-none`).
const SEEN: Kind = Kind {
    name: "seen",
    build: |_, _: &Setup<'_>| Ok(Box::new(OnRequest(copy_claims))),
};

fn copy_claims(cx: &mut StreamCx<'_>) -> Flow {
    let sub = cx.claim("sub");
    let scope = cx.claim("scope");
    let result = match (sub, scope) {
        (None, None) => cx.set_request_header("x-stage-none", Some("1")),
        (sub, scope) => cx
            .set_request_header("x-stage-sub", sub.as_deref())
            .and_then(|()| cx.set_request_header("x-stage-scope", scope.as_deref())),
    };
    assert!(result.is_ok(), "{result:?}");
    Flow::Continue
}

fn chained(config: &Value) -> Worker {
    FakeProxy::chain(&[KIND, SEEN], config).unwrap_or_else(|e| panic!("rejected: {e}"))
}

/// Still held: neither answered, resumed nor reset.
fn waiting(s: &Stream) -> bool {
    s.action == Action::Pause && s.reply().is_none() && s.resumed() == 0 && !s.reset()
}

/// The challenge a request was answered with.
fn www(r: &Done) -> Option<&str> {
    r.reply.as_ref().and_then(|r| r.header("www-authenticate"))
}

/// What these tests do with a worker: requests, ticks, and the JWKS calls.
trait Client {
    /// A whole request that is decided at once (not paused).
    fn request(&self, path: &str, headers: &[(&str, &str)]) -> Done;
    fn bearer(&self, path: &str, token: &str) -> Done;
    fn start_bearer(&self, token: &str) -> Stream;
    /// `d` passes on this worker's clock, with a tick every 250 ms (and one at the end).
    fn run_for(&self, d: Duration);
    /// The JWKS calls this worker dispatched so far.
    fn fetches(&self) -> usize;
    fn last_call_token(&self) -> u32;
    /// Envoy delivers the response to the last call: headers, body, then `on_http_call_response`
    /// with the body size, the status read back from the headers as the adapter does.
    fn respond(&self, status: Option<u16>, body: &[u8]);
    fn respond_sized(&self, status: Option<u16>, body: &[u8], body_size: usize);
    /// Tick, then answer the JWKS call that tick dispatched with this document.
    fn fetch_serving(&self, doc: &Value);
    fn stat(&self, name: &str) -> i64;
    fn stats(&self, names: &[&str]) -> Vec<i64>;
}

impl Client for Worker {
    fn request(&self, path: &str, headers: &[(&str, &str)]) -> Done {
        self.request_from(CLIENT, path, headers)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn bearer(&self, path: &str, token: &str) -> Done {
        self.request(path, &[("authorization", &format!("Bearer {token}"))])
    }

    fn start_bearer(&self, token: &str) -> Stream {
        self.start("/r", &[("authorization", &format!("Bearer {token}"))])
    }

    fn run_for(&self, d: Duration) {
        let mut left = d;
        while left > Duration::ZERO {
            let step = left.min(TICK);
            left -= step;
            self.tick_after(step);
        }
    }

    fn fetches(&self) -> usize {
        self.fake.calls().len()
    }

    fn last_call_token(&self) -> u32 {
        self.fake.calls().last().expect("a JWKS call").token
    }

    fn respond(&self, status: Option<u16>, body: &[u8]) {
        self.respond_sized(status, body, body.len());
    }

    fn respond_sized(&self, status: Option<u16>, body: &[u8], body_size: usize) {
        let token = self.last_call_token();
        let status_text = status.map(|s| s.to_string());
        let headers: Vec<(&str, &str)> = status_text
            .as_deref()
            .map(|s| vec![(":status", s), ("content-type", "application/json")])
            .unwrap_or_default();
        let (response, taken) = self.call_response(token, &headers, body, body_size);
        assert_eq!(response.status, status);
        assert!(taken);
    }

    fn fetch_serving(&self, doc: &Value) {
        let before = self.fetches();
        self.tick();
        assert_eq!(self.fetches(), before + 1, "the tick fetches");
        self.respond(Some(200), doc.to_string().as_bytes());
    }

    fn stat(&self, name: &str) -> i64 {
        self.fake
            .stat(&format!("palisade.jwt_auth.{name}"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn stats(&self, names: &[&str]) -> Vec<i64> {
        names.iter().map(|n| self.stat(n)).collect()
    }
}

fn now_secs(w: &Worker) -> u64 {
    w.fake.now().as_millis() / 1000
}

fn claims_at(now: u64) -> Value {
    json!({"iss": ISSUER, "aud": "api", "sub": "alice", "roles": ["reader", "writer"],
           "scope": "read", "iat": now, "exp": now + 3600})
}

fn token_at(w: &Worker, alg: Alg) -> String {
    testkeys::token(alg, &claims_at(now_secs(w)))
}

/// A token signed by the rotation key (`test-rsa-2`), not in the first key set.
fn rotated_token(w: &Worker) -> String {
    let header = json!({"alg": "RS256", "kid": "test-rsa-2"}).to_string();
    testkeys::sign_raw(
        Alg::Rs256,
        Signer::Rsa2,
        &header,
        &claims_at(now_secs(w)).to_string(),
    )
}

/// A token naming a `kid` no key set has.
fn unknown_kid_token(w: &Worker) -> String {
    let header = json!({"alg": "EdDSA", "kid": "made-up"}).to_string();
    testkeys::sign_raw(
        Alg::EdDsa,
        Signer::Ed25519,
        &header,
        &claims_at(now_secs(w)).to_string(),
    )
}

const SECOND: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Inline JWKS: verdicts, replies, outputs.

#[test]
fn a_valid_token_goes_upstream_with_claim_headers_set_and_spoofed_ones_and_the_token_removed() {
    let w = worker(&inline_config());
    assert_eq!(w.runtime.tick_period(), None, "nothing to fetch, no ticks");
    let token = token_at(&w, Alg::Rs256);
    let payload = token.split('.').nth(1).unwrap().to_owned();
    let r = w.request(
        "/x",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-jwt-sub", "mallory"),
            ("x-jwt-sub", "eve"),
            ("x-jwt-payload", "forged"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-jwt-sub"), Some("alice"));
    let subs: Vec<_> = r
        .upstream
        .iter()
        .filter(|(n, _)| n == "x-jwt-sub")
        .collect();
    assert_eq!(subs.len(), 1, "every spoofed value is gone: {subs:?}");
    assert_eq!(r.upstream_header("x-jwt-roles"), Some("reader,writer"));
    assert_eq!(r.upstream_header("x-jwt-payload"), Some(payload.as_str()));
    assert_eq!(
        r.upstream_header("authorization"),
        None,
        "the token is not forwarded"
    );
    assert_eq!(r.upstream_header(":path"), Some("/x"));
    assert_eq!(
        w.stats(&["allowed", "cache_hits", "rewrite_failures"]),
        [1, 0, 0]
    );
}

#[test]
fn spoofed_claim_headers_are_removed_from_bypassed_requests_too() {
    let w = worker(&inline_config());
    let r = w.request(
        "/public/x",
        &[("x-jwt-sub", "mallory"), ("x-jwt-roles", "admin")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-jwt-sub"), None);
    assert_eq!(r.upstream_header("x-jwt-roles"), None);
    assert_eq!(w.stats(&["bypassed", "allowed"]), [1, 0]);
}

#[test]
fn every_denial_is_answered_with_its_status_and_challenge_and_counted_under_its_reason() {
    let w = worker(&inline_config());
    let now = now_secs(&w);
    let valid = token_at(&w, Alg::Es256);
    let expired = testkeys::token(
        Alg::EdDsa,
        &json!({"iss": ISSUER, "aud": "api", "sub": "a", "iat": now - 7200, "exp": now - 3600}),
    );
    let wrong_aud = testkeys::token(
        Alg::EdDsa,
        &json!({"iss": ISSUER, "aud": "other", "sub": "a", "exp": now + 600}),
    );
    let (input, sig) = valid.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let bad_signature = format!("{input}.{flipped}{}", &sig[1..]);
    let auth = |t: &str| format!("Bearer {t}");
    let realm = "Bearer realm=\"palisade\"";
    struct Row<'a> {
        name: &'a str,
        path: &'a str,
        headers: Vec<(&'a str, String)>,
        status: u16,
        www: Option<&'a str>,
        details: &'a str,
    }
    let rows = [
        Row {
            name: "no token",
            path: "/x",
            headers: vec![],
            status: 401,
            www: Some(realm),
            details: "palisade_jwt_missing",
        },
        Row {
            name: "expired",
            path: "/x",
            headers: vec![("authorization", auth(&expired))],
            status: 401,
            www: Some("error=\"invalid_token\", error_description=\"the token has expired\""),
            details: "palisade_jwt_expired",
        },
        Row {
            name: "bad signature",
            path: "/x",
            headers: vec![("authorization", auth(&bad_signature))],
            status: 401,
            www: Some("error=\"invalid_token\""),
            details: "palisade_jwt_bad_signature",
        },
        Row {
            name: "unknown kid",
            path: "/x",
            headers: vec![("authorization", auth(&unknown_kid_token(&w)))],
            status: 401,
            www: Some("error=\"invalid_token\""),
            details: "palisade_jwt_unknown_kid",
        },
        Row {
            name: "wrong audience",
            path: "/x",
            headers: vec![("authorization", auth(&wrong_aud))],
            status: 403,
            www: Some("error=\"invalid_token\""),
            details: "palisade_jwt_audience",
        },
        Row {
            name: "claim requirement",
            path: "/admin/x",
            headers: vec![("authorization", auth(&valid))],
            status: 403,
            www: Some("error=\"insufficient_scope\""),
            details: "palisade_jwt_claims",
        },
        Row {
            name: "two authorization lines (Envoy joins them)",
            path: "/x",
            headers: vec![
                ("authorization", auth(&valid)),
                ("authorization", auth(&token_at(&w, Alg::EdDsa))),
            ],
            status: 400,
            www: Some("error=\"invalid_request\""),
            details: "palisade_jwt_malformed",
        },
    ];
    for row in &rows {
        let headers: Vec<(&str, &str)> =
            row.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = w.request(row.path, &headers);
        assert_eq!(r.status, row.status, "{}", row.name);
        let reply = r.reply.as_ref().unwrap();
        assert_eq!(reply.details, row.details, "{}", row.name);
        let www = www(&r).unwrap_or_else(|| panic!("{}: no challenge", row.name));
        assert!(www.starts_with(realm), "{}: {www}", row.name);
        assert!(www.contains(row.www.unwrap()), "{}: {www}", row.name);
        if row.name == "no token" {
            assert_eq!(www, realm, "a missing token carries no error");
        }
        assert!(
            !String::from_utf8_lossy(&reply.body).contains(input),
            "{}: the token is echoed",
            row.name
        );
    }
    assert_eq!(
        w.stats(&[
            "denied.missing",
            "denied.expired",
            "denied.bad_signature",
            "denied.unknown_kid",
            "denied.audience",
            "denied.claims",
            "denied.malformed",
            "allowed",
        ]),
        [1, 1, 1, 1, 1, 1, 1, 0]
    );
    // An inline key set is never refetched for an unknown kid.
    w.run_for(SECOND);
    assert_eq!(w.fetches(), 0);
}

#[test]
fn a_request_no_rule_matches_is_403_without_a_challenge_unless_unmatched_is_allowed() {
    let mut config = inline_config();
    config["rules"] = json!([{"match": {"path_prefix": "/api"}, "providers": ["main"]}]);
    let w = worker(&config);
    let r = w.request("/other", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(www(&r), None);
    assert_eq!(w.stat("denied.no_rule"), 1);
    config["unmatched"] = json!("allow");
    let w = worker(&config);
    assert_eq!(
        w.request("/other", &[("x-jwt-sub", "mallory")])
            .upstream_header("x-jwt-sub"),
        None
    );
    assert_eq!(w.stats(&["unmatched", "denied.no_rule"]), [1, 0]);
}

#[test]
fn a_repeated_token_is_verified_once_per_worker_then_served_from_that_workers_cache() {
    let a = worker(&inline_config());
    let b = sibling(&a, &inline_config());
    let token = token_at(&a, Alg::Rs256);
    let payload = token.split('.').nth(1).unwrap();
    for _ in 0..3 {
        let r = a.bearer("/c", &token);
        assert_eq!(r.status, 200);
        // A cache hit sets the same outputs as a verification.
        assert_eq!(r.upstream_header("x-jwt-payload"), Some(payload));
        assert_eq!(r.upstream_header("x-jwt-sub"), Some("alice"));
        assert_eq!(r.upstream_header("authorization"), None);
    }
    assert_eq!(a.stats(&["allowed", "cache_hits"]), [3, 2]);
    // The other worker has its own cache: it verifies once too.
    assert_eq!(b.bearer("/c", &token).status, 200);
    assert_eq!(b.bearer("/c", &token).status, 200);
    assert_eq!(b.stats(&["allowed", "cache_hits"]), [2, 1]);
    // A cached token that expires meanwhile is refused, not served from the cache.
    a.fake.advance(Duration::from_secs(3600 + 61));
    assert_eq!(a.bearer("/c", &token).status, 401);
    assert_eq!(a.stat("denied.expired"), 1);
}

#[test]
fn a_reply_that_cannot_be_sent_resets_the_stream_and_never_lets_it_through() {
    let w = worker(&inline_config());
    w.fake.fail("send_reply", code::INTERNAL_FAILURE);
    let s = w.start("/x", &[]);
    assert_eq!(s.action, Action::Pause);
    assert!(s.reset(), "an unanswerable request is reset");
    assert_eq!(s.resumed(), 0);
    assert_eq!(s.reply(), None);
    assert_eq!(w.stat("denied.missing"), 1);
}

// ---------------------------------------------------------------------------------------------
// The chain: claims for later stages.

#[test]
fn verified_claims_reach_the_later_stages_of_the_chain_and_only_for_their_own_request() {
    let w = chained(&json!({"chain": [{"jwt_auth": inline_config()}, {"seen": {}}]}));
    let mut claims = claims_at(now_secs(&w));
    claims["scope"] = json!("read admin");
    let token = testkeys::token(Alg::EdDsa, &claims);
    let r = w.bearer("/admin/x", &token);
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-stage-sub"), Some("alice"));
    assert_eq!(r.upstream_header("x-stage-scope"), Some("read admin"));
    // The claim headers stay available too.
    assert_eq!(r.upstream_header("x-jwt-sub"), Some("alice"));
    // The next request (a bypass, no token) sees no claims: nothing leaks between streams, and
    // a client-sent claim header is not a claim.
    let r = w.request("/public", &[("x-jwt-sub", "mallory")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-stage-none"), Some("1"));
    assert_eq!(r.upstream_header("x-stage-sub"), None);
    // A denial ends the chain: the later stage never sees the request.
    let r = w.request("/x", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.upstream_header("x-stage-none"), None);
    // In a chain, jwt_auth counts under its own name.
    assert_eq!(
        w.stats(&["allowed", "bypassed", "denied.missing"]),
        [1, 1, 1]
    );
}

// ---------------------------------------------------------------------------------------------
// Remote JWKS: one fetch for all workers.

#[test]
fn one_worker_fetches_for_all_and_the_others_install_the_published_keys_on_their_tick() {
    let config = remote_config(json!({"timeout": "3s"}), reject());
    let a = worker(&config);
    let b = sibling(&a, &config);
    assert_eq!(a.runtime.tick_period(), Some(TICK));
    // Both workers tick at once: one wins the lease, the other sees it and waits.
    a.tick();
    b.tick();
    assert_eq!((a.fetches(), b.fetches()), (1, 0));
    let call = &a.fake.calls()[0];
    assert_eq!(call.cluster, "jwks");
    assert_eq!(call.timeout, Duration::from_secs(3));
    let header = |n: &str| {
        call.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(":method"), Some("GET"));
    assert_eq!(header(":path"), Some(JWKS_PATH));
    assert_eq!(header(":authority"), Some("jwks.test"));
    assert_eq!(header("accept"), Some("application/json"));
    // Before the keys: 503 with retry-after on both workers.
    let token = token_at(&a, Alg::EdDsa);
    for w in [&a, &b] {
        let r = w.bearer("/r", &token);
        assert_eq!(r.status, 503);
        let reply = r.reply.as_ref().unwrap();
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(reply.details, "palisade_jwt_no_keys");
        assert_eq!(w.stat("denied.no_keys"), 1);
    }
    a.fake.advance(Duration::from_millis(40));
    a.respond(Some(200), jwks().to_string().as_bytes());
    assert_eq!(
        a.stats(&["jwks_fetch.success", "jwks_fetch.failure"]),
        [1, 0]
    );
    // The fetch's latency, dispatch to response, is a histogram sample.
    assert_eq!(
        a.fake.samples("palisade.jwt_auth.jwks_fetch.latency_ms"),
        Ok(vec![40])
    );
    // The fetching worker installs at once; the other on its next tick, without a fetch.
    assert_eq!(a.bearer("/r", &token).status, 200);
    assert_eq!(b.bearer("/r", &token).status, 503);
    b.run_for(TICK);
    assert_eq!(b.bearer("/r", &token).status, 200);
    assert_eq!(b.stats(&["jwks_fetch.success", "allowed"]), [0, 1]);
    // Neither fetches again while the set is fresh (80 % of the 10 min default).
    a.run_for(Duration::from_secs(30));
    b.run_for(Duration::from_secs(30));
    assert_eq!((a.fetches(), b.fetches()), (1, 0));
    // Two shared-data keys for the provider, in the instance's namespace.
    let keys = a.fake.shared_keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys[0].starts_with("palisade/jwt_auth/edge/default/fetch/main/"),
        "{keys:?}"
    );
    assert!(
        keys[1].starts_with("palisade/jwt_auth/edge/default/jwks/main/"),
        "{keys:?}"
    );
    // A token signed by a key the set does not have is refused.
    assert_eq!(a.bearer("/r", &rotated_token(&a)).status, 401);
}

#[test]
fn a_worker_started_after_the_publish_installs_the_keys_without_a_tick_or_a_fetch() {
    let config = remote_config(json!({}), reject());
    let a = worker(&config);
    a.fetch_serving(&jwks());
    // A later worker, or a reload keeping the source: keys at once.
    let late = sibling(&a, &config);
    assert_eq!(late.bearer("/r", &token_at(&late, Alg::Es256)).status, 200);
    late.run_for(SECOND);
    assert_eq!(late.fetches(), 0);
    // A reload that changes the source starts fresh: the old source's keys are never used.
    let moved = sibling(
        &a,
        &remote_config(json!({"uri": "http://other.test/jwks"}), reject()),
    );
    assert_eq!(
        moved.bearer("/r", &token_at(&moved, Alg::Es256)).status,
        503
    );
    moved.tick();
    assert_eq!(moved.fetches(), 1);
    assert_eq!(
        moved.fake.calls()[0].headers[2],
        (":authority".into(), "other.test".into())
    );
}

#[test]
fn a_lost_fetch_response_blocks_no_one_after_the_lease_expires() {
    let config = remote_config(json!({"timeout": "2s"}), reject());
    let a = worker(&config);
    let b = sibling(&a, &config);
    a.tick();
    assert_eq!(a.fetches(), 1);
    // A's response never comes; B waits out the lease (timeout + 1 s).
    for w in [&a, &b] {
        w.run_for(Duration::from_millis(2750));
    }
    assert_eq!((a.fetches(), b.fetches()), (1, 0));
    // Lease over: A, whose own call is still in flight, does not dispatch a second one; B does.
    a.run_for(TICK);
    assert_eq!(a.fetches(), 1);
    b.run_for(TICK);
    assert_eq!(b.fetches(), 1);
    b.respond(Some(200), jwks().to_string().as_bytes());
    a.run_for(TICK);
    assert_eq!(a.bearer("/r", &token_at(&a, Alg::EdDsa)).status, 200);
    // A's late response, a failure, leaves B's published keys in place.
    a.respond(None, b"");
    assert_eq!(a.stat("jwks_fetch.failure"), 1);
    assert_eq!(a.bearer("/r", &token_at(&a, Alg::Es256)).status, 200);
}

#[test]
fn a_failed_refresh_keeps_the_last_good_keys_and_retries_back_off_across_workers() {
    let (a, b) = serving_two(&remote_config(json!({"cache_duration": "10s"}), reject()));
    // The refresh is due at 80 % of cache_duration: 8 s.
    a.run_for(Duration::from_millis(7750));
    assert_eq!(a.fetches(), 1);
    a.run_for(TICK);
    assert_eq!(a.fetches(), 2);
    a.respond(Some(500), b"down");
    assert_eq!(a.stat("jwks_fetch.failure"), 1);
    // The last good keys stay in use on both workers (a token neither has cached).
    assert_eq!(a.bearer("/r", &token_at(&a, Alg::EdDsa)).status, 200);
    b.fake.now_is(a.fake.now());
    b.tick();
    assert_eq!(b.bearer("/r", &token_at(&b, Alg::EdDsa)).status, 200);
    // Backoff 1 s, shared: no worker retries sooner.
    for w in [&a, &b] {
        w.run_for(Duration::from_millis(750));
    }
    assert_eq!((a.fetches(), b.fetches()), (2, 0));
    a.run_for(TICK);
    assert_eq!(a.fetches(), 3);
    // A reset (no response): backoff 2 s.
    a.respond(None, b"");
    a.run_for(Duration::from_millis(1750));
    assert_eq!(a.fetches(), 3);
    a.run_for(TICK);
    assert_eq!(a.fetches(), 4);
    // A 200 that is not a usable JWKS (an HMAC secret, an HTML page) is a failure too.
    let oct = json!({"keys": [{"kty": "oct", "k": testkeys::hmac_secret_b64()}]});
    a.respond(Some(200), oct.to_string().as_bytes());
    a.run_for(Duration::from_secs(4));
    assert_eq!(a.fetches(), 5);
    a.respond(Some(200), b"<html>");
    assert_eq!(
        a.stats(&["jwks_fetch.failure", "jwks_fetch.success"]),
        [4, 1]
    );
    assert_eq!(a.bearer("/r", &token_at(&a, Alg::Ps256)).status, 200);
    // Backoff 8 s, then a success resets it: the next refresh is 8 s after it.
    a.run_for(Duration::from_secs(8));
    assert_eq!(a.fetches(), 6);
    a.respond(Some(200), jwks().to_string().as_bytes());
    assert_eq!(a.stat("jwks_fetch.success"), 2);
    a.run_for(Duration::from_millis(7750));
    assert_eq!(a.fetches(), 6);
    a.run_for(TICK);
    assert_eq!(a.fetches(), 7);
}

#[test]
fn a_dispatch_the_host_refuses_is_a_failure_with_backoff() {
    let a = remote(reject());
    a.fake.fail("http_call", code::BAD_ARGUMENT);
    a.tick();
    assert_eq!(a.fake.hostcalls("http_call"), 1);
    assert_eq!(a.stat("jwks_fetch.failure"), 1);
    a.run_for(Duration::from_millis(750));
    assert_eq!(a.fake.hostcalls("http_call"), 1, "backed off");
    a.fake.heal("http_call");
    a.run_for(TICK);
    assert_eq!(a.fetches(), 1);
}

#[test]
fn a_shared_data_outage_fetches_nothing_and_the_next_tick_after_it_does() {
    let a = remote(reject());
    a.fake.fail("shared_data", code::INTERNAL_FAILURE);
    a.run_for(SECOND);
    assert_eq!(a.fake.hostcalls("http_call"), 0, "no lease, no fetch");
    a.fake.heal("shared_data");
    a.run_for(TICK);
    assert_eq!(a.fetches(), 1);
    a.respond(Some(200), jwks().to_string().as_bytes());
    assert_eq!(a.bearer("/r", &token_at(&a, Alg::EdDsa)).status, 200);
}

#[test]
fn an_oversized_jwks_is_a_failed_fetch_whose_body_is_never_read() {
    let a = fetching(reject());
    let reads = a.fake.hostcalls("buffer");
    a.respond_sized(Some(200), jwks().to_string().as_bytes(), MAX_JWKS_BYTES + 1);
    assert_eq!(
        a.fake.hostcalls("buffer"),
        reads,
        "the body is not copied into the VM"
    );
    assert_eq!(
        a.stats(&["jwks_fetch.failure", "jwks_fetch.success"]),
        [1, 0]
    );
    assert_eq!(a.bearer("/r", &token_at(&a, Alg::EdDsa)).status, 503);
    // A document of exactly the limit is read (and here, accepted).
    a.run_for(SECOND);
    assert_eq!(a.fetches(), 2);
    let mut doc = jwks().to_string().into_bytes();
    doc.pop();
    doc.resize(MAX_JWKS_BYTES - 1, b' ');
    doc.push(b'}');
    a.respond(Some(200), &doc);
    assert_eq!(a.stat("jwks_fetch.success"), 1);
    assert_eq!(a.bearer("/r", &token_at(&a, Alg::EdDsa)).status, 200);
}

#[test]
fn a_jwks_body_the_host_cannot_hand_over_is_a_failed_fetch() {
    let a = fetching(reject());
    a.fake.fail("buffer", code::INTERNAL_FAILURE);
    a.respond(Some(200), jwks().to_string().as_bytes());
    assert_eq!(
        a.stats(&["jwks_fetch.failure", "jwks_fetch.success"]),
        [1, 0]
    );
    assert_eq!(a.bearer("/r", &token_at(&a, Alg::EdDsa)).status, 503);
    a.fake.heal("buffer");
    a.run_for(SECOND);
    assert_eq!(a.fetches(), 2, "retried after the 1 s backoff");
    a.respond(Some(200), jwks().to_string().as_bytes());
    assert_eq!(a.bearer("/r", &token_at(&a, Alg::EdDsa)).status, 200);
}

#[test]
fn a_refreshed_key_set_replaces_the_old_one_and_its_cached_verifications() {
    let (a, b) = serving_two(&remote_config(json!({"cache_duration": "10s"}), reject()));
    let old = token_at(&a, Alg::EdDsa);
    assert_eq!(b.bearer("/r", &old).status, 200);
    assert_eq!(b.bearer("/r", &old).status, 200);
    assert_eq!(b.stat("cache_hits"), 1);
    a.run_for(Duration::from_secs(8));
    b.fake.now_is(a.fake.now());
    a.respond(Some(200), testkeys::JWKS_ROTATED.as_bytes());
    b.tick();
    // The old key is gone, and so is the cached verification made with it.
    assert_eq!(b.bearer("/r", &old).status, 401);
    assert_eq!(b.bearer("/r", &rotated_token(&b)).status, 200);
    assert_eq!(b.stat("cache_hits"), 1);
}

#[test]
fn an_unknown_kid_asks_for_one_refetch_and_later_asks_are_deferred_and_counted() {
    let (a, b) = serving_two(&remote_config(
        json!({"cache_duration": "1h", "min_refetch_interval": "30s"}),
        reject(),
    ));
    // The IdP added a key; a token signed with it arrives before any refresh.
    let rotated = rotated_token(&a);
    let r = a.bearer("/r", &rotated);
    assert_eq!(r.status, 401);
    assert!(www(&r).unwrap().contains("error=\"invalid_token\""));
    assert_eq!(a.stat("denied.unknown_kid"), 1);
    a.run_for(TICK);
    assert_eq!(a.fetches(), 2, "one forced refetch on the next tick");
    let forced_at = a.fake.now();
    // Meanwhile the other worker sees it too: the lease is held, so it waits (counted).
    b.fake.now_is(a.fake.now());
    assert_eq!(b.bearer("/r", &rotated).status, 401);
    b.run_for(TICK);
    assert_eq!((b.fetches(), b.stat("jwks_fetch.refetch_deferred")), (0, 1));
    a.respond(Some(200), jwks_with_rotated().to_string().as_bytes());
    assert_eq!(a.bearer("/r", &rotated).status, 200);
    b.run_for(TICK);
    assert_eq!(b.bearer("/r", &rotated).status, 200);
    assert_eq!(b.fetches(), 0);
    // A flood of made-up kids on A within min_refetch_interval of the refetch: every tick
    // declines (counted), nothing is fetched; once the interval has passed, exactly one fetch.
    for _ in 0..10 {
        assert_eq!(a.bearer("/r", &unknown_kid_token(&a)).status, 401);
    }
    assert_eq!(a.stat("denied.unknown_kid"), 11);
    a.run_for(Duration::from_secs(29));
    assert_eq!(a.fetches(), 2);
    assert_eq!(a.stat("jwks_fetch.refetch_deferred"), 29 * 4);
    a.fake
        .now_is(forced_at.saturating_add(Duration::from_secs(30)));
    a.tick();
    assert_eq!(a.fetches(), 3);
    a.respond(Some(200), jwks_with_rotated().to_string().as_bytes());
    // The ask is done: later ticks neither fetch nor count.
    a.run_for(Duration::from_secs(60));
    assert_eq!(a.fetches(), 3);
    assert_eq!(a.stat("jwks_fetch.refetch_deferred"), 29 * 4);
    assert_eq!(a.stat("jwks_fetch.success"), 3);
}

// ---------------------------------------------------------------------------------------------
// Requests waiting for the first key set.

#[test]
fn a_request_before_the_first_key_set_waits_and_goes_on_when_its_workers_fetch_completes() {
    let a = fetching(pause("3s"));
    let token = token_at(&a, Alg::EdDsa);
    let s1 = a.start(
        "/r",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-jwt-sub", "mallory"),
        ],
    );
    let s2 = a.start_bearer(&token_at(&a, Alg::Es256));
    assert!(waiting(&s1) && waiting(&s2));
    assert_eq!(a.stat("paused"), 2);
    a.run_for(SECOND);
    assert!(waiting(&s1) && waiting(&s2), "no keys yet: still held");
    a.respond(Some(200), jwks().to_string().as_bytes());
    assert_eq!((s1.resumed(), s2.resumed()), (1, 1));
    assert_eq!((s1.reply(), s2.reply()), (None, None));
    // Decided with the keys: claim headers set, spoofed ones and the token gone.
    assert_eq!(s1.upstream_header("x-jwt-sub").as_deref(), Some("alice"));
    assert_eq!(s1.upstream_header("authorization"), None);
    assert_eq!(
        a.stats(&["allowed", "pause_timeouts", "denied.no_keys"]),
        [2, 0, 0]
    );
    // Resumed once only: later ticks leave them alone.
    a.run_for(SECOND);
    assert_eq!((s1.resumed(), s2.resumed()), (1, 1));
    s1.finish();
    s2.finish();
}

#[test]
fn a_request_waiting_on_another_worker_goes_on_at_that_workers_next_tick() {
    let config = remote_config(json!({}), pause("3s"));
    let a = worker(&config);
    let b = sibling(&a, &config);
    a.tick();
    b.tick();
    let s = b.start_bearer(&token_at(&b, Alg::EdDsa));
    assert!(waiting(&s));
    a.respond(Some(200), jwks().to_string().as_bytes());
    assert!(waiting(&s), "only its own worker can resume it");
    b.run_for(TICK);
    assert_eq!(s.resumed(), 1);
    assert_eq!(b.stats(&["paused", "allowed", "pause_timeouts"]), [1, 1, 0]);
}

#[test]
fn a_paused_request_is_still_checked_when_the_keys_arrive_and_denied_if_bad() {
    let a = fetching(pause("3s"));
    let now = now_secs(&a);
    let expired = testkeys::token(
        Alg::EdDsa,
        &json!({"iss": ISSUER, "aud": "api", "sub": "a", "exp": now - 3600}),
    );
    let s = a.start_bearer(&expired);
    assert!(waiting(&s));
    a.respond(Some(200), jwks().to_string().as_bytes());
    let reply = s.reply().expect("answered");
    assert_eq!(reply.status, 401);
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains("expired"));
    assert_eq!(s.resumed(), 0);
    assert_eq!(a.stats(&["denied.expired", "allowed"]), [1, 0]);
}

#[test]
fn a_paused_request_is_answered_503_when_no_keys_arrive_within_max_wait() {
    let a = fetching(pause("1s"));
    let s = a.start_bearer(&token_at(&a, Alg::EdDsa));
    a.respond(Some(503), b"down");
    assert_eq!(a.stat("jwks_fetch.failure"), 1);
    a.run_for(Duration::from_millis(750));
    assert!(waiting(&s), "before max_wait");
    a.run_for(TICK);
    let reply = s.reply().expect("503 after max_wait");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(s.resumed(), 0);
    assert_eq!(
        a.stats(&["paused", "pause_timeouts", "denied.no_keys", "allowed"]),
        [1, 1, 1, 0]
    );
    // Answered once: later ticks and a late key set leave it alone.
    a.run_for(SECOND);
    a.respond(Some(200), jwks().to_string().as_bytes());
    assert_eq!(a.stats(&["pause_timeouts", "allowed"]), [1, 0]);
    assert_eq!(s.resumed(), 0);
}

#[test]
fn a_paused_request_whose_timeout_reply_cannot_be_sent_is_reset() {
    let a = fetching(pause("1s"));
    let s = a.start_bearer(&token_at(&a, Alg::EdDsa));
    a.fake.fail("send_reply", code::INTERNAL_FAILURE);
    a.run_for(SECOND);
    assert!(s.reset());
    assert_eq!(s.resumed(), 0);
    assert_eq!(a.stat("pause_timeouts"), 1);
}

#[test]
fn a_client_that_leaves_while_paused_is_forgotten_and_never_woken() {
    let a = fetching(pause("3s"));
    let s = a.start_bearer(&token_at(&a, Alg::EdDsa));
    let id = s.id;
    s.finish();
    let switches = a.fake.hostcalls("set_effective_context");
    a.respond(Some(200), jwks().to_string().as_bytes());
    a.run_for(SECOND);
    assert_eq!(
        a.fake.hostcalls("set_effective_context"),
        switches,
        "no wake for it"
    );
    let st = a.fake.stream(id).unwrap();
    assert_eq!((st.resumed, st.reply.is_none()), (0, true));
    assert_eq!(a.stats(&["paused", "allowed", "pause_timeouts"]), [1, 0, 0]);
}

#[test]
fn reject_mode_answers_503_at_once_without_pausing() {
    let a = fetching(reject());
    let s = a.start_bearer(&token_at(&a, Alg::EdDsa));
    assert_eq!(s.reply().map(|r| r.status), Some(503));
    assert_eq!(a.stats(&["paused", "denied.no_keys"]), [0, 1]);
}

// ---------------------------------------------------------------------------------------------
// Fail closed on rewrites.

#[test]
fn a_claim_header_that_cannot_be_set_is_answered_503_and_counted_as_a_rewrite_failure_only() {
    let w = worker(&inline_config());
    w.fake.fail("replace_header", code::INTERNAL_FAILURE);
    let s = w.start_bearer(&token_at(&w, Alg::EdDsa));
    assert_eq!(s.action, Action::Pause);
    let reply = s.reply().expect("a 503");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.details, "palisade_jwt_rewrite_failed");
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(s.resumed(), 0);
    // Not counted as allowed: it never reached the upstream.
    assert_eq!(w.stats(&["rewrite_failures", "allowed"]), [1, 0]);
}

#[test]
fn a_spoofed_header_that_cannot_be_removed_never_goes_upstream() {
    let w = worker(&inline_config());
    w.fake.fail("remove_header", code::INTERNAL_FAILURE);
    let s = w.start("/public/x", &[("x-jwt-sub", "mallory")]);
    assert_eq!(s.reply().map(|r| r.status), Some(503));
    assert_eq!(s.resumed(), 0);
    assert_eq!(w.stats(&["rewrite_failures", "bypassed"]), [1, 0]);
    // And if the 503 cannot be sent either, the stream is reset.
    w.fake.fail("send_reply", code::INTERNAL_FAILURE);
    let s = w.start("/public/x", &[("x-jwt-sub", "mallory")]);
    assert!(s.reset());
    assert_eq!(w.stats(&["rewrite_failures", "bypassed"]), [2, 0]);
}

#[test]
fn an_unknown_kid_ask_is_settled_by_a_newer_key_set_whichever_worker_fetched_it() {
    let (a, b) = serving_two(&remote_config(
        json!({"cache_duration": "1h", "min_refetch_interval": "30s"}),
        reject(),
    ));
    let token = unknown_kid_token(&a);
    // Both workers see the token; A refetches, B's ask is declined while A holds the lease.
    assert_eq!(a.bearer("/r", &token).status, 401);
    a.run_for(TICK);
    assert_eq!(a.fetches(), 2);
    b.fake.now_is(a.fake.now());
    assert_eq!(b.bearer("/r", &token).status, 401);
    b.run_for(TICK);
    assert_eq!(b.stat("jwks_fetch.refetch_deferred"), 1);
    // A's refetch publishes a newer set; B installs it on its next tick. That answers B's ask
    // too: B neither keeps declining it every tick nor refetches once the interval has passed.
    a.respond(Some(200), jwks_with_rotated().to_string().as_bytes());
    b.run_for(Duration::from_secs(60));
    assert_eq!(b.fetches(), 0);
    assert_eq!(b.stat("jwks_fetch.refetch_deferred"), 1);
    // A new ask after that is a new ask: rate-limited from A's refetch, then done once.
    assert_eq!(b.bearer("/r", &token).status, 401);
    b.run_for(TICK);
    assert_eq!((b.fetches(), b.stat("jwks_fetch.refetch_deferred")), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// Token locations, as the e2e suite checks them.

fn multi_location_config() -> Value {
    let mut config = inline_config();
    config["providers"][0]["from_headers"] = json!([
        {"name": "authorization", "prefix": "Bearer "},
        {"name": "x-token"}
    ]);
    config["providers"][0]["from_params"] = json!(["access_token"]);
    config["providers"][0]["from_cookies"] = json!(["session"]);
    config
}

#[test]
fn query_and_cookie_tokens_are_cut_out_before_the_upstream_keeping_everything_else() {
    let w = worker(&multi_location_config());
    let token = token_at(&w, Alg::Es256);
    let r = w.request(&format!("/q?a=1&access_token={token}&b=%2F"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header(":path"), Some("/q?a=1&b=%2F"));
    assert_eq!(r.upstream_header("x-jwt-sub"), Some("alice"));
    let r = w.request("/c", &[("cookie", &format!("theme=dark; session={token}"))]);
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("cookie"), Some("theme=dark"));
    let r = w.request("/c", &[("cookie", &format!("session={token}"))]);
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("cookie"), None);
    // The same token in two locations is one token, removed from both.
    let r = w.request(
        &format!("/q?access_token={token}"),
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("authorization"), None);
    assert_eq!(r.upstream_header(":path"), Some("/q"));
    // Two different tokens: 400 invalid_request.
    let r = w.request(
        &format!("/q?access_token={}", token_at(&w, Alg::EdDsa)),
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(r.status, 400);
    assert!(www(&r).unwrap().contains("error=\"invalid_request\""));
    assert_eq!(w.stats(&["allowed", "denied.malformed"]), [4, 1]);
}

#[test]
fn two_lines_of_a_token_header_are_400_whether_the_proxy_joins_them_or_not() {
    let w = worker(&multi_location_config());
    let (a, b) = (token_at(&w, Alg::Es256), token_at(&w, Alg::EdDsa));
    for (name, prefix) in [("authorization", "Bearer "), ("x-token", "")] {
        let line = |t: &str| format!("{prefix}{t}");
        assert_eq!(w.request("/t", &[(name, &line(&a))]).status, 200, "{name}");
        for (x, y) in [(&a, &b), (&a, &a)] {
            let r = w.request("/t", &[(name, &line(x)), (name, &line(y))]);
            assert_eq!(r.status, 400, "{name}: two lines");
        }
    }
    assert_eq!(
        w.request(
            "/t",
            &[("authorization", &format!("Bearer {a}")), ("x-token", &a)]
        )
        .status,
        200
    );
    assert_eq!(w.stat("denied.malformed"), 4);
}

#[test]
fn a_signature_of_the_wrong_length_is_401_and_the_worker_keeps_serving() {
    let w = worker(&inline_config());
    let valid = token_at(&w, Alg::EdDsa);
    let (input, _) = valid.rsplit_once('.').unwrap();
    for len in [1, 63, 65, 128] {
        let sig = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            vec![b'x'; len],
        );
        let r = w.bearer("/r", &format!("{input}.{sig}"));
        assert_eq!(r.status, 401, "{len}-byte signature");
        assert!(www(&r).unwrap().contains("invalid_token"));
    }
    assert_eq!(w.bearer("/r", &valid).status, 200);
    assert_eq!(w.stats(&["denied.bad_signature", "allowed"]), [4, 1]);
}
