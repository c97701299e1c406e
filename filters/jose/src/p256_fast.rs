//! Verification-only ECDSA over NIST P-256 (secp256r1), tuned for wasm32.
//!
//! Every input here (public key, digest, signature) is public, so the code is
//! deliberately variable-time. It must never be used for signing or with secret data.
//!
//! Design, and why:
//! - Field elements are 8 × u32 little-endian limbs: wasm32 has a native 64-bit
//!   multiply, while a 64×64→128 product is emulated and slow. Products are taken
//!   schoolbook into 16 words and reduced with the NIST/Solinas identity for
//!   p = 2^256 − 2^224 + 2^192 + 2^96 − 1, so no Montgomery conversions are needed
//!   (and r can be compared to x(R) directly). Elements are always kept fully reduced.
//! - Verification does no doublings: both G (shared, built once) and the key Q
//!   (built in `from_affine`) have fixed-base signed-window tables in affine form,
//!   so u1·G + u2·Q is just a run of mixed Jacobian+affine additions.
//! - Scalars mod n are only needed for s⁻¹ (binary extended GCD) and two products
//!   (Montgomery multiplication), once per verification.
//! - Keys seen once (a DPoP proof's own `jwk`) would pay more for their table than for the
//!   verification, so they can be loaded without one: u2·Q then takes a left-to-right
//!   4-bit window (256 doublings), still with the shared G table for u1·G.
//! - The final x(R) mod n == r check is done projectively (X == r·Z²) to avoid
//!   a field inversion.

use std::sync::OnceLock;

/// 256-bit integer as 8 little-endian 32-bit limbs.
type U256 = [u32; 8];

/// Parses a 64-digit big-endian hex constant at compile time, so the curve
/// constants below can be written exactly as printed in SEC 2 / FIPS 186.
const fn hex_u256(s: &str) -> U256 {
    let b = s.as_bytes();
    let mut out = [0u32; 8];
    let mut i = 0;
    while i < 64 {
        let c = b[i];
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => 0,
        } as u32;
        // Digit i (from the most significant end) lands at bit 4·(63 − i).
        let bit = 4 * (63 - i);
        out[bit / 32] |= d << (bit % 32);
        i += 1;
    }
    out
}

