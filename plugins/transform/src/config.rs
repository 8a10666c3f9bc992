//! Configuration: JSON wire types (unknown fields rejected) and their validation into the
//! domain types the [`crate::engine`] runs. Every template, regex and JSON pointer is parsed
//! here, once; nothing is parsed per request.
//!
//! The field-by-field reference is `docs/transform.md`; keep the two in step.

use crate::ops::{BodyOps, HeaderOps, Pointer, QueryOps};
use crate::template::{Captures, Piece, Template};
use palisade_core::config::{
    either, number_in, parse_json, validate_each, validate_rules, validate_word, ConfigError,
    FieldPath,
};
use palisade_core::key::{validate_header_name, ClientIpSource, ClientIpWire};
use palisade_core::matcher::{HeaderMatchWire, MatchWire, RequestMatch};
use regex_lite::Regex;
use serde::Deserialize;
use serde_json::Value;

/// Most rules a config may have (each defines five counters per worker).
pub const MAX_RULES: usize = 64;
/// Default and largest body size buffered for JSON edits.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;
pub const MAX_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// Longest regex source accepted (they are compiled in every worker).
const MAX_REGEX_LEN: usize = 1024;

palisade_core::wire! {
    struct Wire {
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["all", "first", null])))]
        mode: Option<String>,
        client_ip: Option<ClientIpWire>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["skip", "empty", null])))]
        on_missing_value: Option<String>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["pass", "reject", null])))]
        on_malformed: Option<String>,
        body: Option<BodyLimitWire>,
        #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_RULES)))]
        rules: Vec<RuleWire>,
    }
}

palisade_core::wire! {
    struct BodyLimitWire {
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_MAX_BODY_BYTES)))]
        max_bytes: Option<u64>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["pass", "reject", null])))]
        on_too_large: Option<String>,
    }
}

palisade_core::wire! {
    struct RuleWire {
        #[cfg_attr(feature = "schema", schemars(regex(pattern = palisade_core::config::NAME_PATTERN)))]
        name: String,
        #[serde(default, rename = "match")]
        matcher: Option<RuleMatchWire>,
        shadow: Option<bool>,
        request: Option<RequestWire>,
        response: Option<ResponseWire>,
    }
}

palisade_core::wire! {
    /// The core matcher's fields plus `path_regex`.
    struct RuleMatchWire {
        #[cfg_attr(feature = "schema", schemars(regex(pattern = "^/")))]
        path: Option<String>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = "^/")))]
        path_prefix: Option<String>,
        #[cfg_attr(feature = "schema", schemars(length(max = MAX_REGEX_LEN)))]
        path_regex: Option<String>,
        methods: Option<Vec<String>>,
        headers: Option<Vec<HeaderMatchWire>>,
        route_name: Option<String>,
    }
}

palisade_core::wire! {
    struct RequestWire {
        headers: Option<HeaderOpsWire>,
        query: Option<QueryOpsWire>,
        path: Option<PathRewriteWire>,
        method: Option<String>,
        body: Option<BodyOpsWire>,
    }
}

palisade_core::wire! {
    struct ResponseWire {
        headers: Option<HeaderOpsWire>,
        body: Option<BodyOpsWire>,
    }
}

palisade_core::wire! {
    #[derive(Default)]
    struct HeaderOpsWire {
        remove: Option<Vec<String>>,
        remove_prefix: Option<Vec<String>>,
        rename: Option<Vec<RenameWire>>,
        set: Option<Vec<NameValueWire>>,
        add: Option<Vec<NameValueWire>>,
        append: Option<Vec<NameValueWire>>,
    }
}

palisade_core::wire! {
    #[derive(Default)]
    struct QueryOpsWire {
        remove: Option<Vec<String>>,
        rename: Option<Vec<RenameWire>>,
        set: Option<Vec<NameValueWire>>,
        add: Option<Vec<NameValueWire>>,
    }
}

palisade_core::wire! {
    struct RenameWire {
        from: String,
        to: String,
    }
}

palisade_core::wire! {
    struct NameValueWire {
        name: String,
        value: String,
    }
}

palisade_core::wire! {
    struct PathRewriteWire {
        prefix: Option<String>,
        regex: Option<String>,
        replacement: String,
    }
}

