//! A manifest checked against a CustomResourceDefinition's `openAPIV3Schema` and its CEL rules,
//! as the Kubernetes API server checks it: unknown fields are errors (except under
//! `x-kubernetes-preserve-unknown-fields`), `nullable` allows `null`, `x-kubernetes-list-type: map`
//! lists have unique keys, and every `x-kubernetes-validations` rule is evaluated through its
//! hand translation ([`super::cel`]). A schema keyword or a rule this validator does not know is an
//! error, not a pass.
//!
//! Messages follow the API server's wording (`spec.url in body should be at least 1 chars long`,
//! `spec.vmConfig.env[1]: Duplicate value: ...`), so Istio's own conformance corpus can be checked
//! message by message.

use super::cel;
use serde_json::{Map, Value};

/// The `openAPIV3Schema` of one version of a CRD, with what a manifest must say to be of it.
#[derive(Debug, Clone)]
pub struct Crd {
    pub group: String,
    pub kind: String,
    pub versions: Vec<(String, Value)>,
}

impl Crd {
    /// Read the (single) CRD document of `yaml`.
    pub fn parse(yaml: &str) -> Result<Crd, String> {
        let docs = super::yaml::documents(yaml)?;
        let [crd] = docs.as_slice() else {
            return Err(format!("expected one CRD document, found {}", docs.len()));
        };
        let spec = &crd["spec"];
        let group = spec["group"].as_str().ok_or("CRD without spec.group")?;
        let kind = spec["names"]["kind"]
            .as_str()
            .ok_or("CRD without spec.names.kind")?;
        let mut versions = Vec::new();
        for v in spec["versions"].as_array().ok_or("CRD without versions")? {
            let name = v["name"].as_str().ok_or("CRD version without name")?;
            let schema = v["schema"]["openAPIV3Schema"].clone();
            if !schema.is_object() {
                return Err(format!("CRD version {name} has no openAPIV3Schema"));
            }
            versions.push((name.to_owned(), schema));
        }
        Ok(Crd {
            group: group.to_owned(),
            kind: kind.to_owned(),
            versions,
        })
    }

    /// Every reason `manifest` would be refused; empty when it is accepted. With `strict_metadata`,
    /// `metadata.name` must be a DNS-1123 subdomain and `metadata.namespace` a DNS-1123 label
    /// (Istio's conformance corpus skips these checks, our manifests do not).
    pub fn validate(&self, manifest: &Value, strict_metadata: bool) -> Vec<String> {
        let mut errors = Vec::new();
        let Some(obj) = manifest.as_object() else {
            return vec!["the manifest is not an object".to_owned()];
        };
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let schema = match api_version.split_once('/') {
            Some((group, version)) if group == self.group => {
                match self.versions.iter().find(|(v, _)| v == version) {
                    Some((_, s)) => s,
                    None => {
                        return vec![format!(
                            "apiVersion: {api_version:?} names no version of {} (known: {})",
                            self.group,
                            self.versions
                                .iter()
                                .map(|(v, _)| v.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )]
                    }
                }
            }
            _ => {
                return vec![format!(
                    "apiVersion: {api_version:?} is not of group {}",
                    self.group
                )]
            }
        };
        if obj.get("kind").and_then(Value::as_str) != Some(self.kind.as_str()) {
            errors.push(format!(
                "kind: Invalid value: {}: expected {}",
                obj.get("kind").unwrap_or(&Value::Null),
                self.kind
            ));
        }
        check_metadata(obj.get("metadata"), strict_metadata, &mut errors);
        // apiVersion, kind and metadata are the API server's; the schema covers the rest.
        let mut rest = Map::new();
        for (k, v) in obj {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                rest.insert(k.clone(), v.clone());
            }
        }
        check(schema, &Value::Object(rest), "", &mut errors);
        errors
    }
}

