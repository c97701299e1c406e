//! Character encodings of text and JSON bodies: decoded the way a client decodes them (a
//! byte-order mark first, then the declared `charset`, then what the bytes show), masked as
//! text, and written back in the same encoding (BOM kept). A charset the filter does not know
//! is never guessed at: the body fails closed (`unsupported_charset`).

use std::borrow::Cow;

/// An encoding the filter reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 (and US-ASCII declared as such by the WHATWG labels that mean UTF-8).
    Utf8,
    /// UTF-16, little-endian.
    Utf16Le,
    /// UTF-16, big-endian.
    Utf16Be,
    /// UTF-32, little-endian.
    Utf32Le,
    /// UTF-32, big-endian.
    Utf32Be,
    /// windows-1252: what browsers decode for `iso-8859-1`, `latin1`, `us-ascii` and their
    /// aliases (WHATWG), a superset of Latin-1's printable characters.
    Windows1252,
}

/// A declared charset, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// A known encoding.
    Known(Encoding),
    /// `utf-16` / `ucs-2` without an endianness: the BOM or the bytes decide.
    Utf16,
    /// `utf-32` without an endianness.
    Utf32,
}

/// Resolves a `charset` parameter (case-insensitive, quotes already removed); `None` for a
/// charset the filter cannot decode.
pub fn resolve(label: &str) -> Option<Declared> {
    let l = label.trim().to_ascii_lowercase();
    Some(match l.as_str() {
        "utf-8" | "utf8" | "unicode-1-1-utf-8" | "unicode11utf8" | "unicode20utf8"
        | "x-unicode20utf8" => Declared::Known(Encoding::Utf8),
        "utf-16le" | "unicodefeff" => Declared::Known(Encoding::Utf16Le),
        "utf-16be" | "unicodefffe" => Declared::Known(Encoding::Utf16Be),
        "utf-16" | "ucs-2" | "unicode" | "csunicode" | "iso-10646-ucs-2" => Declared::Utf16,
        "utf-32le" => Declared::Known(Encoding::Utf32Le),
        "utf-32be" => Declared::Known(Encoding::Utf32Be),
        "utf-32" | "ucs-4" => Declared::Utf32,
        "ansi_x3.4-1968" | "ascii" | "us-ascii" | "cp1252" | "cp819" | "csisolatin1" | "ibm819"
        | "iso-8859-1" | "iso-ir-100" | "iso8859-1" | "iso88591" | "iso_8859-1"
        | "iso_8859-1:1987" | "l1" | "latin1" | "windows-1252" | "x-cp1252" => {
            Declared::Known(Encoding::Windows1252)
        }
        _ => return None,
    })
}

/// How a body was encoded, to write it back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Form {
    /// The encoding.
    pub encoding: Encoding,
    /// It began with a byte-order mark.
    pub bom: bool,
}

/// A body decoded to UTF-8 bytes (borrowed when it already was UTF-8).
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    /// The text, as UTF-8 bytes: not validated when borrowed (a JSON parser checks them; text
    /// is read lossily, as a browser would).
    pub utf8: Cow<'a, [u8]>,
    /// How to write it back.
    pub form: Form,
}

fn bom(body: &[u8], declared: Option<Declared>) -> Option<(Encoding, usize)> {
    match body {
        [0xEF, 0xBB, 0xBF, ..] => Some((Encoding::Utf8, 3)),
        [0x00, 0x00, 0xFE, 0xFF, ..] => Some((Encoding::Utf32Be, 4)),
        // FF FE 00 00 is a UTF-32 BOM only where UTF-32 is declared; otherwise (as in browsers)
        // a UTF-16 BOM followed by U+0000.
        [0xFF, 0xFE, 0x00, 0x00, ..]
            if matches!(
                declared,
                Some(Declared::Utf32 | Declared::Known(Encoding::Utf32Le))
            ) =>
        {
            Some((Encoding::Utf32Le, 4))
        }
        [0xFE, 0xFF, ..] => Some((Encoding::Utf16Be, 2)),
        [0xFF, 0xFE, ..] => Some((Encoding::Utf16Le, 2)),
        _ => None,
    }
}

