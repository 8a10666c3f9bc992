//! Outgoing HTTP calls (`dispatch_http_call`), returning [`HostError`] instead of panicking.
//!
//! - [`http_call`] sends a request to an Envoy cluster (`dispatch_http_call`); the answer arrives in
//!   the calling context's `on_http_call_response`, where [`call_response_status`] and
//!   [`call_response_body`] read it. A reset or timeout arrives as no headers and no body, so the
//!   status reads as `None`. The host refuses (BadArgument) an unknown cluster or a request
//!   without `:method`, `:path` or `:authority`.
//!
//! Ticks and resuming paused streams are in [`crate::flow`].

use crate::error::HostError;
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
    hostcalls::dispatch_http_call(cluster, headers.to_vec(), body, Vec::new(), timeout)
        .map_err(|s| HostError::new("dispatch_http_call", s))
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
    // Bytes, not `get_map_value`, which panics on a value that is not UTF-8.
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
        .map(|v| v.map(crate::http::lossy))
        .map_err(|s| HostError::new("get_http_call_response_header", s))
}

/// The body of the call response being delivered (at most `max` bytes are read).
pub fn call_response_body(size: usize, max: usize) -> Result<Option<Vec<u8>>, HostError> {
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size.min(max))
        .map_err(|s| HostError::new("get_http_call_response_body", s))
}
