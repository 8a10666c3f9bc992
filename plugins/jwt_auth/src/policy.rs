//! The decision for one request: rule → token → provider → verification → claims → outputs.
//!
//! ## Order of checks
//! 1. Every output header (any provider's claim or payload header) is removed from the request
//!    first, whatever happens next, so a client can never spoof a verified claim.
//! 2. CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) pass if
//!    `bypass_cors_preflight` is set.
//! 3. The first rule whose `match` matches decides; no match → `unmatched` (deny by default, 403).
//! 4. Tokens are looked for in every location of every provider the rule names. None → 401
//!    without `error` (or pass, with `allow_missing`). **Several different tokens → 400
//!    `invalid_request`** (RFC 6750 §2: a client must not send more than one); the same token in
//!    two places counts once.
//! 5. The token's unverified `iss` picks the provider among those whose locations held it; no
//!    match → 401 `issuer`. The provider's `max_token_size` and `algorithms` apply, then the key
//!    set, signature, `exp`/`nbf`, and audience (403 by default, like Envoy's `jwt_authn`).
//!    A verified token is cached (see [`crate::cache`]).
//! 6. The rule's claim requirements: a failure is 403 `insufficient_scope`.
//! 7. Outputs: claim headers, payload header, and the token removed unless `forward`.

use crate::cache::{Entry, TokenCache};
use crate::claims;
use crate::config::{Config, JwksSource, Location, Provider, Requires};
use crate::jwks::KeySet;
use crate::token;
use crate::verify;
use crate::{Compat, Failure, Reason};
use palisade_core::key::RequestView;
use palisade_core::{Decision, LocalReply, Timestamp};
use std::rc::Rc;

/// A provider's current key set and its version (inline sets are version 1 for ever).
#[derive(Debug, Clone)]
pub struct ProviderKeys {
    pub version: u64,
    pub set: Rc<KeySet>,
}

/// A change to the request, applied by the glue when the request continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Remove(String),
    Set(String, String),
    /// Replace `:path` (a query-parameter token was removed).
    Path(String),
}

/// What happened, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A valid token satisfied the rule (`cache_hit` if no verification was needed).
    Allowed {
        cache_hit: bool,
    },
    /// No token, and the rule allows that.
    AllowedMissing,
    /// A bypass rule or a CORS preflight.
    Bypassed,
    /// No rule matched and unmatched requests are allowed.
    Unmatched,
    Denied(Reason),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub decision: Decision,
    pub outcome: Outcome,
    /// Applied when the request continues (removals of spoofed outputs come first).
    pub mutations: Vec<Mutation>,
    /// A provider with a remote JWKS saw a token with an unknown `kid`: ask for a refetch.
    pub refetch: Option<usize>,
    /// The request needs this provider's key set, which is not available yet. The decision is the
    /// 503 to send if the glue does not (or can no longer) wait.
    pub keys_pending: Option<usize>,
    /// The verified token's claims, for the policies after this one in a chain.
    pub claims: Option<Rc<serde_json::Map<String, serde_json::Value>>>,
}

/// The authenticator for one configuration.
#[derive(Debug, Clone)]
pub struct Authenticator {
    config: Config,
    output_headers: Vec<String>,
}

/// A token found in the request, and where.
struct Found {
    token: String,
    /// (provider index, location index) pairs that held this very token.
    places: Vec<(usize, usize)>,
}

