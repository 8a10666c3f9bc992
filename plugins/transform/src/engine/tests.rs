use super::*;
use serde_json::json;
use std::collections::BTreeMap;

fn engine(v: Value) -> Transformer {
    Transformer::new(Config::parse(v.to_string().as_bytes()).unwrap())
}

fn input(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestInput {
    let mut h = vec![
        (":method".to_owned(), method.as_bytes().to_vec()),
        (":path".to_owned(), path.as_bytes().to_vec()),
    ];
    h.extend(
        headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())),
    );
    RequestInput {
        headers: h.into(),
        end_of_stream: true,
        source_address: Some("10.0.0.1:1234".into()),
        route_name: Some("route-a".into()),
        claims: None,
    }
}

/// What the glue would leave: the original headers with the edits applied, as name → values.
fn after(input: &RequestInput, edits: &[HeaderEdit]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, v) in input.headers.iter() {
        map.entry(n.clone())
            .or_default()
            .push(String::from_utf8_lossy(v).into_owned());
    }
    for e in edits {
        if e.values.is_empty() {
            map.remove(&e.name);
        } else {
            map.insert(
                e.name.clone(),
                e.values
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect(),
            );
        }
    }
    map
}

/// `e` leaves the request's headers as they arrived, and its one rule reports `event`.
fn assert_untouched(e: &Transformer, inp: &RequestInput, event: Event) {
    let out = e.on_request_headers(inp);
    assert!(out.edits.is_empty(), "{inp:?}: {:?}", out.edits);
    assert_eq!(out.events, vec![(0, event)], "{inp:?}");
}

fn one<'a>(map: &'a BTreeMap<String, Vec<String>>, name: &str) -> Option<&'a str> {
    map.get(name).map(|v| v[0].as_str())
}

fn rule(request: Value) -> Value {
    json!({"rules": [{"name": "r", "request": request}]})
}

#[test]
fn each_request_header_operation_does_its_one_thing() {
    let e = engine(rule(json!({"headers": {
        "remove": ["x-gone"],
        "remove_prefix": ["x-internal-"],
        "rename": [{"from": "x-old", "to": "x-new"}],
        "set": [{"name": "x-set", "value": "v"}],
        "add": [{"name": "x-add", "value": "a"}, {"name": "x-have", "value": "no"}],
        "append": [{"name": "x-app", "value": "2"}]
    }})));
    let inp = input(
        "GET",
        "/",
        &[
            ("x-gone", "1"),
            ("x-internal-a", "1"),
            ("x-internal-b", "1"),
            ("x-old", "o"),
            ("x-set", "before"),
            ("x-have", "yes"),
            ("x-app", "1"),
            ("x-untouched", "u"),
        ],
    );
    let out = e.on_request_headers(&inp);
    let h = after(&inp, &out.edits);
    for gone in ["x-gone", "x-internal-a", "x-internal-b", "x-old"] {
        assert!(!h.contains_key(gone), "{gone}");
    }
    assert_eq!(one(&h, "x-new"), Some("o"));
    assert_eq!(one(&h, "x-set"), Some("v"));
    assert_eq!(one(&h, "x-add"), Some("a"));
    assert_eq!(one(&h, "x-have"), Some("yes"));
    assert_eq!(h["x-app"], vec!["1", "2"]);
    assert_eq!(one(&h, "x-untouched"), Some("u"));
    assert!(
        out.edits.iter().all(|e| e.name != "x-untouched"),
        "only changes are sent back"
    );
    assert_eq!(out.events, vec![(0, Event::Transformed)]);
    assert_eq!(out.decision, Decision::Continue);
}

#[test]
fn operations_inside_a_rule_run_remove_rename_set_add_append() {
    // remove then add: the header comes back with the added value.
    // rename onto a name that is then set: set wins.
    // set then add: add sees the header and does nothing; append adds after set.
    let e = engine(rule(json!({"headers": {
        "remove": ["x-a"],
        "rename": [{"from": "x-b", "to": "x-c"}],
        "set": [{"name": "x-c", "value": "set"}, {"name": "x-d", "value": "set"}],
        "add": [{"name": "x-a", "value": "added"}, {"name": "x-d", "value": "added"}],
        "append": [{"name": "x-d", "value": "appended"}]
    }})));
    let inp = input("GET", "/", &[("x-a", "orig"), ("x-b", "b")]);
    let h = after(&inp, &e.on_request_headers(&inp).edits);
    assert_eq!(h["x-a"], vec!["added"]);
    assert!(!h.contains_key("x-b"));
    assert_eq!(h["x-c"], vec!["set"]);
    assert_eq!(h["x-d"], vec!["set", "appended"]);
}

