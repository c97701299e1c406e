//! A small JSON tree made for masking: object members stay in their order (duplicates kept, so
//! every copy of a key is seen by the rules), numbers keep their exact text (no float rounding
//! of large ids), keys and strings are unescaped before any rule looks at them (`"s\u0073n"` is
//! `ssn`). Parsing goes through the core's tokenizer, with a depth ceiling.

/// A JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, exactly as written.
    Num(String),
    /// A string, unescaped.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object; members in document order, duplicates kept.
    Obj(Vec<(String, Json)>),
}

/// Why a body is not JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// Not valid JSON (offset of the first problem).
    Syntax(usize),
    /// Nested deeper than the ceiling.
    TooDeep,
}

/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 256;

/// The tokenizer's refusal as this model's.
pub(crate) fn error(e: portcullis_core::json::Error) -> JsonError {
    use portcullis_core::json::Error;
    match e {
        Error::TooDeep(_) => JsonError::TooDeep,
        Error::Syntax(at)
        | Error::InvalidUtf8(at)
        | Error::LoneSurrogate(at)
        | Error::ArrayTooLong(at)
        | Error::StringTooLong(at)
        | Error::TooManyMembers(at)
        | Error::DuplicateName(at)
        | Error::NumberOutOfRange(at) => JsonError::Syntax(at),
    }
}

/// Parses a complete JSON document (surrounding whitespace allowed, nothing else), through
/// the core's tokenizer: iteratively (an explicit stack, never recursion), strings unescaped
/// as they are kept.
pub fn parse(input: &[u8]) -> Result<Json, JsonError> {
    use portcullis_core::json::{Event, Limits, Tokenizer};
    let limits = Limits {
        max_depth: MAX_DEPTH,
        ..Limits::default()
    };
    let err = error;
    let mut t = Tokenizer::new(input, limits).map_err(err)?;
    // Open containers, each with the member name its value will be stored under.
    let mut stack: Vec<(Json, Option<String>)> = Vec::new();
    let mut name: Option<String> = None;
    let mut done: Option<Json> = None;
    while let Some(ev) = t.next_event().map_err(err)? {
        let value = match ev {
            Event::StartObject | Event::StartArray => {
                let open = if ev == Event::StartObject {
                    Json::Obj(Vec::new())
                } else {
                    Json::Arr(Vec::new())
                };
                stack.push((open, name.take()));
                continue;
            }
            Event::Name(n) => {
                name = Some(n.unescape().into_owned());
                continue;
            }
            Event::EndObject | Event::EndArray => {
                let Some((v, key)) = stack.pop() else {
                    return Err(JsonError::Syntax(t.offset()));
                };
                name = key;
                v
            }
            Event::Str(s) => Json::Str(s.unescape().into_owned()),
            Event::Num(n) => Json::Num(n.to_string()),
            Event::Bool(b) => Json::Bool(b),
            Event::Null => Json::Null,
        };
        match stack.last_mut() {
            Some((Json::Obj(members), _)) => members.push((name.take().unwrap_or_default(), value)),
            Some((Json::Arr(items), _)) => items.push(value),
            _ => done = Some(value),
        }
    }
    done.ok_or(JsonError::Syntax(t.offset()))
}

impl Json {
    /// Compact serialization.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        self.write(&mut out);
        out.into_bytes()
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(true) => out.push_str("true"),
            Json::Bool(false) => out.push_str("false"),
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => portcullis_core::json::write_string(s, out),
            Json::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    portcullis_core::json::write_string(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    /// Follows a dotted member path (`consent.marketing`) from an object.
    pub fn dotted(&self, path: &[String]) -> Option<&Json> {
        let mut cur = self;
        for seg in path {
            let Json::Obj(m) = cur else { return None };
            // The last duplicate wins, as in most JSON parsers that will read this body.
            cur = m.iter().rev().find(|(k, _)| k == seg).map(|(_, v)| v)?;
        }
        Some(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_numbers_and_order() {
        let src = br#"{"b":1,"a":[12345678901234567890123,-0.5e-3,true,null],"b":"x\"y"}"#;
        let v = parse(src).unwrap();
        assert_eq!(v.to_bytes(), src.to_vec());
    }

    #[test]
    fn unescapes_keys_and_surrogates() {
        let v = parse(br#"{"s\u0073n":"\ud83d\ude00\u00e9"}"#).unwrap();
        assert_eq!(v, Json::Obj(vec![("ssn".into(), Json::Str("😀é".into()))]));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            &b"{"[..],
            b"[1,]",
            b"{\"a\" 1}",
            b"01",
            b"1.",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"a\nb\"",
            b"[] []",
            b"\"\xff\"",
            b"nul",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deep.as_bytes()), Err(JsonError::TooDeep));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn control_characters_are_escaped_on_output() {
        let v = Json::Str("a\u{1}b".into());
        assert_eq!(v.to_bytes(), b"\"a\\u0001b\"".to_vec());
    }
}
