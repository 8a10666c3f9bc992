//! The transformation engine: given the parts of a request (or response) and the rules, compute
//! the edits. Pure: the Wasm glue reads the parts, calls the engine, and applies what comes back.
//!
//! ## Which rules apply
//! Rules are matched, in order, against the request **as it arrived at the plugin**. With
//! `mode: all` (default) every matching rule applies, each on the result of the previous ones;
//! with `mode: first` only the first matching rule applies. A rule with a `match.path_regex`
//! matches only if the regex matches the URL path. Response rules are the rules that matched
//! the request: the decision is taken once, at request time.
//!
//! ## Order inside a rule
//! 1. headers: remove, remove_prefix → rename → set → add (if absent) → append;
//! 2. query: remove → rename → set → add (if absent);
//! 3. path rewrite, then method override;
//! 4. JSON body (when the body has arrived): remove → rename → set.
//!
//! Responses: headers in the same order as requests, then the JSON body.
//!
//! Templates read the original request, so the order only matters between operations on the same
//! name (a `remove` then `add` of one header, for instance). Response templates are rendered at
//! request time, from the request.
//!
//! ## Outcomes per rule and phase
//! Each phase (request headers, request body, response headers, response body) in which a
//! matching rule has operations yields one [`Event`]: `Transformed` if it changed something,
//! `Error` if input it needed was malformed, `Skipped` otherwise (nothing to change, a template
//! value missing under `on_missing_value: skip`, a body that is not JSON, absent or too large).

use crate::config::{BodyValue, Config, Mode, OnMalformed, OnTooLarge, PathRewrite, Rule};
use crate::ops::{is_json_content_type, BodyOps, HeaderBook, HeaderEdit, HeaderOps, QueryBook};
use crate::template::{Malformed, Rendered, Template, Values};
use palisade_core::key::{client_ip, query_string, url_path, RequestView};
use palisade_core::{Decision, LocalReply};
use serde_json::Value;
use std::borrow::Cow;
use std::cell::OnceCell;

/// What happened to one rule in one phase; counted per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Transformed,
    /// A shadow rule would have changed something (nothing was changed).
    ShadowTransformed,
    Skipped,
    /// Input the rule needed was malformed; that part was left untouched.
    Error,
    /// The rule caused a 400 (malformed) or 413 (body too large) reply.
    Rejected,
}

/// Which way a body flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// The request parts the engine reads.
#[derive(Debug, Clone, Default)]
pub struct RequestInput {
    /// Every header with lowercase names, pseudo-headers (`:path`, `:method`) included.
    /// Shared with the skeleton's per-stream cache: no copy per request.
    pub headers: palisade_core::plugin::policy::HeaderPairs,
    /// True when no body follows the headers.
    pub end_of_stream: bool,
    /// `ip:port` of the downstream peer; read only if [`Config::needs_client_ip`].
    pub source_address: Option<String>,
    /// `xds.route_name`; read only if [`Config::needs_route_name`].
    pub route_name: Option<String>,
    /// Claims verified earlier in the chain (jwt_auth), for `$(claims.<name>)`.
    pub claims: Option<palisade_core::plugin::policy::Claims>,
}

/// Body operations of one rule with every template already rendered.
#[derive(Debug, Clone, PartialEq)]
struct BodyStep {
    rule: usize,
    shadow: bool,
    ops: BodyOps<Value>,
}

/// What to do with a body once it has arrived: buffer up to `max_bytes`, then apply.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyPlan {
    pub direction: Direction,
    pub max_bytes: u64,
    steps: Vec<BodyStep>,
}

impl BodyPlan {
    /// Whether applying the plan may change the body (false if only shadow rules have body ops).
    pub fn may_change(&self) -> bool {
        self.steps.iter().any(|s| !s.shadow)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct ResponseStep {
    rule: usize,
    shadow: bool,
    headers: HeaderOps<String>,
    body: BodyOps<Value>,
}

/// The response side of the rules that matched a request, rendered at request time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResponsePlan {
    steps: Vec<ResponseStep>,
}

/// The result of the request-headers phase.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutcome {
    /// Continue, or reply 400 / 413.
    pub decision: Decision,
    /// Headers to change (`:path`, `:method` and `content-length` included).
    pub edits: Vec<HeaderEdit>,
    pub events: Vec<(usize, Event)>,
    /// Buffer the request body and call [`Transformer::transform_body`] at its end.
    pub body: Option<BodyPlan>,
    /// Keep for [`Transformer::on_response_headers`].
    pub response: Option<ResponsePlan>,
    /// What shadow rules would have changed (names only, never values), for the log.
    pub shadow_notes: Vec<String>,
}

