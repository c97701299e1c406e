//! Native masking throughput, through the compiled `policies/pii.yaml` (profile `crm_records`,
//! a caller of tenant acme without pii scopes), for the streaming masker the filter runs and
//! for the tree walk it replaced (parse to a tree, walk, write the whole tree back):
//!
//! ```sh
//! cargo run --release -p portcullis-pii --example throughput            # the table below
//! cargo run --release -p portcullis-pii --example throughput -- FILE    # one JSON file
//! ```
//!
//! Documents: `crm` is the demo upstream's `fixtures/bulk` response (CRM records, every one
//! with an SSN, card, IBAN, e-mail and phone to mask), `clean` a list of order records with
//! nothing to mask (strings, numbers and timestamps the detectors still read), each at about
//! 4 KiB, 64 KiB and 1 MiB; `bench` the response `make bench` masks (three of the CRM records
//! with a long note each, fifteen values).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use portcullis_pii::config::{Locate, PiiConfig};
use portcullis_pii::decide::{self, Job, Kind};
use portcullis_pii::mask::{self, Caller};
use portcullis_pii::{json, stream};
use serde_json::{json, Value};
use std::time::Instant;

mod common;
use common::crm;

fn order(i: usize) -> Value {
    let status = ["shipped", "pending", "delivered", "returned"];
    json!({
        "id": format!("o-{}", 100_001 + i),
        "sku": format!("SKU-{:05}", (i * 7919) % 100_000),
        "qty": 1 + i % 9,
        "price": 12.5 + (i % 40) as f64,
        "currency": "EUR",
        "status": status[i % 4],
        "created_at": 1_700_000_000_000u64 + i as u64 * 60_000,
        "note": "Left at the front desk; signed for by reception. Gift wrap requested.",
    })
}

/// The document of `n` records of one kind.
fn doc(kind: &str, n: usize) -> Vec<u8> {
    let list: Vec<Value> = (0..n)
        .map(|i| if kind == "crm" { crm(i) } else { order(i) })
        .collect();
    let key = if kind == "crm" { "customers" } else { "orders" };
    serde_json::to_vec(&json!({"tenant": "acme", key: list})).unwrap()
}

/// About `bytes` of a kind (whole records).
fn sized(kind: &str, bytes: usize) -> Vec<u8> {
    let one = doc(kind, 1).len();
    let mut n = (bytes / one).max(1);
    while doc(kind, n).len() > bytes && n > 1 {
        n -= 1;
    }
    doc(kind, n)
}

/// Seconds per call, over enough calls to take about half a second.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed().as_secs_f64() < 0.5 {
        f();
        n += 1;
    }
    t.elapsed().as_secs_f64() / f64::from(n)
}

#[inline(never)]
fn measured_masks(
    cfg: &PiiConfig,
    profile: &portcullis_pii::config::Profile,
    caller: Caller<'_>,
    text: &str,
    reps: usize,
) {
    for _ in 0..reps {
        std::hint::black_box(stream::mask_document(cfg, profile, caller, text).unwrap());
    }
}

fn mbs(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn main() {
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/pii.yaml");
    let policy: Value = serde_norway::from_str(&std::fs::read_to_string(policy).unwrap()).unwrap();
    let mut cfg = PiiConfig::from_value(policy).unwrap();
    // As the filter runs it: masked locations are worked out only for its debug log.
    cfg.locate = Locate::Never;
    let route = cfg
        .routes
        .iter()
        .find(|r| r.1.name == "tenant-api")
        .unwrap()
        .1
        .clone();
    let profile = &cfg.profiles[route.profile];
    let caller = Caller {
        scopes: &[],
        key: cfg.keys.for_tenant(Some("acme")),
    };
    let docs: Vec<(String, Vec<u8>)> = match std::env::args().nth(1) {
        Some(file) => vec![(file.clone(), std::fs::read(&file).unwrap())],
        None => ["crm", "clean"]
            .iter()
            .flat_map(|k| {
                [4 << 10, 64 << 10, 1 << 20]
                    .iter()
                    .map(move |&b| (format!("{k} {}KiB", b >> 10), sized(k, b)))
            })
            .chain([(
                "bench 4KiB".to_string(),
                common::bench_response().into_bytes(),
            )])
            .collect(),
    };
    // `ONLY=clean` (or `crm`, `1024KiB`): the documents whose name holds it, stream only (for
    // a profiler).
    let only = std::env::var("ONLY").ok();
    // `REPS=N ONLY=…`: mask each chosen document N times through the stream and nothing else,
    // inside `measured_masks`, so an instruction counter can collect exactly that.
    if let Some(reps) = std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse::<usize>().ok())
    {
        for (name, body) in &docs {
            if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
                continue;
            }
            let text = std::str::from_utf8(body).unwrap();
            measured_masks(&cfg, profile, caller, text, reps);
            println!("{name}: {} bytes masked {reps} times", body.len());
        }
        return;
    }
    println!("document      bytes  masked  stream MB/s  tree MB/s  mask_body MB/s");
    for (name, body) in &docs {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let text = std::str::from_utf8(body).unwrap();
        let masked = stream::mask_document(&cfg, profile, caller, text)
            .unwrap()
            .report
            .total();
        let s = time(|| {
            std::hint::black_box(stream::mask_document(&cfg, profile, caller, text).unwrap());
        });
        if only.is_some() {
            let v = time(|| {
                portcullis_core::json::validate(std::hint::black_box(body), Default::default())
                    .unwrap();
            });
            println!(
                "{name:<12} {:>7} {masked:>7} {:>12.0}   validate only: {:.0} MB/s",
                body.len(),
                mbs(body.len(), s),
                mbs(body.len(), v)
            );
            continue;
        }
        let t = time(|| {
            let mut d = json::parse(body).unwrap();
            let r = mask::mask_json(&cfg, profile, caller, &mut d).unwrap();
            if r.total() > 0 {
                std::hint::black_box(d.to_bytes());
            }
        });
        let job = Job::plain(Kind::Json);
        let b = time(|| {
            std::hint::black_box(
                decide::mask_body(&cfg, &route, &job, caller, body, false).unwrap(),
            );
        });
        println!(
            "{name:<12} {:>7} {masked:>7} {:>12.0} {:>10.0} {:>15.0}",
            body.len(),
            mbs(body.len(), s),
            mbs(body.len(), t),
            mbs(body.len(), b)
        );
    }
}
