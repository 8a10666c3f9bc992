//! `transform`: request and response transformation — headers, query, path, method and JSON
//! bodies — with templates, for Envoy.
//!
//! - [`config`]: JSON config, parsed and validated; every template, regex and JSON pointer is
//!   compiled here (reference: `docs/transform.md`).
//! - [`template`]: `$(headers.x)`-style value templates.
//! - [`ops`]: the edit primitives (header list, query string, JSON pointer edits).
//! - [`engine`]: rules → edits, pure; documents rule order and the order of operations.
//! - `filter` (Wasm only): reads the parts of the stream, asks the engine, applies the edits.

pub mod config;
pub mod engine;
pub mod ops;
pub mod template;

pub mod filter;

pub use filter::KIND;

#[cfg(all(target_arch = "wasm32", feature = "standalone"))]
palisade_host::export!(one: crate::KIND);
