//! The documents the pii examples mask, as the demo upstream serves them
//! (`tests/src/bin/demo-upstream.rs`: `customers`, `fixtures/bulk`, `fixtures/bench`).
use serde_json::{json, Value};

/// CRM record `i` of tenant acme (three customers, repeating), every one with an SSN, card,
/// IBAN, e-mail and phone to mask.
pub fn crm(i: usize) -> Value {
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
    let i = i % 3;
    let (name, user) = names[i];
    json!({
        "id": format!("c-{}", 1001 + i),
        "tenant": "acme",
        "name": name,
        "email": format!("{user}@acme.example.com"),
        "phone": format!("+1555555{:04}", 123 + i),
        "ssn": format!("{}-45-678{}", 123 + i, i),
        "card_number": cards[i],
        "iban": ibans[i],
        "consent": {"marketing": i.is_multiple_of(2), "analytics": true},
        "created_at": 1_700_000_000_000u64 + i as u64 * 86_400_000,
        "owner": format!("rep-{}", 7 + i),
    })
}

/// The demo upstream's `fixtures/bench` answer, the response `make bench` masks: the three
/// records with a long note each (4,208 bytes, fifteen values to mask).
pub fn bench_response() -> String {
    let list: Vec<Value> = (0..3)
        .map(|i| {
            let mut c = crm(i);
            c["notes"] = json!(
                "Account history: ".to_string() + &"renewed, upgraded, contacted; ".repeat(36)
            );
            c
        })
        .collect();
    json!({"tenant": "acme", "customers": list}).to_string()
}
