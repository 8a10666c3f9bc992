//! Configuration: JSON wire types (unknown fields rejected) and their validation.
//!
//! The field-by-field reference is `docs/jwt_auth.md`; keep the two in step. Inline JWKS may
//! hold HMAC secrets: errors about them never echo key material.

use crate::claims::{ClaimPath, Condition, Requirement};
use crate::jwks::KeySet;
use crate::token::{Alg, KeyKind};
use crate::verify::TimeRules;
use crate::Compat;
use palisade_core::config::{
    duration_in, either, non_empty, number_in, parse_json, validate_each, validate_list,
    validate_name, validate_named, validate_scope, ConfigError, FieldPath,
};
use palisade_core::key::validate_header_name;
use palisade_core::matcher::{MatchWire, RequestMatch};
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

palisade_core::wire! {
    struct Wire {
        #[cfg_attr(feature = "schema", schemars(regex(pattern = palisade_core::config::NAME_PATTERN)))]
        scope: Option<String>,
        #[cfg_attr(
            feature = "schema",
            schemars(regex(pattern = r"^[ !#-\[\]-~]{1,128}$"))
        )]
        realm: Option<String>,
        #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_PROVIDERS)))]
        providers: Vec<ProviderWire>,
        #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_RULES)))]
        rules: Vec<RuleWire>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["deny", "allow", null])))]
        unmatched: Option<String>,
        bypass_cors_preflight: Option<bool>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = [401, 403, null])))]
        audience_failure_status: Option<u16>,
        keys_unavailable: Option<KeysUnavailableWire>,
        cache: Option<CacheWire>,
    }
}

palisade_core::wire! {
    struct ProviderWire {
        #[cfg_attr(feature = "schema", schemars(regex(pattern = palisade_core::config::NAME_PATTERN)))]
        name: String,
        #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
        issuer: String,
        audiences: Option<Vec<String>>,
        algorithms: Option<Vec<String>>,
        jwks: JwksWire,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        clock_skew: Option<String>,
        require_expiration: Option<bool>,
        #[cfg_attr(feature = "schema", schemars(range(min = 64, max = MAX_MAX_TOKEN_SIZE)))]
        max_token_size: Option<usize>,
        from_headers: Option<Vec<HeaderLocationWire>>,
        from_params: Option<Vec<String>>,
        from_cookies: Option<Vec<String>>,
        forward: Option<bool>,
        claim_to_headers: Option<Vec<ClaimHeaderWire>>,
        payload_header: Option<String>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["strict", "jwt_authn", null])))]
        compat: Option<String>,
    }
}

palisade_core::wire! {
    struct JwksWire {
        #[cfg_attr(feature = "schema", schemars(with = "Option<serde_json::Value>"))]
        inline: Option<Box<serde_json::value::RawValue>>,
        remote: Option<RemoteWire>,
    }
}

palisade_core::wire! {
    struct RemoteWire {
        #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
        cluster: String,
        uri: String,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        timeout: Option<String>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        cache_duration: Option<String>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        min_refetch_interval: Option<String>,
    }
}

palisade_core::wire! {
    struct HeaderLocationWire {
        name: String,
        prefix: Option<String>,
    }
}

palisade_core::wire! {
    struct ClaimHeaderWire {
        #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
        claim: String,
        header: String,
    }
}

palisade_core::wire! {
    struct RuleWire {
        #[serde(default, rename = "match")]
        matcher: Option<MatchWire>,
        providers: Option<Vec<String>>,
        allow_missing: Option<bool>,
        bypass: Option<bool>,
        claims: Option<Vec<ClaimWire>>,
    }
}

/// `"x"` or `["x", "y"]`. A hand-written visitor rather than `#[serde(untagged)]`, whose
/// buffering machinery costs kilobytes of module size.
#[derive(Debug)]
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        d.deserialize_any(V)
    }
}

palisade_core::wire! {
    struct ClaimWire {
        claim: String,
        #[cfg_attr(
            feature = "schema",
            schemars(with = "Option<palisade_core::schema::OneOrManyStrings>")
        )]
        equals: Option<OneOrMany>,
        #[cfg_attr(
            feature = "schema",
            schemars(with = "Option<palisade_core::schema::OneOrManyStrings>")
        )]
        contains: Option<OneOrMany>,
        present: Option<bool>,
    }
}

