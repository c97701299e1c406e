//! RSA public-key operations for signature *verification* only, tuned for wasm32.
//!
//! The `rsa` crate (num-bigint-dig, 64-bit digits) needs 64x64->128-bit multiplies, which wasm
//! does not have: each one becomes a call to a software routine, and an RS256 verify costs about
//! 1.5 ms in V8. This module computes the public operation `s^e mod n` with Montgomery
//! multiplication on small limbs whose products fit a native `i64.mul`, and implements the two
//! padding checks JWS needs on top of it: RSASSA-PKCS1-v1_5 (RS256/384/512) and RSASSA-PSS with
//! MGF1 and salt length = hash length (PS256/384/512), both per RFC 8017.
//!
//! # Arithmetic
//!
//! Numbers are little-endian arrays of `w`-bit limbs stored in `u32` (`w` = 28 for moduli up to
//! 3072 bits, 27 at 4096; see [`limb_width`]). Products of two limbs are below `2^56`, so a `u64`
//! accumulator can absorb a whole column of a product (`2l` of them, `l` limbs) without any carry
//! handling: the inner loops are just `t[i + j] += x * y[j]` (operand scanning), with no carry
//! chain from one step to the next, and carries move only once per Montgomery reduction row.
//! Squaring (all but one multiplication for `e = 65537`) sums each cross product once and
//! doubles. The multiplication, the squaring and the reduction all go four rows at a time
//! through one small kernel, [`block_rows`], which keeps four multipliers and the last four
//! operand limbs in registers: per column, one limb load and one load and store of `t` for four
//! products. Measured on RSA-2048 `s^65537 mod n`, against a 32-bit-limb CIOS loop (carry on
//! every step): about 1.4x faster in V8 (node 20) with two rows per pass, and the four-row
//! kernel takes another ~9 % off an RS256 verify in V8.
//!
//! `R = 2^(w l)` is chosen with `R > 4n`, so a Montgomery product of inputs below `2n` is again
//! below `2n` and no conditional subtraction is needed until the very end.
//!
//! Only public values go through this code (key, signature, message), so it makes no attempt at
//! constant time. It never panics on attacker input: every length is checked, and the
//! accumulator bounds are checked once per key in [`limb_width`].

use sha2::{Digest, Sha256, Sha384, Sha512};

/// Largest modulus accepted, in bits: the work is quadratic in the modulus size, so an absurd
/// key could otherwise turn every verification into a denial of service. (Key policy elsewhere
/// is stricter; this is only a backstop.)
const MAX_MODULUS_BITS: usize = 16_384;

/// An RSA public key prepared for repeated `s^e mod n` evaluation.
#[derive(Clone, Debug)]
pub struct RsaPublic {
    /// The modulus in `w`-bit limbs, little-endian, `l` of them with `w l >= bits + 2`.
    n: Vec<u32>,
    /// Limb width in bits.
    w: u32,
    /// `-n^-1 mod 2^w`.
    n0inv: u32,
    /// `R^2 mod n` with `R = 2^(w l)`, to move values into Montgomery form.
    r2: Vec<u32>,
    /// The public exponent, big-endian, without leading zero bytes (odd and >= 3).
    e: Vec<u8>,
    /// Modulus length in bytes (`k` in RFC 8017).
    k: usize,
    /// Modulus length in bits.
    bits: usize,
}

/// Limb width `w` and limb count `l` for a modulus of `bits` bits (`k` bytes): the widest
/// `w <= 28` for which no accumulator can overflow, and `l` such that `R = 2^(w l)` exceeds
/// `4n` and holds any `k`-byte string.
///
/// An accumulator `t[c]` holds at most `2l` limb products (column `c` of `a * b` and of `m * n`
/// in the reduction) plus one carry from the position below, which is at most `2^(64 - w)`.
fn limb_width(bits: usize, k: usize) -> Option<(u32, usize)> {
    let min_bits = (bits + 2).max(8 * k);
    (16u32..=28).rev().find_map(|w| {
        let l = min_bits.div_ceil(w as usize);
        let max_limb = (1u128 << w) - 1;
        let bound = 2 * (l as u128) * max_limb * max_limb + (1u128 << (64 - w));
        (bound <= u128::from(u64::MAX)).then_some((w, l))
    })
}

