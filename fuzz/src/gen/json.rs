//! JSON text: a generator that writes valid documents with every lexical form JSON allows (and
//! a few it does not), and token-aware mutations.

use crate::mutate;
use crate::rng::Rng;

/// Tokens spliced into JSON text: structure, literals, escapes (lone surrogates included),
/// numbers at and past every limit.
pub const DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"null",
    b"true",
    b"false",
    b"nul",
    b"\\u",
    b"\\ud800",
    b"\\udc00",
    b"\\ud83d\\ude00",
    b"\\u0000",
    b"\\u0061",
    b"\\uDBFF\\uDFFF",
    b"\\x",
    b"0",
    b"-0",
    b"-",
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"1.7976931348623157e308",
    b"1.7976931348623159e308",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"0.1",
    b"1E+2",
    b"01",
    b"1.",
    b".5",
    b"+1",
    b"NaN",
    b"Infinity",
    b"\"a\":1",
    b"\"a\":2",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
    b"\xff",
    b"\x00",
    b"\t",
    b"\n",
    b" ",
    b"\x0b",
    b"\xc2\xa0",
    b"[[[[[[[[",
    b"]]]]]]]]",
    b"{\"a\":",
];

/// A JSON document, usually valid, in any legal formatting.
pub fn document(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    ws(rng, &mut out);
    if rng.chance(1, 24) {
        deep(rng, &mut out);
    } else {
        value(rng, &mut out, 0);
    }
    ws(rng, &mut out);
    out
}

/// A JSON object document (what a protobuf `Struct` holds).
pub fn object_document(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.chance(1, 12) {
        // Nesting around the limits of the decoders (pbstruct allows ~33 levels).
        let levels = 20 + rng.below(30);
        for _ in 0..levels {
            out.extend_from_slice(b"{\"k\":");
        }
        value(rng, &mut out, 4);
        out.extend(std::iter::repeat_n(b'}', levels));
    } else {
        object(rng, &mut out, 0);
    }
    out
}

/// A value nested far past the parsers' limits (scan 100, serde_json 128, pii 256).
fn deep(rng: &mut Rng, out: &mut Vec<u8>) {
    let levels = *rng
        .pick(&[99, 100, 101, 127, 128, 129, 255, 256, 257, 2000])
        .unwrap_or(&100);
    let mut closers = Vec::with_capacity(levels);
    for _ in 0..levels {
        if rng.chance(1, 2) {
            out.push(b'[');
            closers.push(b']');
        } else {
            out.extend_from_slice(b"{\"d\":");
            closers.push(b'}');
        }
    }
    value(rng, out, 6);
    out.extend(closers.iter().rev());
}

fn ws(rng: &mut Rng, out: &mut Vec<u8>) {
    if rng.chance(2, 3) {
        return;
    }
    for _ in 0..rng.len(3) {
        out.push(*rng.pick(b" \t\n\r").unwrap_or(&b' '));
    }
}

fn value(rng: &mut Rng, out: &mut Vec<u8>, depth: usize) {
    let choices = if depth > 5 { 5 } else { 8 };
    match rng.below(choices) {
        0 => out.extend_from_slice(
            rng.pick(&[&b"null"[..], b"true", b"false"])
                .copied()
                .unwrap_or(b"null"),
        ),
        1 | 2 => number(rng, out),
        3 | 4 => {
            string(rng, out, None);
        }
        5 => {
            out.push(b'[');
            ws(rng, out);
            for i in 0..rng.len(6) {
                if i > 0 {
                    out.push(b',');
                    ws(rng, out);
                }
                value(rng, out, depth + 1);
                ws(rng, out);
            }
            out.push(b']');
        }
        _ => object(rng, out, depth),
    }
}

fn object(rng: &mut Rng, out: &mut Vec<u8>, depth: usize) {
    out.push(b'{');
    ws(rng, out);
    let mut names: Vec<String> = Vec::new();
    for i in 0..rng.len(6) {
        if i > 0 {
            out.push(b',');
            ws(rng, out);
        }
        // Now and then the same name again, maybe spelled with escapes.
        let again = if rng.chance(1, 10) {
            rng.pick(&names).cloned()
        } else {
            None
        };
        let name = string(rng, out, again.as_deref());
        names.push(name);
        ws(rng, out);
        out.push(b':');
        ws(rng, out);
        value(rng, out, depth + 1);
        ws(rng, out);
    }
    out.push(b'}');
}

