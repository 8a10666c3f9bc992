//! Envoy metrics from Wasm: define once per VM, then increment or record.
//!
//! Envoy shows them in `/stats` with the `wasmcustom.` prefix, e.g.
//! `wasmcustom.palisade.rate_limit.allowed`. A metric that fails to define (it never should) turns
//! into a no-op after one log line: losing a counter must never fail traffic.

use crate::abi;
use proxy_wasm::types::MetricType;

/// A defined metric, or a no-op if definition failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    id: Option<u32>,
}

impl Metric {
    fn define(kind: MetricType, name: &str) -> Metric {
        match abi::define_metric(kind, name) {
            Ok(id) => Metric { id: Some(id) },
            Err(e) => {
                log::error!("define_metric({name}) failed: {e}; the metric is disabled");
                Metric { id: None }
            }
        }
    }

    /// A monotonically increasing counter.
    pub fn counter(name: &str) -> Metric {
        Metric::define(MetricType::Counter, name)
    }

    /// A value that goes up and down (in-flight requests, breaker state).
    pub fn gauge(name: &str) -> Metric {
        Metric::define(MetricType::Gauge, name)
    }

    /// A distribution of recorded values (latencies).
    pub fn histogram(name: &str) -> Metric {
        Metric::define(MetricType::Histogram, name)
    }

    /// Add `delta` (counters and gauges).
    pub fn add(self, delta: i64) {
        if let Some(id) = self.id {
            if let Err(e) = abi::increment_metric(id, delta) {
                log::debug!("{e}");
            }
        }
    }

    pub fn inc(self) {
        self.add(1);
    }

    /// Set a gauge, or record a histogram sample.
    pub fn record(self, value: u64) {
        if let Some(id) = self.id {
            if let Err(e) = abi::record_metric(id, value) {
                log::debug!("{e}");
            }
        }
    }

    /// The current value (gauges and counters), if readable.
    pub fn value(self) -> Option<u64> {
        self.id.and_then(|id| abi::get_metric(id).ok())
    }
}
