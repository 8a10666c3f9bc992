//! Configuration: JSON wire types (unknown fields rejected) and their validation.
//!
//! Field names follow Resilience4j's `CircuitBreakerConfig` in snake_case, with the same defaults
//! where they make sense for a proxy; `docs/circuit_breaker.md` is the field-by-field reference
//! (and lists every deliberate difference). Keep the two in step.

use palisade_core::config::{
    duration_in, in_range, number_in, one_of_or, parse_json, validate_rules, validate_scope,
    ConfigError, FieldPath, ReplyWire as ResponseWire,
};
pub use palisade_core::config::{validate_name, FailureMode, ReplySpec};
use palisade_core::key::validate_header_name;
use palisade_core::matcher::{MatchWire, RequestMatch};
use serde::Deserialize;
use std::time::Duration;

palisade_core::wire! {
    struct Wire {
        #[cfg_attr(feature = "schema", schemars(regex(pattern = palisade_core::config::NAME_PATTERN)))]
        scope: Option<String>,
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
        key: Option<KeyWire>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["normal", "forced_open", "forced_closed", "metrics_only", null])))]
        mode: Option<String>,
        shadow: Option<bool>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["count_based", "time_based", null])))]
        sliding_window_type: Option<String>,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_TIME_WINDOW_SECS)))]
        sliding_window_size: Option<u32>,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1_000_000)))]
        minimum_number_of_calls: Option<u32>,
        #[cfg_attr(feature = "schema", schemars(extend("exclusiveMinimum" = 0, "maximum" = 100)))]
        failure_rate_threshold: Option<f64>,
        #[cfg_attr(feature = "schema", schemars(extend("exclusiveMinimum" = 0, "maximum" = 100)))]
        slow_call_rate_threshold: Option<f64>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        slow_call_duration: Option<String>,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1_000_000)))]
        consecutive_failures: Option<u32>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        wait_duration_in_open: Option<String>,
        exponential_backoff: Option<BackoffWire>,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_PERMITTED_IN_HALF_OPEN)))]
        permitted_calls_in_half_open: Option<u32>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        half_open_probe_timeout: Option<String>,
        #[cfg_attr(
            feature = "schema",
            schemars(with = "Option<Vec<palisade_core::schema::StatusOrRange>>")
        )]
        failure_statuses: Option<Vec<StatusWire>>,
        resets_are_failures: Option<bool>,
        local_replies_are_failures: Option<bool>,
        success_batching: Option<BatchingWire>,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_MAX_BREAKERS)))]
        max_breakers: Option<u32>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["allow", "deny", null])))]
        failure_mode: Option<String>,
        response: Option<ResponseWire>,
    }
}

palisade_core::wire! {
    /// `"cluster"`, `"route"`, `{"header": "x-tenant"}`, `{"path_segments": 1}`, `{"constant": "x"}`.
    #[derive(Clone, PartialEq, Eq)]
    #[serde(rename_all = "snake_case")]
    enum KeyWire {
        Cluster,
        Route,
        Header(String),
        PathSegments(u32),
        Constant(String),
    }
}

palisade_core::wire! {
    struct BackoffWire {
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100)))]
        multiplier: Option<f64>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        max_wait: Option<String>,
    }
}

palisade_core::wire! {
    struct BatchingWire {
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
        max_calls: Option<u32>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        max_delay: Option<String>,
    }
}

/// `503` or `"500-599"`. Deserialized by hand: `#[serde(untagged)]` would buffer every value
/// through serde's generic `Content`, which costs module size in every worker.
#[derive(Debug)]
enum StatusWire {
    Code(u16),
    Range(String),
}

