//! Istio manifests, checked without a cluster (part of `cargo test --workspace`, `make unit`):
//!
//! - the CRD validator against Istio's own conformance corpus (vendored in `tests/harness/testdata/istio/testdata`): every
//!   valid document passes, every invalid one fails for its own reason (its `_err` fragment);
//! - every `deploy/istio/*.yaml` and every WasmPlugin snippet in the docs: the CRD's schema and CEL
//!   rules, strict metadata, the module's own parser on the configuration Envoy would receive, a
//!   pinned digest in `deploy/istio`, and each `pluginConfig` meaning what `envoy/<module>.yaml`
//!   (and `envoy/demo.yaml`) configures;
//! - typos (an unknown field, a bad enum, a URL without scheme and with a port, a bad pluginConfig)
//!   fail with a message naming them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use palisade_harness::istio::{self, manifest::IMAGES, manifest::MODULES, yaml, Crd, WasmPlugin};
use palisade_harness::repo_root;
use serde_json::Value;
use std::path::Path;

fn corpus(name: &str) -> Vec<Value> {
    let path = istio::shared_dir().join("testdata").join(name);
    yaml::documents(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn every_valid_example_of_istio_passes() {
    let crd = istio::wasmplugin_crd();
    let docs = corpus("wasm-valid.yaml");
    assert!(
        docs.len() >= 4,
        "the corpus has {} valid documents",
        docs.len()
    );
    for doc in &docs {
        let errors = crd.validate(doc, false);
        assert!(
            errors.is_empty(),
            "{}: {errors:?}",
            doc.pointer("/metadata/name").unwrap()
        );
    }
}

#[test]
fn every_invalid_example_of_istio_fails_for_its_own_reason() {
    let crd = istio::wasmplugin_crd();
    let docs = corpus("wasm-invalid.yaml");
    assert!(
        docs.len() >= 15,
        "the corpus has {} invalid documents",
        docs.len()
    );
    for mut doc in docs {
        let expected = doc
            .as_object_mut()
            .unwrap()
            .remove("_err")
            .and_then(|v| v.as_str().map(str::to_owned))
            .expect("every invalid document says its _err");
        let name = doc.pointer("/metadata/name").unwrap().clone();
        let errors = crd.validate(&doc, false);
        assert!(
            errors.iter().any(|e| e.contains(&expected)),
            "{name}: expected an error containing {expected:?}, got {errors:?}"
        );
    }
}

#[test]
fn the_validator_refuses_a_crd_rule_it_has_no_translation_for() {
    let text = std::fs::read_to_string(istio::shared_dir().join("wasmplugin-crd.yaml")).unwrap();
    let changed = text.replace("rule: self.size() == 0", "rule: self.size() <= 63");
    assert_ne!(changed, text);
    let crd = Crd::parse(&changed).unwrap();
    let doc = yaml::documents(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: x}\nspec:\n  url: oci://r.example/p/rate_limit-wasm:1\n  targetRefs: [{kind: Gateway, name: g, namespace: ''}]\n",
    )
    .unwrap()
    .remove(0);
    let errors = crd.validate(&doc, false);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("has no translation") && e.contains("self.size() <= 63")),
        "{errors:?}"
    );
    // And a schema keyword it does not implement.
    let changed = text.replacen(
        "maxItems: 16",
        "minItems: 1\n                maxItems: 16",
        1,
    );
    let errors = Crd::parse(&changed).unwrap().validate(&doc, false);
    assert!(
        errors.iter().any(|e| e.contains("\"minItems\"")),
        "{errors:?}"
    );
}

/// Everything `make test` demands of a manifest of ours; the errors, empty when it passes.
fn check_ours(crd: &Crd, plugin: &WasmPlugin) -> Vec<String> {
    let mut errors: Vec<String> = crd
        .validate(&plugin.document, true)
        .into_iter()
        .map(|e| format!("{} ({}): {e}", plugin.origin, plugin.name))
        .collect();
    if let Err(e) = plugin.check_plugin_config() {
        errors.push(e);
    }
    if let Err(e) = plugin.pinned_digest() {
        errors.push(e);
    }
    errors
}

fn deploy_plugins() -> Vec<WasmPlugin> {
    let files = istio::manifest_files();
    assert!(
        files.len() >= 6,
        "deploy/istio has {} manifests",
        files.len()
    );
    files
        .iter()
        .flat_map(|f| WasmPlugin::load_file(f).unwrap())
        .collect()
}

