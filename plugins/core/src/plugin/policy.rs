//! What a policy implements to run in the skeleton, and the contexts the skeleton hands it.
//!
//! A policy has a root part ([`Policy`]: one per VM, built from its config) and a per-stream part
//! ([`StreamPolicy`]: one per HTTP stream that reaches it). The skeleton ([`super::runtime`]) owns
//! everything around them: the proxy-wasm contexts, config loading, ticks, the routing of call
//! responses, pausing and resuming streams, sending replies, and running several policies as one
//! ordered chain. A policy only reads its inputs through the contexts and says what should happen
//! ([`Flow`], [`Wake`]).

use super::host::{lossy, Buffer, GrpcCall, HeaderMap, Host, HostError, HostRef};
use crate::key::RequestView;
use crate::{LocalReply, Timestamp};
use serde_json::{Map, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// What a stream callback wants done with the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// On to the next policy of the chain (and then upstream, or downstream for responses).
    Continue,
    /// Hold the stream: this policy will wake it later with a [`Wake`] (request headers only).
    Pause,
    /// Body callbacks: keep buffering until more of the body (or its end) arrives.
    Buffer,
    /// Answer locally; the chain ends here. If the reply cannot be sent, `on_failure` decides.
    Reply(LocalReply, OnReplyFailure),
}

/// What to do when a local reply cannot be sent (it never has been seen to fail): each plugin's
/// documented failure mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReplyFailure {
    /// Fail open: the request goes on (to the next policy, then upstream).
    Continue,
    /// Fail closed: reset the stream, so it neither reaches the upstream nor hangs.
    Reset,
}

impl Flow {
    /// A reply that lets the request through if it cannot be sent.
    pub fn reply_or_continue(reply: LocalReply) -> Flow {
        Flow::Reply(reply, OnReplyFailure::Continue)
    }

    /// A reply that resets the stream if it cannot be sent.
    pub fn reply_or_reset(reply: LocalReply) -> Flow {
        Flow::Reply(reply, OnReplyFailure::Reset)
    }
}

/// A policy's request about a stream paused at it, made from any callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Let the paused stream go on to the next policy.
    Resume(u32),
    /// Answer the paused stream locally; if the reply cannot be sent, the failure mode decides (as
    /// for [`Flow::Reply`]: go on through the later stages and resume, or reset the stream).
    Reply(u32, LocalReply, OnReplyFailure),
    /// Ask the policy again ([`StreamPolicy::on_retry`]) with the paused stream's context.
    Retry(u32),
}

impl Wake {
    pub fn context(&self) -> u32 {
        match self {
            Wake::Resume(c) | Wake::Reply(c, _, _) | Wake::Retry(c) => *c,
        }
    }
}

/// The response to an HTTP call a policy dispatched, as delivered (a reset or timeout arrives
/// with no status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallResponse {
    pub token: u32,
    pub status: Option<u16>,
    pub body_size: usize,
}

impl CallResponse {
    /// The response to call `token` as it is being delivered (Envoy's `body_size`): its status
    /// read back from the call response's `:status` header (none if absent or not a number).
    /// The one reading of it, for the adapter's root context and for the test proxy alike, so
    /// tests see what a module sees.
    pub fn read(host: &dyn Host, token: u32, body_size: usize) -> CallResponse {
        let status = host
            .header(HeaderMap::CallResponse, ":status")
            .ok()
            .flatten()
            .and_then(|s| String::from_utf8(s).ok())
            .and_then(|s| s.parse().ok());
        CallResponse {
            token,
            status,
            body_size,
        }
    }
}

/// The end of a unary gRPC call a policy dispatched, as Envoy delivers it: `status` is the gRPC
/// status ([`grpc_status`](super::host::grpc_status)); with `OK`, the response message is `size`
/// bytes long (read it with `grpc_response`). Envoy's own timeout arrives as `UNAVAILABLE` (the
/// router's local 504), a reset or malformed framing as `INTERNAL` or `UNAVAILABLE`, each with no
/// message: tell a timeout by the time it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcResponse {
    pub token: u32,
    pub status: u32,
    pub size: usize,
}

