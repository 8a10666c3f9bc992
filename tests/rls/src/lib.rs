//! Envoy's rate limit service protocol (RLS v3, `envoy.service.ratelimit.v3.RateLimitService`)
//! for Palisade's tests: the messages ([`proto`]) and a tonic client ([`client`]), which the
//! harness uses without limitador; with the `engine` feature also the server side ([`server`])
//! and the engine the `palisade-rls` binary runs ([`engine`]: limitador over Redis).
//!
//! Test-only. Production deployments run the official Limitador server or envoyproxy/ratelimit.

pub mod proto;

/// The generated RLS v3 client (`RateLimitServiceClient`).
pub mod client {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    include!(concat!(
        env!("OUT_DIR"),
        "/client/envoy.service.ratelimit.v3.RateLimitService.rs"
    ));
}

/// The generated RLS v3 server (`RateLimitService` trait, `RateLimitServiceServer`).
#[cfg(feature = "engine")]
pub mod server {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    include!(concat!(
        env!("OUT_DIR"),
        "/server/envoy.service.ratelimit.v3.RateLimitService.rs"
    ));
}

#[cfg(feature = "engine")]
pub mod engine;

/// The full gRPC method path Envoy calls.
pub const SHOULD_RATE_LIMIT_PATH: &str =
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// The tonic the generated code uses (its `Status`, `Code` and `transport`), for the clients.
pub use tonic;
