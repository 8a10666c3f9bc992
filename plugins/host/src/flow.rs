//! Flow-control hostcalls: pause bookkeeping across streams, resuming, ticks.
//!
//! A filter that pauses a stream (returns `Action::Pause` from request headers) must resume it
//! later from another callback — usually the root context's `on_tick`, or another stream's end on
//! the same worker. The host only knows which stream a call is about through the *effective
//! context*, so resuming stream `id` from elsewhere is `set_effective_context(id)` followed by
//! `resume_http_request()` (or a local reply). Nothing can resume a stream on another worker.
//! Envoy defers the actual continue/reply until the current VM call returns, so these are safe to
//! call from inside another stream's callback.

use crate::abi;
use crate::error::HostError;
use std::time::Duration;

/// Make the following hostcalls of this VM call act on stream `context_id`. Fails with
/// `BadArgument`/`NotFound` if the host no longer knows that context (the stream has ended).
pub fn set_effective_context(context_id: u32) -> Result<(), HostError> {
    abi::set_effective_context(context_id).map_err(|e| e.during("set_effective_context"))
}

/// Continue the (effective) stream's request after it was paused at request headers.
pub fn resume_http_request() -> Result<(), HostError> {
    abi::continue_request().map_err(|e| e.during("resume_http_request"))
}

/// Reset the (effective) stream: the last resort for a paused stream that must neither continue
/// nor hang — e.g. a fail-closed plugin whose local reply could not be sent. Envoy resets the
/// downstream stream once the current VM call returns.
pub fn reset_http_request() -> Result<(), HostError> {
    abi::close_request().map_err(|e| e.during("reset_http_request"))
}

/// Resume stream `context_id` (effective context switch, then continue its request).
pub fn resume_stream(context_id: u32) -> Result<(), HostError> {
    set_effective_context(context_id)?;
    resume_http_request()
}

/// Call the root context's `on_tick` every `period` (per VM, that is per worker thread).
/// A zero period stops the ticks; a period longer than `u32::MAX` ms (49 days) is capped.
pub fn set_tick_period(period: Duration) -> Result<(), HostError> {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    abi::set_tick_period_millis(millis).map_err(|e| e.during("set_tick_period"))
}
