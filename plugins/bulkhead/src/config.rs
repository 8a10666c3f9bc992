//! Configuration: JSON wire types (unknown fields rejected) and their validation.
//!
//! The field-by-field reference is `docs/bulkhead.md`; keep the two in step.

use palisade_core::config::{
    duration_in, number_in, parse_duration, parse_json, validate_named_rules, validate_scope,
    ConfigError, FieldPath, NamedRule, ReplyWire as ResponseWire,
};
pub use palisade_core::config::{validate_name, FailureMode, ReplySpec};
use palisade_core::key::validate_header_name;
use palisade_core::matcher::{MatchWire, RequestMatch};
use serde::Deserialize;
use std::time::Duration;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))
    )]
    scope: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["allow", "deny", null])))]
    failure_mode: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_MAX_WORKERS)))]
    max_workers: Option<u16>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
    worker_timeout: Option<String>,
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_RULES)))]
    rules: Vec<RuleWire>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleWire {
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))
    )]
    name: String,
    #[serde(default, rename = "match")]
    matcher: Option<MatchWire>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    cluster: Option<String>,
    #[serde(default)]
    partition_by: Option<PartitionByWire>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_MAX_PARTITIONS)))]
    max_partitions: Option<u32>,
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_CONCURRENT)))]
    max_concurrent: u32,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
    max_wait: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_MAX_WAITING)))]
    max_waiting: Option<u32>,
    #[serde(default)]
    shadow: Option<bool>,
    #[serde(default)]
    failure_mode: Option<String>,
    #[serde(default)]
    response: Option<ResponseWire>,
}

/// `"route"`, `"cluster"` or `{"header": "x-tenant"}` (an externally tagged enum: unit variants
/// are plain strings, `header` a one-key object).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PartitionByWire {
    Route,
    Cluster,
    Header(String),
}

/// What splits one rule into several independent bulkheads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionBy {
    /// The rule is one bulkhead.
    Nothing,
    /// One bulkhead per route name (`xds.route_name`).
    Route,
    /// One bulkhead per upstream cluster (`xds.cluster_name`).
    Cluster,
    /// One bulkhead per value of this request header (lowercase).
    Header(String),
}

/// One validated rule: requests it matches share `max_concurrent` permits per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub matcher: RequestMatch,
    pub cluster: Option<String>,
    pub partition_by: PartitionBy,
    pub max_partitions: u32,
    pub max_concurrent: u32,
    /// `None`: a full partition rejects at once.
    pub max_wait: Option<Duration>,
    /// Bound on each worker's wait queue for this rule.
    pub max_waiting: u32,
    pub shadow: bool,
    /// The config's `failure_mode` unless the rule sets its own.
    pub failure_mode: FailureMode,
    pub reply: ReplySpec,
}

impl NamedRule for Rule {
    fn name(&self) -> &str {
        &self.name
    }
}

/// The validated plugin configuration.
///
/// With the `schema` feature its JSON Schema is the wire format's (`schema/bulkhead.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(with = "Wire")
)]
pub struct Config {
    pub scope: String,
    /// The rules' default `failure_mode` (each rule may override it).
    pub failure_mode: FailureMode,
    pub max_workers: u16,
    pub worker_timeout: Duration,
    pub rules: Vec<Rule>,
}

pub const MAX_RULES: usize = 64;
pub const MAX_CONCURRENT: u32 = 1_000_000;
pub const DEFAULT_MAX_PARTITIONS: u32 = 64;
pub const MAX_MAX_PARTITIONS: u32 = 65_536;
pub const DEFAULT_MAX_WAITING: u32 = 64;
pub const MAX_MAX_WAITING: u32 = 10_000;
pub const MAX_WAIT_LIMIT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_WORKERS: u16 = 64;
pub const MAX_MAX_WORKERS: u16 = 1024;
pub const DEFAULT_WORKER_TIMEOUT: Duration = Duration::from_secs(10);
pub const MIN_WORKER_TIMEOUT: Duration = Duration::from_secs(3);
pub const MAX_WORKER_TIMEOUT: Duration = Duration::from_secs(3600);

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let wire: Wire = parse_json(bytes)?;
        let root = FieldPath::root();
        let scope = validate_scope(wire.scope.as_deref(), &root)?;
        let failure_mode =
            FailureMode::validate(wire.failure_mode.as_deref(), &root.field("failure_mode"))?;
        let max_workers = number_in(
            wire.max_workers,
            DEFAULT_MAX_WORKERS,
            &root.field("max_workers"),
            1,
            MAX_MAX_WORKERS,
        )?;
        let worker_timeout = duration_in(
            wire.worker_timeout.as_deref(),
            DEFAULT_WORKER_TIMEOUT,
            &root.field("worker_timeout"),
            MIN_WORKER_TIMEOUT,
            MAX_WORKER_TIMEOUT,
        )?;
        let rules = validate_named_rules(&wire.rules, &root, MAX_RULES, |rw, path| {
            validate_rule(rw, path, failure_mode)
        })?;
        Ok(Config {
            scope,
            failure_mode,
            max_workers,
            worker_timeout,
            rules,
        })
    }

    /// Whether any rule can make requests wait (the filter then ticks often).
    pub fn has_waits(&self) -> bool {
        self.rules.iter().any(|r| r.max_wait.is_some() && !r.shadow)
    }
}

