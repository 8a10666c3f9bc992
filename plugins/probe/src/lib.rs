//! `probe`: a test-only module, not one of the five plugins.
//!
//! It exists so the skeleton can be proven before any policy: it loads into real Envoy, validates
//! its config through the same two-step path as every plugin (so a bad config is rejected with the
//! field named), and optionally counts requests in shared data through the CAS loop, which the
//! end-to-end suite checks is exact across workers. With `count: false` it does exactly one header
//! read and one header write per request: the benchmark's floor for any Wasm filter.
//!
//! Config: `{"header": "x-palisade-probe", "count": true, "scope": "default"}`, and for fault
//! tests `"crash_header": "x-crash"`: a request carrying that header makes the probe panic, which
//! aborts the worker's Wasm VM. It exists so the suite can prove that its "no VM failed" checks
//! see a failure when one happens (a check that cannot fail proves nothing).
//!
//! For the benchmark's price list of hostcalls, `"extra_increments": N` adds N increments of the
//! `requests` counter per request and `"extra_header_writes": N` N writes of `<header>-<i>`: the
//! cases `probe_metrics` and `probe_header_writes` against the floor give the cost of one each.

use palisade_core::config::{parse_json, ConfigError, FieldPath};
use palisade_core::key::validate_header_name;
use palisade_core::store::{update, Step, UpdateError, DEFAULT_MAX_ATTEMPTS};
use palisade_core::SharedStore;
use serde::Deserialize;

#[cfg(target_arch = "wasm32")]
mod filter;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    header: String,
    #[serde(default)]
    count: bool,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    crash_header: Option<String>,
    #[serde(default)]
    extra_increments: u32,
    #[serde(default)]
    extra_header_writes: u32,
}

/// The most extra hostcalls of one kind a request may ask for.
pub const MAX_EXTRA: u32 = 100;

/// Validated probe configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Request header the probe writes (its value is the request's `:path`, or the count).
    pub header: String,
    /// Count every request in shared data and report the running total in `header`.
    pub count: bool,
    /// Shared-data scope, so two probe instances can keep separate counts.
    pub scope: String,
    /// A request carrying this header makes the probe panic (fault tests only).
    pub crash_header: Option<String>,
    /// More increments of the `requests` counter per request (benchmark only).
    pub extra_increments: u32,
    /// More header writes per request, of `<header>-<i>` (benchmark only).
    pub extra_header_writes: u32,
}

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let wire: Wire = parse_json(bytes)?;
        let root = FieldPath::root();
        let header = validate_header_name(&wire.header, &root.field("header"))?;
        if header.starts_with(':') {
            return Err(root
                .field("header")
                .invalid(&wire.header, "the probe cannot write a pseudo-header"));
        }
        let scope = wire.scope.unwrap_or_else(|| "default".to_owned());
        if scope.is_empty() || scope.contains('/') {
            return Err(root
                .field("scope")
                .invalid(&scope, "must be non-empty and contain no `/`"));
        }
        let crash_header = wire
            .crash_header
            .as_deref()
            .map(|h| validate_header_name(h, &root.field("crash_header")))
            .transpose()?;
        for (field, n) in [
            ("extra_increments", wire.extra_increments),
            ("extra_header_writes", wire.extra_header_writes),
        ] {
            if n > MAX_EXTRA {
                return Err(root.field(field).invalid(n, format!("at most {MAX_EXTRA}")));
            }
        }
        Ok(Config {
            header,
            count: wire.count,
            scope,
            crash_header,
            extra_increments: wire.extra_increments,
            extra_header_writes: wire.extra_header_writes,
        })
    }
}

/// Shared-data key of the request counter (under the probe's prefix).
pub const COUNTER_KEY: &str = "requests";

/// Add one to the shared request counter and return the new total.
pub fn count_request(store: &dyn SharedStore) -> Result<u64, UpdateError> {
    update(store, COUNTER_KEY, DEFAULT_MAX_ATTEMPTS, |current| {
        let n = decode(current).saturating_add(1);
        Step::Write(n.to_le_bytes().to_vec(), n)
    })
    .map(|done| done.output)
}

fn decode(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::testing::FakeStore;

    #[test]
    fn a_minimal_config_parses_with_defaults() {
        let c = Config::parse(br#"{"header": "X-Probe"}"#).unwrap();
        assert_eq!(c.header, "x-probe");
        assert!(!c.count);
        assert_eq!(c.scope, "default");
    }

    #[test]
    fn a_bad_header_name_is_rejected_naming_the_field() {
        let err = Config::parse(br#"{"header": "not a header"}"#).unwrap_err();
        assert_eq!(err.field.as_str(), "header");
        assert!(err.to_string().contains("not a header"));
    }

    #[test]
    fn a_typo_is_rejected_naming_the_field() {
        let err = Config::parse(br#"{"header": "x", "cuont": true}"#).unwrap_err();
        assert_eq!(err.field.as_str(), "cuont");
    }

    #[test]
    fn a_crash_header_is_validated_and_lowercased() {
        let c = Config::parse(br#"{"header": "x", "crash_header": "X-Crash"}"#).unwrap();
        assert_eq!(c.crash_header.as_deref(), Some("x-crash"));
        let err = Config::parse(br#"{"header": "x", "crash_header": "bad name"}"#).unwrap_err();
        assert_eq!(err.field.as_str(), "crash_header");
    }

    #[test]
    fn extra_hostcalls_default_to_none_and_are_bounded() {
        let c = Config::parse(br#"{"header": "x"}"#).unwrap();
        assert_eq!((c.extra_increments, c.extra_header_writes), (0, 0));
        let c = Config::parse(
            br#"{"header": "x", "extra_increments": 10, "extra_header_writes": 100}"#,
        )
        .unwrap();
        assert_eq!((c.extra_increments, c.extra_header_writes), (10, 100));
        for field in ["extra_increments", "extra_header_writes"] {
            let json = format!(r#"{{"header": "x", "{field}": 101}}"#);
            let err = Config::parse(json.as_bytes()).unwrap_err();
            assert_eq!(err.field.as_str(), field);
            assert!(err.to_string().contains("101"), "{err}");
        }
    }

    #[test]
    fn counting_survives_conflicts_and_is_exact() {
        let store = FakeStore::new();
        assert_eq!(count_request(&store).unwrap(), 1);
        store.inject_conflicts(3);
        assert_eq!(count_request(&store).unwrap(), 2);
        store.inject_conflicts(DEFAULT_MAX_ATTEMPTS);
        assert!(matches!(
            count_request(&store),
            Err(UpdateError::Exhausted { .. })
        ));
        assert_eq!(count_request(&store).unwrap(), 3);
    }
}