/// The result of the response-headers phase.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseOutcome {
    pub edits: Vec<HeaderEdit>,
    pub events: Vec<(usize, Event)>,
    pub body: Option<BodyPlan>,
    pub shadow_notes: Vec<String>,
}

/// The result of a body phase.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyOutcome {
    pub decision: Decision,
    /// The new body, if it changed.
    pub body: Option<Vec<u8>>,
    pub events: Vec<(usize, Event)>,
    pub shadow_notes: Vec<String>,
}

/// The engine: a validated config.
#[derive(Debug, Clone)]
pub struct Transformer {
    config: Config,
}

/// The request as it arrived, which templates and matchers read.
struct Original<'a> {
    headers: &'a [(String, Vec<u8>)],
    path: Option<&'a str>,
    method: Option<&'a str>,
    source_address: Option<&'a str>,
    route_name: Option<&'a str>,
    claims: Option<&'a serde_json::Map<String, serde_json::Value>>,
    client_ip: Option<String>,
    query: OnceCell<Result<QueryBook<'a>, Malformed>>,
}

impl<'a> Original<'a> {
    fn new(input: &'a RequestInput) -> Self {
        let pseudo = |name: &str| {
            input
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
        };
        Original {
            headers: &input.headers,
            path: pseudo(":path"),
            method: pseudo(":method"),
            source_address: input.source_address.as_deref(),
            route_name: input.route_name.as_deref().filter(|r| !r.is_empty()),
            claims: input.claims.as_deref(),
            client_ip: None,
            query: OnceCell::new(),
        }
    }

    fn url_path(&self) -> Option<&'a str> {
        self.path.map(url_path)
    }

    fn query(&self) -> &Result<QueryBook<'a>, Malformed> {
        self.query.get_or_init(|| match self.path {
            Some(p) => QueryBook::parse(query_string(p)),
            None => Err(Malformed(":path is not UTF-8")),
        })
    }
}

impl RequestView for Original<'_> {
    fn header(&self, name: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for (_, v) in self.headers.iter().filter(|(n, _)| n == name) {
            let text = String::from_utf8_lossy(v);
            match &mut out {
                Some(o) => {
                    o.push(',');
                    o.push_str(&text);
                }
                None => out = Some(text.into_owned()),
            }
        }
        out
    }
    fn path(&self) -> Option<String> {
        self.path.map(str::to_owned)
    }
    fn method(&self) -> Option<String> {
        self.method.map(str::to_owned)
    }
    fn source_address(&self) -> Option<String> {
        self.source_address.map(str::to_owned)
    }
    fn route_name(&self) -> Option<String> {
        self.route_name.map(str::to_owned)
    }
}

/// Template values: the original request plus one regex's capture groups.
struct RuleValues<'o, 'a> {
    original: &'o Original<'a>,
    captures: Vec<Option<String>>,
}

impl Values for RuleValues<'_, '_> {
    fn header(&self, name: &str) -> Result<Option<String>, Malformed> {
        let mut out: Option<String> = None;
        for (_, v) in self.original.headers.iter().filter(|(n, _)| n == name) {
            let text =
                std::str::from_utf8(v).map_err(|_| Malformed("a header value is not UTF-8"))?;
            match &mut out {
                Some(o) => {
                    o.push(',');
                    o.push_str(text);
                }
                None => out = Some(text.to_owned()),
            }
        }
        Ok(out)
    }
    fn query(&self, name: &str) -> Result<Option<String>, Malformed> {
        match self.original.query() {
            Ok(q) => Ok(q.get(name).map(str::to_owned)),
            Err(e) => Err(*e),
        }
    }
    fn capture(&self, index: usize) -> Option<String> {
        self.captures.get(index).cloned().flatten()
    }
    fn path(&self) -> Option<String> {
        self.original.url_path().map(str::to_owned)
    }
    fn method(&self) -> Option<String> {
        self.original.method.map(str::to_owned)
    }
    fn client_ip(&self) -> Option<String> {
        self.original.client_ip.clone()
    }
    fn route_name(&self) -> Option<String> {
        self.original.route_name.map(str::to_owned)
    }
    fn claim(&self, name: &str) -> Option<String> {
        palisade_core::plugin::policy::claim_text(self.original.claims?, name)
    }
}

