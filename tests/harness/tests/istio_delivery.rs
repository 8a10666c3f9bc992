//! Istio's delivery of WasmPlugins reproduced through real Envoy (`make e2e`): the bootstrap and
//! the file-based ECDS resources are generated from the `deploy/istio` manifests themselves, as
//! istiod and istio-agent configure a proxy (`palisade_harness::istio::ecds`), in both of Istio's
//! filter-name forms, with Istio's cluster names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::client::{self, Request, Response};
use palisade_harness::demo::{assert_walkthrough, demo_bearer, DemoTarget, Global};
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
    let stat = proxy.ecds_stat(p, "update_success");
    wait_for(&format!("{stat} = {n}"), Duration::from_secs(20), || {
        (envoy.stat_or_zero(&stat) >= n).then_some(())
    });
}

fn wait_fails(envoy: &Envoy, proxy: &IstioProxy, p: &WasmPlugin, n: u64) {
    let stat = proxy.ecds_stat(p, "update_rejected");
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
            envoy.stat(&proxy.ecds_stat(&p, "update_success")),
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
    // One WasmPlugin (the chain module), in both forms; then the same set as five WasmPlugins,
    // ordered by istiod's phase and priority.
    let runs = [
        ("demo.yaml", Form::WasmPlugin),
        ("demo.yaml", Form::TrafficExtension),
        ("demo-modules.yaml", Form::TrafficExtension),
    ];
    for (file, form) in runs {
        let plugins = manifest(file);
        let (_upstream, proxy, envoy) = start(form, plugins, OUTBOUND);
        let order: Vec<&str> = proxy.plugins.iter().map(|p| p.module.as_str()).collect();
        match file {
            "demo.yaml" => assert_eq!(order, ["palisade"]),
            _ => assert_eq!(
                order,
                [
                    "jwt_auth",
                    "rate_limit",
                    "bulkhead",
                    "circuit_breaker",
                    "transform"
                ]
            ),
        }
        assert_walkthrough(&DemoTarget {
            base: envoy.url(""),
            admin: envoy.admin_url().to_owned(),
            cluster: OUTBOUND.to_owned(),
            global: Global::Fallback,
        });
        eprintln!("deploy/istio/{file} ({form:?}): the walk-through holds");
    }
}