/// Dispatch a gRPC call, its target checked before any hostcall: Envoy refuses an empty cluster
/// name (it reads it as a serialized `GrpcService`), and a call without a service or method
/// cannot route.
fn dispatch_grpc(host: &HostRef, call: &GrpcCall<'_>) -> Result<u32, HostError> {
    if call.cluster.is_empty() || call.service.is_empty() || call.method.is_empty() {
        return Err(HostError::from_code(
            "dispatch_grpc_call (needs a cluster, a service and a method)",
            super::host::code::BAD_ARGUMENT,
        ));
    }
    host.grpc_call(call)
}

/// The message of the gRPC response being delivered, at most `max` bytes (`size` as delivered).
fn grpc_message(host: &HostRef, size: usize, max: usize) -> Result<Vec<u8>, HostError> {
    host.buffer(Buffer::GrpcResponse, 0, size.min(max))
        .map(Option::unwrap_or_default)
        .map_err(|e| e.during("get_buffer(grpc_receive)"))
}

/// The root part of a policy: one per VM (worker), built when the config is loaded.
pub trait Policy {
    /// The per-stream part for a new stream that reached this policy.
    fn stream(&self, context_id: u32) -> Box<dyn StreamPolicy>;
    /// How often [`Policy::on_tick`] should run on each worker, if at all.
    fn tick_period(&self) -> Option<Duration> {
        None
    }
    fn on_tick(&self, _cx: &mut RootCx<'_>) {}
    /// The response to a call this policy dispatched with [`RootCx::http_call`].
    fn on_call_response(&self, _cx: &mut RootCx<'_>, _response: CallResponse) {}
    /// The end of a gRPC call this policy dispatched with [`RootCx::grpc_call`].
    fn on_grpc_response(&self, _cx: &mut RootCx<'_>, _response: GrpcResponse) {}
    /// The VM is shutting down (give back what this worker holds in shared data).
    fn on_done(&self, _cx: &mut RootCx<'_>) {}
}

/// The per-stream part of a policy. `on_end` is called exactly once for every stream whose
/// request headers reached the policy, however the stream ends (a reply by a later policy, a
/// client reset, a paused stream that never resumed).
pub trait StreamPolicy {
    fn on_request_headers(&mut self, cx: &mut StreamCx<'_>, end_of_stream: bool) -> Flow;
    fn on_request_body(&mut self, _cx: &mut StreamCx<'_>, _size: usize, _eos: bool) -> Flow {
        Flow::Continue
    }
    fn on_response_headers(&mut self, _cx: &mut StreamCx<'_>, _eos: bool) -> Flow {
        Flow::Continue
    }
    fn on_response_body(&mut self, _cx: &mut StreamCx<'_>, _size: usize, _eos: bool) -> Flow {
        Flow::Continue
    }
    /// A [`Wake::Retry`] for this stream, paused here: decide again.
    fn on_retry(&mut self, _cx: &mut StreamCx<'_>) -> Flow {
        Flow::Continue
    }
    /// The end of a gRPC call this stream's part dispatched with [`StreamCx::grpc_call`],
    /// delivered while the stream is paused here: decide again, as in [`StreamPolicy::on_retry`]
    /// (`Pause` keeps waiting, for another call still in flight). A response arriving after the
    /// stream ended, or once it is no longer paused here, is dropped by the runtime.
    fn on_grpc_response(&mut self, _cx: &mut StreamCx<'_>, _response: GrpcResponse) -> Flow {
        Flow::Continue
    }
    fn on_end(&mut self, _cx: &mut StreamCx<'_>) {}
}

/// What a root callback (tick, call response, shutdown) may do.
pub struct RootCx<'a> {
    pub(super) host: &'a HostRef,
    pub(super) now: Timestamp,
    pub(super) wakes: &'a mut Vec<Wake>,
    pub(super) calls: &'a mut Vec<u32>,
    pub(super) grpc_calls: &'a mut Vec<u32>,
}

impl RootCx<'_> {
    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub fn host(&self) -> &HostRef {
        self.host
    }

    /// Wake a stream paused at this policy (applied when the callback returns).
    pub fn wake(&mut self, wake: Wake) {
        self.wakes.push(wake);
    }

    /// Dispatch an HTTP call; its response comes back to [`Policy::on_call_response`].
    /// The host refuses (BadArgument) an unknown cluster or a request without `:method`, `:path`
    /// and `:authority`; that is checked here first, before any hostcall.
    pub fn http_call(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let has = |name: &str| headers.iter().any(|(n, _)| *n == name);
        if cluster.is_empty() || !(has(":method") && has(":path") && has(":authority")) {
            return Err(HostError::from_code(
                "dispatch_http_call (needs a cluster, :method, :path and :authority)",
                super::host::code::BAD_ARGUMENT,
            ));
        }
        let token = self.host.http_call(cluster, headers, body, timeout)?;
        self.calls.push(token);
        Ok(token)
    }

    /// The body of the call response being delivered, at most `max` bytes.
    pub fn call_response_body(
        &self,
        size: usize,
        max: usize,
    ) -> Result<Option<Vec<u8>>, HostError> {
        self.host
            .buffer(Buffer::CallResponseBody, 0, size.min(max))
            .map_err(|e| e.during("get_http_call_response_body"))
    }

    /// Dispatch a unary gRPC call; its end comes back to [`Policy::on_grpc_response`].
    pub fn grpc_call(&mut self, call: &GrpcCall<'_>) -> Result<u32, HostError> {
        let token = dispatch_grpc(self.host, call)?;
        self.grpc_calls.push(token);
        Ok(token)
    }

    /// The message of the gRPC response being delivered, at most `max` bytes.
    pub fn grpc_response(&self, size: usize, max: usize) -> Result<Vec<u8>, HostError> {
        grpc_message(self.host, size, max)
    }
}

/// Claims verified earlier in the chain (by jwt_auth), readable by the policies after it.
pub type Claims = Rc<Map<String, Value>>;

/// A header map as read from the host: names and raw values, in the proxy's order.
pub type HeaderPairs = Rc<Vec<(String, Vec<u8>)>>;

/// What the skeleton remembers of one stream's request while the chain runs over it, so each
/// header and property is read from the host at most once per request, whatever number of
/// policies ask for it. Interior mutability: [`RequestView`] reads take `&self`.
#[derive(Debug, Default)]
pub struct RequestCache {
    inner: RefCell<CacheInner>,
    /// Read the whole header map at the first lookup: in a chain several policies read headers,
    /// and one map read costs less than the single lookups it replaces (`tests/hostcalls.rs`).
    prefer_map: bool,
}

impl RequestCache {
    /// A cache that reads the whole header map on the first lookup (for chains).
    pub fn reading_whole_map() -> Self {
        RequestCache {
            inner: RefCell::default(),
            prefer_map: true,
        }
    }
}

#[derive(Debug, Default)]
struct CacheInner {
    /// Single-header lookups: lowercase name → first value.
    headers: Vec<(String, Option<String>)>,
    /// The whole request header map, once some policy asked for it.
    all: Option<HeaderPairs>,
    properties: Vec<(&'static [&'static str], Option<String>)>,
    response_all: Option<HeaderPairs>,
    claims: Option<Claims>,
}

fn first_value(all: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    all.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| lossy(v.clone()))
}

/// Replace every value of `name` in a cached map with `values`.
fn edit_pairs(all: &mut HeaderPairs, name: &str, values: &[Vec<u8>]) {
    let all = Rc::make_mut(all);
    all.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    all.extend(values.iter().map(|v| (name.to_owned(), v.clone())));
}

/// The host's clock as `clock` keeps it for one callback: read from the host on first use only,
/// since many callbacks never need the time and each read is a hostcall.
pub(super) fn read_once(clock: &Cell<Option<Timestamp>>, host: &HostRef) -> Timestamp {
    clock.get().unwrap_or_else(|| {
        let t = host.now();
        clock.set(Some(t));
        t
    })
}

/// What a stream callback may do: read the request (cached, see [`RequestCache`]), edit headers
/// and bodies, wake other streams paused at this policy, publish verified claims.
pub struct StreamCx<'a> {
    pub(super) host: &'a HostRef,
    pub(super) context_id: u32,
    /// The runtime's clock for this callback: read from the host on first use by any stage (many
    /// callbacks never need the time), then shared.
    pub(super) now: &'a Cell<Option<Timestamp>>,
    pub(super) cache: &'a RequestCache,
    pub(super) wakes: &'a mut Vec<Wake>,
    /// gRPC calls dispatched in this callback (routed back to this stream's part).
    pub(super) calls: &'a mut Vec<u32>,
    /// The host no longer knows this stream (see `stream_host`).
    pub(super) gone: bool,
}

impl StreamCx<'_> {
    /// The proxy's clock, read once per callback.
    pub fn now(&self) -> Timestamp {
        read_once(self.now, self.host)
    }