impl<'de> Deserialize<'de> for StatusWire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StatusWire;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a status like 503 or a range like \"500-599\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StatusWire, E> {
                u16::try_from(v).map(StatusWire::Code).map_err(|_| {
                    E::custom(format!("status {v} is out of range (allowed 100 to 599)"))
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StatusWire, E> {
                Ok(StatusWire::Range(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// What identifies a breaker within a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakerKey {
    /// The upstream cluster the route chose (`xds.cluster_name`).
    Cluster,
    /// The matched route's name (`xds.route_name`).
    Route,
    /// A request header (lowercase name).
    Header(String),
    /// The first N segments of the URL path (`/a/b/c` with 2 → `/a/b`).
    PathSegments(u32),
    /// One breaker for every matching request.
    Constant(String),
}

/// Resilience4j's operational states other than the automatic one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The state machine decides.
    Normal,
    /// Every matching request is rejected; shared data is not touched.
    ForcedOpen,
    /// Every matching request goes through and nothing is recorded in shared data (Resilience4j's
    /// `DISABLED`); calls are still counted in the outcome metrics.
    ForcedClosed,
    /// Dry run (`"shadow": true`; formerly `"mode": "metrics_only"`): the state machine runs as
    /// normal, but requests it would reject go through (and are counted as `shadow_rejected`).
    MetricsOnly,
}

/// Which calls the sliding window holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// The last `size` calls.
    Count { size: u32 },
    /// The last `buckets × bucket_secs` seconds, aggregated per bucket. `bucket_secs` is 1 for
    /// windows of up to [`MAX_TIME_BUCKETS`] seconds; longer windows use that many wider buckets.
    Time { buckets: u32, bucket_secs: u32 },
}

impl WindowSpec {
    /// A short tag for shared-data keys: a window of another shape starts from a fresh state.
    pub fn tag(&self) -> String {
        match self {
            WindowSpec::Count { size } => format!("c{size}"),
            WindowSpec::Time {
                buckets,
                bucket_secs,
            } => format!("t{buckets}x{bucket_secs}"),
        }
    }
}

/// Exponential backoff of the open duration on repeated openings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub multiplier: f64,
    pub max_wait: Duration,
}

/// Opt-in trade of exactness for CPU in the closed state: each worker batches clean successes
/// (neither failed nor slow) and writes them to the shared window at most every `max_calls`
/// calls or `max_delay`, and trusts a closed state it read within `max_delay` without reading it
/// again. Failures, slow calls and probes are always written at once (with the pending
/// successes first, so this worker's order is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max_calls: u32,
    pub max_delay: Duration,
}

/// Inclusive ranges of response statuses that count as failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// The numbers the state machine of one breaker needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub window: WindowSpec,
    /// Calls needed in the window before rates are evaluated (capped at the size of a count
    /// window, as Resilience4j does).
    pub minimum_number_of_calls: u32,
    /// Percent, in (0, 100].
    pub failure_rate_threshold: f64,
    /// Percent, in (0, 100].
    pub slow_call_rate_threshold: f64,
    pub slow_call_duration: Duration,
    pub consecutive_failures: Option<u32>,
    pub wait_duration_in_open: Duration,
    pub backoff: Option<Backoff>,
    pub permitted_calls_in_half_open: u32,
    pub half_open_probe_timeout: Duration,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub matcher: RequestMatch,
    pub key: BreakerKey,
    pub mode: Mode,
    pub thresholds: Thresholds,
    pub failure_statuses: StatusSet,
    pub resets_are_failures: bool,
    pub local_replies_are_failures: bool,
    pub batching: Option<Batching>,
    pub max_breakers: u32,
    pub failure_mode: FailureMode,
    pub reply: ReplySpec,
}

/// The validated plugin configuration.
///
/// With the `schema` feature its JSON Schema is the wire format's (`schema/circuit_breaker.schema.json`).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(with = "Wire")
)]
pub struct Config {
    pub scope: String,
    /// The rules' default `failure_mode` (each rule may override it).
    pub failure_mode: FailureMode,
    pub rules: Vec<Rule>,
    /// Deprecated spellings the config used, for the filter to log at configure.
    pub warnings: Vec<String>,
}