#[test]
fn query_operations_rewrite_path_and_keep_untouched_parameters_as_sent() {
    let e = engine(rule(json!({"query": {
        "remove": ["debug"],
        "rename": [{"from": "p", "to": "page"}],
        "set": [{"name": "v", "value": "2"}],
        "add": [{"name": "who", "value": "$(headers.x-user)"}, {"name": "keep", "value": "no"}]
    }})));
    let inp = input(
        "GET",
        "/s?keep=a%2Fb&debug=1&p=3&v=1",
        &[("x-user", "J Doe")],
    );
    let h = after(&inp, &e.on_request_headers(&inp).edits);
    assert_eq!(one(&h, ":path"), Some("/s?keep=a%2Fb&page=3&v=2&who=J+Doe"));
}

#[test]
fn removing_the_last_query_parameter_drops_the_question_mark() {
    let e = engine(rule(json!({"query": {"remove": ["a"]}})));
    let inp = input("GET", "/x?a=1", &[]);
    let h = after(&inp, &e.on_request_headers(&inp).edits);
    assert_eq!(one(&h, ":path"), Some("/x"));
}

#[test]
fn a_query_rule_that_changes_nothing_leaves_path_alone_and_is_skipped() {
    let e = engine(rule(
        json!({"query": {"remove": ["absent"], "set": [{"name": "a", "value": "1"}]}}),
    ));
    assert_untouched(&e, &input("GET", "/x?a=1", &[]), Event::Skipped);
}

#[test]
fn path_rewrite_by_regex_uses_its_captures_and_keeps_the_query() {
    let e = engine(rule(json!({"path": {
        "regex": "^/api/(?P<svc>[a-z]+)/",
        "replacement": "/internal/$(path.svc)/v2/"
    }})));
    let inp = input("GET", "/api/orders/42?x=1", &[]);
    let h = after(&inp, &e.on_request_headers(&inp).edits);
    assert_eq!(one(&h, ":path"), Some("/internal/orders/v2/42?x=1"));
    // No match: untouched, skipped.
    assert_untouched(&e, &input("GET", "/other", &[]), Event::Skipped);
}

#[test]
fn path_rewrite_by_prefix_replaces_only_a_leading_prefix() {
    let e = engine(rule(
        json!({"path": {"prefix": "/v1/", "replacement": "/v2/"}}),
    ));
    for (from, to) in [("/v1/a", "/v2/a"), ("/v1/", "/v2/"), ("/x/v1/a", "/x/v1/a")] {
        let inp = input("GET", from, &[]);
        let h = after(&inp, &e.on_request_headers(&inp).edits);
        assert_eq!(one(&h, ":path"), Some(to), "{from}");
    }
}

#[test]
fn a_rewritten_path_that_is_not_a_url_path_is_an_error_and_not_applied() {
    let e = engine(rule(
        json!({"path": {"prefix": "/", "replacement": "/$(headers.x-where)/"}}),
    ));
    let inp = input("GET", "/a", &[("x-where", "has space")]);
    assert_untouched(&e, &inp, Event::Error);
}

#[test]
fn method_override_changes_the_method() {
    let e = engine(rule(json!({"method": "post"})));
    let inp = input("GET", "/", &[]);
    let out = e.on_request_headers(&inp);
    assert_eq!(one(&after(&inp, &out.edits), ":method"), Some("POST"));
    assert_untouched(&e, &input("POST", "/", &[]), Event::Skipped);
}

#[test]
fn templates_read_the_request_as_it_arrived_not_as_transformed() {
    let e = engine(json!({"rules": [
        {"name": "a", "request": {"headers": {"set": [{"name": "x-v", "value": "first"}]},
            "path": {"prefix": "/", "replacement": "/moved/"}}},
        {"name": "b", "request": {"headers": {"set": [
            {"name": "x-seen", "value": "$(headers.x-v)"},
            {"name": "x-path", "value": "$(path)"}]}}}
    ]}));
    let inp = input("GET", "/p", &[("x-v", "orig")]);
    let h = after(&inp, &e.on_request_headers(&inp).edits);
    assert_eq!(one(&h, "x-v"), Some("first"));
    assert_eq!(one(&h, "x-seen"), Some("orig"));
    assert_eq!(one(&h, "x-path"), Some("/p"));
    assert_eq!(one(&h, ":path"), Some("/moved/p"));
}

