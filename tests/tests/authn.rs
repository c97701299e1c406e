//! authn against real Envoy: the built `dist/authn.wasm` in stock Envoy (2 workers) in front of
//! the demo upstream. Each test asserts only what a client, the upstream or `/stats` can observe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::token::{sign_raw, SigningAlg};
use portcullis_tests::harness::{
    self, claims, demo_key as key, now, rs256, Gateway, GatewayOptions, Started,
};
use portcullis_tests::http::{Request, Response};
use serde_json::{json, Value};
use std::sync::OnceLock;

/// One gateway shared by the tests of this file (each test tags its requests to find them).
fn gw() -> Option<&'static Gateway> {
    static G: OnceLock<Option<Gateway>> = OnceLock::new();
    G.get_or_init(|| Gateway::start(GatewayOptions::default()))
        .as_ref()
}

macro_rules! gateway {
    () => {
        match gw() {
            Some(g) => (g, g.log_on_failure()),
            None => return,
        }
    };
}

fn es256(claims: &Value) -> String {
    sign_raw(
        SigningAlg::ES256,
        &key("demo-es256.key.pem"),
        &json!({"alg": "ES256", "kid": "demo-es256"}),
        claims,
    )
    .unwrap()
}

fn with_header(header: Value, claims: &Value) -> String {
    sign_raw(
        SigningAlg::RS256,
        &key("demo-rs256.key.pem"),
        &header,
        claims,
    )
    .unwrap()
}

const LIST_ACME: &str = "/api/v1/tenants/acme/customers";

fn get(g: &Gateway, path: &str, token: Option<&str>) -> Response {
    let mut r = Request::get(path);
    if let Some(t) = token {
        r = r.bearer(t);
    }
    g.send(&r)
}

/// Asserts a denial: status, reason (header and problem+json body agree), no token echoed.
fn assert_denied(r: &Response, status: u16, reason: &str, token: Option<&str>) {
    let body = r.body_str();
    assert_eq!(
        r.status, status,
        "want {status} {reason}, got {} {body}",
        r.status
    );
    assert_eq!(r.header("x-portcullis-reason"), Some(reason), "{body}");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let v = r.json();
    assert_eq!(v["reason"], reason);
    assert_eq!(v["status"], status);
    assert_eq!(v["filter"], "authn");
    if let Some(t) = token {
        assert!(
            !body.contains(t) && !body.contains(&t[..t.len().min(40)]),
            "token echoed in body"
        );
        for (_, v) in &r.headers {
            assert!(
                !v.contains(&t[..t.len().min(40)]),
                "token echoed in a header"
            );
        }
    }
    if status == 401 {
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(www.starts_with("Bearer"), "{www}");
        if reason != "missing_token" {
            assert!(www.contains("error=\"invalid_token\""), "{www}");
        }
    }
}

