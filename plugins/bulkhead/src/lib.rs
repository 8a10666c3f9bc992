//! `bulkhead`: per-partition concurrency limits (Resilience4j's semaphore bulkhead, for Envoy),
//! exact across Envoy's worker threads, leak-free, with an optional bounded wait.
//!
//! - [`config`]: JSON config, parsed and validated (reference: `docs/bulkhead.md`).
//! - [`permits`]: the shared-data layout — worker slots with heartbeats, and per-partition
//!   in-flight counts kept per worker slot so a dead worker's permits stop counting.
//! - [`policy`]: rules → partitions; the per-worker state machine that takes, hands over and
//!   releases permits exactly once, and runs the wait queues.
//! - `filter` (Wasm only): reads the request, asks the policy, applies its decisions.

pub mod config;
pub mod permits;
pub mod policy;

#[cfg(test)]
mod properties;

pub mod filter;

pub use filter::KIND;

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
palisade_host::export!(one: crate::KIND);
