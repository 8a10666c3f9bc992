//! The CEL rules (`x-kubernetes-validations`) of the WasmPlugin CRD, each translated by hand.
//!
//! A rule is looked up by its exact text (whitespace collapsed); a rule that is not in
//! [`translate`]'s table is an error, so a CRD update that adds or changes a rule fails the check
//! until the new rule is translated here. `isURL` and `url().getScheme()` are Kubernetes' CEL URL
//! library (k8s.io/apiserver `pkg/cel/library/urls.go`): `isURL(s)` is Go's
//! `url.ParseRequestURI(s) == nil`, and `url(s)` parses with `url.ParseRequestURI`, then
//! `url.Parse`; [`go_url`] reproduces Go's `net/url` parsing as far as these rules depend on it.

use serde_json::Value;

/// A translated rule: `Ok(true)` when `self` satisfies it, `Err` when CEL would fail to evaluate.
pub type Rule = fn(&Value) -> Result<bool, String>;

/// The translation of `rule` (the CRD's text), or `None` if it has none.
pub fn translate(rule: &str) -> Option<Rule> {
    let rule: String = rule.split_whitespace().collect::<Vec<_>>().join(" ");
    let f: Rule = match rule.as_str() {
        // selector.matchLabels values.
        r#"!self.contains("*")"# => |v| Ok(!string(v)?.contains('*')),
        // selector.matchLabels keys.
        r#"self.all(key, !key.contains("*"))"# => |v| Ok(keys(v)?.all(|k| !k.contains('*'))),
        "self.all(key, key.size() != 0)" => |v| Ok(keys(v)?.all(|k| !k.is_empty())),
        // targetRef(s).namespace: CEL's size() counts code points.
        "self.size() == 0" => |v| Ok(string(v)?.chars().count() == 0),
        // spec.url.
        r#"isURL(self) ? (url(self).getScheme() in ["", "http", "https", "oci", "file"]) : (isURL("http://" + self) && url("http://" + self).getScheme() in ["", "http", "https", "oci", "file"])"# => {
            |v| {
                const SCHEMES: [&str; 5] = ["", "http", "https", "oci", "file"];
                let s = string(v)?;
                if is_url(s) {
                    Ok(SCHEMES.contains(&cel_url_scheme(s)?.as_str()))
                } else {
                    let with = format!("http://{s}");
                    Ok(is_url(&with) && SCHEMES.contains(&cel_url_scheme(&with)?.as_str()))
                }
            }
        }
        // vmConfig.env[*].
        r#"(has(self.valueFrom) ? self.valueFrom : "") != "HOST" || !has(self.value)"# => |v| {
            let obj = v.as_object().ok_or("self is not an object")?;
            let value_from = match obj.get("valueFrom") {
                Some(x) => string(x)?,
                None => "",
            };
            Ok(value_from != "HOST" || !obj.contains_key("value"))
        },
        // spec.
        "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1" => {
            |v| {
                let obj = v.as_object().ok_or("self is not an object")?;
                Ok(["selector", "targetRef", "targetRefs"]
                    .iter()
                    .filter(|k| obj.contains_key(**k))
                    .count()
                    <= 1)
            }
        }
        _ => return None,
    };
    Some(f)
}

fn string(v: &Value) -> Result<&str, String> {
    v.as_str()
        .ok_or_else(|| format!("self is not a string: {v}"))
}

fn keys(v: &Value) -> Result<impl Iterator<Item = &String>, String> {
    Ok(v.as_object().ok_or("self is not a map")?.keys())
}

/// CEL `isURL(s)`: Go's `url.ParseRequestURI(s)` succeeds.
pub fn is_url(s: &str) -> bool {
    go_url(s, true).is_ok()
}

/// CEL `url(s).getScheme()`: `url(s)` fails unless `ParseRequestURI` succeeds, then parses with
/// `url.Parse` (which also takes the fragment apart).
fn cel_url_scheme(s: &str) -> Result<String, String> {
    go_url(s, true).map_err(|e| format!("URL parse error during conversion from string: {e}"))?;
    let (before, fragment) = s.split_once('#').unwrap_or((s, ""));
    let scheme = go_url(before, false)?;
    unescape(fragment, Mode::Fragment)?;
    Ok(scheme)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    UserPassword,
    Fragment,
}

