//! `portcullis bench-keys DIR`: fresh keys for every algorithm the benchmark compares (RS256,
//! PS256, ES256, EdDSA, HS256), their JWKS (the HMAC key included, for Envoy's `jwt_authn`), and
//! one token per algorithm. Benchmark material only: the keys are written in the clear.

use crate::{CliError, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};
use std::path::Path;

/// Algorithms, in report order.
pub const ALGS: &[&str] = &["RS256", "PS256", "ES256", "EdDSA", "HS256"];

fn claims(issuer: &str, audience: &str) -> JWTClaims<Map<String, Value>> {
    let mut custom = Map::new();
    custom.insert("tenant".into(), Value::from("acme"));
    custom.insert("scope".into(), Value::from("customers:read"));
    custom.insert("client_id".into(), Value::from("bench"));
    Claims::with_custom_claims(custom, Duration::from_hours(24))
        .with_issuer(issuer)
        .with_audience(audience)
        .with_subject("bench-user")
}

/// Writes `jwks.json` and `token-<ALG>.txt` into `dir`.
pub fn generate(dir: &Path, issuer: &str, audience: &str) -> Result<()> {
    let err = |e: jwt_simple::Error| CliError(format!("bench-keys: {e}"));
    std::fs::create_dir_all(dir)?;
    let b = |x: &[u8]| URL_SAFE_NO_PAD.encode(x);
    let mut keys = Vec::new();
    let write =
        |alg: &str, token: String| std::fs::write(dir.join(format!("token-{alg}.txt")), token);

    let rs = RS256KeyPair::generate(2048)
        .map_err(err)?
        .with_key_id("bench-rs256");
    let c = rs.public_key().to_components();
    keys.push(
        json!({"kty": "RSA", "kid": "bench-rs256", "alg": "RS256", "n": b(&c.n), "e": b(&c.e)}),
    );
    write("RS256", rs.sign(claims(issuer, audience)).map_err(err)?)?;

    let ps = PS256KeyPair::generate(2048)
        .map_err(err)?
        .with_key_id("bench-ps256");
    let c = ps.public_key().to_components();
    keys.push(
        json!({"kty": "RSA", "kid": "bench-ps256", "alg": "PS256", "n": b(&c.n), "e": b(&c.e)}),
    );
    write("PS256", ps.sign(claims(issuer, audience)).map_err(err)?)?;

    let es = ES256KeyPair::generate().with_key_id("bench-es256");
    let pt = es.public_key().public_key().to_bytes_uncompressed();
    keys.push(json!({"kty": "EC", "kid": "bench-es256", "alg": "ES256", "crv": "P-256",
                     "x": b(pt.get(1..33).unwrap_or_default()), "y": b(pt.get(33..).unwrap_or_default())}));
    write("ES256", es.sign(claims(issuer, audience)).map_err(err)?)?;

    let ed = Ed25519KeyPair::generate().with_key_id("bench-eddsa");
    keys.push(
        json!({"kty": "OKP", "kid": "bench-eddsa", "alg": "EdDSA", "crv": "Ed25519",
                     "x": b(&ed.public_key().to_bytes())}),
    );
    write("EdDSA", ed.sign(claims(issuer, audience)).map_err(err)?)?;

    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| CliError(format!("bench-keys: {e}")))?;
    let hs = HS256Key::from_bytes(&secret).with_key_id("bench-hs256");
    keys.push(json!({"kty": "oct", "kid": "bench-hs256", "alg": "HS256", "k": b(&secret)}));
    write(
        "HS256",
        hs.authenticate(claims(issuer, audience)).map_err(err)?,
    )?;

    std::fs::write(dir.join("jwks.json"), json!({ "keys": keys }).to_string())?;
    Ok(())
}
