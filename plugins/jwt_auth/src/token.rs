//! Parsing a compact JWS and every check that needs no key: size, shape, encoding, header, claims
//! syntax.
//!
//! jwt-compact parses tokens leniently (it ignores `kid`, accepts `crit`, and serde_json keeps the
//! *last* of two duplicate claims), so the token is taken apart here and only the signature maths
//! is left to jwt-compact. Everything rejected here is rejected before any key is touched, so a
//! malformed token costs no RSA operation.
//!
//! What is rejected, and why:
//! - more than `max_size` bytes (checked first, before any decoding);
//! - anything but three non-empty `.`-separated segments (JWE has five; an empty signature is
//!   the `alg: none` trick in disguise);
//! - base64url that is not canonical: padding, `+`/`/`, or non-zero trailing bits. Two spellings of
//!   one token would defeat the verified-token cache and log correlation;
//! - a header or payload that is not a JSON object, or that repeats a member name at any depth
//!   (different JSON parsers keep different duplicates: the classic parser-differential attack);
//! - `alg` missing, `none`, or not one this plugin implements;
//! - `crit` (no extension is implemented, so any listed one is not understood), `b64` (RFC 7797
//!   unencoded payloads), `zip`/`enc` (JWE), and the key-carrying headers `jku`, `x5u`, `jwk` and
//!   `x5c`: keys come only from configuration, never from the token;
//! - registered claims of the wrong JSON type (RFC 7519 §4.1): `iss`, `sub` and `jti` that are not
//!   strings, an `aud` that is neither a string nor an array of strings, and `exp`, `nbf` or `iat`
//!   that are not numbers;
//! - `exp`, `nbf` or `iat` outside `0 <= value < 2^63` seconds ([`MAX_NUMERIC_DATE`]): a token
//!   "valid until 1e20" never expires, and a negative time is no time at all. Envoy's `jwt_authn`
//!   (jwt_verify_lib) refuses values outside `0 <= value < 2^64`; ours is the tighter bound of a
//!   signed 64-bit integer. Custom claims are never type-checked.
//!
//! One relaxation exists, for users migrating from `jwt_authn` ([`Compat::JwtAuthn`]): a
//! signature segment with canonical `=` padding is then accepted (the signing input is unchanged;
//! the header and payload must still be canonical).

use crate::{Compat, Failure};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
pub use palisade_core::json::Strict;
use serde_json::{Map, Value};

/// A JWS algorithm this plugin can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

/// The kind of key an algorithm needs: an RSA key never verifies an HMAC token, and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    EcP521,
    Ed25519,
    Hmac,
}

impl Alg {
    pub const ALL: [Alg; 13] = [
        Alg::Rs256,
        Alg::Rs384,
        Alg::Rs512,
        Alg::Ps256,
        Alg::Ps384,
        Alg::Ps512,
        Alg::Es256,
        Alg::Es384,
        Alg::Es512,
        Alg::EdDsa,
        Alg::Hs256,
        Alg::Hs384,
        Alg::Hs512,
    ];

    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::Es512 => "ES512",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
        }
    }

    pub fn key_kind(self) -> KeyKind {
        match self {
            Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512 => {
                KeyKind::Rsa
            }
            Alg::Es256 => KeyKind::EcP256,
            Alg::Es384 => KeyKind::EcP384,
            Alg::Es512 => KeyKind::EcP521,
            Alg::EdDsa => KeyKind::Ed25519,
            Alg::Hs256 | Alg::Hs384 | Alg::Hs512 => KeyKind::Hmac,
        }
    }

    /// For HMAC: the minimum secret length in bytes (the hash size, RFC 7518 §3.2).
    pub fn min_hmac_key_len(self) -> usize {
        match self {
            Alg::Hs384 => 48,
            Alg::Hs512 => 64,
            _ => 32,
        }
    }
}

