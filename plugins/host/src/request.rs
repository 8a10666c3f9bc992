//! [`RequestView`] over the current stream's headers and properties.
//!
//! Every accessor is a hostcall made on demand, so a policy pays only for the parts it uses.
//! Must only be used from within an HTTP context callback (the host knows the current stream).

use crate::http;
use palisade_core::key::RequestView;

/// The request of the HTTP stream currently being processed.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostRequest;

impl RequestView for HostRequest {
    fn header(&self, name: &str) -> Option<String> {
        http::request_header(name).ok().flatten()
    }

    /// From the whole header map: the single-value hostcall gives only the first value of a
    /// repeated header. Values that are not UTF-8 are kept (lossily), so they still count.
    ///
    /// Except `authorization`, the hot path of every token check: Envoy keeps it as an inline
    /// header and joins repeated lines into one value with `,`, so the single-value hostcall
    /// already has all of them, and reading the whole map would cost about 1 µs per request
    /// (measured with the bench's jwt_auth_cached case). The jwt_auth end-to-end tests check
    /// both paths (two `Authorization` lines, two lines of a custom header: 400).
    fn header_values(&self, name: &str) -> Vec<String> {
        if name == "authorization" {
            return self.header(name).into_iter().collect();
        }
        crate::header_map::request_headers()
            .map(|all| {
                all.into_iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
                    .collect()
            })
            .unwrap_or_else(|_| self.header(name).into_iter().collect())
    }

    fn path(&self) -> Option<String> {
        http::request_header(":path").ok().flatten()
    }

    fn method(&self) -> Option<String> {
        http::request_header(":method").ok().flatten()
    }

    fn source_address(&self) -> Option<String> {
        http::property_string(&["source", "address"]).ok().flatten()
    }

    fn route_name(&self) -> Option<String> {
        http::property_string(&["xds", "route_name"]).ok().flatten()
    }
}
