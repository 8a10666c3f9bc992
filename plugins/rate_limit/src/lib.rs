//! `rate_limit`: token buckets keyed by client, header, path or anything a request carries, exact
//! across Envoy's worker threads.
//!
//! - [`bucket`]: the token-bucket maths (GCRA, exact integers, several limits at once).
//! - [`config`]: JSON config, parsed and validated (reference: `docs/rate_limit.md`).
//! - [`policy`]: rules → keys → buckets in shared data → decision.
//! - `filter` (Wasm only): reads the request, asks the policy, applies the decision.

pub mod bucket;
pub mod config;
pub mod policy;

#[cfg(target_arch = "wasm32")]
mod filter;
