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

    /// From the whole header map: the single-value hostcall gives only one value of a repeated
    /// header. Values that are not UTF-8 are kept (lossily), so they still count as a value.
    fn header_values(&self, name: &str) -> Vec<String> {
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
