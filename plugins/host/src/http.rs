//! Header, property and local-reply hostcalls, each returning [`HostError`] instead of panicking.

use crate::error::HostError;
use palisade_core::{Decision, LocalReply};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType};

/// A request header's value. Header values may carry bytes that are not UTF-8 (HTTP allows
/// obs-text, and Envoy passes it through); they are replaced with U+FFFD rather than trusted.
/// The SDK's `get_map_value` would panic on them — aborting the worker's VM — so it is never used.
pub fn request_header(name: &str) -> Result<Option<String>, HostError> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .map(|v| v.map(lossy))
        .map_err(|s| HostError::new("get_request_header", s))
}

/// Bytes as text, with invalid UTF-8 replaced (no copy when the bytes are valid).
pub fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

pub fn set_request_header(name: &str, value: Option<&str>) -> Result<(), HostError> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value)
        .map_err(|s| HostError::new("set_request_header", s))
}

pub fn add_request_header(name: &str, value: &str) -> Result<(), HostError> {
    hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value)
        .map_err(|s| HostError::new("add_request_header", s))
}

/// A response header's value; non-UTF-8 bytes are replaced, as for [`request_header`].
pub fn response_header(name: &str) -> Result<Option<String>, HostError> {
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
        .map(|v| v.map(lossy))
        .map_err(|s| HostError::new("get_response_header", s))
}

pub fn set_response_header(name: &str, value: Option<&str>) -> Result<(), HostError> {
    hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value)
        .map_err(|s| HostError::new("set_response_header", s))
}

pub fn add_response_header(name: &str, value: &str) -> Result<(), HostError> {
    hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value)
        .map_err(|s| HostError::new("add_response_header", s))
}

/// A property's raw bytes (`None` if the host has no value for it).
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    hostcalls::get_property(path.to_vec()).map_err(|s| HostError::new("get_property", s))
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
    let body = if reply.body.is_empty() {
        None
    } else {
        Some(reply.body.as_slice())
    };
    log::debug!("local reply {} ({})", reply.status, reply.details);
    hostcalls::send_http_response(u32::from(reply.status), headers, body)
        .map_err(|s| HostError::new("send_http_response", s))
}

/// Apply a decision: continue, or send the reply and stop iteration.
///
/// If the reply cannot be sent, `on_send_failure` decides (a plugin's documented failure mode):
/// the returned action is what the stream does next.
pub fn apply(decision: &Decision, on_send_failure: Action) -> Action {
    match decision {
        Decision::Continue => Action::Continue,
        Decision::Reply(reply) => match send_reply(reply) {
            Ok(()) => Action::Pause,
            Err(e) => {
                log::error!("{e}");
                on_send_failure
            }
        },
    }
}
