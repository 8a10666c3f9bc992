//! The generic root and HTTP contexts every module exports: the SDK's callbacks forwarded to the
//! pure skeleton (`palisade_core::plugin::runtime`), on [`ProxyHost`], the real [`Host`].
//!
//! A module names what it runs with [`export!`](crate::export): one policy kind (a standalone
//! module) or a list of kinds (the `palisade` chain module). Everything else — config loading and
//! its error in Envoy's log, the instance's shared-data namespace, ticks, call responses, pausing
//! and waking streams, replies, stream end exactly once — is here and in the runtime, once.

use crate::abi;
use crate::error::{from_status, HostError};
use palisade_core::plugin::host::{Buffer, GrpcCall, HeaderMap, Host, HostRef, MetricKind};
use palisade_core::plugin::runtime::{with_chain, Action as Next, Chain, Runtime};
use palisade_core::plugin::{CallResponse, GrpcResponse};
use palisade_core::Timestamp;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// The proxy-wasm ABI as a [`Host`]. Zero-sized: every call goes straight to [`abi`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyHost;

fn map_type(map: HeaderMap) -> MapType {
    match map {
        HeaderMap::Request => MapType::HttpRequestHeaders,
        HeaderMap::Response => MapType::HttpResponseHeaders,
        HeaderMap::CallResponse => MapType::HttpCallResponseHeaders,
    }
}

fn buffer_type(which: Buffer) -> BufferType {
    match which {
        Buffer::RequestBody => BufferType::HttpRequestBody,
        Buffer::ResponseBody => BufferType::HttpResponseBody,
        Buffer::CallResponseBody => BufferType::HttpCallResponseBody,
        Buffer::GrpcResponse => BufferType::GrpcReceiveBuffer,
        Buffer::PluginConfiguration => BufferType::PluginConfiguration,
    }
}

impl Host for ProxyHost {
    fn now(&self) -> Timestamp {
        crate::now()
    }

    fn header(&self, map: HeaderMap, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        abi::get_header_map_value(map_type(map), name)
    }

    fn headers(&self, map: HeaderMap) -> Result<Vec<(String, Vec<u8>)>, HostError> {
        abi::get_header_map_pairs(map_type(map))
    }

    fn replace_header(&self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError> {
        abi::replace_header_map_value(map_type(map), name, value)
    }

    fn add_header(&self, map: HeaderMap, name: &str, value: &[u8]) -> Result<(), HostError> {
        abi::add_header_map_value(map_type(map), name, value)
    }

    fn remove_header(&self, map: HeaderMap, name: &str) -> Result<(), HostError> {
        abi::remove_header_map_value(map_type(map), name)
    }

    fn buffer(
        &self,
        which: Buffer,
        start: usize,
        max: usize,
    ) -> Result<Option<Vec<u8>>, HostError> {
        abi::get_buffer(buffer_type(which), start, max)
    }

    fn set_buffer(
        &self,
        which: Buffer,
        start: usize,
        size: usize,
        value: &[u8],
    ) -> Result<(), HostError> {
        abi::set_buffer(buffer_type(which), start, size, value)
    }

    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        abi::get_property(path)
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        abi::set_property(path, value)
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        abi::get_shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        abi::set_shared_data(key, value, cas)
    }

    fn send_reply(
        &self,
        status: u16,
        details: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        abi::send_local_response(u32::from(status), details, headers, body)
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        abi::set_effective_context(context_id)
    }

    fn resume_request(&self) -> Result<(), HostError> {
        abi::continue_request()
    }

    fn reset_request(&self) -> Result<(), HostError> {
        abi::close_request()
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        // The ABI carries u32 milliseconds; a longer period (49 days) is capped.
        let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
        abi::set_tick_period_millis(millis)
    }

