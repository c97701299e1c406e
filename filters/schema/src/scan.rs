//! Structural pre-scan of a JSON body, before any tree is built or any schema runs.
//!
//! An iterative (never recursive) single pass over the bytes that checks what serde_json would
//! not, or would only check by recursing: nesting depth (100k `[` is refused at the limit, with
//! no stack growth), array length, string length, object member count, duplicate member names
//! (compared after unescaping: `"a"` and `"\u0061"` are the same name), lone surrogates in
//! `\u` escapes, numbers that do not fit an `f64` / integers outside `i64`..`u64`, and JSON
//! syntax itself. Only a body that passes is handed to serde_json.

use std::collections::HashSet;

/// Structural limits of one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest body, in bytes.
    #[serde(default = "d_body")]
    pub max_body_bytes: usize,
    /// Deepest nesting of arrays and objects (the top-level value is depth 1).
    #[serde(default = "d_depth")]
    pub max_depth: usize,
    /// Most elements in one array.
    #[serde(default = "d_array")]
    pub max_array_len: usize,
    /// Longest string (value or member name), in bytes after unescaping.
    #[serde(default = "d_string")]
    pub max_string_len: usize,
    /// Most members in one object.
    #[serde(default = "d_members")]
    pub max_object_members: usize,
}

fn d_body() -> usize {
    1024 * 1024
}
fn d_depth() -> usize {
    32
}
fn d_array() -> usize {
    10_000
}
fn d_string() -> usize {
    64 * 1024
}
fn d_members() -> usize {
    1_000
}

/// Hard ceiling for `max_depth`: below serde_json's own recursion limit (128), so a body that
/// passes the scan can always be parsed.
pub const DEPTH_CEILING: usize = 100;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: d_body(),
            max_depth: d_depth(),
            max_array_len: d_array(),
            max_string_len: d_string(),
            max_object_members: d_members(),
        }
    }
}

/// Why a body was refused by the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// Over `max_body_bytes`.
    TooLarge,
    /// Not UTF-8.
    InvalidUtf8,
    /// Not JSON.
    Malformed,
    /// A `\u` escape encodes an unpaired surrogate.
    LoneSurrogate,
    /// A number that does not fit.
    NumberOutOfRange,
    /// The same member name twice in one object.
    DuplicateKey,
    /// Nesting deeper than `max_depth`.
    TooDeep,
    /// An array longer than `max_array_len`.
    ArrayTooLong,
    /// A string longer than `max_string_len`.
    StringTooLong,
    /// An object with more than `max_object_members`.
    TooManyMembers,
}

