//! DPoP (RFC 9449 §4.3) natively through `authenticate`: every check, each failing alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use portcullis_authn::cache::TokenCache;
use portcullis_authn::config::AuthnConfig;
use portcullis_authn::decide::{authenticate, Decision, Request};
use portcullis_authn::dpop::{self, ReplayOutcome};
use portcullis_core::headers::HeaderMap;
use serde_json::{json, Value};
use sha2::Digest;

const NOW: u64 = 1_800_000_000;
const ORIGIN: &str = "https://api.example.com";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn es_sign(kp: &ES256KeyPair, input: &[u8]) -> Vec<u8> {
    use p256::ecdsa::signature::Signer;
    let sk = p256::ecdsa::SigningKey::from_slice(&kp.to_bytes()).unwrap();
    let s: p256::ecdsa::Signature = sk.sign(input);
    s.to_bytes().to_vec()
}

fn public_jwk(kp: &ES256KeyPair) -> Value {
    let pt = kp.public_key().public_key().to_bytes_uncompressed();
    json!({"kty": "EC", "crv": "P-256", "x": b64(&pt[1..33]), "y": b64(&pt[33..])})
}

fn jws(kp: &ES256KeyPair, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = es_sign(kp, input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

struct World {
    issuer: ES256KeyPair,
    holder: ES256KeyPair,
    other: ES256KeyPair,
    cfg: AuthnConfig,
}

fn world() -> World {
    let issuer = ES256KeyPair::generate();
    let mut jwk = public_jwk(&issuer);
    jwk["kid"] = json!("iss");
    let cfg = AuthnConfig::from_value(json!({
        "providers": [{"name": "main", "issuer": "https://idp", "audiences": ["api"], "algorithms": ["ES256"],
                       "jwks": {"keys": [jwk]}}],
        "dpop": {"external_origin": ORIGIN, "algorithms": ["ES256", "EdDSA"], "iat_window_seconds": 60},
        "routes": [
            {"name": "list", "match": {"prefix": "/t/"}, "require": {}},
            {"name": "bound-only", "match": {"prefix": "/secure"}, "require": {"binding": "dpop"}},
            {"name": "any-binding", "match": {"prefix": "/either"}, "require": {"binding": "any"}}
        ]
    }))
    .unwrap();
    World {
        issuer,
        holder: ES256KeyPair::generate(),
        other: ES256KeyPair::generate(),
        cfg,
    }
}

impl World {
    fn token(&self, jkt: Option<&str>) -> String {
        let mut c =
            json!({"iss": "https://idp", "aud": "api", "sub": "u", "iat": NOW, "exp": NOW + 300});
        if let Some(j) = jkt {
            c["cnf"] = json!({"jkt": j});
        }
        jws(
            &self.issuer,
            &json!({"alg": "ES256", "kid": "iss", "typ": "at+jwt"}),
            &c,
        )
    }
    fn bound_token(&self) -> String {
        self.token(Some(&dpop::thumbprint(&public_jwk(&self.holder)).unwrap()))
    }
    fn proof_claims(&self, token: &str, method: &str, htu: &str) -> Value {
        json!({"jti": "j-1", "htm": method, "htu": htu, "iat": NOW,
               "ath": b64(&sha2::Sha256::digest(token.as_bytes()))})
    }
    fn proof_with(&self, header: Value, claims: Value) -> String {
        jws(&self.holder, &header, &claims)
    }
    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(&self.holder)})
    }
    fn proof(&self, token: &str, method: &str, htu: &str) -> String {
        self.proof_with(self.header(), self.proof_claims(token, method, htu))
    }
}

fn run(cfg: &AuthnConfig, method: &str, path: &str, headers: &[(&str, String)]) -> Decision {
    let headers = HeaderMap::from_pairs(headers);
    let mut cache = TokenCache::new(16);
    authenticate(
        cfg,
        &mut cache,
        &Request {
            method,
            path,
            headers: &headers,
            peer_cert_sha256: &|| None,
        },
        NOW,
    )
}

fn reason(d: &Decision) -> &'static str {
    match &d.verdict {
        Ok(_) => "ok",
        Err(e) => e.reason,
    }
}

