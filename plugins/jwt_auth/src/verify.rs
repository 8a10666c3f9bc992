//! Signature, time, issuer and audience checks for a parsed [`Token`].
//!
//! jwt-compact does the signature maths only (`Algorithm::verify_signature`); its `Token` and
//! `Claims` types are not used because they would parse the payload a second time and keep the
//! last of duplicate claims. Time is an input (`now_secs`), never read from a clock: the `clock`
//! feature of jwt-compact is off.

use crate::jwks::{Key, KeySet, Material};
use crate::rsa_pk::Hash;
use crate::token::{Alg, Token};
use crate::{Compat, Failure, Reason};
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key};
use jwt_compact::{Algorithm, AlgorithmSignature};
use serde_json::{Map, Value};

/// Verify the token's signature with the candidate keys of `keys` (see [`KeySet::candidates`]).
pub fn verify_signature(token: &Token<'_>, keys: &KeySet) -> Result<(), Failure> {
    verify_signature_with(token, keys, Compat::Strict)
}

/// [`verify_signature`] with the key selection of `compat` ([`KeySet::candidates_with`]).
pub fn verify_signature_with(
    token: &Token<'_>,
    keys: &KeySet,
    compat: Compat,
) -> Result<(), Failure> {
    let candidates = keys.candidates_with(token, compat)?;
    if candidates.iter().any(|key| {
        verify_with(
            token.alg,
            key,
            token.signing_input.as_bytes(),
            &token.signature,
        )
    }) {
        Ok(())
    } else {
        Err(Failure::new(
            Reason::BadSignature,
            "the token's signature does not verify",
        ))
    }
}

fn check<A: Algorithm>(alg: &A, key: &A::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    // jwt-compact's own `Token` path checks the length before `try_from_slice`, and some of its
    // signature types rely on that: Ed25519 (`copy_from_slice`) and HMAC (`clone_from_slice`)
    // *panic* on a signature of the wrong length. Found by the `jwt_verify` fuzz target.
    if A::Signature::LENGTH.is_some_and(|len| len.get() != sig.len()) {
        return false;
    }
    match A::Signature::try_from_slice(sig) {
        Ok(sig) => alg.verify_signature(&sig, key, msg),
        Err(_) => false,
    }
}

/// One key, one algorithm. The key's binding was checked by the caller; the `kind` match here is
/// the second line of defence (a mismatched pair is simply `false`).
fn verify_with(alg: Alg, key: &Key, msg: &[u8], sig: &[u8]) -> bool {
    match (&key.material, alg) {
        (Material::Rsa(k), Alg::Rs256) => k.verify_pkcs1v15(Hash::Sha256, msg, sig),
        (Material::Rsa(k), Alg::Rs384) => k.verify_pkcs1v15(Hash::Sha384, msg, sig),
        (Material::Rsa(k), Alg::Rs512) => k.verify_pkcs1v15(Hash::Sha512, msg, sig),
        (Material::Rsa(k), Alg::Ps256) => k.verify_pss(Hash::Sha256, msg, sig),
        (Material::Rsa(k), Alg::Ps384) => k.verify_pss(Hash::Sha384, msg, sig),
        (Material::Rsa(k), Alg::Ps512) => k.verify_pss(Hash::Sha512, msg, sig),
        (Material::EcP256(k), Alg::Es256) => check(&Es256, k, msg, sig),
        (Material::EcP384(k), Alg::Es384) => check_p384(k, msg, sig),
        (Material::EcP521(k), Alg::Es512) => check_p521(k, msg, sig),
        (Material::Ed25519(k), Alg::EdDsa) => check(&Ed25519, k, msg, sig),
        (Material::Hmac(s), Alg::Hs256) => check(&Hs256, &Hs256Key::new(s), msg, sig),
        (Material::Hmac(s), Alg::Hs384) => check(&Hs384, &Hs384Key::new(s), msg, sig),
        (Material::Hmac(s), Alg::Hs512) => check(&Hs512, &Hs512Key::new(s), msg, sig),
        _ => false,
    }
}

