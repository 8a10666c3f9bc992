//! The fake proxy's own semantics: where it must behave as Envoy and proxy-wasm-cpp-host do, or
//! the tests built on it prove nothing.

use super::*;
use crate::plugin::host::{HostRef, HostStore, CREATE_CAS};
use crate::store::{update, KeyPrefix, Step, UpdateError};
use crate::{SharedStore, StoreError, Version};
use std::rc::Rc;

fn host() -> FakeHost {
    FakeHost::new()
}

/// A fake host and a [`HostStore`] on it, as one policy instance holds it.
fn host_store() -> (Rc<FakeHost>, HostStore) {
    let h = Rc::new(host());
    let host: HostRef = h.clone();
    let s = HostStore::new(&host, KeyPrefix::new("test", "inst/default"));
    (h, s)
}

#[test]
fn a_write_to_an_absent_key_succeeds_whatever_cas_is_passed() {
    let h = host();
    h.set_shared_data("a", b"1", 12345).unwrap();
    h.set_shared_data("b", b"1", CREATE_CAS).unwrap();
    h.set_shared_data("c", b"1", 0).unwrap();
    assert_eq!(h.shared_data("a").unwrap().0, Some(b"1".to_vec()));
    assert_eq!(h.shared_data("b").unwrap().0, Some(b"1".to_vec()));
    assert_eq!(h.shared_data("c").unwrap().0, Some(b"1".to_vec()));
}

#[test]
fn a_write_with_a_stale_cas_is_a_cas_mismatch_and_changes_nothing() {
    let h = host();
    h.set_shared_data("k", b"first", 0).unwrap();
    let (_, Some(old)) = h.shared_data("k").unwrap() else {
        panic!("an existing key has a CAS")
    };
    h.set_shared_data("k", b"second", old).unwrap();
    let err = h.set_shared_data("k", b"third", old).unwrap_err();
    assert_eq!(err.code, code::CAS_MISMATCH);
    assert_eq!(h.shared_data("k").unwrap().0, Some(b"second".to_vec()));
}

#[test]
fn cas_zero_writes_unconditionally() {
    let h = host();
    h.set_shared_data("k", b"first", 0).unwrap();
    h.set_shared_data("k", b"second", 0).unwrap();
    assert_eq!(h.shared_data("k").unwrap().0, Some(b"second".to_vec()));
}

#[test]
fn every_write_gets_a_new_nonzero_cas() {
    let h = host();
    let mut seen = Vec::new();
    for i in 0..5u8 {
        h.set_shared_data("k", &[i + 1], 0).unwrap();
        let (_, cas) = h.shared_data("k").unwrap();
        let cas = cas.unwrap();
        assert_ne!(cas, 0);
        assert!(!seen.contains(&cas), "CAS {cas} reused");
        seen.push(cas);
    }
}

#[test]
fn an_absent_key_reads_without_a_cas_and_an_emptied_key_with_one() {
    let h = host();
    assert_eq!(h.shared_data("never").unwrap(), (None, None));
    h.set_shared_data("emptied", b"", 0).unwrap();
    let (value, cas) = h.shared_data("emptied").unwrap();
    assert_eq!(value, None);
    assert!(cas.is_some());
}

#[test]
fn the_host_store_reads_absent_and_emptied_keys_as_empty_values_with_their_versions() {
    let (h, s) = host_store();
    let absent = s.get("k").unwrap();
    assert_eq!(absent.value, Vec::<u8>::new());
    assert_eq!(absent.version, Version::Absent);
    h.set_shared_data(&s.prefix().key("k"), b"", 0).unwrap();
    let emptied = s.get("k").unwrap();
    assert_eq!(emptied.value, Vec::<u8>::new());
    assert!(matches!(emptied.version, Version::Cas(c) if c != 0));
}

