//! A scripted proxy for native tests of the skeleton and every policy's glue.
//!
//! It behaves like Envoy where tests could be fooled otherwise:
//! - a header lookup returns the first value of a repeated header (`getHeaderMapValue`), except
//!   `authorization`, whose lines Envoy joins with `,` (an inline header);
//! - shared data follows proxy-wasm-cpp-host: an absent key accepts any CAS, CAS 0 is
//!   unconditional, tokens come from one counter that skips 0; it is one map for every worker
//!   of the proxy, so two fakes standing for two workers share it
//!   ([`FakeHost::sharing_data_with`]);
//! - defining a metric twice gives the same id; reading a metric that was never defined is an
//!   error ([`FakeHost::stat`]), not 0, so a misspelled name cannot pass a `== 0` check;
//!   incrementing an unknown id, a histogram, or a counter by less than 1 fails as in Envoy;
//! - calls about "the stream" act on the effective context, which the driver sets as Envoy does
//!   before each stream callback; a context that has ended is `BadArgument` to switch to.
//!
//! - gRPC calls as Envoy's `grpcCall`: an empty cluster name is refused, and once the test names
//!   the clusters ([`FakeHost::grpc_clusters`]) an unknown one is `ParseFailure`; each call ends
//!   exactly once, scripted by the test ([`FakeHost::grpc_reply`]) or by Envoy's timer
//!   ([`FakeHost::grpc_expired`] once the fake clock passes the call's timeout: `UNAVAILABLE`, as
//!   Envoy's router answers a timed-out gRPC request with a local 504, which its gRPC client maps
//!   to 14; through Envoy 1.40 a timed-out call was seen not to end with DEADLINE_EXCEEDED); a
//!   response message is readable only while it is delivered.
//!
//! Faults: [`FakeHost::fail`] makes every later call of one operation fail with a status.
//! [`FakeHost::hostcalls`] counts the calls of each operation (a cache that should save hostcalls
//! can be checked).

use crate::plugin::host::{
    code, grpc_status, Buffer, GrpcCall, HeaderMap, Host, HostError, MetricKind,
};
use crate::plugin::GrpcResponse;
use crate::Timestamp;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

/// A reply a stream got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentReply {
    pub status: u16,
    pub details: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SentReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One stream as the fake proxy holds it.
#[derive(Debug, Clone, Default)]
pub struct FakeStream {
    pub request: Vec<(String, Vec<u8>)>,
    pub response: Vec<(String, Vec<u8>)>,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    pub properties: HashMap<String, Vec<u8>>,
    pub reply: Option<SentReply>,
    /// What the plugin set with `set_property`, by Envoy's filter-state name (`wasm.<path>`).
    pub filter_state: HashMap<String, Vec<u8>>,
    pub resumed: u32,
    pub reset: bool,
    pub ended: bool,
}

/// An HTTP call a policy dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCall {
    pub token: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

/// A gRPC call a policy dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeGrpcCall {
    pub token: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub metadata: Vec<(String, Vec<u8>)>,
    pub message: Vec<u8>,
    pub timeout: Duration,
    /// When it was dispatched (the fake clock).
    pub at: Timestamp,
    /// Ended (answered, failed or timed out): Envoy ends each call once.
    pub ended: bool,
}

/// How a scripted gRPC call ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcReply {
    /// Status OK with this response message (already serialized; any bytes).
    Message(Vec<u8>),
    /// A gRPC error status and no message (Envoy's `on_grpc_close`).
    Status(u32),
}

#[derive(Debug, Default)]
struct Metrics {
    by_name: BTreeMap<String, (u32, MetricKind)>,
    values: HashMap<u32, i64>,
    samples: HashMap<u32, Vec<u64>>,
}

impl Metrics {
    /// The kind of the metric defined with `id`; `NotFound` for `op` if none was.
    fn kind(&self, id: u32, op: &'static str) -> Result<MetricKind, HostError> {
        self.by_name
            .values()
            .find(|(i, _)| *i == id)
            .map(|(_, k)| *k)
            .ok_or_else(|| HostError::from_code(op, code::NOT_FOUND))
    }
}