    pub fn context_id(&self) -> u32 {
        self.context_id
    }

    pub fn host(&self) -> &HostRef {
        self.host
    }

    /// The host, for calls about this stream: refused once the host has forgotten the stream
    /// (a wake found it gone and ended it), so a policy's `on_end` never reads or writes whichever
    /// other stream is current then. Metrics and shared data hold their own handle and still work.
    fn stream_host(&self) -> Result<&HostRef, HostError> {
        if self.gone {
            return Err(HostError::from_code(
                "stream gone",
                super::host::code::NOT_FOUND,
            ));
        }
        Ok(self.host)
    }

    /// Wake a stream paused at this policy (applied when the callback returns).
    pub fn wake(&mut self, wake: Wake) {
        self.wakes.push(wake);
    }

    /// Dispatch a unary gRPC call for this stream; its end comes back to this stream's
    /// [`StreamPolicy::on_grpc_response`] while the stream is paused here (return
    /// [`Flow::Pause`]). If the stream ends first, the runtime forgets the call: Envoy still
    /// ends it within `timeout`, and that late response reaches no policy.
    pub fn grpc_call(&mut self, call: &GrpcCall<'_>) -> Result<u32, HostError> {
        let token = dispatch_grpc(self.stream_host()?, call)?;
        self.calls.push(token);
        Ok(token)
    }

