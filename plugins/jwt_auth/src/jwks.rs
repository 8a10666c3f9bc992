//! JWKS parsing into keys bound to their type and algorithm, and key selection for a token.
//!
//! jwt-compact's `JsonWebKey` knows key material only (no `kid`, `alg` or `use`), so each JWKS
//! entry is read here, metadata and material, and the material is handed to the key types
//! jwt-compact verifies with (`RsaPublicKey`, the P-256 and Ed25519 verifying keys). Skipping
//! `JsonWebKey`'s serde code also keeps the module smaller. Each key is then
//! *bound*: it verifies only algorithms of its own `kty` (an RSA key never verifies an HMAC token,
//! which defeats the RS256→HS256 confusion attack), and if the JWK names an `alg`, only that one
//! (a JWK marked RS256 never verifies PS256).
//!
//! Entries that cannot be used are skipped rather than failing the whole set, because real
//! providers publish keys for other purposes side by side (`use: enc`, curves we do not implement):
//! `use` other than `sig`, unknown `kty`/`crv`, RSA moduli under 2048 bits, `oct` keys where
//! symmetric keys are not allowed (a remote JWKS), and HMAC secrets shorter than the hash. A set
//! with no usable key at all is an error.
//!
//! Selection: with a `kid` in the token, only keys with that `kid` are candidates, and none is an
//! `unknown_kid` denial (there is no "try every key" fallback an attacker could steer). Without a
//! `kid`, every key bound to the token's algorithm is tried, as Envoy does. A key *without* a
//! `kid` never matches a token that names one, unless the provider has `compat: "jwt_authn"`
//! (jwt_verify_lib lets it match: a token could then pick such a key whatever `kid` it names).

use crate::rsa_pk::RsaPublicKey;
use crate::token::{Alg, KeyKind, Strict, Token};
use crate::{Compat, Failure, Reason};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_compact::alg::{Ed25519, Es256, VerifyingKey};
use jwt_compact::Algorithm;
use serde_json::Value;

/// Most keys accepted in one set; more is a misconfiguration or an attack on the fetcher.
pub const MAX_KEYS: usize = 64;

/// Key material, parsed once (an RSA modulus is not re-parsed per request).
#[derive(Clone)]
pub enum Material {
    Rsa(Box<RsaPublicKey>),
    EcP256(Box<<Es256 as Algorithm>::VerifyingKey>),
    EcP384(Box<p384::ecdsa::VerifyingKey>),
    EcP521(Box<p521::ecdsa::VerifyingKey>),
    Ed25519(Box<<Ed25519 as Algorithm>::VerifyingKey>),
    /// An HMAC secret. Never printed.
    Hmac(Vec<u8>),
}

impl Material {
    pub fn kind(&self) -> KeyKind {
        match self {
            Material::Rsa(_) => KeyKind::Rsa,
            Material::EcP256(_) => KeyKind::EcP256,
            Material::EcP384(_) => KeyKind::EcP384,
            Material::EcP521(_) => KeyKind::EcP521,
            Material::Ed25519(_) => KeyKind::Ed25519,
            Material::Hmac(_) => KeyKind::Hmac,
        }
    }
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} key", self.kind())
    }
}

/// One usable key.
#[derive(Debug, Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The algorithms this key may verify (never empty).
    pub algs: Vec<Alg>,
    pub material: Material,
}

/// A parsed key set.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// Entries skipped as unusable (worth a log line when fetched).
    pub skipped: usize,
}