/// The proxy's shared data: one map and one CAS counter for all its workers (VMs).
#[derive(Debug, Default)]
struct SharedData {
    map: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

#[derive(Debug, Default)]
struct State {
    now: Timestamp,
    current: u32,
    streams: HashMap<u32, FakeStream>,
    root_properties: HashMap<String, Vec<u8>>,
    configuration: Vec<u8>,
    shared: Rc<RefCell<SharedData>>,
    metrics: Metrics,
    tick: Option<Duration>,
    calls: Vec<FakeCall>,
    next_token: u32,
    call_response: Option<(Pairs, Vec<u8>)>,
    grpc_calls: Vec<FakeGrpcCall>,
    /// The clusters `grpc_call` knows, once a test names them (else every non-empty name).
    grpc_clusters: Option<Vec<String>>,
    /// The message of the gRPC response being delivered.
    grpc_message: Option<Vec<u8>>,
    faults: HashMap<&'static str, u32>,
    /// How many times each operation was called (failed calls included).
    hostcalls: HashMap<&'static str, usize>,
    clock_reads: usize,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct FakeHost {
    state: RefCell<State>,
}

type Pairs = Vec<(String, Vec<u8>)>;

fn key(path: &[&str]) -> String {
    path.join(".")
}

impl FakeHost {
    pub fn new() -> Self {
        let host = FakeHost::default();
        host.state.borrow_mut().now = Timestamp::from_nanos(1_700_000_000_000_000_000);
        host
    }

    /// Another worker of the same proxy: its own streams, metrics, calls and clock (set to this
    /// one's now), and the same shared data as `other` (and every fake sharing with it).
    pub fn sharing_data_with(other: &FakeHost) -> Self {
        let host = FakeHost::new();
        {
            let theirs = other.state.borrow();
            let mut mine = host.state.borrow_mut();
            mine.shared = Rc::clone(&theirs.shared);
            mine.now = theirs.now;
        }
        host
    }

    pub fn now_is(&self, t: Timestamp) {
        self.state.borrow_mut().now = t;
    }

    pub fn advance(&self, d: Duration) {
        let mut s = self.state.borrow_mut();
        s.now = s.now.saturating_add(d);
    }

    pub fn set_configuration(&self, json: &str) {
        self.state.borrow_mut().configuration = json.as_bytes().to_vec();
    }

    /// A root-level property (`plugin_name`), or one every stream sees unless it has its own.
    pub fn set_root_property(&self, path: &[&str], value: &str) {
        self.state
            .borrow_mut()
            .root_properties
            .insert(key(path), value.as_bytes().to_vec());
    }

    /// Make every later call of `op` (a [`Host`] method name) fail with `status`.
    pub fn fail(&self, op: &'static str, status: u32) {
        self.state.borrow_mut().faults.insert(op, status);
    }

    pub fn heal(&self, op: &'static str) {
        self.state.borrow_mut().faults.remove(op);
    }

