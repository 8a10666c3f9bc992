//! The crucial JWT oracle: **a forged token never verifies.** The input is a token (seeded with
//! tokens genuinely signed by the TEST-ONLY keys, see `fuzz/gen_seeds.py`); it goes through
//! `token::parse`, `KeySet::candidates`, `verify::verify_signature` against a fixed key set with
//! one key of every kind (RS256, PS256, ES256, ES384, ES512, EdDSA, and HS256 since inline sets
//! allow symmetric keys; the P-384/P-521 keys come from `jwt_auth::testkeys`), then `check_times` and `check_audience`. If the signature verifies, the signed part
//! (`header.payload`) must be byte-identical to one in `seeds/genuine_tokens.txt`: any other
//! accepted signing input is a forgery (alg confusion, malleated header, key-kind mix-up...).
#![no_main]

use jwt_auth::config::MAX_MAX_TOKEN_SIZE;
use jwt_auth::jwks::KeySet;
use jwt_auth::testkeys;
use jwt_auth::token::{parse, Alg};
use jwt_auth::verify::{check_audience, check_times, verify_signature, TimeRules};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::LazyLock;

const JWKS: &str = include_str!("../../plugins/jwt_auth/testdata/jwks.json");
const HMAC_SECRET: &str = include_str!("../../plugins/jwt_auth/testdata/hmac_secret.b64url");
const GENUINE: &str = include_str!("../seeds/genuine_tokens.txt");

static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    let mut doc: Value = serde_json::from_str(JWKS).unwrap();
    let keys = doc["keys"].as_array_mut().unwrap();
    keys.push(serde_json::json!({
        "kty": "oct", "kid": "test-hmac", "alg": "HS256", "use": "sig", "k": HMAC_SECRET.trim()
    }));
    keys.push(testkeys::ec_jwk(Alg::Es384));
    keys.push(testkeys::ec_jwk(Alg::Es512));
    let text = serde_json::to_vec(&doc).unwrap();
    let set = KeySet::parse(&text, true).unwrap();
    assert_eq!(
        set.keys.len(),
        7,
        "the fixed key set must hold one key of every kind"
    );
    set
});

/// The signing inputs the test keys really signed.
static SIGNED: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    GENUINE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once('.').unwrap().0)
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = parse(raw, MAX_MAX_TOKEN_SIZE) else {
        return;
    };
    let _ = KEYS.candidates(&token);
    if verify_signature(&token, &KEYS).is_ok() {
        assert!(
            SIGNED.contains(token.signing_input),
            "FORGERY: a token the test keys never signed verified: {raw}"
        );
    }
    for now in [0, 1_700_000_000, 4_102_444_800, u64::MAX] {
        for rules in [
            TimeRules {
                skew_secs: 0,
                require_expiration: true,
            },
            TimeRules {
                skew_secs: u64::MAX,
                require_expiration: false,
            },
        ] {
            let _ = check_times(&token.claims, now, rules);
        }
    }
    let _ = check_audience(&token.claims, &[]);
    let _ = check_audience(&token.claims, &["api".to_owned(), String::new()]);
});
