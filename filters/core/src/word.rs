//! Eight bytes at a time ("SIMD within a register"): the byte tests the JSON tokenizer, the
//! pii detectors and authn's token check run over every request's text, on a `u64` read
//! little-endian, so the lowest flagged byte is the first in the text. Plain integer
//! arithmetic: wasm32 has no wider vectors without the `simd128` feature, which bought nothing
//! here (tests/bench/README.md).

/// 0x01 in every byte.
pub const ONES: u64 = 0x0101_0101_0101_0101;
/// 0x80 in every byte: each byte's flag bit.
pub const HIGH: u64 = 0x8080_8080_8080_8080;

/// `b` in every byte.
#[inline(always)]
pub const fn splat(b: u8) -> u64 {
    ONES * b as u64
}

/// The eight bytes as one word, the first byte lowest.
#[inline(always)]
pub fn le(bytes: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*bytes)
}

/// The first eight bytes of `b` as one word, zero-padded when `b` is shorter: a short member
/// name or a text's last bytes, read as [`le`] reads a full word. Shorter inputs take two
/// overlapping loads of the widest size that fits, not a byte loop: the bytes both loads hold
/// land on the same places, so or-ing them is exact.
#[inline(always)]
pub fn padded(b: &[u8]) -> u64 {
    if let Some(w) = b.first_chunk::<8>() {
        return le(w);
    }
    let n = b.len();
    if let (Some(lo), Some(hi)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
        return u64::from(u32::from_le_bytes(*lo))
            | (u64::from(u32::from_le_bytes(*hi)) << (8 * (n - 4)));
    }
    if let (Some(lo), Some(hi)) = (b.first_chunk::<2>(), b.last_chunk::<2>()) {
        return u64::from(u16::from_le_bytes(*lo))
            | (u64::from(u16::from_le_bytes(*hi)) << (8 * (n - 2)));
    }
    b.first().map_or(0, |&c| u64::from(c))
}

/// Flags (high bit) the zero bytes of `x`. Non-zero exactly when some byte is zero, and the
/// lowest flag is the first zero byte; a flag above a true one can be spurious (the borrow
/// runs upwards), so take only the lowest, or ask only whether there is any.
#[inline(always)]
pub const fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGH
}

/// Flags the bytes of `w` equal to `b`, as [`zero_bytes`] does.
#[inline(always)]
pub const fn bytes_equal(w: u64, b: u8) -> u64 {
    zero_bytes(w ^ splat(b))
}

/// Flags the bytes of `w` below `b` (`b` at most 0x80), as [`zero_bytes`] does: the lowest
/// flag is exact.
#[inline(always)]
pub const fn bytes_below(w: u64, b: u8) -> u64 {
    w.wrapping_sub(splat(b)) & !w & HIGH
}

/// The high bit of each byte of `w` that is not an ASCII digit. Exact per byte (no borrow or
/// carry crosses bytes): the sums are taken on the low seven bits, so below 0x80 + 0x50 each.
#[inline(always)]
pub const fn non_digits(w: u64) -> u64 {
    let low = w & !HIGH;
    // `low + 0x50` has its high bit set from `0` up, `low + 0x46` from `:` up.
    let below_zero = !low.wrapping_add(splat(0x50));
    let above_nine = low.wrapping_add(splat(0x46));
    (below_zero | above_nine | w) & HIGH
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each test against its byte-by-byte meaning, for every byte value at every position of
    /// a word whose other bytes are a fixed mixture.
    #[test]
    fn word_tests_agree_with_byte_tests() {
        let fill = *b"a0\"\\ \x1f\x7f\xff";
        for pos in 0..8 {
            for v in 0..=255u8 {
                let mut bytes = fill;
                bytes[pos] = v;
                let w = le(&bytes);
                let first = |f: u64| (f != 0).then(|| (f.trailing_zeros() / 8) as usize);
                let want = |p: &dyn Fn(u8) -> bool| bytes.iter().position(|&b| p(b));
                assert_eq!(first(bytes_equal(w, b'"')), want(&|b| b == b'"'));
                assert_eq!(first(zero_bytes(w)), want(&|b| b == 0));
                assert_eq!(first(bytes_below(w, 0x20)), want(&|b| b < 0x20));
                for (i, b) in bytes.iter().enumerate() {
                    let flagged = non_digits(w) >> (8 * i + 7) & 1 == 1;
                    assert_eq!(flagged, !b.is_ascii_digit(), "{bytes:?} at {i}");
                }
            }
        }
    }

    /// [`padded`] is the byte-by-byte word for every length from empty to past eight, with
    /// every byte value at the first and the last place.
    #[test]
    fn padded_is_the_byte_loop() {
        let byte_loop = |b: &[u8]| {
            b.iter()
                .take(8)
                .enumerate()
                .fold(0u64, |w, (i, &c)| w | (u64::from(c) << (8 * i)))
        };
        for len in 0..=12u8 {
            for v in 0..=255u8 {
                let mut b: Vec<u8> = (0..len).map(|i| 0x31 + i).collect();
                if let Some(first) = b.first_mut() {
                    *first = v;
                }
                if let Some(last) = b.last_mut() {
                    *last = v.rotate_left(3);
                }
                assert_eq!(padded(&b), byte_loop(&b), "{b:?}");
            }
        }
    }
}
