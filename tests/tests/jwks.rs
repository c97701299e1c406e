//! Remote JWKS against real Envoy: keys fetched through the `portcullis_jwks` cluster from a
//! local identity provider (the demo upstream's `/.well-known/jwks.json`, whose document,
//! status and delay the tests set), shared by every worker through shared data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::token::{sign_raw, SigningAlg};
use portcullis_tests::harness::{self, claims, demo_key, rs256, Gateway, GatewayOptions};
use portcullis_tests::http::{self, Request, Response};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LIST: &str = "/api/v1/tenants/acme/customers";

fn demo_jwks() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(harness::repo_root().join("policies/demo-keys/demo-jwks.json"))
            .unwrap(),
    )
    .unwrap()
}

fn jwks_with(kids: &[&str]) -> Value {
    let keys: Vec<Value> = demo_jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap()))
        .cloned()
        .collect();
    json!({ "keys": keys })
}

fn gateway(remote: Value) -> Option<Gateway> {
    let mut policies = harness::demo_policies();
    let p = &mut policies.authn["providers"][0];
    p.as_object_mut().unwrap().remove("jwks");
    p["jwks_uri"] = remote;
    Gateway::start(GatewayOptions {
        policies,
        ..GatewayOptions::default()
    })
}

fn put(g: &Gateway, path: &str, body: &Value) {
    let mut r = Request::new("PUT", path);
    r.body = Some(body.to_string().into_bytes());
    assert_eq!(http::send(g.upstream_addr, &r).unwrap().status, 204);
}

fn fetches(g: &Gateway) -> usize {
    g.upstream_requests()
        .iter()
        .filter(|r| r["target"] == "/.well-known/jwks.json")
        .count()
}

fn es256_token() -> String {
    sign_raw(
        SigningAlg::ES256,
        &demo_key("demo-es256.key.pem"),
        &json!({"alg": "ES256", "kid": "demo-es256", "typ": "JWT"}),
        &claims("acme", "customers:read"),
    )
    .unwrap()
}

fn token_with_kid(kid: &str) -> String {
    sign_raw(
        SigningAlg::RS256,
        &demo_key("demo-rs256.key.pem"),
        &json!({"alg": "RS256", "kid": kid, "typ": "JWT"}),
        &claims("acme", "customers:read"),
    )
    .unwrap()
}

fn get(g: &Gateway, token: &str) -> Response {
    g.send(&Request::get(LIST).bearer(token))
}

fn reason(r: &Response) -> String {
    if r.status == 200 {
        "ok".into()
    } else {
        r.json()["reason"].as_str().unwrap_or("?").to_string()
    }
}

