//! jwt_auth end to end: real Envoy with 2 workers, the echo upstream showing what reached it, and
//! (for remote JWKS) a small JWKS server behind its own Envoy cluster that counts its fetches.
//!
//! Tokens are the static ones in `plugins/jwt_auth/testdata/e2e_tokens.json` (far-future or
//! far-past times, signed by the committed TEST-ONLY keys; see `generate.py` there).
// Test code: helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::client::{parallel, status_counts, Request, Response};
use palisade_harness::{
    render_example, repo_root, start_upstream, wait_for, Bootstrap, Envoy, Filter, Route,
};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn testdata(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("plugins/jwt_auth/testdata").join(name))
        .unwrap_or_else(|e| panic!("read testdata/{name}: {e}"))
}

fn token(name: &str) -> String {
    let tokens: Value = serde_json::from_str(&testdata("e2e_tokens.json")).unwrap();
    tokens[name].as_str().unwrap().to_owned()
}

fn jwks() -> Value {
    serde_json::from_str(&testdata("jwks.json")).unwrap()
}

fn provider(jwks_source: Value) -> Value {
    json!({
        "name": "main", "issuer": "https://issuer.test", "audiences": ["api"],
        "jwks": jwks_source,
        "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}, {"claim": "roles", "header": "x-jwt-roles"}],
        "payload_header": "x-jwt-payload"
    })
}

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

fn start(config: &Value) -> (palisade_harness::Upstream, Envoy) {
    let upstream = start_upstream();
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("jwt_auth", config))
        .route(Route::backend("all", "/"))
        .render(upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    (upstream, envoy)
}

fn bearer(envoy: &Envoy, path: &str, token: &str) -> Request {
    Request::get(&envoy.url(path)).header("authorization", &format!("Bearer {token}"))
}

fn send(req: Request) -> Response {
    req.send()
        .unwrap_or_else(|e| panic!("transport error: {e}"))
}

fn www_authenticate(r: &Response) -> String {
    r.header("www-authenticate").unwrap_or_default().to_owned()
}

