//! The tokenizer held to the one it replaced: the implementation of `src/json.rs` as it stood
//! before its fast paths (issue #17) is kept below as `reference`, and both read the same
//! generated, mutated and hostile inputs; every event, offset, depth and error must agree.

#![allow(clippy::panic)] // a test: a difference is a panic with both traces

use portcullis_core::json::{self, Error, Event, Limits, Tokenizer};

/// One step as both tokenizers report it: the event with everything a caller can read of it,
/// then `offset()` and `depth()` after it.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    StartObject,
    EndObject,
    StartArray,
    EndArray,
    Name(String, bool, usize, String),
    Str(String, bool, usize, String),
    Num(String),
    Bool(bool),
    Null,
}

type Step = (Result<Option<Ev>, Error>, usize, usize);

fn ev(e: Event<'_>) -> Ev {
    match e {
        Event::StartObject => Ev::StartObject,
        Event::EndObject => Ev::EndObject,
        Event::StartArray => Ev::StartArray,
        Event::EndArray => Ev::EndArray,
        Event::Name(t) => Ev::Name(
            t.raw().into(),
            t.has_escapes(),
            t.start,
            t.unescape().into_owned(),
        ),
        Event::Str(t) => Ev::Str(
            t.raw().into(),
            t.has_escapes(),
            t.start,
            t.unescape().into_owned(),
        ),
        Event::Num(n) => Ev::Num(n.into()),
        Event::Bool(b) => Ev::Bool(b),
        Event::Null => Ev::Null,
    }
}

fn ref_ev(e: reference::Event<'_>) -> Ev {
    use reference::Event as R;
    match e {
        R::StartObject => Ev::StartObject,
        R::EndObject => Ev::EndObject,
        R::StartArray => Ev::StartArray,
        R::EndArray => Ev::EndArray,
        R::Name(t) => Ev::Name(
            t.raw().into(),
            t.has_escapes(),
            t.start,
            t.unescape().into_owned(),
        ),
        R::Str(t) => Ev::Str(
            t.raw().into(),
            t.has_escapes(),
            t.start,
            t.unescape().into_owned(),
        ),
        R::Num(n) => Ev::Num(n.into()),
        R::Bool(b) => Ev::Bool(b),
        R::Null => Ev::Null,
    }
}

/// Calls after the end or an error: a caller may go on asking (a look-ahead does).
const EXTRA: usize = 2;

/// Every step of the tokenizer under test over `input`, from `new` (and from `for_str` when
/// the input is text).
fn trace(input: &[u8], limits: Limits) -> (Result<(), Error>, Vec<Step>, Option<Vec<Step>>) {
    fn run(mut t: Tokenizer<'_>) -> Vec<Step> {
        let mut out = Vec::new();
        let mut extra = 0;
        loop {
            let r = t.next_event().map(|o| o.map(ev));
            let done = !matches!(r, Ok(Some(_)));
            out.push((r, t.offset(), t.depth()));
            if done {
                extra += 1;
                if extra > EXTRA {
                    return out;
                }
            }
        }
    }
    let new = match Tokenizer::new(input, limits) {
        Ok(t) => run(t),
        Err(e) => vec![(Err(e), usize::MAX, usize::MAX)],
    };
    let for_str = std::str::from_utf8(input)
        .ok()
        .map(|s| run(Tokenizer::for_str(s, limits)));
    (json::validate(input, limits), new, for_str)
}

/// The same from the reference.
fn ref_trace(input: &[u8], limits: Limits) -> (Result<(), Error>, Vec<Step>, Option<Vec<Step>>) {
    fn run(mut t: reference::Tokenizer<'_>) -> Vec<Step> {
        let mut out = Vec::new();
        let mut extra = 0;
        loop {
            let r = t.next_event().map(|o| o.map(ref_ev));
            let done = !matches!(r, Ok(Some(_)));
            out.push((r, t.offset(), t.depth()));
            if done {
                extra += 1;
                if extra > EXTRA {
                    return out;
                }
            }
        }
    }
    let new = match reference::Tokenizer::new(input, limits) {
        Ok(t) => run(t),
        Err(e) => vec![(Err(e), usize::MAX, usize::MAX)],
    };
    let for_str = std::str::from_utf8(input)
        .ok()
        .map(|s| run(reference::Tokenizer::for_str(s, limits)));
    (reference::validate(input, limits), new, for_str)
}

/// Asserts that both tokenizers read `input` alike under `limits`.
fn same(input: &[u8], limits: Limits) {
    let got = trace(input, limits);
    let want = ref_trace(input, limits);
    if got != want {
        let show = String::from_utf8_lossy(input);
        // The first step that differs, not the whole trace of a long input.
        let at = got
            .1
            .iter()
            .zip(&want.1)
            .position(|(a, b)| a != b)
            .unwrap_or(got.1.len().min(want.1.len()));
        panic!(
            "tokenizers differ on {show:?} ({} bytes) under {limits:?}\n validate: {:?} vs {:?}\n step {at}: {:?}\n  reference: {:?}",
            input.len(),
            got.0,
            want.0,
            got.1.get(at),
            want.1.get(at),
        );
    }
}

