//! YAML documents as JSON values, the way the Kubernetes API server receives a manifest
//! (`kubectl apply` sends JSON): mappings become objects (duplicate keys are an error, as in
//! strict decoding), integers stay integers, floats become JSON numbers, and an empty value is
//! `null`.
//!
//! The YAML is read with yaml-rust2 (YAML 1.2 core schema). `kubectl` reads YAML 1.1, where
//! `yes`/`no`/`on`/`off` are booleans: the manifests here do not use those words as values.

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Every document of `text` (empty documents, e.g. a trailing `---`, are skipped).
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("YAML: {e}"))?;
    docs.iter()
        .filter(|d| !matches!(d, Yaml::BadValue | Yaml::Null))
        .map(|d| to_json(d, ""))
        .collect()
}

fn to_json(y: &Yaml, path: &str) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::Number((*i).into()),
        Yaml::Real(text) => {
            let f = y
                .as_f64()
                .ok_or_else(|| format!("{path}: not a number: {text}"))?;
            Value::Number(
                Number::from_f64(f)
                    .ok_or_else(|| format!("{path}: {text} has no JSON representation"))?,
            )
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| to_json(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Hash(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Real(r) => r.clone(),
                    other => return Err(format!("{path}: unsupported mapping key {other:?}")),
                };
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                out.insert(key, to_json(v, &child)?);
            }
            Value::Object(out)
        }
        Yaml::Alias(_) => return Err(format!("{path}: YAML aliases are not supported")),
        Yaml::BadValue => return Err(format!("{path}: bad YAML value")),
    })
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
        assert!(err.contains("duplicated key"), "{err}");
    }
}
