//! A token's claims as verification reads them: one pass of serde_json over the payload into a
//! list of members, names and string values borrowed from the payload where they hold no
//! escape.
//!
//! It answers every lookup as `serde_json::Map<String, Value>` (which it replaces) does — the
//! last of duplicate names wins, a payload that is not one JSON object is an error, the same
//! payloads are refused — without building a tree map, allocating each name or string claim, or
//! dropping the tree node by node; a payload holds a dozen claims, so a lookup is a short scan.
//! The tests hold both to the same answers.

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// The members of a token's claims object, in payload order.
#[derive(Debug)]
pub struct Claims<'a>(Vec<(Cow<'a, str>, Member<'a>)>);

/// A member's value: a string kept as it was read (borrowed when it held no escape), anything
/// else as serde_json reads it.
#[derive(Debug)]
enum Member<'a> {
    Str(Cow<'a, str>),
    Json(Value),
}

/// A claim's value as a lookup returns it: a string, or any other JSON value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Claim<'c> {
    /// A JSON string.
    Str(&'c str),
    /// Any value that is not a string (a string only inside an array or object).
    Json(&'c Value),
}

impl<'c> Claim<'c> {
    /// The string, if the claim is one.
    pub fn as_str(self) -> Option<&'c str> {
        match self {
            Claim::Str(s) => Some(s),
            Claim::Json(_) => None,
        }
    }

    /// The claim as a `serde_json::Value` (a copy).
    pub fn to_value(self) -> Value {
        match self {
            Claim::Str(s) => Value::String(s.to_owned()),
            Claim::Json(v) => v.clone(),
        }
    }
}

impl<'a> Claims<'a> {
    /// Parses a payload that must be exactly one JSON object.
    ///
    /// The payload is checked to be UTF-8 once, whole, and then read as text, rather than
    /// serde_json checking each string on its own: the same payloads are refused (outside its
    /// strings a JSON text is ASCII, so its strings are UTF-8 exactly when it all is).
    pub fn parse(payload: &'a [u8]) -> Result<Self, serde_json::Error> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| <serde_json::Error as serde::de::Error>::custom("not UTF-8"))?;
        serde_json::from_str(text)
    }

    /// The value of claim `name`: the last member so named, as in a map built from the object.
    pub fn get(&self, name: &str) -> Option<Claim<'_>> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| match v {
                Member::Str(s) => Claim::Str(s),
                Member::Json(v) => Claim::Json(v),
            })
    }
}

impl<'de> Deserialize<'de> for Claims<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Members)
    }
}

struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Claims<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(16);
        while let Some(name) = map.next_key_seed(Name)? {
            let value = map.next_value_seed(Any)?;
            out.push((name, value));
        }
        Ok(Claims(out))
    }
}

/// A member name: borrowed from the payload, or owned when serde_json had to unescape it.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(Name)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A member value: a string as [`Name`] reads one; anything else handed to `Value`'s own
/// visitor (arrays and objects whole), so it is read, and refused, exactly as before.
struct Any;

impl<'de> DeserializeSeed<'de> for Any {
    type Value = Member<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Any)
    }
}

