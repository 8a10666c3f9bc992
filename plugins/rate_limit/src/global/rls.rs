//! The messages of Envoy's rate limit service protocol, `envoy.service.ratelimit.v3` (`rls.proto`
//! and the `RateLimitDescriptor` of `envoy.extensions.common.ratelimit.v3`), written out with
//! prost's derive: no code generation and no gRPC runtime in the module, only the fields
//! Palisade reads or writes. Unknown fields of a response (`dynamic_metadata`, `quota`, …) are
//! skipped by the decoder, as protobuf requires.
//!
//! Field numbers are the proto's; keep them in step with Envoy's API
//! (`api/envoy/service/ratelimit/v3/rls.proto`).

// prost's derive writes `impl` blocks that call `Default` etc.; nothing here can panic.

/// `envoy.service.ratelimit.v3.RateLimitService`.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
/// Its one unary method.
pub const METHOD: &str = "ShouldRateLimit";

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    /// 0 means 1 to the server.
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor` (its `limit` override and
/// per-descriptor `hits_addend` are not used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `RateLimitResponse.Code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Code {
    Unknown = 0,
    Ok = 1,
    OverLimit = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitResponse {
    #[prost(enumeration = "Code", tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
    #[prost(message, repeated, tag = "3")]
    pub response_headers_to_add: Vec<HeaderValue>,
    #[prost(message, repeated, tag = "4")]
    pub request_headers_to_add: Vec<HeaderValue>,
    #[prost(bytes = "vec", tag = "5")]
    pub raw_body: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DescriptorStatus {
    #[prost(enumeration = "Code", tag = "1")]
    pub code: i32,
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimit>,
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<ProtoDuration>,
}

/// `RateLimitResponse.RateLimit`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimit {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    #[prost(enumeration = "Unit", tag = "2")]
    pub unit: i32,
    #[prost(string, tag = "3")]
    pub name: String,
}

/// `RateLimitResponse.RateLimit.Unit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Unit {
    Unknown = 0,
    Second = 1,
    Minute = 2,
    Hour = 3,
    Day = 4,
    Month = 5,
    Year = 6,
}

impl Unit {
    /// The unit's length in seconds (a month as 30 days, a year as 365), `None` if unknown.
    pub fn seconds(self) -> Option<u64> {
        match self {
            Unit::Unknown => None,
            Unit::Second => Some(1),
            Unit::Minute => Some(60),
            Unit::Hour => Some(3_600),
            Unit::Day => Some(86_400),
            Unit::Month => Some(30 * 86_400),
            Unit::Year => Some(365 * 86_400),
        }
    }
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `envoy.config.core.v3.HeaderValue` (`raw_value` wins over `value` when set, as in Envoy).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

// Test builders: messages as a rate limit service sends them.

#[cfg(test)]
impl RateLimitResponse {
    /// An answer with this overall code and nothing else.
    pub(crate) fn of(code: Code) -> Self {
        RateLimitResponse {
            overall_code: code as i32,
            ..RateLimitResponse::default()
        }
    }
}

#[cfg(test)]
impl DescriptorStatus {
    /// A descriptor's status: its code, its limit (`limit` a `unit`), what remains of it and
    /// the seconds until it resets.
    pub(crate) fn of(code: Code, limit: u32, unit: Unit, remaining: u32, reset: i64) -> Self {
        DescriptorStatus {
            code: code as i32,
            current_limit: Some(RateLimit {
                requests_per_unit: limit,
                unit: unit as i32,
                name: String::new(),
            }),
            limit_remaining: remaining,
            duration_until_reset: Some(ProtoDuration {
                seconds: reset,
                nanos: 0,
            }),
        }
    }
}

#[cfg(test)]
impl HeaderValue {
    /// A header with a string value (no `raw_value`).
    pub(crate) fn text(key: &str, value: &str) -> Self {
        HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }
    }
}
