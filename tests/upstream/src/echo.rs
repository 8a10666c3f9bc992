//! The echo JSON: what the upstream received, as seen by the upstream.

use hyper::header::HeaderMap;
use hyper::http::request::Parts;
use serde_json::{Map, Value};

/// Decodes a raw query string into `(name, value)` pairs, in order.
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// Builds the echo document for a request whose body was fully read.
pub(crate) fn echo_json(parts: &Parts, query: &[(String, String)], body: &[u8]) -> Value {
    let body_json = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "args": args_json(query),
        "headers": headers_json(&parts.headers),
        "body": String::from_utf8_lossy(body),
        "body_json": body_json,
        "body_len": body.len(),
    })
}

/// Query parameters as an object; for a repeated name the last value wins.
fn args_json(query: &[(String, String)]) -> Value {
    let args: Map<String, Value> = query
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    Value::Object(args)
}

/// Headers as an object keyed by lowercase name; repeated headers are
/// joined with `", "`, non-UTF-8 bytes are replaced.
fn headers_json(headers: &HeaderMap) -> Value {
    let mut object = Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        object.insert(name.as_str().to_owned(), Value::String(joined));
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Request;

    #[test]
    fn echoes_request_parts() {
        let (parts, ()) = Request::post("/a/b?x=1&y=%20two&x=3")
            .header("X-Thing", "one")
            .header("x-thing", "two")
            .body(())
            .unwrap()
            .into_parts();
        let query = query_pairs(parts.uri.query().unwrap_or(""));
        let echo = echo_json(&parts, &query, br#"{"k":[1,2]}"#);
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], "/a/b");
        assert_eq!(echo["query"], "x=1&y=%20two&x=3");
        assert_eq!(echo["args"], serde_json::json!({"x": "3", "y": " two"}));
        assert_eq!(echo["headers"]["x-thing"], "one, two");
        assert_eq!(echo["body"], r#"{"k":[1,2]}"#);
        assert_eq!(echo["body_json"], serde_json::json!({"k": [1, 2]}));
        assert_eq!(echo["body_len"], 11);
    }

    #[test]
    fn non_json_body_gives_null() {
        let (parts, ()) = Request::get("/").body(()).unwrap().into_parts();
        let echo = echo_json(&parts, &[], b"not json \xff");
        assert_eq!(echo["body_json"], Value::Null);
        assert_eq!(echo["body"], "not json \u{fffd}");
        assert_eq!(echo["query"], "");
        assert_eq!(echo["args"], serde_json::json!({}));
    }
}
