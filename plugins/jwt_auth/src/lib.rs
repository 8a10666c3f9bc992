//! `jwt_auth`: JWT verification at the edge, with keys from an inline JWKS or a remote JWKS fetched
//! once for all Envoy workers; stricter than Envoy's `jwt_authn` about what a token may contain.
//!
//! Pure modules, each unit-tested natively with a fake clock and store:
//! - [`token`]: take a compact JWS apart; every check that needs no key;
//! - [`jwks`]: JWKS parsing into keys bound to their `kty` and `alg`; key selection by `kid`;
//! - [`verify`]: signature (through jwt-compact), time, issuer and audience checks;
//! - [`claims`]: claim requirements and claim-to-header outputs;
//! - [`config`]: JSON config, parsed and validated (reference: `docs/jwt_auth.md`);
//! - [`cache`]: the per-worker verified-token cache;
//! - [`remote`]: the remote-JWKS fetch/publish state machine over shared data;
//! - [`policy`]: rules → token → provider → verdict, header mutations included.
//!
//! [`filter`] is the policy in the plugin skeleton ([`KIND`]): it reads the request, asks the
//! policy, applies its verdict, and runs the worker's remote-JWKS cycle.

pub mod cache;
pub mod claims;
pub mod config;
pub mod jwks;
pub mod policy;
pub mod remote;
pub mod rsa_pk;
pub mod token;
pub mod verify;

#[cfg(any(test, feature = "test-support"))]
pub mod testkeys;

pub mod filter;

pub use filter::KIND;

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
palisade_host::export!(one: crate::KIND);

/// How closely a provider follows Envoy's `jwt_authn` (google/jwt_verify_lib) where Palisade is
/// stricter by default (the provider option `compat`; docs/security.md lists every difference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compat {
    /// Palisade's own rules.
    #[default]
    Strict,
    /// `compat: "jwt_authn"`: a JWKS key without `kid` also matches a token that names a `kid`,
    /// and a signature segment with canonical `=` padding is accepted.
    JwtAuthn,
}

/// Why a request was denied; each is a metric (`denied.<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Missing,
    Malformed,
    Expired,
    NotYetValid,
    BadSignature,
    UnknownKid,
    Issuer,
    Audience,
    Claims,
    /// The provider's key set is not available yet (remote JWKS never fetched).
    NoKeys,
    /// No rule matched and unmatched requests are denied.
    NoRule,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::Missing,
        Reason::Malformed,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::BadSignature,
        Reason::UnknownKid,
        Reason::Issuer,
        Reason::Audience,
        Reason::Claims,
        Reason::NoKeys,
        Reason::NoRule,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::BadSignature => "bad_signature",
            Reason::UnknownKid => "unknown_kid",
            Reason::Issuer => "issuer",
            Reason::Audience => "audience",
            Reason::Claims => "claims",
            Reason::NoKeys => "no_keys",
            Reason::NoRule => "no_rule",
        }
    }
}

/// A denial: the reason (metric) and a fixed description for `error_description`.
///
/// Descriptions are static strings on purpose: nothing from the token (which may be a valid
/// credential for another service) ever reaches a reply or a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub description: &'static str,
}

impl Failure {
    pub fn new(reason: Reason, description: &'static str) -> Self {
        Failure {
            reason,
            description,
        }
    }

    pub fn malformed(description: &'static str) -> Self {
        Failure::new(Reason::Malformed, description)
    }
}