    /// Every [`Host`] method called so far and how often (`now` included, as `"now"`).
    pub fn hostcall_counts(&self) -> Vec<(&'static str, usize)> {
        let st = self.state.borrow();
        let mut all: Vec<(&'static str, usize)> =
            st.hostcalls.iter().map(|(op, n)| (*op, *n)).collect();
        all.push(("now", st.clock_reads));
        all.sort();
        all
    }

    /// How many times the [`Host`] method `op` was called so far, failed calls included (`now`
    /// is not counted: it reads the clock, not the proxy).
    pub fn hostcalls(&self, op: &str) -> usize {
        self.state.borrow().hostcalls.get(op).copied().unwrap_or(0)
    }

    /// The headers of the call response being delivered (none outside a delivery), for the
    /// header hostcall `op`.
    fn call_response_headers(&self, op: &'static str) -> Result<Pairs, HostError> {
        self.check(op)?;
        let s = self.state.borrow();
        Ok(s.call_response
            .as_ref()
            .map(|(h, _)| h.clone())
            .unwrap_or_default())
    }

    fn check(&self, op: &'static str) -> Result<(), HostError> {
        *self.state.borrow_mut().hostcalls.entry(op).or_insert(0) += 1;
        match self.state.borrow().faults.get(op) {
            Some(c) => Err(HostError::from_code(op, *c)),
            None => Ok(()),
        }
    }

    /// Open a stream with these request headers (pseudo-headers included) and make it current.
    pub fn open_stream(&self, context: u32, headers: &[(&str, &str)]) {
        let mut s = self.state.borrow_mut();
        let stream = FakeStream {
            request: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect(),
            ..FakeStream::default()
        };
        s.streams.insert(context, stream);
        s.current = context;
    }

    /// Envoy switches the effective context to a stream before each of its callbacks.
    pub fn enter(&self, context: u32) {
        self.state.borrow_mut().current = context;
    }

    pub fn set_stream_property(&self, context: u32, path: &[&str], value: &str) {
        if let Some(st) = self.state.borrow_mut().streams.get_mut(&context) {
            st.properties.insert(key(path), value.as_bytes().to_vec());
        }
    }

    pub fn set_response(&self, context: u32, headers: &[(&str, &str)]) {
        if let Some(st) = self.state.borrow_mut().streams.get_mut(&context) {
            st.response = headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect();
        }
    }

    pub fn set_request_body(&self, context: u32, body: &[u8]) {
        if let Some(st) = self.state.borrow_mut().streams.get_mut(&context) {
            st.request_body = body.to_vec();
        }
    }

    /// The host forgets the stream (it ended).
    pub fn close_stream(&self, context: u32) {
        if let Some(st) = self.state.borrow_mut().streams.get_mut(&context) {
            st.ended = true;
        }
    }

    pub fn stream(&self, context: u32) -> Option<FakeStream> {
        self.state.borrow().streams.get(&context).cloned()
    }

    /// A request header of a stream as the upstream would get it (first value).
    pub fn request_header_of(&self, context: u32, name: &str) -> Option<String> {
        let s = self.state.borrow();
        let st = s.streams.get(&context)?;
        st.request
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn reply_of(&self, context: u32) -> Option<SentReply> {
        self.state.borrow().streams.get(&context)?.reply.clone()
    }

    /// A metric's value by its full name; an error if no such metric was defined.
    pub fn stat(&self, name: &str) -> Result<i64, String> {
        let s = self.state.borrow();
        let (id, _) = s.metrics.by_name.get(name).ok_or_else(|| {
            format!(
                "no metric named {name}; defined: {:?}",
                s.metrics.by_name.keys().collect::<Vec<_>>()
            )
        })?;
        Ok(s.metrics.values.get(id).copied().unwrap_or(0))
    }

    /// The samples recorded into a histogram.
    pub fn samples(&self, name: &str) -> Result<Vec<u64>, String> {
        let s = self.state.borrow();
        let (id, _) = s
            .metrics
            .by_name
            .get(name)
            .ok_or_else(|| format!("no metric named {name}"))?;
        Ok(s.metrics.samples.get(id).cloned().unwrap_or_default())
    }

    pub fn metric_names(&self) -> Vec<String> {
        self.state
            .borrow()
            .metrics
            .by_name
            .keys()
            .cloned()
            .collect()
    }

    pub fn tick_period(&self) -> Option<Duration> {
        self.state.borrow().tick
    }

    pub fn shared_keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .state
            .borrow()
            .shared
            .borrow()
            .map
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    }

    pub fn calls(&self) -> Vec<FakeCall> {
        self.state.borrow().calls.clone()
    }

    /// Make the call response being delivered have these headers and body.
    pub fn deliver_call_response(&self, headers: &[(&str, &str)], body: &[u8]) {
        self.state.borrow_mut().call_response = Some((
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body.to_vec(),
        ));
    }

    /// Only these clusters exist for `grpc_call` (Envoy: `ParseFailure` for any other).
    pub fn grpc_clusters(&self, names: &[&str]) {
        self.state.borrow_mut().grpc_clusters = Some(names.iter().map(|n| n.to_string()).collect());
    }

    pub fn grpc_calls(&self) -> Vec<FakeGrpcCall> {
        self.state.borrow().grpc_calls.clone()
    }

    /// The calls not ended yet.
    pub fn grpc_calls_open(&self) -> Vec<FakeGrpcCall> {
        let s = self.state.borrow();
        s.grpc_calls.iter().filter(|c| !c.ended).cloned().collect()
    }

    /// End call `token` as scripted, as Envoy does: the response message becomes the receive
    /// buffer and the returned [`GrpcResponse`] is what the SDK adapter hands the runtime.
    /// `None` for a call that does not exist or has ended already (Envoy ends a call once).
    pub fn grpc_reply(&self, token: u32, reply: GrpcReply) -> Option<GrpcResponse> {
        let mut s = self.state.borrow_mut();
        let call = s
            .grpc_calls
            .iter_mut()
            .find(|c| c.token == token && !c.ended)?;
        call.ended = true;
        let (message, status, size) = match reply {
            GrpcReply::Message(m) => {
                let n = m.len();
                (Some(m), grpc_status::OK, n)
            }
            GrpcReply::Status(code) => (None, code, 0),
        };
        s.grpc_message = message;
        Some(GrpcResponse {
            token,
            status,
            size,
        })
    }

    /// Envoy's timer: every call whose timeout has passed on the fake clock ends, in dispatch
    /// order, with `UNAVAILABLE` (Envoy's router times the request out with a local 504, and
    /// Envoy's gRPC client reads HTTP 504 as UNAVAILABLE, not DEADLINE_EXCEEDED).
    pub fn grpc_expired(&self) -> Vec<GrpcResponse> {
        let mut s = self.state.borrow_mut();
        let now = s.now;
        let mut out = Vec::new();
        for c in s.grpc_calls.iter_mut().filter(|c| !c.ended) {
            if c.at.saturating_add(c.timeout) <= now {
                c.ended = true;
                out.push(GrpcResponse {
                    token: c.token,
                    status: grpc_status::UNAVAILABLE,
                    size: 0,
                });
            }
        }
        if !out.is_empty() {
            s.grpc_message = None;
        }
        out
    }

    /// The delivery is over: the receive buffer is gone, as in Envoy after the callback.
    pub fn grpc_delivered(&self) {
        self.state.borrow_mut().grpc_message = None;
    }

    fn with_stream<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut FakeStream) -> R,
    ) -> Result<R, HostError> {
        self.check(op)?;
        let mut s = self.state.borrow_mut();
        let current = s.current;
        match s.streams.get_mut(&current) {
            Some(st) if !st.ended => Ok(f(st)),
            _ => Err(HostError::from_code(op, code::BAD_ARGUMENT)),
        }
    }

