//! Header, property and local-reply hostcalls, each returning [`HostError`] instead of panicking.

use crate::abi;
use crate::error::HostError;
use palisade_core::{Decision, LocalReply};
use proxy_wasm::types::{Action, MapType};

/// A request header's value. Header values may carry bytes that are not UTF-8 (HTTP allows
/// obs-text, and Envoy passes it through); they are replaced with U+FFFD rather than trusted.
/// (The SDK's `get_map_value` would panic on them, aborting the worker's VM.)
pub fn request_header(name: &str) -> Result<Option<String>, HostError> {
    abi::get_header_map_value(MapType::HttpRequestHeaders, name)
        .map(|v| v.map(lossy))
        .map_err(|e| e.during("get_request_header"))
}

/// Replace (`Some`) or remove (`None`) every value of a header.
fn set_header(map: MapType, name: &str, value: Option<&str>) -> Result<(), HostError> {
    match value {
        Some(v) => abi::replace_header_map_value(map, name, v.as_bytes()),
        None => abi::remove_header_map_value(map, name),
    }
}

/// Bytes as text, with invalid UTF-8 replaced (no copy when the bytes are valid).
pub fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

pub fn set_request_header(name: &str, value: Option<&str>) -> Result<(), HostError> {
    set_header(MapType::HttpRequestHeaders, name, value).map_err(|e| e.during("set_request_header"))
}

pub fn add_request_header(name: &str, value: &str) -> Result<(), HostError> {
    abi::add_header_map_value(MapType::HttpRequestHeaders, name, value.as_bytes())
        .map_err(|e| e.during("add_request_header"))
}

/// A response header's value; non-UTF-8 bytes are replaced, as for [`request_header`].
pub fn response_header(name: &str) -> Result<Option<String>, HostError> {
    abi::get_header_map_value(MapType::HttpResponseHeaders, name)
        .map(|v| v.map(lossy))
        .map_err(|e| e.during("get_response_header"))
}

pub fn set_response_header(name: &str, value: Option<&str>) -> Result<(), HostError> {
    set_header(MapType::HttpResponseHeaders, name, value)
        .map_err(|e| e.during("set_response_header"))
}

pub fn add_response_header(name: &str, value: &str) -> Result<(), HostError> {
    abi::add_header_map_value(MapType::HttpResponseHeaders, name, value.as_bytes())
        .map_err(|e| e.during("add_response_header"))
}

/// A property's raw bytes (`None` if the host has no value for it).
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    abi::get_property(path).map_err(|e| e.during("get_property"))
}

/// A string property; non-UTF-8 bytes are replaced.
pub fn property_string(path: &[&str]) -> Result<Option<String>, HostError> {
    Ok(property(path)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// An integer property (the host encodes them as 8 little-endian bytes).
pub fn property_u64(path: &[&str]) -> Result<Option<u64>, HostError> {
    Ok(property(path)?.and_then(|b| {
        <[u8; 8]>::try_from(b.as_slice())
            .ok()
            .map(u64::from_le_bytes)
    }))
}

/// Send a local reply for the current stream.
pub fn send_reply(reply: &LocalReply) -> Result<(), HostError> {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    log::debug!("local reply {} ({})", reply.status, reply.details);
    abi::send_local_response(
        u32::from(reply.status),
        &reply.details,
        &headers,
        &reply.body,
    )
    .map_err(|e| e.during("send_http_response"))
}

/// Apply a decision: continue, or send the reply and stop iteration.
///
/// If the reply cannot be sent, `on_send_failure` decides (a plugin's documented failure mode):
/// - `Action::Continue` (fail open): the request goes on upstream;
/// - `Action::Pause` (fail closed): the stream is reset, so it neither reaches the upstream nor
///   hangs paused with no reply until a timeout. If even the reset fails (it never has), the
///   stream stays paused and Envoy's stream timeouts end it.
pub fn apply(decision: &Decision, on_send_failure: Action) -> Action {
    match decision {
        Decision::Continue => Action::Continue,
        Decision::Reply(reply) => match send_reply(reply) {
            Ok(()) => Action::Pause,
            Err(e) => {
                log::error!("{e}");
                if on_send_failure == Action::Pause {
                    reset_after_failed_reply();
                }
                on_send_failure
            }
        },
    }
}

/// Fail closed after a local reply could not be sent: reset the (effective) stream.
pub fn reset_after_failed_reply() {
    match crate::flow::reset_http_request() {
        Ok(()) => log::warn!("local reply failed: stream reset instead"),
        Err(e) => log::error!("local reply failed and {e}: the stream stays paused"),
    }
}
