//! The proxy around a runtime, for native tests of every policy's glue: what Envoy and the SDK
//! adapter (`palisade-host`'s `skeleton.rs`) do around [`Runtime`], on a [`FakeHost`].
//!
//! Each policy's glue tests load the real policy with [`load_one`] or [`load_chain`] and drive
//! it as Envoy drives a module; this is that driver, written once so every policy is driven the
//! same way, and the way the adapter does it:
//! - a stream is one [`Runtime::stream`], created when its request headers arrive; before each
//!   of its callbacks the effective context is set to it (Envoy does), and each runs through
//!   [`with_chain`] (a re-entrant callback, never seen, lets the stream go on, as the adapter
//!   has it);
//! - a stream ends with `on_log`, then `on_done`, then its context is dropped: the chain is
//!   ended each of those three times, as the adapter's `Stream` does ([`Stream::finish`] and
//!   the [`Stream`]'s drop; one dropped unfinished ends the chain once, as a dropped context);
//! - root callbacks (ticks, call responses, the end of a gRPC call) run with the root context
//!   (0) current, and a call response is read back as the adapter reads it, by the same
//!   [`CallResponse::read`] (`:status` from the call's response headers).
//!
//! It is plain code on purpose (it ships in `palisade-core`, which is not a test-only crate): a
//! config that does not load is an `Err` for the test to report, nothing here panics.
//!
//! [`CLAIMS`] is a stage standing in for jwt_auth in a chain, for the policies that read
//! verified claims; [`OnRequest`] makes such a one-callback test stage out of a function.

