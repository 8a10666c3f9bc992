//! TEST-ONLY keys (committed under `testdata/`, see `testdata/README.md`) and a token signer.
//!
//! Tokens are built by hand — header and payload JSON as written, then signed with jwt-compact —
//! so tests can make both good tokens (with `exp`/`nbf` relative to the fake clock) and every kind
//! of malformed one.
//!
//! The P-384 and P-521 keys are derived from fixed private scalars here (no files): their public
//! JWKs come from [`ec_jwk`]. With the `test-support` feature this module is public for the
//! end-to-end differential test (`tests/harness/tests/jwt_differential.rs`); it is never built
//! into the Wasm module.
// Test support: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::token::Alg;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmSignature};

/// The public test JWKS: `test-rsa` (RS256), `test-rsa-ps` (PS256, same modulus), `test-ec`
/// (ES256), `test-ed25519` (EdDSA).
pub const JWKS: &str = include_str!("../testdata/jwks.json");
/// A second RSA key (`test-rsa-2`), for rotation tests.
pub const JWKS_ROTATED: &str = include_str!("../testdata/jwks_rotated.json");
const RSA: &str = include_str!("../testdata/rsa.private.jwk.json");
const RSA2: &str = include_str!("../testdata/rsa2.private.jwk.json");
const EC: &str = include_str!("../testdata/ec.private.jwk.json");
const ED25519: &str = include_str!("../testdata/ed25519.private.jwk.json");
const HMAC: &str = include_str!("../testdata/hmac_secret.b64url");

pub fn hmac_secret_b64() -> String {
    HMAC.trim().to_owned()
}

/// The oct JWK (`test-hmac`) of the 32-byte TEST-ONLY HMAC secret, which [`Signer::Hmac`] signs
/// with. Not in [`JWKS`]: tests add it where an HMAC key belongs in the set.
pub fn hmac_jwk() -> serde_json::Value {
    serde_json::json!({"kty": "oct", "kid": "test-hmac", "k": hmac_secret_b64()})
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Which private key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Rsa,
    Rsa2,
    Ec,
    Ed25519,
    Hmac,
    /// The P-384 test key (`test-ec384`).
    Ec384,
    /// The P-521 test key (`test-ec521`).
    Ec521,
    /// A second P-384 key, published without a `kid` by [`kidless_ec384_jwk`].
    Ec384Kidless,
    /// A 64-byte HMAC secret ([`hmac64_jwk`], `test-hmac-64`): long enough for HS384 and HS512.
    Hmac64,
}

const HMAC64: [u8; 64] = [0x64; 64];

/// The oct JWK of the 64-byte TEST-ONLY HMAC secret.
pub fn hmac64_jwk() -> serde_json::Value {
    serde_json::json!({"kty": "oct", "kid": "test-hmac-64", "k": b64(&HMAC64)})
}

/// The second P-384 key's public JWK, without `kid` (or `alg`).
pub fn kidless_ec384_jwk() -> serde_json::Value {
    let point = p384_kidless_key().verifying_key().to_encoded_point(false);
    let point = point.as_bytes();
    serde_json::json!({"kty": "EC", "crv": "P-384", "x": b64(&point[1..49]), "y": b64(&point[49..])})
}

fn p384_kidless_key() -> p384::ecdsa::SigningKey {
    p384::ecdsa::SigningKey::from_slice(&[0x39u8; 48]).unwrap()
}

/// The fixed TEST-ONLY P-384 private scalar.
fn p384_key() -> p384::ecdsa::SigningKey {
    p384::ecdsa::SigningKey::from_slice(&[0x38u8; 48]).unwrap()
}

/// The fixed TEST-ONLY P-521 private scalar (the top byte must stay below 2).
fn p521_key() -> p521::ecdsa::SigningKey {
    let mut scalar = [0x52u8; 66];
    scalar[0] = 0x01;
    p521::ecdsa::SigningKey::from_slice(&scalar).unwrap()
}

/// The public JWK of the P-256 (`ES256`, from the committed JWKS), P-384 (`ES384`) or P-521
/// (`ES512`) test key, with its `kid` and `alg`.
pub fn ec_jwk(alg: Alg) -> serde_json::Value {
    let (kid, crv, point) = match alg {
        Alg::Es384 => (
            "test-ec384",
            "P-384",
            p384_key()
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        ),
        Alg::Es512 => (
            "test-ec521",
            "P-521",
            p521::ecdsa::VerifyingKey::from(&p521_key())
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
        ),
        _ => {
            let doc: serde_json::Value = serde_json::from_str(JWKS).unwrap();
            return doc["keys"][2].clone();
        }
    };
    let half = (point.len() - 1) / 2;
    serde_json::json!({
        "kty": "EC", "crv": crv, "kid": kid, "alg": alg.name(), "use": "sig",
        "x": b64(&point[1..1 + half]), "y": b64(&point[1 + half..]),
    })
}

/// The test JWKS with the P-384 and P-521 keys added (six keys).
pub fn jwks_with_all_curves() -> serde_json::Value {
    let mut doc: serde_json::Value = serde_json::from_str(JWKS).unwrap();
    let keys = doc["keys"].as_array_mut().unwrap();
    keys.push(ec_jwk(Alg::Es384));
    keys.push(ec_jwk(Alg::Es512));
    doc
}