palisade_core::wire! {
    #[derive(Default)]
    struct BodyOpsWire {
        remove: Option<Vec<String>>,
        rename: Option<Vec<RenameWire>>,
        set: Option<Vec<BodySetWire>>,
    }
}

palisade_core::wire! {
    struct BodySetWire {
        pointer: String,
        /// `Some(Value::Null)` for an explicit `null` (a plain `Option<Value>` would read it as absent).
        #[serde(default, deserialize_with = "present")]
        #[cfg_attr(
            feature = "schema",
            schemars(
                description = "The JSON value to set (any JSON, `null` included); or use `template`."
            )
        )]
        value: Option<Value>,
        template: Option<String>,
    }
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Which matching rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every matching rule, in order, each on the result of the previous ones.
    All,
    /// Only the first matching rule.
    First,
}

/// What to do with input the plugin cannot parse (invalid JSON, bad percent-encoding, invalid
/// UTF-8) when a matching rule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMalformed {
    /// Leave the malformed part untouched (other parts are still transformed); count an error.
    Pass,
    /// Reply 400 to a malformed request. Malformed responses are always passed.
    Reject,
}

/// What to do with a JSON body larger than `body.max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTooLarge {
    /// Forward it untouched; count the rule as skipped.
    Pass,
    /// Reply 413 to the request. Responses are always passed.
    Reject,
}

/// A value a body `set` writes.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyValue {
    Json(Value),
    /// Rendered to a JSON string.
    Template(Template),
}

/// How a path is rewritten.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replace a leading `prefix` with the rendered `replacement`.
    Prefix {
        prefix: String,
        replacement: Template,
    },
    /// Replace the first match of `regex` with the rendered `replacement`, whose `$(path.N)`
    /// refers to this regex's groups.
    Regex { regex: Regex, replacement: Template },
}

/// A rule's operations on the request.
#[derive(Debug, Clone, Default)]
pub struct RequestOps {
    pub headers: HeaderOps<Template>,
    pub query: QueryOps<Template>,
    pub path: Option<PathRewrite>,
    pub method: Option<String>,
    pub body: BodyOps<BodyValue>,
}

/// A rule's operations on the response.
#[derive(Debug, Clone, Default)]
pub struct ResponseOps {
    pub headers: HeaderOps<Template>,
    pub body: BodyOps<BodyValue>,
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub matcher: RequestMatch,
    /// Must also match the URL path; its groups are `$(path.N)` in the rule's templates.
    pub path_regex: Option<Regex>,
    /// Whether the matcher has a `route_name` condition (the glue then reads the route name).
    pub matches_route_name: bool,
    pub shadow: bool,
    pub request: RequestOps,
    pub response: ResponseOps,
}

impl Rule {
    pub fn has_response_ops(&self) -> bool {
        !self.response.headers.is_empty() || !self.response.body.is_empty()
    }

    fn templates(&self) -> impl Iterator<Item = &Template> {
        fn body(b: &BodyOps<BodyValue>) -> impl Iterator<Item = &Template> {
            b.set.iter().filter_map(|(_, v)| match v {
                BodyValue::Template(t) => Some(t),
                BodyValue::Json(_) => None,
            })
        }
        let path = self.request.path.iter().map(|p| match p {
            PathRewrite::Prefix { replacement, .. } | PathRewrite::Regex { replacement, .. } => {
                replacement
            }
        });
        self.request
            .headers
            .values()
            .chain(self.request.query.values())
            .chain(self.response.headers.values())
            .chain(path)
            .chain(body(&self.request.body))
            .chain(body(&self.response.body))
    }
}