#[test]
fn the_host_store_creates_only_if_still_absent() {
    let (h, s) = host_store();
    let read = s.get("k").unwrap();
    assert_eq!(read.version, Version::Absent);
    // Another worker creates the key between our read and our write.
    h.set_shared_data(&s.prefix().key("k"), b"theirs", 0)
        .unwrap();
    assert_eq!(
        s.compare_and_swap("k", b"ours", read.version),
        Err(StoreError::CasMismatch)
    );
    assert_eq!(s.get("k").unwrap().value, b"theirs".to_vec());
    // With nobody racing, creating works.
    s.compare_and_swap("fresh", b"ours", Version::Absent)
        .unwrap();
    assert_eq!(s.get("fresh").unwrap().value, b"ours".to_vec());
}

#[test]
fn the_host_store_writes_with_the_read_version_and_loses_to_a_newer_write() {
    let (_, s) = host_store();
    s.compare_and_swap("k", b"1", Version::Absent).unwrap();
    let read = s.get("k").unwrap();
    s.compare_and_swap("k", b"2", read.version).unwrap();
    assert_eq!(
        s.compare_and_swap("k", b"3", read.version),
        Err(StoreError::CasMismatch)
    );
    // CAS 0 would be unconditional on the host: never passed for a read version.
    assert_eq!(
        s.compare_and_swap("k", b"4", Version::Cas(0)),
        Err(StoreError::CasMismatch)
    );
    assert_eq!(s.get("k").unwrap().value, b"2".to_vec());
}

#[test]
fn the_host_store_keys_carry_the_instance_prefix() {
    let (h, s) = host_store();
    s.compare_and_swap("k", b"1", Version::Absent).unwrap();
    assert_eq!(h.shared_keys(), vec![s.prefix().key("k")]);
    assert!(s.prefix().key("k").ends_with("k"));
    assert_ne!(s.prefix().key("k"), "k");
}

#[test]
fn an_update_loop_on_the_host_store_is_exact_across_interleaved_writers() {
    let (h, s) = host_store();
    let full = s.prefix().key("n");
    let mut raced = false;
    let out = update(&s, "n", 4, |current| {
        if !raced {
            raced = true;
            // A competing worker writes between our read and our CAS.
            h.set_shared_data(&full, b"7", 0).unwrap();
        }
        let n: u32 = std::str::from_utf8(current)
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        Step::Write((n + 1).to_string().into_bytes(), n + 1)
    })
    .unwrap();
    assert_eq!(out.output, 8);
    assert_eq!(s.get("n").unwrap().value, b"8".to_vec());
}

#[test]
fn two_workers_of_one_proxy_share_data_and_its_cas_but_nothing_else() {
    let a = host();
    a.advance(Duration::from_secs(5));
    let b = FakeHost::sharing_data_with(&a);
    assert_eq!(b.now(), a.now());
    a.set_shared_data("k", b"from a", 0).unwrap();
    let (value, Some(cas)) = b.shared_data("k").unwrap() else {
        panic!("b sees a's key with its CAS")
    };
    assert_eq!(value, Some(b"from a".to_vec()));
    // A write on one worker makes the other's CAS stale: the two race as real workers do.
    b.set_shared_data("k", b"from b", cas).unwrap();
    let err = a.set_shared_data("k", b"late a", cas).unwrap_err();
    assert_eq!(err.code, code::CAS_MISMATCH);
    assert_eq!(a.shared_data("k").unwrap().0, Some(b"from b".to_vec()));
    assert_eq!(a.shared_keys(), b.shared_keys());
    // One CAS counter for the proxy: a fresh key on the other worker never reuses a token.
    b.set_shared_data("j", b"1", 0).unwrap();
    let (_, cas_j) = a.shared_data("j").unwrap();
    let (_, cas_k) = a.shared_data("k").unwrap();
    assert_ne!(cas_j, cas_k);
    // A third worker sharing with the second joins the same proxy.
    let c = FakeHost::sharing_data_with(&b);
    assert_eq!(c.shared_data("k").unwrap().0, Some(b"from b".to_vec()));
    // Streams, clocks, metrics and faults stay per worker.
    a.open_stream(1, &[(":path", "/")]);
    assert!(b.stream(1).is_none());
    b.advance(Duration::from_secs(1));
    assert_ne!(a.now(), b.now());
    a.define_metric(MetricKind::Counter, "m").unwrap();
    assert!(b.stat("m").is_err());
    a.fail("shared_data", code::INTERNAL_FAILURE);
    assert!(a.shared_data("k").is_err());
    assert!(b.shared_data("k").is_ok());
    // A fake of its own shares nothing.
    assert_eq!(host().shared_data("k").unwrap(), (None, None));
}