/// Why a JWKS document was refused. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksError(pub String);

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl KeySet {
    /// Parse a JWKS document. `allow_symmetric` admits `oct` (HMAC) keys: only for key sets
    /// written into the configuration, never for fetched ones.
    pub fn parse(json: &[u8], allow_symmetric: bool) -> Result<KeySet, JwksError> {
        // Parsed like a token: a document repeating a member name is refused.
        let Strict(doc) = serde_json::from_slice(json)
            .map_err(|e| JwksError(format!("not a JWKS document ({e})")))?;
        match doc.get("keys") {
            Some(Value::Array(keys)) => KeySet::from_entries(keys, allow_symmetric),
            _ => Err(JwksError("not a JWKS document (no `keys` list)".into())),
        }
    }

    /// Parse JWKS entries already in JSON form (an inline config object).
    pub fn from_entries(entries: &[Value], allow_symmetric: bool) -> Result<KeySet, JwksError> {
        if entries.len() > MAX_KEYS {
            return Err(JwksError(format!(
                "{} keys is more than the {MAX_KEYS} allowed",
                entries.len()
            )));
        }
        let mut set = KeySet::default();
        for (i, entry) in entries.iter().enumerate() {
            match parse_key(entry, allow_symmetric) {
                Ok(Some(key)) => set.keys.push(key),
                Ok(None) => set.skipped += 1,
                Err(why) => return Err(JwksError(format!("keys[{i}]: {why}"))),
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError(format!(
                "no usable signing key ({} skipped)",
                set.skipped
            )));
        }
        Ok(set)
    }

    /// Keys that may verify `token`, or the denial if there are none (strict selection).
    pub fn candidates<'k>(&'k self, token: &Token<'_>) -> Result<Vec<&'k Key>, Failure> {
        self.candidates_with(token, Compat::Strict)
    }

    /// [`KeySet::candidates`]; with [`Compat::JwtAuthn`] a key without `kid` is also a candidate
    /// for a token that names a `kid` (jwt_verify_lib's rule).
    pub fn candidates_with<'k>(
        &'k self,
        token: &Token<'_>,
        compat: Compat,
    ) -> Result<Vec<&'k Key>, Failure> {
        let by_kid: Vec<&Key> = match &token.kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| match k.kid.as_deref() {
                    Some(k) => k == kid.as_str(),
                    None => compat == Compat::JwtAuthn,
                })
                .collect(),
            None => self.keys.iter().collect(),
        };
        if by_kid.is_empty() {
            return Err(Failure::new(
                Reason::UnknownKid,
                "the token's key id is not in the key set",
            ));
        }
        let bound: Vec<&Key> = by_kid
            .into_iter()
            .filter(|k| k.algs.contains(&token.alg))
            .collect();
        if bound.is_empty() {
            return Err(Failure::new(
                Reason::BadSignature,
                "the token's algorithm is not allowed for its key",
            ));
        }
        Ok(bound)
    }
}

/// One JWKS entry: `Ok(None)` if it is skipped as unusable, `Err` if it is broken.
fn parse_key(entry: &Value, allow_symmetric: bool) -> Result<Option<Key>, String> {
    let Value::Object(obj) = entry else {
        return Err("a key must be a JSON object".into());
    };
    let text = |name: &str| -> Result<Option<&str>, String> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("`{name}` must be a string")),
        }
    };
    let kty = text("kty")?.ok_or("`kty` is missing")?;
    let kid = text("kid")?.map(str::to_owned);
    if let Some(usage) = text("use")? {
        if usage != "sig" {
            return Ok(None);
        }
    }
    let kind = match (kty, text("crv")?) {
        ("RSA", _) => KeyKind::Rsa,
        ("EC", Some("P-256")) => KeyKind::EcP256,
        ("EC", Some("P-384")) => KeyKind::EcP384,
        ("EC", Some("P-521")) => KeyKind::EcP521,
        ("OKP", Some("Ed25519")) => KeyKind::Ed25519,
        ("oct", _) if allow_symmetric => KeyKind::Hmac,
        _ => return Ok(None),
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let text = text(name)?.ok_or_else(|| format!("`{name}` is missing"))?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| format!("`{name}` is not base64url"))
    };
    let material = match kind {
        KeyKind::Rsa => {
            let key = RsaPublicKey::new(&bytes("n")?, &bytes("e")?)
                .map_err(|_| "invalid RSA key".to_owned())?;
            if key.bits() < 2048 {
                return Ok(None);
            }
            Material::Rsa(Box::new(key))
        }
        KeyKind::EcP256 => {
            let sec1 = sec1_point(&bytes("x")?, &bytes("y")?, 32).ok_or("invalid P-256 key")?;
            Material::EcP256(Box::new(
                <<Es256 as Algorithm>::VerifyingKey as VerifyingKey<Es256>>::from_slice(&sec1)
                    .map_err(|_| "invalid P-256 key".to_owned())?,
            ))
        }
        KeyKind::EcP384 => {
            let sec1 = sec1_point(&bytes("x")?, &bytes("y")?, 48).ok_or("invalid P-384 key")?;
            Material::EcP384(Box::new(
                p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map_err(|_| "invalid P-384 key".to_owned())?,
            ))
        }
        KeyKind::EcP521 => {
            let sec1 = sec1_point(&bytes("x")?, &bytes("y")?, 66).ok_or("invalid P-521 key")?;
            Material::EcP521(Box::new(
                p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map_err(|_| "invalid P-521 key".to_owned())?,
            ))
        }
        KeyKind::Ed25519 => Material::Ed25519(Box::new(
            <<Ed25519 as Algorithm>::VerifyingKey as VerifyingKey<Ed25519>>::from_slice(&bytes(
                "x",
            )?)
            .map_err(|_| "invalid Ed25519 key".to_owned())?,
        )),
        KeyKind::Hmac => {
            Material::Hmac(bytes("k").map_err(|_| "invalid symmetric key".to_owned())?)
        }
    };
    let secret_len = match &material {
        Material::Hmac(s) => s.len(),
        _ => 0,
    };
    let usable = |alg: Alg| {
        alg.key_kind() == kind && (kind != KeyKind::Hmac || secret_len >= alg.min_hmac_key_len())
    };
    let algs: Vec<Alg> = match text("alg")? {
        Some(name) => {
            let Some(alg) = Alg::from_name(name) else {
                return Ok(None);
            };
            if alg.key_kind() != kind {
                return Err(format!("`alg` {name} does not fit a `{kty}` key"));
            }
            vec![alg]
        }
        None => Alg::ALL
            .into_iter()
            .filter(|a| a.key_kind() == kind)
            .collect(),
    };
    let algs: Vec<Alg> = algs.into_iter().filter(|a| usable(*a)).collect();
    if algs.is_empty() {
        return Ok(None); // e.g. an HMAC secret shorter than its hash
    }
    Ok(Some(Key {
        kid,
        algs,
        material,
    }))
}

