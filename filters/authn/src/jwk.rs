//! JSON Web Keys (RFC 7517/7518) parsed into verification keys, once, at configure time.
//!
//! Only public verification material is accepted: private members are refused, `use: enc` and
//! `key_ops` without `verify` are refused, RSA keys must be at least 2048 bits, EC points must
//! lie on their named curve. Each key knows which JWS algorithms it may verify, so an HS256
//! token can never be checked against an RSA key ("key confusion").

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// JWS algorithms Portcullis verifies (RFC 7518 §3 plus EdDSA, RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
}

impl Alg {
    /// Every supported algorithm.
    pub const ALL: [Alg; 12] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];

    /// Parses a JOSE `alg` value, case-sensitively (`none`, `None`, `NONE` are all unknown).
    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == s)
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    /// True for the symmetric (shared-secret) algorithms.
    pub fn is_symmetric(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

/// Verification key material.
#[derive(Clone)]
pub enum KeyMaterial {
    /// RSA public key, in the form the fast verifier uses (validated by the `rsa` crate first).
    Rsa(Box<crate::rsa_fast::RsaPublic>),
    /// P-256 public point, for the specialised verifier (validated on load).
    P256(Box<crate::p256_fast::P256Public>),
    /// P-384 public point.
    P384(p384::ecdsa::VerifyingKey),
    /// Ed25519 public key, for the specialised verifier (validated on load).
    Ed25519(Box<crate::ed25519_fast::Ed25519Public>),
    /// HMAC secret.
    Oct(Vec<u8>),
}

impl std::fmt::Debug for KeyMaterial {
    // Never print key bytes (an HMAC secret is a secret).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyMaterial::Rsa(_) => "Rsa",
            KeyMaterial::P256(_) => "P256",
            KeyMaterial::P384(_) => "P384",
            KeyMaterial::Ed25519(_) => "Ed25519",
            KeyMaterial::Oct(_) => "Oct(<secret>)",
        })
    }
}

/// One verification key from a JWKS.
#[derive(Debug, Clone)]
pub struct Jwk {
    /// `kid`, used only as an exact lookup key.
    pub kid: Option<String>,
    /// The key's own `alg`, which then is the only algorithm it verifies.
    pub alg: Option<Alg>,
    /// The key.
    pub material: KeyMaterial,
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
        let material = match kty {
            "RSA" => {
                for private in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
                    if v.get(private).is_some() {
                        return bad(
                            "RSA key contains private members; publish only the public key",
                        );
                    }
                }
                let (n_be, e_be) = (b64(v, "n")?, b64(v, "e")?);
                let n = rsa::BigUint::from_bytes_be(&n_be);
                let e = rsa::BigUint::from_bytes_be(&e_be);
                let bits = n.bits();
                if bits < policy.min_rsa_bits {
                    return bad(format!(
                        "RSA key of {bits} bits is below the {} bit minimum",
                        policy.min_rsa_bits
                    ));
                }
                // The `rsa` crate's checks (modulus size, exponent bounds) gate the key; the
                // precomputed Montgomery form is what verifies, built once here.
                if let Err(e) = rsa::RsaPublicKey::new(n, e) {
                    return bad(format!("invalid RSA key: {e}"));
                }
                match crate::rsa_fast::RsaPublic::new(&n_be, &e_be) {
                    Some(k) => KeyMaterial::Rsa(Box::new(k)),
                    None => return bad("invalid RSA key"),
                }
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
                    let (Ok(x), Ok(y)) =
                        (<[u8; 32]>::try_from(&x[..]), <[u8; 32]>::try_from(&y[..]))
                    else {
                        return bad("`x`/`y` must be 32 bytes for P-256");
                    };
                    let key = if policy.precompute {
                        crate::p256_fast::P256Public::from_affine(&x, &y)
                    } else {
                        crate::p256_fast::P256Public::from_affine_one_shot(&x, &y)
                    };
                    match key {
                        Some(k) => KeyMaterial::P256(Box::new(k)),
                        None => return bad("EC point is not on P-256"),
                    }
                } else {
                    let mut point = Vec::with_capacity(1 + 2 * width);
                    point.push(0x04);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    match p384::ecdsa::VerifyingKey::from_sec1_bytes(&point) {
                        Ok(k) => KeyMaterial::P384(k),
                        Err(_) => return bad("EC point is not on P-384"),
                    }
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
                let Ok(x) = <[u8; 32]>::try_from(&b64(v, "x")?[..]) else {
                    return bad("`x` is not a 32-byte Ed25519 key");
                };
                // Non-canonical encodings and small-order points are refused, as by
                // ed25519-compact, whose verdicts the fast verifier reproduces.
                let key = if policy.precompute {
                    crate::ed25519_fast::Ed25519Public::from_bytes(&x)
                } else {
                    crate::ed25519_fast::Ed25519Public::from_bytes_one_shot(&x)
                };
                match key {
                    Some(k) => KeyMaterial::Ed25519(Box::new(k)),
                    None => return bad("`x` is not an acceptable Ed25519 public key"),
                }
            }
            "oct" => {
                if !policy.allow_symmetric {
                    return bad("symmetric (`oct`) keys are not allowed here");
                }
                let k = b64(v, "k")?;
                if k.len() < 32 {
                    return bad("HMAC key must be at least 32 bytes (RFC 7518 §3.2)");
                }
                KeyMaterial::Oct(k)
            }
            other => return bad(format!("unsupported `kty` `{other}`")),
        };
        let jwk = Jwk { kid, alg, material };
        if let Some(a) = alg {
            if !jwk.fits(a) {
                return bad(format!("`alg` {} does not fit a `{kty}` key", a.name()));
            }
        }
        Ok(jwk)
    }

    /// True when the key type can verify `alg` (ignoring the key's own `alg`).
    fn fits(&self, alg: Alg) -> bool {
        match (&self.material, alg) {
            (
                KeyMaterial::Rsa(_),
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512,
            ) => true,
            (KeyMaterial::P256(_), Alg::ES256) | (KeyMaterial::P384(_), Alg::ES384) => true,
            (KeyMaterial::Ed25519(_), Alg::EdDSA) => true,
            (KeyMaterial::Oct(k), Alg::HS256) => k.len() >= 32,
            (KeyMaterial::Oct(k), Alg::HS384) => k.len() >= 48,
            (KeyMaterial::Oct(k), Alg::HS512) => k.len() >= 64,
            _ => false,
        }
    }

    /// True when this key may verify a token signed with `alg`: the key type fits and, if the
    /// key names its own `alg`, it is that one.
    pub fn supports(&self, alg: Alg) -> bool {
        self.alg.is_none_or(|a| a == alg) && self.fits(alg)
    }
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
    fn alg_names_are_case_sensitive() {
        assert_eq!(Alg::parse("RS256"), Some(Alg::RS256));
        for n in ["none", "None", "NONE", "nOnE", "rs256", "ES512", ""] {
            assert_eq!(Alg::parse(n), None, "{n}");
        }
    }
}
