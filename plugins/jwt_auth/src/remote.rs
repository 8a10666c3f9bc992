//! Remote JWKS: fetched by one worker, published to all through shared data.
//!
//! Each Envoy worker runs its own VM, so without coordination every worker would fetch the JWKS
//! (and refetch it on every unknown `kid`). Instead, per remote provider, two shared-data keys:
//!
//! - `fetch/<provider>/<source hash>` — the small fetch record every worker reads on each tick:
//!   published version, when it was fetched, the **fetch lease** (until when one worker owns the
//!   fetch), consecutive failures, the earliest next attempt (backoff), and the last forced
//!   (unknown-`kid`) refetch.
//! - `jwks/<provider>/<source hash>` — the published document: version, then the JWKS JSON.
//!
//! A worker that finds a fetch due claims the lease by compare-and-swap on the record (the
//! [`update`] loop): exactly one worker wins and dispatches the HTTP call; the others see the lease
//! and wait. The lease expires on its own (`timeout` + 1 s) so a worker that never hears back
//! cannot block fetching for ever. On success the winner writes the document, then bumps the
//! record's version; every worker (the winner included) installs a version newer than its own on
//! its next tick. On failure (transport error, non-200, or a document without a usable key) the
//! winner records it with exponential backoff (1 s doubling to 5 min); the last good keys stay in
//! use meanwhile, however old.
//!
//! When a fetch is due: never fetched; or 80 % of `cache_duration` since the last good fetch
//! (refreshed before it expires); or a forced refetch (a token with an unknown `kid`), at most
//! once per `min_refetch_interval` across all workers. Backoff applies to all of them.
//!
//! Two keys per remote provider, ever: the key count is bounded by the config.

use crate::config::Remote;
use palisade_core::store::{update, KeyPrefix, Step, UpdateError, DEFAULT_MAX_ATTEMPTS};
use palisade_core::{SharedStore, Timestamp};
use std::time::Duration;

/// Longest backoff between failed fetches.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// First backoff after a failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How long past the fetch timeout a lease lasts.
pub const LEASE_SLACK: Duration = Duration::from_secs(1);

/// The shared fetch record of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FetchRecord {
    pub version: u64,
    pub fetched_at_ms: u64,
    pub lease_until_ms: u64,
    pub failures: u32,
    pub next_attempt_ms: u64,
    pub last_forced_ms: u64,
}

impl FetchRecord {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "1 {} {} {} {} {} {}",
            self.version,
            self.fetched_at_ms,
            self.lease_until_ms,
            self.failures,
            self.next_attempt_ms,
            self.last_forced_ms
        )
        .into_bytes()
    }

    /// An absent, empty or unreadable record reads as "never fetched".
    pub fn decode(bytes: &[u8]) -> FetchRecord {
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        let mut it = text.split(' ');
        if it.next() != Some("1") {
            return FetchRecord::default();
        }
        let mut n = || it.next().and_then(|x| x.parse::<u64>().ok());
        match (n(), n(), n(), n(), n(), n()) {
            (
                Some(version),
                Some(fetched_at_ms),
                Some(lease_until_ms),
                Some(failures),
                Some(next_attempt_ms),
                Some(last_forced_ms),
            ) => FetchRecord {
                version,
                fetched_at_ms,
                lease_until_ms,
                failures: u32::try_from(failures).unwrap_or(u32::MAX),
                next_attempt_ms,
                last_forced_ms,
            },
            _ => FetchRecord::default(),
        }
    }
}

/// Shared-data keys of one remote provider.
#[derive(Debug, Clone)]
pub struct Keys {
    pub record: String,
    pub document: String,
}

impl Keys {
    /// Keys relative to the plugin's [`KeyPrefix`] (`palisade/jwt_auth/<scope>/`), named after the
    /// provider and a hash of where its JWKS comes from (cluster, authority, path). A reload that
    /// keeps the source reuses the published set without a fetch; one that changes the source
    /// never installs the old source's keys. Each distinct source ever configured costs two keys.
    pub fn new(provider: &str, remote: &Remote) -> Keys {
        // The parts NUL-separated, so ("ab", "c") and ("a", "bc") are different sources.
        let parts = [&remote.cluster, &remote.authority, &remote.path];
        let joined: Vec<u8> = parts
            .iter()
            .flat_map(|p| p.bytes().chain(std::iter::once(0u8)))
            .collect();
        let source = palisade_core::hash::fnv1a64(&joined);
        Keys {
            record: format!("fetch/{provider}/{source:016x}"),
            document: format!("jwks/{provider}/{source:016x}"),
        }
    }

