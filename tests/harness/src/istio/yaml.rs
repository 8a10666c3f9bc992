//! YAML documents as JSON values, the way the Kubernetes API server receives a manifest
//! (`kubectl apply` sends JSON): mappings become objects (a duplicate key is an error, as in
//! strict decoding), integers stay integers, floats become JSON numbers, an empty value is `null`,
//! and empty documents (a trailing `---`) are skipped.
//!
//! The reading is `palisade-check`'s (`palisade_check::find::documents`, serde_norway, YAML 1.2),
//! so the manifests are read here as the checker operators run reads them. `kubectl` reads YAML
//! 1.1, where `yes`/`no`/`on`/`off` are booleans: the manifests here do not use those words as
//! values.

use serde_json::Value;

/// Every non-empty document of `text`.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    palisade_check::find::documents(text).map_err(|e| format!("YAML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_become_json_with_nulls_integers_and_floats() {
        let docs = documents("a: 1\nb: 1.5\nc:\nd: [x, true]\n---\n---\ne: {}\n").unwrap();
        assert_eq!(
            docs,
            [
                json!({"a": 1, "b": 1.5, "c": null, "d": ["x", true]}),
                json!({"e": {}})
            ]
        );
    }

    #[test]
    fn a_duplicate_key_is_an_error() {
        let err = documents("spec:\n  url: a\n  url: b\n").unwrap_err();
        assert!(err.contains("duplicate"), "{err}");
    }
}
