//! Profiling driver: authn (cached token) + ratelimit (per IP, then per identity) — the chain
//! `make bench` measures as C2 — run by the filters' own callbacks on the core's fake host for
//! N requests, so an instruction profiler sees what one request costs and where it goes.
//!
//! `cargo build --release -p portcullis-authn --example profile`, then run it under
//! `valgrind --tool=callgrind` (see tests/bench/README.md, "Profiling"). Only the N measured
//! requests are collected (`--collect-atstart=no --toggle-collect=*measured_requests*`): the
//! configuration, the first (verifying) request and the warm-up are left out. It prints the
//! shared-data operations per request as the fake host counted them.
//!
//! `profile N uncached [ALG]` measures instead what `make bench`'s per-algorithm rows do: authn
//! alone, `cache.max_entries: 0` (every request verifies its token), the bench's policy with one
//! provider holding one key of ALG (HS256, RS256, PS256, ES256 or EdDSA; HS256 by default) and
//! a token shaped as `portcullis bench-keys` signs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a driver: a failure is a crash

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis_authn::Authn;
use portcullis_core::fake::{Edge, Gateway, Instance, Process, Request, Response};
use portcullis_ratelimit::RateLimit;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HS_KEY: [u8; 32] = [0x42; 32];
const ISSUER: &str = "https://idp.demo.portcullis.local";
const AUDIENCE: &str = "portcullis-demo-api";

/// authn as policies/authn.yaml configures it for `list-customers` (an HS256 key stands in for
/// the demo RSA key: after the first request the token is served from the cache either way).
fn authn_config() -> Vec<u8> {
    let k = URL_SAFE_NO_PAD.encode(HS_KEY);
    format!(
        r#"{{"mode": "enforce",
  "providers": [{{"name": "demo", "issuer": "{ISSUER}", "audiences": ["{AUDIENCE}"],
    "algorithms": ["HS256"], "jwks": {{"keys": [{{"kty": "oct", "k": "{k}"}}]}},
    "clock_skew_seconds": 60, "claims": {{"tenant": "tenant", "roles": "roles", "tier": "tier"}}}}],
  "routes": [
    {{"name": "health", "match": {{"methods": ["GET", "HEAD"], "path": "/healthz"}}, "allow": "anonymous"}},
    {{"name": "list-customers", "match": {{"methods": ["GET"], "template": "/api/v1/tenants/{{tenant}}/customers"}},
     "require": {{"scopes": {{"all_of": ["customers:read"]}}, "tenant_param": "tenant"}}}},
    {{"name": "get-customer", "match": {{"methods": ["GET"], "template": "/api/v1/tenants/{{tenant}}/customers/{{id}}"}},
     "require": {{"scopes": {{"all_of": ["customers:read"]}}, "tenant_param": "tenant"}}}}
  ]}}"#
    )
    .into_bytes()
}

/// policies/ratelimit.yaml (three limits; `tenant` and `app` apply to a GET).
const RATELIMIT: &str = r#"{"stat_prefix": "ratelimit", "headers": "draft_and_legacy", "failure_mode": "allow",
  "tenant_tiers": {"globex": "sandbox"},
  "limits": [
    {"name": "tenant", "key": "tenant", "rate": {"burst": 200, "refill": 100, "period_seconds": 1},
     "tiers": {"sandbox": {"rate": {"burst": 20, "refill": 5, "period_seconds": 1}},
               "trial": {"rate": {"burst": 5, "refill": 1, "period_seconds": 60}}},
     "route_costs": [{"match": {"methods": ["POST"], "template": "/api/v1/tenants/{tenant}/reports/export"}, "cost": 10}]},
    {"name": "app", "key": "app", "rate": {"burst": 100, "refill": 50, "period_seconds": 1}},
    {"name": "exports", "key": "tenant",
     "routes": [{"methods": ["POST"], "template": "/api/v1/tenants/{tenant}/reports/export"}],
     "quota": {"limit": 50, "window": "day"}}
  ]}"#;

