//! Table-driven tests of the authn decision core, natively: the same `authenticate` Envoy runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use portcullis_authn::cache::TokenCache;
use portcullis_authn::config::AuthnConfig;
use portcullis_authn::decide::{self, authenticate, AuthnReason, CacheUse, Request};
use portcullis_core::deny::Reason;
use portcullis_core::headers::HeaderMap;
use portcullis_core::identity::AuthMethod;
use serde_json::{json, Value};

const NOW: u64 = 1_800_000_000;
const HS_KEY: [u8; 32] = [0x42; 32];

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

struct Keys {
    es: ES256KeyPair,
    ed: Ed25519KeyPair,
}

fn keys() -> Keys {
    Keys {
        es: ES256KeyPair::generate().with_key_id("es"),
        ed: Ed25519KeyPair::generate().with_key_id("ed"),
    }
}

fn config(k: &Keys, extra_routes: Value) -> AuthnConfig {
    let pt = k.es.public_key().public_key().to_bytes_uncompressed();
    let ed = k.ed.public_key().to_bytes();
    let mut routes = json!([
        {"name": "health", "match": {"path": "/healthz"}, "allow": "anonymous"},
        {"name": "list", "match": {"methods": ["GET"], "template": "/t/{tenant}/customers"},
         "require": {"scopes": {"all_of": ["customers:read"]}, "tenant_param": "tenant"}},
        {"name": "regional", "match": {"methods": ["GET"], "template": "/r/{region}/t/{tenant}"},
         "require": {"tenant_param": "tenant", "claims": {"region": "{region}"}}},
        {"name": "admin", "match": {"prefix": "/admin"},
         "require": {"roles": {"any_of": ["admin", "ops"]}, "scopes": {"any_of": ["a", "b"]}}},
        {"name": "hs-only", "match": {"path": "/hs"}, "require": {"providers": ["hs"]}}
    ]);
    if let Some(extra) = extra_routes.as_array() {
        routes.as_array_mut().unwrap().extend(extra.iter().cloned());
    }
    AuthnConfig::from_value(json!({
        "providers": [
            {"name": "main", "issuer": "https://idp", "audiences": ["api"], "algorithms": ["ES256", "EdDSA"],
             "jwks": {"keys": [
                {"kty": "EC", "crv": "P-256", "kid": "es", "x": b64(&pt[1..33]), "y": b64(&pt[33..])},
                {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(&ed)}
             ]}},
            {"name": "hs", "issuer": "https://hs", "algorithms": ["HS256"], "require_exp": false,
             "jwks": {"keys": [{"kty": "oct", "k": b64(&HS_KEY)}]}}
        ],
        "routes": routes
    }))
    .unwrap()
}

fn claims(tenant: &str, scope: &str) -> Value {
    json!({"iss": "https://idp", "aud": "api", "sub": "u1", "tenant": tenant, "scope": scope, "iat": NOW, "exp": NOW + 300})
}