// ES384 / ES512 (RFC 7518 §3.4): the signature is the raw `r || s`, each exactly the curve's
// size (48 / 66 bytes); `from_slice` refuses any other length (so a DER signature never parses)
// and a zero or out-of-range `r` or `s`. The digest is SHA-384 / SHA-512 of the signing input.
fn check_p384(key: &p384::ecdsa::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    use p384::ecdsa::signature::Verifier as _;
    match p384::ecdsa::Signature::from_slice(sig) {
        Ok(sig) => key.verify(msg, &sig).is_ok(),
        Err(_) => false,
    }
}

fn check_p521(key: &p521::ecdsa::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    use p521::ecdsa::signature::Verifier as _;
    match p521::ecdsa::Signature::from_slice(sig) {
        Ok(sig) => key.verify(msg, &sig).is_ok(),
        Err(_) => false,
    }
}

/// The time rules of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRules {
    pub skew_secs: u64,
    pub require_expiration: bool,
}

fn number(claims: &Map<String, Value>, name: &str) -> Option<f64> {
    claims.get(name).and_then(Value::as_f64)
}

/// Check `exp` and `nbf` at `now_secs` (Unix seconds) with the allowed skew. Returns `exp`, which
/// bounds how long the verification may be cached. (`parse` already refused non-numbers.)
pub fn check_times(
    claims: &Map<String, Value>,
    now_secs: u64,
    rules: TimeRules,
) -> Result<Option<f64>, Failure> {
    let now = now_secs as f64;
    let skew = rules.skew_secs as f64;
    let exp = number(claims, "exp");
    match exp {
        None if rules.require_expiration => {
            return Err(Failure::malformed("the token has no exp claim"))
        }
        Some(exp) if now >= exp + skew => {
            return Err(Failure::new(Reason::Expired, "the token has expired"))
        }
        _ => {}
    }
    if let Some(nbf) = number(claims, "nbf") {
        if now + skew < nbf {
            return Err(Failure::new(
                Reason::NotYetValid,
                "the token is not valid yet",
            ));
        }
    }
    Ok(exp)
}

/// The token's `iss` (unverified until the signature is checked), if it is a string.
pub fn issuer(claims: &Map<String, Value>) -> Option<&str> {
    claims.get("iss").and_then(Value::as_str)
}