/// Field prime p = 2^256 − 2^224 + 2^192 + 2^96 − 1.
const P: U256 = hex_u256("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
/// Group order n.
const N: U256 = hex_u256("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
/// Curve coefficient b (a = −3).
const B: U256 = hex_u256("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b");
/// Base point G.
const GX: U256 = hex_u256("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
const GY: U256 = hex_u256("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");

const ZERO: U256 = [0; 8];
const ONE: U256 = [1, 0, 0, 0, 0, 0, 0, 0];

/// Window width for the shared G table: 37 windows × 64 points × 64 B ≈ 148 KiB, built once.
const G_WINDOW: u32 = 7;
/// Window width for per-key tables: 52 windows × 16 points × 64 B = 52 KiB per key.
const Q_WINDOW: u32 = 5;

// ---------------------------------------------------------------------------
// Plain 256-bit helpers
// ---------------------------------------------------------------------------

fn from_be_bytes(b: &[u8; 32]) -> U256 {
    let mut out = [0u32; 8];
    for (i, limb) in out.iter_mut().enumerate() {
        let o = 28 - 4 * i;
        *limb = u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    }
    out
}

fn is_zero(a: &U256) -> bool {
    a.iter().all(|&w| w == 0)
}

/// a >= b
fn geq(a: &U256, b: &U256) -> bool {
    for i in (0..8).rev() {
        if a[i] != b[i] {
            return a[i] > b[i];
        }
    }
    true
}

/// a + b, returning the carry out.
fn add_raw(a: &U256, b: &U256) -> (U256, bool) {
    let mut out = [0u32; 8];
    let mut carry = 0u64;
    for i in 0..8 {
        let v = a[i] as u64 + b[i] as u64 + carry;
        out[i] = v as u32;
        carry = v >> 32;
    }
    (out, carry != 0)
}

/// a − b, returning the borrow out.
fn sub_raw(a: &U256, b: &U256) -> (U256, bool) {
    let mut out = [0u32; 8];
    let mut borrow = 0i64;
    for i in 0..8 {
        let v = a[i] as i64 - b[i] as i64 + borrow;
        out[i] = v as u32;
        borrow = v >> 32;
    }
    (out, borrow != 0)
}

/// (a + b) mod m for a, b < m.
fn add_mod(a: &U256, b: &U256, m: &U256) -> U256 {
    let (s, carry) = add_raw(a, b);
    if carry || geq(&s, m) {
        sub_raw(&s, m).0
    } else {
        s
    }
}

/// (a − b) mod m for a, b < m.
fn sub_mod(a: &U256, b: &U256, m: &U256) -> U256 {
    let (d, borrow) = sub_raw(a, b);
    if borrow {
        add_raw(&d, m).0
    } else {
        d
    }
}

// ---------------------------------------------------------------------------
// Field arithmetic mod p (elements always in [0, p))
// ---------------------------------------------------------------------------

fn fe_add(a: &U256, b: &U256) -> U256 {
    add_mod(a, b, &P)
}

fn fe_sub(a: &U256, b: &U256) -> U256 {
    sub_mod(a, b, &P)
}

fn fe_neg(a: &U256) -> U256 {
    sub_mod(&ZERO, a, &P)
}

/// Reduces a 512-bit product (16 little-endian words) mod p with the
/// FIPS 186 fast-reduction identity for P-256: the high words fold back into the
/// low eight through the sparse representation of 2^256 mod p.
fn fe_reduce(c: &[u64; 16]) -> U256 {
    let [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15] =
        c.map(|v| v as i64);
    // Word k of s1 + 2·s2 + 2·s3 + s4 + s5 − d1 − d2 − d3 − d4 (FIPS 186-4, D.2.3).
    let w = [
        c0 + c8 + c9 - c11 - c12 - c13 - c14,
        c1 + c9 + c10 - c12 - c13 - c14 - c15,
        c2 + c10 + c11 - c13 - c14 - c15,
        c3 + 2 * c11 + 2 * c12 + c13 - c15 - c8 - c9,
        c4 + 2 * c12 + 2 * c13 + c14 - c9 - c10,
        c5 + 2 * c13 + 2 * c14 + c15 - c10 - c11,
        c6 + 3 * c14 + 2 * c15 + c13 - c8 - c9,
        c7 + 3 * c15 + c8 - c10 - c11 - c12 - c13,
    ];
    let mut out = [0u32; 8];
    let mut carry = 0i64;
    for k in 0..8 {
        let v = w[k] + carry;
        out[k] = v as u32;
        carry = v >> 32; // arithmetic shift: floor division, carries may be negative
    }
    // The value is now out + carry·2^256 with |carry| small. Fold the carry using
    // 2^256 ≡ 2^224 − 2^192 − 2^96 + 1 (mod p); this converges in at most two rounds.
    while carry != 0 {
        let t = carry;
        let fold = [t, 0, 0, -t, 0, 0, -t, t];
        carry = 0;
        for k in 0..8 {
            let v = out[k] as i64 + fold[k] + carry;
            out[k] = v as u32;
            carry = v >> 32;
        }
    }
    // out < 2^256 < 2p, so one subtraction suffices.
    if geq(&out, &P) {
        sub_raw(&out, &P).0
    } else {
        out
    }
}

fn fe_mul(a: &U256, b: &U256) -> U256 {
    let mut t = [0u64; 16];
    for i in 0..8 {
        let ai = a[i] as u64;
        let mut carry = 0u64;
        for j in 0..8 {
            // ≤ (2^32−1)² + 2·(2^32−1) = 2^64 − 1: cannot overflow.
            let v = ai * b[j] as u64 + t[i + j] + carry;
            t[i + j] = v & 0xffff_ffff;
            carry = v >> 32;
        }
        t[i + 8] = carry;
    }
    fe_reduce(&t)
}

fn fe_sqr(a: &U256) -> U256 {
    // Off-diagonal products once, doubled, plus the squares: 36 multiplies instead of 64.
    let mut t = [0u64; 16];
    for i in 0..8 {
        let ai = a[i] as u64;
        let mut carry = 0u64;
        for j in (i + 1)..8 {
            let v = ai * a[j] as u64 + t[i + j] + carry;
            t[i + j] = v & 0xffff_ffff;
            carry = v >> 32;
        }
        t[i + 8] = carry;
    }
    let mut carry = 0u64;
    for k in 0..16 {
        // Double the cross terms and add the diagonal square's half-word.
        let sq = a[k / 2] as u64 * a[k / 2] as u64;
        let d = if k % 2 == 0 {
            sq & 0xffff_ffff
        } else {
            sq >> 32
        };
        let v = (t[k] << 1) + d + carry;
        t[k] = v & 0xffff_ffff;
        carry = v >> 32;
    }
    fe_reduce(&t)
}

/// a^(p−2) = a⁻¹ (0 maps to 0). Only used when building tables, never per verification.
fn fe_invert(a: &U256) -> U256 {
    let e = sub_raw(&P, &[2, 0, 0, 0, 0, 0, 0, 0]).0;
    let mut r = ONE;
    for i in (0..256).rev() {
        r = fe_sqr(&r);
        if (e[i / 32] >> (i % 32)) & 1 == 1 {
            r = fe_mul(&r, a);
        }
    }
    r
}

// ---------------------------------------------------------------------------
// Scalar arithmetic mod n (only a handful of operations per verification)
// ---------------------------------------------------------------------------

/// −n⁻¹ mod 2^32 for Montgomery reduction, by Newton iteration.
const N0INV: u32 = {
    let mut inv: u32 = 1;
    let mut i = 0;
    while i < 5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(N[0].wrapping_mul(inv)));
        i += 1;
    }
    inv.wrapping_neg()
};

/// R² mod n with R = 2^256, by 512 modular doublings of 1 at compile time.
const N_R2: U256 = {
    let mut x = ONE;
    let mut i = 0;
    while i < 512 {
        // x = 2x mod n
        let mut d = [0u32; 8];
        let mut carry = 0u32;
        let mut k = 0;
        while k < 8 {
            d[k] = (x[k] << 1) | carry;
            carry = x[k] >> 31;
            k += 1;
        }
        // if 2x ≥ n (overflowed or compares ≥), subtract n
        let mut ge = carry != 0;
        if !ge {
            ge = true;
            let mut k = 8;
            while k > 0 {
                k -= 1;
                if d[k] != N[k] {
                    ge = d[k] > N[k];
                    break;
                }
            }
        }
        if ge {
            let mut borrow = 0i64;
            let mut k = 0;
            while k < 8 {
                let v = d[k] as i64 - N[k] as i64 + borrow;
                d[k] = v as u32;
                borrow = v >> 32;
                k += 1;
            }
        }
        x = d;
        i += 1;
    }
    x
};

/// Montgomery product a·b·2^−256 mod n, for a < 2^256 and b < n.
fn sc_mont_mul(a: &U256, b: &U256) -> U256 {
    let mut t = [0u64; 10];
    for &ai in a {
        let ai = ai as u64;
        let mut c = 0u64;
        for j in 0..8 {
            let v = t[j] + ai * b[j] as u64 + c;
            t[j] = v & 0xffff_ffff;
            c = v >> 32;
        }
        let v = t[8] + c;
        t[8] = v & 0xffff_ffff;
        t[9] = v >> 32;

        let m = (t[0] as u32).wrapping_mul(N0INV) as u64;
        let mut c = (t[0] + m * N[0] as u64) >> 32;
        for j in 1..8 {
            let v = t[j] + m * N[j] as u64 + c;
            t[j - 1] = v & 0xffff_ffff;
            c = v >> 32;
        }
        let v = t[8] + c;
        t[7] = v & 0xffff_ffff;
        t[8] = t[9] + (v >> 32);
    }
    let mut out = [0u32; 8];
    for (o, &v) in out.iter_mut().zip(t.iter()) {
        *o = v as u32;
    }
    // Result < 2n.
    if t[8] != 0 || geq(&out, &N) {
        sub_raw(&out, &N).0
    } else {
        out
    }
}

// The binary GCD below only adds, subtracts and shifts; wasm32 does those natively
// on 64 bits, so it works on 4 × u64 limbs (no products involved).
type W256 = [u64; 4];

fn to_w(a: &U256) -> W256 {
    let mut out = [0u64; 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = a[2 * i] as u64 | (a[2 * i + 1] as u64) << 32;
    }
    out
}

fn from_w(a: &W256) -> U256 {
    let mut out = [0u32; 8];
    for (i, &w) in a.iter().enumerate() {
        out[2 * i] = w as u32;
        out[2 * i + 1] = (w >> 32) as u32;
    }
    out
}

fn w_geq(a: &W256, b: &W256) -> bool {
    for i in (0..4).rev() {
        if a[i] != b[i] {
            return a[i] > b[i];
        }
    }
    true
}

fn w_add(a: &W256, b: &W256) -> (W256, bool) {
    let mut out = [0u64; 4];
    let mut carry = false;
    for i in 0..4 {
        let (s1, c1) = a[i].overflowing_add(b[i]);
        let (s2, c2) = s1.overflowing_add(carry as u64);
        out[i] = s2;
        carry = c1 | c2;
    }
    (out, carry)
}

fn w_sub(a: &W256, b: &W256) -> (W256, bool) {
    let mut out = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (d1, b1) = a[i].overflowing_sub(b[i]);
        let (d2, b2) = d1.overflowing_sub(borrow as u64);
        out[i] = d2;
        borrow = b1 | b2;
    }
    (out, borrow)
}

