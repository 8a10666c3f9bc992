//! Which requests a rule applies to.
//!
//! Rules in every plugin match on the same things — path (exact or prefix), method, headers, route
//! name — so the matcher is written, validated and tested once. All given conditions must hold;
//! an empty match matches every request.

use crate::config::{ConfigError, FieldPath};
use crate::key::{url_path, validate_header_name, RequestView};

crate::wire! {
    /// Wire form: `{"path_prefix": "/api", "methods": ["GET"], "headers": [{"name": "x", "exact": "1"}],
    /// "route_name": "r1"}`.
    #[derive(Clone, Default)]
    pub struct MatchWire {
        #[cfg_attr(feature = "schema", schemars(regex(pattern = "^/")))]
        pub path: Option<String>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = "^/")))]
        pub path_prefix: Option<String>,
        pub methods: Option<Vec<String>>,
        pub headers: Option<Vec<HeaderMatchWire>>,
        pub route_name: Option<String>,
    }
}

crate::wire! {
    /// `{"name": "x-tier", "exact": "gold"}` or `{"name": "x-tier", "present": true}`.
    #[derive(Clone)]
    pub struct HeaderMatchWire {
        pub name: String,
        pub exact: Option<String>,
        pub present: Option<bool>,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HeaderCondition {
    Present(bool),
    Exact(String),
}

/// A validated request matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMatch {
    path: PathMatch,
    methods: Vec<String>,
    headers: Vec<(String, HeaderCondition)>,
    route_name: Option<String>,
}

impl Default for RequestMatch {
    fn default() -> Self {
        RequestMatch {
            path: PathMatch::Any,
            methods: Vec::new(),
            headers: Vec::new(),
            route_name: None,
        }
    }
}

impl RequestMatch {
    /// A matcher that matches every request.
    pub fn any() -> Self {
        RequestMatch::default()
    }

    /// A rule's optional `match` field: absent matches every request.
    pub fn validate_optional(
        wire: Option<&MatchWire>,
        path: &FieldPath,
    ) -> Result<Self, ConfigError> {
        wire.map_or_else(
            || Ok(RequestMatch::any()),
            |m| RequestMatch::validate(m, path),
        )
    }

    pub fn validate(wire: &MatchWire, path: &FieldPath) -> Result<Self, ConfigError> {
        let check_path = |p: &str, field: &str| {
            if p.starts_with('/') {
                Ok(p.to_owned())
            } else {
                Err(path.field(field).invalid(p, "must start with `/`"))
            }
        };
        let path_match = match (&wire.path, &wire.path_prefix) {
            (Some(_), Some(_)) => {
                return Err(path.field("path_prefix").invalid(
                    wire.path_prefix.as_deref().unwrap_or_default(),
                    "set either `path` or `path_prefix`, not both",
                ))
            }
            (Some(p), None) => PathMatch::Exact(check_path(p, "path")?),
            (None, Some(p)) => PathMatch::Prefix(check_path(p, "path_prefix")?),
            (None, None) => PathMatch::Any,
        };
        let mut methods = Vec::new();
        for (i, m) in wire.methods.iter().flatten().enumerate() {
            let valid = !m.is_empty() && m.chars().all(|c| c.is_ascii_alphabetic());
            if !valid {
                return Err(path
                    .field("methods")
                    .index(i)
                    .invalid(m, "not an HTTP method"));
            }
            methods.push(m.to_ascii_uppercase());
        }
        let mut headers = Vec::new();
        for (i, h) in wire.headers.iter().flatten().enumerate() {
            let hp = path.field("headers").index(i);
            let name = validate_header_name(&h.name, &hp.field("name"))?;
            let cond = match (&h.exact, h.present) {
                (Some(v), None) => HeaderCondition::Exact(v.clone()),
                (None, Some(p)) => HeaderCondition::Present(p),
                (None, None) => HeaderCondition::Present(true),
                (Some(_), Some(_)) => {
                    return Err(hp
                        .field("present")
                        .invalid("both", "set either `exact` or `present`, not both"))
                }
            };
            headers.push((name, cond));
        }
        let route_name = match &wire.route_name {
            Some(r) if r.is_empty() => {
                return Err(path.field("route_name").invalid(r, "must not be empty"))
            }
            other => other.clone(),
        };
        Ok(RequestMatch {
            path: path_match,
            methods,
            headers,
            route_name,
        })
    }

    /// Whether `req` satisfies every condition. Cheap conditions are checked first.
    pub fn matches(&self, req: &dyn RequestView) -> bool {
        if !self.methods.is_empty() {
            let Some(method) = req.method() else {
                return false;
            };
            if !self.methods.contains(&method) {
                return false;
            }
        }
        match &self.path {
            PathMatch::Any => {}
            PathMatch::Exact(want) => {
                if req.path().as_deref().map(url_path) != Some(want.as_str()) {
                    return false;
                }
            }
            PathMatch::Prefix(prefix) => {
                if !req
                    .path()
                    .is_some_and(|p| url_path(&p).starts_with(prefix.as_str()))
                {
                    return false;
                }
            }
        }
        for (name, cond) in &self.headers {
            let value = req.header(name);
            let ok = match cond {
                HeaderCondition::Present(want) => value.is_some() == *want,
                HeaderCondition::Exact(want) => value.as_deref() == Some(want.as_str()),
            };
            if !ok {
                return false;
            }
        }
        if let Some(route) = &self.route_name {
            if req.route_name().as_deref() != Some(route.as_str()) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRequest;

    fn matcher(json: &str) -> RequestMatch {
        let wire: MatchWire = serde_json::from_str(json).unwrap();
        RequestMatch::validate(&wire, &FieldPath::root().field("match")).unwrap()
    }

    fn invalid(json: &str) -> ConfigError {
        let wire: MatchWire = serde_json::from_str(json).unwrap();
        RequestMatch::validate(&wire, &FieldPath::root().field("match")).unwrap_err()
    }

    #[test]
    fn an_empty_match_matches_everything() {
        assert!(matcher("{}").matches(&FakeRequest::new("DELETE", "/anything?x")));
    }

    #[test]
    fn path_conditions_ignore_the_query_string() {
        let m = matcher(r#"{"path": "/login"}"#);
        assert!(m.matches(&FakeRequest::new("POST", "/login?next=/")));
        assert!(!m.matches(&FakeRequest::new("POST", "/login/x")));
        let m = matcher(r#"{"path_prefix": "/api/"}"#);
        assert!(m.matches(&FakeRequest::new("GET", "/api/v1?q")));
        assert!(!m.matches(&FakeRequest::new("GET", "/apix")));
        assert!(!m.matches(&FakeRequest::new("GET", "/x?/api/")));
    }

    #[test]
    fn methods_headers_and_route_all_must_hold() {
        let m = matcher(
            r#"{"methods": ["get", "HEAD"], "headers": [{"name": "X-Tier", "exact": "gold"}, {"name": "x-debug", "present": false}], "route_name": "r1"}"#,
        );
        let ok = FakeRequest::new("GET", "/")
            .header("x-tier", "gold")
            .route("r1");
        assert!(m.matches(&ok));
        assert!(!m.matches(
            &FakeRequest::new("POST", "/")
                .header("x-tier", "gold")
                .route("r1")
        ));
        assert!(!m.matches(
            &FakeRequest::new("GET", "/")
                .header("x-tier", "silver")
                .route("r1")
        ));
        assert!(!m.matches(&ok.clone().header("x-debug", "1")));
        assert!(!m.matches(
            &FakeRequest::new("GET", "/")
                .header("x-tier", "gold")
                .route("r2")
        ));
        assert!(!m.matches(&FakeRequest::new("GET", "/").header("x-tier", "gold")));
    }

    #[test]
    fn a_header_with_no_condition_must_be_present() {
        let m = matcher(r#"{"headers": [{"name": "x-api-key"}]}"#);
        assert!(m.matches(&FakeRequest::new("GET", "/").header("x-api-key", "")));
        assert!(!m.matches(&FakeRequest::new("GET", "/")));
    }

    #[test]
    fn invalid_matches_name_the_field() {
        assert_eq!(invalid(r#"{"path": "login"}"#).field.as_str(), "match.path");
        assert_eq!(
            invalid(r#"{"path": "/a", "path_prefix": "/b"}"#)
                .field
                .as_str(),
            "match.path_prefix"
        );
        assert_eq!(
            invalid(r#"{"methods": ["GET", "P O"]}"#).field.as_str(),
            "match.methods[1]"
        );
        assert_eq!(
            invalid(r#"{"headers": [{"name": "a b"}]}"#).field.as_str(),
            "match.headers[0].name"
        );
        assert_eq!(
            invalid(r#"{"headers": [{"name": "a", "exact": "1", "present": true}]}"#)
                .field
                .as_str(),
            "match.headers[0].present"
        );
        assert_eq!(
            invalid(r#"{"route_name": ""}"#).field.as_str(),
            "match.route_name"
        );
    }
}
