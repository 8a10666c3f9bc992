//! Our own declarations of the proxy-wasm ABI imports Palisade uses, and safe wrappers that never
//! panic. The only hand-written `unsafe` code in Palisade; clippy checks that every `unsafe` block
//! carries its `// SAFETY:` argument.
//!
//! Why not the SDK's `proxy_wasm::hostcalls`: most of those functions `panic!` on a status they
//! do not expect, and a panic aborts the worker's Wasm VM (`panic = "abort"`), failing every later
//! request on that worker. Here every import returns the **raw `u32` status** — never the SDK's
//! `Status` enum, because a code outside its variants would be an invalid enum value, which is
//! undefined behaviour — and every wrapper turns a non-`Ok` code into a [`HostError`].
//!
//! Memory: a hostcall that returns bytes has the host allocate them *in our memory* through the
//! `proxy_on_memory_allocate` export (the SDK's, still linked: a boxed `[u8]` of exactly the
//! requested size from the global allocator) and write the pointer and length to our out-pointers.
//! [`OutBytes`] takes ownership of that allocation exactly once, only after an `Ok` status, as a
//! `Vec<u8>` of capacity = length = the size written (the allocation's exact layout), so it is
//! freed by our allocator when dropped. The host allocates nothing on a failing call, so nothing
//! leaks; if one ever did, we would leak a buffer rather than free memory we do not own.
//!
//! These declarations name the same `env` imports the SDK declares with enum-typed parameters and
//! results. That is sound: Wasm imports are resolved by module and name, and the SDK's enums are
//! `#[repr(u32)]`, so both declarations lower to the same Wasm signature (every parameter `i32`
//! or `i64`, result `i32`).
//!
//! Not here: `proxy_http_call`. The SDK must record each call's token to route the response to
//! the calling context (`on_http_call_response` `expect`s a known token, and its registry is
//! private), so HTTP calls still go through the SDK; see `skeleton::ProxyHost::http_call`.
#![deny(clippy::undocumented_unsafe_blocks)]

use crate::error::{code, HostError};
use palisade_core::pairs;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};
use std::ptr::null_mut;

