//! `circuit_breaker`: closed → open → half-open → closed, with Resilience4j's semantics
//! (failure-rate and slow-call-rate thresholds over a count- or time-based sliding window, a
//! bounded number of half-open probes), one state per breaker shared by every Envoy worker.
//!
//! - [`config`]: JSON config, parsed and validated (reference: `docs/circuit_breaker.md`).
//! - [`state`]: the pure, time-injected state machine of one breaker and its compact encoding.
//! - [`outcome`]: what a finished call counts as (success, failure, slow, ignored).
//! - [`policy`]: rules → breaker keys → slots in shared data (one CAS per admission or outcome).
//! - `filter` (Wasm only): reads the request and response, asks the policy, applies the decision.

pub mod config;
pub mod outcome;
pub mod policy;
pub mod state;

#[cfg(test)]
mod properties;

pub mod filter;

pub use filter::KIND;

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
palisade_host::export!(one: crate::KIND);
