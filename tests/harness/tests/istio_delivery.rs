//! Istio's delivery of WasmPlugins reproduced through real Envoy (`make e2e`): the bootstrap and
//! the file-based ECDS resources are generated from the `deploy/istio` manifests themselves, as
//! istiod and istio-agent configure a proxy (`palisade_harness::istio::ecds`), in both of Istio's
//! filter-name forms, with Istio's cluster names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::client::{self, Request, Response};
use palisade_harness::demo::{assert_walkthrough, demo_bearer, DemoTarget};
use palisade_harness::istio::ecds::{Code, Form, IstioProxy, StaticServer};
use palisade_harness::istio::oci::sha256_hex;
use palisade_harness::istio::WasmPlugin;
use palisade_harness::{repo_root, start_upstream, wait_for, wasm_module, Envoy, Upstream};
use serde_json::{json, Value};
use std::time::Duration;

/// Istio's inbound cluster for port 8080 (what `match: [{mode: SERVER, ports: [8080]}]` selects).
const INBOUND: &str = "inbound|8080||";
/// The gateway's cluster for the `backend` Service, port 8080.
const OUTBOUND: &str = "outbound|8080||backend.shop.svc.cluster.local";

fn manifest(file: &str) -> Vec<WasmPlugin> {
    WasmPlugin::load_file(&repo_root().join("deploy/istio").join(file)).unwrap()
}

fn one(module: &str) -> WasmPlugin {
    manifest(&format!("{module}.yaml")).remove(0)
}

/// `p` with `pluginConfig` replaced (None: removed).
fn with_config(p: &WasmPlugin, config: Option<Value>) -> WasmPlugin {
    let mut doc = p.document.clone();
    let spec = doc["spec"].as_object_mut().unwrap();
    match config {
        Some(c) => spec.insert("pluginConfig".to_owned(), c),
        None => spec.remove("pluginConfig"),
    };
    WasmPlugin::from_document(doc, &p.origin).unwrap()
}

/// `p` renamed (another WasmPlugin of the same module).
fn renamed(p: &WasmPlugin, name: &str) -> WasmPlugin {
    let mut doc = p.document.clone();
    doc["metadata"]["name"] = json!(name);
    WasmPlugin::from_document(doc, &format!("{}:{name}", p.origin)).unwrap()
}

fn start(form: Form, plugins: Vec<WasmPlugin>, cluster: &str) -> (Upstream, IstioProxy, Envoy) {
    let upstream = start_upstream();
    let proxy = IstioProxy::new(form, plugins);
    let yaml = proxy.bootstrap(cluster, &[], upstream.port());
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}\n--- bootstrap ---\n{yaml}"));
    (upstream, proxy, envoy)
}

