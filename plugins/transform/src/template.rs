//! Value templates: `"Bearer $(headers.x-token)"`, `"/v2/$(path.rest)"`, `"$(client_ip)"`.
//!
//! Templates are parsed once, at config time, into literal and variable pieces, so a typo in a
//! variable (`$(header.x)`, an unknown capture name) rejects the config with the field's path
//! instead of rendering garbage at request time. Rendering only concatenates.
//!
//! Variables:
//!
//! | syntax | value |
//! |---|---|
//! | `$(headers.<name>)` | the request header as received (several values joined with `,`) |
//! | `$(query.<name>)` | the first value of the query parameter, percent-decoded |
//! | `$(path.<n>)` / `$(path.<name>)` | a capture group of the path regex (see [`Captures`]) |
//! | `$(path)` | the URL path as received, without the query |
//! | `$(method)` | the request method as received |
//! | `$(client_ip)` | the client IP (`client_ip.trusted_hops` decides how it is found) |
//! | `$(route_name)` | the name of the route Envoy matched |
//! | `$(claims.<name>)` | a claim of the token jwt_auth verified earlier in the same `palisade` chain (strings as they are, numbers and booleans as JSON; dotted names reach into objects); absent outside a chain |
//!
//! `$$` is a literal `$`. Every other character is literal.
//!
//! Templates always read the request **as it arrived at the plugin**, never a partly transformed
//! one: the result of a rule does not depend on the order of its operations, or on earlier rules.

use palisade_core::config::{ConfigError, FieldPath};
use palisade_core::key::validate_header_name;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Header(String),
    Query(String),
    /// Index of a capture group (0 is the whole match).
    Capture(usize),
    Path,
    Method,
    ClientIp,
    RouteName,
    /// A verified claim (chain only).
    Claim(String),
}

/// Which capture groups a template may name: the groups of the regex its captures come from.
#[derive(Debug, Clone, Copy)]
pub struct Captures<'a> {
    /// Group names by index (index 0 is the whole match and has no name); `None` when no regex
    /// provides captures for this template.
    pub names: Option<&'a [Option<String>]>,
}

impl Captures<'_> {
    pub const NONE: Captures<'static> = Captures { names: None };
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// What the request offers to a template; `None` means the value is absent.
pub trait Values {
    /// `Err(())` when the value exists but is malformed (not UTF-8, bad percent-encoding).
    fn header(&self, name: &str) -> Result<Option<String>, Malformed>;
    fn query(&self, name: &str) -> Result<Option<String>, Malformed>;
    fn capture(&self, index: usize) -> Option<String>;
    fn path(&self) -> Option<String>;
    fn method(&self) -> Option<String>;
    fn client_ip(&self) -> Option<String>;
    fn route_name(&self) -> Option<String>;
    /// A claim verified earlier in the chain; none by default.
    fn claim(&self, _name: &str) -> Option<String> {
        None
    }
}

/// A value a template needed could not be read: which part of the request was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The result of rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    Value(String),
    /// A variable had no value and the config says to skip such operations.
    Missing,
}

impl Template {
    /// A template made of one literal.
    pub fn literal(text: &str) -> Template {
        Template {
            pieces: vec![Piece::Literal(text.to_owned())],
        }
    }

    pub fn parse(
        text: &str,
        captures: Captures<'_>,
        path: &FieldPath,
    ) -> Result<Self, ConfigError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            literal.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                literal.push('$');
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('(') {
                let Some(end) = tail.find(')') else {
                    return Err(
                        path.invalid(text, "unterminated `$(`; write `$$` for a literal `$`")
                    );
                };
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(parse_variable(&tail[..end], text, captures, path)?);
                rest = &tail[end + 1..];
            } else {
                literal.push('$');
                rest = after;
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template { pieces })
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The text if the template has no variables.
    pub fn as_literal(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [] => Some(""),
            [Piece::Literal(s)] => Some(s),
            _ => None,
        }
    }

    pub fn uses(&self, f: impl Fn(&Piece) -> bool) -> bool {
        self.pieces.iter().any(f)
    }

    /// Render against `values`. A missing variable renders as `""` when `missing_as_empty`,
    /// otherwise the whole template is [`Rendered::Missing`].
    pub fn render(
        &self,
        values: &dyn Values,
        missing_as_empty: bool,
    ) -> Result<Rendered, Malformed> {
        if let Some(text) = self.as_literal() {
            return Ok(Rendered::Value(text.to_owned()));
        }
        let mut out = String::new();
        for piece in &self.pieces {
            let value = match piece {
                Piece::Literal(s) => {
                    out.push_str(s);
                    continue;
                }
                Piece::Header(name) => values.header(name)?,
                Piece::Query(name) => values.query(name)?,
                Piece::Capture(i) => values.capture(*i),
                Piece::Path => values.path(),
                Piece::Method => values.method(),
                Piece::ClientIp => values.client_ip(),
                Piece::RouteName => values.route_name(),
                Piece::Claim(name) => values.claim(name),
            };
            match value {
                Some(v) => out.push_str(&v),
                None if missing_as_empty => {}
                None => return Ok(Rendered::Missing),
            }
        }
        Ok(Rendered::Value(out))
    }
}

