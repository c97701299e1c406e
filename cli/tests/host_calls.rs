//! The host calls of the whole gateway chain (ratelimit per IP → authn → ratelimit → pii →
//! schema, as `policies/` configures it) for the requests `make bench` drives through it,
//! counted by the fake host. In Envoy each one crosses from the VM into the host, and one that
//! returns data calls back into the VM to allocate: 0.8–1.4 µs for a read, 0.1–0.3 µs for a
//! write on the bench machine (`tests/bench/hostcalls.sh`), a large share of what the chain
//! costs over its no-op floor. The budget is pinned per filter so that a call added anywhere in
//! the chain is a decision, not an accident: if this fails after a deliberate change, update
//! the table and say why in the commit. (C2's part is pinned call by call in
//! filters/authn/tests/host_calls.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use portcullis_cli::chain::Compiled;
use portcullis_cli::policy;
use portcullis_cli::token::{self, SigningAlg, TokenSpec};
use portcullis_core::fake::{Gateway, Process, Request, Response};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

fn gateway() -> Gateway {
    let policies = policy::load(Path::new("../policies")).unwrap();
    let gw = Compiled::new(&policies)
        .unwrap()
        .gateway(Process::default())
        .unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    gw.process.set_now(u64::try_from(now.as_nanos()).unwrap());
    gw
}

fn bearer(scopes: &[&str]) -> String {
    let pem = std::fs::read_to_string("../policies/demo-keys/demo-rs256.key.pem").unwrap();
    let spec = TokenSpec {
        issuer: "https://idp.demo.portcullis.local".into(),
        audience: "portcullis-demo-api".into(),
        subject: "demo-user".into(),
        tenant: Some("acme".into()),
        app: None,
        scopes: scopes.iter().map(|s| (*s).to_string()).collect(),
        roles: vec![],
        extra: vec![],
        ttl_secs: 600,
    };
    format!(
        "Bearer {}",
        token::mint(&spec, SigningAlg::RS256, &pem, "demo-rs256").unwrap()
    )
}

/// A page of customer records with personal data in every one (what pii masks).
fn customers() -> String {
    let one = r#"{"id":"c-1001","tenant":"acme","name":"Ada Lovelace","email":"ada@acme.example.com",
        "phone":"+15555550123","ssn":"123-45-6789","card_number":"4111111111111111",
        "iban":"GB82WEST12345698765432","consent":{"marketing":false,"analytics":true},
        "created_at":1700000000000,"owner":"rep-7"}"#;
    format!("[{}]", [one; 4].join(","))
}

/// Per filter instance, the host calls of `req` after the same request has been served once
/// (the token verified and cached, the buckets made): `instance: kind [name]` → count.
fn calls(req: &Request, answer: &Response, status: u16) -> BTreeMap<String, u64> {
    let gw = gateway();
    let upstream = |_: &_| answer.clone();
    let first = gw.send(0, req, &upstream);
    assert_eq!(
        first.response.status,
        status,
        "{:?} {:?}",
        first.decided_by,
        first.reason()
    );
    gw.process.count_host_calls();
    let ex = gw.send(0, req, &upstream);
    assert_eq!(
        ex.response.status,
        status,
        "{:?} {:?}",
        ex.decided_by,
        ex.reason()
    );
    gw.process.host_calls()
}

fn table(rows: &[(&str, u64)]) -> BTreeMap<String, u64> {
    rows.iter().map(|(k, n)| ((*k).to_string(), *n)).collect()
}

/// The demo upstream's answer: JSON with its length, as Envoy hands it to the filters.
fn upstream_json(status: u16, body: &str) -> Response {
    let mut r = Response::json(status, body);
    r.headers
        .push(("content-length".into(), body.len().to_string()));
    r
}