fn check_metadata(metadata: Option<&Value>, strict: bool, errors: &mut Vec<String>) {
    let Some(Value::Object(m)) = metadata else {
        errors.push("metadata: Required value".to_owned());
        return;
    };
    let name = m.get("name").and_then(Value::as_str);
    match name {
        None => errors.push("metadata.name: Required value: name is required".to_owned()),
        Some(n) if strict && !is_dns1123_subdomain(n) => errors.push(format!(
            "metadata.name: Invalid value: {n:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        )),
        _ => {}
    }
    if let Some(ns) = m.get("namespace") {
        match ns.as_str() {
            Some(n) if !strict || is_dns1123_label(n) => {}
            _ => errors.push(format!(
                "metadata.namespace: Invalid value: {ns}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"
            )),
        }
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// The schema keywords this validator implements (anything else in the CRD is an error).
const KNOWN_KEYWORDS: &[&str] = &[
    "type",
    "description",
    "properties",
    "additionalProperties",
    "required",
    "enum",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "maxItems",
    "maxProperties",
    "format",
    "nullable",
    "items",
    "anyOf",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
];

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Check `value` at `path` against `schema`, appending every error.
fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        errors.push(format!("{path}: the CRD's schema here is not an object"));
        return;
    };
    for key in s.keys() {
        if !KNOWN_KEYWORDS.contains(&key.as_str()) {
            errors.push(format!(
                "{path}: the CRD uses schema keyword {key:?}, which this validator does not implement"
            ));
        }
    }
    let shown = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if s.get("nullable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        if let Some(t) = s.get("type").and_then(Value::as_str) {
            errors.push(format!("{shown} in body must be of type {t}: \"null\""));
            return;
        }
    }
    if let Some(any_of) = s.get("anyOf").and_then(Value::as_array) {
        let int_or_string =
            s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
        let ok = any_of.iter().any(|alt| {
            let mut e = Vec::new();
            check(alt, value, path, &mut e);
            e.is_empty()
        });
        if !ok {
            let what = if int_or_string {
                "integer or string"
            } else {
                "one of anyOf"
            };
            errors.push(format!("{shown} in body must be of type {what}: {value}"));
        }
    }
    let mut type_ok = true;
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        type_ok = actual == t || (t == "number" && actual == "integer");
        if !type_ok {
            errors.push(format!("{shown} in body must be of type {t}: \"{actual}\""));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            errors.push(format!(
                "{shown}: Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ));
        }
    }
    match value {
        Value::String(text) => check_string(s, text, shown, errors),
        Value::Number(n) => check_number(s, n, shown, errors),
        Value::Array(items) => check_array(s, items, path, errors),
        Value::Object(map) => check_object(s, map, path, errors),
        _ => {}
    }
    if type_ok {
        check_rules(s, value, shown, errors);
    }
}

fn check_string(s: &Map<String, Value>, text: &str, shown: &str, errors: &mut Vec<String>) {
    let chars = text.chars().count() as u64;
    if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
        if chars < min {
            errors.push(format!(
                "{shown} in body should be at least {min} chars long"
            ));
        }
    }
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
        if chars > max {
            errors.push(format!(
                "{shown}: Too long: may not be more than {max} bytes"
            ));
        }
    }
    if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
        match regex_lite::Regex::new(pattern) {
            Ok(re) if re.is_match(text) => {}
            Ok(_) => errors.push(format!("{shown} in body should match '{pattern}'")),
            Err(e) => errors.push(format!(
                "{shown}: the CRD's pattern {pattern:?} does not compile: {e}"
            )),
        }
    }
    match s.get("format").and_then(Value::as_str) {
        None => {}
        Some("date-time") => {
            let re = regex_lite::Regex::new(
                r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
            );
            if re.is_ok_and(|re| !re.is_match(text)) {
                errors.push(format!(
                    "{shown} in body must be of type date-time: {text:?}"
                ));
            }
        }
        Some(other) => errors.push(format!(
            "{shown}: the CRD uses string format {other:?}, which this validator does not implement"
        )),
    }
}