/// The limits every input is read under: none, then tight ones of each kind.
fn all_limits() -> Vec<Limits> {
    let d = Limits::default();
    vec![
        d,
        Limits {
            max_depth: 3,
            max_array_len: 3,
            max_string_len: 5,
            max_object_members: 2,
            reject_duplicate_names: true,
            check_number_range: true,
        },
        Limits { max_depth: 1, ..d },
        Limits {
            max_string_len: 0,
            ..d
        },
        Limits {
            max_string_len: 9,
            ..d
        },
        Limits {
            max_depth: 64,
            max_array_len: 100,
            max_string_len: 300,
            max_object_members: 50,
            reject_duplicate_names: true,
            check_number_range: true,
        },
    ]
}

fn same_under_all(input: &[u8]) {
    for l in all_limits() {
        same(input, l);
    }
}

/// xorshift64: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

const WS: &[&str] = &["", "", "", " ", "\n", "\t", "\r\n  ", "   "];

const STRING_PARTS: &[&str] = &[
    "a",
    "abcdefgh",
    "hello world",
    "é",
    "😀",
    "\u{7f}",
    "\u{80}",
    "\u{ffff}",
    "\\\"",
    "\\\\",
    "\\/",
    "\\b",
    "\\f",
    "\\n",
    "\\r",
    "\\t",
    "\\u0041",
    "\\u00e9",
    "\\u20AC",
    "\\ud83d\\ude00",
    "\\uD83D\\uDE00",
    "\\u0000",
    "\\uffff",
    " ",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    "0123456789",
    "t00-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

/// Parts that make a string invalid (picked now and then).
const BAD_STRING_PARTS: &[&str] = &[
    "\\ud800",
    "\\udc00",
    "\\ud800\\u0041",
    "\\u12",
    "\\x",
    "\u{1}",
    "\n",
    "\\",
];

/// Valid numbers first ([`VALID_NUMBERS`] of them), then invalid ones.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "12",
    "12345678",
    "123456789",
    "1234567890123456789",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "1.5",
    "-0.0",
    "0.000000001",
    "1e10",
    "1E+2",
    "1e-2",
    "2.5e-300",
    "1e400",
    "-1e400",
    "1.7976931348623157e308",
    "1700000000000",
    "01",
    "1.",
    ".5",
    "-",
    "1e",
    "1e+",
    "+1",
    "--1",
    "0x10",
    "1.2.3",
];

const VALID_NUMBERS: usize = 25;

fn gen_string(r: &mut Rng, out: &mut String) {
    out.push('"');
    for _ in 0..r.below(6) {
        if r.below(40) == 0 {
            out.push_str(r.pick(BAD_STRING_PARTS));
        } else {
            out.push_str(r.pick(STRING_PARTS));
        }
    }
    // Plain runs of every length, to cross word boundaries at every alignment.
    if r.below(3) == 0 {
        for _ in 0..r.below(40) {
            out.push(char::from(b'a' + r.below(26) as u8));
        }
    }
    out.push('"');
}

fn gen_value(r: &mut Rng, out: &mut String, depth: usize) {
    let k = if depth > 6 { r.below(5) } else { r.below(8) };
    match k {
        0 => gen_string(r, out),
        1 if r.below(20) == 0 => out.push_str(r.pick(NUMBERS)),
        2 if r.below(20) == 0 => out.push_str(r.pick(&["tru", "nul", "falsy", "True"])),
        2 => out.push_str(r.pick(&["true", "false", "null"])),
        _ if k < 5 => out.push_str(r.pick(&NUMBERS[..VALID_NUMBERS])),
        5 => {
            out.push('[');
            let n = r.below(6);
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r.pick(WS));
                gen_value(r, out, depth + 1);
                out.push_str(r.pick(WS));
            }
            out.push(']');
        }
        _ => {
            out.push('{');
            let n = r.below(6);
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r.pick(WS));
                if r.below(3) == 0 {
                    out.push_str(r.pick(&["\"a\"", "\"b\"", "\"\\u0061\"", "\"\""]));
                } else {
                    gen_string(r, out);
                }
                out.push_str(r.pick(WS));
                out.push(':');
                out.push_str(r.pick(WS));
                gen_value(r, out, depth + 1);
            }
            out.push_str(r.pick(WS));
            out.push('}');
        }
    }
}

fn gen_doc(r: &mut Rng) -> String {
    let mut s = String::new();
    s.push_str(r.pick(WS));
    gen_value(r, &mut s, 0);
    s.push_str(r.pick(WS));
    s
}

