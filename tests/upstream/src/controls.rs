//! Per-request controls: read from a request header or, failing that, from
//! the equivalent query parameter (see the crate docs for the table).

use std::time::Duration;

use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::StatusCode;

/// Upper bound for the requested delay.
const MAX_DELAY_MS: u64 = 60_000;

/// A control's header name and query parameter name.
struct Control {
    header: &'static str,
    query: &'static str,
}

const STATUS: Control = Control {
    header: "x-upstream-status",
    query: "upstream_status",
};
const DELAY_MS: Control = Control {
    header: "x-upstream-delay-ms",
    query: "upstream_delay_ms",
};
const RESET: Control = Control {
    header: "x-upstream-reset",
    query: "upstream_reset",
};
const HEADER: Control = Control {
    header: "x-upstream-header",
    query: "upstream_header",
};
const BODY: Control = Control {
    header: "x-upstream-body",
    query: "upstream_body",
};

/// What a request asked the upstream to do with its response.
#[derive(Debug)]
pub(crate) struct Controls {
    pub(crate) status: StatusCode,
    pub(crate) delay: Option<Duration>,
    pub(crate) reset: bool,
    /// Extra response headers, in request order.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// Replacement for the echo JSON body.
    pub(crate) body: Option<Bytes>,
}

impl Controls {
    /// Parses the controls of a request; `Err` holds a message for a 400.
    pub(crate) fn parse(headers: &HeaderMap, query: &[(String, String)]) -> Result<Self, String> {
        let status = match single(headers, query, &STATUS) {
            Some(raw) => parse_status(&raw)?,
            None => StatusCode::OK,
        };
        let delay = single(headers, query, &DELAY_MS)
            .map(|raw| parse_delay(&raw))
            .transpose()?;
        let reset = match single(headers, query, &RESET) {
            Some(raw) => parse_flag(&raw, RESET.header)?,
            None => false,
        };
        let mut extra_headers = Vec::new();
        for raw in all(headers, query, &HEADER) {
            extra_headers.extend(parse_header_list(&raw)?);
        }
        let body = single(headers, query, &BODY).map(Bytes::from);
        Ok(Controls {
            status,
            delay,
            reset,
            headers: extra_headers,
            body,
        })
    }
}

/// The control's header value if present, else its (last) query value.
fn single(headers: &HeaderMap, query: &[(String, String)], control: &Control) -> Option<Vec<u8>> {
    if let Some(value) = headers.get(control.header) {
        return Some(value.as_bytes().to_vec());
    }
    query
        .iter()
        .rev()
        .find(|(name, _)| name == control.query)
        .map(|(_, value)| value.clone().into_bytes())
}

/// All the control's header values if any, else all its query values.
fn all(headers: &HeaderMap, query: &[(String, String)], control: &Control) -> Vec<Vec<u8>> {
    let from_headers: Vec<Vec<u8>> = headers
        .get_all(control.header)
        .iter()
        .map(|value| value.as_bytes().to_vec())
        .collect();
    if !from_headers.is_empty() {
        return from_headers;
    }
    query
        .iter()
        .filter(|(name, _)| name == control.query)
        .map(|(_, value)| value.clone().into_bytes())
        .collect()
}

fn text<'a>(raw: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(raw)
        .map(str::trim)
        .map_err(|_| format!("{what}: value is not valid UTF-8"))
}

fn parse_status(raw: &[u8]) -> Result<StatusCode, String> {
    let value = text(raw, STATUS.header)?;
    value
        .parse::<u16>()
        .ok()
        .filter(|code| (200..=999).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| {
            format!(
                "{}: expected a status in 200..=999, got {value:?}",
                STATUS.header
            )
        })
}

fn parse_delay(raw: &[u8]) -> Result<Duration, String> {
    let value = text(raw, DELAY_MS.header)?;
    let ms = value.parse::<u64>().map_err(|_| {
        format!(
            "{}: expected milliseconds as an integer, got {value:?}",
            DELAY_MS.header
        )
    })?;
    Ok(Duration::from_millis(ms.min(MAX_DELAY_MS)))
}

fn parse_flag(raw: &[u8], what: &str) -> Result<bool, String> {
    let value = text(raw, what)?;
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{what}: expected 1/true or 0/false, got {value:?}")),
    }
}

/// Parses `name=value` items separated by commas (values cannot contain
/// commas).
fn parse_header_list(raw: &[u8]) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let list = text(raw, HEADER.header)?;
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(parse_header_item)
        .collect()
}

fn parse_header_item(item: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = item
        .split_once('=')
        .ok_or_else(|| format!("{}: expected name=value, got {item:?}", HEADER.header))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{}: invalid header name in {item:?}", HEADER.header))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("{}: invalid header value in {item:?}", HEADER.header))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_when_nothing_is_asked() {
        let c = Controls::parse(&HeaderMap::new(), &[]).unwrap();
        assert_eq!(c.status, StatusCode::OK);
        assert_eq!(c.delay, None);
        assert!(!c.reset);
        assert!(c.headers.is_empty());
        assert_eq!(c.body, None);
    }

    #[test]
    fn header_wins_over_query() {
        let c = Controls::parse(
            &headers(&[("x-upstream-status", "503")]),
            &query(&[("upstream_status", "404")]),
        )
        .unwrap();
        assert_eq!(c.status, StatusCode::SERVICE_UNAVAILABLE);
        let c = Controls::parse(&HeaderMap::new(), &query(&[("upstream_status", "404")])).unwrap();
        assert_eq!(c.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn delay_is_clamped() {
        let c = Controls::parse(&headers(&[("x-upstream-delay-ms", "999999")]), &[]).unwrap();
        assert_eq!(c.delay, Some(Duration::from_millis(MAX_DELAY_MS)));
    }

    #[test]
    fn header_list_repeats_and_commas() {
        let c = Controls::parse(
            &headers(&[
                ("x-upstream-header", "a=1, B = 2"),
                ("x-upstream-header", "c=x=y"),
            ]),
            &[],
        )
        .unwrap();
        let got: Vec<(String, String)> = c
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(got, query(&[("a", "1"), ("b", "2"), ("c", "x=y")]));
    }

    #[test]
    fn invalid_values_are_rejected() {
        for (name, value) in [
            ("x-upstream-status", "abc"),
            ("x-upstream-status", "99"),
            ("x-upstream-status", "1000"),
            ("x-upstream-delay-ms", "-1"),
            ("x-upstream-reset", "maybe"),
            ("x-upstream-header", "novalue"),
            ("x-upstream-header", "bad name=1"),
        ] {
            let result = Controls::parse(&headers(&[(name, value)]), &[]);
            assert!(result.is_err(), "{name}: {value} should be rejected");
        }
    }
}
