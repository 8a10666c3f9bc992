//! A stable hash for shared-data slot and partition numbers.
//!
//! Every worker VM, and every build of a module, must map the same key to the same slot: a slot
//! written by one worker is read by the others, and survives a module upgrade while old and new
//! VMs overlap. `std`'s hashers promise neither (SipHash keys are random per process and the
//! algorithm may change between Rust releases), so the slot tables use 64-bit FNV-1a: tiny, fixed,
//! and good enough to spread keys that an attacker does not choose the slot of (a collision only
//! shares a slot, which each table detects by storing the full key).

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::fnv1a64;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
