//! Flow-control hostcalls: pause bookkeeping across streams, resuming, ticks.
//!
//! A filter that pauses a stream (returns `Action::Pause` from request headers) must resume it
//! later from another callback — usually the root context's `on_tick`, or another stream's end on
//! the same worker. The host only knows which stream a call is about through the *effective
//! context*, so resuming stream `id` from elsewhere is `set_effective_context(id)` followed by
//! `resume_http_request()` (or a local reply). Nothing can resume a stream on another worker.
//! Envoy defers the actual continue/reply until the current VM call returns, so these are safe to
//! call from inside another stream's callback.

use crate::error::HostError;
use proxy_wasm::hostcalls;
use std::time::Duration;

/// Make the following hostcalls of this VM call act on stream `context_id`. Fails with
/// `BadArgument`/`NotFound` if the host no longer knows that context (the stream has ended).
pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
    hostcalls::set_effective_context(context_id)
        .map_err(|s| HostError::new("set_effective_context", s))
}

/// Continue the (effective) stream's request after it was paused at request headers.
pub fn resume_http_request() -> Result<(), HostError> {
    hostcalls::resume_http_request().map_err(|s| HostError::new("resume_http_request", s))
}

/// Resume stream `context_id` (effective context switch, then continue its request).
pub fn resume_stream(context_id: u32) -> Result<(), HostError> {
    set_effective_context(context_id)?;
    resume_http_request()
}

/// Call the root context's `on_tick` every `period` (per VM, that is per worker thread).
/// A zero period stops the ticks.
pub fn set_tick_period(period: Duration) -> Result<(), HostError> {
    hostcalls::set_tick_period(period).map_err(|s| HostError::new("set_tick_period", s))
}
