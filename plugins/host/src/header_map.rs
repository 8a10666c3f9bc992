//! Whole header maps as bytes, and per-name replacement of all of a header's values.
//!
//! `http::request_header` and friends go through the SDK's UTF-8 `String` API, which aborts the
//! VM on a header value that is not UTF-8 (Envoy accepts obs-text bytes 0x80–0xFF in values).
//! These read and write raw bytes instead, so a plugin can treat such a value as data.

use crate::error::HostError;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

/// Every header (pseudo-headers included) with its raw value, in the proxy's order.
pub fn all(map: MapType) -> Result<Vec<(String, Vec<u8>)>, HostError> {
    hostcalls::get_map_bytes(map).map_err(|s| HostError::new("get_map_bytes", s))
}

/// The request headers; see [`all`].
pub fn request_headers() -> Result<Vec<(String, Vec<u8>)>, HostError> {
    all(MapType::HttpRequestHeaders)
}

/// The response headers; see [`all`].
pub fn response_headers() -> Result<Vec<(String, Vec<u8>)>, HostError> {
    all(MapType::HttpResponseHeaders)
}

/// Make `values` the header's values, in order: none removes it, one replaces it, more are
/// added after the first.
pub fn replace_values(map: MapType, name: &str, values: &[Vec<u8>]) -> Result<(), HostError> {
    match values.split_first() {
        None => hostcalls::remove_map_value(map, name)
            .map_err(|s| HostError::new("remove_map_value", s)),
        Some((first, rest)) => {
            hostcalls::set_map_value_bytes(map, name, Some(first))
                .map_err(|s| HostError::new("set_map_value_bytes", s))?;
            for v in rest {
                hostcalls::add_map_value_bytes(map, name, v)
                    .map_err(|s| HostError::new("add_map_value_bytes", s))?;
            }
            Ok(())
        }
    }
}