fn validate_rule(
    rw: &RuleWire,
    path: &FieldPath,
    default_failure_mode: FailureMode,
) -> Result<Rule, ConfigError> {
    let name = validate_name(&rw.name, &path.field("name"))?;
    let matcher = RequestMatch::validate_optional(rw.matcher.as_ref(), &path.field("match"))?;
    let cluster = match &rw.cluster {
        Some(c) if c.is_empty() => {
            return Err(path.field("cluster").invalid(c, "must not be empty"))
        }
        other => other.clone(),
    };
    let partition_by = match &rw.partition_by {
        None => PartitionBy::Nothing,
        Some(PartitionByWire::Route) => PartitionBy::Route,
        Some(PartitionByWire::Cluster) => PartitionBy::Cluster,
        Some(PartitionByWire::Header(h)) => PartitionBy::Header(validate_header_name(
            h,
            &path.field("partition_by").field("header"),
        )?),
    };
    let max_partitions = match (&partition_by, rw.max_partitions) {
        (PartitionBy::Nothing, Some(n)) => {
            return Err(path
                .field("max_partitions")
                .invalid(n, "only meaningful with `partition_by`"))
        }
        (PartitionBy::Nothing, None) => 1,
        (_, n) => number_in(
            n,
            DEFAULT_MAX_PARTITIONS,
            &path.field("max_partitions"),
            1,
            MAX_MAX_PARTITIONS,
        )?,
    };
    let max_concurrent = number_in(
        Some(rw.max_concurrent),
        1,
        &path.field("max_concurrent"),
        1,
        MAX_CONCURRENT,
    )?;
    let max_wait = match &rw.max_wait {
        Some(t) => {
            let wp = path.field("max_wait");
            let d = parse_duration(t, &wp)?;
            if d.is_zero() || d > MAX_WAIT_LIMIT {
                return Err(wp.out_of_range(t, "1ms", "60s"));
            }
            Some(d)
        }
        None => None,
    };
    let max_waiting = match (max_wait, rw.max_waiting) {
        (None, Some(n)) => {
            return Err(path
                .field("max_waiting")
                .invalid(n, "only meaningful with `max_wait`"))
        }
        (_, n) => number_in(
            n,
            DEFAULT_MAX_WAITING,
            &path.field("max_waiting"),
            1,
            MAX_MAX_WAITING,
        )?,
    };
    let failure_mode = FailureMode::validate_or(
        rw.failure_mode.as_deref(),
        default_failure_mode,
        &path.field("failure_mode"),
    )?;
    let reply = ReplySpec::validate(
        rw.response.as_ref(),
        &path.field("response"),
        503,
        "bulkhead full\n",
    )?;
    Ok(Rule {
        name,
        matcher,
        cluster,
        partition_by,
        max_partitions,
        max_concurrent,
        max_wait,
        max_waiting,
        shadow: rw.shadow.unwrap_or(false),
        failure_mode,
        reply,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"rules": [{"name": "backend", "max_concurrent": 2}]}"#;

    fn err(json: &str) -> ConfigError {
        Config::parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_minimal_config_gets_documented_defaults() {
        let c = Config::parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.scope, "default");
        assert_eq!(c.failure_mode, FailureMode::Allow);
        assert_eq!(c.max_workers, DEFAULT_MAX_WORKERS);
        assert_eq!(c.worker_timeout, DEFAULT_WORKER_TIMEOUT);
        let r = &c.rules[0];
        assert_eq!(r.partition_by, PartitionBy::Nothing);
        assert_eq!(r.max_partitions, 1);
        assert_eq!(r.max_concurrent, 2);
        assert_eq!(r.max_wait, None);
        assert_eq!(r.max_waiting, DEFAULT_MAX_WAITING);
        assert!(!r.shadow);
        assert_eq!(r.reply.status, 503);
        assert!(!c.has_waits());
    }

    #[test]
    fn a_full_config_parses() {
        let c = Config::parse(
            br#"{"scope": "edge", "failure_mode": "deny", "max_workers": 8, "worker_timeout": "30s",
            "rules": [
              {"name": "tenants", "match": {"path_prefix": "/api"}, "cluster": "backend",
               "partition_by": {"header": "X-Tenant"}, "max_partitions": 16, "max_concurrent": 10,
               "max_wait": "250ms", "max_waiting": 5, "response": {"status": 429, "body": "{}",
               "content_type": "application/json"}},
              {"name": "per-route", "partition_by": "route", "max_concurrent": 3, "shadow": true},
              {"name": "per-cluster", "partition_by": "cluster", "max_concurrent": 4}
            ]}"#,
        )
        .unwrap();
        assert_eq!(c.failure_mode, FailureMode::Deny);
        assert_eq!(c.max_workers, 8);
        assert_eq!(c.worker_timeout, Duration::from_secs(30));
        let r = &c.rules[0];
        assert_eq!(r.partition_by, PartitionBy::Header("x-tenant".into()));
        assert_eq!(r.cluster.as_deref(), Some("backend"));
        assert_eq!(r.max_partitions, 16);
        assert_eq!(r.max_wait, Some(Duration::from_millis(250)));
        assert_eq!(r.max_waiting, 5);
        assert_eq!(r.reply.status, 429);
        assert_eq!(c.rules[1].partition_by, PartitionBy::Route);
        assert_eq!(c.rules[1].max_partitions, DEFAULT_MAX_PARTITIONS);
        assert!(c.rules[1].shadow);
        assert_eq!(c.rules[2].partition_by, PartitionBy::Cluster);
        assert!(c.has_waits());
    }

    #[test]
    fn every_invalid_field_is_named() {
        let cases = [
            (r#"{"rules": []}"#, "rules"),
            (
                r#"{"rules": [{"name": "a b", "max_concurrent": 1}]}"#,
                "rules[0].name",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 0}]}"#,
                "rules[0].max_concurrent",
            ),
            (r#"{"rules": [{"name": "a"}]}"#, "rules[0]"),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "max_wait": "0ms"}]}"#,
                "rules[0].max_wait",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "max_wait": "2m"}]}"#,
                "rules[0].max_wait",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "max_wait": "soon"}]}"#,
                "rules[0].max_wait",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "max_waiting": 3}]}"#,
                "rules[0].max_waiting",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "max_wait": "1s", "max_waiting": 0}]}"#,
                "rules[0].max_waiting",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "partition_by": "tenant"}]}"#,
                "rules[0].partition_by",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "partition_by": {"header": "a b"}}]}"#,
                "rules[0].partition_by.header",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "max_partitions": 4}]}"#,
                "rules[0].max_partitions",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "partition_by": "route", "max_partitions": 0}]}"#,
                "rules[0].max_partitions",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "cluster": ""}]}"#,
                "rules[0].cluster",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "response": {"status": 200}}]}"#,
                "rules[0].response.status",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "match": {"path": "x"}}]}"#,
                "rules[0].match.path",
            ),
            (
                r#"{"rules": [{"name": "a", "max_concurrent": 1, "limit": 3}]}"#,
                "rules[0].limit",
            ),
            (
                r#"{"failure_mode": "open", "rules": [{"name": "a", "max_concurrent": 1}]}"#,
                "failure_mode",
            ),
            (
                r#"{"max_workers": 0, "rules": [{"name": "a", "max_concurrent": 1}]}"#,
                "max_workers",
            ),
            (
                r#"{"worker_timeout": "1s", "rules": [{"name": "a", "max_concurrent": 1}]}"#,
                "worker_timeout",
            ),
            (
                r#"{"scope": "a/b", "rules": [{"name": "a", "max_concurrent": 1}]}"#,
                "scope",
            ),
        ];
        for (json, field) in cases {
            let e = err(json);
            assert_eq!(e.field.as_str(), field, "{json}: {e}");
        }
    }

    #[test]
    fn a_top_level_failure_mode_is_the_default_a_rule_can_override() {
        let c = Config::parse(
            br#"{"failure_mode": "deny", "rules": [{"name": "a", "max_concurrent": 1},
              {"name": "b", "max_concurrent": 1, "failure_mode": "allow"}]}"#,
        )
        .unwrap();
        assert_eq!(c.failure_mode, FailureMode::Deny);
        assert_eq!(c.rules[0].failure_mode, FailureMode::Deny);
        assert_eq!(c.rules[1].failure_mode, FailureMode::Allow);
        let e = err(r#"{"rules": [{"name": "a", "max_concurrent": 1, "failure_mode": "open"}]}"#);
        assert_eq!(e.field.as_str(), "rules[0].failure_mode");
    }

    #[test]
    fn duplicate_rule_names_are_rejected() {
        let e = err(
            r#"{"rules": [{"name": "a", "max_concurrent": 1}, {"name": "a", "max_concurrent": 2}]}"#,
        );
        assert_eq!(e.field.as_str(), "rules[1].name");
        assert!(e.to_string().contains("unique"));
    }
}
