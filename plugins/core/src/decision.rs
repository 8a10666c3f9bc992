//! What a policy asks the filter glue to do with a request.
//!
//! One type for every plugin, so the glue that applies it (send a local reply, or continue) is
//! written once in the host adapter and every reply carries the same bookkeeping.

/// The outcome of asking a policy about a request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the stream continue to the next filter.
    Continue,
    /// Stop the stream and answer the client locally.
    Reply(LocalReply),
}

impl Decision {
    pub fn is_continue(&self) -> bool {
        matches!(self, Decision::Continue)
    }
}

/// A locally generated response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Short machine-readable reason (for example `palisade_rate_limited`): Envoy's response code
    /// details of the reply (`%RESPONSE_CODE_DETAILS%` in access logs; the skeleton passes it to
    /// `proxy_send_local_response`), and the filter state `wasm.palisade.decision`. An HTTP token
    /// (no spaces), as Envoy requires of details.
    pub details: String,
    /// The rule that decided, if the policy has named rules (filter state `wasm.palisade.rule`).
    pub rule: Option<String>,
}

impl LocalReply {
    pub fn new(status: u16, details: impl Into<String>) -> Self {
        LocalReply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            details: details.into(),
            rule: None,
        }
    }

    /// Name the rule that decided.
    pub fn for_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_builder_keeps_headers_in_order_and_finds_them_case_insensitively() {
        let reply = LocalReply::new(429, "palisade_rate_limited")
            .header("Retry-After", "3")
            .header("x-envoy-ratelimited", "true")
            .body("slow down");
        assert_eq!(reply.header_value("retry-after"), Some("3"));
        assert_eq!(reply.headers[1].0, "x-envoy-ratelimited");
        assert_eq!(reply.body, b"slow down");
        assert!(!Decision::Reply(reply).is_continue());
        assert!(Decision::Continue.is_continue());
    }
}
