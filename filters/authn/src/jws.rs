//! Compact JWS (RFC 7515) parsing and signature verification, independent of what the payload
//! means, so the same code is checked against the Wycheproof JWS vectors.
//!
//! The header is parsed strictly: unpadded canonical base64url, a JSON object, no duplicate
//! members we act on, `crit` refused (no extension is understood), `b64: false` refused.
//! `jku`, `x5u`, `jwk` and `x5c` are never read: keys come from configuration only.

use crate::jwk::{Alg, Jwk};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

/// Why a compact JWS was refused before or during signature verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwsError {
    /// Not three dot-separated segments, bad base64url, or a header that is not a JSON object.
    Malformed,
    /// `alg` missing, unknown (including every spelling of `none`) or not allowed.
    UnsupportedAlgorithm,
    /// `crit` present, or `b64: false`: extensions this verifier does not implement.
    UnsupportedHeader,
    /// The signature does not verify.
    BadSignature,
}

/// The protected header members Portcullis reads. Unknown members are ignored; a duplicated
/// member that is read here is an error (serde refuses duplicate struct fields).
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    /// Algorithm.
    pub alg: Option<String>,
    /// Key id (exact lookup only).
    pub kid: Option<String>,
    /// Token type.
    pub typ: Option<String>,
    /// Critical extensions: any value is refused.
    pub crit: Option<serde_json::Value>,
    /// RFC 7797 unencoded payload flag: `false` is refused.
    pub b64: Option<serde_json::Value>,
}

/// A compact JWS split into its parts, header decoded, signature not yet checked.
#[derive(Debug, Clone)]
pub struct Compact<'a> {
    /// Decoded protected header.
    pub header: Header,
    /// The parsed algorithm.
    pub alg: Alg,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: the bytes that are signed.
    pub signing_input: &'a str,
    /// The base64url payload segment.
    pub payload_b64: &'a str,
    /// The payload, decoded (once: its encoding is checked here, and the claims layer reads it).
    pub payload: Vec<u8>,
    /// Decoded signature.
    pub signature: Vec<u8>,
}

/// Decodes unpadded, canonical base64url (non-zero trailing bits are refused).
pub fn b64url(s: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| JwsError::Malformed)
}

/// Splits a compact JWS and decodes its header; does not verify anything cryptographic.
pub fn parse(token: &str) -> Result<Compact<'_>, JwsError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed);
    };
    let header_bytes = b64url(h)?;
    if header_bytes.first() != Some(&b'{') {
        return Err(JwsError::Malformed);
    }
    let header: Header = serde_json::from_slice(&header_bytes).map_err(|_| JwsError::Malformed)?;
    if header.crit.is_some() {
        return Err(JwsError::UnsupportedHeader);
    }
    if let Some(b) = &header.b64 {
        if b != &serde_json::Value::Bool(true) {
            return Err(JwsError::UnsupportedHeader);
        }
    }
    let alg = header
        .alg
        .as_deref()
        .and_then(Alg::parse)
        .ok_or(JwsError::UnsupportedAlgorithm)?;
    // Validate the payload encoding here, before any key is looked at; the claims layer reads
    // the decoded bytes.
    let payload = b64url(p)?;
    let signature = b64url(s)?;
    Ok(Compact {
        header,
        alg,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload_b64: p,
        payload,
        signature,
    })
}

/// Verifies `signature` over `input` with `key` under `alg`. A key that does not support
/// `alg` (its type, or its own `alg` member) never verifies. The arithmetic is
/// `portcullis-jose`'s.
pub fn verify_signature(key: &Jwk, alg: Alg, input: &[u8], signature: &[u8]) -> bool {
    key.supports(alg) && key.key.verify(alg, input, signature)
}

/// Most keys tried for a token without `kid`: bounds the work a kid-less token can cause.
pub const MAX_KEYS_WITHOUT_KID: usize = 3;

