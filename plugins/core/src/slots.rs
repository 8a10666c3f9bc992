//! A bounded table of shared-data slots, for state keyed by values that come from requests.
//!
//! Envoy never frees shared-data keys, and a key taken from a request (a client IP, a header) has
//! as many values as an attacker cares to send. A rule therefore owns a fixed table of `size`
//! slots: a key is hashed (FNV-1a, stable across builds and workers) to a slot, whose shared-data
//! key is the table's prefix and the slot's number. The slot's value remembers the hash of the key
//! that owns it ([`claim`]): the same key finds its own state; another key takes the slot over
//! when the state there is idle (indistinguishable from fresh, so nothing is lost), and otherwise
//! *shares* it until it is idle again — the conservative overflow, counted as a collision by the
//! plugin. So a rule writes at most `size` shared-data keys, ever.
//!
//! Used by `rate_limit` (buckets) and `circuit_breaker` (breakers).

use crate::hash::fnv1a64;

/// One rule's table: the shared-data key prefix of its slots and how many there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    prefix: String,
    size: u64,
}

/// Where a key lands: its hash (the owner fingerprint to store), the slot's number and its
/// shared-data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub hash: u64,
    pub index: u64,
    pub store_key: String,
}

impl SlotTable {
    /// A table of `size` slots (at least one) under `prefix`. The prefix should spell out
    /// whatever changes the meaning of a slot's bytes (and `size`, which changes which key lands
    /// where), so that a config change starts from fresh state instead of misreading old bytes.
    pub fn new(prefix: String, size: u64) -> Self {
        SlotTable {
            prefix,
            size: size.max(1),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The slot `key` lands in.
    pub fn slot(&self, key: &str) -> Slot {
        let hash = fnv1a64(key.as_bytes());
        let index = hash % self.size;
        Slot {
            hash,
            index,
            store_key: format!("{}{index}", self.prefix),
        }
    }
}

/// What a key finds in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The slot is this key's own.
    Own,
    /// Another key owned it, but its state is idle: this key takes the slot over, from fresh
    /// state.
    TakeOver,
    /// Another key owns it and its state is in use: the two keys share it (a collision).
    Share,
}

/// The claim of the key hashed to `hash` on a slot owned by `owner`; `idle` is asked only when
/// another key owns it.
pub fn claim(owner: u64, hash: u64, idle: impl FnOnce() -> bool) -> Claim {
    if owner == hash {
        Claim::Own
    } else if idle() {
        Claim::TakeOver
    } else {
        Claim::Share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_lands_in_the_same_slot_under_the_tables_prefix() {
        let t = SlotTable::new("api/10-1-1000ms/k4/".into(), 4);
        let a = t.slot("3:abc");
        assert_eq!(a, t.slot("3:abc"));
        assert_eq!(a.hash, fnv1a64(b"3:abc"));
        assert_eq!(a.index, a.hash % 4);
        assert_eq!(a.store_key, format!("api/10-1-1000ms/k4/{}", a.index));
    }

    #[test]
    fn keys_spread_over_every_slot_and_never_beyond() {
        let t = SlotTable::new("p/".into(), 8);
        let mut seen = [false; 8];
        for i in 0..200 {
            let s = t.slot(&format!("client-{i}"));
            assert!(s.index < 8);
            seen[usize::try_from(s.index).unwrap()] = true;
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
    }

    #[test]
    fn a_table_has_at_least_one_slot() {
        let t = SlotTable::new("p/".into(), 0);
        assert_eq!(t.size(), 1);
        assert_eq!(t.slot("x").store_key, "p/0");
    }

    #[test]
    fn an_owner_keeps_its_slot_an_idle_one_is_taken_over_a_busy_one_shared() {
        assert_eq!(
            claim(7, 7, || panic!("not asked for the owner")),
            Claim::Own
        );
        assert_eq!(claim(7, 8, || true), Claim::TakeOver);
        assert_eq!(claim(7, 8, || false), Claim::Share);
    }
}