    /// The same keys with the full prefix, for logs.
    pub fn full(&self, prefix: &KeyPrefix) -> String {
        prefix.key(&self.document)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The backoff after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    FIRST_BACKOFF.saturating_mul(1u32 << exp).min(MAX_BACKOFF)
}

/// Whether a fetch is due under `record` at `now` (ignoring the lease).
pub fn due(record: &FetchRecord, remote: &Remote, now_ms: u64, force: bool) -> bool {
    if now_ms < record.next_attempt_ms {
        return false;
    }
    if record.version == 0 {
        return true;
    }
    let refresh_after = ms(remote.cache_duration) / 5 * 4;
    if now_ms >= record.fetched_at_ms.saturating_add(refresh_after) {
        return true;
    }
    force
        && (record.last_forced_ms == 0
            || now_ms
                >= record
                    .last_forced_ms
                    .saturating_add(ms(remote.min_refetch_interval)))
}

/// Try to become the worker that fetches. `Ok(true)`: dispatch the call now (and report back with
/// [`publish`] or [`record_failure`]). `force` asks for an unknown-`kid` refetch.
pub fn try_claim(
    store: &dyn SharedStore,
    keys: &Keys,
    remote: &Remote,
    now: Timestamp,
    force: bool,
) -> Result<bool, UpdateError> {
    let now_ms = now.as_millis();
    let done = update(store, &keys.record, DEFAULT_MAX_ATTEMPTS, |current| {
        let mut record = FetchRecord::decode(current);
        if record.lease_until_ms > now_ms || !due(&record, remote, now_ms, force) {
            return Step::Keep(false);
        }
        let forced_only = record.version != 0
            && now_ms
                < record
                    .fetched_at_ms
                    .saturating_add(ms(remote.cache_duration) / 5 * 4);
        if forced_only {
            record.last_forced_ms = now_ms;
        }
        record.lease_until_ms = now_ms.saturating_add(ms(remote.timeout + LEASE_SLACK));
        Step::Write(record.encode(), true)
    })?;
    Ok(done.output)
}

/// Publish a fetched document (already validated by the caller) and release the lease. Returns
/// the new version.
pub fn publish(
    store: &dyn SharedStore,
    keys: &Keys,
    json: &[u8],
    now: Timestamp,
) -> Result<u64, UpdateError> {
    let now_ms = now.as_millis();
    let current = FetchRecord::decode(&store.get(&keys.record).map_err(UpdateError::Store)?.value);
    let version = current.version + 1;
    let mut doc = format!("{version}\n").into_bytes();
    doc.extend_from_slice(json);
    update(store, &keys.document, DEFAULT_MAX_ATTEMPTS, |_| {
        Step::Write(doc.clone(), ())
    })?;
    update(store, &keys.record, DEFAULT_MAX_ATTEMPTS, |cur| {
        let mut record = FetchRecord::decode(cur);
        record.version = record.version.max(version);
        record.fetched_at_ms = now_ms;
        record.lease_until_ms = 0;
        record.failures = 0;
        record.next_attempt_ms = 0;
        Step::Write(record.encode(), ())
    })?;
    Ok(version)
}

/// Record a failed fetch: back off, keep the last good document, release the lease. Returns the
/// backoff applied.
pub fn record_failure(
    store: &dyn SharedStore,
    keys: &Keys,
    now: Timestamp,
) -> Result<Duration, UpdateError> {
    let now_ms = now.as_millis();
    let done = update(store, &keys.record, DEFAULT_MAX_ATTEMPTS, |cur| {
        let mut record = FetchRecord::decode(cur);
        record.failures = record.failures.saturating_add(1);
        let wait = backoff(record.failures);
        record.next_attempt_ms = now_ms.saturating_add(ms(wait));
        record.lease_until_ms = 0;
        Step::Write(record.encode(), wait)
    })?;
    Ok(done.output)
}

/// The published version, from the small record (what every worker reads on each tick).
pub fn published_version(store: &dyn SharedStore, keys: &Keys) -> u64 {
    store
        .get(&keys.record)
        .map(|v| FetchRecord::decode(&v.value).version)
        .unwrap_or(0)
}

/// The published document: its version and JWKS JSON.
pub fn read_document(store: &dyn SharedStore, keys: &Keys) -> Option<(u64, Vec<u8>)> {
    let value = store.get(&keys.document).ok()?.value;
    let newline = value.iter().position(|b| *b == b'\n')?;
    let version = std::str::from_utf8(&value[..newline]).ok()?.parse().ok()?;
    Some((version, value[newline + 1..].to_vec()))
}

/// Interpret an HTTP call's response: status and body → the JWKS bytes, or why not.
pub fn accept_response(status: Option<u16>, body: Option<Vec<u8>>) -> Result<Vec<u8>, String> {
    match status {
        None => Err("no response (reset or timeout)".to_owned()),
        Some(200) => {
            let body = body.unwrap_or_default();
            crate::jwks::KeySet::parse(&body, false).map_err(|e| e.to_string())?;
            Ok(body)
        }
        Some(s) => Err(format!("status {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys;
    use palisade_core::store::StoreError;
    use palisade_core::testing::FakeStore;

    fn remote() -> Remote {
        Remote {
            cluster: "idp".into(),
            authority: "idp".into(),
            path: "/jwks".into(),
            timeout: Duration::from_secs(5),
            cache_duration: Duration::from_secs(100),
            min_refetch_interval: Duration::from_secs(30),
        }
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// An empty store, the shared-data keys of [`remote`] under scope `p`, and [`remote`].
    fn fixture() -> (FakeStore, Keys, Remote) {
        (FakeStore::new(), Keys::new("p", &remote()), remote())
    }

    #[test]
    fn each_key_source_gets_its_own_shared_data_keys_and_the_same_source_the_same() {
        let base = Keys::new("p", &remote());
        assert_eq!(base.document, Keys::new("p", &remote()).document);
        let moved = |f: fn(&mut Remote)| {
            let mut r = remote();
            f(&mut r);
            Keys::new("p", &r)
        };
        // Moving a character from one part to the next is another source, not the same bytes.
        let shifted = moved(|r| {
            r.cluster = "idpi".into();
            r.authority = "dp".into();
        });
        for other in [
            shifted,
            moved(|r| r.path = "/jwks2".into()),
            Keys::new("q", &remote()),
        ] {
            assert_ne!(other.document, base.document);
            assert_ne!(other.record, base.record);
        }
    }

    #[test]
    fn exactly_one_worker_wins_the_first_fetch() {
        let (store, keys, r) = fixture();
        assert!(try_claim(&store, &keys, &r, at(1000), false).unwrap());
        for _ in 0..5 {
            assert!(!try_claim(&store, &keys, &r, at(1001), false).unwrap());
        }
    }

    #[test]
    fn two_workers_racing_for_the_lease_cannot_both_win() {
        let (store, keys, r) = fixture();
        // Another worker claims between our read and our write: our CAS fails, we re-read,
        // see its lease, and back off.
        let record = FetchRecord {
            lease_until_ms: 9_000,
            ..FetchRecord::default()
        };
        store.put(&keys.record, &record.encode());
        store.inject_conflicts(1);
        assert!(!try_claim(&store, &keys, &r, at(1000), false).unwrap());
    }

    #[test]
    fn an_expired_lease_can_be_taken_over() {
        let (store, keys, r) = fixture();
        assert!(try_claim(&store, &keys, &r, at(1000), false).unwrap());
        // The winner never reports back; after timeout + slack another worker takes over.
        assert!(!try_claim(&store, &keys, &r, at(6999), false).unwrap());
        assert!(try_claim(&store, &keys, &r, at(7000), false).unwrap());
    }

    #[test]
    fn a_published_document_is_readable_by_every_worker_and_refreshed_before_it_expires() {
        let (store, keys, r) = fixture();
        assert!(try_claim(&store, &keys, &r, at(0), false).unwrap());
        let v = publish(&store, &keys, testkeys::JWKS.as_bytes(), at(10)).unwrap();
        assert_eq!(v, 1);
        assert_eq!(published_version(&store, &keys), 1);
        let (version, json) = read_document(&store, &keys).unwrap();
        assert_eq!((version, json.as_slice()), (1, testkeys::JWKS.as_bytes()));
        // Not due before 80 % of cache_duration, due at it.
        assert!(!try_claim(&store, &keys, &r, at(80_009), false).unwrap());
        assert!(try_claim(&store, &keys, &r, at(80_010), false).unwrap());
        assert_eq!(
            publish(&store, &keys, testkeys::JWKS_ROTATED.as_bytes(), at(80_100)).unwrap(),
            2
        );
        assert_eq!(read_document(&store, &keys).unwrap().0, 2);
    }

    #[test]
    fn failures_back_off_exponentially_and_keep_the_last_document() {
        let (store, keys, r) = fixture();
        assert!(try_claim(&store, &keys, &r, at(0), false).unwrap());
        publish(&store, &keys, testkeys::JWKS.as_bytes(), at(0)).unwrap();
        let mut now = 80_000;
        for (i, want) in [1u64, 2, 4, 8].into_iter().enumerate() {
            assert!(
                try_claim(&store, &keys, &r, at(now), false).unwrap(),
                "attempt {i}"
            );
            assert_eq!(
                record_failure(&store, &keys, at(now)).unwrap(),
                Duration::from_secs(want)
            );
            assert!(!try_claim(&store, &keys, &r, at(now + want * 1000 - 1), false).unwrap());
            now += want * 1000;
        }
        assert_eq!(read_document(&store, &keys).unwrap().0, 1);
        assert_eq!(backoff(30), MAX_BACKOFF);
        // A success resets the backoff.
        assert!(try_claim(&store, &keys, &r, at(now), false).unwrap());
        publish(&store, &keys, testkeys::JWKS.as_bytes(), at(now)).unwrap();
        assert_eq!(
            FetchRecord::decode(&store.value(&keys.record).unwrap()).failures,
            0
        );
    }

    #[test]
    fn unknown_kid_refetches_are_rate_limited_across_workers() {
        let (store, keys, r) = fixture();
        assert!(try_claim(&store, &keys, &r, at(0), false).unwrap());
        publish(&store, &keys, testkeys::JWKS.as_bytes(), at(0)).unwrap();
        // Not due on its own; forced once.
        assert!(!try_claim(&store, &keys, &r, at(1000), false).unwrap());
        assert!(try_claim(&store, &keys, &r, at(1000), true).unwrap());
        publish(&store, &keys, testkeys::JWKS.as_bytes(), at(1100)).unwrap();
        // A flood of unknown kids within min_refetch_interval fetches nothing more.
        for t in (1200..31_000).step_by(500) {
            assert!(!try_claim(&store, &keys, &r, at(t), true).unwrap(), "t={t}");
        }
        assert!(try_claim(&store, &keys, &r, at(31_000), true).unwrap());
    }

    #[test]
    fn store_failures_are_reported_not_swallowed() {
        let store = FakeStore::new();
        store.fail_with(StoreError::Host("down".into()));
        assert!(try_claim(&store, &Keys::new("p", &remote()), &remote(), at(0), false).is_err());
        assert_eq!(published_version(&store, &Keys::new("p", &remote())), 0);
    }

    #[test]
    fn responses_are_accepted_only_as_200_with_a_usable_jwks() {
        assert!(accept_response(Some(200), Some(testkeys::JWKS.as_bytes().to_vec())).is_ok());
        assert!(accept_response(Some(500), Some(testkeys::JWKS.as_bytes().to_vec())).is_err());
        assert!(accept_response(None, None).is_err());
        assert!(accept_response(Some(200), Some(b"<html>".to_vec())).is_err());
        // A fetched JWKS never brings HMAC secrets.
        let oct = format!(
            r#"{{"keys":[{{"kty":"oct","k":"{}"}}]}}"#,
            testkeys::hmac_secret_b64()
        );
        assert!(accept_response(Some(200), Some(oct.into_bytes())).is_err());
    }

    #[test]
    fn a_changed_source_gets_its_own_keys() {
        let mut other = remote();
        other.path = "/other".into();
        assert_ne!(
            Keys::new("p", &remote()).record,
            Keys::new("p", &other).record
        );
        assert_eq!(
            Keys::new("p", &remote()).document,
            Keys::new("p", &remote()).document
        );
        assert!(Keys::new("p", &remote()).record.starts_with("fetch/p/"));
    }

    #[test]
    fn records_round_trip_and_garbage_reads_as_never_fetched() {
        let r = FetchRecord {
            version: 3,
            fetched_at_ms: 4,
            lease_until_ms: 5,
            failures: 6,
            next_attempt_ms: 7,
            last_forced_ms: 8,
        };
        assert_eq!(FetchRecord::decode(&r.encode()), r);
        assert_eq!(FetchRecord::decode(b"junk"), FetchRecord::default());
        assert_eq!(FetchRecord::decode(b""), FetchRecord::default());
    }
}
