//! Configuration errors that say which field is wrong and why.
//!
//! Plugin configs are parsed in two steps: serde wire types with `deny_unknown_fields` (a typo is
//! an error, not a silently ignored default), then validation into domain types. Both steps report
//! a [`ConfigError`] naming the field by its path (`rules[0].limits[1].capacity`) and the offending
//! value, because the operator reads it in Envoy's log, far from the YAML that produced it. Values
//! of secret fields are never echoed: use [`ConfigError::invalid_secret`].

use crate::json::Strict;
use serde::de::DeserializeOwned;
use std::fmt;

/// Longest value echoed in an error message; longer values are cut with an ellipsis.
const MAX_ECHOED_VALUE: usize = 80;

/// A path to a config field, built while validating: `rules[2].key[0].header`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(String::new())
    }

    /// The path of a named child field.
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_owned())
        } else {
            FieldPath(format!("{}.{}", self.0, name))
        }
    }

    /// The path of an element of a list field.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{}]", self.0, i))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An "invalid value" error at this path.
    pub fn invalid(&self, value: impl fmt::Display, reason: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.clone(), value, reason)
    }

    /// A "required field missing" error at this path.
    pub fn missing(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(
            self.clone(),
            ConfigErrorKind::Missing {
                reason: reason.into(),
            },
        )
    }

    /// A deprecation warning for this field, for the plugin to log at configure: it names the
    /// field, what is deprecated and what to write instead.
    pub fn deprecated(&self, what: impl fmt::Display, instead: impl fmt::Display) -> String {
        format!("config field `{self}`: {what} is deprecated; write {instead} instead")
    }

    /// An "out of range" error at this path.
    pub fn out_of_range(
        &self,
        value: impl fmt::Display,
        min: impl fmt::Display,
        max: impl fmt::Display,
    ) -> ConfigError {
        ConfigError::new(
            self.clone(),
            ConfigErrorKind::OutOfRange {
                value: echo(value),
                min: min.to_string(),
                max: max.to_string(),
            },
        )
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<root>")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The JSON did not match the wire schema: syntax error, wrong type, unknown or missing field.
    Parse { message: String },
    /// The value has the right type but is not acceptable.
    Invalid { value: String, reason: String },
    /// A secret value is not acceptable; the value itself is withheld.
    InvalidSecret { reason: String },
    /// A number outside its allowed range.
    OutOfRange {
        value: String,
        min: String,
        max: String,
    },
    /// A field that must be present (perhaps only in combination with another) is absent.
    Missing { reason: String },
}

/// A configuration error: the field's path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: FieldPath,
    pub kind: ConfigErrorKind,
}

impl ConfigError {
    pub fn new(field: FieldPath, kind: ConfigErrorKind) -> Self {
        ConfigError { field, kind }
    }

    pub fn invalid(field: FieldPath, value: impl fmt::Display, reason: impl Into<String>) -> Self {
        ConfigError::new(
            field,
            ConfigErrorKind::Invalid {
                value: echo(value),
                reason: reason.into(),
            },
        )
    }

    /// The same error, for a config nested at `prefix` (a chain entry: `chain[1].rate_limit`).
    pub fn within(self, prefix: &FieldPath) -> Self {
        let inner = self.field.0;
        let field = if inner.is_empty() {
            prefix.clone()
        } else if inner.starts_with('[') {
            FieldPath(format!("{}{}", prefix.0, inner))
        } else {
            prefix.field(&inner)
        };
        ConfigError { field, ..self }
    }

