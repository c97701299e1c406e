//! A message's whole header map, read once and kept as the one buffer the host filled: names
//! and values are borrowed from it, so reading every header costs two allocations whatever the
//! count, not two per header (what the SDK's map readers cost, measured in
//! `tests/bench/README.md`).
//!
//! The host hands the map over serialized (the proxy-wasm ABI): a little-endian `u32` count,
//! then each header's name and value lengths as `u32` pairs, then each name and value with a
//! NUL after it. [`HeaderMap::from_wire`] checks every length against the buffer; a map that
//! does not add up is read as empty (as a refused read is), never past its end.

use std::borrow::Cow;
use std::ops::Range;

/// One header's place in the text: name, value, whether the value arrived as UTF-8, and where
/// its bytes as they arrived are kept when its text is not ISO-8859-1 of them (a value
/// [`HeaderMap::decode_non_utf8`] read by another rule).
#[derive(Clone, Debug)]
struct Entry {
    name: Range<u32>,
    value: Range<u32>,
    utf8: bool,
    raw: Option<Range<u32>>,
}

/// Every header of one message in the order the host holds them, repeated names included;
/// names in lower case. A value that is not UTF-8 (obs-text, legal in HTTP/1.1) reads as
/// ISO-8859-1, one character per byte, so its ASCII stays what it was and its bytes can be
/// had back exactly ([`HeaderMap::value_bytes`]). Its `Debug` shows names and value lengths
/// only: values carry credentials and personal data.
#[derive(Clone, Default)]
pub struct HeaderMap {
    text: String,
    entries: Vec<Entry>,
    /// The bytes of values read by another rule (empty unless [`HeaderMap::decode_non_utf8`]
    /// found one).
    raw: Vec<u8>,
}

impl std::fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.headers().map(|h| (h.name, h.value.len())))
            .finish()
    }
}

/// One header of a [`HeaderMap`] (no `Debug`: its value may be a credential).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The name, in lower case.
    pub name: &'a str,
    /// The value as text (ISO-8859-1 when it was not UTF-8).
    pub value: &'a str,
    /// Whether the value arrived as UTF-8.
    pub utf8: bool,
    /// The value's bytes as they arrived, when its text is not ISO-8859-1 of them.
    raw: Option<&'a [u8]>,
}

fn le32(b: &[u8], at: usize) -> Option<usize> {
    let w = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize)
}

/// Each byte as the character of the same number.
fn latin1(bytes: &[u8], out: &mut String) {
    out.extend(bytes.iter().map(|&b| char::from(b)));
}

/// A header value's bytes as text, by the one rule every reader of headers uses: UTF-8 (taken
/// over in place), or else ISO-8859-1, each byte one character, so its ASCII stays what it was
/// (a value holding obs-text, legal in HTTP/1.1, must never fail a read).
pub fn value_text(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| {
        let mut out = String::with_capacity(e.as_bytes().len() * 2);
        latin1(e.as_bytes(), &mut out);
        out
    })
}

fn span(r: Range<usize>) -> Range<u32> {
    // Lengths came from u32 fields and the buffer is smaller than the VM's memory (4 GiB).
    u32::try_from(r.start).unwrap_or(u32::MAX)..u32::try_from(r.end).unwrap_or(u32::MAX)
}

/// Where the data part starts and each name and value lies in it (ranges of the data part,
/// marked UTF-8 until checked), names lower-cased in place on the way; `None` when the lengths
/// and the buffer disagree.
fn layout(buf: &mut [u8]) -> Option<(usize, Vec<Entry>)> {
    let n = le32(buf, 0)?;
    let data = n.checked_mul(8)?.checked_add(4)?;
    if data > buf.len() {
        return None;
    }
    let mut entries = Vec::with_capacity(n);
    let mut at = data;
    for i in 0..n {
        let mut field = |buf: &[u8], len: usize| {
            let end = at.checked_add(len)?;
            // Each field is followed by its NUL.
            (buf.get(end) == Some(&0)).then_some(())?;
            let r = at..end;
            at = end + 1;
            Some(r)
        };
        let name = field(buf, le32(buf, 4 + i * 8)?)?;
        let value = field(buf, le32(buf, 8 + i * 8)?)?;
        buf.get_mut(name.clone())?.make_ascii_lowercase();
        entries.push(Entry {
            name: span(name.start - data..name.end - data),
            value: span(value.start - data..value.end - data),
            utf8: true,
            raw: None,
        });
    }
    Some((data, entries))
}

