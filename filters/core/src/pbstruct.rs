//! Decoder for a serialized `google.protobuf.Struct`, which is how Envoy hands a plugin a
//! `configuration` written as plain YAML (a `Struct`), instead of the JSON a `StringValue` carries.
//!
//! Only the wire format of `Struct`, `Value` and `ListValue` is needed, so a ~100-line decoder
//! replaces a protobuf runtime in every module. Nesting depth and sizes are bounded so a hostile
//! config cannot overflow the stack.

use serde_json::{Map, Number, Value};

/// Deepest `Struct`/`ListValue` nesting accepted; configs are a handful of levels deep.
const MAX_DEPTH: usize = 64;

/// Why a protobuf `Struct` could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid protobuf Struct: {}", self.0)
    }
}

fn err<T>(msg: &str) -> Result<T, DecodeError> {
    Err(DecodeError(msg.to_string()))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.buf.get(self.pos) else {
                return err("truncated varint");
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        err("varint too long")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return err("truncated field");
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn field(&mut self) -> Result<(u64, Field<'a>), DecodeError> {
        let key = self.varint()?;
        let number = key >> 3;
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Field::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| DecodeError("length overflow".into()))?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            _ => return err("unsupported wire type"),
        };
        Ok((number, field))
    }
}

/// Decodes a serialized `google.protobuf.Struct` into a JSON object.
pub fn decode_struct(buf: &[u8]) -> Result<Value, DecodeError> {
    decode_struct_at(buf, 0)
}

fn decode_struct_at(buf: &[u8], depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return err("nesting too deep");
    }
    let mut map = Map::new();
    let mut r = Reader::new(buf);
    while !r.done() {
        // Struct { map<string, Value> fields = 1; } — each entry is a message {key = 1, value = 2}.
        if let (1, Field::Bytes(entry)) = r.field()? {
            let mut e = Reader::new(entry);
            let mut key = String::new();
            let mut value = Value::Null;
            while !e.done() {
                match e.field()? {
                    (1, Field::Bytes(k)) => {
                        key = String::from_utf8(k.to_vec())
                            .map_err(|_| DecodeError("key is not UTF-8".into()))?
                    }
                    (2, Field::Bytes(v)) => value = decode_value(v, depth + 1)?,
                    _ => {}
                }
            }
            map.insert(key, value);
        }
    }
    Ok(Value::Object(map))
}

fn decode_list(buf: &[u8], depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return err("nesting too deep");
    }
    let mut out = Vec::new();
    let mut r = Reader::new(buf);
    while !r.done() {
        if let (1, Field::Bytes(v)) = r.field()? {
            out.push(decode_value(v, depth + 1)?);
        }
    }
    Ok(Value::Array(out))
}

fn decode_value(buf: &[u8], depth: usize) -> Result<Value, DecodeError> {
    let mut r = Reader::new(buf);
    // An empty Value message is a null (the oneof unset).
    let mut value = Value::Null;
    while !r.done() {
        value = match r.field()? {
            (1, Field::Varint(_)) => Value::Null,
            (2, Field::Fixed64(bits)) => number(f64::from_bits(bits))?,
            (3, Field::Bytes(s)) => Value::String(
                String::from_utf8(s.to_vec())
                    .map_err(|_| DecodeError("string is not UTF-8".into()))?,
            ),
            (4, Field::Varint(b)) => Value::Bool(b != 0),
            (5, Field::Bytes(s)) => decode_struct_at(s, depth + 1)?,
            (6, Field::Bytes(l)) => decode_list(l, depth + 1)?,
            (_, Field::Fixed32) | (_, _) => return err("unexpected field in Value"),
        };
    }
    Ok(value)
}

/// `Struct` numbers are doubles; integral ones become JSON integers so that config fields typed
/// `u32`/`u64` accept `60` written in YAML.
fn number(f: f64) -> Result<Value, DecodeError> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: beyond it doubles skip integers
    if f.fract() == 0.0 && f.abs() <= EXACT {
        // The cast is exact: |f| <= 2^53 and f has no fractional part.
        #[allow(clippy::cast_possible_truncation)]
        let i = f as i64;
        return Ok(Value::Number(Number::from(i)));
    }
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| DecodeError("number is not finite".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes_field(n: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    fn enc_value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match v {
            Value::Null => {
                varint(1 << 3, &mut out);
                varint(0, &mut out);
            }
            Value::Number(n) => {
                varint(2 << 3 | 1, &mut out);
                out.extend_from_slice(&n.as_f64().unwrap().to_bits().to_le_bytes());
            }
            Value::String(s) => bytes_field(3, s.as_bytes(), &mut out),
            Value::Bool(b) => {
                varint(4 << 3, &mut out);
                varint(u64::from(*b), &mut out);
            }
            Value::Object(_) => bytes_field(5, &enc_struct(v), &mut out),
            Value::Array(a) => {
                let mut l = Vec::new();
                for x in a {
                    bytes_field(1, &enc_value(x), &mut l);
                }
                bytes_field(6, &l, &mut out);
            }
        }
        out
    }
    /// A test-side encoder mirroring protobuf's wire format, to round-trip the decoder.
    fn enc_struct(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, x) in v.as_object().unwrap() {
            let mut e = Vec::new();
            bytes_field(1, k.as_bytes(), &mut e);
            bytes_field(2, &enc_value(x), &mut e);
            bytes_field(1, &e, &mut out);
        }
        out
    }

    #[test]
    fn round_trips_nested_values_and_turns_integral_doubles_into_integers() {
        let v = serde_json::json!({
            "mode": "enforce", "skew": 60, "ratio": 0.5, "on": true, "nothing": null,
            "routes": [{"path": "/a", "methods": ["GET", "POST"]}, {"prefix": "/b"}],
            "nested": {"deeper": {"n": -3}}
        });
        assert_eq!(decode_struct(&enc_struct(&v)).unwrap(), v);
        assert!(decode_struct(&enc_struct(&v)).unwrap()["skew"].is_u64());
    }

    #[test]
    fn a_struct_configuration_parses_through_json_text_like_json_itself() {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct C {
            name: String,
            n: u32,
            list: Vec<String>,
        }
        let v = serde_json::json!({"name": "a", "n": 5, "list": ["x", "y"]});
        let from_struct: C = crate::config::parse(&enc_struct(&v)).unwrap();
        let from_json: C = crate::config::parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(from_struct, from_json);
        let text = crate::config::json_text(enc_struct(&v)).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&text).unwrap(), v);
        let bad = enc_struct(&serde_json::json!({"name": "a", "n": 5, "list": [], "lsit": []}));
        let e = crate::config::parse::<C>(&bad).unwrap_err();
        assert_eq!(e.field, "lsit", "a Struct's errors name the field too");
    }

    #[test]
    fn empty_buffer_is_an_empty_object() {
        assert_eq!(decode_struct(&[]).unwrap(), serde_json::json!({}));
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error_not_a_panic() {
        let v = serde_json::json!({"a": {"b": [1, 2, "x"]}});
        let enc = enc_struct(&v);
        for cut in 1..enc.len() {
            let _ = decode_struct(&enc[..cut]);
        }
        assert!(decode_struct(&[0x0a, 0xff]).is_err());
        assert!(decode_struct(&[0x0f]).is_err());
        assert!(decode_struct(&[
            0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01
        ])
        .is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut v = serde_json::json!({});
        for _ in 0..200 {
            v = serde_json::json!({ "x": v });
        }
        assert!(decode_struct(&enc_struct(&v)).is_err());
    }
}
