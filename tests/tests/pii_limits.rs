//! pii at and past every size limit, against real Envoy: bodies as received (`max_body_bytes`),
//! decoded (`decompression.max_bytes`), grown by masking (`max_output_bytes`), responses and
//! egress requests, routes that block and routes that pass, and schema's response contracts
//! (which buffer responses too). Each outcome is a masked body or a clean refusal, and each is
//! followed by proof that Envoy is alive, serves the next request, and that no VM trapped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_tests::harness::{self, demo_token, Gateway, GatewayOptions};
use portcullis_tests::http::{self, Request, Response};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::sync::OnceLock;

const BASE: &str = "customers:read";
const MIB: usize = 1 << 20;

/// The demo gateway, plus an enforced response contract on globex's `filler` fixture, where
/// pii passes what it cannot mask (so the body reaches schema's own buffering).
fn demo() -> Option<&'static Gateway> {
    static G: OnceLock<Option<Gateway>> = OnceLock::new();
    G.get_or_init(|| {
        let mut policies = harness::demo_policies();
        let mut pass = policies.pii["routes"][0].clone();
        pass["name"] = json!("filler-pass");
        pass["match"] = json!({"path": "/api/v1/tenants/globex/fixtures/filler"});
        pass["on_unmaskable"] = json!("pass");
        policies.pii["routes"]
            .as_array_mut()
            .unwrap()
            .insert(0, pass);
        policies.schema["routes"].as_array_mut().unwrap().insert(
            0,
            json!({"name": "filler-contract",
                   "match": {"methods": ["GET"], "path": "/api/v1/tenants/globex/fixtures/filler"},
                   "response": {"schema": {"type": "object"}, "mode": "enforce"}}),
        );
        Gateway::start(GatewayOptions {
            policies,
            ..GatewayOptions::default()
        })
    })
    .as_ref()
}

/// `max_output_bytes` at its smallest (1 MiB, the body cap), so the listener's buffer limit
/// is rendered at 2 MiB: what the issue's probes met. Globex's routes pass unmaskable bodies.
fn tight() -> Option<&'static Gateway> {
    static G: OnceLock<Option<Gateway>> = OnceLock::new();
    G.get_or_init(|| {
        let mut policies = harness::demo_policies();
        policies.pii["max_output_bytes"] = json!(MIB);
        let mut pass = policies.pii["routes"][0].clone();
        pass["name"] = json!("globex-pass");
        pass["match"] = json!({"prefix": "/api/v1/tenants/globex/"});
        pass["on_unmaskable"] = json!("pass");
        policies.pii["routes"]
            .as_array_mut()
            .unwrap()
            .insert(0, pass);
        // What `portcullis render` gives the listener: twice the 1 MiB body cap.
        assert_eq!(policies.connection_buffer_bytes(), 2 * MIB);
        Gateway::start(GatewayOptions {
            policies,
            ..GatewayOptions::default()
        })
    })
    .as_ref()
}

macro_rules! gateway {
    ($g:expr) => {
        match $g {
            Some(g) => g,
            None => return,
        }
    };
}

fn get(g: &Gateway, tenant: &str, fixture: &str) -> Response {
    let r = Request::get(&format!("/api/v1/tenants/{tenant}/fixtures/{fixture}"))
        .bearer(&demo_token(tenant, BASE));
    http::send(g.addr, &r).unwrap_or_else(|e| {
        panic!(
            "{fixture}: no answer from Envoy ({e}); log:\n{}",
            g.log_tail()
        )
    })
}

/// Envoy answers, masks the next request, and no VM has trapped or crashed.
fn assert_alive(g: &Gateway) {
    let r = http::send(g.addr, &Request::get("/healthz")).expect("Envoy is alive");
    assert_eq!(r.status, 200);
    let r = get(g, "acme", "customers");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.json()["customers"][0]["ssn"], "***-**-6780");
    let log = g.log();
    for sign in [
        "panicked",
        "invalid context_id",
        "Segmentation fault",
        "Backtrace",
        "RuntimeError",
    ] {
        assert!(
            !log.contains(sign),
            "`{sign}` in Envoy's log:\n{}",
            g.log_tail()
        );
    }
}

fn assert_refused(r: &Response, status: u16, cause: &str) {
    assert_eq!(r.status, status, "{}", r.body_str());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{cause}: {}",
        r.body_str()
    );
    let p = r.json();
    assert_eq!(p["reason"], "unmaskable_body", "{p}");
    assert_eq!(p["cause"], cause, "{p}");
    assert!(!r.body_str().contains("123-45-6789"));
}