    fn map_of(st: &mut FakeStream, map: HeaderMap) -> &mut Vec<(String, Vec<u8>)> {
        match map {
            HeaderMap::Request | HeaderMap::CallResponse => &mut st.request,
            HeaderMap::Response => &mut st.response,
        }
    }
}

impl Host for FakeHost {
    fn now(&self) -> Timestamp {
        let mut st = self.state.borrow_mut();
        st.clock_reads += 1;
        st.now
    }

    fn header(&self, map: HeaderMap, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        if map == HeaderMap::CallResponse {
            let all = self.call_response_headers("header")?;
            return Ok(all.into_iter().find(|(n, _)| n == name).map(|(_, v)| v));
        }
        self.with_stream("header", |st| {
            let values: Vec<&Vec<u8>> = FakeHost::map_of(st, map)
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v)
                .collect();
            if name == "authorization" && values.len() > 1 {
                return Some(
                    values
                        .iter()
                        .map(|v| v.as_slice())
                        .collect::<Vec<_>>()
                        .join(&b","[..]),
                );
            }
            values.first().map(|v| v.to_vec())
        })
    }

    fn headers(&self, map: HeaderMap) -> Result<Vec<(String, Vec<u8>)>, HostError> {
        if map == HeaderMap::CallResponse {
            return self.call_response_headers("headers");
        }
        self.with_stream("headers", |st| FakeHost::map_of(st, map).clone())
    }

