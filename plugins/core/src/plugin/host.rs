//! The proxy, as the plugin skeleton sees it: one object-safe trait over every hostcall Palisade
//! makes, plus the handles built on it (metrics, the namespaced shared-data store).
//!
//! Why a trait in the pure crate: the generic root and stream ([`super::runtime`]) and every
//! policy's glue are then ordinary Rust that runs natively against [`crate::fake_host::FakeHost`],
//! in `cargo test`, in milliseconds. `palisade-host` implements [`Host`] on the real ABI; it is
//! the only implementation that makes hostcalls.
//!
//! Every call returns a [`HostError`] instead of panicking: a panic inside the VM kills the worker's
//! VM and fails its traffic.

use crate::store::{KeyPrefix, Versioned};
use crate::{SharedStore, StoreError, Timestamp, Version};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

/// Status codes of the proxy-wasm ABI (`WasmResult`), by the names the spec gives them.
pub mod code {
    pub const OK: u32 = 0;
    pub const NOT_FOUND: u32 = 1;
    pub const BAD_ARGUMENT: u32 = 2;
    pub const SERIALIZATION_FAILURE: u32 = 3;
    pub const PARSE_FAILURE: u32 = 4;
    pub const BAD_EXPRESSION: u32 = 5;
    pub const INVALID_MEMORY_ACCESS: u32 = 6;
    pub const EMPTY: u32 = 7;
    pub const CAS_MISMATCH: u32 = 8;
    pub const RESULT_MISMATCH: u32 = 9;
    pub const INTERNAL_FAILURE: u32 = 10;
    pub const BROKEN_CONNECTION: u32 = 11;
    pub const UNIMPLEMENTED: u32 = 12;
}

/// A hostcall that did not return `Ok`: which operation, and the host's raw status code.
///
/// The status is kept as the raw `u32`, never as the SDK's `Status` enum: a host may return a code
/// the enum does not list, and an unknown discriminant in a Rust enum is undefined behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    pub op: &'static str,
    pub code: u32,
}

impl HostError {
    /// From the raw status code a hostcall returned.
    pub fn from_code(op: &'static str, code: u32) -> Self {
        HostError { op, code }
    }

    /// The same error, attributed to `op` (a caller's name for what it was doing).
    pub fn during(self, op: &'static str) -> Self {
        HostError { op, ..self }
    }

    /// The code's ABI name (`"Unknown"` for a code the ABI does not define).
    pub fn name(&self) -> &'static str {
        code_name(self.code)
    }
}

/// The ABI's name for a status code, or `"Unknown"`.
pub fn code_name(c: u32) -> &'static str {
    match c {
        code::OK => "Ok",
        code::NOT_FOUND => "NotFound",
        code::BAD_ARGUMENT => "BadArgument",
        code::SERIALIZATION_FAILURE => "SerializationFailure",
        code::PARSE_FAILURE => "ParseFailure",
        code::BAD_EXPRESSION => "BadExpression",
        code::INVALID_MEMORY_ACCESS => "InvalidMemoryAccess",
        code::EMPTY => "Empty",
        code::CAS_MISMATCH => "CasMismatch",
        code::RESULT_MISMATCH => "ResultMismatch",
        code::INTERNAL_FAILURE => "InternalFailure",
        code::BROKEN_CONNECTION => "BrokenConnection",
        code::UNIMPLEMENTED => "Unimplemented",
        _ => "Unknown",
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hostcall {} failed: {} (status {})",
            self.op,
            self.name(),
            self.code
        )
    }
}

impl std::error::Error for HostError {}

impl From<HostError> for StoreError {
    fn from(e: HostError) -> Self {
        match e.code {
            code::CAS_MISMATCH => StoreError::CasMismatch,
            _ => StoreError::Host(e.to_string()),
        }
    }
}

/// Which header map a header call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderMap {
    Request,
    Response,
    /// The headers of the HTTP call response being delivered.
    CallResponse,
}

/// Which buffer a body call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Buffer {
    RequestBody,
    ResponseBody,
    /// The body of the HTTP call response being delivered.
    CallResponseBody,
    /// The message of the gRPC call response being delivered (the ABI's `GrpcReceiveBuffer`).
    GrpcResponse,
    PluginConfiguration,
}

