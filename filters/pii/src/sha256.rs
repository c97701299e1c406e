//! SHA-256 (FIPS 180-4) for keyed tokens, written for the wasm32 engine the filter runs in.
//!
//! The filter runs in V8 without SIMD or SHA instructions: every SHA-256 crate takes its
//! portable path there. `sha2`'s portable compression models four-lane vector instructions in
//! arrays; this one keeps the eight working variables and a rolling 16-word schedule in locals,
//! fully unrolled, and rotates the `Σ` functions in a chain (`Σ1(e) = ((e⋙14 ⊕ e)⋙5 ⊕ e)⋙6`),
//! which needs fewer temporaries. Two blocks per token, about a third of a CRM document's
//! masking: fewer instructions natively, and faster in V8. Held to `sha2` by the tests.

/// SHA-256 round constants (FIPS 180-4 §4.2.2).
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Initial hash value (FIPS 180-4 §5.3.3).
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The SHA-256 compression of one 64-byte block into `state`.
fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    let mut w = [0u32; 16];
    for (w, c) in w.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    compress_words(state, w);
}

/// The SHA-256 compression of one block, as its 16 big-endian words, into `state`. One copy
/// of the unrolled rounds in the module, whoever calls it.
// The last round's `a ^ b` is left unread: there is no next round.
#[allow(unused_assignments)]
#[inline(never)]
fn compress_words(state: &mut [u32; 8], mut w: [u32; 16]) {
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    // `b ^ c` of the round: `Maj(a, b, c) = b ^ ((a ^ b) & (b ^ c))`, and a round's `a ^ b` is
    // the next round's `b ^ c`, so each round computes one of them instead of four operations.
    let mut bc = b ^ c;
    // One round; the callers rename the variables instead of shifting them.
    macro_rules! round {
        ($a:ident, $b:ident, $c:ident, $d:ident, $e:ident, $f:ident, $g:ident, $h:ident, $k:expr, $j:expr) => {{
            let t1 = $h
                .wrapping_add(((($e.rotate_right(14) ^ $e).rotate_right(5)) ^ $e).rotate_right(6))
                .wrapping_add($g ^ ($e & ($f ^ $g)))
                .wrapping_add(K[$k + $j])
                .wrapping_add(w[$j]);
            let ab = $a ^ $b;
            let t2 = (((($a.rotate_right(9) ^ $a).rotate_right(11)) ^ $a).rotate_right(2))
                .wrapping_add($b ^ (ab & bc));
            bc = ab;
            $d = $d.wrapping_add(t1);
            $h = t1.wrapping_add(t2);
        }};
    }
    macro_rules! sixteen_rounds {
        ($k:expr) => {
            round!(a, b, c, d, e, f, g, h, $k, 0);
            round!(h, a, b, c, d, e, f, g, $k, 1);
            round!(g, h, a, b, c, d, e, f, $k, 2);
            round!(f, g, h, a, b, c, d, e, $k, 3);
            round!(e, f, g, h, a, b, c, d, $k, 4);
            round!(d, e, f, g, h, a, b, c, $k, 5);
            round!(c, d, e, f, g, h, a, b, $k, 6);
            round!(b, c, d, e, f, g, h, a, $k, 7);
            round!(a, b, c, d, e, f, g, h, $k, 8);
            round!(h, a, b, c, d, e, f, g, $k, 9);
            round!(g, h, a, b, c, d, e, f, $k, 10);
            round!(f, g, h, a, b, c, d, e, $k, 11);
            round!(e, f, g, h, a, b, c, d, $k, 12);
            round!(d, e, f, g, h, a, b, c, $k, 13);
            round!(c, d, e, f, g, h, a, b, $k, 14);
            round!(b, c, d, e, f, g, h, a, $k, 15);
        };
    }
    // Schedule word `j + 16`, in place of word `j` (indices mod 16).
    macro_rules! schedule_word {
        ($j:expr) => {{
            let x = w[($j + 1) & 15];
            let y = w[($j + 14) & 15];
            let s0 = x.rotate_right(7) ^ x.rotate_right(18) ^ (x >> 3);
            let s1 = y.rotate_right(17) ^ y.rotate_right(19) ^ (y >> 10);
            w[$j] = w[$j]
                .wrapping_add(s0)
                .wrapping_add(w[($j + 9) & 15])
                .wrapping_add(s1);
        }};
    }
    // Unrolled by hand: as a loop, the optimiser kept it a loop.
    macro_rules! schedule {
        () => {
            schedule_word!(0);
            schedule_word!(1);
            schedule_word!(2);
            schedule_word!(3);
            schedule_word!(4);
            schedule_word!(5);
            schedule_word!(6);
            schedule_word!(7);
            schedule_word!(8);
            schedule_word!(9);
            schedule_word!(10);
            schedule_word!(11);
            schedule_word!(12);
            schedule_word!(13);
            schedule_word!(14);
            schedule_word!(15);
        };
    }
    sixteen_rounds!(0);
    schedule!();
    sixteen_rounds!(16);
    schedule!();
    sixteen_rounds!(32);
    schedule!();
    sixteen_rounds!(48);
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

/// An incremental SHA-256 hash.
#[derive(Clone)]
pub(crate) struct Sha256 {
    state: [u32; 8],
    /// Bytes not yet compressed (`len % 64` of them).
    buf: [u8; 64],
    /// Bytes hashed so far.
    len: u64,
}

impl Sha256 {
    pub(crate) fn new() -> Self {
        Sha256 {
            state: IV,
            buf: [0; 64],
            len: 0,
        }
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        let used = (self.len % 64) as usize;
        self.len += data.len() as u64;
        if used > 0 {
            let take = data.len().min(64 - used);
            let (head, rest) = data.split_at(take);
            self.buf[used..used + take].copy_from_slice(head);
            data = rest;
            if used + take < 64 {
                return;
            }
            compress(&mut self.state, &self.buf);
        }
        let mut blocks = data.chunks_exact(64);
        for block in &mut blocks {
            if let Ok(block) = block.try_into() {
                compress(&mut self.state, block);
            }
        }
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
    }

    /// The hash, as eight words, of what was hashed so far followed by `parts`, when that
    /// ends in the block after a block boundary: HMAC's inner hash of a short message from
    /// its prepared state. The block is built in place, without the buffer's copies and
    /// bookkeeping (which cost wasm as much as a sixth of the MAC). `None` otherwise: then
    /// [`update`](Self::update) and [`finalize_words`](Self::finalize_words) do it.
    pub(crate) fn finalize_parts_in_one_block(&self, parts: &[&[u8]]) -> Option<[u32; 8]> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if !self.len.is_multiple_of(64) || total > 55 {
            return None;
        }
        let mut block = [0u8; 64];
        let mut at = 0;
        for p in parts {
            block.get_mut(at..at + p.len())?.copy_from_slice(p);
            at += p.len();
        }
        block[at] = 0x80;
        let bits = (self.len + total as u64).wrapping_mul(8);
        block[56..].copy_from_slice(&bits.to_be_bytes());
        let mut state = self.state;
        compress(&mut state, &block);
        Some(state)
    }

    /// The hash of what was hashed so far followed by another hash `digest`, as HMAC's outer
    /// hash needs it. From a state at a block boundary (HMAC's prepared outer state) the digest
    /// and its padding are one block, built here as words: nothing is buffered, encoded or
    /// decoded on the way.
    pub(crate) fn finalize_after_digest(&self, digest: [u32; 8]) -> [u8; 32] {
        if !self.len.is_multiple_of(64) {
            let mut h = self.clone();
            h.update(&encode(digest));
            return h.finalize();
        }
        let bits = (self.len + 32).wrapping_mul(8);
        let mut w = [0u32; 16];
        w[..8].copy_from_slice(&digest);
        w[8] = 0x8000_0000;
        w[14] = (bits >> 32) as u32;
        w[15] = bits as u32;
        let mut state = self.state;
        compress_words(&mut state, w);
        encode(state)
    }

    pub(crate) fn finalize(self) -> [u8; 32] {
        encode(self.finalize_words())
    }

    /// The final state: the hash as eight big-endian words.
    pub(crate) fn finalize_words(mut self) -> [u32; 8] {
        let bits = self.len.wrapping_mul(8);
        let used = (self.len % 64) as usize;
        self.buf[used] = 0x80;
        self.buf[used + 1..].fill(0);
        if used >= 56 {
            compress(&mut self.state, &self.buf);
            self.buf = [0; 64];
        }
        self.buf[56..].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.state, &self.buf);
        self.state
    }

    /// The hash of `data`.
    pub(crate) fn digest(data: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(data);
        h.finalize()
    }
}

