//! RSA signature *verification* only (RS256/384/512, PS256/384/512): the public-key operation
//! `m = s^e mod n` by Montgomery multiplication, then EMSA-PKCS1-v1_5 or EMSA-PSS-VERIFY
//! (RFC 8017 §8.2.2, §8.1.2, §9.1.2, §9.2).
//!
//! Why not the `rsa` crate: its arithmetic (num-bigint-dig) took ~235 µs per RSA-2048
//! verification natively and far more in the Wasm VM, where the public-key operation with a small
//! `e` takes ~20 µs in BoringSSL; and it links a general big-integer library for one modular
//! exponentiation. Nothing here is secret (public key, public signature, public message), so the
//! arithmetic is variable-time. Measurements and the alternatives weighed: BENCHMARKS.md, "Issue
//! 18: uncached RSA verification".
//!
//! Limbs are 32-bit: wasm32 has a native 32×32→64 multiply (`i64.mul`) but no 64×64→128 one
//! (`u128` products become calls). Squarings (16 of the 17 steps of `e = 65537`) compute each
//! cross product once.
//!
//! Checks: the signature is exactly as long as the modulus (RFC 8017 §8.2.2 step 1) and its value
//! is below `n` (RSAVP1 step 1); the key's `n` is odd, 2048..=4096 bits (smaller ones are the
//! caller's to skip), `e` odd, 3 <= e < 2^33 and below `n`. PKCS#1 v1.5 re-encodes the expected
//! message and compares all of it (DigestInfo prefix and hash, padding, separators) without an
//! early exit; PSS is the whole EMSA-PSS-VERIFY with MGF1 of the same hash and a salt as long as
//! the hash (RFC 7518 §3.5).

use sha2::{Digest, Sha256, Sha384, Sha512};

/// 32-bit limbs on every target, so the unit tests run the arithmetic the Wasm module runs.
type Limb = u32;
type Wide = u64;

const LIMB_BITS: usize = Limb::BITS as usize;
const LIMB_BYTES: usize = LIMB_BITS / 8;
/// Largest modulus accepted (the `rsa` crate's limit, too): bounds the CPU of one verification.
pub const MAX_MODULUS_BITS: usize = 4096;
const MAX_LIMBS: usize = MAX_MODULUS_BITS / LIMB_BITS;
/// Largest public exponent accepted (the `rsa` crate's limit): 2^33 - 1.
const MAX_EXPONENT: u64 = (1 << 33) - 1;

/// Why an RSA public key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    ModulusEven,
    ModulusTooLarge,
    ExponentInvalid,
}

/// A parsed RSA public key with its Montgomery constants, computed once.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublicKey {
    /// The modulus, little-endian limbs, no zero top limb.
    n: Vec<Limb>,
    /// `-n^-1 mod 2^LIMB_BITS`.
    n0inv: Limb,
    /// `R^2 mod n`, `R = 2^(LIMB_BITS * n.len())`.
    rr: Vec<Limb>,
    e: u64,
    /// Modulus length in bits and in bytes (`k` of RFC 8017).
    bits: usize,
    len: usize,
}

impl std::fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RSA-{} public key", self.bits)
    }
}

/// Strip leading zero bytes.
fn trim(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    &bytes[zeros..]
}

/// Big-endian bytes into `out` (little-endian limbs, zero-filled); `bytes` must fit.
fn limbs_from_be(bytes: &[u8], out: &mut [Limb]) {
    out.iter_mut().for_each(|l| *l = 0);
    for (i, chunk) in bytes.rchunks(LIMB_BYTES).enumerate() {
        let mut limb: Limb = 0;
        for b in chunk {
            limb = (limb << 8) | Limb::from(*b);
        }
        out[i] = limb;
    }
}

/// Little-endian limbs into exactly `out.len()` big-endian bytes (the value must fit).
fn limbs_to_be(limbs: &[Limb], out: &mut [u8]) {
    for (i, byte) in out.iter_mut().rev().enumerate() {
        let limb = limbs.get(i / LIMB_BYTES).copied().unwrap_or(0);
        *byte = (limb >> (8 * (i % LIMB_BYTES))) as u8;
    }
}