/// gRPC status codes (grpc/grpc `doc/statuscodes.md`), as Envoy reports a gRPC call's end.
pub mod grpc_status {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const UNKNOWN: u32 = 2;
    pub const INVALID_ARGUMENT: u32 = 3;
    /// A service's own deadline; Envoy's timeout of a call arrives as `UNAVAILABLE` instead.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const NOT_FOUND: u32 = 5;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    /// Envoy: a malformed response (bad framing, a trailers-only OK without a message, a reset).
    pub const INTERNAL: u32 = 13;
    /// Envoy: no healthy upstream, connection refused, cluster gone, and its own timeout of the
    /// call (the router's local 504, which gRPC maps to 14).
    pub const UNAVAILABLE: u32 = 14;
}

/// A unary gRPC request, as a policy dispatches it ([`RootCx::grpc_call`],
/// [`StreamCx::grpc_call`]) and [`Host::grpc_call`] sends it. Named fields rather than six
/// arguments: cluster, service and method are all strings, and must not trade places.
///
/// [`RootCx::grpc_call`]: super::RootCx::grpc_call
/// [`StreamCx::grpc_call`]: super::StreamCx::grpc_call
#[derive(Debug, Clone, Copy)]
pub struct GrpcCall<'a> {
    /// An Envoy cluster of HTTP/2 upstreams.
    pub cluster: &'a str,
    pub service: &'a str,
    pub method: &'a str,
    pub initial_metadata: &'a [(&'a str, &'a [u8])],
    /// The request message, already serialized.
    pub message: &'a [u8],
    /// Envoy ends the call with `UNAVAILABLE` when this passes first.
    pub timeout: Duration,
}

/// The three metric kinds Envoy knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Every hostcall the skeleton and the policies make. Calls about "the stream" act on the host's
/// current (effective) context, as the ABI does.
pub trait Host {
    fn now(&self) -> Timestamp;