/// UTF-16 or UTF-32 told by where the zero bytes of ASCII text fall (RFC 4627 §3).
fn by_zeros(body: &[u8]) -> Option<Encoding> {
    match body {
        [0, 0, 0, x, ..] if *x != 0 => Some(Encoding::Utf32Be),
        [x, 0, 0, 0, ..] if *x != 0 => Some(Encoding::Utf32Le),
        [0, x, ..] if *x != 0 => Some(Encoding::Utf16Be),
        [x, 0, ..] if *x != 0 => Some(Encoding::Utf16Le),
        _ => None,
    }
}

/// Endianness of UTF-16 or UTF-32 declared without one and sent without a BOM: where most
/// zero bytes fall (ASCII text is `x 0 x 0` little-endian); little-endian on a tie, as in
/// browsers.
fn endianness(body: &[u8], unit: usize) -> bool {
    let (mut low, mut high) = (0usize, 0usize);
    for chunk in body.chunks_exact(unit) {
        if chunk.first() == Some(&0) {
            high += 1;
        }
        if chunk.last() == Some(&0) {
            low += 1;
        }
    }
    // `true`: little-endian (the high byte, last in the unit, is the zero one).
    low >= high
}

/// What an undeclared encoding is taken to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guess {
    /// JSON: UTF-8, or UTF-16/32 when the zero bytes of its ASCII show it (RFC 4627 §3).
    Json,
    /// Text: UTF-8 when the bytes are UTF-8; else UTF-16/32 by the zero bytes; else
    /// windows-1252, as browsers read undeclared text.
    Text,
}

/// Decodes a body: BOM first (it overrides the declared charset, as in browsers), then the
/// declared charset, then what `guess` says of undeclared bytes.
pub fn decode(body: &[u8], declared: Option<Declared>, guess: Guess) -> Decoded<'_> {
    if let Some((encoding, len)) = bom(body, declared) {
        let rest = body.get(len..).unwrap_or_default();
        return Decoded {
            utf8: to_utf8(rest, encoding),
            form: Form {
                encoding,
                bom: true,
            },
        };
    }
    let encoding = match declared {
        Some(Declared::Known(e)) => e,
        Some(Declared::Utf16) => {
            if endianness(body, 2) {
                Encoding::Utf16Le
            } else {
                Encoding::Utf16Be
            }
        }
        Some(Declared::Utf32) => {
            if endianness(body, 4) {
                Encoding::Utf32Le
            } else {
                Encoding::Utf32Be
            }
        }
        None => match guess {
            Guess::Json => by_zeros(body).unwrap_or(Encoding::Utf8),
            Guess::Text if std::str::from_utf8(body).is_ok() => Encoding::Utf8,
            Guess::Text => by_zeros(body).unwrap_or(Encoding::Windows1252),
        },
    };
    Decoded {
        utf8: to_utf8(body, encoding),
        form: Form {
            encoding,
            bom: false,
        },
    }
}

fn to_utf8(body: &[u8], encoding: Encoding) -> Cow<'_, [u8]> {
    let units = |n: usize, le: bool| {
        body.chunks(n).map(move |c| {
            let mut v = 0u32;
            for i in 0..n {
                let b = u32::from(c.get(if le { n - 1 - i } else { i }).copied().unwrap_or(0));
                v = (v << 8) | b;
            }
            v
        })
    };
    let text: String = match encoding {
        Encoding::Utf8 => return Cow::Borrowed(body),
        Encoding::Utf16Le | Encoding::Utf16Be => {
            let le = encoding == Encoding::Utf16Le;
            let u16s = units(2, le).map(|u| u16::try_from(u).unwrap_or(0xFFFD));
            let mut s: String = char::decode_utf16(u16s)
                .map(|r| r.unwrap_or('\u{FFFD}'))
                .collect();
            if body.len() % 2 == 1 {
                // The odd byte was read as a unit padded with zero: replace it.
                s.pop();
                s.push('\u{FFFD}');
            }
            s
        }
        Encoding::Utf32Le | Encoding::Utf32Be => units(4, encoding == Encoding::Utf32Le)
            .map(|u| char::from_u32(u).unwrap_or('\u{FFFD}'))
            .collect(),
        Encoding::Windows1252 => body.iter().map(|&b| from_1252(b)).collect(),
    };
    Cow::Owned(text.into_bytes())
}

