//! Token minting: `portcullis token` signs demo tokens with jwt-simple; [`sign_raw`] signs any
//! header and claims verbatim (tests use it to build hostile tokens: `jku`, `crit`, odd `kid`…).

use crate::{CliError, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::{Map, Value};

/// Signing algorithms the demo keys support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    /// RSA PKCS#1 v1.5 SHA-256.
    RS256,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// HMAC SHA-256 (the "key" is the raw secret bytes).
    HS256,
}

/// What a demo token says.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// `sub`.
    pub subject: String,
    /// `tenant`.
    pub tenant: Option<String>,
    /// `client_id`.
    pub app: Option<String>,
    /// `scope` (joined with spaces).
    pub scopes: Vec<String>,
    /// `roles`.
    pub roles: Vec<String>,
    /// Extra string claims.
    pub extra: Vec<(String, String)>,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
}

/// Signs a demo token with jwt-simple.
pub fn mint(spec: &TokenSpec, alg: SigningAlg, key_pem: &str, kid: &str) -> Result<String> {
    let mut custom = Map::new();
    if let Some(t) = &spec.tenant {
        custom.insert("tenant".into(), Value::String(t.clone()));
    }
    if let Some(a) = &spec.app {
        custom.insert("client_id".into(), Value::String(a.clone()));
    }
    if !spec.scopes.is_empty() {
        custom.insert("scope".into(), Value::String(spec.scopes.join(" ")));
    }
    if !spec.roles.is_empty() {
        custom.insert("roles".into(), Value::from(spec.roles.clone()));
    }
    for (k, v) in &spec.extra {
        custom.insert(k.clone(), Value::String(v.clone()));
    }
    let claims = Claims::with_custom_claims(custom, Duration::from_secs(spec.ttl_secs))
        .with_issuer(&spec.issuer)
        .with_audience(&spec.audience)
        .with_subject(&spec.subject);
    let err = |e: jwt_simple::Error| CliError(format!("signing failed: {e}"));
    match alg {
        SigningAlg::RS256 => RS256KeyPair::from_pem(key_pem)
            .map_err(err)?
            .with_key_id(kid)
            .sign(claims)
            .map_err(err),
        SigningAlg::ES256 => ES256KeyPair::from_pem(key_pem)
            .map_err(err)?
            .with_key_id(kid)
            .sign(claims)
            .map_err(err),
        SigningAlg::HS256 => HS256Key::from_bytes(key_pem.as_bytes())
            .with_key_id(kid)
            .authenticate(claims)
            .map_err(err),
    }
}

/// Signs `header` and `claims` exactly as given (no checks, no added members).
pub fn sign_raw(alg: SigningAlg, key: &[u8], header: &Value, claims: &Value) -> Result<String> {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    Ok(format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(sign_bytes(alg, key, input.as_bytes())?)
    ))
}

/// Raw signature over `input` (PKCS#8 PEM for RS256/ES256, raw secret for HS256).
pub fn sign_bytes(alg: SigningAlg, key: &[u8], input: &[u8]) -> Result<Vec<u8>> {
    let pem = || std::str::from_utf8(key).map_err(|_| CliError("key is not PEM text".into()));
    match alg {
        SigningAlg::RS256 => {
            use rsa::pkcs8::DecodePrivateKey;
            use sha2::Digest;
            let k = rsa::RsaPrivateKey::from_pkcs8_pem(pem()?)
                .map_err(|e| CliError(format!("bad RSA key: {e}")))?;
            k.sign(
                rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                &sha2::Sha256::digest(input),
            )
            .map_err(|e| CliError(format!("signing failed: {e}")))
        }
        SigningAlg::ES256 => {
            use p256::ecdsa::signature::Signer;
            use p256::pkcs8::DecodePrivateKey;
            let k = p256::ecdsa::SigningKey::from_pkcs8_pem(pem()?)
                .map_err(|_| CliError("bad P-256 key".into()))?;
            // JWS wants the fixed-width r || s form, which is what `to_bytes` gives.
            let sig: p256::ecdsa::Signature = k.sign(input);
            Ok(sig.to_bytes().to_vec())
        }
        SigningAlg::HS256 => Ok(hmac_sha256::HMAC::mac(input, key).to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_authn::jwk::{parse_jwks, Alg, KeyPolicy};
    use std::path::Path;

    fn demo(file: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../policies/demo-keys")
                .join(file),
        )
        .unwrap()
    }

    /// Differential check: tokens signed by jwt-simple verify in Portcullis' verifier, and
    /// raw-signed ones too; a flipped bit fails in both.
    #[test]
    fn jwt_simple_tokens_verify_in_the_filter_core() {
        let jwks: Value = serde_json::from_str(&demo("demo-jwks.json")).unwrap();
        let keys = parse_jwks(&jwks, &KeyPolicy::default()).unwrap();
        let spec = TokenSpec {
            issuer: "i".into(),
            audience: "a".into(),
            subject: "s".into(),
            tenant: Some("acme".into()),
            app: None,
            scopes: vec!["x".into()],
            roles: vec![],
            extra: vec![],
            ttl_secs: 60,
        };
        for (alg, file, kid) in [
            (SigningAlg::RS256, "demo-rs256.key.pem", "demo-rs256"),
            (SigningAlg::ES256, "demo-es256.key.pem", "demo-es256"),
        ] {
            let t = mint(&spec, alg, &demo(file), kid).unwrap();
            assert!(
                portcullis_authn::jws::verify(&t, &keys, &Alg::ALL).is_ok(),
                "{alg:?}"
            );
            let raw = sign_raw(
                alg,
                demo(file).as_bytes(),
                &serde_json::json!({"alg": format!("{alg:?}"), "kid": kid}),
                &serde_json::json!({"a": 1}),
            )
            .unwrap();
            assert!(
                portcullis_authn::jws::verify(&raw, &keys, &Alg::ALL).is_ok(),
                "raw {alg:?}"
            );
            let mut bad = raw.into_bytes();
            let n = bad.len() - 5;
            bad[n] = if bad[n] == b'A' { b'B' } else { b'A' };
            assert!(portcullis_authn::jws::verify(
                std::str::from_utf8(&bad).unwrap(),
                &keys,
                &Alg::ALL
            )
            .is_err());
        }
    }
}
