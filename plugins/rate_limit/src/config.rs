//! Configuration: JSON wire types (unknown fields rejected) and their validation.
//!
//! The field-by-field reference is `docs/rate_limit.md`; keep the two in step.

use crate::bucket::Limit;
use crate::global::{GlobalSpec, GlobalWire, OnError};
use crate::shape::{validate_rule_shapes, Shape};
use palisade_core::config::{
    in_range, list_len, number_in, one_of_or, parse_duration, parse_json, validate_each,
    validate_rules, validate_scope, ConfigError, FieldPath, ReplyWire as ResponseWire,
};
pub use palisade_core::config::{validate_name, FailureMode, ReplySpec};
use palisade_core::key::{ClientIpSource, ClientIpWire, KeyPartWire, KeySpec};
use palisade_core::matcher::{MatchWire, RequestMatch};
use std::time::Duration;

palisade_core::wire! {
    struct Wire {
        #[cfg_attr(feature = "schema", schemars(regex(pattern = palisade_core::config::NAME_PATTERN)))]
        scope: Option<String>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["first", "all", null])))]
        mode: Option<String>,
        client_ip: Option<ClientIpWire>,
        headers_on_allowed: Option<bool>,
        failure_mode: Option<String>,
        #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_RULES)))]
        rules: Vec<RuleWire>,
    }
}

palisade_core::wire! {
    struct RuleWire {
        #[cfg_attr(feature = "schema", schemars(regex(pattern = palisade_core::config::NAME_PATTERN)))]
        name: String,
        #[serde(default, rename = "match")]
        matcher: Option<MatchWire>,
        #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
        key: Vec<KeyPartWire>,
        /// Required, save in a `global` rule with `on_error` allow or deny.
        #[serde(default)]
        #[cfg_attr(feature = "schema", schemars(length(max = MAX_LIMITS)))]
        limits: Vec<LimitWire>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["skip", "shared_bucket", null])))]
        on_missing_key: Option<String>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["allow", "deny", null])))]
        failure_mode: Option<String>,
        shadow: Option<bool>,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_MAX_KEYS)))]
        max_keys: Option<u64>,
        response: Option<ResponseWire>,
        global: Option<GlobalWire>,
    }
}

palisade_core::wire! {
    struct LimitWire {
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_CAPACITY)))]
        capacity: u64,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_CAPACITY)))]
        refill: u64,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        period: String,
        shape: Option<crate::shape::ShapeWire>,
    }
}

/// Which matching rules apply to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only the first rule that matches (and has its key) applies.
    First,
    /// Every matching rule applies, in order; the first denial stops evaluation.
    All,
}

/// What to do when a request lacks a part of the rule's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingKey {
    /// The rule does not apply to this request.
    Skip,
    /// All such requests share one bucket.
    SharedBucket,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub matcher: RequestMatch,
    pub key: KeySpec,
    pub limits: Vec<Limit>,
    /// Each limit's `shape` (one per limit), or empty when no limit shapes.
    pub shapes: Vec<Option<Shape>>,
    pub on_missing_key: MissingKey,
    pub failure_mode: FailureMode,
    pub shadow: bool,
    pub max_keys: u64,
    pub reply: ReplySpec,
    /// Decided by a rate limit service (`global.rs`); `limits` are then its local tier.
    pub global: Option<GlobalSpec>,
}

/// The validated plugin configuration.
///
/// With the `schema` feature its JSON Schema is the wire format's (`schema/rate_limit.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(with = "Wire")
)]
pub struct Config {
    pub scope: String,
    pub mode: Mode,
    pub client_ip: ClientIpSource,
    pub headers_on_allowed: bool,
    /// The rules' default `failure_mode` (each rule may override it).
    pub failure_mode: FailureMode,
    pub rules: Vec<Rule>,
}

pub const DEFAULT_MAX_KEYS: u64 = 4096;
pub const MAX_MAX_KEYS: u64 = 1_000_000;
pub const MAX_RULES: usize = 64;
pub const MAX_LIMITS: usize = 8;
pub const MAX_CAPACITY: u64 = 1_000_000_000;
pub const MAX_PERIOD: Duration = Duration::from_secs(30 * 86_400);
pub const MIN_PERIOD: Duration = Duration::from_millis(1);

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let wire: Wire = parse_json(bytes)?;
        let root = FieldPath::root();
        let scope = validate_scope(wire.scope.as_deref(), &root)?;
        let mode = one_of_or(
            wire.mode.as_deref(),
            Mode::First,
            &root.field("mode"),
            &[("first", Mode::First), ("all", Mode::All)],
        )?;
        let client_ip = ClientIpSource::validate(
            &wire.client_ip.clone().unwrap_or_default(),
            &root.field("client_ip"),
        )?;
        let failure_mode =
            FailureMode::validate(wire.failure_mode.as_deref(), &root.field("failure_mode"))?;
        let rules = validate_rules(
            &wire.rules,
            &root.field("rules"),
            MAX_RULES,
            |rw, path| validate_rule(rw, path, failure_mode),
            |r| &r.name,
        )?;
        Ok(Config {
            scope,
            mode,
            client_ip,
            headers_on_allowed: wire.headers_on_allowed.unwrap_or(false),
            failure_mode,
            rules,
        })
    }
}

