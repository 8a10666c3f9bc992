//! The pure side of `global` rules: config, descriptor, messages, answers, steps, replies.

use super::rls::{
    Code, DescriptorStatus, HeaderValue, ProtoDuration, RateLimitRequest, RateLimitResponse, Unit,
};
use super::*;
use crate::config::Config;
use crate::policy::QUOTA_HEADERS;
use palisade_core::testing::FakeRequest;
use prost::Message;

fn config(global: &str) -> Result<Config, ConfigError> {
    Config::parse(
        format!(
            r#"{{"rules": [{{"name": "g", "key": ["client_ip"],
            "limits": [{{"capacity": 5, "refill": 5, "period": "1s"}}], "global": {global}}}]}}"#
        )
        .as_bytes(),
    )
}

fn spec(global: &str) -> GlobalSpec {
    match config(global) {
        Ok(c) => c.rules[0].global.clone().expect("a global section"),
        Err(e) => panic!("rejected: {e}"),
    }
}

const MINIMAL: &str = r#"{"cluster": "rls", "domain": "edge", "descriptor": [{"key": "remote_address", "value": "client_ip"}]}"#;

#[test]
fn a_minimal_global_section_gets_the_documented_defaults() {
    let s = spec(MINIMAL);
    assert_eq!(s.cluster, "rls");
    assert_eq!(s.domain, "edge");
    assert_eq!(
        s.descriptor,
        vec![("remote_address".to_owned(), KeyPart::ClientIp)]
    );
    assert_eq!(s.timeout, Duration::from_millis(20));
    assert_eq!(s.hits_addend, 1);
    assert_eq!(s.on_error, OnError::Local);
}

#[test]
fn a_full_global_section_parses_every_key_part_kind() {
    let s = spec(
        r#"{"cluster": "rls_cluster", "domain": "shop", "timeout": "50ms", "hits_addend": 3,
        "on_error": "deny", "descriptor": [
          {"key": "ip", "value": "client_ip"}, {"key": "api_key", "value": {"header": "x-api-key"}},
          {"key": "q", "value": {"query": "k"}}, {"key": "path", "value": "path"},
          {"key": "method", "value": "method"}, {"key": "route", "value": "route_name"},
          {"key": "generic_key", "value": {"constant": "checkout"}},
          {"key": "user", "value": {"claim": "sub"}}]}"#,
    );
    assert_eq!(s.timeout, Duration::from_millis(50));
    assert_eq!(s.hits_addend, 3);
    assert_eq!(s.on_error, OnError::Deny);
    assert_eq!(s.descriptor.len(), 8);
    assert_eq!(
        s.descriptor[6],
        (
            "generic_key".to_owned(),
            KeyPart::Constant("checkout".to_owned())
        )
    );
    assert_eq!(s.descriptor[7].1, KeyPart::Claim("sub".to_owned()));
}