/// The uncompressed SEC1 encoding of the point (`x`, `y`), each exactly `len` bytes (RFC 7518
/// §6.2.1.2: the full field size, leading zeros kept), or `None`. The curve crates then check
/// that the point is on the curve.
fn sec1_point(x: &[u8], y: &[u8], len: usize) -> Option<Vec<u8>> {
    if x.len() != len || y.len() != len {
        return None;
    }
    let mut sec1 = Vec::with_capacity(1 + 2 * len);
    sec1.push(4u8); // uncompressed point
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    Some(sec1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys;
    use serde_json::json;

    #[test]
    fn the_committed_test_jwks_parses_with_kids_and_bindings() {
        let set = KeySet::parse(testkeys::JWKS.as_bytes(), false).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["test-rsa", "test-rsa-ps", "test-ec", "test-ed25519"]);
        assert_eq!(set.keys[0].algs, [Alg::Rs256]);
        assert_eq!(set.keys[1].algs, [Alg::Ps256]);
        assert_eq!(set.keys[2].algs, [Alg::Es256]);
        assert_eq!(set.keys[3].algs, [Alg::EdDsa]);
    }

    #[test]
    fn a_key_without_alg_is_bound_to_its_kty() {
        let mut rsa: Value = serde_json::from_str(testkeys::JWKS).unwrap();
        let key = rsa["keys"][0].as_object_mut().unwrap();
        key.remove("alg");
        let set = KeySet::from_entries(&[Value::Object(key.clone())], false).unwrap();
        assert_eq!(
            set.keys[0].algs,
            [
                Alg::Rs256,
                Alg::Rs384,
                Alg::Rs512,
                Alg::Ps256,
                Alg::Ps384,
                Alg::Ps512
            ]
        );
    }

    #[test]
    fn symmetric_keys_only_where_allowed_and_only_long_enough() {
        let oct = json!({"kty": "oct", "kid": "h", "k": testkeys::hmac_secret_b64()});
        assert!(KeySet::from_entries(std::slice::from_ref(&oct), false).is_err());
        let set = KeySet::from_entries(&[oct], true).unwrap();
        // 32 bytes: enough for HS256, not for HS384/HS512.
        assert_eq!(set.keys[0].algs, [Alg::Hs256]);
        let short = json!({"kty": "oct", "k": "c2hvcnQ"});
        assert!(KeySet::from_entries(&[short], true).is_err());
    }

    #[test]
    fn unusable_entries_are_skipped_and_broken_ones_refused() {
        let doc: Value = serde_json::from_str(testkeys::JWKS).unwrap();
        let good = doc["keys"][0].clone();
        let enc = json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"});
        let k256 = json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"});
        let set = KeySet::from_entries(&[enc, k256, good.clone()], false).unwrap();
        assert_eq!((set.keys.len(), set.skipped), (1, 2));
        // A P-384 or P-521 key of the wrong size, or off the curve, is broken, not skipped.
        for crv in ["P-384", "P-521"] {
            let short = json!({"kty": "EC", "crv": crv, "x": "AAAA", "y": "AAAA"});
            assert!(KeySet::from_entries(&[good.clone(), short], false).is_err());
        }
        let mut off_curve = testkeys::ec_jwk(Alg::Es384);
        off_curve["y"] = off_curve["x"].clone();
        assert!(KeySet::from_entries(&[good.clone(), off_curve], false).is_err());
        let broken = json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"});
        assert!(KeySet::from_entries(&[good.clone(), broken], false).is_err());
        let mismatched = json!({"kty": "RSA", "alg": "HS256", "n": good["n"], "e": "AQAB"});
        assert!(KeySet::from_entries(&[mismatched], false).is_err());
        assert!(KeySet::parse(b"{\"keys\": []}", false).is_err());
        assert!(KeySet::parse(b"[]", false).is_err());
    }

    #[test]
    fn p384_and_p521_keys_are_bound_to_es384_and_es512() {
        let entries = [testkeys::ec_jwk(Alg::Es384), testkeys::ec_jwk(Alg::Es512)];
        let set = KeySet::from_entries(&entries, false).unwrap();
        assert_eq!(set.keys[0].algs, [Alg::Es384]);
        assert_eq!(set.keys[1].algs, [Alg::Es512]);
        assert!(matches!(set.keys[0].material, Material::EcP384(_)));
        assert!(matches!(set.keys[1].material, Material::EcP521(_)));
        // Without `alg`, the curve alone decides.
        let mut bare = testkeys::ec_jwk(Alg::Es512);
        bare.as_object_mut().unwrap().remove("alg");
        let set = KeySet::from_entries(&[bare], false).unwrap();
        assert_eq!(set.keys[0].algs, [Alg::Es512]);
        // An `alg` that does not fit the curve is a broken key (curve confusion in the JWKS).
        let mut wrong = testkeys::ec_jwk(Alg::Es384);
        wrong["alg"] = json!("ES256");
        assert!(KeySet::from_entries(&[wrong], false).is_err());
        let mut wrong = testkeys::ec_jwk(Alg::Es256);
        wrong["alg"] = json!("ES512");
        assert!(KeySet::from_entries(&[wrong], false).is_err());
    }

    #[test]
    fn a_kidless_key_matches_a_token_with_a_kid_only_in_jwt_authn_compatibility() {
        use crate::token::parse;
        let mut key = testkeys::ec_jwk(Alg::Es384);
        key.as_object_mut().unwrap().remove("kid");
        let set = KeySet::from_entries(&[key], false).unwrap();
        let raw = testkeys::sign_raw(
            Alg::Es384,
            testkeys::Signer::Ec384,
            r#"{"alg":"ES384","kid":"anything"}"#,
            "{}",
        );
        let token = parse(&raw, 8192).unwrap();
        assert_eq!(
            set.candidates(&token).unwrap_err().reason,
            Reason::UnknownKid
        );
        assert_eq!(
            set.candidates_with(&token, Compat::JwtAuthn).unwrap().len(),
            1
        );
        // A key whose kid differs never matches, in either mode.
        let named = KeySet::from_entries(&[testkeys::ec_jwk(Alg::Es384)], false).unwrap();
        assert_eq!(
            named
                .candidates_with(&token, Compat::JwtAuthn)
                .unwrap_err()
                .reason,
            Reason::UnknownKid
        );
    }

    #[test]
    fn rsa_keys_under_2048_bits_are_skipped() {
        // A 1024-bit modulus (any odd 128-byte number parses as a modulus).
        let n = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            [0xC1u8; 128],
        );
        let weak = json!({"kty": "RSA", "n": n, "e": "AQAB"});
        assert!(KeySet::from_entries(&[weak], false).is_err());
    }
}