#[test]
fn every_deploy_istio_manifest_is_valid_pinned_and_accepted_by_its_module() {
    let crd = istio::wasmplugin_crd();
    let plugins = deploy_plugins();
    let mut errors = Vec::new();
    for p in &plugins {
        errors.extend(check_ours(&crd, p));
        match p.pinned_digest() {
            Ok(Some(d)) if p.spec()["url"].as_str().is_some_and(|u| u.contains("@sha256:")) => {
                assert_eq!(d.len(), 64, "{}", p.origin)
            }
            _ => errors.push(format!(
                "{} ({}): url must be pinned by digest (`oci://...@sha256:<hex>`, written by `make istio-pin`)",
                p.origin, p.name
            )),
        }
        // A configuration the module receives must not be empty: an unset pluginConfig is refused.
        if p.configuration().is_empty() {
            errors.push(format!("{}: no pluginConfig", p.origin));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // Every module has its own manifest, and the five-plugin demo set has every module.
    for m in MODULES {
        let own = Path::new("deploy/istio").join(format!("{m}.yaml"));
        assert!(
            repo_root().join(&own).is_file(),
            "{} is missing",
            own.display()
        );
        assert!(
            plugins
                .iter()
                .any(|p| p.module == m && p.origin.contains("demo-modules.yaml")),
            "deploy/istio/demo-modules.yaml has no {m}"
        );
    }
    // The one-plugin demo set is the chain module.
    let chain: Vec<&WasmPlugin> = plugins
        .iter()
        .filter(|p| p.origin.contains("/demo.yaml"))
        .collect();
    assert_eq!(
        chain.len(),
        1,
        "deploy/istio/demo.yaml holds one WasmPlugin"
    );
    assert_eq!(chain[0].module, "palisade");
    // One digest per module image across every manifest.
    for m in IMAGES {
        let digests: std::collections::BTreeSet<String> = plugins
            .iter()
            .filter(|p| p.module == m)
            .filter_map(|p| p.pinned_digest().unwrap())
            .collect();
        assert_eq!(digests.len(), 1, "{m} is pinned to {digests:?}");
    }
}

/// The configuration of the Wasm filter `name` in an Envoy example, as JSON.
fn envoy_config(file: &str, name: &str) -> Value {
    let docs = yaml::documents(&std::fs::read_to_string(repo_root().join(file)).unwrap()).unwrap();
    let filters = docs[0]
        .pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array)
        .unwrap()
        .clone();
    let f = filters
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("{file} has no filter {name}"));
    serde_json::from_str(
        f.pointer("/typed_config/config/configuration/value")
            .and_then(Value::as_str)
            .unwrap(),
    )
    .unwrap()
}

/// The config of `module` in envoy/demo.yaml's chain.
fn demo_chain_entry(module: &str) -> Value {
    envoy_config("envoy/demo.yaml", "palisade")["chain"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e.get(module).cloned())
        .unwrap_or_else(|| panic!("envoy/demo.yaml's chain has no {module}"))
}

/// `config` with every bulkhead rule's `cluster: backend`, and every global rate limit's
/// `cluster: rls`, renamed as the clusters are named under Istio (the documented differences;
/// see the manifests' comments), in a chain too.
fn with_cluster(mut config: Value, cluster: &str) -> Value {
    if let Some(chain) = config.get_mut("chain").and_then(Value::as_array_mut) {
        for entry in chain {
            for module in ["bulkhead", "rate_limit"] {
                if let Some(b) = entry.get_mut(module) {
                    *b = with_cluster(b.take(), cluster);
                }
            }
        }
        return config;
    }
    for rule in config["rules"].as_array_mut().into_iter().flatten() {
        if rule.get("cluster").and_then(Value::as_str) == Some("backend") {
            rule["cluster"] = Value::String(cluster.to_owned());
        }
        if let Some(global) = rule.get_mut("global") {
            if global.get("cluster").and_then(Value::as_str) == Some("rls") {
                global["cluster"] = Value::String(RLS_OUTBOUND.to_owned());
            }
        }
    }
    config
}

const RLS_OUTBOUND: &str = "outbound|8081||rls.shop.svc.cluster.local";

const OUTBOUND: &str = "outbound|8080||backend.shop.svc.cluster.local";

#[test]
fn each_plugin_config_means_what_the_envoy_examples_configure() {
    for p in deploy_plugins() {
        let received: Value = serde_json::from_str(&p.configuration()).unwrap();
        let (what, expected) = if p.origin.contains("demo-modules.yaml") {
            (
                format!("envoy/demo.yaml's chain entry {}", p.module),
                with_cluster(demo_chain_entry(&p.module), OUTBOUND),
            )
        } else if p.origin.contains("/demo.yaml") {
            (
                "envoy/demo.yaml's palisade configuration".to_owned(),
                with_cluster(envoy_config("envoy/demo.yaml", "palisade"), OUTBOUND),
            )
        } else {
            (
                format!("envoy/{}.yaml's {} configuration", p.module, p.module),
                with_cluster(
                    envoy_config(&format!("envoy/{}.yaml", p.module), &p.module),
                    "inbound|8080||",
                ),
            )
        };
        assert_eq!(
            received, expected,
            "{} ({}): pluginConfig differs from {what}",
            p.origin, p.name
        );
    }
}