/// What every filter of the chain asks of the host before the upstream: the same for a read
/// and a write, apart from the rate limiter's method and path (route costs) and schema's work.
fn common(rows: &mut Vec<(&'static str, u64)>) {
    rows.extend([
        // Per IP: the clock, the client address, its bucket, its `allowed` counter.
        ("ratelimit_ip: now", 1),
        ("ratelimit_ip: property source.address", 1),
        ("ratelimit_ip: shared_get", 1),
        ("ratelimit_ip: shared_set", 1),
        ("ratelimit_ip: increment_metric", 1),
        // authn: every header once, the clock, two counters, the identity for the chain and
        // for the upstream, the token removed. The demo token names no app: no x-portcullis-app.
        ("authn: request_headers", 1),
        ("authn: now", 1),
        ("authn: increment_metric", 2),
        ("authn: set_property portcullis.identity", 1),
        ("authn: set_request_header authorization", 1),
        ("authn: set_request_header x-portcullis-scopes", 1),
        ("authn: set_request_header x-portcullis-subject", 1),
        ("authn: set_request_header x-portcullis-tenant", 1),
        // Per identity: the tenant limit keys by the identity; the app limit, with no app in
        // the token, by the client address; route costs need the method and path (one read of the map). Both the
        // standard and the `x-` headers (`headers: both`).
        ("ratelimit: now", 1),
        ("ratelimit: property portcullis.identity", 1),
        ("ratelimit: property source.address", 1),
        ("ratelimit: request_headers", 1),
        ("ratelimit: shared_get", 2),
        ("ratelimit: shared_set", 2),
        ("ratelimit: increment_metric", 2),
        ("ratelimit: add_response_header ratelimit", 1),
        ("ratelimit: add_response_header ratelimit-policy", 1),
        ("ratelimit: add_response_header x-ratelimit-limit", 1),
        ("ratelimit: add_response_header x-ratelimit-remaining", 1),
        ("ratelimit: add_response_header x-ratelimit-reset", 1),
        // schema: the route and the headers it names, in one read of the map (no clock: no
        // denial summary is pending).
        ("schema: request_headers", 1),
    ]);
}

/// pii on a route whose responses it masks: every request header (any may carry personal data
/// on an egress route), the identity (scopes), an uncompressed whole response asked for
/// (`accept-encoding`; no `range` or `if-range` to remove), every response header, its stale
/// length removed and ranges refused (no digest or `etag` to remove), the hold for the buffer
/// filter, the body read.
fn masked_response(rows: &mut Vec<(&'static str, u64)>) {
    rows.extend([
        ("pii: request_headers", 1),
        ("pii: property portcullis.identity", 1),
        ("pii: set_request_header accept-encoding", 1),
        ("pii: response_headers", 1),
        ("pii: set_response_header content-length", 1),
        ("pii: set_response_header accept-ranges", 1),
        ("pii: add_response_header x-portcullis-hold-response", 1),
        ("pii: response_body", 1),
    ]);
}

#[test]
fn a_masked_read_makes_only_the_host_calls_its_decisions_need() {
    let req = Request::get("/api/v1/tenants/acme/customers")
        .header("authorization", &bearer(&["customers:read"]))
        .header("accept", "application/json");
    let got = calls(&req, &upstream_json(200, &customers()), 200);
    let mut want = Vec::new();
    common(&mut want);
    masked_response(&mut want);
    // The body written back, counters by rule and route.
    want.extend([
        ("pii: replace_response_body", 1),
        ("pii: increment_metric", 7),
    ]);
    assert_eq!(got, table(&want), "host calls of one masked read changed");
}

#[test]
fn a_validated_write_makes_only_the_host_calls_its_decisions_need() {
    let mut req = Request::get("/api/v1/tenants/acme/customers")
        .header("authorization", &bearer(&["customers:write"]))
        .header("content-type", "application/json")
        .header("idempotency-key", "req-12345678");
    req.method = "POST".into();
    req.body = Some(br#"{"name":"Ada Lovelace","email":"ada@acme.example.com"}"#.to_vec());
    let got = calls(&req, &upstream_json(201, r#"{"id":"c-1"}"#), 201);
    let mut want = Vec::new();
    common(&mut want);
    want.extend([
        // schema: the body (the idempotency key's format and the media type were in the
        // map), two counters.
        ("schema: request_body", 1),
        ("schema: increment_metric", 2),
        // pii: no request body rules on this route; the response record holds nothing to
        // mask, so its body is not written back.
        ("pii: increment_metric", 1),
    ]);
    masked_response(&mut want);
    assert_eq!(
        got,
        table(&want),
        "host calls of one validated write changed"
    );
}
