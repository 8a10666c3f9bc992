//! The demo's walk-through (`scripts/walkthrough.txt`, printed by `make demo` and
//! `make demo-compose`) run as assertions, against any Envoy running `envoy/demo.yaml` or its
//! compose twin: the native demo test and the compose test both call [`assert_walkthrough`], so
//! what the walk-through promises is what both deployments are checked to do.
//!
//! The steps run in the walk-through's order. The circuit breaker comes last: once open it
//! fails every request to the backend fast for 5 s, which would mask the steps after it.

use crate::client::{self, Request};
use crate::repo_root;

/// A demo Envoy to walk through: its listener and admin base URLs (`http://host:port`).
#[derive(Debug, Clone)]
pub struct DemoTarget {
    pub base: String,
    pub admin: String,
    /// The upstream cluster's name: `backend` in `envoy/demo.yaml`; under Istio, e.g.
    /// `outbound|8080||backend.shop.svc.cluster.local`.
    pub cluster: String,
    /// What decides rate_limit's `across_envoys` rule (under /global).
    pub global: Global,
}

/// Who counts the demo's global limit (4 per 10 s for everyone, under /global).
#[derive(Debug, Clone)]
pub enum Global {
    /// No rate limit service answers: the rule's own local bucket decides (`on_error: local`).
    Fallback,
    /// The engine answers, and a second Envoy of the demo (listener and admin base URLs) shares
    /// it: requests alternating between the two are counted once.
    SharedWith { peer: String, peer_admin: String },
}

impl DemoTarget {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A counter from the admin `/stats`; an unknown name is an error, not 0.
    fn stat(&self, name: &str) -> u64 {
        admin_stat(&self.admin, name)
    }
}