fn check_number(
    s: &Map<String, Value>,
    n: &serde_json::Number,
    shown: &str,
    errors: &mut Vec<String>,
) {
    let v = n.as_f64().unwrap_or(f64::NAN);
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        if v < min {
            errors.push(format!(
                "{shown} in body should be greater than or equal to {min}"
            ));
        }
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        if v > max {
            errors.push(format!(
                "{shown} in body should be less than or equal to {max}"
            ));
        }
    }
    let format = s.get("format").and_then(Value::as_str);
    let int32 = n.as_i64().is_some_and(|i| i32::try_from(i).is_ok());
    match format {
        None => {}
        Some("int32") if int32 => {}
        Some("int64") if n.as_i64().is_some() => {}
        Some(f @ ("int32" | "int64")) => {
            errors.push(format!("{shown} in body must be of type {f}: {n}"));
        }
        Some(other) => errors.push(format!(
            "{shown}: the CRD uses number format {other:?}, which this validator does not implement"
        )),
    }
}

fn check_array(s: &Map<String, Value>, items: &[Value], path: &str, errors: &mut Vec<String>) {
    let shown = if path.is_empty() { "<root>" } else { path };
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
        if items.len() as u64 > max {
            errors.push(format!(
                "{shown}: Too many: {}: must have at most {max} items",
                items.len()
            ));
        }
    }
    if let Some(item_schema) = s.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        None | Some("atomic") => {}
        Some("map") => {
            let keys: Vec<&str> = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seen: Vec<Value> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let key: Map<String, Value> = keys
                    .iter()
                    .filter_map(|k| item.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                    .collect();
                let key = Value::Object(key);
                if seen.contains(&key) {
                    errors.push(format!("{path}[{i}]: Duplicate value: {key}"));
                } else {
                    seen.push(key);
                }
            }
        }
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    errors.push(format!("{path}[{i}]: Duplicate value: {item}"));
                }
            }
        }
        Some(other) => errors.push(format!(
            "{shown}: the CRD uses x-kubernetes-list-type {other:?}, which this validator does not implement"
        )),
    }
}

fn check_object(
    s: &Map<String, Value>,
    map: &Map<String, Value>,
    path: &str,
    errors: &mut Vec<String>,
) {
    let shown = if path.is_empty() { "<root>" } else { path };
    if let Some(max) = s.get("maxProperties").and_then(Value::as_u64) {
        if map.len() as u64 > max {
            errors.push(format!(
                "{shown}: Too many: {}: must have at most {max} items",
                map.len()
            ));
        }
    }
    if let Some(required) = s.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errors.push(format!("{}: Required value", join(path, r)));
            }
        }
    }
    let preserve = s
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let properties = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties");
    for (k, v) in map {
        let child = join(path, k);
        if let Some(p) = properties.and_then(|p| p.get(k)) {
            check(p, v, &child, errors);
        } else if let Some(a) = additional.filter(|a| a.is_object()) {
            check(a, v, &child, errors);
        } else if !preserve && additional.and_then(Value::as_bool) != Some(true) {
            errors.push(format!(
                "{child}: unknown field {k:?}: the schema does not declare it"
            ));
        }
    }
}

fn check_rules(s: &Map<String, Value>, value: &Value, shown: &str, errors: &mut Vec<String>) {
    let Some(rules) = s.get("x-kubernetes-validations").and_then(Value::as_array) else {
        return;
    };
    for r in rules {
        let rule = r.get("rule").and_then(Value::as_str).unwrap_or("");
        let message = r
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("failed rule: {rule}"));
        match cel::translate(rule) {
            None => errors.push(format!(
                "{shown}: the CRD's CEL rule {rule:?} has no translation in tests/harness/src/istio/cel.rs"
            )),
            Some(f) => match f(value) {
                Ok(true) => {}
                Ok(false) => errors.push(format!(
                    "{shown}: Invalid value: \"{}\": {message}",
                    type_name(value)
                )),
                Err(e) => errors.push(format!("{shown}: Invalid value: \"{}\": {message} (rule evaluation error: {e})", type_name(value))),
            },
        }
    }
}
