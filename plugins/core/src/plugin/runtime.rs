//! The generic root and stream: one implementation of everything around a policy, for every
//! standalone module and for the chain.
//!
//! A [`Runtime`] is one loaded configuration on one VM: its ordered stages (a standalone module
//! has one), the tick schedule, the calls in flight, the streams paused at some stage. A [`Chain`]
//! is one HTTP stream going through those stages:
//! - request headers run the stages in order; a stage that pauses holds the stream there until
//!   it wakes it ([`Wake`]), and the chain then goes on with the next stage; a local reply ends
//!   the chain;
//! - responses run through the stages that saw the request, in reverse order, as Envoy runs the
//!   encoder side of a filter chain;
//! - body callbacks run in order; a stage that buffers holds the later ones until the body is
//!   complete;
//! - the end of the stream reaches every stage that saw the request exactly once, however the
//!   stream ended.
//!
//! Wakes are queued while a callback runs and applied when it returns ([`Runtime::flush`]), so a
//! policy never acts on another stream while the host's effective context is its own stream.

use super::host::HostRef;
use super::policy::{
    CallResponse, Flow, GrpcResponse, OnReplyFailure, Policy, RequestCache, RootCx, StreamCx,
    StreamPolicy, Wake,
};
use crate::{LocalReply, Timestamp};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// One policy of a loaded configuration.
pub struct Stage {
    /// The plugin kind (`rate_limit`), for logs.
    pub kind: &'static str,
    pub policy: Box<dyn Policy>,
}

/// What the proxy should do after a stream callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// Stop iteration (paused, replied, or buffering a body).
    Pause,
}

/// Most wakes applied in one flush: a bound, so a policy that keeps waking cannot spin the VM.
const MAX_WAKES_PER_FLUSH: usize = 4096;

/// One loaded configuration on one VM.
pub struct Runtime {
    host: HostRef,
    /// The module's name for logs (`rate_limit`, or `palisade` for the chain).
    name: &'static str,
    stages: Vec<Stage>,
    /// Tick period of each stage and when it is next due.
    ticks: Vec<(Option<Duration>, Cell<Timestamp>)>,
    /// Call token → the stage that dispatched it.
    calls: RefCell<Vec<(u32, usize)>>,
    /// gRPC calls in flight (their own token space).
    grpc_calls: RefCell<Vec<GrpcCall>>,
    /// Streams paused at some stage, by context id.
    paused: RefCell<Paused>,
    /// Wakes queued by callbacks, with the stage that asked.
    pending: RefCell<Vec<(usize, Wake)>>,
    /// The proxy's clock for the callback being run, read on first use and shared by every stage
    /// (and every stream a wake reaches) in it: one hostcall per callback, not one per stage.
    clock: Cell<Option<Timestamp>>,
}