/// A counter from the admin `/stats` at `admin`; an unknown name is an error, not 0.
fn admin_stat(admin: &str, name: &str) -> u64 {
    let escaped: String = name
        .chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect();
    let filter: String =
        form_urlencoded::byte_serialize(format!("^{escaped}$").as_bytes()).collect();
    let body = client::get(&format!("{admin}/stats?filter={filter}"))
        .unwrap_or_else(|e| panic!("GET /stats: {e}"))
        .body;
    body.lines()
        .find_map(|l| {
            let (n, v) = l.rsplit_once(": ")?;
            (n == name).then(|| v.trim().parse::<u64>().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("stat {name} not found in /stats: {body}"))
}

/// The demo JWT (`make -s token`), as an `Authorization` value.
pub fn demo_bearer() -> String {
    let token = std::fs::read_to_string(repo_root().join("envoy/jwt_auth.token"))
        .unwrap_or_else(|e| panic!("read envoy/jwt_auth.token: {e}"));
    format!("Bearer {}", token.trim())
}

/// Every step of the walk-through, asserted.
pub fn assert_walkthrough(demo: &DemoTarget) {
    let send = |r: Request| r.send().unwrap_or_else(|e| panic!("request failed: {e}"));
    let bearer = demo_bearer();

    // The echo upstream shows what reached it (through the whole chain: nothing on / stops it).
    let open = send(Request::get(&demo.url("/hello?x=1")));
    assert_eq!(open.status, 200, "{}", open.body);
    assert_eq!(open.json()["path"], "/hello", "{}", open.body);
    assert_eq!(open.json()["query"], "x=1", "{}", open.body);

    // jwt_auth: /secure needs a token; /admin needs the admin scope.
    let denied = send(Request::get(&demo.url("/secure")));
    assert_eq!(denied.status, 401);
    let challenge = denied.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"palisade-demo\""),
        "{challenge}"
    );
    let ok = send(Request::get(&demo.url("/secure")).header("authorization", &bearer));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.echoed_header("x-jwt-sub").as_deref(), Some("demo-user"));
    let admin = send(Request::get(&demo.url("/admin")).header("authorization", &bearer));
    assert_eq!(admin.status, 403);

    // rate_limit: a burst of 5 under /limited, then 429 with Retry-After and RateLimit-*.
    let limited: Vec<_> = (0..7)
        .map(|_| send(Request::get(&demo.url("/limited"))))
        .collect();
    let statuses: Vec<u16> = limited.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429]);
    let over = &limited[6];
    let retry_after: u64 = over
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric retry-after: {:?}", over.headers));
    assert!(retry_after >= 1, "retry-after {retry_after}");
    assert_eq!(over.header("ratelimit-limit"), Some("5"));
    assert_eq!(over.header("ratelimit-remaining"), Some("0"));
    assert!(
        over.header("ratelimit-reset").is_some(),
        "{:?}",
        over.headers
    );
    assert!(
        over.header("ratelimit-policy").is_some(),
        "{:?}",
        over.headers
    );

    // rate_limit shape: under /shaped, 5 per second and no burst; the excess waits for its slot
    // (up to 1 s): of 8 at once, the first goes at once, 5 wait 0.2 … 1 s, 2 get 429.
    let shaped = client::parallel(8, 8, |_| Request::get(&demo.url("/shaped")));
    assert_eq!(
        client::status_counts(&shaped),
        [(200, 6), (429, 2)].into_iter().collect(),
        "shaped statuses"
    );
    for r in shaped.iter().flatten().filter(|r| r.status == 429) {
        assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        assert_eq!(r.header("ratelimit-limit"), Some("1"));
    }

    assert_global_step(demo);

    // bulkhead: 2 in flight at most, waiting up to 250 ms; 6 slow requests at once: 2 get 200,
    // the 4 others wait in vain and get 503 `expired`.
    let slow = client::parallel(6, 6, |_| {
        Request::get(&demo.url("/slow")).header("x-upstream-delay-ms", "1500")
    });
    let counts = client::status_counts(&slow);
    assert_eq!(
        counts,
        [(200, 2), (503, 4)].into_iter().collect(),
        "bulkhead statuses"
    );
    for r in slow.iter().flatten().filter(|r| r.status == 503) {
        assert_eq!(r.header("x-palisade-bulkhead"), Some("expired"));
    }

    // bulkhead priorities: `x-priority: low` may use only 1 of the 2 permits; 3 slow low requests
    // at once: 1 gets 200, 2 wait in vain and get 503 `expired`. (Once the permits above are back.)
    let in_flight = "wasmcustom.palisade.bulkhead.backend.in_flight";
    crate::wait_for(
        "the bulkhead's permits back",
        std::time::Duration::from_secs(10),
        || (demo.stat(in_flight) == 0).then_some(()),
    );
    let low = client::parallel(3, 3, |_| {
        Request::get(&demo.url("/slow"))
            .header("x-priority", "low")
            .header("x-upstream-delay-ms", "1500")
    });
    assert_eq!(
        client::status_counts(&low),
        [(200, 1), (503, 2)].into_iter().collect(),
        "bulkhead low-priority statuses"
    );
    for r in low.iter().flatten().filter(|r| r.status == 503) {
        assert_eq!(r.header("x-palisade-bulkhead"), Some("expired"));
    }

    // transform: path, headers, query and JSON body rewritten on the way in; the response too.
    let r = send(
        Request::new("POST", &demo.url("/v1/users/42?debug=1"))
            .header("content-type", "application/json")
            .header("x-internal-secret", "1")
            .body(r#"{"name": "ada", "password": "hunter2"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-palisade-transformed"), Some("true"));
    let echo = r.json();
    assert_eq!(echo["path"], "/v2/users/42");
    assert_eq!(echo["args"]["api_version"], "2");
    assert!(echo["args"].get("debug").is_none(), "{echo}");
    assert_eq!(echo["headers"]["x-user-id"], "42");
    assert!(echo["headers"]["x-client-ip"].is_string(), "{echo}");
    assert!(echo["headers"].get("x-internal-secret").is_none(), "{echo}");
    assert_eq!(echo["body_json"]["name"], "ada");
    assert_eq!(echo["body_json"]["source"], "gateway");
    assert!(echo["body_json"].get("password").is_none(), "{echo}");
    assert_eq!(echo["gateway"]["rule"], "users_v1_to_v2");

    // circuit_breaker: five upstream failures open it; the next request fails fast, unsent.
    for _ in 0..5 {
        let r = send(Request::get(&demo.url("/fail")).header("x-upstream-status", "503"));
        assert_eq!(r.status, 503);
    }
    let rq_total = format!("cluster.{}.upstream_rq_total", demo.cluster);
    let sent = demo.stat(&rq_total);
    let fast = send(Request::get(&demo.url("/")));
    assert_eq!(fast.status, 503);
    assert_eq!(fast.header("x-palisade-circuit"), Some("open"));
    assert!(fast.header("retry-after").is_some(), "{:?}", fast.headers);
    assert_eq!(
        demo.stat(&rq_total),
        sent,
        "an open breaker sends nothing upstream"
    );
}

/// The global step: under /global, 4 requests per 10 s for everyone. With the engine shared by
/// two Envoys, 6 requests alternating between them give 4 x 200 then 429 (each Envoy's own
/// bucket would have let all 6 through: 3 each); with no engine, this Envoy's bucket decides.
fn assert_global_step(demo: &DemoTarget) {
    let send = |r: Request| r.send().unwrap_or_else(|e| panic!("request failed: {e}"));
    let rule = "wasmcustom.palisade.rate_limit.across_envoys";
    match &demo.global {
        Global::SharedWith { peer, peer_admin } => {
            let bases = [demo.base.as_str(), peer.as_str()];
            let replies: Vec<_> = (0..6)
                .map(|i| send(Request::get(&format!("{}/global", bases[i % 2]))))
                .collect();
            let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
            assert_eq!(
                statuses,
                vec![200, 200, 200, 200, 429, 429],
                "alternating between the two Envoys: one count of 4"
            );
            for over in &replies[4..] {
                // The seconds left in the engine's 10 s window (its X-RateLimit-Reset).
                let retry_after: u64 = over
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("429 without retry-after: {:?}", over.headers));
                assert!((1..=10).contains(&retry_after), "{:?}", over.headers);
                assert_eq!(
                    over.header("x-ratelimit-reset"),
                    Some(retry_after.to_string().as_str()),
                    "{:?}",
                    over.headers
                );
                // The engine's own headers (limitador's DRAFT_VERSION_03), passed on.
                assert_eq!(
                    over.header("x-ratelimit-remaining"),
                    Some("0"),
                    "{:?}",
                    over.headers
                );
            }
            for admin in [demo.admin.as_str(), peer_admin.as_str()] {
                assert_eq!(
                    admin_stat(admin, &format!("{rule}.global_ok")),
                    2,
                    "{admin}"
                );
                assert_eq!(
                    admin_stat(admin, &format!("{rule}.global_over_limit")),
                    1,
                    "{admin}"
                );
                assert_eq!(
                    admin_stat(admin, &format!("{rule}.global_fallback_local")),
                    0,
                    "{admin}"
                );
            }
        }
        Global::Fallback => {
            let statuses: Vec<u16> = (0..6)
                .map(|_| send(Request::get(&demo.url("/global"))).status)
                .collect();
            assert_eq!(
                statuses,
                vec![200, 200, 200, 200, 429, 429],
                "no engine: the local bucket of 4"
            );
            assert_eq!(demo.stat(&format!("{rule}.global_fallback_local")), 6);
            assert_eq!(demo.stat(&format!("{rule}.global_ok")), 0);
        }
    }
}