#[test]
fn mode_all_applies_every_matching_rule_in_order_and_first_only_the_first() {
    let rules = json!([
        {"name": "a", "match": {"path_prefix": "/x"}, "request": {"headers": {"append": [{"name": "x-r", "value": "a"}]}}},
        {"name": "b", "match": {"path_prefix": "/nomatch"}, "request": {"headers": {"append": [{"name": "x-r", "value": "b"}]}}},
        {"name": "c", "request": {"headers": {"append": [{"name": "x-r", "value": "c"}]}}}
    ]);
    let inp = input("GET", "/x", &[]);
    let all = engine(json!({"rules": rules}));
    let out = all.on_request_headers(&inp);
    assert_eq!(after(&inp, &out.edits)["x-r"], vec!["a", "c"]);
    assert_eq!(
        out.events,
        vec![(0, Event::Transformed), (2, Event::Transformed)]
    );
    let first = engine(json!({"mode": "first", "rules": rules}));
    let out = first.on_request_headers(&inp);
    assert_eq!(after(&inp, &out.edits)["x-r"], vec!["a"]);
    // The first *matching* rule: for /y rule a does not match, so c applies.
    let inp = input("GET", "/y", &[]);
    assert_eq!(
        after(&inp, &first.on_request_headers(&inp).edits)["x-r"],
        vec!["c"]
    );
}

#[test]
fn a_path_regex_gates_the_rule_and_its_groups_feed_templates() {
    let e = engine(json!({"rules": [{"name": "r",
        "match": {"path_regex": "^/users/(?P<id>[0-9]+)$", "methods": ["GET"]},
        "request": {"headers": {"set": [{"name": "x-user", "value": "$(path.id)/$(path.1)/$(path.0)"}]}}}]}));
    let inp = input("GET", "/users/42?z=1", &[]);
    let out = e.on_request_headers(&inp);
    assert_eq!(
        one(&after(&inp, &out.edits), "x-user"),
        Some("42/42//users/42")
    );
    for (m, p) in [("GET", "/users/abc"), ("POST", "/users/42")] {
        let out = e.on_request_headers(&input(m, p, &[]));
        assert!(out.edits.is_empty() && out.events.is_empty(), "{m} {p}");
    }
}

#[test]
fn client_ip_route_name_and_method_templates() {
    let e = engine(
        json!({"client_ip": {"trusted_hops": 1}, "rules": [{"name": "r",
        "request": {"headers": {"set": [{"name": "x-ctx", "value": "$(client_ip) $(route_name) $(method)"}]}}}]}),
    );
    assert!(e.config().needs_client_ip && e.config().needs_route_name);
    let inp = input("PUT", "/", &[("x-forwarded-for", "6.6.6.6, 203.0.113.9")]);
    let h = after(&inp, &e.on_request_headers(&inp).edits);
    assert_eq!(one(&h, "x-ctx"), Some("203.0.113.9 route-a PUT"));
}

#[test]
fn a_missing_template_value_skips_the_operation_or_renders_empty() {
    let ops = json!({"headers": {"set": [{"name": "x-t", "value": "t=$(headers.x-absent)"}]}});
    let inp = input("GET", "/", &[]);
    assert_untouched(&engine(rule(ops.clone())), &inp, Event::Skipped);
    let empty =
        engine(json!({"on_missing_value": "empty", "rules": [{"name": "r", "request": ops}]}));
    let h = after(&inp, &empty.on_request_headers(&inp).edits);
    assert_eq!(one(&h, "x-t"), Some("t="));
}

#[test]
fn a_malformed_query_is_passed_untouched_with_an_error_or_rejected_with_400() {
    let ops = json!({"query": {"set": [{"name": "v", "value": "2"}]},
        "headers": {"set": [{"name": "x-ok", "value": "1"}]}});
    let inp = input("GET", "/s?a=%zz", &[]);
    let pass = engine(rule(ops.clone()));
    let out = pass.on_request_headers(&inp);
    let h = after(&inp, &out.edits);
    assert_eq!(one(&h, ":path"), Some("/s?a=%zz"), "query untouched");
    assert_eq!(one(&h, "x-ok"), Some("1"), "other parts still transformed");
    assert_eq!(out.events, vec![(0, Event::Error)]);
    let reject =
        engine(json!({"on_malformed": "reject", "rules": [{"name": "r", "request": ops}]}));
    let out = reject.on_request_headers(&inp);
    match &out.decision {
        Decision::Reply(r) => assert_eq!(r.status, 400),
        other => panic!("{other:?}"),
    }
    assert_eq!(out.events, vec![(0, Event::Rejected)]);
}