impl HeaderMap {
    /// The map from the host's serialized buffer, taken over without copying when every name
    /// and value is UTF-8 (the usual case); names are lower-cased in place.
    pub fn from_wire(mut buf: Vec<u8>) -> HeaderMap {
        let Some((data, entries)) = layout(&mut buf) else {
            return HeaderMap::default();
        };
        // The data part becomes the text: one move of a few hundred bytes, one UTF-8 check.
        buf.drain(..data);
        match String::from_utf8(buf) {
            Ok(text) => HeaderMap {
                text,
                entries,
                raw: Vec::new(),
            },
            Err(e) => Self::rebuilt(e.as_bytes(), &entries),
        }
    }

    /// The rare map holding bytes that are not UTF-8: built again, each such field read as
    /// ISO-8859-1.
    fn rebuilt(bytes: &[u8], fields: &[Entry]) -> HeaderMap {
        let mut text = String::with_capacity(bytes.len() * 2);
        let mut entries = Vec::with_capacity(fields.len());
        let push = |r: &Range<u32>, text: &mut String| {
            let field = bytes
                .get(r.start as usize..r.end as usize)
                .unwrap_or_default();
            let start = text.len();
            let utf8 = match std::str::from_utf8(field) {
                Ok(s) => {
                    text.push_str(s);
                    true
                }
                Err(_) => {
                    latin1(field, text);
                    false
                }
            };
            (span(start..text.len()), utf8)
        };
        for f in fields {
            let (name, _) = push(&f.name, &mut text);
            let (value, utf8) = push(&f.value, &mut text);
            entries.push(Entry {
                name,
                value,
                utf8,
                raw: None,
            });
        }
        HeaderMap {
            text,
            entries,
            raw: Vec::new(),
        }
    }

