//! `jwt_auth::token::parse` on arbitrary text: the key-independent checks every request's
//! `Authorization` header goes through. Invariants: no panic; a parsed token really is three
//! non-empty canonical segments whose first two are the signing input; `alg` is never `none`.
#![no_main]

use jwt_auth::config::MAX_MAX_TOKEN_SIZE;
use jwt_auth::token::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = parse(raw, MAX_MAX_TOKEN_SIZE) else {
        return;
    };
    assert!(raw.len() <= MAX_MAX_TOKEN_SIZE);
    let parts: Vec<&str> = raw.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted a token without three segments");
    assert!(
        parts.iter().all(|p| !p.is_empty()),
        "accepted an empty segment"
    );
    assert_eq!(token.signing_input, format!("{}.{}", parts[0], parts[1]));
    assert_eq!(token.payload_b64, parts[1]);
    assert!(!token.signature.is_empty());
    assert!(!token.alg.name().eq_ignore_ascii_case("none"));
    // The size limit is checked first, whatever the content.
    assert!(parse(raw, raw.len().saturating_sub(1)).is_err() || raw.is_empty());
});