fn header_of(rec: &Value, name: &str) -> Vec<String> {
    rec["headers"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|kv| kv[0] == name)
                .filter_map(|kv| kv[1].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn valid_token_reaches_upstream_with_identity_headers() {
    let (g, _log) = gateway!();
    for token in [
        rs256(&claims("acme", "customers:read")),
        es256(&claims("acme", "customers:read")),
    ] {
        let id = harness::test_id("valid");
        let r = g.send(
            &Request::get(LIST_ACME)
                .bearer(&token)
                .header("x-test-id", &id),
        );
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(r.json()["tenant"], "acme");
        let rec = g.upstream_saw(&id).expect("request reached the upstream");
        assert_eq!(header_of(&rec, "x-portcullis-tenant"), ["acme"]);
        assert_eq!(header_of(&rec, "x-portcullis-subject"), ["user-1"]);
        assert_eq!(header_of(&rec, "x-portcullis-app"), ["crm-sync"]);
        assert_eq!(header_of(&rec, "x-portcullis-scopes"), ["customers:read"]);
        assert!(
            header_of(&rec, "authorization").is_empty(),
            "token is not forwarded by default"
        );
    }
}

#[test]
fn client_forged_identity_headers_are_stripped() {
    let (g, _log) = gateway!();
    let token = rs256(&claims("acme", "customers:read"));
    let forged = |r: Request| {
        r.header("X-Portcullis-Tenant", "globex")
            .header("x-portcullis-scopes", "customers:write admin")
            .header("x-portcullis-subject", "root")
            .header("x-portcullis-app", "evil")
            .header("x-portcullis-admin", "true")
    };
    let id = harness::test_id("forged-auth");
    let r = g.send(&forged(
        Request::get(LIST_ACME)
            .bearer(&token)
            .header("x-test-id", &id),
    ));
    assert_eq!(r.status, 200);
    let rec = g.upstream_saw(&id).unwrap();
    assert_eq!(header_of(&rec, "x-portcullis-tenant"), ["acme"]);
    assert_eq!(header_of(&rec, "x-portcullis-scopes"), ["customers:read"]);
    assert_eq!(header_of(&rec, "x-portcullis-subject"), ["user-1"]);
    assert!(header_of(&rec, "x-portcullis-admin").is_empty());

    let id = harness::test_id("forged-anon");
    let r = g.send(&forged(Request::get("/healthz").header("x-test-id", &id)));
    assert_eq!(r.status, 200);
    let rec = g.upstream_saw(&id).unwrap();
    for h in [
        "x-portcullis-tenant",
        "x-portcullis-scopes",
        "x-portcullis-subject",
        "x-portcullis-app",
        "x-portcullis-admin",
    ] {
        assert!(header_of(&rec, h).is_empty(), "{h} reached the upstream");
    }
}

#[test]
fn anonymous_route_needs_no_token() {
    let (g, _log) = gateway!();
    let r = get(g, "/healthz", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
}

#[test]
fn unmatched_route_is_denied() {
    let (g, _log) = gateway!();
    let token = rs256(&claims("acme", "customers:read customers:write"));
    assert_denied(
        &get(g, "/api/v2/everything", Some(&token)),
        403,
        "route_not_allowed",
        Some(&token),
    );
    assert_denied(&get(g, "/", None), 403, "route_not_allowed", None);
    let r = g.send(&Request::new("DELETE", LIST_ACME).bearer(&token));
    assert_denied(&r, 403, "route_not_allowed", Some(&token));
}

#[test]
fn tenant_boundary_allows_own_tenant_only() {
    let (g, _log) = gateway!();
    let token = rs256(&claims("acme", "customers:read"));
    assert_eq!(get(g, LIST_ACME, Some(&token)).status, 200);
    assert_eq!(
        get(g, "/api/v1/tenants/acme/customers/c-1001", Some(&token)).status,
        200
    );
    let r = get(g, "/api/v1/tenants/globex/customers", Some(&token));
    assert_denied(&r, 403, "tenant_boundary", Some(&token));
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("insufficient_scope"));
}

#[test]
fn path_tricks_cannot_cross_tenants() {
    let (g, _log) = gateway!();
    let token = rs256(&claims("acme", "customers:read"));
    for path in [
        "/api/v1/tenants/acme/../globex/customers",
        "/api/v1/tenants/acme/%2e%2e/globex/customers",
        "/api/v1/tenants/acme/%2E%2E/globex/customers",
        "/api/v1/tenants/acme/.%2e/globex/customers",
        "//api/v1/tenants/globex//customers",
        "/api/v1/tenants/./globex/customers",
        "/api/v1/tenants/%67lobex/customers",
    ] {
        let id = harness::test_id("trick");
        let r = g.send(&Request::get(path).bearer(&token).header("x-test-id", &id));
        assert_denied(&r, 403, "tenant_boundary", Some(&token));
        assert!(g.upstream_saw(&id).is_none(), "{path} reached the upstream");
    }
    for path in [
        "/api/v1/tenants/acme%2f..%2fglobex/customers",
        "/api/v1/tenants/acme%5c..%5cglobex/customers",
        "/api/v1/tenants/ac%00me/customers",
    ] {
        let r = get(g, path, Some(&token));
        assert_denied(&r, 400, "invalid_path", Some(&token));
    }
    // A detour that lands on the caller's own tenant is allowed, and the upstream receives the
    // normalised path that was authorised, not the raw one.
    let id = harness::test_id("detour");
    let r = g.send(
        &Request::get("/api/v1/tenants/globex/../acme//customers?limit=5")
            .bearer(&token)
            .header("x-test-id", &id),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(
        g.upstream_saw(&id).unwrap()["path"],
        "/api/v1/tenants/acme/customers?limit=5"
    );
}

#[test]
fn scopes_match_whole_tokens_only() {
    let (g, _log) = gateway!();
    let read = rs256(&claims("acme", "customers:read"));
    let admin = rs256(&claims("acme", "customers:read:admin"));
    let audit = "/api/v1/tenants/acme/customers/c-1001/audit";
    assert_denied(
        &get(g, audit, Some(&read)),
        403,
        "missing_scope",
        Some(&read),
    );
    assert_denied(
        &get(g, LIST_ACME, Some(&admin)),
        403,
        "missing_scope",
        Some(&admin),
    );
    // The audit route passes authn with the exact scope (the demo upstream has no such page).
    assert_eq!(get(g, audit, Some(&admin)).status, 404);
    // `scp` arrays are read too.
    let mut c = claims("acme", "");
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["customers:read"]);
    assert_eq!(get(g, LIST_ACME, Some(&rs256(&c))).status, 200);
}

#[test]
fn roles_and_claim_bindings_are_enforced() {
    let (g, _log) = gateway!();
    let export = "/api/v1/tenants/acme/reports/export";
    let no_role = rs256(&claims("acme", "reports:export"));
    assert_denied(
        &g.send(&Request::post(export, "{}").bearer(&no_role)),
        403,
        "missing_role",
        Some(&no_role),
    );
    let mut c = claims("acme", "reports:export");
    c["roles"] = json!(["analyst"]);
    assert_eq!(
        g.send(
            &Request::post(export, r#"{"format":"csv"}"#)
                .bearer(&rs256(&c))
                .header("content-type", "application/json")
        )
        .status,
        202
    );

    let mut eu = claims("acme", "customers:read");
    eu["region"] = json!("eu");
    let eu = rs256(&eu);
    assert_denied(
        &get(g, "/api/v1/regions/us/tenants/acme/customers", Some(&eu)),
        403,
        "claim_mismatch",
        Some(&eu),
    );
    // Passes authn (the demo upstream has no regional route, hence 404 from it).
    let r = get(g, "/api/v1/regions/eu/tenants/acme/customers", Some(&eu));
    assert_eq!(r.status, 404);
    assert!(r.header("x-portcullis-reason").is_none());
}

#[test]
fn hostile_and_invalid_tokens_are_rejected_with_the_right_reason() {
    let (g, _log) = gateway!();
    let c = claims("acme", "customers:read");
    let enc = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let mut cases: Vec<(&str, String, u16, &str)> = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        cases.push((
            "alg none",
            format!("{}.{}.", enc(&json!({"alg": alg})), enc(&c)),
            401,
            "unsupported_algorithm",
        ));
    }
    // Key confusion: HS256 keyed with the RSA public key.
    let rsa_pub =
        std::fs::read_to_string(harness::repo_root().join("policies/demo-keys/demo-jwks.json"))
            .unwrap();
    cases.push((
        "hs256 with rsa public key",
        sign_raw(
            SigningAlg::HS256,
            rsa_pub.as_bytes(),
            &json!({"alg": "HS256", "kid": "demo-rs256"}),
            &c,
        )
        .unwrap(),
        401,
        "unsupported_algorithm",
    ));
    // An attacker's own P-256 key, embedded as `jwk` / referenced by `jku`: never used.
    let attacker = {
        use jwt_simple::prelude::*;
        ES256KeyPair::generate().to_pem().unwrap()
    };
    let evil = |h: Value| sign_raw(SigningAlg::ES256, attacker.as_bytes(), &h, &c).unwrap();
    cases.push((
        "embedded jwk",
        evil(json!({"alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}})),
        401,
        "invalid_signature",
    ));
    cases.push((
        "jku elsewhere",
        evil(json!({"alg": "ES256", "kid": "demo-es256", "jku": "https://evil.example/jwks.json"})),
        401,
        "invalid_signature",
    ));
    cases.push((
        "jku with own kid",
        evil(json!({"alg": "ES256", "kid": "evil", "jku": "https://evil.example/jwks.json"})),
        401,
        "unknown_key",
    ));
    cases.push((
        "kid traversal",
        with_header(json!({"alg": "RS256", "kid": "../../../../etc/passwd"}), &c),
        401,
        "unknown_key",
    ));
    cases.push((
        "kid junk",
        with_header(json!({"alg": "RS256", "kid": "x".repeat(1024)}), &c),
        401,
        "unknown_key",
    ));
    cases.push((
        "unknown kid",
        with_header(json!({"alg": "RS256", "kid": "rotated-away"}), &c),
        401,
        "unknown_key",
    ));
    let with = |k: &str, v: Value| {
        let mut x = c.clone();
        x[k] = v;
        x
    };
    let without = |k: &str| {
        let mut x = c.clone();
        x.as_object_mut().unwrap().remove(k);
        x
    };
    cases.push((
        "expired past skew",
        rs256(&with("exp", json!(now() - 60 - 10))),
        401,
        "token_expired",
    ));
    cases.push((
        "nbf in future",
        rs256(&with("nbf", json!(now() + 600))),
        401,
        "token_not_yet_valid",
    ));
    cases.push((
        "iat in future",
        rs256(&with("iat", json!(now() + 600))),
        401,
        "token_not_yet_valid",
    ));
    cases.push(("missing exp", rs256(&without("exp")), 401, "missing_claim"));
    cases.push((
        "wrong iss",
        rs256(&with("iss", json!("https://evil.example"))),
        401,
        "invalid_issuer",
    ));
    cases.push((
        "wrong aud",
        rs256(&with("aud", json!("other-api"))),
        401,
        "invalid_audience",
    ));
    cases.push((
        "aud array without match",
        rs256(&with("aud", json!(["a", "b"]))),
        401,
        "invalid_audience",
    ));
    cases.push((
        "non-numeric exp",
        rs256(&with("exp", json!("tomorrow"))),
        401,
        "malformed_token",
    ));
    cases.push((
        "unknown crit",
        with_header(
            json!({"alg": "RS256", "kid": "demo-rs256", "crit": ["x-custom"], "x-custom": 1}),
            &c,
        ),
        401,
        "invalid_token",
    ));
    cases.push((
        "token over 8 KiB",
        rs256(&with("pad", json!("p".repeat(8 * 1024)))),
        401,
        "token_too_large",
    ));
    cases.push((
        "malformed base64",
        "eyJhbGciOiJSUzI1NiJ9.!!not-base64!!.AAAA".to_string(),
        401,
        "malformed_token",
    ));
    cases.push((
        "two segments",
        "eyJhbGciOiJSUzI1NiJ9.e30".to_string(),
        401,
        "malformed_token",
    ));
    cases.push((
        "four segments",
        format!("{}.x", rs256(&c)),
        401,
        "malformed_token",
    ));
    // ECDSA with r = s = 0.
    let zero_sig = format!(
        "{}.{}.{}",
        enc(&json!({"alg": "ES256", "kid": "demo-es256"})),
        enc(&c),
        {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0u8; 64])
        }
    );
    cases.push(("ecdsa r=s=0", zero_sig, 401, "invalid_signature"));
    // One flipped bit in the header, the payload or the signature.
    let good = rs256(&c);
    let parts: Vec<&str> = good.split('.').collect();
    let flip_json = |seg: &str, from: &str, to: &str| {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let s = String::from_utf8(e.decode(seg).unwrap()).unwrap();
        assert!(s.contains(from));
        e.encode(s.replacen(from, to, 1))
    };
    // 'T' (0x54) -> 'U' (0x55) and '1' (0x31) -> '0' (0x30) are single-bit flips.
    cases.push((
        "bit flip header",
        format!(
            "{}.{}.{}",
            flip_json(parts[0], "JWT", "JWU"),
            parts[1],
            parts[2]
        ),
        401,
        "invalid_signature",
    ));
    cases.push((
        "bit flip payload",
        format!(
            "{}.{}.{}",
            parts[0],
            flip_json(parts[1], "user-1", "user-0"),
            parts[2]
        ),
        401,
        "invalid_signature",
    ));
    let mut sig = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap()
    };
    sig[100] ^= 0x01;
    let sig = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    };
    cases.push((
        "bit flip signature",
        format!("{}.{}.{sig}", parts[0], parts[1]),
        401,
        "invalid_signature",
    ));

    for (name, token, status, reason) in &cases {
        let id = harness::test_id("hostile");
        let r = g.send(
            &Request::get(LIST_ACME)
                .bearer(token)
                .header("x-test-id", &id),
        );
        assert_eq!(
            (r.status, r.header("x-portcullis-reason")),
            (*status, Some(*reason)),
            "case `{name}`: {}",
            r.body_str()
        );
        assert_denied(&r, *status, reason, Some(token));
        assert!(
            g.upstream_saw(&id).is_none(),
            "case `{name}` reached the upstream"
        );
    }
}

#[test]
fn expiry_is_enforced_at_the_skew_boundary() {
    let (g, _log) = gateway!();
    let c = claims("acme", "customers:read");
    let mut inside = c.clone();
    inside["exp"] = json!(now() - 60 + 15); // expired, but within the 60 s skew
    assert_eq!(get(g, LIST_ACME, Some(&rs256(&inside))).status, 200);
    let mut outside = c;
    outside["exp"] = json!(now() - 60 - 2);
    assert_denied(
        &get(g, LIST_ACME, Some(&rs256(&outside))),
        401,
        "token_expired",
        None,
    );
}

#[test]
fn missing_and_duplicate_tokens() {
    let (g, _log) = gateway!();
    assert_denied(&get(g, LIST_ACME, None), 401, "missing_token", None);
    let t = rs256(&claims("acme", "customers:read"));
    let r = g.send(&Request::get(LIST_ACME).bearer(&t).bearer(&t));
    assert_denied(&r, 400, "multiple_tokens", Some(&t));
    assert!(r
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("invalid_request"));
    let r = g
        .send(&Request::get(LIST_ACME).header("authorization", &format!("Bearer {t}, Bearer {t}")));
    assert_denied(&r, 400, "multiple_tokens", Some(&t));
    // The query string is not a token source unless configured.
    assert_denied(
        &get(g, &format!("{LIST_ACME}?access_token={t}"), None),
        401,
        "missing_token",
        None,
    );
}

#[test]
fn repeat_requests_hit_the_verified_token_cache_and_metrics_are_exported() {
    let (g, _log) = gateway!();
    let t = rs256(&claims("acme", "customers:read"));
    let hits_before = g.stat("wasmcustom.portcullis.authn.cache.hit").unwrap_or(0);
    for _ in 0..6 {
        assert_eq!(get(g, LIST_ACME, Some(&t)).status, 200);
    }
    // Two workers: each verifies once at most, every other request is a hit.
    let hits = g.stat("wasmcustom.portcullis.authn.cache.hit").unwrap_or(0) - hits_before;
    assert!(hits >= 4, "cache hits {hits}");
    assert!(g.stat("wasmcustom.portcullis.authn.allowed").unwrap_or(0) >= 6);
    let prom = g.prometheus();
    assert!(
        prom.contains("portcullis_authn_allowed"),
        "prometheus output lacks authn metrics"
    );
    assert!(prom.contains("portcullis_authn_denied_tenant_boundary") || prom.contains("denied"));
}

#[test]
fn a_bad_config_fails_to_load_with_a_clear_log_line() {
    let mut policies = harness::demo_policies();
    policies.authn["routes"][1]["require"]["scopez"] = json!(["customers:read"]);
    let Some(started) = Gateway::try_start(GatewayOptions {
        policies,
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let log = match started {
        Started::Exited(log) => log,
        Started::Ready(g) => {
            // Envoy may stay up with the listener rejected; the request must not pass unchecked.
            let r = get(&g, "/healthz", None);
            assert_ne!(
                r.status, 200,
                "a broken authn config must not let traffic through"
            );
            g.log()
        }
    };
    assert!(
        log.contains("portcullis authn: invalid configuration at `routes[1].require.scopez`"),
        "no clear config error in the log:\n{log}"
    );
}

#[test]
fn json_string_config_is_accepted_too() {
    let opts = GatewayOptions {
        format: portcullis_cli::render::ConfigFormat::Json,
        concurrency: 1,
        ..GatewayOptions::default()
    };
    let Some(g) = Gateway::start(opts) else {
        return;
    };
    let _log = g.log_on_failure();
    let t = es256(&claims("acme", "customers:read"));
    assert_eq!(get(&g, LIST_ACME, Some(&t)).status, 200);
    assert_denied(
        &get(&g, "/api/v1/tenants/globex/customers", Some(&t)),
        403,
        "tenant_boundary",
        Some(&t),
    );
    // The API key table, decoded in place inside the JSON text the VM is handed.
    let key = demo_api_key();
    let r = g.send(&Request::get(LIST_ACME).header("x-api-key", &key));
    assert_eq!(r.status, 200, "{}", r.body_str());
    let r = g.send(&Request::get(LIST_ACME).header("x-api-key", "pcak_nope"));
    assert_eq!(r.status, 401, "{}", r.body_str());
}

/// The DEMO ONLY API key of the `inventory-widget` micro app (digest in policies/authn.yaml).
fn demo_api_key() -> String {
    std::fs::read_to_string(harness::repo_root().join("policies/demo-keys/demo-api-key.txt"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn micro_apps_authenticate_with_an_api_key_that_never_reaches_the_upstream() {
    let (g, _log) = gateway!();
    let key = demo_api_key();
    let id = harness::test_id("apikey");
    let r = g.send(
        &Request::get(LIST_ACME)
            .header("x-api-key", &key)
            .header("x-test-id", &id),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    // The rest of the chain treats it like a token: masked for a caller without pii scopes.
    assert_eq!(r.json()["customers"][0]["ssn"], "***-**-6780");
    let rec = g.upstream_saw(&id).expect("request reached the upstream");
    assert_eq!(header_of(&rec, "x-portcullis-app"), ["inventory-widget"]);
    assert_eq!(header_of(&rec, "x-portcullis-tenant"), ["acme"]);
    assert!(
        header_of(&rec, "x-api-key").is_empty(),
        "the key is a secret: not forwarded"
    );
    // Wrong key, other tenant, a route without `api-keys`, the key in the URL.
    assert_denied(
        &g.send(&Request::get(LIST_ACME).header("x-api-key", "pcak_nope")),
        401,
        "invalid_api_key",
        None,
    );
    assert_denied(
        &g.send(&Request::get("/api/v1/tenants/globex/customers").header("x-api-key", &key)),
        403,
        "tenant_boundary",
        None,
    );
    assert_denied(
        &g.send(&Request::get("/api/v1/tenants/acme/customers/c-1001").header("x-api-key", &key)),
        401,
        "api_key_not_accepted",
        None,
    );
    let r = g.send(&Request::get(&format!("{LIST_ACME}?api_key={key}")));
    assert_denied(&r, 400, "api_key_in_query", None);
    assert!(
        !g.log().contains(&key),
        "the key never appears in Envoy's log"
    );
}

#[test]
fn shadow_mode_runs_every_check_counts_would_be_denials_and_denies_nothing() {
    let mut policies = harness::demo_policies();
    policies.authn["mode"] = json!("shadow");
    // What an operator runs: wasm at info (at debug each would-be denial also gets its line).
    let Some(g) = Gateway::start(GatewayOptions {
        policies,
        wasm_log_level: "info",
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _log = g.log_on_failure();
    // No token, another tenant's token, an expired token: all pass through, each counted.
    let mut expired = claims("acme", "customers:read");
    expired["exp"] = json!(now() - 3600);
    for (token, reason) in [
        (None, "missing_token"),
        (
            Some(rs256(&claims("acme", "customers:read"))),
            "tenant_boundary",
        ),
        (Some(rs256(&expired)), "token_expired"),
    ] {
        let id = harness::test_id("shadow");
        let mut req = Request::get("/api/v1/tenants/globex/customers").header("x-test-id", &id);
        if let Some(t) = &token {
            req = req.bearer(t);
        }
        let r = g.send(&req);
        assert_eq!(
            r.status,
            200,
            "shadow never denies ({reason}): {}",
            r.body_str()
        );
        assert!(g.upstream_saw(&id).is_some());
        // The rest of the chain saw no verified identity: personal data stays masked.
        assert_eq!(r.json()["customers"][0]["ssn"], "***-**-6780");
        assert_eq!(
            g.stat(&format!(
                "wasmcustom.portcullis.authn.shadow_denied.{reason}"
            )),
            Some(1),
            "{reason}"
        );
    }
    assert_eq!(
        g.stat("wasmcustom.portcullis.authn.denied.missing_token")
            .unwrap_or(0),
        0
    );
    // Summarised in the application log (per-request detail is the audit trail's), never a
    // line per request at info.
    let log = g.log();
    assert!(
        log.contains("portcullis authn: 1 shadow denial:"),
        "the first would-be denial is logged"
    );
    assert!(!log.contains("shadow deny route="), "no line per request");
}
