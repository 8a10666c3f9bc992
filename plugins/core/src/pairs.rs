//! The proxy-wasm ABI's byte encoding of header maps ("pairs"), kept pure so it is tested natively.
//!
//! Layout, as proxy-wasm-cpp-host writes and reads it: a little-endian `u32` pair count `n`; then
//! `n` little-endian `u32` pairs (name length, value length); then, for each pair, the name bytes,
//! a NUL, the value bytes, a NUL. The lengths do not count the NULs. An empty map may also arrive
//! as no bytes at all.
//!
//! Why our own codec: the SDK's decoder indexes the buffer without bounds checks and `unwrap`s
//! UTF-8 names, so a truncated or odd map from the host would panic — and a panic aborts the
//! worker's Wasm VM. [`decode`] checks every length against the buffer and returns a typed
//! [`PairsError`]; names that are not UTF-8 (never seen: Envoy validates header names) are
//! replaced with U+FFFD rather than trusted; values stay raw bytes (HTTP allows obs-text).

use std::fmt;

/// Why a header map could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairsError {
    /// The buffer ends before the data its header announces.
    Truncated {
        /// Bytes the header announces (at least).
        needed: usize,
        /// Bytes present.
        len: usize,
    },
    /// The byte after a name or value, at `offset`, is not the NUL terminator.
    MissingNul { offset: usize },
    /// Bytes left over after the last pair.
    TrailingBytes { extra: usize },
    /// A name, a value or the pair count is longer than the format's `u32` lengths allow.
    TooLarge { len: usize },
}

impl fmt::Display for PairsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairsError::Truncated { needed, len } => {
                write!(f, "header map truncated: needs {needed} bytes, has {len}")
            }
            PairsError::MissingNul { offset } => {
                write!(f, "header map: no NUL terminator at byte {offset}")
            }
            PairsError::TrailingBytes { extra } => {
                write!(f, "header map: {extra} bytes after the last pair")
            }
            PairsError::TooLarge { len } => {
                write!(f, "header map: length {len} does not fit in 32 bits")
            }
        }
    }
}

impl std::error::Error for PairsError {}

fn len_u32(len: usize) -> Result<u32, PairsError> {
    u32::try_from(len).map_err(|_| PairsError::TooLarge { len })
}

/// Encode `pairs` (names and values as any bytes) in the ABI's header-map layout.
pub fn encode<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Result<Vec<u8>, PairsError> {
    let data: usize = pairs
        .iter()
        .map(|(n, v)| n.as_ref().len() + v.as_ref().len() + 2)
        .sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + data);
    out.extend_from_slice(&len_u32(pairs.len())?.to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&len_u32(name.as_ref().len())?.to_le_bytes());
        out.extend_from_slice(&len_u32(value.as_ref().len())?.to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    Ok(out)
}

/// A little-endian `u32` at `at`, as a length.
fn read_len(bytes: &[u8], at: usize) -> Result<usize, PairsError> {
    let end = at.checked_add(4).ok_or(PairsError::TooLarge { len: at })?;
    let word = bytes
        .get(at..end)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .ok_or(PairsError::Truncated {
            needed: end,
            len: bytes.len(),
        })?;
    usize::try_from(u32::from_le_bytes(word)).map_err(|_| PairsError::TooLarge { len: usize::MAX })
}

/// `len` bytes at `*at` followed by a NUL; advances `*at` past the NUL.
fn take<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], PairsError> {
    let end = at.checked_add(len).ok_or(PairsError::TooLarge { len })?;
    let field = bytes.get(*at..end).ok_or(PairsError::Truncated {
        needed: end.saturating_add(1),
        len: bytes.len(),
    })?;
    match bytes.get(end) {
        Some(0) => {}
        Some(_) => return Err(PairsError::MissingNul { offset: end }),
        None => {
            return Err(PairsError::Truncated {
                needed: end.saturating_add(1),
                len: bytes.len(),
            })
        }
    }
    *at = end + 1;
    Ok(field)
}

