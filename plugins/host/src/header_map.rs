//! Whole header maps as bytes, and per-name replacement of all of a header's values.
//!
//! Values are raw bytes (Envoy accepts obs-text bytes 0x80–0xFF in values), so a plugin can treat
//! a value that is not UTF-8 as data. The map arrives in the ABI's pairs encoding, decoded by
//! `palisade_core::pairs` with every length checked.

use crate::abi;
use crate::error::HostError;
use proxy_wasm::types::MapType;

/// Every header (pseudo-headers included) with its raw value, in the proxy's order.
pub fn all(map: MapType) -> Result<Vec<(String, Vec<u8>)>, HostError> {
    abi::get_header_map_pairs(map).map_err(|e| e.during("get_map_bytes"))
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
        None => abi::remove_header_map_value(map, name).map_err(|e| e.during("remove_map_value")),
        Some((first, rest)) => {
            abi::replace_header_map_value(map, name, first)
                .map_err(|e| e.during("set_map_value_bytes"))?;
            for v in rest {
                abi::add_header_map_value(map, name, v)
                    .map_err(|e| e.during("add_map_value_bytes"))?;
            }
            Ok(())
        }
    }
}