/// A few random edits of `doc`: a byte replaced, inserted or removed, from a pool of bytes
/// that matter to the grammar, to UTF-8 and to the word scans.
fn mutate(r: &mut Rng, doc: &[u8]) -> Vec<u8> {
    const POOL: &[u8] = b"\"\\{}[]:,. -+eE0123456789tfnlu\x00\x1f\x20\x7f\x80\xbf\xc0\xc3\xe2\xed\xf0\xf4\xf5\xff\t\r\n/";
    let mut b = doc.to_vec();
    for _ in 0..1 + r.below(3) {
        let at = r.below(b.len() + 1);
        let c = r.pick(POOL);
        match r.below(3) {
            0 if at < b.len() => b[at] = c,
            1 if at < b.len() => {
                b.remove(at);
            }
            _ => b.insert(at, c),
        }
    }
    b
}

#[test]
fn generated_documents_read_alike() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut valid = 0;
    for _ in 0..4_000 {
        let doc = gen_doc(&mut r);
        same_under_all(doc.as_bytes());
        valid += usize::from(json::validate(doc.as_bytes(), Limits::default()).is_ok());
    }
    // Most documents are valid, so most are read to their end.
    assert!(
        valid > 2_000,
        "only {valid} of 4000 generated documents are valid"
    );
}

#[test]
fn mutated_documents_read_alike() {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..12_000 {
        let doc = gen_doc(&mut r);
        let m = mutate(&mut r, doc.as_bytes());
        same_under_all(&m);
    }
}

#[test]
fn every_truncation_reads_alike() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    for _ in 0..300 {
        let doc = gen_doc(&mut r);
        let b = doc.as_bytes();
        for end in 0..=b.len() {
            same(&b[..end], Limits::default());
            same(&b[end..], Limits::default());
        }
    }
}

#[test]
fn random_bytes_read_alike() {
    let mut r = Rng(0xdead_beef_cafe_f00d);
    let alphabet: &[u8] = b"\"\\{}[]:,0123456789-+.eEtrufalsn \n\t\r\x00\x1f\x7f\x80\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xff";
    for _ in 0..30_000 {
        let len = r.below(48);
        let b: Vec<u8> = (0..len).map(|_| r.pick(alphabet)).collect();
        same_under_all(&b);
        let b: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
        same(&b, Limits::default());
    }
}

#[test]
fn invalid_utf8_at_every_position_reads_alike() {
    let mut r = Rng(0x0bad_c0de_0bad_c0de);
    let bad: &[&[u8]] = &[
        b"\xff",
        b"\x80",
        b"\xc3",
        b"\xc0\xaf",
        b"\xe2\x82",
        b"\xed\xa0\x80",
        b"\xf0\x9f\x98",
        b"\xf4\x90\x80\x80",
        b"\xf5",
    ];
    for _ in 0..60 {
        let doc = gen_doc(&mut r);
        let b = doc.as_bytes();
        for at in 0..=b.len() {
            let mut m = b[..at].to_vec();
            m.extend_from_slice(r.pick(bad));
            m.extend_from_slice(&b[at..]);
            same(&m, Limits::default());
        }
    }
    // In a long string, at every alignment.
    for len in 0..40 {
        for at in 0..=len {
            for x in bad {
                let mut m = b"[\"".to_vec();
                m.extend(std::iter::repeat_n(b'a', at));
                m.extend_from_slice(x);
                m.extend(std::iter::repeat_n(b'b', len - at));
                m.extend_from_slice(b"\"]");
                same(&m, Limits::default());
            }
        }
    }
}

#[test]
fn every_escape_reads_alike() {
    let mut bytes: Vec<Vec<u8>> = Vec::new();
    for c in 0..=255u8 {
        bytes.push(vec![b'\\', c]);
    }
    for h in [
        "0000", "001f", "0041", "00e9", "07ff", "0800", "d7ff", "d800", "dbff", "dc00", "dfff",
        "e000", "fffd", "ffff", "FFFF", "aBcD", "12", "12g4", "+123", "-123", " 123", "123",
    ] {
        bytes.push(format!("\\u{h}").into_bytes());
        for lo in [
            "dc00", "dfff", "DC00", "d800", "0041", "e000", "zzzz", "dc0",
        ] {
            bytes.push(format!("\\u{h}\\u{lo}").into_bytes());
            bytes.push(format!("\\u{h}\\x{lo}").into_bytes());
            bytes.push(format!("\\u{h}u{lo}").into_bytes());
        }
    }
    for e in &bytes {
        for pre in 0..10 {
            for post in [0usize, 1, 7, 9] {
                let mut m = b"[\"".to_vec();
                m.extend(std::iter::repeat_n(b'p', pre));
                m.extend_from_slice(e);
                m.extend(std::iter::repeat_n(b'q', post));
                m.extend_from_slice(b"\",1]");
                same_under_all(&m);
                // Cut short inside and after the escape.
                for cut in 2..m.len() {
                    same(&m[..cut], Limits::default());
                }
            }
        }
    }
}

