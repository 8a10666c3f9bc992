//! Host `Status` codes as domain errors.

use palisade_core::StoreError;
use proxy_wasm::types::Status;
use std::fmt;

/// A hostcall that did not return `Ok`: which operation, and the host's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    pub op: &'static str,
    pub status: Status,
}

impl HostError {
    pub fn new(op: &'static str, status: Status) -> Self {
        HostError { op, status }
    }
}

/// A human-readable name for every status the ABI defines.
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Ok => "Ok",
        Status::NotFound => "NotFound",
        Status::BadArgument => "BadArgument",
        Status::SerializationFailure => "SerializationFailure",
        Status::ParseFailure => "ParseFailure",
        Status::Empty => "Empty",
        Status::CasMismatch => "CasMismatch",
        Status::InternalFailure => "InternalFailure",
        _ => "Unknown",
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hostcall {} failed: {}",
            self.op,
            status_name(self.status)
        )
    }
}

impl std::error::Error for HostError {}

impl From<HostError> for StoreError {
    fn from(e: HostError) -> Self {
        match e.status {
            Status::CasMismatch => StoreError::CasMismatch,
            _ => StoreError::Host(e.to_string()),
        }
    }
}