    /// Like [`ConfigError::invalid`] for fields holding secrets: the value is not kept.
    pub fn invalid_secret(field: FieldPath, reason: impl Into<String>) -> Self {
        ConfigError::new(
            field,
            ConfigErrorKind::InvalidSecret {
                reason: reason.into(),
            },
        )
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ConfigErrorKind::Parse { message } => {
                write!(f, "config field `{}`: {}", self.field, message)
            }
            ConfigErrorKind::Invalid { value, reason } => {
                write!(
                    f,
                    "config field `{}`: invalid value {}: {}",
                    self.field, value, reason
                )
            }
            ConfigErrorKind::InvalidSecret { reason } => {
                write!(
                    f,
                    "config field `{}`: invalid value (secret, not shown): {}",
                    self.field, reason
                )
            }
            ConfigErrorKind::OutOfRange { value, min, max } => write!(
                f,
                "config field `{}`: value {} is out of range (allowed {} to {})",
                self.field, value, min, max
            ),
            ConfigErrorKind::Missing { reason } => {
                write!(f, "config field `{}`: missing: {}", self.field, reason)
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Quote and cut a value for an error message.
fn echo(value: impl fmt::Display) -> String {
    let s = value.to_string();
    if s.chars().count() <= MAX_ECHOED_VALUE {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX_ECHOED_VALUE).collect();
        format!("{cut:?}…")
    }
}

/// Declare config wire types: each derives `Debug` and serde's `Deserialize` with
/// `deny_unknown_fields` (a typo in a config is an error naming the field, never a silently
/// ignored default) and, with the declaring crate's `schema` feature, `schemars::JsonSchema` (the
/// published JSON Schemas are the wire types'). Every plugin declares its wire types through this
/// one macro, so none can forget to reject unknown fields.
///
/// Items are written as usual, docs, extra derives and serde or schemars attributes included:
/// `palisade_core::wire! { #[derive(Clone)] struct LimitWire { capacity: u64 } }`. An `Option`
/// field needs no `#[serde(default)]`: a missing one is `None`.
#[macro_export]
macro_rules! wire {
    () => {};
    ($(#[$attr:meta])* $vis:vis $item:ident $name:ident $body:tt $($rest:tt)*) => {
        #[cfg_attr(feature = "schema", derive(::schemars::JsonSchema))]
        #[derive(Debug, ::serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $(#[$attr])*
        $vis $item $name $body
        $crate::wire! { $($rest)* }
    };
}

/// Step one of config parsing: JSON bytes into wire types, with the failing field's path.
///
/// Empty input is an error naming the root: every plugin needs at least `{}`, and an empty
/// `configuration` in Envoy usually means the operator forgot to pass one (Istio sends an empty
/// configuration for a `WasmPlugin` without `pluginConfig`).
///
/// A number written with a fraction or an exponent whose value is a whole number of at most
/// 2^53 (`5.0`, `1e3`) is read as that integer ([`integral_numbers_as_integers`]): Istio passes
/// `pluginConfig` through a protobuf `Struct`, where every number is a double. `5.5` for an
/// integer field is still a type error naming the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(FieldPath::root()
            .missing("the plugin configuration is empty; pass a JSON object (at least `{}`)"));
    }
    let bytes = integral_numbers_as_integers(bytes);
    let Strict(value) = serde_json::from_slice(&bytes).map_err(|err| {
        ConfigError::new(
            FieldPath::root(),
            ConfigErrorKind::Parse {
                message: err.to_string(),
            },
        )
    })?;
    crate::json::from_value(&value).map_err(|err| {
        let field = if err.path.is_empty() {
            FieldPath::root()
        } else {
            FieldPath(err.path)
        };
        ConfigError::new(
            field,
            ConfigErrorKind::Parse {
                message: err.message,
            },
        )
    })
}