impl RsaPublic {
    /// `n`, `e`: big-endian bytes, as in a JWK after base64url decoding (leading zero bytes are
    /// allowed and ignored). `None` if `n` is even, `n < 2^511` (or over 16384 bits), `e < 3`,
    /// `e` is even, or `e >= n`.
    ///
    /// Any such `e` works, but [`public_op`](Self::public_op) costs one Montgomery squaring per
    /// bit of `e` (17 operations in all for 65537), so key policy should bound `e` as it bounds
    /// the modulus size (the `rsa` crate, for one, refuses `e > 2^33 - 1`). Preparing a key
    /// costs about half a verification; keep the result with the key rather than per request.
    pub fn new(n_be: &[u8], e_be: &[u8]) -> Option<Self> {
        let n_be = strip_leading_zeros(n_be);
        let e_be = strip_leading_zeros(e_be);
        let (&n_top, &n_low) = (n_be.first()?, n_be.last()?);
        if n_low & 1 == 0 {
            return None;
        }
        let bits = n_be.len() * 8 - n_top.leading_zeros() as usize;
        if !(512..=MAX_MODULUS_BITS).contains(&bits) {
            return None;
        }
        // e: odd, >= 3 (an odd e with e >= 2 is >= 3), and < n.
        let (&e_top, &e_low) = (e_be.first()?, e_be.last()?);
        if e_low & 1 == 0 || (e_be.len() == 1 && e_top < 3) {
            return None;
        }
        if e_be.len() > n_be.len() || (e_be.len() == n_be.len() && e_be >= n_be) {
            return None;
        }

        let k = n_be.len();
        let (w, l) = limb_width(bits, k)?;
        let mut n = vec![0u32; l];
        if !be_bytes_to_limbs(n_be, &mut n, w) {
            return None;
        }
        let n0 = *n.first()?;
        // Newton iteration for n0^-1 mod 2^32: n0 * n0 == 1 mod 8 for odd n0, so x = n0 is
        // correct to 3 bits, and each step doubles that: 6, 12, 24, 48 >= 32.
        let mut x = n0;
        for _ in 0..4 {
            x = x.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(x)));
        }
        let n0inv = x.wrapping_neg() & limb_mask(w);

        let mut key = RsaPublic {
            n,
            w,
            n0inv,
            r2: Vec::new(),
            e: e_be.to_vec(),
            k,
            bits,
        };
        key.r2 = key.compute_r2();
        Some(key)
    }

    /// `R^2 mod n`, i.e. the Montgomery form of `R = 2^(w l)`. Doubling `2^(bits-1)` (which is
    /// below `n`, as `n` is odd) gives `R mod n`, the Montgomery form of 1, and further
    /// doublings the Montgomery form of `2^j` for the top 8 bits `j` of the exponent `w l`; then
    /// for each remaining bit, a Montgomery squaring doubles the exponent and, if the bit is
    /// set, a modular doubling adds one. (A doubling costs about `1/l` of a squaring, hence the
    /// split: about 150 doublings and 4 squarings at 2048 bits.)
    fn compute_r2(&self) -> Vec<u32> {
        let l = self.n.len();
        let w = self.w as usize;
        let mut x = vec![0u32; l];
        let top = self.bits - 1;
        if let Some(limb) = x.get_mut(top / w) {
            *limb = 1 << (top % w);
        }
        let exp = w * l;
        let squarings = (usize::BITS - exp.leading_zeros()).saturating_sub(8);
        for _ in 0..(exp - top + (exp >> squarings)) {
            mod_double(&mut x, &self.n, self.w);
        }
        let mut y = vec![0u32; l];
        let mut t = vec![0u64; 2 * l];
        for i in (0..squarings).rev() {
            self.mont_sqr(&mut y, &x, &mut t);
            core::mem::swap(&mut x, &mut y);
            reduce_once(&mut x, &self.n, self.w);
            if (exp >> i) & 1 == 1 {
                mod_double(&mut x, &self.n, self.w);
            }
        }
        x
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Modulus size in bytes (`k` in RFC 8017); a signature must be exactly this long.
    pub fn size(&self) -> usize {
        self.k
    }

    /// RSAVP1 (RFC 8017 §5.2.2): `s^e mod n` as `k` big-endian bytes. `None` if the signature is
    /// not exactly `k` bytes long or `s >= n`.
    pub fn public_op(&self, sig: &[u8]) -> Option<Vec<u8>> {
        if sig.len() != self.k {
            return None;
        }
        let l = self.n.len();
        // Working buffers, allocated once per call: s, s in Montgomery form, two accumulators,
        // and the 2l-word product.
        let mut limbs = vec![0u32; 4 * l];
        let (s, rest) = limbs.split_at_mut(l);
        let (s_m, rest) = rest.split_at_mut(l);
        let (acc, tmp) = rest.split_at_mut(l);
        let mut t = vec![0u64; 2 * l];

        if !be_bytes_to_limbs(sig, s, self.w) || !less_than(s, &self.n) {
            return None;
        }

        // Left to right over the bits of e. The top bit is the initial s_m; every later bit is
        // a squaring, plus a multiplication when the bit is set. e is odd, so the last step is a
        // multiplication, done by plain s rather than s_m: (s^(e-1) R) * s * R^-1 = s^e, which
        // leaves Montgomery form without a separate conversion. Intermediate values are only
        // below 2n; one subtraction at the end makes the result canonical.
        self.mont_mul(s_m, s, &self.r2, &mut t);
        let (mut acc, mut tmp) = (acc, tmp);
        acc.copy_from_slice(s_m);
        let e_bits = self.e.len() * 8 - self.e.first().map_or(8, |b| b.leading_zeros() as usize);
        for i in (0..e_bits.saturating_sub(1)).rev() {
            self.mont_sqr(tmp, acc, &mut t);
            core::mem::swap(&mut acc, &mut tmp);
            if bit_be(&self.e, i) {
                let b: &[u32] = if i == 0 { s } else { s_m };
                self.mont_mul(tmp, acc, b, &mut t);
                core::mem::swap(&mut acc, &mut tmp);
            }
        }
        reduce_once(acc, &self.n, self.w);

        let mut out = vec![0u8; self.k];
        limbs_to_be_bytes(acc, &mut out, self.w);
        Some(out)
    }

    /// Montgomery product `out = a * b / R mod n`, for `a, b < 2n`; `out < 2n`. Rows of `a` go
    /// `BLOCK` at a time through [`block_rows`].
    fn mont_mul(&self, out: &mut [u32], a: &[u32], b: &[u32], t: &mut [u64]) {
        t.fill(0);
        let mut blocks = a.chunks_exact(BLOCK);
        for (bi, rows) in blocks.by_ref().enumerate() {
            let i = bi * BLOCK;
            let mut mult = [0u64; BLOCK];
            for (m, &x) in mult.iter_mut().zip(rows) {
                *m = u64::from(x);
            }
            // Column i + s gets a_(i+k) b_(s-k); b_(<0) = 0.
            if let Some(cols) = t.get_mut(i..) {
                block_rows(cols, b, &mult, [0; BLOCK]);
            }
        }
        let done = a.len() - blocks.remainder().len();
        for (r, &ar) in blocks.remainder().iter().enumerate() {
            let ar = u64::from(ar);
            if let Some(dst) = t.get_mut(done + r..) {
                for (d, &bj) in dst.iter_mut().zip(b) {
                    *d += ar * u64::from(bj);
                }
            }
        }
        self.reduce(out, t);
    }

    /// Montgomery square `out = a^2 / R mod n`, for `a < 2n`; `out < 2n`. The products
    /// `a_i a_j` with `i < j` are summed once and doubled. For each block of `BLOCK` rows
    /// `i ..= i+BLOCK-1`, the few products inside the block (the triangle `j < i+BLOCK`) are
    /// added one by one, and the rectangle `j >= i+BLOCK` goes through [`block_rows`].
    fn mont_sqr(&self, out: &mut [u32], a: &[u32], t: &mut [u64]) {
        t.fill(0);
        let l = a.len();
        let mut i = 0;
        while i + BLOCK <= l {
            let (Some(rows), Some(rest)) = (a.get(i..i + BLOCK), a.get(i + BLOCK..)) else {
                break;
            };
            let mut mult = [0u64; BLOCK];
            for (m, &x) in mult.iter_mut().zip(rows) {
                *m = u64::from(x);
            }
            // The triangle, columns 2i+1 ..= 2i+5, written out (as nested loops over `k < k2`,
            // LLVM leaves them rolled, with the multipliers in memory).
            let [a0, a1, a2, a3] = mult;
            if let Some([c1, c2, c3, c4, c5]) = t
                .get_mut(2 * i + 1..)
                .and_then(|c| c.first_chunk_mut::<5>())
            {
                *c1 += a0 * a1;
                *c2 += a0 * a2;
                *c3 += a0 * a3 + a1 * a2;
                *c4 += a1 * a3;
                *c5 += a2 * a3;
            }
            // Column 2i + BLOCK + s gets a_(i+k) a_(i+BLOCK+s-k); indices below i+BLOCK are the
            // triangle above, hence the zero start.
            if let Some(cols) = t.get_mut(2 * i + BLOCK..) {
                block_rows(cols, rest, &mult, [0; BLOCK]);
            }
            i += BLOCK;
        }
        // Remaining rows (fewer than BLOCK): their products among themselves.
        for r in i..l {
            let (Some(&ar), Some(rest), Some(dst)) =
                (a.get(r), a.get(r + 1..), t.get_mut(2 * r + 1..))
            else {
                break;
            };
            let ar = u64::from(ar);
            for (d, &aj) in dst.iter_mut().zip(rest) {
                *d += ar * u64::from(aj);
            }
        }
        for (pair, &ai) in t.chunks_exact_mut(2).zip(a) {
            let ai = u64::from(ai);
            if let [lo, hi] = pair {
                *lo = (*lo << 1) + ai * ai;
                *hi <<= 1;
            }
        }
        self.reduce(out, t);
    }

    /// Montgomery reduction of the `2l`-word lazy product `t` into `out` (`l` normalised limbs):
    /// row `i` picks `m_i` so that adding `m_i n 2^(w i)` clears word `i`, and moves that word's
    /// carry up; afterwards `t[l..]` holds `(t + M n) / R`. Rows go `BLOCK` at a time: the
    /// `m_i` of a block are found one after another on local copies of its first `BLOCK`
    /// columns (`m_(i+1)` depends on row `i` only through those), and the rest of the block's
    /// rows, columns `i+BLOCK ..`, go through [`block_rows`].
    fn reduce(&self, out: &mut [u32], t: &mut [u64]) {
        let w = self.w;
        let mask = limb_mask(w);
        let l = self.n.len();
        let n = &self.n[..];
        let (Some(&n0), Some(n_hi)) = (n.first(), n.get(BLOCK..)) else {
            return;
        };
        let n0 = u64::from(n0);
        let m_of = |x: u64| u64::from((x as u32).wrapping_mul(self.n0inv) & mask);
        let mut n_lo = [0u64; BLOCK];
        for (d, &x) in n_lo.iter_mut().zip(n) {
            *d = u64::from(x);
        }
        // The window start for block_rows: n_(BLOCK-1-k) in slot k.
        let mut start = [0u64; BLOCK];
        for (k, s) in start.iter_mut().enumerate().take(BLOCK - 1) {
            *s = n_lo[BLOCK - 1 - k];
        }
        let mut i = 0;
        while i + BLOCK <= l {
            let Some(row) = t.get_mut(i..) else {
                return;
            };
            let Some((head, rest)) = row.split_first_chunk_mut::<BLOCK>() else {
                return;
            };
            // m_i .. m_(i+3) in turn, each from its column after the rows before it in the
            // block (only their products with n_0 .. n_3 reach these columns) and the carry.
            let [n0, n1, n2, n3] = n_lo;
            let [c0, mut c1, mut c2, mut c3] = *head;
            let m0 = m_of(c0);
            c1 += ((c0 + m0 * n0) >> w) + m0 * n1;
            c2 += m0 * n2;
            c3 += m0 * n3;
            let m1 = m_of(c1);
            c2 += ((c1 + m1 * n0) >> w) + m1 * n1;
            c3 += m1 * n2;
            let m2 = m_of(c2);
            c3 += ((c2 + m2 * n0) >> w) + m2 * n1;
            let m3 = m_of(c3);
            if let Some(c) = rest.first_mut() {
                *c += (c3 + m3 * n0) >> w;
            }
            let m = [m0, m1, m2, m3];
            // Column i + BLOCK + s gets m_k n_(BLOCK+s-k).
            block_rows(rest, n_hi, &m, start);
            i += BLOCK;
        }
        // Remaining rows one at a time.
        while i < l {
            let Some((t0, rest)) = t.get_mut(i..).and_then(|r| r.split_first_mut()) else {
                return;
            };
            let m = m_of(*t0);
            if let Some(c) = rest.first_mut() {
                *c += (*t0 + m * n0) >> w;
            }
            for (c, &nj) in rest.iter_mut().zip(n.get(1..).unwrap_or(&[])) {
                *c += m * u64::from(nj);
            }
            i += 1;
        }
        let mut carry = 0u64;
        for (o, &v) in out.iter_mut().zip(t.get(l..).unwrap_or(&[])) {
            let v = v + carry;
            *o = (v as u32) & mask;
            carry = v >> w;
        }
    }
}