mod sys {
    // Sizes are `usize` and pointers are raw pointers exactly as in the SDK's declarations (both
    // `i32` on wasm32); enum parameters and every result are `u32`.
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
        pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            buffer_data: *const u8,
            buffer_size: usize,
        ) -> u32;
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_add_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
        ) -> u32;
        pub fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_property(
            path_data: *const u8,
            path_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_get_shared_data(
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;
        pub fn proxy_set_shared_data(
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        pub fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_close_stream(stream_type: u32) -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;
        pub fn proxy_define_metric(
            metric_type: u32,
            name_data: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
        pub fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    }
}

/// `proxy_continue_stream` / `proxy_close_stream` stream type of the HTTP request (ABI value).
const STREAM_HTTP_REQUEST: u32 = 0;

/// `Ok(())` for [`code::OK`], else the error for `op`.
fn check(op: &'static str, status: u32) -> Result<(), HostError> {
    match status {
        code::OK => Ok(()),
        other => Err(HostError::from_code(op, other)),
    }
}

/// The out-pointers of a hostcall that returns host-allocated bytes (see the module docs).
struct OutBytes {
    ptr: *mut u8,
    len: usize,
}

impl OutBytes {
    fn new() -> Self {
        OutBytes {
            ptr: null_mut(),
            len: 0,
        }
    }

    /// The returned bytes, owned, if the call succeeded (`None` when the host returned none).
    /// Consumes `self`, so a buffer is taken at most once.
    fn finish(self, op: &'static str, status: u32) -> Result<Option<Vec<u8>>, HostError> {
        check(op, status)?;
        if self.ptr.is_null() {
            return Ok(None);
        }
        // SAFETY: `ptr` starts null and only the host writes it; it is non-null here, and the call
        // returned Ok, so per the ABI the host allocated `len` bytes through our
        // `proxy_on_memory_allocate` (a boxed `[u8]` of exactly `len`, alignment 1, global
        // allocator), initialised them and handed ownership to us. Capacity = length = `len` is
        // that allocation's layout; `self` is consumed, so it is never taken twice.
        Ok(Some(unsafe {
            Vec::from_raw_parts(self.ptr, self.len, self.len)
        }))
    }
}

/// Log `message` at `level` in the proxy's log.
pub fn log(level: LogLevel, message: &str) -> Result<(), HostError> {
    // SAFETY: pointer and length describe a live `&str` the host only reads.
    let status = unsafe { sys::proxy_log(level as u32, message.as_ptr(), message.len()) };
    check("proxy_log", status)
}

/// The proxy's wall clock, in nanoseconds since the Unix epoch.
pub fn current_time_nanos() -> Result<u64, HostError> {
    let mut nanos: u64 = 0;
    // SAFETY: the out-pointer is a live, aligned local the host writes a u64 to.
    let status = unsafe { sys::proxy_get_current_time_nanoseconds(&mut nanos) };
    check("proxy_get_current_time_nanoseconds", status).map(|()| nanos)
}

/// Call the root context's `on_tick` every `millis` ms (0 stops the ticks).
pub fn set_tick_period_millis(millis: u32) -> Result<(), HostError> {
    // SAFETY: no pointers are passed.
    let status = unsafe { sys::proxy_set_tick_period_milliseconds(millis) };
    check("proxy_set_tick_period_milliseconds", status)
}

/// Up to `max` bytes of buffer `kind` from `start`; `None` if the host has no such buffer.
pub fn get_buffer(
    kind: BufferType,
    start: usize,
    max: usize,
) -> Result<Option<Vec<u8>>, HostError> {
    let mut out = OutBytes::new();
    // SAFETY: the out-pointers are live locals; see `OutBytes` for the returned allocation.
    let status =
        unsafe { sys::proxy_get_buffer_bytes(kind as u32, start, max, &mut out.ptr, &mut out.len) };
    match status {
        code::NOT_FOUND => Ok(None),
        _ => out.finish("proxy_get_buffer_bytes", status),
    }
}

/// Replace `size` bytes of buffer `kind` from `start` with `value`.
pub fn set_buffer(
    kind: BufferType,
    start: usize,
    size: usize,
    value: &[u8],
) -> Result<(), HostError> {
    // SAFETY: pointer and length describe a live slice the host only reads.
    let status = unsafe {
        sys::proxy_set_buffer_bytes(kind as u32, start, size, value.as_ptr(), value.len())
    };
    check("proxy_set_buffer_bytes", status)
}

/// Every pair of header map `map`, names as text, values as raw bytes.
pub fn get_header_map_pairs(map: MapType) -> Result<Vec<(String, Vec<u8>)>, HostError> {
    let mut out = OutBytes::new();
    // SAFETY: the out-pointers are live locals; see `OutBytes` for the returned allocation.
    let status = unsafe { sys::proxy_get_header_map_pairs(map as u32, &mut out.ptr, &mut out.len) };
    let bytes = out.finish("proxy_get_header_map_pairs", status)?;
    pairs::decode(bytes.as_deref().unwrap_or_default()).map_err(|e| {
        log::warn!("proxy_get_header_map_pairs: {e}");
        HostError::from_code(
            "proxy_get_header_map_pairs (decode)",
            code::SERIALIZATION_FAILURE,
        )
    })
}

/// A header's value as raw bytes; `None` if absent.
pub fn get_header_map_value(map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
    let mut out = OutBytes::new();
    // SAFETY: the name is a live `&str` the host only reads; the out-pointers are live locals; see
    // `OutBytes` for the returned allocation.
    let status = unsafe {
        sys::proxy_get_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            &mut out.ptr,
            &mut out.len,
        )
    };
    match status {
        code::NOT_FOUND => Ok(None),
        // Present but empty arrives as no buffer.
        _ => Ok(Some(
            out.finish("proxy_get_header_map_value", status)?
                .unwrap_or_default(),
        )),
    }
}

/// Set header `name` to `value`, replacing every value it had.
pub fn replace_header_map_value(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: both pointer/length pairs describe live slices the host only reads.
    let status = unsafe {
        sys::proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    check("proxy_replace_header_map_value", status)
}

/// Add a value to header `name`, keeping the ones it has.
pub fn add_header_map_value(map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: both pointer/length pairs describe live slices the host only reads.
    let status = unsafe {
        sys::proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    check("proxy_add_header_map_value", status)
}

/// Remove every value of header `name`.
pub fn remove_header_map_value(map: MapType, name: &str) -> Result<(), HostError> {
    // SAFETY: pointer and length describe a live `&str` the host only reads.
    let status =
        unsafe { sys::proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) };
    check("proxy_remove_header_map_value", status)
}

/// A property's raw bytes; `None` if the host has no value for it.
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    // The ABI's path encoding: segments separated by NUL.
    let path = path.join("\0");
    let mut out = OutBytes::new();
    // SAFETY: the path is a live `String` the host only reads; the out-pointers are live locals;
    // see `OutBytes` for the returned allocation.
    let status =
        unsafe { sys::proxy_get_property(path.as_ptr(), path.len(), &mut out.ptr, &mut out.len) };
    match status {
        code::NOT_FOUND => Ok(None),
        _ => out.finish("proxy_get_property", status),
    }
}

/// Set a property of the current stream. Envoy keeps it as filter state `wasm.<path>` (a Wasm
/// filter cannot write dynamic metadata), readable in access logs as `%FILTER_STATE(wasm.<path>:PLAIN)%`.
pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), HostError> {
    let path = path.join("\0");
    // SAFETY: both pointer/length pairs describe live slices the host only reads.
    let status =
        unsafe { sys::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) };
    check("proxy_set_property", status)
}

