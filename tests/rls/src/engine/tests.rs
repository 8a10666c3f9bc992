//! The request mapping and the limits file, against limitador's own evaluation (its in-memory
//! limiter: the same conditions and variables the Redis storage counts by).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use limitador::RateLimiter;

const LIMITS: &str = r#"
- namespace: edge
  max_value: 2
  seconds: 60
  name: per_api_key
  conditions:
    - "descriptors[0].generic_key == 'api'"
  variables:
    - descriptors[0].api_key
"#;

fn limiter() -> RateLimiter {
    let limiter = RateLimiter::new(1000);
    limiter
        .configure_with(parse_limits(LIMITS).unwrap())
        .unwrap();
    limiter
}

fn limited(limiter: &RateLimiter, req: &RateLimitRequest) -> bool {
    let (namespace, ctx) = namespace_and_context(req);
    limiter
        .check_rate_limited_and_update(&namespace, &ctx, 1)
        .unwrap()
        .limited
}

fn request(domain: &str, entries: &[(&str, &str)]) -> RateLimitRequest {
    RateLimitRequest::new(domain, &[entries], 0)
}

#[test]
fn a_limits_file_is_read_with_its_names_and_values() {
    let limits = parse_limits(LIMITS).unwrap();
    assert_eq!(limits.len(), 1);
    assert_eq!(limits[0].max_value(), 2);
    assert_eq!(limits[0].seconds(), 60);
    assert_eq!(limits[0].name(), Some("per_api_key"));
    assert_eq!(limits[0].namespace().as_ref(), "edge");
}

#[test]
fn a_malformed_limits_file_is_an_error_naming_the_file() {
    let err = parse_limits("- namespace: edge\n  max_value: lots\n").unwrap_err();
    assert!(err.starts_with("limits file:"), "{err}");
}

#[test]
fn the_domain_is_the_namespace_and_descriptor_entries_the_variables() {
    let limiter = limiter();
    let k1 = request("edge", &[("generic_key", "api"), ("api_key", "k1")]);
    assert!(!limited(&limiter, &k1));
    assert!(!limited(&limiter, &k1));
    assert!(limited(&limiter, &k1));
    // Another variable value, its own counter.
    let k2 = request("edge", &[("generic_key", "api"), ("api_key", "k2")]);
    assert!(!limited(&limiter, &k2));
}

#[test]
fn a_request_the_conditions_do_not_select_is_not_limited() {
    let limiter = limiter();
    let other_key = request("edge", &[("generic_key", "web"), ("api_key", "k1")]);
    let other_domain = request("other", &[("generic_key", "api"), ("api_key", "k1")]);
    let no_variable = request("edge", &[("generic_key", "api")]);
    for _ in 0..5 {
        assert!(!limited(&limiter, &other_key));
        assert!(!limited(&limiter, &other_domain));
        assert!(!limited(&limiter, &no_variable));
    }
}