#[test]
fn the_demo_set_is_ordered_by_phase_and_priority_as_envoy_demo_chains_it() {
    let mut demo: Vec<WasmPlugin> =
        WasmPlugin::load_file(&repo_root().join("deploy/istio/demo-modules.yaml")).unwrap();
    demo.sort_by_key(WasmPlugin::order_key);
    let order: Vec<&str> = demo.iter().map(|p| p.module.as_str()).collect();
    assert_eq!(
        order, MODULES,
        "istiod's filter order of deploy/istio/demo-modules.yaml"
    );
    // ... which is the order of envoy/demo.yaml's chain, and of deploy/istio/demo.yaml's.
    let chain_of = |config: &Value| -> Vec<String> {
        config["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_object().unwrap().keys().next().unwrap().clone())
            .collect()
    };
    assert_eq!(
        chain_of(&envoy_config("envoy/demo.yaml", "palisade")),
        MODULES
    );
    let one = WasmPlugin::load_file(&repo_root().join("deploy/istio/demo.yaml")).unwrap();
    assert_eq!(
        chain_of(&serde_json::from_str(&one[0].configuration()).unwrap()),
        MODULES
    );
    // Each module's own manifest sits in the same phase with the same priority, and the five
    // per-module manifests on one workload chain in the same order.
    let mut own: Vec<WasmPlugin> = MODULES
        .iter()
        .map(|m| {
            WasmPlugin::load_file(&repo_root().join(format!("deploy/istio/{m}.yaml")))
                .unwrap()
                .remove(0)
        })
        .collect();
    for p in &demo {
        let o = own.iter().find(|o| o.module == p.module).unwrap();
        assert_eq!(o.order_key(), p.order_key(), "{}", p.module);
        assert_eq!(o.failure_policy(), p.failure_policy(), "{}", p.module);
    }
    own.sort_by_key(WasmPlugin::order_key);
    let order: Vec<&str> = own.iter().map(|p| p.module.as_str()).collect();
    assert_eq!(order, MODULES, "the per-module manifests on one workload");
    // jwt_auth authenticates before anything that keys on its claims.
    assert_eq!(demo[0].spec()["phase"], "AUTHN");
    assert_eq!(one[0].spec()["phase"], "AUTHN");
}

#[test]
fn failure_strategies_match_each_modules_documented_failure_mode() {
    for p in deploy_plugins() {
        let expected = match p.module.as_str() {
            "circuit_breaker" => "FAIL_OPEN",
            _ => "FAIL_CLOSED",
        };
        assert_eq!(p.failure_policy(), expected, "{} ({})", p.origin, p.name);
        // ... and the Envoy example says the same.
        let example = match p.module.as_str() {
            "palisade" => "envoy/demo.yaml".to_owned(),
            m => format!("envoy/{m}.yaml"),
        };
        let text = std::fs::read_to_string(repo_root().join(&example)).unwrap();
        assert!(
            text.contains(&format!("failure_policy: {expected}")),
            "{example}"
        );
    }
}

#[test]
fn every_wasmplugin_snippet_in_the_docs_is_valid_and_accepted_by_its_module() {
    let crd = istio::wasmplugin_crd();
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.push(repo_root().join("README.md"));
    let mut checked = 0;
    let mut errors = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (line, snippet) in istio::wasmplugin_snippets(&text) {
            let origin = format!("{}:{line}", f.strip_prefix(repo_root()).unwrap().display());
            match WasmPlugin::load_str(&snippet, &origin) {
                Err(e) => errors.push(e),
                Ok(plugins) => {
                    for p in plugins {
                        checked += 1;
                        errors.extend(check_ours(&crd, &p));
                    }
                }
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(
        checked >= 6,
        "only {checked} WasmPlugin snippets found in the docs"
    );
    eprintln!("{checked} WasmPlugin snippets in the docs validated");
}

/// deploy/istio/rate_limit.yaml with `edit` applied; the errors `make test` would report.
fn errors_after(edit: impl Fn(&str) -> String) -> Vec<String> {
    let path = repo_root().join("deploy/istio/rate_limit.yaml");
    let text = edit(&std::fs::read_to_string(&path).unwrap());
    let crd = istio::wasmplugin_crd();
    match WasmPlugin::load_str(&text, "rate_limit.yaml") {
        Err(e) => vec![e],
        Ok(plugins) => plugins.iter().flat_map(|p| check_ours(&crd, p)).collect(),
    }
}

/// A change to a manifest's text.
type Edit = Box<dyn Fn(&str) -> String>;

#[test]
fn a_manifest_typo_fails_with_a_message_naming_it() {
    assert!(errors_after(|t| t.to_owned()).is_empty());
    let cases: [(&str, Edit, &str); 7] = [
        (
            "unknown field",
            Box::new(|t| t.replace("  failStrategy:", "  failStrategey:")),
            "spec.failStrategey: unknown field",
        ),
        (
            "bad enum",
            Box::new(|t| t.replace("phase: AUTHZ", "phase: AUTHORIZATION")),
            "spec.phase: Unsupported value: \"AUTHORIZATION\"",
        ),
        (
            "url without scheme, with a port",
            Box::new(|t| {
                t.replace(
                    "url: oci://registry.example.com/",
                    "url: registry.example.com:5000/",
                )
            }),
            "spec.url: Invalid value: \"string\": url must have schema one of",
        ),
        (
            "short digest",
            Box::new(|t| {
                let re = regex_lite::Regex::new(r#"(?m)^  sha256: "([0-9a-f]{64})"$"#).unwrap();
                re.replace(t, "  sha256: \"${1}0\"").into_owned()
            }),
            "spec.sha256 in body should match",
        ),
        (
            "sha256 and url disagree",
            Box::new(|t| {
                let re = regex_lite::Regex::new(r#"(?m)^  sha256: "[0-9a-f]{64}"$"#).unwrap();
                re.replace(t, format!("  sha256: \"{}\"", "e".repeat(64)))
                    .into_owned()
            }),
            "differs from the url's digest",
        ),
        (
            "pluginConfig field the module does not know",
            Box::new(|t| {
                t.replace(
                    "    headers_on_allowed: true",
                    "    headers_on_alowed: true",
                )
            }),
            "palisade rate_limit rejects its pluginConfig: config field `headers_on_alowed`",
        ),
        (
            "pluginConfig value out of range",
            // per_client_ip's burst of 5, the second rule (after the shaped `export`).
            Box::new(|t| t.replace("capacity: 5", "capacity: 5.5")),
            "config field `rules[1].limits[0].capacity`",
        ),
    ];
    for (what, edit, expected) in cases {
        let errors = errors_after(edit);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{what}: expected an error containing {expected:?}, got {errors:?}"
        );
    }
}

#[test]
fn an_unset_plugin_config_is_refused_by_the_module_naming_it() {
    let text = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: bare, namespace: shop}\nspec:\n  url: oci://r.example/palisade/bulkhead-wasm:0.1.0\n";
    let p = WasmPlugin::load_str(text, "bare").unwrap().remove(0);
    assert_eq!(p.configuration(), "");
    let err = p.check_plugin_config().unwrap_err();
    assert!(
        err.contains("palisade bulkhead") && err.contains("the plugin configuration is empty"),
        "{err}"
    );
}

#[test]
fn a_digest_that_does_not_match_the_image_is_named() {
    let plugins = deploy_plugins();
    let mut digests: std::collections::BTreeMap<String, String> = plugins
        .iter()
        .map(|p| (p.module.clone(), p.pinned_digest().unwrap().unwrap()))
        .collect();
    assert!(istio::digest_mismatches(&plugins, &digests).is_empty());
    digests.insert("bulkhead".to_owned(), "f".repeat(64));
    let errors = istio::digest_mismatches(&plugins, &digests);
    assert_eq!(errors.len(), 2, "bulkhead.yaml and demo.yaml: {errors:?}");
    for e in &errors {
        assert!(
            e.contains("bulkhead") && e.contains(&"f".repeat(64)) && e.contains("make istio-pin"),
            "{e}"
        );
    }
}

#[test]
fn the_vendored_crd_and_examples_are_the_workplace_copies() {
    // The copy in tests/harness/testdata/istio is what a fresh clone validates against; where the
    // workplace's ../shared/istio exists beside the checkout, it must be byte-identical.
    let Some(shared) = palisade_harness::istio::workplace_shared_dir() else {
        return;
    };
    let ours = palisade_harness::repo_root().join("tests/harness/testdata/istio");
    for file in [
        "wasmplugin-crd.yaml",
        "testdata/wasm-valid.yaml",
        "testdata/wasm-invalid.yaml",
    ] {
        let a = std::fs::read(shared.join(file)).unwrap();
        let b = std::fs::read(ours.join(file)).unwrap();
        assert!(
            a == b,
            "tests/harness/testdata/istio/{file} differs from {}: copy it again",
            shared.join(file).display()
        );
    }
}
