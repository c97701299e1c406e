//! The audit trail against real Envoy: one JSON record per request in the access log, built
//! from the filters' audit fields (who decided, why, tenant, app, limit, masked counts, status,
//! duration), callers linked by keyed hashes and never named; tokens, keys and personal values
//! never written. And denials under a flood: a handful of summary lines in Envoy's application
//! log, not one per request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_core::audit::HashKey;
use portcullis_tests::harness::{
    self, claims, rs256, Gateway, GatewayOptions, TempDir, AUDIT_TEST_KEY, DEMO_ISSUER,
};
use portcullis_tests::http::{Conn, Request, Response};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// A token of the demo provider for `subject` in `tenant`.
fn token(subject: &str, tenant: &str, scope: &str) -> String {
    let mut c = claims(tenant, scope);
    c["sub"] = json!(subject);
    rs256(&c)
}

/// The audit records written so far, once there are at least `n` (Envoy flushes its access
/// log about once a second).
fn records(path: &Path, n: usize) -> (String, Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() >= n || Instant::now() > deadline {
            let parsed = lines
                .iter()
                .map(|l| {
                    serde_json::from_str::<Value>(l)
                        .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}"))
                })
                .collect();
            return (text, parsed);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A field that Envoy writes as `null` (or leaves out) when no filter set it.
fn absent(v: &Value) -> bool {
    v.is_null() || v == "-"
}

fn denied_as(rec: &Value, r: &Response) {
    let body = r.json();
    assert_eq!(rec["decision"], "deny", "{rec}");
    assert_eq!(rec["decided_by"], body["filter"], "{rec}");
    assert_eq!(rec["reason"], body["reason"], "{rec}");
}

#[test]
fn one_record_per_request_links_callers_by_hash_and_names_no_secret() {
    if harness::envoy_binary().is_none() {
        return;
    }
    let dir = TempDir::new("audit");
    let log = dir.0.join("audit.log");
    let mut policies = harness::demo_policies();
    // Tenant `rl` gets a bucket of two, so the third request is limited.
    policies.ratelimit = json!({
        "stat_prefix": "ratelimit",
        "headers": "draft_and_legacy",
        "tenant_tiers": {"rl": "tiny"},
        "limits": [{"name": "tenant", "key": "tenant", "rate": {"burst": 1000, "refill": 1, "period_seconds": 3600},
                    "tiers": {"tiny": {"rate": {"burst": 2, "refill": 1, "period_seconds": 3600}}}}]
    });
    // One worker: records are written in the order the requests completed.
    let Some(g) = Gateway::start(GatewayOptions {
        policies,
        concurrency: 1,
        audit_log: Some(log.clone()),
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _l = g.log_on_failure();
    let key = HashKey::from_hex(AUDIT_TEST_KEY).unwrap();
    let list = "/api/v1/tenants/acme/customers";
    let alice = token("audit-alice@example.com", "acme", "customers:read");
    let bob = token("audit-bob@example.com", "acme", "customers:read");
    let api_key =
        std::fs::read_to_string(harness::repo_root().join("policies/demo-keys/demo-api-key.txt"))
            .unwrap()
            .trim()
            .to_string();
    let rl = token("audit-carol@example.com", "rl", "customers:read");
    let writer = token("audit-dave@example.com", "acme", "customers:write");

    let mut sent: Vec<(&str, Response)> = vec![
        ("alice", g.send(&Request::get(list).bearer(&alice))),
        ("alice again", g.send(&Request::get(list).bearer(&alice))),
        ("bob", g.send(&Request::get(list).bearer(&bob))),
        ("no token", g.send(&Request::get(list))),
        (
            "wrong tenant",
            g.send(&Request::get("/api/v1/tenants/globex/customers").bearer(&alice)),
        ),
        (
            "api key",
            g.send(&Request::get(list).header("x-api-key", &api_key)),
        ),
    ];
    for _ in 0..3 {
        sent.push((
            "rl",
            g.send(&Request::get("/api/v1/tenants/rl/customers").bearer(&rl)),
        ));
    }
    sent.push((
        "invalid body",
        g.send(
            &Request::post(list, br#"{"name": 5}"#.to_vec())
                .bearer(&writer)
                .header("content-type", "application/json")
                .header("idempotency-key", "req-12345678"),
        ),
    ));

    let (text, recs) = records(&log, sent.len());
    assert_eq!(recs.len(), sent.len(), "one record per request:\n{text}");

    // Every record: Envoy's view of the exchange.
    for ((what, r), rec) in sent.iter().zip(&recs) {
        assert_eq!(rec["status"], r.status, "{what}: {rec}");
        assert!(rec["duration_ms"].is_number(), "{what}: {rec}");
        assert!(
            rec["time"].as_str().unwrap().ends_with('Z'),
            "{what}: {rec}"
        );
        assert!(rec.get("path").is_none(), "paths are not logged: {rec}");
    }
    let by = |what: &str| -> Vec<&Value> {
        sent.iter()
            .zip(&recs)
            .filter(|((w, _), _)| *w == what)
            .map(|(_, rec)| rec)
            .collect()
    };
    let (a1, a2, b) = (by("alice")[0], by("alice again")[0], by("bob")[0]);

    // Allowed, masked: identity in clear where it is not personal, hashed where it is.
    assert_eq!(sent[0].1.status, 200);
    for rec in [a1, a2, b] {
        assert_eq!(rec["decision"], "allow", "{rec}");
        assert!(
            absent(&rec["decided_by"]) && absent(&rec["reason"]),
            "{rec}"
        );
        assert_eq!(rec["route"], "list-customers");
        assert_eq!(rec["method"], "GET");
        assert_eq!(rec["auth"], "jwt");
        assert_eq!(rec["tenant"], "acme");
        assert_eq!(rec["app"], "crm-sync");
        assert_eq!(rec["upstream_status"], "200", "{rec}");
        assert_eq!(rec["limits"]["ratelimit"]["limit"], "tenant", "{rec}");
        assert_eq!(rec["limits"]["ratelimit_ip"]["limit"], "per-ip", "{rec}");
        let masked = rec["masked"].as_str().unwrap();
        assert!(
            masked.contains("email:") && masked.contains("ssn:"),
            "masked counts by rule: {rec}"
        );
    }
    let remaining = |rec: &Value| -> u64 {
        rec["limits"]["ratelimit"]["remaining"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(remaining(a1) > remaining(a2), "{a1} {a2}");
    // The subject links across requests and differs between subjects; it is the keyed hash.
    assert_eq!(a1["subject"], a2["subject"]);
    assert_ne!(a1["subject"], b["subject"]);
    assert_eq!(
        a1["subject"],
        key.hash("sub", DEMO_ISSUER, "audit-alice@example.com")
    );
    assert_eq!(a1["client"], b["client"], "same app, same client hash");
    assert_eq!(a1["ip"], key.hash("ip", "", "127.0.0.1"));

    let none = by("no token")[0];
    assert_eq!(sent[3].1.status, 401);
    denied_as(none, &sent[3].1);
    assert_eq!(none["reason"], "missing_token");
    assert_eq!(none["route"], "list-customers");
    assert!(
        absent(&none["tenant"]) && absent(&none["subject"]),
        "{none}"
    );
    assert!(absent(&none["upstream_status"]), "{none}");

    let wrong = by("wrong tenant")[0];
    assert_eq!(sent[4].1.status, 403);
    denied_as(wrong, &sent[4].1);
    assert_eq!(wrong["reason"], "tenant_boundary");

    let k = by("api key")[0];
    assert_eq!(sent[5].1.status, 200, "{}", sent[5].1.body_str());
    assert_eq!(k["auth"], "api_key");
    assert_eq!(k["app"], "inventory-widget");
    assert_eq!(
        k["client"],
        key.hash("api_key", "", "demo-inventory-widget")
    );

    let limited = by("rl");
    let last = sent.iter().rev().find(|(w, _)| *w == "rl").unwrap();
    assert_eq!(last.1.status, 429, "{}", last.1.body_str());
    denied_as(limited[2], &last.1);
    assert_eq!(limited[2]["decided_by"], "ratelimit");
    assert_eq!(limited[2]["limits"]["ratelimit"]["limit"], "tenant");
    assert_eq!(limited[2]["limits"]["ratelimit"]["remaining"], "0");
    assert_eq!(limited[2]["tenant"], "rl");
    assert_eq!(limited[1]["limits"]["ratelimit"]["remaining"], "0");
    assert_eq!(limited[0]["limits"]["ratelimit"]["remaining"], "1");

    let invalid = by("invalid body")[0];
    let r = &sent.last().unwrap().1;
    assert!(r.status == 400 || r.status == 422, "{}", r.body_str());
    denied_as(invalid, r);
    assert_eq!(invalid["decided_by"], "schema");
    assert_eq!(invalid["route"], "create-customer");

    // Never in the log: credentials, subjects in clear, personal values, the hash key.
    let mut secrets = vec![
        api_key.clone(),
        AUDIT_TEST_KEY.to_string(),
        "audit-alice".into(),
        "audit-bob".into(),
        "audit-carol".into(),
        "audit-dave".into(),
        "ada@acme.example.com".into(),
        "+15555550123".into(),
        "123-45-6780".into(),
        "4111111111111111".into(),
        "GB82WEST12345698765432".into(),
    ];
    for t in [&alice, &bob, &rl, &writer] {
        secrets.push(t.clone());
        // Each part of a token on its own (the signature, the claims).
        secrets.extend(t.split('.').map(str::to_string));
    }
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "{s} in the audit log:\n{text}");
    }
    let env_log = g.log();
    for s in &secrets {
        assert!(
            !env_log.contains(s.as_str()),
            "{s} in Envoy's application log"
        );
    }
}

/// Sends `req` over a kept-alive connection, reconnecting when Envoy closed it.
fn send_on(conn: &mut Option<Conn>, addr: std::net::SocketAddr, req: &Request) -> Response {
    for _ in 0..3 {
        if conn.is_none() {
            *conn = Conn::connect(addr).ok();
        }
        if let Some(c) = conn.as_mut() {
            match c.send(req) {
                Ok(r) => {
                    if r.header("connection") == Some("close") {
                        *conn = None;
                    }
                    return r;
                }
                Err(_) => *conn = None,
            }
        }
    }
    panic!("no answer from the gateway");
}

#[test]
fn a_flood_of_denials_writes_summary_lines_not_one_line_each() {
    if harness::envoy_binary().is_none() {
        return;
    }
    // What an operator runs: wasm at info.
    let Some(g) = Gateway::start(GatewayOptions {
        concurrency: 2,
        wasm_log_level: "info",
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _l = g.log_on_failure();
    let before = g.log().lines().count();
    let n = 2_000;
    let mut conn = None;
    let req = Request::get("/api/v1/tenants/acme/customers");
    let mut denied = 0;
    for _ in 0..n {
        let r = send_on(&mut conn, g.addr, &req);
        if r.status == 401 || r.status == 429 {
            denied += 1;
        }
    }
    assert_eq!(denied, n, "every request was denied");
    // Counters still count every one.
    let counted = g
        .stat("wasmcustom.portcullis.authn.denied.missing_token")
        .unwrap_or(0)
        + g.stat("wasmcustom.portcullis.ratelimit_ip.denied.rate_limited")
            .unwrap_or(0);
    assert!(counted >= n as u64, "counted {counted}");
    std::thread::sleep(Duration::from_millis(500));
    let log = g.log();
    let new: Vec<&str> = log.lines().skip(before).collect();
    assert!(
        new.len() <= 20,
        "{} application-log lines for {n} denials:\n{}",
        new.len(),
        new.join("\n")
    );
    assert!(
        new.iter()
            .any(|l| l.contains("portcullis authn:") && l.contains("missing_token")),
        "the denials are summarised:\n{}",
        new.join("\n")
    );
    assert!(
        !log.contains("deny route="),
        "no per-request denial line at info"
    );
}