    /// The one hostcall still made through the SDK: `hostcalls::dispatch_http_call` records the
    /// call's token so the SDK routes `on_http_call_response` to the calling context (the registry
    /// is private to the SDK, and an unrecorded token would make the SDK's dispatcher panic). It
    /// panics only on a status other than Ok, BadArgument and InternalFailure; Envoy's `httpCall`
    /// returns no other, save InvalidMemoryAccess for pointers outside our memory, which slices
    /// cannot be. The request is checked before this is reached ([`RootCx::http_call`]), so an
    /// ill-formed one is refused before any hostcall. A reset or timeout arrives as a response with
    /// no headers and no body.
    ///
    /// [`RootCx::http_call`]: palisade_core::plugin::RootCx::http_call
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let timeout = timeout.min(Duration::from_millis(u64::from(u32::MAX)));
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), body, Vec::new(), timeout)
            .map_err(|s| from_status("dispatch_http_call", s))
    }

    /// Through the SDK, as `http_call` and for the same reason: `hostcalls::dispatch_grpc_call`
    /// records the token, so the SDK routes the call's end (`proxy_on_grpc_receive` with the
    /// message, `proxy_on_grpc_close` with an error status) to the calling context — a stream's
    /// [`Stream`], or the [`Root`] — which hands it to the runtime; an unknown token is dropped by
    /// the SDK, no panic. It panics only on a status other than Ok, ParseFailure (Envoy: unknown
    /// cluster) and InternalFailure (Envoy could not start the stream), which Envoy's `grpcCall`
    /// does not return for a cluster name (InvalidMemoryAccess needs pointers outside our memory,
    /// which slices cannot be). The target is checked first ([`StreamCx::grpc_call`]).
    ///
    /// [`StreamCx::grpc_call`]: palisade_core::plugin::StreamCx::grpc_call
    fn grpc_call(&self, call: &GrpcCall<'_>) -> Result<u32, HostError> {
        // The ABI carries u32 milliseconds, and Envoy reads 0 as "no timeout": at least 1 ms.
        let timeout = call.timeout.clamp(
            Duration::from_millis(1),
            Duration::from_millis(u64::from(u32::MAX)),
        );
        hostcalls::dispatch_grpc_call(
            call.cluster,
            call.service,
            call.method,
            call.initial_metadata.to_vec(),
            Some(call.message),
            timeout,
        )
        .map_err(|s| from_status("dispatch_grpc_call", s))
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        abi::define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError> {
        abi::increment_metric(id, delta)
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        abi::record_metric(id, value)
    }
}

/// Loads a module's stages: `(host, config bytes, plugin instance name)`.
pub type LoadFn = fn(&HostRef, &[u8], &str) -> Result<Rc<Runtime>, palisade_core::ConfigError>;

/// What a module runs: its name and how it loads its stages from the config. A function, not an
/// enum of "one or chain", so a standalone module does not link the chain's parser.
#[derive(Clone, Copy)]
pub struct Module {
    pub name: &'static str,
    pub load: LoadFn,
}

impl Module {
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The root context of every module.
pub struct Root {
    host: HostRef,
    module: Module,
    runtime: Option<Rc<Runtime>>,
}

impl Root {
    pub fn new(module: Module) -> Self {
        Root {
            host: Rc::new(ProxyHost),
            module,
            runtime: None,
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(runtime) = &self.runtime else { return };
        let response = CallResponse::read(&*self.host, token, body_size);
        if !runtime.on_call_response(response) {
            log::debug!(
                "palisade {}: response to an unknown call {token}",
                self.module.name()
            );
        }
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        if let Some(runtime) = &self.runtime {
            grpc_response(runtime, token, status, size);
        }
    }

    fn on_done(&mut self) -> bool {
        if let Some(runtime) = &self.runtime {
            runtime.on_done();
        }
        true
    }
}

/// A gRPC call ended (the SDK's `on_grpc_call_response`: status 0 with the message's size, or an
/// error status and 0): routed by the runtime to the stage, and stream, that dispatched it.
fn grpc_response(runtime: &Runtime, token: u32, status: u32, size: usize) {
    let response = GrpcResponse {
        token,
        status,
        size,
    };
    if !runtime.on_grpc_response(response) {
        log::debug!(
            "palisade {}: end of an unknown gRPC call {token} (status {status})",
            runtime.name()
        );
    }
}

impl RootContext for Root {
    /// Parse and validate the config; on failure log why (naming the field, never the whole
    /// config) and return false, so Envoy rejects it (refuses to start, or NACKs it over xDS).
    /// No shared-data writes here: this also runs in Envoy's throwaway canary VM.
    fn on_configure(&mut self, _size: usize) -> bool {
        let name = self.module.name();
        let bytes = match self.host.buffer(Buffer::PluginConfiguration, 0, usize::MAX) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                log::error!("palisade {name}: cannot read configuration: {e}");
                return false;
            }
        };
        let instance = self
            .host
            .property(&["plugin_name"])
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let loaded = (self.module.load)(&self.host, &bytes, &instance);
        let runtime = match loaded {
            Ok(r) => r,
            Err(e) => {
                log::error!("palisade {name}: rejected configuration: {e}");
                return false;
            }
        };
        if let Some(period) = runtime.tick_period() {
            if let Err(e) = self.host.set_tick_period(period) {
                log::error!("palisade {name}: cannot start ticks: {e}");
                return false;
            }
        }
        let kinds: Vec<&str> = runtime.stages().iter().map(|s| s.kind).collect();
        log::info!(
            "palisade {name}: configured ({}), instance {:?}",
            kinds.join(" → "),
            instance
        );
        self.runtime = Some(runtime);
        true
    }