/// The validated plugin configuration.
///
/// With the `schema` feature its JSON Schema is the wire format's (`schema/transform.schema.json`).
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(with = "Wire")
)]
pub struct Config {
    pub mode: Mode,
    pub client_ip: ClientIpSource,
    /// A template variable without a value renders as `""` (true) or skips the operation.
    pub missing_as_empty: bool,
    pub on_malformed: OnMalformed,
    pub max_body_bytes: u64,
    pub on_too_large: OnTooLarge,
    pub rules: Vec<Rule>,
    /// Precomputed: whether any template reads the client IP (the glue then reads the source
    /// address; otherwise it does not).
    pub needs_client_ip: bool,
    /// Precomputed: whether any template or matcher reads the route name.
    pub needs_route_name: bool,
}

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let wire: Wire = parse_json(bytes)?;
        Config::validate(wire)
    }

    fn validate(wire: Wire) -> Result<Config, ConfigError> {
        let root = FieldPath::root();
        let mode = either(
            wire.mode.as_deref(),
            &root.field("mode"),
            ("all", Mode::All),
            ("first", Mode::First),
        )?;
        let client_ip = ClientIpSource::validate(
            &wire.client_ip.unwrap_or_default(),
            &root.field("client_ip"),
        )?;
        let missing_as_empty = either(
            wire.on_missing_value.as_deref(),
            &root.field("on_missing_value"),
            ("skip", false),
            ("empty", true),
        )?;
        let on_malformed = either(
            wire.on_malformed.as_deref(),
            &root.field("on_malformed"),
            ("pass", OnMalformed::Pass),
            ("reject", OnMalformed::Reject),
        )?;
        let body = wire.body.unwrap_or(BodyLimitWire {
            max_bytes: None,
            on_too_large: None,
        });
        let max_body_bytes = number_in(
            body.max_bytes,
            DEFAULT_MAX_BODY_BYTES,
            &root.field("body").field("max_bytes"),
            1,
            MAX_MAX_BODY_BYTES,
        )?;
        let on_too_large = either(
            body.on_too_large.as_deref(),
            &root.field("body").field("on_too_large"),
            ("pass", OnTooLarge::Pass),
            ("reject", OnTooLarge::Reject),
        )?;
        let rules = validate_rules(
            &wire.rules,
            &root.field("rules"),
            MAX_RULES,
            validate_rule,
            |r| &r.name,
        )?;
        let needs_client_ip = rules
            .iter()
            .any(|r| r.templates().any(|t| t.uses(|p| *p == Piece::ClientIp)));
        let needs_route_name = rules.iter().any(|r| {
            r.matches_route_name || r.templates().any(|t| t.uses(|p| *p == Piece::RouteName))
        });
        Ok(Config {
            mode,
            client_ip,
            missing_as_empty,
            on_malformed,
            max_body_bytes,
            on_too_large,
            rules,
            needs_client_ip,
            needs_route_name,
        })
    }
}

fn validate_rule(r: &RuleWire, path: &FieldPath) -> Result<Rule, ConfigError> {
    let name = validate_word(
        &r.name,
        &path.field("name"),
        64,
        "_-",
        "1 to 64 characters from A-Z, a-z, 0-9, `_` and `-` (it names metrics)",
    )?;
    let mpath = path.field("match");
    let (matcher, path_regex) = match &r.matcher {
        None => (RequestMatch::any(), None),
        Some(m) => {
            let core = MatchWire {
                path: m.path.clone(),
                path_prefix: m.path_prefix.clone(),
                methods: m.methods.clone(),
                headers: m.headers.clone(),
                route_name: m.route_name.clone(),
            };
            let matcher = RequestMatch::validate(&core, &mpath)?;
            let regex = match &m.path_regex {
                Some(src) => Some(compile_regex(src, &mpath.field("path_regex"))?),
                None => None,
            };
            (matcher, regex)
        }
    };
    let names: Option<Vec<Option<String>>> = path_regex.as_ref().map(group_names);
    let captures = Captures {
        names: names.as_deref(),
    };
    let request = match &r.request {
        Some(w) => request_ops(w, &path.field("request"), captures)?,
        None => RequestOps::default(),
    };
    let response = match &r.response {
        Some(w) => response_ops(w, &path.field("response"), captures)?,
        None => ResponseOps::default(),
    };
    Ok(Rule {
        name,
        matcher,
        path_regex,
        matches_route_name: r.matcher.as_ref().is_some_and(|m| m.route_name.is_some()),
        shadow: r.shadow.unwrap_or(false),
        request,
        response,
    })
}

/// A rule's `request` section, in the order the engine applies it.
fn request_ops(
    w: &RequestWire,
    path: &FieldPath,
    captures: Captures<'_>,
) -> Result<RequestOps, ConfigError> {
    Ok(RequestOps {
        headers: header_ops(w.headers.as_ref(), &path.field("headers"), captures)?,
        query: query_ops(w.query.as_ref(), &path.field("query"), captures)?,
        path: (w.path.as_ref())
            .map(|p| path_rewrite(p, &path.field("path")))
            .transpose()?,
        method: (w.method.as_deref())
            .map(|m| method(m, &path.field("method")))
            .transpose()?,
        body: body_ops(w.body.as_ref(), &path.field("body"), captures)?,
    })
}