impl Authenticator {
    pub fn new(config: Config) -> Self {
        let output_headers = config.output_headers();
        Authenticator {
            config,
            output_headers,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Key sets that never change (inline JWKS), by provider; `None` for remote ones.
    pub fn inline_keys(&self) -> Vec<Option<ProviderKeys>> {
        self.config
            .providers
            .iter()
            .map(|p| match &p.jwks {
                JwksSource::Inline(set) => Some(ProviderKeys {
                    version: 1,
                    set: Rc::new(set.clone()),
                }),
                JwksSource::Remote(_) => None,
            })
            .collect()
    }

    /// Decide for one request at `now`.
    pub fn check(
        &self,
        req: &dyn RequestView,
        keys: &[Option<ProviderKeys>],
        cache: &mut TokenCache,
        now: Timestamp,
    ) -> Verdict {
        let mut verdict = Verdict {
            decision: Decision::Continue,
            outcome: Outcome::Bypassed,
            mutations: self
                .output_headers
                .iter()
                .map(|h| Mutation::Remove(h.clone()))
                .collect(),
            refetch: None,
            keys_pending: None,
            claims: None,
        };
        if self.config.bypass_cors_preflight && is_cors_preflight(req) {
            return verdict;
        }
        let Some(rule) = self.config.rules.iter().find(|r| r.matcher.matches(req)) else {
            if self.config.allow_unmatched {
                verdict.outcome = Outcome::Unmatched;
            } else {
                self.deny(
                    &mut verdict,
                    Failure::new(Reason::NoRule, "no rule allows this request"),
                );
            }
            return verdict;
        };
        let Requires::Token {
            providers,
            allow_missing,
            claims: requirements,
        } = &rule.requires
        else {
            return verdict;
        };
        let found = match self.find_token(req, providers) {
            Ok(Some(found)) => found,
            Ok(None) if *allow_missing => {
                verdict.outcome = Outcome::AllowedMissing;
                return verdict;
            }
            Ok(None) => {
                self.deny(&mut verdict, Failure::new(Reason::Missing, "no token"));
                return verdict;
            }
            Err(f) => {
                self.deny(&mut verdict, f);
                return verdict;
            }
        };
        let now_secs = now.as_millis() / 1000;
        let candidates: Vec<usize> = dedup(found.places.iter().map(|(p, _)| *p));
        let (entry, cache_hit) =
            match self.verified(&found.token, &candidates, keys, cache, now_secs) {
                Ok(v) => v,
                Err(Denial::Failure(f, provider)) => {
                    if f.reason == Reason::UnknownKid
                        && matches!(
                            self.config.providers.get(provider).map(|p| &p.jwks),
                            Some(JwksSource::Remote(_))
                        )
                    {
                        verdict.refetch = Some(provider);
                    }
                    self.deny(&mut verdict, f);
                    return verdict;
                }
                Err(Denial::KeysPending(provider)) => {
                    verdict.keys_pending = Some(provider);
                    self.deny(
                        &mut verdict,
                        Failure::new(Reason::NoKeys, "the key set is not available yet"),
                    );
                    return verdict;
                }
            };
        if let Err(f) = claims::check(&entry.claims, requirements) {
            self.deny(&mut verdict, f);
            return verdict;
        }
        let Some(provider) = self.config.providers.get(entry.provider) else {
            return verdict;
        };
        for (path, header) in &provider.claim_headers {
            if let Some(value) = path.lookup(&entry.claims).and_then(claims::header_value) {
                verdict.mutations.push(Mutation::Set(header.clone(), value));
            }
        }
        if let Some(header) = &provider.payload_header {
            verdict
                .mutations
                .push(Mutation::Set(header.clone(), entry.payload_b64.to_string()));
        }
        if !provider.forward {
            self.strip_token(req, &found, &mut verdict.mutations);
        }
        verdict.outcome = Outcome::Allowed { cache_hit };
        verdict.claims = Some(Rc::clone(&entry.claims));
        verdict
    }

    /// The verified entry for `token`, from the cache or by verifying it now.
    fn verified(
        &self,
        raw: &str,
        candidates: &[usize],
        keys: &[Option<ProviderKeys>],
        cache: &mut TokenCache,
        now_secs: u64,
    ) -> Result<(Entry, bool), Denial> {
        let key = cache.key(raw);
        if let Some(hit) = cache.get(&key, now_secs) {
            let current = keys
                .get(hit.provider)
                .and_then(Option::as_ref)
                .map(|k| k.version);
            if candidates.contains(&hit.provider) && current == Some(hit.keys_version) {
                return Ok((hit.clone(), true));
            }
        }
        let largest = candidates
            .iter()
            .filter_map(|i| self.config.providers.get(*i))
            .map(|p| p.max_token_size)
            .max()
            .unwrap_or(0);
        let first = candidates.first().copied().unwrap_or(0);
        // Parsed once for every candidate provider: leniently if one of them is in `jwt_authn`
        // compatibility, and then each strict provider refuses what only compatibility allows.
        let compat = if candidates.iter().any(|i| {
            self.config
                .providers
                .get(*i)
                .is_some_and(|p| p.compat == Compat::JwtAuthn)
        }) {
            Compat::JwtAuthn
        } else {
            Compat::Strict
        };
        let parsed =
            token::parse_with(raw, largest, compat).map_err(|f| Denial::Failure(f, first))?;
        let iss = verify::issuer(&parsed.claims);
        let mut first_failure = None;
        for &index in candidates {
            let Some(provider) = self.config.providers.get(index) else {
                continue;
            };
            if iss != Some(provider.issuer.as_str()) {
                continue;
            }
            match self.verify_for(provider, index, raw, &parsed, keys, now_secs) {
                Ok((entry, deadline)) => {
                    cache.insert(key, entry.clone(), deadline, now_secs);
                    return Ok((entry, false));
                }
                Err(d) => {
                    first_failure.get_or_insert(d);
                }
            }
        }
        Err(first_failure.unwrap_or(Denial::Failure(
            Failure::new(Reason::Issuer, "the token's issuer is not accepted here"),
            first,
        )))
    }

    fn verify_for(
        &self,
        provider: &Provider,
        index: usize,
        raw: &str,
        parsed: &token::Token<'_>,
        keys: &[Option<ProviderKeys>],
        now_secs: u64,
    ) -> Result<(Entry, Option<u64>), Denial> {
        let fail = |f: Failure| Denial::Failure(f, index);
        if raw.len() > provider.max_token_size {
            return Err(fail(Failure::malformed("the token is too large")));
        }
        if parsed.padded_signature && provider.compat != Compat::JwtAuthn {
            return Err(fail(Failure::malformed(
                "the token signature is not canonical base64url",
            )));
        }
        if !provider.algorithms.contains(&parsed.alg) {
            return Err(fail(Failure::malformed(
                "the token's algorithm is not allowed",
            )));
        }
        let Some(current) = keys.get(index).and_then(Option::as_ref) else {
            return Err(Denial::KeysPending(index));
        };
        verify::verify_signature_with(parsed, &current.set, provider.compat).map_err(fail)?;
        let exp = verify::check_times(&parsed.claims, now_secs, provider.time).map_err(fail)?;
        verify::check_audience(&parsed.claims, &provider.audiences).map_err(fail)?;
        // The instant `check_times` would start saying `expired`.
        let deadline = exp.map(|e| {
            let d = (e + provider.time.skew_secs as f64).ceil();
            if d <= 0.0 {
                0
            } else if d >= u64::MAX as f64 {
                u64::MAX
            } else {
                d as u64
            }
        });
        Ok((
            Entry {
                provider: index,
                keys_version: current.version,
                valid_until: 0,
                claims: Rc::new(parsed.claims.clone()),
                payload_b64: Rc::from(parsed.payload_b64),
            },
            deadline,
        ))
    }

    /// Look in every location of the rule's providers. One distinct token, none, or an error.
    fn find_token(
        &self,
        req: &dyn RequestView,
        providers: &[usize],
    ) -> Result<Option<Found>, Failure> {
        let mut found: Option<Found> = None;
        // The path and the cookies are read only if a location needs them: each read is a
        // hostcall and a copy, and most configs look in `Authorization` only.
        let mut path: Option<Option<String>> = None;
        let mut cookies: Option<Option<String>> = None;
        for &p in providers {
            let Some(provider) = self.config.providers.get(p) else {
                continue;
            };
            for (l, location) in provider.locations.iter().enumerate() {
                let values: Vec<String> = match location {
                    Location::Header { name, prefix } => {
                        header_tokens(&req.header_values(name), prefix)?
                    }
                    Location::Query(name) => path
                        .get_or_insert_with(|| req.path())
                        .as_deref()
                        .map(|p| query_values(p, name))
                        .unwrap_or_default(),
                    Location::Cookie(name) => cookies
                        .get_or_insert_with(|| req.header("cookie"))
                        .as_deref()
                        .map(|c| cookie_values(c, name))
                        .unwrap_or_default(),
                };
                for value in values.into_iter().filter(|v| !v.is_empty()) {
                    match &mut found {
                        None => {
                            found = Some(Found {
                                token: value,
                                places: vec![(p, l)],
                            })
                        }
                        Some(f) if f.token == value => f.places.push((p, l)),
                        Some(_) => {
                            return Err(Failure::malformed(
                                "the request carries more than one token",
                            ))
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// Remove the token from every place it was found.
    fn strip_token(&self, req: &dyn RequestView, found: &Found, mutations: &mut Vec<Mutation>) {
        for &(p, l) in &found.places {
            let Some(location) = self
                .config
                .providers
                .get(p)
                .and_then(|p| p.locations.get(l))
            else {
                continue;
            };
            match location {
                Location::Header { name, .. } => {
                    let m = Mutation::Remove(name.clone());
                    if !mutations.contains(&m) {
                        mutations.push(m);
                    }
                }
                Location::Query(name) => {
                    if let Some(path) = req.path() {
                        mutations.push(Mutation::Path(remove_query_param(&path, name)));
                    }
                }
                Location::Cookie(name) => {
                    if let Some(cookies) = req.header("cookie") {
                        let kept = remove_cookie(&cookies, name);
                        mutations.push(if kept.is_empty() {
                            Mutation::Remove("cookie".into())
                        } else {
                            Mutation::Set("cookie".into(), kept)
                        });
                    }
                }
            }
        }
    }

    fn deny(&self, verdict: &mut Verdict, failure: Failure) {
        verdict.outcome = Outcome::Denied(failure.reason);
        verdict.decision = Decision::Reply(self.reply(failure));
    }

    /// The local reply for a denial (RFC 6750 for token problems).
    pub fn reply(&self, failure: Failure) -> LocalReply {
        let realm = &self.config.realm;
        let challenge = |error: &str| {
            format!(
                "Bearer realm=\"{realm}\", error=\"{error}\", error_description=\"{}\"",
                failure.description
            )
        };
        let (status, www) = match failure.reason {
            Reason::Missing => (401, Some(format!("Bearer realm=\"{realm}\""))),
            Reason::Malformed if failure.description.contains("more than one token") => {
                (400, Some(challenge("invalid_request")))
            }
            Reason::Audience => (
                self.config.audience_failure_status,
                Some(challenge("invalid_token")),
            ),
            Reason::Claims => (403, Some(challenge("insufficient_scope"))),
            Reason::NoRule => (403, None),
            Reason::NoKeys => (503, None),
            _ => (401, Some(challenge("invalid_token"))),
        };
        let mut reply = LocalReply::new(status, format!("palisade_jwt_{}", failure.reason.name()))
            .header("content-type", "text/plain; charset=utf-8")
            .body(format!("{}\n", failure.description));
        if let Some(www) = www {
            reply = reply.header("www-authenticate", www);
        }
        if status == 503 {
            reply = reply.header("retry-after", "1");
        }
        reply
    }
}

enum Denial {
    Failure(Failure, usize),
    KeysPending(usize),
}

fn dedup(items: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut out = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn is_cors_preflight(req: &dyn RequestView) -> bool {
    req.method().as_deref() == Some("OPTIONS")
        && req.header("origin").is_some()
        && req.header("access-control-request-method").is_some()
}

/// The tokens in one header location (all its values).
///
/// Envoy joins repeated lines of some headers (`authorization` among them) into one value with
/// `,`, and other headers arrive as several values; a JWT never contains a `,`. So each value is
/// split on `,`, and when two or more pieces carry the prefix, each is a token. Two tokens in one
/// header location — two `Authorization` lines — are refused as RFC 6750 forbids (400), even if
/// they are the same token: a request with two `Authorization` lines is not well-formed HTTP.
/// A value with a `,` and a single prefixed piece is taken whole (and its token is malformed).
fn header_tokens(values: &[String], prefix: &str) -> Result<Vec<String>, Failure> {
    let mut tokens = Vec::new();
    for value in values {
        if !value.contains(',') {
            // One piece at most: what the general case below does, without building the list
            // of pieces and a second copy of the token.
            if let Some(t) = strip_prefix_ignore_case(value, prefix) {
                tokens.push(t.trim().to_owned());
            }
            continue;
        }
        let pieces: Vec<String> = value
            .split(',')
            .filter_map(|piece| strip_prefix_ignore_case(piece.trim(), prefix))
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if pieces.len() > 1 {
            tokens.extend(pieces);
        } else if let Some(t) = strip_prefix_ignore_case(value, prefix) {
            tokens.push(t.trim().to_owned());
        }
    }
    if tokens.iter().filter(|t| !t.is_empty()).count() > 1 {
        return Err(Failure::malformed(
            "the request carries more than one token",
        ));
    }
    Ok(tokens)
}

fn strip_prefix_ignore_case<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

fn query_values(path: &str, name: &str) -> Vec<String> {
    let Some((_, query)) = path.split_once('?') else {
        return Vec::new();
    };
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// `path` without any `name=` parameter; other parameters keep their exact bytes.
fn remove_query_param(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            let decoded: String = form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .next()
                .unwrap_or_default();
            !pair.is_empty() && decoded != name
        })
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

fn cookie_values(header: &str, name: &str) -> Vec<String> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .collect()
}

fn remove_cookie(header: &str, name: &str) -> String {
    header
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split('=').next().map(str::trim) != Some(name))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys::{self, sign_raw, Signer};
    use crate::token::Alg;
    use palisade_core::testing::FakeRequest;
    use serde_json::{json, Value};

    const NOW: u64 = 1_800_000_000;

    fn now() -> Timestamp {
        Timestamp::from_secs(NOW)
    }

    fn jwks() -> Value {
        serde_json::from_str(testkeys::JWKS).unwrap()
    }

    /// The test JWKS with the HMAC key `test-hmac` added.
    fn jwks_with_hmac() -> Value {
        let mut doc = jwks();
        doc["keys"]
            .as_array_mut()
            .unwrap()
            .push(testkeys::hmac_jwk());
        doc
    }

    fn config(extra: Value) -> Config {
        let mut v = json!({
            "providers": [{
                "name": "main", "issuer": "https://issuer.test", "audiences": ["api"],
                "jwks": {"inline": jwks()},
                "claim_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}, {"claim": "roles", "header": "x-jwt-roles"}],
                "payload_header": "x-jwt-payload"
            }],
            "rules": [
                {"match": {"path_prefix": "/public"}, "bypass": true},
                {"match": {"path_prefix": "/optional"}, "providers": ["main"], "allow_missing": true},
                {"match": {"path_prefix": "/admin"}, "providers": ["main"], "claims": [{"claim": "scope", "contains": "admin"}]},
                {"match": {"path_prefix": "/"}, "providers": ["main"]}
            ]
        });
        if let Value::Object(extra) = extra {
            for (k, val) in extra {
                v[k] = val;
            }
        }
        Config::parse(v.to_string().as_bytes()).unwrap()
    }

    fn good_claims() -> Value {
        json!({"iss": "https://issuer.test", "aud": "api", "sub": "alice", "roles": ["a", "b"],
               "scope": "read", "exp": NOW + 600, "iat": NOW})
    }

    struct Fixture {
        auth: Authenticator,
        keys: Vec<Option<ProviderKeys>>,
        cache: TokenCache,
    }

    impl Fixture {
        fn new(extra: Value) -> Self {
            let auth = Authenticator::new(config(extra));
            let keys = auth.inline_keys();
            Fixture {
                auth,
                keys,
                cache: TokenCache::new(16),
            }
        }

        fn check(&mut self, req: &FakeRequest) -> Verdict {
            self.auth.check(req, &self.keys, &mut self.cache, now())
        }

        fn check_at(&mut self, req: &FakeRequest, at: u64) -> Verdict {
            self.auth
                .check(req, &self.keys, &mut self.cache, Timestamp::from_secs(at))
        }
    }

    fn bearer(path: &str, token: &str) -> FakeRequest {
        FakeRequest::new("GET", path).header("authorization", &format!("Bearer {token}"))
    }

    fn reply(v: &Verdict) -> &LocalReply {
        match &v.decision {
            Decision::Reply(r) => r,
            Decision::Continue => panic!("expected a reply, got {v:?}"),
        }
    }

    /// The reply's `WWW-Authenticate` challenge (the test fails if there is none).
    fn challenge(v: &Verdict) -> &str {
        reply(v).header_value("www-authenticate").unwrap()
    }

    fn denied(v: &Verdict, reason: Reason, status: u16) {
        assert_eq!(v.outcome, Outcome::Denied(reason), "{v:?}");
        assert_eq!(reply(v).status, status);
    }

    #[test]
    fn a_valid_token_is_allowed_with_claim_headers_and_stripped() {
        let mut f = Fixture::new(json!({}));
        let token = testkeys::token(Alg::Rs256, &good_claims());
        let v = f.check(&bearer("/x", &token).header("x-jwt-sub", "mallory"));
        assert_eq!(v.outcome, Outcome::Allowed { cache_hit: false });
        assert!(v.decision.is_continue());
        let m = &v.mutations;
        // Spoofable outputs are removed first, then set from the verified claims.
        let remove_sub = m
            .iter()
            .position(|x| *x == Mutation::Remove("x-jwt-sub".into()))
            .unwrap();
        let set_sub = m
            .iter()
            .position(|x| *x == Mutation::Set("x-jwt-sub".into(), "alice".into()))
            .unwrap();
        assert!(remove_sub < set_sub);
        assert!(m.contains(&Mutation::Set("x-jwt-roles".into(), "a,b".into())));
        let payload = token.split('.').nth(1).unwrap();
        assert!(m.contains(&Mutation::Set("x-jwt-payload".into(), payload.into())));
        assert!(m.contains(&Mutation::Remove("authorization".into())));
    }

    #[test]
    fn every_algorithm_is_accepted_through_the_policy() {
        let mut f = Fixture::new(json!({}));
        for alg in [Alg::Rs256, Alg::Ps256, Alg::Es256, Alg::EdDsa] {
            let v = f.check(&bearer("/x", &testkeys::token(alg, &good_claims())));
            assert_eq!(v.outcome, Outcome::Allowed { cache_hit: false }, "{alg:?}");
        }
    }

    #[test]
    fn hmac_tokens_verify_only_when_the_provider_allows_hs256() {
        let doc = jwks_with_hmac();
        let providers = |algs: Value| json!([{"name": "main", "issuer": "https://issuer.test", "jwks": {"inline": doc}, "algorithms": algs}]);
        let token = testkeys::token(Alg::Hs256, &good_claims());
        let mut f = Fixture::new(json!({"providers": providers(json!(["HS256"]))}));
        assert_eq!(
            f.check(&bearer("/x", &token)).outcome,
            Outcome::Allowed { cache_hit: false }
        );
        let mut f = Fixture::new(json!({"providers": providers(json!(["RS256"]))}));
        denied(&f.check(&bearer("/x", &token)), Reason::Malformed, 401);
    }

    #[test]
    fn a_missing_token_is_401_without_an_error_attribute() {
        let mut f = Fixture::new(json!({}));
        let v = f.check(&FakeRequest::new("GET", "/x"));
        denied(&v, Reason::Missing, 401);
        assert_eq!(challenge(&v), "Bearer realm=\"palisade\"");
        // A non-Bearer Authorization header is not a token either.
        let v =
            f.check(&FakeRequest::new("GET", "/x").header("authorization", "Basic dXNlcjpwYXNz"));
        denied(&v, Reason::Missing, 401);
    }

    #[test]
    fn a_bad_token_is_401_with_invalid_token_and_a_description() {
        let mut f = Fixture::new(json!({}));
        let v = f.check(&bearer("/x", "not.a.jwt"));
        denied(&v, Reason::Malformed, 401);
        let www = challenge(&v);
        assert!(
            www.starts_with(
                "Bearer realm=\"palisade\", error=\"invalid_token\", error_description=\""
            ),
            "{www}"
        );
        // The token itself never appears in the reply.
        assert!(!format!("{:?}", reply(&v)).contains("not.a.jwt"));
    }

    #[test]
    fn each_attack_is_rejected_with_its_reason() {
        let mut f = Fixture::new(json!({}));
        let c = good_claims();
        let b =
            |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
        let good = testkeys::token(Alg::Rs256, &c);
        let (input, sig) = good.rsplit_once('.').unwrap();
        let payload = good.split('.').nth(1).unwrap();
        let mut dup = c.to_string();
        dup.insert_str(1, r#""sub":"admin","#);
        let cases: Vec<(&str, String, Reason)> = vec![
            (
                "alg none",
                format!("{}.{payload}.", b(r#"{"alg":"none"}"#)),
                Reason::Malformed,
            ),
            (
                "alg none with signature",
                format!("{}.{payload}.{sig}", b(r#"{"alg":"none"}"#)),
                Reason::Malformed,
            ),
            ("empty signature", format!("{input}."), Reason::Malformed),
            ("two segments", input.to_owned(), Reason::Malformed),
            ("padding", format!("{input}.{sig}=="), Reason::Malformed),
            (
                "unknown kid",
                sign_raw(
                    Alg::Rs256,
                    Signer::Rsa,
                    r#"{"alg":"RS256","kid":"nope"}"#,
                    &c.to_string(),
                ),
                Reason::UnknownKid,
            ),
            (
                "crit",
                sign_raw(
                    Alg::Rs256,
                    Signer::Rsa,
                    r#"{"alg":"RS256","kid":"test-rsa","crit":["x"],"x":1}"#,
                    &c.to_string(),
                ),
                Reason::Malformed,
            ),
            (
                "b64 false",
                sign_raw(
                    Alg::Rs256,
                    Signer::Rsa,
                    r#"{"alg":"RS256","kid":"test-rsa","b64":false}"#,
                    &c.to_string(),
                ),
                Reason::Malformed,
            ),
            (
                "jku",
                sign_raw(
                    Alg::Rs256,
                    Signer::Rsa,
                    r#"{"alg":"RS256","jku":"https://evil/jwks"}"#,
                    &c.to_string(),
                ),
                Reason::Malformed,
            ),
            (
                "x5u",
                sign_raw(
                    Alg::Rs256,
                    Signer::Rsa,
                    r#"{"alg":"RS256","x5u":"https://evil/c"}"#,
                    &c.to_string(),
                ),
                Reason::Malformed,
            ),
            (
                "embedded jwk",
                sign_raw(
                    Alg::Rs256,
                    Signer::Rsa,
                    r#"{"alg":"RS256","jwk":{"kty":"RSA"}}"#,
                    &c.to_string(),
                ),
                Reason::Malformed,
            ),
            (
                "duplicate claim",
                sign_raw(
                    Alg::Rs256,
                    Signer::Rsa,
                    r#"{"alg":"RS256","kid":"test-rsa"}"#,
                    &dup,
                ),
                Reason::Malformed,
            ),
            (
                "string exp",
                testkeys::token(
                    Alg::Rs256,
                    &json!({"iss": "https://issuer.test", "aud": "api", "exp": "never"}),
                ),
                Reason::Malformed,
            ),
            (
                "string nbf",
                testkeys::token(
                    Alg::Rs256,
                    &json!({"iss": "https://issuer.test", "aud": "api", "exp": NOW + 60, "nbf": "x"}),
                ),
                Reason::Malformed,
            ),
            (
                "string iat",
                testkeys::token(
                    Alg::Rs256,
                    &json!({"iss": "https://issuer.test", "aud": "api", "exp": NOW + 60, "iat": "x"}),
                ),
                Reason::Malformed,
            ),
            (
                "oversized",
                testkeys::token(
                    Alg::Rs256,
                    &json!({"iss": "https://issuer.test", "pad": "x".repeat(9000)}),
                ),
                Reason::Malformed,
            ),
            (
                "expired",
                testkeys::token(
                    Alg::Rs256,
                    &json!({"iss": "https://issuer.test", "aud": "api", "exp": NOW - 61}),
                ),
                Reason::Expired,
            ),
            (
                "not yet valid",
                testkeys::token(
                    Alg::Rs256,
                    &json!({"iss": "https://issuer.test", "aud": "api", "exp": NOW + 600, "nbf": NOW + 61}),
                ),
                Reason::NotYetValid,
            ),
            (
                "bad signature",
                format!("{input}.{}", b("x".repeat(256).as_str())),
                Reason::BadSignature,
            ),
            (
                "other key",
                sign_raw(
                    Alg::Rs256,
                    Signer::Rsa2,
                    r#"{"alg":"RS256","kid":"test-rsa"}"#,
                    &c.to_string(),
                ),
                Reason::BadSignature,
            ),
            (
                "PS256 on an RS256 key",
                sign_raw(
                    Alg::Ps256,
                    Signer::Rsa,
                    r#"{"alg":"PS256","kid":"test-rsa"}"#,
                    &c.to_string(),
                ),
                Reason::BadSignature,
            ),
            (
                "wrong issuer",
                testkeys::token(
                    Alg::Rs256,
                    &json!({"iss": "https://evil.test", "aud": "api", "exp": NOW + 60}),
                ),
                Reason::Issuer,
            ),
        ];
        for (name, token, reason) in cases {
            let v = f.check(&bearer("/x", &token));
            assert_eq!(v.outcome, Outcome::Denied(reason), "{name}: {v:?}");
            assert_eq!(reply(&v).status, 401, "{name}");
            assert!(
                !v.mutations.iter().any(|m| matches!(m, Mutation::Set(..))),
                "{name}"
            );
        }
    }

    #[test]
    fn rs256_to_hs256_confusion_is_rejected_through_the_policy() {
        use jwt_compact::alg::{Hs256, Hs256Key};
        use jwt_compact::{Algorithm, AlgorithmSignature};
        let doc = jwks_with_hmac();
        let mut f = Fixture::new(
            json!({"providers": [{"name": "main", "issuer": "https://issuer.test",
            "jwks": {"inline": doc.clone()}, "algorithms": ["RS256", "HS256"]}]}),
        );
        let b =
            |s: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
        let input = format!(
            "{}.{}",
            b(br#"{"alg":"HS256","kid":"test-rsa"}"#),
            b(good_claims().to_string().as_bytes())
        );
        let secret = doc["keys"][0].to_string();
        let sig = Hs256.sign(&Hs256Key::new(secret.as_bytes()), input.as_bytes());
        let v = f.check(&bearer("/x", &format!("{input}.{}", b(&sig.as_bytes()))));
        denied(&v, Reason::BadSignature, 401);
    }

    #[test]
    fn a_wrong_audience_is_403_by_default_and_401_if_configured() {
        let token = testkeys::token(
            Alg::Rs256,
            &json!({"iss": "https://issuer.test", "aud": "other", "exp": NOW + 60}),
        );
        let mut f = Fixture::new(json!({}));
        let v = f.check(&bearer("/x", &token));
        denied(&v, Reason::Audience, 403);
        assert!(challenge(&v).contains("invalid_token"), "{v:?}");
        let mut f = Fixture::new(json!({"audience_failure_status": 401}));
        denied(&f.check(&bearer("/x", &token)), Reason::Audience, 401);
    }

    #[test]
    fn a_failed_claim_check_is_403_insufficient_scope() {
        let mut f = Fixture::new(json!({}));
        let token = testkeys::token(Alg::Es256, &good_claims());
        let v = f.check(&bearer("/admin/x", &token));
        denied(&v, Reason::Claims, 403);
        assert!(
            challenge(&v).contains("error=\"insufficient_scope\""),
            "{v:?}"
        );
        let mut admin = good_claims();
        admin["scope"] = json!("read admin");
        let v = f.check(&bearer("/admin/x", &testkeys::token(Alg::Es256, &admin)));
        assert!(v.decision.is_continue());
    }

    #[test]
    fn bypass_and_allow_missing_rules() {
        let mut f = Fixture::new(json!({}));
        let v = f.check(&FakeRequest::new("GET", "/public/x").header("x-jwt-sub", "mallory"));
        assert_eq!(v.outcome, Outcome::Bypassed);
        assert!(v.mutations.contains(&Mutation::Remove("x-jwt-sub".into())));
        assert_eq!(
            f.check(&FakeRequest::new("GET", "/optional")).outcome,
            Outcome::AllowedMissing
        );
        // allow_missing still rejects a bad token.
        denied(
            &f.check(&bearer("/optional", "a.b.c")),
            Reason::Malformed,
            401,
        );
    }

    #[test]
    fn unmatched_requests_are_denied_unless_allowed() {
        let rules = json!([{"match": {"path_prefix": "/api"}, "providers": ["main"]}]);
        let mut f = Fixture::new(json!({"rules": rules}));
        denied(
            &f.check(&FakeRequest::new("GET", "/other")),
            Reason::NoRule,
            403,
        );
        let mut f = Fixture::new(json!({"rules": rules, "unmatched": "allow"}));
        assert_eq!(
            f.check(&FakeRequest::new("GET", "/other")).outcome,
            Outcome::Unmatched
        );
    }

    #[test]
    fn cors_preflights_bypass_only_when_configured() {
        let pre = FakeRequest::new("OPTIONS", "/x")
            .header("origin", "https://a")
            .header("access-control-request-method", "GET");
        let mut f = Fixture::new(json!({}));
        denied(&f.check(&pre), Reason::Missing, 401);
        let mut f = Fixture::new(json!({"bypass_cors_preflight": true}));
        assert_eq!(f.check(&pre).outcome, Outcome::Bypassed);
        // A plain OPTIONS is not a preflight.
        denied(
            &f.check(&FakeRequest::new("OPTIONS", "/x")),
            Reason::Missing,
            401,
        );
    }

    fn multi_location() -> Value {
        json!({"providers": [{"name": "main", "issuer": "https://issuer.test", "jwks": {"inline": jwks()},
            "from_headers": [{"name": "authorization", "prefix": "Bearer "}, {"name": "x-token"}],
            "from_params": ["access_token"], "from_cookies": ["session"]}]})
    }

    #[test]
    fn tokens_are_found_in_headers_query_and_cookies_and_removed_from_each() {
        let mut f = Fixture::new(multi_location());
        let token = testkeys::token(Alg::EdDsa, &good_claims());
        let v = f.check(&FakeRequest::new("GET", "/x").header("x-token", &token));
        assert!(
            v.mutations.contains(&Mutation::Remove("x-token".into())),
            "{v:?}"
        );
        let v = f.check(&FakeRequest::new(
            "GET",
            &format!("/x?a=1&access_token={token}&b=%20"),
        ));
        assert_eq!(v.outcome, Outcome::Allowed { cache_hit: true });
        assert!(v.mutations.contains(&Mutation::Path("/x?a=1&b=%20".into())));
        let v = f.check(
            &FakeRequest::new("GET", "/x").header("cookie", &format!("a=1; session={token}; b=2")),
        );
        assert!(v.decision.is_continue());
        assert!(v
            .mutations
            .contains(&Mutation::Set("cookie".into(), "a=1; b=2".into())));
    }

    #[test]
    fn two_different_tokens_are_400_and_the_same_token_twice_is_fine() {
        let mut f = Fixture::new(multi_location());
        let a = testkeys::token(Alg::EdDsa, &good_claims());
        let b = testkeys::token(Alg::Es256, &good_claims());
        let v = f.check(&bearer(&format!("/x?access_token={b}"), &a));
        denied(&v, Reason::Malformed, 400);
        assert!(challenge(&v).contains("invalid_request"), "{v:?}");
        let v = f.check(&bearer(&format!("/x?access_token={a}"), &a));
        assert!(v.decision.is_continue());
        let same = v;
        // Two tokens in two header locations: 400 if they differ, one token if not.
        let v = f.check(&bearer("/x", &a).header("x-token", &b));
        denied(&v, Reason::Malformed, 400);
        let v = f.check(&bearer("/x", &a).header("x-token", &a));
        assert!(v.decision.is_continue(), "{v:?}");
        let v = same;
        assert!(v
            .mutations
            .contains(&Mutation::Remove("authorization".into())));
        assert!(v.mutations.contains(&Mutation::Path("/x".into())));
    }

    /// Regression (issue 15): Envoy joins two `Authorization` lines into one value with `,`, so
    /// two different tokens there were one garbled token (401), not the documented 400.
    #[test]
    fn two_tokens_in_one_header_location_are_400_whether_joined_or_repeated() {
        let mut f = Fixture::new(multi_location());
        let a = testkeys::token(Alg::EdDsa, &good_claims());
        let b = testkeys::token(Alg::Es256, &good_claims());
        for (x, y) in [(&a, &b), (&a, &a)] {
            // As Envoy delivers them: one value, joined with `,` (with or without a space).
            for sep in [",", ", "] {
                let joined = FakeRequest::new("GET", "/x")
                    .header("authorization", &format!("Bearer {x}{sep}Bearer {y}"));
                let v = f.check(&joined);
                denied(&v, Reason::Malformed, 400);
                assert!(challenge(&v).contains("invalid_request"), "{v:?}");
            }
            // As separate values (headers the proxy does not join), with a prefix or without.
            let repeated = bearer("/x", x).header("authorization", &format!("Bearer {y}"));
            denied(&f.check(&repeated), Reason::Malformed, 400);
            let repeated = FakeRequest::new("GET", "/x")
                .header("x-token", x)
                .header("x-token", y);
            denied(&f.check(&repeated), Reason::Malformed, 400);
        }
        // A comma inside one token's text is that token's problem: malformed, 401.
        denied(
            &f.check(&bearer("/x", &format!("{a},junk"))),
            Reason::Malformed,
            401,
        );
        // One token alone still passes.
        assert!(f.check(&bearer("/x", &a)).decision.is_continue());
    }

    #[test]
    fn forward_keeps_the_token() {
        let mut f = Fixture::new(
            json!({"providers": [{"name": "main", "issuer": "https://issuer.test", "jwks": {"inline": jwks()}, "forward": true}]}),
        );
        let v = f.check(&bearer("/x", &testkeys::token(Alg::Rs256, &good_claims())));
        assert!(v.decision.is_continue());
        assert!(!v
            .mutations
            .contains(&Mutation::Remove("authorization".into())));
    }

    #[test]
    fn the_issuer_picks_the_provider_among_several() {
        let providers = json!([
            {"name": "a", "issuer": "https://a.test", "jwks": {"inline": jwks()}, "claim_to_headers": [{"claim": "iss", "header": "x-a"}]},
            {"name": "b", "issuer": "https://b.test", "jwks": {"inline": jwks()}, "claim_to_headers": [{"claim": "iss", "header": "x-b"}]}
        ]);
        let rules = json!([{"providers": ["a", "b"]}]);
        let mut f = Fixture::new(json!({"providers": providers, "rules": rules}));
        let tb = testkeys::token(
            Alg::Rs256,
            &json!({"iss": "https://b.test", "exp": NOW + 60}),
        );
        let v = f.check(&bearer("/", &tb));
        assert!(
            v.mutations
                .contains(&Mutation::Set("x-b".into(), "https://b.test".into())),
            "{v:?}"
        );
        let tc = testkeys::token(
            Alg::Rs256,
            &json!({"iss": "https://c.test", "exp": NOW + 60}),
        );
        denied(&f.check(&bearer("/", &tc)), Reason::Issuer, 401);
    }

    #[test]
    fn a_repeated_token_is_served_from_the_cache_until_it_expires() {
        let mut f = Fixture::new(json!({}));
        let mut c = good_claims();
        c["exp"] = json!(NOW + 100);
        let token = testkeys::token(Alg::Rs256, &c);
        assert_eq!(
            f.check(&bearer("/x", &token)).outcome,
            Outcome::Allowed { cache_hit: false }
        );
        let v = f.check(&bearer("/x", &token));
        assert_eq!(v.outcome, Outcome::Allowed { cache_hit: true });
        assert!(v
            .mutations
            .contains(&Mutation::Set("x-jwt-sub".into(), "alice".into())));
        // Claim checks still run on a hit.
        denied(&f.check(&bearer("/admin", &token)), Reason::Claims, 403);
        // Past exp + skew the entry is gone and verification says expired.
        assert_eq!(
            f.check_at(&bearer("/x", &token), NOW + 159).outcome,
            Outcome::Allowed { cache_hit: true }
        );
        denied(
            &f.check_at(&bearer("/x", &token), NOW + 160),
            Reason::Expired,
            401,
        );
    }

    #[test]
    fn a_new_key_set_version_invalidates_cached_verifications() {
        let mut f = Fixture::new(json!({}));
        let token = testkeys::token(Alg::Rs256, &good_claims());
        assert!(f.check(&bearer("/x", &token)).decision.is_continue());
        // Rotation: the key that signed the token is gone.
        let rotated = KeySet::parse(testkeys::JWKS_ROTATED.as_bytes(), false).unwrap();
        f.keys[0] = Some(ProviderKeys {
            version: 2,
            set: Rc::new(rotated),
        });
        denied(&f.check(&bearer("/x", &token)), Reason::UnknownKid, 401);
    }

    #[test]
    fn remote_providers_without_keys_are_pending_and_unknown_kids_ask_for_a_refetch() {
        let providers = json!([{"name": "main", "issuer": "https://issuer.test",
            "jwks": {"remote": {"cluster": "idp", "uri": "http://idp/jwks"}}}]);
        let mut f = Fixture::new(json!({"providers": providers}));
        assert!(f.keys[0].is_none());
        let token = testkeys::token(Alg::Rs256, &good_claims());
        let v = f.check(&bearer("/x", &token));
        denied(&v, Reason::NoKeys, 503);
        assert_eq!(v.keys_pending, Some(0));
        assert_eq!(reply(&v).header_value("retry-after"), Some("1"));
        f.keys[0] = Some(ProviderKeys {
            version: 1,
            set: Rc::new(KeySet::parse(testkeys::JWKS_ROTATED.as_bytes(), false).unwrap()),
        });
        let v = f.check(&bearer("/x", &token));
        denied(&v, Reason::UnknownKid, 401);
        assert_eq!(v.refetch, Some(0));
    }

    #[test]
    fn the_committed_end_to_end_tokens_mean_what_the_e2e_tests_expect() {
        let tokens: Value =
            serde_json::from_str(include_str!("../testdata/e2e_tokens.json")).unwrap();
        let t = |name: &str| tokens[name].as_str().unwrap().to_owned();
        let mut f = Fixture::new(json!({}));
        for name in ["valid_rs256", "valid_es256", "valid_eddsa"] {
            assert_eq!(
                f.check(&bearer("/x", &t(name))).outcome,
                Outcome::Allowed { cache_hit: false },
                "{name}"
            );
        }
        assert!(f
            .check(&bearer("/admin", &t("admin")))
            .decision
            .is_continue());
        denied(
            &f.check(&bearer("/admin", &t("valid_rs256"))),
            Reason::Claims,
            403,
        );
        denied(&f.check(&bearer("/x", &t("expired"))), Reason::Expired, 401);
        denied(
            &f.check(&bearer("/x", &t("wrong_audience"))),
            Reason::Audience,
            403,
        );
        denied(
            &f.check(&bearer("/x", &t("rotated"))),
            Reason::UnknownKid,
            401,
        );
        denied(
            &f.check(&bearer("/x", &t("unknown_kid"))),
            Reason::UnknownKid,
            401,
        );
        f.keys[0] = Some(ProviderKeys {
            version: 2,
            set: Rc::new(KeySet::parse(testkeys::JWKS_ROTATED.as_bytes(), false).unwrap()),
        });
        assert!(f.check(&bearer("/x", &t("rotated"))).decision.is_continue());
    }

    #[test]
    fn query_and_cookie_helpers_keep_everything_else() {
        assert_eq!(remove_query_param("/p?t=1", "t"), "/p");
        assert_eq!(remove_query_param("/p?a=%2F&t=1&t=2&c", "t"), "/p?a=%2F&c");
        assert_eq!(remove_query_param("/p", "t"), "/p");
        assert_eq!(cookie_values("a=1; t=\"x\"", "t"), ["x"]);
        assert_eq!(remove_cookie("t=1", "t"), "");
    }
}