/// windows-1252 bytes 0x80–0x9F (WHATWG; the five undefined ones map to C1 controls).
const W1252: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

fn from_1252(b: u8) -> char {
    let cp = match b {
        0x80..=0x9F => W1252
            .get(usize::from(b - 0x80))
            .copied()
            .map_or(0xFFFD, u32::from),
        _ => u32::from(b),
    };
    char::from_u32(cp).unwrap_or('\u{FFFD}')
}

fn to_1252(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 0x80 || (0xA0..=0xFF).contains(&cp) {
        return u8::try_from(cp).ok();
    }
    W1252
        .iter()
        .position(|&w| u32::from(w) == cp)
        .and_then(|i| u8::try_from(i + 0x80).ok())
}

/// The masked text cannot be written in the body's encoding (a mask character windows-1252
/// lacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unencodable;

/// Writes text back in `form`.
pub fn encode(text: &str, form: Form) -> Result<Vec<u8>, Unencodable> {
    let mut out = Vec::with_capacity(text.len() + 4);
    let bom: &[u8] = match (form.bom, form.encoding) {
        (false, _) => &[],
        (true, Encoding::Utf8) => &[0xEF, 0xBB, 0xBF],
        (true, Encoding::Utf16Le) => &[0xFF, 0xFE],
        (true, Encoding::Utf16Be) => &[0xFE, 0xFF],
        (true, Encoding::Utf32Le) => &[0xFF, 0xFE, 0, 0],
        (true, Encoding::Utf32Be) => &[0, 0, 0xFE, 0xFF],
        (true, Encoding::Windows1252) => &[],
    };
    out.extend_from_slice(bom);
    match form.encoding {
        Encoding::Utf8 => out.extend_from_slice(text.as_bytes()),
        Encoding::Utf16Le => text
            .encode_utf16()
            .for_each(|u| out.extend_from_slice(&u.to_le_bytes())),
        Encoding::Utf16Be => text
            .encode_utf16()
            .for_each(|u| out.extend_from_slice(&u.to_be_bytes())),
        Encoding::Utf32Le => text
            .chars()
            .for_each(|c| out.extend_from_slice(&(c as u32).to_le_bytes())),
        Encoding::Utf32Be => text
            .chars()
            .for_each(|c| out.extend_from_slice(&(c as u32).to_be_bytes())),
        Encoding::Windows1252 => {
            for c in text.chars() {
                out.push(to_1252(c).ok_or(Unencodable)?);
            }
        }
    }
    Ok(out)
}

