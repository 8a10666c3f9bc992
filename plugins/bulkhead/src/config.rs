//! Configuration: JSON wire types (unknown fields rejected) and their validation.
//!
//! The field-by-field reference is `docs/bulkhead.md`; keep the two in step.

use palisade_core::config::{
    duration_in, in_range, non_empty, number_in, parse_duration, parse_json, validate_rules,
    validate_scope, ConfigError, FieldPath, ReplyWire as ResponseWire,
};
pub use palisade_core::config::{validate_name, FailureMode, ReplySpec};
use palisade_core::key::{url_path, validate_header_name, KeyPart, KeyPartWire, RequestView};
use palisade_core::matcher::{MatchWire, RequestMatch};
use std::time::Duration;

palisade_core::wire! {
    struct Wire {
        #[cfg_attr(feature = "schema", schemars(regex(pattern = palisade_core::config::NAME_PATTERN)))]
        scope: Option<String>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["allow", "deny", null])))]
        failure_mode: Option<String>,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_MAX_WORKERS)))]
        max_workers: Option<u16>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        worker_timeout: Option<String>,
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
        cluster: Option<String>,
        partition_by: Option<PartitionByWire>,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_MAX_PARTITIONS)))]
        max_partitions: Option<u32>,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_CONCURRENT)))]
        max_concurrent: u32,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        max_wait: Option<String>,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_MAX_WAITING)))]
        max_waiting: Option<u32>,
        shadow: Option<bool>,
        failure_mode: Option<String>,
        response: Option<ResponseWire>,
        priorities: Option<PrioritiesWire>,
    }
}

palisade_core::wire! {
    /// `"priorities": {"by": <key part>, "classes": [...], "default": "<class>"}`.
    struct PrioritiesWire {
        /// What classifies a request: a key part (`{"header": "x-priority"}`, `"route_name"`,
        /// `{"claim": "tier"}`, …).
        by: KeyPartWire,
        #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_CLASSES)))]
        classes: Vec<ClassWire>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = palisade_core::config::NAME_PATTERN)))]
        default: Option<String>,
    }
}

palisade_core::wire! {
    /// One priority class: its name, its share of `max_concurrent` (percent), the values of `by`
    /// that select it.
    struct ClassWire {
        #[cfg_attr(feature = "schema", schemars(regex(pattern = palisade_core::config::NAME_PATTERN)))]
        name: String,
        #[cfg_attr(
            feature = "schema",
            schemars(extend("exclusiveMinimum" = 0, "maximum" = 100))
        )]
        share: f64,
        values: Option<Vec<String>>,
    }
}

palisade_core::wire! {
    /// `"route"`, `"cluster"` or `{"header": "x-tenant"}` (an externally tagged enum: unit variants
    /// are plain strings, `header` a one-key object).
    #[serde(rename_all = "snake_case")]
    enum PartitionByWire {
        Route,
        Cluster,
        Header(String),
    }
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

/// One priority class of a rule, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityClass {
    pub name: String,
    /// The share of `max_concurrent`, in hundredths of a percent (1 to 10,000). It is also the
    /// class's priority: a higher share is a higher priority (equal shares: equal priority).
    pub share: u32,
    /// The class's admission threshold: a request of this class takes a permit only while fewer
    /// than `limit` are in flight in its partition (all classes, all workers).
    /// [`threshold`]`(max_concurrent, share)`.
    pub limit: u32,
}

/// What classifies a request: the key parts that make sense for a priority (validated from
/// core's [`KeyPartWire`], so the spelling is the one of every key in Palisade). `client_ip`,
/// `query` and `constant` are refused: an address or a query parameter is no priority, and
/// reading them would add their parsers to every worker's copy of the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifyBy {
    /// A request header (lowercase name).
    Header(String),
    /// `xds.route_name`.
    RouteName,
    /// A claim verified earlier in the chain (see [`RequestView::claim`]).
    Claim(String),
    Method,
    /// The URL path without the query string.
    Path,
}

impl ClassifyBy {
    fn validate(wire: &KeyPartWire, path: &FieldPath) -> Result<Self, ConfigError> {
        let part = KeyPart::validate(wire, path)?;
        Ok(match part {
            KeyPart::Header(h) => ClassifyBy::Header(h),
            KeyPart::RouteName => ClassifyBy::RouteName,
            KeyPart::Claim(c) => ClassifyBy::Claim(c),
            KeyPart::Method => ClassifyBy::Method,
            KeyPart::Path => ClassifyBy::Path,
            KeyPart::ClientIp | KeyPart::Query(_) | KeyPart::Constant(_) => {
                return Err(path.invalid(
                    format!("{part:?}"),
                    "classify by a header, `route_name`, a claim, `method` or `path`",
                ))
            }
        })
    }

