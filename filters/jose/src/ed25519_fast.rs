//! Fast Ed25519 (RFC 8032, pure) signature verification for wasm32.
//!
//! Built on `curve25519-dalek` 4 (u32 field backend on 32-bit targets such as
//! wasm32, so no emulated u128 arithmetic) and `sha2` 0.10.
//!
//! The accept/reject rule replicates `ed25519-compact` 2.6
//! (`PublicKey::from_slice` + `PublicKey::verify`) exactly:
//!
//! * public key `A` and signature point `R` must be canonical encodings
//!   (y < p, and no "negative zero" x, i.e. x = 0 with the sign bit set),
//!   must decode to a curve point, and must not have small order (order | 8);
//! * `s` must be canonical (s < L);
//! * accept iff `[s]B - [k]A - R` has small order, with
//!   `k = SHA-512(R || A || M) mod L` (this is the rule compact uses: it is
//!   equivalent to the cofactored equation `[8]([s]B - [k]A - R) = 0`).
//!
//! Everything here is public data, so the verification is variable-time.
//!
//! Speed: `[s]B + [k](-A)` is computed with variable-time fixed-base "comb"
//! tables (signed radix-2^6 digits, 3 interleaved digit classes sharing 12
//! doublings): one table for `-A` per key (15 x 32 extended points,
//! 76.8 KB, built at key load), and one for `B` (same size) built once per
//! process at the first key load. The lookups index the tables directly
//! (public data), instead of the constant-time scans that make up a large
//! part of the cost of curve25519-dalek's own `EdwardsBasepointTable` on
//! wasm32. `W` and `M` below trade memory for speed. A key used once (a DPoP
//! proof's own `jwk`) is loaded without a table: building one would cost more
//! than the verification it speeds up, so it takes dalek's
//! `vartime_double_scalar_mul_basepoint` instead.

use std::sync::OnceLock;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use sha2::{Digest, Sha512};

/// Digit width: signed radix-2^W digits in [-2^(W-1), 2^(W-1)].
const W: usize = 6;
/// Number of digits of a scalar < 2^253 (43 six-bit digits + a final carry).
const DIGITS: usize = 256usize.div_ceil(W) + 1;
/// Interleaved digit classes (comb teeth): digit i is handled at stage i % M.
const M: usize = 3;
/// Table rows: digit positions q*M + r share row q.
const ROWS: usize = DIGITS.div_ceil(M);
/// Multiples per row: j * P for j = 1..=2^(W-1).
const H: usize = 1 << (W - 1);
// `signed_digits` reads each digit from two bytes and stores it in an i8.
const _: () = assert!(W >= 2 && W <= 8 && M >= 1);

/// Variable-time comb table for a point P: row q holds j * 2^(W*M*q) * P
/// for j = 1..=H, as extended points.
#[derive(Clone)]
struct Comb {
    pts: Vec<EdwardsPoint>,
}

impl Comb {
    fn new(p: &EdwardsPoint) -> Self {
        let mut pts = Vec::with_capacity(ROWS * H);
        let mut base = *p;
        for _ in 0..ROWS {
            let mut acc = base;
            for _ in 0..H {
                pts.push(acc);
                acc += base;
            }
            for _ in 0..W * M {
                base += base;
            }
        }
        Self { pts }
    }

    /// acc += sum over digit positions i = q*M + r of digits[i] * row q.
    /// None only if a table index is out of range (cannot happen for
    /// digits produced by `signed_digits`).
    fn add_stage(&self, acc: &mut EdwardsPoint, digits: &[i8; DIGITS], r: usize) -> Option<()> {
        for (q, &d) in digits.iter().skip(r).step_by(M).enumerate() {
            let idx = usize::from(d.unsigned_abs());
            if idx == 0 {
                continue;
            }
            let pt = self.pts.get(q * H + idx - 1)?;
            if d > 0 {
                *acc += pt;
            } else {
                *acc -= pt;
            }
        }
        Some(())
    }
}

