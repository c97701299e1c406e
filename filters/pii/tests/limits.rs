//! Size limits as decisions, natively: a body is refused as declared too large from its
//! headers, capped while buffered, decoded under its caps, and never written back larger than
//! `max_output_bytes` (the filter's promise to stay within Envoy's buffer limit); the response
//! is held only when a refusal is still possible; limits are validated at configure time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_core::headers::HeaderMap;
use portcullis_pii::codec::Coding;
use portcullis_pii::config::PiiConfig;
use portcullis_pii::decide::{self, BodyPlan, Cause, Finished, Job, Kind};
use portcullis_pii::mask::Caller;
use serde_json::{json, Value};
use std::io::Write;

const KEY: &str = "YWNtZS1rZXktMDEyMzQ1Njc4OWFiY2RlZg";

fn config(extra: Value) -> PiiConfig {
    let mut v = json!({
        "max_body_bytes": 1000,
        "decompression": {"max_bytes": 4000, "max_ratio": 100},
        "tokenization": {"tenant_keys": {"acme": KEY}},
        "rules": [
            {"name": "ssn", "fields": ["$..ssn"], "action": {"type": "partial", "keep_last": 4}},
            {"name": "iban", "fields": ["$..iban"], "action": "tokenize"}
        ],
        "profiles": {"p": ["ssn", "iban"], "plain": ["ssn"]},
        "routes": [
            {"name": "pass", "match": {"prefix": "/pass"}, "profile": "p", "on_unmaskable": "pass"},
            {"name": "plain-pass", "match": {"prefix": "/plain"}, "profile": "plain", "on_unmaskable": "pass"},
            {"name": "egress", "match": {"prefix": "/out"}, "profile": "p", "direction": "request"},
            {"name": "block", "match": {"prefix": "/"}, "profile": "p"}
        ]
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    PiiConfig::from_value(v).unwrap()
}

fn job(codings: &[Coding]) -> Job {
    Job {
        kind: Kind::Json,
        charset: None,
        codings: codings.to_vec(),
    }
}

fn route(cfg: &PiiConfig, path: &str) -> portcullis_pii::config::Route {
    decide::route_for(cfg, "GET", path).unwrap().1.clone()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    HeaderMap::from_pairs(pairs)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const NOBODY: Caller<'static> = Caller {
    scopes: &[],
    key: None,
};

fn acme(cfg: &PiiConfig) -> Caller<'_> {
    Caller {
        scopes: &[],
        key: cfg.keys.for_tenant(Some("acme")),
    }
}

/// `{"ssn":"123-45-6789","pad":"xxx…"}` of exactly `n` bytes.
fn filler(n: usize) -> Vec<u8> {
    let mut b = br#"{"ssn":"123-45-6789","pad":""#.to_vec();
    b.resize(n - 2, b'x');
    b.extend_from_slice(b"\"}");
    b
}

/// `[{"iban":0},…]`: each value becomes a 28-character token, the body grows ~3.6 times.
fn growing(records: usize) -> Vec<u8> {
    let items = vec![r#"{"iban":0}"#; records];
    format!("[{}]", items.join(",")).into_bytes()
}

#[test]
fn the_output_limit_defaults_to_the_largest_body_the_policy_accepts() {
    assert_eq!(config(json!({})).max_output_bytes, 4000);
    assert_eq!(
        config(json!({"decompression": {"max_bytes": 10}})).max_output_bytes,
        1000
    );
    assert_eq!(
        config(json!({"max_output_bytes": 5000})).min_envoy_buffer_bytes(),
        5000
    );
    // Request-masking routes pass at most this on to a buffer filter behind them.
    assert_eq!(config(json!({})).max_request_output_bytes(), 4000);
}

#[test]
fn limits_outside_their_range_are_configuration_errors() {
    let err = |extra: Value| {
        let mut v = json!({"max_body_bytes": 1000, "rules": [], "profiles": {"p": []},
                           "routes": [{"name": "r", "match": {"prefix": "/"}, "profile": "p", "max_body_bytes": 2000}]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        PiiConfig::from_value(v).unwrap_err().to_string()
    };
    let e = err(json!({"max_output_bytes": 1500}));
    assert!(e.contains("max_output_bytes") && e.contains("2000"), "{e}");
    let e = err(json!({"max_output_bytes": 0}));
    assert!(e.contains("max_output_bytes"), "{e}");
    let e = err(json!({"decompression": {"max_bytes": 100_000_000}}));
    assert!(e.contains("decompression.max_bytes"), "{e}");
    let e = err(json!({"max_body_bytes": 0}));
    assert!(e.contains("max_body_bytes"), "{e}");
}

#[test]
fn a_declared_length_over_the_cap_is_refused_from_the_headers() {
    let cfg = config(json!({}));
    let r = route(&cfg, "/x");
    let plan = |len: &str| {
        decide::plan_response(
            &r,
            "GET",
            200,
            &headers(&[
                ("content-type", "application/json"),
                ("content-length", len),
            ]),
            false,
        )
    };
    assert!(matches!(plan("1000"), BodyPlan::Mask(_)));
    assert_eq!(plan("1001"), BodyPlan::Refuse(Cause::TooLarge));
    assert_eq!(plan("99999999999"), BodyPlan::Refuse(Cause::TooLarge));
    // Unparseable or conflicting lengths are measured while buffering instead.
    assert!(matches!(plan("12, 5000"), BodyPlan::Mask(_)));
    assert!(matches!(plan("x"), BodyPlan::Mask(_)));
    assert!(decide::over_cap(&r, 1001) && !decide::over_cap(&r, 1000));
}

#[test]
fn nothing_larger_than_the_output_limit_is_ever_written() {
    let cfg = config(json!({}));
    let (block, pass) = (route(&cfg, "/x"), route(&cfg, "/pass/x"));
    // 100 records (1.1 KB as received: over the 1000-byte cap).
    assert!(matches!(
        decide::finish(&cfg, &block, &job(&[]), acme(&cfg), &growing(100), false, true),
        Finished::Block(d, Cause::TooLarge) if d.status == 502
    ));
    // 80 records: 881 bytes in, 3.2 KB masked (within 4000): written.
    match decide::finish(
        &cfg,
        &block,
        &job(&[]),
        acme(&cfg),
        &growing(80),
        false,
        true,
    ) {
        Finished::Write(b, _) => assert!(b.len() > 3000 && b.len() <= 4000, "{}", b.len()),
        other => panic!("{other:?}"),
    }
    // Through gzip, 400 records decode to 4.4 KB: over the decompression limit.
    let gz = gzip(&growing(400));
    assert!(matches!(
        decide::finish(
            &cfg,
            &block,
            &job(&[Coding::Gzip]),
            acme(&cfg),
            &gz,
            false,
            true
        ),
        Finished::Block(_, Cause::DecompressionLimit)
    ));
    // 300 records decode to 3.3 KB (allowed) and mask to 12 KB: over the output limit.
    let gz = gzip(&growing(300));
    for r in [&block, &pass] {
        assert!(matches!(
            decide::finish(&cfg, r, &job(&[Coding::Gzip]), acme(&cfg), &gz, false, true),
            Finished::Block(_, Cause::OutputTooLarge)
        ));
    }
    // Identity-coded, too big once masked: blocked, or passed as received where configured.
    let tight = config(json!({"max_output_bytes": 1000}));
    let (tb, tp) = (route(&tight, "/x"), route(&tight, "/pass/x"));
    let body = growing(80);
    assert!(matches!(
        decide::finish(&tight, &tb, &job(&[]), acme(&tight), &body, false, true),
        Finished::Block(_, Cause::OutputTooLarge)
    ));
    assert_eq!(
        decide::finish(&tight, &tp, &job(&[]), acme(&tight), &body, false, true),
        Finished::PassUnmaskable(Cause::OutputTooLarge)
    );
    // Egress: 413 for both size causes.
    let egress = decide::route_for(&tight, "POST", "/out/x")
        .unwrap()
        .1
        .clone();
    assert!(matches!(
        decide::finish(&tight, &egress, &job(&[]), acme(&tight), &body, false, false),
        Finished::Block(d, Cause::OutputTooLarge) if d.status == 413
    ));
    // A body that masks to its own size is always writable (the limit is at least the cap).
    assert!(matches!(
        decide::finish(&tight, &tb, &job(&[]), NOBODY, &filler(1000), false, true),
        Finished::Write(b, _) if b.len() == 1000
    ));
    // Shadow mode writes nothing and only reports the block.
    assert!(matches!(
        decide::finish(&tight, &tb, &job(&[]), acme(&tight), &body, true, true),
        Finished::Block(_, Cause::OutputTooLarge)
    ));
}

#[test]
fn a_response_is_held_only_while_it_may_still_be_refused() {
    let cfg = config(json!({}));
    let json_plan = |codings: Vec<Coding>| {
        BodyPlan::Mask(Job {
            kind: Kind::Json,
            charset: None,
            codings,
        })
    };
    let key = cfg.keys.for_tenant(Some("acme"));
    let (block, pass, plain) = (
        route(&cfg, "/x"),
        route(&cfg, "/pass/x"),
        route(&cfg, "/plain/x"),
    );
    assert!(decide::needs_hold(&cfg, &block, &json_plan(vec![]), key));
    // A passing route refuses nothing, so big bodies stream past the hold's buffer...
    assert!(!decide::needs_hold(&cfg, &pass, &json_plan(vec![]), key));
    assert!(!decide::needs_hold(&cfg, &plain, &json_plan(vec![]), None));
    // ...unless a coding is undone, or it tokenizes for a tenant without a key.
    assert!(decide::needs_hold(
        &cfg,
        &pass,
        &json_plan(vec![Coding::Gzip]),
        key
    ));
    assert!(decide::needs_hold(&cfg, &pass, &json_plan(vec![]), None));
    assert!(!decide::needs_hold(&cfg, &block, &BodyPlan::Pass, key));
}