#[test]
fn long_strings_read_alike_at_every_alignment() {
    let specials: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"\\n",
        b"\x00",
        b"\x1f",
        b"\n",
        b"\x7f",
        b"\xc3\xa9",
        b"\xf0\x9f\x98\x80",
        b" ",
        b"!",
        b"#",
        b"[",
        b"]",
        b"\\u0041",
    ];
    for pad in 0..9 {
        for len in 0..34 {
            for at in 0..=len {
                for sp in specials {
                    let mut m: Vec<u8> = std::iter::repeat_n(b' ', pad).collect();
                    m.extend_from_slice(b"{\"k\":\"");
                    m.extend(std::iter::repeat_n(b'a', at));
                    m.extend_from_slice(sp);
                    m.extend(std::iter::repeat_n(b'z', len - at));
                    m.extend_from_slice(b"\"}");
                    same(&m, Limits::default());
                    for max in [at, len, len + 1] {
                        same(
                            &m,
                            Limits {
                                max_string_len: max,
                                ..Limits::default()
                            },
                        );
                    }
                    // The string as a name, and the input ending inside it.
                    let mut n = b"{\"".to_vec();
                    n.extend_from_slice(&m[pad + 6..m.len() - 2]);
                    n.extend_from_slice(b"\":0}");
                    same(&n, Limits::default());
                    same(&m[..m.len() - 2], Limits::default());
                }
            }
        }
    }
}

#[test]
fn whitespace_and_numbers_read_alike_at_every_alignment() {
    let ws: &[&str] = &[" ", "\n", "\t", "\r", "\x0b", "\x0c", "\x00"];
    for pad in 0..17 {
        for w in ws {
            for n in NUMBERS {
                for tail in ["", "]", ",1]", " ]", "x]", ".]", "e]"] {
                    let doc = format!("{}[{}{n}{tail}", w.repeat(pad), w.repeat(pad % 3));
                    same(doc.as_bytes(), Limits::default());
                    same(
                        doc.as_bytes(),
                        Limits {
                            check_number_range: true,
                            ..Limits::default()
                        },
                    );
                }
            }
        }
    }
    for lit in ["true", "false", "null"] {
        for cut in 0..=lit.len() {
            for tail in ["", " ", "]", "x", "e", ",", "}"] {
                for pre in ["", "[", "{\"a\":", "[1,"] {
                    same(
                        format!("{pre}{}{tail}", &lit[..cut]).as_bytes(),
                        Limits::default(),
                    );
                }
            }
        }
    }
}

#[test]
fn deep_nesting_reads_alike_at_the_limit() {
    for depth in [1usize, 2, 3, 8, 64, 127, 128, 129, 1000] {
        for limit in [depth - 1, depth, depth + 1] {
            let limits = Limits {
                max_depth: limit.max(1),
                ..Limits::default()
            };
            for (open, close) in [("[", "]"), ("{\"a\":", "}"), ("[{\"x\":", "}]")] {
                let doc = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                same(doc.as_bytes(), limits);
                same(&doc.as_bytes()[..doc.len() - 1], limits);
                let doc = format!("{}{}", open.repeat(depth), close.repeat(depth));
                same(doc.as_bytes(), limits);
            }
        }
    }
}