    /// The request's value, if it has one.
    pub fn extract(&self, req: &dyn RequestView) -> Option<String> {
        match self {
            ClassifyBy::Header(name) => req.header(name),
            ClassifyBy::RouteName => req.route_name().filter(|r| !r.is_empty()),
            ClassifyBy::Claim(name) => req.claim(name),
            ClassifyBy::Method => req.method(),
            ClassifyBy::Path => req.path().map(|p| url_path(&p).to_owned()),
        }
    }
}

/// A rule's priority classes and how requests are classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priorities {
    pub by: ClassifyBy,
    /// In config order.
    pub classes: Vec<PriorityClass>,
    /// Value of `by` → class index, sorted by value (binary search).
    pub values: Vec<(String, usize)>,
    /// The class of a request whose value is absent or not listed.
    pub default: usize,
}

impl Priorities {
    /// The class of a request whose `by` value is `value`.
    pub fn class_of(&self, value: Option<&str>) -> usize {
        value
            .and_then(|v| {
                self.values
                    .binary_search_by(|(k, _)| k.as_str().cmp(v))
                    .ok()
            })
            .and_then(|i| self.values.get(i))
            .map_or(self.default, |(_, c)| *c)
    }
}

/// A class's admission threshold: `floor(max_concurrent × share / 100 %)` permits, at least 1
/// (so every class gets through an idle partition), at most `max_concurrent`. `share` is in
/// hundredths of a percent.
pub fn threshold(max_concurrent: u32, share: u32) -> u32 {
    let t = u64::from(max_concurrent) * u64::from(share.min(SHARE_SCALE)) / u64::from(SHARE_SCALE);
    u32::try_from(t)
        .unwrap_or(max_concurrent)
        .clamp(1, max_concurrent.max(1))
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
    /// `None`: every request of the rule may use all `max_concurrent` permits.
    pub priorities: Option<Priorities>,
}

/// The admission level of a request: the in-flight threshold it must find its partition below,
/// and its priority in the wait queue (higher first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub limit: u32,
    pub rank: u32,
}

impl Rule {
    /// The level of a request of class `class` (`None`: no priorities, the whole limit).
    pub fn level(&self, class: Option<usize>) -> Level {
        match class.and_then(|c| self.priorities.as_ref()?.classes.get(c)) {
            Some(c) => Level {
                limit: c.limit,
                rank: c.share,
            },
            None => Level {
                limit: self.max_concurrent,
                rank: SHARE_SCALE,
            },
        }
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
/// Priority classes per rule.
pub const MAX_CLASSES: usize = 16;
/// Classifying values per rule, all classes together.
pub const MAX_CLASS_VALUES: usize = 1024;
/// A share of 100 %, in the unit of [`PriorityClass::share`].
pub const SHARE_SCALE: u32 = 10_000;
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
        let rules = validate_rules(
            &wire.rules,
            &root.field("rules"),
            MAX_RULES,
            |rw, path| validate_rule(rw, path, failure_mode),
            |r| &r.name,
        )?;
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
    if let Some(c) = &rw.cluster {
        non_empty(c, &path.field("cluster"))?;
    }
    let cluster = rw.cluster.clone();
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
    let max_concurrent = in_range(
        rw.max_concurrent,
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
    let priorities = match &rw.priorities {
        Some(p) => Some(validate_priorities(
            p,
            &path.field("priorities"),
            max_concurrent,
        )?),
        None => None,
    };
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
        priorities,
    })
}

/// A share in percent, `(0, 100]`, at most two decimals, as hundredths of a percent.
fn validate_share(share: f64, path: &FieldPath) -> Result<u32, ConfigError> {
    // The value is echoed as the operator wrote it only approximately (no float formatting in
    // the module): the reason says what is allowed.
    if !share.is_finite() || share <= 0.0 || share > 100.0 {
        return Err(path.invalid(
            "out of range",
            "a share is a percentage of max_concurrent: more than 0, at most 100",
        ));
    }
    let scaled = share * 100.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 || rounded < 1.0 {
        return Err(path.invalid("too precise", "at most two decimals (0.01 % steps)"));
    }
    // 1 to 10,000: checked above.
    Ok(rounded as u32)
}

