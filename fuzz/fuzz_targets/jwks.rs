//! `jwt_auth::jwks::KeySet::parse` on arbitrary bytes: a remote JWKS is network input. Invariants:
//! no panic; an accepted set has 1..=MAX_KEYS keys, each bound to at least one algorithm of its own
//! key kind; symmetric keys appear only when allowed; parsing is deterministic.
#![no_main]

use jwt_auth::jwks::{KeySet, MAX_KEYS};
use jwt_auth::token::KeyKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for allow_symmetric in [false, true] {
        match KeySet::parse(data, allow_symmetric) {
            Ok(set) => {
                assert!(!set.keys.is_empty() && set.keys.len() <= MAX_KEYS);
                for key in &set.keys {
                    assert!(!key.algs.is_empty(), "a key bound to no algorithm");
                    let kind = key.material.kind();
                    assert!(
                        key.algs.iter().all(|a| a.key_kind() == kind),
                        "key bound across kinds"
                    );
                    assert!(
                        allow_symmetric || kind != KeyKind::Hmac,
                        "symmetric key from a remote set"
                    );
                }
                let again = KeySet::parse(data, allow_symmetric).unwrap();
                assert_eq!(format!("{set:?}"), format!("{again:?}"));
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