/// The largest integer a double holds exactly (2^53): beyond it `1e16` may not be the integer
/// the operator wrote, so it is left as a float (and refused by integer fields).
const MAX_EXACT_DOUBLE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// `json` with every number token that has a fraction or an exponent but a whole value (at most
/// 2^53 in magnitude) rewritten as a plain integer: `5.0` → `5`, `-2.50e1` → `-25`, `1e3` → `1000`.
/// Strings are left alone (escapes included), as are tokens that are not valid JSON numbers, so
/// malformed input stays malformed for the parser to reject. Borrows when nothing changes.
pub fn integral_numbers_as_integers(json: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    let mut copied = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < json.len() {
                    match json[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len()
                    && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = &json[start..i];
                if let Some(integer) = whole_number(token) {
                    let buf = out.get_or_insert_with(|| Vec::with_capacity(json.len()));
                    buf.extend_from_slice(&json[copied..start]);
                    buf.extend_from_slice(integer.as_bytes());
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    match out {
        None => std::borrow::Cow::Borrowed(json),
        Some(mut buf) => {
            buf.extend_from_slice(&json[copied..]);
            std::borrow::Cow::Owned(buf)
        }
    }
}

/// The integer a JSON number token with a fraction or exponent stands for, if it is a valid
/// JSON number (RFC 8259 grammar) with a whole value within ±2^53.
fn whole_number(token: &[u8]) -> Option<String> {
    if !token.iter().any(|c| matches!(c, b'.' | b'e' | b'E')) || !is_json_number(token) {
        return None;
    }
    let value: f64 = std::str::from_utf8(token).ok()?.parse().ok()?;
    if !value.is_finite() || value.fract() != 0.0 || value.abs() > MAX_EXACT_DOUBLE_INTEGER {
        return None;
    }
    // -0.0 is 0; every other value is exact in an i64.
    let integer = value as i64;
    Some(integer.to_string())
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
fn is_json_number(t: &[u8]) -> bool {
    let mut i = 0;
    if t.get(i) == Some(&b'-') {
        i += 1;
    }
    match t.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(t, &mut i);
        }
        _ => return false,
    }
    if t.get(i) == Some(&b'.') {
        i += 1;
        if !digits(t, &mut i) {
            return false;
        }
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(t, &mut i) {
            return false;
        }
    }
    i == t.len()
}

/// Moves `i` past the ASCII digits of `t` from there on; whether there was at least one.
fn digits(t: &[u8], i: &mut usize) -> bool {
    let start = *i;
    while t.get(*i).is_some_and(u8::is_ascii_digit) {
        *i += 1;
    }
    *i > start
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn rewritten(json: &str) -> String {
        String::from_utf8(integral_numbers_as_integers(json.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn whole_doubles_become_integers_as_istio_struct_numbers_need() {
        assert_eq!(
            rewritten(r#"{"a":5.0,"b":[1e3,-2.50e1,0.0,-0.0]}"#),
            r#"{"a":5,"b":[1000,-25,0,0]}"#
        );
        assert_eq!(rewritten("9007199254740992.0"), "9007199254740992");
    }

    #[test]
    fn fractions_huge_values_strings_and_malformed_numbers_are_left_alone() {
        for json in [
            r#"{"a":5.5}"#,
            r#"{"a":1e300}"#,
            r#"{"a":9007199254740994.0}"#,
            r#"{"a":"5.0","b":"x\"5.0"}"#,
            r#"{"a":01.0}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":5,"b":-3}"#,
        ] {
            assert_eq!(rewritten(json), json);
        }
        assert!(matches!(
            integral_numbers_as_integers(br#"{"a":5}"#),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn integer_field_accepts_whole_double_and_names_the_field_for_a_fraction() {
        let ok = parse_json::<Wire>(br#"{"rules":[{"name":"a","capacity":5.0}]}"#).unwrap();
        assert_eq!(ok.rules[0].capacity, 5);
        let err = parse_json::<Wire>(br#"{"rules":[{"name":"a","capacity":5.5}]}"#).unwrap_err();
        assert_eq!(err.field.as_str(), "rules[0].capacity");
        assert!(err.to_string().contains("5.5"), "{err}");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire {
        #[allow(dead_code)]
        rules: Vec<WireRule>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct WireRule {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        capacity: u32,
    }

    #[test]
    fn unknown_field_error_names_its_path() {
        let err = parse_json::<Wire>(
            br#"{"rules":[{"name":"a","capacity":1},{"name":"b","capacty":2}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.field.as_str(), "rules[1].capacty");
        let msg = err.to_string();
        for needle in ["rules[1].capacty", "unknown field"] {
            assert!(msg.contains(needle), "{needle}: {msg}");
        }
    }

    #[test]
    fn a_repeated_member_is_an_error_that_names_it() {
        let err = parse_json::<Wire>(br#"{"rules":[{"name":"a","capacity":1,"capacity":2}]}"#)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("duplicate object member `rules[0].capacity`"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_error_names_its_path() {
        let err = parse_json::<Wire>(br#"{"rules":[{"name":"a","capacity":"ten"}]}"#).unwrap_err();
        assert_eq!(err.field.as_str(), "rules[0].capacity");
        assert!(matches!(err.kind, ConfigErrorKind::Parse { .. }));
    }

    #[test]
    fn empty_config_is_rejected_at_the_root() {
        let err = parse_json::<Wire>(b"  \n").unwrap_err();
        assert!(matches!(err.kind, ConfigErrorKind::Missing { .. }));
        assert!(err.to_string().contains("<root>"));
    }

    #[test]
    fn validation_errors_name_field_and_value() {
        let path = FieldPath::root()
            .field("rules")
            .index(0)
            .field("limits")
            .index(1)
            .field("capacity");
        let err = path.out_of_range(0, 1, 1_000_000);
        assert_eq!(
            err.to_string(),
            "config field `rules[0].limits[1].capacity`: value \"0\" is out of range (allowed 1 to 1000000)"
        );
        let err = FieldPath::root()
            .field("mode")
            .invalid("sometimes", "expected `first` or `all`");
        assert_eq!(
            err.to_string(),
            "config field `mode`: invalid value \"sometimes\": expected `first` or `all`"
        );
    }

    #[test]
    fn secret_values_are_never_echoed() {
        let err = ConfigError::invalid_secret(FieldPath::root().field("secret"), "too short");
        assert!(!format!("{err} {err:?}").contains("hunter2"));
        assert!(err.to_string().contains("secret, not shown"));
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(500);
        let err = FieldPath::root().field("f").invalid(&long, "bad");
        assert!(err.to_string().len() < 200);
        assert!(err.to_string().contains('…'));
    }
}

/// Parse a duration such as `"250ms"`, `"1s"`, `"10m"`, `"1h"` or `"1d"` (a whole number and a
/// unit; `0` needs a unit too). Used for every duration field so they all read the same way.
pub fn parse_duration(text: &str, path: &FieldPath) -> Result<std::time::Duration, ConfigError> {
    use std::time::Duration;
    const HINT: &str =
        "expected a whole number with a unit: ms, s, m, h or d (e.g. \"1s\", \"250ms\")";
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let n: u64 = number.parse().map_err(|_| path.invalid(text, HINT))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(path.invalid(text, HINT)),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| path.invalid(text, "duration too large"))
}

/// A duration in the syntax [`parse_duration`] reads, in the largest unit that shows it exactly:
/// `1d`, `10m`, `90s`, `250ms`. Used to show a field's allowed range.
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// An optional duration field: `default` when absent, else parsed ([`parse_duration`]) and
/// checked to lie within `min..=max`; the error names the field, the value and the range.
pub fn duration_in(
    text: Option<&str>,
    default: std::time::Duration,
    path: &FieldPath,
    min: std::time::Duration,
    max: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let d = parse_duration(text, path)?;
    if d < min || d > max {
        return Err(path.out_of_range(text, format_duration(min), format_duration(max)));
    }
    Ok(d)
}

#[cfg(test)]
mod duration_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_duration_is_shown_in_the_largest_exact_unit_and_parses_back() {
        let p = FieldPath::root().field("d");
        for (d, text) in [
            (Duration::from_millis(0), "0ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(86_400), "1d"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text, &p).unwrap(), d);
        }
    }

    #[test]
    fn an_optional_duration_defaults_when_absent_and_names_its_range_when_outside() {
        let p = FieldPath::root().field("timeout");
        let (min, max) = (Duration::from_millis(1), Duration::from_secs(60));
        let default = Duration::from_secs(5);
        assert_eq!(duration_in(None, default, &p, min, max).unwrap(), default);
        assert_eq!(
            duration_in(Some("2s"), default, &p, min, max).unwrap(),
            Duration::from_secs(2)
        );
        let err = duration_in(Some("2m"), default, &p, min, max)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("timeout") && err.contains("\"2m\"") && err.contains("1ms to 1m"),
            "{err}"
        );
        assert!(duration_in(Some("0ms"), default, &p, min, max).is_err());
    }

    #[test]
    fn durations_parse_in_every_unit() {
        let p = FieldPath::root().field("period");
        assert_eq!(
            parse_duration("250ms", &p).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("1s", &p).unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("10m", &p).unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h", &p).unwrap(), Duration::from_secs(7200));
        assert_eq!(
            parse_duration("1d", &p).unwrap(),
            Duration::from_secs(86400)
        );
        assert_eq!(parse_duration("0s", &p).unwrap(), Duration::ZERO);
    }

    #[test]
    fn malformed_durations_name_the_field_and_value() {
        let p = FieldPath::root().field("period");
        for bad in [
            "",
            "1",
            "s",
            "1.5s",
            "-1s",
            "1 s",
            "1sec",
            "99999999999999999999s",
        ] {
            let err = parse_duration(bad, &p).unwrap_err();
            assert_eq!(err.field.as_str(), "period", "{bad:?}");
        }
        assert!(parse_duration("1x", &p)
            .unwrap_err()
            .to_string()
            .contains("\"1x\""));
    }
}

/// What [`validate_name`] accepts, as the wire types' JSON Schema says it
/// (`schemars(regex(pattern = palisade_core::config::NAME_PATTERN))`).
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9_-]{1,64}$";

/// `value` if it is 1 to `max` characters, each an ASCII letter or digit or one of
/// `punctuation`: the shape of every identifier a config names (rules, scopes, descriptor keys);
/// else an "invalid value" error giving `reason`.
pub fn validate_word(
    value: &str,
    path: &FieldPath,
    max: usize,
    punctuation: &str,
    reason: &str,
) -> Result<String, ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || punctuation.contains(c));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(path.invalid(value, reason))
    }
}

/// A name usable in metric names and shared-data keys: 1–64 of `[A-Za-z0-9_-]`
/// ([`NAME_PATTERN`]).
pub fn validate_name(name: &str, path: &FieldPath) -> Result<String, ConfigError> {
    validate_word(
        name,
        path,
        64,
        "_-",
        "use 1 to 64 characters from A-Z, a-z, 0-9, `_` and `-`",
    )
}

/// A string field that must hold something: an empty one is an "invalid value" error.
pub fn non_empty(value: &str, path: &FieldPath) -> Result<(), ConfigError> {
    if value.is_empty() {
        Err(path.invalid(value, "must not be empty"))
    } else {
        Ok(())
    }
}

/// The value of an enumerated string field, or an error listing the accepted spellings.
pub fn one_of<'a, T: Copy>(
    value: &str,
    path: &FieldPath,
    options: &'a [(&'a str, T)],
) -> Result<T, ConfigError> {
    options
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
            path.invalid(value, format!("expected one of {}", names.join(", ")))
        })
}

/// [`one_of`] for an optional field: `default` when absent.
pub fn one_of_or<T: Copy>(
    value: Option<&str>,
    default: T,
    path: &FieldPath,
    options: &[(&str, T)],
) -> Result<T, ConfigError> {
    value.map_or(Ok(default), |v| one_of(v, path, options))
}

/// A two-word enumerated string field: absent or `default.0` is `default.1`, `other.0` is
/// `other.1`; anything else is an error naming both words.
pub fn either<T: Copy>(
    value: Option<&str>,
    path: &FieldPath,
    default: (&str, T),
    other: (&str, T),
) -> Result<T, ConfigError> {
    Ok(if is_other(value, path, default.0, other.0)? {
        other.1
    } else {
        default.1
    })
}

/// [`either`]'s check, kept out of the generic function so that each enumeration adds no copy
/// of it to the module.
fn is_other(
    value: Option<&str>,
    path: &FieldPath,
    default: &str,
    other: &str,
) -> Result<bool, ConfigError> {
    match value {
        None => Ok(false),
        Some(v) if v == default => Ok(false),
        Some(v) if v == other => Ok(true),
        Some(v) => Err(path.invalid(v, format!("expected `{default}` or `{other}`"))),
    }
}

crate::wire! {
    /// Wire form of a plugin's local reply: `{"status": 429, "body": "...", "content_type": "..."}`,
    /// every field optional.
    #[derive(Clone, Default)]
    pub struct ReplyWire {
        #[cfg_attr(feature = "schema", schemars(range(min = 400, max = 599)))]
        pub status: Option<u16>,
        pub body: Option<String>,
        pub content_type: Option<String>,
    }
}

/// A validated local reply (status 400–599, a header-safe content type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplySpec {
    pub status: u16,
    pub body: String,
    pub content_type: String,
}

impl ReplySpec {
    /// Validate `wire` (absent: all defaults), with this plugin's default status and body.
    pub fn validate(
        wire: Option<&ReplyWire>,
        path: &FieldPath,
        default_status: u16,
        default_body: &str,
    ) -> Result<ReplySpec, ConfigError> {
        let status = wire.and_then(|r| r.status).unwrap_or(default_status);
        if !(400..=599).contains(&status) {
            return Err(path.field("status").out_of_range(status, 400, 599));
        }
        let body = wire
            .and_then(|r| r.body.clone())
            .unwrap_or_else(|| default_body.to_owned());
        let content_type = wire
            .and_then(|r| r.content_type.clone())
            .unwrap_or_else(|| "text/plain; charset=utf-8".to_owned());
        if content_type.is_empty() || content_type.chars().any(|c| c.is_ascii_control()) {
            return Err(path
                .field("content_type")
                .invalid(&content_type, "not a valid header value"));
        }
        Ok(ReplySpec {
            status,
            body,
            content_type,
        })
    }
}

#[cfg(test)]
mod shared_field_tests {
    use super::*;

    #[test]
    fn names_are_limited_to_metric_safe_characters() {
        let p = FieldPath::root().field("name");
        assert_eq!(validate_name("per_ip-2", &p).unwrap(), "per_ip-2");
        for bad in ["", "a b", "a/b", "a.b", &"x".repeat(65)] {
            assert_eq!(
                validate_name(bad, &p).unwrap_err().field.as_str(),
                "name",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_two_word_enumeration_defaults_to_its_first_word_and_names_both() {
        let p = FieldPath::root().field("mode");
        for (value, want) in [(None, 1), (Some("all"), 1), (Some("first"), 2)] {
            assert_eq!(
                either(value, &p, ("all", 1), ("first", 2)).unwrap(),
                want,
                "{value:?}"
            );
        }
        let err = either(Some("some"), &p, ("all", 1), ("first", 2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config field `mode`: invalid value \"some\": expected `all` or `first`"
        );
    }

    #[test]
    fn words_are_bounded_runs_of_letters_digits_and_the_given_punctuation() {
        let p = FieldPath::root().field("key");
        for (value, max, punctuation, ok) in [
            ("a-b_c", 64, "_-", true),
            ("a.b:c", 8, "_.:-", true),
            ("a.b", 64, "_-", false),
            ("", 64, "_-", false),
            ("abcd", 3, "", false),
            ("é", 64, "_-", false),
        ] {
            let case = format!("{value:?} {max} {punctuation:?}");
            match validate_word(value, &p, max, punctuation, "a word") {
                Ok(word) => assert!(ok && word == value, "{case}"),
                Err(err) => {
                    assert!(!ok, "{case}: {err}");
                    assert_eq!(
                        err.to_string(),
                        format!("config field `key`: invalid value {value:?}: a word"),
                        "{case}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_empty_string_is_refused_where_one_is_required() {
        let p = FieldPath::root().field("issuer");
        assert!(non_empty("x", &p).is_ok());
        assert_eq!(
            non_empty("", &p).unwrap_err().to_string(),
            "config field `issuer`: invalid value \"\": must not be empty"
        );
    }

    #[test]
    fn enumerations_list_what_they_accept() {
        let p = FieldPath::root().field("mode");
        assert_eq!(one_of("b", &p, &[("a", 1), ("b", 2)]).unwrap(), 2);
        let err = one_of("c", &p, &[("a", 1), ("b", 2)]).unwrap_err();
        assert!(
            err.to_string().contains("expected one of `a`, `b`"),
            "{err}"
        );
        for (value, want) in [(None, 0), (Some("a"), 1), (Some("b"), 2)] {
            assert_eq!(
                one_of_or(value, 0, &p, &[("a", 1), ("b", 2)]).unwrap(),
                want,
                "{value:?}"
            );
        }
        let err = one_of_or(Some("c"), 0, &p, &[("a", 1), ("b", 2)]).unwrap_err();
        assert_eq!(err, one_of("c", &p, &[("a", 1), ("b", 2)]).unwrap_err());
    }

    #[test]
    fn replies_default_and_validate() {
        let p = FieldPath::root().field("response");
        let d = ReplySpec::validate(None, &p, 429, "slow down\n").unwrap();
        assert_eq!((d.status, d.body.as_str()), (429, "slow down\n"));
        let bad_status = ReplyWire {
            status: Some(200),
            ..ReplyWire::default()
        };
        let bad_content_type = ReplyWire {
            content_type: Some("a\nb".into()),
            ..ReplyWire::default()
        };
        for (bad, field) in [
            (bad_status, "response.status"),
            (bad_content_type, "response.content_type"),
        ] {
            let err = ReplySpec::validate(Some(&bad), &p, 429, "").unwrap_err();
            assert_eq!(err.field.as_str(), field, "{bad:?}");
        }
    }
}

/// Validate a list of named rules: at least one, at most `max`, each through `validate` (which
/// gets the element's path, `rules[i]`), names unique (a duplicate is reported at `rules[i].name`).
/// Rule names become metric names and shared-data keys, hence the uniqueness.
pub fn validate_rules<W, T>(
    wire: &[W],
    path: &FieldPath,
    max: usize,
    validate: impl FnMut(&W, &FieldPath) -> Result<T, ConfigError>,
    name: impl Fn(&T) -> &str,
) -> Result<Vec<T>, ConfigError> {
    validate_named(wire, path, max, "rule", validate, name)
}

/// [`validate_rules`] for a list of named `what`s (`"provider"`): the errors say "at least one
/// provider is needed", "provider names must be unique".
pub fn validate_named<W, T>(
    wire: &[W],
    path: &FieldPath,
    max: usize,
    what: &str,
    mut validate: impl FnMut(&W, &FieldPath) -> Result<T, ConfigError>,
    name: impl Fn(&T) -> &str,
) -> Result<Vec<T>, ConfigError> {
    list_len(
        wire.len(),
        path,
        max,
        &format!("at least one {what} is needed"),
    )?;
    let mut items: Vec<T> = Vec::with_capacity(wire.len());
    for (i, w) in wire.iter().enumerate() {
        let element = path.index(i);
        let item = validate(w, &element)?;
        if items.iter().any(|r| name(r) == name(&item)) {
            return Err(element
                .field("name")
                .invalid(name(&item), format!("{what} names must be unique")));
        }
        items.push(item);
    }
    Ok(items)
}

/// Validate every element of a list field (absent: empty) through `validate`, which gets the
/// element's path (`field[i]`); the first error stops.
pub fn validate_each<'a, W: 'a, T>(
    list: impl IntoIterator<Item = &'a W>,
    path: &FieldPath,
    mut validate: impl FnMut(&'a W, &FieldPath) -> Result<T, ConfigError>,
) -> Result<Vec<T>, ConfigError> {
    list.into_iter()
        .enumerate()
        .map(|(i, w)| validate(w, &path.index(i)))
        .collect()
}

/// A list field of at least one element (else "missing", with `reason`) and at most `max`, each
/// through `validate` as [`validate_each`] does.
pub fn validate_list<W, T>(
    wire: &[W],
    path: &FieldPath,
    max: usize,
    reason: &str,
    validate: impl FnMut(&W, &FieldPath) -> Result<T, ConfigError>,
) -> Result<Vec<T>, ConfigError> {
    list_len(wire.len(), path, max, reason)?;
    validate_each(wire, path, validate)
}

/// A list field's length: at least one element (else "missing", with `reason`), at most `max`.
pub fn list_len(len: usize, path: &FieldPath, max: usize, reason: &str) -> Result<(), ConfigError> {
    if len == 0 {
        return Err(path.missing(reason));
    }
    if len > max {
        return Err(path.out_of_range(len, 1, max));
    }
    Ok(())
}

/// The `scope` field of the plugins that keep shared data: a [`validate_name`], `default` when
/// absent. It names the shared-data namespace, so two filters sharing a scope share state.
pub fn validate_scope(wire: Option<&str>, root: &FieldPath) -> Result<String, ConfigError> {
    match wire {
        Some(s) => validate_name(s, &root.field("scope")),
        None => Ok("default".to_owned()),
    }
}

/// An optional whole-number field: `default` when absent, else checked by [`in_range`].
pub fn number_in<T>(
    value: Option<T>,
    default: T,
    path: &FieldPath,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: PartialOrd + Copy + fmt::Display,
{
    in_range(value.unwrap_or(default), path, min, max)
}

/// A whole number that must lie within `min..=max`; the error names the field, the value and
/// the range.
pub fn in_range<T>(value: T, path: &FieldPath, min: T, max: T) -> Result<T, ConfigError>
where
    T: PartialOrd + Copy + fmt::Display,
{
    if value < min || value > max {
        return Err(path.out_of_range(value, min, max));
    }
    Ok(value)
}

#[cfg(test)]
mod rule_list_tests {
    use super::*;

    fn named(w: &&str, _: &FieldPath) -> Result<String, ConfigError> {
        Ok((*w).to_owned())
    }

    #[test]
    fn rule_lists_need_one_to_max_uniquely_named_rules() {
        let p = FieldPath::root().field("rules");
        let ok = validate_rules(&["a", "b"], &p, 4, named, |r| r.as_str()).unwrap();
        assert_eq!(ok, vec!["a", "b"]);
        let empty: [&str; 0] = [];
        assert_eq!(
            validate_rules(&empty, &p, 4, named, |r| r.as_str())
                .unwrap_err()
                .field
                .as_str(),
            "rules"
        );
        assert_eq!(
            validate_rules(&["a", "b", "c"], &p, 2, named, |r| r.as_str())
                .unwrap_err()
                .field
                .as_str(),
            "rules"
        );
        let dup = validate_rules(&["a", "b", "a"], &p, 4, named, |r| r.as_str()).unwrap_err();
        assert_eq!(dup.field.as_str(), "rules[2].name");
        assert!(dup.to_string().contains("unique"));
    }

    #[test]
    fn each_element_is_validated_at_its_index_and_an_absent_list_is_empty() {
        let p = FieldPath::root().field("remove");
        let names = |n: &String, p: &FieldPath| validate_name(n, p);
        let list = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            validate_each(Some(&list).into_iter().flatten(), &p, names).unwrap(),
            list
        );
        let none: Option<&Vec<String>> = None;
        assert!(validate_each(none.into_iter().flatten(), &p, names)
            .unwrap()
            .is_empty());
        let bad = vec!["a".to_owned(), "b c".to_owned()];
        let err = validate_each(&bad, &p, names).unwrap_err();
        assert_eq!(err.field.as_str(), "remove[1]");
    }

    #[test]
    fn a_required_list_needs_one_to_max_elements_each_validated_at_its_index() {
        let p = FieldPath::root().field("rules");
        let names = |n: &String, p: &FieldPath| validate_name(n, p);
        let list = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(validate_list(&list, &p, 2, "one", names).unwrap(), list);
        let three = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let bad = vec!["a".to_owned(), "b c".to_owned()];
        for (list, field, message) in [
            (vec![], "rules", "config field `rules`: missing: one"),
            (
                three,
                "rules",
                "config field `rules`: value \"3\" is out of range (allowed 1 to 2)",
            ),
            (
                bad,
                "rules[1]",
                "config field `rules[1]`: invalid value \"b c\": use 1 to 64 characters from \
                 A-Z, a-z, 0-9, `_` and `-`",
            ),
        ] {
            let err = validate_list(&list, &p, 2, "one", names).unwrap_err();
            assert_eq!(err.field.as_str(), field, "{list:?}");
            assert_eq!(err.to_string(), message, "{list:?}");
        }
    }

    #[test]
    fn a_missing_scope_is_the_default_one_and_a_bad_one_is_named() {
        let root = FieldPath::root();
        assert_eq!(validate_scope(None, &root).unwrap(), "default");
        assert_eq!(validate_scope(Some("edge"), &root).unwrap(), "edge");
        let err = validate_scope(Some("a/b"), &root).unwrap_err();
        assert_eq!(err.field.as_str(), "scope");
        assert!(err.to_string().contains("\"a/b\""), "{err}");
    }

    #[test]
    fn a_bounded_number_defaults_when_absent_and_names_its_range_when_outside() {
        let p = FieldPath::root().field("max_keys");
        assert_eq!(number_in(None, 64u32, &p, 1, 100).unwrap(), 64);
        assert_eq!(number_in(Some(100u32), 64, &p, 1, 100).unwrap(), 100);
        for bad in [0u32, 101] {
            let want = format!(
                "config field `max_keys`: value \"{bad}\" is out of range (allowed 1 to 100)"
            );
            let err = number_in(Some(bad), 64, &p, 1, 100).unwrap_err();
            assert_eq!(err.to_string(), want);
            let err = in_range(bad, &p, 1, 100).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
        assert_eq!(in_range(1u32, &p, 1, 100).unwrap(), 1);
    }
}

/// What a plugin does with a request it cannot decide on, usually because shared data could not
/// be read or updated (compare-and-swap lost beyond the retry bound, or a host error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Fail open: let the request through (and count it).
    Allow,
    /// Fail closed: reject it with the plugin's reply.
    Deny,
}

impl FailureMode {
    /// `"allow"` or `"deny"`; absent means `allow`, every plugin's documented default. This is
    /// the top-level `failure_mode` of a config: the default of its rules.
    pub fn validate(wire: Option<&str>, path: &FieldPath) -> Result<FailureMode, ConfigError> {
        FailureMode::validate_or(wire, FailureMode::Allow, path)
    }

    /// A rule's own `failure_mode`, overriding the config's top-level one (`default`).
    pub fn validate_or(
        wire: Option<&str>,
        default: FailureMode,
        path: &FieldPath,
    ) -> Result<FailureMode, ConfigError> {
        one_of_or(
            wire,
            default,
            path,
            &[("allow", FailureMode::Allow), ("deny", FailureMode::Deny)],
        )
    }
}

#[cfg(test)]
mod failure_mode_tests {
    use super::*;

    #[test]
    fn failure_mode_defaults_to_allow_and_rejects_other_words() {
        let p = FieldPath::root().field("failure_mode");
        assert_eq!(FailureMode::validate(None, &p).unwrap(), FailureMode::Allow);
        assert_eq!(
            FailureMode::validate(Some("deny"), &p).unwrap(),
            FailureMode::Deny
        );
        let err = FailureMode::validate(Some("open"), &p).unwrap_err();
        assert_eq!(err.field.as_str(), "failure_mode");
        assert!(err.to_string().contains("expected one of `allow`, `deny`"));
    }

    #[test]
    fn a_rules_failure_mode_overrides_the_top_level_one() {
        let p = FieldPath::root().field("failure_mode");
        let deny = FailureMode::Deny;
        assert_eq!(FailureMode::validate_or(None, deny, &p).unwrap(), deny);
        assert_eq!(
            FailureMode::validate_or(Some("allow"), deny, &p).unwrap(),
            FailureMode::Allow
        );
        let err = FailureMode::validate_or(Some("open"), deny, &p).unwrap_err();
        assert_eq!(err.field.as_str(), "failure_mode");
    }
}