    fn replace_header(&self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.with_stream("replace_header", |st| {
            let m = FakeHost::map_of(st, map);
            match m.iter().position(|(n, _)| n == name) {
                Some(i) => {
                    m[i].1 = value.to_vec();
                    let mut j = i + 1;
                    while j < m.len() {
                        if m[j].0 == name {
                            m.remove(j);
                        } else {
                            j += 1;
                        }
                    }
                }
                None => m.push((name.to_owned(), value.to_vec())),
            }
        })
    }

    fn add_header(&self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.with_stream("add_header", |st| {
            FakeHost::map_of(st, map).push((name.to_owned(), value.to_vec()))
        })
    }

    fn remove_header(&self, map: HeaderMap, name: &str) -> Result<(), HostError> {
        self.with_stream("remove_header", |st| {
            FakeHost::map_of(st, map).retain(|(n, _)| n != name)
        })
    }

    fn buffer(
        &self,
        which: Buffer,
        start: usize,
        max: usize,
    ) -> Result<Option<Vec<u8>>, HostError> {
        let slice = |b: &[u8]| {
            let from = start.min(b.len());
            let to = start.saturating_add(max).min(b.len());
            Some(b[from..to].to_vec())
        };
        match which {
            Buffer::PluginConfiguration => {
                self.check("buffer")?;
                Ok(slice(&self.state.borrow().configuration))
            }
            Buffer::CallResponseBody => {
                self.check("buffer")?;
                let s = self.state.borrow();
                Ok(s.call_response.as_ref().and_then(|(_, b)| slice(b)))
            }
            Buffer::GrpcResponse => {
                self.check("buffer")?;
                let s = self.state.borrow();
                Ok(s.grpc_message.as_deref().and_then(slice))
            }
            Buffer::RequestBody => self.with_stream("buffer", |st| slice(&st.request_body)),
            Buffer::ResponseBody => self.with_stream("buffer", |st| slice(&st.response_body)),
        }
    }

