//! The host adapter: the only Palisade code that makes proxy-wasm hostcalls.
//!
//! Plugins decide in `palisade-core` and their own pure policy modules; this crate reads their
//! inputs from the proxy and applies their decisions. Each hostcall's `Status` becomes a
//! [`HostError`] naming the operation, so no plugin ever `unwrap`s a host result: a panic in the
//! VM kills the worker's VM and fails its traffic.
//!
//! The SDK's convenience methods on `Context` unwrap host results internally; we call
//! `proxy_wasm::hostcalls` directly instead.
//!
//! This crate compiles to nothing on native targets (see `Cargo.toml`), which keeps proxy-wasm's
//! unresolved imports out of native test binaries.
#![cfg(target_arch = "wasm32")]

pub mod body;
pub mod dispatch;
pub mod error;
pub mod flow;
pub mod header_map;
pub mod http;
pub mod metrics;
pub mod request;
pub mod store;

pub use error::HostError;
pub use proxy_wasm;

use palisade_core::Timestamp;
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use std::time::UNIX_EPOCH;

/// The proxy's current wall-clock time. On failure (never seen in practice) the epoch is returned,
/// which every policy treats as "no time has passed".
pub fn now() -> Timestamp {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| Timestamp::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
        .unwrap_or(Timestamp::ZERO)
}

/// Install the SDK logger at `level` and a panic hook that logs the panic at critical level with
/// the plugin's name, then lets the abort happen. Call first thing in `proxy_wasm::main!`.
///
/// Our hook replaces the SDK's, which `unwrap`s the log hostcall.
pub fn init(plugin: &'static str, level: LogLevel) {
    proxy_wasm::set_log_level(level);
    std::panic::set_hook(Box::new(move |info| {
        let _ = hostcalls::log(
            LogLevel::Critical,
            &format!("palisade {plugin}: panic (the worker's Wasm VM will abort): {info}"),
        );
    }));
}

/// Read the plugin configuration and parse it with `parse` (a plugin's two-step wire → domain
/// validation). On failure the reason — naming the field and value, never the whole config — is
/// logged at error level and `None` is returned: `on_configure` then returns false, so Envoy
/// rejects the configuration (refuses to start, or NACKs it over xDS).
pub fn load_config<T>(
    plugin: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, palisade_core::ConfigError>,
) -> Option<T> {
    let bytes = match plugin_configuration() {
        Ok(b) => b,
        Err(e) => {
            log::error!("palisade {plugin}: cannot read configuration: {e}");
            return None;
        }
    };
    match parse(&bytes) {
        Ok(config) => Some(config),
        Err(e) => {
            log::error!("palisade {plugin}: rejected configuration: {e}");
            None
        }
    }
}

/// The plugin configuration bytes, or an empty vector when none was given.
pub fn plugin_configuration() -> Result<Vec<u8>, HostError> {
    let buf = hostcalls::get_buffer(
        proxy_wasm::types::BufferType::PluginConfiguration,
        0,
        usize::MAX,
    )
    .map_err(|s| HostError::new("get_buffer(plugin_configuration)", s))?;
    Ok(buf.unwrap_or_default())
}