    /// The message of the gRPC response being delivered, at most `max` bytes.
    pub fn grpc_response(&self, size: usize, max: usize) -> Result<Vec<u8>, HostError> {
        grpc_message(self.host, size, max)
    }

    /// A string property, read once per stream. `path` must be a constant (it keys the cache).
    pub fn property(&self, path: &'static [&'static str]) -> Result<Option<String>, HostError> {
        if let Some((_, v)) = self
            .cache
            .inner
            .borrow()
            .properties
            .iter()
            .find(|(p, _)| *p == path)
        {
            return Ok(v.clone());
        }
        let value = self
            .stream_host()?
            .property(path)
            .map_err(|e| e.during("get_property"))?
            .map(lossy);
        self.cache
            .inner
            .borrow_mut()
            .properties
            .push((path, value.clone()));
        Ok(value)
    }

    /// The cluster the route chose (`xds.cluster_name`), read once per stream.
    pub fn cluster_name(&self) -> Option<String> {
        self.property(&["xds", "cluster_name"]).ok().flatten()
    }

    /// Envoy's `response.code_details` for this stream (not cached: it changes as the stream goes).
    pub fn response_code_details(&self) -> Option<String> {
        self.stream_host()
            .ok()?
            .property(&["response", "code_details"])
            .ok()
            .flatten()
            .map(lossy)
    }

    /// The whole request header map (read once per stream), values as raw bytes.
    pub fn request_headers(&self) -> Result<HeaderPairs, HostError> {
        self.header_map(HeaderMap::Request, "get_request_headers", |c| &mut c.all)
    }

    /// A whole header map, from its `slot` of the cache, or from the host into it (the first
    /// time; `op` names the hostcall in errors).
    fn header_map(
        &self,
        map: HeaderMap,
        op: &'static str,
        slot: fn(&mut CacheInner) -> &mut Option<HeaderPairs>,
    ) -> Result<HeaderPairs, HostError> {
        if let Some(all) = slot(&mut self.cache.inner.borrow_mut()) {
            return Ok(Rc::clone(all));
        }
        let all = Rc::new(self.stream_host()?.headers(map).map_err(|e| e.during(op))?);
        *slot(&mut self.cache.inner.borrow_mut()) = Some(Rc::clone(&all));
        Ok(all)
    }

    /// A request header's first value (Envoy's `getHeaderMapValue`), read once per stream.
    pub fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        {
            let inner = self.cache.inner.borrow();
            if let Some(all) = &inner.all {
                return Ok(first_value(all, name));
            }
            if let Some((_, v)) = inner.headers.iter().find(|(n, _)| n == name) {
                return Ok(v.clone());
            }
        }
        if self.cache.prefer_map {
            return Ok(first_value(&self.request_headers()?, name));
        }
        let value = self
            .stream_host()?
            .header(HeaderMap::Request, name)
            .map_err(|e| e.during("get_request_header"))?
            .map(lossy);
        self.cache
            .inner
            .borrow_mut()
            .headers
            .push((name.to_owned(), value.clone()));
        Ok(value)
    }

    /// Replace (`Some`) or remove (`None`) every value of a request header; later policies of the
    /// chain see the new value.
    pub fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        let values: Vec<Vec<u8>> = value.map(|v| v.as_bytes().to_vec()).into_iter().collect();
        self.set_request_values(name, &values)
    }

    /// Make `values` a request header's values, in order (none removes it).
    pub fn set_request_values(&mut self, name: &str, values: &[Vec<u8>]) -> Result<(), HostError> {
        replace_values(self.stream_host()?, HeaderMap::Request, name, values)?;
        let first = values.first().map(|v| lossy(v.clone()));
        let mut inner = self.cache.inner.borrow_mut();
        match inner.headers.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = first,
            None => inner.headers.push((name.to_owned(), first)),
        }
        if let Some(all) = &mut inner.all {
            edit_pairs(all, name, values);
        }
        Ok(())
    }

    /// The whole response header map (read once per stream).
    pub fn response_headers(&self) -> Result<HeaderPairs, HostError> {
        self.header_map(HeaderMap::Response, "get_response_headers", |c| {
            &mut c.response_all
        })
    }

    /// A response header's first value.
    pub fn response_header(&self, name: &str) -> Result<Option<String>, HostError> {
        if let Some(all) = &self.cache.inner.borrow().response_all {
            return Ok(first_value(all, name));
        }
        Ok(self
            .stream_host()?
            .header(HeaderMap::Response, name)
            .map_err(|e| e.during("get_response_header"))?
            .map(lossy))
    }

    /// The response's `:status`, if it parses.
    pub fn response_status(&self) -> Option<u16> {
        self.response_header(":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
    }

    pub fn set_response_header(
        &mut self,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), HostError> {
        let values: Vec<Vec<u8>> = value.map(|v| v.as_bytes().to_vec()).into_iter().collect();
        self.set_response_values(name, &values)
    }

    pub fn set_response_values(&mut self, name: &str, values: &[Vec<u8>]) -> Result<(), HostError> {
        replace_values(self.stream_host()?, HeaderMap::Response, name, values)?;
        if let Some(all) = &mut self.cache.inner.borrow_mut().response_all {
            edit_pairs(all, name, values);
        }
        Ok(())
    }

    /// The buffered body (`size` bytes from the start).
    pub fn body(&self, which: Buffer, size: usize) -> Result<Vec<u8>, HostError> {
        self.stream_host()?
            .buffer(which, 0, size)
            .map(Option::unwrap_or_default)
            .map_err(|e| e.during("get_buffer(body)"))
    }

    /// Replace the first `size` bytes of the buffered body (all of it) with `value`.
    pub fn set_body(&self, which: Buffer, size: usize, value: &[u8]) -> Result<(), HostError> {
        self.stream_host()?
            .set_buffer(which, 0, size, value)
            .map_err(|e| e.during("set_buffer(body)"))
    }

    /// Publish the claims of the token verified for this request, for the policies after this one.
    pub fn set_claims(&mut self, claims: Claims) {
        self.cache.inner.borrow_mut().claims = Some(claims);
    }

    pub fn claims(&self) -> Option<Claims> {
        self.cache.inner.borrow().claims.clone()
    }
}