/// Go's `net/url` `parse(rawURL, viaRequest)`: the lower-cased scheme, or why it fails.
pub fn go_url(raw: &str, via_request: bool) -> Result<String, String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".to_owned());
    }
    if raw.is_empty() && via_request {
        return Err("empty url".to_owned());
    }
    if raw == "*" {
        return Ok(String::new());
    }
    let (scheme, rest) = scheme_of(raw)?;
    let scheme = scheme.to_ascii_lowercase();
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split_once('?').map_or(rest, |(r, _)| r)
    };
    if !rest.starts_with('/') {
        if !scheme.is_empty() {
            // A rootless path is opaque: nothing more is checked.
            return Ok(scheme);
        }
        if via_request {
            return Err("invalid URI for request".to_owned());
        }
        let segment = rest.split_once('/').map_or(rest, |(s, _)| s);
        if segment.contains(':') {
            return Err("first path segment in URL cannot contain colon".to_owned());
        }
    }
    let mut path = rest;
    if (!scheme.is_empty() || !via_request && !rest.starts_with("///")) && rest.starts_with("//") {
        let authority_and_path = &rest[2..];
        let (authority, p) = match authority_and_path.find('/') {
            Some(i) => (&authority_and_path[..i], &authority_and_path[i..]),
            None => (authority_and_path, ""),
        };
        parse_authority(authority)?;
        path = p;
    }
    unescape(path, Mode::Path)?;
    Ok(scheme)
}

/// Go's `getScheme`.
fn scheme_of(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' => {
                if i == 0 {
                    return Ok(("", raw));
                }
            }
            b':' => {
                if i == 0 {
                    return Err("missing protocol scheme".to_owned());
                }
                return Ok((&raw[..i], &raw[i + 1..]));
            }
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn parse_authority(authority: &str) -> Result<(), String> {
    let at = authority.rfind('@');
    let host = at.map_or(authority, |i| &authority[i + 1..]);
    parse_host(host)?;
    if let Some(i) = at {
        let userinfo = &authority[..i];
        if !valid_userinfo(userinfo) {
            return Err("net/url: invalid userinfo".to_owned());
        }
        match userinfo.split_once(':') {
            None => unescape(userinfo, Mode::UserPassword)?,
            Some((user, password)) => {
                unescape(user, Mode::UserPassword)?;
                unescape(password, Mode::UserPassword)?;
            }
        }
    }
    Ok(())
}

fn parse_host(host: &str) -> Result<(), String> {
    if host.starts_with('[') {
        let i = host.rfind(']').ok_or("missing ']' in host")?;
        let port = &host[i + 1..];
        if !valid_optional_port(port) {
            return Err(format!("invalid port {port:?} after host"));
        }
        // The IP literal itself (and a zone) is unescaped like a host.
        return unescape(&host[..=i], Mode::Host);
    }
    if let Some(i) = host.rfind(':') {
        let port = &host[i..];
        if !valid_optional_port(port) {
            return Err(format!("invalid port {port:?} after host"));
        }
    }
    unescape(host, Mode::Host)
}

fn valid_optional_port(port: &str) -> bool {
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => digits.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn valid_userinfo(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '-' | '.'
                    | '_'
                    | ':'
                    | '~'
                    | '!'
                    | '$'
                    | '&'
                    | '\''
                    | '('
                    | ')'
                    | '*'
                    | '+'
                    | ','
                    | ';'
                    | '='
                    | '%'
                    | '@'
            )
    })
}

/// Go's `unescape`, for its errors only: a `%` needs two hex digits, and a host allows only its
/// own characters (and `%25`-style escapes of bytes >= 0x80, or `%25` itself).
fn unescape(s: &str, mode: Mode) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: Option<&u8>| c.is_some_and(u8::is_ascii_hexdigit);
                if !hex(b.get(i + 1)) || !hex(b.get(i + 2)) {
                    let end = (i + 3).min(b.len());
                    return Err(format!(
                        "invalid URL escape {:?}",
                        String::from_utf8_lossy(&b[i..end])
                    ));
                }
                if mode == Mode::Host && b[i + 1] < b'8' && &s[i..i + 3] != "%25" {
                    return Err(format!("invalid URL escape {:?}", &s[i..i + 3]));
                }
                i += 3;
            }
            c => {
                if mode == Mode::Host && c < 0x80 && host_must_escape(c) {
                    return Err(format!("invalid character {:?} in host name", c as char));
                }
                i += 1;
            }
        }
    }
    Ok(())
}