/// An ECDSA `r || s` signature re-encoded as ASN.1 DER (what OpenSSL produces, and what JWS
/// forbids), for the "DER instead of raw" attack.
pub fn der_from_raw(raw: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_none_or(|b| *b >= 0x80) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02];
        push_len(&mut out, v.len());
        out.extend(v);
        out
    }
    fn push_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            out.push(0x81);
            out.push(len as u8);
        }
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30];
    push_len(&mut out, body.len());
    out.extend(body);
    out
}

fn jwk(text: &str) -> JsonWebKey<'static> {
    serde_json::from_str(text).unwrap()
}

/// Sign `header.payload` (both given as JSON text) with `signer` using `alg`.
pub fn sign_raw(alg: Alg, signer: Signer, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = sign_input(alg, signer, &input);
    format!("{input}.{}", b64(&sig))
}

/// HMAC-SHA256 of `msg` under any `key` (for key-confusion attacks).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    Hs256.sign(&Hs256Key::new(key), msg).as_bytes().to_vec()
}

/// The raw signature of a signing input exactly as given (any spelling of its segments).
pub fn sign_input(alg: Alg, signer: Signer, input: &str) -> Vec<u8> {
    let msg = input.as_bytes();
    let rsa_key = || match signer {
        Signer::Rsa2 => jwt_compact::alg::RsaPrivateKey::try_from(&jwk(RSA2)).unwrap(),
        _ => jwt_compact::alg::RsaPrivateKey::try_from(&jwk(RSA)).unwrap(),
    };
    let hmac = || match signer {
        Signer::Hmac64 => HMAC64.to_vec(),
        _ => URL_SAFE_NO_PAD.decode(hmac_secret_b64()).unwrap(),
    };
    let sig: Vec<u8> = match alg {
        Alg::Rs256 => Rsa::rs256().sign(&rsa_key(), msg).as_bytes().to_vec(),
        Alg::Rs384 => Rsa::rs384().sign(&rsa_key(), msg).as_bytes().to_vec(),
        Alg::Rs512 => Rsa::rs512().sign(&rsa_key(), msg).as_bytes().to_vec(),
        Alg::Ps256 => Rsa::ps256().sign(&rsa_key(), msg).as_bytes().to_vec(),
        Alg::Ps384 => Rsa::ps384().sign(&rsa_key(), msg).as_bytes().to_vec(),
        Alg::Ps512 => Rsa::ps512().sign(&rsa_key(), msg).as_bytes().to_vec(),
        Alg::Es256 => {
            let key = <Es256 as Algorithm>::SigningKey::try_from(&jwk(EC)).unwrap();
            Es256.sign(&key, msg).as_bytes().to_vec()
        }
        Alg::Es384 => {
            use p384::ecdsa::signature::Signer as _;
            let key = match signer {
                Signer::Ec384Kidless => p384_kidless_key(),
                _ => p384_key(),
            };
            let sig: p384::ecdsa::Signature = key.sign(msg);
            sig.to_bytes().to_vec()
        }
        Alg::Es512 => {
            use p521::ecdsa::signature::Signer as _;
            let sig: p521::ecdsa::Signature = p521_key().sign(msg);
            sig.to_bytes().to_vec()
        }
        Alg::EdDsa => {
            let key = <Ed25519 as Algorithm>::SigningKey::try_from(&jwk(ED25519)).unwrap();
            Ed25519.sign(&key, msg).as_bytes().to_vec()
        }
        Alg::Hs256 => Hs256.sign(&Hs256Key::new(hmac()), msg).as_bytes().to_vec(),
        Alg::Hs384 => Hs384.sign(&Hs384Key::new(hmac()), msg).as_bytes().to_vec(),
        Alg::Hs512 => Hs512.sign(&Hs512Key::new(hmac()), msg).as_bytes().to_vec(),
    };
    sig
}

/// The conventional signer and `kid` for an algorithm in the test JWKS.
pub fn default_signer(alg: Alg) -> (Signer, Option<&'static str>) {
    match alg {
        Alg::Rs256 | Alg::Rs384 | Alg::Rs512 => (Signer::Rsa, Some("test-rsa")),
        Alg::Ps256 | Alg::Ps384 | Alg::Ps512 => (Signer::Rsa, Some("test-rsa-ps")),
        Alg::Es256 => (Signer::Ec, Some("test-ec")),
        Alg::Es384 => (Signer::Ec384, Some("test-ec384")),
        Alg::Es512 => (Signer::Ec521, Some("test-ec521")),
        Alg::EdDsa => (Signer::Ed25519, Some("test-ed25519")),
        Alg::Hs256 | Alg::Hs384 | Alg::Hs512 => (Signer::Hmac, Some("test-hmac")),
    }
}

/// A token for `alg` with its conventional key and `kid`, and these claims.
pub fn token(alg: Alg, claims: &serde_json::Value) -> String {
    let (signer, kid) = default_signer(alg);
    let header = match kid {
        Some(kid) => serde_json::json!({"alg": alg.name(), "kid": kid}),
        None => serde_json::json!({"alg": alg.name()}),
    };
    sign_raw(alg, signer, &header.to_string(), &claims.to_string())
}
