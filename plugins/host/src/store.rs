//! [`SharedStore`] on proxy-wasm shared data, namespaced by a [`KeyPrefix`].
//!
//! Host semantics (proxy-wasm-cpp-host `shared_data.cc`) and how we map them:
//! - one store per `vm_id`, shared by every worker's VM; Istio never sets `vm_id`, hence the
//!   prefix on every key;
//! - an absent key reads `(None, None)`; a "removed" key (empty value) reads `(None, Some(cas))`;
//!   both read here as an empty value, with [`Version::Absent`] and [`Version::Cas`];
//! - a write to an absent key succeeds whatever CAS is passed, and CAS 0 means "unconditional".
//!   To make "create only if still absent" work, a write with [`Version::Absent`] passes
//!   [`CREATE_CAS`]: if a racing worker created the key first, its CAS differs and we get
//!   `CasMismatch`. CAS tokens come from one process-wide counter, so this misfires only if the
//!   racing key's token happens to equal `u32::MAX` — once per 2³² writes process-wide, and then
//!   only if that write raced with a creation of the same key.
//! - keys are never freed, so policies must bound how many distinct keys they write.

use crate::abi;
use palisade_core::store::KeyPrefix;
use palisade_core::store::Versioned;
use palisade_core::{SharedStore, StoreError, Version};

/// The CAS passed when creating a key; see the module docs.
pub const CREATE_CAS: u32 = u32::MAX;

/// Shared data under one plugin's (and one config's) key prefix.
#[derive(Debug, Clone)]
pub struct HostStore {
    prefix: KeyPrefix,
}

impl HostStore {
    pub fn new(prefix: KeyPrefix) -> Self {
        HostStore { prefix }
    }

    pub fn prefix(&self) -> &KeyPrefix {
        &self.prefix
    }
}

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Versioned, StoreError> {
        let full = self.prefix.key(key);
        match abi::get_shared_data(&full) {
            Ok((value, Some(cas))) => Ok(Versioned {
                value: value.unwrap_or_default(),
                version: Version::Cas(cas),
            }),
            Ok((None, None)) => Ok(Versioned {
                value: Vec::new(),
                version: Version::Absent,
            }),
            Ok((Some(_), None)) => Err(StoreError::Host(format!(
                "shared data {full}: value without CAS"
            ))),
            Err(e) => Err(e.during("get_shared_data").into()),
        }
    }

    fn compare_and_swap(
        &self,
        key: &str,
        value: &[u8],
        expected: Version,
    ) -> Result<(), StoreError> {
        let cas = match expected {
            Version::Absent => CREATE_CAS,
            // A real token is never 0 (the host skips it), but guard: 0 would be unconditional.
            Version::Cas(0) => return Err(StoreError::CasMismatch),
            Version::Cas(cas) => cas,
        };
        abi::set_shared_data(&self.prefix.key(key), value, cas)
            .map_err(|e| e.during("set_shared_data").into())
    }
}