impl<'de> Visitor<'de> for Any {
    type Value = Member<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Member::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Member::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Member::Str(Cow::Owned(v)))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Member::Json(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Member::Json(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Member::Json(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // As `Value` reads it: a non-finite number (never parsed from JSON) is null.
        Ok(Member::Json(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Member::Json(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Member::Json(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Any)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Member::Json)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Member::Json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::fake::TestRng;
    use serde_json::Map;

    /// Names the generator draws from, written as they appear in the payload: plain, escaped
    /// spellings of the same name, and names only one byte apart.
    const NAMES: &[(&str, &str)] = &[
        ("iss", "iss"),
        ("\\u0069ss", "iss"),
        ("is\\u0073", "iss"),
        ("aud", "aud"),
        ("exp", "exp"),
        ("ex", "ex"),
        ("expp", "expp"),
        ("nbf", "nbf"),
        ("tenant", "tenant"),
        ("scope", "scope"),
        ("cnf", "cnf"),
        ("x5t#S256", "x5t#S256"),
        ("", ""),
        ("\\\"q\\\"", "\"q\""),
        ("é", "é"),
        ("\\u00e9", "é"),
    ];

    const VALUES: &[&str] = &[
        "1",
        "-2",
        "1.5e3",
        "18446744073709551616",
        "\"s\"",
        "\"a\\nb\"",
        "null",
        "true",
        "[]",
        "[\"a\",1]",
        "{}",
        "{\"jkt\":\"x\",\"iss\":2}",
        "1e999",
        "-0",
        "0.0",
        "-9223372036854775809",
        "false",
        "\"\\ud800\"",
        "\"\\u00e9t\\u00e9\"",
        "\"é\"",
        "\"\"",
        "[[{\"a\":[1,\"\\u0041\"]}]]",
        "{\"a\":1,\"a\":\"b\"}",
    ];

    fn check(payload: &str) {
        check_bytes(payload.as_bytes());
    }

    fn check_bytes(bytes: &[u8]) {
        let payload = String::from_utf8_lossy(bytes);
        let map: Result<Map<String, Value>, _> = serde_json::from_slice(bytes);
        let claims = Claims::parse(bytes);
        match (&map, &claims) {
            (Ok(map), Ok(claims)) => {
                for (_, name) in NAMES.iter().chain(&[("", "missing"), ("", "Iss")]) {
                    assert_eq!(
                        claims.get(name).map(Claim::to_value).as_ref(),
                        map.get(*name),
                        "{payload} [{name}]"
                    );
                    // A string is always a `Claim::Str`, never a `Value::String` inside `Json`.
                    assert!(
                        !matches!(claims.get(name), Some(Claim::Json(Value::String(_)))),
                        "{payload} [{name}]"
                    );
                }
            }
            (Err(_), Err(_)) => {}
            _ => panic!("{payload}: map {map:?}, claims {claims:?}"),
        }
    }

    /// Generated objects (duplicates, escaped names, every kind of value, whitespace), and
    /// truncations and one-byte changes of them: the same answer to every lookup, or both an
    /// error.
    #[test]
    fn lookups_agree_with_serde_json_map() {
        let mut rng = TestRng::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let members: Vec<String> = (0..rng.below(8))
                .map(|_| {
                    let ws = [" ", "", "\n"][rng.below(3)];
                    format!(
                        "{ws}\"{}\"{ws}:{ws}{}",
                        NAMES[rng.below(NAMES.len())].0,
                        VALUES[rng.below(VALUES.len())]
                    )
                })
                .collect();
            let payload = format!("{{{}}}", members.join(","));
            check(&payload);
            let cut = rng.below(payload.len() + 1);
            if payload.is_char_boundary(cut) {
                check(&payload[..cut]);
            }
            let mut bytes = payload.clone().into_bytes();
            let at = rng.below(bytes.len());
            // Bytes that are not UTF-8 on their own (a lead byte without its continuation, a
            // stray continuation, never-valid bytes), inside strings and out.
            let swaps = b"{}[]\",:\\ 0a\x80\xbf\xc3\xe2\xf0\xff";
            bytes[at] = swaps[rng.below(swaps.len())];
            check_bytes(&bytes);
        }
    }

    #[test]
    fn only_one_object_is_claims() {
        for payload in [
            "[]",
            "\"s\"",
            "1",
            "null",
            "{} {}",
            "{}x",
            "",
            "{\"a\":1,}",
            "{\"a\"}",
        ] {
            check(payload);
            assert!(Claims::parse(payload.as_bytes()).is_err(), "{payload}");
        }
        let c = Claims::parse(br#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(
            c.get("a"),
            Some(Claim::Json(&Value::from(2))),
            "the last one wins"
        );
    }
}