fn sign_es(k: &Keys, c: &Value) -> String {
    let custom: serde_json::Map<String, Value> = c.as_object().unwrap().clone();
    // jwt-simple would add its own iat/exp from the wall clock; sign the exact claims instead by
    // building the JWS by hand with jwt-simple's key (ES256 over the signing input).
    let header = json!({"alg": "ES256", "kid": "es", "typ": "JWT"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(Value::Object(custom).to_string().as_bytes())
    );
    let sig = es_sign(&k.es, input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn es_sign(kp: &ES256KeyPair, input: &[u8]) -> Vec<u8> {
    use p256::ecdsa::signature::Signer;
    let sk = p256::ecdsa::SigningKey::from_slice(&kp.to_bytes()).unwrap();
    let s: p256::ecdsa::Signature = sk.sign(input);
    s.to_bytes().to_vec()
}

fn sign_ed(k: &Keys, c: &Value) -> String {
    let header = json!({"alg": "EdDSA", "kid": "ed"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(c.to_string().as_bytes())
    );
    let sk = ed25519_compact::SecretKey::from_slice(&k.ed.to_bytes()).unwrap();
    let sig = sk.sign(input.as_bytes(), None);
    format!("{input}.{}", b64(sig.as_ref()))
}

fn sign_hs(c: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256"}"#),
        b64(c.to_string().as_bytes())
    );
    format!(
        "{input}.{}",
        b64(&hmac_sha256::HMAC::mac(input.as_bytes(), HS_KEY))
    )
}

fn run(
    cfg: &AuthnConfig,
    cache: &mut TokenCache,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> decide::Decision {
    let headers = HeaderMap::from_pairs(
        &token
            .map(|t| vec![("authorization", format!("Bearer {t}"))])
            .unwrap_or_default(),
    );
    authenticate(
        cfg,
        cache,
        &Request {
            method,
            path,
            headers: &headers,
            peer_cert_sha256: &|| None,
        },
        NOW,
    )
}

fn reason(d: &decide::Decision) -> &'static str {
    match &d.verdict {
        Ok(_) => "allowed",
        Err(den) => den.reason,
    }
}

#[test]
fn decisions_table() {
    let k = keys();
    let cfg = config(&k, json!([]));
    let good = sign_es(&k, &claims("acme", "customers:read"));
    let with = |key: &str, v: Value| {
        let mut c = claims("acme", "customers:read");
        c[key] = v;
        sign_es(&k, &c)
    };
    let cases: Vec<(&str, &str, &str, Option<String>, &str)> = vec![
        ("anonymous health", "GET", "/healthz", None, "allowed"),
        (
            "valid",
            "GET",
            "/t/acme/customers",
            Some(good.clone()),
            "allowed",
        ),
        (
            "ed25519",
            "GET",
            "/t/acme/customers",
            Some(sign_ed(&k, &claims("acme", "customers:read"))),
            "allowed",
        ),
        (
            "other tenant",
            "GET",
            "/t/globex/customers",
            Some(good.clone()),
            "tenant_boundary",
        ),
        (
            "dotdot to other tenant",
            "GET",
            "/t/acme/../globex/customers",
            Some(good.clone()),
            "tenant_boundary",
        ),
        (
            "encoded dotdot",
            "GET",
            "/t/acme/%2E%2e/globex/customers",
            Some(good.clone()),
            "tenant_boundary",
        ),
        (
            "encoded slash",
            "GET",
            "/t/acme%2F..%2Fglobex/customers",
            Some(good.clone()),
            "invalid_path",
        ),
        (
            "unmatched",
            "GET",
            "/nope",
            Some(good.clone()),
            "route_not_allowed",
        ),
        (
            "wrong method",
            "POST",
            "/t/acme/customers",
            Some(good.clone()),
            "route_not_allowed",
        ),
        (
            "no token",
            "GET",
            "/t/acme/customers",
            None,
            "missing_token",
        ),
        (
            "scope prefix",
            "GET",
            "/t/acme/customers",
            Some(sign_es(&k, &claims("acme", "customers"))),
            "missing_scope",
        ),
        (
            "scope superstring",
            "GET",
            "/t/acme/customers",
            Some(sign_es(&k, &claims("acme", "customers:read:admin"))),
            "missing_scope",
        ),
        (
            "expired",
            "GET",
            "/t/acme/customers",
            Some(with("exp", json!(NOW - 61))),
            "token_expired",
        ),
        (
            "expired within skew",
            "GET",
            "/t/acme/customers",
            Some(with("exp", json!(NOW - 60))),
            "allowed",
        ),
        (
            "nbf future",
            "GET",
            "/t/acme/customers",
            Some(with("nbf", json!(NOW + 61))),
            "token_not_yet_valid",
        ),
        (
            "nbf within skew",
            "GET",
            "/t/acme/customers",
            Some(with("nbf", json!(NOW + 60))),
            "allowed",
        ),
        (
            "iat future",
            "GET",
            "/t/acme/customers",
            Some(with("iat", json!(NOW + 3600))),
            "token_not_yet_valid",
        ),
        (
            "exp string",
            "GET",
            "/t/acme/customers",
            Some(with("exp", json!("soon"))),
            "malformed_token",
        ),
        (
            "exp float",
            "GET",
            "/t/acme/customers",
            Some(with("exp", json!((NOW + 10) as f64 + 0.5))),
            "allowed",
        ),
        (
            "wrong iss",
            "GET",
            "/t/acme/customers",
            Some(with("iss", json!("https://evil"))),
            "invalid_issuer",
        ),
        (
            "wrong aud",
            "GET",
            "/t/acme/customers",
            Some(with("aud", json!("x"))),
            "invalid_audience",
        ),
        (
            "aud array match",
            "GET",
            "/t/acme/customers",
            Some(with("aud", json!(["x", "api"]))),
            "allowed",
        ),
        (
            "aud array no match",
            "GET",
            "/t/acme/customers",
            Some(with("aud", json!(["x", "y"]))),
            "invalid_audience",
        ),
        (
            "control char tenant",
            "GET",
            "/t/acme/customers",
            Some(with("tenant", json!("ac\nme"))),
            "invalid_claim",
        ),
        (
            "region match",
            "GET",
            "/r/eu/t/acme",
            Some(with("region", json!("eu"))),
            "allowed",
        ),
        (
            "region array match",
            "GET",
            "/r/eu/t/acme",
            Some(with("region", json!(["us", "eu"]))),
            "allowed",
        ),
        (
            "region mismatch",
            "GET",
            "/r/us/t/acme",
            Some(with("region", json!("eu"))),
            "claim_mismatch",
        ),
        (
            "region missing",
            "GET",
            "/r/us/t/acme",
            Some(good.clone()),
            "claim_mismatch",
        ),
        (
            "no role",
            "GET",
            "/admin/x",
            Some(sign_es(&k, &claims("acme", "a"))),
            "missing_role",
        ),
        (
            "hs token on hs route",
            "GET",
            "/hs",
            Some(sign_hs(&json!({"iss": "https://hs"}))),
            "allowed",
        ),
        (
            "es token on hs route",
            "GET",
            "/hs",
            Some(good.clone()),
            "invalid_issuer",
        ),
        (
            "hs alg under main issuer",
            "GET",
            "/t/acme/customers",
            Some(sign_hs(&claims("acme", "customers:read"))),
            "unsupported_algorithm",
        ),
        (
            "garbage",
            "GET",
            "/t/acme/customers",
            Some("abc".into()),
            "malformed_token",
        ),
        (
            "too large",
            "GET",
            "/t/acme/customers",
            Some("a".repeat(8193)),
            "token_too_large",
        ),
    ];
    for (name, method, path, token, want) in cases {
        let mut cache = TokenCache::new(16);
        let d = run(&cfg, &mut cache, method, path, token.as_deref());
        assert_eq!(reason(&d), want, "case `{name}`");
        if let Err(den) = &d.verdict {
            let r = AuthnReason::ALL
                .iter()
                .find(|r| r.code() == den.reason)
                .unwrap_or_else(|| panic!("reason `{}` is not an AuthnReason", den.reason));
            let header = den
                .headers
                .iter()
                .find(|(k, _)| *k == "www-authenticate")
                .map(|(_, v)| v.clone());
            assert_eq!(
                header,
                r.www_authenticate(cfg.dpop.as_ref()),
                "case `{name}`: the challenge comes from the reason's table"
            );
        }
    }
}

#[test]
fn roles_claim_accepts_array_or_string() {
    let k = keys();
    let cfg = config(&k, json!([]));
    for roles in [json!(["ops"]), json!("viewer ops")] {
        let mut c = claims("acme", "b");
        c["roles"] = roles;
        let d = run(
            &cfg,
            &mut TokenCache::new(4),
            "GET",
            "/admin/x",
            Some(&sign_es(&k, &c)),
        );
        assert_eq!(reason(&d), "allowed");
    }
}

#[test]
fn cache_serves_repeats_and_never_past_expiry() {
    let k = keys();
    let cfg = config(&k, json!([]));
    let mut c = claims("acme", "customers:read");
    c["exp"] = json!(NOW + 5);
    let t = sign_es(&k, &c);
    let mut cache = TokenCache::new(16);
    assert_eq!(
        run(&cfg, &mut cache, "GET", "/t/acme/customers", Some(&t)).cache,
        CacheUse::Miss
    );
    let d = run(&cfg, &mut cache, "GET", "/t/acme/customers", Some(&t));
    assert_eq!(d.cache, CacheUse::Hit);
    assert_eq!(reason(&d), "allowed");
    // Route checks still run on a cache hit.
    assert_eq!(
        reason(&run(
            &cfg,
            &mut cache,
            "GET",
            "/t/globex/customers",
            Some(&t)
        )),
        "tenant_boundary"
    );
    // Past exp + skew the cached entry is not used and verification reports expiry.
    let later = authenticate(
        &cfg,
        &mut cache,
        &Request {
            method: "GET",
            path: "/t/acme/customers",
            headers: &HeaderMap::from_pairs(&[("authorization", format!("Bearer {t}"))]),
            peer_cert_sha256: &|| None,
        },
        NOW + 5 + 61,
    );
    assert_eq!(later.cache, CacheUse::Miss);
    assert_eq!(reason(&later), "token_expired");
}

#[test]
fn identity_is_built_from_claims_and_path_is_rewritten() {
    let k = keys();
    let cfg = config(&k, json!([]));
    let mut c = claims("acme", "customers:read extra");
    c["client_id"] = json!("app-1");
    let d = run(
        &cfg,
        &mut TokenCache::new(4),
        "GET",
        "/t/x/../acme//customers?q=1",
        Some(&sign_es(&k, &c)),
    );
    let allowed = d.verdict.unwrap();
    assert_eq!(allowed.identity.method, AuthMethod::Jwt);
    assert_eq!(allowed.identity.tenant.as_deref(), Some("acme"));
    assert_eq!(allowed.identity.app.as_deref(), Some("app-1"));
    assert_eq!(allowed.identity.scopes, ["customers:read", "extra"]);
    assert_eq!(
        allowed.rewrite_path.as_deref(),
        Some("/t/acme/customers?q=1")
    );
    let headers = decide::identity_headers(&cfg, &allowed.identity);
    assert!(headers.contains(&("x-portcullis-tenant".into(), "acme".into())));
    assert!(headers.contains(&("x-portcullis-scopes".into(), "customers:read extra".into())));
    assert!(decide::is_identity_header(&cfg, "x-portcullis-anything"));
    assert!(!decide::is_identity_header(&cfg, "x-request-id"));
}

#[test]
fn token_extraction_edge_cases() {
    let k = keys();
    let cfg = config(&k, json!([]));
    let t = sign_es(&k, &claims("acme", "customers:read"));
    let go = |headers: Vec<(&str, String)>| {
        let h = HeaderMap::from_pairs(&headers);
        reason(&authenticate(
            &cfg,
            &mut TokenCache::new(4),
            &Request {
                method: "GET",
                path: "/t/acme/customers",
                headers: &h,
                peer_cert_sha256: &|| None,
            },
            NOW,
        ))
    };
    assert_eq!(
        go(vec![("authorization", format!("bearer {t}"))]),
        "allowed",
        "scheme is case-insensitive"
    );
    assert_eq!(
        go(vec![("authorization", format!("Basic {t}"))]),
        "missing_token"
    );
    assert_eq!(
        go(vec![
            ("authorization", format!("Bearer {t}")),
            ("authorization", format!("Bearer {t}"))
        ]),
        "multiple_tokens"
    );
    assert_eq!(
        go(vec![("authorization", format!("Bearer {t} {t}"))]),
        "multiple_tokens"
    );
    assert_eq!(
        go(vec![("authorization", "Bearer ".into())]),
        "missing_token"
    );
}

#[test]
fn config_errors_name_the_field() {
    let k = keys();
    let good = config(&k, json!([]));
    assert_eq!(good.routes.len(), 5);
    let bad = |routes: Value| {
        let mut v = json!({"providers": [{"name": "hs", "issuer": "https://hs", "algorithms": ["HS256"],
            "jwks": {"keys": [{"kty": "oct", "k": b64(&HS_KEY)}]}}], "routes": routes});
        AuthnConfig::from_value(std::mem::take(&mut v))
            .unwrap_err()
            .to_string()
    };
    let e =
        bad(json!([{"name": "a", "match": {"path": "/a"}, "require": {"tenant_param": "tenant"}}]));
    assert!(e.contains("routes[0].require.tenant_param"), "{e}");
    let e = bad(json!([{"name": "a", "match": {"path": "/a"}}]));
    assert!(e.contains("routes[0]") && e.contains("exactly one"), "{e}");
    let e = bad(
        json!([{"name": "a", "match": {"template": "/t/{x}"}, "require": {"claims": {"region": "{region}"}}}]),
    );
    assert!(e.contains("routes[0].require.claims.region"), "{e}");
    let e = AuthnConfig::from_value(json!({"providers": [{"name": "p", "issuer": "i", "algorithms": ["none"], "jwks": {"keys": []}}], "routes": []}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("providers[0].algorithms[0]"), "{e}");
    let e = AuthnConfig::from_value(
        json!({"providers": [{"name": "p", "issuer": "i", "algorithms": ["RS256"],
        "jwks": {"keys": [{"kty": "oct", "k": b64(&HS_KEY)}]}}], "routes": []}),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("providers[0].jwks.keys[0]"), "{e}");
}

#[test]
fn a_forged_signature_is_checked_once_then_refused_from_the_negative_cache() {
    let k = keys();
    let cfg = config(&k, json!([]));
    let good = sign_es(&k, &claims("acme", "customers:read"));
    // Same header and claims, another signature: a forgery naming a real kid.
    let (input, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{input}.{}", b64(&[7u8; 64]));
    let mut cache = TokenCache::new(16);
    let first = run(&cfg, &mut cache, "GET", "/t/acme/customers", Some(&forged));
    assert_eq!(
        (reason(&first), first.cache),
        ("invalid_signature", CacheUse::Miss)
    );
    let again = run(&cfg, &mut cache, "GET", "/t/acme/customers", Some(&forged));
    assert_eq!(
        (reason(&again), again.cache),
        ("invalid_signature", CacheUse::Hit)
    );
    // The genuine token is unaffected.
    assert_eq!(
        reason(&run(
            &cfg,
            &mut cache,
            "GET",
            "/t/acme/customers",
            Some(&good)
        )),
        "allowed"
    );
    // Bounded: a cache of 0 remembers nothing.
    let mut none = TokenCache::new(0);
    let _ = run(&cfg, &mut none, "GET", "/t/acme/customers", Some(&forged));
    assert_eq!(
        run(&cfg, &mut none, "GET", "/t/acme/customers", Some(&forged)).cache,
        CacheUse::Miss
    );
}

/// The identity an allowed request carries is the same whether it was verified now with the
/// cache off (moved out of its only holder), verified now into the cache, or served from it
/// (copied), with and without an app catalog narrowing it.
#[test]
fn identity_is_the_same_with_the_cache_off_on_and_hit() {
    let k = keys();
    let plain = config(&k, json!([]));
    let mut doc = json!({
        "providers": [{"name": "hs", "issuer": "https://hs", "algorithms": ["HS256"], "require_exp": false,
                       "jwks": {"keys": [{"kty": "oct", "k": b64(&HS_KEY)}]}}],
        "catalog": {"apps": [{"id": "app-1", "owner": "t", "tier": "gold", "scopes": ["customers:read"],
                              "data_classes": ["contact"]}]},
        "routes": [{"name": "list", "match": {"methods": ["GET"], "template": "/t/{tenant}/customers"},
                    "require": {"scopes": {"all_of": ["customers:read"]}, "tenant_param": "tenant"}}]
    });
    let cataloged = AuthnConfig::from_value(doc.take()).unwrap();
    let mut es = claims("acme", "customers:read extra");
    es["client_id"] = json!("app-1");
    let mut hs = es.clone();
    hs["iss"] = json!("https://hs");
    for (cfg, token) in [(&plain, sign_es(&k, &es)), (&cataloged, sign_hs(&hs))] {
        let mut off = TokenCache::new(0);
        let mut on = TokenCache::new(4);
        let mut outcomes = Vec::new();
        for cache in [&mut off, &mut on] {
            for _ in 0..2 {
                let d = run(cfg, cache, "GET", "/t/acme/customers", Some(&token));
                outcomes.push((d.cache, d.verdict.unwrap()));
            }
        }
        assert_eq!(
            outcomes.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            [
                CacheUse::Miss,
                CacheUse::Miss,
                CacheUse::Miss,
                CacheUse::Hit
            ]
        );
        let first = &outcomes[0].1;
        assert_eq!(first.identity.app.as_deref(), Some("app-1"));
        for (_, allowed) in &outcomes {
            assert_eq!(allowed, first);
        }
    }
    let narrowed = run(
        &cataloged,
        &mut TokenCache::new(0),
        "GET",
        "/t/acme/customers",
        Some(&sign_hs(&hs)),
    )
    .verdict
    .unwrap()
    .identity;
    assert_eq!(
        narrowed.scopes,
        ["customers:read"],
        "the catalog narrowed it"
    );
    assert_eq!(narrowed.tier.as_deref(), Some("gold"));
}