/// A token that passed every key-independent check. Borrowed from the raw token text.
#[derive(Debug, Clone)]
pub struct Token<'a> {
    pub alg: Alg,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// The payload segment as it came (base64url), for the payload output header.
    pub payload_b64: &'a str,
    pub signature: Vec<u8>,
    /// The signature segment carried `=` padding (accepted only by [`parse_with`] with
    /// [`Compat::JwtAuthn`]; a provider without that compatibility must refuse the token).
    pub padded_signature: bool,
}

/// Header members that are rejected whenever present; see the module docs.
const FORBIDDEN_HEADERS: [(&str, &str); 8] = [
    ("crit", "critical header extensions are not supported"),
    ("b64", "unencoded payloads (b64) are not supported"),
    ("jku", "key URLs in the token are never followed"),
    ("x5u", "certificate URLs in the token are never followed"),
    ("jwk", "keys embedded in the token are never used"),
    ("x5c", "certificates embedded in the token are never used"),
    ("zip", "compressed or encrypted tokens are not supported"),
    ("enc", "encrypted tokens are not supported"),
];

/// The registered time claims (NumericDate, RFC 7519 §2), which must be numbers in range when
/// present.
pub const TIME_CLAIMS: [&str; 3] = ["exp", "nbf", "iat"];

/// NumericDate claims must be below this (2^63 seconds, the range of a signed 64-bit integer), and
/// not negative; compared as a double, so `9223372036854775807` (2^63 as a double) is out of
/// range. jwt_verify_lib (Envoy's `jwt_authn`) allows up to 2^64: between the two bounds
/// Palisade is stricter (measured by `tests/harness/tests/jwt_differential.rs`).
pub const MAX_NUMERIC_DATE: f64 = 9_223_372_036_854_775_808.0;

/// Take a compact JWS apart and run every check that needs no key (strict: no compatibility
/// relaxation).
pub fn parse(raw: &str, max_size: usize) -> Result<Token<'_>, Failure> {
    parse_with(raw, max_size, Compat::Strict)
}

/// [`parse`], with the relaxations of `compat` (see the module docs).
pub fn parse_with(raw: &str, max_size: usize, compat: Compat) -> Result<Token<'_>, Failure> {
    if raw.len() > max_size {
        return Err(Failure::malformed("the token is too large"));
    }
    let mut parts = raw.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::malformed(
            "the token must have exactly three segments",
        ));
    };
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(Failure::malformed("the token has an empty segment"));
    }
    if signature_b64.is_empty() {
        return Err(Failure::malformed("the token is not signed"));
    }
    let header = decode_object(header_b64, "header")?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => {
            return Err(Failure::malformed(
                "unsigned tokens (alg none) are rejected",
            ))
        }
        Some(Value::String(name)) => Alg::from_name(name)
            .ok_or_else(|| Failure::malformed("the token's algorithm is not supported"))?,
        _ => return Err(Failure::malformed("the token header has no algorithm")),
    };
    for (name, why) in FORBIDDEN_HEADERS {
        if header.contains_key(name) {
            return Err(Failure::malformed(why));
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Failure::malformed("the token's kid is not a string")),
    };
    let claims = decode_object(payload_b64, "payload")?;
    check_registered_claims(&claims)?;
    let unpadded = match signature_b64.strip_suffix("==") {
        Some(s) => s,
        None => signature_b64.strip_suffix('=').unwrap_or(signature_b64),
    };
    let padded_signature = unpadded.len() != signature_b64.len();
    // Only canonical padding: the unpadded length plus the `=`s is a multiple of 4.
    if padded_signature && (compat != Compat::JwtAuthn || signature_b64.len() % 4 != 0) {
        return Err(Failure::malformed(
            "the token signature is not canonical base64url",
        ));
    }
    let signature = decode(unpadded, "signature")?;
    // `split` gave us three slices of `raw`; the signing input is the first two with their dot.
    let signing_input = &raw[..header_b64.len() + 1 + payload_b64.len()];
    Ok(Token {
        alg,
        kid,
        claims,
        signing_input,
        payload_b64,
        signature,
        padded_signature,
    })
}

