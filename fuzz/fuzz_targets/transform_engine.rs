//! The transform engine on fuzzer-chosen requests and responses, with a fixed config that uses
//! every operation (header remove/remove_prefix/rename/set/add/append with templates, query
//! remove/rename/set/add, regex and prefix path rewrites, method override, JSON body
//! remove/rename/set, response headers and body, a shadow rule, `mode: all`, `reject` on malformed
//! and too-large input), run through `on_request_headers` → `transform_body` →
//! `on_response_headers` → `transform_body`, as the filter does.
//!
//! Invariants, from `docs/transform.md`: no panic; every header edit has a non-empty lowercase name
//! without CR/LF/NUL and values without CR/LF/NUL (the input, like Envoy's, has none);
//! pseudo-header edits are only `:path` (a URL path it rewrote starts with `/` and has no
//! whitespace, control characters or `#`) and `:method` (upper-case letters); `content-length` is
//! only ever removed, and only when a body that may change will be buffered (so the length the
//! upstream sees is Envoy's re-framing of the body produced); a rewritten body is valid JSON; a
//! reply is 400 or 413.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use palisade_core::Decision;
use std::sync::LazyLock;
use transform::config::Config;
use transform::engine::{BodyPlan, RequestInput, Transformer};
use transform::ops::HeaderEdit;

const CONFIG: &str = r#"{
  "mode": "all",
  "on_missing_value": "empty",
  "on_malformed": "reject",
  "client_ip": {"trusted_hops": 1},
  "body": {"max_bytes": 4096, "on_too_large": "reject"},
  "rules": [
    {
      "name": "users_v1",
      "match": {"path_regex": "^/v1/users/(?P<id>[0-9]+)", "methods": ["GET", "POST"]},
      "request": {
        "headers": {
          "remove": ["x-debug"], "remove_prefix": ["x-internal-"],
          "rename": [{"from": "x-token", "to": "authorization"}],
          "set": [{"name": "x-user-id", "value": "$(path.id)"}, {"name": "x-q", "value": "$(query.q)|$(headers.x-in)"}],
          "add": [{"name": "x-client-ip", "value": "$(client_ip)"}, {"name": "x-route", "value": "$(route_name) $(method) $(path)"}],
          "append": [{"name": "via", "value": "palisade $$ $(path.0)"}]
        },
        "query": {
          "remove": ["debug"], "rename": [{"from": "p", "to": "page"}],
          "set": [{"name": "v", "value": "$(headers.x-version)"}], "add": [{"name": "lang", "value": "en gb&x=1"}]
        },
        "path": {"prefix": "/v1/", "replacement": "/v2/$(query.q)/"},
        "method": "post",
        "body": {
          "remove": ["/password", "/items/0"], "rename": [{"from": "/user", "to": "/account/login"}],
          "set": [{"pointer": "/source", "value": {"a": [1, null]}}, {"pointer": "/user_id", "template": "$(path.id)"},
                  {"pointer": "/items/-", "value": 7}, {"pointer": "/a~1b/c~0d", "template": "$(headers.x-in)"}]
        }
      },
      "response": {
        "headers": {"remove": ["server"], "remove_prefix": ["x-upstream-"], "rename": [{"from": "x-a", "to": "x-b"}],
                    "set": [{"name": "cache-control", "value": "no-store"}], "add": [{"name": "x-id", "value": "$(path.id)"}],
                    "append": [{"name": "via", "value": "palisade"}]},
        "body": {"remove": ["/internal"], "rename": [{"from": "/a", "to": "/b/c"}],
                 "set": [{"pointer": "/api_version", "value": 2}, {"pointer": "/user", "template": "$(headers.x-in)"}]}
      }
    },
    {
      "name": "regex_rewrite",
      "match": {"path_prefix": "/", "headers": [{"name": "x-rewrite"}, {"name": "x-skip", "present": false}]},
      "request": {
        "path": {"regex": "^/(?P<a>[^/]*)/(.*)$", "replacement": "/r/$(path.2)/$(path.a)"},
        "query": {"set": [{"name": "$weird name", "value": "$(headers.x-in)"}]},
        "headers": {"set": [{"name": "x-from-path", "value": "$(path)"}]}
      }
    },
    {
      "name": "shadowed",
      "shadow": true,
      "match": {"path_prefix": "/v"},
      "request": {
        "headers": {"remove_prefix": ["x-"]},
        "method": "DELETE",
        "body": {"remove": ["/user"], "set": [{"pointer": "/shadow", "value": true}]}
      },
      "response": {"headers": {"set": [{"name": "x-shadow", "value": "1"}]}, "body": {"remove": ["/a"]}}
    }
  ]
}"#;