/// `header.payload` of a token, and a base64url encoder.
fn b64(s: &str) -> String {
    use std::fmt::Write as _;
    // A tiny base64url (no padding) for building attack tokens; the test has no base64 crate.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            let _ = write!(
                out,
                "{}",
                ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char
            );
        }
    }
    out
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn the_acceptance_table_through_real_envoy() {
    let (_upstream, envoy) = start(&inline_config());
    let valid = token("valid_rs256");
    let (input, signature) = valid.rsplit_once('.').unwrap();
    let payload = input.split('.').nth(1).unwrap();
    let alg_none = format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
    let alg_none_signed = format!("{}.{payload}.{signature}", b64(r#"{"alg":"none"}"#));
    let mut forged_sig = signature.to_owned();
    forged_sig.replace_range(
        10..14,
        if &signature[10..14] == "AAAA" {
            "BBBB"
        } else {
            "AAAA"
        },
    );
    let bad_signature = format!("{input}.{forged_sig}");

    struct Row {
        name: &'static str,
        path: &'static str,
        token: Option<String>,
        status: u16,
        www: Option<&'static str>,
    }
    let rows = [
        Row {
            name: "valid token",
            path: "/x",
            token: Some(valid.clone()),
            status: 200,
            www: None,
        },
        Row {
            name: "valid ES256 token",
            path: "/x",
            token: Some(token("valid_es256")),
            status: 200,
            www: None,
        },
        Row {
            name: "valid EdDSA token",
            path: "/x",
            token: Some(token("valid_eddsa")),
            status: 200,
            www: None,
        },
        Row {
            name: "no token",
            path: "/x",
            token: None,
            status: 401,
            www: Some("Bearer realm=\"palisade\""),
        },
        Row {
            name: "expired token",
            path: "/x",
            token: Some(token("expired")),
            status: 401,
            www: Some("error=\"invalid_token\", error_description=\"the token has expired\""),
        },
        Row {
            name: "wrong audience",
            path: "/x",
            token: Some(token("wrong_audience")),
            status: 403,
            www: Some("error=\"invalid_token\""),
        },
        Row {
            name: "bad signature",
            path: "/x",
            token: Some(bad_signature),
            status: 401,
            www: Some("error=\"invalid_token\""),
        },
        Row {
            name: "alg none",
            path: "/x",
            token: Some(alg_none),
            status: 401,
            www: Some("the token is not signed"),
        },
        Row {
            name: "alg none with a signature",
            path: "/x",
            token: Some(alg_none_signed),
            status: 401,
            www: Some("alg none"),
        },
        Row {
            name: "unknown kid",
            path: "/x",
            token: Some(token("unknown_kid")),
            status: 401,
            www: Some("key id"),
        },
        Row {
            name: "failed claim check",
            path: "/admin/x",
            token: Some(valid.clone()),
            status: 403,
            www: Some("error=\"insufficient_scope\""),
        },
        Row {
            name: "passing claim check",
            path: "/admin/x",
            token: Some(token("admin")),
            status: 200,
            www: None,
        },
        Row {
            name: "bypass rule",
            path: "/public/x",
            token: None,
            status: 200,
            www: None,
        },
    ];
    for row in &rows {
        let mut req = Request::get(&envoy.url(row.path)).header("x-jwt-sub", "mallory");
        if let Some(t) = &row.token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let r = send(req);
        assert_eq!(r.status, row.status, "{}: {}", row.name, r.body);
        let www = www_authenticate(&r);
        match row.www {
            Some(want) => assert!(www.contains(want), "{}: www-authenticate {www:?}", row.name),
            None => assert!(www.is_empty(), "{}: unexpected {www:?}", row.name),
        }
        if row.name == "no token" {
            assert!(
                !www.contains("error="),
                "a missing token carries no error: {www}"
            );
        }
        if r.status == 200 {
            // The spoofed claim header never reaches the upstream; verified ones do.
            let sub = r.echoed_header("x-jwt-sub");
            if row.token.is_some() {
                assert_eq!(sub.as_deref(), Some("alice"), "{}", row.name);
                assert_eq!(
                    r.echoed_header("x-jwt-roles").as_deref(),
                    Some("reader,writer")
                );
                assert!(r.echoed_header("x-jwt-payload").is_some());
                assert_eq!(
                    r.echoed_header("authorization"),
                    None,
                    "{}: token not stripped",
                    row.name
                );
            } else {
                assert_eq!(
                    sub, None,
                    "{}: spoofed header reached the upstream",
                    row.name
                );
            }
        }
    }
    // The payload header is the token's own payload segment. Two requests on one keep-alive
    // connection stay on one worker, so the second is served from that worker's cache.
    let connection = palisade_harness::client::agent();
    for _ in 0..2 {
        let r = bearer(&envoy, "/x", &valid).send_with(&connection).unwrap();
        assert_eq!(r.echoed_header("x-jwt-payload").as_deref(), Some(payload));
    }

    let stat = |s: &str| envoy.stat(&format!("wasmcustom.palisade.jwt_auth.{s}"));
    assert_eq!(stat("allowed"), 6);
    assert_eq!(stat("bypassed"), 1);
    assert_eq!(stat("denied.missing"), 1);
    assert_eq!(stat("denied.expired"), 1);
    assert_eq!(stat("denied.audience"), 1);
    assert_eq!(stat("denied.bad_signature"), 1);
    assert_eq!(stat("denied.malformed"), 2);
    assert_eq!(stat("denied.unknown_kid"), 1);
    assert_eq!(stat("denied.claims"), 1);
    assert!(
        stat("cache_hits") >= 1,
        "the repeated valid token was verified again"
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_repeated_token_is_served_from_each_workers_cache() {
    let (upstream, envoy) = start(&inline_config());
    let valid = token("valid_rs256");
    let results = parallel(8, 200, |_| bearer(&envoy, "/c", &valid));
    assert_eq!(status_counts(&results).get(&200), Some(&200));
    assert_eq!(upstream.stats().hits, 200);
    assert!(
        envoy.worker_connections().iter().all(|c| *c > 0),
        "{:?}",
        envoy.worker_connections()
    );
    // At most one RSA verification per worker: everything else hits that worker's cache.
    let hits = envoy.stat("wasmcustom.palisade.jwt_auth.cache_hits");
    assert!(hits >= 198, "cache hits {hits}");
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_malformed_config_is_rejected_naming_the_field() {
    let mut bad = inline_config();
    bad["providers"][0]["algorithms"] = json!(["RS256", "none"]);
    let yaml = Bootstrap::new()
        .filter(Filter::wasm("jwt_auth", &bad))
        .render(1);
    let err = Envoy::start(&yaml)
        .err()
        .expect("Envoy must refuse the config");
    assert!(
        err.log
            .contains("config field `providers[0].algorithms[1]`: invalid value \"none\""),
        "{}",
        err.log
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn the_shipped_example_accepts_the_demo_token() {
    let upstream = start_upstream();
    let yaml = render_example(&repo_root().join("envoy/jwt_auth.yaml"), upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let demo = std::fs::read_to_string(repo_root().join("envoy/jwt_auth.token")).unwrap();
    let r = send(bearer(&envoy, "/", demo.trim()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echoed_header("x-jwt-sub").as_deref(), Some("demo-user"));
    assert_eq!(send(Request::get(&envoy.url("/"))).status, 401);
    assert_eq!(send(bearer(&envoy, "/", &token("valid_rs256"))).status, 401);
}

/// A JWKS server for the remote tests: serves whatever body it currently holds (or a status),
/// counts requests, one connection per request.
struct JwksServer {
    port: u16,
    body: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicU64>,
    /// While closed, requests are held (counted, not answered).
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl JwksServer {
    fn start(body: &str) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new((200u16, body.to_owned())));
        let hits = Arc::new(AtomicU64::new(0));
        let gate = Arc::new((Mutex::new(true), std::sync::Condvar::new()));
        let (s, h, g) = (Arc::clone(&state), Arc::clone(&hits), Arc::clone(&gate));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let (open, cv) = &*g;
                let mut is_open = open.lock().unwrap();
                while !*is_open {
                    is_open = cv.wait(is_open).unwrap();
                }
                drop(is_open);
                let (status, body) = s.lock().unwrap().clone();
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        JwksServer {
            port,
            body: state,
            hits,
            gate,
        }
    }

    fn hold(&self, held: bool) {
        let (open, cv) = &*self.gate;
        *open.lock().unwrap() = !held;
        cv.notify_all();
    }

    fn serve(&self, status: u16, body: &str) {
        *self.body.lock().unwrap() = (status, body.to_owned());
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Envoy with a remote-JWKS provider whose cluster `jwks` points at `server`.
fn start_remote(server: &JwksServer, remote: Value) -> (palisade_harness::Upstream, Envoy) {
    start_remote_with(
        server,
        remote,
        json!({"action": "pause", "max_wait": "10s"}),
    )
}

fn start_remote_with(
    server: &JwksServer,
    remote: Value,
    keys_unavailable: Value,
) -> (palisade_harness::Upstream, Envoy) {
    let mut remote = remote;
    remote["cluster"] = json!("jwks");
    remote["uri"] = json!("http://jwks.test/.well-known/jwks.json");
    let config = json!({
        "providers": [provider(json!({"remote": remote}))],
        "rules": [{"providers": ["main"]}],
        "keys_unavailable": keys_unavailable
    });
    let upstream = start_upstream();
    let mut yaml = Bootstrap::new()
        .filter(Filter::wasm("jwt_auth", &config))
        .route(Route::backend("all", "/"))
        .render(upstream.port());
    yaml.push_str(&format!(
        r#"  - name: jwks
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: jwks
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {} }}
"#,
        server.port
    ));
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    (upstream, envoy)
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn one_remote_fetch_serves_both_workers_and_early_requests_wait_for_it() {
    let server = JwksServer::start(&jwks().to_string());
    let (_upstream, envoy) = start_remote(&server, json!({"cache_duration": "10m"}));
    let valid = token("valid_rs256");
    // Requests from the first moment on: those that arrive before the keys are paused, then
    // resumed on their own worker once the key set is published.
    let results = parallel(8, 80, |_| bearer(&envoy, "/r", &valid));
    assert_eq!(
        status_counts(&results).get(&200),
        Some(&80),
        "{:?}",
        status_counts(&results)
    );
    assert!(
        envoy.worker_connections().iter().all(|c| *c > 0),
        "{:?}",
        envoy.worker_connections()
    );
    assert_eq!(server.hits(), 1, "both workers must share one fetch");
    assert_eq!(
        envoy.stat("wasmcustom.palisade.jwt_auth.jwks_fetch.success"),
        1
    );
    // A token signed by a key the set does not have is still refused.
    assert_eq!(send(bearer(&envoy, "/r", &token("rotated"))).status, 401);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_key_rotation_is_picked_up_after_the_refresh() {
    let server = JwksServer::start(&jwks().to_string());
    let (_upstream, envoy) = start_remote(&server, json!({"cache_duration": "2s"}));
    assert_eq!(
        send(bearer(&envoy, "/r", &token("valid_rs256"))).status,
        200
    );
    server.serve(200, &testdata("jwks_rotated.json"));
    // Polling with the old token never asks for a refetch while it is accepted, so only the
    // periodic refresh (80 % of 2 s, then a 250 ms tick) can make it fail: the old key is gone,
    // its cached verification too.
    wait_for("the refreshed key set", Duration::from_secs(15), || {
        (send(bearer(&envoy, "/r", &token("valid_rs256"))).status == 401).then_some(())
    });
    // The new key is accepted (on every worker, within a tick).
    wait_for(
        "the rotated key on every worker",
        Duration::from_secs(5),
        || {
            let results = parallel(4, 8, |_| bearer(&envoy, "/r", &token("rotated")));
            (status_counts(&results).get(&200) == Some(&8)).then_some(())
        },
    );
    assert!(server.hits() >= 2);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn an_unknown_kid_triggers_one_rate_limited_refetch() {
    let server = JwksServer::start(&jwks().to_string());
    let (_upstream, envoy) = start_remote(
        &server,
        json!({"cache_duration": "1h", "min_refetch_interval": "1h"}),
    );
    assert_eq!(
        send(bearer(&envoy, "/r", &token("valid_rs256"))).status,
        200
    );
    assert_eq!(server.hits(), 1);
    // The provider adds a key; a token signed by it arrives before any scheduled refresh.
    let mut both = jwks();
    let rotated: Value = serde_json::from_str(&testdata("jwks_rotated.json")).unwrap();
    both["keys"]
        .as_array_mut()
        .unwrap()
        .push(rotated["keys"][0].clone());
    server.serve(200, &both.to_string());
    assert_eq!(send(bearer(&envoy, "/r", &token("rotated"))).status, 401);
    wait_for("the refetched key set", Duration::from_secs(10), || {
        (send(bearer(&envoy, "/r", &token("rotated"))).status == 200).then_some(())
    });
    assert_eq!(server.hits(), 2);
    // A flood of unknown kids does not make the plugin hammer the JWKS server.
    let deferred = "wasmcustom.palisade.jwt_auth.jwks_fetch.refetch_deferred";
    let before = envoy.stat(deferred);
    let results = parallel(4, 40, |_| bearer(&envoy, "/r", &token("unknown_kid")));
    assert_eq!(status_counts(&results).get(&401), Some(&40));
    // Each worker that saw one asks for a refetch on its next 250 ms tick; the ticks decline it
    // (counted). Four declines after the flood: every worker has ticked since, and none fetched.
    wait_for(
        "ticks to decline the refetch",
        Duration::from_secs(10),
        || (envoy.stat(deferred) >= before + 4).then_some(()),
    );
    assert_eq!(server.hits(), 2);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_failing_jwks_server_keeps_the_last_good_keys() {
    let server = JwksServer::start(&jwks().to_string());
    let (_upstream, envoy) = start_remote(&server, json!({"cache_duration": "1s"}));
    assert_eq!(
        send(bearer(&envoy, "/r", &token("valid_rs256"))).status,
        200
    );
    server.serve(500, "down");
    wait_for("a failed refresh", Duration::from_secs(10), || {
        (envoy.stat("wasmcustom.palisade.jwt_auth.jwks_fetch.failure") >= 2).then_some(())
    });
    assert_eq!(
        send(bearer(&envoy, "/r", &token("valid_es256"))).status,
        200
    );
    // Backoff: failures are spaced out (1 s, 2 s, ...), not one per tick.
    let failures = envoy.stat("wasmcustom.palisade.jwt_auth.jwks_fetch.failure");
    assert!(failures <= 4, "{failures} failures: no backoff?");
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_request_before_the_first_key_set_waits_for_it_then_proceeds() {
    let server = JwksServer::start(&jwks().to_string());
    server.hold(true);
    let (_upstream, envoy) =
        start_remote(&server, json!({"cache_duration": "10m", "timeout": "20s"}));
    wait_for("the JWKS fetch to start", Duration::from_secs(10), || {
        (server.hits() == 1).then_some(())
    });
    let valid = token("valid_rs256");
    let url = envoy.url("/w");
    let waiting = std::thread::spawn(move || {
        Request::get(&url)
            .header("authorization", &format!("Bearer {valid}"))
            .send()
            .map(|r| r.status)
    });
    wait_for("the request to be paused", Duration::from_secs(10), || {
        (envoy.stat("wasmcustom.palisade.jwt_auth.paused") == 1).then_some(())
    });
    server.hold(false);
    assert_eq!(waiting.join().unwrap(), Ok(200));
    assert_eq!(envoy.stat("wasmcustom.palisade.jwt_auth.allowed"), 1);
    assert_eq!(envoy.stat("wasmcustom.palisade.jwt_auth.pause_timeouts"), 0);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn without_keys_a_request_is_rejected_at_once_or_after_the_bounded_wait() {
    let server = JwksServer::start("");
    server.serve(503, "down");
    let (_u1, reject) = start_remote_with(&server, json!({}), json!({"action": "reject"}));
    let r = send(bearer(&reject, "/n", &token("valid_rs256")));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        reject.stat("wasmcustom.palisade.jwt_auth.denied.no_keys"),
        1
    );
    drop(reject);

    let (_u2, pause) = start_remote_with(
        &server,
        json!({}),
        json!({"action": "pause", "max_wait": "1s"}),
    );
    let started = std::time::Instant::now();
    let r = send(bearer(&pause, "/n", &token("valid_rs256")));
    assert_eq!(r.status, 503);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "waited {waited:?}"
    );
    assert_eq!(pause.stat("wasmcustom.palisade.jwt_auth.pause_timeouts"), 1);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn tokens_from_query_and_cookie_are_removed_before_the_upstream_and_two_tokens_are_400() {
    let mut config = inline_config();
    config["providers"][0]["from_headers"] =
        json!([{"name": "authorization", "prefix": "Bearer "}]);
    config["providers"][0]["from_params"] = json!(["access_token"]);
    config["providers"][0]["from_cookies"] = json!(["session"]);
    let (_upstream, envoy) = start(&config);
    let valid = token("valid_es256");

    let r = send(Request::get(
        &envoy.url(&format!("/q?a=1&access_token={valid}&b=%2F")),
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let echoed = r.json();
    assert_eq!(echoed["path"], "/q", "{echoed}");
    assert_eq!(echoed["query"], "a=1&b=%2F", "{echoed}");
    assert_eq!(r.echoed_header("x-jwt-sub").as_deref(), Some("alice"));

    let r = send(
        Request::get(&envoy.url("/c")).header("cookie", &format!("theme=dark; session={valid}")),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echoed_header("cookie").as_deref(), Some("theme=dark"));

    // Two different tokens: RFC 6750 invalid_request.
    let r = send(bearer(
        &envoy,
        &format!("/q?access_token={}", token("valid_eddsa")),
        &valid,
    ));
    assert_eq!(r.status, 400);
    assert!(www_authenticate(&r).contains("error=\"invalid_request\""));
    // The same token twice is one token.
    let r = send(bearer(&envoy, &format!("/q?access_token={valid}"), &valid));
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed_header("authorization"), None);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_signature_of_the_wrong_length_is_401_and_every_vm_keeps_serving() {
    // Found by the `jwt_verify` fuzz target: jwt-compact panicked on an EdDSA or HMAC signature
    // of the wrong length, so one unauthenticated request aborted its worker's VM.
    let (_upstream, envoy) = start(&inline_config());
    let valid = token("valid_eddsa");
    let (input, _) = valid.rsplit_once('.').unwrap();
    for len in [1, 63, 65, 128] {
        let forged = format!("{input}.{}", b64(&"x".repeat(len)));
        for _ in 0..4 {
            // A new connection each time, so both workers see it.
            let r = send(bearer(&envoy, "/r", &forged));
            assert_eq!(r.status, 401, "{len}-byte signature: {r:?}");
            assert!(www_authenticate(&r).contains("invalid_token"), "{r:?}");
        }
    }
    let results = parallel(4, 16, |_| bearer(&envoy, "/r", &valid));
    assert_eq!(status_counts(&results).get(&200), Some(&16));
    assert_eq!(
        envoy.stat("wasmcustom.palisade.jwt_auth.denied.bad_signature"),
        16
    );
    envoy.assert_no_vm_failures();
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn two_lines_of_a_token_header_are_400_whether_envoy_joins_them_or_not() {
    // Envoy joins two `Authorization` lines into one value with `,` (an inline header); a custom
    // header keeps its lines apart, and the single-value hostcall sees only the first. Both are
    // one header location holding two tokens: 400 invalid_request (issue 15: they were 401, or
    // the second token was never seen).
    let mut config = inline_config();
    config["providers"][0]["from_headers"] =
        json!([{"name": "authorization", "prefix": "Bearer "}, {"name": "x-token"}]);
    let (_upstream, envoy) = start(&config);
    let (a, b) = (token("valid_es256"), token("valid_eddsa"));
    let status = |lines: &[String]| {
        let mut req = "GET /t HTTP/1.1\r\nhost: jwt.test\r\n".to_owned();
        for line in lines {
            req.push_str(line);
            req.push_str("\r\n");
        }
        req.push_str("connection: close\r\n\r\n");
        palisade_harness::client::raw_status(envoy.listener_port(), req.as_bytes()).unwrap()
    };
    for header in ["authorization: Bearer", "x-token:"] {
        let line = |t: &str| format!("{header} {t}");
        assert_eq!(status(&[line(&a)]), 200, "{header}");
        assert_eq!(status(&[line(&a), line(&b)]), 400, "{header}, two tokens");
        assert_eq!(
            status(&[line(&a), line(&a)]),
            400,
            "{header}, one token twice"
        );
    }
    // The same token in two different locations is one token.
    assert_eq!(
        status(&[
            format!("authorization: Bearer {a}"),
            format!("x-token: {a}")
        ]),
        200
    );
    assert_eq!(
        envoy.stat("wasmcustom.palisade.jwt_auth.denied.malformed"),
        4
    );
}