impl Runtime {
    pub fn new(host: HostRef, name: &'static str, stages: Vec<Stage>) -> Rc<Runtime> {
        let now = host.now();
        let ticks = stages
            .iter()
            .map(|s| (s.policy.tick_period(), Cell::new(now)))
            .collect();
        Rc::new(Runtime {
            host,
            name,
            stages,
            ticks,
            calls: RefCell::new(Vec::new()),
            grpc_calls: RefCell::new(Vec::new()),
            paused: RefCell::new(Paused::default()),
            pending: RefCell::new(Vec::new()),
            clock: Cell::new(None),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The VM's tick period: the shortest any stage asked for (each stage still runs only when its
    /// own period is due).
    pub fn tick_period(&self) -> Option<Duration> {
        self.ticks.iter().filter_map(|(p, _)| *p).min()
    }

    fn root_call(&self, stage: usize, f: impl FnOnce(&dyn Policy, &mut RootCx<'_>)) {
        let Some(s) = self.stages.get(stage) else {
            return;
        };
        let mut wakes = Vec::new();
        let mut calls = Vec::new();
        let mut grpc_calls = Vec::new();
        {
            let mut cx = RootCx {
                host: &self.host,
                now: self.now(),
                wakes: &mut wakes,
                calls: &mut calls,
                grpc_calls: &mut grpc_calls,
            };
            f(s.policy.as_ref(), &mut cx);
        }
        self.queue(stage, wakes);
        self.calls
            .borrow_mut()
            .extend(calls.into_iter().map(|token| (token, stage)));
        self.track_grpc(stage, None, grpc_calls);
    }

    fn track_grpc(&self, stage: usize, stream: Option<u32>, tokens: Vec<u32>) {
        if !tokens.is_empty() {
            self.grpc_calls
                .borrow_mut()
                .extend(tokens.into_iter().map(|token| GrpcCall {
                    token,
                    stage,
                    stream,
                }));
        }
    }

    /// How many gRPC calls the runtime is waiting for (a stream that ended leaves none behind).
    pub fn grpc_calls_in_flight(&self) -> usize {
        self.grpc_calls.borrow().len()
    }

    /// The end of a gRPC call, routed to the stage that dispatched it: its root part
    /// ([`Policy::on_grpc_response`]) for a call from a root callback, the dispatching stream's
    /// part ([`StreamPolicy::on_grpc_response`]) for a call from a stream, if that stream is still
    /// paused at the stage. Returns false for a token the runtime does not know (never
    /// dispatched, delivered already, or its stream ended).
    pub fn on_grpc_response(&self, response: GrpcResponse) -> bool {
        self.enter();
        let call = {
            let mut calls = self.grpc_calls.borrow_mut();
            let Some(i) = calls.iter().position(|c| c.token == response.token) else {
                return false;
            };
            calls.swap_remove(i)
        };
        match call.stream {
            None => self.root_call(call.stage, |p, cx| p.on_grpc_response(cx, response)),
            Some(context) => self.stream_grpc_response(call.stage, context, response),
        }
        self.flush();
        true
    }

    fn stream_grpc_response(&self, stage: usize, context: u32, response: GrpcResponse) {
        let found = self.in_paused_stream(stage, context, "gRPC response", "enter", |chain| {
            let flow = chain
                .call(stage, |p, cx| p.on_grpc_response(cx, response))
                .unwrap_or(Flow::Continue);
            chain.decided(stage, flow);
        });
        if !found {
            log::debug!(
                "palisade {}: gRPC response {} for stream {context}, no longer paused",
                self.name,
                response.token
            );
        }
    }

    /// Run `f` on stream `context` if it is still paused at `stage`, the host's effective context
    /// set to it (a wake or a stream's gRPC response comes in a root callback); then forget the
    /// stream if it is paused no more. A stream the host no longer knows is ended here instead
    /// (that gives back what it holds). `event` and `entering` say what was dropped and what
    /// failed, for the logs.
    /// Returns false if the stream is not paused (any more): it ended, or the event is stale.
    fn in_paused_stream(
        &self,
        stage: usize,
        context: u32,
        event: &str,
        entering: &str,
        f: impl FnOnce(&mut Chain),
    ) -> bool {
        let chain = self.paused.borrow().get(&context).cloned();
        let Some(handle) = chain else {
            return false;
        };
        let Ok(mut chain) = handle.try_borrow_mut() else {
            log::warn!(
                "palisade {}: stream {context} is busy; {event} dropped",
                self.name
            );
            return true;
        };
        if chain.paused_at != Some(stage) {
            return true;
        }
        if let Err(e) = self.host.set_effective_context(context) {
            log::warn!(
                "palisade {}: cannot {entering} stream {context}: {e}",
                self.name
            );
            chain.gone = true;
            chain.end();
            return true;
        }
        f(&mut chain);
        if chain.paused_at.is_none() {
            self.paused.borrow_mut().remove(&context);
        }
        true
    }

    fn queue(&self, stage: usize, wakes: Vec<Wake>) {
        if !wakes.is_empty() {
            self.pending
                .borrow_mut()
                .extend(wakes.into_iter().map(|w| (stage, w)));
        }
    }

    /// The VM's tick: every stage whose period is due.
    ///
    /// Due means due at the VM tick nearest its time (within half the VM's period): Envoy's tick
    /// timer is monotonic and the host clock is the wall clock read when the tick is dispatched,
    /// so two ticks may read a little less than one period apart. A due time more than one period
    /// ahead means the wall clock stepped back; the stage is due then too.
    pub fn on_tick(&self) {
        self.enter();
        let now = self.now();
        let slack = self.tick_period().unwrap_or_default() / 2;
        for (i, (period, due)) in self.ticks.iter().enumerate() {
            let Some(period) = period else { continue };
            if now.saturating_add(slack) < due.get() && due.get() <= now.saturating_add(*period) {
                continue;
            }
            due.set(now.saturating_add(*period));
            self.root_call(i, |p, cx| p.on_tick(cx));
        }
        self.flush();
    }

    /// An HTTP call response for the root context, routed to the stage that dispatched it.
    /// Returns false for a token no stage owns.
    pub fn on_call_response(&self, response: CallResponse) -> bool {
        self.enter();
        let stage = {
            let mut calls = self.calls.borrow_mut();
            let Some(i) = calls.iter().position(|(t, _)| *t == response.token) else {
                return false;
            };
            calls.swap_remove(i).1
        };
        self.root_call(stage, |p, cx| p.on_call_response(cx, response));
        self.flush();
        true
    }

    /// The clock of the current callback (see `clock`).
    fn now(&self) -> Timestamp {
        super::policy::read_once(&self.clock, &self.host)
    }

    /// A new callback from the host begins: its clock is read afresh.
    fn enter(&self) {
        self.clock.set(None);
    }

    /// The VM is going away.
    pub fn on_done(&self) {
        self.enter();
        for i in 0..self.stages.len() {
            self.root_call(i, |p, cx| p.on_done(cx));
        }
        self.pending.borrow_mut().clear();
    }

    /// A new HTTP stream.
    pub fn stream(self: &Rc<Self>, context_id: u32) -> Rc<RefCell<Chain>> {
        Rc::new(RefCell::new(Chain {
            runtime: Rc::clone(self),
            context_id,
            policies: Vec::new(),
            cache: if self.stages.len() > 1 {
                RequestCache::reading_whole_map()
            } else {
                RequestCache::default()
            },
            paused_at: None,
            gone: false,
            request_eos: false,
            request_body_done: 0,
            response_body_done: 0,
            ended: false,
        }))
    }

    /// Apply the queued wakes (each may run more of a stream's chain, and queue more).
    pub fn flush(&self) {
        let mut applied = 0;
        loop {
            let next = {
                let mut pending = self.pending.borrow_mut();
                if pending.is_empty() {
                    return;
                }
                pending.remove(0)
            };
            applied += 1;
            if applied > MAX_WAKES_PER_FLUSH {
                log::error!(
                    "palisade {}: more than {MAX_WAKES_PER_FLUSH} wakes in one callback; the rest are dropped",
                    self.name
                );
                self.pending.borrow_mut().clear();
                return;
            }
            self.apply_wake(next.0, next.1);
        }
    }

    fn apply_wake(&self, stage: usize, wake: Wake) {
        // A wake for a stream not paused (any more) is stale: nothing to do.
        self.in_paused_stream(stage, wake.context(), "wake", "wake", |chain| match wake {
            Wake::Resume(_) => chain.resume_after(stage),
            Wake::Reply(_, reply, on_failure) => {
                chain.unpause();
                if !chain.reply(stage, &reply, on_failure) {
                    chain.continue_resumed(stage + 1);
                }
            }
            Wake::Retry(_) => chain.retry(stage),
        });
    }
}

/// A gRPC call in flight: the stage that dispatched it, and the stream, for a stream's call.
#[derive(Debug, Clone, Copy)]
struct GrpcCall {
    token: u32,
    stage: usize,
    stream: Option<u32>,
}

/// The streams paused at some stage (few: a Vec beats a map here, in time and module size).
#[derive(Default)]
struct Paused(Vec<(u32, Rc<RefCell<Chain>>)>);

impl Paused {
    fn get(&self, id: &u32) -> Option<&Rc<RefCell<Chain>>> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, c)| c)
    }

    fn remove(&mut self, id: &u32) {
        if let Some(i) = self.0.iter().position(|(c, _)| c == id) {
            self.0.swap_remove(i);
        }
    }

    fn insert_if_absent(&mut self, id: u32, chain: &Rc<RefCell<Chain>>) {
        if self.get(&id).is_none() {
            self.0.push((id, Rc::clone(chain)));
        }
    }
}

/// One HTTP stream going through a runtime's stages.
pub struct Chain {
    runtime: Rc<Runtime>,
    context_id: u32,
    /// The per-stream part of every stage the request reached, in order.
    policies: Vec<Box<dyn StreamPolicy>>,
    cache: RequestCache,
    paused_at: Option<usize>,
    /// The host has forgotten this stream: its stages' ends may not touch it.
    gone: bool,
    request_eos: bool,
    /// Stages done with the request (response) body, as a bit set.
    request_body_done: u64,
    response_body_done: u64,
    ended: bool,
}

impl Chain {
    fn call<R>(
        &mut self,
        stage: usize,
        f: impl FnOnce(&mut dyn StreamPolicy, &mut StreamCx<'_>) -> R,
    ) -> Option<R> {
        let runtime = Rc::clone(&self.runtime);
        let policy = self.policies.get_mut(stage)?;
        let mut wakes = Vec::new();
        let mut grpc_calls = Vec::new();
        let result = {
            let mut cx = StreamCx {
                host: &runtime.host,
                context_id: self.context_id,
                now: &runtime.clock,
                gone: self.gone,
                cache: &self.cache,
                wakes: &mut wakes,
                calls: &mut grpc_calls,
            };
            f(policy.as_mut(), &mut cx)
        };
        runtime.queue(stage, wakes);
        runtime.track_grpc(stage, Some(self.context_id), grpc_calls);
        Some(result)
    }

    /// Request headers arrived: run the chain from the first stage.
    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        self.request_eos = end_of_stream;
        self.run_from(0)
    }

