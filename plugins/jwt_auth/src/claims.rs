//! Claim requirements (per rule) and claim-to-header outputs (per provider).
//!
//! A claim is named either by its top-level name (`"scope"`, `"https://example.com/roles"`: dots
//! are part of names in the wild, so they are not path separators) or by a JSON pointer starting
//! with `/` (`"/realm_access/roles"`) for nested claims.

use crate::{Failure, Reason};
use serde_json::{Map, Value};

/// Where a claim is in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPath {
    Top(String),
    Pointer(String),
}

impl ClaimPath {
    pub fn new(name: &str) -> ClaimPath {
        if name.starts_with('/') {
            ClaimPath::Pointer(name.to_owned())
        } else {
            ClaimPath::Top(name.to_owned())
        }
    }

    pub fn lookup<'c>(&self, claims: &'c Map<String, Value>) -> Option<&'c Value> {
        match self {
            ClaimPath::Top(name) => claims.get(name),
            ClaimPath::Pointer(pointer) => {
                // The first segment is a claim name; the rest is a JSON pointer into its value.
                let rest = pointer.strip_prefix('/')?;
                let (first, tail) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                let first = first.replace("~1", "/").replace("~0", "~");
                let root = claims.get(&first)?;
                if tail.is_empty() {
                    Some(root)
                } else {
                    root.pointer(tail)
                }
            }
        }
    }
}

/// What a claim must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The claim is a scalar whose text (strings as-is, numbers and booleans in JSON form) is one
    /// of these values.
    Equals(Vec<String>),
    /// The claim is a space-delimited string (like OAuth `scope`) or an array, and has every one of
    /// these items.
    Contains(Vec<String>),
    /// The claim is present, whatever its value.
    Present,
}

/// One claim requirement of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub path: ClaimPath,
    pub condition: Condition,
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Requirement {
    pub fn holds(&self, claims: &Map<String, Value>) -> bool {
        let Some(value) = self.path.lookup(claims) else {
            return false;
        };
        match &self.condition {
            Condition::Present => true,
            Condition::Equals(any_of) => {
                scalar_text(value).is_some_and(|text| any_of.contains(&text))
            }
            Condition::Contains(all_of) => {
                let items: Vec<String> = match value {
                    Value::String(s) => s
                        .split(' ')
                        .filter(|x| !x.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    Value::Array(list) => list.iter().filter_map(scalar_text).collect(),
                    _ => return false,
                };
                all_of
                    .iter()
                    .all(|want| items.iter().any(|have| have == want))
            }
        }
    }
}

/// Every requirement must hold; a valid token that fails one is a 403.
pub fn check(claims: &Map<String, Value>, requirements: &[Requirement]) -> Result<(), Failure> {
    if requirements.iter().all(|r| r.holds(claims)) {
        Ok(())
    } else {
        Err(Failure::new(
            Reason::Claims,
            "the token's claims do not grant access",
        ))
    }
}

/// The header value for a claim: strings as-is, numbers and booleans in JSON form, arrays of
/// those joined with `,`. Objects, nulls, nested arrays, and text a header cannot carry (control
/// characters) give no header at all rather than a mangled one.
pub fn header_value(v: &Value) -> Option<String> {
    let text = match v {
        Value::Array(list) => {
            let parts: Option<Vec<String>> = list.iter().map(scalar_text).collect();
            parts?.join(",")
        }
        other => scalar_text(other)?,
    };
    if text.chars().any(|c| c.is_control()) {
        None
    } else {
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Map<String, Value> {
        json!({
            "sub": "alice", "scope": "read  write", "roles": ["admin", "dev"], "level": 3,
            "staff": true, "https://example.com/team": "blue",
            "realm": {"roles": ["ops"], "a/b": 1}, "obj": {"x": 1}, "bad": "a\nb"
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn req(name: &str, condition: Condition) -> Requirement {
        Requirement {
            path: ClaimPath::new(name),
            condition,
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn exact_values_match_scalars_by_their_text() {
        let c = claims();
        assert!(req("sub", Condition::Equals(s(&["bob", "alice"]))).holds(&c));
        assert!(req("level", Condition::Equals(s(&["3"]))).holds(&c));
        assert!(req("staff", Condition::Equals(s(&["true"]))).holds(&c));
        assert!(!req("sub", Condition::Equals(s(&["Alice"]))).holds(&c));
        assert!(!req("roles", Condition::Equals(s(&["admin"]))).holds(&c));
        assert!(!req("missing", Condition::Equals(s(&["x"]))).holds(&c));
    }

    #[test]
    fn containment_works_for_space_delimited_strings_and_arrays() {
        let c = claims();
        assert!(req("scope", Condition::Contains(s(&["read"]))).holds(&c));
        assert!(req("scope", Condition::Contains(s(&["read", "write"]))).holds(&c));
        assert!(!req("scope", Condition::Contains(s(&["rea"]))).holds(&c));
        assert!(!req("scope", Condition::Contains(s(&["read", "admin"]))).holds(&c));
        assert!(req("roles", Condition::Contains(s(&["dev"]))).holds(&c));
        assert!(!req("obj", Condition::Contains(s(&["x"]))).holds(&c));
    }

    #[test]
    fn nested_claims_are_reached_by_json_pointer_and_dotted_names_are_top_level() {
        let c = claims();
        assert!(req("/realm/roles", Condition::Contains(s(&["ops"]))).holds(&c));
        assert!(req("/realm/a~1b", Condition::Equals(s(&["1"]))).holds(&c));
        assert!(req("https://example.com/team", Condition::Equals(s(&["blue"]))).holds(&c));
        assert!(req("/sub", Condition::Present).holds(&c));
        assert!(!req("/realm/nope", Condition::Present).holds(&c));
        // Odd pointers find nothing and never panic (slicing is on `/` boundaries only).
        for odd in ["/", "//", "//é", "/é/", "/realm//"] {
            assert!(!req(odd, Condition::Present).holds(&c), "{odd}");
        }
    }

    #[test]
    fn a_failed_requirement_is_a_claims_denial() {
        let c = claims();
        let f = check(&c, &[req("scope", Condition::Contains(s(&["admin"])))]).unwrap_err();
        assert_eq!(f.reason, Reason::Claims);
        assert!(check(&c, &[]).is_ok());
    }

    #[test]
    fn header_values_render_scalars_and_join_arrays() {
        let c = claims();
        assert_eq!(header_value(&c["sub"]).as_deref(), Some("alice"));
        assert_eq!(header_value(&c["level"]).as_deref(), Some("3"));
        assert_eq!(header_value(&c["staff"]).as_deref(), Some("true"));
        assert_eq!(header_value(&c["roles"]).as_deref(), Some("admin,dev"));
        assert_eq!(header_value(&c["obj"]), None);
        assert_eq!(header_value(&c["bad"]), None);
        assert_eq!(header_value(&json!([1, [2]])), None);
    }
}