/// The filler fixture masked: its length kept, the SSN masked, nothing compressed.
fn assert_masked_filler(r: &Response, len: usize) {
    assert_eq!(r.status, 200, "{}", &r.body_str()[..r.body.len().min(300)]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body.len(), len);
    assert!(r.body.starts_with(br#"{"ssn":"***-**-6789","pad":""#));
}

#[test]
fn bodies_decoded_up_to_the_decompression_limit_are_masked() {
    let g = gateway!(demo());
    let _log = g.log_on_failure();
    // ~225 KB of gzip that decodes to 3 MiB: once a crash of the whole gateway.
    for (size, encoding) in [(3 * MIB, "gzip"), (3 * MIB, "br"), (8 * MIB, "gzip")] {
        let r = get(
            g,
            "acme",
            &format!("filler?bytes={size}&pad=words&encoding={encoding}"),
        );
        assert_masked_filler(&r, size);
        assert_alive(g);
    }
}

#[test]
fn bodies_decoding_past_the_decompression_limit_fail_closed() {
    let g = gateway!(demo());
    let _log = g.log_on_failure();
    for chunked in ["0", "1"] {
        let r = get(
            g,
            "acme",
            &format!(
                "filler?bytes={}&pad=words&encoding=gzip&chunked={chunked}",
                8 * MIB + 1
            ),
        );
        assert_refused(&r, 502, "decompression_limit");
        assert_alive(g);
    }
}

#[test]
fn bodies_as_received_are_capped_before_envoy_buffers_them() {
    let g = gateway!(demo());
    let _log = g.log_on_failure();
    assert_masked_filler(&get(g, "acme", &format!("filler?bytes={MIB}")), MIB);
    // Just over the cap, far over it, and past the listener's own buffer limit (8 MiB), with a
    // declared length (refused from the headers) and chunked (refused while buffering).
    for size in [MIB + 1, 3 * MIB, 20 * MIB] {
        for chunked in ["0", "1"] {
            let r = get(g, "acme", &format!("filler?bytes={size}&chunked={chunked}"));
            assert_refused(&r, 502, "too_large");
            assert_alive(g);
        }
    }
}

#[test]
fn bodies_that_grow_when_masked_are_written_within_the_output_limit() {
    let g = gateway!(demo());
    let _log = g.log_on_failure();
    // 660 KB of records whose values grow about 3.6 times when tokenized: over the 2 MiB the
    // listener used to have, within the 8 MiB `max_output_bytes` of the demo.
    let r = get(g, "acme", "grow?bytes=660000");
    assert_eq!(r.status, 200, "{}", &r.body_str()[..300.min(r.body.len())]);
    assert!(r.body.len() > 2 * MIB, "{}", r.body.len());
    let v: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    assert!(v
        .iter()
        .all(|x| x["iban"].as_str().is_some_and(|t| t.starts_with("tok_"))));
    assert_alive(g);
}

#[test]
fn bodies_growing_past_the_output_limit_fail_closed_without_touching_envoys_buffer() {
    let g = gateway!(tight());
    let _log = g.log_on_failure();
    // The issue's probe: 660 KB that masks to 2.4 MB, past both `max_output_bytes` (1 MiB)
    // and the listener's buffer limit (2 MiB). Refused before anything is written.
    for q in ["grow?bytes=660000", "grow?bytes=660000&chunked=1"] {
        assert_refused(&get(g, "acme", q), 502, "output_too_large");
        assert_alive(g);
    }
    // Decoded to 3 MiB (within the decompression limit, past the output limit).
    let r = get(
        g,
        "acme",
        &format!("filler?bytes={}&pad=words&encoding=gzip", 3 * MIB),
    );
    assert_refused(&r, 502, "output_too_large");
    assert_alive(g);
    // Within the output limit: masked.
    let r = get(g, "acme", "grow?bytes=250000");
    assert_eq!(r.status, 200);
    assert!(
        r.body.len() > 850_000 && r.body.len() <= MIB,
        "{}",
        r.body.len()
    );
    assert!(g
        .stat("wasmcustom.portcullis.pii.blocked.output_too_large")
        .is_some_and(|n| n >= 3));
}

#[test]
fn a_route_that_passes_unmaskable_bodies_streams_them_past_every_buffer() {
    let g = gateway!(tight());
    let _log = g.log_on_failure();
    // 20 MB, ten times the listener's buffer: not held anywhere, passed as configured.
    for chunked in ["0", "1"] {
        let r = get(
            g,
            "globex",
            &format!("filler?bytes={}&chunked={chunked}", 20_000_000),
        );
        assert_eq!(r.status, 200, "{}", &r.body_str()[..r.body.len().min(300)]);
        assert_eq!(r.body.len(), 20_000_000);
        assert_alive(g);
    }
    // Growing past the output limit: the body as received, unmasked, as configured.
    let r = get(g, "globex", "grow?bytes=660000");
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(br#"[{"iban":0}"#));
    assert!(g
        .stat("wasmcustom.portcullis.pii.passed_unmaskable.output_too_large")
        .is_some_and(|n| n >= 1));
    // A compressed body whose coding was undone cannot be passed intact: still refused.
    let r = get(
        g,
        "globex",
        &format!("filler?bytes={}&pad=words&encoding=gzip", 3 * MIB),
    );
    assert_refused(&r, 502, "output_too_large");
    assert_alive(g);
}

#[test]
fn response_contracts_refuse_oversized_responses_cleanly() {
    let g = gateway!(demo());
    let _log = g.log_on_failure();
    for chunked in ["0", "1"] {
        let r = get(
            g,
            "globex",
            &format!("filler?bytes={}&chunked={chunked}", 20 * MIB),
        );
        assert_eq!(r.status, 502, "{}", &r.body_str()[..r.body.len().min(300)]);
        assert_eq!(r.json()["reason"], "response_contract_violation");
        assert_alive(g);
    }
}

#[test]
fn egress_bodies_that_cannot_be_masked_within_the_limits_never_leave() {
    let mut policies = harness::demo_policies();
    policies.pii_egress["max_output_bytes"] = json!(MIB);
    let g = &gateway!(Gateway::start(GatewayOptions {
        policies,
        template: "egress.yaml.tmpl",
        ..GatewayOptions::default()
    }));
    let _log = g.log_on_failure();
    let sync = |n: usize, chunked: bool| {
        let mut body = b"[".to_vec();
        while body.len() < n {
            body.extend_from_slice(br#"{"email":"a@b.co"},"#);
        }
        body.pop();
        body.push(b']');
        let id = harness::test_id("egress-size");
        let mut req = Request::post("/crm/v1/sync/contacts", body)
            .header("content-type", "application/json")
            .header("x-test-id", &id);
        if chunked {
            // Many chunks in many reads: the read that crosses pii's cap must reach pii (and
            // not Envoy's own bare 413 first), however the network splits the body.
            req = req.paced(64 << 10);
        }
        (g.send(&req), g.upstream_saw(&id))
    };
    for chunked in [false, true] {
        // Grows from 18 to 39 bytes a record: 400 KB leave as ~870 KB of tokens.
        let (r, seen) = sync(400_000, chunked);
        assert_eq!(r.status, 202, "{}", r.body_str());
        let seen = seen.expect("the masked sync reached the CRM");
        assert!(!seen["body"].as_str().unwrap().contains("a@b.co"));
        // 600 KB would leave as 1.3 MB, over `max_output_bytes`: refused, nothing sent.
        let (r, seen) = sync(600_000, chunked);
        assert_refused(&r, 413, "output_too_large");
        assert!(seen.is_none());
        // Over the body cap as received.
        let (r, seen) = sync(MIB + 100, chunked);
        assert_refused(&r, 413, "too_large");
        assert!(seen.is_none());
    }
    let r = g.send(
        &Request::post("/crm/v1/sync/contacts", r#"{"ssn":"123-45-6789"}"#)
            .header("content-type", "application/json"),
    );
    assert_eq!(r.status, 202);
    let log = g.log();
    assert!(!log.contains("panicked") && !log.contains("Segmentation fault"));
}

/// Sends raw request bytes on a new connection (`connection: close`) and returns every byte of
/// the answer: header values that are not UTF-8 cannot go through the string-based client.
fn raw_exchange(g: &Gateway, request: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(g.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn header_values_that_are_not_utf8_are_masked_byte_for_byte_without_a_trap() {
    let g = gateway!(demo());
    let _log = g.log_on_failure();
    let token = demo_token("acme", BASE);
    let out = raw_exchange(
        g,
        format!(
            "GET /api/v1/tenants/acme/fixtures/latin1-headers HTTP/1.1\r\nhost: x\r\n\
             authorization: Bearer {token}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // Masked, and the byte that is not UTF-8 is still the byte the upstream sent.
    assert!(
        contains(&out, b"x-note: caf\xe9 ***@acme.example.com\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(contains(&out, b"x-plain: \xff\xfe\r\n"));
    assert!(!contains(&out, b"ada@"));
    assert_alive(g);
}

#[test]
fn egress_request_headers_that_are_not_utf8_are_masked_without_a_trap() {
    let g = &gateway!(Gateway::start(GatewayOptions {
        template: "egress.yaml.tmpl",
        ..GatewayOptions::default()
    }));
    let _log = g.log_on_failure();
    let id = harness::test_id("egress-latin1");
    let body = r#"{"name":"Ada"}"#;
    let mut req = format!(
        "POST /crm/v1/sync/contacts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nx-test-id: {id}\r\nconnection: close\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(b"x-sync-note: caf\xe9 ssn 123-45-6789\r\n\r\n");
    req.extend_from_slice(body.as_bytes());
    let out = raw_exchange(g, &req);
    assert!(
        out.starts_with(b"HTTP/1.1 202"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let seen = g.upstream_saw(&id).expect("the sync reached the CRM");
    let note = seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kv| kv[0] == "x-sync-note")
        .and_then(|kv| kv[1].as_str().map(String::from))
        .unwrap();
    assert_eq!(
        note, "caf\u{FFFD} ssn [REDACTED]",
        "the CRM's recorder reads bytes lossily"
    );
    let log = g.log();
    assert!(
        !log.contains("panicked") && !log.contains("Segmentation fault"),
        "{}",
        g.log_tail()
    );
}