#[test]
fn a_shared_data_outage_is_a_host_error_not_a_conflict() {
    let (h, s) = host_store();
    h.fail("shared_data", code::INTERNAL_FAILURE);
    assert!(matches!(s.get("k"), Err(StoreError::Host(_))));
    let r: Result<_, UpdateError> = update(&s, "k", 3, |_| Step::Keep(()));
    assert!(r.is_err());
}

#[test]
fn an_unknown_stat_is_an_error_not_zero() {
    let h = host();
    let id = h
        .define_metric(MetricKind::Counter, "palisade.x.hits")
        .unwrap();
    assert_eq!(h.stat("palisade.x.hits"), Ok(0));
    h.increment_metric(id, 2).unwrap();
    assert_eq!(h.stat("palisade.x.hits"), Ok(2));
    let err = h.stat("palisade.x.hit").unwrap_err();
    assert!(err.contains("palisade.x.hit"), "{err}");
    assert!(
        err.contains("palisade.x.hits"),
        "lists what is defined: {err}"
    );
    assert!(h.samples("palisade.x.latency").is_err());
}

#[test]
fn defining_a_metric_twice_gives_the_same_id_and_another_kind_is_refused() {
    let h = host();
    let a = h.define_metric(MetricKind::Counter, "m").unwrap();
    assert_eq!(h.define_metric(MetricKind::Counter, "m").unwrap(), a);
    let err = h.define_metric(MetricKind::Gauge, "m").unwrap_err();
    assert_eq!(err.code, code::BAD_ARGUMENT);
    let b = h.define_metric(MetricKind::Counter, "n").unwrap();
    assert_ne!(a, b);
}

#[test]
fn gauges_are_set_and_histograms_keep_their_samples() {
    let h = host();
    let g = h.define_metric(MetricKind::Gauge, "g").unwrap();
    let hist = h.define_metric(MetricKind::Histogram, "h").unwrap();
    h.record_metric(g, 5).unwrap();
    h.record_metric(g, 3).unwrap();
    h.record_metric(hist, 10).unwrap();
    h.record_metric(hist, 20).unwrap();
    assert_eq!(h.stat("g"), Ok(3));
    assert_eq!(h.samples("h"), Ok(vec![10, 20]));
    assert_eq!(h.record_metric(999, 1).unwrap_err().code, code::NOT_FOUND);
}

#[test]
fn a_header_lookup_returns_the_first_value_of_a_repeated_header() {
    let h = host();
    h.open_stream(
        1,
        &[
            (":path", "/"),
            ("x-forwarded-for", "192.0.2.1"),
            ("X-Forwarded-For", "198.51.100.2"),
        ],
    );
    assert_eq!(
        h.header(HeaderMap::Request, "x-forwarded-for").unwrap(),
        Some(b"192.0.2.1".to_vec())
    );
    assert_eq!(h.header(HeaderMap::Request, "x-absent").unwrap(), None);
    let all = h.headers(HeaderMap::Request).unwrap();
    let xff: Vec<&[u8]> = all
        .iter()
        .filter(|(n, _)| n == "x-forwarded-for")
        .map(|(_, v)| v.as_slice())
        .collect();
    assert_eq!(xff, vec![&b"192.0.2.1"[..], &b"198.51.100.2"[..]]);
}

#[test]
fn repeated_authorization_lines_are_joined_with_a_comma() {
    let h = host();
    h.open_stream(
        1,
        &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
    );
    assert_eq!(
        h.header(HeaderMap::Request, "authorization").unwrap(),
        Some(b"Bearer a,Bearer b".to_vec())
    );
}