/// policies/ratelimit-ip.yaml.
const RATELIMIT_IP: &str = r#"{"stat_prefix": "ratelimit_ip", "headers": "none",
  "limits": [{"name": "per-ip", "key": "ip", "rate": {"burst": 300, "refill": 150, "period_seconds": 1}}]}"#;

fn token(now_secs: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"user-1","tenant":"acme","client_id":"bench","scope":"customers:read","iat":{now_secs},"exp":{}}}"#,
        now_secs + 86_400
    );
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let sig = hmac_sha256::HMAC::mac(input.as_bytes(), HS_KEY);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The bench's authn policy (policies/authn.yaml as `portcullis render` inlines it, a shorter
/// catalog) with `providers` in their place and the token cache off.
fn uncached_config(provider: &str) -> Vec<u8> {
    format!(
        r#"{{"mode": "enforce", "cache": {{"max_entries": 0}}, "providers": [{provider}],
  "api_keys": {{"header": "x-api-key", "table": "UENBSwEAAAACAAAAAgAAAAgAAABwAAAAEyGr8by-p5RejOAhC84qiR-YAIh26FGarsQRpeo6uNFJAAAAXwAAAAEAAADLTgvcqOkCdX39ITC-C0SkrAEHARltsSZJkipaLxQT7AAAAAAXAAAAAAAAAAQAAAAIAAAAKQAAAC8AAAABAAAAOQAAACkAAAD_____AQAAADkAAAAVAGRlbW8taW52ZW50b3J5LXdpZGdldBAAaW52ZW50b3J5LXdpZGdldAQAYWNtZQgAc3RhbmRhcmQOAGN1c3RvbWVyczpyZWFkFABkZW1vLWxlZ2FjeS1leHBvcnRlcg8AbGVnYWN5LWV4cG9ydGVy"}},
  "catalog": {{"require_app": false, "apps": [
    {{"data_classes": ["*"], "id": "crm-sync", "owner": "team-crm", "scopes": ["*"], "status": "active"}},
    {{"data_classes": ["contact"], "id": "inventory-widget", "owner": "team-inventory", "scopes": ["customers:read"], "status": "active", "tier": "standard"}},
    {{"data_classes": [], "id": "legacy-exporter", "owner": "team-reports", "scopes": ["customers:read"], "status": "suspended", "tier": "standard"}},
    {{"data_classes": ["*"], "id": "bench", "owner": "platform", "scopes": ["*"], "status": "active"}}]}},
  "dpop": {{"algorithms": ["ES256", "EdDSA", "RS256", "PS256"], "external_origin": "http://127.0.0.1:10000", "iat_window_seconds": 60}},
  "routes": [
    {{"allow": "anonymous", "essential": true, "match": {{"methods": ["GET", "HEAD"], "path": "/healthz"}}, "name": "health"}},
    {{"match": {{"methods": ["GET"], "template": "/api/v1/tenants/{{tenant}}/customers"}}, "name": "list-customers", "require": {{"providers": ["demo", "api-keys"], "scopes": {{"all_of": ["customers:read"]}}, "tenant_param": "tenant"}}}},
    {{"essential": true, "match": {{"methods": ["GET"], "template": "/api/v1/tenants/{{tenant}}/customers/{{id}}"}}, "name": "get-customer", "require": {{"scopes": {{"all_of": ["customers:read"]}}, "tenant_param": "tenant"}}}},
    {{"match": {{"methods": ["GET", "HEAD"], "template": "/api/v1/tenants/{{tenant}}/fixtures/{{name}}"}}, "name": "fixtures", "require": {{"scopes": {{"all_of": ["customers:read"]}}, "tenant_param": "tenant"}}}},
    {{"match": {{"methods": ["GET"], "template": "/api/v1/tenants/{{tenant}}/customers/{{id}}/audit"}}, "name": "customer-audit", "require": {{"scopes": {{"all_of": ["customers:read:admin"]}}, "tenant_param": "tenant"}}}},
    {{"match": {{"methods": ["POST"], "template": "/api/v1/tenants/{{tenant}}/customers"}}, "name": "create-customer", "require": {{"scopes": {{"all_of": ["customers:write"]}}, "tenant_param": "tenant"}}}},
    {{"match": {{"methods": ["POST"], "template": "/api/v1/tenants/{{tenant}}/reports/export"}}, "name": "export-report", "require": {{"roles": {{"any_of": ["analyst", "admin"]}}, "scopes": {{"any_of": ["reports:export", "reports:admin"]}}, "tenant_param": "tenant"}}}},
    {{"match": {{"methods": ["GET"], "template": "/api/v1/tenants/{{tenant}}/legacy/{{name}}"}}, "name": "legacy-reports", "require": {{"scopes": {{"all_of": ["customers:read"]}}, "tenant_param": "tenant"}}}},
    {{"match": {{"methods": ["GET"], "template": "/api/v1/regions/{{region}}/tenants/{{tenant}}/customers"}}, "name": "regional-customers", "require": {{"claims": {{"region": "{{region}}"}}, "scopes": {{"all_of": ["customers:read"]}}, "tenant_param": "tenant"}}}}]}}"#
    )
    .into_bytes()
}

