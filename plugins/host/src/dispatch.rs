//! Outgoing HTTP calls (`dispatch_http_call`), returning [`HostError`] instead of panicking.
//!
//! The one hostcall still made through the SDK: `hostcalls::dispatch_http_call` records the call's
//! token so the SDK routes `on_http_call_response` to the calling context (the registry is private
//! to the SDK, and an unrecorded token would make the SDK's dispatcher panic). It panics only on a
//! status other than Ok, BadArgument and InternalFailure; Envoy's `httpCall` returns no other, save
//! InvalidMemoryAccess for pointers outside our memory, which slices cannot be. [`http_call`] also
//! checks the request itself first, so an ill-formed one is refused here, before any hostcall.
//!
//! - [`http_call`] sends a request to an Envoy cluster (`dispatch_http_call`); the answer arrives in
//!   the calling context's `on_http_call_response`, where [`call_response_status`] and
//!   [`call_response_body`] read it. A reset or timeout arrives as no headers and no body, so the
//!   status reads as `None`. The host refuses (BadArgument) an unknown cluster or a request
//!   without `:method`, `:path` or `:authority`.
//!
//! Ticks and resuming paused streams are in [`crate::flow`].

use crate::abi;
use crate::error::{code, HostError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use std::time::Duration;

/// Dispatch an HTTP call to `cluster`; returns the call's token.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<u32, HostError> {
    let has = |name: &str| headers.iter().any(|(n, _)| *n == name);
    if cluster.is_empty() || !(has(":method") && has(":path") && has(":authority")) {
        return Err(HostError::from_code(
            "dispatch_http_call (needs a cluster, :method, :path and :authority)",
            code::BAD_ARGUMENT,
        ));
    }
    // The ABI carries the timeout as u32 milliseconds (the SDK would wrap a longer one).
    let timeout = timeout.min(Duration::from_millis(u64::from(u32::MAX)));
    hostcalls::dispatch_http_call(cluster, headers.to_vec(), body, Vec::new(), timeout)
        .map_err(|s| crate::error::from_status("dispatch_http_call", s))
}

/// The `:status` of the call response being delivered, if it parsed (`None` after a reset).
pub fn call_response_status() -> Option<u16> {
    call_response_header(":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok())
}

/// A header of the call response being delivered.
pub fn call_response_header(name: &str) -> Result<Option<String>, HostError> {
    abi::get_header_map_value(MapType::HttpCallResponseHeaders, name)
        .map(|v| v.map(crate::http::lossy))
        .map_err(|e| e.during("get_http_call_response_header"))
}

/// The body of the call response being delivered (at most `max` bytes are read).
pub fn call_response_body(size: usize, max: usize) -> Result<Option<Vec<u8>>, HostError> {
    abi::get_buffer(BufferType::HttpCallResponseBody, 0, size.min(max))
        .map_err(|e| e.during("get_http_call_response_body"))
}
