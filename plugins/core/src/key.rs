//! Request keys: which client, header, path… a request belongs to.
//!
//! Rate limits, bulkhead partitions and breaker keys are all "a function of the request". The parts
//! are extracted here once, against a [`RequestView`] the host adapter implements lazily (a part that
//! is not configured costs no hostcall).
//!
//! ## Client IP and `X-Forwarded-For`
//! `client_ip` comes from the connection's source address unless `trusted_hops` is set. With
//! `trusted_hops: N` (N ≥ 1), the operator declares that the last N entries of `X-Forwarded-For`
//! were appended by proxies they trust, each recording the address of its own peer; the client is
//! therefore the N-th entry from the right. Entries further left were written by the client and are
//! ignored — taking the leftmost entry, as naive code does, lets any client pick its own rate-limit
//! bucket. If the header has fewer than N entries, or the entry at that position is not an IP
//! address, the request did not come through the trusted chain as declared: the connection's source
//! address is used instead (a spoofer lands in its proxy's bucket, never in a victim's).
//!
//! Relation to Envoy's `xff_num_trusted_hops`: if Envoy's HCM has `use_remote_address: true`, Envoy
//! itself appends the peer before filters run, so count Envoy as one of the N.

use crate::config::{ConfigError, FieldPath};
use std::net::{IpAddr, SocketAddr};

/// Read access to the parts of a request that keys are built from.
///
/// The host adapter implements this with hostcalls made on demand; tests use
/// [`crate::testing::FakeRequest`].
pub trait RequestView {
    /// A request header by lowercase name: its first value, as Envoy's `getHeaderMapValue` gives
    /// it, except for inline headers such as `authorization`, whose repeated lines Envoy has
    /// already joined into one value with `,`.
    fn header(&self, name: &str) -> Option<String>;
    /// Every value of a request header, one per header line, in order (a request may repeat a
    /// header; through Envoy, repeated `authorization` lines arrive as one joined value). The
    /// default is [`RequestView::header`]'s single value.
    fn header_values(&self, name: &str) -> Vec<String> {
        self.header(name).into_iter().collect()
    }
    /// `:path`, including the query string.
    fn path(&self) -> Option<String>;
    /// `:method`.
    fn method(&self) -> Option<String>;
    /// The downstream connection's source address, `ip:port` or `[ipv6]:port`.
    fn source_address(&self) -> Option<String>;
    /// The matched route's name (`xds.route_name`), if the route has one.
    fn route_name(&self) -> Option<String>;
    /// A claim of the token verified earlier in the same chain (by jwt_auth), as text. Outside a
    /// chain, or before jwt_auth, there are none.
    fn claim(&self, _name: &str) -> Option<String> {
        None
    }
}

crate::wire! {
    /// Wire form of the client-IP setting: `{"trusted_hops": 0}`.
    #[derive(Clone, Default)]
    pub struct ClientIpWire {
        #[serde(default)]
        #[cfg_attr(feature = "schema", schemars(range(max = MAX_TRUSTED_HOPS)))]
        pub trusted_hops: u32,
    }
}

/// Where the client IP comes from; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientIpSource {
    trusted_hops: u32,
}

/// Upper bound on `trusted_hops`: deeper chains than this are a misconfiguration.
pub const MAX_TRUSTED_HOPS: u32 = 16;

impl ClientIpSource {
    pub const SOURCE_ADDRESS: ClientIpSource = ClientIpSource { trusted_hops: 0 };

    pub fn validate(wire: &ClientIpWire, path: &FieldPath) -> Result<Self, ConfigError> {
        if wire.trusted_hops > MAX_TRUSTED_HOPS {
            return Err(path.field("trusted_hops").out_of_range(
                wire.trusted_hops,
                0,
                MAX_TRUSTED_HOPS,
            ));
        }
        Ok(ClientIpSource {
            trusted_hops: wire.trusted_hops,
        })
    }

    pub fn trusted_hops(self) -> u32 {
        self.trusted_hops
    }
}

/// How a client IP was found; worth a metric when it is a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIpOrigin {
    SourceAddress,
    ForwardedFor,
    /// `X-Forwarded-For` was expected but missing, too short or malformed.
    FallbackToSourceAddress,
}

/// The client's IP and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp {
    pub ip: Option<IpAddr>,
    pub origin: ClientIpOrigin,
}

/// Parse `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80` or `"[::1]"`; anything else is `None`.
pub fn parse_ip(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    s.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
}

