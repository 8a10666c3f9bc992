//! The generic root and stream, driven as the SDK adapter (`palisade-host`'s skeleton) drives
//! them, against [`FakeHost`]: small scripted policies in a chain loaded by [`load_chain`], one
//! [`Runtime::stream`] per HTTP stream, every callback through [`with_chain`] after the host's
//! effective context is set to the stream, as Envoy does.

use super::runtime::{with_chain, Action, Chain, Runtime};
use super::*;
use crate::fake_host::FakeHost;
use crate::key::RequestView;
use crate::LocalReply;
use serde_json::json;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Scripted policies.

/// What every scripted stage did, in order: `"<stage>:<event>:<context>"`.
type Log = Rc<RefCell<Vec<String>>>;

type StreamFn = Rc<dyn Fn(&mut StreamCx<'_>) -> Flow>;
type BodyFn = Rc<dyn Fn(&mut StreamCx<'_>, usize, bool) -> Flow>;
type RootFn = Rc<dyn Fn(&mut RootCx<'_>, Root)>;
type GrpcFn = Rc<dyn Fn(&mut StreamCx<'_>, GrpcResponse) -> Flow>;
/// Wakes a stage sends at its next root callback (tick, call response).
type Inbox = Rc<RefCell<Vec<Wake>>>;

/// A root callback of a scripted stage.
#[derive(Debug, Clone, Copy)]
enum Root {
    Tick,
    Call,
    Grpc(GrpcResponse),
    Done,
}

/// The builder methods of [`Script`] that script one callback each: `on_x(f)` makes `f` the
/// stage's answer to that callback.
macro_rules! scripting {
    ($($method:ident => $field:ident: $callback:ty;)*) => {$(
        fn $method(mut self, f: $callback) -> Self {
            self.$field = Rc::new(f);
            self
        }
    )*};
}

/// One scripted stage: what it answers to each callback (all `Continue` unless scripted).
#[derive(Clone)]
struct Script {
    name: &'static str,
    log: Log,
    request_headers: StreamFn,
    request_body: BodyFn,
    response_headers: StreamFn,
    response_body: BodyFn,
    retry: StreamFn,
    grpc: GrpcFn,
    end: Rc<dyn Fn(&mut StreamCx<'_>)>,
    root: RootFn,
    tick: Option<Duration>,
    inbox: Inbox,
}

impl Script {
    fn new(name: &'static str, log: &Log) -> Self {
        Script {
            name,
            log: Rc::clone(log),
            request_headers: Rc::new(|_| Flow::Continue),
            request_body: Rc::new(|_, _, _| Flow::Continue),
            response_headers: Rc::new(|_| Flow::Continue),
            response_body: Rc::new(|_, _, _| Flow::Continue),
            retry: Rc::new(|_| Flow::Continue),
            grpc: Rc::new(|_, _| Flow::Continue),
            end: Rc::new(|_| {}),
            root: Rc::new(|_, _| {}),
            tick: None,
            inbox: Rc::new(RefCell::new(Vec::new())),
        }
    }

    /// A stage that pauses every request, and ticks every second to send the wakes queued in its
    /// inbox.
    fn holding(name: &'static str, log: &Log) -> Self {
        Script::new(name, log)
            .on_request(|_| Flow::Pause)
            .ticking(SECOND)
    }

    /// A stage that answers every request with [`limited`], failing open or closed as `reply`
    /// (`Flow::reply_or_continue` or `Flow::reply_or_reset`) says.
    fn limiting(name: &'static str, log: &Log, reply: fn(LocalReply) -> Flow) -> Self {
        Script::new(name, log).on_request(move |_| reply(limited()))
    }

    scripting! {
        on_request => request_headers: impl Fn(&mut StreamCx<'_>) -> Flow + 'static;
        on_request_body => request_body: impl Fn(&mut StreamCx<'_>, usize, bool) -> Flow + 'static;
        on_response => response_headers: impl Fn(&mut StreamCx<'_>) -> Flow + 'static;
        on_response_body => response_body: impl Fn(&mut StreamCx<'_>, usize, bool) -> Flow + 'static;
        on_retry => retry: impl Fn(&mut StreamCx<'_>) -> Flow + 'static;
        on_end => end: impl Fn(&mut StreamCx<'_>) + 'static;
        on_grpc => grpc: impl Fn(&mut StreamCx<'_>, GrpcResponse) -> Flow + 'static;
        on_root => root: impl Fn(&mut RootCx<'_>, Root) + 'static;
    }

    fn ticking(mut self, period: Duration) -> Self {
        self.tick = Some(period);
        self
    }

    fn inbox(&self) -> Inbox {
        Rc::clone(&self.inbox)
    }

    /// Send the queued wakes from a root callback.
    fn send(&self, cx: &mut RootCx<'_>) {
        for wake in self.inbox.borrow_mut().drain(..) {
            cx.wake(wake);
        }
    }

    fn note(&self, event: impl std::fmt::Display) {
        self.log.borrow_mut().push(format!("{}:{event}", self.name));
    }
}

struct ScriptPolicy(Rc<Script>);

impl Policy for ScriptPolicy {
    fn stream(&self, context_id: u32) -> Box<dyn StreamPolicy> {
        Box::new(ScriptStream {
            script: Rc::clone(&self.0),
            context_id,
        })
    }

    fn tick_period(&self) -> Option<Duration> {
        self.0.tick
    }

    fn on_tick(&self, cx: &mut RootCx<'_>) {
        self.0.note("tick");
        (self.0.root)(cx, Root::Tick);
        self.0.send(cx);
    }

    fn on_call_response(&self, cx: &mut RootCx<'_>, response: CallResponse) {
        self.0.note(format_args!("call:{}", response.token));
        (self.0.root)(cx, Root::Call);
        self.0.send(cx);
    }

    fn on_grpc_response(&self, cx: &mut RootCx<'_>, response: GrpcResponse) {
        self.0
            .note(format_args!("grpc:{}:{}", response.token, response.status));
        (self.0.root)(cx, Root::Grpc(response));
        self.0.send(cx);
    }

    fn on_done(&self, cx: &mut RootCx<'_>) {
        self.0.note("done");
        (self.0.root)(cx, Root::Done);
    }
}

struct ScriptStream {
    script: Rc<Script>,
    context_id: u32,
}

impl StreamPolicy for ScriptStream {
    fn on_request_headers(&mut self, cx: &mut StreamCx<'_>, _eos: bool) -> Flow {
        assert_eq!(cx.context_id(), self.context_id);
        self.script.note(format_args!("req:{}", self.context_id));
        (self.script.request_headers)(cx)
    }

    fn on_request_body(&mut self, cx: &mut StreamCx<'_>, size: usize, eos: bool) -> Flow {
        self.script
            .note(format_args!("req_body:{}:{size}:{eos}", self.context_id));
        (self.script.request_body)(cx, size, eos)
    }

    fn on_response_headers(&mut self, cx: &mut StreamCx<'_>, _eos: bool) -> Flow {
        self.script.note(format_args!("resp:{}", self.context_id));
        (self.script.response_headers)(cx)
    }

    fn on_response_body(&mut self, cx: &mut StreamCx<'_>, size: usize, eos: bool) -> Flow {
        self.script
            .note(format_args!("resp_body:{}:{size}:{eos}", self.context_id));
        (self.script.response_body)(cx, size, eos)
    }

    fn on_retry(&mut self, cx: &mut StreamCx<'_>) -> Flow {
        self.script.note(format_args!("retry:{}", self.context_id));
        (self.script.retry)(cx)
    }

    fn on_grpc_response(&mut self, cx: &mut StreamCx<'_>, response: GrpcResponse) -> Flow {
        self.script.note(format_args!(
            "grpc:{}:{}:{}",
            self.context_id, response.token, response.status
        ));
        (self.script.grpc)(cx, response)
    }

    fn on_end(&mut self, cx: &mut StreamCx<'_>) {
        self.script.note(format_args!("end:{}", self.context_id));
        (self.script.end)(cx);
    }
}

/// What a build saw of its [`Setup`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Built {
    kind: &'static str,
    store_prefix: String,
    metric_prefix: String,
}

thread_local! {
    /// The scripts the next builds take, in chain order (each test runs on its own thread).
    static QUEUED: RefCell<VecDeque<Script>> = const { RefCell::new(VecDeque::new()) };
    static BUILT: RefCell<Vec<Built>> = const { RefCell::new(Vec::new()) };
}

/// The scripted kinds' build: the entry's config is `{}` or `{"fail_at": "<field path>"}`.
fn build(bytes: &[u8], setup: &Setup<'_>) -> Result<Box<dyn Policy>, ConfigError> {
    let config: Value = serde_json::from_slice(bytes)
        .map_err(|e| FieldPath::root().invalid("(json)", e.to_string()))?;
    if let Some(at) = config.get("fail_at").and_then(Value::as_str) {
        // A nested error, as a policy's own parser reports it: `rules[0].limits`.
        let path = FieldPath::root().field("rules").index(0).field(at);
        return Err(path.invalid("0", "scripted failure"));
    }
    BUILT.with(|b| {
        b.borrow_mut().push(Built {
            kind: setup.kind(),
            store_prefix: setup.store("default").prefix().as_str().to_owned(),
            metric_prefix: setup.metric_prefix(),
        })
    });
    let script = QUEUED
        .with(|q| q.borrow_mut().pop_front())
        .ok_or_else(|| FieldPath::root().missing("no script queued for this stage"))?;
    Ok(Box::new(ScriptPolicy(Rc::new(script))))
}

const ALPHA: Kind = Kind {
    name: "alpha",
    build,
};
const BETA: Kind = Kind {
    name: "beta",
    build,
};
const KINDS: [Kind; 2] = [ALPHA, BETA];

// ---------------------------------------------------------------------------------------------
// The proxy: what Envoy and the SDK adapter do around the runtime.

struct Proxy {
    fake: Rc<FakeHost>,
    runtime: Rc<Runtime>,
}

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn host() -> (Rc<FakeHost>, HostRef) {
    let fake = Rc::new(FakeHost::new());
    let host: HostRef = fake.clone();
    (fake, host)
}

/// A chain of the scripts, every entry of kind `alpha`, loaded as the chain module loads it.
fn chain(scripts: Vec<Script>) -> Proxy {
    let kinds = vec!["alpha"; scripts.len()];
    chain_of(&kinds, scripts)
}

fn chain_of(kinds: &[&str], scripts: Vec<Script>) -> Proxy {
    let (fake, host) = host();
    let entries: Vec<Value> = kinds.iter().map(|k| json!({ *k: {} })).collect();
    let config = json!({ "chain": entries }).to_string();
    QUEUED.with(|q| {
        let mut q = q.borrow_mut();
        q.clear();
        q.extend(scripts);
    });
    let runtime = match load_chain(&host, &KINDS, config.as_bytes(), "edge") {
        Ok(r) => r,
        Err(e) => panic!("chain config rejected: {e}"),
    };
    Proxy { fake, runtime }
}

impl Proxy {
    /// A new HTTP stream with these request headers (the SDK's `create_http_context`).
    fn open(&self, id: u32, headers: &[(&str, &str)]) -> Stream {
        self.fake.open_stream(id, headers);
        Stream {
            id,
            fake: Rc::clone(&self.fake),
            chain: self.runtime.stream(id),
        }
    }

    /// A new stream for `/` whose request headers have gone through the chain (paused, replied
    /// to or let through: the test looks at which).
    fn requested(&self, id: u32) -> Stream {
        let s = self.open(id, &[(":path", "/")]);
        s.request_headers();
        s
    }

    fn tick(&self) {
        self.runtime.on_tick();
    }

    /// Every local reply fails to send from now on (it never has been seen to, but the failure
    /// modes must hold if it does).
    fn fail_replies(&self) {
        self.fake
            .fail("send_reply", crate::plugin::host::code::INTERNAL_FAILURE);
    }
}

/// One HTTP stream as the SDK adapter holds it: on drop it ends the chain, as the adapter's
/// `Drop` does.
struct Stream {
    id: u32,
    fake: Rc<FakeHost>,
    chain: Rc<RefCell<Chain>>,
}

impl Stream {
    fn run(&self, f: impl FnOnce(&mut Chain) -> Action) -> Action {
        self.fake.enter(self.id);
        with_chain(&self.chain, f).expect("the chain is not re-entered")
    }

    fn request_headers(&self) -> Action {
        self.run(|c| c.on_request_headers(false))
    }

    fn request_body(&self, size: usize, eos: bool) -> Action {
        self.run(|c| c.on_request_body(size, eos))
    }

    fn response_headers(&self) -> Action {
        self.run(|c| c.on_response_headers(false))
    }

    fn response_body(&self, size: usize, eos: bool) -> Action {
        self.run(|c| c.on_response_body(size, eos))
    }

    /// Envoy's `on_log` then `on_done`, then the context is dropped: the three ways the adapter
    /// ends a chain, all of them, as for every stream.
    fn finish(self) {
        self.fake.enter(self.id);
        let _ = with_chain(&self.chain, Chain::end); // on_log
        let _ = with_chain(&self.chain, Chain::end); // on_done
        drop(self); // Drop
    }

    fn resumed(&self) -> u32 {
        self.fake.stream(self.id).map(|s| s.resumed).unwrap_or(0)
    }

    fn reply(&self) -> Option<crate::fake_host::SentReply> {
        self.fake.reply_of(self.id)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = with_chain(&self.chain, Chain::end);
    }
}

/// The stream events of the log (ticks left out), in order, one word each: `"a:req:1 b:req:1"`.
fn events(log: &Log) -> String {
    entries(log).join(" ")
}

/// The stream events of the log (ticks left out).
fn entries(log: &Log) -> Vec<String> {
    log.borrow()
        .iter()
        .filter(|e| !e.ends_with(":tick"))
        .cloned()
        .collect()
}

const SECOND: Duration = Duration::from_secs(1);

/// Have a stage send a wake from its next tick (stages that send wakes tick every second), with
/// another stream current, as in a root callback.
fn send(p: &Proxy, inbox: &Inbox, wake: Wake) {
    inbox.borrow_mut().push(wake);
    p.fake.enter(0);
    p.fake.advance(SECOND);
    p.tick();
}

/// Stages that let everything through, as scripted by [`Script::new`].
fn stages<const N: usize>(log: &Log, names: [&'static str; N]) -> Vec<Script> {
    names
        .into_iter()
        .map(|name| Script::new(name, log))
        .collect()
}

/// A body callback that buffers until the end of the body, then lets it go on.
fn buffer_until_end(_: &mut StreamCx<'_>, _: usize, end_of_stream: bool) -> Flow {
    if end_of_stream {
        Flow::Continue
    } else {
        Flow::Buffer
    }
}

fn count(log: &Log, entry: &str) -> usize {
    log.borrow().iter().filter(|e| *e == entry).count()
}

fn limited() -> LocalReply {
    LocalReply::new(429, "test_limited").header("retry-after", "1")
}

// ---------------------------------------------------------------------------------------------
// Request headers, replies, stream end.

#[test]
fn request_headers_run_the_stages_in_order() {
    let log = log();
    let p = chain(stages(&log, ["a", "b", "c"]));
    let s = p.open(1, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Continue);
    assert_eq!(events(&log), "a:req:1 b:req:1 c:req:1");
}

#[test]
fn a_reply_ends_the_chain_and_later_stages_never_see_the_request() {
    let log = log();
    let p = replying(&log);
    let s = p.open(1, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Pause);
    let reply = s.reply().expect("a local reply");
    assert_eq!(reply.status, 429);
    assert_eq!(reply.details, "test_limited");
    assert_eq!(reply.header("retry-after"), Some("1"));
    s.finish();
    assert_eq!(events(&log), "a:req:1 b:req:1 a:end:1 b:end:1");
}

#[test]
fn every_stage_ends_exactly_once_though_log_done_and_drop_all_end_the_stream() {
    let log = log();
    let p = chain(stages(&log, ["a", "b"]));
    let s = p.requested(1);
    p.fake.set_response(1, &[(":status", "200")]);
    s.response_headers();
    s.finish();
    assert_eq!(count(&log, "a:end:1"), 1);
    assert_eq!(count(&log, "b:end:1"), 1);
    assert_eq!(
        events(&log),
        "a:req:1 b:req:1 b:resp:1 a:resp:1 a:end:1 b:end:1"
    );
}

#[test]
fn a_stream_dropped_without_log_or_done_still_ends_every_entered_stage() {
    let log = log();
    let p = chain(stages(&log, ["a", "b"]));
    let s = p.requested(1);
    drop(s);
    assert_eq!(count(&log, "a:end:1"), 1);
    assert_eq!(count(&log, "b:end:1"), 1);
}

#[test]
fn a_stream_that_never_got_request_headers_ends_no_stage() {
    let log = log();
    let p = chain(stages(&log, ["a"]));
    let s = p.open(1, &[]);
    s.finish();
    assert!(entries(&log).is_empty());
}

#[test]
fn a_client_reset_while_paused_ends_each_entered_stage_once_and_a_later_wake_is_ignored() {
    let log = log();
    let b = Script::holding("b", &log);
    let inbox = b.inbox();
    let p = chain(vec![Script::new("a", &log), b, Script::new("c", &log)]);
    let s = p.open(1, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Pause);
    // The client goes away: Envoy forgets the stream, logs it, and destroys the context.
    p.fake.close_stream(1);
    s.finish();
    assert_eq!(count(&log, "a:end:1"), 1);
    assert_eq!(count(&log, "b:end:1"), 1);
    let entered = p.fake.hostcalls("set_effective_context");
    send(&p, &inbox, Wake::Resume(1));
    assert_eq!(p.fake.hostcalls("set_effective_context"), entered);
    assert_eq!(p.fake.hostcalls("resume_request"), 0);
    assert!(!entries(&log).iter().any(|e| e.starts_with("c:")));
    assert_eq!(count(&log, "b:end:1"), 1);
}

#[test]
fn a_later_stage_reply_ends_the_stages_before_it_exactly_once() {
    let log = log();
    let p = chain(vec![
        Script::new("a", &log),
        Script::new("b", &log),
        Script::limiting("c", &log, Flow::reply_or_reset),
    ]);
    let s = p.open(1, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Pause);
    s.finish();
    for stage in ["a", "b", "c"] {
        assert_eq!(count(&log, &format!("{stage}:end:1")), 1, "{stage}");
    }
}

// ---------------------------------------------------------------------------------------------
// Pause and wake.

/// `a`, then `b` that answers every request with [`limited`] (failing open), then `c`.
fn replying(log: &Log) -> Proxy {
    chain(vec![
        Script::new("a", log),
        Script::limiting("b", log, Flow::reply_or_continue),
        Script::new("c", log),
    ])
}

/// `a`, then `b` that pauses every request (and sends wakes from its tick), then `c`.
fn pausing(log: &Log) -> (Proxy, Inbox) {
    let b = Script::holding("b", log);
    let inbox = b.inbox();
    let p = chain(vec![Script::new("a", log), b, Script::new("c", log)]);
    (p, inbox)
}

#[test]
fn a_resume_runs_the_later_stages_and_resumes_the_stream_once() {
    let log = log();
    let (p, inbox) = pausing(&log);
    let s = p.open(7, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Pause);
    assert_eq!(events(&log), "a:req:7 b:req:7");
    assert_eq!(s.resumed(), 0);
    send(&p, &inbox, Wake::Resume(7));
    assert_eq!(events(&log), "a:req:7 b:req:7 c:req:7");
    assert_eq!(s.resumed(), 1);
    // Again: the stream is no longer paused, so nothing happens.
    send(&p, &inbox, Wake::Resume(7));
    assert_eq!(s.resumed(), 1);
    assert_eq!(count(&log, "c:req:7"), 1);
    s.finish();
    for stage in ["a", "b", "c"] {
        assert_eq!(count(&log, &format!("{stage}:end:7")), 1, "{stage}");
    }
}

#[test]
fn a_resume_acts_on_the_woken_stream_whatever_stream_is_current() {
    let log = log();
    let (p, inbox) = pausing(&log);
    let s1 = p.open(1, &[(":path", "/one")]);
    s1.request_headers();
    let s2 = p.open(2, &[(":path", "/two")]);
    s2.request_headers();
    p.fake.enter(2);
    send(&p, &inbox, Wake::Resume(1));
    assert_eq!(s1.resumed(), 1);
    assert_eq!(s2.resumed(), 0);
    assert_eq!(count(&log, "c:req:1"), 1);
    assert_eq!(count(&log, "c:req:2"), 0);
}

#[test]
fn a_stream_paused_again_by_a_later_stage_waits_for_that_stage() {
    let log = log();
    let a = Script::holding("a", &log);
    let b = Script::holding("b", &log);
    let (ia, ib) = (a.inbox(), b.inbox());
    let p = chain(vec![a, b, Script::new("c", &log)]);
    let s = p.open(1, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Pause);
    // A wake from a stage the stream is not paused at is ignored.
    send(&p, &ib, Wake::Resume(1));
    assert_eq!(events(&log), "a:req:1");
    send(&p, &ia, Wake::Resume(1));
    assert_eq!(events(&log), "a:req:1 b:req:1");
    assert_eq!(s.resumed(), 0, "still paused, at b");
    send(&p, &ia, Wake::Resume(1));
    assert_eq!(events(&log), "a:req:1 b:req:1");
    send(&p, &ib, Wake::Resume(1));
    assert_eq!(events(&log), "a:req:1 b:req:1 c:req:1");
    assert_eq!(s.resumed(), 1);
}

#[test]
fn a_wake_reply_answers_the_paused_stream_and_later_stages_never_run() {
    let log = log();
    let (p, inbox) = pausing(&log);
    let s = p.requested(1);
    send(
        &p,
        &inbox,
        Wake::Reply(1, limited(), OnReplyFailure::Continue),
    );
    let reply = s.reply().expect("answered");
    assert_eq!(reply.status, 429);
    assert_eq!(s.resumed(), 0);
    // Answered: a later resume is ignored.
    send(&p, &inbox, Wake::Resume(1));
    assert_eq!(s.resumed(), 0);
    s.finish();
    assert_eq!(events(&log), "a:req:1 b:req:1 a:end:1 b:end:1");
}

#[test]
fn a_wake_retry_asks_the_paused_stage_again_until_it_lets_go() {
    let log = log();
    let asked = Rc::new(RefCell::new(0));
    let n = Rc::clone(&asked);
    let b = Script::holding("b", &log).on_retry(move |_| {
        *n.borrow_mut() += 1;
        if *n.borrow() < 2 {
            Flow::Pause
        } else {
            Flow::Continue
        }
    });
    let inbox = b.inbox();
    let p = chain(vec![Script::new("a", &log), b, Script::new("c", &log)]);
    let s = p.requested(1);
    send(&p, &inbox, Wake::Retry(1));
    assert_eq!(events(&log), "a:req:1 b:req:1 b:retry:1");
    assert_eq!(s.resumed(), 0, "the retry paused again");
    send(&p, &inbox, Wake::Retry(1));
    assert_eq!(events(&log), "a:req:1 b:req:1 b:retry:1 b:retry:1 c:req:1");
    assert_eq!(s.resumed(), 1);
    assert_eq!(*asked.borrow(), 2);
}

#[test]
fn a_wake_retry_that_replies_answers_the_stream() {
    let log = log();
    let b = Script::holding("b", &log).on_retry(|_| Flow::reply_or_reset(limited()));
    let inbox = b.inbox();
    let p = chain(vec![b, Script::new("c", &log)]);
    let s = p.requested(1);
    send(&p, &inbox, Wake::Retry(1));
    assert_eq!(s.reply().map(|r| r.status), Some(429));
    assert_eq!(s.resumed(), 0);
    assert_eq!(count(&log, "c:req:1"), 0);
}

#[test]
fn a_wake_for_a_stream_that_ended_or_never_paused_is_ignored() {
    let log = log();
    let (p, inbox) = pausing(&log);
    // Never paused: it ended before its request headers.
    let s = p.open(1, &[(":path", "/")]);
    s.finish();
    send(&p, &inbox, Wake::Resume(1));
    send(
        &p,
        &inbox,
        Wake::Reply(1, limited(), OnReplyFailure::Continue),
    );
    send(&p, &inbox, Wake::Retry(1));
    // Ended while paused.
    let s2 = p.requested(2);
    s2.finish();
    send(&p, &inbox, Wake::Resume(2));
    send(&p, &inbox, Wake::Retry(2));
    // A context that never existed.
    send(&p, &inbox, Wake::Resume(99));
    assert_eq!(p.fake.hostcalls("set_effective_context"), 0);
    assert_eq!(p.fake.hostcalls("resume_request"), 0);
    assert_eq!(p.fake.hostcalls("send_reply"), 0);
    assert_eq!(events(&log), "a:req:2 b:req:2 a:end:2 b:end:2");
}

#[test]
fn a_wake_whose_context_cannot_be_entered_ends_the_stream_once() {
    let log = log();
    let (p, inbox) = pausing(&log);
    let s = p.requested(1);
    p.fake.fail(
        "set_effective_context",
        crate::plugin::host::code::BAD_ARGUMENT,
    );
    send(&p, &inbox, Wake::Resume(1));
    assert_eq!(count(&log, "a:end:1"), 1);
    assert_eq!(count(&log, "b:end:1"), 1);
    assert_eq!(count(&log, "c:req:1"), 0);
    assert_eq!(p.fake.hostcalls("resume_request"), 0);
    // Envoy still logs and destroys the context later: no second end.
    p.fake.heal("set_effective_context");
    s.finish();
    assert_eq!(count(&log, "a:end:1"), 1);
    assert_eq!(count(&log, "b:end:1"), 1);
}

#[test]
fn the_end_of_a_stream_the_host_forgot_reads_nothing_of_whichever_stream_is_current() {
    // A bulkhead-like stage wakes stream 1 from stream 2's end; the host has forgotten stream 1,
    // so the wake ends it, while the effective context is stream 2. A breaker-like read of the
    // response status in stream 1's end must fail, not see stream 2's 503.
    let log = log();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let seen_end = Rc::clone(&seen);
    let b = Script::new("b", &log)
        .on_request(|cx| {
            if cx.context_id() == 1 {
                Flow::Pause
            } else {
                Flow::Continue
            }
        })
        .on_end(move |cx| {
            if cx.context_id() == 2 {
                cx.wake(Wake::Resume(1));
            } else {
                seen_end.borrow_mut().push(cx.response_status());
            }
        });
    let p = chain(vec![Script::new("a", &log), b]);
    let s1 = p.open(1, &[(":path", "/")]);
    assert_eq!(s1.request_headers(), Action::Pause);
    let s2 = p.open(2, &[(":path", "/other")]);
    assert_eq!(s2.request_headers(), Action::Continue);
    p.fake.set_response(2, &[(":status", "503")]);
    assert_eq!(s2.response_headers(), Action::Continue);
    p.fake.fail(
        "set_effective_context",
        crate::plugin::host::code::BAD_ARGUMENT,
    );
    s2.finish();
    assert_eq!(count(&log, "b:end:1"), 1);
    assert_eq!(seen.borrow().as_slice(), &[None]);
}

#[test]
fn a_stream_callback_may_wake_another_stream_paused_at_its_stage() {
    // A bulkhead-like stage: the first stream passes, the second waits until the first ends.
    let log = log();
    let queued = Rc::new(RefCell::new(Vec::<u32>::new()));
    let (q1, q2) = (Rc::clone(&queued), Rc::clone(&queued));
    let gate = Script::new("gate", &log)
        .on_request(move |cx| {
            if cx.context_id() == 1 {
                Flow::Continue
            } else {
                q1.borrow_mut().push(cx.context_id());
                Flow::Pause
            }
        })
        .on_response(move |cx| {
            for id in q2.borrow_mut().drain(..) {
                cx.wake(Wake::Resume(id));
            }
            Flow::Continue
        });
    let p = chain(vec![gate, Script::new("next", &log)]);
    let s1 = p.open(1, &[(":path", "/")]);
    let s2 = p.open(2, &[(":path", "/")]);
    assert_eq!(s1.request_headers(), Action::Continue);
    assert_eq!(s2.request_headers(), Action::Pause);
    p.fake.set_response(1, &[(":status", "200")]);
    assert_eq!(s1.response_headers(), Action::Continue);
    assert_eq!(s2.resumed(), 1);
    assert_eq!(s1.resumed(), 0);
    assert_eq!(count(&log, "next:req:2"), 1);
}

// ---------------------------------------------------------------------------------------------
// Responses and bodies.

#[test]
fn responses_run_in_reverse_over_the_stages_that_saw_the_request() {
    let log = log();
    let p = chain(stages(&log, ["a", "b", "c"]));
    let s = p.requested(1);
    p.fake.set_response(1, &[(":status", "200")]);
    assert_eq!(s.response_headers(), Action::Continue);
    assert_eq!(s.response_body(4, true), Action::Continue);
    assert_eq!(events(&log), "a:req:1 b:req:1 c:req:1 c:resp:1 b:resp:1 a:resp:1 c:resp_body:1:4:true b:resp_body:1:4:true a:resp_body:1:4:true");
}

#[test]
fn the_response_to_a_local_reply_reaches_only_the_stages_up_to_the_one_that_replied() {
    let log = log();
    let p = replying(&log);
    let s = p.requested(1);
    p.fake.set_response(1, &[(":status", "429")]);
    s.response_headers();
    assert_eq!(events(&log), "a:req:1 b:req:1 b:resp:1 a:resp:1");
}

#[test]
fn a_stage_edits_response_headers_the_stages_before_it_then_see() {
    let log = log();
    let seen = Rc::new(RefCell::new(None));
    let saw = Rc::clone(&seen);
    let p = chain(vec![
        Script::new("a", &log).on_response(move |cx| {
            *saw.borrow_mut() = cx.response_headers().ok().and_then(|all| {
                all.iter()
                    .find(|(n, _)| n == "x-from-b")
                    .map(|(_, v)| v.clone())
            });
            Flow::Continue
        }),
        Script::new("b", &log).on_response(|cx| {
            cx.set_response_header("x-from-b", Some("1")).unwrap();
            Flow::Continue
        }),
    ]);
    let s = p.requested(1);
    p.fake.set_response(1, &[(":status", "200")]);
    s.response_headers();
    assert_eq!(*seen.borrow(), Some(b"1".to_vec()));
}

#[test]
fn a_buffering_stage_holds_the_later_stages_until_the_body_is_complete() {
    let log = log();
    let p = chain(vec![
        Script::new("a", &log).on_request_body(buffer_until_end),
        Script::new("b", &log),
    ]);
    let s = p.open(1, &[(":path", "/"), (":method", "POST")]);
    s.request_headers();
    assert_eq!(s.request_body(5, false), Action::Pause);
    assert_eq!(s.request_body(9, false), Action::Pause);
    assert_eq!(s.request_body(12, true), Action::Continue);
    assert_eq!(events(&log), "a:req:1 b:req:1 a:req_body:1:5:false a:req_body:1:9:false a:req_body:1:12:true b:req_body:1:12:true");
}

#[test]
fn a_stage_that_let_the_body_go_on_is_not_asked_about_it_again() {
    // Envoy hands a buffering filter the whole buffered body again on each chunk; a stage that
    // already continued must not see the same bytes twice.
    let log = log();
    let p = chain(vec![
        Script::new("a", &log),
        Script::new("b", &log).on_request_body(buffer_until_end),
    ]);
    let s = p.open(1, &[(":path", "/"), (":method", "POST")]);
    s.request_headers();
    assert_eq!(s.request_body(5, false), Action::Pause);
    assert_eq!(s.request_body(10, true), Action::Continue);
    assert_eq!(
        events(&log),
        "a:req:1 b:req:1 a:req_body:1:5:false b:req_body:1:5:false b:req_body:1:10:true"
    );
}

#[test]
fn a_stage_buffering_the_response_body_holds_the_stages_before_it() {
    let log = log();
    let p = chain(vec![
        Script::new("a", &log),
        Script::new("b", &log).on_response_body(buffer_until_end),
    ]);
    let s = p.requested(1);
    assert_eq!(s.response_body(3, false), Action::Pause);
    assert_eq!(s.response_body(8, true), Action::Continue);
    assert_eq!(
        events(&log),
        "a:req:1 b:req:1 b:resp_body:1:3:false b:resp_body:1:8:true a:resp_body:1:8:true"
    );
}

#[test]
fn a_stage_reads_and_rewrites_the_buffered_body() {
    let log = log();
    let p = chain(vec![Script::new("a", &log).on_request_body(
        |cx, size, eos| {
            if !eos {
                return Flow::Buffer;
            }
            let body = cx
                .body(crate::plugin::host::Buffer::RequestBody, size)
                .unwrap();
            let upper = body.to_ascii_uppercase();
            cx.set_body(crate::plugin::host::Buffer::RequestBody, size, &upper)
                .unwrap();
            Flow::Continue
        },
    )]);
    let s = p.open(1, &[(":method", "POST")]);
    p.fake.set_request_body(1, b"hello");
    s.request_headers();
    assert_eq!(s.request_body(5, true), Action::Continue);
    assert_eq!(p.fake.stream(1).unwrap().request_body, b"HELLO".to_vec());
}

#[test]
fn a_body_reply_answers_the_stream_and_later_stages_never_see_the_body() {
    let log = log();
    let p = chain(vec![
        Script::new("a", &log).on_request_body(|_, size, _| {
            if size > 4 {
                Flow::reply_or_reset(LocalReply::new(413, "too_large"))
            } else {
                Flow::Continue
            }
        }),
        Script::new("b", &log),
    ]);
    let s = p.open(1, &[(":method", "POST")]);
    s.request_headers();
    assert_eq!(s.request_body(10, true), Action::Pause);
    assert_eq!(s.reply().map(|r| r.status), Some(413));
    assert_eq!(count(&log, "b:req_body:1:10:true"), 0);
}

// ---------------------------------------------------------------------------------------------
// Ticks and calls.

#[test]
fn the_vm_ticks_at_the_shortest_stage_period() {
    let log = log();
    let p = chain(vec![
        Script::new("a", &log).ticking(Duration::from_secs(3)),
        Script::new("b", &log),
        Script::new("c", &log).ticking(Duration::from_millis(500)),
    ]);
    assert_eq!(p.runtime.tick_period(), Some(Duration::from_millis(500)));
    let quiet = chain(stages(&log, ["a"]));
    assert_eq!(quiet.runtime.tick_period(), None);
}

#[test]
fn each_stage_ticks_only_when_its_own_period_is_due() {
    let log = log();
    let p = chain(vec![
        Script::new("fast", &log).ticking(SECOND),
        Script::new("slow", &log).ticking(Duration::from_secs(3)),
        Script::new("none", &log),
    ]);
    let mut ticks = Vec::new();
    for _ in 0..7 {
        p.fake.advance(SECOND);
        p.tick();
        let mut now: Vec<String> = log
            .borrow_mut()
            .drain(..)
            .filter(|e| e.ends_with(":tick"))
            .collect();
        now.sort();
        ticks.push(now.join(" "));
    }
    assert_eq!(
        ticks,
        vec![
            "fast:tick slow:tick",
            "fast:tick",
            "fast:tick",
            "fast:tick slow:tick",
            "fast:tick",
            "fast:tick",
            "fast:tick slow:tick",
        ]
    );
}

/// A stage that dispatches one call on each tick, recording the tokens.
fn calling(name: &'static str, log: &Log, tokens: &Rc<RefCell<Vec<u32>>>) -> Script {
    let t = Rc::clone(tokens);
    Script::new(name, log)
        .ticking(SECOND)
        .on_root(move |cx, event| {
            if let Root::Tick = event {
                let token = cx
                    .http_call(
                        "idp",
                        &[
                            (":method", "GET"),
                            (":path", "/keys"),
                            (":authority", "idp"),
                        ],
                        None,
                        SECOND,
                    )
                    .unwrap();
                t.borrow_mut().push(token);
            }
        })
}

#[test]
fn a_call_response_goes_to_the_stage_that_dispatched_it() {
    let log = log();
    let (ta, tb) = (
        Rc::new(RefCell::new(Vec::new())),
        Rc::new(RefCell::new(Vec::new())),
    );
    let p = chain(vec![calling("a", &log, &ta), calling("b", &log, &tb)]);
    p.fake.advance(SECOND);
    p.tick();
    let (a, b) = (ta.borrow()[0], tb.borrow()[0]);
    assert_ne!(a, b);
    log.borrow_mut().clear();
    p.fake.deliver_call_response(&[(":status", "200")], b"{}");
    let response = |token| CallResponse {
        token,
        status: Some(200),
        body_size: 2,
    };
    assert!(p.runtime.on_call_response(response(b)));
    assert!(p.runtime.on_call_response(response(a)));
    assert_eq!(
        entries(&log),
        vec![format!("b:call:{b}"), format!("a:call:{a}")]
    );
    // Each token is delivered once: a repeat is unknown.
    assert!(!p.runtime.on_call_response(response(a)));
    assert_eq!(entries(&log).len(), 2);
}

#[test]
fn a_response_to_an_unknown_call_is_ignored() {
    let log = log();
    let p = chain(stages(&log, ["a", "b"]));
    assert!(!p.runtime.on_call_response(CallResponse {
        token: 77,
        status: Some(200),
        body_size: 0,
    }));
    assert!(entries(&log).is_empty());
}

#[test]
fn a_call_without_a_cluster_or_its_pseudo_headers_is_refused_before_any_hostcall() {
    let log = log();
    let result = Rc::new(RefCell::new(Vec::new()));
    let r = Rc::clone(&result);
    let p = chain(vec![Script::new("a", &log).ticking(SECOND).on_root(
        move |cx, _| {
            r.borrow_mut().push(
                cx.http_call("idp", &[(":method", "GET"), (":path", "/")], None, SECOND)
                    .map_err(|e| e.code),
            );
            r.borrow_mut().push(
                cx.http_call(
                    "",
                    &[(":method", "GET"), (":path", "/"), (":authority", "x")],
                    None,
                    SECOND,
                )
                .map_err(|e| e.code),
            );
        },
    )]);
    p.fake.advance(SECOND);
    p.tick();
    let code = crate::plugin::host::code::BAD_ARGUMENT;
    assert_eq!(*result.borrow(), vec![Err(code), Err(code)]);
    assert_eq!(p.fake.hostcalls("http_call"), 0);
}

#[test]
fn a_call_response_can_resume_the_streams_waiting_for_it() {
    // The JWKS flow: requests pause until the key set arrives, then all go on.
    let log = log();
    let waiting = Rc::new(RefCell::new(Vec::<u32>::new()));
    let (w1, w2) = (Rc::clone(&waiting), Rc::clone(&waiting));
    let tokens = Rc::new(RefCell::new(Vec::new()));
    let t = Rc::clone(&tokens);
    let keys = Script::new("keys", &log)
        .ticking(SECOND)
        .on_request(move |cx| {
            w1.borrow_mut().push(cx.context_id());
            Flow::Pause
        })
        .on_root(move |cx, event| match event {
            Root::Tick if t.borrow().is_empty() => {
                let headers = [
                    (":method", "GET"),
                    (":path", "/keys"),
                    (":authority", "idp"),
                ];
                t.borrow_mut()
                    .push(cx.http_call("idp", &headers, None, SECOND).unwrap());
            }
            Root::Call => {
                for id in w2.borrow_mut().drain(..) {
                    cx.wake(Wake::Resume(id));
                }
            }
            _ => {}
        });
    let p = chain(vec![keys, Script::new("next", &log)]);
    let s1 = p.open(1, &[(":path", "/")]);
    let s2 = p.open(2, &[(":path", "/")]);
    assert_eq!(s1.request_headers(), Action::Pause);
    assert_eq!(s2.request_headers(), Action::Pause);
    p.fake.enter(0);
    p.fake.advance(SECOND);
    p.tick();
    let token = tokens.borrow()[0];
    assert_eq!(p.fake.calls()[0].cluster, "idp");
    assert!(p.runtime.on_call_response(CallResponse {
        token,
        status: Some(200),
        body_size: 0,
    }));
    assert_eq!((s1.resumed(), s2.resumed()), (1, 1));
    assert_eq!(count(&log, "next:req:1"), 1);
    assert_eq!(count(&log, "next:req:2"), 1);
}

#[test]
fn on_done_reaches_every_stage() {
    let log = log();
    let p = chain(stages(&log, ["a", "b"]));
    p.runtime.on_done();
    assert_eq!(*log.borrow(), vec!["a:done", "b:done"]);
}

// ---------------------------------------------------------------------------------------------
// Replies that cannot be sent.

#[test]
fn a_reply_that_cannot_be_sent_fails_open_to_the_next_stage() {
    let log = log();
    let p = chain(vec![
        Script::limiting("a", &log, Flow::reply_or_continue),
        Script::new("b", &log),
    ]);
    p.fail_replies();
    let s = p.open(1, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Continue);
    assert_eq!(events(&log), "a:req:1 b:req:1");
    assert_eq!(s.reply(), None);
    assert!(!p.fake.stream(1).unwrap().reset);
}

#[test]
fn a_reply_that_cannot_be_sent_resets_the_stream_when_failing_closed() {
    let log = log();
    let p = chain(vec![
        Script::limiting("a", &log, Flow::reply_or_reset),
        Script::new("b", &log),
    ]);
    p.fail_replies();
    let s = p.open(1, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Pause);
    assert!(p.fake.stream(1).unwrap().reset);
    assert_eq!(count(&log, "b:req:1"), 0);
    s.finish();
    assert_eq!(count(&log, "a:end:1"), 1);
}

// ---------------------------------------------------------------------------------------------
// The request cache, edits, claims.

#[test]
fn each_request_header_and_property_is_read_from_the_host_once_per_request() {
    let log = log();
    let reader = |name: &'static str| {
        Script::new(name, &log).on_request(|cx| {
            assert_eq!(cx.path().as_deref(), Some("/api"));
            assert_eq!(cx.header("x-user").as_deref(), Some("alice"));
            assert_eq!(cx.header("x-absent"), None);
            assert_eq!(cx.source_address().as_deref(), Some("192.0.2.1:5555"));
            assert_eq!(cx.route_name(), None);
            Flow::Continue
        })
    };
    let p = chain(vec![reader("a"), reader("b"), reader("c")]);
    let s = p.open(1, &[(":path", "/api"), ("x-user", "alice")]);
    p.fake
        .set_stream_property(1, &["source", "address"], "192.0.2.1:5555");
    s.request_headers();
    // In a chain the first lookup reads the whole map, which serves every later one.
    assert_eq!(
        p.fake.hostcalls("headers"),
        1,
        "one map read for :path, x-user, x-absent"
    );
    assert_eq!(p.fake.hostcalls("header"), 0);
    assert_eq!(
        p.fake.hostcalls("property"),
        2,
        "source.address, xds.route_name"
    );
    // A new request reads afresh.
    let s2 = p.open(2, &[(":path", "/api"), ("x-user", "alice")]);
    p.fake
        .set_stream_property(2, &["source", "address"], "192.0.2.1:5555");
    s2.request_headers();
    assert_eq!(p.fake.hostcalls("headers"), 2);
    // A single policy looks headers up one by one (cheaper than the map for a few), each once.
    let one = chain(vec![reader("solo")]);
    let s3 = one.open(3, &[(":path", "/api"), ("x-user", "alice")]);
    one.fake
        .set_stream_property(3, &["source", "address"], "192.0.2.1:5555");
    s3.request_headers();
    assert_eq!(one.fake.hostcalls("header"), 3, ":path, x-user, x-absent");
    assert_eq!(one.fake.hostcalls("headers"), 0);
    assert_eq!(p.fake.hostcalls("property"), 4);
}

#[test]
fn the_whole_header_map_is_read_once_and_then_serves_single_lookups() {
    let log = log();
    let p = chain(vec![
        Script::new("a", &log).on_request(|cx| {
            assert_eq!(cx.header_values("x-tag"), vec!["one", "two"]);
            Flow::Continue
        }),
        Script::new("b", &log).on_request(|cx| {
            assert_eq!(cx.header_values("x-tag"), vec!["one", "two"]);
            assert_eq!(cx.header("x-tag").as_deref(), Some("one"));
            assert_eq!(cx.path().as_deref(), Some("/"));
            Flow::Continue
        }),
    ]);
    let s = p.open(1, &[(":path", "/"), ("x-tag", "one"), ("x-tag", "two")]);
    s.request_headers();
    assert_eq!(p.fake.hostcalls("headers"), 1);
    assert_eq!(p.fake.hostcalls("header"), 0);
}

#[test]
fn authorization_is_read_with_one_single_value_call_even_when_repeated() {
    let log = log();
    let p = chain(vec![Script::new("a", &log).on_request(|cx| {
        assert_eq!(cx.header_values("authorization"), vec!["Bearer a,Bearer b"]);
        Flow::Continue
    })]);
    let s = p.open(
        1,
        &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
    );
    s.request_headers();
    assert_eq!(p.fake.hostcalls("headers"), 0);
    assert_eq!(p.fake.hostcalls("header"), 1);
}

#[test]
fn an_edit_by_one_stage_is_seen_by_the_next_and_reaches_the_upstream() {
    let log = log();
    let p = chain(vec![
        Script::new("a", &log).on_request(|cx| {
            assert_eq!(cx.header("x-user").as_deref(), Some("mallory"));
            assert_eq!(cx.header_values("x-tag"), vec!["one", "two"]);
            cx.set_request_header("x-user", Some("alice")).unwrap();
            cx.set_request_header("x-tag", None).unwrap();
            cx.set_request_values("x-multi", &[b"1".to_vec(), b"2".to_vec()])
                .unwrap();
            Flow::Continue
        }),
        Script::new("b", &log).on_request(|cx| {
            assert_eq!(cx.header("x-user").as_deref(), Some("alice"));
            assert_eq!(cx.header("x-tag"), None);
            assert!(cx.header_values("x-tag").is_empty());
            assert_eq!(cx.header_values("x-multi"), vec!["1", "2"]);
            Flow::Continue
        }),
    ]);
    let s = p.open(
        1,
        &[
            (":path", "/"),
            ("x-user", "mallory"),
            ("x-tag", "one"),
            ("x-tag", "two"),
        ],
    );
    s.request_headers();
    assert_eq!(
        p.fake.request_header_of(1, "x-user").as_deref(),
        Some("alice")
    );
    assert_eq!(p.fake.request_header_of(1, "x-tag"), None);
    let multi: Vec<Vec<u8>> = p
        .fake
        .stream(1)
        .unwrap()
        .request
        .into_iter()
        .filter(|(n, _)| n == "x-multi")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(multi, vec![b"1".to_vec(), b"2".to_vec()]);
    // Every read, a's first lookup included, came from the one map read.
    assert_eq!(p.fake.hostcalls("headers"), 1);
    assert_eq!(p.fake.hostcalls("header"), 0);
}

#[test]
fn claims_published_by_one_stage_are_read_by_the_later_ones() {
    let log = log();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let saw = Rc::clone(&seen);
    let p = chain(vec![
        Script::new("auth", &log).on_request(|cx| {
            if cx.header("authorization").is_some() {
                let claims = json!({"sub": "alice", "n": 3, "admin": true,
                    "realm": {"role": "ops"}, "groups": ["a"]});
                let Value::Object(map) = claims else {
                    unreachable!()
                };
                cx.set_claims(Rc::new(map));
            }
            Flow::Continue
        }),
        Script::new("limit", &log).on_request(move |cx| {
            saw.borrow_mut().push(
                ["sub", "n", "admin", "realm.role", "groups", "missing"]
                    .iter()
                    .map(|c| cx.claim(c))
                    .collect::<Vec<_>>(),
            );
            Flow::Continue
        }),
    ]);
    let s1 = p.open(1, &[("authorization", "Bearer t")]);
    s1.request_headers();
    let _s2 = p.requested(2);
    let text = |s: &str| Some(s.to_owned());
    assert_eq!(
        *seen.borrow(),
        vec![
            vec![
                text("alice"),
                text("3"),
                text("true"),
                text("ops"),
                None,
                None
            ],
            vec![None; 6],
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Loading: config errors and namespaces.

fn load_error(config: &str) -> ConfigError {
    QUEUED.with(|q| q.borrow_mut().clear());
    let log = log();
    QUEUED.with(|q| {
        q.borrow_mut()
            .extend((0..MAX_CHAIN + 1).map(|_| Script::new("s", &log)))
    });
    let (_, host) = host();
    match load_chain(&host, &KINDS, config.as_bytes(), "edge") {
        Ok(_) => panic!("accepted: {config}"),
        Err(e) => e,
    }
}

/// The error's text says each of `parts`.
fn assert_says(e: &ConfigError, parts: &[&str]) {
    let text = e.to_string();
    for part in parts {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
}

#[test]
fn an_unknown_policy_is_named_with_the_known_ones() {
    let e = load_error(r#"{"chain": [{"alpha": {}}, {"gamma": {}}]}"#);
    assert_eq!(e.field.as_str(), "chain[1].gamma");
    assert_says(&e, &["\"gamma\"", "`alpha`, `beta`"]);
}

#[test]
fn a_chain_entry_needs_exactly_one_key() {
    let two = load_error(r#"{"chain": [{"alpha": {}, "beta": {}}]}"#);
    assert_eq!(two.field.as_str(), "chain[0]");
    assert_says(&two, &["exactly one key"]);
    let none = load_error(r#"{"chain": [{"alpha": {}}, {}]}"#);
    assert_eq!(none.field.as_str(), "chain[1]");
}

#[test]
fn an_empty_or_overlong_chain_is_refused() {
    let empty = load_error(r#"{"chain": []}"#);
    assert_eq!(empty.field.as_str(), "chain");
    assert!(matches!(empty.kind, crate::ConfigErrorKind::Missing { .. }));
    let entries: Vec<Value> = (0..MAX_CHAIN + 1).map(|_| json!({"alpha": {}})).collect();
    let long = load_error(&json!({ "chain": entries }).to_string());
    assert_eq!(long.field.as_str(), "chain");
    assert_eq!(
        long.kind,
        crate::ConfigErrorKind::OutOfRange {
            value: format!("\"{}\"", MAX_CHAIN + 1),
            min: "1".to_owned(),
            max: MAX_CHAIN.to_string(),
        }
    );
}

#[test]
fn a_chain_config_with_unknown_fields_or_no_chain_is_refused() {
    let unknown = load_error(r#"{"chain": [{"alpha": {}}], "extra": 1}"#);
    assert_says(&unknown, &["extra"]);
    let missing = load_error(r#"{"rules": []}"#);
    assert_says(&missing, &["chain"]);
    let not_objects = load_error(r#"{"chain": ["alpha"]}"#);
    assert_says(&not_objects, &["chain[0]"]);
}

#[test]
fn a_policy_error_names_its_full_path_in_the_chain() {
    let e = load_error(r#"{"chain": [{"alpha": {}}, {"beta": {"fail_at": "limits"}}]}"#);
    assert_eq!(e.field.as_str(), "chain[1].beta.rules[0].limits");
    assert!(
        e.to_string()
            .starts_with("config field `chain[1].beta.rules[0].limits`: invalid value"),
        "{e}"
    );
}

fn built() -> Vec<Built> {
    BUILT.with(|b| b.borrow().clone())
}

#[test]
fn two_instances_of_one_kind_get_their_own_shared_data_and_metric_namespaces() {
    BUILT.with(|b| b.borrow_mut().clear());
    let log = log();
    let p = chain_of(
        &["alpha", "beta", "alpha", "alpha"],
        (0..4).map(|_| Script::new("s", &log)).collect(),
    );
    assert_eq!(p.runtime.name(), "palisade");
    assert_eq!(
        p.runtime
            .stages()
            .iter()
            .map(|s| s.kind)
            .collect::<Vec<_>>(),
        vec!["alpha", "beta", "alpha", "alpha"]
    );
    let b = built();
    let prefixes: Vec<(&str, &str)> = b
        .iter()
        .map(|b| (b.store_prefix.as_str(), b.metric_prefix.as_str()))
        .collect();
    assert_eq!(
        prefixes,
        vec![
            ("palisade/alpha/edge/default/", "palisade.alpha"),
            ("palisade/beta/edge/default/", "palisade.beta"),
            ("palisade/alpha/edge#2/default/", "palisade.alpha_2"),
            ("palisade/alpha/edge#3/default/", "palisade.alpha_3"),
        ]
    );
}

#[test]
fn a_second_instance_counts_into_its_own_metrics() {
    let (fake, host) = host();
    let first = Setup::new(&host, "alpha", "edge", 0);
    let second = Setup::new(&host, "alpha", "edge", 1);
    first.counter("hits").inc();
    second.counter("hits").add(2);
    second.gauge("level").record(7);
    assert_eq!(fake.stat("palisade.alpha.hits"), Ok(1));
    assert_eq!(fake.stat("palisade.alpha_2.hits"), Ok(2));
    assert_eq!(fake.stat("palisade.alpha_2.level"), Ok(7));
    assert!(fake.stat("palisade.alpha.level").is_err());
}

#[test]
fn a_standalone_module_is_a_chain_of_one_in_the_first_namespace() {
    BUILT.with(|b| b.borrow_mut().clear());
    QUEUED.with(|q| q.borrow_mut().clear());
    let log = log();
    QUEUED.with(|q| q.borrow_mut().push_back(Script::new("s", &log)));
    let (_, host) = host();
    let runtime = load_one(&host, &ALPHA, b"{}", "").unwrap();
    assert_eq!(runtime.name(), "alpha");
    assert_eq!(runtime.stages().len(), 1);
    assert_eq!(
        built(),
        vec![Built {
            kind: "alpha",
            store_prefix: "palisade/alpha/_/default/".to_owned(),
            metric_prefix: "palisade.alpha".to_owned(),
        }]
    );
    // A standalone module's own config error has no chain prefix.
    let e = match load_one(&host, &ALPHA, br#"{"fail_at": "limits"}"#, "") {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    assert_eq!(e.field.as_str(), "rules[0].limits");
}

// ---------------------------------------------------------------------------------------------
// Found while writing these tests.

#[test]
fn a_reply_that_cannot_be_sent_after_a_resume_still_runs_the_later_stages() {
    let log = log();
    let a = Script::holding("a", &log);
    let inbox = a.inbox();
    let p = chain(vec![
        a,
        Script::limiting("b", &log, Flow::reply_or_continue),
        Script::new("c", &log),
    ]);
    p.fail_replies();
    let s = p.open(1, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Pause);
    send(&p, &inbox, Wake::Resume(1));
    // b fails open: on to c, as for a stream that never paused; then the stream goes on, once.
    assert_eq!(events(&log), "a:req:1 b:req:1 c:req:1");
    assert_eq!(s.resumed(), 1);
}

#[test]
fn a_retry_reply_that_cannot_be_sent_fails_open_through_the_later_stages() {
    let log = log();
    let a = Script::holding("a", &log).on_retry(|_| Flow::reply_or_continue(limited()));
    let inbox = a.inbox();
    let p = chain(vec![a, Script::new("b", &log)]);
    p.fail_replies();
    let s = p.requested(1);
    send(&p, &inbox, Wake::Retry(1));
    assert_eq!(events(&log), "a:req:1 a:retry:1 b:req:1");
    assert_eq!(s.resumed(), 1);
}

#[test]
fn a_wake_reply_that_cannot_be_sent_goes_on_through_the_later_stages() {
    let log = log();
    let (p, inbox) = pausing(&log);
    p.fail_replies();
    let s = p.requested(1);
    send(
        &p,
        &inbox,
        Wake::Reply(1, limited(), OnReplyFailure::Continue),
    );
    assert_eq!(events(&log), "a:req:1 b:req:1 c:req:1");
    assert_eq!(s.resumed(), 1);
}

#[test]
fn a_failing_closed_wake_reply_that_cannot_be_sent_resets_the_stream_and_runs_no_later_stage() {
    let log = log();
    let (p, inbox) = pausing(&log);
    p.fail_replies();
    let s = p.requested(1);
    send(&p, &inbox, Wake::Reply(1, limited(), OnReplyFailure::Reset));
    assert_eq!(events(&log), "a:req:1 b:req:1");
    assert_eq!(s.resumed(), 0);
    assert!(p.fake.stream(1).unwrap().reset);
}

#[test]
fn a_request_body_arriving_while_paused_is_held_until_the_stage_lets_go() {
    // Envoy resumes a filter's stopped headers when its body callback returns Continue: a body
    // chunk must not carry a paused request past the stage holding it.
    let log = log();
    let (p, inbox) = pausing(&log);
    let s = p.open(1, &[(":method", "POST"), (":path", "/")]);
    assert_eq!(s.request_headers(), Action::Pause);
    assert_eq!(s.request_body(5, false), Action::Pause);
    assert_eq!(s.request_body(9, true), Action::Pause);
    assert_eq!(count(&log, "c:req:1"), 0);
    send(&p, &inbox, Wake::Resume(1));
    assert_eq!(count(&log, "c:req:1"), 1);
    assert_eq!(s.resumed(), 1);
}

/// How many times each stage ticked, by name.
fn tick_counts(log: &Log, names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .map(|n| count(log, &format!("{n}:tick")))
        .collect()
}

#[test]
fn a_tick_that_reads_the_clock_a_little_early_still_runs_the_stages_due_then() {
    // Envoy's tick timer is monotonic and re-armed each tick; the host clock is the wall clock
    // read when the tick is dispatched, so two ticks can read a hair less than one period apart.
    let log = log();
    let p = chain(vec![
        Script::new("fast", &log).ticking(SECOND),
        Script::new("slow", &log).ticking(Duration::from_secs(3)),
    ]);
    for ms in [1000, 998, 1003, 997, 999, 1001, 999] {
        p.fake.advance(Duration::from_millis(ms));
        p.tick();
    }
    assert_eq!(tick_counts(&log, &["fast", "slow"]), vec![7, 3]);
}

#[test]
fn a_wall_clock_stepped_back_does_not_stop_the_ticks() {
    let log = log();
    let p = chain(vec![Script::new("a", &log).ticking(SECOND)]);
    p.fake.advance(SECOND);
    p.tick();
    p.fake
        .now_is(crate::Timestamp::from_secs(1_700_000_000 - 3_600));
    p.tick();
    p.fake.advance(SECOND);
    p.tick();
    assert_eq!(tick_counts(&log, &["a"]), vec![3]);
}

#[test]
fn a_stage_may_wake_a_waiting_stream_when_another_stream_ends() {
    // The bulkhead flow: one permit; the second stream queues until the first gives it back.
    let log = log();
    let queued = Rc::new(RefCell::new(Vec::<u32>::new()));
    let busy = Rc::new(RefCell::new(false));
    let (q1, q2, b1, b2) = (
        Rc::clone(&queued),
        Rc::clone(&queued),
        Rc::clone(&busy),
        Rc::clone(&busy),
    );
    let permits = Script::new("permits", &log)
        .on_request(move |cx| {
            if *b1.borrow() {
                q1.borrow_mut().push(cx.context_id());
                Flow::Pause
            } else {
                *b1.borrow_mut() = true;
                Flow::Continue
            }
        })
        .on_end(move |cx| {
            let next = q2.borrow_mut().pop();
            match next {
                Some(id) if id != cx.context_id() => cx.wake(Wake::Resume(id)),
                _ => *b2.borrow_mut() = false,
            }
        });
    let p = chain(vec![permits, Script::new("next", &log)]);
    let s1 = p.open(1, &[(":path", "/")]);
    let s2 = p.open(2, &[(":path", "/")]);
    assert_eq!(s1.request_headers(), Action::Continue);
    assert_eq!(s2.request_headers(), Action::Pause);
    s1.finish();
    assert_eq!(s2.resumed(), 1);
    assert_eq!(count(&log, "next:req:2"), 1);
    s2.finish();
    assert!(!*busy.borrow());
    assert_eq!(count(&log, "permits:end:2"), 1);
}

#[test]
fn a_paused_stream_that_envoy_answered_itself_is_not_resumed_by_a_later_wake() {
    // Envoy answers a stream stopped at a filter itself (its request or idle timeout), and the
    // local reply runs through the encoder side: the request is over, the later stages must not
    // run for it (taking tokens or permits for a request that never goes upstream).
    let log = log();
    let (p, inbox) = pausing(&log);
    let s = p.open(1, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Pause);
    p.fake.set_response(1, &[(":status", "504")]);
    assert_eq!(s.response_headers(), Action::Continue);
    send(&p, &inbox, Wake::Resume(1));
    assert_eq!(count(&log, "c:req:1"), 0);
    assert_eq!(s.resumed(), 0);
    s.finish();
    assert_eq!(count(&log, "a:end:1"), 1);
    assert_eq!(count(&log, "b:end:1"), 1);
}

// ---------------------------------------------------------------------------------------------
// gRPC calls.

use crate::fake_host::GrpcReply;
use crate::plugin::host::grpc_status;

const RLS: (&str, &str, &str) = (
    "rls",
    "envoy.service.ratelimit.v3.RateLimitService",
    "ShouldRateLimit",
);

/// A call to `target` (cluster, service, method) without metadata.
fn call_to<'a>(
    (cluster, service, method): (&'a str, &'a str, &'a str),
    message: &'a [u8],
    timeout: Duration,
) -> GrpcCall<'a> {
    GrpcCall {
        cluster,
        service,
        method,
        initial_metadata: &[],
        message,
        timeout,
    }
}

/// A stage that dispatches one gRPC call per request (two with `calls: 2`), pauses, and reads
/// each response's message into `seen`; it lets the stream go once every call has ended, or
/// replies 429 when a message is `b"deny"`.
fn grpc_stage(log: &Log, calls: usize, seen: &Rc<RefCell<Vec<Vec<u8>>>>) -> Script {
    let seen = Rc::clone(seen);
    let pending = Rc::new(RefCell::new(0usize));
    let p2 = Rc::clone(&pending);
    Script::new("g", log)
        .on_request(move |cx| {
            for _ in 0..calls {
                if cx.grpc_call(&call_to(RLS, b"req", SECOND / 50)).is_ok() {
                    *pending.borrow_mut() += 1;
                }
            }
            Flow::Pause
        })
        .on_grpc(move |cx, response| {
            let message = cx.grpc_response(response.size, 1024).unwrap_or_default();
            let deny = message == b"deny";
            seen.borrow_mut().push(message);
            *p2.borrow_mut() -= 1;
            if deny {
                Flow::reply_or_continue(limited())
            } else if *p2.borrow() > 0 {
                Flow::Pause
            } else {
                Flow::Continue
            }
        })
}

fn grpc_chain(calls: usize) -> (Proxy, Log, Rc<RefCell<Vec<Vec<u8>>>>) {
    let log = log();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let p = chain(vec![
        Script::new("a", &log),
        grpc_stage(&log, calls, &seen),
        Script::new("c", &log),
    ]);
    (p, log, seen)
}

/// Deliver a gRPC call's end as the SDK adapter does, with the root context current.
fn deliver(p: &Proxy, token: u32, reply: GrpcReply) -> bool {
    p.fake.enter(0);
    let response = p.fake.grpc_reply(token, reply).expect("an open call");
    let routed = p.runtime.on_grpc_response(response);
    p.fake.grpc_delivered();
    routed
}

#[test]
fn a_streams_grpc_call_ends_at_its_stage_which_lets_the_stream_go_on() {
    let (p, log, seen) = grpc_chain(1);
    let s = p.open(5, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Pause);
    let calls = p.fake.grpc_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (
            calls[0].cluster.as_str(),
            calls[0].service.as_str(),
            calls[0].method.as_str()
        ),
        RLS
    );
    assert_eq!(calls[0].message, b"req");
    assert_eq!(calls[0].timeout, SECOND / 50);
    assert_eq!(p.runtime.grpc_calls_in_flight(), 1);
    assert!(deliver(
        &p,
        calls[0].token,
        GrpcReply::Message(b"ok".to_vec())
    ));
    assert_eq!(*seen.borrow(), vec![b"ok".to_vec()]);
    assert_eq!(
        entries(&log),
        vec![
            "a:req:5".to_owned(),
            "g:req:5".to_owned(),
            format!("g:grpc:5:{}:0", calls[0].token),
            "c:req:5".to_owned()
        ]
    );
    assert_eq!(s.resumed(), 1);
    assert_eq!(p.runtime.grpc_calls_in_flight(), 0);
    // Delivered once: the same token again is unknown.
    assert!(!p.runtime.on_grpc_response(GrpcResponse {
        token: calls[0].token,
        status: 0,
        size: 0
    }));
}

#[test]
fn a_grpc_response_acts_on_its_own_stream_whatever_stream_is_current() {
    let (p, log, _) = grpc_chain(1);
    let s1 = p.open(1, &[(":path", "/one")]);
    s1.request_headers();
    let s2 = p.open(2, &[(":path", "/two")]);
    s2.request_headers();
    let tokens: Vec<u32> = p.fake.grpc_calls().iter().map(|c| c.token).collect();
    p.fake.enter(2);
    let response = p
        .fake
        .grpc_reply(tokens[0], GrpcReply::Message(b"deny".to_vec()));
    assert!(p.runtime.on_grpc_response(response.unwrap()));
    assert_eq!(s1.reply().map(|r| r.status), Some(429));
    assert_eq!(s2.reply(), None);
    assert_eq!(s2.resumed(), 0);
    assert_eq!(count(&log, "c:req:1"), 0);
    assert!(deliver(&p, tokens[1], GrpcReply::Message(b"ok".to_vec())));
    assert_eq!(s2.resumed(), 1);
    assert_eq!(count(&log, "c:req:2"), 1);
}

#[test]
fn a_stream_waiting_for_two_grpc_calls_stays_paused_until_both_end() {
    let (p, log, seen) = grpc_chain(2);
    let s = p.open(3, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Pause);
    let tokens: Vec<u32> = p.fake.grpc_calls().iter().map(|c| c.token).collect();
    assert_eq!(tokens.len(), 2);
    assert!(deliver(
        &p,
        tokens[1],
        GrpcReply::Status(grpc_status::UNAVAILABLE)
    ));
    assert_eq!(s.resumed(), 0);
    assert_eq!(count(&log, "c:req:3"), 0);
    assert!(deliver(&p, tokens[0], GrpcReply::Message(b"ok".to_vec())));
    assert_eq!(s.resumed(), 1);
    // The error end carried no message.
    assert_eq!(*seen.borrow(), vec![Vec::<u8>::new(), b"ok".to_vec()]);
    assert!(entries(&log).contains(&format!("g:grpc:3:{}:14", tokens[1])));
}

#[test]
fn envoys_timeout_ends_a_grpc_call_at_its_stage() {
    let (p, log, _) = grpc_chain(1);
    let s = p.requested(4);
    p.fake.advance(SECOND / 100);
    assert!(p.fake.grpc_expired().is_empty());
    p.fake.advance(SECOND / 100);
    let expired = p.fake.grpc_expired();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].status, grpc_status::UNAVAILABLE);
    p.fake.enter(0);
    assert!(p.runtime.on_grpc_response(expired[0]));
    assert_eq!(s.resumed(), 1);
    assert!(entries(&log).contains(&format!("g:grpc:4:{}:14", expired[0].token)));
    // Ended once: a late scripted answer is refused, as Envoy ends a call once.
    assert_eq!(
        p.fake.grpc_reply(expired[0].token, GrpcReply::Status(0)),
        None
    );
}

#[test]
fn a_client_that_hangs_up_while_waiting_leaves_no_call_behind_and_its_late_response_reaches_no_stage(
) {
    let (p, log, seen) = grpc_chain(2);
    let s = p.requested(6);
    assert_eq!(p.runtime.grpc_calls_in_flight(), 2);
    let tokens: Vec<u32> = p.fake.grpc_calls().iter().map(|c| c.token).collect();
    // The client resets: Envoy ends the stream (on_log, on_done, the context dropped).
    p.fake.close_stream(6);
    s.finish();
    assert_eq!(p.runtime.grpc_calls_in_flight(), 0);
    assert_eq!(count(&log, "g:end:6"), 1);
    // Envoy still ends the calls; nothing is routed, nothing is read.
    assert!(!deliver(
        &p,
        tokens[0],
        GrpcReply::Message(b"deny".to_vec())
    ));
    let expired_or_late = p.fake.grpc_reply(tokens[1], GrpcReply::Status(13)).unwrap();
    assert!(!p.runtime.on_grpc_response(expired_or_late));
    assert!(seen.borrow().is_empty());
    assert!(!entries(&log).iter().any(|e| e.starts_with("g:grpc")));
}

#[test]
fn a_grpc_response_for_a_stream_no_longer_paused_is_dropped() {
    // Envoy answered the stream itself (its own timeout) while the call was in flight.
    let (p, log, seen) = grpc_chain(1);
    let s = p.requested(8);
    s.response_headers();
    let token = p.fake.grpc_calls()[0].token;
    assert!(deliver(&p, token, GrpcReply::Message(b"deny".to_vec())));
    assert!(seen.borrow().is_empty());
    assert_eq!(s.reply(), None);
    assert_eq!(s.resumed(), 0);
    assert_eq!(count(&log, "c:req:8"), 0);
}

#[test]
fn a_grpc_response_whose_stream_cannot_be_entered_ends_the_stream_once() {
    let (p, log, seen) = grpc_chain(1);
    let s = p.requested(9);
    let token = p.fake.grpc_calls()[0].token;
    p.fake.close_stream(9);
    assert!(deliver(&p, token, GrpcReply::Message(b"ok".to_vec())));
    assert!(seen.borrow().is_empty());
    assert_eq!(count(&log, "g:end:9"), 1);
    s.finish();
    assert_eq!(count(&log, "g:end:9"), 1);
}

#[test]
fn a_root_grpc_call_ends_at_the_root_part_of_its_stage() {
    let log = log();
    let tokens = Rc::new(RefCell::new(Vec::new()));
    let messages = Rc::new(RefCell::new(Vec::new()));
    let (t, m) = (Rc::clone(&tokens), Rc::clone(&messages));
    let caller = Script::new("r", &log)
        .ticking(SECOND)
        .on_root(move |cx, event| match event {
            Root::Tick => {
                let call = GrpcCall {
                    initial_metadata: &[("x-trace", b"1")],
                    ..call_to(RLS, b"m", SECOND)
                };
                t.borrow_mut().push(cx.grpc_call(&call).unwrap());
            }
            Root::Grpc(r) => m.borrow_mut().push(cx.grpc_response(r.size, 2).unwrap()),
            _ => {}
        });
    let p = chain(vec![Script::new("a", &log), caller]);
    p.fake.advance(SECOND);
    p.tick();
    let token = tokens.borrow()[0];
    assert_eq!(
        p.fake.grpc_calls()[0].metadata,
        vec![("x-trace".to_owned(), b"1".to_vec())]
    );
    assert!(deliver(&p, token, GrpcReply::Message(b"abc".to_vec())));
    // Read at most `max` bytes.
    assert_eq!(*messages.borrow(), vec![b"ab".to_vec()]);
    assert!(entries(&log).contains(&format!("r:grpc:{token}:0")));
    assert!(!entries(&log).iter().any(|e| e.starts_with("a:grpc")));
}

#[test]
fn a_grpc_call_without_a_cluster_service_or_method_is_refused_before_any_hostcall() {
    let log = log();
    let result = Rc::new(RefCell::new(Vec::new()));
    let r = Rc::clone(&result);
    let p = chain(vec![Script::new("a", &log).on_request(move |cx| {
        for target in [("", "svc", "M"), ("rls", "", "M"), ("rls", "svc", "")] {
            let call = call_to(target, b"", SECOND);
            r.borrow_mut().push(cx.grpc_call(&call).map_err(|e| e.code));
        }
        Flow::Continue
    })]);
    let s = p.open(1, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Continue);
    let code = crate::plugin::host::code::BAD_ARGUMENT;
    assert_eq!(*result.borrow(), vec![Err(code); 3]);
    assert_eq!(p.fake.hostcalls("grpc_call"), 0);
    assert_eq!(p.runtime.grpc_calls_in_flight(), 0);
}

#[test]
fn a_grpc_call_to_an_unknown_cluster_fails_at_dispatch_and_nothing_waits_for_it() {
    let log = log();
    let result = Rc::new(RefCell::new(Vec::new()));
    let r = Rc::clone(&result);
    let p = chain(vec![Script::new("a", &log).on_request(move |cx| {
        let call = call_to(("nope", "svc", "M"), b"", SECOND);
        r.borrow_mut().push(cx.grpc_call(&call).map_err(|e| e.code));
        Flow::Continue
    })]);
    p.fake.grpc_clusters(&["rls"]);
    let s = p.open(1, &[(":path", "/")]);
    assert_eq!(s.request_headers(), Action::Continue);
    assert_eq!(
        *result.borrow(),
        vec![Err(crate::plugin::host::code::PARSE_FAILURE)]
    );
    assert_eq!(p.runtime.grpc_calls_in_flight(), 0);
}