/// Polls until `f` is true (or fails after `secs`).
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn keys_are_fetched_once_for_all_workers_and_rotate_without_restart() {
    let Some(g) = gateway(
        json!({"cluster": "portcullis_jwks", "url": "http://idp.local/.well-known/jwks.json",
        "refresh_seconds": 60, "timeout_ms": 1000, "max_staleness_seconds": 120, "unknown_kid_cooldown_seconds": 2}),
    ) else {
        return;
    };
    let _log = g.log_on_failure();
    let rs = rs256(&claims("acme", "customers:read"));

    // Before the first successful fetch: 503 with Retry-After, not 401.
    let r = get(&g, &rs);
    assert_eq!(
        (r.status, reason(&r)),
        (503, "jwks_unavailable".into()),
        "{}",
        r.body_str()
    );
    assert!(r.header("retry-after").is_some());

    // Publish the RSA key (plus a weak RSA-1024 key and an encryption key, refused and counted).
    let mut doc = jwks_with(&["demo-rs256"]);
    // A 1024-bit modulus: under the 2048-bit floor.
    let weak_n = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xC3u8; 128])
    };
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "RSA", "kid": "weak", "n": weak_n, "e": "AQAB"}));
    doc["keys"].as_array_mut().unwrap().push(
        json!({"kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256",
        "x": demo_jwks()["keys"][1]["x"], "y": demo_jwks()["keys"][1]["y"]}),
    );
    put(&g, "/__admin/jwks", &doc);
    eventually(20, "first fetch serves RS256 tokens", || {
        get(&g, &rs).status == 200
    });
    let rejected = g.stat("wasmcustom.portcullis.authn.jwks.demo.keys_rejected");
    let jwks_stats: Vec<String> = g
        .prometheus()
        .lines()
        .filter(|l| l.contains("jwks"))
        .map(str::to_string)
        .collect();
    assert!(
        rejected.unwrap_or(0) >= 2,
        "rejected={rejected:?}\n{}",
        jwks_stats.join("\n")
    );
    assert_eq!(
        g.stat("wasmcustom.portcullis.authn.jwks.demo.keys_loaded"),
        Some(1)
    );

    // Rotation: a new key is published; a token naming it triggers one refetch (after the
    // cooldown), no restart, no 60 s refresh wait.
    let es = es256_token();
    assert_eq!(reason(&get(&g, &es)), "unknown_key");
    put(
        &g,
        "/__admin/jwks",
        &jwks_with(&["demo-rs256", "demo-es256"]),
    );
    eventually(10, "the new key is picked up after an unknown kid", || {
        get(&g, &es).status == 200
    });

    // A flood of random kids costs at most one fetch per cooldown (2 s), across both workers.
    std::thread::sleep(Duration::from_secs(2));
    let before = fetches(&g);
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        let r = get(&g, &token_with_kid(&format!("random-{n}")));
        assert_eq!(reason(&r), "unknown_key");
        n += 1;
        // Paced under the demo's per-IP limit (burst 300, 150/s): on a fast machine an unpaced
        // loop reaches it and is answered `rate_limited` before authn runs.
        std::thread::sleep(Duration::from_millis(4));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let during = fetches(&g) - before;
    assert!(during <= 2, "{n} random kids caused {during} fetches");
    assert!(n >= 20, "only {n} requests");

    // Removal: the old key is withdrawn; once refetched, tokens signed with it are refused even
    // though one was cached.
    put(&g, "/__admin/jwks", &jwks_with(&["demo-es256"]));
    std::thread::sleep(Duration::from_secs(2));
    eventually(10, "the removed key stops verifying", || {
        let _ = get(&g, &token_with_kid("nudge-a-refetch"));
        reason(&get(&g, &rs)) == "unknown_key"
    });
    assert_eq!(get(&g, &es).status, 200);
    assert!(fetches(&g) <= 12, "fetches: {}", fetches(&g));
}

#[test]
fn an_outage_serves_last_good_keys_until_max_staleness_and_slow_answers_time_out() {
    let Some(g) = gateway(
        json!({"cluster": "portcullis_jwks", "url": "http://idp.local/.well-known/jwks.json",
        "refresh_seconds": 1, "timeout_ms": 500, "max_staleness_seconds": 4, "unknown_kid_cooldown_seconds": 1}),
    ) else {
        return;
    };
    let _log = g.log_on_failure();
    let rs = rs256(&claims("acme", "customers:read"));
    put(&g, "/__admin/jwks", &jwks_with(&["demo-rs256"]));
    eventually(20, "first fetch", || get(&g, &rs).status == 200);

    // The IdP fails: last-good keys keep serving (cached token or not) …
    put(&g, "/__admin/jwks-behavior", &json!({"status": 500}));
    let failures = g
        .stat("wasmcustom.portcullis.authn.jwks.demo.fetch_failure")
        .unwrap_or(0);
    assert_eq!(get(&g, &rs).status, 200);
    assert_eq!(get(&g, &token_with_kid("demo-rs256")).status, 200);
    // … until they are older than max_staleness: then 503, never 401.
    eventually(15, "stale keys stop serving", || {
        let r = get(&g, &rs);
        r.status == 503 && reason(&r) == "jwks_unavailable"
    });
    assert!(
        g.stat("wasmcustom.portcullis.authn.jwks.demo.fetch_failure")
            .unwrap_or(0)
            > failures
    );

    // A slow IdP (2 s, timeout 0.5 s) is a failure too.
    put(&g, "/__admin/jwks-behavior", &json!({"delay_ms": 2000}));
    let failures = g
        .stat("wasmcustom.portcullis.authn.jwks.demo.fetch_failure")
        .unwrap_or(0);
    eventually(15, "slow fetches time out", || {
        g.stat("wasmcustom.portcullis.authn.jwks.demo.fetch_failure")
            .unwrap_or(0)
            > failures
    });
    assert_eq!(reason(&get(&g, &rs)), "jwks_unavailable");

    // Recovery.
    put(&g, "/__admin/jwks-behavior", &json!({}));
    eventually(40, "recovery after the outage", || {
        get(&g, &rs).status == 200
    });
    assert!(g
        .stat("wasmcustom.portcullis.authn.jwks.demo.staleness_seconds")
        .is_some());
}
