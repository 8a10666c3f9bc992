//! Shared state behind a small trait, updated with compare-and-swap.
//!
//! Every Envoy worker runs its own Wasm VM, so anything that must be exact across workers (token
//! buckets, breaker state, in-flight counts) lives in the host's shared data and is changed with
//! read → compute → compare-and-swap, retried a bounded number of times. [`update`] is that loop,
//! written once; policies only supply the pure "compute" step. When the retries run out the caller
//! gets [`UpdateError::Exhausted`] and applies its documented failure mode — it never spins.

use std::fmt;

/// The version of a stored value, as read; writing with it succeeds only if nobody wrote since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The key has never been written. A write with this version succeeds only if the key is
    /// still absent, so two workers racing to create a key cannot both win.
    Absent,
    /// The key exists with this CAS token.
    Cas(u32),
}

/// A value read from the store with its version. An absent key reads as an empty value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: Version,
}

impl Versioned {
    /// What every store reads for a key never written: an empty value, [`Version::Absent`].
    pub fn absent() -> Self {
        Versioned {
            value: Vec::new(),
            version: Version::Absent,
        }
    }

    /// A written key's value, with its CAS token.
    pub fn stored(value: Vec<u8>, cas: u32) -> Self {
        Versioned {
            value,
            version: Version::Cas(cas),
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Someone else wrote the key since it was read.
    CasMismatch,
    /// The host refused the operation for another reason (named, for logs).
    Host(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CasMismatch => f.write_str("compare-and-swap conflict"),
            StoreError::Host(reason) => write!(f, "shared data unavailable: {reason}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A key-value store shared by every worker, with compare-and-swap writes.
pub trait SharedStore {
    /// Read a key. Absent keys read as an empty value with [`Version::Absent`].
    fn get(&self, key: &str) -> Result<Versioned, StoreError>;

    /// Write `value` if the key is still at `expected`; otherwise [`StoreError::CasMismatch`].
    fn compare_and_swap(
        &self,
        key: &str,
        value: &[u8],
        expected: Version,
    ) -> Result<(), StoreError>;
}

/// What the compute step of an [`update`] wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// Write this new value (if the version still matches) and return `T`.
    Write(Vec<u8>, T),
    /// Write nothing and return `T` (for example: a read-only check, or nothing changed).
    Keep(T),
}

/// The result of a successful [`update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated<T> {
    pub output: T,
    /// How many CAS conflicts were retried on the way; worth a metric.
    pub conflicts: u32,
}

/// Why an [`update`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt lost a CAS race; the caller applies its failure mode.
    Exhausted { attempts: u32 },
    /// The store failed for a reason other than a conflict.
    Store(StoreError),
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::Exhausted { attempts } => {
                write!(f, "gave up after {attempts} compare-and-swap conflicts")
            }
            UpdateError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for UpdateError {}

/// Default bound on attempts: enough to ride out contention between a handful of workers on one
/// hot key, small enough that a pathological case costs microseconds, not a stall.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// Read-modify-write `key` with compare-and-swap, at most `max_attempts` times.
///
/// `compute` sees the current value (empty if absent) and may be called once per attempt, so it
/// must be pure: no side effects other than what it returns.
pub fn update<S, T, F>(
    store: &S,
    key: &str,
    max_attempts: u32,
    mut compute: F,
) -> Result<Updated<T>, UpdateError>
where
    S: SharedStore + ?Sized,
    F: FnMut(&[u8]) -> Step<T>,
{
    let attempts = max_attempts.max(1);
    for attempt in 0..attempts {
        let current = store.get(key).map_err(UpdateError::Store)?;
        match compute(&current.value) {
            Step::Keep(output) => {
                return Ok(Updated {
                    output,
                    conflicts: attempt,
                })
            }
            Step::Write(value, output) => {
                match store.compare_and_swap(key, &value, current.version) {
                    Ok(()) => {
                        return Ok(Updated {
                            output,
                            conflicts: attempt,
                        })
                    }
                    Err(StoreError::CasMismatch) => continue,
                    Err(other) => return Err(UpdateError::Store(other)),
                }
            }
        }
    }
    Err(UpdateError::Exhausted { attempts })
}

/// A per-plugin, per-config namespace for keys.
///
/// Istio never sets `vm_id`, so every plugin on a proxy shares one shared-data namespace; keys are
/// prefixed with `palisade/<plugin>/<scope>/` so plugins, and configs of one plugin, never collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// `scope` distinguishes configurations (for example a hash of the config, or a name the
    /// operator chose) so two filter instances of one plugin keep separate state.
    pub fn new(plugin: &str, scope: &str) -> Self {
        KeyPrefix(format!("palisade/{plugin}/{scope}/"))
    }

    pub fn key(&self, suffix: &str) -> String {
        let mut k = String::with_capacity(self.0.len() + suffix.len());
        k.push_str(&self.0);
        k.push_str(suffix);
        k
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeStore;

    fn increment(current: &[u8]) -> Step<u64> {
        let n = std::str::from_utf8(current)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        Step::Write(n.to_string().into_bytes(), n)
    }

    /// A store holding `value` at `k`, whose next `conflicts` compare-and-swaps lose a race.
    fn contended(value: &[u8], conflicts: u32) -> FakeStore {
        let store = FakeStore::new();
        store.put("k", value);
        store.inject_conflicts(conflicts);
        store
    }

    #[test]
    fn update_creates_an_absent_key() {
        let store = FakeStore::new();
        let done = update(&store, "k", 3, increment).unwrap();
        assert_eq!(
            done,
            Updated {
                output: 1,
                conflicts: 0
            }
        );
        assert_eq!(store.value("k").unwrap(), b"1");
    }

    #[test]
    fn update_retries_after_conflicts_and_sees_the_competing_write() {
        // Another worker increments twice while we compute: both our first attempts lose.
        let store = contended(b"10", 2);
        let done = update(&store, "k", 5, increment).unwrap();
        assert_eq!(done.conflicts, 2);
        assert_eq!(done.output, 11);
        assert_eq!(store.value("k").unwrap(), b"11");
    }

    #[test]
    fn update_gives_up_after_the_bound_without_writing() {
        let store = contended(b"7", 3);
        let err = update(&store, "k", 3, increment).unwrap_err();
        assert_eq!(err, UpdateError::Exhausted { attempts: 3 });
        assert_eq!(store.value("k").unwrap(), b"7");
        assert_eq!(store.sets_attempted(), 3);
    }

    #[test]
    fn zero_max_attempts_still_tries_once() {
        let store = FakeStore::new();
        assert_eq!(update(&store, "k", 0, increment).unwrap().output, 1);
    }

    #[test]
    fn keep_writes_nothing() {
        let store = FakeStore::new();
        store.put("k", b"5");
        let done = update(&store, "k", 3, |v: &[u8]| Step::Keep(v.to_vec())).unwrap();
        assert_eq!(done.output, b"5");
        assert_eq!(store.sets_attempted(), 0);
    }

    #[test]
    fn two_creators_cannot_both_win() {
        let store = FakeStore::new();
        let first = store.get("k").unwrap();
        let second = store.get("k").unwrap();
        assert_eq!(first.version, Version::Absent);
        store.compare_and_swap("k", b"a", first.version).unwrap();
        assert_eq!(
            store.compare_and_swap("k", b"b", second.version),
            Err(StoreError::CasMismatch)
        );
        assert_eq!(store.value("k").unwrap(), b"a");
    }

    #[test]
    fn host_errors_are_not_retried() {
        let store = FakeStore::new();
        store.fail_with(StoreError::Host("BadArgument".into()));
        let err = update(&store, "k", 5, increment).unwrap_err();
        assert_eq!(
            err,
            UpdateError::Store(StoreError::Host("BadArgument".into()))
        );
    }

    #[test]
    fn concurrent_updates_through_the_loop_are_exact() {
        use std::sync::Arc;
        let store = Arc::new(FakeStore::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let mut exhausted = 0u64;
                    for _ in 0..500 {
                        if update(&*store, "k", u32::MAX, increment).is_err() {
                            exhausted += 1;
                        }
                    }
                    exhausted
                })
            })
            .collect();
        let exhausted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(exhausted, 0);
        assert_eq!(store.value("k").unwrap(), b"2000");
    }

    #[test]
    fn prefixes_namespace_keys_per_plugin_and_scope() {
        let a = KeyPrefix::new("rate_limit", "cfg1");
        let b = KeyPrefix::new("bulkhead", "cfg1");
        assert_eq!(a.key("bucket/7"), "palisade/rate_limit/cfg1/bucket/7");
        assert_ne!(a.key("x"), b.key("x"));
    }
}
