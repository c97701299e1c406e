//! Serialized header maps as the proxy-wasm host hands them to a filter (a count, a table of
//! name and value lengths, then each field with a NUL after it), and mutations that break the
//! table where a parser would trust it.

use crate::mutate;
use crate::rng::Rng;
use portcullis_core::headers::HeaderMap;

const NAMES: &[&[u8]] = &[
    b":method",
    b":path",
    b":authority",
    b":status",
    b"authorization",
    b"Content-Type",
    b"X-Portcullis-Tenant",
    b"dpop",
    b"",
    b"n\xe9",
];

const VALUES: &[&[u8]] = &[
    b"GET",
    b"/api/v1/tenants/acme/customers?q=1",
    b"Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig",
    b"",
    b"caf\xc3\xa9",
    b"caf\xe9",
    b"\x80\xff",
    b"\xc3",
    b"a\x00b",
    b"application/json; charset=utf-8",
];

/// The pairs of a random map: names and values from the lists above or random bytes.
fn pairs(rng: &mut Rng) -> Vec<(Vec<u8>, Vec<u8>)> {
    let field = |rng: &mut Rng, list: &[&[u8]]| -> Vec<u8> {
        if rng.chance(1, 4) {
            (0..rng.len(12)).map(|_| rng.byte()).collect()
        } else {
            rng.pick(list).map(|f| f.to_vec()).unwrap_or_default()
        }
    };
    (0..rng.len(12))
        .map(|_| (field(rng, NAMES), field(rng, VALUES)))
        .collect()
}

/// A well-formed map.
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    HeaderMap::to_wire(&pairs(rng))
}

/// Seeds: an empty map, and the request a filter sees most.
pub fn seeds() -> Vec<Vec<u8>> {
    vec![
        HeaderMap::to_wire::<&[u8], &[u8]>(&[]),
        HeaderMap::to_wire(&[
            (":method", "POST"),
            (":path", "/api/v1/tenants/acme/customers"),
            ("content-type", "application/json"),
            ("authorization", "Bearer t"),
        ]),
    ]
}

/// A mutation: a length or the count off by a little or a lot, or bytes changed anywhere.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let words = out.len() / 4;
    if words > 0 && rng.chance(1, 2) {
        // One word of the count or the length table (the table is at the front).
        let at = 4 * rng.below(words.min(1 + 2 * 12));
        let w = u32::from_le_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
        let w = match rng.below(4) {
            0 => w.wrapping_add(1),
            1 => w.wrapping_sub(1),
            2 => u32::MAX - rng.below(3) as u32,
            _ => rng.next_u64() as u32,
        };
        out[at..at + 4].copy_from_slice(&w.to_le_bytes());
        out
    } else {
        mutate::bytes(rng, &out, &[b"\x00", b"\xff\xff\xff\xff", b"\xe9"])
    }
}
