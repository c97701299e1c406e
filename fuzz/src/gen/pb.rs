//! Protobuf `google.protobuf.Struct`: an encoder (JSON value → wire bytes, as Envoy would send a
//! YAML `configuration`) and wire-aware mutations.

use crate::gen::json;
use crate::mutate;
use crate::rng::Rng;
use serde_json::{Map, Value};

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

fn bytes_field(number: u64, b: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// Encodes a `google.protobuf.Value`.
pub fn encode_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Value::Null => {
            varint(1 << 3, &mut out);
            varint(0, &mut out);
        }
        Value::Number(n) => {
            varint(2 << 3 | 1, &mut out);
            out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_bits().to_le_bytes());
        }
        Value::String(s) => bytes_field(3, s.as_bytes(), &mut out),
        Value::Bool(b) => {
            varint(4 << 3, &mut out);
            varint(u64::from(*b), &mut out);
        }
        Value::Object(m) => bytes_field(5, &encode_struct(m), &mut out),
        Value::Array(a) => {
            let mut l = Vec::new();
            for x in a {
                bytes_field(1, &encode_value(x), &mut l);
            }
            bytes_field(6, &l, &mut out);
        }
    }
    out
}

/// Encodes a `google.protobuf.Struct` (a map of `Value`s).
pub fn encode_struct(m: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, x) in m {
        let mut e = Vec::new();
        bytes_field(1, k.as_bytes(), &mut e);
        bytes_field(2, &encode_value(x), &mut e);
        bytes_field(1, &e, &mut out);
    }
    out
}

/// An encoded `Struct` of a random JSON object (an empty one if the text was not an object).
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    let doc = json::object_document(rng);
    match serde_json::from_slice::<Value>(&doc) {
        Ok(Value::Object(m)) => encode_struct(&m),
        _ => Vec::new(),
    }
}

/// Tag bytes and varint pieces: every field number the decoder knows, with every wire type.
const DICT: &[&[u8]] = &[
    &[0x0a],
    &[0x12],
    &[0x08, 0x00],
    &[0x11],
    &[0x1a, 0x00],
    &[0x20, 0x01],
    &[0x2a, 0x00],
    &[0x32, 0x00],
    &[0x0d, 0, 0, 0, 0],
    &[0x0f],
    &[0x80],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[
        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ],
    &[0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x7f],
    &[0x11, 0, 0, 0, 0, 0, 0, 0xf8, 0x7f],
];

/// Wraps `inner` (a `Struct`) as the value of one member of a new `Struct`: one level deeper.
fn wrap_struct(inner: &[u8], as_list: bool) -> Vec<u8> {
    let mut value = Vec::new();
    bytes_field(5, inner, &mut value);
    if as_list {
        let mut list = Vec::new();
        bytes_field(1, &value, &mut list);
        value.clear();
        bytes_field(6, &list, &mut value);
    }
    let mut entry = Vec::new();
    bytes_field(1, b"k", &mut entry);
    bytes_field(2, &value, &mut entry);
    let mut out = Vec::new();
    bytes_field(1, &entry, &mut out);
    out
}

/// A mutation of wire bytes: nest deeper, add an unknown field, or change bytes and tags.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    match rng.below(5) {
        0 => {
            let mut out = input.to_vec();
            for _ in 0..rng.len(40).max(1) {
                out = wrap_struct(&out, rng.chance(1, 3));
            }
            out
        }
        1 => {
            // An unknown field (the decoder must skip it in a Struct and refuse it in a Value).
            let mut out = input.to_vec();
            let number = 1 + rng.len(1 << 20) as u64;
            match rng.below(4) {
                0 => {
                    varint(number << 3, &mut out);
                    varint(rng.next_u64() >> rng.below(64), &mut out);
                }
                1 => {
                    varint(number << 3 | 1, &mut out);
                    out.extend_from_slice(&rng.next_u64().to_le_bytes());
                }
                2 => {
                    let junk: Vec<u8> = (0..rng.len(16)).map(|_| rng.byte()).collect();
                    bytes_field(number, &junk, &mut out);
                }
                _ => {
                    varint(number << 3 | 5, &mut out);
                    out.extend_from_slice(&[1, 2, 3, 4]);
                }
            }
            out
        }
        _ => mutate::bytes(rng, input, DICT),
    }
}