/// RFC 7519 §4.1 types of the registered claims, and the NumericDate range.
fn check_registered_claims(claims: &Map<String, Value>) -> Result<(), Failure> {
    for name in TIME_CLAIMS {
        let Some(v) = claims.get(name) else { continue };
        let (not_number, out_of_range) = match name {
            "exp" => (
                "the exp claim is not a number",
                "the exp claim is out of range (0 to 2^63-1 seconds)",
            ),
            "nbf" => (
                "the nbf claim is not a number",
                "the nbf claim is out of range (0 to 2^63-1 seconds)",
            ),
            _ => (
                "the iat claim is not a number",
                "the iat claim is out of range (0 to 2^63-1 seconds)",
            ),
        };
        let Some(n) = v.as_f64() else {
            return Err(Failure::malformed(not_number));
        };
        if !(0.0..MAX_NUMERIC_DATE).contains(&n) {
            return Err(Failure::malformed(out_of_range));
        }
    }
    for (name, why) in [
        ("iss", "the iss claim is not a string"),
        ("sub", "the sub claim is not a string"),
        ("jti", "the jti claim is not a string"),
    ] {
        if claims.get(name).is_some_and(|v| !v.is_string()) {
            return Err(Failure::malformed(why));
        }
    }
    let aud_ok = match claims.get("aud") {
        None | Some(Value::String(_)) => true,
        Some(Value::Array(items)) => items.iter().all(Value::is_string),
        Some(_) => false,
    };
    if !aud_ok {
        return Err(Failure::malformed(
            "the aud claim is not a string or an array of strings",
        ));
    }
    Ok(())
}

/// Canonical base64url without padding; anything else is malformed.
fn decode(segment: &str, what: &'static str) -> Result<Vec<u8>, Failure> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| {
        Failure::malformed(match what {
            "header" => "the token header is not canonical base64url",
            "payload" => "the token payload is not canonical base64url",
            _ => "the token signature is not canonical base64url",
        })
    })
}