palisade_core::wire! {
    struct KeysUnavailableWire {
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["reject", "pause"])))]
        action: String,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        max_wait: Option<String>,
    }
}

palisade_core::wire! {
    struct CacheWire {
        #[cfg_attr(feature = "schema", schemars(range(max = MAX_CACHE_ENTRIES)))]
        max_entries: Option<usize>,
    }
}

/// Where a token is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A header (lowercase name) whose value starts with `prefix` (matched case-insensitively,
    /// as RFC 6750 allows for `Bearer`).
    Header { name: String, prefix: String },
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

/// A remote JWKS, fetched through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout: Duration,
    pub cache_duration: Duration,
    pub min_refetch_interval: Duration,
}

/// Where a provider's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    Inline(KeySet),
    Remote(Remote),
}

/// One validated provider.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub jwks: JwksSource,
    pub time: TimeRules,
    pub max_token_size: usize,
    pub locations: Vec<Location>,
    pub forward: bool,
    pub claim_headers: Vec<(ClaimPath, String)>,
    pub payload_header: Option<String>,
    /// Relaxations for users migrating from Envoy's `jwt_authn` (default: none).
    pub compat: Compat,
}

impl Provider {
    /// The headers this provider writes (mapped claims, the payload).
    pub fn output_headers(&self) -> impl Iterator<Item = &String> {
        (self.claim_headers.iter().map(|(_, h)| h)).chain(self.payload_header.iter())
    }
}

/// What a rule asks of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requires {
    /// No verification at all (output headers are still stripped).
    Bypass,
    /// A token from any one of these providers (indexes into `Config::providers`).
    Token {
        providers: Vec<usize>,
        allow_missing: bool,
        claims: Vec<Requirement>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matcher: RequestMatch,
    pub requires: Requires,
}

/// What happens to a request whose provider has no key set yet (remote JWKS not fetched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysUnavailable {
    /// Reply 503 at once.
    Reject,
    /// Hold the request until the keys arrive, at most this long, then reply 503.
    Pause(Duration),
}

/// The validated plugin configuration.
///
/// With the `schema` feature its JSON Schema is the wire format's (`schema/jwt_auth.schema.json`).
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(with = "Wire")
)]
pub struct Config {
    pub scope: String,
    pub realm: String,
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    /// Requests no rule matches: denied (false, the default) or let through.
    pub allow_unmatched: bool,
    pub bypass_cors_preflight: bool,
    pub audience_failure_status: u16,
    pub keys_unavailable: KeysUnavailable,
    pub cache_max_entries: usize,
}