/// Rows per block in the multiplication, squaring and reduction loops. Measured in V8
/// (node 20, RSA-2048 verify): 4 is fastest; 2, 6 and 8 are 5-12 % slower (from 6 on, V8 runs
/// out of registers for the window), 3 and 5 slower still. The squaring triangle and the
/// reduction's `m` chain are written out for 4.
const BLOCK: usize = 4;

/// Adds `BLOCK` rows at once: column `s` of `cols` gets `sum_k mult[k] * x_(s-k)`, where
/// `x_j = stream[j]` for `j >= 0` and `x_(-1-k) = start[k]`, for every column that has a term
/// (`stream.len() + BLOCK - 1` columns, or fewer if `cols` is shorter). The last `BLOCK` values
/// of the stream stay in registers, so each column costs one load of `x` and one load and
/// store of the accumulator for `BLOCK` products, instead of one per product (operand
/// scanning) or two loads per product (product scanning).
///
/// Not inlined: as a function of its own it gets better register allocation in V8 (about 5 %
/// on an RSA-2048 verify against the same code inlined into its three callers).
#[inline(never)]
fn block_rows(cols: &mut [u64], stream: &[u32], mult: &[u64; BLOCK], start: [u64; BLOCK]) {
    // win[k] = x_(s-k) once shifted for column s.
    let mut win = start;
    let step = |win: &mut [u64; BLOCK], x: u64| -> u64 {
        for k in (1..BLOCK).rev() {
            win[k] = win[k - 1];
        }
        win[0] = x;
        let mut sum = 0u64;
        for (&m, &v) in mult.iter().zip(win.iter()) {
            sum += m * v;
        }
        sum
    };
    let (body, tail) = cols.split_at_mut(stream.len().min(cols.len()));
    for (c, &x) in body.iter_mut().zip(stream) {
        *c += step(&mut win, u64::from(x));
    }
    for c in tail.iter_mut().take(BLOCK - 1) {
        *c += step(&mut win, 0);
    }
}