/// A hash's bytes from its state words.
fn encode(state: [u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, s) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&s.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn bytes(n: usize, seed: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 131 + seed * 7 + 1) as u8).collect()
    }

    #[test]
    fn hashes_equal_sha2_for_every_length_and_split() {
        for n in (0..=300).chain([511, 512, 513, 1000, 4096]) {
            let data = bytes(n, n);
            let want: [u8; 32] = sha2::Sha256::digest(&data).into();
            assert_eq!(Sha256::digest(&data), want, "{n} bytes");
            // The same bytes fed in two and three pieces, at every kind of boundary.
            for cut in [0, 1, 55, 56, 63, 64, 65, 127, 128, n / 2, n] {
                let cut = cut.min(n);
                let second = (cut + 37).min(n);
                let mut h = Sha256::new();
                h.update(&data[..cut]);
                h.update(&data[cut..second]);
                h.update(&data[second..]);
                assert_eq!(h.finalize(), want, "{n} bytes cut at {cut}, {second}");
            }
        }
    }

    /// The one-block shortcuts give the hash of the whole input, from states at a block
    /// boundary (the shortcut) and elsewhere (the long way), for messages on both sides of
    /// the one-block limit.
    #[test]
    fn the_one_block_shortcuts_hash_as_the_buffer_does() {
        let words = |d: [u8; 32]| -> [u32; 8] {
            core::array::from_fn(|i| {
                u32::from_be_bytes([d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]])
            })
        };
        for n in [0, 1, 55, 63, 64, 65, 100, 128, 200] {
            let prefix = bytes(n, 3);
            let mut h = Sha256::new();
            h.update(&prefix);
            for len in 0..=70 {
                let msg = bytes(len, n);
                let (one, two) = msg.split_at(len / 3);
                let whole = [&prefix[..], &msg].concat();
                let want: [u8; 32] = sha2::Sha256::digest(&whole).into();
                match h.finalize_parts_in_one_block(&[one, b"", two]) {
                    Some(got) => {
                        assert!(n % 64 == 0 && len <= 55, "prefix {n}, message {len}");
                        assert_eq!(got, words(want), "prefix {n}, message {len}");
                    }
                    None => assert!(n % 64 != 0 || len > 55, "prefix {n}, message {len}"),
                }
            }
            let digest: [u32; 8] =
                core::array::from_fn(|i| (i as u32 + 1).wrapping_mul(0x9e37_79b9));
            let whole = [&prefix[..], &encode(digest)].concat();
            let want: [u8; 32] = sha2::Sha256::digest(&whole).into();
            assert_eq!(h.finalize_after_digest(digest), want, "prefix {n} bytes");
        }
    }

    #[test]
    fn hashes_the_fips_examples() {
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
