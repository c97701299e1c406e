//! The one JSON tokenizer of the project: a pull parser over a complete body that never
//! recurses and never allocates for what it does not have to.
//!
//! It yields events (`{`, a member name, a string, a number, …) whose text is a span of the
//! input — untouched input can be copied as is, and a string is unescaped only when a caller
//! asks ([`Text::unescape`]). Everything that makes JSON hostile is checked as it goes, so a
//! consumer never sees an invalid document half-way: UTF-8 (once, up front), escapes,
//! unpaired surrogates, control characters, the grammar, and optional limits (depth, array
//! length, string length after unescaping, members per object, duplicate member names after
//! unescaping, numbers that do not fit an `f64` / integers outside `i64`..`u64`).
//!
//! Used by schema's structural scan and pii's document model.

use crate::word;
use std::borrow::Cow;
use std::collections::HashSet;

/// Limits checked while tokenizing; the default checks none (pure syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of arrays and objects (the top-level container is depth 1).
    pub max_depth: usize,
    /// Most elements in one array.
    pub max_array_len: usize,
    /// Longest string (value or member name), in bytes after unescaping.
    pub max_string_len: usize,
    /// Most members in one object.
    pub max_object_members: usize,
    /// Refuse an object naming the same member twice (compared after unescaping).
    pub reject_duplicate_names: bool,
    /// Refuse numbers that do not fit an `f64`, and integers outside `i64`..`u64`.
    pub check_number_range: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: usize::MAX,
            max_array_len: usize::MAX,
            max_string_len: usize::MAX,
            max_object_members: usize::MAX,
            reject_duplicate_names: false,
            check_number_range: false,
        }
    }
}

/// Why a document was refused, with the byte offset where it was noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not JSON.
    Syntax(usize),
    /// Not UTF-8.
    InvalidUtf8(usize),
    /// A `\u` escape encodes an unpaired UTF-16 surrogate.
    LoneSurrogate(usize),
    /// Nesting deeper than `max_depth`.
    TooDeep(usize),
    /// An array longer than `max_array_len`.
    ArrayTooLong(usize),
    /// A string longer than `max_string_len`.
    StringTooLong(usize),
    /// An object with more than `max_object_members`.
    TooManyMembers(usize),
    /// The same member name twice in one object.
    DuplicateName(usize),
    /// A number that does not fit.
    NumberOutOfRange(usize),
}

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

/// An open container: whether it is an array, and its elements or members so far, packed in
/// one word (the count shifted up one bit, the low bit set for an array) so that a container
/// waiting for a deeper one to close takes one word.
#[derive(Clone, Copy)]
struct Frame(usize);

impl Frame {
    const ARRAY: Frame = Frame(1);
    const OBJECT: Frame = Frame(0);

    #[inline(always)]
    fn is_array(self) -> bool {
        self.0 & 1 == 1
    }

    /// The count after one more element or member.
    #[inline(always)]
    fn count_one(&mut self) -> usize {
        self.0 += 2;
        self.0 >> 1
    }
}

/// Containers waiting for a deeper one to close that are kept in the tokenizer itself: a
/// document nested no deeper than this plus one never allocates for its nesting.
const NEAR: usize = 8;

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
    expect: Expect,
    /// Open containers.
    depth: usize,
    /// The innermost open container (meaningless at depth 0): the hot path reads and counts
    /// here, never in a stack.
    top: Frame,
    /// The containers around `top`, outermost first: the first [`NEAR`] in place, deeper ones
    /// on the heap.
    near: [Frame; NEAR],
    far: Vec<Frame>,
    /// The member names of each open object, innermost last (only when duplicates are refused).
    names: Vec<Names<'a>>,
    limits: Limits,
}

impl<'a> Tokenizer<'a> {
    /// A tokenizer over a complete document; the input must be UTF-8.
    pub fn new(input: &'a [u8], limits: Limits) -> Result<Self, Error> {
        let s = std::str::from_utf8(input).map_err(|e| Error::InvalidUtf8(e.valid_up_to()))?;
        Ok(Self::for_str(s, limits))
    }

