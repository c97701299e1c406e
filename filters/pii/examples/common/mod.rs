//! The documents the pii examples mask: the demo upstream's own CRM records (one source,
//! `tests/src/crm.rs`, included by path: this crate cannot depend on the tests crate).
use serde_json::Value;

#[path = "../../../../tests/src/crm.rs"]
mod records;

/// CRM record `i` of tenant acme (three customers, repeating), every one with an SSN, card,
/// IBAN, e-mail and phone to mask.
#[allow(dead_code)] // the profile example masks only the bench response
pub fn crm(i: usize) -> Value {
    let mut list = records::customers("acme");
    list.swap_remove(i % list.len())
}

/// The demo upstream's `fixtures/bench` answer, the response `make bench` masks (4,208 bytes,
/// fifteen values to mask).
pub fn bench_response() -> String {
    records::bench("acme").to_string()
}
