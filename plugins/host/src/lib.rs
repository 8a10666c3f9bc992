//! The host adapter: the only Palisade code that makes proxy-wasm hostcalls.
//!
//! Plugins decide in `palisade-core` and their own pure policy modules, and run in core's plugin
//! skeleton (`palisade_core::plugin`), written against a `Host` trait. This crate is that trait's
//! one real implementation ([`skeleton::ProxyHost`]), the SDK's contexts forwarded to the
//! skeleton ([`skeleton::Root`], [`skeleton::Stream`]) and the [`export!`] macro that makes a
//! module's entry point. Each hostcall's status becomes a [`HostError`] naming the operation, so
//! no plugin ever `unwrap`s a host result: a panic in the VM kills the worker's VM and fails its
//! traffic.
//!
//! The SDK's `hostcalls` functions panic on statuses they do not expect, and its convenience
//! methods on `Context` unwrap; we declare the ABI imports ourselves in `abi` (raw status codes,
//! safe wrappers, the only hand-written `unsafe` in Palisade) and build everything here on
//! those. The SDK is kept for the context traits, `main!` and the exported `proxy_on_*`
//! callbacks, and for `dispatch_http_call` (see [`skeleton::ProxyHost`]'s `http_call`).
//!
//! This crate compiles to nothing on native targets (see `Cargo.toml`), which keeps proxy-wasm's
//! unresolved imports out of native test binaries.
#![cfg(target_arch = "wasm32")]

#[allow(unsafe_code)] // The ABI imports: the one audited module allowed to use `unsafe`.
mod abi;
pub mod error;
pub mod skeleton;

pub use error::HostError;
pub use palisade_core;
pub use proxy_wasm;

use palisade_core::Timestamp;
use proxy_wasm::types::LogLevel;

/// The proxy's current wall-clock time. On failure (never seen in practice) the epoch is returned,
/// which every policy treats as "no time has passed".
pub fn now() -> Timestamp {
    abi::current_time_nanos()
        .map(Timestamp::from_nanos)
        .unwrap_or(Timestamp::ZERO)
}

/// Install our logger at `level` and a panic hook that logs the panic at critical level with the
/// plugin's name, then lets the abort happen. Call first thing in `proxy_wasm::main!`.
///
/// Both replace the SDK's (`proxy_wasm::set_log_level`, never called), which `unwrap` the log
/// hostcall: a log line the host refuses must not abort the VM, so ours drop it.
pub fn init(plugin: &'static str, level: LogLevel) {
    // Fails only if a logger is already installed (a second `init`): keep that one.
    let _ = log::set_logger(&HOST_LOGGER);
    log::set_max_level(match level {
        LogLevel::Trace => log::LevelFilter::Trace,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Error | LogLevel::Critical => log::LevelFilter::Error,
    });
    std::panic::set_hook(Box::new(move |info| {
        let _ = abi::log(
            LogLevel::Critical,
            &format!("palisade {plugin}: panic (the worker's Wasm VM will abort): {info}"),
        );
    }));
}

/// The `log` crate's backend: the proxy's log, through [`abi::log`]. A refused line is dropped.
struct HostLogger;

static HOST_LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        let _ = abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
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
    let buf = abi::get_buffer(
        proxy_wasm::types::BufferType::PluginConfiguration,
        0,
        usize::MAX,
    )
    .map_err(|e| e.during("get_buffer(plugin_configuration)"))?;
    Ok(buf.unwrap_or_default())
}