/// One provider with a fresh key of `alg`, and a token it signed with the claims
/// `portcullis bench-keys` gives its tokens (the wall clock's `iat`, `nbf` and `exp`).
fn bench_key_and_token(alg: &str) -> (String, String) {
    use jwt_simple::prelude::*;
    let mut custom = serde_json::Map::new();
    custom.insert("tenant".into(), "acme".into());
    custom.insert("scope".into(), "customers:read".into());
    custom.insert("client_id".into(), "bench".into());
    let claims = Claims::with_custom_claims(custom, jwt_simple::prelude::Duration::from_hours(24))
        .with_issuer(ISSUER)
        .with_audience(AUDIENCE)
        .with_subject("bench-user");
    let b = |x: &[u8]| URL_SAFE_NO_PAD.encode(x);
    let kid = format!("bench-{}", alg.to_ascii_lowercase());
    let (jwk, token) = match alg {
        "RS256" => {
            let k = RS256KeyPair::generate(2048).unwrap().with_key_id(&kid);
            let c = k.public_key().to_components();
            let jwk = format!(r#"{{"kty": "RSA", "n": "{}", "e": "{}""#, b(&c.n), b(&c.e));
            (jwk, k.sign(claims).unwrap())
        }
        "PS256" => {
            let k = PS256KeyPair::generate(2048).unwrap().with_key_id(&kid);
            let c = k.public_key().to_components();
            let jwk = format!(r#"{{"kty": "RSA", "n": "{}", "e": "{}""#, b(&c.n), b(&c.e));
            (jwk, k.sign(claims).unwrap())
        }
        "ES256" => {
            let k = ES256KeyPair::generate().with_key_id(&kid);
            let pt = k.public_key().public_key().to_bytes_uncompressed();
            let jwk = format!(
                r#"{{"kty": "EC", "crv": "P-256", "x": "{}", "y": "{}""#,
                b(&pt[1..33]),
                b(&pt[33..])
            );
            (jwk, k.sign(claims).unwrap())
        }
        "EdDSA" => {
            let k = Ed25519KeyPair::generate().with_key_id(&kid);
            let jwk = format!(
                r#"{{"kty": "OKP", "crv": "Ed25519", "x": "{}""#,
                b(&k.public_key().to_bytes())
            );
            (jwk, k.sign(claims).unwrap())
        }
        "HS256" => {
            let k = HS256Key::from_bytes(&HS_KEY).with_key_id(&kid);
            let jwk = format!(r#"{{"kty": "oct", "k": "{}""#, b(&HS_KEY));
            (jwk, k.authenticate(claims).unwrap())
        }
        other => panic!("unknown algorithm {other}: HS256, RS256, PS256, ES256 or EdDSA"),
    };
    let provider = format!(
        r#"{{"name": "demo", "issuer": "{ISSUER}", "audiences": ["{AUDIENCE}"], "algorithms": ["{alg}"],
  "jwks": {{"keys": [{jwk}, "kid": "{kid}", "alg": "{alg}"}}]}}}}"#
    );
    (provider, token)
}