pub const MAX_RULES: usize = 32;
pub const MAX_COUNT_WINDOW: u32 = 1000;
pub const MAX_TIME_WINDOW_SECS: u32 = 3600;
pub const MAX_TIME_BUCKETS: u32 = 60;
pub const MAX_PERMITTED_IN_HALF_OPEN: u32 = 100;
pub const DEFAULT_MAX_BREAKERS: u32 = 64;
pub const MAX_MAX_BREAKERS: u32 = 4096;
pub const MAX_WAIT: Duration = Duration::from_secs(86_400);
pub const MAX_PATH_SEGMENTS: u32 = 16;

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let wire: Wire = parse_json(bytes)?;
        let root = FieldPath::root();
        let scope = validate_scope(wire.scope.as_deref(), &root)?;
        let failure_mode =
            FailureMode::validate(wire.failure_mode.as_deref(), &root.field("failure_mode"))?;
        let mut warnings = Vec::new();
        let rules = validate_rules(
            &wire.rules,
            &root.field("rules"),
            MAX_RULES,
            |rw, path| validate_rule(rw, path, failure_mode, &mut warnings),
            |r| &r.name,
        )?;
        Ok(Config {
            scope,
            failure_mode,
            rules,
            warnings,
        })
    }
}

fn percent(value: Option<f64>, default: f64, path: &FieldPath) -> Result<f64, ConfigError> {
    let v = value.unwrap_or(default);
    if v.is_finite() && v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(path.out_of_range(v, "more than 0", 100))
    }
}

fn validate_rule(
    rw: &RuleWire,
    path: &FieldPath,
    default_failure_mode: FailureMode,
    warnings: &mut Vec<String>,
) -> Result<Rule, ConfigError> {
    let name = validate_name(&rw.name, &path.field("name"))?;
    let matcher = RequestMatch::validate_optional(rw.matcher.as_ref(), &path.field("match"))?;
    let key = validate_key(rw.key.as_ref(), &path.field("key"))?;
    let mode = one_of_or(
        rw.mode.as_deref(),
        Mode::Normal,
        &path.field("mode"),
        &[
            ("normal", Mode::Normal),
            ("forced_open", Mode::ForcedOpen),
            ("forced_closed", Mode::ForcedClosed),
            ("metrics_only", Mode::MetricsOnly),
        ],
    )?;
    let mode = validate_shadow(mode, rw.shadow, path, warnings)?;
    let thresholds = validate_thresholds(rw, path)?;
    let failure_statuses = validate_statuses(rw.failure_statuses.as_deref(), path)?;
    let max_breakers = number_in(
        rw.max_breakers,
        DEFAULT_MAX_BREAKERS,
        &path.field("max_breakers"),
        1,
        MAX_MAX_BREAKERS,
    )?;
    let failure_mode = FailureMode::validate_or(
        rw.failure_mode.as_deref(),
        default_failure_mode,
        &path.field("failure_mode"),
    )?;
    let reply = ReplySpec::validate(
        rw.response.as_ref(),
        &path.field("response"),
        503,
        "circuit open\n",
    )?;
    let batching = match &rw.success_batching {
        None => None,
        Some(b) => {
            let bp = path.field("success_batching");
            let max_calls = number_in(b.max_calls, 32, &bp.field("max_calls"), 1, 1000)?;
            let max_delay = duration_in(
                b.max_delay.as_deref(),
                Duration::from_millis(10),
                &bp.field("max_delay"),
                Duration::from_millis(1),
                Duration::from_secs(1),
            )?;
            Some(Batching {
                max_calls,
                max_delay,
            })
        }
    };
    Ok(Rule {
        name,
        matcher,
        key,
        mode,
        thresholds,
        failure_statuses,
        resets_are_failures: rw.resets_are_failures.unwrap_or(true),
        local_replies_are_failures: rw.local_replies_are_failures.unwrap_or(true),
        batching,
        max_breakers,
        failure_mode,
        reply,
    })
}

/// `"shadow": true` is the dry run, spelled as in the other plugins; the older
/// `"mode": "metrics_only"` still works, with a warning. A `shadow` that contradicts `mode` (a
/// forced mode, or `false` next to `metrics_only`) is an error at `shadow`.
fn validate_shadow(
    mode: Mode,
    shadow: Option<bool>,
    path: &FieldPath,
    warnings: &mut Vec<String>,
) -> Result<Mode, ConfigError> {
    if mode == Mode::MetricsOnly {
        warnings.push(
            path.field("mode")
                .deprecated("`\"metrics_only\"`", "`\"shadow\": true` (and no `mode`)"),
        );
    }
    match (mode, shadow) {
        (Mode::MetricsOnly, Some(false)) => Err(path.field("shadow").invalid(
            false,
            "contradicts `mode: metrics_only` (a dry run); write `\"shadow\": true` and drop `mode`",
        )),
        (_, None | Some(false)) => Ok(mode),
        (Mode::Normal | Mode::MetricsOnly, Some(true)) => Ok(Mode::MetricsOnly),
        (Mode::ForcedOpen | Mode::ForcedClosed, Some(true)) => Err(path.field("shadow").invalid(
            true,
            "a forced `mode` runs no state machine to dry-run; drop `shadow` or `mode`",
        )),
    }
}

