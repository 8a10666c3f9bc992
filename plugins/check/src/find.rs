//! Finding Palisade configs in a file: an Envoy bootstrap (YAML or JSON; static listeners, LDS,
//! ECDS `TypedExtensionConfig`s, any fragment holding Wasm HTTP filters), or Istio `WasmPlugin`
//! manifests (several YAML documents per file are fine). The walk is generic: any mapping whose
//! `@type` is Envoy's Wasm HTTP filter, and any document of kind `WasmPlugin`, wherever it sits.

use crate::modules::{module, module_of_code, Module};
use serde::Deserialize;
use serde_json::Value;

/// Envoy's Wasm HTTP filter config type.
pub const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// One Wasm filter or WasmPlugin found in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Where it sits: `static_resources.listeners[0]…http_filters[2]`, or `documents[1]` for a
    /// WasmPlugin.
    pub location: String,
    /// `filter` (Envoy) or `WasmPlugin`.
    pub kind: &'static str,
    /// The filter's `config.name` (else the HTTP filter's `name`), or the WasmPlugin's
    /// `metadata.namespace/name`.
    pub name: String,
    /// What it is, as far as the checker can tell.
    pub what: What,
}

#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// A Palisade module and the exact bytes it would be configured with.
    Palisade {
        module: &'static Module,
        config: Vec<u8>,
    },
    /// A Palisade module whose configuration cannot be delivered as the module expects.
    Unusable {
        module: &'static Module,
        reason: String,
    },
    /// Not a Palisade module (its code names none); skipped.
    Other { reason: String },
}

impl PartialEq for Module {
    fn eq(&self, other: &Module) -> bool {
        self.name == other.name
    }
}

/// Parse `text` as YAML (JSON is YAML too), every document of it.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let yaml = serde_norway::Value::deserialize(doc).map_err(|e| e.to_string())?;
        if yaml.is_null() {
            continue; // an empty document (`---` at the end)
        }
        let json = serde_json::to_value(&yaml)
            .map_err(|e| format!("document {}: not representable as JSON: {e}", i + 1))?;
        docs.push(json);
    }
    Ok(docs)
}

/// Every Wasm filter and WasmPlugin in `docs`.
pub fn find(docs: &[Value]) -> Vec<Found> {
    (0..docs.len()).flat_map(|i| find_in(docs, i)).collect()
}