/// rate_limit's manifest with a burst of `capacity` under `/limited` that refills once an hour, so
/// counts are exact; `extra` fields are merged into the pluginConfig.
fn rate_limit_exact(capacity: Value, extra: Value) -> WasmPlugin {
    let mut config = json!({
        "rules": [{
            "name": "per_client_ip",
            "key": ["client_ip"],
            "match": {"path_prefix": "/limited"},
            "limits": [{"capacity": capacity, "refill": 1, "period": "1h"}]
        }]
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    with_config(&one("rate_limit"), Some(config))
}

fn statuses(envoy: &Envoy, path: &str, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| send(Request::get(&envoy.url(path))).status)
        .collect()
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_plugin_config_change_applies_under_traffic_without_a_failed_request_and_keeps_the_buckets() {
    let p = rate_limit_exact(json!(5), json!({}));
    let (_upstream, proxy, envoy) = start(Form::TrafficExtension, vec![p.clone()], INBOUND);
    assert_eq!(statuses(&envoy, "/limited", 3), [200; 3]);

    // Traffic on both workers while the config changes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let url = envoy.url(&format!("/open/{i}"));
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let agent = client::agent();
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    seen.push(Request::get(&url).send_with(&agent).map(|r| r.status));
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200)); // let the load run before the change
                                                    // The change istiod would push: RateLimit headers on allowed responses too; the rule's name
                                                    // and limits stay, so its buckets (and counters) are kept (docs/istio.md).
    let changed = rate_limit_exact(json!(5), json!({"headers_on_allowed": true}));
    proxy.deliver(&changed);
    wait_reloads(&envoy, &proxy, &p, 2);
    let fourth = send(Request::get(&envoy.url("/limited")));
    std::thread::sleep(Duration::from_millis(200)); // and keep it running after
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results: Vec<Result<u16, String>> =
        load.into_iter().flat_map(|t| t.join().unwrap()).collect();

    // The new config applies: headers on an allowed response, and 2 tokens were left, not 5.
    assert_eq!(fourth.status, 200);
    assert_eq!(
        fourth.header("ratelimit-remaining"),
        Some("1"),
        "{:?}",
        fourth.headers
    );
    assert_eq!(statuses(&envoy, "/limited", 3), [200, 429, 429]);
    let failed: Vec<_> = results.iter().filter(|r| *r != &Ok(200)).collect();
    assert!(
        results.len() > 20,
        "only {} requests under load",
        results.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the change: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(5)]
    );
    // Counters are kept across the change.
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.per_client_ip.allowed"),
        5
    );
    assert_eq!(
        envoy.stat("wasmcustom.palisade.rate_limit.per_client_ip.limited"),
        2
    );
    assert_eq!(envoy.stat(&proxy.ecds_stat(&p, "update_rejected")), 0);
    eprintln!(
        "{} requests under load, none failed, across the config change",
        results.len()
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn an_unset_plugin_config_is_refused_with_an_error_naming_the_module() {
    for module in ["bulkhead", "rate_limit"] {
        let p = one(module);
        let bare = with_config(&p, None);
        assert_eq!(bare.configuration(), "");
        // A new plugin without configuration: refused, and the filter has no config (500).
        let (_upstream, proxy, envoy) = start(Form::WasmPlugin, vec![bare.clone()], INBOUND);
        wait_fails(&envoy, &proxy, &bare, 1);
        let ecds: Vec<(String, u64)> = envoy
            .stats()
            .into_iter()
            .filter(|(k, _)| k.starts_with("extension_config_discovery"))
            .collect();
        assert_eq!(
            envoy.stat_or_zero(&proxy.ecds_stat(&bare, "update_success")),
            0,
            "{ecds:?}"
        );
        let log = envoy.log();
        let line = format!("palisade {module}: rejected configuration: config field `<root>`: missing: the plugin configuration is empty");
        assert!(log.contains(&line), "{module}: Envoy's log lacks {line:?}");
        assert_eq!(
            send(Request::get(&envoy.url("/"))).status,
            500,
            "{module}: a filter without config"
        );
        // A working plugin whose pluginConfig is then removed keeps its last good config.
        proxy.deliver(&p);
        wait_reloads(&envoy, &proxy, &p, 1);
        assert_eq!(send(Request::get(&envoy.url("/"))).status, 200);
        proxy.deliver(&bare);
        wait_fails(&envoy, &proxy, &p, 2);
        assert_eq!(
            send(Request::get(&envoy.url("/"))).status,
            200,
            "{module}: the last good config stays"
        );
    }
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn integers_that_arrive_as_whole_doubles_are_accepted_and_a_fraction_is_refused_naming_the_field() {
    let p = rate_limit_exact(json!(3), json!({}));
    let (_upstream, proxy, envoy) = start(Form::WasmPlugin, vec![p.clone()], INBOUND);
    // What a protobuf Struct may print for an integer: `3.0`, `3e0`; delivered as raw JSON.
    let config = p.configuration();
    assert!(config.contains("\"capacity\":3"), "{config}");
    proxy.deliver_with(
        &p,
        Some(
            &config
                .replace("\"capacity\":3", "\"capacity\":3.0")
                .replace("\"refill\":1", "\"refill\":1e0"),
        ),
        &Code::Local(wasm_module("rate_limit")),
    );
    wait_reloads(&envoy, &proxy, &p, 2);
    assert_eq!(statuses(&envoy, "/limited", 5), [200, 200, 200, 429, 429]);
    // 5.5 is refused, naming the field; the last good config stays.
    proxy.deliver_with(
        &p,
        Some(&config.replace("\"capacity\":3", "\"capacity\":5.5")),
        &Code::Local(wasm_module("rate_limit")),
    );
    wait_fails(&envoy, &proxy, &p, 1);
    let log = envoy.log();
    assert!(
        log.contains("palisade rate_limit: rejected configuration: config field `rules[0].limits[0].capacity`"),
        "Envoy's log does not name the field:\n{log}"
    );
    assert!(log.contains("5.5"), "the bad value is not shown");
    assert_eq!(statuses(&envoy, "/limited", 1), [429]);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn two_rate_limit_plugins_on_one_proxy_keep_separate_state() {
    // Two WasmPlugins of rate_limit with the same rule (name, key, limits) on different paths,
    // as two teams would write them; Istio sets no vm_id, so only the plugin instance's name can
    // keep their buckets apart.
    let rule = |prefix: &str| {
        json!({"rules": [{
            "name": "per_client_ip",
            "key": ["client_ip"],
            "match": {"path_prefix": prefix},
            "limits": [{"capacity": 3, "refill": 1, "period": "1h"}]
        }]})
    };
    let a = renamed(
        &with_config(&one("rate_limit"), Some(rule("/a"))),
        "limit-a",
    );
    let b = renamed(
        &with_config(&one("rate_limit"), Some(rule("/b"))),
        "limit-b",
    );
    let (_upstream, _proxy, envoy) = start(Form::TrafficExtension, vec![a, b], INBOUND);
    assert_eq!(
        statuses(&envoy, "/a", 5),
        [200, 200, 200, 429, 429],
        "plugin limit-a"
    );
    assert_eq!(
        statuses(&envoy, "/b", 5),
        [200, 200, 200, 429, 429],
        "plugin limit-b: its own bucket"
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn remote_code_with_the_right_sha256_works_and_a_wrong_one_fails_closed() {
    let p = rate_limit_exact(json!(2), json!({}));
    let wasm = std::fs::read(wasm_module("rate_limit")).unwrap();
    let digest = sha256_hex(&wasm);
    let server = StaticServer::start(vec![("/rate_limit.wasm".to_owned(), wasm)]);
    let upstream = start_upstream();
    let proxy = IstioProxy::new(Form::WasmPlugin, vec![p.clone()]);
    let remote = |sha256: &str| Code::Remote {
        uri: server.url("/rate_limit.wasm"),
        cluster: "palisade_wasm_http".to_owned(),
        sha256: sha256.to_owned(),
    };
    proxy.deliver_with(&p, Some(&p.configuration()), &remote(&digest));
    let yaml = proxy.bootstrap(
        INBOUND,
        &[server.cluster("palisade_wasm_http")],
        upstream.port(),
    );
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    wait_reloads(&envoy, &proxy, &p, 1);
    wait_for(
        "the module to be fetched and the plugin to run",
        Duration::from_secs(20),
        || (send(Request::get(&envoy.url("/limited"))).status == 200).then_some(()),
    );
    assert_eq!(statuses(&envoy, "/limited", 2), [200, 429]);
    assert!(server.hits() >= 1);

    // The same module under a wrong sha256, as a new plugin: the fetch fails, FAIL_CLOSE.
    let wrong = rate_limit_exact(json!(2), json!({}));
    let wrong = renamed(&wrong, "wrong-digest");
    let hits_before = server.hits();
    let proxy = IstioProxy::new(Form::WasmPlugin, vec![wrong.clone()]);
    proxy.deliver_with(
        &wrong,
        Some(&wrong.configuration()),
        &remote(&"0".repeat(64)),
    );
    let yaml = proxy.bootstrap(
        INBOUND,
        &[server.cluster("palisade_wasm_http")],
        upstream.port(),
    );
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let status = wait_for("the failed fetch to show", Duration::from_secs(20), || {
        let s = send(Request::get(&envoy.url("/open"))).status;
        (s != 200).then_some(s)
    });
    assert!(
        status == 500 || status == 503,
        "a module with a wrong sha256 must not pass traffic: {status}"
    );
    assert_eq!(
        statuses(&envoy, "/open", 3)
            .iter()
            .filter(|s| **s == 200)
            .count(),
        0,
        "fails closed"
    );
    // The module was fetched (the server answered), and refused for its digest.
    assert!(
        server.hits() > hits_before,
        "Envoy did not fetch the module"
    );
    let log = envoy.log();
    assert!(
        log.contains("Plugin shop.wrong-digest failed to load"),
        "Envoy's log does not say the plugin failed to load:\n{log}"
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_module_istio_agent_cannot_fetch_becomes_an_rbac_filter_deny_all_403_or_allow_all() {
    // istio-agent's substitute for a failed fetch, under the Wasm filter's own name.
    let closed = one("rate_limit");
    let open = one("circuit_breaker");
    let (_upstream, proxy, envoy) = start(
        Form::TrafficExtension,
        vec![closed.clone(), open.clone()],
        INBOUND,
    );
    proxy.deliver_fetch_failure(&open);
    wait_reloads(&envoy, &proxy, &open, 2);
    assert_eq!(
        send(Request::get(&envoy.url("/"))).status,
        200,
        "FAIL_OPEN: allow-all"
    );
    proxy.deliver_fetch_failure(&closed);
    wait_reloads(&envoy, &proxy, &closed, 2);
    let r = send(Request::get(&envoy.url("/")));
    assert_eq!(r.status, 403, "FAIL_CLOSE: deny-all");
    assert_eq!(r.body, "RBAC: access denied");
    // The next push with a fetchable module brings it back.
    proxy.deliver(&closed);
    wait_reloads(&envoy, &proxy, &closed, 3);
    assert_eq!(send(Request::get(&envoy.url("/"))).status, 200);
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn metrics_under_istio_are_named_as_docs_istio_says_in_stats_prometheus() {
    let (_upstream, _proxy, envoy) = start(
        Form::TrafficExtension,
        vec![one("rate_limit"), one("bulkhead"), one("circuit_breaker")],
        INBOUND,
    );
    for _ in 0..3 {
        assert_eq!(send(Request::get(&envoy.url("/"))).status, 200);
    }
    let prom = client::get(&format!("{}/stats/prometheus", envoy.admin_url()))
        .unwrap()
        .body;
    let sample = |name: &str| -> Option<(String, f64)> {
        prom.lines().find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let bare = series.split('{').next()?;
            (bare == name).then(|| {
                (series.to_owned(), value.parse().ok())
                    .1
                    .map(|v| (series.to_owned(), v))
            })?
        })
    };
    let typed = |name: &str| {
        prom.lines()
            .find(|l| l.starts_with(&format!("# TYPE {name} ")))
            .map(str::to_owned)
    };
    for (name, kind, value) in [
        (
            "palisade_rate_limit_per_client_ip_allowed",
            "counter",
            Some(3.0),
        ),
        ("palisade_bulkhead_backend_admitted", "counter", Some(3.0)),
        ("palisade_bulkhead_backend_in_flight", "gauge", Some(0.0)),
        (
            "palisade_circuit_breaker_per_cluster_inbound_8080___state",
            "gauge",
            Some(0.0),
        ),
    ] {
        let (series, v) = sample(name).unwrap_or_else(|| {
            let ours: Vec<&str> = prom.lines().filter(|l| l.contains("palisade")).collect();
            panic!("/stats/prometheus has no {name}; ours: {ours:#?}")
        });
        assert_eq!(
            series,
            format!("{name}{{}}"),
            "no tags extracted from {name}"
        );
        assert_eq!(typed(name), Some(format!("# TYPE {name} {kind}")));
        if let Some(want) = value {
            assert_eq!(v, want, "{name}");
        }
    }
    assert!(
        !prom.contains("envoy_wasmcustom"),
        "custom stats carry no envoy_ prefix"
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn a_breaker_opened_before_a_plugin_config_change_stays_open_after_it() {
    let p = one("circuit_breaker");
    let (upstream, proxy, envoy) = start(Form::WasmPlugin, vec![p.clone()], INBOUND);
    for _ in 0..5 {
        let r = send(Request::get(&envoy.url("/fail")).header("x-upstream-status", "503"));
        assert_eq!(r.status, 503);
    }
    assert_eq!(
        send(Request::get(&envoy.url("/"))).header("x-palisade-circuit"),
        Some("open")
    );
    // A change that keeps the rule's name, window, probes and max_breakers: the threshold.
    let mut config: Value = serde_json::from_str(&p.configuration()).unwrap();
    config["rules"][0]["failure_rate_threshold"] = json!(60);
    proxy.deliver(&with_config(&p, Some(config)));
    wait_reloads(&envoy, &proxy, &p, 2);
    let hits = upstream.stats().hits;
    let r = send(Request::get(&envoy.url("/")));
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("x-palisade-circuit"),
        Some("open"),
        "the breaker's state was lost"
    );
    assert_eq!(
        upstream.stats().hits,
        hits,
        "an open breaker sends nothing upstream"
    );
}

#[test]
#[ignore = "end-to-end: needs Envoy and dist/ (run `make e2e`)"]
fn with_palisade_stats_tags_merged_into_istios_bootstrap_the_metrics_carry_labels() {
    // What docs/operators.md tells Istio users to do (bootstrapOverride with Palisade's stats_tags):
    // Istio's use_all_default_tags: false stays, Palisade's tags apply.
    let upstream = start_upstream();
    let proxy = IstioProxy::new(
        Form::TrafficExtension,
        vec![one("rate_limit"), one("circuit_breaker")],
    );
    let yaml = proxy.bootstrap_with_stats(INBOUND, &[], upstream.port(), true);
    let envoy = Envoy::start(&yaml).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..2 {
        assert_eq!(send(Request::get(&envoy.url("/"))).status, 200);
    }
    let prom = client::get(&format!("{}/stats/prometheus", envoy.admin_url()))
        .unwrap()
        .body;
    for series in [
        r#"palisade_rate_limit_allowed{rule="per_client_ip"} 2"#,
        r#"palisade_circuit_breaker_state{rule="per_cluster",key="inbound_8080__"} 0"#,
    ] {
        assert!(
            prom.lines().any(|l| l == series),
            "/stats/prometheus lacks {series}; ours: {:#?}",
            prom.lines()
                .filter(|l| l.contains("palisade_"))
                .collect::<Vec<_>>()
        );
    }
}