    /// Run `on_request_headers` of the stages from `start` on, creating their stream parts.
    fn run_from(&mut self, start: usize) -> Action {
        let runtime = Rc::clone(&self.runtime);
        let eos = self.request_eos;
        for i in start..runtime.stages.len() {
            if self.policies.len() == i {
                let Some(stage) = runtime.stages.get(i) else {
                    break;
                };
                self.policies.push(stage.policy.stream(self.context_id));
            }
            let flow = self
                .call(i, |p, cx| p.on_request_headers(cx, eos))
                .unwrap_or(Flow::Continue);
            match self.after(i, flow) {
                Some(action) => return action,
                None => continue,
            }
        }
        Action::Continue
    }

    /// Carry out a stage's flow; `None` means "on to the next stage".
    fn after(&mut self, stage: usize, flow: Flow) -> Option<Action> {
        match flow {
            Flow::Continue => None,
            Flow::Buffer => Some(Action::Pause),
            Flow::Pause => {
                // The registry entry was made by whoever runs the chain (`with_chain`, a wake).
                self.paused_at = Some(stage);
                Some(Action::Pause)
            }
            Flow::Reply(reply, on_failure) => {
                if self.reply(stage, &reply, on_failure) {
                    Some(Action::Pause)
                } else {
                    None
                }
            }
        }
    }