/// Determine the client IP of a request; see the module docs for the trust model.
pub fn client_ip(req: &dyn RequestView, source: ClientIpSource) -> ClientIp {
    let from_address = || req.source_address().as_deref().and_then(parse_ip);
    if source.trusted_hops == 0 {
        return ClientIp {
            ip: from_address(),
            origin: ClientIpOrigin::SourceAddress,
        };
    }
    let forwarded = req.header("x-forwarded-for").and_then(|xff| {
        let entries: Vec<&str> = xff.split(',').collect();
        let n = usize::try_from(source.trusted_hops).ok()?;
        let position = entries.len().checked_sub(n)?;
        parse_ip(entries.get(position)?)
    });
    match forwarded {
        Some(ip) => ClientIp {
            ip: Some(ip),
            origin: ClientIpOrigin::ForwardedFor,
        },
        None => ClientIp {
            ip: from_address(),
            origin: ClientIpOrigin::FallbackToSourceAddress,
        },
    }
}

crate::wire! {
    /// Wire form of one key part: `"client_ip"`, `{"header": "x-api-key"}`, `{"query": "key"}`,
    /// `"path"`, `"method"`, `"route_name"`, `{"constant": "text"}` or `{"claim": "sub"}`.
    #[derive(Clone, PartialEq, Eq)]
    #[serde(rename_all = "snake_case")]
    pub enum KeyPartWire {
        ClientIp,
        Header(String),
        Query(String),
        Path,
        Method,
        RouteName,
        Constant(String),
        /// A claim of the token jwt_auth verified earlier in the same chain (`{"claim": "sub"}`).
        Claim(String),
    }
}

/// One validated part of a request key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    ClientIp,
    /// Lowercased header name.
    Header(String),
    /// Query parameter name, matched after percent-decoding.
    Query(String),
    /// The URL path without the query string.
    Path,
    Method,
    RouteName,
    Constant(String),
    /// A verified claim's text (see [`RequestView::claim`]); dotted names reach into objects.
    Claim(String),
}

impl KeyPart {
    pub fn validate(wire: &KeyPartWire, path: &FieldPath) -> Result<Self, ConfigError> {
        Ok(match wire {
            KeyPartWire::ClientIp => KeyPart::ClientIp,
            KeyPartWire::Header(name) => {
                KeyPart::Header(validate_header_name(name, &path.field("header"))?)
            }
            KeyPartWire::Query(name) => KeyPart::Query(non_empty(
                name,
                &path.field("query"),
                "query parameter name",
            )?),
            KeyPartWire::Path => KeyPart::Path,
            KeyPartWire::Method => KeyPart::Method,
            KeyPartWire::RouteName => KeyPart::RouteName,
            KeyPartWire::Constant(text) => KeyPart::Constant(text.clone()),
            KeyPartWire::Claim(name) => {
                KeyPart::Claim(non_empty(name, &path.field("claim"), "claim name")?)
            }
        })
    }

    /// This part's value for a request, or `None` when the request lacks it.
    pub fn extract(&self, req: &dyn RequestView, ip_source: ClientIpSource) -> Option<String> {
        match self {
            KeyPart::ClientIp => client_ip(req, ip_source).ip.map(|ip| ip.to_string()),
            KeyPart::Header(name) => req.header(name),
            KeyPart::Query(name) => query_param(&req.path()?, name),
            KeyPart::Path => req.path().map(|p| url_path(&p).to_owned()),
            KeyPart::Method => req.method(),
            KeyPart::RouteName => req.route_name().filter(|r| !r.is_empty()),
            KeyPart::Constant(text) => Some(text.clone()),
            KeyPart::Claim(name) => req.claim(name),
        }
    }
}

/// A name that must not be empty, at `path` (`what` names it in the error).
fn non_empty(name: &str, path: &FieldPath, what: &str) -> Result<String, ConfigError> {
    if name.is_empty() {
        return Err(path.invalid(name, format!("{what} must not be empty")));
    }
    Ok(name.to_owned())
}