/// A rule's `response` section.
fn response_ops(
    w: &ResponseWire,
    path: &FieldPath,
    captures: Captures<'_>,
) -> Result<ResponseOps, ConfigError> {
    Ok(ResponseOps {
        headers: header_ops(w.headers.as_ref(), &path.field("headers"), captures)?,
        body: body_ops(w.body.as_ref(), &path.field("body"), captures)?,
    })
}

fn compile_regex(src: &str, path: &FieldPath) -> Result<Regex, ConfigError> {
    if src.len() > MAX_REGEX_LEN {
        return Err(path.out_of_range(src.len(), 1, MAX_REGEX_LEN));
    }
    Regex::new(src).map_err(|e| path.invalid(src, format!("not a valid regex: {e}")))
}

fn group_names(re: &Regex) -> Vec<Option<String>> {
    re.capture_names().map(|n| n.map(str::to_owned)).collect()
}

/// A header name an operation may touch: valid, lowercase, not a pseudo-header (use
/// `request.path` / `request.method`), not framing (`content-length`, `transfer-encoding`:
/// the plugin keeps those consistent itself).
fn op_header_name(name: &str, path: &FieldPath) -> Result<String, ConfigError> {
    let n = validate_header_name(name, path)?;
    if n.starts_with(':') {
        return Err(path.invalid(
            name,
            "pseudo-headers cannot be edited here; use `request.path` or `request.method`",
        ));
    }
    if n == "content-length" || n == "transfer-encoding" {
        return Err(path.invalid(
            name,
            "framing headers are managed by the plugin (it fixes content-length after body edits)",
        ));
    }
    Ok(n)
}

/// A header value: a template without CR, LF or NUL.
fn header_value(
    text: &str,
    captures: Captures<'_>,
    path: &FieldPath,
) -> Result<Template, ConfigError> {
    if text.contains(['\r', '\n', '\0']) {
        return Err(path.invalid(text, "header values cannot contain CR, LF or NUL"));
    }
    Template::parse(text, captures, path)
}

/// How the operations on one kind of named things (headers, query parameters) check the names
/// they touch and the values they write: `remove`, `rename`, `set`, `add` read the same for
/// both.
struct NamedOps<'c> {
    name: fn(&str, &FieldPath) -> Result<String, ConfigError>,
    value: fn(&str, Captures<'c>, &FieldPath) -> Result<Template, ConfigError>,
    captures: Captures<'c>,
}

impl NamedOps<'_> {
    /// A list of names (absent: empty).
    fn names(
        &self,
        list: Option<&Vec<String>>,
        path: &FieldPath,
    ) -> Result<Vec<String>, ConfigError> {
        validate_each(list.into_iter().flatten(), path, |n, p| (self.name)(n, p))
    }

    /// `{from, to}` pairs, both names.
    fn renames(
        &self,
        list: Option<&Vec<RenameWire>>,
        path: &FieldPath,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        validate_each(list.into_iter().flatten(), path, |r, p| {
            Ok((
                (self.name)(&r.from, &p.field("from"))?,
                (self.name)(&r.to, &p.field("to"))?,
            ))
        })
    }

    /// `{name, value}` pairs: a name and a value template.
    fn values(
        &self,
        list: Option<&Vec<NameValueWire>>,
        path: &FieldPath,
    ) -> Result<Vec<(String, Template)>, ConfigError> {
        validate_each(list.into_iter().flatten(), path, |nv, p| {
            Ok((
                (self.name)(&nv.name, &p.field("name"))?,
                (self.value)(&nv.value, self.captures, &p.field("value"))?,
            ))
        })
    }
}