enum Frame {
    Array { len: usize },
    Object { keys: HashSet<String> },
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    limits: &'a Limits,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), ScanError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(ScanError::Malformed)
        }
    }

    fn hex4(&mut self) -> Result<u16, ScanError> {
        let s = self.b.get(self.i..self.i + 4).ok_or(ScanError::Malformed)?;
        // Exactly four hex digits: `from_str_radix` alone would also take a sign (`\u+100`).
        if !s.iter().all(u8::is_ascii_hexdigit) {
            return Err(ScanError::Malformed);
        }
        let s = std::str::from_utf8(s).map_err(|_| ScanError::Malformed)?;
        let v = u16::from_str_radix(s, 16).map_err(|_| ScanError::Malformed)?;
        self.i += 4;
        Ok(v)
    }

    /// Scans a string starting at `"`; returns it unescaped when `keep` (member names).
    fn string(&mut self, keep: bool) -> Result<Option<String>, ScanError> {
        self.expect(b'"')?;
        let mut out = keep.then(String::new);
        let mut len = 0usize;
        loop {
            let c = self.peek().ok_or(ScanError::Malformed)?;
            self.i += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => {
                    let e = self.peek().ok_or(ScanError::Malformed)?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                // A high surrogate must be followed by `\u` + low surrogate.
                                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(ScanError::LoneSurrogate);
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(ScanError::LoneSurrogate);
                                }
                                0x10000
                                    + ((u32::from(hi) - 0xD800) << 10)
                                    + (u32::from(lo) - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(ScanError::LoneSurrogate);
                            } else {
                                u32::from(hi)
                            };
                            char::from_u32(code).ok_or(ScanError::LoneSurrogate)?
                        }
                        _ => return Err(ScanError::Malformed),
                    };
                    len += ch.len_utf8();
                    if let Some(o) = out.as_mut() {
                        o.push(ch);
                    }
                }
                0x00..=0x1f => return Err(ScanError::Malformed),
                _ => {
                    // Copy the whole UTF-8 sequence (input was validated as UTF-8 up front).
                    let start = self.i - 1;
                    let width = match c {
                        0xC0..=0xDF => 2,
                        0xE0..=0xEF => 3,
                        0xF0..=0xF7 => 4,
                        _ => 1,
                    };
                    self.i = start + width;
                    len += width;
                    if let Some(o) = out.as_mut() {
                        let s = self
                            .b
                            .get(start..self.i)
                            .and_then(|s| std::str::from_utf8(s).ok());
                        o.push_str(s.ok_or(ScanError::InvalidUtf8)?);
                    }
                }
            }
            if len > self.limits.max_string_len {
                return Err(ScanError::StringTooLong);
            }
        }
    }

    fn number(&mut self) -> Result<(), ScanError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                while matches!(self.peek(), Some(b'0'..=b'9')) {
                    self.i += 1;
                }
            }
            _ => return Err(ScanError::Malformed),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(ScanError::Malformed);
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(ScanError::Malformed);
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| ScanError::Malformed)?;
        let fits = if integer {
            text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok()
        } else {
            text.parse::<f64>().is_ok_and(f64::is_finite)
        };
        if fits {
            Ok(())
        } else {
            Err(ScanError::NumberOutOfRange)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ScanError> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(ScanError::Malformed)
        }
    }

    /// Scans one value; containers push a frame instead of recursing.
    fn value(&mut self, stack: &mut Vec<Frame>) -> Result<(), ScanError> {
        match self.peek().ok_or(ScanError::Malformed)? {
            b'{' | b'[' => {
                if stack.len() >= self.limits.max_depth {
                    return Err(ScanError::TooDeep);
                }
                let open = self.peek();
                self.i += 1;
                stack.push(if open == Some(b'{') {
                    Frame::Object {
                        keys: HashSet::new(),
                    }
                } else {
                    Frame::Array { len: 0 }
                });
                Ok(())
            }
            b'"' => self.string(false).map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    fn run(&mut self) -> Result<(), ScanError> {
        let mut stack: Vec<Frame> = Vec::new();
        self.ws();
        self.value(&mut stack)?;
        // After each value or container opening: continue inside the innermost container.
        // `fresh` is true right after an opening bracket (no element yet).
        let mut fresh = true;
        loop {
            self.ws();
            let Some(frame) = stack.last_mut() else { break };
            match frame {
                Frame::Array { len } => {
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        stack.pop();
                        fresh = false;
                        continue;
                    }
                    if !fresh {
                        self.expect(b',')?;
                        self.ws();
                    }
                    *len += 1;
                    if *len > self.limits.max_array_len {
                        return Err(ScanError::ArrayTooLong);
                    }
                }
                Frame::Object { keys } => {
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        stack.pop();
                        fresh = false;
                        continue;
                    }
                    if !fresh {
                        self.expect(b',')?;
                        self.ws();
                    }
                    if self.peek() != Some(b'"') {
                        return Err(ScanError::Malformed);
                    }
                    let key = self.string(true)?.unwrap_or_default();
                    if keys.len() >= self.limits.max_object_members {
                        return Err(ScanError::TooManyMembers);
                    }
                    if !keys.insert(key) {
                        return Err(ScanError::DuplicateKey);
                    }
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                }
            }
            let depth = stack.len();
            self.value(&mut stack)?;
            fresh = stack.len() > depth;
        }
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(ScanError::Malformed)
        }
    }
}