fn validate_key(wire: Option<&KeyWire>, path: &FieldPath) -> Result<BreakerKey, ConfigError> {
    Ok(match wire {
        None | Some(KeyWire::Cluster) => BreakerKey::Cluster,
        Some(KeyWire::Route) => BreakerKey::Route,
        Some(KeyWire::Header(name)) => {
            BreakerKey::Header(validate_header_name(name, &path.field("header"))?)
        }
        Some(KeyWire::PathSegments(n)) => BreakerKey::PathSegments(in_range(
            *n,
            &path.field("path_segments"),
            1,
            MAX_PATH_SEGMENTS,
        )?),
        Some(KeyWire::Constant(text)) => BreakerKey::Constant(text.clone()),
    })
}

fn validate_thresholds(rw: &RuleWire, path: &FieldPath) -> Result<Thresholds, ConfigError> {
    let window_type = one_of_or(
        rw.sliding_window_type.as_deref(),
        false,
        &path.field("sliding_window_type"),
        &[("count_based", false), ("time_based", true)],
    )?;
    let size = rw.sliding_window_size.unwrap_or(100);
    let size_path = path.field("sliding_window_size");
    let window = if window_type {
        in_range(size, &size_path, 1, MAX_TIME_WINDOW_SECS)?;
        if size <= MAX_TIME_BUCKETS {
            WindowSpec::Time {
                buckets: size,
                bucket_secs: 1,
            }
        } else {
            WindowSpec::Time {
                buckets: MAX_TIME_BUCKETS,
                bucket_secs: size.div_ceil(MAX_TIME_BUCKETS),
            }
        }
    } else {
        in_range(size, &size_path, 1, MAX_COUNT_WINDOW)?;
        WindowSpec::Count { size }
    };
    let minimum = number_in(
        rw.minimum_number_of_calls,
        100,
        &path.field("minimum_number_of_calls"),
        1,
        1_000_000,
    )?;
    let minimum_number_of_calls = match window {
        WindowSpec::Count { size } => minimum.min(size),
        WindowSpec::Time { .. } => minimum,
    };
    let failure_rate_threshold = percent(
        rw.failure_rate_threshold,
        50.0,
        &path.field("failure_rate_threshold"),
    )?;
    let slow_call_rate_threshold = percent(
        rw.slow_call_rate_threshold,
        100.0,
        &path.field("slow_call_rate_threshold"),
    )?;
    let slow_call_duration = duration_in(
        rw.slow_call_duration.as_deref(),
        Duration::from_secs(60),
        &path.field("slow_call_duration"),
        Duration::from_millis(1),
        MAX_WAIT,
    )?;
    let consecutive_failures = (rw.consecutive_failures)
        .map(|n| in_range(n, &path.field("consecutive_failures"), 1, 1_000_000))
        .transpose()?;
    let wait_duration_in_open = duration_in(
        rw.wait_duration_in_open.as_deref(),
        Duration::from_secs(60),
        &path.field("wait_duration_in_open"),
        Duration::from_millis(1),
        MAX_WAIT,
    )?;
    let backoff = match &rw.exponential_backoff {
        None => None,
        Some(b) => {
            let bp = path.field("exponential_backoff");
            let multiplier = b.multiplier.unwrap_or(2.0);
            if !(multiplier.is_finite() && (1.0..=100.0).contains(&multiplier)) {
                return Err(bp.field("multiplier").out_of_range(multiplier, 1, 100));
            }
            let max_wait_path = bp.field("max_wait");
            let max_wait = duration_in(
                b.max_wait.as_deref(),
                MAX_WAIT.min(wait_duration_in_open.saturating_mul(32)),
                &max_wait_path,
                Duration::ZERO,
                MAX_WAIT,
            )?;
            // The lower bound is another field: name it, not its value.
            if max_wait < wait_duration_in_open {
                let shown = b.max_wait.as_deref().unwrap_or_default();
                return Err(max_wait_path.out_of_range(shown, "wait_duration_in_open", "1d"));
            }
            Some(Backoff {
                multiplier,
                max_wait,
            })
        }
    };
    let permitted = number_in(
        rw.permitted_calls_in_half_open,
        10,
        &path.field("permitted_calls_in_half_open"),
        1,
        MAX_PERMITTED_IN_HALF_OPEN,
    )?;
    let half_open_probe_timeout = duration_in(
        rw.half_open_probe_timeout.as_deref(),
        Duration::from_secs(60),
        &path.field("half_open_probe_timeout"),
        Duration::from_millis(1),
        Duration::from_secs(3600),
    )?;
    Ok(Thresholds {
        window,
        minimum_number_of_calls,
        failure_rate_threshold,
        slow_call_rate_threshold,
        slow_call_duration,
        consecutive_failures,
        wait_duration_in_open,
        backoff,
        permitted_calls_in_half_open: permitted,
        half_open_probe_timeout,
    })
}