fn captures_of(re: &regex_lite::Regex, text: &str) -> Option<Vec<Option<String>>> {
    let caps = re.captures(text)?;
    Some(
        (0..caps.len())
            .map(|i| caps.get(i).map(|m| m.as_str().to_owned()))
            .collect(),
    )
}

/// Accumulates what rendering and applying one rule did.
#[derive(Debug, Default)]
struct Tally {
    changed: bool,
    malformed: Option<Malformed>,
}

impl Tally {
    fn malformed(&mut self, m: Malformed) {
        self.malformed.get_or_insert(m);
    }

    fn event(&self, shadow: bool) -> Event {
        match (self.malformed.is_some(), self.changed, shadow) {
            (true, _, _) => Event::Error,
            (false, true, false) => Event::Transformed,
            (false, true, true) => Event::ShadowTransformed,
            (false, false, _) => Event::Skipped,
        }
    }
}

/// Renders one rule's templates: its values, and what a missing value becomes
/// (`on_missing_value`). Malformed input is tallied into the `Tally` each call is given.
#[derive(Clone, Copy)]
struct Renderer<'v> {
    values: &'v dyn Values,
    missing_as_empty: bool,
}

impl Renderer<'_> {
    /// Render a template to a value, or `None` (missing under `skip`, or malformed → tallied).
    fn render(&self, t: &Template, tally: &mut Tally, header_value: bool) -> Option<String> {
        match t.render(self.values, self.missing_as_empty) {
            Ok(Rendered::Value(v)) => {
                if header_value && v.contains(['\r', '\n', '\0']) {
                    tally.malformed(Malformed("a rendered header value contains CR, LF or NUL"));
                    return None;
                }
                Some(v)
            }
            Ok(Rendered::Missing) => None,
            Err(m) => {
                tally.malformed(m);
                None
            }
        }
    }

    /// Like [`Renderer::render`], borrowing literal templates instead of copying them.
    fn render_cow<'t>(
        &self,
        t: &'t Template,
        tally: &mut Tally,
        header_value: bool,
    ) -> Option<Cow<'t, str>> {
        match t.as_literal() {
            Some(text) => Some(Cow::Borrowed(text)),
            None => self.render(t, tally, header_value).map(Cow::Owned),
        }
    }

    fn pairs(
        &self,
        list: &[(String, Template)],
        tally: &mut Tally,
        header_value: bool,
    ) -> Vec<(String, String)> {
        list.iter()
            .filter_map(|(n, t)| self.render(t, tally, header_value).map(|v| (n.clone(), v)))
            .collect()
    }

    fn headers(&self, ops: &HeaderOps<Template>, tally: &mut Tally) -> HeaderOps<String> {
        HeaderOps {
            remove: ops.remove.clone(),
            remove_prefix: ops.remove_prefix.clone(),
            rename: ops.rename.clone(),
            set: self.pairs(&ops.set, tally, true),
            add: self.pairs(&ops.add, tally, true),
            append: self.pairs(&ops.append, tally, true),
        }
    }

    fn body(&self, ops: &BodyOps<BodyValue>, tally: &mut Tally) -> BodyOps<Value> {
        BodyOps {
            remove: ops.remove.clone(),
            rename: ops.rename.clone(),
            set: ops
                .set
                .iter()
                .filter_map(|(p, v)| match v {
                    BodyValue::Json(j) => Some((p.clone(), j.clone())),
                    BodyValue::Template(t) => self
                        .render(t, tally, false)
                        .map(|s| (p.clone(), Value::String(s))),
                })
                .collect(),
        }
    }
}