/// The uncached mode: authn alone, every request verifying its token.
fn uncached(n: u64, alg: &str) {
    let (provider, token) = bench_key_and_token(alg);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let gw = Gateway::new(
        vec![Instance::new::<Authn>("authn", uncached_config(&provider))],
        1,
        Edge::default(),
        Process::at(u64::try_from(now.as_nanos()).unwrap()),
    )
    .expect("configuration");
    let req = Request::get("/api/v1/tenants/acme/customers")
        .header("authorization", &format!("Bearer {token}"))
        .header("user-agent", "wrk")
        .header("accept", "*/*");
    let first = gw.send(0, &req, &|_| Response::json(200, "[]"));
    assert_eq!(first.response.status, 200, "{:?}", first.decided_by);
    assert_eq!(measured_requests(&gw, &req, 10), 10);
    let ok = measured_requests(&gw, &req, n);
    assert_eq!(ok, n, "every measured request is allowed");
    println!(
        "{n} {alg} requests, all allowed; cache hits {}, misses {}",
        gw.process.metric("portcullis.authn.cache.hit").unwrap_or(0),
        gw.process
            .metric("portcullis.authn.cache.miss")
            .unwrap_or(0),
    );
}

/// The requests callgrind collects (kept out of line so `--toggle-collect` can name it).
#[inline(never)]
fn measured_requests(gw: &Gateway, req: &Request, n: u64) -> u64 {
    let mut ok = 0;
    for _ in 0..n {
        // 20 ms apart: 50 requests/s stays within every limit, so each one is allowed.
        gw.process.advance(Duration::from_millis(20));
        let ex = gw.send(0, req, &|_| Response::json(200, "[]"));
        ok += u64::from(ex.response.status == 200);
    }
    ok
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(1_000, |a| a.parse().expect("N: a number of requests"));
    if std::env::args().nth(2).as_deref() == Some("uncached") {
        let alg = std::env::args().nth(3).unwrap_or_else(|| "HS256".into());
        return uncached(n, &alg);
    }
    let gw = Gateway::new(
        vec![
            Instance::new::<RateLimit>("ratelimit_ip", RATELIMIT_IP.as_bytes().to_vec()),
            Instance::new::<Authn>("authn", authn_config()),
            Instance::new::<RateLimit>("ratelimit", RATELIMIT.as_bytes().to_vec()),
        ],
        1,
        Edge::default(),
        Process::default(),
    )
    .expect("configuration");
    let now_secs = gw.process.now() / 1_000_000_000;
    let req = Request::get("/api/v1/tenants/acme/customers")
        .header("authorization", &format!("Bearer {}", token(now_secs)))
        .header("user-agent", "wrk")
        .header("accept", "*/*");
    // The first request verifies the signature and fills the cache; a few more warm up.
    let first = gw.send(0, &req, &|_| Response::json(200, "[]"));
    assert_eq!(first.response.status, 200, "{:?}", first.decided_by);
    let warm = measured_requests(&gw, &req, 10);
    assert_eq!(warm, 10);
    let (reads, writes) = (gw.process.shared.reads(), gw.process.shared.writes());
    let ok = measured_requests(&gw, &req, n);
    assert_eq!(ok, n, "every measured request is allowed");
    let per = |x: u64| x as f64 / n as f64;
    println!(
        "{n} requests, all allowed; per request: {:.2} shared-data reads, {:.2} writes; cache hits {}",
        per(gw.process.shared.reads() - reads),
        per(gw.process.shared.writes() - writes),
        gw.process.metric("portcullis.authn.cache.hit").unwrap_or(0),
    );
}
