//! Host status codes as domain errors: [`HostError`] lives in `palisade-core` (the skeleton and
//! the fake host use it natively); re-exported here with the SDK-specific conversions.

pub use palisade_core::plugin::host::{code, code_name, HostError};
use proxy_wasm::types::Status;

/// From an SDK `Status` (kept for the one call still made through the SDK).
pub fn from_status(op: &'static str, status: Status) -> HostError {
    HostError::from_code(op, status as u32)
}

/// A human-readable name for an SDK `Status`.
pub fn status_name(status: Status) -> &'static str {
    code_name(status as u32)
}
