//! Host status codes as domain errors.
//!
//! A hostcall's status is kept as the raw `u32` the host returned, never as the SDK's `Status`
//! enum: a host may return a code the enum does not list (the ABI defines 13, the SDK names 8), and
//! an unknown discriminant in a Rust enum is undefined behaviour. [`code_name`] names every code the
//! proxy-wasm ABI (v0.2.1, `WasmResult` in proxy-wasm-cpp-host) defines.

use palisade_core::StoreError;
use proxy_wasm::types::Status;
use std::fmt;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    pub op: &'static str,
    pub code: u32,
}

impl HostError {
    /// From an SDK `Status` (kept for callers that still hold one).
    pub fn new(op: &'static str, status: Status) -> Self {
        HostError {
            op,
            code: status as u32,
        }
    }

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
pub fn code_name(code: u32) -> &'static str {
    match code {
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

/// A human-readable name for an SDK `Status`.
pub fn status_name(status: Status) -> &'static str {
    code_name(status as u32)
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
