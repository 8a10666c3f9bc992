//! `rate_limit`: token buckets keyed by client, header, path or anything a request carries, exact
//! across Envoy's worker threads.
//!
//! - [`bucket`]: the token-bucket maths (GCRA, exact integers, several limits at once).
//! - [`config`]: JSON config, parsed and validated (reference: `docs/rate_limit.md`).
//! - [`policy`]: rules → keys → buckets in shared data → decision.
//! - [`global`]: a rule's `global` section: Envoy's RLS v3 protocol to a rate limit service shared
//!   by every Envoy, with the local buckets as fallback.
//! - [`shape`]: `shape` mode, requests over the rate wait for their slot (a leaky bucket).
//! - [`filter`]: the policy in the plugin skeleton ([`filter::KIND`]); with the `standalone`
//!   feature (default) the crate is also the `rate_limit.wasm` module.

pub mod bucket;
pub mod config;
pub mod filter;
pub mod global;
pub mod policy;
pub mod shape;

pub use filter::KIND;

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
palisade_host::export!(one: crate::KIND);