/// The hash used by a signature scheme (for both the message digest and, for PSS, MGF1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256 (RS256, PS256).
    Sha256,
    /// SHA-384 (RS384, PS384).
    Sha384,
    /// SHA-512 (RS512, PS512).
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

    /// DER of `DigestInfo ::= SEQUENCE { AlgorithmIdentifier { oid, NULL }, OCTET STRING (hLen) }`
    /// up to the digest itself (RFC 8017 §9.2, note 1).
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

    /// Hash of the concatenation of `parts`.
    fn digest(self, parts: &[&[u8]]) -> HashOut {
        let mut out = HashOut {
            buf: [0u8; 64],
            len: self.len(),
        };
        fn run<D: Digest>(parts: &[&[u8]], dst: &mut [u8]) {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            let d = h.finalize();
            for (o, b) in dst.iter_mut().zip(d.iter()) {
                *o = *b;
            }
        }
        match self {
            Hash::Sha256 => run::<Sha256>(parts, &mut out.buf),
            Hash::Sha384 => run::<Sha384>(parts, &mut out.buf),
            Hash::Sha512 => run::<Sha512>(parts, &mut out.buf),
        }
        out
    }
}

/// A digest of at most 64 bytes, on the stack.
struct HashOut {
    buf: [u8; 64],
    len: usize,
}