fn validate_rule(
    rw: &RuleWire,
    path: &FieldPath,
    default_failure_mode: FailureMode,
) -> Result<Rule, ConfigError> {
    let name = validate_name(&rw.name, &path.field("name"))?;
    let matcher = RequestMatch::validate_optional(rw.matcher.as_ref(), &path.field("match"))?;
    let key = KeySpec::validate(&rw.key, &path.field("key"))?;
    let global = rw
        .global
        .as_ref()
        .map(|g| GlobalSpec::validate(g, &path.field("global")))
        .transpose()?;
    // A global rule falls back to its limits only with `on_error: local`.
    let needs_limits = global.as_ref().is_none_or(|g| g.on_error == OnError::Local);
    if needs_limits || !rw.limits.is_empty() {
        list_len(
            rw.limits.len(),
            &path.field("limits"),
            MAX_LIMITS,
            "a rule needs at least one limit (a `global` rule: unless its `on_error` is allow or deny)",
        )?;
    }
    let limits = validate_each(&rw.limits, &path.field("limits"), validate_limit)?;
    let shapes = validate_rule_shapes(
        &rw.limits
            .iter()
            .map(|l| l.shape.as_ref())
            .collect::<Vec<_>>(),
        &path.field("limits"),
        rw.shadow.unwrap_or(false),
        global.is_some(),
    )?;
    let on_missing_key = one_of_or(
        rw.on_missing_key.as_deref(),
        MissingKey::Skip,
        &path.field("on_missing_key"),
        &[
            ("skip", MissingKey::Skip),
            ("shared_bucket", MissingKey::SharedBucket),
        ],
    )?;
    let failure_mode = FailureMode::validate_or(
        rw.failure_mode.as_deref(),
        default_failure_mode,
        &path.field("failure_mode"),
    )?;
    let max_keys = number_in(
        rw.max_keys,
        DEFAULT_MAX_KEYS,
        &path.field("max_keys"),
        1,
        MAX_MAX_KEYS,
    )?;
    let reply = ReplySpec::validate(
        rw.response.as_ref(),
        &path.field("response"),
        429,
        "rate limit exceeded\n",
    )?;
    Ok(Rule {
        name,
        matcher,
        key,
        limits,
        shapes,
        on_missing_key,
        failure_mode,
        shadow: rw.shadow.unwrap_or(false),
        max_keys,
        reply,
        global,
    })
}

