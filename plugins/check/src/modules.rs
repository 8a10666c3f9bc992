//! The Palisade modules the checker knows: each one's own config parser and JSON Schema.

use palisade_core::fake_host::FakeHost;
use palisade_core::plugin::{load_chain, HostRef};
use palisade_core::ConfigError;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use std::rc::Rc;

/// A module: its name (the `.wasm` file, the `root_id` our examples use), its parser, and its
/// schema (none for the test-only `probe`).
#[derive(Clone, Copy)]
pub struct Module {
    pub name: &'static str,
    parse: fn(&[u8]) -> Result<(), ConfigError>,
    schema: Option<fn() -> schemars::Schema>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Module {
    /// Run the module's own two-step parse (wire types, then validation) on the exact bytes the
    /// module would receive as its configuration.
    pub fn check(&self, config: &[u8]) -> Result<(), ConfigError> {
        (self.parse)(config)
    }

    /// The module's JSON Schema (draft 2020-12), as committed under `schema/`.
    pub fn schema(&self) -> Option<serde_json::Value> {
        let schema = (self.schema?)();
        let mut value = schema.to_value();
        if let Some(obj) = value.as_object_mut() {
            let (title, description) = if self.name == "palisade" {
                (
                    "Palisade chain module (palisade.wasm) configuration".to_owned(),
                    "The JSON configuration of the `palisade` chain module (Envoy: the filter's `configuration` StringValue; Istio: the WasmPlugin's `pluginConfig`): `{\"chain\": [{\"<policy>\": {config}}, ...]}`, each config the one the policy takes as a standalone module (docs/<policy>.md). Generated from the wire types; the rules a schema does not express: docs/operators.md. `palisade-check` runs the chain's own loader.".to_owned(),
                )
            } else {
                (
                    format!("Palisade {} plugin configuration", self.name),
                    format!(
                        "The JSON configuration of the `{}` Wasm module (Envoy: the filter's `configuration` StringValue; Istio: the WasmPlugin's `pluginConfig`). Generated from the module's wire types; field reference: docs/{}.md; the rules a schema does not express: docs/operators.md. `palisade-check` runs the module's own parser.",
                        self.name, self.name
                    ),
                )
            };
            // The generated title is the wire type's Rust name; say what the schema is instead.
            obj.insert("title".into(), title.into());
            obj.insert("description".into(), description.into());
        }
        Some(value)
    }

    /// The committed schema's file name under `schema/`.
    pub fn schema_file(&self) -> String {
        format!("{}.schema.json", self.name)
    }
}

fn schema_of<T: JsonSchema>() -> schemars::Schema {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
}

/// The chain module's config, `{"chain": [{"<policy>": {config}}, ...]}`, exactly as its loader
/// reads it: each entry validated by that policy's own parser (with a stand-in host: building a
/// policy defines metrics, which no check needs a proxy for).
fn parse_chain(bytes: &[u8]) -> Result<(), ConfigError> {
    let host: HostRef = Rc::new(FakeHost::new());
    load_chain(&host, &palisade::KINDS, bytes, "palisade-check").map(drop)
}

/// The chain's schema: a list of one-key objects, each key a policy whose value is that policy's
/// schema. One generator for all, so their definitions share one `$defs` (same-named wire types of
/// different policies get distinct names).
fn chain_schema() -> schemars::Schema {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let entries: Vec<serde_json::Value> = palisade::KINDS
        .iter()
        .filter_map(|kind| {
            let policy = match kind.name {
                "rate_limit" => generator.subschema_for::<rate_limit::config::Config>(),
                "jwt_auth" => generator.subschema_for::<jwt_auth::config::Config>(),
                "circuit_breaker" => generator.subschema_for::<circuit_breaker::config::Config>(),
                "bulkhead" => generator.subschema_for::<bulkhead::config::Config>(),
                "transform" => generator.subschema_for::<transform::config::Config>(),
                // A policy the chain gained and this list did not: the inventory test below fails.
                _ => return None,
            };
            Some(serde_json::json!({
                "type": "object",
                "properties": {kind.name: policy},
                "required": [kind.name],
                "additionalProperties": false,
            }))
        })
        .collect();
    let defs = generator.take_definitions(true);
    let value = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "chain": {
                "description": "The policies, in order: each entry an object with one key, the policy's name, whose value is the config that policy takes as a standalone module.",
                "type": "array",
                "minItems": 1,
                "maxItems": palisade_core::plugin::MAX_CHAIN,
                "items": {"oneOf": entries},
            }
        },
        "required": ["chain"],
        "additionalProperties": false,
        "$defs": defs,
    });
    schemars::Schema::try_from(value).unwrap_or_default()
}