    fn on_tick(&mut self) {
        if let Some(runtime) = &self.runtime {
            runtime.on_tick();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let runtime = self.runtime.as_ref()?;
        Some(Box::new(Stream {
            chain: runtime.stream(context_id),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The HTTP context of every module: each callback runs the stream's chain.
pub struct Stream {
    chain: Rc<RefCell<Chain>>,
}

fn action(next: Option<Next>) -> Action {
    match next {
        Some(Next::Pause) => Action::Pause,
        // A re-entrant callback (never seen) lets the stream go on rather than hang it.
        Some(Next::Continue) | None => Action::Continue,
    }
}

impl Stream {
    fn end(&self) {
        let _ = with_chain(&self.chain, Chain::end);
    }

    /// One stream callback through the chain, as the SDK's [`Action`].
    fn run(&self, callback: impl FnOnce(&mut Chain) -> Next) -> Action {
        action(with_chain(&self.chain, callback))
    }
}

impl Context for Stream {
    /// A call this stream dispatched ended (the SDK routes it here, the effective context set to
    /// this stream). The chain is not borrowed: the runtime finds it among the paused streams.
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        let runtime = match self.chain.try_borrow() {
            Ok(c) => Rc::clone(c.runtime()),
            Err(_) => return,
        };
        grpc_response(&runtime, token, status, size);
    }

    fn on_done(&mut self) -> bool {
        self.end();
        true
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.end();
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.run(|c| c.on_request_headers(end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.run(|c| c.on_request_body(body_size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.run(|c| c.on_response_headers(end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.run(|c| c.on_response_body(body_size, end_of_stream))
    }

    fn on_log(&mut self) {
        self.end();
    }
}

/// The entry point of a module: `palisade_host::export!(one: rate_limit::KIND)` for a standalone
/// module, `palisade_host::export!(chain: &KINDS)` for the chain.
#[macro_export]
macro_rules! export {
    (one: $kind:expr) => {
        $crate::export!(@module $crate::skeleton::Module {
            name: $kind.name,
            load: |host, bytes, instance| {
                $crate::palisade_core::plugin::load_one(host, &$kind, bytes, instance)
            },
        });
    };
    (chain: $kinds:expr) => {
        $crate::export!(@module $crate::skeleton::Module {
            name: "palisade",
            load: |host, bytes, instance| {
                $crate::palisade_core::plugin::load_chain(host, $kinds, bytes, instance)
            },
        });
    };
    (@module $module:expr) => {
        #[allow(unsafe_code)] // `main!` expands to the `#[no_mangle]` entry point the host calls.
        mod palisade_entry {
            use super::*;
            $crate::proxy_wasm::main! {{
                $crate::init($module.name(), $crate::proxy_wasm::types::LogLevel::Info);
                $crate::proxy_wasm::set_root_context(|_| -> Box<dyn $crate::proxy_wasm::traits::RootContext> {
                    Box::new($crate::skeleton::Root::new($module))
                });
            }}
        }
    };
}