fn decode_object(segment: &str, what: &'static str) -> Result<Map<String, Value>, Failure> {
    let bytes = decode(segment, what)?;
    let duplicate_or_invalid = || {
        Failure::malformed(if what == "header" {
            "the token header is not a JSON object without duplicate members"
        } else {
            "the token payload is not a JSON object without duplicate claims"
        })
    };
    match serde_json::from_slice::<Strict>(&bytes) {
        Ok(Strict(Value::Object(map))) => Ok(map),
        _ => Err(duplicate_or_invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reason;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    fn rejected(raw: &str) -> Failure {
        let f = parse(raw, 8192).unwrap_err();
        assert_eq!(f.reason, Reason::Malformed, "{f:?}");
        f
    }

    #[test]
    fn a_well_formed_token_is_taken_apart() {
        let raw = token(
            r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
            r#"{"sub":"a","exp":10,"nested":{"x":[1,2]}}"#,
        );
        let t = parse(&raw, 8192).unwrap();
        assert_eq!(t.alg, Alg::Rs256);
        assert_eq!(t.kid.as_deref(), Some("k1"));
        assert_eq!(t.claims["sub"], "a");
        assert_eq!(t.signature, b"sig");
        assert_eq!(t.signing_input, raw.rsplit_once('.').unwrap().0);
    }

    #[test]
    fn alg_none_in_any_case_is_rejected() {
        for alg in ["none", "None", "NONE"] {
            let f = rejected(&token(&format!(r#"{{"alg":"{alg}"}}"#), "{}"));
            assert!(f.description.contains("alg none"));
        }
    }

    #[test]
    fn unknown_or_missing_algorithms_are_rejected() {
        rejected(&token(r#"{"alg":"ES256K"}"#, "{}"));
        rejected(&token(r#"{"alg":"rs256"}"#, "{}"));
        rejected(&token(r#"{"typ":"JWT"}"#, "{}"));
        rejected(&token(r#"{"alg":256}"#, "{}"));
    }

    #[test]
    fn wrong_segment_counts_and_empty_signatures_are_rejected() {
        let good = token(r#"{"alg":"HS256"}"#, "{}");
        let (signing_input, _) = good.rsplit_once('.').unwrap();
        rejected(signing_input);
        rejected(&format!("{signing_input}."));
        rejected(&format!("{good}.extra"));
        rejected(&format!("{good}.a.b"));
        rejected("");
    }

    #[test]
    fn non_canonical_base64url_is_rejected() {
        let header = b64(r#"{"alg":"HS256"}"#);
        let payload = b64(r#"{"a":1}"#);
        // Padding.
        rejected(&format!("{header}=.{payload}.c2ln"));
        // Standard alphabet instead of URL-safe: `+` and `/`.
        rejected(&format!("{header}.{payload}.c2+n"));
        rejected(&format!("{header}.{payload}.c2/n"));
        // Non-zero trailing bits: "c2lo" and "c2ln" decode alike in lenient decoders.
        assert_eq!(URL_SAFE_NO_PAD.decode("c2k").unwrap(), b"si");
        rejected(&format!("{header}.{payload}.c2l"));
        // Whitespace.
        rejected(&format!("{header}.{payload} .c2ln"));
    }

    #[test]
    fn duplicate_claims_at_any_depth_are_rejected() {
        let f = rejected(&token(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"alice","sub":"admin"}"#,
        ));
        assert!(f.description.contains("duplicate"));
        rejected(&token(r#"{"alg":"HS256"}"#, r#"{"a":{"b":1,"b":2}}"#));
        rejected(&token(r#"{"alg":"HS256","alg":"none"}"#, "{}"));
    }

    #[test]
    fn payloads_that_are_not_objects_are_rejected() {
        rejected(&token(r#"{"alg":"HS256"}"#, "[1]"));
        rejected(&token(r#"{"alg":"HS256"}"#, "not json"));
        rejected(&token("[]", "{}"));
    }

    #[test]
    fn crit_b64_and_key_carrying_headers_are_rejected() {
        for extra in [
            r#""crit":["exp"]"#,
            r#""crit":[]"#,
            r#""b64":false"#,
            r#""jku":"https://evil.example/jwks""#,
            r#""x5u":"https://evil.example/cert""#,
            r#""jwk":{"kty":"oct","k":"AAAA"}"#,
            r#""x5c":["MII"]"#,
            r#""enc":"A128GCM""#,
        ] {
            rejected(&token(&format!(r#"{{"alg":"HS256",{extra}}}"#), "{}"));
        }
    }

    #[test]
    fn time_claims_must_be_numbers() {
        for claim in ["exp", "nbf", "iat"] {
            let f = rejected(&token(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{{"{claim}":"2099-01-01"}}"#),
            ));
            assert!(f.description.contains(claim));
        }
        assert!(parse(&token(r#"{"alg":"HS256"}"#, r#"{"exp":1.5e9}"#), 8192).is_ok());
    }

    #[test]
    fn time_claims_outside_zero_to_two_to_the_63_are_rejected_as_out_of_range() {
        for claim in ["exp", "nbf", "iat"] {
            for bad in [
                "1e20",
                "18446744073709551615",
                "9223372036854775808",
                "9223372036854775807",
                "-1",
                "-0.5",
                "-9223372036854775808",
            ] {
                let f = rejected(&token(
                    r#"{"alg":"HS256"}"#,
                    &format!(r#"{{"{claim}":{bad}}}"#),
                ));
                assert!(
                    f.description.contains(claim) && f.description.contains("out of range"),
                    "{claim}={bad}: {f:?}"
                );
            }
            for good in ["0", "1", "4102444800", "9223372036854774784", "1.5"] {
                let raw = token(r#"{"alg":"HS256"}"#, &format!(r#"{{"{claim}":{good}}}"#));
                assert!(parse(&raw, 8192).is_ok(), "{claim}={good}");
            }
        }
    }

    #[test]
    fn registered_claims_of_the_wrong_type_are_rejected_and_custom_ones_are_not() {
        for (payload, claim) in [
            (r#"{"iss":7}"#, "iss"),
            (r#"{"iss":["a"]}"#, "iss"),
            (r#"{"sub":123}"#, "sub"),
            (r#"{"sub":null}"#, "sub"),
            (r#"{"jti":42}"#, "jti"),
            (r#"{"aud":7}"#, "aud"),
            (r#"{"aud":{"a":1}}"#, "aud"),
            (r#"{"aud":["api",7]}"#, "aud"),
            (r#"{"aud":["api",null]}"#, "aud"),
        ] {
            let f = rejected(&token(r#"{"alg":"HS256"}"#, payload));
            assert!(f.description.contains(claim), "{payload}: {f:?}");
        }
        for payload in [
            r#"{"iss":"i","sub":"s","jti":"j","aud":"a"}"#,
            r#"{"aud":["a","b"]}"#,
            r#"{"aud":[]}"#,
            r#"{"scope":7,"roles":[1,null],"custom":{"sub":1}}"#,
        ] {
            assert!(
                parse(&token(r#"{"alg":"HS256"}"#, payload), 8192).is_ok(),
                "{payload}"
            );
        }
    }

    #[test]
    fn a_padded_signature_is_accepted_only_in_jwt_authn_compatibility() {
        let header = b64(r#"{"alg":"HS256"}"#);
        let payload = b64(r#"{"a":1}"#);
        // "si" is "c2k" unpadded, "c2k=" padded.
        for padded in ["c2k=", "c2lnbg=="] {
            let raw = format!("{header}.{payload}.{padded}");
            let f = rejected(&raw);
            assert!(f.description.contains("signature"), "{f:?}");
            let t = parse_with(&raw, 8192, Compat::JwtAuthn).unwrap();
            assert!(t.padded_signature);
            assert_eq!(t.signing_input, format!("{header}.{payload}"));
        }
        assert_eq!(
            parse_with(&format!("{header}.{payload}.c2k="), 8192, Compat::JwtAuthn)
                .unwrap()
                .signature,
            b"si"
        );
        // Still refused in compatibility: wrong amounts of padding, padding elsewhere.
        for raw in [
            format!("{header}.{payload}.c2k=="),
            format!("{header}.{payload}.c2ln="),
            format!("{header}.{payload}.c2lu=="),
            format!("{header}=.{payload}.c2k="),
            format!("{header}.{payload}=.c2k="),
            format!("{header}.{payload}.="),
        ] {
            let f = parse_with(&raw, 8192, Compat::JwtAuthn).unwrap_err();
            assert_eq!(f.reason, Reason::Malformed, "{raw}");
        }
        assert!(
            !parse(&token(r#"{"alg":"HS256"}"#, "{}"), 8192)
                .unwrap()
                .padded_signature
        );
    }

    #[test]
    fn a_kid_that_is_not_a_string_is_rejected() {
        rejected(&token(r#"{"alg":"HS256","kid":7}"#, "{}"));
    }

    #[test]
    fn oversized_tokens_are_rejected_before_decoding() {
        let raw = token(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"x":"{}"}}"#, "a".repeat(100)),
        );
        assert!(parse(&raw, raw.len()).is_ok());
        let f = parse(&raw, raw.len() - 1).unwrap_err();
        assert_eq!(f.reason, Reason::Malformed);
        assert!(f.description.contains("too large"));
    }
}