#[test]
fn a_header_value_that_is_not_utf8_is_malformed_only_when_a_template_reads_it() {
    let e = engine(rule(
        json!({"headers": {"set": [{"name": "x-copy", "value": "$(headers.x-bin)"}],
        "rename": [{"from": "x-bin", "to": "x-bin2"}]}}),
    ));
    let mut inp = input("GET", "/", &[]);
    std::rc::Rc::make_mut(&mut inp.headers).push(("x-bin".into(), vec![0xff, 0xfe]));
    let out = e.on_request_headers(&inp);
    assert_eq!(out.events, vec![(0, Event::Error)]);
    // The rename still moved the raw bytes as they were.
    let renamed = out.edits.iter().find(|e| e.name == "x-bin2").unwrap();
    assert_eq!(renamed.values, vec![vec![0xff, 0xfe]]);
    assert!(out.edits.iter().all(|e| e.name != "x-copy"));
}

fn body_rule(on: Value) -> Value {
    json!({"body": {"max_bytes": 64}, "rules": [{"name": "b", "request": {"body": on}}]})
}

fn with_body(content_type: &str, content_length: Option<&str>) -> RequestInput {
    let mut headers = vec![("content-type", content_type)];
    if let Some(cl) = content_length {
        headers.push(("content-length", cl));
    }
    let mut inp = input("POST", "/", &headers);
    inp.end_of_stream = false;
    inp
}

#[test]
fn a_body_is_buffered_only_for_json_with_a_body_and_content_length_is_dropped() {
    let e = engine(body_rule(json!({"remove": ["/x"]})));
    let out = e.on_request_headers(&with_body("application/json; charset=utf-8", Some("20")));
    assert!(out.body.is_some());
    assert!(
        out.edits.contains(&HeaderEdit {
            name: "content-length".into(),
            values: vec![]
        }),
        "the body may change size: content-length must go (Envoy then frames it itself)"
    );
    for inp in [
        with_body("text/plain", Some("20")),
        with_body("application/json", Some("0")),
        input("POST", "/", &[("content-type", "application/json")]), // end of stream
    ] {
        let out = e.on_request_headers(&inp);
        assert!(out.body.is_none() && out.edits.is_empty(), "{inp:?}");
        assert_eq!(out.events, vec![(0, Event::Skipped)]);
    }
}

#[test]
fn a_declared_oversized_body_is_rejected_with_413_or_passed_as_configured() {
    let pass = engine(body_rule(json!({"remove": ["/x"]})));
    let out = pass.on_request_headers(&with_body("application/json", Some("65")));
    assert!(out.body.is_none() && out.edits.is_empty());
    assert_eq!(out.events, vec![(0, Event::Skipped)]);
    let reject = engine(json!({"body": {"max_bytes": 64, "on_too_large": "reject"},
        "rules": [{"name": "b", "request": {"body": {"remove": ["/x"]}}}]}));
    let out = reject.on_request_headers(&with_body("application/json", Some("65")));
    match &out.decision {
        Decision::Reply(r) => assert_eq!(r.status, 413),
        other => panic!("{other:?}"),
    }
    assert_eq!(out.events, vec![(0, Event::Rejected)]);
    // Within the limit: buffered.
    assert!(reject
        .on_request_headers(&with_body("application/json", Some("64")))
        .body
        .is_some());
}