/// Render operations of rule `rule` now, for a later phase (body, response): a malformed value
/// is that rule's `Error` event at once; the operations it could render still run.
fn render_ahead<T>(
    rule: usize,
    events: &mut Vec<(usize, Event)>,
    render: impl FnOnce(&mut Tally) -> T,
) -> T {
    let mut tally = Tally::default();
    let rendered = render(&mut tally);
    if tally.malformed.is_some() {
        events.push((rule, Event::Error));
    }
    rendered
}

fn cow_bytes(s: Cow<'_, str>) -> Cow<'_, [u8]> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.as_bytes()),
        Cow::Owned(o) => Cow::Owned(o.into_bytes()),
    }
}

/// A URL path we are willing to send: starts with `/`, no query or fragment delimiters, no
/// whitespace or control characters.
fn valid_url_path(p: &str) -> bool {
    p.starts_with('/')
        && !p
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
}

/// The mutable state of a request while rules run.
#[derive(Debug, Clone)]
struct RequestState<'a> {
    headers: HeaderBook<'a>,
    path: Option<Cow<'a, str>>,
    path_changed: bool,
    query: Option<Result<QueryBook<'a>, Malformed>>,
    method: Option<&'a str>,
}

impl Transformer {
    pub fn new(config: Config) -> Self {
        Transformer { config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn rule_name(&self, i: usize) -> &str {
        self.config.rules.get(i).map_or("?", |r| r.name.as_str())
    }

    /// The request-headers phase.
    pub fn on_request_headers(&self, input: &RequestInput) -> RequestOutcome {
        self.request_headers(input)
    }

    fn request_headers<'a>(&'a self, input: &'a RequestInput) -> RequestOutcome {
        let cfg = &self.config;
        let mut original = Original::new(input);
        if cfg.needs_client_ip {
            original.client_ip = client_ip(&original, cfg.client_ip)
                .ip
                .map(|ip| ip.to_string());
        }
        let mut state = RequestState {
            headers: HeaderBook::new(&input.headers),
            path: original.url_path().map(Cow::Borrowed),
            path_changed: false,
            query: None,
            method: None,
        };
        let mut out = RequestOutcome {
            decision: Decision::Continue,
            edits: Vec::new(),
            events: Vec::new(),
            body: None,
            response: None,
            shadow_notes: Vec::new(),
        };
        let mut body_steps = Vec::new();
        let mut response_steps = Vec::new();
        for (i, rule) in cfg.rules.iter().enumerate() {
            if !rule.matcher.matches(&original) {
                continue;
            }
            let captures = match (&rule.path_regex, original.url_path()) {
                (None, _) => Vec::new(),
                (Some(re), Some(p)) => match captures_of(re, p) {
                    Some(c) => c,
                    None => continue,
                },
                (Some(_), None) => continue,
            };
            let values = RuleValues {
                original: &original,
                captures,
            };
            let renderer = Renderer {
                values: &values,
                missing_as_empty: cfg.missing_as_empty,
            };
            let r = &rule.request;
            let has_header_phase = !r.headers.is_empty()
                || !r.query.is_empty()
                || r.path.is_some()
                || r.method.is_some();
            if has_header_phase {
                let mut tally = Tally::default();
                if rule.shadow {
                    let mut scratch = state.clone();
                    self.apply_request_rule(rule, &values, &original, &mut scratch, &mut tally);
                    if tally.changed {
                        let changed = describe_request_change(&state, &scratch);
                        out.shadow_notes.push(format!(
                            "rule {} (shadow) would change the request: {changed}",
                            rule.name
                        ));
                    }
                } else {
                    self.apply_request_rule(rule, &values, &original, &mut state, &mut tally);
                    if let (Some(m), OnMalformed::Reject) = (tally.malformed, cfg.on_malformed) {
                        out.events.push((i, Event::Rejected));
                        out.decision = Decision::Reply(malformed_reply(m));
                        return out;
                    }
                }
                out.events.push((i, tally.event(rule.shadow)));
            }
            if !r.body.is_empty() {
                let ops = render_ahead(i, &mut out.events, |t| renderer.body(&r.body, t));
                body_steps.push(BodyStep {
                    rule: i,
                    shadow: rule.shadow,
                    ops,
                });
            }
            if rule.has_response_ops() {
                let (headers, body) = render_ahead(i, &mut out.events, |t| {
                    let ops = &rule.response;
                    (
                        renderer.headers(&ops.headers, t),
                        renderer.body(&ops.body, t),
                    )
                });
                response_steps.push(ResponseStep {
                    rule: i,
                    shadow: rule.shadow,
                    headers,
                    body,
                });
            }
            if cfg.mode == Mode::First {
                break;
            }
        }
        self.finish_path(&original, &mut state);
        if !body_steps.is_empty() {
            let plan = BodyPlan {
                direction: Direction::Request,
                max_bytes: cfg.max_body_bytes,
                steps: body_steps,
            };
            match self.admit_body(plan, &state.headers, input.end_of_stream, &mut out.events) {
                Admit::Buffer(plan) => {
                    if plan.may_change() {
                        state.headers.remove("content-length");
                    }
                    out.body = Some(plan);
                }
                Admit::Skip => {}
                Admit::Reject(reply) => {
                    out.decision = Decision::Reply(reply);
                    return out;
                }
            }
        }
        if !response_steps.is_empty() {
            out.response = Some(ResponsePlan {
                steps: response_steps,
            });
        }
        out.edits = state.headers.edits();
        out
    }

    /// Headers, query, path and method of one rule, on `state`.
    fn apply_request_rule<'a>(
        &'a self,
        rule: &'a Rule,
        values: &RuleValues<'_, '_>,
        original: &Original<'a>,
        state: &mut RequestState<'a>,
        tally: &mut Tally,
    ) {
        let cfg = &self.config;
        let r = &rule.request;
        let renderer = Renderer {
            values,
            missing_as_empty: cfg.missing_as_empty,
        };
        if !r.headers.is_empty() {
            let mut t = Tally::default();
            let changed = state.headers.apply(&r.headers, |v| {
                renderer.render_cow(v, &mut t, true).map(cow_bytes)
            });
            tally.changed |= changed;
            if let Some(m) = t.malformed {
                tally.malformed(m);
            }
        }
        if !r.query.is_empty() {
            let query = state.query.get_or_insert_with(|| original.query().clone());
            match query {
                Ok(q) => {
                    let mut t = Tally::default();
                    tally.changed |= q.apply(&r.query, |v| renderer.render_cow(v, &mut t, false));
                    if let Some(m) = t.malformed {
                        tally.malformed(m);
                    }
                }
                Err(m) => tally.malformed(*m),
            }
        }
        if let Some(rewrite) = &r.path {
            match &state.path {
                None => tally.malformed(Malformed(":path is missing or not UTF-8")),
                Some(current) => {
                    let new = match rewrite {
                        PathRewrite::Prefix {
                            prefix,
                            replacement,
                        } => current.strip_prefix(prefix.as_str()).and_then(|rest| {
                            renderer
                                .render(replacement, tally, false)
                                .map(|r| format!("{r}{rest}"))
                        }),
                        PathRewrite::Regex { regex, replacement } => {
                            let m = regex.find(current);
                            let caps = captures_of(regex, current);
                            match (m, caps) {
                                (Some(m), Some(captures)) => {
                                    let v = RuleValues {
                                        original: values.original,
                                        captures,
                                    };
                                    let renderer = Renderer {
                                        values: &v,
                                        ..renderer
                                    };
                                    renderer.render(replacement, tally, false).map(|r| {
                                        format!(
                                            "{}{}{}",
                                            &current[..m.start()],
                                            r,
                                            &current[m.end()..]
                                        )
                                    })
                                }
                                _ => None,
                            }
                        }
                    };
                    if let Some(new) = new {
                        if !valid_url_path(&new) {
                            tally
                                .malformed(Malformed("the rewritten path is not a valid URL path"));
                        } else if new != current.as_ref() {
                            state.path = Some(Cow::Owned(new));
                            state.path_changed = true;
                            tally.changed = true;
                        }
                    }
                }
            }
        }
        if let Some(m) = &r.method {
            if state.method.or(original.method) != Some(m.as_str()) {
                tally.changed = true;
            }
            state.method = Some(m.as_str());
        }
    }