/// a >> 1, shifting `top` in as bit 255.
fn w_shr1(a: &W256, top: bool) -> W256 {
    [
        (a[0] >> 1) | (a[1] << 63),
        (a[1] >> 1) | (a[2] << 63),
        (a[2] >> 1) | (a[3] << 63),
        (a[3] >> 1) | ((top as u64) << 63),
    ]
}

/// x/2 mod n for x < n.
fn w_half_mod(x: &W256, n: &W256) -> W256 {
    if x[0] & 1 == 0 {
        w_shr1(x, false)
    } else {
        let (s, carry) = w_add(x, n);
        w_shr1(&s, carry)
    }
}

/// (a − b) mod n for a, b < n.
fn w_sub_mod(a: &W256, b: &W256, n: &W256) -> W256 {
    let (d, borrow) = w_sub(a, b);
    if borrow {
        w_add(&d, n).0
    } else {
        d
    }
}

/// a⁻¹ mod n by the binary extended Euclidean algorithm (variable time).
/// Requires a in [1, n−1]; returns 0 otherwise.
fn sc_invert(a: &U256) -> U256 {
    if is_zero(a) || geq(a, &N) {
        return ZERO;
    }
    let n = to_w(&N);
    let one: W256 = [1, 0, 0, 0];
    // Invariants: x1·a ≡ u and x2·a ≡ v (mod n); gcd(u, v) = 1 since n is prime.
    let (mut u, mut v) = (to_w(a), n);
    let (mut x1, mut x2) = (one, [0u64; 4]);
    while u != one && v != one {
        // gcd(u, v) = 1 means neither reaches 0 before one of them reaches 1;
        // the check only guards against looping forever should that ever break.
        if u == [0; 4] || v == [0; 4] {
            return ZERO;
        }
        while u[0] & 1 == 0 {
            u = w_shr1(&u, false);
            x1 = w_half_mod(&x1, &n);
        }
        while v[0] & 1 == 0 {
            v = w_shr1(&v, false);
            x2 = w_half_mod(&x2, &n);
        }
        if w_geq(&u, &v) {
            u = w_sub(&u, &v).0;
            x1 = w_sub_mod(&x1, &x2, &n);
        } else {
            v = w_sub(&v, &u).0;
            x2 = w_sub_mod(&x2, &x1, &n);
        }
    }
    from_w(if u == one { &x1 } else { &x2 })
}

