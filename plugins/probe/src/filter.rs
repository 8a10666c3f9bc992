//! Wasm glue: read inputs, ask the pure code, apply the result.
//!
//! Deliberately *not* on the plugin skeleton: the probe is the benchmark's floor, the cost of the
//! bare SDK contexts and one hostcall or two, against which the skeleton's own cost is measured.
//! It shares the host adapter ([`ProxyHost`]) and core's metric and store handles.

use crate::{count_request, Config};
use palisade_core::plugin::host::{lossy, HeaderMap, Host, HostRef, HostStore, Metric};
use palisade_core::store::KeyPrefix;
use palisade_host::proxy_wasm;
use palisade_host::skeleton::ProxyHost;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;

const PLUGIN: &str = "probe";

#[allow(unsafe_code)] // `main!` expands to the `#[no_mangle]` entry point the host calls.
mod entry {
    use super::*;
    proxy_wasm::main! {{
        palisade_host::init(PLUGIN, LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot::default()) });
    }}
}

struct Metrics {
    requests: Metric,
    count_failures: Metric,
}

struct Shared {
    config: Config,
    store: HostStore,
    metrics: Metrics,
    /// `<header>-<i>` for the benchmark's `extra_header_writes`.
    extra_headers: Vec<String>,
}

#[derive(Default)]
struct ProbeRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(config) = palisade_host::load_config(PLUGIN, Config::parse) else {
            return false;
        };
        let host: HostRef = Rc::new(ProxyHost);
        let store = HostStore::new(&host, KeyPrefix::new(PLUGIN, &config.scope));
        let metrics = Metrics {
            requests: Metric::counter(&host, "palisade.probe.requests"),
            count_failures: Metric::counter(&host, "palisade.probe.count_failures"),
        };
        let extra_headers = (0..config.extra_header_writes)
            .map(|i| format!("{}-{i}", config.header))
            .collect();
        self.shared = Some(Rc::new(Shared {
            config,
            store,
            metrics,
            extra_headers,
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(ProbeStream { shared }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ProbeStream {
    shared: Rc<Shared>,
}

impl Context for ProbeStream {}

impl HttpContext for ProbeStream {
    fn on_http_request_headers(&mut self, _headers: usize, _eos: bool) -> Action {
        let s = &self.shared;
        s.metrics.requests.inc();
        if let Some(crash) = &s.config.crash_header {
            if matches!(ProxyHost.header(HeaderMap::Request, crash), Ok(Some(_))) {
                crash_the_vm();
            }
        }
        let value = if s.config.count {
            match count_request(&s.store) {
                Ok(n) => n.to_string(),
                Err(e) => {
                    s.metrics.count_failures.inc();
                    log::warn!("palisade {PLUGIN}: count failed: {e}");
                    "error".to_owned()
                }
            }
        } else {
            ProxyHost
                .header(HeaderMap::Request, ":path")
                .ok()
                .flatten()
                .map(lossy)
                .unwrap_or_default()
        };
        if let Err(e) =
            ProxyHost.replace_header(HeaderMap::Request, &s.config.header, value.as_bytes())
        {
            log::warn!("palisade {PLUGIN}: {e}");
        }
        for _ in 0..s.config.extra_increments {
            s.metrics.requests.inc();
        }
        for name in &s.extra_headers {
            if let Err(e) = ProxyHost.replace_header(HeaderMap::Request, name, b"1") {
                log::warn!("palisade {PLUGIN}: {e}");
            }
        }
        Action::Continue
    }
}

/// The fault tests' deliberate VM failure (config `crash_header`): a Rust panic, which aborts the
/// module exactly as an accidental one would.
#[allow(clippy::panic)]
fn crash_the_vm() -> ! {
    panic!("palisade {PLUGIN}: crash_header present: crashing on purpose");
}