/// Signed radix-2^W digits of a little-endian scalar < 2^255 (here always
/// < L < 2^253): value = sum digits[i] * 2^(W*i), digits in [-H, H].
fn signed_digits(b: &[u8; 32]) -> [i8; DIGITS] {
    let mut out = [0i8; DIGITS];
    let mask = (1u16 << W) - 1;
    let half = 1i16 << (W - 1);
    let mut carry = 0i16;
    for (i, o) in out.iter_mut().enumerate().take(DIGITS - 1) {
        let bit = i * W;
        let byte = bit / 8;
        let lo = u16::from(b.get(byte).copied().unwrap_or(0))
            | (u16::from(b.get(byte + 1).copied().unwrap_or(0)) << 8);
        // v in [0, 2^W], carry in {0, 1}
        #[allow(clippy::cast_possible_wrap)]
        let v = ((lo >> (bit % 8)) & mask) as i16 + carry;
        carry = (v + half) >> W;
        // in [-H, H - 1], fits i8
        #[allow(clippy::cast_possible_truncation)]
        {
            *o = (v - (carry << W)) as i8;
        }
    }
    if let Some(last) = out.last_mut() {
        #[allow(clippy::cast_possible_truncation)]
        {
            *last = carry as i8;
        }
    }
    out
}

/// The basepoint's comb table, built once per process on first use.
fn basepoint_comb() -> &'static Comb {
    static B_COMB: OnceLock<Comb> = OnceLock::new();
    B_COMB.get_or_init(|| Comb::new(&ED25519_BASEPOINT_POINT))
}

/// [s]B + [k]P, variable time, with P's comb table.
fn double_base_mul(p: &Comb, k: &Scalar, s: &Scalar) -> Option<EdwardsPoint> {
    let b = basepoint_comb();
    let kd = signed_digits(k.as_bytes());
    let sd = signed_digits(s.as_bytes());
    let mut acc = EdwardsPoint::default();
    for r in (0..M).rev() {
        if r != M - 1 {
            for _ in 0..W {
                acc += acc;
            }
        }
        p.add_stage(&mut acc, &kd, r)?;
        b.add_stage(&mut acc, &sd, r)?;
    }
    Some(acc)
}

/// A decoded, validated Ed25519 public key with a per-key precomputed comb
/// table of multiples of `-A` (76.8 KB on 32-bit targets), built at key load.
#[derive(Clone)]
pub struct Ed25519Public {
    /// The 32-byte encoding of `A`, hashed into every challenge.
    bytes: [u8; 32],
    /// `-A`.
    minus_a: EdwardsPoint,
    /// Fixed-base table for `-A` (None for one-shot keys).
    minus_a_table: Option<Comb>,
}

impl core::fmt::Debug for Ed25519Public {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ed25519Public")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// Is the y coordinate encoded in `bytes` (sign bit ignored) >= p = 2^255 - 19?
fn y_is_noncanonical(bytes: &[u8; 32]) -> bool {
    // p = ed ff ff .. ff 7f (little endian). y >= p iff the top byte (sign
    // bit masked) is 0x7f, the 30 middle bytes are all 0xff and the low
    // byte is >= 0xed.
    let Some((first, rest)) = bytes.split_first() else {
        return true;
    };
    let Some((last, middle)) = rest.split_last() else {
        return true;
    };
    (*last & 0x7f) == 0x7f && middle.iter().all(|&b| b == 0xff) && *first >= 0xed
}

/// Is `bytes` an encoding with the sign bit set and y = 1 or y = p - 1
/// (so x = 0, and the sign bit asks for "negative zero")?
fn is_negative_zero_x(bytes: &[u8; 32]) -> bool {
    let Some((first, rest)) = bytes.split_first() else {
        return true;
    };
    let Some((last, middle)) = rest.split_last() else {
        return true;
    };
    if *last & 0x80 == 0 {
        return false;
    }
    let top = *last & 0x7f;
    // y = 1
    let is_one = *first == 1 && top == 0 && middle.iter().all(|&b| b == 0);
    // y = p - 1 = ec ff .. ff 7f
    let is_minus_one = *first == 0xec && top == 0x7f && middle.iter().all(|&b| b == 0xff);
    is_one || is_minus_one
}

/// Decode a point the way ed25519-compact does for both `A` and `R`:
/// canonical encoding only, on the curve, not of small order.
fn decode_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if y_is_noncanonical(bytes) || is_negative_zero_x(bytes) {
        return None;
    }
    let p = CompressedEdwardsY(*bytes).decompress()?;
    if p.is_small_order() {
        return None;
    }
    Some(p)
}