/// a·b mod n for b < n, computed as Mont(Mont(a, R²), b).
fn sc_mul(a: &U256, b: &U256) -> U256 {
    sc_mont_mul(&sc_mont_mul(a, &N_R2), b)
}

// ---------------------------------------------------------------------------
// Points
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Affine {
    x: U256,
    y: U256,
}

/// Jacobian (X : Y : Z) for x = X/Z², y = Y/Z³; Z = 0 is the identity.
#[derive(Clone, Copy, Debug)]
struct Jacobian {
    x: U256,
    y: U256,
    z: U256,
}

const IDENTITY: Jacobian = Jacobian {
    x: ONE,
    y: ONE,
    z: ZERO,
};

impl Jacobian {
    fn from_affine(p: &Affine) -> Self {
        Jacobian {
            x: p.x,
            y: p.y,
            z: ONE,
        }
    }

    fn is_identity(&self) -> bool {
        is_zero(&self.z)
    }
}

fn on_curve(x: &U256, y: &U256) -> bool {
    // y² = x³ − 3x + b
    let x2 = fe_sqr(x);
    let x3 = fe_mul(&x2, x);
    let three_x = fe_add(&fe_add(x, x), x);
    let rhs = fe_add(&fe_sub(&x3, &three_x), &B);
    fe_sqr(y) == rhs
}

/// 2·P, "dbl-2001-b" (a = −3). P-256 has odd order, so no point has y = 0 and
/// only the identity doubles to the identity.
fn double(p: &Jacobian) -> Jacobian {
    if p.is_identity() {
        return *p;
    }
    let delta = fe_sqr(&p.z);
    let gamma = fe_sqr(&p.y);
    let beta = fe_mul(&p.x, &gamma);
    let t = fe_mul(&fe_sub(&p.x, &delta), &fe_add(&p.x, &delta));
    let alpha = fe_add(&fe_add(&t, &t), &t);
    let beta2 = fe_add(&beta, &beta);
    let beta4 = fe_add(&beta2, &beta2);
    let beta8 = fe_add(&beta4, &beta4);
    let x3 = fe_sub(&fe_sqr(&alpha), &beta8);
    let yz = fe_add(&p.y, &p.z);
    let z3 = fe_sub(&fe_sub(&fe_sqr(&yz), &gamma), &delta);
    let g2 = fe_sqr(&gamma);
    let g2_2 = fe_add(&g2, &g2);
    let g2_4 = fe_add(&g2_2, &g2_2);
    let g2_8 = fe_add(&g2_4, &g2_4);
    let y3 = fe_sub(&fe_mul(&alpha, &fe_sub(&beta4, &x3)), &g2_8);
    Jacobian {
        x: x3,
        y: y3,
        z: z3,
    }
}