impl HashOut {
    fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }
}

/// RSASSA-PKCS1-v1_5 verification (RFC 8017 §8.2.2): `EM = s^e mod n` must equal
/// `0x00 01 FF..FF 00 || DigestInfo(hash) || H(msg)` exactly, with at least 8 bytes of `FF`.
pub fn verify_pkcs1v15(key: &RsaPublic, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
    let Some(em) = key.public_op(sig) else {
        return false;
    };
    let prefix = hash.digest_info_prefix();
    let h = hash.digest(&[msg]);
    let h = h.as_slice();
    let k = em.len();
    let t_len = prefix.len() + h.len();
    if k < t_len + 11 {
        return false;
    }
    let ps_len = k - t_len - 3;
    let expected = [0x00, 0x01]
        .iter()
        .chain(core::iter::repeat_n(&0xffu8, ps_len))
        .chain(&[0x00])
        .chain(prefix)
        .chain(h);
    let mut diff = 0u8;
    let mut n = 0usize;
    for (a, b) in em.iter().zip(expected) {
        diff |= a ^ b;
        n += 1;
    }
    diff == 0 && n == k
}

/// RSASSA-PSS verification (RFC 8017 §8.1.2, EMSA-PSS-VERIFY §9.1.2) with MGF1 over the same
/// hash, salt length = hash length (as JWS PS256/384/512 require) and trailer `0xbc`.
pub fn verify_pss(key: &RsaPublic, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
    let Some(em_k) = key.public_op(sig) else {
        return false;
    };
    // emBits = modBits - 1, emLen = ceil(emBits / 8): one byte shorter than k when modBits is
    // 1 mod 8. I2OSP(m, emLen) then fails unless that extra leading byte is zero.
    let em_bits = key.bits - 1;
    let em_len = em_bits.div_ceil(8);
    let Some((lead, em)) = em_k
        .len()
        .checked_sub(em_len)
        .and_then(|lead_len| em_k.split_at_checked(lead_len))
    else {
        return false;
    };
    if lead.iter().any(|&b| b != 0) {
        return false;
    }

    let h_len = hash.len();
    let s_len = h_len;
    let m_hash = hash.digest(&[msg]);
    if em_len < h_len + s_len + 2 {
        return false;
    }
    if em.last() != Some(&0xbc) {
        return false;
    }
    let Some((masked_db, rest)) = em.split_at_checked(em_len - h_len - 1) else {
        return false;
    };
    let Some(h) = rest.get(..h_len) else {
        return false;
    };
    // The leftmost 8 emLen - emBits bits of EM must be zero.
    let zero_bits = 8 * em_len - em_bits; // 0..=7
    let top_mask: u8 = if zero_bits == 0 {
        0
    } else {
        0xff << (8 - zero_bits)
    };
    if masked_db.first().is_none_or(|&b| b & top_mask != 0) {
        return false;
    }

    // DB = maskedDB xor MGF1(H, db_len), then clear the same leftmost bits.
    let mut db = masked_db.to_vec();
    for (counter, chunk) in (0u32..).zip(db.chunks_mut(h_len)) {
        let mask = hash.digest(&[h, &counter.to_be_bytes()]);
        for (d, m) in chunk.iter_mut().zip(mask.as_slice()) {
            *d ^= m;
        }
    }
    if let Some(first) = db.first_mut() {
        *first &= 0xff >> zero_bits;
    }

    // DB = PS (zeros) || 0x01 || salt.
    let Some((ps, rest)) = db.split_at_checked(em_len - h_len - s_len - 2) else {
        return false;
    };
    let Some((&one, salt)) = rest.split_first() else {
        return false;
    };
    if ps.iter().any(|&b| b != 0) || one != 0x01 || salt.len() != s_len {
        return false;
    }

    let h2 = hash.digest(&[&[0u8; 8], m_hash.as_slice(), salt]);
    let diff = h
        .iter()
        .zip(h2.as_slice())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    diff == 0 && h.len() == h2.as_slice().len()
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or(&[])
}