    /// The serialized form the host hands over, for `pairs` as given (the fake host and
    /// tests; the adapter never builds one).
    pub fn to_wire<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
        let len = |b: &[u8]| u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes();
        let count = u32::try_from(pairs.len()).unwrap_or(u32::MAX);
        let mut out = count.to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend(len(n.as_ref()));
            out.extend(len(v.as_ref()));
        }
        for (n, v) in pairs {
            out.extend_from_slice(n.as_ref());
            out.push(0);
            out.extend_from_slice(v.as_ref());
            out.push(0);
        }
        out
    }

    /// The map of `pairs` (names lower-cased), read as the adapter reads the host's.
    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> HeaderMap {
        HeaderMap::from_wire(HeaderMap::to_wire(pairs))
    }

    fn field(&self, r: &Range<u32>) -> &str {
        self.text
            .get(r.start as usize..r.end as usize)
            .unwrap_or_default()
    }

    fn header(&self, e: &Entry) -> Header<'_> {
        Header {
            name: self.field(&e.name),
            value: self.field(&e.value),
            utf8: e.utf8,
            raw: e.raw.as_ref().map(|r| {
                self.raw
                    .get(r.start as usize..r.end as usize)
                    .unwrap_or_default()
            }),
        }
    }

    /// Every header in order, repeated names included.
    pub fn headers(&self) -> impl Iterator<Item = Header<'_>> + '_ {
        self.entries.iter().map(|e| self.header(e))
    }

    /// Every `(name, value)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.headers().map(|h| (h.name, h.value))
    }

    /// The first value of `name` (lower case; `:method`, `:path` included).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Whether a header of this name is present (any case).
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// How many headers, repeated names counted each time.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map holds nothing: a read the host refused (Envoy's maps always hold the
    /// pseudo-headers).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A value's bytes as they arrived.
    pub fn value_bytes<'a>(h: &Header<'a>) -> Cow<'a, [u8]> {
        if h.utf8 {
            Cow::Borrowed(h.value.as_bytes())
        } else if let Some(raw) = h.raw {
            Cow::Borrowed(raw)
        } else {
            // Every character came from one byte (ISO-8859-1), so each fits a byte again.
            Cow::Owned(h.value.chars().map(|c| c as u8).collect())
        }
    }

    /// The map with each value that was not UTF-8 read by `decode` instead (a filter with its
    /// own rule for obs-text), its bytes kept for [`HeaderMap::value_bytes`]; the same map
    /// when every value was UTF-8.
    pub fn decode_non_utf8(self, decode: impl Fn(&[u8]) -> String) -> HeaderMap {
        if self.entries.iter().all(|e| e.utf8) {
            return self;
        }
        let mut text = String::with_capacity(self.text.len());
        let mut entries = Vec::with_capacity(self.entries.len());
        let mut raw = Vec::new();
        for h in self.headers() {
            let mut push = |s: &str| {
                let start = text.len();
                text.push_str(s);
                span(start..text.len())
            };
            let name = push(h.name);
            let (value, kept) = if h.utf8 {
                (push(h.value), None)
            } else {
                let bytes = HeaderMap::value_bytes(&h);
                let start = raw.len();
                raw.extend_from_slice(&bytes);
                (push(&decode(&bytes)), Some(span(start..raw.len())))
            };
            entries.push(Entry {
                name,
                value,
                utf8: h.utf8,
                raw: kept,
            });
        }
        HeaderMap { text, entries, raw }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
    use super::*;

    fn pairs(m: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        m.headers()
            .map(|h| (h.name.to_string(), HeaderMap::value_bytes(&h).into_owned()))
            .collect()
    }

    #[test]
    fn reads_back_what_was_written_names_lower_cased() {
        let given: Vec<(&str, &[u8])> = vec![
            (":method", b"GET"),
            (":path", b"/a?b=c"),
            ("X-Mixed-Case", b"Value Kept"),
            ("dup", b"1"),
            ("dup", b""),
            ("latin", b"caf\xe9 \x80\xff"),
            ("", b""),
        ];
        let m = HeaderMap::from_pairs(&given);
        assert_eq!(m.len(), given.len());
        let want: Vec<(String, Vec<u8>)> = given
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
            .collect();
        assert_eq!(pairs(&m), want);
        assert_eq!(m.get("x-mixed-case"), Some("Value Kept"));
        assert_eq!(m.get("dup"), Some("1"), "the first of repeated names");
        assert_eq!(m.get("latin"), Some("caf\u{e9} \u{80}\u{ff}"));
        assert!(m.contains("X-MIXED-CASE"));
        assert!(!m.contains("absent"));
        let utf8: Vec<bool> = m.headers().map(|h| h.utf8).collect();
        assert_eq!(utf8, [true, true, true, true, true, false, true]);
    }

    #[test]
    fn debug_shows_names_and_lengths_never_values() {
        let m = HeaderMap::from_pairs(&[("authorization", "Bearer secret-token")]);
        let shown = format!("{m:?}");
        assert_eq!(shown, r#"{"authorization": 19}"#);
    }

    #[test]
    fn an_empty_buffer_and_a_zero_count_are_empty_maps() {
        assert!(HeaderMap::from_wire(Vec::new()).is_empty());
        assert!(HeaderMap::from_wire(vec![0, 0, 0, 0]).is_empty());
    }

    #[test]
    fn a_buffer_that_does_not_add_up_is_empty_wherever_it_is_cut_or_changed() {
        let wire = HeaderMap::to_wire(&[(":path", "/x"), ("authorization", "Bearer t")]);
        for cut in 0..wire.len() {
            assert!(
                HeaderMap::from_wire(wire[..cut].to_vec()).is_empty(),
                "cut at {cut}"
            );
        }
        // A length one larger or smaller anywhere in the table misplaces a NUL.
        for at in 4..4 + 2 * 8 {
            for delta in [1u8, 255] {
                let mut w = wire.clone();
                w[at] = w[at].wrapping_add(delta);
                assert!(
                    HeaderMap::from_wire(w).is_empty(),
                    "table byte {at} + {delta}"
                );
            }
        }
        // A count past what the buffer holds.
        let mut w = wire.clone();
        w[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::from_wire(w).is_empty());
        // Trailing bytes after the last field are ignored, as the SDK ignores them.
        let mut w = wire;
        w.push(7);
        assert_eq!(HeaderMap::from_wire(w).get(":path"), Some("/x"));
    }

    #[test]
    fn non_utf8_values_can_be_read_by_another_rule() {
        let m = HeaderMap::from_pairs(&[("a", &b"ok"[..]), ("b", &b"\x80"[..])]);
        let d = m.decode_non_utf8(|b| format!("<{}>", b.len()));
        assert_eq!(d.get("a"), Some("ok"));
        assert_eq!(d.get("b"), Some("<1>"));
        // The bytes as they arrived, whatever the rule made of them, even read twice over.
        let twice = d.clone().decode_non_utf8(|_| "€".into());
        for m in [&d, &twice] {
            assert_eq!(
                pairs(m),
                [("a".into(), b"ok".to_vec()), ("b".into(), b"\x80".to_vec())]
            );
        }
        assert_eq!(
            d.headers().map(|h| h.utf8).collect::<Vec<_>>(),
            [true, false]
        );
    }

    #[test]
    fn value_text_is_utf8_or_one_character_per_byte() {
        assert_eq!(value_text("café".as_bytes().to_vec()), "café");
        assert_eq!(value_text(b"caf\xe9 \x80".to_vec()), "caf\u{e9} \u{80}");
    }

    #[test]
    fn a_non_utf8_name_reads_as_iso_8859_1_too() {
        let m = HeaderMap::from_pairs(&[(&b"n\xe9"[..], &b"v"[..])]);
        assert_eq!(m.get("n\u{e9}"), Some("v"));
    }
}