/// P + Q with Q affine ("madd-2007-bl" shape, 8M + 3S), handling every special
/// case: P = identity, Q = P (falls back to doubling), Q = −P (identity).
fn add_mixed(p: &Jacobian, q: &Affine) -> Jacobian {
    if p.is_identity() {
        return Jacobian::from_affine(q);
    }
    let z1z1 = fe_sqr(&p.z);
    let u2 = fe_mul(&q.x, &z1z1);
    let s2 = fe_mul(&q.y, &fe_mul(&p.z, &z1z1));
    let h = fe_sub(&u2, &p.x);
    let r = fe_sub(&s2, &p.y);
    if is_zero(&h) {
        return if is_zero(&r) { double(p) } else { IDENTITY };
    }
    let hh = fe_sqr(&h);
    let hhh = fe_mul(&h, &hh);
    let v = fe_mul(&p.x, &hh);
    let x3 = fe_sub(&fe_sub(&fe_sqr(&r), &hhh), &fe_add(&v, &v));
    let y3 = fe_sub(&fe_mul(&r, &fe_sub(&v, &x3)), &fe_mul(&p.y, &hhh));
    let z3 = fe_mul(&p.z, &h);
    Jacobian {
        x: x3,
        y: y3,
        z: z3,
    }
}

/// P + Q, both Jacobian ("add-1998-cmo-2"), with the same special cases: table building and
/// keys without a table.
fn add(p: &Jacobian, q: &Jacobian) -> Jacobian {
    if p.is_identity() {
        return *q;
    }
    if q.is_identity() {
        return *p;
    }
    let z1z1 = fe_sqr(&p.z);
    let z2z2 = fe_sqr(&q.z);
    let u1 = fe_mul(&p.x, &z2z2);
    let u2 = fe_mul(&q.x, &z1z1);
    let s1 = fe_mul(&p.y, &fe_mul(&q.z, &z2z2));
    let s2 = fe_mul(&q.y, &fe_mul(&p.z, &z1z1));
    let h = fe_sub(&u2, &u1);
    let r = fe_sub(&s2, &s1);
    if is_zero(&h) {
        return if is_zero(&r) { double(p) } else { IDENTITY };
    }
    let hh = fe_sqr(&h);
    let hhh = fe_mul(&h, &hh);
    let v = fe_mul(&u1, &hh);
    let x3 = fe_sub(&fe_sub(&fe_sqr(&r), &hhh), &fe_add(&v, &v));
    let y3 = fe_sub(&fe_mul(&r, &fe_sub(&v, &x3)), &fe_mul(&s1, &hhh));
    let z3 = fe_mul(&fe_mul(&p.z, &q.z), &h);
    Jacobian {
        x: x3,
        y: y3,
        z: z3,
    }
}

/// Converts many points to affine with a single inversion (Montgomery's trick).
/// None if any point is the identity (cannot happen for the tables built here).
fn batch_to_affine(points: &[Jacobian]) -> Option<Vec<Affine>> {
    let mut prefix = Vec::with_capacity(points.len());
    let mut acc = ONE;
    for p in points {
        if p.is_identity() {
            return None;
        }
        prefix.push(acc);
        acc = fe_mul(&acc, &p.z);
    }
    // inv = (z_0 ⋯ z_{k})⁻¹, peeled off from the back.
    let mut inv = fe_invert(&acc);
    let mut out = vec![Affine { x: ZERO, y: ZERO }; points.len()];
    for ((p, before), slot) in points.iter().zip(prefix.iter()).zip(out.iter_mut()).rev() {
        let zinv = fe_mul(&inv, before);
        inv = fe_mul(&inv, &p.z);
        let zinv2 = fe_sqr(&zinv);
        let zinv3 = fe_mul(&zinv2, &zinv);
        *slot = Affine {
            x: fe_mul(&p.x, &zinv2),
            y: fe_mul(&p.y, &zinv3),
        };
    }
    Some(out)
}

/// Number of signed windows of width w needed for scalars < 2^256: the top window
/// must be able to absorb the recoding carry without emitting another one.
const fn window_count(w: u32) -> usize {
    257_u32.div_ceil(w) as usize
}