/// Scans a body against the limits; `Ok` means serde_json can parse it safely.
pub fn scan(body: &[u8], limits: &Limits) -> Result<(), ScanError> {
    if body.len() > limits.max_body_bytes {
        return Err(ScanError::TooLarge);
    }
    if std::str::from_utf8(body).is_err() {
        return Err(ScanError::InvalidUtf8);
    }
    Scanner {
        b: body,
        i: 0,
        limits,
    }
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(body: &str) -> Result<(), ScanError> {
        scan(body.as_bytes(), &Limits::default())
    }

    #[test]
    fn valid_json_passes() {
        for b in [
            "{}",
            "[]",
            "0",
            "-0.5e-3",
            "\"x\"",
            "true",
            " null ",
            r#"{"a":[1,2,{"b":null}],"c":"\u00e9\ud83d\ude00","d":{}}"#,
            r#"[[],[[]],{"x":[{}]}]"#,
            "18446744073709551615",
            "-9223372036854775808",
            "1e308",
            "\"caf\u{e9}\"",
        ] {
            assert_eq!(s(b), Ok(()), "{b}");
            serde_json::from_str::<serde_json::Value>(b).unwrap();
        }
    }

    #[test]
    fn malformed_json_is_refused() {
        for b in [
            "",
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
            // Found by the json fuzz target: a sign is not a hex digit.
            "\"\\u+100\"",
            "\"\\u-100\"",
            "\"\\ud83d\\u+e00\"",
        ] {
            assert_eq!(s(b), Err(ScanError::Malformed), "{b:?}");
        }
    }

    #[test]
    fn duplicates_are_found_after_unescaping() {
        assert_eq!(s(r#"{"a":1,"a":2}"#), Err(ScanError::DuplicateKey));
        assert_eq!(s(r#"{"a":1,"\u0061":2}"#), Err(ScanError::DuplicateKey));
        assert_eq!(s(r#"{"a":{"a":1},"b":{"a":1}}"#), Ok(()));
    }

    #[test]
    fn surrogates_utf8_and_numbers() {
        assert_eq!(s(r#""\ud800""#), Err(ScanError::LoneSurrogate));
        assert_eq!(s(r#""\udc00""#), Err(ScanError::LoneSurrogate));
        assert_eq!(s(r#""\ud800\u0041""#), Err(ScanError::LoneSurrogate));
        assert_eq!(
            scan(b"\"\xff\"", &Limits::default()),
            Err(ScanError::InvalidUtf8)
        );
        assert_eq!(s("1e400"), Err(ScanError::NumberOutOfRange));
        assert_eq!(s("18446744073709551616"), Err(ScanError::NumberOutOfRange));
        assert_eq!(s("-9223372036854775809"), Err(ScanError::NumberOutOfRange));
    }

    #[test]
    fn limits_hold_exactly_at_the_boundary() {
        let l = Limits {
            max_body_bytes: 64,
            max_depth: 3,
            max_array_len: 3,
            max_string_len: 4,
            max_object_members: 2,
        };
        assert_eq!(scan(b"[[[1]]]", &l), Ok(()));
        assert_eq!(scan(b"[[[[1]]]]", &l), Err(ScanError::TooDeep));
        assert_eq!(scan(b"[1,2,3]", &l), Ok(()));
        assert_eq!(scan(b"[1,2,3,4]", &l), Err(ScanError::ArrayTooLong));
        assert_eq!(scan(b"\"abcd\"", &l), Ok(()));
        assert_eq!(scan(b"\"abcde\"", &l), Err(ScanError::StringTooLong));
        assert_eq!(
            scan(br#""\u00e9\u00e9""#, &l),
            Ok(()),
            "length counts unescaped bytes"
        );
        assert_eq!(scan(br#"{"a":1,"b":2}"#, &l), Ok(()));
        assert_eq!(
            scan(br#"{"a":1,"b":2,"c":3}"#, &l),
            Err(ScanError::TooManyMembers)
        );
        assert_eq!(scan(&[b' '; 65], &l), Err(ScanError::TooLarge));
    }

    #[test]
    fn a_hundred_thousand_brackets_are_refused_without_recursion() {
        let deep = "[".repeat(100_000);
        assert_eq!(s(&deep), Err(ScanError::TooDeep));
        let huge = Limits {
            max_depth: usize::MAX,
            ..Limits::default()
        };
        let closed = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            scan(closed.as_bytes(), &huge),
            Ok(()),
            "the scan itself never recurses"
        );
    }
}
