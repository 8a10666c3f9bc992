//! Fakes for unit tests of policies: a shared store that can inject CAS conflicts, and a request.
//!
//! They are compiled into the library (not behind `cfg(test)`) so every plugin crate's tests can
//! use them; they are small and never reached from the Wasm glue.

use crate::key::RequestView;
use crate::store::{SharedStore, StoreError, Version, Versioned};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Inner {
    data: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    conflicts_to_inject: u32,
    fail_with: Option<StoreError>,
    sets_attempted: u64,
}

impl Inner {
    fn bump(&mut self) -> u32 {
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.next_cas
    }
}

/// An in-memory [`SharedStore`] with exact CAS semantics (thread-safe, so it also serves for
/// multi-threaded exactness tests), plus fault injection.
#[derive(Debug, Default)]
pub struct FakeStore {
    inner: Mutex<Inner>,
}

impl FakeStore {
    pub fn new() -> Self {
        FakeStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Write unconditionally, as another worker would.
    pub fn put(&self, key: &str, value: &[u8]) {
        let mut inner = self.lock();
        let cas = inner.bump();
        inner.data.insert(key.to_owned(), (value.to_vec(), cas));
    }

    /// The stored value, if the key exists.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().data.get(key).map(|(v, _)| v.clone())
    }

    /// The next `n` compare-and-swaps lose a race: just before each, a competing writer rewrites
    /// the key (same value, new version), so the caller's version is genuinely stale.
    pub fn inject_conflicts(&self, n: u32) {
        self.lock().conflicts_to_inject = n;
    }

    /// Every following operation fails with `err` (a host outage).
    pub fn fail_with(&self, err: StoreError) {
        self.lock().fail_with = Some(err);
    }

    /// How many compare-and-swaps were attempted, successful or not.
    pub fn sets_attempted(&self) -> u64 {
        self.lock().sets_attempted
    }

    /// Number of keys ever written (the host never frees keys, so this is the memory bound).
    pub fn key_count(&self) -> usize {
        self.lock().data.len()
    }
}

impl SharedStore for FakeStore {
    fn get(&self, key: &str) -> Result<Versioned, StoreError> {
        let inner = self.lock();
        if let Some(err) = &inner.fail_with {
            return Err(err.clone());
        }
        Ok(match inner.data.get(key) {
            Some((value, cas)) => Versioned::stored(value.clone(), *cas),
            None => Versioned::absent(),
        })
    }

    fn compare_and_swap(
        &self,
        key: &str,
        value: &[u8],
        expected: Version,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(err) = &inner.fail_with {
            return Err(err.clone());
        }
        inner.sets_attempted += 1;
        if inner.conflicts_to_inject > 0 {
            inner.conflicts_to_inject -= 1;
            let cas = inner.bump();
            let competing = inner
                .data
                .get(key)
                .map(|(v, _)| v.clone())
                .unwrap_or_default();
            inner.data.insert(key.to_owned(), (competing, cas));
        }
        let current = inner.data.get(key).map(|(_, cas)| *cas);
        let matches = match (expected, current) {
            (Version::Absent, None) => true,
            (Version::Cas(want), Some(have)) => want == have,
            _ => false,
        };
        if !matches {
            return Err(StoreError::CasMismatch);
        }
        let cas = inner.bump();
        inner.data.insert(key.to_owned(), (value.to_vec(), cas));
        Ok(())
    }
}

/// A request for key-extraction and policy tests.
#[derive(Debug, Clone, Default)]
pub struct FakeRequest {
    pub headers: Vec<(String, String)>,
    pub path: String,
    pub method: String,
    pub source_address: Option<String>,
    pub route_name: Option<String>,
    /// The upstream cluster the request was routed to (`xds.cluster_name`), for policies that key
    /// on it.
    pub cluster_name: Option<String>,
}

impl FakeRequest {
    pub fn new(method: &str, path: &str) -> Self {
        FakeRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            ..FakeRequest::default()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    pub fn source(mut self, addr: &str) -> Self {
        self.source_address = Some(addr.to_owned());
        self
    }

    pub fn cluster(mut self, name: &str) -> Self {
        self.cluster_name = Some(name.to_owned());
        self
    }

    pub fn route(mut self, name: &str) -> Self {
        self.route_name = Some(name.to_owned());
        self
    }
}

/// As Envoy's `getHeaderMapValue` (and [`crate::fake_host::FakeHost`]): the first value of a
/// repeated header, except `authorization`, an inline header whose lines Envoy joins into one value
/// with `,`. [`RequestView::header_values`] gives every line.
impl RequestView for FakeRequest {
    fn header(&self, name: &str) -> Option<String> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        if name.eq_ignore_ascii_case("authorization") {
            let joined: Vec<&str> = values.collect();
            return (!joined.is_empty()).then(|| joined.join(","));
        }
        values.next().map(str::to_owned)
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn path(&self) -> Option<String> {
        Some(self.path.clone())
    }

    fn method(&self) -> Option<String> {
        Some(self.method.clone())
    }

    fn source_address(&self) -> Option<String> {
        self.source_address.clone()
    }

    fn route_name(&self) -> Option<String> {
        self.route_name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_header_reads_as_its_first_value_as_in_envoy() {
        let req = FakeRequest::new("GET", "/")
            .header("x-tenant", "a")
            .header("X-Tenant", "b");
        assert_eq!(RequestView::header(&req, "x-tenant").as_deref(), Some("a"));
        assert_eq!(req.header_values("x-tenant"), vec!["a", "b"]);
        assert_eq!(RequestView::header(&req, "x-absent"), None);
        assert!(req.header_values("x-absent").is_empty());
    }

    #[test]
    fn repeated_authorization_lines_read_joined_with_a_comma_as_in_envoy() {
        let req = FakeRequest::new("GET", "/")
            .header("authorization", "Bearer a")
            .header("Authorization", "Bearer b");
        assert_eq!(
            RequestView::header(&req, "authorization").as_deref(),
            Some("Bearer a,Bearer b")
        );
        assert_eq!(
            req.header_values("authorization"),
            vec!["Bearer a", "Bearer b"]
        );
        let one = FakeRequest::new("GET", "/").header("authorization", "Bearer a");
        assert_eq!(
            RequestView::header(&one, "authorization").as_deref(),
            Some("Bearer a")
        );
    }
}