/// k·P by a left-to-right fixed 4-bit window, for keys without a table.
fn mul_window4(p: &Affine, k: &U256) -> Jacobian {
    let base = Jacobian::from_affine(p);
    let mut multiples = [IDENTITY; 16];
    let mut prev = IDENTITY;
    for m in multiples.iter_mut().skip(1) {
        prev = add(&prev, &base);
        *m = prev;
    }
    let mut acc = IDENTITY;
    for limb in k.iter().rev() {
        for shift in (0..8).rev() {
            for _ in 0..4 {
                acc = double(&acc);
            }
            let nibble = ((limb >> (4 * shift)) & 0xf) as usize;
            if let Some(m) = multiples.get(nibble).filter(|_| nibble != 0) {
                acc = add(&acc, m);
            }
        }
    }
    acc
}

/// Fixed-base table: row i holds j·2^(w·i)·P for j = 1..2^(w−1), in affine form.
#[derive(Clone)]
struct Table {
    w: u32,
    points: Vec<Affine>,
}

impl Table {
    fn build(p: &Affine, w: u32) -> Option<Self> {
        let half = 1usize << (w - 1);
        let windows = window_count(w);
        let mut jac = Vec::with_capacity(windows * half);
        let mut base = Jacobian::from_affine(p);
        for _ in 0..windows {
            let mut cur = base;
            jac.push(cur);
            for _ in 1..half {
                cur = add(&cur, &base);
                jac.push(cur);
            }
            // cur = 2^(w−1)·base, so the next row's base is 2·cur = 2^w·base.
            base = double(&cur);
        }
        Some(Table {
            w,
            points: batch_to_affine(&jac)?,
        })
    }

    /// acc += k·P, by signed w-bit recoding of k (digits in [−2^(w−1), 2^(w−1)]).
    /// Returns false only if a table lookup were out of range (impossible by construction).
    fn accumulate(&self, acc: &mut Jacobian, k: &U256) -> bool {
        let w = self.w;
        let half = 1u32 << (w - 1);
        let mask = (1u64 << w) - 1;
        let mut carry = 0u32;
        for i in 0..window_count(w) {
            let bit = i * w as usize;
            let limb = bit / 32;
            let off = bit % 32;
            let lo = k.get(limb).copied().unwrap_or(0) as u64;
            let hi = k.get(limb + 1).copied().unwrap_or(0) as u64;
            let v = ((((hi << 32) | lo) >> off) & mask) as u32 + carry;
            if v == 0 {
                continue;
            }
            let (mag, negate) = if v > half {
                carry = 1;
                ((1u32 << w) - v, true)
            } else {
                carry = 0;
                (v, false)
            };
            if mag == 0 {
                continue; // v == 2^w: digit 0 with a carry
            }
            let Some(pt) = self.points.get(i * half as usize + (mag as usize - 1)) else {
                return false;
            };
            *acc = if negate {
                add_mixed(
                    acc,
                    &Affine {
                        x: pt.x,
                        y: fe_neg(&pt.y),
                    },
                )
            } else {
                add_mixed(acc, pt)
            };
        }
        carry == 0
    }
}

/// The shared generator table, built on first use (None only if building failed,
/// which cannot happen for G; callers then reject rather than panic).
fn g_table() -> Option<&'static Table> {
    static G_TABLE: OnceLock<Option<Table>> = OnceLock::new();
    G_TABLE
        .get_or_init(|| Table::build(&Affine { x: GX, y: GY }, G_WINDOW))
        .as_ref()
}

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// A P-256 public key, with its precomputed verification table (~52 KiB) unless loaded with
/// [`P256Public::from_affine_one_shot`].
#[derive(Clone)]
pub struct P256Public {
    q: Affine,
    table: Option<Table>,
}

impl std::fmt::Debug for P256Public {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P256Public")
            .field("table", &self.table.is_some())
            .finish_non_exhaustive()
    }
}

impl P256Public {
    /// From the affine coordinates as 32-byte big-endian (JWK x, y). None if a coordinate is ≥ p,
    /// the point is not on the curve, or is the identity. Builds the per-key table (done once per key load).
    pub fn from_affine(x: &[u8; 32], y: &[u8; 32]) -> Option<Self> {
        let mut key = Self::from_affine_one_shot(x, y)?;
        key.table = Some(Table::build(&key.q, Q_WINDOW)?);
        Some(key)
    }

    /// As [`from_affine`](Self::from_affine) without the per-key table: for a key used for one
    /// verification (a DPoP proof's `jwk`), where building the table would cost more than it saves.
    pub fn from_affine_one_shot(x: &[u8; 32], y: &[u8; 32]) -> Option<Self> {
        let x = from_be_bytes(x);
        let y = from_be_bytes(y);
        if geq(&x, &P) || geq(&y, &P) {
            return None;
        }
        // The identity has no affine form; (0, 0) and friends fail the curve equation.
        if !on_curve(&x, &y) {
            return None;
        }
        // Build the shared G table now, so key load (not the first request) pays for it.
        g_table()?;
        Some(P256Public {
            q: Affine { x, y },
            table: None,
        })
    }