    /// Send a local reply. True if the stream is answered (or reset); false if it goes on
    /// (fail open): on to the next stage, and, for a paused stream, resumed after the last.
    fn reply(&mut self, stage: usize, reply: &LocalReply, on_failure: OnReplyFailure) -> bool {
        let host = &self.runtime.host;
        // Which policy decided, for access logs (`%FILTER_STATE(wasm.palisade.module:PLAIN)%`…):
        // Envoy gives Wasm no way to write dynamic metadata, so filter state it is.
        let kind = self.runtime.stages.get(stage).map_or("", |s| s.kind);
        let decided = [
            ("palisade.module", kind),
            ("palisade.decision", reply.details.as_str()),
            ("palisade.rule", reply.rule.as_deref().unwrap_or("")),
        ];
        for (path, value) in decided {
            if value.is_empty() {
                continue;
            }
            if let Err(e) = host.set_property(&[path], value.as_bytes()) {
                log::debug!("palisade {}: {e}", self.runtime.name);
            }
        }
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        log::debug!("local reply {} ({})", reply.status, reply.details);
        let Err(e) = host.send_reply(reply.status, &reply.details, &headers, &reply.body) else {
            return true;
        };
        log::error!("palisade {}: {e}", self.runtime.name);
        match on_failure {
            OnReplyFailure::Reset => {
                match host.reset_request() {
                    Ok(()) => log::warn!("local reply failed: stream reset instead"),
                    Err(e) => log::error!("local reply failed and {e}: the stream stays paused"),
                }
                true
            }
            OnReplyFailure::Continue => false,
        }
    }

    fn unpause(&mut self) {
        self.paused_at = None;
    }

    /// The stage the stream was paused at let it go: run the rest, then resume the stream.
    fn resume_after(&mut self, stage: usize) {
        self.unpause();
        self.continue_resumed(stage + 1);
    }

    fn continue_resumed(&mut self, start: usize) {
        if self.run_from(start) == Action::Continue {
            if let Err(e) = self.runtime.host.resume_request() {
                log::warn!(
                    "palisade {}: cannot resume stream {}: {e}",
                    self.runtime.name,
                    self.context_id
                );
            }
        }
    }

