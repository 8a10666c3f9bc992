//! `palisade_core::key` on arbitrary request data: client IP extraction with every number of
//! trusted hops (an attacker controls `X-Forwarded-For`) and composite keys. Invariants: no panic;
//! with 0 trusted hops the IP comes only from the peer address; an IP taken from `X-Forwarded-For`
//! is exactly the entry at the trusted position; keys are unambiguous (moving a byte from one part
//! to the other changes the key).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use palisade_core::key::{
    client_ip, parse_ip, ClientIpOrigin, ClientIpSource, ClientIpWire, KeyPartWire, KeySpec,
};
use palisade_core::testing::FakeRequest;
use palisade_core::FieldPath;

#[derive(Debug, Arbitrary)]
struct Input {
    hops: u8,
    xff: Option<String>,
    source: Option<String>,
    method: String,
    path: String,
    a: String,
    b: String,
    route: Option<String>,
}

fuzz_target!(|input: Input| {
    let wire = ClientIpWire {
        trusted_hops: u32::from(input.hops),
    };
    let Ok(source) = ClientIpSource::validate(&wire, &FieldPath::root()) else {
        assert!(u32::from(input.hops) > palisade_core::key::MAX_TRUSTED_HOPS);
        return;
    };
    let request = |a: &str, b: &str| {
        let mut r = FakeRequest::new(&input.method, &input.path)
            .header("x-a", a)
            .header("x-b", b);
        if let Some(x) = &input.xff {
            r = r.header("x-forwarded-for", x);
        }
        if let Some(s) = &input.source {
            r = r.source(s);
        }
        if let Some(route) = &input.route {
            r = r.route(route);
        }
        r
    };
    let req = request(&input.a, &input.b);
    let ip = client_ip(&req, source);
    let peer = input.source.as_deref().and_then(parse_ip);
    match ip.origin {
        ClientIpOrigin::SourceAddress | ClientIpOrigin::FallbackToSourceAddress => {
            assert_eq!(ip.ip, peer)
        }
        ClientIpOrigin::ForwardedFor => {
            let entries: Vec<&str> = input.xff.as_deref().unwrap().split(',').collect();
            let n = usize::from(input.hops);
            assert!(n >= 1 && n <= entries.len());
            assert_eq!(ip.ip, parse_ip(entries[entries.len() - n]));
        }
    }
    if input.hops == 0 {
        assert_eq!(ip.origin, ClientIpOrigin::SourceAddress);
    }
    let spec = KeySpec::validate(
        &[
            KeyPartWire::Header("x-a".into()),
            KeyPartWire::Header("x-b".into()),
            KeyPartWire::ClientIp,
            KeyPartWire::Query("q".into()),
            KeyPartWire::Path,
            KeyPartWire::Method,
            KeyPartWire::RouteName,
            KeyPartWire::Constant("c".into()),
        ],
        &FieldPath::root(),
    )
    .unwrap();
    let key = spec.build(&req, source);
    if let (Ok(key), Some(first)) = (&key, input.b.chars().next()) {
        let moved_a = format!("{}{first}", input.a);
        let moved = spec.build(&request(&moved_a, &input.b[first.len_utf8()..]), source);
        if let Ok(moved) = moved {
            assert_ne!(key, &moved, "ambiguous key");
        }
    }
});