#[test]
fn every_invalid_global_field_is_named_with_its_full_path() {
    let entry = r#"[{"key": "k", "value": "path"}]"#;
    let cases = [
        (
            format!(r#"{{"cluster": "", "domain": "d", "descriptor": {entry}}}"#),
            "rules[0].global.cluster",
        ),
        (
            format!(r#"{{"cluster": "a b", "domain": "d", "descriptor": {entry}}}"#),
            "rules[0].global.cluster",
        ),
        (
            format!(r#"{{"cluster": "c", "domain": "", "descriptor": {entry}}}"#),
            "rules[0].global.domain",
        ),
        (
            r#"{"cluster": "c", "domain": "d", "descriptor": []}"#.to_owned(),
            "rules[0].global.descriptor",
        ),
        (
            r#"{"cluster": "c", "domain": "d", "descriptor": [{"key": "a b", "value": "path"}]}"#
                .to_owned(),
            "rules[0].global.descriptor[0].key",
        ),
        (
            r#"{"cluster": "c", "domain": "d", "descriptor": [{"key": "k", "value": "path"}, {"key": "k", "value": "method"}]}"#
                .to_owned(),
            "rules[0].global.descriptor[1].key",
        ),
        (
            r#"{"cluster": "c", "domain": "d", "descriptor": [{"key": "k", "value": {"header": "bad header"}}]}"#
                .to_owned(),
            "rules[0].global.descriptor[0].value.header",
        ),
        (
            r#"{"cluster": "c", "domain": "d", "descriptor": [{"key": "k", "value": {"claim": ""}}]}"#
                .to_owned(),
            "rules[0].global.descriptor[0].value.claim",
        ),
        (
            format!(r#"{{"cluster": "c", "domain": "d", "descriptor": {entry}, "timeout": "0ms"}}"#),
            "rules[0].global.timeout",
        ),
        (
            format!(r#"{{"cluster": "c", "domain": "d", "descriptor": {entry}, "timeout": "11s"}}"#),
            "rules[0].global.timeout",
        ),
        (
            format!(r#"{{"cluster": "c", "domain": "d", "descriptor": {entry}, "timeout": "fast"}}"#),
            "rules[0].global.timeout",
        ),
        (
            format!(r#"{{"cluster": "c", "domain": "d", "descriptor": {entry}, "hits_addend": 0}}"#),
            "rules[0].global.hits_addend",
        ),
        (
            format!(r#"{{"cluster": "c", "domain": "d", "descriptor": {entry}, "on_error": "open"}}"#),
            "rules[0].global.on_error",
        ),
        (
            format!(r#"{{"cluster": "c", "domain": "d", "descriptor": {entry}, "failure_mode": "deny"}}"#),
            "rules[0].global.failure_mode",
        ),
    ];
    for (global, field) in cases {
        let e = config(&global).expect_err(&global);
        assert_eq!(e.field.as_str(), field, "{global}: {e}");
    }
    // A missing field: the section is named, and the message names the field.
    let e = config(&format!(r#"{{"domain": "d", "descriptor": {entry}}}"#)).unwrap_err();
    assert_eq!(e.field.as_str(), "rules[0].global");
    assert!(e.to_string().contains("missing field `cluster`"), "{e}");
    let mut many = Vec::new();
    for i in 0..=MAX_ENTRIES {
        many.push(format!(r#"{{"key": "k{i}", "value": "path"}}"#));
    }
    let e = config(&format!(
        r#"{{"cluster": "c", "domain": "d", "descriptor": [{}]}}"#,
        many.join(",")
    ))
    .unwrap_err();
    assert_eq!(e.field.as_str(), "rules[0].global.descriptor");
}

#[test]
fn a_global_rule_needs_local_limits_only_when_it_falls_back_to_them() {
    let rule = |on_error: &str| {
        format!(
            r#"{{"rules": [{{"name": "g", "key": ["path"], "global": {{"cluster": "c", "domain": "d",
            "descriptor": [{{"key": "k", "value": "path"}}]{on_error}}}}}]}}"#
        )
    };
    let e = Config::parse(rule("").as_bytes()).unwrap_err();
    assert_eq!(e.field.as_str(), "rules[0].limits");
    assert!(Config::parse(rule(r#", "on_error": "local""#).as_bytes()).is_err());
    for ok in [r#", "on_error": "allow""#, r#", "on_error": "deny""#] {
        let c = Config::parse(rule(ok).as_bytes()).unwrap();
        assert!(c.rules[0].limits.is_empty());
    }
    // A rule without `global` still needs its limits.
    let e = Config::parse(br#"{"rules": [{"name": "a", "key": ["path"]}]}"#).unwrap_err();
    assert_eq!(e.field.as_str(), "rules[0].limits");
}

#[test]
fn whole_valued_numbers_read_as_integers_as_istio_sends_them() {
    let s = spec(
        r#"{"cluster": "c", "domain": "d", "hits_addend": 2.0, "descriptor": [{"key": "k", "value": "path"}]}"#,
    );
    assert_eq!(s.hits_addend, 2);
}

#[test]
fn the_descriptor_is_built_from_the_request_in_order() {
    let s = spec(
        r#"{"cluster": "c", "domain": "d", "descriptor": [
          {"key": "generic_key", "value": {"constant": "api"}},
          {"key": "api_key", "value": {"header": "x-api-key"}},
          {"key": "remote_address", "value": "client_ip"}, {"key": "path", "value": "path"}]}"#,
    );
    let req = FakeRequest::new("GET", "/v1/items?x=1")
        .header("x-api-key", "k-123")
        .source("192.0.2.7:5555");
    let entries = descriptor(&s, &req, ClientIpSource::SOURCE_ADDRESS, false).unwrap();
    let pairs: Vec<(&str, &str)> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("generic_key", "api"),
            ("api_key", "k-123"),
            ("remote_address", "192.0.2.7"),
            ("path", "/v1/items")
        ]
    );
}

#[test]
fn a_missing_part_skips_the_rule_or_with_shared_bucket_is_sent_as_missing() {
    let s = spec(
        r#"{"cluster": "c", "domain": "d", "descriptor": [{"key": "api_key", "value": {"header": "x-api-key"}}]}"#,
    );
    let req = FakeRequest::new("GET", "/");
    assert_eq!(
        descriptor(&s, &req, ClientIpSource::SOURCE_ADDRESS, false),
        None
    );
    assert_eq!(
        descriptor(&s, &req, ClientIpSource::SOURCE_ADDRESS, true),
        Some(vec![("api_key".to_owned(), MISSING_VALUE.to_owned())])
    );
    // An empty value is missing too: the protocol wants non-empty values.
    let empty = FakeRequest::new("GET", "/").header("x-api-key", "");
    assert_eq!(
        descriptor(&s, &empty, ClientIpSource::SOURCE_ADDRESS, false),
        None
    );
}

#[test]
fn a_long_value_is_cut_at_a_character_boundary() {
    let s = spec(
        r#"{"cluster": "c", "domain": "d", "descriptor": [{"key": "k", "value": {"header": "x-k"}}]}"#,
    );
    let long = "é".repeat(MAX_VALUE_BYTES);
    let req = FakeRequest::new("GET", "/").header("x-k", &long);
    let entries = descriptor(&s, &req, ClientIpSource::SOURCE_ADDRESS, false).unwrap();
    assert_eq!(entries[0].1.len(), MAX_VALUE_BYTES);
    assert!(long.starts_with(&entries[0].1));
}

#[test]
fn the_request_message_decodes_as_envoys_rate_limit_request() {
    let s = spec(
        r#"{"cluster": "c", "domain": "shop", "hits_addend": 4, "descriptor": [{"key": "k", "value": "path"}]}"#,
    );
    let bytes = request_message(&s, &[("k".to_owned(), "/a".to_owned())]);
    let req = RateLimitRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(req.domain, "shop");
    assert_eq!(req.hits_addend, 4);
    assert_eq!(req.descriptors.len(), 1);
    assert_eq!(req.descriptors[0].entries[0].key, "k");
    assert_eq!(req.descriptors[0].entries[0].value, "/a");
    // Wire bytes as protoc writes them: field 1 (domain), then 2 (descriptor), then 3.
    assert_eq!(&bytes[..6], b"\x0a\x04shop");
    assert_eq!(bytes[6], 0x12);
    assert_eq!(&bytes[bytes.len() - 2..], b"\x18\x04");
}

/// How many lines of header `name` a reply carries.
fn lines(reply: &LocalReply, name: &str) -> usize {
    reply.headers.iter().filter(|(n, _)| n == name).count()
}

fn answer_of(r: &RateLimitResponse) -> Answer {
    let bytes = r.encode_to_vec();
    classify(grpc_status::OK, bytes.len(), false, |_| Some(bytes.clone()))
}

#[test]
fn an_answer_is_classified_by_status_size_and_overall_code() {
    assert!(matches!(
        answer_of(&RateLimitResponse::of(Code::Ok)),
        Answer::Ok(_)
    ));
    assert!(matches!(
        answer_of(&RateLimitResponse::of(Code::OverLimit)),
        Answer::OverLimit(_)
    ));
    assert_eq!(
        answer_of(&RateLimitResponse::of(Code::Unknown)),
        Answer::Unknown
    );
    // An empty message is a response with every field at its default: UNKNOWN.
    assert_eq!(classify(0, 0, false, |_| Some(Vec::new())), Answer::Unknown);
    // A code the protocol does not define reads as UNKNOWN.
    let odd = RateLimitResponse {
        overall_code: 7,
        ..RateLimitResponse::default()
    };
    assert_eq!(answer_of(&odd), Answer::Unknown);
    let cases = [
        (
            grpc_status::DEADLINE_EXCEEDED,
            0,
            Answer::Failed(Failure::Timeout),
        ),
        (
            grpc_status::UNAVAILABLE,
            0,
            Answer::Failed(Failure::Status(14)),
        ),
        (
            grpc_status::INTERNAL,
            0,
            Answer::Failed(Failure::Status(13)),
        ),
        (
            grpc_status::RESOURCE_EXHAUSTED,
            0,
            Answer::Failed(Failure::Status(8)),
        ),
        (
            grpc_status::OK,
            MAX_RESPONSE_BYTES + 1,
            Answer::Failed(Failure::Oversized(MAX_RESPONSE_BYTES + 1)),
        ),
    ];
    for (status, size, expected) in cases {
        let read = |_| -> Option<Vec<u8>> { panic!("read for status {status} size {size}") };
        assert_eq!(classify(status, size, false, read), expected);
    }
    // Envoy's own timeout is an error status at (or after) the call's timeout.
    for status in [grpc_status::UNAVAILABLE, grpc_status::INTERNAL] {
        assert_eq!(
            classify(status, 0, true, |_| None),
            Answer::Failed(Failure::Timeout)
        );
    }
    // A timely OK is an answer even when read late.
    assert!(matches!(
        classify(0, 2, true, |_| Some(
            RateLimitResponse::of(Code::Ok).encode_to_vec()
        )),
        Answer::Ok(_)
    ));
}

#[test]
fn bytes_that_do_not_decode_or_cannot_be_read_are_malformed() {
    for bad in [
        &b"\xff\xff\xff\xff"[..],
        b"\x0a\x05ab",
        b"\x08",
        b"\x12\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80",
    ] {
        assert_eq!(
            classify(0, bad.len(), false, |_| Some(bad.to_vec())),
            Answer::Failed(Failure::Malformed),
            "{bad:?}"
        );
    }
    assert_eq!(
        classify(0, 4, false, |_| None),
        Answer::Failed(Failure::Malformed)
    );
}

fn global_rule(extra: &str) -> Rule {
    let json = format!(
        r#"{{"rules": [{{"name": "g", "key": ["client_ip"], "limits": [{{"capacity": 5, "refill": 5, "period": "1s"}}],
        "global": {MINIMAL}{extra}}}]}}"#
    );
    Config::parse(json.as_bytes()).unwrap().rules.remove(0)
}

#[test]
fn over_limit_with_statuses_replies_with_quota_headers_from_the_binding_status() {
    let rule = global_rule("");
    let mut r = RateLimitResponse::of(Code::OverLimit);
    r.statuses = vec![
        DescriptorStatus::of(Code::Ok, 1000, Unit::Hour, 400, 1800),
        DescriptorStatus::of(Code::OverLimit, 10, Unit::Minute, 0, 42),
    ];
    r.response_headers_to_add = vec![HeaderValue::text("x-ratelimit-limit", "10")];
    let Step::Limit(reply) = step(&rule, &answer_of(&r), false) else {
        panic!("expected a reply")
    };
    assert_eq!(reply.status, 429);
    assert_eq!(reply.details, "palisade_rate_limited");
    assert_eq!(reply.rule.as_deref(), Some("g"));
    assert_eq!(reply.header_value("retry-after"), Some("42"));
    assert_eq!(
        QUOTA_HEADERS.map(|n| reply.header_value(n)),
        [
            Some("10"),
            Some("0"),
            Some("42"),
            Some("1000;w=3600, 10;w=60")
        ]
    );
    assert_eq!(reply.header_value("x-envoy-ratelimited"), Some("true"));
    // Statuses present: the service's own headers are not added as well.
    assert_eq!(reply.header_value("x-ratelimit-limit"), None);
}

#[test]
fn over_limit_without_statuses_passes_on_the_services_headers_and_retry_after_defaults_to_1() {
    let rule = global_rule("");
    let mut r = RateLimitResponse::of(Code::OverLimit);
    r.response_headers_to_add = vec![
        HeaderValue::text("X-RateLimit-Limit", "10, 10;w=60"),
        HeaderValue::text("x-ratelimit-remaining", "0"),
        HeaderValue::text(":status", "200"),
        HeaderValue::text("content-length", "99"),
        HeaderValue::text("content-type", "text/evil"),
        HeaderValue::text("bad name", "v"),
        HeaderValue::text("x-crlf", "a\r\nset-cookie: x"),
        HeaderValue {
            key: "x-raw".to_owned(),
            value: "ignored".to_owned(),
            raw_value: b"raw".to_vec(),
        },
    ];
    let Step::Limit(reply) = step(&rule, &answer_of(&r), false) else {
        panic!("expected a reply")
    };
    assert_eq!(reply.header_value("retry-after"), Some("1"));
    assert_eq!(reply.header_value("x-ratelimit-limit"), Some("10, 10;w=60"));
    assert_eq!(reply.header_value("x-ratelimit-remaining"), Some("0"));
    assert_eq!(reply.header_value("x-raw"), Some("raw"));
    for dropped in [":status", "content-length", "bad name", "x-crlf"] {
        assert_eq!(reply.header_value(dropped), None, "{dropped}");
    }
    assert_eq!(
        reply.header_value("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(lines(&reply, "content-type"), 1);
    // A service-sent retry-after is kept, and ours not added.
    let mut r = RateLimitResponse::of(Code::OverLimit);
    r.response_headers_to_add = vec![HeaderValue::text("retry-after", "30")];
    let Step::Limit(reply) = step(&rule, &answer_of(&r), false) else {
        panic!("expected a reply")
    };
    assert_eq!(reply.header_value("retry-after"), Some("30"));
    assert_eq!(lines(&reply, "retry-after"), 1);
    // At most MAX_PASSED_HEADERS.
    let mut r = RateLimitResponse::of(Code::OverLimit);
    r.response_headers_to_add = (0..40)
        .map(|i| HeaderValue::text(&format!("x-h{i}"), "v"))
        .collect();
    let Step::Limit(reply) = step(&rule, &answer_of(&r), false) else {
        panic!("expected a reply")
    };
    let passed = reply
        .headers
        .iter()
        .filter(|(n, _)| n.starts_with("x-h"))
        .count();
    assert_eq!(passed, MAX_PASSED_HEADERS);
}

#[test]
fn without_statuses_retry_after_is_the_seconds_of_the_services_reset_header() {
    let rule = global_rule("");
    let retry_after = |headers: Vec<HeaderValue>| {
        let mut r = RateLimitResponse::of(Code::OverLimit);
        r.response_headers_to_add = headers;
        let Step::Limit(reply) = step(&rule, &answer_of(&r), false) else {
            panic!("expected a reply")
        };
        assert_eq!(lines(&reply, "retry-after"), 1);
        reply.header_value("retry-after").map(str::to_owned)
    };
    // Limitador's DRAFT_VERSION_03 headers.
    let draft = |reset: &str| {
        vec![
            HeaderValue::text("X-RateLimit-Limit", "4, 4;w=10"),
            HeaderValue::text("X-RateLimit-Remaining", "0"),
            HeaderValue::text("X-RateLimit-Reset", reset),
        ]
    };
    assert_eq!(retry_after(draft("9")).as_deref(), Some("9"));
    assert_eq!(
        retry_after(vec![HeaderValue::text("RateLimit-Reset", " 42 ")]).as_deref(),
        Some("42")
    );
    // Never 0 (the window just ended: come back in a second), never beyond a day.
    assert_eq!(retry_after(draft("0")).as_deref(), Some("1"));
    assert_eq!(
        retry_after(draft("99999999999")).as_deref(),
        Some(MAX_RETRY_AFTER_SECS.to_string().as_str())
    );
    // Not a whole number of seconds: the default.
    for bad in ["soon", "-3", "1.5", ""] {
        assert_eq!(retry_after(draft(bad)).as_deref(), Some("1"), "{bad:?}");
    }
    // The service's own retry-after wins over its reset header.
    let mut with_retry = draft("9");
    with_retry.push(HeaderValue::text("retry-after", "30"));
    assert_eq!(retry_after(with_retry).as_deref(), Some("30"));
}

#[test]
fn a_reset_duration_rounds_up_and_a_missing_one_leaves_retry_after_at_1() {
    let rule = global_rule("");
    let mut r = RateLimitResponse::of(Code::OverLimit);
    let mut s = DescriptorStatus::of(Code::OverLimit, 5, Unit::Second, 0, 0);
    s.duration_until_reset = Some(ProtoDuration {
        seconds: 2,
        nanos: 1,
    });
    r.statuses = vec![s.clone()];
    let Step::Limit(reply) = step(&rule, &answer_of(&r), false) else {
        panic!()
    };
    assert_eq!(reply.header_value("retry-after"), Some("3"));
    assert_eq!(reply.header_value("ratelimit-reset"), Some("3"));
    s.duration_until_reset = None;
    r.statuses = vec![s];
    let Step::Limit(reply) = step(&rule, &answer_of(&r), false) else {
        panic!()
    };
    assert_eq!(reply.header_value("retry-after"), Some("1"));
    assert_eq!(reply.header_value("ratelimit-reset"), None);
    assert_eq!(reply.header_value("ratelimit-limit"), Some("5"));
}

#[test]
fn ok_and_unknown_let_the_request_go_on_with_quota_headers_when_asked() {
    let rule = global_rule("");
    let mut r = RateLimitResponse::of(Code::Ok);
    r.statuses = vec![DescriptorStatus::of(Code::Ok, 10, Unit::Minute, 7, 30)];
    assert_eq!(step(&rule, &answer_of(&r), false), Step::Allow(Vec::new()));
    let Step::Allow(headers) = step(&rule, &answer_of(&r), true) else {
        panic!()
    };
    assert_eq!(
        headers,
        vec![
            ("ratelimit-limit".to_owned(), "10".to_owned()),
            ("ratelimit-remaining".to_owned(), "7".to_owned()),
            ("ratelimit-reset".to_owned(), "30".to_owned()),
            ("ratelimit-policy".to_owned(), "10;w=60".to_owned()),
        ]
    );
    assert_eq!(step(&rule, &Answer::Unknown, true), Step::Allow(Vec::new()));
}

#[test]
fn a_shadow_rule_never_limits_on_over_limit() {
    let json = format!(
        r#"{{"rules": [{{"name": "g", "key": ["client_ip"], "shadow": true,
        "limits": [{{"capacity": 5, "refill": 5, "period": "1s"}}], "global": {MINIMAL}}}]}}"#
    );
    let rule = Config::parse(json.as_bytes()).unwrap().rules.remove(0);
    assert_eq!(
        step(
            &rule,
            &answer_of(&RateLimitResponse::of(Code::OverLimit)),
            false
        ),
        Step::ShadowLimited
    );
}