/// `aud` (a string or an array of strings) must contain one of `audiences`; an empty list of
/// audiences accepts any token.
pub fn check_audience(claims: &Map<String, Value>, audiences: &[String]) -> Result<(), Failure> {
    if audiences.is_empty() {
        return Ok(());
    }
    let allowed = |a: &Value| a.as_str().is_some_and(|a| audiences.iter().any(|x| x == a));
    let ok = match claims.get("aud") {
        Some(Value::Array(list)) => list.iter().any(allowed),
        Some(v) => allowed(v),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Failure::new(
            Reason::Audience,
            "the token's audience is not allowed",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys::{self, sign_raw, Signer};
    use crate::token::{parse, KeyKind};
    use serde_json::json;

    fn keys() -> KeySet {
        let mut doc: Value = serde_json::from_str(testkeys::JWKS).unwrap();
        let entries = doc["keys"].as_array_mut().unwrap();
        entries.push(testkeys::hmac_jwk());
        entries.push(testkeys::ec_jwk(Alg::Es384));
        entries.push(testkeys::ec_jwk(Alg::Es512));
        // An HMAC key long enough for every HS variant: the secret, repeated.
        let secret = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            testkeys::hmac_secret_b64(),
        )
        .unwrap();
        assert_eq!(secret.len(), 32);
        KeySet::from_entries(entries, true).unwrap()
    }

    fn verify(raw: &str, keys: &KeySet) -> Result<(), Failure> {
        verify_signature(&parse(raw, 16384)?, keys)
    }

    /// Why `keys` refuse `raw` (the test fails if it verifies).
    fn refusal(raw: &str, keys: &KeySet) -> Reason {
        verify(raw, keys).unwrap_err().reason
    }

    /// A token of `header` (JSON text exactly as written) over the empty payload `{}`.
    fn sign_header(alg: Alg, signer: Signer, header: &str) -> String {
        sign_raw(alg, signer, header, "{}")
    }

    #[test]
    fn a_good_token_of_each_algorithm_verifies() {
        // RSA keys without `alg` (bound to every RSA algorithm) for RS384/512 and PS384/512.
        let mut doc: Value = serde_json::from_str(testkeys::JWKS).unwrap();
        let mut rsa_any = doc["keys"][0].as_object().unwrap().clone();
        rsa_any.remove("alg");
        rsa_any.insert("kid".into(), json!("rsa-any"));
        let entries = doc["keys"].as_array_mut().unwrap();
        entries.push(Value::Object(rsa_any));
        // HS384/HS512 need 48/64-byte secrets.
        let long =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [7u8; 64]);
        entries.push(json!({"kty": "oct", "kid": "hmac-64", "k": long}));
        entries.push(testkeys::hmac_jwk());
        entries.push(testkeys::ec_jwk(Alg::Es384));
        entries.push(testkeys::ec_jwk(Alg::Es512));
        let set = KeySet::from_entries(entries, true).unwrap();

        let claims = json!({"iss": "i", "exp": 2_000_000_000u64});
        for alg in [
            Alg::Rs256,
            Alg::Ps256,
            Alg::Es256,
            Alg::Es384,
            Alg::Es512,
            Alg::EdDsa,
            Alg::Hs256,
        ] {
            let raw = testkeys::token(alg, &claims);
            assert_eq!(verify(&raw, &set), Ok(()), "{alg:?}");
        }
        for alg in [Alg::Rs384, Alg::Rs512, Alg::Ps384, Alg::Ps512] {
            let header = json!({"alg": alg.name(), "kid": "rsa-any"}).to_string();
            let raw = sign_raw(alg, Signer::Rsa, &header, &claims.to_string());
            assert_eq!(verify(&raw, &set), Ok(()), "{alg:?}");
        }
        // HS384/512 signed with the 64-byte secret: build by hand.
        for alg in [Alg::Hs384, Alg::Hs512] {
            use jwt_compact::alg::{Hs384, Hs384Key, Hs512, Hs512Key};
            let header = json!({"alg": alg.name(), "kid": "hmac-64"}).to_string();
            let b = |s: &str| {
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s)
            };
            let input = format!("{}.{}", b(&header), b(&claims.to_string()));
            let sig = if alg == Alg::Hs384 {
                Hs384
                    .sign(&Hs384Key::new([7u8; 64]), input.as_bytes())
                    .as_bytes()
                    .to_vec()
            } else {
                Hs512
                    .sign(&Hs512Key::new([7u8; 64]), input.as_bytes())
                    .as_bytes()
                    .to_vec()
            };
            let raw = format!(
                "{input}.{}",
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
            );
            assert_eq!(verify(&raw, &set), Ok(()), "{alg:?}");
        }
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let raw = testkeys::token(Alg::Rs256, &json!({"sub": "alice"}));
        let mut parts: Vec<String> = raw.split('.').map(str::to_owned).collect();
        parts[1] = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            r#"{"sub":"admin"}"#,
        );
        let f = verify(&parts.join("."), &keys()).unwrap_err();
        assert_eq!(f.reason, Reason::BadSignature);
    }

    #[test]
    fn a_token_signed_by_another_key_with_a_known_kid_fails() {
        let header = r#"{"alg":"RS256","kid":"test-rsa"}"#;
        let raw = sign_header(Alg::Rs256, Signer::Rsa2, header);
        assert_eq!(refusal(&raw, &keys()), Reason::BadSignature);
    }

    #[test]
    fn an_unknown_kid_is_rejected_without_trying_other_keys() {
        // Correctly signed by test-rsa, but naming a kid that is not in the set.
        let header = r#"{"alg":"RS256","kid":"../../etc/passwd"}"#;
        let raw = sign_header(Alg::Rs256, Signer::Rsa, header);
        assert_eq!(refusal(&raw, &keys()), Reason::UnknownKid);
    }

    #[test]
    fn without_a_kid_every_key_bound_to_the_algorithm_is_tried() {
        let raw = sign_header(Alg::Es256, Signer::Ec, r#"{"alg":"ES256"}"#);
        assert_eq!(verify(&raw, &keys()), Ok(()));
    }

    #[test]
    fn rs256_to_hs256_confusion_with_the_public_key_as_secret_is_rejected() {
        // The attacker HMACs with the RSA public key's JWK text as the secret and names the RSA kid.
        use jwt_compact::alg::{Hs256, Hs256Key};
        let doc: Value = serde_json::from_str(testkeys::JWKS).unwrap();
        let public = doc["keys"][0].to_string();
        let b =
            |s: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
        let input = format!("{}.{}", b(br#"{"alg":"HS256","kid":"test-rsa"}"#), b(b"{}"));
        let sig = Hs256.sign(&Hs256Key::new(public.as_bytes()), input.as_bytes());
        let raw = format!("{input}.{}", b(&sig.as_bytes()));
        let f = verify(&raw, &keys()).unwrap_err();
        assert_eq!(f.reason, Reason::BadSignature);
        assert!(f.description.contains("not allowed for its key"));
    }

    #[test]
    fn a_ps256_token_against_an_rs256_jwk_is_rejected() {
        // Same modulus, signed correctly with PSS, but the kid names the key marked RS256.
        let header = r#"{"alg":"PS256","kid":"test-rsa"}"#;
        let raw = sign_header(Alg::Ps256, Signer::Rsa, header);
        assert_eq!(refusal(&raw, &keys()), Reason::BadSignature);
        // And the same token under the PS256-bound kid verifies.
        let header = r#"{"alg":"PS256","kid":"test-rsa-ps"}"#;
        let raw = sign_header(Alg::Ps256, Signer::Rsa, header);
        assert_eq!(verify(&raw, &keys()), Ok(()));
    }

    #[test]
    fn signatures_of_the_wrong_length_do_not_verify() {
        let raw = testkeys::token(Alg::Es256, &json!({}));
        let (input, _) = raw.rsplit_once('.').unwrap();
        let forged = format!("{input}.AAAA");
        assert_eq!(refusal(&forged, &keys()), Reason::BadSignature);
    }

    /// Regression (fuzz target `jwt_verify`): a 65-byte EdDSA signature panicked inside
    /// jwt-compact, aborting the worker's VM. This is the fuzzer's input, verbatim.
    #[test]
    fn an_eddsa_signature_of_the_wrong_length_is_rejected_without_panicking() {
        let raw = "eyJhbGciOiJFZERTQSIsImtpZCI6InRlc3QtZWQyNTUxOSIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2lzc3Vlci50ZXN0IiwiYXVkIjoiYXBpIiwic3ViIjoiYWxpY2UiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMCwibmJmIjoxNzAwMDAwMDAwfQ.Oi8wFwte2Czr3WuK0iIODzuUbGnJnz9v303dx18v75q8iFzKsCvyxur14-1g_DKK82mhMVWANr1QCtsAAdJMuAg";
        assert_eq!(refusal(raw, &keys()), Reason::BadSignature);
        wrong_length_signatures_are_bad_signatures(Alg::EdDsa, &[1, 63, 65, 128]);
    }

    /// Regression (same cause as above): HMAC signatures of the wrong length panicked in
    /// jwt-compact (`GenericArray::clone_from_slice`).
    #[test]
    fn an_hmac_signature_of_the_wrong_length_is_rejected_without_panicking() {
        wrong_length_signatures_are_bad_signatures(Alg::Hs256, &[1, 31, 33, 64]);
    }

    /// The wrong-length class for every RSA algorithm, through the token path: a genuine token's
    /// signature with a zero byte in front, or one byte short, and other sizes, never verifies
    /// (rsa_pk's tests do the same on keys of 2048 to 4096 bits against the `rsa` crate).
    #[test]
    fn rsa_signatures_of_the_wrong_length_are_bad_signatures_for_every_algorithm() {
        let doc: Value = serde_json::from_str(testkeys::JWKS).unwrap();
        let mut rsa_any = doc["keys"][0].as_object().unwrap().clone();
        rsa_any.remove("alg");
        rsa_any.insert("kid".into(), json!("rsa-any"));
        let set = KeySet::from_entries(&[Value::Object(rsa_any)], false).unwrap();
        let b64 =
            |s: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
        let rsa: Vec<Alg> = Alg::ALL
            .into_iter()
            .filter(|a| a.key_kind() == KeyKind::Rsa)
            .collect();
        assert_eq!(rsa.len(), 6, "RS256/384/512 and PS256/384/512: {rsa:?}");
        for alg in rsa {
            let header = json!({"alg": alg.name(), "kid": "rsa-any"}).to_string();
            let good = sign_header(alg, Signer::Rsa, &header);
            assert_eq!(verify(&good, &set), Ok(()), "{alg:?}");
            let (input, sig) = good.rsplit_once('.').unwrap();
            let sig =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
                    .unwrap();
            assert_eq!(sig.len(), 256);
            let mut zero_led = vec![0u8];
            zero_led.extend_from_slice(&sig);
            for bad in [
                &zero_led[..],
                &sig[1..],
                &sig[..255],
                &[7u8; 128][..],
                &[7u8; 512][..],
                &[0u8][..],
            ] {
                let forged = format!("{input}.{}", b64(bad));
                assert_eq!(
                    refusal(&forged, &set),
                    Reason::BadSignature,
                    "{alg:?}, {} bytes",
                    bad.len()
                );
            }
        }
    }

    #[test]
    fn es384_and_es512_signatures_of_the_wrong_length_are_bad_signatures() {
        // 96 / 132 bytes are right; one byte either way, the other curves' sizes, and empty-ish.
        wrong_length_signatures_are_bad_signatures(Alg::Es384, &[1, 64, 95, 97, 132]);
        wrong_length_signatures_are_bad_signatures(Alg::Es512, &[1, 64, 96, 131, 133]);
    }

    #[test]
    fn a_der_encoded_ecdsa_signature_is_refused_for_every_curve() {
        for alg in [Alg::Es256, Alg::Es384, Alg::Es512] {
            let good = testkeys::token(alg, &json!({}));
            assert_eq!(verify(&good, &keys()), Ok(()), "{alg:?}");
            let (input, sig) = good.rsplit_once('.').unwrap();
            let raw =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
                    .unwrap();
            let der = base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                testkeys::der_from_raw(&raw),
            );
            assert_eq!(
                refusal(&format!("{input}.{der}"), &keys()),
                Reason::BadSignature,
                "{alg:?}"
            );
        }
    }

    #[test]
    fn curve_confusion_between_ec_keys_is_rejected() {
        // Each EC algorithm signed correctly by its own key, but naming another curve's key.
        let kids = [
            (Alg::Es256, "test-ec"),
            (Alg::Es384, "test-ec384"),
            (Alg::Es512, "test-ec521"),
        ];
        for (alg, _) in kids {
            let (signer, _) = testkeys::default_signer(alg);
            for (other, kid) in kids.iter().filter(|(a, _)| *a != alg) {
                let header = json!({"alg": alg.name(), "kid": kid}).to_string();
                let raw = sign_header(alg, signer, &header);
                let f = verify(&raw, &keys()).unwrap_err();
                assert_eq!(f.reason, Reason::BadSignature, "{alg:?} on {other:?}'s key");
                assert!(f.description.contains("not allowed for its key"));
            }
            // Without a kid, only keys of the token's curve are tried: the signature verifies.
            let header = json!({"alg": alg.name()}).to_string();
            assert_eq!(verify(&sign_header(alg, signer, &header), &keys()), Ok(()));
        }
        // An ES512-sized signature under an ES384 header (and the reverse): wrong length.
        let es512 = testkeys::token(Alg::Es512, &json!({}));
        let (_, sig512) = es512.rsplit_once('.').unwrap();
        let es384 = testkeys::token(Alg::Es384, &json!({}));
        let (input384, sig384) = es384.rsplit_once('.').unwrap();
        let bad = refusal(&format!("{input384}.{sig512}"), &keys());
        assert_eq!(bad, Reason::BadSignature, "an ES512 signature under ES384");
        let (input512, _) = es512.rsplit_once('.').unwrap();
        let bad = refusal(&format!("{input512}.{sig384}"), &keys());
        assert_eq!(bad, Reason::BadSignature, "an ES384 signature under ES512");
    }

    /// A genuine `alg` token's signing input with signatures of each of `lengths` bytes: every
    /// one is a bad signature (and none panics), while the genuine token verifies.
    fn wrong_length_signatures_are_bad_signatures(alg: Alg, lengths: &[usize]) {
        let good = testkeys::token(alg, &json!({}));
        assert_eq!(verify(&good, &keys()), Ok(()));
        let (input, _) = good.rsplit_once('.').unwrap();
        for &len in lengths {
            let sig = base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                vec![7u8; len],
            );
            let forged = format!("{input}.{sig}");
            assert_eq!(
                refusal(&forged, &keys()),
                Reason::BadSignature,
                "{alg:?}, {len} bytes"
            );
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    const RULES: TimeRules = TimeRules {
        skew_secs: 60,
        require_expiration: true,
    };

    #[test]
    fn expiry_is_enforced_with_the_skew() {
        let c = claims(json!({"exp": 1000}));
        assert_eq!(check_times(&c, 900, RULES), Ok(Some(1000.0)));
        assert_eq!(check_times(&c, 1059, RULES), Ok(Some(1000.0)));
        assert_eq!(
            check_times(&c, 1060, RULES).unwrap_err().reason,
            Reason::Expired
        );
    }

    #[test]
    fn not_before_is_enforced_with_the_skew() {
        let c = claims(json!({"exp": 5000, "nbf": 1000}));
        assert_eq!(
            check_times(&c, 939, RULES).unwrap_err().reason,
            Reason::NotYetValid
        );
        assert!(check_times(&c, 940, RULES).is_ok());
    }

    #[test]
    fn a_missing_exp_is_rejected_only_when_required() {
        let c = claims(json!({"sub": "a"}));
        assert_eq!(
            check_times(&c, 1, RULES).unwrap_err().reason,
            Reason::Malformed
        );
        let lax = TimeRules {
            require_expiration: false,
            ..RULES
        };
        assert_eq!(check_times(&c, 1, lax), Ok(None));
    }

    #[test]
    fn audiences_match_strings_and_arrays() {
        let allowed = vec!["api".to_owned(), "web".to_owned()];
        assert!(check_audience(&claims(json!({"aud": "web"})), &allowed).is_ok());
        assert!(check_audience(&claims(json!({"aud": ["x", "api"]})), &allowed).is_ok());
        for bad in [
            json!({"aud": "x"}),
            json!({"aud": ["x"]}),
            json!({}),
            json!({"aud": 1}),
        ] {
            assert_eq!(
                check_audience(&claims(bad), &allowed).unwrap_err().reason,
                Reason::Audience
            );
        }
        assert!(check_audience(&claims(json!({})), &[]).is_ok());
    }
}
