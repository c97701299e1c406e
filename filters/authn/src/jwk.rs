//! JSON Web Keys (RFC 7517/7518) parsed into verification keys, once, at configure time.
//!
//! Only public verification material is accepted: private members are refused, `use: enc` and
//! `key_ops` without `verify` are refused, RSA keys must be at least 2048 bits, EC points must
//! lie on their named curve. Each key knows which JWS algorithms it may verify, so an HS256
//! token can never be checked against an RSA key ("key confusion").

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis_jose::{KeyError, Precompute, VerifyingKey};
use serde_json::Value;

/// The JWS algorithms Portcullis verifies; defined with the arithmetic in `portcullis-jose`.
pub use portcullis_jose::Alg;

/// One verification key from a JWKS.
#[derive(Debug, Clone)]
pub struct Jwk {
    /// `kid`, used only as an exact lookup key.
    pub kid: Option<String>,
    /// The key's own `alg`, which then is the only algorithm it verifies.
    pub alg: Option<Alg>,
    /// The key, validated and prepared for verification.
    pub key: VerifyingKey,
}

/// What the loader demands of keys.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    /// Smallest RSA modulus accepted, in bits.
    pub min_rsa_bits: usize,
    /// Accept `oct` (HMAC) keys at all.
    pub allow_symmetric: bool,
    /// Build per-key verification tables (P-256: ~52 KiB, Ed25519: ~77 KiB, a few ms once) so
    /// every later verification is several times faster. Configured and fetched keys do; a
    /// key seen for one verification (a DPoP proof's own `jwk`) does not.
    pub precompute: bool,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            min_rsa_bits: 2048,
            allow_symmetric: true,
            precompute: true,
        }
    }
}

/// Why a JWK was refused (value-free, safe to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwkError(pub String);

impl std::fmt::Display for JwkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(msg: impl Into<String>) -> Result<T, JwkError> {
    Err(JwkError(msg.into()))
}

fn member<'a>(v: &'a Value, name: &str) -> Result<&'a str, JwkError> {
    match v.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => bad(format!("`{name}` must be a string")),
        None => bad(format!("missing `{name}`")),
    }
}

fn b64(v: &Value, name: &str) -> Result<Vec<u8>, JwkError> {
    URL_SAFE_NO_PAD
        .decode(member(v, name)?)
        .map_err(|_| JwkError(format!("`{name}` is not unpadded base64url")))
}

impl Jwk {
    /// Parses one JWK object.
    pub fn parse(v: &Value, policy: &KeyPolicy) -> Result<Jwk, JwkError> {
        if !v.is_object() {
            return bad("a JWK must be a JSON object");
        }
        let kty = member(v, "kty")?;
        if let Some(u) = v.get("use") {
            if u.as_str() != Some("sig") {
                return bad("`use` must be `sig` for a verification key");
            }
        }
        if let Some(ops) = v.get("key_ops") {
            let ok = ops
                .as_array()
                .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
            if !ok {
                return bad("`key_ops` does not allow `verify`");
            }
        }
        let kid = match v.get("kid") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return bad("`kid` must be a string"),
        };
        let alg = match v.get("alg") {
            None => None,
            Some(Value::String(s)) => match Alg::parse(s) {
                Some(a) => Some(a),
                None => return bad(format!("unsupported `alg` `{s}`")),
            },
            Some(_) => return bad("`alg` must be a string"),
        };
        let precompute = if policy.precompute {
            Precompute::Tables
        } else {
            Precompute::OneShot
        };
        let key = match kty {
            "RSA" => {
                for private in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
                    if v.get(private).is_some() {
                        return bad(
                            "RSA key contains private members; publish only the public key",
                        );
                    }
                }
                let (n, e) = (b64(v, "n")?, b64(v, "e")?);
                // Policy first, so an undersized key is named as such whatever else is wrong.
                let bits = modulus_bits(&n);
                if bits < policy.min_rsa_bits {
                    return bad(format!(
                        "RSA key of {bits} bits is below the {} bit minimum",
                        policy.min_rsa_bits
                    ));
                }
                VerifyingKey::rsa(&n, &e).map_err(key_error)?
            }
            "EC" => {
                if v.get("d").is_some() {
                    return bad("EC key contains the private member `d`");
                }
                let crv = member(v, "crv")?;
                let (x, y) = (b64(v, "x")?, b64(v, "y")?);
                let width = match crv {
                    "P-256" => 32,
                    "P-384" => 48,
                    other => return bad(format!("unsupported curve `{other}`")),
                };
                if x.len() != width || y.len() != width {
                    return bad(format!("`x`/`y` must be {width} bytes for {crv}"));
                }
                // Both loaders reject coordinates >= p, points not on the curve and the identity.
                if crv == "P-256" {
                    VerifyingKey::p256(&x, &y, precompute).map_err(key_error)?
                } else {
                    VerifyingKey::p384(&x, &y).map_err(key_error)?
                }
            }
            "OKP" => {
                if v.get("d").is_some() {
                    return bad("OKP key contains the private member `d`");
                }
                let crv = member(v, "crv")?;
                if crv != "Ed25519" {
                    return bad(format!("unsupported OKP curve `{crv}`"));
                }
                let x = b64(v, "x")?;
                if x.len() != 32 {
                    return bad("`x` is not a 32-byte Ed25519 key");
                }
                // Non-canonical encodings and small-order points are refused, as by
                // ed25519-compact, whose verdicts the fast verifier reproduces.
                VerifyingKey::ed25519(&x, precompute)
                    .map_err(|_| JwkError("`x` is not an acceptable Ed25519 public key".into()))?
            }
            "oct" => {
                if !policy.allow_symmetric {
                    return bad("symmetric (`oct`) keys are not allowed here");
                }
                VerifyingKey::hmac(&b64(v, "k")?).map_err(key_error)?
            }
            other => return bad(format!("unsupported `kty` `{other}`")),
        };
        let jwk = Jwk { kid, alg, key };
        if let Some(a) = alg {
            if !jwk.key.fits(a) {
                return bad(format!("`alg` {} does not fit a `{kty}` key", a.name()));
            }
        }
        Ok(jwk)
    }

    /// True when this key may verify a token signed with `alg`: the key type fits and, if the
    /// key names its own `alg`, it is that one.
    pub fn supports(&self, alg: Alg) -> bool {
        self.alg.is_none_or(|a| a == alg) && self.key.fits(alg)
    }
}