/// [`encode`] of text the caller is done with: UTF-8 without a byte-order mark (nearly every
/// body) is the text's own buffer, not a copy of it.
pub fn encode_owned(text: String, form: Form) -> Result<Vec<u8>, Unencodable> {
    match form {
        Form {
            encoding: Encoding::Utf8,
            bom: false,
        } => Ok(text.into_bytes()),
        _ => encode(&text, form),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_text_encodes_as_borrowed_text_does() {
        for encoding in [
            Encoding::Utf8,
            Encoding::Utf16Le,
            Encoding::Utf16Be,
            Encoding::Utf32Le,
            Encoding::Utf32Be,
            Encoding::Windows1252,
        ] {
            for bom in [false, true] {
                let form = Form { encoding, bom };
                for s in ["", "{\"ssn\":\"***-**-6789\"}", "café", "☃ 😀"] {
                    assert_eq!(
                        encode_owned(s.to_string(), form),
                        encode(s, form),
                        "{form:?} {s}"
                    );
                }
            }
        }
    }

    fn utf16(s: &str, le: bool) -> Vec<u8> {
        s.encode_utf16()
            .flat_map(|u| if le { u.to_le_bytes() } else { u.to_be_bytes() })
            .collect()
    }

    fn text(d: &Decoded<'_>) -> String {
        String::from_utf8(d.utf8.to_vec()).unwrap()
    }

    #[test]
    fn labels_resolve_like_browsers() {
        assert_eq!(resolve("UTF-8"), Some(Declared::Known(Encoding::Utf8)));
        assert_eq!(
            resolve(" latin1 "),
            Some(Declared::Known(Encoding::Windows1252))
        );
        assert_eq!(
            resolve("US-ASCII"),
            Some(Declared::Known(Encoding::Windows1252))
        );
        assert_eq!(resolve("utf-16"), Some(Declared::Utf16));
        assert_eq!(resolve("shift_jis"), None);
        assert_eq!(resolve("utf-7"), None);
        assert_eq!(resolve(""), None);
    }

    #[test]
    fn wide_encodings_round_trip_with_and_without_bom() {
        let s = "ssn 123-45-6789 é ☃ 😀";
        for (bytes, declared) in [
            (utf16(s, true), resolve("utf-16le")),
            (utf16(s, false), resolve("utf-16be")),
            (utf16(s, true), resolve("utf-16")),
            (utf16(s, false), resolve("utf-16")),
            (
                [&[0xFF, 0xFE][..], &utf16(s, true)].concat(),
                resolve("utf-16"),
            ),
            ([&[0xFE, 0xFF][..], &utf16(s, false)].concat(), None),
            // A BOM overrides what is declared.
            (
                [&[0xFE, 0xFF][..], &utf16(s, false)].concat(),
                resolve("latin1"),
            ),
            (utf16(s, true), None),
            (utf16(s, false), None),
        ] {
            let d = decode(&bytes, declared, Guess::Json);
            assert_eq!(text(&d), s, "{declared:?} {:?}", d.form);
            assert_eq!(encode(&text(&d), d.form).unwrap(), bytes);
        }
        let u32le: Vec<u8> = s.chars().flat_map(|c| (c as u32).to_le_bytes()).collect();
        let d = decode(&u32le, resolve("utf-32"), Guess::Json);
        assert_eq!(
            (text(&d), d.form.encoding),
            (s.to_string(), Encoding::Utf32Le)
        );
        assert_eq!(encode(s, d.form).unwrap(), u32le);
        let d = decode(&u32le, None, Guess::Text);
        assert_eq!(text(&d), s);
    }

    #[test]
    fn windows_1252_round_trips_every_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let d = decode(&bytes, resolve("iso-8859-1"), Guess::Text);
        assert_eq!(d.form.encoding, Encoding::Windows1252);
        // Undeclared text that is not UTF-8 is read the same way.
        assert_eq!(
            decode(b"caf\xe9", None, Guess::Text).form.encoding,
            Encoding::Windows1252
        );
        assert_eq!(encode(&text(&d), d.form).unwrap(), bytes);
        assert_eq!(
            encode("snowman ☃", d.form),
            Err(Unencodable),
            "no such character in windows-1252"
        );
    }

    #[test]
    fn utf8_is_borrowed_and_its_bom_kept() {
        let d = decode(b"plain", None, Guess::Text);
        assert!(matches!(d.utf8, Cow::Borrowed(_)));
        let d = decode(b"\xEF\xBB\xBF{\"a\":1}", resolve("utf-16"), Guess::Json);
        assert_eq!((text(&d).as_str(), d.form.bom), ("{\"a\":1}", true));
        assert_eq!(encode("{}", d.form).unwrap(), b"\xEF\xBB\xBF{}".to_vec());
        // Odd bytes and lone surrogates read as U+FFFD, as a browser shows them.
        let d = decode(
            &[0x61, 0x00, 0x00, 0xD8, 0x62],
            resolve("utf-16le"),
            Guess::Text,
        );
        assert_eq!(text(&d), "a\u{FFFD}\u{FFFD}");
    }
}