pub const DEFAULT_MAX_TOKEN_SIZE: usize = 8192;
pub const MAX_MAX_TOKEN_SIZE: usize = 65536;
pub const MAX_PROVIDERS: usize = 16;
pub const MAX_RULES: usize = 64;
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;
pub const MAX_CACHE_ENTRIES: usize = 100_000;
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CACHE_DURATION: Duration = Duration::from_secs(600);
pub const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(3);

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let wire: Wire = parse_json(bytes)?;
        let root = FieldPath::root();
        let scope = validate_scope(wire.scope.as_deref(), &root)?;
        let realm = wire.realm.clone().unwrap_or_else(|| "palisade".to_owned());
        if realm.is_empty()
            || realm.len() > 128
            || !realm
                .chars()
                .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\')
        {
            return Err(root.field("realm").invalid(
                &realm,
                "use 1 to 128 printable ASCII characters without `\"` or `\\`",
            ));
        }
        let providers = validate_named(
            &wire.providers,
            &root.field("providers"),
            MAX_PROVIDERS,
            "provider",
            validate_provider,
            |p| &p.name,
        )?;
        let output_headers: HashSet<&String> = providers
            .iter()
            .flat_map(Provider::output_headers)
            .collect();
        // An output header must never be a place a token is read from, or stripping spoofed
        // outputs would eat the token.
        for (i, p) in providers.iter().enumerate() {
            for loc in &p.locations {
                if let Location::Header { name, .. } = loc {
                    if output_headers.contains(name) {
                        return Err(root
                            .field("providers")
                            .index(i)
                            .field("from_headers")
                            .invalid(name, "is also an output header"));
                    }
                }
            }
        }
        let rules = validate_list(
            &wire.rules,
            &root.field("rules"),
            MAX_RULES,
            "at least one rule is needed",
            |rw, path| validate_rule(rw, &providers, path),
        )?;
        let allow_unmatched = either(
            wire.unmatched.as_deref(),
            &root.field("unmatched"),
            ("deny", false),
            ("allow", true),
        )?;
        let audience_failure_status = wire.audience_failure_status.unwrap_or(403);
        if audience_failure_status != 401 && audience_failure_status != 403 {
            return Err(root
                .field("audience_failure_status")
                .invalid(audience_failure_status, "expected 401 or 403"));
        }
        let keys_unavailable = match &wire.keys_unavailable {
            None => KeysUnavailable::Reject,
            Some(k) => {
                let path = root.field("keys_unavailable");
                match k.action.as_str() {
                    "reject" => {
                        if k.max_wait.is_some() {
                            return Err(path.field("max_wait").invalid(
                                k.max_wait.as_deref().unwrap_or_default(),
                                "only with action `pause`",
                            ));
                        }
                        KeysUnavailable::Reject
                    }
                    "pause" => KeysUnavailable::Pause(duration_in(
                        k.max_wait.as_deref(),
                        DEFAULT_MAX_WAIT,
                        &path.field("max_wait"),
                        Duration::from_millis(100),
                        Duration::from_secs(60),
                    )?),
                    other => {
                        return Err(path
                            .field("action")
                            .invalid(other, "expected `reject` or `pause`"))
                    }
                }
            }
        };
        let cache_max_entries = number_in(
            wire.cache.as_ref().and_then(|c| c.max_entries),
            DEFAULT_CACHE_ENTRIES,
            &root.field("cache").field("max_entries"),
            0,
            MAX_CACHE_ENTRIES,
        )?;
        Ok(Config {
            scope,
            realm,
            providers,
            rules,
            allow_unmatched,
            bypass_cors_preflight: wire.bypass_cors_preflight.unwrap_or(false),
            audience_failure_status,
            keys_unavailable,
            cache_max_entries,
        })
    }

    /// Every output header of every provider (removed from every request before anything else).
    pub fn output_headers(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for h in self.providers.iter().flat_map(Provider::output_headers) {
            if !all.contains(h) {
                all.push(h.clone());
            }
        }
        all
    }
}