impl Ed25519Public {
    /// None when the 32 bytes are not an acceptable public key (same rule as
    /// `ed25519-compact`'s `from_slice` + whatever verify would always reject).
    #[must_use]
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        let mut key = Self::from_bytes_one_shot(bytes)?;
        // Build the process-wide basepoint table now (once), not on the
        // first verification.
        let _ = basepoint_comb();
        key.minus_a_table = Some(Comb::new(&key.minus_a));
        Some(key)
    }

    /// As [`from_bytes`](Self::from_bytes) without the per-key table, for a key
    /// used for one verification (same acceptance rule, slower verify).
    #[must_use]
    pub fn from_bytes_one_shot(bytes: &[u8; 32]) -> Option<Self> {
        let a = decode_point(bytes)?;
        Some(Self {
            bytes: *bytes,
            minus_a: -a,
            minus_a_table: None,
        })
    }

    /// RFC 8032 Ed25519 (pure, no context) verification; signature must be
    /// exactly 64 bytes.
    #[must_use]
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <&[u8; 64]>::try_from(signature) else {
            return false;
        };
        let (Some(r_bytes), Some(s_bytes)) = (sig.first_chunk::<32>(), sig.last_chunk::<32>())
        else {
            return false;
        };
        // s must be canonical: s < L.
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*s_bytes)) else {
            return false;
        };
        // R: canonical, on the curve, not of small order.
        let Some(r) = decode_point(r_bytes) else {
            return false;
        };
        // k = SHA-512(R || A || M) mod L
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(self.bytes);
        h.update(msg);
        let digest: [u8; 64] = h.finalize().into();
        let k = Scalar::from_bytes_mod_order_wide(&digest);
        // R' = [s]B + [k](-A)
        let r_prime = match &self.minus_a_table {
            Some(t) => match double_base_mul(t, &k, &s) {
                Some(p) => p,
                None => return false,
            },
            None => EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &self.minus_a, &s),
        };
        // Accept iff R' - R has small order (ed25519-compact's rule).
        (r_prime - r).mul_by_cofactor().is_identity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(k: &Scalar, s: &Scalar, p: &EdwardsPoint, comb: &Comb) {
        let want = EdwardsPoint::vartime_double_scalar_mul_basepoint(k, p, s);
        assert_eq!(double_base_mul(comb, k, s), Some(want));
        // digits reconstruct the scalar
        let d = signed_digits(k.as_bytes());
        let mut acc = Scalar::ZERO;
        let radix = Scalar::from(1u64 << W);
        for &di in d.iter().rev() {
            acc *= radix;
            if di >= 0 {
                acc += Scalar::from(u64::from(di.unsigned_abs()));
            } else {
                acc -= Scalar::from(u64::from(di.unsigned_abs()));
            }
            assert!(di.unsigned_abs() as usize <= H);
        }
        assert_eq!(acc, *k);
    }

    #[test]
    fn comb_matches_dalek_on_edge_scalars() {
        let p = ED25519_BASEPOINT_POINT * Scalar::from(0x1234_5678_9abc_def1u64);
        let comb = Comb::new(&p);
        let l_minus_1 = -Scalar::ONE;
        let mut edge: Vec<Scalar> = vec![
            Scalar::ZERO,
            Scalar::ONE,
            l_minus_1,
            l_minus_1 - Scalar::ONE,
            Scalar::from(31u64),
            Scalar::from(32u64),
            Scalar::from(33u64),
            Scalar::from(63u64),
            Scalar::from(64u64),
        ];
        for pat in [0x00u8, 0xff, 0x20, 0x82, 0x08, 0x41, 0x10, 0xaa, 0x55] {
            let mut b = [pat; 32];
            b[31] &= 0x0f; // < 2^252 < L
            edge.push(Scalar::from_bytes_mod_order(b));
            b[31] = 0x10; // 2^252 + ...; reduced mod L
            edge.push(Scalar::from_bytes_mod_order(b));
        }
        for k in &edge {
            for s in &edge {
                check(k, s, &p, &comb);
            }
        }
    }
}