fn limb_mask(w: u32) -> u32 {
    (1u32 << w) - 1
}

/// Big-endian bytes into little-endian `w`-bit limbs. False if the value does not fit.
fn be_bytes_to_limbs(bytes: &[u8], limbs: &mut [u32], w: u32) -> bool {
    limbs.fill(0);
    let mask = u64::from(limb_mask(w));
    let mut slots = limbs.iter_mut();
    let (mut acc, mut acc_bits) = (0u64, 0u32);
    let mut fits = true;
    let mut emit = |v: u64, fits: &mut bool| match slots.next() {
        Some(slot) => *slot = v as u32,
        None => *fits &= v == 0,
    };
    for &b in bytes.iter().rev() {
        acc |= u64::from(b) << acc_bits;
        acc_bits += 8;
        while acc_bits >= w {
            emit(acc & mask, &mut fits);
            acc >>= w;
            acc_bits -= w;
        }
    }
    emit(acc, &mut fits);
    fits
}

/// Little-endian `w`-bit limbs into a big-endian byte string of `out.len()` bytes (callers size
/// `out` to hold the value).
fn limbs_to_be_bytes(limbs: &[u32], out: &mut [u8], w: u32) {
    let mut limbs = limbs.iter();
    let (mut acc, mut acc_bits) = (0u64, 0u32);
    for o in out.iter_mut().rev() {
        while acc_bits < 8 {
            acc |= u64::from(limbs.next().copied().unwrap_or(0)) << acc_bits;
            acc_bits += w;
        }
        *o = acc as u8;
        acc >>= 8;
        acc_bits -= 8;
    }
}

/// Bit `i` (0 = least significant) of a big-endian byte string.
fn bit_be(bytes: &[u8], i: usize) -> bool {
    let Some(idx) = bytes.len().checked_sub(1 + i / 8) else {
        return false;
    };
    bytes.get(idx).is_some_and(|b| (b >> (i % 8)) & 1 == 1)
}

