//! The host calls one allowed request makes through ratelimit (per IP) → authn (cached token) →
//! ratelimit (per identity), counted by the fake host. In Envoy each one crosses from the VM into
//! the host, and one that returns data calls back into the VM to allocate: 0.04–0.45 µs for a call
//! that hands data in, 1.2–1.5 µs for one that returns data, on the bench machine
//! (`tests/bench/hostcalls.sh`); together as much as the filters' own work. The
//! budget is pinned so that a call added to the request path is a decision, not an accident:
//! if this fails after a deliberate change, update the table and say why in the commit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis_authn::Authn;
use portcullis_core::fake::{Edge, Gateway, Instance, Process, Request, Response};
use portcullis_ratelimit::RateLimit;
use std::collections::BTreeMap;
use std::time::Duration;

const KEY: [u8; 32] = [0x42; 32];
const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "api";

fn authn_config() -> Vec<u8> {
    let k = URL_SAFE_NO_PAD.encode(KEY);
    format!(
        r#"{{"mode": "enforce",
  "providers": [{{"name": "idp", "issuer": "{ISSUER}", "audiences": ["{AUDIENCE}"],
    "algorithms": ["HS256"], "jwks": {{"keys": [{{"kty": "oct", "k": "{k}"}}]}},
    "claims": {{"tenant": "tenant"}}}}],
  "routes": [{{"name": "list", "match": {{"methods": ["GET"], "template": "/t/{{tenant}}/customers"}},
     "require": {{"scopes": {{"all_of": ["customers:read"]}}, "tenant_param": "tenant"}}}}]}}"#
    )
    .into_bytes()
}

const PER_IP: &str = r#"{"stat_prefix": "ratelimit_ip", "headers": "none",
  "limits": [{"name": "per-ip", "key": "ip", "rate": {"burst": 1000, "refill": 1000}}]}"#;

const PER_IDENTITY: &str = r#"{"stat_prefix": "ratelimit", "headers": "draft",
  "limits": [
    {"name": "tenant", "key": "tenant", "rate": {"burst": 1000, "refill": 1000},
     "route_costs": [{"match": {"methods": ["POST"], "template": "/t/{tenant}/export"}, "cost": 10}]},
    {"name": "app", "key": "app", "rate": {"burst": 1000, "refill": 1000}}
  ]}"#;

fn token(now_secs: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"u1","tenant":"acme","client_id":"app1","scope":"customers:read","exp":{}}}"#,
        now_secs + 3600
    );
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let sig = hmac_sha256::HMAC::mac(input.as_bytes(), KEY);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn chain(per_identity: &str) -> Gateway {
    Gateway::new(
        vec![
            Instance::new::<RateLimit>("ratelimit_ip", PER_IP.as_bytes().to_vec()),
            Instance::new::<Authn>("authn", authn_config()),
            Instance::new::<RateLimit>("ratelimit", per_identity.as_bytes().to_vec()),
        ],
        1,
        Edge::default(),
        Process::default(),
    )
    .unwrap()
}

/// The host calls of one allowed request, after the first (which verifies the token, draws
/// the secrets and creates the buckets).
fn calls_of_one_request(gw: &Gateway, req: &Request) -> BTreeMap<String, u64> {
    for _ in 0..2 {
        gw.process.advance(Duration::from_millis(10));
        let ex = gw.send(0, req, &|_| Response::json(200, "[]"));
        assert_eq!(ex.response.status, 200, "{:?}", ex.decided_by);
    }
    gw.process.count_host_calls();
    gw.process.advance(Duration::from_millis(10));
    let ex = gw.send(0, req, &|_| Response::json(200, "[]"));
    assert_eq!(ex.response.status, 200, "{:?}", ex.decided_by);
    gw.process.host_calls()
}

fn table(rows: &[(&str, u64)]) -> BTreeMap<String, u64> {
    rows.iter().map(|(k, n)| ((*k).to_string(), *n)).collect()
}