/// `a >= b`, same length.
fn geq(a: &[Limb], b: &[Limb]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// `a -= b`, same length; returns the borrow.
fn sub_in_place(a: &mut [Limb], b: &[Limb]) -> bool {
    let mut borrow = false;
    for (x, y) in a.iter_mut().zip(b) {
        let (d, b1) = x.overflowing_sub(*y);
        let (d, b2) = d.overflowing_sub(Limb::from(borrow));
        *x = d;
        borrow = b1 || b2;
    }
    borrow
}

impl RsaPublicKey {
    /// The key of modulus `n` and exponent `e` (big-endian bytes, leading zeros allowed).
    pub fn new(n: &[u8], e: &[u8]) -> Result<RsaPublicKey, KeyError> {
        let n_bytes = trim(n);
        let e_bytes = trim(e);
        if n_bytes.len() * 8 > MAX_MODULUS_BITS {
            return Err(KeyError::ModulusTooLarge);
        }
        match n_bytes.last() {
            Some(b) if b & 1 == 1 => {}
            _ => return Err(KeyError::ModulusEven),
        }
        if e_bytes.len() > 8 {
            return Err(KeyError::ExponentInvalid);
        }
        let e = e_bytes.iter().fold(0u64, |e, b| (e << 8) | u64::from(*b));
        if !(3..=MAX_EXPONENT).contains(&e) || e & 1 == 0 {
            return Err(KeyError::ExponentInvalid);
        }
        let len = n_bytes.len();
        let bits = 8 * len - n_bytes[0].leading_zeros() as usize;
        let small_n = n_bytes.iter().fold(0u128, |v, b| (v << 8) | u128::from(*b));
        if len <= 8 && u128::from(e) >= small_n {
            return Err(KeyError::ExponentInvalid);
        }
        let limbs = len.div_ceil(LIMB_BYTES);
        let mut n = vec![0; limbs];
        limbs_from_be(n_bytes, &mut n);

        // -n^-1 mod 2^W by Newton's iteration (each step doubles the correct low bits; n is odd).
        let mut inv: Limb = 1;
        for _ in 0..7 {
            inv = inv.wrapping_mul((2 as Limb).wrapping_sub(n[0].wrapping_mul(inv)));
        }
        let n0inv = inv.wrapping_neg();

        // R^2 mod n: 1 doubled 2 * W * limbs times, reduced after each doubling.
        let mut rr = vec![0; limbs];
        rr[0] = 1;
        for _ in 0..2 * LIMB_BITS * limbs {
            let mut carry = 0;
            for l in rr.iter_mut() {
                let next = *l >> (LIMB_BITS - 1);
                *l = (*l << 1) | carry;
                carry = next;
            }
            if carry == 1 || geq(&rr, &n) {
                sub_in_place(&mut rr, &n);
            }
        }
        Ok(RsaPublicKey {
            n,
            n0inv,
            rr,
            e,
            bits,
            len,
        })
    }

    /// Modulus length in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Modulus length in bytes: the length of every valid signature.
    pub fn size(&self) -> usize {
        self.len
    }

    /// `out = a * b * R^-1 mod n` (Montgomery multiplication, the multiply and reduce steps of
    /// each limb of `a` fused in one pass); `a`, `b` < n.
    fn mont_mul(&self, a: &[Limb], b: &[Limb], out: &mut [Limb]) {
        let l = self.n.len();
        let (n, a, b) = (&self.n[..l], &a[..l], &b[..l]);
        // t < 2n throughout: l limbs and a top limb of at most 1.
        let mut t = [0 as Limb; MAX_LIMBS + 1];
        let t = &mut t[..=l];
        for &ai in a {
            let s = Wide::from(t[0]) + Wide::from(ai) * Wide::from(b[0]);
            let m = (s as Limb).wrapping_mul(self.n0inv);
            let r = Wide::from(s as Limb) + Wide::from(m) * Wide::from(n[0]);
            let mut c1 = (s >> LIMB_BITS) as Limb;
            let mut c2 = (r >> LIMB_BITS) as Limb;
            for j in 1..l {
                let s = Wide::from(t[j]) + Wide::from(ai) * Wide::from(b[j]) + Wide::from(c1);
                c1 = (s >> LIMB_BITS) as Limb;
                let r = Wide::from(s as Limb) + Wide::from(m) * Wide::from(n[j]) + Wide::from(c2);
                c2 = (r >> LIMB_BITS) as Limb;
                t[j - 1] = r as Limb;
            }
            let s = Wide::from(t[l]) + Wide::from(c1) + Wide::from(c2);
            t[l - 1] = s as Limb;
            t[l] = (s >> LIMB_BITS) as Limb;
        }
        if t[l] != 0 || geq(&t[..l], n) {
            sub_in_place(&mut t[..l], n);
        }
        out[..l].copy_from_slice(&t[..l]);
    }

    /// `out = a * a * R^-1 mod n`: the square (each cross product computed once, then doubled)
    /// followed by a separate Montgomery reduction; about a quarter fewer limb products than
    /// [`Self::mont_mul`], and 16 of the 17 steps of `e = 65537` are squarings.
    fn mont_sqr(&self, a: &[Limb], out: &mut [Limb]) {
        let l = self.n.len();
        let (n, a) = (&self.n[..l], &a[..l]);
        let mut t = [0 as Limb; 2 * MAX_LIMBS];
        let t = &mut t[..2 * l];
        // Cross products a[i] * a[j], i < j.
        for i in 0..l {
            let ai = Wide::from(a[i]);
            let mut c: Limb = 0;
            for (tj, aj) in t[2 * i + 1..i + l].iter_mut().zip(&a[i + 1..]) {
                let s = Wide::from(*tj) + ai * Wide::from(*aj) + Wide::from(c);
                *tj = s as Limb;
                c = (s >> LIMB_BITS) as Limb;
            }
            t[i + l] = c;
        }
        // Doubled (the square is below R^2: nothing shifts out), plus the squares a[i]^2.
        let mut shifted: Limb = 0;
        for x in t.iter_mut() {
            let next = *x >> (LIMB_BITS - 1);
            *x = (*x << 1) | shifted;
            shifted = next;
        }
        let mut c: Limb = 0;
        for i in 0..l {
            let p = Wide::from(a[i]) * Wide::from(a[i]);
            let s = Wide::from(t[2 * i]) + (p as Limb as Wide) + Wide::from(c);
            t[2 * i] = s as Limb;
            let s = Wide::from(t[2 * i + 1]) + (p >> LIMB_BITS) + (s >> LIMB_BITS);
            t[2 * i + 1] = s as Limb;
            c = (s >> LIMB_BITS) as Limb;
        }
        // Montgomery reduction, one limb of t at a time; `top` carries into the next row.
        let mut top: Limb = 0;
        for i in 0..l {
            let m = t[i].wrapping_mul(self.n0inv);
            let mut c: Limb = 0;
            for (tj, nj) in t[i..i + l].iter_mut().zip(n) {
                let s = Wide::from(*tj) + Wide::from(m) * Wide::from(*nj) + Wide::from(c);
                *tj = s as Limb;
                c = (s >> LIMB_BITS) as Limb;
            }
            let s = Wide::from(t[i + l]) + Wide::from(c) + Wide::from(top);
            t[i + l] = s as Limb;
            top = (s >> LIMB_BITS) as Limb;
        }
        let r = &mut t[l..];
        if top != 0 || geq(r, n) {
            sub_in_place(r, n);
        }
        out[..l].copy_from_slice(r);
    }

    /// RSAVP1 (RFC 8017 §5.2.2) into `em` (`size()` bytes): `None` unless the signature is
    /// exactly `size()` bytes and its value is below `n`.
    fn public_op(&self, sig: &[u8], em: &mut [u8]) -> Option<()> {
        if sig.len() != self.len || em.len() != self.len {
            return None;
        }
        let l = self.n.len();
        let mut s = [0 as Limb; MAX_LIMBS];
        limbs_from_be(sig, &mut s[..l]);
        if geq(&s[..l], &self.n) {
            return None;
        }
        let mut base = [0 as Limb; MAX_LIMBS];
        self.mont_mul(&s[..l], &self.rr, &mut base[..l]); // s * R mod n
        let mut acc = base;
        let mut tmp = [0 as Limb; MAX_LIMBS];
        let top = 63 - self.e.leading_zeros();
        for bit in (0..top).rev() {
            self.mont_sqr(&acc[..l], &mut tmp[..l]);
            if (self.e >> bit) & 1 == 1 {
                self.mont_mul(&tmp[..l], &base[..l], &mut acc[..l]);
            } else {
                acc[..l].copy_from_slice(&tmp[..l]);
            }
        }
        let mut one = [0 as Limb; MAX_LIMBS];
        one[0] = 1;
        self.mont_mul(&acc[..l], &one[..l], &mut tmp[..l]); // out of Montgomery form
        limbs_to_be(&tmp[..l], em);
        Some(())
    }

    /// RSASSA-PKCS1-v1_5-VERIFY of `msg` with `hash`.
    pub fn verify_pkcs1v15(&self, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
        let mut em = [0u8; MAX_MODULUS_BITS / 8];
        let em = &mut em[..self.len];
        if self.public_op(sig, em).is_none() {
            return false;
        }
        let digest = hash.digest(&[msg]);
        let digest = &digest[..hash.len()];
        let prefix = hash.digest_info_prefix();
        let t_len = prefix.len() + digest.len();
        // 0x00 0x01 PS(0xff, at least 8) 0x00 T: k >= 256 here, far above t_len + 11.
        let Some(ps_len) = self.len.checked_sub(t_len + 3).filter(|n| *n >= 8) else {
            return false;
        };
        // Every byte is compared, whatever differs first.
        let (head, rest) = em.split_at(2);
        let (ps, rest) = rest.split_at(ps_len);
        let (separator, t) = rest.split_at(1);
        let (t_prefix, t_digest) = t.split_at(prefix.len());
        let mut diff = head[0] | (head[1] ^ 0x01) | separator[0];
        diff |= ps.iter().fold(0u8, |acc, b| acc | (b ^ 0xff));
        diff |= t_prefix
            .iter()
            .zip(prefix)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff |= t_digest
            .iter()
            .zip(digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }

    /// RSASSA-PSS-VERIFY of `msg` with `hash`, MGF1 of the same hash, salt as long as the hash.
    pub fn verify_pss(&self, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
        let mut buf = [0u8; MAX_MODULUS_BITS / 8];
        let m = &mut buf[..self.len];
        if self.public_op(sig, m).is_none() {
            return false;
        }
        // EM = I2OSP(m, emLen), emBits = modBits - 1: one byte shorter when modBits - 1 is a
        // multiple of 8, and that byte of m must then be zero.
        let em_bits = self.bits - 1;
        let em_len = em_bits.div_ceil(8);
        let em: &mut [u8] = if em_len < self.len {
            if m[0] != 0 {
                return false;
            }
            &mut m[1..]
        } else {
            m
        };
        let h_len = hash.len();
        let s_len = h_len;
        if em_len < h_len + s_len + 2 || em[em_len - 1] != 0xbc {
            return false;
        }
        let db_len = em_len - h_len - 1;
        let (masked_db, rest) = em.split_at_mut(db_len);
        let h = &rest[..h_len];
        let top_mask = 0xffu8 >> (8 * em_len - em_bits);
        if masked_db[0] & !top_mask != 0 {
            return false;
        }
        // DB = maskedDB xor MGF1(H, db_len)
        for (counter, chunk) in masked_db.chunks_mut(h_len).enumerate() {
            let c = (counter as u32).to_be_bytes();
            let mask = hash.digest(&[h, &c]);
            chunk.iter_mut().zip(mask.iter()).for_each(|(d, m)| *d ^= m);
        }
        let db = masked_db;
        db[0] &= top_mask;
        let zeros = db_len - s_len - 1;
        let padding_ok = db[..zeros].iter().fold(0u8, |acc, b| acc | b) == 0;
        if !padding_ok || db[zeros] != 0x01 {
            return false;
        }
        let salt = &db[db_len - s_len..];
        let m_hash = hash.digest(&[msg]);
        let h2 = hash.digest(&[&[0u8; 8], &m_hash[..h_len], salt]);
        h.iter()
            .zip(&h2[..h_len])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The hash of an RSA algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// The hash of the concatenation of `parts`, in the first `len()` bytes.
    fn digest(self, parts: &[&[u8]]) -> [u8; 64] {
        fn run<D: Digest>(parts: &[&[u8]], out: &mut [u8; 64]) {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            let h = d.finalize();
            out[..h.len()].copy_from_slice(&h);
        }
        let mut out = [0u8; 64];
        match self {
            Hash::Sha256 => run::<Sha256>(parts, &mut out),
            Hash::Sha384 => run::<Sha384>(parts, &mut out),
            Hash::Sha512 => run::<Sha512>(parts, &mut out),
        }
        out
    }

    /// The DER DigestInfo prefix (RFC 8017 §9.2, note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    //! The verifier against the `rsa` crate (the reference) on keys from a seeded generator:
    //! genuine, tampered and random signatures of every algorithm, and hand-crafted encodings
    //! that a lax verifier would accept.
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPrivateKey};
    use std::sync::LazyLock;

    struct Pair {
        private: RsaPrivateKey,
        ours: RsaPublicKey,
    }

    /// 2048 and 4096 bits; 2049 (PSS's emLen is one byte shorter than the modulus and every
    /// signature's first byte is 0 or 1); 3072; and 2048 with e = 3.
    static KEYS: LazyLock<Vec<Pair>> = LazyLock::new(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(18);
        let mut keys: Vec<RsaPrivateKey> = [2048, 2049, 3072, 4096]
            .into_iter()
            .map(|bits| RsaPrivateKey::new(&mut rng, bits).unwrap())
            .collect();
        keys.push(RsaPrivateKey::new_with_exp(&mut rng, 2048, &BigUint::from(3u8)).unwrap());
        keys.into_iter()
            .map(|private| {
                let ours =
                    RsaPublicKey::new(&private.n().to_bytes_be(), &private.e().to_bytes_be())
                        .unwrap();
                assert_eq!(ours.bits(), private.n().bits());
                assert_eq!(ours.size(), private.size());
                Pair { private, ours }
            })
            .collect()
    });

    #[derive(Debug, Clone, Copy)]
    enum Scheme {
        Pkcs1(Hash),
        Pss(Hash),
    }

    const SCHEMES: [Scheme; 6] = [
        Scheme::Pkcs1(Hash::Sha256),
        Scheme::Pkcs1(Hash::Sha384),
        Scheme::Pkcs1(Hash::Sha512),
        Scheme::Pss(Hash::Sha256),
        Scheme::Pss(Hash::Sha384),
        Scheme::Pss(Hash::Sha512),
    ];

    fn hashed(hash: Hash, msg: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        match hash {
            Hash::Sha256 => Sha256::digest(msg).to_vec(),
            Hash::Sha384 => Sha384::digest(msg).to_vec(),
            Hash::Sha512 => Sha512::digest(msg).to_vec(),
        }
    }

    fn pkcs1(hash: Hash) -> Pkcs1v15Sign {
        match hash {
            Hash::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
            Hash::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
            Hash::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
        }
    }

    fn pss(hash: Hash) -> Pss {
        match hash {
            Hash::Sha256 => Pss::new::<Sha256>(),
            Hash::Sha384 => Pss::new::<Sha384>(),
            Hash::Sha512 => Pss::new::<Sha512>(),
        }
    }

    fn sign(pair: &Pair, scheme: Scheme, msg: &[u8], seed: u64) -> Vec<u8> {
        match scheme {
            Scheme::Pkcs1(h) => pair.private.sign(pkcs1(h), &hashed(h, msg)).unwrap(),
            Scheme::Pss(h) => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                pair.private
                    .sign_with_rng(&mut rng, pss(h), &hashed(h, msg))
                    .unwrap()
            }
        }
    }

    fn ours(pair: &Pair, scheme: Scheme, msg: &[u8], sig: &[u8]) -> bool {
        match scheme {
            Scheme::Pkcs1(h) => pair.ours.verify_pkcs1v15(h, msg, sig),
            Scheme::Pss(h) => pair.ours.verify_pss(h, msg, sig),
        }
    }

    fn reference(pair: &Pair, scheme: Scheme, msg: &[u8], sig: &[u8]) -> bool {
        let public = pair.private.to_public_key();
        match scheme {
            Scheme::Pkcs1(h) => public.verify(pkcs1(h), &hashed(h, msg), sig).is_ok(),
            Scheme::Pss(h) => public.verify(pss(h), &hashed(h, msg), sig).is_ok(),
        }
    }

    /// The raw private-key operation on an encoded message: a "signature" of any encoding.
    fn raw_sign(pair: &Pair, em: &[u8]) -> Vec<u8> {
        let m = BigUint::from_bytes_be(em);
        let s = m.modpow(pair.private.d(), pair.private.n()).to_bytes_be();
        let mut out = vec![0u8; pair.ours.size() - s.len()];
        out.extend_from_slice(&s);
        out
    }

    /// The raw public-key operation: the encoded message inside a signature.
    fn raw_open(pair: &Pair, sig: &[u8]) -> Vec<u8> {
        let m = BigUint::from_bytes_be(sig)
            .modpow(pair.private.e(), pair.private.n())
            .to_bytes_be();
        let mut out = vec![0u8; pair.ours.size() - m.len()];
        out.extend_from_slice(&m);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn genuine_signatures_verify_like_the_rsa_crate(
            key in 0..5usize, scheme in 0..6usize, msg in proptest::collection::vec(any::<u8>(), 0..300), seed: u64,
        ) {
            let (pair, scheme) = (&KEYS[key], SCHEMES[scheme]);
            let sig = sign(pair, scheme, &msg, seed);
            prop_assert!(reference(pair, scheme, &msg, &sig));
            prop_assert!(ours(pair, scheme, &msg, &sig));
        }

        #[test]
        fn tampered_signatures_and_messages_are_refused_like_the_rsa_crate(
            key in 0..5usize, scheme in 0..6usize, msg in proptest::collection::vec(any::<u8>(), 1..300),
            seed: u64, at: usize, bit in 0..8u8,
        ) {
            let (pair, scheme) = (&KEYS[key], SCHEMES[scheme]);
            let sig = sign(pair, scheme, &msg, seed);
            let mut bad = sig.clone();
            let i = at % bad.len();
            bad[i] ^= 1 << bit;
            prop_assert_eq!(ours(pair, scheme, &msg, &bad), reference(pair, scheme, &msg, &bad));
            prop_assert!(!ours(pair, scheme, &msg, &bad));
            let mut other = msg.clone();
            let j = at % other.len();
            other[j] ^= 1 << bit;
            prop_assert!(!ours(pair, scheme, &other, &sig));
            prop_assert!(!reference(pair, scheme, &other, &sig));
        }

        #[test]
        fn random_signatures_are_refused_like_the_rsa_crate(
            key in 0..5usize, scheme in 0..6usize, fill: u64,
        ) {
            let (pair, scheme) = (&KEYS[key], SCHEMES[scheme]);
            let mut rng = ChaCha8Rng::seed_from_u64(fill);
            let mut sig = vec![0u8; pair.ours.size()];
            rand_chacha::rand_core::RngCore::fill_bytes(&mut rng, &mut sig);
            prop_assert_eq!(ours(pair, scheme, b"m", &sig), reference(pair, scheme, b"m", &sig));
            prop_assert!(!ours(pair, scheme, b"m", &sig));
        }

        /// A signature opened and re-signed raw: the raw helpers are right, so the crafted
        /// encodings below test the verifier and not the helpers.
        #[test]
        fn a_genuine_encoding_re_signed_raw_still_verifies(key in 0..5usize, scheme in 0..6usize) {
            let (pair, scheme) = (&KEYS[key], SCHEMES[scheme]);
            let sig = sign(pair, scheme, b"msg", 1);
            let resigned = raw_sign(pair, &raw_open(pair, &sig));
            prop_assert_eq!(&resigned, &sig);
            prop_assert!(ours(pair, scheme, b"msg", &resigned));
        }
    }

    /// The wrong-length class: for every algorithm and key, a genuine signature with a zero byte
    /// in front, without its first byte (zero, where it is), without its last byte, doubled,
    /// and empty, never verifies.
    #[test]
    fn signatures_of_any_length_but_the_modulus_length_are_refused_for_every_algorithm() {
        for pair in KEYS.iter() {
            for scheme in SCHEMES {
                // A signature whose first byte is zero (the 2049-bit key gives one in two).
                let (msg, sig) = (0u32..4096)
                    .map(|i| {
                        let msg = i.to_be_bytes().to_vec();
                        let sig = sign(pair, scheme, &msg, u64::from(i));
                        (msg, sig)
                    })
                    .find(|(_, sig)| sig[0] == 0 || pair.ours.bits() != 2049)
                    .unwrap();
                assert!(ours(pair, scheme, &msg, &sig), "{scheme:?}");
                let mut longer = vec![0u8];
                longer.extend_from_slice(&sig);
                let doubled = [sig.clone(), sig.clone()].concat();
                for bad in [
                    &longer[..],
                    &sig[1..],
                    &sig[..sig.len() - 1],
                    &doubled[..],
                    &[][..],
                ] {
                    assert!(
                        !ours(pair, scheme, &msg, bad),
                        "{scheme:?}, {} bytes",
                        bad.len()
                    );
                    assert!(!reference(pair, scheme, &msg, bad));
                }
            }
        }
    }

    /// `s + n` (same residue, still the modulus length when it fits) and `n` itself are refused
    /// (RSAVP1 step 1).
    #[test]
    fn a_signature_value_not_below_the_modulus_is_refused() {
        for pair in KEYS.iter() {
            for scheme in SCHEMES {
                let sig = sign(pair, scheme, b"msg", 3);
                let n = pair.private.n();
                let lifted = (BigUint::from_bytes_be(&sig) + n).to_bytes_be();
                if lifted.len() == sig.len() {
                    // (The `rsa` crate 0.9 accepts this one: a second, malleated form of
                    // every signature that fits, which the verifier it replaced let through.)
                    assert!(!ours(pair, scheme, b"msg", &lifted), "{scheme:?}");
                }
                let n_bytes = n.to_bytes_be();
                assert!(!ours(pair, scheme, b"msg", &n_bytes));
            }
        }
    }

    /// PKCS#1 v1.5 encodings a lax verifier would accept: the whole encoded message must match.
    #[test]
    fn pkcs1_encodings_other_than_the_exact_one_are_refused() {
        let pair = &KEYS[4]; // e = 3: where Bleichenbacher's 2006 forgery works on lax parsers
        let k = pair.ours.size();
        let msg = b"header.payload";
        let digest = hashed(Hash::Sha256, msg);
        let prefix = Hash::Sha256.digest_info_prefix();
        let encode = |ps: usize, prefix: &[u8], tail: &[u8]| {
            let mut em = vec![0x00, 0x01];
            em.resize(em.len() + ps, 0xff);
            em.push(0x00);
            em.extend_from_slice(prefix);
            em.extend_from_slice(&digest);
            em.extend_from_slice(tail);
            em
        };
        let exact = encode(k - 3 - prefix.len() - 32, prefix, &[]);
        let sig = raw_sign(pair, &exact);
        assert!(pair.ours.verify_pkcs1v15(Hash::Sha256, msg, &sig));

        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        // Garbage after the hash with a shorter padding (the 2006 forgery's shape).
        cases.push((
            "trailing garbage",
            encode(8, prefix, &vec![0x5a; k - 11 - prefix.len() - 32]),
        ));
        // DigestInfo without the NULL parameters (a legacy form): one length byte differs too.
        let mut no_null = vec![0x30, 0x2f, 0x30, 0x0b];
        no_null.extend_from_slice(&prefix[4..15]);
        no_null.extend_from_slice(&[0x04, 0x20]);
        cases.push((
            "DigestInfo without NULL",
            encode(k - 3 - no_null.len() - 32, &no_null, &[]),
        ));
        let mut em = exact.clone();
        em[5] = 0xfe;
        cases.push(("a padding byte not 0xff", em));
        let mut em = exact.clone();
        em[1] = 0x02;
        cases.push(("block type 2", em));
        let mut em = exact.clone();
        em[k - 32 - prefix.len() - 1] = 0x01;
        cases.push(("separator not zero", em));
        let mut em = exact.clone();
        em[k - 32 - 2] ^= 0x01; // the SHA-256 OID's last byte → another hash's
        cases.push(("another hash's OID", em));
        for (why, em) in cases {
            assert_eq!(em.len(), k, "{why}");
            let forged = raw_sign(pair, &em);
            assert!(
                !pair.ours.verify_pkcs1v15(Hash::Sha256, msg, &forged),
                "{why}"
            );
            assert!(
                !reference(pair, Scheme::Pkcs1(Hash::Sha256), msg, &forged),
                "{why}"
            );
        }
        // The exact encoding of another hash, verified as SHA-256 (and the reverse).
        let rs384 = sign(pair, Scheme::Pkcs1(Hash::Sha384), msg, 0);
        assert!(!pair.ours.verify_pkcs1v15(Hash::Sha256, msg, &rs384));
        assert!(!pair.ours.verify_pkcs1v15(Hash::Sha512, msg, &rs384));
    }

    /// EMSA-PSS-VERIFY's checks, each broken on its own in a genuine encoding re-signed raw.
    #[test]
    fn pss_encodings_breaking_one_rule_are_refused() {
        for pair in [&KEYS[0], &KEYS[1]] {
            let msg = b"header.payload";
            let scheme = Scheme::Pss(Hash::Sha256);
            let sig = sign(pair, scheme, msg, 5);
            let em = raw_open(pair, &sig);
            let k = em.len();
            let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
            let mut bad = em.clone();
            bad[k - 1] = 0xbb;
            cases.push(("trailer not 0xbc", bad));
            // The leftmost bit(s) 8 * emLen - emBits of the encoding must be zero.
            let mut bad = em.clone();
            if pair.ours.bits() == 2049 {
                bad[0] = 0x01; // the byte above emLen: still below n? n's top byte is 1
                bad[1] ^= 0x80;
            } else {
                bad[0] |= 0x80;
            }
            cases.push(("leftmost bit set", bad));
            let mut bad = em.clone();
            bad[k - 2] ^= 0x01;
            cases.push(("H changed", bad));
            for (why, bad) in cases {
                let forged = raw_sign(pair, &bad);
                assert!(
                    !ours(pair, scheme, msg, &forged),
                    "{why}, {} bits",
                    pair.ours.bits()
                );
                assert!(!reference(pair, scheme, msg, &forged), "{why}");
            }
            // Salts of other lengths than the hash's (RFC 7518 §3.5): 0, 20 and 64 bytes.
            for salt in [0, 20, 64] {
                let mut rng = ChaCha8Rng::seed_from_u64(salt as u64);
                let other = pair
                    .private
                    .sign_with_rng(
                        &mut rng,
                        Pss::new_with_salt::<Sha256>(salt),
                        &hashed(Hash::Sha256, msg),
                    )
                    .unwrap();
                assert!(!ours(pair, scheme, msg, &other), "salt {salt}");
            }
            // A PSS signature is not a PKCS#1 v1.5 one, nor of another hash.
            assert!(!pair.ours.verify_pkcs1v15(Hash::Sha256, msg, &sig));
            assert!(!pair.ours.verify_pss(Hash::Sha384, msg, &sig));
        }
    }

    #[test]
    fn keys_with_an_even_modulus_or_a_bad_exponent_are_refused() {
        let n = KEYS[0].private.n().to_bytes_be();
        let e = [0x01, 0x00, 0x01];
        assert!(RsaPublicKey::new(&n, &e).is_ok());
        let mut zero_led = vec![0u8, 0];
        zero_led.extend_from_slice(&n);
        assert_eq!(RsaPublicKey::new(&zero_led, &e).unwrap().bits(), 2048);
        let mut even = n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert_eq!(RsaPublicKey::new(&even, &e), Err(KeyError::ModulusEven));
        assert_eq!(RsaPublicKey::new(&[], &e), Err(KeyError::ModulusEven));
        assert_eq!(
            RsaPublicKey::new(&[0xff; 513], &e),
            Err(KeyError::ModulusTooLarge)
        );
        assert!(RsaPublicKey::new(&[0xff; 512], &e).is_ok());
        for bad in [
            &[][..],
            &[0x00],
            &[0x01],
            &[0x02],
            &[0x01, 0x00, 0x00],
            &[0x02, 0x00, 0x00, 0x00, 0x01], // 2^33 + 1
            &[0x01; 9],
        ] {
            assert_eq!(
                RsaPublicKey::new(&n, bad),
                Err(KeyError::ExponentInvalid),
                "{bad:?}"
            );
        }
        assert!(RsaPublicKey::new(&n, &[0x01, 0xff, 0xff, 0xff, 0xff]).is_ok()); // 2^33 - 1
        assert!(RsaPublicKey::new(&n, &[0x00, 0x03]).is_ok());
        // e not below a (tiny) n.
        assert_eq!(
            RsaPublicKey::new(&[0x0f], &[0x11]),
            Err(KeyError::ExponentInvalid)
        );
    }
}
