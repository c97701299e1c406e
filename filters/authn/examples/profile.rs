//! Profiling driver: authn (cached token) + ratelimit (per IP, then per identity) — the chain
//! `make bench` measures as C2 — run by the filters' own callbacks on the core's fake host for
//! N requests, so an instruction profiler sees what one request costs and where it goes.
//!
//! `cargo build --release -p portcullis-authn --example profile`, then run it under
//! `valgrind --tool=callgrind` (see tests/bench/README.md, "Profiling"). Only the N measured
//! requests are collected (`--collect-atstart=no --toggle-collect=*measured_requests*`): the
//! configuration, the first (verifying) request and the warm-up are left out. It prints the
//! shared-data operations per request as the fake host counted them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a driver: a failure is a crash

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis_authn::Authn;
use portcullis_core::fake::{Edge, Gateway, Instance, Process, Request, Response};
use portcullis_ratelimit::RateLimit;
use std::time::Duration;

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