#[test]
fn replacing_a_header_leaves_one_value_and_removing_leaves_none() {
    let h = host();
    h.open_stream(1, &[("x-a", "1"), ("x-b", "b"), ("x-a", "2")]);
    h.replace_header(HeaderMap::Request, "x-a", b"3").unwrap();
    assert_eq!(
        h.headers(HeaderMap::Request).unwrap(),
        vec![
            ("x-a".to_owned(), b"3".to_vec()),
            ("x-b".to_owned(), b"b".to_vec())
        ]
    );
    h.add_header(HeaderMap::Request, "x-a", b"4").unwrap();
    h.remove_header(HeaderMap::Request, "x-a").unwrap();
    assert_eq!(h.request_header_of(1, "x-a"), None);
    h.replace_header(HeaderMap::Request, "x-new", b"n").unwrap();
    assert_eq!(h.request_header_of(1, "x-new").as_deref(), Some("n"));
}

#[test]
fn stream_calls_act_on_the_effective_context() {
    let h = host();
    h.open_stream(1, &[("x-who", "one")]);
    h.open_stream(2, &[("x-who", "two")]);
    h.enter(1);
    assert_eq!(
        h.header(HeaderMap::Request, "x-who").unwrap(),
        Some(b"one".to_vec())
    );
    h.set_effective_context(2).unwrap();
    assert_eq!(
        h.header(HeaderMap::Request, "x-who").unwrap(),
        Some(b"two".to_vec())
    );
    h.resume_request().unwrap();
    assert_eq!(h.stream(2).unwrap().resumed, 1);
    assert_eq!(h.stream(1).unwrap().resumed, 0);
}

#[test]
fn an_ended_stream_cannot_be_entered_or_acted_on() {
    let h = host();
    h.open_stream(1, &[(":path", "/")]);
    h.close_stream(1);
    assert_eq!(
        h.set_effective_context(1).unwrap_err().code,
        code::BAD_ARGUMENT
    );
    assert_eq!(
        h.set_effective_context(42).unwrap_err().code,
        code::BAD_ARGUMENT
    );
    h.enter(1);
    assert_eq!(
        h.header(HeaderMap::Request, ":path").unwrap_err().code,
        code::BAD_ARGUMENT
    );
    assert_eq!(h.resume_request().unwrap_err().code, code::BAD_ARGUMENT);
    assert_eq!(
        h.send_reply(429, "x", &[], b"").unwrap_err().code,
        code::BAD_ARGUMENT
    );
}

#[test]
fn an_injected_fault_fails_every_later_call_of_that_operation_until_healed() {
    let h = host();
    h.open_stream(1, &[(":path", "/")]);
    h.fail("send_reply", code::INTERNAL_FAILURE);
    let err = h.send_reply(429, "limited", &[], b"").unwrap_err();
    assert_eq!(
        err,
        HostError::from_code("send_reply", code::INTERNAL_FAILURE)
    );
    assert!(h.send_reply(429, "limited", &[], b"").is_err());
    assert_eq!(h.reply_of(1), None);
    // Other operations are unaffected.
    assert!(h.header(HeaderMap::Request, ":path").is_ok());
    h.heal("send_reply");
    h.send_reply(429, "limited", &[("retry-after", "1")], b"slow down")
        .unwrap();
    let reply = h.reply_of(1).unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("Retry-After"), Some("1"));
    assert_eq!(reply.body, b"slow down".to_vec());
}

#[test]
fn hostcalls_are_counted_per_operation_failed_ones_included() {
    let h = host();
    h.open_stream(1, &[(":path", "/")]);
    assert_eq!(h.hostcalls("header"), 0);
    h.header(HeaderMap::Request, ":path").unwrap();
    h.header(HeaderMap::Request, "x-a").unwrap();
    h.property(&["source", "address"]).unwrap();
    h.fail("property", code::INTERNAL_FAILURE);
    assert!(h.property(&["source", "address"]).is_err());
    assert_eq!(h.hostcalls("header"), 2);
    assert_eq!(h.hostcalls("property"), 2);
    assert_eq!(h.hostcalls("headers"), 0);
}