fn header_ops(
    w: Option<&HeaderOpsWire>,
    path: &FieldPath,
    captures: Captures<'_>,
) -> Result<HeaderOps<Template>, ConfigError> {
    let Some(w) = w else {
        return Ok(HeaderOps::default());
    };
    let prefixes = validate_each(
        w.remove_prefix.iter().flatten(),
        &path.field("remove_prefix"),
        |p, fp| {
            // A prefix is a header name's beginning: same characters, but `x-` ends in `-`.
            let n = validate_header_name(p, fp)?;
            if n.starts_with(':') {
                return Err(fp.invalid(p, "pseudo-headers cannot be removed"));
            }
            if "content-length".starts_with(&n) || "transfer-encoding".starts_with(&n) {
                return Err(fp.invalid(p, "this prefix would remove framing headers"));
            }
            Ok(n)
        },
    )?;
    let ops = NamedOps {
        name: op_header_name,
        value: header_value,
        captures,
    };
    Ok(HeaderOps {
        remove: ops.names(w.remove.as_ref(), &path.field("remove"))?,
        remove_prefix: prefixes,
        rename: ops.renames(w.rename.as_ref(), &path.field("rename"))?,
        set: ops.values(w.set.as_ref(), &path.field("set"))?,
        add: ops.values(w.add.as_ref(), &path.field("add"))?,
        append: ops.values(w.append.as_ref(), &path.field("append"))?,
    })
}

fn query_name(name: &str, path: &FieldPath) -> Result<String, ConfigError> {
    if name.is_empty() {
        Err(path.invalid(name, "query parameter names must not be empty"))
    } else {
        Ok(name.to_owned())
    }
}

fn query_ops(
    w: Option<&QueryOpsWire>,
    path: &FieldPath,
    captures: Captures<'_>,
) -> Result<QueryOps<Template>, ConfigError> {
    let Some(w) = w else {
        return Ok(QueryOps::default());
    };
    let ops = NamedOps {
        name: query_name,
        value: Template::parse,
        captures,
    };
    Ok(QueryOps {
        remove: ops.names(w.remove.as_ref(), &path.field("remove"))?,
        rename: ops.renames(w.rename.as_ref(), &path.field("rename"))?,
        set: ops.values(w.set.as_ref(), &path.field("set"))?,
        add: ops.values(w.add.as_ref(), &path.field("add"))?,
    })
}

fn path_rewrite(w: &PathRewriteWire, path: &FieldPath) -> Result<PathRewrite, ConfigError> {
    let starts_with_slash =
        |t: &Template| matches!(t.pieces().first(), Some(Piece::Literal(s)) if s.starts_with('/'));
    match (&w.prefix, &w.regex) {
        (Some(prefix), None) => {
            if !prefix.starts_with('/') {
                return Err(path.field("prefix").invalid(prefix, "must start with `/`"));
            }
            let replacement =
                Template::parse(&w.replacement, Captures::NONE, &path.field("replacement"))?;
            if !starts_with_slash(&replacement) {
                return Err(path
                    .field("replacement")
                    .invalid(&w.replacement, "a prefix replacement must start with `/`"));
            }
            Ok(PathRewrite::Prefix {
                prefix: prefix.clone(),
                replacement,
            })
        }
        (None, Some(src)) => {
            let regex = compile_regex(src, &path.field("regex"))?;
            let names = group_names(&regex);
            let replacement = Template::parse(
                &w.replacement,
                Captures {
                    names: Some(&names),
                },
                &path.field("replacement"),
            )?;
            Ok(PathRewrite::Regex { regex, replacement })
        }
        (Some(_), Some(_)) => Err(path
            .field("regex")
            .invalid("both", "set either `prefix` or `regex`, not both")),
        (None, None) => Err(path.missing("set `prefix` or `regex`")),
    }
}

fn method(m: &str, path: &FieldPath) -> Result<String, ConfigError> {
    if m.is_empty() || m.len() > 32 || !m.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(path.invalid(m, "not an HTTP method"));
    }
    Ok(m.to_ascii_uppercase())
}

fn pointer(text: &str, path: &FieldPath) -> Result<Pointer, ConfigError> {
    Pointer::parse(text).map_err(|reason| path.invalid(text, reason))
}

