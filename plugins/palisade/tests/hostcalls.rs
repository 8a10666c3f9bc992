//! What one request through the whole chain asks of the proxy: every hostcall, counted against
//! `FakeHost`, for the benchmark's five-policy allow path. Hostcalls are most of a Wasm filter's
//! cost per request, so this is the chain's cost model in a form that cannot be noisy: a change
//! that adds a hostcall to the hot path fails here, and the table printed says where they go. The
//! same holds for each policy alone, loaded as its standalone module loads it (`load_one`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_core::fake_host::FakeHost;
use palisade_core::plugin::host::HostRef;
use palisade_core::plugin::load_chain;
use palisade_core::plugin::runtime::{with_chain, Action, Chain};
use serde_json::{json, Value};
use std::path::Path;
use std::rc::Rc;

fn testdata(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../jwt_auth/testdata")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The bench's allow-path configs (tests/bench/src/cases.rs, `suite_configs`).
fn suite() -> Value {
    json!({"chain": [
        {"jwt_auth": {"providers": [{"name": "main", "issuer": "https://issuer.test",
            "audiences": ["api"], "jwks": {"inline": testdata("jwks.json")}, "forward": true}],
            "rules": [{"providers": ["main"]}]}},
        {"rate_limit": {"rules": [{"name": "bench", "key": ["client_ip"],
            "limits": [{"capacity": 1_000_000_000u64, "refill": 1_000_000_000u64, "period": "1s"}]}]}},
        {"circuit_breaker": {"rules": [{"name": "bench", "key": {"constant": "bench"}}]}},
        {"bulkhead": {"rules": [{"name": "bench", "max_concurrent": 1_000_000}]}},
        {"transform": {"rules": [{"name": "bench", "request": {
            "headers": {"remove": ["x-bench-remove"],
                "set": [{"name": "x-bench-set-1", "value": "one"},
                        {"name": "x-bench-set-2", "value": "two"},
                        {"name": "x-bench-set-3", "value": "three"}],
                "append": [{"name": "x-bench-append", "value": "four"}]},
            "query": {"set": [{"name": "page", "value": "1"}]}}}]}}
    ]})
}

/// Run one request (request headers, response headers, stream end) and return the hostcalls it
/// made, by operation.
fn one_request(
    fake: &FakeHost,
    runtime: &Rc<palisade_core::plugin::runtime::Runtime>,
    id: u32,
    token: &str,
) -> Vec<(&'static str, usize)> {
    let before = fake.hostcall_counts();
    let bearer = format!("Bearer {token}");
    fake.open_stream(
        id,
        &[
            (":method", "GET"),
            (":path", "/bench?page=2"),
            (":authority", "bench"),
            ("authorization", &bearer),
            ("user-agent", "bench"),
            ("x-bench-remove", "1"),
        ],
    );
    fake.set_stream_property(id, &["source", "address"], "192.0.2.10:51234");
    let chain = runtime.stream(id);
    let run = |f: &dyn Fn(&mut Chain) -> Action| {
        fake.enter(id);
        with_chain(&chain, |c| f(c)).unwrap()
    };
    assert_eq!(
        run(&|c| c.on_request_headers(true)),
        Action::Continue,
        "{:?}",
        fake.reply_of(id)
    );
    fake.set_response(id, &[(":status", "200")]);
    assert_eq!(run(&|c| c.on_response_headers(true)), Action::Continue);
    run(&|c| {
        c.end();
        Action::Continue
    });
    fake.close_stream(id);
    let after = fake.hostcall_counts();
    after
        .into_iter()
        .filter_map(|(op, n)| {
            let was = before.iter().find(|(o, _)| *o == op).map_or(0, |(_, n)| *n);
            (n > was).then_some((op, n - was))
        })
        .collect()
}

#[test]
fn a_request_through_the_five_policy_chain_stays_within_its_hostcall_budget() {
    let fake = Rc::new(FakeHost::new());
    let host: HostRef = fake.clone();
    let runtime = load_chain(
        &host,
        &palisade::KINDS,
        suite().to_string().as_bytes(),
        "bench",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let token = testdata("e2e_tokens.json")["valid_rs256"]
        .as_str()
        .unwrap()
        .to_owned();
    // The first request verifies the token and claims the bulkhead's worker slot; measure the
    // steady state after it.
    one_request(&fake, &runtime, 1, &token);
    let calls = one_request(&fake, &runtime, 2, &token);
    let total: usize = calls.iter().map(|(_, n)| n).sum();
    eprintln!("hostcalls of one request through the chain ({total} in all):");
    for (op, n) in &calls {
        eprintln!("  {op:>20} {n}");
    }
    let count = |op: &str| calls.iter().find(|(o, _)| *o == op).map_or(0, |(_, n)| *n);
    // One clock read per host callback at most (request headers, response headers, end).
    assert!(count("now") <= 3, "{calls:?}");
    // The request's header map is read once, at the first lookup, and serves every policy; the
    // one single lookup left is `authorization`... no: it is served too; the single `header`
    // call is the response's `:status` (the breaker's outcome). The client address is read once.
    assert_eq!(count("headers"), 1, "{calls:?}");
    assert_eq!(count("header"), 1, "{calls:?}");
    assert_eq!(count("property"), 1, "{calls:?}");
    // The budget as of this change; lower it when a change saves calls, never raise it silently.
    assert!(total <= 29, "{total} hostcalls per request: {calls:?}");
}

/// Every policy alone, as its standalone module runs it (`load_one`: single header lookups, no
/// whole-map read), on the bench's allow path: the hostcalls of one steady-state request, by
/// operation. Exact, so that a change that saves a call updates this table as surely as one that
/// adds a call fails it. BENCHMARKS.md prices them: a shared-data call about 1.5 µs, a header write
/// 0.4 µs, a counter increment 0.1 µs.
#[test]
fn each_standalone_policy_makes_the_hostcalls_of_its_budget_and_no_more() {
    let budgets: [(&str, &[(&str, usize)]); 5] = [
        // The token's header, the clock (cache expiry); `allowed` and `cache_hits` counted.
        (
            "jwt_auth",
            &[("header", 1), ("increment_metric", 2), ("now", 1)],
        ),
        // The client address; the bucket read and written back (one CAS).
        (
            "rate_limit",
            &[
                ("increment_metric", 1),
                ("now", 1),
                ("property", 1),
                ("set_shared_data", 1),
                ("shared_data", 1),
            ],
        ),
        // Admission reads the breaker; the outcome (`:status`, the call's duration) is one read
        // and one CAS at the stream's end.
        (
            "circuit_breaker",
            &[
                ("header", 1),
                ("increment_metric", 1),
                ("now", 2),
                ("set_shared_data", 1),
                ("shared_data", 2),
            ],
        ),
        // The permit taken (read + CAS) and given back (read + CAS); admitted, released and the
        // in-flight gauge up and down.
        (
            "bulkhead",
            &[
                ("increment_metric", 4),
                ("set_shared_data", 2),
                ("shared_data", 2),
            ],
        ),
        // One map read for 5 header operations and the query rewrite of `:path`.
        (
            "transform",
            &[
                ("headers", 1),
                ("increment_metric", 1),
                ("remove_header", 1),
                ("replace_header", 5),
            ],
        ),
    ];
    let suite = suite();
    let token = testdata("e2e_tokens.json")["valid_rs256"]
        .as_str()
        .unwrap()
        .to_owned();
    let entries = suite["chain"].as_array().unwrap();
    assert_eq!(entries.len(), palisade::KINDS.len());
    for (kind, entry) in palisade::KINDS.iter().zip(entries) {
        let fake = Rc::new(FakeHost::new());
        let host: HostRef = fake.clone();
        let config = entry[kind.name].to_string();
        let runtime = palisade_core::plugin::load_one(&host, kind, config.as_bytes(), "bench")
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name));
        one_request(&fake, &runtime, 1, &token);
        let calls = one_request(&fake, &runtime, 2, &token);
        let (_, budget) = budgets
            .iter()
            .find(|(name, _)| *name == kind.name)
            .unwrap_or_else(|| panic!("no hostcall budget for {}", kind.name));
        let budget: Vec<(&str, usize)> = budget.to_vec();
        assert_eq!(calls, budget, "hostcalls of one {} request", kind.name);
    }
}