#[test]
fn containers_at_their_size_limits_read_alike() {
    for n in 0..40usize {
        let arr = format!(
            "[{}]",
            (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
        );
        let obj = format!(
            "{{{}}}",
            (0..n)
                .map(|i| format!("\"k{}\":{i}", i % 19))
                .collect::<Vec<_>>()
                .join(",")
        );
        for limit in [0, 1, n.saturating_sub(1), n, n + 1] {
            let l = Limits {
                max_array_len: limit,
                max_object_members: limit,
                ..Limits::default()
            };
            same(arr.as_bytes(), l);
            same(obj.as_bytes(), l);
            let dup = Limits {
                reject_duplicate_names: true,
                ..l
            };
            same(obj.as_bytes(), dup);
        }
    }
}

#[test]
fn write_string_writes_alike() {
    let mut r = Rng(0x5555_aaaa_3333_cccc);
    for _ in 0..20_000 {
        let len = r.below(40);
        let s: String = (0..len)
            .map(|_| match r.below(6) {
                0 => char::from(r.below(0x20) as u8),
                1 => r.pick(&['"', '\\', 'é', '😀', '\u{7f}']),
                _ => char::from(b' ' + r.below(95) as u8),
            })
            .collect();
        let (mut a, mut b) = (String::new(), String::new());
        json::write_string(&s, &mut a);
        reference::write_string(&s, &mut b);
        assert_eq!(a, b, "{s:?}");
    }
}

/// `src/json.rs` as it stood before issue #17 (limits and errors are the same types).
#[allow(dead_code, clippy::all)]
mod reference {
    use std::borrow::Cow;
    use std::collections::HashSet;

    pub use portcullis_core::json::{Error, Limits};

    /// A string of the document: its raw text between the quotes (escapes still in it).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Text<'a> {
        raw: &'a str,
        escaped: bool,
        /// Offset of the opening quote in the input.
        pub start: usize,
    }

    impl<'a> Text<'a> {
        /// The text between the quotes, as written.
        pub fn raw(&self) -> &'a str {
            self.raw
        }

        /// True when the raw text holds escapes (its value differs from its text).
        pub fn has_escapes(&self) -> bool {
            self.escaped
        }

        /// The value, unescaped (borrowed when there is nothing to unescape). The tokenizer has
        /// already checked every escape, so this cannot fail.
        #[inline]
        pub fn unescape(&self) -> Cow<'a, str> {
            if !self.escaped {
                return Cow::Borrowed(self.raw);
            }
            self.unescape_owned()
        }

        /// The escaped case, kept out of line so that the common one inlines into callers.
        #[inline(never)]
        fn unescape_owned(&self) -> Cow<'a, str> {
            let mut out = String::with_capacity(self.raw.len());
            unescape_into(self.raw, &mut out);
            Cow::Owned(out)
        }
    }

    /// One step through a document.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Event<'a> {
        /// `{`
        StartObject,
        /// `}`
        EndObject,
        /// `[`
        StartArray,
        /// `]`
        EndArray,
        /// A member name (the value follows).
        Name(Text<'a>),
        /// A string value.
        Str(Text<'a>),
        /// A number, exactly as written.
        Num(&'a str),
        /// `true` / `false`.
        Bool(bool),
        /// `null`.
        Null,
    }

    enum Frame<'a> {
        Array {
            len: usize,
        },
        Object {
            members: usize,
            names: Option<Names<'a>>,
        },
    }

    /// The member names of one object, for duplicate detection: a short list compared in place
    /// (no hashing, and no copy of a name without escapes), a hash set once the object is large.
    enum Names<'a> {
        /// The names, and a 64-bit filter of them ([`name_bit`]): a name whose bit is not set yet
        /// is new without a compare, so the list is searched only on a (rare) shared bit.
        Few(Vec<Cow<'a, str>>, u64),
        Many(HashSet<Cow<'a, str>>),
    }

    /// Up to this many names a linear search beats hashing.
    const FEW_NAMES: usize = 16;

    /// One bit of 64 for a member name, from its length and three of its bytes (equal names have
    /// equal bits; different names usually do not).
    #[inline]
    fn name_bit(name: &str) -> u64 {
        let b = name.as_bytes();
        let at = |i: usize| u64::from(b.get(i).copied().unwrap_or(0));
        let x = b.len() as u64
            ^ (at(0) << 8)
            ^ (at(b.len().wrapping_sub(1)) << 16)
            ^ (at(b.len() / 2) << 24);
        1 << (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
    }

    impl<'a> Names<'a> {
        /// Adds a name; false when it was already there.
        fn insert(&mut self, name: Cow<'a, str>) -> bool {
            match self {
                Names::Few(v, filter) => {
                    let bit = name_bit(&name);
                    if *filter & bit != 0 && v.contains(&name) {
                        return false;
                    }
                    *filter |= bit;
                    if v.len() < FEW_NAMES {
                        if v.capacity() == 0 {
                            // Room for every name the list holds, at once: no regrowth.
                            v.reserve_exact(FEW_NAMES);
                        }
                        v.push(name);
                    } else {
                        let mut set: HashSet<Cow<'a, str>> = v.drain(..).collect();
                        set.insert(name);
                        *self = Names::Many(set);
                    }
                    true
                }
                Names::Many(set) => set.insert(name),
            }
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Expect {
        /// A value (document start, after `:`, or an array element).
        Value,
        /// Right after `[`: a value or `]`.
        FirstElement,
        /// Right after `{`: a name or `}`.
        FirstName,
        /// After a member value or an element: `,` or the closing bracket.
        CommaOrClose,
        /// The document is complete: only whitespace may follow.
        End,
    }

    /// The tokenizer: call [`Tokenizer::next_event`] until it returns `Ok(None)`.
    pub struct Tokenizer<'a> {
        s: &'a str,
        b: &'a [u8],
        i: usize,
        stack: Vec<Frame<'a>>,
        expect: Expect,
        limits: Limits,
    }

    impl<'a> Tokenizer<'a> {
        /// A tokenizer over a complete document; the input must be UTF-8.
        pub fn new(input: &'a [u8], limits: Limits) -> Result<Self, Error> {
            let s = std::str::from_utf8(input).map_err(|e| Error::InvalidUtf8(e.valid_up_to()))?;
            Ok(Tokenizer {
                s,
                b: input,
                i: 0,
                stack: Vec::new(),
                expect: Expect::Value,
                limits,
            })
        }

        /// A tokenizer over text already known to be UTF-8 (a part of a document another
        /// tokenizer is reading, say: a look-ahead must not check the rest of the body again).
        pub fn for_str(input: &'a str, limits: Limits) -> Self {
            Tokenizer {
                s: input,
                b: input.as_bytes(),
                i: 0,
                stack: Vec::new(),
                expect: Expect::Value,
                limits,
            }
        }

        /// Offset just after the last event.
        pub fn offset(&self) -> usize {
            self.i
        }

        /// Current nesting depth.
        pub fn depth(&self) -> usize {
            self.stack.len()
        }

        #[inline(always)]
        fn ws(&mut self) {
            // Compact bodies have no whitespace between tokens: one compare rules it out (no
            // whitespace byte is above a space).
            if self.b.get(self.i).is_some_and(|&c| c > b' ') {
                return;
            }
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
                self.i += 1;
            }
        }

        fn syntax<T>(&self) -> Result<T, Error> {
            Err(Error::Syntax(self.i))
        }

        /// The next event, `Ok(None)` at the end of a complete document.
        pub fn next_event(&mut self) -> Result<Option<Event<'a>>, Error> {
            self.ws();
            match self.expect {
                Expect::End => {
                    if self.i == self.b.len() {
                        Ok(None)
                    } else {
                        self.syntax()
                    }
                }
                Expect::Value => self.value(),
                Expect::FirstElement => {
                    if self.b.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(Some(self.close()));
                    }
                    self.element()
                }
                Expect::FirstName => {
                    if self.b.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(Some(self.close()));
                    }
                    self.name()
                }
                Expect::CommaOrClose => {
                    let c = self.b.get(self.i).copied();
                    match (c, self.stack.last()) {
                        (Some(b','), Some(Frame::Array { .. })) => {
                            self.i += 1;
                            self.ws();
                            self.element()
                        }
                        (Some(b','), Some(Frame::Object { .. })) => {
                            self.i += 1;
                            self.ws();
                            self.name()
                        }
                        (Some(b']'), Some(Frame::Array { .. }))
                        | (Some(b'}'), Some(Frame::Object { .. })) => {
                            self.i += 1;
                            Ok(Some(self.close()))
                        }
                        _ => self.syntax(),
                    }
                }
            }
        }

        /// Pops a container; what comes next depends on what is around it.
        fn close(&mut self) -> Event<'a> {
            let ev = match self.stack.pop() {
                Some(Frame::Array { .. }) => Event::EndArray,
                _ => Event::EndObject,
            };
            self.expect = if self.stack.is_empty() {
                Expect::End
            } else {
                Expect::CommaOrClose
            };
            ev
        }

        #[inline]
        fn element(&mut self) -> Result<Option<Event<'a>>, Error> {
            if let Some(Frame::Array { len }) = self.stack.last_mut() {
                *len += 1;
                if *len > self.limits.max_array_len {
                    return Err(Error::ArrayTooLong(self.i));
                }
            }
            self.value()
        }

        #[inline(always)]
        fn name(&mut self) -> Result<Option<Event<'a>>, Error> {
            if self.b.get(self.i) != Some(&b'"') {
                return self.syntax();
            }
            let at = self.i;
            let text = self.string()?;
            if let Some(Frame::Object { members, names }) = self.stack.last_mut() {
                *members += 1;
                if *members > self.limits.max_object_members {
                    return Err(Error::TooManyMembers(at));
                }
                if let Some(set) = names {
                    if !set.insert(text.unescape()) {
                        return Err(Error::DuplicateName(at));
                    }
                }
            }
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return self.syntax();
            }
            self.i += 1;
            self.expect = Expect::Value;
            Ok(Some(Event::Name(text)))
        }

        /// After a scalar: the document ends, or its container goes on.
        fn after_scalar(&mut self) {
            self.expect = if self.stack.is_empty() {
                Expect::End
            } else {
                Expect::CommaOrClose
            };
        }

        #[inline(always)]
        fn value(&mut self) -> Result<Option<Event<'a>>, Error> {
            let Some(&c) = self.b.get(self.i) else {
                return self.syntax();
            };
            let ev = match c {
                b'{' | b'[' => {
                    if self.stack.len() >= self.limits.max_depth {
                        return Err(Error::TooDeep(self.i));
                    }
                    self.i += 1;
                    if c == b'{' {
                        self.stack.push(Frame::Object {
                            members: 0,
                            names: self
                                .limits
                                .reject_duplicate_names
                                .then(|| Names::Few(Vec::new(), 0)),
                        });
                        self.expect = Expect::FirstName;
                        return Ok(Some(Event::StartObject));
                    }
                    self.stack.push(Frame::Array { len: 0 });
                    self.expect = Expect::FirstElement;
                    return Ok(Some(Event::StartArray));
                }
                b'"' => Event::Str(self.string()?),
                b't' => self.literal("true", Event::Bool(true))?,
                b'f' => self.literal("false", Event::Bool(false))?,
                b'n' => self.literal("null", Event::Null)?,
                b'-' | b'0'..=b'9' => Event::Num(self.number()?),
                _ => return self.syntax(),
            };
            self.after_scalar();
            Ok(Some(ev))
        }

        fn literal(&mut self, word: &str, ev: Event<'a>) -> Result<Event<'a>, Error> {
            // Bytes, not a `str` range: the word is ASCII, so equal bytes are whole characters.
            if self.b.get(self.i..self.i + word.len()) == Some(word.as_bytes()) {
                self.i += word.len();
                Ok(ev)
            } else {
                self.syntax()
            }
        }

        fn digits(&mut self) -> usize {
            let start = self.i;
            // Eight bytes at a time while a whole word is left; the last few one by one.
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let stop = word::non_digits(u64::from_le_bytes(word));
                if stop != 0 {
                    self.i += (stop.trailing_zeros() / 8) as usize;
                    return self.i - start;
                }
                self.i += 8;
            }
            while let Some(b'0'..=b'9') = self.b.get(self.i) {
                self.i += 1;
            }
            self.i - start
        }

        fn number(&mut self) -> Result<&'a str, Error> {
            let start = self.i;
            if self.b.get(self.i) == Some(&b'-') {
                self.i += 1;
            }
            match self.b.get(self.i) {
                Some(b'0') => self.i += 1,
                Some(b'1'..=b'9') => {
                    self.digits();
                }
                _ => return self.syntax(),
            }
            let mut integer = true;
            if self.b.get(self.i) == Some(&b'.') {
                integer = false;
                self.i += 1;
                if self.digits() == 0 {
                    return self.syntax();
                }
            }
            if let Some(b'e' | b'E') = self.b.get(self.i) {
                integer = false;
                self.i += 1;
                if let Some(b'+' | b'-') = self.b.get(self.i) {
                    self.i += 1;
                }
                if self.digits() == 0 {
                    return self.syntax();
                }
            }
            let text = span(self.s, start, self.i).ok_or(Error::Syntax(start))?;
            if self.limits.check_number_range {
                let fits = if integer {
                    text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok()
                } else {
                    text.parse::<f64>().is_ok_and(f64::is_finite)
                };
                if !fits {
                    return Err(Error::NumberOutOfRange(start));
                }
            }
            Ok(text)
        }

        fn hex4(&self, at: usize) -> Result<u32, Error> {
            let h = self.b.get(at..at + 4).ok_or(Error::Syntax(at))?;
            let mut v = 0u32;
            for c in h {
                let d = match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    b'A'..=b'F' => c - b'A' + 10,
                    _ => return Err(Error::Syntax(at)),
                };
                v = v * 16 + u32::from(d);
            }
            Ok(v)
        }

        /// Checks a string starting at `"`; returns its text.
        #[inline(always)]
        fn string(&mut self) -> Result<Text<'a>, Error> {
            let open = self.i;
            let start = open + 1;
            // Most strings are one plain run up to the closing quote: that case is read by one
            // scan, inline; escapes, control characters and the end of input go the long way.
            let run = plain_run(self.b.get(start..).unwrap_or_default());
            let end = start + run;
            if self.b.get(end) == Some(&b'"') {
                if run > self.limits.max_string_len {
                    return Err(Error::StringTooLong(open));
                }
                if let Some(raw) = span(self.s, start, end) {
                    self.i = end + 1;
                    return Ok(Text {
                        raw,
                        escaped: false,
                        start: open,
                    });
                }
            }
            self.string_slow(open)
        }

        /// [`Tokenizer::string`] byte by byte between plain runs, from the opening quote at `open`.
        #[inline(never)]
        fn string_slow(&mut self, open: usize) -> Result<Text<'a>, Error> {
            self.i = open + 1;
            let start = self.i;
            let mut escaped = false;
            // Bytes of the unescaped value (checked against max_string_len as it grows).
            let mut len = 0usize;
            loop {
                let Some(&c) = self.b.get(self.i) else {
                    return self.syntax();
                };
                match c {
                    b'"' => {
                        let raw = &self.s[start..self.i];
                        self.i += 1;
                        return Ok(Text {
                            raw,
                            escaped,
                            start: open,
                        });
                    }
                    b'\\' => {
                        escaped = true;
                        let esc = self.b.get(self.i + 1).copied();
                        let width = match esc {
                            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                                self.i += 2;
                                1
                            }
                            Some(b'u') => {
                                let hi = self.hex4(self.i + 2)?;
                                self.i += 6;
                                let code = if (0xD800..0xDC00).contains(&hi) {
                                    // A high surrogate must be followed by `\u` + a low surrogate.
                                    if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                        return Err(Error::LoneSurrogate(self.i));
                                    }
                                    let lo = self.hex4(self.i + 2)?;
                                    if !(0xDC00..0xE000).contains(&lo) {
                                        return Err(Error::LoneSurrogate(self.i));
                                    }
                                    self.i += 6;
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else if (0xDC00..0xE000).contains(&hi) {
                                    return Err(Error::LoneSurrogate(self.i));
                                } else {
                                    hi
                                };
                                char::from_u32(code).map_or(3, char::len_utf8)
                            }
                            _ => return self.syntax(),
                        };
                        len += width;
                    }
                    0x00..=0x1f => return self.syntax(),
                    _ => {
                        // Input is valid UTF-8: skip to the next byte that matters.
                        let run = plain_run(self.b.get(self.i..).unwrap_or_default());
                        self.i += run;
                        len += run;
                    }
                }
                if len > self.limits.max_string_len {
                    return Err(Error::StringTooLong(open));
                }
            }
        }
    }

    /// `s[start..end]`, for spans whose ends sit next to ASCII bytes the tokenizer has read (so
    /// always `Some`): cut at each end in turn, two single boundary checks the compiler inlines.
    #[inline(always)]
    fn span(s: &str, start: usize, end: usize) -> Option<&str> {
        s.split_at_checked(end)
            .and_then(|(head, _)| head.get(start..))
    }

    /// Length of the run of plain string text at the start of `b` (up to the first `"`, `\\` or
    /// control character), eight bytes at a time: for each test the word trick below flags the
    /// bytes of the word that match, and the lowest flag says where the run ends.
    #[inline(always)]
    fn plain_run(b: &[u8]) -> usize {
        let stops = |w: u64| {
            let quote = word::bytes_equal(w, b'"');
            let backslash = word::bytes_equal(w, b'\\');
            let control = word::bytes_below(w, 0x20);
            // A flag can be spurious only above a true match (a borrow runs upwards), so the
            // lowest flag is the first byte that stops the run.
            quote | backslash | control
        };
        let mut i = 0;
        while let Some(chunk) = b.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let hit = stops(u64::from_le_bytes(word));
            if hit != 0 {
                return i + (hit.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        // The tail, padded with `"`, which stops the run where the input ends.
        let rest = &b[i..];
        let mut word = [b'"'; 8];
        word[..rest.len()].copy_from_slice(rest);
        i + (stops(u64::from_le_bytes(word)).trailing_zeros() / 8) as usize
    }

    /// Unescapes the raw text of a string the tokenizer accepted.
    fn unescape_into(raw: &str, out: &mut String) {
        let b = raw.as_bytes();
        let mut i = 0;
        let hex = |at: usize| -> u32 {
            raw.get(at..at + 4)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .unwrap_or(0xFFFD)
        };
        while i < b.len() {
            let Some(off) = b[i..].iter().position(|&c| c == b'\\') else {
                out.push_str(&raw[i..]);
                return;
            };
            out.push_str(&raw[i..i + off]);
            i += off;
            let ch = match b.get(i + 1) {
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    let hi = hex(i + 2);
                    if (0xD800..0xDC00).contains(&hi) {
                        let lo = hex(i + 8);
                        i += 6;
                        char::from_u32(
                            0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF),
                        )
                        .unwrap_or('\u{FFFD}')
                    } else {
                        char::from_u32(hi).unwrap_or('\u{FFFD}')
                    }
                }
                Some(&c) => char::from(c),
                None => break,
            };
            out.push(ch);
            i += if b.get(i + 1) == Some(&b'u') { 6 } else { 2 };
        }
    }

    /// Writes `s` as a JSON string (quotes included), escaping what JSON requires.
    pub fn write_string(s: &str, out: &mut String) {
        out.push('"');
        let mut last = 0;
        // Every character escaped is ASCII, and in UTF-8 an ASCII byte is always a whole
        // character: bytes are read, never decoded. The bytes escaped are those that end a plain
        // run (`"`, `\\`, control characters), so runs are skipped eight bytes at a time.
        let b = s.as_bytes();
        let mut i = 0;
        loop {
            i += plain_run(b.get(i..).unwrap_or_default());
            let Some(&c) = b.get(i) else { break };
            let esc = match c {
                b'"' => Some("\\\""),
                b'\\' => Some("\\\\"),
                b'\n' => Some("\\n"),
                b'\r' => Some("\\r"),
                b'\t' => Some("\\t"),
                _ => None,
            };
            out.push_str(&s[last..i]);
            match esc {
                Some(e) => out.push_str(e),
                None => out.push_str(&format!("\\u{:04x}", c)),
            }
            i += 1;
            last = i;
        }
        out.push_str(&s[last..]);
        out.push('"');
    }

    /// Checks a whole document against `limits` without keeping anything.
    pub fn validate(input: &[u8], limits: Limits) -> Result<(), Error> {
        let mut t = Tokenizer::new(input, limits)?;
        while t.next_event()?.is_some() {}
        Ok(())
    }

    /// The word tricks of `src/word.rs` as they were.
    mod word {
        pub const ONES: u64 = 0x0101_0101_0101_0101;
        pub const HIGH: u64 = 0x8080_8080_8080_8080;
        pub const fn splat(b: u8) -> u64 {
            ONES * b as u64
        }
        pub const fn zero_bytes(x: u64) -> u64 {
            x.wrapping_sub(ONES) & !x & HIGH
        }
        pub const fn bytes_equal(w: u64, b: u8) -> u64 {
            zero_bytes(w ^ splat(b))
        }
        pub const fn bytes_below(w: u64, b: u8) -> u64 {
            w.wrapping_sub(splat(b)) & !w & HIGH
        }
        pub const fn non_digits(w: u64) -> u64 {
            let low = w & !HIGH;
            let below_zero = !low.wrapping_add(splat(0x50));
            let above_nine = low.wrapping_add(splat(0x46));
            (below_zero | above_nine | w) & HIGH
        }
    }
}
