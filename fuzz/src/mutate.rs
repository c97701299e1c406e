//! Byte-level mutations shared by every target, and a dictionary splice; the targets add their
//! own structure-aware mutations on top.

use crate::rng::Rng;

/// Applies one random byte-level mutation: flip a bit, set a byte, insert or delete a run,
/// duplicate or move a chunk, truncate, or splice in a dictionary token.
pub fn bytes(rng: &mut Rng, input: &[u8], dict: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    let len = out.len();
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            if let Some(b) = out.get_mut(i) {
                *b ^= 1 << rng.below(8);
            }
        }
        1 if len > 0 => {
            let i = rng.below(len);
            let v = interesting_byte(rng);
            if let Some(b) = out.get_mut(i) {
                *b = v;
            }
        }
        2 => {
            let at = rng.below(len + 1);
            let n = rng.len(16).max(1);
            let run: Vec<u8> = (0..n).map(|_| interesting_byte(rng)).collect();
            out.splice(at..at, run);
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let n = rng.len(len - at).max(1).min(len - at);
            out.drain(at..at + n);
        }
        4 if len > 0 => {
            // Duplicate a chunk, sometimes many times (nesting, long runs).
            let at = rng.below(len);
            let n = rng.len(len - at).max(1).min(len - at);
            let chunk = out.get(at..at + n).map(<[u8]>::to_vec).unwrap_or_default();
            let times = if rng.chance(1, 8) { rng.len(300) } else { 1 };
            let to = rng.below(len + 1);
            let repeated: Vec<u8> = chunk
                .iter()
                .copied()
                .cycle()
                .take(chunk.len() * times)
                .collect();
            out.splice(to..to, repeated);
        }
        5 if len > 1 => {
            let cut = rng.below(len);
            out.truncate(cut);
        }
        6 if len > 1 => {
            let (a, b) = (rng.below(len), rng.below(len));
            out.swap(a, b);
        }
        _ => {
            if let Some(tok) = rng.pick(dict) {
                let at = rng.below(len + 1);
                if rng.chance(1, 3) && len > 0 {
                    // Replace a run with the token instead of inserting it.
                    let n = rng.len(8).min(len - at.min(len));
                    out.splice(at..at + n, tok.iter().copied());
                } else {
                    out.splice(at..at, tok.iter().copied());
                }
            }
        }
    }
    out
}

/// A byte that is more often a boundary value or printable ASCII than uniformly random.
pub fn interesting_byte(rng: &mut Rng) -> u8 {
    const SPECIAL: &[u8] = &[
        0x00, 0x01, 0x7f, 0x80, 0xff, 0xc0, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, b'%', b'/', b'\\', b'.',
        b'"', b'{', b'}', b'[', b']', b',', b':', b'\n', b' ',
    ];
    match rng.below(3) {
        0 => *rng.pick(SPECIAL).unwrap_or(&0),
        1 => 0x20 + (rng.byte() % 0x5f),
        _ => rng.byte(),
    }
}

/// Replaces one occurrence of `from` (chosen at random) with `to`, if there is one.
pub fn replace_one(rng: &mut Rng, s: &str, from: &str, to: &str) -> Option<String> {
    let hits: Vec<usize> = s.match_indices(from).map(|(i, _)| i).collect();
    let at = *rng.pick(&hits)?;
    let mut out = String::with_capacity(s.len() + to.len());
    out.push_str(s.get(..at)?);
    out.push_str(to);
    out.push_str(s.get(at + from.len()..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_never_panic_and_stay_deterministic() {
        let dict: &[&[u8]] = &[b"%2f", b".."];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut x = b"/a/b".to_vec();
            for _ in 0..2000 {
                x = bytes(&mut rng, &x, dict);
                x.truncate(4096);
            }
            x
        };
        assert_eq!(run(3), run(3));
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let _ = bytes(&mut rng, b"", dict);
        }
        assert_eq!(replace_one(&mut rng, "a.b", ".", "/"), Some("a/b".into()));
        assert_eq!(replace_one(&mut rng, "ab", ".", "/"), None);
    }
}