fn send(r: Request) -> Response {
    r.send().unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// Wait until Envoy has applied `n` updates of `p`'s filter config in total.
fn wait_reloads(envoy: &Envoy, proxy: &IstioProxy, p: &WasmPlugin, n: u64) {
    let stat = proxy.ecds_stat(p, "config_reload");
    wait_for(&format!("{stat} = {n}"), Duration::from_secs(20), || {
        (envoy.stat_or_zero(&stat) >= n).then_some(())
    });
}

fn wait_fails(envoy: &Envoy, proxy: &IstioProxy, p: &WasmPlugin, n: u64) {
    let stat = proxy.ecds_stat(p, "config_fail");
    wait_for(&format!("{stat} = {n}"), Duration::from_secs(20), || {
        (envoy.stat_or_zero(&stat) >= n).then_some(())
    });
}

/// What each module does, checked as in its native end-to-end test.
fn acts_as_natively(module: &str, envoy: &Envoy) {
    let url = |p: &str| envoy.url(p);
    match module {
        "rate_limit" => {
            // A burst of 5 (refill 1/s): the first five pass, then 429 with Retry-After.
            let statuses: Vec<u16> = (0..7)
                .map(|_| send(Request::get(&url("/r"))).status)
                .collect();
            assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
            let over = send(Request::get(&url("/r")));
            assert_eq!(over.status, 429, "{statuses:?}");
            assert!(over.header("retry-after").is_some(), "{:?}", over.headers);
            assert_eq!(over.header("ratelimit-limit"), Some("5"));
        }
        "jwt_auth" => {
            let denied = send(Request::get(&url("/orders")));
            assert_eq!(denied.status, 401);
            assert!(denied
                .header("www-authenticate")
                .is_some_and(|c| c.starts_with("Bearer realm=\"palisade-demo\"")));
            let ok = send(Request::get(&url("/orders")).header("authorization", &demo_bearer()));
            assert_eq!(ok.status, 200, "{}", ok.body);
            assert_eq!(ok.echoed_header("x-jwt-sub").as_deref(), Some("demo-user"));
            assert_eq!(send(Request::get(&url("/health"))).status, 200);
            let admin = send(Request::get(&url("/admin")).header("authorization", &demo_bearer()));
            assert_eq!(admin.status, 403);
        }
        "bulkhead" => {
            // 2 in flight to `inbound|8080||` at most; the others wait 250 ms, then 503 expired.
            let slow = client::parallel(6, 6, |_| {
                Request::get(&url("/slow")).header("x-upstream-delay-ms", "1500")
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
        }
        "circuit_breaker" => {
            for _ in 0..5 {
                let r = send(Request::get(&url("/fail")).header("x-upstream-status", "503"));
                assert_eq!(r.status, 503);
            }
            let fast = send(Request::get(&url("/")));
            assert_eq!(fast.status, 503);
            assert_eq!(fast.header("x-palisade-circuit"), Some("open"));
        }
        "transform" => {
            let r = send(
                Request::new("POST", &url("/v1/users/7?debug=1"))
                    .header("content-type", "application/json")
                    .header("x-internal-trace", "abc")
                    .body(r#"{"name": "ann", "password": "pw"}"#),
            );
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.header("x-palisade-transformed"), Some("true"));
            let echo = r.json();
            assert_eq!(echo["path"], "/v2/users/7");
            assert_eq!(echo["headers"]["x-user-id"], "7");
            assert!(echo["headers"].get("x-internal-trace").is_none(), "{echo}");
            assert_eq!(
                echo["body_json"],
                json!({"name": "ann", "source": "gateway"})
            );
        }
        other => panic!("no check for {other}"),
    }
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn every_module_delivered_as_istio_delivers_it_acts_as_in_its_native_test() {
    // Both filter-name forms, alternating over the modules.
    let table = [
        ("jwt_auth", Form::WasmPlugin),
        ("rate_limit", Form::TrafficExtension),
        ("bulkhead", Form::WasmPlugin),
        ("circuit_breaker", Form::TrafficExtension),
        ("transform", Form::WasmPlugin),
    ];
    for (module, form) in table {
        let p = one(module);
        let (_upstream, proxy, envoy) = start(form, vec![p.clone()], INBOUND);
        // The filter runs under Istio's name, with the plugin istiod names.
        let dump = client::get(&format!(
            "{}/config_dump?include_eds=false",
            envoy.admin_url()
        ))
        .unwrap()
        .body;
        assert!(
            dump.contains(&format!("\"name\": \"{}\"", proxy.filter_name(&p))),
            "{module}: filter name"
        );
        assert!(
            dump.contains(&format!("\"name\": \"{}\"", form.plugin_config_name(&p))),
            "{module}: plugin name"
        );
        assert_eq!(
            envoy.stat(&proxy.ecds_stat(&p, "config_reload")),
            1,
            "{module}"
        );
        acts_as_natively(module, &envoy);
        eprintln!(
            "{module} ({form:?}, {}): acts as natively",
            proxy.filter_name(&p)
        );
    }
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn the_demo_set_on_a_gateway_does_what_the_walkthrough_says_in_both_istio_forms() {
    for form in [Form::WasmPlugin, Form::TrafficExtension] {
        let plugins = manifest("demo.yaml");
        assert_eq!(plugins.len(), 5);
        let (_upstream, proxy, envoy) = start(form, plugins, OUTBOUND);
        let order: Vec<&str> = proxy.plugins.iter().map(|p| p.module.as_str()).collect();
        assert_eq!(
            order,
            [
                "jwt_auth",
                "rate_limit",
                "bulkhead",
                "circuit_breaker",
                "transform"
            ]
        );
        // The walk-through's probe step aside (the probe is test-only, not in the Istio set).
        walkthrough_without_probe(&envoy);
    }
}

/// The demo walk-through against an Istio-delivered chain (no probe module there).
fn walkthrough_without_probe(envoy: &Envoy) {
    assert_walkthrough(&DemoTarget {
        base: envoy.url(""),
        admin: envoy.admin_url().to_owned(),
        cluster: OUTBOUND.to_owned(),
    });
}
