//! TEST-ONLY keys (committed under `testdata/`, see `testdata/README.md`) and a token signer.
//!
//! Tokens are built by hand — header and payload JSON as written, then signed with jwt-compact —
//! so tests can make both good tokens (with `exp`/`nbf` relative to the fake clock) and every kind
//! of malformed one.

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
}

fn jwk(text: &str) -> JsonWebKey<'static> {
    serde_json::from_str(text).unwrap()
}

/// Sign `header.payload` (both given as JSON text) with `signer` using `alg`.
pub fn sign_raw(alg: Alg, signer: Signer, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let msg = input.as_bytes();
    let rsa_key = || match signer {
        Signer::Rsa2 => jwt_compact::alg::RsaPrivateKey::try_from(&jwk(RSA2)).unwrap(),
        _ => jwt_compact::alg::RsaPrivateKey::try_from(&jwk(RSA)).unwrap(),
    };
    let hmac = || URL_SAFE_NO_PAD.decode(hmac_secret_b64()).unwrap();
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
        Alg::EdDsa => {
            let key = <Ed25519 as Algorithm>::SigningKey::try_from(&jwk(ED25519)).unwrap();
            Ed25519.sign(&key, msg).as_bytes().to_vec()
        }
        Alg::Hs256 => Hs256.sign(&Hs256Key::new(hmac()), msg).as_bytes().to_vec(),
        Alg::Hs384 => Hs384.sign(&Hs384Key::new(hmac()), msg).as_bytes().to_vec(),
        Alg::Hs512 => Hs512.sign(&Hs512Key::new(hmac()), msg).as_bytes().to_vec(),
    };
    format!("{input}.{}", b64(&sig))
}

/// The conventional signer and `kid` for an algorithm in the test JWKS.
pub fn default_signer(alg: Alg) -> (Signer, Option<&'static str>) {
    match alg {
        Alg::Rs256 | Alg::Rs384 | Alg::Rs512 => (Signer::Rsa, Some("test-rsa")),
        Alg::Ps256 | Alg::Ps384 | Alg::Ps512 => (Signer::Rsa, Some("test-rsa-ps")),
        Alg::Es256 => (Signer::Ec, Some("test-ec")),
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