/// `a < b` for equal-length little-endian normalised limb strings.
fn less_than(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// `x -= n` for normalised `w`-bit limbs, `x >= n`.
fn sub_in_place(x: &mut [u32], n: &[u32], w: u32) {
    let mask = limb_mask(w);
    let mut borrow = 0u32;
    for (xi, &ni) in x.iter_mut().zip(n) {
        // Limbs are below 2^28, so a negative difference shows in the top bit.
        let d = xi.wrapping_sub(ni).wrapping_sub(borrow);
        borrow = d >> 31;
        *xi = d & mask;
    }
}

/// `x = x mod n` for `x < 2n`.
fn reduce_once(x: &mut [u32], n: &[u32], w: u32) {
    if !less_than(x, n) {
        sub_in_place(x, n, w);
    }
}

/// `x = 2x mod n` for `x < n` (`2x` fits: `R > 4n`).
fn mod_double(x: &mut [u32], n: &[u32], w: u32) {
    let mask = limb_mask(w);
    let mut carry = 0u32;
    for limb in x.iter_mut() {
        let v = (*limb << 1) | carry;
        carry = v >> w;
        *limb = v & mask;
    }
    reduce_once(x, n, w);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A fixed odd 1024-bit modulus (not an RSA key; the arithmetic only needs an odd n).
    fn modulus(bytes: usize) -> Vec<u8> {
        let mut n: Vec<u8> = (0..bytes)
            .map(|i| (i as u8).wrapping_mul(167).wrapping_add(0x5b))
            .collect();
        n[0] |= 0x80;
        *n.last_mut().unwrap() |= 1;
        n
    }

    fn be(value: u128, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let b = value.to_be_bytes();
        out[len - 16..].copy_from_slice(&b);
        out
    }

    #[test]
    fn rejects_bad_keys() {
        let n = modulus(128);
        assert!(RsaPublic::new(&n, &[1, 0, 1]).is_some());
        assert!(RsaPublic::new(&n, &[0, 0, 1, 0, 1]).is_some());
        let mut even = n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert!(RsaPublic::new(&even, &[1, 0, 1]).is_none());
        assert!(RsaPublic::new(&modulus(63), &[3]).is_none());
        let mut n511 = modulus(64);
        n511[0] = 0x7f;
        assert!(RsaPublic::new(&n511, &[3]).is_none());
        let mut n512 = modulus(64);
        n512[0] = 0x80;
        assert_eq!(RsaPublic::new(&n512, &[3]).unwrap().bits(), 512);
        assert!(RsaPublic::new(&modulus(2049), &[3]).is_none());
        assert!(RsaPublic::new(&[], &[3]).is_none());
        assert!(RsaPublic::new(&n, &[]).is_none());
        assert!(RsaPublic::new(&n, &[1]).is_none());
        assert!(RsaPublic::new(&n, &[0, 2]).is_none());
        assert!(RsaPublic::new(&n, &[4]).is_none());
        assert!(RsaPublic::new(&n, &[3]).is_some());
        // e >= n
        assert!(RsaPublic::new(&n, &n).is_none());
        let mut big_e = n.clone();
        big_e.insert(0, 1);
        assert!(RsaPublic::new(&n, &big_e).is_none());
        let mut e_below = n.clone();
        *e_below.last_mut().unwrap() -= 2;
        assert!(RsaPublic::new(&n, &e_below).is_some());
    }

    #[test]
    fn key_sizes_and_leading_zeros() {
        let mut n = vec![0u8, 0];
        n.extend(modulus(256));
        let key = RsaPublic::new(&n, &[1, 0, 1]).unwrap();
        assert_eq!(key.bits(), 2048);
        assert_eq!(key.size(), 256);
        let mut n = modulus(257);
        n[0] = 1;
        let key = RsaPublic::new(&n, &[1, 0, 1]).unwrap();
        assert_eq!(key.bits(), 2049);
        assert_eq!(key.size(), 257);
        assert_eq!(key.n.len(), 2051usize.div_ceil(key.w as usize));
    }

    #[test]
    fn montgomery_constants() {
        for len in [64usize, 65, 127, 128, 130, 256, 384, 512, 1024, 2048] {
            let key = RsaPublic::new(&modulus(len), &[3]).unwrap();
            let (w, l) = (key.w, key.n.len());
            let mask = limb_mask(w);
            assert_eq!(
                key.n[0].wrapping_mul(key.n0inv) & mask,
                mask,
                "n0inv, {len} bytes"
            );
            assert!(w as usize * l >= key.bits + 2 && w as usize * l >= 8 * len);
            assert!(key.n.iter().all(|&x| x <= mask));
            // R^2 mod n the slow way: 1 doubled 2 w l times.
            let mut slow = vec![0u32; l];
            slow[0] = 1;
            for _ in 0..2 * w as usize * l {
                mod_double(&mut slow, &key.n, w);
            }
            assert_eq!(key.r2, slow, "R2, {len} bytes");
            // MontMul(MontMul(R2, 1), 1) = 1.
            let mut one = vec![0u32; l];
            one[0] = 1;
            let (mut r, mut back, mut t) = (vec![0; l], vec![0; l], vec![0; 2 * l]);
            key.mont_mul(&mut r, &key.r2, &one, &mut t);
            key.mont_mul(&mut back, &r, &one, &mut t);
            reduce_once(&mut back, &key.n, w);
            assert_eq!(back, one, "R2, {len} bytes");
        }
        // The widths this gives for the usual sizes.
        assert_eq!(limb_width(2048, 256), Some((28, 74)));
        assert_eq!(limb_width(3072, 384), Some((28, 110)));
        assert_eq!(limb_width(4096, 512), Some((27, 152)));
        assert!(limb_width(MAX_MODULUS_BITS, MAX_MODULUS_BITS / 8).is_some());
    }

    #[test]
    fn limb_conversions_round_trip() {
        for w in [26u32, 27, 28] {
            for len in [1usize, 3, 4, 7, 64, 65] {
                let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37) | 1).collect();
                let l = (8 * len).div_ceil(w as usize);
                let mut limbs = vec![0u32; l];
                assert!(be_bytes_to_limbs(&bytes, &mut limbs, w));
                let mut back = vec![0u8; len];
                limbs_to_be_bytes(&limbs, &mut back, w);
                assert_eq!(back, bytes);
                // One limb short: fits only if the value has at most w (l - 1) bits.
                let value_bits = 8 * len - bytes[0].leading_zeros() as usize;
                let mut short = vec![0u32; l - 1];
                assert_eq!(
                    be_bytes_to_limbs(&bytes, &mut short, w),
                    value_bits <= w as usize * (l - 1)
                );
            }
        }
    }

    #[test]
    fn small_powers_are_exact() {
        for len in [64usize, 128, 129, 256, 512] {
            let n = modulus(len);
            let key = RsaPublic::new(&n, &[3]).unwrap();
            // s^3 < n: no reduction, so the result is exact.
            for (s, cube) in [(0u128, 0u128), (1, 1), (2, 8), (0xfff1, 0xfff1u128.pow(3))] {
                assert_eq!(key.public_op(&be(s, len)).unwrap(), be(cube, len));
            }
            // (n-1)^e = (-1)^e = n-1 for odd e.
            let mut nm1 = n.clone();
            *nm1.last_mut().unwrap() -= 1;
            assert_eq!(key.public_op(&nm1).unwrap(), nm1);
            let key = RsaPublic::new(&n, &[1, 0, 1]).unwrap();
            assert_eq!(key.public_op(&nm1).unwrap(), nm1);
            assert_eq!(key.public_op(&be(1, len)).unwrap(), be(1, len));
            // s >= n and wrong lengths are rejected.
            assert!(key.public_op(&n).is_none());
            assert!(key.public_op(&[0xff; 1].repeat(len)).is_none());
            assert!(key.public_op(&be(1, len - 1)).is_none());
            assert!(key.public_op(&be(1, len + 1)).is_none());
            assert!(key.public_op(&[]).is_none());
        }
    }

    #[test]
    fn garbage_never_verifies() {
        let n = modulus(256);
        let key = RsaPublic::new(&n, &[1, 0, 1]).unwrap();
        for sig in [
            vec![],
            vec![0u8; 256],
            be(1, 256),
            vec![0xff; 256],
            vec![0u8; 300],
        ] {
            for hash in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                assert!(!verify_pkcs1v15(&key, hash, b"msg", &sig));
                assert!(!verify_pss(&key, hash, b"msg", &sig));
            }
        }
    }

    #[test]
    fn digest_info_prefixes_match_lengths() {
        for hash in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let p = hash.digest_info_prefix();
            assert_eq!(p.len(), 19);
            assert_eq!(usize::from(p[1]), 17 + hash.len());
            assert_eq!(usize::from(p[18]), hash.len());
            assert_eq!(hash.digest(&[b"abc"]).as_slice().len(), hash.len());
        }
    }
}