fn body_ops(
    w: Option<&BodyOpsWire>,
    path: &FieldPath,
    captures: Captures<'_>,
) -> Result<BodyOps<BodyValue>, ConfigError> {
    let Some(w) = w else {
        return Ok(BodyOps::default());
    };
    let remove = validate_each(w.remove.iter().flatten(), &path.field("remove"), |p, fp| {
        pointer(p, fp)
    })?;
    let rename = validate_each(w.rename.iter().flatten(), &path.field("rename"), |r, p| {
        let from = pointer(&r.from, &p.field("from"))?;
        let to = pointer(&r.to, &p.field("to"))?;
        if from.is_within(&to) || to.is_within(&from) {
            return Err(p
                .field("to")
                .invalid(&r.to, "`from` and `to` must not contain each other"));
        }
        Ok((from, to))
    })?;
    let set = validate_each(w.set.iter().flatten(), &path.field("set"), |s, p| {
        let ptr = pointer(&s.pointer, &p.field("pointer"))?;
        let value = match (&s.value, &s.template) {
            (Some(v), None) => BodyValue::Json(v.clone()),
            (None, Some(t)) => {
                BodyValue::Template(Template::parse(t, captures, &p.field("template"))?)
            }
            (Some(_), Some(_)) => {
                return Err(p
                    .field("template")
                    .invalid("both", "set either `value` or `template`, not both"))
            }
            (None, None) => {
                return Err(p.missing("set `value` (any JSON) or `template` (a string)"))
            }
        };
        Ok((ptr, value))
    })?;
    Ok(BodyOps {
        remove,
        rename,
        set,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Config, ConfigError> {
        Config::parse(v.to_string().as_bytes())
    }

    fn field_of(v: Value) -> String {
        parse(v).unwrap_err().field.as_str().to_owned()
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() {
        let c = parse(json!({"rules": [{"name": "r"}]})).unwrap();
        assert_eq!(c.mode, Mode::All);
        assert!(!c.missing_as_empty);
        assert_eq!(c.on_malformed, OnMalformed::Pass);
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.on_too_large, OnTooLarge::Pass);
        assert!(!c.needs_client_ip);
        assert!(!c.rules[0].shadow);
    }

    #[test]
    fn a_full_config_parses() {
        let c = parse(json!({
            "mode": "first", "on_missing_value": "empty", "on_malformed": "reject",
            "client_ip": {"trusted_hops": 1},
            "body": {"max_bytes": 1000, "on_too_large": "reject"},
            "rules": [{
                "name": "v1",
                "match": {"path_regex": "^/v1/(?P<item>[a-z]+)/(\\d+)$", "methods": ["POST"]},
                "shadow": true,
                "request": {
                    "headers": {"remove": ["x-a"], "remove_prefix": ["x-internal-"],
                        "rename": [{"from": "x-old", "to": "x-new"}],
                        "set": [{"name": "x-item", "value": "$(path.item)-$(path.2)"}],
                        "add": [{"name": "x-ip", "value": "$(client_ip)"}],
                        "append": [{"name": "x-via", "value": "palisade"}]},
                    "query": {"remove": ["debug"], "rename": [{"from": "p", "to": "page"}],
                        "set": [{"name": "v", "value": "2"}], "add": [{"name": "r", "value": "$(route_name)"}]},
                    "path": {"regex": "^/v1/", "replacement": "/v2/"},
                    "method": "put",
                    "body": {"remove": ["/password"], "rename": [{"from": "/a", "to": "/b"}],
                        "set": [{"pointer": "/meta/n", "value": 1}, {"pointer": "/meta/u", "template": "$(headers.x-user)"}]}
                },
                "response": {"headers": {"set": [{"name": "x-served-by", "value": "gw"}]},
                    "body": {"remove": ["/internal"]}}
            }]
        }))
        .unwrap();
        assert_eq!(c.mode, Mode::First);
        assert!(c.needs_client_ip);
        assert!(c.needs_route_name);
        let r = &c.rules[0];
        assert_eq!(r.request.method.as_deref(), Some("PUT"));
        assert!(r.has_response_ops());
        assert_eq!(r.request.headers.set[0].1.pieces()[0], Piece::Capture(1));
    }

    #[test]
    fn invalid_fields_are_named() {
        let rule = |extra: Value| {
            let mut r = json!({"name": "r"});
            if let (Some(o), Some(e)) = (r.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            json!({"rules": [r]})
        };
        let cases = [
            (json!({"rules": []}), "rules"),
            (json!({"mode": "some", "rules": [{"name": "r"}]}), "mode"),
            (
                json!({"on_malformed": "drop", "rules": [{"name": "r"}]}),
                "on_malformed",
            ),
            (
                json!({"on_missing_value": "x", "rules": [{"name": "r"}]}),
                "on_missing_value",
            ),
            (
                json!({"body": {"max_bytes": 0}, "rules": [{"name": "r"}]}),
                "body.max_bytes",
            ),
            (
                json!({"body": {"on_too_large": "x"}, "rules": [{"name": "r"}]}),
                "body.on_too_large",
            ),
            (json!({"rules": [{"name": "a b"}]}), "rules[0].name"),
            (
                json!({"rules": [{"name": "a"}, {"name": "a"}]}),
                "rules[1].name",
            ),
            (
                json!({"rules": [{"name": "a", "typo": 1}]}),
                "rules[0].typo",
            ),
            (
                rule(json!({"match": {"path_regex": "("}})),
                "rules[0].match.path_regex",
            ),
            (rule(json!({"match": {"path": "x"}})), "rules[0].match.path"),
            (
                rule(json!({"request": {"headers": {"remove": [":path"]}}})),
                "rules[0].request.headers.remove[0]",
            ),
            (
                rule(
                    json!({"request": {"headers": {"set": [{"name": "content-length", "value": "1"}]}}}),
                ),
                "rules[0].request.headers.set[0].name",
            ),
            (
                rule(json!({"request": {"headers": {"set": [{"name": "x", "value": "a\r\nb"}]}}})),
                "rules[0].request.headers.set[0].value",
            ),
            (
                rule(
                    json!({"request": {"headers": {"set": [{"name": "x", "value": "$(path.1)"}]}}}),
                ),
                "rules[0].request.headers.set[0].value",
            ),
            (
                rule(json!({"request": {"headers": {"remove_prefix": ["content-"]}}})),
                "rules[0].request.headers.remove_prefix[0]",
            ),
            (
                rule(json!({"request": {"headers": {"rename": [{"from": "a", "to": "b c"}]}}})),
                "rules[0].request.headers.rename[0].to",
            ),
            (
                rule(json!({"request": {"query": {"remove": [""]}}})),
                "rules[0].request.query.remove[0]",
            ),
            (
                rule(json!({"request": {"query": {"add": [{"name": "a", "value": "$(bogus)"}]}}})),
                "rules[0].request.query.add[0].value",
            ),
            (
                rule(json!({"request": {"path": {"replacement": "/x"}}})),
                "rules[0].request.path",
            ),
            (
                rule(
                    json!({"request": {"path": {"prefix": "/a", "regex": "b", "replacement": "/x"}}}),
                ),
                "rules[0].request.path.regex",
            ),
            (
                rule(json!({"request": {"path": {"prefix": "/a", "replacement": "x"}}})),
                "rules[0].request.path.replacement",
            ),
            (
                rule(json!({"request": {"path": {"regex": "^/(a)", "replacement": "/$(path.2)"}}})),
                "rules[0].request.path.replacement",
            ),
            (
                rule(json!({"request": {"method": "G E T"}})),
                "rules[0].request.method",
            ),
            (
                rule(json!({"request": {"body": {"remove": ["nope"]}}})),
                "rules[0].request.body.remove[0]",
            ),
            (
                rule(json!({"request": {"body": {"rename": [{"from": "/a", "to": "/a/b"}]}}})),
                "rules[0].request.body.rename[0].to",
            ),
            (
                rule(json!({"request": {"body": {"set": [{"pointer": "/a"}]}}})),
                "rules[0].request.body.set[0]",
            ),
            (
                rule(
                    json!({"response": {"body": {"set": [{"pointer": "/a", "value": 1, "template": "x"}]}}}),
                ),
                "rules[0].response.body.set[0].template",
            ),
        ];
        for (config, want) in cases {
            assert_eq!(field_of(config.clone()), want, "{config}");
        }
    }

    #[test]
    fn the_reference_example_in_the_docs_is_a_valid_config() {
        let doc = include_str!("../../../docs/transform.md");
        let start = doc.find("```json\n").unwrap() + "```json\n".len();
        let end = start + doc[start..].find("```").unwrap();
        let c = Config::parse(&doc.as_bytes()[start..end]).unwrap();
        assert_eq!(c.rules[0].name, "users_v1");
    }

    #[test]
    fn error_messages_carry_the_bad_value() {
        let err = parse(json!({"rules": [{"name": "r", "request": {"headers": {"set": [{"name": "x", "value": "$(header.x)"}]}}}]}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rules[0].request.headers.set[0].value"),
            "{err}"
        );
        assert!(err.contains("$(header.x)"), "{err}");
    }
}
