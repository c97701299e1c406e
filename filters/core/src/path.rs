//! Request-path normalisation: the one canonical form every rule is matched against.
//!
//! Percent-encoded unreserved characters are decoded, `//` merged, `.` and `..` segments
//! resolved (RFC 3986 §5.2.4, clamped at the root) and the query dropped, so
//! `/t/a/../b` and `/t/a/%2e%2e/b` both become `/t/b`. What cannot be normalised safely is
//! refused rather than guessed at: an encoded `/` or `\` inside a segment (backends disagree on
//! whether it separates segments), NUL or other control characters, malformed `%` escapes.

/// Why a path was refused. Each maps to one stable reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (must start with `/`).
    NotOriginForm,
    /// `%2F` or `%5C` (or a raw `\`) inside a segment.
    EncodedSeparator,
    /// NUL or another control character, raw or encoded.
    ControlCharacter,
    /// `%` not followed by two hex digits.
    BadEscape,
}

impl PathError {
    /// Human-readable, value-free description.
    pub fn describe(self) -> &'static str {
        match self {
            PathError::NotOriginForm => "request path must start with '/'",
            PathError::EncodedSeparator => {
                "request path contains an encoded or backslash separator"
            }
            PathError::ControlCharacter => "request path contains a control character",
            PathError::BadEscape => "request path contains a malformed percent-escape",
        }
    }
}

/// Longest path accepted; Envoy's own header limits sit well above any real API path.
pub const MAX_PATH_LEN: usize = 8192;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Splits a request target into its path and query (without the `?`); a fragment is dropped.
pub fn split_query(target: &str) -> (&str, Option<&str>) {
    // One byte scan (every request's path goes through here, several times per chain).
    let b = target.as_bytes();
    match b.iter().position(|&c| c == b'?' || c == b'#') {
        None => (target, None),
        Some(i) if b[i] == b'#' => (&target[..i], None),
        Some(i) => {
            let rest = &target[i + 1..];
            let q = rest.find('#').map_or(rest, |j| &rest[..j]);
            (&target[..i], Some(q))
        }
    }
}

/// True when `path` is already canonical, so [`normalize`] would return it unchanged: no byte
/// it would decode, refuse or rewrite (`%`, `\`, controls) and no empty, `.` or `..` segment
/// before the last (a trailing `/` is kept as it is). Most real paths are; checking is one pass
/// with no allocation, where normalising splits, decodes and rebuilds.
fn is_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    // Each segment after a `/`: `seg_start` is where it begins.
    let mut seg_start = 1;
    for i in 1..=b.len() {
        let c = b.get(i).copied();
        match c {
            Some(b'%' | b'\\') => return false,
            Some(c) if c < 0x20 || c == 0x7f => return false,
            Some(b'/') | None => {
                let seg = &b[seg_start..i];
                // An empty segment is canonical only as the very end (`/a/` or `/`).
                if (seg.is_empty() && c.is_some()) || seg == b"." || seg == b".." {
                    return false;
                }
                seg_start = i + 1;
            }
            Some(_) => {}
        }
    }
    true
}

/// Decodes one segment: unreserved escapes become their character, other escapes are kept
/// (upper-cased hex) so the segment still means the same thing to the upstream.
fn decode_segment(seg: &str, out: &mut String) -> Result<(), PathError> {
    let bytes = seg.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h << 4 | l;
                if v == b'/' || v == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                if v < 0x20 || v == 0x7f {
                    return Err(PathError::ControlCharacter);
                }
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::EncodedSeparator),
            _ if b < 0x20 || b == 0x7f => return Err(PathError::ControlCharacter),
            _ => {
                // Multi-byte UTF-8 is copied whole: `seg` is a &str so boundaries are valid.
                let ch_len = seg[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&seg[i..i + ch_len]);
                i += ch_len;
                continue;
            }
        }
    }
    Ok(())
}

/// Normalises the path part of a request target (the query is dropped).
///
/// The result always starts with `/`; a trailing `/` is kept because `/customers/` and
/// `/customers` are different resources to many backends.
pub fn normalize(target: &str) -> Result<String, PathError> {
    normalize_cow(target).map(std::borrow::Cow::into_owned)
}