/// A policy module: the crate of that name, its `config::Config` parser and that type's schema.
macro_rules! policy {
    ($krate:ident) => {
        Module {
            name: stringify!($krate),
            parse: |b| $krate::config::Config::parse(b).map(drop),
            schema: Some(schema_of::<$krate::config::Config>),
        }
    };
}

/// Every module, in the order the README lists them (`probe` last: test-only, no schema).
pub const MODULES: &[Module] = &[
    Module {
        name: "palisade",
        parse: parse_chain,
        schema: Some(chain_schema),
    },
    policy!(rate_limit),
    policy!(jwt_auth),
    policy!(circuit_breaker),
    policy!(bulkhead),
    policy!(transform),
    Module {
        name: "probe",
        parse: |b| probe::Config::parse(b).map(drop),
        schema: None,
    },
];

/// The module called `name`.
pub fn module(name: &str) -> Option<&'static Module> {
    MODULES.iter().find(|m| m.name == name)
}

/// The module a code reference names: a file (`dist/rate_limit.wasm`, `file:///x/jwt_auth.wasm`),
/// an image (`oci://registry/palisade/rate_limit-wasm:0.1.0`, `…/bulkhead:0.1.0`,
/// `…@sha256:…`) or a URL. The last path segment, without its tag, digest, `.wasm` and
/// `-wasm`, must be the module's name.
pub fn module_of_code(reference: &str) -> Option<&'static Module> {
    let last = reference.rsplit('/').next()?;
    let last = last.split('@').next().unwrap_or(last);
    let last = last.split(':').next().unwrap_or(last);
    let last = last.split('?').next().unwrap_or(last);
    let last = last.strip_suffix(".wasm").unwrap_or(last);
    let last = last.strip_suffix("-wasm").unwrap_or(last);
    module(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_references_name_their_module() {
        for (reference, want) in [
            ("dist/rate_limit.wasm", Some("rate_limit")),
            ("file:///opt/palisade/jwt_auth.wasm", Some("jwt_auth")),
            (
                "oci://registry.example.com/palisade/bulkhead:0.1.0",
                Some("bulkhead"),
            ),
            (
                "oci://localhost:5000/palisade/transform-wasm:0.1.0",
                Some("transform"),
            ),
            (
                "oci://r.example/palisade/circuit_breaker-wasm@sha256:0123abcd",
                Some("circuit_breaker"),
            ),
            (
                "https://example.com/m/rate_limit.wasm?x=1",
                Some("rate_limit"),
            ),
            ("dist/other.wasm", None),
            ("oci://registry.example.com/acme/authz:1.0", None),
        ] {
            assert_eq!(
                module_of_code(reference).map(|m| m.name),
                want,
                "{reference}"
            );
        }
    }

    #[test]
    fn every_policy_module_has_a_schema_titled_by_name() {
        for m in MODULES.iter().filter(|m| m.name != "probe") {
            let s = m.schema().unwrap();
            assert_eq!(
                s["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{}",
                m.name
            );
            assert!(s["title"].as_str().unwrap().contains(m.name));
            assert_eq!(s["type"], "object");
            assert_eq!(s["additionalProperties"], false, "{}", m.name);
        }
        assert!(module("probe").unwrap().schema().is_none());
    }

    #[test]
    fn the_chain_schema_offers_every_policy_the_chain_module_has() {
        let s = module("palisade").unwrap().schema().unwrap();
        let entries = s["properties"]["chain"]["items"]["oneOf"]
            .as_array()
            .unwrap();
        let offered: Vec<&str> = entries
            .iter()
            .map(|e| e["required"][0].as_str().unwrap())
            .collect();
        let kinds: Vec<&str> = palisade::KINDS.iter().map(|k| k.name).collect();
        assert_eq!(offered, kinds);
        for k in &kinds {
            assert!(module(k).is_some(), "{k} has no standalone entry");
        }
    }

    #[test]
    fn the_chain_is_checked_by_its_own_loader_with_full_paths() {
        let chain = module("palisade").unwrap();
        chain
            .check(br#"{"chain": [{"rate_limit": {"rules": [{"name": "a", "key": ["client_ip"], "limits": [{"capacity": 5, "refill": 1, "period": "1s"}]}]}}]}"#)
            .unwrap();
        let e = chain
            .check(br#"{"chain": [{"transform": {"rules": [{"name": "t"}]}}, {"rate_limit": {"rules": [{"name": "a", "key": ["client_ip"], "limits": [{"capacity": 0, "refill": 1, "period": "1s"}]}]}}]}"#)
            .unwrap_err();
        assert_eq!(
            e.field.as_str(),
            "chain[1].rate_limit.rules[0].limits[0].capacity"
        );
        let e = chain
            .check(br#"{"chain": [{"nonesuch": {}}]}"#)
            .unwrap_err();
        assert_eq!(e.field.as_str(), "chain[0].nonesuch");
    }
}