/// Go's `shouldEscape(c, encodeHost)` for ASCII.
fn host_must_escape(c: u8) -> bool {
    !(c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'"'
                | b'-'
                | b'_'
                | b'.'
                | b'~'
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const URL_RULE: &str = "isURL(self) ? (url(self).getScheme() in [\"\", \"http\", \"https\", \"oci\", \"file\"]) : (isURL(\"http://\" + self) &&\nurl(\"http://\" + self).getScheme() in [\"\", \"http\", \"https\", \"oci\", \"file\"])";

    fn url_ok(s: &str) -> bool {
        translate(URL_RULE).unwrap()(&json!(s)).unwrap_or(false)
    }

    #[test]
    fn the_url_rule_accepts_what_istio_accepts() {
        for ok in [
            "oci://registry.example.com/palisade/rate_limit-wasm@sha256:0123",
            "oci://127.0.0.1:5000/palisade/rate_limit-wasm:0.1.0",
            "http://test",
            "https://example.com/x.wasm",
            "file:///opt/filters/openid.wasm",
            "test",
            "registry.example.com/palisade/rate_limit-wasm:0.1.0",
            // No scheme (a digit cannot start one), so it is tried as `http://127.0.0.1:5000/...`.
            "127.0.0.1:5000/palisade/rate_limit-wasm:0.1.0",
            // Not a request URI, but `http://http://exa mple.com/x` is (host `http:`).
            "http://exa mple.com/x",
        ] {
            assert!(url_ok(ok), "{ok} should pass");
        }
    }

    #[test]
    fn the_url_rule_rejects_unknown_schemes_and_a_port_without_scheme() {
        for bad in [
            "fake://example.com",
            "#%blah$#@",
            // Parsed as scheme `localhost` with an opaque rest: not one of the allowed schemes.
            "localhost:5000/palisade/rate_limit-wasm:0.1.0",
            "registry.local:5000/palisade/rate_limit-wasm:0.1.0",
            "ftp://example.com/x.wasm",
        ] {
            assert!(!url_ok(bad), "{bad} should fail");
        }
    }

    #[test]
    fn go_url_parsing_matches_net_url_on_its_edges() {
        assert_eq!(go_url("HTTP://x/y", true).unwrap(), "http");
        assert!(go_url("test", true).is_err());
        assert!(go_url("/abs/path", true).is_ok());
        assert!(go_url("http://[::1]:80/x", true).is_ok());
        assert!(go_url("http://host:8o/x", true).is_err());
        assert!(go_url("http://x/%zz", true).is_err());
        assert!(go_url("a:b/c", false).is_ok());
        assert!(go_url("ab/c:d", false).is_ok());
        assert!(go_url(":x", false).is_err());
        assert!(go_url("http://x\n", true).is_err());
    }

    #[test]
    fn every_other_rule_is_translated_faithfully() {
        let no_star = translate(r#"!self.contains("*")"#).unwrap();
        assert!(no_star(&json!("bar")).unwrap());
        assert!(!no_star(&json!("bar*")).unwrap());
        let keys_no_star = translate(r#"self.all(key, !key.contains("*"))"#).unwrap();
        assert!(!keys_no_star(&json!({"a*": "b"})).unwrap());
        let keys_nonempty = translate("self.all(key, key.size() != 0)").unwrap();
        assert!(!keys_nonempty(&json!({"": "b"})).unwrap());
        let empty = translate("self.size() == 0").unwrap();
        assert!(empty(&json!("")).unwrap());
        assert!(!empty(&json!("other")).unwrap());
        let env = translate(
            r#"(has(self.valueFrom) ? self.valueFrom : "") != "HOST"
              || !has(self.value)"#,
        )
        .unwrap();
        assert!(env(&json!({"name": "a", "valueFrom": "HOST"})).unwrap());
        assert!(env(&json!({"name": "a", "value": "x"})).unwrap());
        assert!(!env(&json!({"name": "a", "valueFrom": "HOST", "value": "x"})).unwrap());
        let one_of = translate("(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0)\n+ (has(self.targetRefs) ? 1 : 0) <= 1").unwrap();
        assert!(one_of(&json!({"selector": {}})).unwrap());
        assert!(!one_of(&json!({"selector": {}, "targetRefs": []})).unwrap());
    }

    #[test]
    fn an_unknown_rule_has_no_translation() {
        assert!(translate("self.size() < 10").is_none());
    }
}