/// Decode a header map from the ABI's layout: names (as text, non-UTF-8 replaced) with raw values,
/// in order. Never panics: every length is checked against the buffer.
pub fn decode(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, PairsError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let count = read_len(bytes, 0)?;
    // The length table must fit before anything is allocated for `count` pairs.
    let table_end = count
        .checked_mul(8)
        .and_then(|t| t.checked_add(4))
        .ok_or(PairsError::TooLarge { len: count })?;
    if table_end > bytes.len() {
        return Err(PairsError::Truncated {
            needed: table_end,
            len: bytes.len(),
        });
    }
    let mut pairs = Vec::with_capacity(count);
    let mut at = table_end;
    for i in 0..count {
        let name_len = read_len(bytes, 4 + i * 8)?;
        let value_len = read_len(bytes, 8 + i * 8)?;
        let name = take(bytes, &mut at, name_len)?;
        let value = take(bytes, &mut at, value_len)?;
        pairs.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
    }
    if at != bytes.len() {
        return Err(PairsError::TrailingBytes {
            extra: bytes.len() - at,
        });
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{":status": "200", "x-a": ""}`, laid out by hand from the format description.
    fn two_pairs() -> Vec<u8> {
        let mut b = vec![2, 0, 0, 0];
        b.extend_from_slice(&[7, 0, 0, 0, 3, 0, 0, 0]);
        b.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(b":status\x00200\x00");
        b.extend_from_slice(b"x-a\x00\x00");
        b
    }

    #[test]
    fn encodes_counts_lengths_then_nul_terminated_fields() {
        let encoded = encode(&[(":status", "200"), ("x-a", "")]).unwrap();
        assert_eq!(encoded, two_pairs());
    }

    #[test]
    fn decodes_what_the_host_writes() {
        let decoded = decode(&two_pairs()).unwrap();
        assert_eq!(
            decoded,
            vec![
                (":status".to_string(), b"200".to_vec()),
                ("x-a".to_string(), Vec::new())
            ]
        );
    }

    #[test]
    fn an_empty_map_is_no_bytes_or_a_zero_count() {
        assert_eq!(decode(&[]).unwrap(), Vec::new());
        assert_eq!(decode(&[0, 0, 0, 0]).unwrap(), Vec::new());
        assert_eq!(encode::<&str, &str>(&[]).unwrap(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn values_that_are_not_utf8_round_trip_as_bytes() {
        let value: &[u8] = &[0x80, 0xff, b'a'];
        let encoded = encode(&[("x-raw".as_bytes(), value)]).unwrap();
        assert_eq!(
            decode(&encoded).unwrap(),
            vec![("x-raw".into(), value.to_vec())]
        );
    }

    #[test]
    fn every_byte_value_round_trips_except_in_names_which_are_made_text() {
        for b in 0..=255u8 {
            let encoded = encode(&[(&b"n"[..], &[b][..])]).unwrap();
            assert_eq!(decode(&encoded).unwrap(), vec![("n".into(), vec![b])]);
        }
        let encoded = encode(&[(&[0xffu8][..], &b"v"[..])]).unwrap();
        assert_eq!(
            decode(&encoded).unwrap(),
            vec![("\u{fffd}".into(), b"v".to_vec())]
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = two_pairs();
        for cut in 1..full.len() {
            let err = decode(&full[..cut]).unwrap_err();
            assert!(
                matches!(err, PairsError::Truncated { len, .. } if len == cut),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn a_huge_pair_count_is_rejected_before_allocating() {
        let err = decode(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).unwrap_err();
        assert!(matches!(
            err,
            PairsError::Truncated { .. } | PairsError::TooLarge { .. }
        ));
    }

    #[test]
    fn a_length_pointing_past_the_end_is_truncated() {
        let mut b = vec![1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
        b.extend_from_slice(b"abc\x00\x00");
        assert!(matches!(decode(&b), Err(PairsError::Truncated { .. })));
    }

    #[test]
    fn a_missing_nul_terminator_is_rejected() {
        let mut b = two_pairs();
        b[4 + 16 + 7] = b'!'; // the NUL after ":status"
        assert_eq!(decode(&b), Err(PairsError::MissingNul { offset: 27 }));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut b = two_pairs();
        b.push(0);
        assert_eq!(decode(&b), Err(PairsError::TrailingBytes { extra: 1 }));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = PairsError::Truncated { needed: 9, len: 4 };
        assert_eq!(e.to_string(), "header map truncated: needs 9 bytes, has 4");
    }
}