fn validate_provider(pw: &ProviderWire, path: &FieldPath) -> Result<Provider, ConfigError> {
    let name = validate_name(&pw.name, &path.field("name"))?;
    non_empty(&pw.issuer, &path.field("issuer"))?;
    let audiences = pw.audiences.clone().unwrap_or_default();
    for (i, a) in audiences.iter().enumerate() {
        non_empty(a, &path.field("audiences").index(i))?;
    }
    let jwks_path = path.field("jwks");
    let jwks = match (&pw.jwks.inline, &pw.jwks.remote) {
        (Some(inline), None) => {
            let set = KeySet::parse(inline.get().as_bytes(), true).map_err(|e| {
                palisade_core::ConfigError::invalid_secret(jwks_path.field("inline"), e.0)
            })?;
            JwksSource::Inline(set)
        }
        (None, Some(r)) => JwksSource::Remote(validate_remote(r, &jwks_path.field("remote"))?),
        _ => return Err(jwks_path.missing("set exactly one of `inline` or `remote`")),
    };
    let algorithms = match &pw.algorithms {
        None => Alg::ALL
            .into_iter()
            .filter(|a| a.key_kind() != KeyKind::Hmac)
            .collect(),
        Some(list) => {
            let list_path = path.field("algorithms");
            if list.is_empty() {
                return Err(list_path.missing("list at least one algorithm"));
            }
            validate_each(list, &list_path, |name, ap| {
                let alg = Alg::from_name(name).ok_or_else(|| ap.invalid(name, "expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384, HS512"))?;
                if alg.key_kind() == KeyKind::Hmac && matches!(jwks, JwksSource::Remote(_)) {
                    return Err(ap.invalid(
                        name,
                        "HMAC algorithms need an inline secret, not a remote JWKS",
                    ));
                }
                Ok(alg)
            })?
        }
    };
    let clock_skew = duration_in(
        pw.clock_skew.as_deref(),
        DEFAULT_CLOCK_SKEW,
        &path.field("clock_skew"),
        Duration::ZERO,
        MAX_CLOCK_SKEW,
    )?;
    let max_token_size = number_in(
        pw.max_token_size,
        DEFAULT_MAX_TOKEN_SIZE,
        &path.field("max_token_size"),
        64,
        MAX_MAX_TOKEN_SIZE,
    )?;
    let mut locations = Vec::new();
    for (i, h) in pw.from_headers.iter().flatten().enumerate() {
        let hp = path.field("from_headers").index(i);
        let name = validate_header_name(&h.name, &hp.field("name"))?;
        locations.push(Location::Header {
            name,
            prefix: h.prefix.clone().unwrap_or_default(),
        });
    }
    for (i, q) in pw.from_params.iter().flatten().enumerate() {
        non_empty(q, &path.field("from_params").index(i))?;
        locations.push(Location::Query(q.clone()));
    }
    for (i, c) in pw.from_cookies.iter().flatten().enumerate() {
        let valid = !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(ch));
        if !valid {
            return Err(path
                .field("from_cookies")
                .index(i)
                .invalid(c, "not a cookie name"));
        }
        locations.push(Location::Cookie(c.clone()));
    }
    if locations.is_empty() {
        locations.push(Location::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        });
    }
    let claim_headers = validate_each(
        pw.claim_to_headers.iter().flatten(),
        &path.field("claim_to_headers"),
        |ch, cp| {
            non_empty(&ch.claim, &cp.field("claim"))?;
            let header = validate_output_header(&ch.header, &cp.field("header"))?;
            Ok((ClaimPath::new(&ch.claim), header))
        },
    )?;
    let payload_header = match &pw.payload_header {
        Some(h) => Some(validate_output_header(h, &path.field("payload_header"))?),
        None => None,
    };
    let compat = either(
        pw.compat.as_deref(),
        &path.field("compat"),
        ("strict", Compat::Strict),
        ("jwt_authn", Compat::JwtAuthn),
    )?;
    Ok(Provider {
        name,
        issuer: pw.issuer.clone(),
        audiences,
        algorithms,
        jwks,
        time: TimeRules {
            skew_secs: clock_skew.as_secs(),
            require_expiration: pw.require_expiration.unwrap_or(true),
        },
        max_token_size,
        locations,
        forward: pw.forward.unwrap_or(false),
        claim_headers,
        payload_header,
        compat,
    })
}

fn validate_output_header(name: &str, path: &FieldPath) -> Result<String, ConfigError> {
    let name = validate_header_name(name, path)?;
    const RESERVED: [&str; 5] = [
        "authorization",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
    ];
    if name.starts_with(':') || RESERVED.contains(&name.as_str()) {
        return Err(path.invalid(&name, "cannot be an output header"));
    }
    Ok(name)
}

fn validate_remote(r: &RemoteWire, path: &FieldPath) -> Result<Remote, ConfigError> {
    non_empty(&r.cluster, &path.field("cluster"))?;
    let rest = r
        .uri
        .strip_prefix("https://")
        .or_else(|| r.uri.strip_prefix("http://"))
        .ok_or_else(|| {
            path.field("uri")
                .invalid(&r.uri, "expected http://host/path or https://host/path")
        })?;
    let (authority, path_part) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty()
        || authority.contains(|c: char| c.is_whitespace() || c == '@')
        || path_part.contains(char::is_whitespace)
    {
        return Err(path
            .field("uri")
            .invalid(&r.uri, "expected http://host/path or https://host/path"));
    }
    let timeout = duration_in(
        r.timeout.as_deref(),
        DEFAULT_FETCH_TIMEOUT,
        &path.field("timeout"),
        Duration::from_millis(100),
        Duration::from_secs(60),
    )?;
    let cache_duration = duration_in(
        r.cache_duration.as_deref(),
        DEFAULT_CACHE_DURATION,
        &path.field("cache_duration"),
        Duration::from_secs(1),
        Duration::from_secs(7 * 86_400),
    )?;
    let min_refetch_interval = duration_in(
        r.min_refetch_interval.as_deref(),
        DEFAULT_MIN_REFETCH,
        &path.field("min_refetch_interval"),
        Duration::from_secs(1),
        Duration::from_secs(86_400),
    )?;
    Ok(Remote {
        cluster: r.cluster.clone(),
        authority: authority.to_owned(),
        path: path_part.to_owned(),
        timeout,
        cache_duration,
        min_refetch_interval,
    })
}