fn parse_variable(
    var: &str,
    text: &str,
    captures: Captures<'_>,
    path: &FieldPath,
) -> Result<Piece, ConfigError> {
    let (kind, arg) = match var.split_once('.') {
        Some((k, a)) => (k, Some(a)),
        None => (var, None),
    };
    Ok(match (kind, arg) {
        ("headers", Some(name)) => Piece::Header(
            validate_header_name(name, path)
                .map_err(|_| path.invalid(text, format!("`{name}` is not a valid header name")))?,
        ),
        ("query", Some(name)) if !name.is_empty() => Piece::Query(name.to_owned()),
        ("path", None) => Piece::Path,
        ("path", Some(group)) => {
            let Some(names) = captures.names else {
                return Err(path.invalid(
                    text,
                    "`$(path.N)` needs a regex with capture groups (`match.path_regex`, or the \
                     `regex` of a path rewrite)",
                ));
            };
            let index = match group.parse::<usize>() {
                Ok(i) if i < names.len() => i,
                Ok(_) => {
                    return Err(path.invalid(
                        text,
                        format!(
                            "the regex has no capture group {group} (it has {})",
                            names.len().saturating_sub(1)
                        ),
                    ))
                }
                Err(_) => names
                    .iter()
                    .position(|n| n.as_deref() == Some(group))
                    .ok_or_else(|| {
                        path.invalid(
                            text,
                            format!("the regex has no capture group named `{group}`"),
                        )
                    })?,
            };
            Piece::Capture(index)
        }
        ("method", None) => Piece::Method,
        ("client_ip", None) => Piece::ClientIp,
        ("route_name", None) => Piece::RouteName,
        ("claims", Some(name)) if !name.is_empty() => Piece::Claim(name.to_owned()),
        _ => {
            return Err(path.invalid(
                text,
                format!(
                    "unknown variable `$({var})`; expected headers.<name>, query.<name>, path, \
                     path.<group>, method, client_ip, route_name or claims.<name>"
                ),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V;
    impl Values for V {
        fn header(&self, name: &str) -> Result<Option<String>, Malformed> {
            match name {
                "x-user" => Ok(Some("alice".into())),
                "x-bin" => Err(Malformed("header value is not UTF-8")),
                _ => Ok(None),
            }
        }
        fn query(&self, name: &str) -> Result<Option<String>, Malformed> {
            Ok((name == "page").then(|| "2".to_owned()))
        }
        fn capture(&self, index: usize) -> Option<String> {
            (index == 1).then(|| "42".to_owned())
        }
        fn path(&self) -> Option<String> {
            Some("/items/42".into())
        }
        fn method(&self) -> Option<String> {
            Some("GET".into())
        }
        fn client_ip(&self) -> Option<String> {
            Some("10.0.0.1".into())
        }
        fn route_name(&self) -> Option<String> {
            None
        }
    }

    fn names() -> Vec<Option<String>> {
        vec![None, Some("id".into())]
    }

    fn parse(text: &str) -> Result<Template, ConfigError> {
        let n = names();
        Template::parse(
            text,
            Captures { names: Some(&n) },
            &FieldPath::root().field("value"),
        )
    }

    #[test]
    fn every_variable_renders_from_the_request() {
        let t = parse("$(method) $(path) u=$(headers.X-User) p=$(query.page) id=$(path.id)/$(path.1) ip=$(client_ip)").unwrap();
        assert_eq!(
            t.render(&V, false).unwrap(),
            Rendered::Value("GET /items/42 u=alice p=2 id=42/42 ip=10.0.0.1".into())
        );
    }

    #[test]
    fn literals_and_dollar_escapes_stay_literal() {
        let t = parse("cost: $$5 or $ 6 $$(x)").unwrap();
        assert_eq!(t.as_literal(), Some("cost: $5 or $ 6 $(x)"));
    }

    #[test]
    fn a_missing_value_skips_or_renders_empty_as_configured() {
        let t = parse("r=$(route_name)!").unwrap();
        assert_eq!(t.render(&V, false).unwrap(), Rendered::Missing);
        assert_eq!(t.render(&V, true).unwrap(), Rendered::Value("r=!".into()));
    }

    #[test]
    fn a_malformed_source_value_is_an_error_not_a_panic() {
        let t = parse("$(headers.x-bin)").unwrap();
        assert!(t.render(&V, true).is_err());
    }

    #[test]
    fn bad_templates_are_rejected_with_the_field_path() {
        for bad in [
            "$(header.x)",
            "$(headers.a b)",
            "$(query.)",
            "$(path.2)",
            "$(path.nope)",
            "$(nope)",
            "unterminated $(headers.x",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.field.as_str(), "value", "{bad}");
            assert!(err.to_string().contains("invalid value"), "{bad}: {err}");
        }
        let err = Template::parse("$(path.1)", Captures::NONE, &FieldPath::root()).unwrap_err();
        assert!(err.to_string().contains("needs a regex"), "{err}");
    }
}
