//! WasmPlugin manifests (`deploy/istio/*.yaml`, the snippets in the docs) as istiod reads them.

use serde_json::Value;
use std::path::Path;

/// The policy modules, in the chain order of `envoy/demo.yaml`; each has its own Wasm image and
/// its own manifest in `deploy/istio`.
pub const MODULES: [&str; 5] = [
    "jwt_auth",
    "rate_limit",
    "bulkhead",
    "circuit_breaker",
    "transform",
];

/// Every module with a Wasm image (`make images`): the policies and the chain module `palisade`.
pub const IMAGES: [&str; 6] = [
    "jwt_auth",
    "rate_limit",
    "bulkhead",
    "circuit_breaker",
    "transform",
    "palisade",
];

/// One WasmPlugin document.
#[derive(Debug, Clone)]
pub struct WasmPlugin {
    /// Where it came from: `<file>#<document index>`.
    pub origin: String,
    pub name: String,
    pub namespace: String,
    /// The Palisade module its `url` names (`.../<module>-wasm[:tag][@sha256:...]`).
    pub module: String,
    /// The whole document (for the CRD check).
    pub document: Value,
}

impl WasmPlugin {
    /// Every WasmPlugin document of a YAML file (other kinds are skipped).
    pub fn load_file(path: &Path) -> Result<Vec<WasmPlugin>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        WasmPlugin::load_str(&text, &path.display().to_string())
    }

    pub fn load_str(text: &str, origin: &str) -> Result<Vec<WasmPlugin>, String> {
        let docs = super::yaml::documents(text).map_err(|e| format!("{origin}: {e}"))?;
        docs.into_iter()
            .enumerate()
            .filter(|(_, d)| d.get("kind").and_then(Value::as_str) == Some("WasmPlugin"))
            .map(|(i, d)| WasmPlugin::from_document(d, &format!("{origin}#{i}")))
            .collect()
    }

    pub fn from_document(document: Value, origin: &str) -> Result<WasmPlugin, String> {
        let name = document
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let namespace = document
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        let url = document
            .pointer("/spec/url")
            .and_then(Value::as_str)
            .unwrap_or("");
        let module = module_of_url(url)
            .ok_or_else(|| format!("{origin} ({name}): url {url:?} names no Palisade module image (`<registry>/<module>-wasm`)"))?;
        Ok(WasmPlugin {
            origin: origin.to_owned(),
            name,
            namespace,
            module,
            document,
        })
    }

    pub fn spec(&self) -> &Value {
        &self.document["spec"]
    }

    /// `<namespace>.<name>`: Envoy's `PluginConfig.name` for this plugin (Istio <= 1.29).
    pub fn resource_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// `pluginName`, Envoy's `root_id` (empty when unset).
    pub fn plugin_name(&self) -> String {
        self.spec()["pluginName"].as_str().unwrap_or("").to_owned()
    }

    /// `pluginConfig` as istiod hands it to Envoy: the JSON a protobuf `Struct` prints, or the
    /// empty string when `pluginConfig` is unset or empty (Istio then sends no configuration).
    pub fn configuration(&self) -> String {
        match self.spec().get("pluginConfig") {
            Some(Value::Object(m)) if !m.is_empty() => struct_json(&Value::Object(m.clone())),
            _ => String::new(),
        }
    }

    /// Envoy's `failure_policy` for `failStrategy` (unset: FAIL_CLOSE, Istio's default).
    pub fn failure_policy(&self) -> &'static str {
        match self.spec()["failStrategy"].as_str() {
            Some("FAIL_OPEN") => "FAIL_OPEN",
            Some("FAIL_RELOAD") => "FAIL_RELOAD",
            _ => "FAIL_CLOSED",
        }
    }

    pub fn fail_open(&self) -> bool {
        self.failure_policy() == "FAIL_OPEN"
    }

    /// Where istiod puts the filter: (phase rank, -priority), smaller first. AUTHN, then AUTHZ,
    /// then STATS, then no phase; within a phase the highest priority first.
    pub fn order_key(&self) -> (u8, i64) {
        let phase = match self.spec()["phase"].as_str() {
            Some("AUTHN") => 0,
            Some("AUTHZ") => 1,
            Some("STATS") => 2,
            _ => 3,
        };
        let priority = self.spec()["priority"].as_i64().unwrap_or(0);
        (phase, -priority)
    }

    /// The manifest digest this plugin pins: `sha256`, which must equal the url's `@sha256:`
    /// when both are there.
    pub fn pinned_digest(&self) -> Result<Option<String>, String> {
        let field = self.spec()["sha256"].as_str().filter(|s| !s.is_empty());
        let url = self.spec()["url"].as_str().unwrap_or("");
        let in_url = url.split_once("@sha256:").map(|(_, d)| d);
        match (field, in_url) {
            (Some(a), Some(b)) if a != b => Err(format!(
                "{} ({}): sha256 {a} differs from the url's digest {b}",
                self.origin, self.name
            )),
            (Some(a), _) => Ok(Some(a.to_owned())),
            (None, Some(b)) => Ok(Some(b.to_owned())),
            (None, None) => Ok(None),
        }
    }

    /// Run the module's own configuration parser on what the module would receive.
    pub fn check_plugin_config(&self) -> Result<(), String> {
        parse_natively(&self.module, self.configuration().as_bytes()).map_err(|e| {
            format!(
                "{} ({}): palisade {} rejects its pluginConfig: {e}",
                self.origin, self.name, self.module
            )
        })
    }
}

