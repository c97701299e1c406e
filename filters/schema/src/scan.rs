//! Structural pre-scan of a JSON body, before any tree is built or any schema runs.
//!
//! An iterative (never recursive) single pass over the bytes that checks what serde_json would
//! not, or would only check by recursing: nesting depth (100k `[` is refused at the limit, with
//! no stack growth), array length, string length, object member count, duplicate member names
//! (compared after unescaping: `"a"` and `"\u0061"` are the same name), lone surrogates in
//! `\u` escapes, numbers that do not fit an `f64` / integers outside `i64`..`u64`, and JSON
//! syntax itself. Only a body that passes is handed to serde_json. The scanning itself is the
//! core's JSON tokenizer (`portcullis_core::json`), shared with pii.

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

/// Scans a body against the limits; `Ok` means serde_json can parse it safely. The scan is the
/// core's tokenizer with every check on.
pub fn scan(body: &[u8], limits: &Limits) -> Result<(), ScanError> {
    if body.len() > limits.max_body_bytes {
        return Err(ScanError::TooLarge);
    }
    portcullis_core::json::validate(body, scan_limits(limits)).map_err(scan_error)
}

/// The tokenizer's checks for a route's limits: every check on.
pub fn scan_limits(limits: &Limits) -> portcullis_core::json::Limits {
    portcullis_core::json::Limits {
        max_depth: limits.max_depth,
        max_array_len: limits.max_array_len,
        max_string_len: limits.max_string_len,
        max_object_members: limits.max_object_members,
        reject_duplicate_names: true,
        check_number_range: true,
    }
}

/// The scan's reason for a tokenizer error.
pub fn scan_error(e: portcullis_core::json::Error) -> ScanError {
    use portcullis_core::json::Error;
    match e {
        Error::Syntax(_) => ScanError::Malformed,
        Error::InvalidUtf8(_) => ScanError::InvalidUtf8,
        Error::LoneSurrogate(_) => ScanError::LoneSurrogate,
        Error::TooDeep(_) => ScanError::TooDeep,
        Error::ArrayTooLong(_) => ScanError::ArrayTooLong,
        Error::StringTooLong(_) => ScanError::StringTooLong,
        Error::TooManyMembers(_) => ScanError::TooManyMembers,
        Error::DuplicateName(_) => ScanError::DuplicateKey,
        Error::NumberOutOfRange(_) => ScanError::NumberOutOfRange,
    }
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
