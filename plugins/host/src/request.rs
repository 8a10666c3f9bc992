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