/// The Wasm filters and WasmPlugins of `docs[i]`, located as [`find`] locates them.
pub fn find_in(docs: &[Value], i: usize) -> Vec<Found> {
    let mut found = Vec::new();
    if let Some(doc) = docs.get(i) {
        let root = if docs.len() > 1 {
            format!("documents[{i}]")
        } else {
            String::new()
        };
        walk(doc, &root, None, &mut found);
    }
    found
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(v: &Value, path: &str, parent_name: Option<&str>, out: &mut Vec<Found>) {
    match v {
        Value::Object(map) => {
            if map.get("kind").and_then(Value::as_str) == Some("WasmPlugin")
                && map
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .is_some_and(|a| a.starts_with("extensions.istio.io/"))
            {
                out.push(wasm_plugin(v, path));
                return;
            }
            if map.get("@type").and_then(Value::as_str) == Some(WASM_FILTER_TYPE) {
                out.push(wasm_filter(v, path, parent_name));
                return;
            }
            let name = map.get("name").and_then(Value::as_str);
            for (k, child) in map {
                walk(child, &join(path, k), name, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &format!("{path}[{i}]"), parent_name, out);
            }
        }
        _ => {}
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// An Envoy `envoy.extensions.filters.http.wasm.v3.Wasm`.
fn wasm_filter(v: &Value, path: &str, parent_name: Option<&str>) -> Found {
    let name = str_at(v, "/config/name")
        .or(parent_name)
        .unwrap_or("(unnamed)")
        .to_owned();
    let code = str_at(v, "/config/vm_config/code/local/filename")
        .or_else(|| str_at(v, "/config/vm_config/code/remote/http_uri/uri"));
    let root_id = str_at(v, "/config/root_id");
    let Some(module) = identify(code, root_id) else {
        return Found {
            location: path.to_owned(),
            kind: "filter",
            name,
            what: What::Other {
                reason: format!(
                    "not a Palisade module (code {}, root_id {})",
                    code.unwrap_or("not given"),
                    root_id.unwrap_or("not given")
                ),
            },
        };
    };
    let what = match v.pointer("/config/configuration") {
        // No configuration: the module gets empty bytes (and says so).
        None | Some(Value::Null) => What::Palisade {
            module,
            config: Vec::new(),
        },
        Some(c) => match (c.get("@type").and_then(Value::as_str), c.get("value")) {
            (Some(STRING_VALUE_TYPE), Some(Value::String(s))) => What::Palisade {
                module,
                config: s.clone().into_bytes(),
            },
            (Some(STRING_VALUE_TYPE), None | Some(Value::Null)) => What::Palisade {
                module,
                config: Vec::new(),
            },
            (Some(STRING_VALUE_TYPE), Some(_)) => What::Unusable {
                module,
                reason: "`configuration.value` must be a string holding the JSON config"
                    .to_owned(),
            },
            (t, _) => What::Unusable {
                module,
                reason: format!(
                    "`configuration` must be a {STRING_VALUE_TYPE} holding the JSON config (got @type {})",
                    t.unwrap_or("none")
                ),
            },
        },
    };
    Found {
        location: path.to_owned(),
        kind: "filter",
        name,
        what,
    }
}

/// An Istio `WasmPlugin`: istiod sends `pluginConfig` to the module as JSON (or an empty
/// configuration when it is unset).
fn wasm_plugin(v: &Value, path: &str) -> Found {
    let name = match (
        str_at(v, "/metadata/namespace"),
        str_at(v, "/metadata/name"),
    ) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.to_owned(),
        _ => "(unnamed)".to_owned(),
    };
    let location = if path.is_empty() {
        "WasmPlugin".to_owned()
    } else {
        path.to_owned()
    };
    let url = str_at(v, "/spec/url");
    let plugin_name = str_at(v, "/spec/pluginName");
    let Some(module) = identify(url, plugin_name) else {
        return Found {
            location,
            kind: "WasmPlugin",
            name,
            what: What::Other {
                reason: format!(
                    "not a Palisade module (url {}, pluginName {})",
                    url.unwrap_or("not given"),
                    plugin_name.unwrap_or("not given")
                ),
            },
        };
    };
    let config = match v.pointer("/spec/pluginConfig") {
        None | Some(Value::Null) => Vec::new(),
        Some(c) => c.to_string().into_bytes(),
    };
    Found {
        location,
        kind: "WasmPlugin",
        name,
        what: What::Palisade { module, config },
    }
}

/// The code decides (it is what runs); the root id / plugin name only when the code names no
/// module.
fn identify(code: Option<&str>, root_id: Option<&str>) -> Option<&'static Module> {
    code.and_then(module_of_code)
        .or_else(|| root_id.and_then(module))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(yaml: &str) -> Vec<(String, String, String)> {
        find(&documents(yaml).unwrap())
            .into_iter()
            .map(|f| match f.what {
                What::Palisade { module, config } => (
                    f.location,
                    module.name.to_owned(),
                    String::from_utf8(config).unwrap(),
                ),
                other => (f.location, "-".into(), format!("{other:?}")),
            })
            .collect()
    }

    /// A document that is one Wasm filter (a `typed_config` on its own) with this `config:` body.
    fn wasm_filter(config: &str) -> String {
        let head = r#""@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"#;
        format!("{head}\nconfig:{config}")
    }

    #[test]
    fn filters_are_found_wherever_they_sit_and_named_by_their_code() {
        let yaml = r#"
http_filters:
- name: limiter
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      root_id: anything
      vm_config: { code: { local: { filename: dist/rate_limit.wasm } } }
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: '{"rules": []}'
- name: envoy.filters.http.router
"#;
        assert_eq!(
            configs(yaml),
            vec![(
                "http_filters[0].typed_config".into(),
                "rate_limit".into(),
                r#"{"rules": []}"#.into()
            )]
        );
    }

    #[test]
    fn wasm_plugins_in_a_multi_document_file_are_found_and_others_ignored() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: { name: x }
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: limits, namespace: shop }
spec:
  url: oci://registry.example.com/palisade/rate_limit-wasm:0.1.0
  pluginConfig:
    rules: [{name: a, key: [client_ip], limits: [{capacity: 5, refill: 1, period: 1s}]}]
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: other }
spec:
  url: oci://registry.example.com/acme/authz:1.0
"#;
        let found = find(&documents(yaml).unwrap());
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "shop/limits");
        assert_eq!(found[0].location, "documents[1]");
        match &found[0].what {
            What::Palisade { module, config } => {
                assert_eq!(module.name, "rate_limit");
                let v: Value = serde_json::from_slice(config).unwrap();
                assert_eq!(v["rules"][0]["limits"][0]["capacity"], 5);
                assert_eq!(v["rules"][0]["limits"][0]["period"], "1s");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(found[1].what, What::Other { .. }));
    }

    #[test]
    fn the_root_id_names_the_module_when_the_code_does_not() {
        let yaml = wasm_filter(
            r#"
  name: x
  root_id: bulkhead
  vm_config: { code: { remote: { http_uri: { uri: "https://cdn.example/m.wasm" } } } }
"#,
        );
        let c = configs(&yaml);
        assert_eq!(c, vec![(String::new(), "bulkhead".into(), String::new())]);
    }

    #[test]
    fn a_configuration_that_is_not_a_string_value_is_unusable() {
        let yaml = wasm_filter(
            r#"
  root_id: rate_limit
  configuration: { "@type": type.googleapis.com/google.protobuf.Struct, value: {} }
"#,
        );
        let found = find(&documents(&yaml).unwrap());
        assert!(
            matches!(&found[0].what, What::Unusable { reason, .. } if reason.contains("StringValue")),
            "{found:?}"
        );
    }
}