#[test]
fn a_valid_proof_is_accepted_once() {
    let w = world();
    let t = w.bound_token();
    let p = w.proof(&t, "GET", &format!("{ORIGIN}/t/acme"));
    let d = run(
        &w.cfg,
        "GET",
        "/t/acme?page=2",
        &[("authorization", format!("DPoP {t}")), ("dpop", p.clone())],
    );
    assert_eq!(reason(&d), "ok");
    let check = d.replay.clone().expect("the jti must be recorded");
    // The adapter's store update: first use fresh, second use a replay.
    let ReplayOutcome::Fresh(slot) = dpop::replay_update(None, &check, NOW) else {
        panic!()
    };
    let again = run(
        &w.cfg,
        "GET",
        "/t/acme",
        &[("authorization", format!("DPoP {t}")), ("dpop", p)],
    );
    assert_eq!(
        dpop::replay_update(Some(&slot), again.replay.as_ref().unwrap(), NOW),
        ReplayOutcome::Replayed
    );
    // Host and scheme case and the default port do not matter; the query never does.
    let p2 = w.proof(&t, "GET", "HTTPS://API.EXAMPLE.COM:443/t/acme?x=1");
    let d = run(
        &w.cfg,
        "GET",
        "/t/acme",
        &[("authorization", format!("dpop {t}")), ("dpop", p2)],
    );
    assert_eq!(reason(&d), "ok");
}

#[test]
fn every_check_of_rfc9449_section_4_3_fails_alone() {
    let w = world();
    let t = w.bound_token();
    let htu = format!("{ORIGIN}/t/acme");
    let auth = ("authorization", format!("DPoP {t}"));
    let go = |proofs: Vec<String>| {
        let mut h = vec![auth.clone()];
        h.extend(proofs.into_iter().map(|p| ("dpop", p)));
        reason(&run(&w.cfg, "GET", "/t/acme", &h))
    };
    let claims = || w.proof_claims(&t, "GET", &htu);
    let with_claim = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        w.proof_with(w.header(), c)
    };
    let with_header = |k: &str, v: Value| {
        let mut h = w.header();
        h[k] = v;
        w.proof_with(h, claims())
    };
    let good = w.proof(&t, "GET", &htu);
    assert_eq!(go(vec![good.clone()]), "ok");
    assert_eq!(go(vec![]), "invalid_dpop_proof", "no proof");
    assert_eq!(
        go(vec![good.clone(), good.clone()]),
        "invalid_dpop_proof",
        "two proofs"
    );
    assert_eq!(
        go(vec![format!("{good}, {good}")]),
        "invalid_dpop_proof",
        "two in one header"
    );
    assert_eq!(go(vec!["not.a.jws".into()]), "invalid_dpop_proof");
    assert_eq!(
        go(vec![with_header("typ", json!("JWT"))]),
        "invalid_dpop_proof",
        "typ"
    );
    assert_eq!(
        go(vec![with_header("alg", json!("HS256"))]),
        "invalid_dpop_proof",
        "symmetric alg"
    );
    assert_eq!(
        go(vec![with_header("alg", json!("RS256"))]),
        "invalid_dpop_proof",
        "alg not allowed"
    );
    let mut private = public_jwk(&w.holder);
    private["d"] = json!(b64(&w.holder.to_bytes()));
    assert_eq!(
        go(vec![with_header("jwk", private)]),
        "invalid_dpop_proof",
        "private jwk"
    );
    assert_eq!(
        go(vec![with_header("jwk", public_jwk(&w.other))]),
        "invalid_dpop_proof",
        "signature under another key"
    );
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(go(vec![tampered]), "invalid_dpop_proof", "bad signature");
    assert_eq!(
        go(vec![with_claim("htm", json!("POST"))]),
        "invalid_dpop_proof",
        "htm"
    );
    assert_eq!(
        go(vec![with_claim(
            "htu",
            json!("https://evil.example.com/t/acme")
        )]),
        "invalid_dpop_proof",
        "htu host"
    );
    assert_eq!(
        go(vec![with_claim("htu", json!(format!("{ORIGIN}/t/other")))]),
        "invalid_dpop_proof",
        "htu path"
    );
    assert_eq!(
        go(vec![with_claim("iat", json!(NOW - 61))]),
        "invalid_dpop_proof",
        "iat too old"
    );
    assert_eq!(
        go(vec![with_claim("iat", json!(NOW + 61))]),
        "invalid_dpop_proof",
        "iat in the future"
    );
    assert_eq!(
        go(vec![with_claim("jti", json!(""))]),
        "invalid_dpop_proof",
        "empty jti"
    );
    assert_eq!(
        go(vec![with_claim("ath", json!(b64(&[0u8; 32])))]),
        "invalid_dpop_proof",
        "ath"
    );
    // A proof by another key than the token is bound to.
    let other_proof = jws(
        &w.other,
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(&w.other)}),
        &claims(),
    );
    assert_eq!(go(vec![other_proof]), "dpop_key_mismatch");
}