/// `<module>` from `oci://registry/path/<module>-wasm[:tag][@sha256:digest]` (or the same
/// without a scheme).
pub fn module_of_url(url: &str) -> Option<String> {
    let without_digest = url.split_once('@').map_or(url, |(u, _)| u);
    let last = without_digest.rsplit('/').next()?;
    let image = last.split_once(':').map_or(last, |(i, _)| i);
    let module = image.strip_suffix("-wasm")?;
    IMAGES.contains(&module).then(|| module.to_owned())
}

/// The module's own configuration parsing, natively: `palisade-check`'s, which runs what the
/// module's `on_configure` runs (each policy's own parser; the chain module's own loader), with
/// the messages Envoy's log would show.
pub fn parse_natively(module: &str, config: &[u8]) -> Result<(), String> {
    let m = palisade_check::modules::module(module)
        .ok_or_else(|| format!("palisade-check knows no module {module:?}"))?;
    m.check(config).map_err(|e| e.to_string())
}

/// A JSON value printed as a protobuf `Struct`/`Value` prints in JSON (Go's protojson): object
/// keys sorted, every number a double (`5` stays `5`, `5.5` stays `5.5`, integers above 2^53
/// are rounded to a double, 1e21 and above and below 1e-6 in exponent form).
pub fn struct_json(v: &Value) -> String {
    let mut out = String::new();
    write_struct_json(v, &mut out);
    out
}

fn write_struct_json(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => out.push_str(&v.to_string()),
        Value::Number(n) => out.push_str(&go_double(n.as_f64().unwrap_or(0.0))),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_struct_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_struct_json(&map[k], out);
            }
            out.push('}');
        }
    }
}

/// Go's JSON formatting of a float64 (protojson and encoding/json): shortest representation,
/// `%f` style unless |x| < 1e-6 or >= 1e21, exponents as `e+21` / `e-7`.
pub fn go_double(x: f64) -> String {
    let abs = x.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{x:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        if exp < 0 {
            format!("{mantissa}e-{}", -exp)
        } else {
            format!("{mantissa}e+{exp:02}")
        }
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn struct_json_prints_numbers_as_doubles_with_sorted_keys() {
        assert_eq!(
            struct_json(
                &json!({"b": 5, "a": [0.5, 1e21, 1e-7, 9007199254740993u64, -3], "c": {"y": null, "x": "s"}})
            ),
            r#"{"a":[0.5,1e+21,1e-7,9007199254740992,-3],"b":5,"c":{"x":"s","y":null}}"#
        );
    }

    #[test]
    fn the_module_comes_from_the_image_name() {
        for (url, module) in [
            (
                "oci://r.example/palisade/rate_limit-wasm@sha256:00",
                Some("rate_limit"),
            ),
            (
                "oci://r.example:5000/p/jwt_auth-wasm:0.1.0",
                Some("jwt_auth"),
            ),
            ("r.example/p/transform-wasm", Some("transform")),
            ("oci://r.example/p/palisade-wasm:1", Some("palisade")),
            ("oci://r.example/p/probe-wasm:1", None),
            ("oci://r.example/p/rate_limit:1", None),
        ] {
            assert_eq!(module_of_url(url).as_deref(), module, "{url}");
        }
    }
}