/// Bit length of a big-endian unsigned integer (leading zero bytes ignored).
fn modulus_bits(be: &[u8]) -> usize {
    let digits = be.iter().skip_while(|&&b| b == 0);
    let len = digits.clone().count();
    digits
        .copied()
        .next()
        .map_or(0, |top| len * 8 - top.leading_zeros() as usize)
}

/// The arithmetic crate's refusal, in the loader's words (value-free either way).
fn key_error(e: KeyError) -> JwkError {
    JwkError(e.to_string())
}

/// Parses a JWKS document (`{"keys": [...]}`); every key must be valid, errors name the index.
pub fn parse_jwks(v: &Value, policy: &KeyPolicy) -> Result<Vec<Jwk>, (usize, JwkError)> {
    let Some(keys) = v.get("keys").and_then(Value::as_array) else {
        return Err((
            0,
            JwkError("a JWKS must be an object with a `keys` array".into()),
        ));
    };
    keys.iter()
        .enumerate()
        .map(|(i, k)| Jwk::parse(k, policy).map_err(|e| (i, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P256_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const P256_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    #[test]
    fn ec_key_on_curve_loads_and_fits_only_es256() {
        let k = Jwk::parse(
            &json!({"kty":"EC","crv":"P-256","x":P256_X,"y":P256_Y,"kid":"k1"}),
            &KeyPolicy::default(),
        )
        .unwrap();
        assert!(k.supports(Alg::ES256));
        for a in Alg::ALL.into_iter().filter(|a| *a != Alg::ES256) {
            assert!(!k.supports(a), "{a:?}");
        }
    }

    #[test]
    fn ec_point_off_curve_is_refused() {
        let y_bad = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a1";
        assert!(Jwk::parse(
            &json!({"kty":"EC","crv":"P-256","x":P256_X,"y":y_bad}),
            &KeyPolicy::default()
        )
        .is_err());
    }

    #[test]
    fn weak_private_enc_and_mismatched_keys_are_refused() {
        let p = KeyPolicy::default();
        // 1024-bit modulus.
        let n1024 = URL_SAFE_NO_PAD.encode([0xc5u8; 128]);
        assert!(Jwk::parse(&json!({"kty":"RSA","n":n1024,"e":"AQAB"}), &p)
            .unwrap_err()
            .0
            .contains("bit minimum"));
        assert!(Jwk::parse(
            &json!({"kty":"EC","crv":"P-256","x":P256_X,"y":P256_Y,"use":"enc"}),
            &p
        )
        .is_err());
        assert!(Jwk::parse(
            &json!({"kty":"EC","crv":"P-256","x":P256_X,"y":P256_Y,"d":"AA"}),
            &p
        )
        .is_err());
        assert!(Jwk::parse(
            &json!({"kty":"EC","crv":"P-256","x":P256_X,"y":P256_Y,"alg":"RS256"}),
            &p
        )
        .is_err());
        assert!(Jwk::parse(&json!({"kty":"EC","crv":"P-521","x":P256_X,"y":P256_Y}), &p).is_err());
        assert!(Jwk::parse(&json!({"kty":"oct","k":"c2hvcnQ"}), &p).is_err());
        assert!(Jwk::parse(
            &json!({"kty":"EC","crv":"P-256","x":P256_X,"y":P256_Y,"key_ops":["encrypt"]}),
            &p
        )
        .is_err());
    }

    #[test]
    fn oct_key_strength_limits_algorithms() {
        let k32 = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let k = Jwk::parse(&json!({"kty":"oct","k":k32}), &KeyPolicy::default()).unwrap();
        assert!(k.supports(Alg::HS256));
        assert!(!k.supports(Alg::HS512));
        assert!(!k.supports(Alg::RS256));
        let off = KeyPolicy {
            allow_symmetric: false,
            ..KeyPolicy::default()
        };
        assert!(Jwk::parse(&json!({"kty":"oct","k":k32}), &off).is_err());
    }

    #[test]
    fn modulus_bits_ignores_leading_zero_bytes() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0, 0]), 0);
        assert_eq!(modulus_bits(&[0, 1]), 1);
        assert_eq!(modulus_bits(&[0, 0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0xff; 256]), 2048);
    }
}