    fn set_buffer(
        &self,
        which: Buffer,
        start: usize,
        size: usize,
        value: &[u8],
    ) -> Result<(), HostError> {
        self.with_stream("set_buffer", |st| {
            let b = match which {
                Buffer::RequestBody => &mut st.request_body,
                _ => &mut st.response_body,
            };
            let from = start.min(b.len());
            let to = start.saturating_add(size).min(b.len());
            b.splice(from..to, value.iter().copied());
        })
    }

    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        self.check("property")?;
        let k = key(path);
        let s = self.state.borrow();
        let own = s
            .streams
            .get(&s.current)
            .and_then(|st| st.properties.get(&k).cloned());
        Ok(own.or_else(|| s.root_properties.get(&k).cloned()))
    }

    /// As Envoy: the stream's filter state `wasm.<path>` (readable back as a property there too).
    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        self.with_stream("set_property", |st| {
            st.filter_state
                .insert(format!("wasm.{}", key(path)), value.to_vec());
        })
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        self.check("shared_data")?;
        let state = self.state.borrow();
        let shared = state.shared.borrow();
        Ok(match shared.map.get(key) {
            None => (None, None),
            Some((v, cas)) if v.is_empty() => (None, Some(*cas)),
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
        })
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        self.check("set_shared_data")?;
        let state = self.state.borrow();
        let mut s = state.shared.borrow_mut();
        if let Some((_, current)) = s.map.get(key) {
            if cas != 0 && cas != *current {
                return Err(HostError::from_code("set_shared_data", code::CAS_MISMATCH));
            }
        }
        s.next_cas = s.next_cas.wrapping_add(1);
        if s.next_cas == 0 {
            s.next_cas = 1;
        }
        let next = s.next_cas;
        s.map.insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }

    fn send_reply(
        &self,
        status: u16,
        details: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        self.with_stream("send_reply", |st| {
            st.reply = Some(SentReply {
                status,
                details: details.to_owned(),
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body: body.to_vec(),
            });
        })
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        self.check("set_effective_context")?;
        let mut s = self.state.borrow_mut();
        match s.streams.get(&context_id) {
            Some(st) if !st.ended => {
                s.current = context_id;
                Ok(())
            }
            _ => Err(HostError::from_code(
                "set_effective_context",
                code::BAD_ARGUMENT,
            )),
        }
    }

    fn resume_request(&self) -> Result<(), HostError> {
        self.with_stream("resume_request", |st| st.resumed += 1)
    }

    fn reset_request(&self) -> Result<(), HostError> {
        self.with_stream("reset_request", |st| st.reset = true)
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        self.check("set_tick_period")?;
        self.state.borrow_mut().tick = (!period.is_zero()).then_some(period);
        Ok(())
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        _body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        self.check("http_call")?;
        let mut s = self.state.borrow_mut();
        s.next_token += 1;
        let token = s.next_token;
        s.calls.push(FakeCall {
            token,
            cluster: cluster.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            timeout,
        });
        Ok(token)
    }

    fn grpc_call(&self, call: &GrpcCall<'_>) -> Result<u32, HostError> {
        self.check("grpc_call")?;
        let mut s = self.state.borrow_mut();
        let known = match &s.grpc_clusters {
            Some(names) => names.iter().any(|n| n == call.cluster),
            None => !call.cluster.is_empty(),
        };
        if !known {
            return Err(HostError::from_code("grpc_call", code::PARSE_FAILURE));
        }
        s.next_token += 1;
        let token = s.next_token;
        let at = s.now;
        s.grpc_calls.push(FakeGrpcCall {
            token,
            cluster: call.cluster.to_owned(),
            service: call.service.to_owned(),
            method: call.method.to_owned(),
            metadata: call
                .initial_metadata
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            message: call.message.to_vec(),
            timeout: call.timeout,
            at,
            ended: false,
        });
        Ok(token)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        self.check("define_metric")?;
        let mut s = self.state.borrow_mut();
        let next = u32::try_from(s.metrics.by_name.len()).unwrap_or(u32::MAX) + 1;
        let (id, existing) = *s
            .metrics
            .by_name
            .entry(name.to_owned())
            .or_insert((next, kind));
        if existing != kind {
            return Err(HostError::from_code("define_metric", code::BAD_ARGUMENT));
        }
        Ok(id)
    }

    /// As Envoy: an unknown id is `NotFound`; a histogram, or a counter by less than 1, is
    /// `BadArgument` (a counter never goes down).
    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError> {
        self.check("increment_metric")?;
        let mut s = self.state.borrow_mut();
        match s.metrics.kind(id, "increment_metric")? {
            MetricKind::Histogram => {
                return Err(HostError::from_code("increment_metric", code::BAD_ARGUMENT))
            }
            MetricKind::Counter if delta < 1 => {
                return Err(HostError::from_code("increment_metric", code::BAD_ARGUMENT))
            }
            _ => {}
        }
        *s.metrics.values.entry(id).or_insert(0) += delta;
        Ok(())
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        self.check("record_metric")?;
        let mut s = self.state.borrow_mut();
        match s.metrics.kind(id, "record_metric")? {
            MetricKind::Histogram => s.metrics.samples.entry(id).or_default().push(value),
            _ => {
                s.metrics
                    .values
                    .insert(id, i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