#[test]
fn a_cached_request_makes_only_the_host_calls_its_decisions_need() {
    let gw = chain(PER_IDENTITY);
    let now = gw.process.now() / 1_000_000_000;
    let req = Request::get("/t/acme/customers")
        .header("authorization", &format!("Bearer {}", token(now)))
        .header("accept", "*/*");
    let got = calls_of_one_request(&gw, &req);
    let want = table(&[
        // Per IP: the clock, the client address, its bucket. No identity, method or path:
        // no limit of this instance looks at them.
        ("ratelimit_ip: now", 1),
        ("ratelimit_ip: property source.address", 1),
        ("ratelimit_ip: shared_get", 1),
        ("ratelimit_ip: shared_set", 1),
        ("ratelimit_ip: increment_metric", 1), // the limit's `allowed` counter
        // authn: every header once (identity headers are a family of names, credentials are
        // counted), the clock, two counters, the identity for the chain, the identity headers
        // upstream, and the token removed. No peer certificate: the token is not bound to one.
        ("authn: request_headers", 1),
        ("authn: now", 1),
        ("authn: increment_metric", 2),
        ("authn: set_property portcullis.identity", 1),
        ("authn: set_request_header authorization", 1),
        ("authn: set_request_header x-portcullis-scopes", 1),
        ("authn: set_request_header x-portcullis-subject", 1),
        ("authn: set_request_header x-portcullis-tenant", 1),
        ("authn: set_request_header x-portcullis-app", 1),
        // Per identity: both limits key by the verified identity, so the client address is
        // never asked for; the route costs need the method and path, one read of the map.
        ("ratelimit: now", 1),
        ("ratelimit: property portcullis.identity", 1),
        ("ratelimit: request_headers", 1),
        ("ratelimit: shared_get", 2),
        ("ratelimit: shared_set", 2),
        ("ratelimit: increment_metric", 2),
        ("ratelimit: add_response_header ratelimit-policy", 1),
        ("ratelimit: add_response_header ratelimit", 1),
    ]);
    assert_eq!(got, want, "host calls of one request changed");
}

#[test]
fn limits_without_routes_read_neither_method_nor_path() {
    let gw = chain(
        r#"{"stat_prefix": "ratelimit", "headers": "none",
        "limits": [{"name": "tenant", "key": "tenant", "rate": {"burst": 1000, "refill": 1000}}]}"#,
    );
    let now = gw.process.now() / 1_000_000_000;
    let req = Request::get("/t/acme/customers")
        .header("authorization", &format!("Bearer {}", token(now)));
    let got = calls_of_one_request(&gw, &req);
    let mine: Vec<_> = got
        .keys()
        .filter(|k| k.starts_with("ratelimit: "))
        .cloned()
        .collect();
    assert_eq!(
        mine,
        [
            "ratelimit: increment_metric",
            "ratelimit: now",
            "ratelimit: property portcullis.identity",
            "ratelimit: shared_get",
            "ratelimit: shared_set"
        ]
    );
}

#[test]
fn an_anonymous_caller_of_an_identity_limit_is_keyed_by_its_address() {
    // Without a verified identity the tenant limit falls back to the client address: then,
    // and only then, the identity limiter asks for it.
    let gw = Gateway::new(
        vec![Instance::new::<RateLimit>(
            "ratelimit",
            br#"{"stat_prefix": "ratelimit", "headers": "none",
            "limits": [{"name": "tenant", "key": "tenant", "rate": {"burst": 1000, "refill": 1000}}]}"#
                .to_vec(),
        )],
        1,
        Edge::default(),
        Process::default(),
    )
    .unwrap();
    let got = calls_of_one_request(&gw, &Request::get("/t/acme/customers"));
    assert_eq!(
        got.get("ratelimit: property source.address"),
        Some(&1),
        "{got:?}"
    );
}