/// A shared-data value and its CAS token. `(None, None)`: the key was never written;
/// `(None, Some(cas))`: it holds an empty value.
pub fn get_shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
    let mut out = OutBytes::new();
    let mut cas: u32 = 0;
    // SAFETY: the key is a live `&str` the host only reads; the out-pointers are live locals;
    // see `OutBytes` for the returned allocation.
    let status = unsafe {
        sys::proxy_get_shared_data(
            key.as_ptr(),
            key.len(),
            &mut out.ptr,
            &mut out.len,
            &mut cas,
        )
    };
    match status {
        code::NOT_FOUND => Ok((None, None)),
        _ => {
            let value = out.finish("proxy_get_shared_data", status)?;
            Ok((value, (cas != 0).then_some(cas)))
        }
    }
}

/// Write a shared-data value if its CAS token still equals `cas` (0: unconditionally).
/// A stale token is `Err` with [`code::CAS_MISMATCH`].
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
    // SAFETY: both pointer/length pairs describe live slices the host only reads.
    let status = unsafe {
        sys::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    };
    check("proxy_set_shared_data", status)
}

/// Answer the current stream locally (no gRPC status, no response-code details).
pub fn send_local_response(
    status_code: u32,
    details: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), HostError> {
    let headers = pairs::encode(headers).map_err(|e| {
        log::warn!("proxy_send_local_response: {e}");
        HostError::from_code("proxy_send_local_response (encode)", code::BAD_ARGUMENT)
    })?;
    // SAFETY: every pointer/length pair describes a live slice (or null with length 0) the host
    // only reads.
    let status = unsafe {
        sys::proxy_send_local_response(
            status_code,
            if details.is_empty() {
                std::ptr::null()
            } else {
                details.as_ptr()
            },
            details.len(),
            if body.is_empty() {
                std::ptr::null()
            } else {
                body.as_ptr()
            },
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    check("proxy_send_local_response", status)
}

/// Continue the (effective) stream's request after a pause.
pub fn continue_request() -> Result<(), HostError> {
    // SAFETY: no pointers are passed.
    let status = unsafe { sys::proxy_continue_stream(STREAM_HTTP_REQUEST) };
    check("proxy_continue_stream", status)
}

/// Reset the (effective) stream.
pub fn close_request() -> Result<(), HostError> {
    // SAFETY: no pointers are passed.
    let status = unsafe { sys::proxy_close_stream(STREAM_HTTP_REQUEST) };
    check("proxy_close_stream", status)
}

/// Make the following hostcalls of this VM call act on context `context_id`.
pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
    // SAFETY: no pointers are passed.
    let status = unsafe { sys::proxy_set_effective_context(context_id) };
    check("proxy_set_effective_context", status)
}

/// Define (or look up) a metric; its id.
pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, HostError> {
    let mut id: u32 = 0;
    // SAFETY: the name is a live `&str` the host only reads; the out-pointer is a live local.
    let status =
        unsafe { sys::proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) };
    check("proxy_define_metric", status).map(|()| id)
}

pub fn increment_metric(id: u32, delta: i64) -> Result<(), HostError> {
    // SAFETY: no pointers are passed.
    let status = unsafe { sys::proxy_increment_metric(id, delta) };
    check("proxy_increment_metric", status)
}

pub fn record_metric(id: u32, value: u64) -> Result<(), HostError> {
    // SAFETY: no pointers are passed.
    let status = unsafe { sys::proxy_record_metric(id, value) };
    check("proxy_record_metric", status)
}
