//! The demo upstream's CRM records, written once: `demo-upstream` serves them (`customers`,
//! `fixtures/bulk`, `fixtures/bench`) and the pii examples mask them (they include this file by
//! path, since the pii crate cannot depend on this one), so the masker is profiled on exactly the
//! bytes `make bench` sends through Envoy.
use serde_json::{json, Value};

/// The tenant's three customers, every one with an SSN, card, IBAN, e-mail and phone to mask.
pub fn customers(tenant: &str) -> Vec<Value> {
    let names = [
        ("Ada Lovelace", "ada"),
        ("Grace Hopper", "grace"),
        ("Alan Turing", "alan"),
    ];
    let cards = ["4111111111111111", "5555555555554444", "378282246310005"];
    let ibans = [
        "GB82WEST12345698765432",
        "DE89370400440532013000",
        "FR1420041010050500013M02606",
    ];
    names
        .iter()
        .enumerate()
        .map(|(i, (name, user))| {
            json!({
                "id": format!("c-{}", 1001 + i),
                "tenant": tenant,
                "name": name,
                "email": format!("{user}@{tenant}.example.com"),
                "phone": format!("+1555555{:04}", 123 + i),
                "ssn": format!("{}-45-678{}", 123 + i, i),
                "card_number": cards[i],
                "iban": ibans[i],
                "consent": {"marketing": i % 2 == 0, "analytics": true},
                "created_at": 1_700_000_000_000u64 + i as u64 * 86_400_000,
                "owner": format!("rep-{}", 7 + i),
            })
        })
        .collect()
}

/// The benchmark's response (`fixtures/bench`): the three customers with a long note each,
/// 4 KiB with fifteen values to mask.
pub fn bench(tenant: &str) -> Value {
    let mut list = customers(tenant);
    for c in &mut list {
        c["notes"] =
            json!("Account history: ".to_string() + &"renewed, upgraded, contacted; ".repeat(36));
    }
    json!({"tenant": tenant, "customers": list})
}
