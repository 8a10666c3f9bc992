//! The verified-token cache: a repeated token costs a keyed hash and a map lookup, not an RSA
//! verification.
//!
//! - **Per worker.** Each Envoy worker's VM has its own cache (a Rust value, not shared data):
//!   sharing would cost a shared-data copy of the claims per request and a CAS per insert, about
//!   what it saves, and a token verified on one worker is verified again at most once per worker.
//! - **Keyed by a secret-keyed hash.** The key is SipHash-2-4-128 of the whole token under a
//!   random key drawn once per VM (WASI `random_get`), so the cache holds no token text, and two
//!   spellings of a token cannot share an entry (non-canonical encodings are rejected anyway).
//!   SipHash is a pseudo-random function: without the VM's key, a token made to land on the
//!   entry of another, valid one has one chance in 2^128 per try, and the key never leaves the
//!   VM. It replaced the SHA-256 of the token, which costs about ten times as much in the VM (no
//!   SHA instructions in Wasm) and was most of what a cached request added (BENCHMARKS.md).
//!   A collision-resistant hash is not needed where nobody can compute the hash offline.
//! - **No randomness, no cache.** If the VM cannot draw a key, the cache stays empty (every token
//!   is verified) rather than fall back to a key an attacker could know; the glue logs it.
//! - **Entries expire with the token**: an entry is valid until the token's `exp` plus the clock
//!   skew — the instant verification would start saying `expired` — and never longer than
//!   [`MAX_TTL_SECS`] (tokens without `exp`, when allowed, are re-verified every five minutes).
//! - **Bounded**: at most `capacity` entries; the oldest insertion is evicted first.
//! - **Tied to the key set**: an entry records the version of the key set that verified it; after a
//!   rotation the token is verified again against the new keys.
//!
//! Only the provider-level verdict is cached (signature, time, issuer, audience). Rule-level claim
//! checks run on every request: they differ per route and cost microseconds.

use serde_json::{Map, Value};
use siphasher::sip128::SipHasher24;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Longest an entry lives, whatever the token's `exp`.
pub const MAX_TTL_SECS: u64 = 300;

pub type CacheKey = [u8; 16];

/// A verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub provider: usize,
    pub keys_version: u64,
    /// Unix seconds from which the entry is no longer valid.
    pub valid_until: u64,
    pub claims: Rc<Map<String, Value>>,
    pub payload_b64: Rc<str>,
}

pub struct TokenCache {
    capacity: usize,
    map: HashMap<CacheKey, Entry>,
    order: VecDeque<CacheKey>,
    /// The secret key of [`TokenCache::key`]; `None` when none could be drawn (caching off).
    hasher: Option<SipHasher24>,
}

impl std::fmt::Debug for TokenCache {
    // By hand: the hasher's key must not reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .field("len", &self.map.len())
            .field("keyed", &self.hasher.is_some())
            .finish()
    }
}

impl TokenCache {
    /// A cache of at most `capacity` entries; 0 disables caching. Its hash key is drawn from the
    /// VM's random source; without one the cache caches nothing ([`TokenCache::is_keyed`]).
    pub fn new(capacity: usize) -> Self {
        let mut key = [0u8; 16];
        let keyed = capacity > 0 && getrandom::fill(&mut key).is_ok();
        Self::build(capacity, keyed.then_some(key))
    }

    /// A cache hashing with the given key: for tests, which need keys they can predict.
    pub fn with_key(capacity: usize, key: [u8; 16]) -> Self {
        Self::build(capacity, Some(key))
    }

    fn build(capacity: usize, key: Option<[u8; 16]>) -> Self {
        let hasher = key.map(|k| {
            let (k0, k1) = k.split_at(8);
            let word = |b: &[u8]| b.try_into().map(u64::from_le_bytes).unwrap_or(0);
            SipHasher24::new_with_keys(word(k0), word(k1))
        });
        TokenCache {
            capacity: if hasher.is_some() { capacity } else { 0 },
            map: HashMap::new(),
            order: VecDeque::new(),
            hasher,
        }
    }

    /// False when a cache was asked for but no key could be drawn, so nothing is cached.
    pub fn is_keyed(&self) -> bool {
        self.hasher.is_some()
    }