#[test]
fn every_failure_falls_back_to_the_rules_on_error() {
    let failures = [
        Failure::Dispatch(1),
        Failure::Timeout,
        Failure::Status(14),
        Failure::Oversized(1 << 20),
        Failure::Malformed,
    ];
    for (extra, on_error) in [
        ("", OnError::Local),
        (r#", "on_error": "allow""#, OnError::Allow),
        (r#", "on_error": "deny""#, OnError::Deny),
    ] {
        let json = format!(
            r#"{{"rules": [{{"name": "g", "key": ["client_ip"], "limits": [{{"capacity": 5, "refill": 5, "period": "1s"}}],
            "global": {{"cluster": "c", "domain": "d", "descriptor": [{{"key": "k", "value": "path"}}]{extra}}}}}]}}"#
        );
        let rule = Config::parse(json.as_bytes()).unwrap().rules.remove(0);
        for f in failures {
            assert_eq!(
                step(&rule, &Answer::Failed(f), false),
                Step::Fallback(on_error),
                "{f:?}"
            );
        }
    }
}

#[test]
fn each_answer_has_its_counter_and_each_fallback_its_own() {
    use palisade_core::plugin::MetricEvent;
    let name = |e: GlobalEvent| GlobalEvent::NAMES[e.index()];
    assert_eq!(
        name(answer_of(&RateLimitResponse::of(Code::Ok)).event()),
        "global_ok"
    );
    assert_eq!(
        name(answer_of(&RateLimitResponse::of(Code::OverLimit)).event()),
        "global_over_limit"
    );
    assert_eq!(name(Answer::Unknown.event()), "global_unknown");
    assert_eq!(
        name(Answer::Failed(Failure::Timeout).event()),
        "global_timeout"
    );
    for f in [
        Failure::Dispatch(1),
        Failure::Status(13),
        Failure::Oversized(1),
        Failure::Malformed,
    ] {
        assert_eq!(name(Answer::Failed(f).event()), "global_error");
    }
    assert_eq!(name(OnError::Local.event()), "global_fallback_local");
    assert_eq!(name(OnError::Allow.event()), "global_fallback_allow");
    assert_eq!(name(OnError::Deny.event()), "global_fallback_deny");
    assert_eq!(
        GlobalEvent::NAMES.len(),
        GlobalEvent::FallbackDeny as usize + 1
    );
}

#[test]
fn a_failure_near_the_timeout_is_envoys_timeout_and_an_early_one_is_not() {
    let t = Duration::from_millis(20);
    assert!(timed_out(Duration::from_millis(20), t));
    assert!(timed_out(Duration::from_millis(25), t));
    // Envoy's timer may fire a little early by the module's clock.
    assert!(timed_out(Duration::from_millis(18), t));
    assert!(!timed_out(Duration::from_millis(17), t));
    assert!(!timed_out(Duration::ZERO, t));
    assert!(timed_out(
        Duration::from_millis(90),
        Duration::from_millis(100)
    ));
}