    /// Write `:path` and `:method` into the header book if they changed.
    fn finish_path(&self, original: &Original<'_>, state: &mut RequestState<'_>) {
        let query_changed = matches!(&state.query, Some(Ok(q)) if q.changed());
        if state.path_changed || query_changed {
            if let (Some(path), Some(orig)) = (&state.path, original.path) {
                let query = match &state.query {
                    Some(Ok(q)) if q.changed() => q.encode(),
                    _ => query_string(orig).to_owned(),
                };
                let full = if query.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{query}")
                };
                if full != orig {
                    state.headers.set(":path", Cow::Owned(full.into_bytes()));
                }
            }
        }
        if let Some(m) = state.method {
            if original.method != Some(m) {
                state.headers.set(":method", Cow::Borrowed(m.as_bytes()));
            }
        }
    }

    /// Decide at headers time whether a body will be buffered.
    fn admit_body(
        &self,
        plan: BodyPlan,
        headers: &HeaderBook<'_>,
        end_of_stream: bool,
        events: &mut Vec<(usize, Event)>,
    ) -> Admit {
        let skip_all = |events: &mut Vec<(usize, Event)>, plan: &BodyPlan| {
            events.extend(plan.steps.iter().map(|s| (s.rule, Event::Skipped)));
            Admit::Skip
        };
        if end_of_stream
            || !headers
                .get("content-type")
                .is_some_and(is_json_content_type)
        {
            return skip_all(events, &plan);
        }
        let declared = headers
            .get("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared == Some(0) {
            return skip_all(events, &plan);
        }
        if declared.is_some_and(|n| n > plan.max_bytes) {
            let (decision, evs) = self.body_too_large(&plan);
            events.extend(evs);
            return match decision {
                Decision::Reply(r) => Admit::Reject(r),
                Decision::Continue => Admit::Skip,
            };
        }
        Admit::Buffer(plan)
    }

    /// The body grew past `max_bytes`: 413 (requests with `on_too_large: reject` and a rule that
    /// is not in shadow mode), or pass it through untouched.
    pub fn body_too_large(&self, plan: &BodyPlan) -> (Decision, Vec<(usize, Event)>) {
        let reject = plan.direction == Direction::Request
            && self.config.on_too_large == OnTooLarge::Reject
            && plan.may_change();
        if reject {
            let events = plan
                .steps
                .iter()
                .map(|s| {
                    (
                        s.rule,
                        if s.shadow {
                            Event::Skipped
                        } else {
                            Event::Rejected
                        },
                    )
                })
                .collect();
            let reply = LocalReply::new(413, "palisade_transform_body_too_large")
                .header("content-type", "text/plain")
                .body(format!(
                    "request body larger than {} bytes cannot be transformed\n",
                    plan.max_bytes
                ));
            (Decision::Reply(reply), events)
        } else {
            let events = plan
                .steps
                .iter()
                .map(|s| (s.rule, Event::Skipped))
                .collect();
            (Decision::Continue, events)
        }
    }

    /// Apply a body plan to the complete body.
    pub fn transform_body(&self, plan: &BodyPlan, body: &[u8]) -> BodyOutcome {
        let mut out = BodyOutcome {
            decision: Decision::Continue,
            body: None,
            events: Vec::new(),
            shadow_notes: Vec::new(),
        };
        if u64::try_from(body.len()).map_or(true, |n| n > plan.max_bytes) {
            let (decision, events) = self.body_too_large(plan);
            out.decision = decision;
            out.events = events;
            return out;
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            out.events = plan
                .steps
                .iter()
                .map(|s| (s.rule, Event::Skipped))
                .collect();
            return out;
        }
        let mut doc: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                let reject = plan.direction == Direction::Request
                    && self.config.on_malformed == OnMalformed::Reject
                    && plan.may_change();
                out.events = plan
                    .steps
                    .iter()
                    .map(|s| {
                        let e = if reject && !s.shadow {
                            Event::Rejected
                        } else {
                            Event::Error
                        };
                        (s.rule, e)
                    })
                    .collect();
                if reject {
                    out.decision = Decision::Reply(malformed_reply(Malformed(
                        "the JSON body is not valid JSON",
                    )));
                }
                return out;
            }
        };
        let mut changed = false;
        for step in &plan.steps {
            let applied = if step.shadow {
                let mut scratch = doc.clone();
                let would = step.ops.apply(&mut scratch);
                if would {
                    out.shadow_notes.push(format!(
                        "rule {} (shadow) would change the {} body",
                        self.rule_name(step.rule),
                        direction_name(plan.direction)
                    ));
                }
                would
            } else {
                let did = step.ops.apply(&mut doc);
                changed |= did;
                did
            };
            let tally = Tally {
                changed: applied,
                malformed: None,
            };
            out.events.push((step.rule, tally.event(step.shadow)));
        }
        if changed {
            match serde_json::to_vec(&doc) {
                Ok(bytes) => out.body = Some(bytes),
                Err(_) => {
                    // Serializing a Value cannot fail in practice; if it did, pass through.
                    for e in out.events.iter_mut() {
                        e.1 = Event::Error;
                    }
                }
            }
        }
        out
    }

    /// The response-headers phase, for the rules that matched the request.
    pub fn on_response_headers<'a>(
        &'a self,
        plan: &'a ResponsePlan,
        headers: &'a [(String, Vec<u8>)],
        end_of_stream: bool,
    ) -> ResponseOutcome {
        let mut book = HeaderBook::new(headers);
        let mut out = ResponseOutcome {
            edits: Vec::new(),
            events: Vec::new(),
            body: None,
            shadow_notes: Vec::new(),
        };
        let mut body_steps = Vec::new();
        for step in &plan.steps {
            if !step.headers.is_empty() {
                let literal = |v: &'a String| Some(Cow::Borrowed(v.as_bytes()));
                let changed = if step.shadow {
                    let mut scratch = book.clone();
                    scratch.apply(&step.headers, literal) && scratch.edits() != book.edits()
                } else {
                    book.apply(&step.headers, literal)
                };
                if step.shadow && changed {
                    let mut scratch = book.clone();
                    scratch.apply(&step.headers, literal);
                    let before = book.edits();
                    let names: Vec<String> = scratch
                        .edits()
                        .into_iter()
                        .filter(|e| !before.contains(e))
                        .map(|e| e.name)
                        .collect();
                    out.shadow_notes.push(format!(
                        "rule {} (shadow) would change response headers {}",
                        self.rule_name(step.rule),
                        names.join(",")
                    ));
                }
                let tally = Tally {
                    changed,
                    malformed: None,
                };
                out.events.push((step.rule, tally.event(step.shadow)));
            }
            if !step.body.is_empty() {
                body_steps.push(BodyStep {
                    rule: step.rule,
                    shadow: step.shadow,
                    ops: step.body.clone(),
                });
            }
        }
        if !body_steps.is_empty() {
            let plan = BodyPlan {
                direction: Direction::Response,
                max_bytes: self.config.max_body_bytes,
                steps: body_steps,
            };
            match self.admit_body(plan, &book, end_of_stream, &mut out.events) {
                Admit::Buffer(plan) => {
                    if plan.may_change() {
                        book.remove("content-length");
                    }
                    out.body = Some(plan);
                }
                // Responses are never rejected (see `body_too_large`).
                Admit::Skip | Admit::Reject(_) => {}
            }
        }
        out.edits = book.edits();
        out
    }
}

enum Admit {
    Buffer(BodyPlan),
    Skip,
    Reject(LocalReply),
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Request => "request",
        Direction::Response => "response",
    }
}

fn malformed_reply(m: Malformed) -> LocalReply {
    LocalReply::new(400, "palisade_transform_malformed")
        .header("content-type", "text/plain")
        .body(format!("malformed request: {}\n", m.0))
}

/// Names (never values) of what a shadow rule would change.
fn describe_request_change(before: &RequestState<'_>, after: &RequestState<'_>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let b = before.headers.edits();
    let a = after.headers.edits();
    let names: Vec<&str> = a
        .iter()
        .filter(|e| !b.contains(e))
        .map(|e| e.name.as_str())
        .collect();
    if !names.is_empty() {
        parts.push(format!("headers {}", names.join(",")));
    }
    let enc = |s: &RequestState<'_>| match &s.query {
        Some(Ok(q)) => Some(q.encode()),
        _ => None,
    };
    if enc(before) != enc(after) {
        parts.push("query".into());
    }
    if before.path != after.path {
        parts.push("path".into());
    }
    if before.method != after.method {
        parts.push("method".into());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests;