    /// The cache's key for `token` (all zeros when the cache is off: nothing is stored then).
    pub fn key(&self, token: &str) -> CacheKey {
        self.hasher
            .as_ref()
            .map_or([0; 16], |h| h.hash(token.as_bytes()).as_bytes())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry for `key` if it is still valid at `now_secs` (an expired one is dropped).
    pub fn get(&mut self, key: &CacheKey, now_secs: u64) -> Option<&Entry> {
        let expired = self.map.get(key)?.valid_until <= now_secs;
        if expired {
            self.map.remove(key);
            return None;
        }
        self.map.get(key)
    }

    /// Insert a verified token. `exp_deadline` is when verification would say `expired`
    /// (`exp` + skew), if the token has an `exp`.
    pub fn insert(
        &mut self,
        key: CacheKey,
        mut entry: Entry,
        exp_deadline: Option<u64>,
        now_secs: u64,
    ) {
        if self.capacity == 0 {
            return;
        }
        let cap = now_secs.saturating_add(MAX_TTL_SECS);
        entry.valid_until = exp_deadline.map_or(cap, |d| d.min(cap));
        if entry.valid_until <= now_secs {
            return;
        }
        if self.map.insert(key, entry).is_some() {
            return; // replaced in place; its age is unchanged
        }
        self.order.push_back(key);
        while self.map.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        // Keys dropped on expiry stay in `order`; compact before it outgrows the bound.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            provider: 0,
            keys_version: 1,
            valid_until: 0,
            claims: Rc::new(Map::new()),
            payload_b64: Rc::from("e30"),
        }
    }

    /// A cache of `capacity` into which the token `t`, expiring at `exp`, went at time 1000.
    fn holding_t(capacity: usize, exp: Option<u64>) -> (TokenCache, CacheKey) {
        let mut c = TokenCache::new(capacity);
        let k = c.key("t");
        c.insert(k, entry(), exp, 1000);
        (c, k)
    }

    #[test]
    fn an_entry_expires_with_its_token() {
        let (mut c, k) = holding_t(10, Some(1060));
        assert!(c.get(&k, 1059).is_some());
        assert!(c.get(&k, 1060).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn tokens_without_exp_live_at_most_the_ttl() {
        let (mut c, k) = holding_t(10, None);
        assert!(c.get(&k, 1000 + MAX_TTL_SECS - 1).is_some());
        assert!(c.get(&k, 1000 + MAX_TTL_SECS).is_none());
        c.insert(k, entry(), Some(u64::MAX), 1000);
        assert_eq!(c.get(&k, 1000).unwrap().valid_until, 1000 + MAX_TTL_SECS);
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_oldest() {
        let mut c = TokenCache::new(3);
        let keys: Vec<CacheKey> = (0..5).map(|i| c.key(&i.to_string())).collect();
        for k in &keys {
            c.insert(*k, entry(), Some(5000), 1000);
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&keys[0], 1000).is_none());
        assert!(c.get(&keys[1], 1000).is_none());
        assert!(c.get(&keys[4], 1000).is_some());
    }

    #[test]
    fn bookkeeping_stays_bounded_when_entries_expire_instead_of_being_evicted() {
        let mut c = TokenCache::new(2);
        for i in 0..1000u64 {
            let k = c.key(&i.to_string());
            c.insert(k, entry(), Some(i + 1), i);
            assert!(c.get(&k, i + 1).is_none());
        }
        assert!(c.order.len() <= 4);
    }

    #[test]
    fn a_zero_capacity_cache_caches_nothing() {
        let (mut c, k) = holding_t(0, Some(5000));
        assert!(c.get(&k, 1000).is_none());
    }

    #[test]
    fn already_expired_tokens_are_not_inserted() {
        let mut c = TokenCache::new(2);
        let k = c.key("t");
        c.insert(k, entry(), Some(900), 1000);
        assert!(c.is_empty());
    }

    #[test]
    fn the_key_depends_on_the_whole_token_and_on_the_vms_secret() {
        let c = TokenCache::with_key(4, *b"0123456789abcdef");
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";
        assert_eq!(c.key(token), c.key(token));
        // Any one byte changed anywhere in the token moves the key.
        for i in 0..token.len() {
            let mut other = token.as_bytes().to_vec();
            other[i] ^= 1;
            let other = String::from_utf8(other).unwrap();
            assert_ne!(c.key(token), c.key(&other), "byte {i} changed");
        }
        assert_ne!(c.key(token), c.key(&token[..token.len() - 1]));
        // Another VM (another secret) files the same token under another key.
        let d = TokenCache::with_key(4, *b"fedcba9876543210");
        assert_ne!(c.key(token), d.key(token));
    }

    #[test]
    fn two_caches_draw_different_secrets() {
        let (a, b) = (TokenCache::new(4), TokenCache::new(4));
        assert!(a.is_keyed() && b.is_keyed());
        assert_ne!(a.key("t"), b.key("t"));
    }

    #[test]
    fn the_debug_form_shows_no_key() {
        let c = TokenCache::with_key(4, *b"0123456789abcdef");
        let shown = format!("{c:?}");
        assert!(!shown.contains("k0") && !shown.contains("0123"), "{shown}");
        assert!(shown.contains("keyed: true"), "{shown}");
    }
}
