//! `palisade`: the whole policy chain in one module, one VM per worker, one pass per request.
//!
//! ```json
//! {"chain": [{"jwt_auth": {...}}, {"rate_limit": {...}}, {"circuit_breaker": {...}},
//!            {"bulkhead": {...}}, {"transform": {...}}]}
//! ```
//!
//! Each entry is the config its standalone module takes, validated by that policy's own parser
//! (errors name the full path: `chain[1].rate_limit.rules[0].limits[0].capacity`). Policies run in
//! the listed order on requests, in reverse on responses, as separate filters would; headers and
//! properties are read from the proxy once per request for all of them; the claims jwt_auth
//! verifies are readable by the policies after it (`{"claim": "sub"}` key parts, `$(claims.sub)`
//! templates). See `docs/architecture.md`.

use palisade_core::plugin::Kind;

/// Every policy Palisade ships, by its chain key. Adding a plugin means adding it here (the
/// inventory test then checks the build, docs, fuzz and bench lists name it too).
pub const KINDS: [Kind; 5] = [
    jwt_auth::KIND,
    rate_limit::KIND,
    circuit_breaker::KIND,
    bulkhead::KIND,
    transform::KIND,
];

#[cfg(target_arch = "wasm32")]
palisade_host::export!(chain: &crate::KINDS);