fn validate_statuses(
    wire: Option<&[StatusWire]>,
    path: &FieldPath,
) -> Result<StatusSet, ConfigError> {
    let Some(list) = wire else {
        return Ok(StatusSet(vec![(500, 599)]));
    };
    let mut ranges = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let p = path.field("failure_statuses").index(i);
        let (lo, hi) = match s {
            StatusWire::Code(c) => (*c, *c),
            StatusWire::Range(text) => {
                let parsed = text
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
                match parsed {
                    Some((a, b)) if a <= b => (a, b),
                    _ => {
                        return Err(p.invalid(
                            text,
                            "expected a status like 503 or a range like \"500-599\"",
                        ))
                    }
                }
            }
        };
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) {
            let shown = if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            };
            return Err(p.out_of_range(shown, 100, 599));
        }
        ranges.push((lo, hi));
    }
    Ok(StatusSet(ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Result<Rule, ConfigError> {
        Config::parse(format!(r#"{{"rules":[{json}]}}"#).as_bytes()).map(|c| c.rules[0].clone())
    }

    #[test]
    fn defaults_follow_resilience4j() {
        let r = rule(r#"{"name":"b"}"#).unwrap();
        let t = &r.thresholds;
        assert_eq!(t.window, WindowSpec::Count { size: 100 });
        assert_eq!(t.minimum_number_of_calls, 100);
        assert_eq!(t.failure_rate_threshold, 50.0);
        assert_eq!(t.slow_call_rate_threshold, 100.0);
        assert_eq!(t.slow_call_duration, Duration::from_secs(60));
        assert_eq!(t.wait_duration_in_open, Duration::from_secs(60));
        assert_eq!(t.permitted_calls_in_half_open, 10);
        assert_eq!(t.consecutive_failures, None);
        assert_eq!(t.backoff, None);
        assert_eq!(r.key, BreakerKey::Cluster);
        assert_eq!(r.mode, Mode::Normal);
        assert_eq!(r.reply.status, 503);
        assert!(r.failure_statuses.contains(500) && r.failure_statuses.contains(599));
        assert!(!r.failure_statuses.contains(429));
        assert_eq!(r.max_breakers, DEFAULT_MAX_BREAKERS);
        assert_eq!(r.failure_mode, FailureMode::Allow);
        assert_eq!(r.batching, None, "exact unless asked");
        let b = rule(r#"{"name":"b","success_batching":{}}"#).unwrap();
        assert_eq!(
            b.batching,
            Some(Batching {
                max_calls: 32,
                max_delay: Duration::from_millis(10)
            })
        );
    }

    #[test]
    fn minimum_calls_is_capped_at_a_count_window_but_not_a_time_window() {
        let c =
            rule(r#"{"name":"b","sliding_window_size":10,"minimum_number_of_calls":50}"#).unwrap();
        assert_eq!(c.thresholds.minimum_number_of_calls, 10);
        let t = rule(
            r#"{"name":"b","sliding_window_type":"time_based","sliding_window_size":10,"minimum_number_of_calls":50}"#,
        )
        .unwrap();
        assert_eq!(t.thresholds.minimum_number_of_calls, 50);
    }

    #[test]
    fn long_time_windows_use_at_most_sixty_wider_buckets() {
        let t = rule(r#"{"name":"b","sliding_window_type":"time_based","sliding_window_size":30}"#)
            .unwrap();
        assert_eq!(
            t.thresholds.window,
            WindowSpec::Time {
                buckets: 30,
                bucket_secs: 1
            }
        );
        let t =
            rule(r#"{"name":"b","sliding_window_type":"time_based","sliding_window_size":600}"#)
                .unwrap();
        assert_eq!(
            t.thresholds.window,
            WindowSpec::Time {
                buckets: 60,
                bucket_secs: 10
            }
        );
    }

    #[test]
    fn statuses_accept_codes_and_ranges() {
        let r = rule(r#"{"name":"b","failure_statuses":[429,"502-504"]}"#).unwrap();
        assert!(r.failure_statuses.contains(429));
        assert!(r.failure_statuses.contains(503));
        assert!(!r.failure_statuses.contains(500));
    }

    #[test]
    fn keys_parse_in_every_form() {
        for (json, want) in [
            (r#""cluster""#, BreakerKey::Cluster),
            (r#""route""#, BreakerKey::Route),
            (
                r#"{"header":"X-Tenant"}"#,
                BreakerKey::Header("x-tenant".into()),
            ),
            (r#"{"path_segments":2}"#, BreakerKey::PathSegments(2)),
            (r#"{"constant":"all"}"#, BreakerKey::Constant("all".into())),
        ] {
            assert_eq!(
                rule(&format!(r#"{{"name":"b","key":{json}}}"#))
                    .unwrap()
                    .key,
                want
            );
        }
    }

    #[test]
    fn errors_name_the_field_and_value() {
        for (json, field, needle) in [
            (
                r#"{"name":"b","failure_rate_threshold":0}"#,
                "rules[0].failure_rate_threshold",
                "\"0\"",
            ),
            (
                r#"{"name":"b","failure_rate_threshold":101}"#,
                "rules[0].failure_rate_threshold",
                "\"101\"",
            ),
            (
                r#"{"name":"b","sliding_window_size":0}"#,
                "rules[0].sliding_window_size",
                "\"0\"",
            ),
            (
                r#"{"name":"b","sliding_window_type":"sliding"}"#,
                "rules[0].sliding_window_type",
                "\"sliding\"",
            ),
            (
                r#"{"name":"b","wait_duration_in_open":"5"}"#,
                "rules[0].wait_duration_in_open",
                "\"5\"",
            ),
            (
                r#"{"name":"b","permitted_calls_in_half_open":0}"#,
                "rules[0].permitted_calls_in_half_open",
                "\"0\"",
            ),
            (
                r#"{"name":"b","failure_statuses":["600-700"]}"#,
                "rules[0].failure_statuses[0]",
                "600-700",
            ),
            (
                r#"{"name":"b","failure_statuses":["5xx"]}"#,
                "rules[0].failure_statuses[0]",
                "5xx",
            ),
            (r#"{"name":"b","mode":"off"}"#, "rules[0].mode", "\"off\""),
            (
                r#"{"name":"b","max_breakers":0}"#,
                "rules[0].max_breakers",
                "\"0\"",
            ),
            (
                r#"{"name":"b","success_batching":{"max_delay":"2s"}}"#,
                "rules[0].success_batching.max_delay",
                "2s",
            ),
            (
                r#"{"name":"b","key":{"path_segments":0}}"#,
                "rules[0].key.path_segments",
                "\"0\"",
            ),
            (
                r#"{"name":"b","wait_duration_in_open":"10s","exponential_backoff":{"max_wait":"5s"}}"#,
                "rules[0].exponential_backoff.max_wait",
                "wait_duration_in_open to 1d",
            ),
            (
                r#"{"name":"b","exponential_backoff":{"max_wait":"2d"}}"#,
                "rules[0].exponential_backoff.max_wait",
                "\"2d\"",
            ),
            (
                r#"{"name":"b","half_open_probe_timeout":"2h"}"#,
                "rules[0].half_open_probe_timeout",
                "1ms to 1h",
            ),
            (
                r#"{"name":"b","exponential_backoff":{"multiplier":0.5}}"#,
                "rules[0].exponential_backoff.multiplier",
                "0.5",
            ),
            (
                r#"{"name":"b","response":{"status":200}}"#,
                "rules[0].response.status",
                "200",
            ),
            (r#"{"name":"b c"}"#, "rules[0].name", "b c"),
            (
                r#"{"name":"b","treshold":1}"#,
                "rules[0].treshold",
                "unknown field",
            ),
        ] {
            let err = rule(json).unwrap_err();
            assert_eq!(err.field.as_str(), field, "{json}: {err}");
            assert!(err.to_string().contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn shadow_is_the_dry_run_and_metrics_only_still_works_with_a_deprecation_warning() {
        let parse = |json: &str| Config::parse(format!(r#"{{"rules":[{json}]}}"#).as_bytes());
        let new = parse(r#"{"name":"b","shadow":true}"#).unwrap();
        assert_eq!(new.rules[0].mode, Mode::MetricsOnly);
        assert!(new.warnings.is_empty(), "{:?}", new.warnings);
        let off = parse(r#"{"name":"b","shadow":false}"#).unwrap();
        assert_eq!(off.rules[0].mode, Mode::Normal);
        assert!(off.warnings.is_empty());

        for old in [
            r#"{"name":"b","mode":"metrics_only"}"#,
            r#"{"name":"b","mode":"metrics_only","shadow":true}"#,
        ] {
            let c = parse(old).unwrap();
            assert_eq!(c.rules[0].mode, Mode::MetricsOnly, "{old}");
            assert_eq!(
                c.warnings,
                vec![
                    "config field `rules[0].mode`: `\"metrics_only\"` is deprecated; write \
                     `\"shadow\": true` (and no `mode`) instead"
                        .to_owned()
                ],
                "{old}"
            );
        }
        assert_eq!(
            parse(r#"{"name":"b","mode":"forced_open","shadow":false}"#)
                .unwrap()
                .rules[0]
                .mode,
            Mode::ForcedOpen
        );
    }

    #[test]
    fn a_shadow_that_contradicts_the_mode_is_an_error_at_shadow() {
        for (json, value) in [
            (
                r#"{"name":"b","mode":"metrics_only","shadow":false}"#,
                "\"false\"",
            ),
            (
                r#"{"name":"b","mode":"forced_open","shadow":true}"#,
                "\"true\"",
            ),
            (
                r#"{"name":"b","mode":"forced_closed","shadow":true}"#,
                "\"true\"",
            ),
        ] {
            let err = rule(json).unwrap_err();
            assert_eq!(err.field.as_str(), "rules[0].shadow", "{json}: {err}");
            assert!(err.to_string().contains(value), "{json}: {err}");
        }
    }

    #[test]
    fn a_top_level_failure_mode_is_the_default_a_rule_can_override() {
        let c = Config::parse(
            br#"{"failure_mode":"deny","rules":[{"name":"a"},{"name":"b","failure_mode":"allow"}]}"#,
        )
        .unwrap();
        assert_eq!(c.failure_mode, FailureMode::Deny);
        assert_eq!(c.rules[0].failure_mode, FailureMode::Deny);
        assert_eq!(c.rules[1].failure_mode, FailureMode::Allow);
        let err = Config::parse(br#"{"failure_mode":"open","rules":[{"name":"a"}]}"#).unwrap_err();
        assert_eq!(err.field.as_str(), "failure_mode");
        let err = rule(r#"{"name":"a","failure_mode":"open"}"#).unwrap_err();
        assert_eq!(err.field.as_str(), "rules[0].failure_mode");
    }

    #[test]
    fn duplicate_rule_names_and_empty_rules_are_rejected() {
        let err = Config::parse(br#"{"rules":[{"name":"a"},{"name":"a"}]}"#).unwrap_err();
        assert_eq!(err.field.as_str(), "rules[1].name");
        let err = Config::parse(br#"{"rules":[]}"#).unwrap_err();
        assert_eq!(err.field.as_str(), "rules");
    }
}