fn validate_limit(lw: &LimitWire, path: &FieldPath) -> Result<Limit, ConfigError> {
    let capacity = in_range(lw.capacity, &path.field("capacity"), 1, MAX_CAPACITY)?;
    let refill = in_range(lw.refill, &path.field("refill"), 1, MAX_CAPACITY)?;
    let period = parse_duration(&lw.period, &path.field("period"))?;
    if period < MIN_PERIOD || period > MAX_PERIOD {
        return Err(path.field("period").out_of_range(&lw.period, "1ms", "30d"));
    }
    Ok(Limit {
        capacity,
        refill,
        period,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"rules": [{"name": "per-ip", "key": ["client_ip"],
        "limits": [{"capacity": 5, "refill": 1, "period": "1s"}]}]}"#;

    fn err(json: &str) -> ConfigError {
        Config::parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_minimal_config_gets_documented_defaults() {
        let c = Config::parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.scope, "default");
        assert_eq!(c.mode, Mode::First);
        assert!(!c.headers_on_allowed);
        let r = &c.rules[0];
        assert_eq!(r.on_missing_key, MissingKey::Skip);
        assert_eq!(r.failure_mode, FailureMode::Allow);
        assert!(!r.shadow);
        assert_eq!(r.max_keys, DEFAULT_MAX_KEYS);
        assert_eq!(r.reply.status, 429);
        assert_eq!(
            r.limits,
            vec![Limit {
                capacity: 5,
                refill: 1,
                period: Duration::from_secs(1)
            }]
        );
    }

    #[test]
    fn a_full_config_parses() {
        let c = Config::parse(
            br#"{"scope": "edge", "mode": "all", "client_ip": {"trusted_hops": 1}, "headers_on_allowed": true,
            "rules": [{"name": "api", "match": {"path_prefix": "/api", "methods": ["GET"]},
              "key": [{"header": "x-api-key"}, "path"], "limits": [{"capacity": 10, "refill": 10, "period": "1s"},
              {"capacity": 1000, "refill": 1000, "period": "1h"}], "on_missing_key": "shared_bucket",
              "failure_mode": "deny", "shadow": true, "max_keys": 100,
              "response": {"status": 503, "body": "{}", "content_type": "application/json"}}]}"#,
        )
        .unwrap();
        assert_eq!(c.mode, Mode::All);
        assert_eq!(c.client_ip.trusted_hops(), 1);
        let r = &c.rules[0];
        assert_eq!(r.limits.len(), 2);
        assert_eq!(r.on_missing_key, MissingKey::SharedBucket);
        assert_eq!(r.failure_mode, FailureMode::Deny);
        assert!(r.shadow);
        assert_eq!(r.reply.status, 503);
    }

    #[test]
    fn every_invalid_field_is_named() {
        let cases = [
            (r#"{"rules": []}"#, "rules"),
            (
                r#"{"rules": [{"name": "a b", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "1s"}]}]}"#,
                "rules[0].name",
            ),
            (
                r#"{"rules": [{"name": "a", "key": [], "limits": [{"capacity": 1, "refill": 1, "period": "1s"}]}]}"#,
                "rules[0].key",
            ),
            (
                r#"{"rules": [{"name": "a", "key": ["path"], "limits": []}]}"#,
                "rules[0].limits",
            ),
            (
                r#"{"rules": [{"name": "a", "key": ["path"], "limits": [{"capacity": 0, "refill": 1, "period": "1s"}]}]}"#,
                "rules[0].limits[0].capacity",
            ),
            (
                r#"{"rules": [{"name": "a", "key": ["path"], "limits": [{"capacity": 1, "refill": 0, "period": "1s"}]}]}"#,
                "rules[0].limits[0].refill",
            ),
            (
                r#"{"rules": [{"name": "a", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "1 sec"}]}]}"#,
                "rules[0].limits[0].period",
            ),
            (
                r#"{"rules": [{"name": "a", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "0ms"}]}]}"#,
                "rules[0].limits[0].period",
            ),
            (
                r#"{"rules": [{"name": "a", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "1s"}], "max_keys": 0}]}"#,
                "rules[0].max_keys",
            ),
            (
                r#"{"rules": [{"name": "a", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "1s"}], "on_missing_key": "drop"}]}"#,
                "rules[0].on_missing_key",
            ),
            (
                r#"{"rules": [{"name": "a", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "1s"}], "failure_mode": "open"}]}"#,
                "rules[0].failure_mode",
            ),
            (
                r#"{"rules": [{"name": "a", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "1s"}], "response": {"status": 200}}]}"#,
                "rules[0].response.status",
            ),
            (
                r#"{"rules": [{"name": "a", "key": [{"header": "bad header"}], "limits": [{"capacity": 1, "refill": 1, "period": "1s"}]}]}"#,
                "rules[0].key[0].header",
            ),
            (
                r#"{"rules": [{"name": "a", "key": ["path"], "match": {"path": "x"}, "limits": [{"capacity": 1, "refill": 1, "period": "1s"}]}]}"#,
                "rules[0].match.path",
            ),
            (
                r#"{"rules": [{"name": "a", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "1s", "burst": 3}]}]}"#,
                "rules[0].limits[0].burst",
            ),
            (
                r#"{"mode": "some", "rules": [{"name": "a", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "1s"}]}]}"#,
                "mode",
            ),
            (
                r#"{"scope": "a/b", "rules": [{"name": "a", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "1s"}]}]}"#,
                "scope",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(err(json).field.as_str(), field, "{json}");
        }
    }

    #[test]
    fn a_top_level_failure_mode_is_the_default_a_rule_can_override() {
        let rule = |name: &str, extra: &str| {
            format!(
                r#"{{"name": "{name}", "key": ["path"], "limits": [{{"capacity": 1, "refill": 1, "period": "1s"}}]{extra}}}"#
            )
        };
        let json = format!(
            r#"{{"failure_mode": "deny", "rules": [{}, {}]}}"#,
            rule("a", ""),
            rule("b", r#", "failure_mode": "allow""#)
        );
        let c = Config::parse(json.as_bytes()).unwrap();
        assert_eq!(c.failure_mode, FailureMode::Deny);
        assert_eq!(c.rules[0].failure_mode, FailureMode::Deny);
        assert_eq!(c.rules[1].failure_mode, FailureMode::Allow);
        let json = format!(
            r#"{{"failure_mode": "open", "rules": [{}]}}"#,
            rule("a", "")
        );
        assert_eq!(err(&json).field.as_str(), "failure_mode");
    }

    #[test]
    fn duplicate_rule_names_are_rejected() {
        let rule = r#"{"name": "a", "key": ["path"], "limits": [{"capacity": 1, "refill": 1, "period": "1s"}]}"#;
        let e = err(&format!(r#"{{"rules": [{rule}, {rule}]}}"#));
        assert_eq!(e.field.as_str(), "rules[1].name");
        assert!(e.to_string().contains("unique"));
    }
}