    /// A tokenizer over text already known to be UTF-8 (a part of a document another
    /// tokenizer is reading, say: a look-ahead must not check the rest of the body again).
    pub fn for_str(input: &'a str, limits: Limits) -> Self {
        Tokenizer {
            s: input,
            b: input.as_bytes(),
            i: 0,
            expect: Expect::Value,
            depth: 0,
            top: Frame::OBJECT,
            near: [Frame::OBJECT; NEAR],
            far: Vec::new(),
            names: Vec::new(),
            limits,
        }
    }

    /// Offset just after the last event.
    pub fn offset(&self) -> usize {
        self.i
    }

    /// Current nesting depth.
    pub fn depth(&self) -> usize {
        self.depth
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
    // Inlined into each caller's loop (a handful: schema's one-pass walk, pii's stream and its
    // look-aheads, `validate`): the event is matched where it is made instead of going through
    // memory, and the tokenizer's state stays in registers across events. About 30 instructions
    // less per event; the price is one copy of this function per call site.
    #[inline(always)]
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
                match (c, self.top.is_array()) {
                    (Some(b','), true) => {
                        self.i += 1;
                        self.ws();
                        self.element()
                    }
                    (Some(b','), false) => {
                        self.i += 1;
                        self.ws();
                        self.name()
                    }
                    (Some(b']'), true) | (Some(b'}'), false) => {
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
        let ev = if self.top.is_array() {
            Event::EndArray
        } else {
            if self.limits.reject_duplicate_names {
                self.names.pop();
            }
            Event::EndObject
        };
        self.depth -= 1;
        self.expect = if self.depth == 0 {
            Expect::End
        } else {
            // The container around the one closed is the innermost again.
            let at = self.depth - 1;
            self.top = match self.near.get(at) {
                Some(&f) => f,
                None => self.far.pop().unwrap_or(Frame::OBJECT),
            };
            Expect::CommaOrClose
        };
        ev
    }

    /// Opens a container (depth already checked).
    #[inline(always)]
    fn open(&mut self, frame: Frame) {
        if self.depth > 0 {
            let at = self.depth - 1;
            match self.near.get_mut(at) {
                Some(slot) => *slot = self.top,
                None => self.far.push(self.top),
            }
        }
        self.depth += 1;
        self.top = frame;
    }

    #[inline]
    fn element(&mut self) -> Result<Option<Event<'a>>, Error> {
        // Only ever called inside an array.
        if self.top.count_one() > self.limits.max_array_len {
            return Err(Error::ArrayTooLong(self.i));
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
        // Only ever called inside an object.
        if self.top.count_one() > self.limits.max_object_members {
            return Err(Error::TooManyMembers(at));
        }
        if self.limits.reject_duplicate_names {
            if let Some(set) = self.names.last_mut() {
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
        self.expect = if self.depth == 0 {
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
                if self.depth >= self.limits.max_depth {
                    return Err(Error::TooDeep(self.i));
                }
                self.i += 1;
                if c == b'{' {
                    self.open(Frame::OBJECT);
                    if self.limits.reject_duplicate_names {
                        self.names.push(Names::Few(Vec::new(), 0));
                    }
                    self.expect = Expect::FirstName;
                    return Ok(Some(Event::StartObject));
                }
                self.open(Frame::ARRAY);
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

/// Flags the bytes that end a plain run of string text, `"`, `\\` and control characters, as
/// the word tests of [`word`] do: non-zero exactly when the word holds one, and the lowest
/// flag is the first (a flag above it can be spurious, as a borrow runs upwards). Two tests,
/// not three: flipping bit 1 maps `"` to 0x20 and keeps the control characters below 0x20,
/// while every other byte lands at 0x21 or above, so one range test finds both. Each test
/// masks with the high bit of its byte complemented, which flipping with a constant below 0x80
/// leaves as it was, so the two share one mask.
#[inline(always)]
fn stops(w: u64) -> u64 {
    let quote_or_control = (w ^ word::splat(0x02)).wrapping_sub(word::splat(0x21));
    let backslash = (w ^ word::splat(b'\\')).wrapping_sub(word::ONES);
    (quote_or_control | backslash) & !w & word::HIGH
}

/// Length of the run of plain string text at the start of `b` (up to the first `"`, `\\` or
/// control character), eight bytes at a time ([`stops`]).
#[inline(always)]
fn plain_run(b: &[u8]) -> usize {
    // Split off word by word: one length test per word, and nothing to set up for the tail
    // (most strings end in their first word or two).
    let mut rest = b;
    while let Some((w, tail)) = rest.split_first_chunk::<8>() {
        let hit = stops(word::le(w));
        if hit != 0 {
            return b.len() - rest.len() + (hit.trailing_zeros() / 8) as usize;
        }
        rest = tail;
    }
    // The tail, padded with `"`, which stops the run where the input ends.
    let mut last = [b'"'; 8];
    if let Some(head) = last.get_mut(..rest.len()) {
        head.copy_from_slice(rest);
    }
    b.len() - rest.len() + (stops(word::le(&last)).trailing_zeros() / 8) as usize
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

#[cfg(test)]
mod tests {
    use super::*;

    fn events(s: &str) -> Result<Vec<String>, Error> {
        let mut t = Tokenizer::new(s.as_bytes(), Limits::default())?;
        let mut out = Vec::new();
        while let Some(e) = t.next_event()? {
            out.push(match e {
                Event::StartObject => "{".into(),
                Event::EndObject => "}".into(),
                Event::StartArray => "[".into(),
                Event::EndArray => "]".into(),
                Event::Name(t) => format!("name:{}", t.unescape()),
                Event::Str(t) => format!("str:{}", t.unescape()),
                Event::Num(n) => format!("num:{n}"),
                Event::Bool(b) => format!("bool:{b}"),
                Event::Null => "null".into(),
            });
        }
        Ok(out)
    }

    #[test]
    fn events_of_a_document() {
        assert_eq!(
            events(r#" {"a": [1, -2.5e3, true, null, "x\u00e9\ud83d\ude00"], "b\"": {}} "#)
                .unwrap(),
            vec![
                "{",
                "name:a",
                "[",
                "num:1",
                "num:-2.5e3",
                "bool:true",
                "null",
                "str:xé😀",
                "]",
                "name:b\"",
                "{",
                "}",
                "}"
            ]
        );
        assert_eq!(events("0").unwrap(), vec!["num:0"]);
        assert_eq!(events("\"\"").unwrap(), vec!["str:"]);
    }

    #[test]
    fn what_serde_json_refuses_is_refused() {
        for b in [
            "",
            " ",
            "{",
            "[1,]",
            "[,1]",
            "{\"a\"}",
            "{\"a\":1,}",
            "{a:1}",
            "01",
            "1.",
            "-",
            "tru",
            "[1 2]",
            "\"\t\"",
            "{} {}",
            "\"\\x\"",
            "[1]]",
            "\"\\u+100\"",
            "\"\\u12\"",
            "{\"a\":}",
            "[}",
            "{]",
            "1e",
            "1e+",
            "--1",
            ".5",
            "+1",
            "NaN",
            "\"\\ud800\"",
            "[\"a\" \"b\"]",
        ] {
            assert!(events(b).is_err(), "{b:?} was accepted");
            assert!(
                serde_json::from_str::<serde_json::Value>(b).is_err(),
                "{b:?} (serde)"
            );
        }
    }

    #[test]
    fn limits_hold_at_the_boundary_and_nothing_recurses() {
        let l = |f: fn(&mut Limits)| {
            let mut x = Limits::default();
            f(&mut x);
            x
        };
        let depth3 = l(|x| x.max_depth = 3);
        assert!(validate(b"[[[1]]]", depth3).is_ok());
        assert!(matches!(
            validate(b"[[[[1]]]]", depth3),
            Err(Error::TooDeep(3))
        ));
        assert!(matches!(
            validate(b"[1,2,3,4]", l(|x| x.max_array_len = 3)),
            Err(Error::ArrayTooLong(_))
        ));
        let s4 = l(|x| x.max_string_len = 4);
        assert!(
            validate(br#""\u00e9\u00e9""#, s4).is_ok(),
            "length counts unescaped bytes"
        );
        assert!(matches!(
            validate(b"\"abcde\"", s4),
            Err(Error::StringTooLong(0))
        ));
        assert!(matches!(
            validate(br#"{"a":1,"b":2,"c":3}"#, l(|x| x.max_object_members = 2)),
            Err(Error::TooManyMembers(_))
        ));
        let dup = l(|x| x.reject_duplicate_names = true);
        assert!(matches!(
            validate(br#"{"a":1,"\u0061":2}"#, dup),
            Err(Error::DuplicateName(_))
        ));
        assert!(validate(br#"{"a":{"a":1},"b":{"a":1}}"#, dup).is_ok());
        let num = l(|x| x.check_number_range = true);
        assert!(matches!(
            validate(b"1e400", num),
            Err(Error::NumberOutOfRange(0))
        ));
        assert!(validate(b"18446744073709551615", num).is_ok());
        assert!(matches!(
            validate(b"18446744073709551616", num),
            Err(Error::NumberOutOfRange(_))
        ));
        assert!(matches!(
            validate(b"\"\xff\"", Limits::default()),
            Err(Error::InvalidUtf8(1))
        ));
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        assert!(
            validate(deep.as_bytes(), Limits::default()).is_ok(),
            "no recursion, no stack growth"
        );
    }

    #[test]
    fn the_wide_string_scan_stops_where_the_bytewise_one_does() {
        let specials = [b'"', b'\\', 0x00, 0x1f, b'\n'];
        let others = [
            b'a', b' ', 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xc3, 0xff,
        ];
        for len in 0..20 {
            for at in 0..=len {
                for &sp in &specials {
                    for &o in &others {
                        let mut b = vec![o; len];
                        if at < len {
                            b[at] = sp;
                        }
                        let want = b
                            .iter()
                            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                            .unwrap_or(len);
                        assert_eq!(plain_run(&b), want, "{b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_wide_string_scan_agrees_on_random_mixtures() {
        // Several stop bytes among bytes that sit next to them (0x20, 0x21, 0x5b, 0x5d, 0xff…),
        // where a borrow in the word arithmetic could flag a byte that does not stop the run.
        let pool = [
            b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xff, b'a',
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let b: Vec<u8> = (0..len)
                .map(|k| {
                    let r = x.rotate_left(k as u32 * 5);
                    // Mostly plain bytes, now and then a byte from the pool.
                    if r.is_multiple_of(5) {
                        pool[(r >> 8) as usize % pool.len()]
                    } else {
                        b'a' + (r >> 16) as u8 % 26
                    }
                })
                .collect();
            let want = b
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(len);
            assert_eq!(plain_run(&b), want, "{b:?}");
        }
    }

    #[test]
    fn the_two_test_word_scan_finds_the_first_stop_byte() {
        let first = |f: u64| (f != 0).then(|| (f.trailing_zeros() / 8) as usize);
        let want = |w: u64| {
            w.to_le_bytes()
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        };
        // Every byte value at every position, among fillers next to the stop bytes.
        for fill in [
            b'a', 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff,
        ] {
            for at in 0..8 {
                for v in 0..=255u8 {
                    let mut b = [fill; 8];
                    b[at] = v;
                    let w = u64::from_le_bytes(b);
                    assert_eq!(first(stops(w)), want(w), "{b:?}");
                }
            }
        }
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        let pool = [
            b'"', b'\\', 0x00, 0x02, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x5e, 0x7f,
            0x80, 0xa0, 0xa2, 0xdc, 0xff, b'a',
        ];
        for n in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Random words, and words of bytes next to the stop bytes.
            let w = if n % 2 == 0 {
                x
            } else {
                u64::from_le_bytes(std::array::from_fn(|k| {
                    pool[(x >> (k * 5)) as usize % pool.len()]
                }))
            };
            assert_eq!(first(stops(w)), want(w), "{w:#018x}");
        }
    }

    #[test]
    fn the_wide_digit_scan_stops_where_the_bytewise_one_does() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut w = [b'7'; 8];
                w[at] = b;
                let got = word::non_digits(u64::from_le_bytes(w));
                let want = if b.is_ascii_digit() {
                    0
                } else {
                    0x80u64 << (8 * at)
                };
                assert_eq!(got, want, "byte {b:#x} at {at}");
            }
        }
        for n in [
            "0",
            "12345678",
            "123456789",
            "1234567890123456789",
            "-12.5e-300",
            "1700000000000",
        ] {
            for tail in ["", "]", ",\"a\":1}"] {
                let doc = format!("[{n}{tail}");
                let mut t = Tokenizer::new(doc.as_bytes(), Limits::default()).unwrap();
                t.next_event().unwrap();
                assert_eq!(t.next_event().unwrap(), Some(Event::Num(n)), "{doc}");
                if tail.is_empty() {
                    assert!(t.next_event().is_err(), "{doc}");
                }
            }
        }
    }

    #[test]
    fn plain_runs_stop_at_the_first_quote_backslash_or_control_character() {
        for len in 0..40 {
            for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                for fill in [b'a', 0x7f, 0x80, 0xff, 0x20, 0x21, 0x5b, 0x5d] {
                    let mut b = vec![fill; len];
                    b.push(stop);
                    b.extend_from_slice(b"xyz\"");
                    assert_eq!(
                        plain_run(&b),
                        len,
                        "len {len} stop {stop:#x} fill {fill:#x}"
                    );
                }
            }
            assert_eq!(plain_run(&vec![b'q'; len]), len);
        }
    }

    #[test]
    fn duplicate_names_are_found_in_small_and_large_objects() {
        let dup = Limits {
            reject_duplicate_names: true,
            ..Limits::default()
        };
        for n in [2usize, 16, 17, 40] {
            let names: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
            let ok = format!("{{{}}}", names.join(","));
            assert!(validate(ok.as_bytes(), dup).is_ok(), "{n} distinct names");
            for (first, again) in [(0, r#""k0""#), (n - 1, r#""\u006b{}""#)] {
                let again = again.replace("{}", &(n - 1).to_string());
                let bad = format!("{{{},{again}:0}}", names.join(","));
                assert!(
                    matches!(validate(bad.as_bytes(), dup), Err(Error::DuplicateName(_))),
                    "{n} names, name {first} repeated"
                );
            }
        }
    }

    #[test]
    fn the_name_filter_never_hides_a_duplicate() {
        // Short names from a tiny alphabet: many share a filter bit without being equal.
        let dup = Limits {
            reject_duplicate_names: true,
            ..Limits::default()
        };
        let alphabet = ["a", "b", "ab", "ba", "aa", "", "\\u0061", "abc", "cba", "x"];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..5_000 {
            let mut names = Vec::new();
            for _ in 0..(x % 18) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let a = alphabet[(x % 10) as usize];
                let b = alphabet[((x >> 8) % 10) as usize];
                names.push(format!("{a}{b}"));
            }
            let doc = format!(
                "{{{}}}",
                names
                    .iter()
                    .map(|n| format!("\"{n}\":0"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let unescaped: Vec<String> = names.iter().map(|n| n.replace("\\u0061", "a")).collect();
            let distinct = unescaped.iter().collect::<HashSet<_>>().len() == unescaped.len();
            assert_eq!(validate(doc.as_bytes(), dup).is_ok(), distinct, "{doc}");
        }
    }

    #[test]
    fn strings_round_trip_through_write_string() {
        for s in ["plain", "q\"b\\s/", "ctl\u{1}\u{1f}\n\t", "é😀"] {
            let mut out = String::new();
            write_string(s, &mut out);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
            let ev = Tokenizer::new(out.as_bytes(), Limits::default())
                .unwrap()
                .next_event()
                .unwrap();
            let Some(Event::Str(t)) = ev else { panic!() };
            assert_eq!(t.unescape(), s);
        }
        // The exact text written (masked bodies are compared byte for byte downstream).
        let mut out = String::new();
        write_string("é\u{1}a\"\\\n\r\t\u{7f}😀\u{1f}", &mut out);
        let want = [r#""é\u0001a\"\\\n\r\t"#, "\u{7f}😀", r#"\u001f""#].concat();
        assert_eq!(out, want);
    }
}
