//! Request targets (`:path`): segments drawn from the encodings that path tricks are made of,
//! and segment-aware mutations.

use crate::mutate;
use crate::rng::Rng;

/// Segments and pieces that matter to normalisation: dot segments in every spelling, encoded
/// separators, escapes of every class, controls, non-ASCII, query and fragment markers.
const PIECES: &[&str] = &[
    "",
    ".",
    "..",
    "...",
    "%2e",
    "%2E",
    "%2e%2e",
    "%2E%2e",
    ".%2e",
    "%2e.",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "\\",
    "%00",
    "%0a",
    "%1f",
    "%7f",
    "%20",
    "%41",
    "%61",
    "%7e",
    "%7E",
    "%2d",
    "%5f",
    "%3a",
    "%3A",
    "%25",
    "%252f",
    "%25%32%66",
    "%",
    "%z",
    "%2",
    "%g1",
    "%C3%A9",
    "%c3%a9",
    "%ff",
    "é",
    "€",
    "😀",
    "\u{85}",
    "\u{2028}",
    "?",
    "#",
    "?x=../..",
    "#/../a",
    ";",
    ";x=1",
    "a",
    "api",
    "v1",
    "tenants",
    "acme",
    "globex",
    "customers",
    "~user",
    "-",
    "_",
    "a.b",
    ":",
    "@",
    "!",
    "$",
    "&",
    "'",
    "(",
    "*",
    "+",
    ",",
    "=",
];

/// A request target: usually origin-form, made of dictionary segments.
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut s = String::new();
    if !rng.chance(1, 20) {
        s.push('/');
    }
    let n = rng.len(10);
    for i in 0..n {
        if i > 0 {
            s.push_str(if rng.chance(1, 8) { "//" } else { "/" });
        }
        for _ in 0..1 + rng.len(2) {
            s.push_str(rng.pick(PIECES).unwrap_or(&""));
        }
    }
    if rng.chance(1, 6) {
        s.push('/');
    }
    if rng.chance(1, 8) {
        s.push('?');
        s.push_str(rng.pick(PIECES).unwrap_or(&""));
    }
    s.into_bytes()
}

/// A mutation: insert, drop, repeat or re-encode a segment, or change bytes.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let Ok(s) = std::str::from_utf8(input) else {
        return mutate::bytes(rng, input, &[b"/", b"%2e", b"%2f"]);
    };
    let mut segs: Vec<String> = s.split('/').map(str::to_owned).collect();
    let len = segs.len();
    match rng.below(6) {
        0 => {
            let at = rng.below(len + 1);
            segs.insert(at, rng.pick(PIECES).unwrap_or(&"").to_string());
        }
        1 if len > 1 => {
            segs.remove(rng.below(len));
        }
        2 => {
            // Repeat a segment many times (`../../..`, deep paths).
            let at = rng.below(len);
            let seg = segs.get(at).cloned().unwrap_or_default();
            for _ in 0..rng.len(64) {
                segs.insert(at, seg.clone());
            }
        }
        3 => {
            // Percent-encode one byte of a segment, in either case.
            let at = rng.below(len);
            if let Some(seg) = segs.get_mut(at) {
                if let Some(&b) = seg.as_bytes().get(rng.below(seg.len())) {
                    let enc = if rng.chance(1, 2) {
                        format!("%{b:02x}")
                    } else {
                        format!("%{b:02X}")
                    };
                    if let Some(e) = mutate::replace_one(rng, seg, &char::from(b).to_string(), &enc)
                    {
                        *seg = e;
                    }
                }
            }
        }
        _ => {
            let dict: Vec<&[u8]> = PIECES.iter().map(|p| p.as_bytes()).collect();
            return mutate::bytes(rng, input, &dict);
        }
    }
    segs.join("/").into_bytes()
}
