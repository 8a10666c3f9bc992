//! Palisade's pure core.
//!
//! Everything a plugin decides is decided here, without touching the proxy: the host adapter
//! (`palisade-host`) feeds in the current time, a view of the request and a [`store::SharedStore`],
//! and applies the [`decision::Decision`] that comes back. Keeping the proxy out of this crate is
//! what lets every policy be unit-tested natively with a fake clock and a fake store that injects
//! CAS conflicts — the failure modes that matter most under real multi-worker load.

pub mod config;
pub mod decision;
pub mod fake_host;
pub mod fake_proxy;
pub mod hash;
pub mod json;
pub mod key;
pub mod matcher;
pub mod pairs;
pub mod plugin;
#[cfg(feature = "schema")]
pub mod schema;
pub mod slots;
pub mod store;
pub mod testing;
pub mod time;

pub use config::{ConfigError, ConfigErrorKind, FieldPath};
pub use decision::{Decision, LocalReply};
pub use store::{SharedStore, StoreError, Version};
pub use time::Timestamp;