/// Writes a string literal; returns its unescaped value. With `same`, writes that value again
/// (escaped at random, so `"a"` and `"\u0061"` meet).
fn string(rng: &mut Rng, out: &mut Vec<u8>, same: Option<&str>) -> String {
    let text: String = match same {
        Some(s) => s.to_owned(),
        None => {
            const CHARS: &[char] = &[
                'a',
                'b',
                'z',
                'A',
                '0',
                ' ',
                '"',
                '\\',
                '/',
                '\u{8}',
                '\u{c}',
                '\n',
                '\r',
                '\t',
                '\u{1}',
                '\u{1f}',
                '\u{7f}',
                'é',
                'ß',
                '€',
                '\u{2028}',
                '\u{feff}',
                '😀',
                '\u{10ffff}',
                '\u{ffff}',
            ];
            (0..rng.len(12))
                .map(|_| *rng.pick(CHARS).unwrap_or(&'a'))
                .collect()
        }
    };
    out.push(b'"');
    for c in text.chars() {
        let escape = c == '"' || c == '\\' || (c as u32) < 0x20 || rng.chance(1, 6);
        if !escape {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '/' if rng.chance(1, 2) => out.extend_from_slice(b"\\/"),
            '\n' if rng.chance(1, 2) => out.extend_from_slice(b"\\n"),
            '\t' if rng.chance(1, 2) => out.extend_from_slice(b"\\t"),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let hex = if rng.chance(1, 2) {
                        format!("\\u{:04x}", u)
                    } else {
                        format!("\\u{:04X}", u)
                    };
                    out.extend_from_slice(hex.as_bytes());
                }
            }
        }
    }
    if same.is_none() && rng.chance(1, 60) {
        // A lone surrogate escape: valid JSON grammar, not a Unicode string.
        out.extend_from_slice(if rng.chance(1, 2) {
            b"\\ud800"
        } else {
            b"\\udfff"
        });
    }
    out.push(b'"');
    text
}

fn number(rng: &mut Rng, out: &mut Vec<u8>) {
    const FIXED: &[&str] = &[
        "0",
        "-0",
        "0.0",
        "-0.0",
        "1",
        "-1",
        "9007199254740993",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "1e400",
        "-1e400",
        "1e-400",
        "1.7976931348623157e308",
        "1.7976931348623158e308",
        "2.2250738585072014e-308",
        "5e-324",
        "0.1",
        "1E+2",
        "1e-0",
        "123456789012345678901234567890",
    ];
    if rng.chance(1, 3) {
        out.extend_from_slice(rng.pick(FIXED).unwrap_or(&"0").as_bytes());
        return;
    }
    if rng.chance(1, 4) {
        out.push(b'-');
    }
    if rng.chance(1, 5) {
        out.push(b'0');
    } else {
        out.push(b'1' + (rng.byte() % 9));
        for _ in 0..rng.len(24) {
            out.push(b'0' + (rng.byte() % 10));
        }
    }
    if rng.chance(1, 3) {
        out.push(b'.');
        for _ in 0..rng.len(20).max(1) {
            out.push(b'0' + (rng.byte() % 10));
        }
    }
    if rng.chance(1, 4) {
        out.push(*rng.pick(b"eE").unwrap_or(&b'e'));
        if let Some(s) = rng.pick(&[&b""[..], b"+", b"-"]) {
            out.extend_from_slice(s);
        }
        for _ in 0..rng.len(4).max(1) {
            out.push(b'0' + (rng.byte() % 10));
        }
    }
}

/// A mutation of JSON text: usually token-aware (splice a token, drop or duplicate a bracketed
/// span, swap two values), sometimes plain bytes.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            // Replace a scalar-looking run with a fresh value.
            let mut fresh = Vec::new();
            value(rng, &mut fresh, 3);
            let len = input.len();
            let at = rng.below(len + 1);
            let end = (at + rng.len(12)).min(len);
            let mut out = input.to_vec();
            out.splice(at..end, fresh);
            out
        }
        1 => {
            // Wrap the whole document one level deeper, or cut one bracket.
            let mut out = Vec::with_capacity(input.len() + 8);
            if rng.chance(1, 2) {
                out.extend_from_slice(b"[");
                out.extend_from_slice(input);
                out.extend_from_slice(b"]");
            } else {
                out.extend_from_slice(b"{\"w\":");
                out.extend_from_slice(input);
                out.extend_from_slice(b"}");
            }
            out
        }
        _ => mutate::bytes(rng, input, DICT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_documents_are_mostly_json() {
        let mut rng = Rng::new(11);
        let ok = (0..500)
            .filter(|_| serde_json::from_slice::<serde_json::Value>(&document(&mut rng)).is_ok())
            .count();
        // Lone surrogates, out-of-range numbers and deep nesting make some invalid on purpose.
        assert!(ok > 300, "{ok}");
    }
}