/// [`normalize`], borrowing from `target` when its path is already canonical (most are): no
/// copy, and the caller knows the path needs no rewriting.
pub fn normalize_cow(target: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    if let Some(path) = canonical_prefix(target) {
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    let (path, _) = split_query(target);
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    if is_canonical(path) {
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    rebuild(path).map(std::borrow::Cow::Owned)
}

/// Bytes [`canonical_prefix`] stops at: the segment separator, the end of the path (`?`, `#`),
/// and what normalisation decodes or refuses (`%`, `\`, controls).
const STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[0x7f] = true;
    t[b'/' as usize] = true;
    t[b'?' as usize] = true;
    t[b'#' as usize] = true;
    t[b'%' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The path part of `target` when it is canonical ([`split_query`] and [`is_canonical`] in
/// one pass, which every request's path goes through, in authn and in ratelimit): `None`
/// when it is not, or not certainly so (the general case then decides).
fn canonical_prefix(target: &str) -> Option<&str> {
    let b = target.as_bytes();
    if b.first() != Some(&b'/') {
        return None;
    }
    let mut seg_start = 1;
    let mut i = 1;
    let end = loop {
        let Some(&c) = b.get(i) else { break i };
        if !STOPS[usize::from(c)] {
            i += 1;
            continue;
        }
        match c {
            b'/' => {
                let seg = &b[seg_start..i];
                if seg.is_empty() || seg == b"." || seg == b".." {
                    return None;
                }
                seg_start = i + 1;
            }
            b'?' | b'#' => break i,
            _ => return None,
        }
        i += 1;
    };
    let last = &b[seg_start..end];
    if last == b"." || last == b".." {
        return None;
    }
    target.get(..end)
}

/// Normalises an origin-form path segment by segment (the general case of [`normalize`]).
fn rebuild(path: &str) -> Result<String, PathError> {
    let mut segments: Vec<String> = Vec::new();
    let mut buf = String::new();
    let raw_segments: Vec<&str> = path[1..].split('/').collect();
    let last = raw_segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (idx, raw) in raw_segments.iter().enumerate() {
        buf.clear();
        decode_segment(raw, &mut buf)?;
        match buf.as_str() {
            "" => {
                // `//` collapses; an empty last segment means the path ended in `/`.
                if idx == last {
                    trailing_slash = true;
                }
            }
            "." => trailing_slash = idx == last,
            ".." => {
                segments.pop();
                trailing_slash = idx == last;
            }
            s => {
                segments.push(s.to_string());
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path is an optimisation only: over every target of up to five characters from
    /// an alphabet of the bytes that matter (separators, dots, escapes, controls, non-ASCII,
    /// query and fragment marks), `normalize` answers exactly as the segment-by-segment
    /// rebuild does.
    #[test]
    fn the_canonical_fast_path_agrees_with_the_rebuild() {
        let alphabet = [
            "/", "a", ".", "%", "2", "e", "F", "\\", " ", "é", "?", "#", "\u{1}",
        ];
        let mut stack = vec![String::from("/")];
        let mut checked = 0;
        while let Some(t) = stack.pop() {
            let (path, _) = split_query(&t);
            let slow = if path.starts_with('/') {
                rebuild(path)
            } else {
                Err(PathError::NotOriginForm)
            };
            assert_eq!(normalize(&t), slow, "{t:?}");
            assert_eq!(
                canonical_prefix(&t).map(str::to_string),
                slow.clone().ok().filter(|_| is_canonical(path)),
                "{t:?}"
            );
            checked += 1;
            if t.chars().count() < 6 {
                for c in alphabet {
                    stack.push(format!("{t}{c}"));
                }
            }
        }
        assert!(checked > 300_000, "{checked}");
    }

    #[test]
    fn split_query_separates_path_query_and_fragment() {
        assert_eq!(split_query("/a?b=1#f"), ("/a", Some("b=1")));
        assert_eq!(split_query("/a#f?x"), ("/a", None));
        assert_eq!(split_query("/a?"), ("/a", Some("")));
        assert_eq!(split_query("/a?b#"), ("/a", Some("b")));
        assert_eq!(split_query("/a"), ("/a", None));
        assert_eq!(split_query("?q"), ("", Some("q")));
    }

    #[test]
    fn canonical_paths_are_unchanged() {
        for p in [
            "/",
            "/healthz",
            "/api/v1/tenants/acme/customers",
            "/a/b/",
            "/a/%20b",
            "/caf%C3%A9",
        ] {
            assert_eq!(normalize(p).unwrap(), p, "{p}");
        }
    }

    #[test]
    fn dot_segments_and_double_slashes_are_resolved() {
        let cases = [
            (
                "/api/v1/tenants/a/../b/customers",
                "/api/v1/tenants/b/customers",
            ),
            (
                "/api/v1/tenants/a/%2e%2e/b/customers",
                "/api/v1/tenants/b/customers",
            ),
            (
                "/api/v1/tenants/a/%2E%2e/b/customers",
                "/api/v1/tenants/b/customers",
            ),
            (
                "/api/v1/tenants/a/.%2e/b/customers",
                "/api/v1/tenants/b/customers",
            ),
            (
                "/api//v1///tenants/a/customers",
                "/api/v1/tenants/a/customers",
            ),
            (
                "/api/./v1/tenants/a/customers",
                "/api/v1/tenants/a/customers",
            ),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a?x=../../b", "/a"),
            ("/a#frag", "/a"),
            ("/%61%70%69", "/api"),
            ("/a/%7euser", "/a/~user"),
            ("/a/%3a", "/a/%3A"),
            ("//", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert_eq!(normalize("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a\\b"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%00b"), Err(PathError::ControlCharacter));
        assert_eq!(normalize("/a\0b"), Err(PathError::ControlCharacter));
        assert_eq!(normalize("/a%0ab"), Err(PathError::ControlCharacter));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize("a/b"), Err(PathError::NotOriginForm));
        assert_eq!(normalize("*"), Err(PathError::NotOriginForm));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["/a/../b//c/./d/", "/x/%2e/y", "/%41/%7e"] {
            let once = normalize(p).unwrap();
            assert_eq!(normalize(&once).unwrap(), once);
        }
    }
}
