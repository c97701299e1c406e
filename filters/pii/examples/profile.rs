//! The pii filter's whole response path — headers, the buffered body, masking, the body
//! written back, counters — through its own callbacks on the core's fake host, for N responses
//! of the benchmark's route (`make bench`: 4 KiB of CRM records, fifteen values to mask, for a
//! caller without pii scopes). Instructions are counted, not timed:
//!
//! ```sh
//! cargo build --release -p portcullis-pii --example profile
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_responses*' \
//!   --callgrind-out-file=/tmp/pii.out target/release/examples/profile 1000
//! callgrind_annotate --inclusive=yes /tmp/pii.out | head -60
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use portcullis_core::fake::{Edge, Gateway, Instance, Process, Request, Response};
use portcullis_pii::Pii;
use serde_json::Value;

mod common;
use common::bench_response;

/// The responses callgrind collects (kept out of line so `--toggle-collect` can name it).
#[inline(never)]
fn measured_responses(gw: &Gateway, req: &Request, body: &str, n: u64) -> u64 {
    let mut ok = 0;
    for _ in 0..n {
        let ex = gw.send(0, req, &|_| Response::json(200, body));
        ok += u64::from(ex.response.status == 200);
    }
    ok
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(1_000, |a| a.parse().expect("N: a number of responses"));
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/pii.yaml");
    let policy: Value = serde_norway::from_str(&std::fs::read_to_string(policy).unwrap()).unwrap();
    let gw = Gateway::new(
        vec![Instance::new::<Pii>(
            "pii",
            serde_json::to_vec(&policy).unwrap(),
        )],
        1,
        Edge::default(),
        Process::default(),
    )
    .expect("configuration");
    let req = Request::get("/api/v1/tenants/acme/customers").header("accept", "*/*");
    let body = bench_response();
    let first = gw.send(0, &req, &|_| Response::json(200, &body));
    let text = String::from_utf8(first.response.body).unwrap();
    assert!(
        text.contains("***-**-6780") && !text.contains("123-45-6780"),
        "the response is masked: {text}"
    );
    assert_eq!(measured_responses(&gw, &req, &body, 10), 10);
    let ok = measured_responses(&gw, &req, &body, n);
    assert_eq!(ok, n, "every measured response answered");
    println!("{n} responses of {} bytes masked", body.len());
}
