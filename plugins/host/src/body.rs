//! HTTP body buffers of the current stream, read and replaced whole.
//!
//! Used by plugins that buffer a body until end of stream (the filter returns `Action::Pause`
//! from `on_http_*_body` until `end_of_stream`, which makes Envoy accumulate the body) and then
//! rewrite it. `size` is the `body_size` the callback was given: the whole buffered body.
//!
//! Every non-`Ok` status is a [`HostError`] (a missing buffer reads as empty).

use crate::abi;
use crate::error::HostError;
use proxy_wasm::types::BufferType;

fn read(kind: BufferType, op: &'static str, size: usize) -> Result<Vec<u8>, HostError> {
    abi::get_buffer(kind, 0, size)
        .map(Option::unwrap_or_default)
        .map_err(|e| e.during(op))
}

fn replace(kind: BufferType, op: &'static str, size: usize, body: &[u8]) -> Result<(), HostError> {
    abi::set_buffer(kind, 0, size, body).map_err(|e| e.during(op))
}

/// The buffered request body (`size` bytes from the start).
pub fn request_body(size: usize) -> Result<Vec<u8>, HostError> {
    read(
        BufferType::HttpRequestBody,
        "get_buffer(request_body)",
        size,
    )
}

/// Replace the first `size` bytes of the buffered request body (all of it) with `body`.
pub fn set_request_body(size: usize, body: &[u8]) -> Result<(), HostError> {
    replace(
        BufferType::HttpRequestBody,
        "set_buffer(request_body)",
        size,
        body,
    )
}

/// The buffered response body (`size` bytes from the start).
pub fn response_body(size: usize) -> Result<Vec<u8>, HostError> {
    read(
        BufferType::HttpResponseBody,
        "get_buffer(response_body)",
        size,
    )
}

/// Replace the first `size` bytes of the buffered response body (all of it) with `body`.
pub fn set_response_body(size: usize, body: &[u8]) -> Result<(), HostError> {
    replace(
        BufferType::HttpResponseBody,
        "set_buffer(response_body)",
        size,
        body,
    )
}