fn validate_priorities(
    wire: &PrioritiesWire,
    path: &FieldPath,
    max_concurrent: u32,
) -> Result<Priorities, ConfigError> {
    let by = ClassifyBy::validate(&wire.by, &path.field("by"))?;
    let classes_path = path.field("classes");
    palisade_core::config::list_len(
        wire.classes.len(),
        &classes_path,
        MAX_CLASSES,
        "at least one priority class is needed",
    )?;
    let mut classes: Vec<PriorityClass> = Vec::with_capacity(wire.classes.len());
    let mut values: Vec<(String, usize)> = Vec::new();
    for (i, cw) in wire.classes.iter().enumerate() {
        let cp = classes_path.index(i);
        let name = validate_name(&cw.name, &cp.field("name"))?;
        if classes.iter().any(|c| c.name == name) {
            return Err(cp
                .field("name")
                .invalid(&name, "class names must be unique"));
        }
        let share = validate_share(cw.share, &cp.field("share"))?;
        for (j, v) in cw.values.iter().flatten().enumerate() {
            let vp = cp.field("values").index(j);
            non_empty(v, &vp)?;
            if let Some((_, other)) = values.iter().find(|(k, _)| k == v) {
                let owner = classes
                    .get(*other)
                    .map_or(name.as_str(), |c| c.name.as_str());
                return Err(vp.invalid(
                    v,
                    format!("already selects class `{owner}`: a value selects one class"),
                ));
            }
            if values.len() >= MAX_CLASS_VALUES {
                return Err(vp.invalid(
                    v,
                    format!("at most {MAX_CLASS_VALUES} values per rule, all classes together"),
                ));
            }
            values.push((v.clone(), i));
        }
        classes.push(PriorityClass {
            name,
            share,
            limit: threshold(max_concurrent, share),
        });
    }
    if !classes.iter().any(|c| c.share == SHARE_SCALE) {
        return Err(classes_path.invalid(
            "no share of 100",
            "one class must have share 100, or max_concurrent would never be reached \
             (lower max_concurrent instead)",
        ));
    }
    let default = match &wire.default {
        Some(d) => {
            let dp = path.field("default");
            classes.iter().position(|c| &c.name == d).ok_or_else(|| {
                let names: Vec<String> = classes.iter().map(|c| format!("`{}`", c.name)).collect();
                dp.invalid(
                    d,
                    format!("not a class of this rule ({})", names.join(", ")),
                )
            })?
        }
        // The lowest share (the first listed among equals): unclassified traffic is shed first.
        None => classes
            .iter()
            .enumerate()
            .min_by_key(|(i, c)| (c.share, *i))
            .map_or(0, |(i, _)| i),
    };
    values.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Priorities {
        by,
        classes,
        values,
        default,
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

    const PRIORITIES: &str = r#"{"rules": [{"name": "api", "max_concurrent": 10,
        "priorities": {"by": {"header": "X-Priority"}, "classes": [
          {"name": "critical", "share": 100, "values": ["critical", "gold"]},
          {"name": "normal", "share": 90, "values": ["normal"]},
          {"name": "low", "share": 62.5, "values": ["low", "batch"]}
        ], "default": "normal"}}]}"#;

    #[test]
    fn priority_classes_get_thresholds_of_their_share_and_values_map_to_them() {
        let c = Config::parse(PRIORITIES.as_bytes()).unwrap();
        let p = c.rules[0].priorities.as_ref().unwrap();
        assert_eq!(p.by, ClassifyBy::Header("x-priority".into()));
        let limits: Vec<(&str, u32, u32)> = p
            .classes
            .iter()
            .map(|c| (c.name.as_str(), c.share, c.limit))
            .collect();
        assert_eq!(
            limits,
            vec![
                ("critical", 10_000, 10),
                ("normal", 9_000, 9),
                ("low", 6_250, 6)
            ]
        );
        assert_eq!(p.class_of(Some("gold")), 0);
        assert_eq!(p.class_of(Some("batch")), 2);
        assert_eq!(p.class_of(Some("normal")), 1);
        // Unlisted or absent: the default class.
        assert_eq!(p.class_of(Some("platinum")), 1);
        assert_eq!(p.class_of(None), 1);
        let r = &c.rules[0];
        assert_eq!(
            r.level(Some(2)),
            Level {
                limit: 6,
                rank: 6_250
            }
        );
        assert_eq!(
            r.level(None),
            Level {
                limit: 10,
                rank: SHARE_SCALE
            }
        );
    }

    #[test]
    fn without_a_default_the_lowest_share_class_takes_unclassified_requests() {
        let c = Config::parse(
            br#"{"rules": [{"name": "a", "max_concurrent": 5, "priorities": {"by": "route_name",
              "classes": [{"name": "hi", "share": 100, "values": ["checkout"]},
                          {"name": "lo", "share": 50}, {"name": "lo2", "share": 50}]}}]}"#,
        )
        .unwrap();
        let p = c.rules[0].priorities.as_ref().unwrap();
        assert_eq!(p.default, 1);
        assert_eq!(p.class_of(Some("checkout")), 0);
        assert_eq!(p.class_of(Some("browse")), 1);
    }

    #[test]
    fn a_rule_without_priorities_has_one_level_the_whole_limit() {
        let c = Config::parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.rules[0].priorities, None);
        assert_eq!(
            c.rules[0].level(None),
            Level {
                limit: 2,
                rank: SHARE_SCALE
            }
        );
    }

    #[test]
    fn thresholds_round_down_but_never_below_one_permit() {
        assert_eq!(threshold(10, 6_000), 6);
        assert_eq!(threshold(10, 6_999), 6);
        assert_eq!(threshold(2, 6_000), 1);
        assert_eq!(threshold(1, 1), 1);
        assert_eq!(threshold(1_000_000, 10_000), 1_000_000);
        assert_eq!(threshold(1_000_000, 1), 100);
        assert_eq!(threshold(7, 10_000), 7);
    }

    #[test]
    fn every_invalid_priorities_field_is_named() {
        let with = |p: &str| {
            format!(r#"{{"rules": [{{"name": "a", "max_concurrent": 4, "priorities": {p}}}]}}"#)
        };
        let cases = [
            (
                r#"{"by": "path", "classes": []}"#,
                "rules[0].priorities.classes",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "x", "share": 60}]}"#,
                "rules[0].priorities.classes",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "x", "share": 0}]}"#,
                "rules[0].priorities.classes[0].share",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "x", "share": 100.5}]}"#,
                "rules[0].priorities.classes[0].share",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "x", "share": -5}]}"#,
                "rules[0].priorities.classes[0].share",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "x", "share": 33.333}]}"#,
                "rules[0].priorities.classes[0].share",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "x", "share": 100}, {"name": "x", "share": 50}]}"#,
                "rules[0].priorities.classes[1].name",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "a b", "share": 100}]}"#,
                "rules[0].priorities.classes[0].name",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "x", "share": 100, "values": ["v"]}, {"name": "y", "share": 50, "values": ["w", "v"]}]}"#,
                "rules[0].priorities.classes[1].values[1]",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "x", "share": 100, "values": [""]}]}"#,
                "rules[0].priorities.classes[0].values[0]",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "x", "share": 100}], "default": "y"}"#,
                "rules[0].priorities.default",
            ),
            (
                r#"{"by": {"header": "a b"}, "classes": [{"name": "x", "share": 100}]}"#,
                "rules[0].priorities.by.header",
            ),
            (
                r#"{"by": {"claim": ""}, "classes": [{"name": "x", "share": 100}]}"#,
                "rules[0].priorities.by.claim",
            ),
            (
                r#"{"by": "tier", "classes": [{"name": "x", "share": 100}]}"#,
                "rules[0].priorities.by",
            ),
            (
                r#"{"by": "client_ip", "classes": [{"name": "x", "share": 100}]}"#,
                "rules[0].priorities.by",
            ),
            (
                r#"{"by": {"query": "p"}, "classes": [{"name": "x", "share": 100}]}"#,
                "rules[0].priorities.by",
            ),
            (
                r#"{"by": {"constant": "x"}, "classes": [{"name": "x", "share": 100}]}"#,
                "rules[0].priorities.by",
            ),
            (
                r#"{"classes": [{"name": "x", "share": 100}]}"#,
                "rules[0].priorities",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "x", "share": 100, "weight": 1}]}"#,
                "rules[0].priorities.classes[0].weight",
            ),
            (
                r#"{"by": "path", "classes": [{"name": "x", "share": 100}], "fallback": "x"}"#,
                "rules[0].priorities.fallback",
            ),
        ];
        for (p, field) in cases {
            let json = with(p);
            let e = err(&json);
            assert_eq!(e.field.as_str(), field, "{json}: {e}");
        }
        let e = err(&with(
            r#"{"by": "path", "classes": [{"name": "x", "share": 100}], "default": "y"}"#,
        ));
        assert!(e.to_string().contains("`x`"), "{e}");
        let e = err(&with(
            r#"{"by": "path", "classes": [{"name": "x", "share": 60}]}"#,
        ));
        assert!(e.to_string().contains("share 100"), "{e}");
    }

    #[test]
    fn istio_doubles_are_read_as_shares() {
        // Through a protobuf Struct every number is a double.
        let c = Config::parse(
            br#"{"rules": [{"name": "a", "max_concurrent": 10.0, "priorities": {"by": "method",
              "classes": [{"name": "x", "share": 100.0}, {"name": "y", "share": 6e1}]}}]}"#,
        )
        .unwrap();
        let p = c.rules[0].priorities.as_ref().unwrap();
        assert_eq!(p.classes[1].limit, 6);
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