use crate::fake_host::{FakeHost, GrpcReply, SentReply};
use crate::plugin::runtime::{with_chain, Action, Chain, Runtime};
use crate::plugin::{
    load_chain, load_one, CallResponse, Flow, HostRef, Kind, Policy, Setup, StreamCx, StreamPolicy,
};
use crate::ConfigError;
use serde_json::{Map, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// The plugin instance name every module is loaded with (Envoy's `plugin_name`).
pub const INSTANCE: &str = "edge";

/// The client address of a stream whose test does not name one ([`FakeProxy::start`]).
pub const CLIENT: &str = "192.0.2.1";

/// Request headers with this prefix are what [`CLAIMS`] publishes as verified claims:
/// `x-test-sub: alice` is the claim `{"sub": "alice"}`.
pub const CLAIM_HEADER_PREFIX: &str = "x-test-";

/// A stage standing in for jwt_auth in a chain (`{"claims": {}}`): publishes every request
/// header named `x-test-<claim>` as the verified claim `<claim>`, a string (none: no claims).
pub const CLAIMS: Kind = Kind {
    name: "claims",
    build: |_, _: &Setup<'_>| Ok(Box::new(OnRequest(publish_claims))),
};

fn publish_claims(cx: &mut StreamCx<'_>) -> Flow {
    let Ok(headers) = cx.request_headers() else {
        return Flow::Continue;
    };
    let claims: Map<String, Value> = headers
        .iter()
        .filter_map(|(name, value)| {
            let claim = name.strip_prefix(CLAIM_HEADER_PREFIX)?;
            let value = String::from_utf8_lossy(value).into_owned();
            Some((claim.to_owned(), Value::String(value)))
        })
        .collect();
    if !claims.is_empty() {
        cx.set_claims(Rc::new(claims));
    }
    Flow::Continue
}

/// A test stage that does one thing, the same for every stream, when the request headers
/// arrive, and nothing else: `Kind { name, build: |_, _| Ok(Box::new(OnRequest(f))) }`.
#[derive(Clone, Copy)]
pub struct OnRequest(pub fn(&mut StreamCx<'_>) -> Flow);

impl Policy for OnRequest {
    fn stream(&self, _: u32) -> Box<dyn StreamPolicy> {
        Box::new(*self)
    }
}

impl StreamPolicy for OnRequest {
    fn on_request_headers(&mut self, cx: &mut StreamCx<'_>, _: bool) -> Flow {
        (self.0)(cx)
    }
}

/// One worker of the proxy: its fake host (streams, clock, metrics, calls) and the runtime the
/// module loaded on it.
pub struct FakeProxy {
    pub fake: Rc<FakeHost>,
    pub runtime: Rc<Runtime>,
    next_id: Cell<u32>,
}

impl FakeProxy {
    /// A standalone module of `kind` with this config, on a worker of its own.
    pub fn one(kind: &Kind, config: &Value) -> Result<Self, ConfigError> {
        FakeProxy::one_on(FakeHost::new(), kind, config)
    }

    /// A standalone module on `fake` (say another worker of the same proxy,
    /// [`FakeHost::sharing_data_with`]).
    pub fn one_on(fake: FakeHost, kind: &Kind, config: &Value) -> Result<Self, ConfigError> {
        let fake = Rc::new(fake);
        let host: HostRef = fake.clone();
        let runtime = load_one(&host, kind, config.to_string().as_bytes(), INSTANCE)?;
        Ok(FakeProxy::around(fake, runtime))
    }

    /// The chain module of these kinds with this config (`{"chain": [...]}`).
    pub fn chain(kinds: &[Kind], config: &Value) -> Result<Self, ConfigError> {
        let fake = Rc::new(FakeHost::new());
        let host: HostRef = fake.clone();
        let runtime = load_chain(&host, kinds, config.to_string().as_bytes(), INSTANCE)?;
        Ok(FakeProxy::around(fake, runtime))
    }

    fn around(fake: Rc<FakeHost>, runtime: Rc<Runtime>) -> Self {
        FakeProxy {
            fake,
            runtime,
            next_id: Cell::new(1),
        }
    }

    /// Number this worker's streams from `id` on (Envoy numbers each worker's contexts apart).
    pub fn streams_from(self, id: u32) -> Self {
        self.next_id.set(id);
        self
    }

    /// A `GET` of `path` on `:authority api` from [`CLIENT`], with these headers too: the
    /// request headers reach the chain (end of stream: no body), the stream stays open.
    pub fn start(&self, path: &str, headers: &[(&str, &str)]) -> Stream {
        self.start_from(CLIENT, path, headers)
    }

    /// [`FakeProxy::start`] from the client address `ip` (port 40000).
    pub fn start_from(&self, ip: &str, path: &str, headers: &[(&str, &str)]) -> Stream {
        let id = self.next_id.get();
        self.next_id.set(id.saturating_add(1));
        let mut all = vec![(":method", "GET"), (":path", path), (":authority", "api")];
        all.extend_from_slice(headers);
        self.fake.open_stream(id, &all);
        self.fake
            .set_stream_property(id, &["source", "address"], &format!("{ip}:40000"));
        let mut stream = Stream {
            id,
            fake: Rc::clone(&self.fake),
            chain: self.runtime.stream(id),
            action: Action::Continue,
        };
        stream.action = stream
            .run(|c| c.on_request_headers(true))
            .unwrap_or(Action::Continue);
        stream
    }

    /// A whole request that is decided at once: [`FakeProxy::start_from`], then, if it went
    /// upstream, a `200` response without a body comes back through the chain, and the stream
    /// finishes. `Err` (saying why) if it was neither answered nor let through at once, or the
    /// response did not go on to the client.
    pub fn request_from(
        &self,
        ip: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Done, String> {
        let stream = self.start_from(ip, path, headers);
        let reply = stream.reply();
        let Some(status) = stream.status() else {
            let action = stream.action;
            return Err(format!(
                "neither answered nor let through: {action:?} {reply:?}"
            ));
        };
        let upstream = text(stream.upstream());
        if status == 200 {
            let next = stream.respond(&[(":status", "200")], true);
            if next != Some(Action::Continue) {
                return Err(format!("the response did not go on: {next:?}"));
            }
        }
        let response = text(stream.response());
        let action = stream.action;
        stream.finish();
        Ok(Done {
            status,
            action,
            reply,
            upstream,
            response,
        })
    }

    /// The VM's tick, in the root context.
    pub fn tick(&self) {
        self.fake.enter(0);
        self.runtime.on_tick();
    }

    /// `d` passes on this worker's clock, then the VM ticks.
    pub fn tick_after(&self, d: Duration) {
        self.fake.advance(d);
        self.tick();
    }

    /// Envoy delivers the response to HTTP call `token` (these headers and body, `body_size` as
    /// Envoy reports it) to the root context, which hands the runtime what the adapter hands it:
    /// the status read back from the response headers. That response, and whether a stage took
    /// it.
    pub fn call_response(
        &self,
        token: u32,
        headers: &[(&str, &str)],
        body: &[u8],
        body_size: usize,
    ) -> (CallResponse, bool) {
        self.fake.deliver_call_response(headers, body);
        self.fake.enter(0);
        let response = CallResponse::read(&*self.fake, token, body_size);
        (response, self.runtime.on_call_response(response))
    }

    /// Envoy ends gRPC call `token` as scripted, in the root context, and the adapter hands the
    /// end to the runtime; the message is readable only during that delivery. False if there is
    /// no such call still open (Envoy ends a call once).
    pub fn grpc_end(&self, token: u32, reply: GrpcReply) -> bool {
        self.fake.enter(0);
        let Some(response) = self.fake.grpc_reply(token, reply) else {
            return false;
        };
        self.runtime.on_grpc_response(response);
        self.fake.grpc_delivered();
        true
    }

    /// Envoy's timer ends every gRPC call past its timeout (on the fake clock).
    pub fn grpc_expire(&self) {
        self.fake.enter(0);
        for response in self.fake.grpc_expired() {
            self.runtime.on_grpc_response(response);
        }
    }
}

/// One HTTP stream as the adapter holds it: every callback after `enter`, through
/// [`with_chain`]; dropping it ends the chain, as the adapter's `Drop` does.
pub struct Stream {
    pub id: u32,
    fake: Rc<FakeHost>,
    chain: Rc<RefCell<Chain>>,
    /// What the request headers came to.
    pub action: Action,
}

impl Stream {
    /// A callback of this stream: `None` if the chain was re-entered (the adapter then lets the
    /// stream go on).
    pub fn run<R>(&self, f: impl FnOnce(&mut Chain) -> R) -> Option<R> {
        self.fake.enter(self.id);
        with_chain(&self.chain, f)
    }

    /// The upstream's response headers (these, `:status` included) reach the chain.
    pub fn respond(&self, headers: &[(&str, &str)], end_of_stream: bool) -> Option<Action> {
        self.fake.set_response(self.id, headers);
        self.run(|c| c.on_response_headers(end_of_stream))
    }

    /// The local reply the stream got.
    pub fn reply(&self) -> Option<SentReply> {
        self.fake.reply_of(self.id)
    }

    /// How many times the stream was resumed.
    pub fn resumed(&self) -> u32 {
        self.fake.stream(self.id).map_or(0, |s| s.resumed)
    }

    pub fn reset(&self) -> bool {
        self.fake.stream(self.id).is_some_and(|s| s.reset)
    }

    /// The status the client gets, once the request is decided: the reply's, for a request
    /// paused and answered; 200 for one that went upstream (let through at once, or paused and
    /// resumed once). `None` while it is held, and for any other mix (answered and resumed,
    /// answered without pausing), which Envoy would not show a client as one status.
    pub fn status(&self) -> Option<u16> {
        match (self.action, self.reply(), self.resumed()) {
            (Action::Pause, Some(r), 0) => Some(r.status),
            (Action::Continue, None, 0) | (Action::Pause, None, 1) => Some(200),
            _ => None,
        }
    }

    /// The request headers as the upstream gets them.
    pub fn upstream(&self) -> Vec<(String, Vec<u8>)> {
        self.fake
            .stream(self.id)
            .map(|s| s.request)
            .unwrap_or_default()
    }

    /// A request header as the upstream gets it (the first value).
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.fake.request_header_of(self.id, name)
    }

    /// The response headers as the client gets them.
    pub fn response(&self) -> Vec<(String, Vec<u8>)> {
        self.fake
            .stream(self.id)
            .map(|s| s.response)
            .unwrap_or_default()
    }

    /// Envoy's `on_log` and `on_done`; the host forgets the stream (what it got can still be
    /// read here). The chain is ended once more when this is dropped, as the context is.
    pub fn finish(&self) {
        self.run(Chain::end);
        self.run(Chain::end);
        self.fake.close_stream(self.id);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = with_chain(&self.chain, Chain::end);
    }
}

/// What a whole request came to ([`FakeProxy::request_from`]), once it is over.
#[derive(Debug)]
pub struct Done {
    /// What the client got: the reply's status, or 200 (it went upstream).
    pub status: u16,
    /// What the request headers came to.
    pub action: Action,
    pub reply: Option<SentReply>,
    /// The request headers as the upstream got them (values as text).
    pub upstream: Vec<(String, String)>,
    /// The response headers as the client got them (values as text; none if it was answered).
    pub response: Vec<(String, String)>,
}

impl Done {
    /// A request header as the upstream got it (the first value).
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        first(&self.upstream, name)
    }

    /// A response header as the client got it (the first value).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        first(&self.response, name)
    }
}

fn text(headers: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
