//! Profiling driver: the schema filter's body check (`validate::check_body`) on valid bodies of
//! about 1, 8 and 64 KiB under the demo policy's schemas, timed natively, and a
//! `measured_requests` function for an instruction profiler.
//!
//! The 1 KiB body is `create-customer`'s (the one `tests/bench/schema-cost.sh` posts through
//! Envoy). `customer-create` cannot grow past about 1.5 KiB (`maxItems`, `maxLength`), so the
//! 8 and 64 KiB bodies are arrays of 8 and 64 such customers, validated against
//! `{"type": "array", "items": {"$ref": "urn:portcullis:schema:customer-create"}}` on a route
//! added here with room for them: the per-KiB cost of the same schema work, scaled.
//!
//! `cargo run --release -p portcullis-schema --example profile` prints µs per body and per KiB;
//! `… --example profile -- callgrind 64 1000` runs only 1000 checks of the 64 KiB body inside
//! `measured_requests` (see tests/bench/README.md, "Profiling"). `--two-step` (last argument)
//! measures the path one-pass validation replaced instead: scan, serde_json tree, jsonschema.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a driver: a failure is a crash

use portcullis_schema::config::SchemaConfig;
use portcullis_schema::scan::scan;
use portcullis_schema::validate::check_body;
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Instant;

/// The body `tests/bench/schema-cost.sh` posts (about 1 KiB).
fn customer(i: usize) -> Value {
    let tags: Vec<String> = (0..20)
        .map(|t| format!("t{t:02}-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
        .collect();
    json!({"name": format!("Ada Lovelace {i}"), "email": "ada@acme.example.com",
        "phone": "+15555550123", "tier": "standard", "seats": 12,
        "address": {"street": "12 Analytical Engine Way", "city": "London", "country": "GB"},
        "tags": tags, "consent": {"marketing": true, "analytics": false}})
}

/// policies/schema.yaml plus a bulk route for the larger bodies.
fn config() -> (SchemaConfig, usize, usize) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/schema.yaml");
    let mut v: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["routes"].as_array_mut().unwrap().push(json!({
        "name": "bulk-create", "match": {"methods": ["POST"], "path": "/bulk"},
        "request": {"schema": {"type": "array",
            "items": {"$ref": "urn:portcullis:schema:customer-create"}},
            "limits": {"max_body_bytes": 1048576, "max_array_len": 1000}}}));
    let routes = v["routes"].as_array().unwrap();
    let idx = |n: &str| routes.iter().position(|r| r["name"] == n).unwrap();
    let (single, bulk) = (idx("create-customer"), idx("bulk-create"));
    (SchemaConfig::from_value(v).unwrap(), single, bulk)
}

fn bodies() -> Vec<(usize, Vec<u8>)> {
    let one = serde_json::to_vec(&customer(0)).unwrap();
    let many = |n: usize| serde_json::to_vec(&(0..n).map(customer).collect::<Vec<_>>()).unwrap();
    vec![(1, one), (8, many(8)), (64, many(64))]
}

/// The path before one-pass validation, for comparison in the same binary: the structural scan,
/// then a serde_json tree, then jsonschema's `is_valid`.
#[inline(never)]
fn measured_requests_two_step(cfg: &SchemaConfig, route: usize, body: &[u8], n: usize) {
    let req = cfg.routes.get(route).unwrap().request.as_ref().unwrap();
    for _ in 0..n {
        let body = black_box(body);
        scan(body, &req.limits).unwrap();
        let v: Value = serde_json::from_slice(body).unwrap();
        assert!(black_box(req.validator.is_valid(&v)));
    }
}

#[inline(never)]
fn measured_requests(cfg: &SchemaConfig, route: usize, body: &[u8], n: usize) {
    for _ in 0..n {
        black_box(check_body(cfg, route, black_box(body))).unwrap();
    }
}

fn main() {
    let (cfg, single, bulk) = config();
    let args: Vec<String> = std::env::args().collect();
    let two_step = args.iter().any(|a| a == "--two-step");
    let run = |route: usize, body: &[u8], n: usize| {
        if two_step {
            measured_requests_two_step(&cfg, route, body, n);
        } else {
            measured_requests(&cfg, route, body, n);
        }
    };
    if args.get(1).map(String::as_str) == Some("callgrind") {
        let kib: usize = args.get(2).map_or(64, |a| a.parse().unwrap());
        let n: usize = args.get(3).map_or(1000, |a| a.parse().unwrap());
        let (k, body) = bodies().into_iter().find(|(k, _)| *k == kib).unwrap();
        let route = if k == 1 { single } else { bulk };
        run(route, &body, 1); // warm-up, not collected
        run(route, &body, n);
        println!("{n} checks of {} bytes", body.len());
        return;
    }
    for (k, body) in bodies() {
        let route = if k == 1 { single } else { bulk };
        // About 200 ms of work per size, the best of five rounds.
        let n = (200_000 / k).max(100);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            run(route, &body, n);
            best = best.min(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        let kib = body.len() as f64 / 1024.0;
        println!(
            "{k:>2} KiB body ({} bytes): {best:8.2} µs per body, {:6.2} µs per KiB",
            body.len(),
            best / kib
        );
    }
}
