//! Native masking throughput on a JSON file: `cargo run --release -p portcullis-pii --example throughput -- FILE`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use portcullis_pii::config::PiiConfig;
use portcullis_pii::decide::{self, Job, Kind};
use portcullis_pii::mask::Caller;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let body = std::fs::read(&args[1]).unwrap();
    let policy: serde_json::Value = serde_json::from_str(&args[2]).unwrap();
    let cfg = PiiConfig::from_value(policy).unwrap();
    let route = cfg.routes.get(0).unwrap().clone();
    let caller = Caller {
        scopes: &[],
        key: cfg.keys.for_tenant(Some("acme")),
    };
    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        let m =
            decide::mask_body(&cfg, &route, &Job::plain(Kind::Json), caller, &body, false).unwrap();
        assert!(m.body.is_some());
    }
    let per = t.elapsed().as_secs_f64() / f64::from(n);
    let t = Instant::now();
    for _ in 0..n {
        let mut d = portcullis_pii::json::parse(&body).unwrap();
        std::hint::black_box(&mut d);
        std::hint::black_box(d.to_bytes());
    }
    let parse = t.elapsed().as_secs_f64() / f64::from(n);
    println!(
        "serde_json parse+serialize={:.2}ms",
        serde_baseline(&body) * 1e3
    );
    println!(
        "bytes={} mask={:.2}ms ({:.1} MB/s) parse+serialize={:.2}ms",
        body.len(),
        per * 1e3,
        body.len() as f64 / per / 1e6,
        parse * 1e3
    );
}

#[allow(dead_code)]
fn serde_baseline(body: &[u8]) -> f64 {
    let t = Instant::now();
    for _ in 0..50 {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        std::hint::black_box(serde_json::to_vec(&v).unwrap());
    }
    t.elapsed().as_secs_f64() / 50.0
}