    /// A stage asked to decide again for the stream paused at it.
    fn retry(&mut self, stage: usize) {
        let flow = self
            .call(stage, |p, cx| p.on_retry(cx))
            .unwrap_or(Flow::Continue);
        self.decided(stage, flow);
    }

    /// The stage the stream is paused at decided again (a retry, a gRPC response).
    fn decided(&mut self, stage: usize, flow: Flow) {
        match flow {
            Flow::Pause | Flow::Buffer => {}
            Flow::Continue => self.resume_after(stage),
            Flow::Reply(reply, on_failure) => {
                self.unpause();
                if !self.reply(stage, &reply, on_failure) {
                    self.continue_resumed(stage + 1);
                }
            }
        }
    }

    fn body(&mut self, request: bool, size: usize, eos: bool) -> Action {
        let n = self.policies.len();
        let order: Vec<usize> = if request {
            (0..n).collect()
        } else {
            (0..n).rev().collect()
        };
        for i in order {
            let done = if request {
                self.request_body_done
            } else {
                self.response_body_done
            };
            let bit = 1u64
                .checked_shl(u32::try_from(i).unwrap_or(u32::MAX))
                .unwrap_or(0);
            if done & bit != 0 {
                continue;
            }
            let flow = self
                .call(i, |p, cx| {
                    if request {
                        p.on_request_body(cx, size, eos)
                    } else {
                        p.on_response_body(cx, size, eos)
                    }
                })
                .unwrap_or(Flow::Continue);
            match flow {
                Flow::Continue => {
                    if request {
                        self.request_body_done |= bit;
                    } else {
                        self.response_body_done |= bit;
                    }
                }
                Flow::Buffer | Flow::Pause => return Action::Pause,
                Flow::Reply(reply, on_failure) => {
                    if self.reply(i, &reply, on_failure) {
                        return Action::Pause;
                    }
                }
            }
        }
        if request && self.paused_at.is_some() {
            // Envoy resumes stopped request headers when the body callback continues: hold the
            // body (buffered) until the paused stage wakes the stream.
            return Action::Pause;
        }
        Action::Continue
    }

    pub fn on_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.body(true, size, end_of_stream)
    }

    pub fn on_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.body(false, size, end_of_stream)
    }

    /// Response headers: the stages that saw the request, last first.
    pub fn on_response_headers(&mut self, end_of_stream: bool) -> Action {
        // Still paused: Envoy answered the stream itself (a timeout); no wake may resume it now.
        self.unpause();
        for i in (0..self.policies.len()).rev() {
            let flow = self
                .call(i, |p, cx| p.on_response_headers(cx, end_of_stream))
                .unwrap_or(Flow::Continue);
            match flow {
                Flow::Continue => {}
                Flow::Buffer | Flow::Pause => return Action::Pause,
                Flow::Reply(reply, on_failure) => {
                    if self.reply(i, &reply, on_failure) {
                        return Action::Pause;
                    }
                }
            }
        }
        Action::Continue
    }

    /// The stream ended (log, done, or the context dropped): every stage once, the first time.
    pub fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.unpause();
        self.runtime.paused.borrow_mut().remove(&self.context_id);
        for i in 0..self.policies.len() {
            self.call(i, |p, cx| p.on_end(cx));
        }
        // Its calls still in flight: Envoy ends them within their timeout; nothing waits for them.
        let id = self.context_id;
        self.runtime
            .grpc_calls
            .borrow_mut()
            .retain(|c| c.stream != Some(id));
    }

    pub fn context_id(&self) -> u32 {
        self.context_id
    }

    pub fn runtime(&self) -> &Rc<Runtime> {
        &self.runtime
    }
}

/// Register the chain's own handle before a callback that may pause it (the registry is how a
/// wake finds a paused stream). Removed again when the stream is not left paused.
pub fn with_chain<R>(chain: &Rc<RefCell<Chain>>, f: impl FnOnce(&mut Chain) -> R) -> Option<R> {
    let (runtime, id) = {
        let c = chain.try_borrow().ok()?;
        (Rc::clone(&c.runtime), c.context_id)
    };
    runtime.enter();
    runtime.paused.borrow_mut().insert_if_absent(id, chain);
    let result = {
        let mut c = chain.try_borrow_mut().ok()?;
        let r = f(&mut c);
        if c.paused_at.is_none() {
            runtime.paused.borrow_mut().remove(&id);
        }
        r
    };
    runtime.flush();
    Some(result)
}