    fn header(&self, map: HeaderMap, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Every header of the map, pseudo-headers included, in the proxy's order.
    fn headers(&self, map: HeaderMap) -> Result<Vec<(String, Vec<u8>)>, HostError>;
    /// Replace every value of a header with one value.
    fn replace_header(&self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError>;
    fn add_header(&self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError>;
    fn remove_header(&self, map: HeaderMap, name: &str) -> Result<(), HostError>;

    fn buffer(&self, which: Buffer, start: usize, max: usize)
        -> Result<Option<Vec<u8>>, HostError>;
    fn set_buffer(
        &self,
        which: Buffer,
        start: usize,
        size: usize,
        value: &[u8],
    ) -> Result<(), HostError>;

    /// A property's raw bytes (`None` when the host has no value for it).
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError>;

    /// Set a property of the current stream (Envoy: filter state `wasm.<path>`).
    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError>;

    /// `(value, cas)`; see [`HostStore`] for how absent and removed keys read.
    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError>;
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError>;

    /// Answer the current stream locally; `details` becomes Envoy's response code details.
    fn send_reply(
        &self,
        status: u16,
        details: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError>;
    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError>;
    /// Continue the current stream's request after a pause.
    fn resume_request(&self) -> Result<(), HostError>;
    /// Reset the current stream.
    fn reset_request(&self) -> Result<(), HostError>;
    fn set_tick_period(&self, period: Duration) -> Result<(), HostError>;

    /// Send an HTTP request to an Envoy cluster; the token names its response.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError>;

    /// Send a unary gRPC request; the token names its response.
    fn grpc_call(&self, call: &GrpcCall<'_>) -> Result<u32, HostError>;

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError>;
    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError>;
}

/// The host handle every part of a plugin holds: one per VM (a zero-sized adapter in Wasm, a
/// scripted fake in tests).
pub type HostRef = Rc<dyn Host>;

/// Bytes as text, with invalid UTF-8 replaced (no copy when the bytes are valid). Header values may
/// carry obs-text bytes that are not UTF-8; they are replaced with U+FFFD rather than trusted.
pub fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A defined metric, or a no-op if definition failed (it never should): losing a counter must
/// never fail traffic, so a failed definition costs one log line and nothing after.
#[derive(Clone)]
pub struct Metric {
    host: HostRef,
    id: Option<u32>,
}

impl fmt::Debug for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metric({:?})", self.id)
    }
}

impl Metric {
    pub fn define(host: &HostRef, kind: MetricKind, name: &str) -> Metric {
        let id = match host.define_metric(kind, name) {
            Ok(id) => Some(id),
            Err(e) => {
                log::error!("define_metric({name}) failed: {e}; the metric is disabled");
                None
            }
        };
        Metric {
            host: Rc::clone(host),
            id,
        }
    }

    /// A monotonically increasing counter.
    pub fn counter(host: &HostRef, name: &str) -> Metric {
        Metric::define(host, MetricKind::Counter, name)
    }

    /// A value that goes up and down (in-flight requests, breaker state).
    pub fn gauge(host: &HostRef, name: &str) -> Metric {
        Metric::define(host, MetricKind::Gauge, name)
    }

    /// A distribution of recorded values (latencies).
    pub fn histogram(host: &HostRef, name: &str) -> Metric {
        Metric::define(host, MetricKind::Histogram, name)
    }

    /// Add `delta` (counters and gauges).
    pub fn add(&self, delta: i64) {
        if let Some(id) = self.id {
            if let Err(e) = self.host.increment_metric(id, delta) {
                log::debug!("{e}");
            }
        }
    }

    pub fn inc(&self) {
        self.add(1);
    }

    /// Set a gauge, or record a histogram sample.
    pub fn record(&self, value: u64) {
        if let Some(id) = self.id {
            if let Err(e) = self.host.record_metric(id, value) {
                log::debug!("{e}");
            }
        }
    }
}

/// The CAS passed when creating a key; see [`HostStore`].
pub const CREATE_CAS: u32 = u32::MAX;

/// [`SharedStore`] on the host's shared data, under one policy instance's [`KeyPrefix`].
///
/// Host semantics (proxy-wasm-cpp-host `shared_data.cc`) and how we map them:
/// - one store per `vm_id`, shared by every worker's VM; Istio never sets `vm_id`, hence the
///   prefix on every key;
/// - an absent key reads `(None, None)`; a "removed" key (empty value) reads `(None, Some(cas))`;
///   both read here as an empty value, with [`Version::Absent`] and [`Version::Cas`];
/// - a write to an absent key succeeds whatever CAS is passed, and CAS 0 means "unconditional".
///   To make "create only if still absent" work, a write with [`Version::Absent`] passes
///   [`CREATE_CAS`]: if a racing worker created the key first, its CAS differs and we get
///   `CasMismatch`. CAS tokens come from one process-wide counter, so this misfires only if the
///   racing key's token happens to equal `u32::MAX` — once per 2³² writes process-wide, and then
///   only if that write raced with a creation of the same key.
/// - keys are never freed, so policies must bound how many distinct keys they write.
#[derive(Clone)]
pub struct HostStore {
    host: HostRef,
    prefix: KeyPrefix,
}

impl fmt::Debug for HostStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostStore({})", self.prefix.as_str())
    }
}

impl HostStore {
    pub fn new(host: &HostRef, prefix: KeyPrefix) -> Self {
        HostStore {
            host: Rc::clone(host),
            prefix,
        }
    }

    pub fn prefix(&self) -> &KeyPrefix {
        &self.prefix
    }
}

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Versioned, StoreError> {
        let full = self.prefix.key(key);
        match self.host.shared_data(&full) {
            Ok((value, Some(cas))) => Ok(Versioned::stored(value.unwrap_or_default(), cas)),
            Ok((None, None)) => Ok(Versioned::absent()),
            Ok((Some(_), None)) => Err(StoreError::Host(format!(
                "shared data {full}: value without CAS"
            ))),
            Err(e) => Err(e.during("get_shared_data").into()),
        }
    }

    fn compare_and_swap(
        &self,
        key: &str,
        value: &[u8],
        expected: Version,
    ) -> Result<(), StoreError> {
        let cas = match expected {
            Version::Absent => CREATE_CAS,
            // A real token is never 0 (the host skips it), but guard: 0 would be unconditional.
            Version::Cas(0) => return Err(StoreError::CasMismatch),
            Version::Cas(cas) => cas,
        };
        self.host
            .set_shared_data(&self.prefix.key(key), value, cas)
            .map_err(|e| e.during("set_shared_data").into())
    }
}
