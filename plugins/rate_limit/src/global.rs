//! Global limits: a rule's `global` section asks a rate limit service (Envoy's RLS v3 protocol,
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`: Limitador, envoyproxy/ratelimit)
//! whether a request is over a limit shared by every Envoy, and falls back to the rule's own local
//! buckets, or to `allow` / `deny`, when the service cannot answer in time.
//!
//! Everything here is pure: the `global` config (wire types, validation naming the field), the
//! descriptor built from the request ([`descriptor`]), the request message ([`request_message`]),
//! what an answer means ([`classify`]) and what the rule then does ([`step`]), and the reply
//! headers built from the service's answer. The glue (`filter/global.rs`) dispatches the call,
//! pauses the request, and applies the step.
//!
//! Failure mode: a timeout (Envoy's, on the call: an error status at or after `timeout`), any
//! gRPC error status, a reset, a message that
//! does not decode or is larger than [`MAX_RESPONSE_BYTES`], and a call that cannot even be
//! dispatched all become [`Answer::Failed`], and the rule's `on_error` decides: `local` (default)
//! takes a token from the rule's own local limits, `allow` lets the request through, `deny`
//! answers with the rule's reply and `retry-after: 1`. A shadow rule never rejects.
//!
//! An OVER_LIMIT answer's `Retry-After`: from the binding status's `duration_until_reset` when
//! the service sent `statuses` (envoyproxy/ratelimit); else the service's own `retry-after`, else
//! its reset header (Limitador's `X-RateLimit-Reset`), else 1 second.

pub mod rls;

use crate::config::Rule;
use palisade_core::config::{
    duration_in, list_len, number_in, one_of_or, validate_word, ConfigError, FieldPath,
};
use palisade_core::key::{ClientIpSource, KeyPart, KeyPartWire, RequestView};
use palisade_core::plugin::host::grpc_status;
use palisade_core::LocalReply;
use prost::Message;
use std::time::Duration;

palisade_core::wire! {
    /// Wire form of a rule's `global` section.
    pub struct GlobalWire {
        /// An Envoy cluster of HTTP/2 (gRPC) upstreams serving RLS v3.
        #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_NAME)))]
        cluster: String,
        #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_NAME)))]
        domain: String,
        /// The descriptor's entries, in order: `{"key": "user", "value": {"claim": "sub"}}`.
        #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_ENTRIES)))]
        descriptor: Vec<GlobalEntryWire>,
        #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h|d)$")))]
        timeout: Option<String>,
        #[cfg_attr(feature = "schema", schemars(range(min = 1, max = MAX_HITS_ADDEND)))]
        hits_addend: Option<u64>,
        #[cfg_attr(feature = "schema", schemars(extend("enum" = ["local", "allow", "deny", null])))]
        on_error: Option<String>,
    }
}

palisade_core::wire! {
    pub struct GlobalEntryWire {
        #[cfg_attr(
            feature = "schema",
            schemars(regex(pattern = r"^[A-Za-z0-9_.:-]{1,128}$"))
        )]
        key: String,
        value: KeyPartWire,
    }
}

/// What decides when the service gives no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The rule's own local limits (its `limits`, on this Envoy's buckets).
    Local,
    /// Let the request through.
    Allow,
    /// Reject it with the rule's reply.
    Deny,
}

/// A validated `global` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalSpec {
    pub cluster: String,
    pub domain: String,
    /// `(descriptor key, where its value comes from)`, in order.
    pub descriptor: Vec<(String, KeyPart)>,
    pub timeout: Duration,
    pub hits_addend: u32,
    pub on_error: OnError,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(20);
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_ENTRIES: usize = 16;
pub const MAX_NAME: usize = 255;
pub const MAX_HITS_ADDEND: u64 = 1_000_000_000;
/// A larger response is not read (an RLS answer for one descriptor is a few dozen bytes).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// At most this many of the service's `response_headers_to_add` are passed on.
pub const MAX_PASSED_HEADERS: usize = 16;
/// A descriptor value is cut to this many bytes (requests that differ only after it share a
/// global counter: stricter, never looser).
pub const MAX_VALUE_BYTES: usize = 1024;
/// Value of a descriptor entry whose request part is missing, in a rule with
/// `on_missing_key: shared_bucket` (the RLS protocol does not allow empty values).
pub const MISSING_VALUE: &str = "<missing>";

impl GlobalSpec {
    pub fn validate(wire: &GlobalWire, path: &FieldPath) -> Result<GlobalSpec, ConfigError> {
        let cluster = text(
            &wire.cluster,
            &path.field("cluster"),
            "an Envoy cluster name",
        )?;
        let domain = text(&wire.domain, &path.field("domain"), "the RLS domain")?;
        let entries = path.field("descriptor");
        list_len(
            wire.descriptor.len(),
            &entries,
            MAX_ENTRIES,
            "a descriptor needs at least one entry",
        )?;
        let mut descriptor: Vec<(String, KeyPart)> = Vec::new();
        for (i, entry) in wire.descriptor.iter().enumerate() {
            let at = entries.index(i);
            let key = entry_key(&entry.key, &at.field("key"))?;
            if descriptor.iter().any(|(k, _)| *k == key) {
                return Err(at
                    .field("key")
                    .invalid(&key, "descriptor keys must be unique"));
            }
            descriptor.push((key, KeyPart::validate(&entry.value, &at.field("value"))?));
        }
        let timeout = duration_in(
            wire.timeout.as_deref(),
            DEFAULT_TIMEOUT,
            &path.field("timeout"),
            MIN_TIMEOUT,
            MAX_TIMEOUT,
        )?;
        let hits_addend = number_in(
            wire.hits_addend,
            1,
            &path.field("hits_addend"),
            1,
            MAX_HITS_ADDEND,
        )?;
        let on_error = one_of_or(
            wire.on_error.as_deref(),
            OnError::Local,
            &path.field("on_error"),
            &[
                ("local", OnError::Local),
                ("allow", OnError::Allow),
                ("deny", OnError::Deny),
            ],
        )?;
        Ok(GlobalSpec {
            cluster,
            domain,
            descriptor,
            timeout,
            hits_addend: u32::try_from(hits_addend).unwrap_or(u32::MAX),
            on_error,
        })
    }
}

fn text(value: &str, path: &FieldPath, what: &str) -> Result<String, ConfigError> {
    let ok =
        !value.is_empty() && value.len() <= MAX_NAME && value.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(value.to_owned())
    } else {
        Err(path.invalid(
            value,
            format!("{what}: 1 to {MAX_NAME} printable ASCII characters, no spaces"),
        ))
    }
}

fn entry_key(key: &str, path: &FieldPath) -> Result<String, ConfigError> {
    validate_word(
        key,
        path,
        128,
        "_.:-",
        "use 1 to 128 characters from A-Z, a-z, 0-9, `_`, `.`, `:` and `-`",
    )
}

/// The descriptor's entries for this request, or `None` when a part is missing (with
/// `shared_bucket`, a missing part is sent as [`MISSING_VALUE`] instead). Values are cut to
/// [`MAX_VALUE_BYTES`].
pub fn descriptor(
    spec: &GlobalSpec,
    req: &dyn RequestView,
    client_ip: ClientIpSource,
    shared_bucket: bool,
) -> Option<Vec<(String, String)>> {
    spec.descriptor
        .iter()
        .map(|(key, part)| {
            let value = match part.extract(req, client_ip).filter(|v| !v.is_empty()) {
                Some(mut v) => {
                    truncate(&mut v, MAX_VALUE_BYTES);
                    v
                }
                None if shared_bucket => MISSING_VALUE.to_owned(),
                None => return None,
            };
            Some((key.clone(), value))
        })
        .collect()
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The serialized `RateLimitRequest`: the spec's domain, one descriptor, its `hits_addend`.
pub fn request_message(spec: &GlobalSpec, entries: &[(String, String)]) -> Vec<u8> {
    rls::RateLimitRequest {
        domain: spec.domain.clone(),
        descriptors: vec![rls::RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(key, value)| rls::Entry {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        }],
        hits_addend: spec.hits_addend,
    }
    .encode_to_vec()
}

/// Why the service gave no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The call could not be dispatched (the host's status: an unknown cluster, …).
    Dispatch(u32),
    /// The call's timeout passed before an answer (Envoy's timeout: `UNAVAILABLE` at or after it;
    /// or `DEADLINE_EXCEEDED`).
    Timeout,
    /// The call ended with this gRPC error status (a reset or bad framing: `INTERNAL`,
    /// `UNAVAILABLE`).
    Status(u32),
    /// The message was larger than [`MAX_RESPONSE_BYTES`].
    Oversized(usize),
    /// The message did not decode as a `RateLimitResponse`, or could not be read.
    Malformed,
}

/// What the service said.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Ok(rls::RateLimitResponse),
    OverLimit(rls::RateLimitResponse),
    /// `overall_code` UNKNOWN (or a code the protocol does not define): the request continues.
    Unknown,
    Failed(Failure),
}

/// Whether a call that failed after `elapsed` ended by Envoy's timeout: at or after nine tenths
/// of `timeout`. Envoy's timer runs on its event loop's cached clock and may fire a little before
/// the full timeout by the wall clock the module reads (seen through Envoy 1.40 under load), while
/// a service that is down fails at once.
pub fn timed_out(elapsed: Duration, timeout: Duration) -> bool {
    elapsed >= timeout.saturating_sub(timeout / 10)
}

/// The meaning of a call's end: its gRPC `status`, whether the call's `timeout` had passed by
/// then (Envoy's own timeout arrives as `UNAVAILABLE`, the status of its router's local 504, so
/// only the time tells it from a service that is down), and the message of `size` bytes that
/// `read` returns (called only for an OK status and a size within bounds).
pub fn classify(
    status: u32,
    size: usize,
    timed_out: bool,
    read: impl FnOnce(usize) -> Option<Vec<u8>>,
) -> Answer {
    match status {
        grpc_status::OK => {}
        grpc_status::DEADLINE_EXCEEDED => return Answer::Failed(Failure::Timeout),
        _ if timed_out => return Answer::Failed(Failure::Timeout),
        other => return Answer::Failed(Failure::Status(other)),
    }
    if size > MAX_RESPONSE_BYTES {
        return Answer::Failed(Failure::Oversized(size));
    }
    let Some(bytes) = read(size) else {
        return Answer::Failed(Failure::Malformed);
    };
    let Ok(response) = rls::RateLimitResponse::decode(bytes.as_slice()) else {
        return Answer::Failed(Failure::Malformed);
    };
    match rls::Code::try_from(response.overall_code) {
        Ok(rls::Code::Ok) => Answer::Ok(response),
        Ok(rls::Code::OverLimit) => Answer::OverLimit(response),
        _ => Answer::Unknown,
    }
}

/// What a rule does with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The request goes on; these headers go on its response.
    Allow(Vec<(String, String)>),
    /// The rule's reply.
    Limit(LocalReply),
    /// A shadow rule that would have limited.
    ShadowLimited,
    /// No usable answer: `on_error` decides (the glue runs the local tier for `Local`).
    Fallback(OnError),
}

/// The rule's step for an answer. `headers_on_allowed` adds `RateLimit-*` built from the
/// answer's `statuses` to an allowed response.
pub fn step(rule: &Rule, answer: &Answer, headers_on_allowed: bool) -> Step {
    let on_error = rule.global.as_ref().map_or(OnError::Allow, |g| g.on_error);
    match answer {
        Answer::Ok(response) => {
            let mut headers = if headers_on_allowed {
                quota_headers(&response.statuses)
            } else {
                Vec::new()
            };
            if headers.is_empty() {
                headers = passed_headers(&response.response_headers_to_add, &[]);
            }
            Step::Allow(headers)
        }
        Answer::Unknown => Step::Allow(Vec::new()),
        Answer::OverLimit(_) if rule.shadow => Step::ShadowLimited,
        Answer::OverLimit(response) => Step::Limit(over_limit_reply(rule, response)),
        Answer::Failed(_) => Step::Fallback(on_error),
    }
}

/// The rule's reply to an OVER_LIMIT answer: `RateLimit-*` and `Retry-After` from the binding
/// status when the service sent `statuses`; else its `response_headers_to_add`, passed on, with
/// `Retry-After` the service's own, else the seconds of its reset header
/// ([`retry_after_from_reset`]), else 1.
pub fn over_limit_reply(rule: &Rule, response: &rls::RateLimitResponse) -> LocalReply {
    let base = crate::policy::base_reply(rule);
    let quota = quota_headers(&response.statuses);
    if !quota.is_empty() {
        let retry = binding(&response.statuses)
            .and_then(|s| s.duration_until_reset)
            .map_or(1, ceil_secs)
            .max(1);
        let mut reply = base.header("retry-after", retry.to_string());
        reply.headers.extend(quota);
        return reply;
    }
    let ours: Vec<&str> = base.headers.iter().map(|(n, _)| n.as_str()).collect();
    let passed = passed_headers(&response.response_headers_to_add, &ours);
    let has_retry = passed.iter().any(|(n, _)| n == "retry-after");
    let mut reply = if has_retry {
        base
    } else {
        let retry = retry_after_from_reset(&passed).unwrap_or(1);
        base.header("retry-after", retry.to_string())
    };
    reply.headers.extend(passed);
    reply
}

/// The longest `Retry-After` taken from a service's reset header: a day. A larger value is
/// clamped (a broken service must not tell clients to go away for years).
pub const MAX_RETRY_AFTER_SECS: u64 = 86_400;

/// Seconds until the window resets, from the passed-on headers of a service that sends no
/// `statuses`: `x-ratelimit-reset` (Limitador's `DRAFT_VERSION_03`, envoyproxy/ratelimit's
/// headers) or `ratelimit-reset`, a whole number of seconds; at least 1, at most
/// [`MAX_RETRY_AFTER_SECS`]. `None` when neither is there or the value is not a number.
pub fn retry_after_from_reset(headers: &[(String, String)]) -> Option<u64> {
    headers
        .iter()
        .find(|(n, _)| n == "x-ratelimit-reset" || n == "ratelimit-reset")
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .map(|secs| secs.clamp(1, MAX_RETRY_AFTER_SECS))
}

/// The status that binds: the first over the limit, else the one with the fewest left.
fn binding(statuses: &[rls::DescriptorStatus]) -> Option<&rls::DescriptorStatus> {
    statuses
        .iter()
        .find(|s| s.code == rls::Code::OverLimit as i32)
        .or_else(|| statuses.iter().min_by_key(|s| s.limit_remaining))
}

/// `RateLimit-Limit/-Remaining/-Reset` of the binding status and `RateLimit-Policy` of every
/// status with a known limit; none when the service sent no status with a limit.
pub fn quota_headers(statuses: &[rls::DescriptorStatus]) -> Vec<(String, String)> {
    let Some(b) = binding(statuses) else {
        return Vec::new();
    };
    let Some(limit) = &b.current_limit else {
        return Vec::new();
    };
    let mut headers = vec![
        (
            "ratelimit-limit".to_owned(),
            limit.requests_per_unit.to_string(),
        ),
        (
            "ratelimit-remaining".to_owned(),
            b.limit_remaining.to_string(),
        ),
    ];
    if let Some(reset) = b.duration_until_reset {
        headers.push(("ratelimit-reset".to_owned(), ceil_secs(reset).to_string()));
    }
    let policy: Vec<String> = statuses
        .iter()
        .filter_map(|s| {
            let l = s.current_limit.as_ref()?;
            let secs = rls::Unit::try_from(l.unit).ok()?.seconds()?;
            Some(format!("{};w={secs}", l.requests_per_unit))
        })
        .collect();
    if !policy.is_empty() {
        headers.push(("ratelimit-policy".to_owned(), policy.join(", ")));
    }
    headers
}

/// Whole seconds, rounded up; a negative duration is 0.
fn ceil_secs(d: rls::ProtoDuration) -> u64 {
    let secs = u64::try_from(d.seconds).unwrap_or(0);
    if d.nanos > 0 && d.seconds >= 0 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

/// The service's headers that may go to the client: valid names (no pseudo-headers, none that
/// frame the message), valid values, none of `skip`, at most [`MAX_PASSED_HEADERS`].
fn passed_headers(headers: &[rls::HeaderValue], skip: &[&str]) -> Vec<(String, String)> {
    const FRAMING: &[&str] = &[
        "connection",
        "content-length",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
    ];
    headers
        .iter()
        .filter_map(|h| {
            let name = h.key.to_ascii_lowercase();
            let value = if h.raw_value.is_empty() {
                h.value.clone()
            } else {
                String::from_utf8(h.raw_value.clone()).ok()?
            };
            let name_ok = !name.is_empty()
                && name.len() <= 256
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            let value_ok = value.len() <= 4096 && value.bytes().all(|b| b == b'\t' || b >= 0x20);
            let value_ok = value_ok && !value.bytes().any(|b| b == 0x7f);
            (name_ok
                && value_ok
                && !FRAMING.contains(&name.as_str())
                && !skip.contains(&name.as_str()))
            .then_some((name, value))
        })
        .take(MAX_PASSED_HEADERS)
        .collect()
}

/// The protocol outcomes of a global rule, each a per-rule counter
/// (`palisade.rate_limit.<rule>.global_<outcome>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalEvent {
    Ok,
    OverLimit,
    Unknown,
    /// A gRPC error, a reset, a malformed or oversized message, a failed dispatch.
    Error,
    Timeout,
    /// `on_error` decided: the local tier, allow, deny.
    FallbackLocal,
    FallbackAllow,
    FallbackDeny,
}

impl palisade_core::plugin::MetricEvent for GlobalEvent {
    const NAMES: &'static [&'static str] = &[
        "global_ok",
        "global_over_limit",
        "global_unknown",
        "global_error",
        "global_timeout",
        "global_fallback_local",
        "global_fallback_allow",
        "global_fallback_deny",
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The per-rule histogram of the service's answer time, in milliseconds.
pub const LATENCY_METRIC: &str = "global_latency_ms";

impl Answer {
    /// Its counter.
    pub fn event(&self) -> GlobalEvent {
        match self {
            Answer::Ok(_) => GlobalEvent::Ok,
            Answer::OverLimit(_) => GlobalEvent::OverLimit,
            Answer::Unknown => GlobalEvent::Unknown,
            Answer::Failed(Failure::Timeout) => GlobalEvent::Timeout,
            Answer::Failed(_) => GlobalEvent::Error,
        }
    }
}

impl OnError {
    pub fn event(self) -> GlobalEvent {
        match self {
            OnError::Local => GlobalEvent::FallbackLocal,
            OnError::Allow => GlobalEvent::FallbackAllow,
            OnError::Deny => GlobalEvent::FallbackDeny,
        }
    }
}

#[cfg(test)]
mod tests;