static ENGINE: LazyLock<Transformer> =
    LazyLock::new(|| Transformer::new(Config::parse(CONFIG.as_bytes()).unwrap()));

#[derive(Debug, Arbitrary)]
enum Name {
    Known(u8),
    Other(String),
}

const KNOWN: [&str; 16] = [
    "x-debug",
    "x-internal-a",
    "x-token",
    "authorization",
    "x-user-id",
    "x-in",
    "x-version",
    "content-type",
    "content-length",
    "x-forwarded-for",
    "x-rewrite",
    "x-skip",
    "via",
    "server",
    "x-a",
    "x-upstream-status",
];

impl Name {
    fn get(&self) -> Option<String> {
        let name = match self {
            Name::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].to_owned(),
            // Envoy hands the plugin lowercase names without CR, LF or NUL; never empty.
            Name::Other(s) => s.to_ascii_lowercase().replace(['\r', '\n', '\0'], ""),
        };
        (!name.is_empty() && !name.starts_with(':')).then_some(name)
    }
}

#[derive(Debug, Arbitrary)]
enum Body {
    Raw(Vec<u8>),
    /// A JSON object with fuzzed members at the places the rules edit.
    Object {
        user: String,
        password: Option<String>,
        items: Vec<i64>,
        internal: bool,
        extra: Vec<u8>,
    },
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Raw(b) => b.clone(),
            Body::Object {
                user,
                password,
                items,
                internal,
                extra,
            } => {
                let mut v = serde_json::json!({"user": user, "items": items, "a": {"b": 1}});
                if let Some(p) = password {
                    v["password"] = p.clone().into();
                }
                if *internal {
                    v["internal"] = serde_json::Value::Null;
                }
                let mut out = serde_json::to_vec(&v).unwrap();
                if !extra.is_empty() {
                    out.pop();
                    out.extend_from_slice(b",\"extra\":");
                    out.extend_from_slice(extra);
                    out.push(b'}');
                }
                out
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    method: u8,
    custom_method: String,
    path_prefix: u8,
    path: String,
    headers: Vec<(Name, Vec<u8>)>,
    json: bool,
    content_length: Option<u64>,
    end_of_stream: bool,
    source_address: Option<String>,
    route_name: Option<String>,
    body: Body,
    response_headers: Vec<(Name, Vec<u8>)>,
    response_json: bool,
    response_end_of_stream: bool,
    response_body: Body,
}

fn clean(v: &[u8]) -> Vec<u8> {
    v.iter()
        .copied()
        .filter(|b| !matches!(b, b'\r' | b'\n' | 0))
        .collect()
}

fn check_edits(
    edits: &[HeaderEdit],
    body: Option<&BodyPlan>,
    request: bool,
    original_url_path: Option<&str>,
) {
    for e in edits {
        assert!(!e.name.is_empty(), "empty header name");
        assert!(
            !e.name.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "bad name {:?}",
            e.name
        );
        assert_eq!(
            e.name,
            e.name.to_ascii_lowercase(),
            "header name not lowercase"
        );
        for v in &e.values {
            assert!(
                !v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
                "CR/LF/NUL in {}",
                e.name
            );
        }
        if e.name.starts_with(':') {
            assert!(request, "pseudo-header edit on a response: {}", e.name);
            let [v] = e.values.as_slice() else {
                panic!("{} must have one value", e.name)
            };
            let v = std::str::from_utf8(v).unwrap();
            match e.name.as_str() {
                ":path" => {
                    // The engine validates the paths it *rewrites*; a query edit keeps the URL
                    // path as it came (Envoy's codecs vouch for that one).
                    let url_path = v.split('?').next().unwrap();
                    if Some(url_path) != original_url_path {
                        assert!(url_path.starts_with('/'), "path {v:?}");
                        assert!(
                            !url_path
                                .bytes()
                                .any(|b| b <= b' ' || b == 0x7f || b == b'#'),
                            "path {v:?}"
                        );
                    }
                }
                ":method" => assert!(
                    !v.is_empty() && v.bytes().all(|b| b.is_ascii_uppercase()),
                    "method {v:?}"
                ),
                other => panic!("edit of pseudo-header {other}"),
            }
        }
        if e.name == "content-length" {
            assert!(e.values.is_empty(), "content-length rewritten, not removed");
            assert!(
                body.is_some_and(BodyPlan::may_change),
                "content-length removed without a body edit"
            );
        }
        assert!(e.name != "transfer-encoding", "transfer-encoding touched");
    }
}

/// The URL path (without the query) of the request's `:path`.
fn url_path(request: &RequestInput) -> &str {
    let path = request
        .headers
        .iter()
        .find(|(n, _)| n == ":path")
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .unwrap_or_default();
    // As the engine reads it (the fragment, which Envoy rejects anyway, is not part of it).
    palisade_core::key::url_path(path)
}

fn check_body(plan: &BodyPlan, body: &[u8], request: bool) {
    let out = ENGINE.transform_body(plan, body);
    if let Some(new) = &out.body {
        assert!(plan.may_change(), "a shadow-only plan changed the body");
        serde_json::from_slice::<serde_json::Value>(new).expect("rewritten body is not JSON");
        assert!(out.decision.is_continue());
    }
    if let Decision::Reply(r) = &out.decision {
        assert!(request, "a response body caused a local reply");
        assert!(matches!(r.status, 400 | 413), "reply {}", r.status);
    }
}

fuzz_target!(|input: Input| {
    let engine = &*ENGINE;
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let method = methods
        .get(usize::from(input.method))
        .map_or(input.custom_method.clone(), |m| (*m).to_owned());
    let prefixes = ["/v1/users/42", "/v1/users/", "/", "/v2/", ""];
    let prefix = prefixes[usize::from(input.path_prefix) % prefixes.len()];
    // Envoy's :path has no CR/LF/NUL (the codecs reject them).
    let path =
        String::from_utf8(clean(format!("{prefix}{}", input.path).as_bytes())).unwrap_or_default();
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), clean(method.as_bytes())),
        (":path".into(), path.into_bytes()),
    ];
    if input.json {
        headers.push((
            "content-type".into(),
            b"application/json; charset=utf-8".to_vec(),
        ));
    }
    if let Some(n) = input.content_length {
        headers.push(("content-length".into(), n.to_string().into_bytes()));
    }
    headers.extend(
        input
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.get()?, clean(v)))),
    );
    let request = RequestInput {
        headers: headers.into(),
        end_of_stream: input.end_of_stream,
        source_address: input.source_address.clone(),
        route_name: input.route_name.clone(),
        claims: None,
    };
    let out = engine.on_request_headers(&request);
    if let Decision::Reply(r) = &out.decision {
        assert!(matches!(r.status, 400 | 413), "reply {}", r.status);
        return;
    }
    check_edits(
        &out.edits,
        out.body.as_ref(),
        true,
        Some(url_path(&request)),
    );
    if let Some(plan) = &out.body {
        check_body(plan, &input.body.bytes(), true);
    }
    let Some(response) = &out.response else {
        return;
    };
    let mut headers: Vec<(String, Vec<u8>)> = vec![(":status".into(), b"200".to_vec())];
    if input.response_json {
        headers.push(("content-type".into(), b"application/problem+json".to_vec()));
    }
    headers.extend(
        input
            .response_headers
            .iter()
            .filter_map(|(n, v)| Some((n.get()?, clean(v)))),
    );
    let rout = engine.on_response_headers(response, &headers, input.response_end_of_stream);
    check_edits(&rout.edits, rout.body.as_ref(), false, None);
    if let Some(plan) = &rout.body {
        check_body(plan, &input.response_body.bytes(), false);
    }
});