/// Make `values` the header's values: none removes it, one replaces it, more are added after the
/// first.
fn replace_values(
    host: &HostRef,
    map: HeaderMap,
    name: &str,
    values: &[Vec<u8>],
) -> Result<(), HostError> {
    match values.split_first() {
        None => host
            .remove_header(map, name)
            .map_err(|e| e.during("remove_header")),
        Some((first, rest)) => {
            host.replace_header(map, name, first)
                .map_err(|e| e.during("replace_header"))?;
            for v in rest {
                host.add_header(map, name, v)
                    .map_err(|e| e.during("add_header"))?;
            }
            Ok(())
        }
    }
}

/// The request as policies see it: every lookup goes through the stream's cache.
impl RequestView for StreamCx<'_> {
    fn header(&self, name: &str) -> Option<String> {
        self.request_header(name).ok().flatten()
    }

    /// From the whole header map: the single-value hostcall gives only the first value of a
    /// repeated header. Except `authorization`, the hot path of every token check: Envoy keeps it
    /// as an inline header and joins repeated lines into one value with `,`, so the single-value
    /// hostcall already has all of them, and reading the whole map would cost about 1 µs per
    /// request. (If some policy already read the whole map, it is used.)
    fn header_values(&self, name: &str) -> Vec<String> {
        let cached = self.cache.inner.borrow().all.clone();
        let all = match cached {
            Some(all) => all,
            None if name == "authorization" => return self.header(name).into_iter().collect(),
            None => match self.request_headers() {
                Ok(all) => all,
                Err(_) => return self.header(name).into_iter().collect(),
            },
        };
        all.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| lossy(v.clone()))
            .collect()
    }

    fn path(&self) -> Option<String> {
        self.header(":path")
    }

    fn method(&self) -> Option<String> {
        self.header(":method")
    }

    fn source_address(&self) -> Option<String> {
        self.property(&["source", "address"]).ok().flatten()
    }

    fn route_name(&self) -> Option<String> {
        self.property(&["xds", "route_name"]).ok().flatten()
    }

    fn claim(&self, name: &str) -> Option<String> {
        claim_text(self.cache.inner.borrow().claims.as_deref()?, name)
    }
}

/// A claim as text: strings as they are, numbers and booleans in JSON form; other types (objects,
/// arrays, null) have no text form and read as absent. Dotted names reach into objects
/// (`realm.role`) when the top level has no claim of that exact name.
pub fn claim_text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    let value = claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let mut v = claims.get(parts.next()?)?;
        for p in parts {
            v = v.as_object()?.get(p)?;
        }
        Some(v)
    })?;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