/// Validate and lowercase a header name (an HTTP token; pseudo-headers like `:authority` allowed).
pub fn validate_header_name(name: &str, path: &FieldPath) -> Result<String, ConfigError> {
    let body = name.strip_prefix(':').unwrap_or(name);
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if body.is_empty() || !body.chars().all(is_token_char) {
        return Err(path.invalid(name, "not a valid HTTP header name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// The path without its query string (and without a fragment, should a client send one).
pub fn url_path(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// The query string of a `:path`, without the `?`, or `""`.
pub fn query_string(path: &str) -> &str {
    match path.split_once('?') {
        Some((_, rest)) => rest.split('#').next().unwrap_or(""),
        None => "",
    }
}

/// The first value of a query parameter, percent-decoded (`+` is a space), by decoded name.
pub fn query_param(path: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query_string(path).as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A composite key made of several parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    parts: Vec<KeyPart>,
}

/// A key could not be built because the request lacks part number `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingPart {
    pub index: usize,
}

impl KeySpec {
    pub fn validate(wire: &[KeyPartWire], path: &FieldPath) -> Result<Self, ConfigError> {
        if wire.is_empty() {
            return Err(path.missing("a key needs at least one part"));
        }
        let parts = wire
            .iter()
            .enumerate()
            .map(|(i, w)| KeyPart::validate(w, &path.index(i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeySpec { parts })
    }

    pub fn parts(&self) -> &[KeyPart] {
        &self.parts
    }

    /// Build the key. Parts are length-prefixed, so `("a:b", "c")` and `("a", "b:c")` differ.
    pub fn build(
        &self,
        req: &dyn RequestView,
        ip_source: ClientIpSource,
    ) -> Result<String, MissingPart> {
        let mut key = String::new();
        for (index, part) in self.parts.iter().enumerate() {
            let value = part.extract(req, ip_source).ok_or(MissingPart { index })?;
            key.push_str(&value.len().to_string());
            key.push(':');
            key.push_str(&value);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRequest;

    fn hops(n: u32) -> ClientIpSource {
        ClientIpSource::validate(&ClientIpWire { trusted_hops: n }, &FieldPath::root()).unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// The client IP `client_ip` finds in `req`, and where it found it.
    fn resolved(req: &FakeRequest, source: ClientIpSource) -> (Option<IpAddr>, ClientIpOrigin) {
        let got = client_ip(req, source);
        (got.ip, got.origin)
    }

    #[test]
    fn without_trusted_hops_the_source_address_wins_even_if_xff_is_sent() {
        let req = FakeRequest::new("GET", "/")
            .source("10.0.0.9:4431")
            .header("x-forwarded-for", "1.1.1.1");
        assert_eq!(
            resolved(&req, ClientIpSource::SOURCE_ADDRESS),
            (ip("10.0.0.9"), ClientIpOrigin::SourceAddress)
        );
    }

    #[test]
    fn ipv6_source_addresses_are_parsed() {
        let req = FakeRequest::new("GET", "/").source("[2001:db8::1]:443");
        assert_eq!(
            client_ip(&req, ClientIpSource::SOURCE_ADDRESS).ip,
            ip("2001:db8::1")
        );
    }

    /// What [`behind_proxy`] resolves to when `X-Forwarded-For` cannot be used: the proxy's own
    /// address.
    fn fell_back() -> (Option<IpAddr>, ClientIpOrigin) {
        (ip("10.0.0.2"), ClientIpOrigin::FallbackToSourceAddress)
    }

    /// A request from 10.0.0.2 (a proxy) carrying this `X-Forwarded-For`.
    fn behind_proxy(xff: &str) -> FakeRequest {
        FakeRequest::new("GET", "/")
            .source("10.0.0.2:1000")
            .header("x-forwarded-for", xff)
    }

    #[test]
    fn one_trusted_hop_takes_the_rightmost_entry() {
        let req = behind_proxy("203.0.113.7, 198.51.100.4");
        assert_eq!(
            resolved(&req, hops(1)),
            (ip("198.51.100.4"), ClientIpOrigin::ForwardedFor)
        );
    }

    #[test]
    fn two_trusted_hops_take_the_second_entry_from_the_right() {
        let req = behind_proxy("6.6.6.6, 203.0.113.7, 10.1.1.1");
        assert_eq!(client_ip(&req, hops(2)).ip, ip("203.0.113.7"));
    }

    #[test]
    fn spoofed_leftmost_entries_are_ignored() {
        // The client sent "X-Forwarded-For: 1.2.3.4"; our one trusted proxy appended the real peer.
        let req = behind_proxy("1.2.3.4,192.0.2.77");
        assert_eq!(client_ip(&req, hops(1)).ip, ip("192.0.2.77"));
    }

    #[test]
    fn too_few_entries_fall_back_to_the_source_address() {
        let req = behind_proxy("192.0.2.77");
        assert_eq!(resolved(&req, hops(2)), fell_back());
    }

    #[test]
    fn a_missing_header_falls_back_to_the_source_address() {
        let req = FakeRequest::new("GET", "/").source("10.0.0.2:1000");
        assert_eq!(resolved(&req, hops(1)), fell_back());
    }

    #[test]
    fn malformed_entries_at_the_trusted_position_fall_back() {
        for xff in [
            "1.2.3.4, not-an-ip",
            "1.2.3.4,",
            "1.2.3.4, 999.1.1.1",
            ",,,",
            "1.2.3.4, 1.2.3.4.5",
        ] {
            assert_eq!(
                resolved(&behind_proxy(xff), hops(1)),
                fell_back(),
                "xff={xff:?}"
            );
        }
    }

    #[test]
    fn xff_entries_with_ports_brackets_quotes_and_spaces_parse() {
        for (entry, want) in [
            ("  192.0.2.1  ", "192.0.2.1"),
            ("192.0.2.1:8080", "192.0.2.1"),
            ("[2001:db8::2]:80", "2001:db8::2"),
            ("\"[2001:db8::3]\"", "2001:db8::3"),
            ("2001:db8::4", "2001:db8::4"),
        ] {
            let req = FakeRequest::new("GET", "/")
                .source("10.0.0.2:1")
                .header("x-forwarded-for", entry);
            assert_eq!(client_ip(&req, hops(1)).ip, ip(want), "entry={entry:?}");
        }
    }

    #[test]
    fn no_source_address_and_no_xff_gives_no_ip() {
        let req = FakeRequest::new("GET", "/");
        assert_eq!(client_ip(&req, ClientIpSource::SOURCE_ADDRESS).ip, None);
    }

    #[test]
    fn trusted_hops_are_bounded() {
        let err = ClientIpSource::validate(
            &ClientIpWire { trusted_hops: 99 },
            &FieldPath::root().field("client_ip"),
        )
        .unwrap_err();
        assert_eq!(err.field.as_str(), "client_ip.trusted_hops");
    }

    #[test]
    fn key_parts_extract_each_request_attribute() {
        let req = FakeRequest::new("POST", "/v1/items?api_key=a%20b&x=1")
            .source("192.0.2.5:999")
            .header("x-api-key", "k-123")
            .route("items");
        let get = |w: KeyPartWire| {
            KeyPart::validate(&w, &FieldPath::root())
                .unwrap()
                .extract(&req, ClientIpSource::SOURCE_ADDRESS)
        };
        assert_eq!(get(KeyPartWire::ClientIp).as_deref(), Some("192.0.2.5"));
        assert_eq!(
            get(KeyPartWire::Header("X-Api-Key".into())).as_deref(),
            Some("k-123")
        );
        assert_eq!(
            get(KeyPartWire::Query("api_key".into())).as_deref(),
            Some("a b")
        );
        assert_eq!(get(KeyPartWire::Query("missing".into())), None);
        assert_eq!(get(KeyPartWire::Path).as_deref(), Some("/v1/items"));
        assert_eq!(get(KeyPartWire::Method).as_deref(), Some("POST"));
        assert_eq!(get(KeyPartWire::RouteName).as_deref(), Some("items"));
        assert_eq!(
            get(KeyPartWire::Constant("global".into())).as_deref(),
            Some("global")
        );
    }

    #[test]
    fn key_parts_parse_from_compact_json() {
        let wire: Vec<KeyPartWire> =
            serde_json::from_str(r#"["client_ip", {"header": "x-user"}, "path", "method", {"query": "q"}, "route_name", {"constant": "c"}]"#)
                .unwrap();
        assert_eq!(wire.len(), 7);
        assert!(serde_json::from_str::<Vec<KeyPartWire>>(r#"["client_address"]"#).is_err());
    }

    #[test]
    fn invalid_header_names_are_rejected_with_their_path() {
        let err = KeyPart::validate(
            &KeyPartWire::Header("bad header".into()),
            &FieldPath::root().field("key").index(1),
        )
        .unwrap_err();
        assert_eq!(err.field.as_str(), "key[1].header");
        assert!(err.to_string().contains("bad header"));
    }

    #[test]
    fn composite_keys_are_unambiguous_and_report_the_missing_part() {
        let spec = KeySpec::validate(
            &[
                KeyPartWire::Header("a".into()),
                KeyPartWire::Header("b".into()),
            ],
            &FieldPath::root(),
        )
        .unwrap();
        let one = FakeRequest::new("GET", "/")
            .header("a", "x:1")
            .header("b", "y");
        let two = FakeRequest::new("GET", "/")
            .header("a", "x")
            .header("b", "1:y");
        assert_ne!(
            spec.build(&one, ClientIpSource::SOURCE_ADDRESS),
            spec.build(&two, ClientIpSource::SOURCE_ADDRESS)
        );
        let missing = FakeRequest::new("GET", "/").header("a", "x");
        assert_eq!(
            spec.build(&missing, ClientIpSource::SOURCE_ADDRESS),
            Err(MissingPart { index: 1 })
        );
        assert!(KeySpec::validate(&[], &FieldPath::root()).is_err());
    }

    #[test]
    fn url_path_and_query_string_split_correctly() {
        assert_eq!(url_path("/a/b?c=d#e"), "/a/b");
        assert_eq!(url_path("/a"), "/a");
        assert_eq!(query_string("/a?x=1&y=2#frag"), "x=1&y=2");
        assert_eq!(query_string("/a"), "");
        assert_eq!(query_param("/a?x=1&x=2", "x").as_deref(), Some("1"));
        assert_eq!(query_param("/a?a%5Fb=%ZZ", "a_b").as_deref(), Some("%ZZ"));
    }
}