fn validate_rule(
    rw: &RuleWire,
    providers: &[Provider],
    path: &FieldPath,
) -> Result<Rule, ConfigError> {
    let matcher = RequestMatch::validate(
        &rw.matcher.clone().unwrap_or_default(),
        &path.field("match"),
    )?;
    if rw.bypass == Some(true) {
        if rw.providers.is_some() || rw.allow_missing.is_some() || rw.claims.is_some() {
            return Err(path.field("bypass").invalid(
                "true",
                "a bypass rule takes no `providers`, `allow_missing` or `claims`",
            ));
        }
        return Ok(Rule {
            matcher,
            requires: Requires::Bypass,
        });
    }
    let names = rw.providers.clone().unwrap_or_default();
    if names.is_empty() {
        return Err(path
            .field("providers")
            .missing("list at least one provider (or set `bypass: true`)"));
    }
    let mut indexes = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let idx = providers.iter().position(|p| p.name == *n).ok_or_else(|| {
            path.field("providers")
                .index(i)
                .invalid(n, "no provider has this name")
        })?;
        if !indexes.contains(&idx) {
            indexes.push(idx);
        }
    }
    let mut claims = Vec::new();
    for (i, cw) in rw.claims.iter().flatten().enumerate() {
        let cp = path.field("claims").index(i);
        non_empty(&cw.claim, &cp.field("claim"))?;
        let condition = match (&cw.equals, &cw.contains, cw.present) {
            (Some(OneOrMany(v)), None, None) if !v.is_empty() => Condition::Equals(v.clone()),
            (None, Some(OneOrMany(items)), None) => {
                let items = items.clone();
                if items.is_empty() || items.iter().any(|x| x.is_empty() || x.contains(' ')) {
                    return Err(cp
                        .field("contains")
                        .invalid(items.join(" "), "list non-empty items without spaces"));
                }
                Condition::Contains(items)
            }
            (None, None, Some(true)) => Condition::Present,
            _ => {
                return Err(cp.missing(
                    "set exactly one of `equals` (non-empty), `contains` or `present: true`",
                ))
            }
        };
        claims.push(Requirement {
            path: ClaimPath::new(&cw.claim),
            condition,
        });
    }
    Ok(Rule {
        matcher,
        requires: Requires::Token {
            providers: indexes,
            allow_missing: rw.allow_missing.unwrap_or(false),
            claims,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys;
    use serde_json::{json, Value};

    fn inline_jwks() -> Value {
        serde_json::from_str(testkeys::JWKS).unwrap()
    }

    pub fn minimal() -> Value {
        json!({
            "providers": [{"name": "p", "issuer": "https://issuer.test", "jwks": {"inline": inline_jwks()}}],
            "rules": [{"providers": ["p"]}]
        })
    }

    fn parse(v: &Value) -> Result<Config, ConfigError> {
        Config::parse(v.to_string().as_bytes())
    }

    fn error_at(v: Value) -> String {
        parse(&v).unwrap_err().field.as_str().to_owned()
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() {
        let c = parse(&minimal()).unwrap();
        let p = &c.providers[0];
        assert_eq!(
            p.time,
            TimeRules {
                skew_secs: 60,
                require_expiration: true
            }
        );
        assert_eq!(p.max_token_size, 8192);
        assert_eq!(
            p.locations,
            [Location::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into()
            }]
        );
        assert!(!p.forward);
        assert!(!p.algorithms.iter().any(|a| a.key_kind() == KeyKind::Hmac));
        assert_eq!(c.scope, "default");
        assert_eq!(c.realm, "palisade");
        assert!(!c.allow_unmatched);
        assert!(!c.bypass_cors_preflight);
        assert_eq!(c.audience_failure_status, 403);
        assert_eq!(c.keys_unavailable, KeysUnavailable::Reject);
        assert_eq!(c.cache_max_entries, 1024);
        assert_eq!(p.compat, Compat::Strict);
    }

    #[test]
    fn compat_is_strict_or_jwt_authn() {
        let mut v = minimal();
        v["providers"][0]["compat"] = json!("jwt_authn");
        assert_eq!(parse(&v).unwrap().providers[0].compat, Compat::JwtAuthn);
        v["providers"][0]["compat"] = json!("strict");
        assert_eq!(parse(&v).unwrap().providers[0].compat, Compat::Strict);
        v["providers"][0]["compat"] = json!("envoy");
        let err = parse(&v).unwrap_err();
        assert_eq!(err.field.as_str(), "providers[0].compat");
        assert!(err.to_string().contains("envoy"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = minimal();
        v["providers"][0]["algorithms"] = json!(["RS256", "none"]);
        assert_eq!(error_at(v), "providers[0].algorithms[1]");
        let mut v = minimal();
        v["rules"][0]["providers"] = json!(["nope"]);
        assert_eq!(error_at(v), "rules[0].providers[0]");
        let mut v = minimal();
        v["providers"][0]["clock_skew"] = json!("1h");
        assert_eq!(error_at(v), "providers[0].clock_skew");
        let mut v = minimal();
        v["providers"][0]["jwks"] = json!({});
        assert_eq!(error_at(v), "providers[0].jwks");
        let mut v = minimal();
        v["providers"][0]["jwks"] = json!({"remote": {"cluster": "c", "uri": "ftp://x/"}});
        assert_eq!(error_at(v), "providers[0].jwks.remote.uri");
        let mut v = minimal();
        v["rules"][0]["claims"] = json!([{"claim": "scope", "equals": "a", "contains": "b"}]);
        assert_eq!(error_at(v), "rules[0].claims[0]");
        let mut v = minimal();
        v["providers"][0]["claim_to_headers"] =
            json!([{"claim": "sub", "header": "authorization"}]);
        assert_eq!(error_at(v), "providers[0].claim_to_headers[0].header");
        let mut v = minimal();
        v["providers"][0]["isuer"] = json!("typo");
        assert!(error_at(v).starts_with("providers[0]"));
    }

    #[test]
    fn hmac_secrets_are_never_echoed_and_never_remote() {
        let mut v = minimal();
        v["providers"][0]["jwks"] =
            json!({"inline": {"keys": [{"kty": "oct", "k": "c2VjcmV0LXNob3J0"}]}});
        let err = parse(&v).unwrap_err();
        assert!(!err.to_string().contains("c2VjcmV0LXNob3J0"), "{err}");
        let mut v = minimal();
        v["providers"][0]["jwks"] = json!({"remote": {"cluster": "c", "uri": "http://idp/jwks"}});
        v["providers"][0]["algorithms"] = json!(["HS256"]);
        assert_eq!(error_at(v), "providers[0].algorithms[0]");
    }

    #[test]
    fn remote_uris_split_into_authority_and_path() {
        let mut v = minimal();
        v["providers"][0]["jwks"] = json!({"remote": {"cluster": "idp", "uri": "https://idp.example:8443/.well-known/jwks.json", "cache_duration": "5m"}});
        let c = parse(&v).unwrap();
        let JwksSource::Remote(r) = &c.providers[0].jwks else {
            panic!()
        };
        assert_eq!(r.authority, "idp.example:8443");
        assert_eq!(r.path, "/.well-known/jwks.json");
        assert_eq!(r.cache_duration, Duration::from_secs(300));
        assert_eq!(r.timeout, DEFAULT_FETCH_TIMEOUT);
    }

    #[test]
    fn bypass_rules_take_nothing_else_and_claims_parse() {
        let mut v = minimal();
        v["rules"] = json!([
            {"match": {"path_prefix": "/health"}, "bypass": true},
            {"providers": ["p"], "allow_missing": true, "claims": [
                {"claim": "scope", "contains": "read"}, {"claim": "role", "equals": ["a", "b"]}, {"claim": "/x/y", "present": true}]}
        ]);
        let c = parse(&v).unwrap();
        assert_eq!(c.rules[0].requires, Requires::Bypass);
        let Requires::Token {
            allow_missing,
            claims,
            ..
        } = &c.rules[1].requires
        else {
            panic!()
        };
        assert!(allow_missing);
        assert_eq!(claims.len(), 3);
        let mut v = minimal();
        v["rules"] = json!([{"bypass": true, "providers": ["p"]}]);
        assert_eq!(error_at(v), "rules[0].bypass");
    }

    #[test]
    fn a_token_location_cannot_be_an_output_header() {
        let mut v = minimal();
        v["providers"][0]["from_headers"] = json!([{"name": "x-token"}]);
        v["providers"][0]["payload_header"] = json!("x-token");
        assert_eq!(error_at(v), "providers[0].from_headers");
    }
}