#[test]
fn body_operations_edit_the_json_by_pointer() {
    let e = engine(
        json!({"rules": [{"name": "b", "match": {"path_regex": "^/(\\w+)$"}, "request": {"body": {
            "remove": ["/password"],
            "rename": [{"from": "/user", "to": "/account/login"}],
            "set": [{"pointer": "/source", "template": "$(path.1)"}, {"pointer": "/n", "value": [1, 2]}]
        }}}]}),
    );
    let mut inp = input("POST", "/signup", &[("content-type", "application/json")]);
    inp.end_of_stream = false;
    let plan = e.on_request_headers(&inp).body.unwrap();
    let out = e.transform_body(&plan, br#"{"user": "al", "password": "pw", "keep": true}"#);
    let body: Value = serde_json::from_slice(&out.body.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"account": {"login": "al"}, "keep": true, "source": "signup", "n": [1, 2]})
    );
    assert_eq!(out.events, vec![(0, Event::Transformed)]);
    // Nothing to change: no new body, skipped.
    let out = e.transform_body(&plan, br#"{"source": "signup", "n": [1, 2]}"#);
    assert_eq!(out.body, None);
    assert_eq!(out.events, vec![(0, Event::Skipped)]);
}

#[test]
fn invalid_json_passes_untouched_or_gets_400_and_responses_always_pass() {
    let ops = json!({"remove": ["/x"]});
    let pass = engine(body_rule(ops.clone()));
    let plan = pass
        .on_request_headers(&with_body("application/json", None))
        .body
        .unwrap();
    let out = pass.transform_body(&plan, b"{not json");
    assert_eq!((out.body, out.decision), (None, Decision::Continue));
    assert_eq!(out.events, vec![(0, Event::Error)]);

    let reject = engine(json!({"on_malformed": "reject", "rules": [{"name": "b",
        "request": {"body": ops}, "response": {"body": {"remove": ["/x"]}}}]}));
    let out = reject.on_request_headers(&with_body("application/json", None));
    let plan = out.body.unwrap();
    let body_out = reject.transform_body(&plan, b"{\"x\": ");
    assert!(matches!(&body_out.decision, Decision::Reply(r) if r.status == 400));
    assert_eq!(body_out.events, vec![(0, Event::Rejected)]);

    let resp = reject.on_response_headers(
        &out.response.unwrap(),
        &[
            (":status".into(), b"200".to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
        ],
        false,
    );
    let resp_plan = resp.body.unwrap();
    let r = reject.transform_body(&resp_plan, b"\xff\xfe");
    assert_eq!((r.body, r.decision), (None, Decision::Continue));
    assert_eq!(r.events, vec![(0, Event::Error)]);
}

#[test]
fn a_body_outgrowing_the_limit_while_buffering_is_413_for_requests_and_passed_for_responses() {
    let e = engine(
        json!({"body": {"max_bytes": 8, "on_too_large": "reject"}, "rules": [{"name": "b",
        "request": {"body": {"remove": ["/x"]}}, "response": {"body": {"remove": ["/x"]}}}]}),
    );
    let out = e.on_request_headers(&with_body("application/json", None));
    let (d, ev) = e.body_too_large(out.body.as_ref().unwrap());
    assert!(matches!(&d, Decision::Reply(r) if r.status == 413));
    assert_eq!(ev, vec![(0, Event::Rejected)]);
    let full = e.transform_body(out.body.as_ref().unwrap(), br#"{"x": 1, "y": 2}"#);
    assert!(matches!(&full.decision, Decision::Reply(r) if r.status == 413));
    let resp = e.on_response_headers(
        &out.response.unwrap(),
        &[("content-type".into(), b"application/json".to_vec())],
        false,
    );
    let (d, ev) = e.body_too_large(resp.body.as_ref().unwrap());
    assert_eq!(d, Decision::Continue);
    assert_eq!(ev, vec![(0, Event::Skipped)]);
}

#[test]
fn a_shadow_rule_changes_nothing_and_reports_names_not_values() {
    let e = engine(json!({"rules": [
        {"name": "trial", "shadow": true, "request": {
            "headers": {"set": [{"name": "x-secret", "value": "hunter2"}]},
            "query": {"add": [{"name": "q", "value": "1"}]},
            "body": {"remove": ["/k"]}},
         "response": {"headers": {"set": [{"name": "x-r", "value": "1"}]}}},
        {"name": "real", "request": {"headers": {"set": [{"name": "x-real", "value": "1"}]}}}
    ]}));
    let mut inp = input(
        "POST",
        "/s",
        &[
            ("content-type", "application/json"),
            ("content-length", "7"),
        ],
    );
    inp.end_of_stream = false;
    let out = e.on_request_headers(&inp);
    let h = after(&inp, &out.edits);
    assert!(!h.contains_key("x-secret"));
    assert_eq!(one(&h, ":path"), Some("/s"));
    assert_eq!(one(&h, "x-real"), Some("1"), "other rules still apply");
    assert_eq!(
        one(&h, "content-length"),
        Some("7"),
        "a shadow-only body plan keeps content-length"
    );
    assert_eq!(
        out.events,
        vec![(0, Event::ShadowTransformed), (1, Event::Transformed)]
    );
    let note = out.shadow_notes.join("\n");
    assert!(
        note.contains("trial") && note.contains("x-secret") && note.contains("query"),
        "{note}"
    );
    assert!(!note.contains("hunter2"), "values are never logged: {note}");

    let plan = out.body.unwrap();
    assert!(!plan.may_change());
    let b = e.transform_body(&plan, br#"{"k":1}"#);
    assert_eq!(b.body, None);
    assert_eq!(b.events, vec![(0, Event::ShadowTransformed)]);

    let r = e.on_response_headers(&out.response.unwrap(), &[], true);
    assert!(r.edits.is_empty());
    assert_eq!(r.events, vec![(0, Event::ShadowTransformed)]);
}

#[test]
fn response_operations_are_rendered_from_the_request_and_applied_to_the_response() {
    let e = engine(
        json!({"rules": [{"name": "r", "match": {"path_prefix": "/api"}, "response": {
            "headers": {"remove": ["server"], "rename": [{"from": "x-old", "to": "x-new"}],
                "set": [{"name": "x-req-id", "value": "$(headers.x-request-id)"}],
                "add": [{"name": "cache-control", "value": "no-store"}],
                "append": [{"name": "vary", "value": "x-tenant"}]},
            "body": {"remove": ["/debug"], "set": [{"pointer": "/path", "template": "$(path)"}]}
        }}]}),
    );
    let out = e.on_request_headers(&input("GET", "/api/x", &[("x-request-id", "abc")]));
    assert!(
        out.edits.is_empty() && out.events.is_empty(),
        "no request-side work"
    );
    let plan = out.response.unwrap();
    let resp_headers: Vec<(String, Vec<u8>)> = [
        (":status", "200"),
        ("server", "up"),
        ("x-old", "o"),
        ("vary", "accept"),
        ("content-type", "application/json"),
        ("content-length", "30"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
    .collect();
    let r = e.on_response_headers(&plan, &resp_headers, false);
    let edits: BTreeMap<&str, Vec<&[u8]>> = r
        .edits
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.values.iter().map(Vec::as_slice).collect(),
            )
        })
        .collect();
    assert_eq!(edits["server"], Vec::<&[u8]>::new());
    assert_eq!(edits["x-old"], Vec::<&[u8]>::new());
    assert_eq!(edits["x-new"], vec![b"o".as_slice()]);
    assert_eq!(edits["x-req-id"], vec![b"abc".as_slice()]);
    assert_eq!(edits["cache-control"], vec![b"no-store".as_slice()]);
    assert_eq!(
        edits["vary"],
        vec![b"accept".as_slice(), b"x-tenant".as_slice()]
    );
    assert_eq!(edits["content-length"], Vec::<&[u8]>::new());
    assert_eq!(r.events, vec![(0, Event::Transformed)]);
    let b = e.transform_body(r.body.as_ref().unwrap(), br#"{"debug": 1, "data": []}"#);
    let body: Value = serde_json::from_slice(&b.body.unwrap()).unwrap();
    assert_eq!(body, json!({"data": [], "path": "/api/x"}));
    // A request the rule does not match has no response plan at all.
    assert!(e
        .on_request_headers(&input("GET", "/other", &[]))
        .response
        .is_none());
}

/// Deterministic xorshift64*, so a failure reproduces from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// Arbitrary bytes, biased towards the characters parsers care about.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        const INTERESTING: &[u8] = b"%/?#&=+~{}[]\":,\\ 0aZ\r\n\0\xff\xc3\xa9-";
        let len = self.below(max + 1);
        (0..len)
            .map(|_| {
                if self.below(2) == 0 {
                    INTERESTING[self.below(INTERESTING.len())]
                } else {
                    (self.next() & 0xff) as u8
                }
            })
            .collect()
    }
}

#[test]
fn arbitrary_bytes_never_make_the_engine_panic() {
    let config = json!({"client_ip": {"trusted_hops": 2}, "rules": [
        {"name": "all", "match": {"path_regex": "^/(?P<a>[^/]*)/?(.*)$"}, "request": {
            "headers": {"remove": ["x-a"], "remove_prefix": ["x-"], "rename": [{"from": "h1", "to": "h2"}],
                "set": [{"name": "s", "value": "$(headers.h1)$(query.q)$(path.a)$(path.2)$(client_ip)"}],
                "add": [{"name": "a", "value": "$(query.x)"}], "append": [{"name": "p", "value": "$(path)"}]},
            "query": {"remove": ["r"], "rename": [{"from": "q", "to": "qq"}],
                "set": [{"name": "s", "value": "$(headers.h2)"}], "add": [{"name": "n", "value": "$(method)"}]},
            "path": {"regex": "/([^/]*)", "replacement": "/$(headers.h1)$(path.1)"},
            "method": "PATCH",
            "body": {"remove": ["/a/0"], "rename": [{"from": "/b", "to": "/c/d"}],
                "set": [{"pointer": "/e/-", "template": "$(headers.h1)"}, {"pointer": "/f/1/g", "value": null}]}},
         "response": {"headers": {"set": [{"name": "r", "value": "$(query.q)"}]},
            "body": {"remove": ["/x"], "set": [{"pointer": "/y", "value": 1}]}}},
        {"name": "shadow", "shadow": true, "request": {"query": {"add": [{"name": "z", "value": "1"}]},
            "body": {"remove": ["/a"]}}}
    ]});
    let reject = {
        let mut c = config.clone();
        c["on_malformed"] = json!("reject");
        c["body"] = json!({"max_bytes": 200, "on_too_large": "reject"});
        c
    };
    let engines = [engine(config), engine(reject)];
    let seed = 0x5eed_1234_u64;
    let mut rng = Rng(seed);
    let jsonish = [
        br#"{"a": [1, 2], "b": {"x": 1}, "e": [], "f": [0, {}]}"#.to_vec(),
        br#"[1, {"a": "\u00e9"}]"#.to_vec(),
        b"\"str\"".to_vec(),
    ];
    let (mut body_plans, mut bodies_changed, mut edited) = (0, 0, 0);
    for round in 0..20_000 {
        let e = &engines[round % 2];
        let mut path = b"/".to_vec();
        let tail = rng.bytes(40);
        if rng.below(2) == 0 {
            // Half the paths printable ASCII (Envoy's usual), so rules match and rewrite them.
            path.extend(tail.iter().map(|b| b % 94 + 33));
        } else {
            path.extend(tail);
        }
        let mut headers = vec![
            (":method".to_owned(), rng.bytes(6)),
            (":path".to_owned(), path),
            ("content-type".to_owned(), b"application/json".to_vec()),
        ];
        for name in ["h1", "h2", "x-a", "x-forwarded-for", "content-length"] {
            if rng.below(3) > 0 {
                headers.push((name.to_owned(), rng.bytes(24)));
            }
        }
        let inp = RequestInput {
            headers: headers.into(),
            end_of_stream: rng.below(4) == 0,
            source_address: Some(String::from_utf8_lossy(&rng.bytes(20)).into_owned()),
            route_name: None,
            claims: None,
        };
        let out = e.on_request_headers(&inp);
        edited += usize::from(!out.edits.is_empty());
        let body = if rng.below(2) == 0 {
            let mut b = jsonish[rng.below(jsonish.len())].clone();
            // Corrupt a few bytes of valid JSON.
            for _ in 0..rng.below(3) {
                let len = b.len();
                let at = rng.below(len);
                b[at] = (rng.next() & 0xff) as u8;
            }
            b
        } else {
            rng.bytes(300)
        };
        if let Some(plan) = &out.body {
            body_plans += 1;
            bodies_changed += usize::from(e.transform_body(plan, &body).body.is_some());
            let _ = e.body_too_large(plan);
        }
        if let Some(plan) = &out.response {
            let resp = vec![
                ("content-type".to_owned(), b"application/json".to_vec()),
                ("r".to_owned(), rng.bytes(10)),
            ];
            let r = e.on_response_headers(plan, &resp, rng.below(2) == 0);
            if let Some(bp) = &r.body {
                let _ = e.transform_body(bp, &body);
            }
        }
    }
    // The inputs reached the interesting code, so the absence of panics means something.
    assert!(
        edited > 1000 && body_plans > 1000 && bodies_changed > 100,
        "seed {seed:#x}: {edited} edited, {body_plans} body plans, {bodies_changed} bodies changed"
    );
}