#[test]
fn downgrade_unbound_tokens_and_route_bindings() {
    let w = world();
    let bound = w.bound_token();
    let plain = w.token(None);
    // A DPoP-bound token presented as Bearer is refused (downgrade).
    let d = run(
        &w.cfg,
        "GET",
        "/t/acme",
        &[("authorization", format!("Bearer {bound}"))],
    );
    assert_eq!(reason(&d), "dpop_downgrade");
    let www = d
        .verdict
        .unwrap_err()
        .headers
        .iter()
        .find(|(k, _)| *k == "www-authenticate")
        .unwrap()
        .1
        .clone();
    assert!(www.starts_with("DPoP algs=\"ES256 EdDSA\""), "{www}");
    // DPoP with an unbound token: refused. A plain Bearer token still works where no binding is asked.
    let p = w.proof(&plain, "GET", &format!("{ORIGIN}/t/acme"));
    assert_eq!(
        reason(&run(
            &w.cfg,
            "GET",
            "/t/acme",
            &[("authorization", format!("DPoP {plain}")), ("dpop", p)]
        )),
        "token_not_bound"
    );
    assert_eq!(
        reason(&run(
            &w.cfg,
            "GET",
            "/t/acme",
            &[("authorization", format!("Bearer {plain}"))]
        )),
        "ok"
    );
    // Routes that demand a binding.
    assert_eq!(
        reason(&run(
            &w.cfg,
            "GET",
            "/secure",
            &[("authorization", format!("Bearer {plain}"))]
        )),
        "token_not_bound"
    );
    assert_eq!(
        reason(&run(
            &w.cfg,
            "GET",
            "/either",
            &[("authorization", format!("Bearer {plain}"))]
        )),
        "token_not_bound"
    );
    let p = w.proof(&bound, "GET", &format!("{ORIGIN}/secure"));
    assert_eq!(
        reason(&run(
            &w.cfg,
            "GET",
            "/secure",
            &[("authorization", format!("DPoP {bound}")), ("dpop", p)]
        )),
        "ok"
    );
    // Without `dpop:` configured, the DPoP scheme is not recognised at all.
    let mut raw: Value = json!({
        "providers": [{"name": "main", "issuer": "https://idp", "audiences": ["api"], "algorithms": ["ES256"],
                       "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "kid": "iss",
                                          "x": public_jwk(&w.issuer)["x"], "y": public_jwk(&w.issuer)["y"]}]}}],
        "routes": [{"name": "list", "match": {"prefix": "/t/"}, "require": {}}]
    });
    let no_dpop = AuthnConfig::from_value(raw.take()).unwrap();
    let p = w.proof(&bound, "GET", &format!("{ORIGIN}/t/acme"));
    assert_eq!(
        reason(&run(
            &no_dpop,
            "GET",
            "/t/acme",
            &[("authorization", format!("DPoP {bound}")), ("dpop", p)]
        )),
        "missing_token"
    );
}

#[test]
fn dpop_config_errors_name_the_field() {
    let err = |d: Value| {
        AuthnConfig::from_value(json!({
            "providers": [{"name": "main", "issuer": "https://idp", "algorithms": ["HS256"],
                           "jwks": {"keys": [{"kty": "oct", "k": "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI"}]}}],
            "dpop": d, "routes": []
        }))
        .unwrap_err()
        .to_string()
    };
    assert!(
        err(json!({"external_origin": "https://api.example.com/v1"}))
            .contains("dpop.external_origin")
    );
    assert!(err(json!({"external_origin": "api.example.com"})).contains("dpop.external_origin"));
    assert!(
        err(json!({"external_origin": "https://a.b", "algorithms": ["HS256"]}))
            .contains("dpop.algorithms[0]")
    );
}
