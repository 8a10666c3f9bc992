//! The Palisade modules the checker knows: each one's own config parser and JSON Schema.

use palisade_core::ConfigError;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;

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
            // The generated title is the wire type's Rust name; say what the schema is instead.
            obj.insert(
                "title".into(),
                format!("Palisade {} plugin configuration", self.name).into(),
            );
            obj.insert(
                "description".into(),
                format!(
                    "The JSON configuration of the `{}` Wasm module (Envoy: the filter's `configuration` StringValue; Istio: the WasmPlugin's `pluginConfig`). Generated from the module's wire types; field reference and the rules a schema does not express: docs/{}.md. `palisade-check` runs the module's own parser.",
                    self.name, self.name
                )
                .into(),
            );
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

/// Every module, in the order the README lists them (`probe` last: test-only, no schema).
pub const MODULES: &[Module] = &[
    Module {
        name: "rate_limit",
        parse: |b| rate_limit::config::Config::parse(b).map(drop),
        schema: Some(schema_of::<rate_limit::config::Config>),
    },
    Module {
        name: "jwt_auth",
        parse: |b| jwt_auth::config::Config::parse(b).map(drop),
        schema: Some(schema_of::<jwt_auth::config::Config>),
    },
    Module {
        name: "circuit_breaker",
        parse: |b| circuit_breaker::config::Config::parse(b).map(drop),
        schema: Some(schema_of::<circuit_breaker::config::Config>),
    },
    Module {
        name: "bulkhead",
        parse: |b| bulkhead::config::Config::parse(b).map(drop),
        schema: Some(schema_of::<bulkhead::config::Config>),
    },
    Module {
        name: "transform",
        parse: |b| transform::config::Config::parse(b).map(drop),
        schema: Some(schema_of::<transform::config::Config>),
    },
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
}