#[test]
fn stream_properties_shadow_root_properties() {
    let h = host();
    h.set_root_property(&["plugin_name"], "edge");
    h.set_root_property(&["xds", "route_name"], "default");
    h.open_stream(1, &[]);
    h.set_stream_property(1, &["xds", "route_name"], "api");
    assert_eq!(
        h.property(&["plugin_name"]).unwrap(),
        Some(b"edge".to_vec())
    );
    assert_eq!(
        h.property(&["xds", "route_name"]).unwrap(),
        Some(b"api".to_vec())
    );
    assert_eq!(h.property(&["source", "address"]).unwrap(), None);
}

#[test]
fn buffers_are_read_and_replaced_by_range() {
    let h = host();
    h.open_stream(1, &[]);
    h.set_request_body(1, b"hello world");
    assert_eq!(
        h.buffer(Buffer::RequestBody, 6, 100).unwrap(),
        Some(b"world".to_vec())
    );
    h.set_buffer(Buffer::RequestBody, 0, 5, b"goodbye").unwrap();
    assert_eq!(h.stream(1).unwrap().request_body, b"goodbye world".to_vec());
    h.set_configuration("{\"a\":1}");
    assert_eq!(
        h.buffer(Buffer::PluginConfiguration, 0, usize::MAX)
            .unwrap(),
        Some(b"{\"a\":1}".to_vec())
    );
}

#[test]
fn a_call_response_is_read_through_the_call_response_maps() {
    let h = host();
    let token = h
        .http_call("jwks", &[(":method", "GET")], None, Duration::from_secs(1))
        .unwrap();
    assert_eq!(h.calls()[0].token, token);
    assert_eq!(h.calls()[0].cluster, "jwks");
    h.deliver_call_response(&[(":status", "200"), ("content-type", "a")], b"{}");
    assert_eq!(
        h.header(HeaderMap::CallResponse, ":status").unwrap(),
        Some(b"200".to_vec())
    );
    assert_eq!(
        h.buffer(Buffer::CallResponseBody, 0, 10).unwrap(),
        Some(b"{}".to_vec())
    );
}

#[test]
fn a_zero_tick_period_stops_ticks() {
    let h = host();
    h.set_tick_period(Duration::from_secs(2)).unwrap();
    assert_eq!(h.tick_period(), Some(Duration::from_secs(2)));
    h.set_tick_period(Duration::ZERO).unwrap();
    assert_eq!(h.tick_period(), None);
}

#[test]
fn the_whole_call_response_header_map_is_the_call_responses_not_the_streams() {
    let h = host();
    h.open_stream(1, &[(":path", "/request"), ("x-req", "1")]);
    h.deliver_call_response(&[(":status", "503"), ("retry-after", "2")], b"");
    assert_eq!(
        h.headers(HeaderMap::CallResponse).unwrap(),
        vec![
            (":status".to_owned(), b"503".to_vec()),
            ("retry-after".to_owned(), b"2".to_vec())
        ]
    );
    // In a root callback (no stream current) too.
    h.enter(0);
    assert_eq!(h.headers(HeaderMap::CallResponse).unwrap().len(), 2);
}

#[test]
fn increments_fail_as_in_envoy_for_unknown_ids_histograms_and_counters_going_down() {
    let h = host();
    let c = h.define_metric(MetricKind::Counter, "c").unwrap();
    let g = h.define_metric(MetricKind::Gauge, "g").unwrap();
    let hist = h.define_metric(MetricKind::Histogram, "h").unwrap();
    assert_eq!(
        h.increment_metric(999, 1).unwrap_err().code,
        code::NOT_FOUND
    );
    assert_eq!(
        h.increment_metric(hist, 1).unwrap_err().code,
        code::BAD_ARGUMENT
    );
    assert_eq!(
        h.increment_metric(c, -1).unwrap_err().code,
        code::BAD_ARGUMENT
    );
    assert_eq!(
        h.increment_metric(c, 0).unwrap_err().code,
        code::BAD_ARGUMENT
    );
    h.increment_metric(c, 3).unwrap();
    h.increment_metric(g, 2).unwrap();
    h.increment_metric(g, -5).unwrap();
    assert_eq!(h.stat("c"), Ok(3));
    assert_eq!(h.stat("g"), Ok(-3));
}