    /// ECDSA verification of a SHA-256 digest with a P1363 signature (r || s, exactly 64 bytes;
    /// any other length is false). r and s must be in [1, n-1]. Accepts high-s (as ECDSA does).
    pub fn verify_prehashed(&self, digest: &[u8; 32], signature: &[u8]) -> bool {
        let Ok(sig) = <&[u8; 64]>::try_from(signature) else {
            return false;
        };
        let (Ok(rb), Ok(sb)) = (
            <&[u8; 32]>::try_from(&sig[..32]),
            <&[u8; 32]>::try_from(&sig[32..]),
        ) else {
            return false;
        };
        let r = from_be_bytes(rb);
        let s = from_be_bytes(sb);
        if is_zero(&r) || geq(&r, &N) || is_zero(&s) || geq(&s, &N) {
            return false;
        }
        // The digest is exactly 256 bits, so no truncation; e < 2^256 < 2n.
        let mut e = from_be_bytes(digest);
        if geq(&e, &N) {
            e = sub_raw(&e, &N).0;
        }

        let w = sc_invert(&s);
        let u1 = sc_mul(&e, &w);
        let u2 = sc_mul(&r, &w);

        let Some(g) = g_table() else {
            return false;
        };
        let mut acc = IDENTITY;
        if !g.accumulate(&mut acc, &u1) {
            return false;
        }
        match &self.table {
            Some(t) => {
                if !t.accumulate(&mut acc, &u2) {
                    return false;
                }
            }
            None => acc = add(&acc, &mul_window4(&self.q, &u2)),
        }
        if acc.is_identity() {
            return false;
        }

        // x(R) = X/Z² ∈ [0, p); accept iff x(R) mod n == r, i.e. x(R) ∈ {r, r + n}.
        let z2 = fe_sqr(&acc.z);
        if fe_mul(&r, &z2) == acc.x {
            return true;
        }
        let (r_plus_n, carry) = add_raw(&r, &N);
        !carry && !geq(&r_plus_n, &P) && fe_mul(&r_plus_n, &z2) == acc.x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow reference product: shift-and-add with modular additions only.
    fn ref_mul(a: &U256, b: &U256) -> U256 {
        let mut r = ZERO;
        for i in (0..256).rev() {
            r = fe_add(&r, &r);
            if (b[i / 32] >> (i % 32)) & 1 == 1 {
                r = fe_add(&r, a);
            }
        }
        r
    }

    fn lcg(state: &mut u64) -> u32 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*state >> 32) as u32
    }

    fn edge_values() -> Vec<U256> {
        let pm1 = sub_raw(&P, &ONE).0;
        vec![
            ZERO,
            ONE,
            pm1,
            sub_raw(&P, &[2, 0, 0, 0, 0, 0, 0, 0]).0,
            [0xffff_ffff, 0xffff_ffff, 0xffff_ffff, 0, 0, 0, 0, 0],
            [
                0,
                0,
                0,
                0xffff_ffff,
                0xffff_ffff,
                0xffff_ffff,
                0,
                0xffff_fffe,
            ],
            [0, 0, 0, 0, 0, 0, 1, 0xffff_ffff],
            [
                0xffff_ffff,
                0xffff_ffff,
                0xffff_ffff,
                0xffff_ffff,
                0xffff_ffff,
                0xffff_ffff,
                0,
                0,
            ],
            [0, 0, 0, 0, 0, 0, 0, 0x8000_0000],
            GX,
            GY,
        ]
    }

    #[test]
    fn field_mul_and_sqr_match_reference() {
        let mut st = 0x1234_5678_9abc_def0u64;
        let mut vals = edge_values();
        for _ in 0..300 {
            let mut v = [0u32; 8];
            for l in v.iter_mut() {
                // Bias towards all-ones / all-zero limbs to stress carries.
                *l = match lcg(&mut st) % 4 {
                    0 => 0,
                    1 => 0xffff_ffff,
                    _ => lcg(&mut st),
                };
            }
            if geq(&v, &P) {
                v = sub_raw(&v, &P).0;
            }
            vals.push(v);
        }
        for a in &vals {
            assert_eq!(fe_sqr(a), ref_mul(a, a), "sqr {a:x?}");
            for b in vals.iter().take(40) {
                assert_eq!(fe_mul(a, b), ref_mul(a, b), "mul {a:x?} {b:x?}");
            }
        }
    }

    #[test]
    fn inverses() {
        let mut st = 42u64;
        for _ in 0..200 {
            let mut v = [0u32; 8];
            for l in v.iter_mut() {
                *l = lcg(&mut st);
            }
            if geq(&v, &N) || is_zero(&v) {
                continue;
            }
            let inv = sc_invert(&v);
            assert_eq!(sc_mul(&v, &inv), ONE);
            let fv = if geq(&v, &P) { sub_raw(&v, &P).0 } else { v };
            assert_eq!(fe_mul(&fv, &fe_invert(&fv)), ONE);
        }
        let nm1 = sub_raw(&N, &ONE).0;
        assert_eq!(sc_mul(&nm1, &sc_invert(&nm1)), ONE);
        assert_eq!(sc_invert(&ONE), ONE);
    }

    #[test]
    fn generator_table_is_consistent() {
        assert!(g_table().is_some());
        let Some(t) = g_table() else { return };
        assert!(on_curve(&GX, &GY));
        for p in &t.points {
            assert!(on_curve(&p.x, &p.y));
        }
        // 1·G + (n−1)·G = identity; 2·G via accumulate equals doubling.
        let mut acc = IDENTITY;
        assert!(t.accumulate(&mut acc, &ONE));
        assert!(t.accumulate(&mut acc, &sub_raw(&N, &ONE).0));
        assert!(acc.is_identity());
        let mut acc = IDENTITY;
        assert!(t.accumulate(&mut acc, &[2, 0, 0, 0, 0, 0, 0, 0]));
        let d = double(&Jacobian::from_affine(&Affine { x: GX, y: GY }));
        let a = batch_to_affine(&[acc, d]).unwrap_or_default();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], a[1]);
    }

    fn to_affine(p: &Jacobian) -> Option<Affine> {
        batch_to_affine(&[*p])?.first().copied()
    }

    #[test]
    fn mixed_addition_special_cases() {
        let g = Affine { x: GX, y: GY };
        let g1 = Jacobian::from_affine(&g);
        let g2 = double(&g1); // Z ≠ 1 from here on
        let g2a = to_affine(&g2);
        assert!(g2a.is_some());
        let Some(g2a) = g2a else { return };
        // P + P must double, also when P is not normalised.
        assert_eq!(to_affine(&add_mixed(&g1, &g)), Some(g2a));
        assert_eq!(to_affine(&add_mixed(&g2, &g2a)), to_affine(&double(&g2)));
        assert_eq!(to_affine(&add(&g2, &g2)), to_affine(&double(&g2)));
        // P + (−P) is the identity.
        let neg = Affine {
            x: g2a.x,
            y: fe_neg(&g2a.y),
        };
        assert!(add_mixed(&g2, &neg).is_identity());
        assert!(add(&g2, &Jacobian::from_affine(&neg)).is_identity());
        // identity + P = P, and doubling the identity stays there.
        assert_eq!(to_affine(&add_mixed(&IDENTITY, &g2a)), Some(g2a));
        assert!(double(&IDENTITY).is_identity());
        // 2G + G = 3G computed two ways.
        assert_eq!(to_affine(&add_mixed(&g2, &g)), to_affine(&add(&g1, &g2)));
    }

    #[test]
    fn table_multiplication_matches_double_and_add() {
        let g = Affine { x: GX, y: GY };
        let Some(gt) = g_table() else { return };
        let q = Table::build(&g, Q_WINDOW);
        assert!(q.is_some());
        let Some(q) = q else { return };
        let mut st = 7u64;
        let nm1 = sub_raw(&N, &ONE).0;
        let mut ks = vec![
            ONE,
            nm1,
            [0xffff_ffff; 8],
            [0x8000_0000; 8],
            [2, 0, 0, 0, 0, 0, 0, 0],
        ];
        for _ in 0..20 {
            let mut v = [0u32; 8];
            for l in v.iter_mut() {
                *l = lcg(&mut st);
            }
            ks.push(v);
        }
        for k in &ks {
            let mut reference = IDENTITY;
            for i in (0..256).rev() {
                reference = double(&reference);
                if (k[i / 32] >> (i % 32)) & 1 == 1 {
                    reference = add_mixed(&reference, &g);
                }
            }
            for t in [gt, &q] {
                let mut acc = IDENTITY;
                assert!(t.accumulate(&mut acc, k));
                assert_eq!(acc.is_identity(), reference.is_identity());
                if !reference.is_identity() {
                    assert_eq!(to_affine(&acc), to_affine(&reference), "k = {k:x?}");
                }
            }
        }
    }
}