/// Which keys to try for a parsed token: an exact `kid` match, or (no `kid`) the first few keys
/// that support the algorithm.
pub fn candidate_keys<'k>(keys: &'k [Jwk], compact: &Compact<'_>) -> Vec<&'k Jwk> {
    match &compact.header.kid {
        Some(kid) => keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid.as_str()) && k.supports(compact.alg))
            .collect(),
        None => keys
            .iter()
            .filter(|k| k.supports(compact.alg))
            .take(MAX_KEYS_WITHOUT_KID)
            .collect(),
    }
}

/// Parses and verifies a compact JWS against a key set, returning the decoded payload.
pub fn verify(token: &str, keys: &[Jwk], allowed: &[Alg]) -> Result<Vec<u8>, JwsError> {
    let c = parse(token)?;
    if !allowed.contains(&c.alg) {
        return Err(JwsError::UnsupportedAlgorithm);
    }
    let ok = candidate_keys(keys, &c)
        .into_iter()
        .any(|k| verify_signature(k, c.alg, c.signing_input.as_bytes(), &c.signature));
    if !ok {
        return Err(JwsError::BadSignature);
    }
    Ok(c.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn structure_errors_are_malformed() {
        let hs = enc(r#"{"alg":"HS256"}"#);
        for t in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.e30.",
            &format!("{hs}.!!.AA"),
            &format!("{hs}.e30.!!"),
        ] {
            assert_eq!(parse(t).unwrap_err(), JwsError::Malformed, "{t}");
        }
        // Header that is JSON but not an object.
        assert_eq!(
            parse(&format!("{}.e30.", enc("[1]"))).unwrap_err(),
            JwsError::Malformed
        );
        // Padded base64 is not base64url-without-padding.
        assert_eq!(
            parse(&format!("{}=.e30.", enc(r#"{"alg":"HS256"}"#))).unwrap_err(),
            JwsError::Malformed
        );
    }

    #[test]
    fn none_and_unknown_algorithms_are_refused() {
        for alg in ["none", "None", "NONE", "nOne", "HS1", ""] {
            let t = format!("{}.{}.", enc(&format!(r#"{{"alg":"{alg}"}}"#)), enc("{}"));
            assert_eq!(
                parse(&t).unwrap_err(),
                JwsError::UnsupportedAlgorithm,
                "{alg}"
            );
        }
        let t = format!("{}.{}.", enc(r#"{"typ":"JWT"}"#), enc("{}"));
        assert_eq!(parse(&t).unwrap_err(), JwsError::UnsupportedAlgorithm);
    }

    #[test]
    fn crit_b64_and_duplicate_alg_are_refused() {
        let t = format!(
            "{}.{}.AA",
            enc(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#),
            enc("{}")
        );
        assert_eq!(parse(&t).unwrap_err(), JwsError::UnsupportedHeader);
        let t = format!("{}.{}.AA", enc(r#"{"alg":"HS256","b64":false}"#), enc("{}"));
        assert_eq!(parse(&t).unwrap_err(), JwsError::UnsupportedHeader);
        let t = format!(
            "{}.{}.AA",
            enc(r#"{"alg":"none","alg":"HS256"}"#),
            enc("{}")
        );
        assert_eq!(parse(&t).unwrap_err(), JwsError::Malformed);
    }

    #[test]
    fn hmac_round_trip_and_tamper() {
        let key = Jwk {
            kid: None,
            alg: None,
            key: portcullis_jose::VerifyingKey::hmac(&[9u8; 32]).unwrap(),
        };
        let input = format!("{}.{}", enc(r#"{"alg":"HS256"}"#), enc("{}"));
        let tag = hmac_sha256::HMAC::mac(input.as_bytes(), [9u8; 32]);
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag));
        assert_eq!(
            verify(&token, std::slice::from_ref(&key), &[Alg::HS256]).unwrap(),
            b"{}"
        );
        assert_eq!(
            verify(&token, std::slice::from_ref(&key), &[Alg::RS256]).unwrap_err(),
            JwsError::UnsupportedAlgorithm
        );
        let mut bad = tag;
        bad[0] ^= 1;
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(bad));
        assert_eq!(
            verify(&token, &[key], &[Alg::HS256]).unwrap_err(),
            JwsError::BadSignature
        );
    }
}