// gRPC calls.

use crate::plugin::host::{grpc_status, GrpcCall};

/// A unary gRPC call to `svc`/`M` on `cluster`, with this message and timeout.
fn grpc_to(h: &FakeHost, cluster: &str, message: &[u8], timeout_ms: u64) -> Result<u32, HostError> {
    h.grpc_call(&GrpcCall {
        cluster,
        service: "svc",
        method: "M",
        initial_metadata: &[],
        message,
        timeout: Duration::from_millis(timeout_ms),
    })
}

#[test]
fn a_grpc_call_to_a_cluster_envoy_does_not_know_is_a_parse_failure() {
    let h = host();
    h.grpc_clusters(&["rls"]);
    let e = grpc_to(&h, "other", b"", 20).unwrap_err();
    assert_eq!(e.code, code::PARSE_FAILURE);
    assert!(grpc_to(&h, "rls", b"", 20).is_ok());
    assert_eq!(h.grpc_calls().len(), 1);
    let open = FakeHost::new();
    assert_eq!(
        grpc_to(&open, "", b"", 20).unwrap_err().code,
        code::PARSE_FAILURE
    );
}

#[test]
fn a_grpc_call_ends_once_and_its_message_is_readable_only_while_delivered() {
    let h = host();
    let t = grpc_to(&h, "rls", b"q", 20).unwrap();
    assert_eq!(h.buffer(Buffer::GrpcResponse, 0, 100).unwrap(), None);
    let r = h
        .grpc_reply(t, GrpcReply::Message(b"hello".to_vec()))
        .unwrap();
    assert_eq!((r.token, r.status, r.size), (t, grpc_status::OK, 5));
    assert_eq!(
        h.buffer(Buffer::GrpcResponse, 0, 100).unwrap(),
        Some(b"hello".to_vec())
    );
    assert_eq!(h.grpc_reply(t, GrpcReply::Status(13)), None);
    h.grpc_delivered();
    assert_eq!(h.buffer(Buffer::GrpcResponse, 0, 100).unwrap(), None);
    let t2 = grpc_to(&h, "rls", b"q", 20).unwrap();
    let r2 = h
        .grpc_reply(t2, GrpcReply::Status(grpc_status::UNAVAILABLE))
        .unwrap();
    assert_eq!((r2.status, r2.size), (grpc_status::UNAVAILABLE, 0));
    assert_eq!(h.buffer(Buffer::GrpcResponse, 0, 100).unwrap(), None);
    assert!(h.grpc_calls_open().is_empty());
}

#[test]
fn envoys_timer_ends_a_grpc_call_as_unavailable_once_its_timeout_passes() {
    let h = host();
    let fast = grpc_to(&h, "rls", b"", 20).unwrap();
    let slow = grpc_to(&h, "rls", b"", 100).unwrap();
    h.advance(Duration::from_millis(19));
    assert!(h.grpc_expired().is_empty());
    h.advance(Duration::from_millis(1));
    let expired = h.grpc_expired();
    assert_eq!(
        expired,
        vec![GrpcResponse {
            token: fast,
            status: grpc_status::UNAVAILABLE,
            size: 0
        }]
    );
    assert!(h.grpc_expired().is_empty());
    assert_eq!(h.grpc_calls_open().len(), 1);
    assert!(h.grpc_reply(slow, GrpcReply::Message(Vec::new())).is_some());
    h.advance(Duration::from_secs(1));
    assert!(h.grpc_expired().is_empty());
}
