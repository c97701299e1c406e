//! Compact JWS tokens: a key set the fuzzer can sign with, reference verifiers from other
//! crates for the oracle, a token generator and segment-aware mutations.
//!
//! Because the fuzzer holds every private key, it can re-sign a mutated header or payload, so
//! mutations reach the code behind the signature check instead of dying at it.

use crate::gen::json;
use crate::mutate;
use crate::rng::Rng;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use portcullis_authn::jwk::{Alg, Jwk, KeyPolicy};
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::sync::OnceLock;

/// Key material the fuzzer signs with and verifies against with reference crates.
enum Material {
    Hmac(Vec<u8>),
    Ed(ed25519_compact::KeyPair),
    Es(p256::ecdsa::SigningKey),
    Rs(Box<rsa::RsaPrivateKey>),
}

/// One key of the fuzz key set.
pub struct Key {
    /// `kid`, if the JWK has one.
    pub kid: Option<&'static str>,
    /// The JWK's own `alg`, if any.
    pub alg: Option<Alg>,
    material: Material,
}

/// The fuzz key set: the same keys as authn JWKs and as reference-crate keys.
pub struct Keys {
    /// Reference side, in JWKS order.
    pub keys: Vec<Key>,
    /// authn side: the JWKS the target verifies with.
    pub jwks: Vec<Jwk>,
}

/// The RSA key the fuzzer signs with (the DEMO ONLY key: generating one per run is slow).
const RSA_PEM: &str = include_str!("../../../policies/demo-keys/demo-rs256.key.pem");

/// The fuzz key set, built once per process.
pub fn keys() -> Result<&'static Keys, String> {
    static KEYS: OnceLock<Result<Keys, String>> = OnceLock::new();
    KEYS.get_or_init(build_keys).as_ref().map_err(Clone::clone)
}

fn build_keys() -> Result<Keys, String> {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let hs: Vec<u8> = Sha512::digest(b"portcullis-fuzz-hs").to_vec();
    let hs2: Vec<u8> = Sha256::digest(b"portcullis-fuzz-hs2").to_vec();
    let ed = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(
        Sha256::digest(b"portcullis-fuzz-ed").into(),
    ));
    let es = p256::ecdsa::SigningKey::from_slice(&Sha256::digest(b"portcullis-fuzz-es"))
        .map_err(|e| format!("P-256 fuzz key: {e}"))?;
    let rs = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PEM).map_err(|e| format!("RSA key: {e}"))?;
    let point = es.verifying_key().to_sec1_point(false);
    let (x, y) = match point
        .as_bytes()
        .get(1..33)
        .zip(point.as_bytes().get(33..65))
    {
        Some(xy) => xy,
        None => return Err("P-256 point encoding".into()),
    };
    let jwks = [
        json!({"kty": "oct", "kid": "hs", "k": b64(&hs)}),
        json!({"kty": "oct", "alg": "HS256", "k": b64(&hs2)}),
        json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed.pk.as_ref())}),
        json!({"kty": "EC", "crv": "P-256", "kid": "es", "x": b64(x), "y": b64(y)}),
        json!({"kty": "RSA", "kid": "rs", "n": b64(&rs.n().to_bytes_be()), "e": b64(&rs.e().to_bytes_be())}),
    ];
    let keys = vec![
        Key {
            kid: Some("hs"),
            alg: None,
            material: Material::Hmac(hs),
        },
        Key {
            kid: None,
            alg: Some(Alg::HS256),
            material: Material::Hmac(hs2),
        },
        Key {
            kid: Some("ed"),
            alg: None,
            material: Material::Ed(ed),
        },
        Key {
            kid: Some("es"),
            alg: None,
            material: Material::Es(es),
        },
        Key {
            kid: Some("rs"),
            alg: None,
            material: Material::Rs(Box::new(rs)),
        },
    ];
    let jwks = jwks
        .iter()
        .map(|j| Jwk::parse(j, &KeyPolicy::default()).map_err(|e| format!("fuzz JWK: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Keys { keys, jwks })
}

/// HMAC (RFC 2104) over SHA-2, written out here so the oracle does not share the MAC code of
/// the verifier under test.
fn hmac<D: Digest>(key: &[u8], msg: &[u8], block: usize) -> Vec<u8> {
    let mut k0 = if key.len() > block {
        D::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k0.resize(block, 0);
    let inner = D::new()
        .chain_update(k0.iter().map(|b| b ^ 0x36).collect::<Vec<u8>>())
        .chain_update(msg)
        .finalize();
    D::new()
        .chain_update(k0.iter().map(|b| b ^ 0x5c).collect::<Vec<u8>>())
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn hmac_alg(alg: Alg, key: &[u8], msg: &[u8]) -> Option<Vec<u8>> {
    match alg {
        Alg::HS256 => Some(hmac::<Sha256>(key, msg, 64)),
        Alg::HS384 => Some(hmac::<Sha384>(key, msg, 128)),
        Alg::HS512 => Some(hmac::<Sha512>(key, msg, 128)),
        _ => None,
    }
}

impl Key {
    /// RFC 7518's rules, restated: the key type fits the algorithm, an HMAC secret is at least
    /// the hash size, and a key with its own `alg` verifies only that one.
    pub fn fits(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match (&self.material, alg) {
            (Material::Hmac(k), Alg::HS256) => k.len() >= 32,
            (Material::Hmac(k), Alg::HS384) => k.len() >= 48,
            (Material::Hmac(k), Alg::HS512) => k.len() >= 64,
            (Material::Ed(_), Alg::EdDSA) | (Material::Es(_), Alg::ES256) => true,
            (
                Material::Rs(_),
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512,
            ) => true,
            _ => false,
        }
    }

    /// The reference crates' verdict (`ed25519-compact`, `p256`, `rsa`, HMAC written out).
    pub fn reference_verify(&self, alg: Alg, input: &[u8], sig: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        if !self.fits(alg) {
            return false;
        }
        match &self.material {
            Material::Hmac(k) => hmac_alg(alg, k, input).is_some_and(|mac| mac == sig),
            Material::Ed(kp) => ed25519_compact::Signature::from_slice(sig)
                .is_ok_and(|s| kp.pk.verify(input, &s).is_ok()),
            Material::Es(sk) => p256::ecdsa::Signature::from_slice(sig)
                .is_ok_and(|s| sk.verifying_key().verify(input, &s).is_ok()),
            Material::Rs(sk) => {
                let pk = sk.to_public_key();
                match alg {
                    Alg::RS256 => pk.verify(
                        rsa::Pkcs1v15Sign::new::<Sha256>(),
                        &Sha256::digest(input),
                        sig,
                    ),
                    Alg::RS384 => pk.verify(
                        rsa::Pkcs1v15Sign::new::<Sha384>(),
                        &Sha384::digest(input),
                        sig,
                    ),
                    Alg::RS512 => pk.verify(
                        rsa::Pkcs1v15Sign::new::<Sha512>(),
                        &Sha512::digest(input),
                        sig,
                    ),
                    _ => return pss_verify(pk, alg, input, sig),
                }
                .is_ok()
            }
        }
    }

    /// A signature by this key, when the fuzzer can make one for `alg` (not PSS: salts need a
    /// CSPRNG, and the arithmetic is the same as PKCS#1's).
    fn sign(&self, alg: Alg, input: &[u8]) -> Option<Vec<u8>> {
        use p256::ecdsa::signature::Signer as _;
        if !self.fits(alg) {
            return None;
        }
        match &self.material {
            Material::Hmac(k) => hmac_alg(alg, k, input),
            Material::Ed(kp) => Some(kp.sk.sign(input, None).to_vec()),
            Material::Es(sk) => {
                let s: p256::ecdsa::Signature = sk.sign(input);
                Some(s.to_bytes().to_vec())
            }
            Material::Rs(sk) => match alg {
                Alg::RS256 => sk
                    .sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(input))
                    .ok(),
                Alg::RS384 => sk
                    .sign(rsa::Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(input))
                    .ok(),
                Alg::RS512 => sk
                    .sign(rsa::Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(input))
                    .ok(),
                _ => None,
            },
        }
    }
}

fn pss_verify(pk: rsa::RsaPublicKey, alg: Alg, input: &[u8], sig: &[u8]) -> bool {
    use rsa::signature::Verifier as _;
    let Ok(sig) = rsa::pss::Signature::try_from(sig) else {
        return false;
    };
    match alg {
        Alg::PS256 => rsa::pss::VerifyingKey::<Sha256>::new(pk).verify(input, &sig),
        Alg::PS384 => rsa::pss::VerifyingKey::<Sha384>::new(pk).verify(input, &sig),
        Alg::PS512 => rsa::pss::VerifyingKey::<Sha512>::new(pk).verify(input, &sig),
        _ => return false,
    }
    .is_ok()
}

/// The keys a token may be checked with, by the rule authn documents: an exact `kid` match
/// among keys that fit the algorithm, or, without `kid`, the first three that fit.
pub fn candidates<'k>(keys: &'k [Key], kid: Option<&str>, alg: Alg) -> Vec<&'k Key> {
    match kid {
        Some(kid) => keys
            .iter()
            .filter(|k| k.kid == Some(kid) && k.fits(alg))
            .collect(),
        None => keys.iter().filter(|k| k.fits(alg)).take(3).collect(),
    }
}

const ALGS: &[&str] = &[
    "HS256", "HS384", "HS512", "EdDSA", "ES256", "RS256", "RS384", "RS512", "PS256", "PS384",
    "PS512", "ES384", "ES512", "none", "None", "NONE", "", "hs256", "HS256 ",
];
const KIDS: &[&str] = &["hs", "ed", "es", "rs", "nope", "", "HS", "hs\u{0}"];

/// A random protected header, as JSON text (duplicate members possible).
fn header(rng: &mut Rng) -> String {
    let mut members: Vec<String> = Vec::new();
    if !rng.chance(1, 16) {
        let alg = match rng.below(12) {
            0 => "null".to_owned(),
            1 => "1".to_owned(),
            2 => "[\"HS256\"]".to_owned(),
            _ => Value::from(*rng.pick(ALGS).unwrap_or(&"HS256")).to_string(),
        };
        members.push(format!("\"alg\":{alg}"));
    }
    if rng.chance(2, 3) {
        members.push(format!(
            "\"kid\":{}",
            Value::from(*rng.pick(KIDS).unwrap_or(&"hs"))
        ));
    }
    const EXTRA: &[&str] = &[
        "\"typ\":\"JWT\"",
        "\"typ\":\"dpop+jwt\"",
        "\"crit\":[\"exp\"]",
        "\"crit\":[]",
        "\"b64\":false",
        "\"b64\":true",
        "\"b64\":\"false\"",
        "\"jku\":\"https://evil.example/jwks\"",
        "\"x5u\":\"https://evil.example/x5\"",
        "\"jwk\":{\"kty\":\"oct\",\"k\":\"AAAA\"}",
        "\"x5c\":[\"AAAA\"]",
        "\"alg\":\"none\"",
        "\"alg\":\"HS256\"",
        "\"kid\":\"rs\"",
        "\"cty\":\"JWT\"",
    ];
    for _ in 0..rng.len(2) {
        members.push(rng.pick(EXTRA).unwrap_or(&"").to_string());
    }
    if rng.chance(1, 6) {
        let at = rng.below(members.len() + 1);
        members.insert(
            at,
            format!("\"x\":{}", String::from_utf8_lossy(&json::document(rng))),
        );
    }
    format!("{{{}}}", members.join(","))
}

/// The key the fuzzer signs a header with: the one its `kid` names, else the first that fits.
fn signer<'k>(keys: &'k Keys, header_json: &[u8]) -> Option<(&'k Key, Alg)> {
    let h: Value = serde_json::from_slice(header_json).ok()?;
    let alg = Alg::parse(h.get("alg")?.as_str()?)?;
    match h.get("kid").and_then(Value::as_str) {
        Some(kid) => keys.keys.iter().find(|k| k.kid == Some(kid) && k.fits(alg)),
        None => keys.keys.iter().find(|k| k.fits(alg)),
    }
    .map(|k| (k, alg))
}

/// A signature for `header.payload` when the fuzzer can make one, else random bytes.
fn signature(rng: &mut Rng, keys: &Keys, header_b64: &str, payload_b64: &str) -> Vec<u8> {
    let input = format!("{header_b64}.{payload_b64}");
    // An RSA signature costs a private-key operation (about a millisecond, most of a case's
    // time), so most RSA-headed tokens get a forged signature instead, which tests refusal.
    let signed = URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|h| signer(keys, &h))
        .filter(|(k, _)| !matches!(k.material, Material::Rs(_)) || rng.chance(1, 4))
        .and_then(|(k, alg)| k.sign(alg, input.as_bytes()));
    match signed {
        Some(s) if !rng.chance(1, 8) => s,
        _ => {
            let n = *rng
                .pick(&[0usize, 1, 31, 32, 48, 64, 65, 255, 256, 257])
                .unwrap_or(&64);
            (0..n).map(|_| rng.byte()).collect()
        }
    }
}

fn encode(rng: &mut Rng, bytes: &[u8]) -> String {
    match rng.below(24) {
        0 => URL_SAFE.encode(bytes),
        1 => STANDARD.encode(bytes),
        _ => URL_SAFE_NO_PAD.encode(bytes),
    }
}

/// A fresh token, usually well-formed and correctly signed.
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    let Ok(keys) = keys() else {
        return b"a.b.c".to_vec();
    };
    let header = header(rng);
    let h = encode(rng, header.as_bytes());
    let payload = if rng.chance(3, 4) {
        json::document(rng)
    } else {
        (0..rng.len(64)).map(|_| rng.byte()).collect()
    };
    let p = encode(rng, &payload);
    let s = signature(rng, keys, &h, &p);
    format!("{h}.{p}.{}", encode(rng, &s)).into_bytes()
}

/// Seeds: one correctly signed token per key and algorithm the fuzzer can sign.
pub fn seeds() -> Vec<Vec<u8>> {
    let Ok(keys) = keys() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let payload =
        URL_SAFE_NO_PAD.encode(br#"{"iss":"https://idp.example","sub":"s","exp":4102444800}"#);
    for key in &keys.keys {
        for alg in Alg::ALL {
            let header = match key.kid {
                Some(kid) => json!({"alg": alg.name(), "kid": kid, "typ": "JWT"}),
                None => json!({"alg": alg.name()}),
            };
            let h = URL_SAFE_NO_PAD.encode(header.to_string());
            let input = format!("{h}.{payload}");
            if let Some(sig) = key.sign(alg, input.as_bytes()) {
                out.push(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)).into_bytes());
            }
        }
    }
    out
}

/// A mutation that keeps the token's shape where it can: edit the header or payload (and
/// usually re-sign), damage the signature, re-encode a segment, or change the segments.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    const DICT: &[&[u8]] = &[b".", b"=", b"+", b"/", b"eyJ", b" ", b"AA", b"..", b"\n"];
    let (Ok(token), Ok(keys)) = (std::str::from_utf8(input), keys()) else {
        return mutate::bytes(rng, input, DICT);
    };
    let mut segs: Vec<String> = token.split('.').map(str::to_owned).collect();
    let resign = |rng: &mut Rng, segs: &mut Vec<String>| {
        if let (Some(h), Some(p)) = (segs.first().cloned(), segs.get(1).cloned()) {
            let s = URL_SAFE_NO_PAD.encode(signature(rng, keys, &h, &p));
            segs.truncate(2);
            segs.push(s);
        }
    };
    match rng.below(8) {
        0 | 1 => {
            // Edit the header: a member, or its JSON text.
            if let Some(h) = segs.first_mut() {
                let raw = URL_SAFE_NO_PAD.decode(h.as_bytes()).unwrap_or_default();
                let text = String::from_utf8_lossy(&raw).into_owned();
                let edited = match rng.below(3) {
                    0 => {
                        let alg = Value::from(*rng.pick(ALGS).unwrap_or(&""));
                        mutate::replace_one(
                            rng,
                            &text,
                            "\"alg\":",
                            &format!("\"alg\":{alg},\"alg\":"),
                        )
                    }
                    1 => {
                        let from = *rng.pick(ALGS).unwrap_or(&"HS256");
                        let to = *rng.pick(ALGS).unwrap_or(&"HS256");
                        mutate::replace_one(rng, &text, from, to)
                    }
                    _ => None,
                }
                .map(String::into_bytes)
                .unwrap_or_else(|| json::mutate(rng, &raw));
                *h = encode(rng, &edited);
            }
            if rng.chance(3, 4) {
                resign(rng, &mut segs);
            }
        }
        2 => {
            if let Some(p) = segs.get_mut(1) {
                let raw = URL_SAFE_NO_PAD.decode(p.as_bytes()).unwrap_or_default();
                let mutated = json::mutate(rng, &raw);
                *p = encode(rng, &mutated);
            }
            if rng.chance(3, 4) {
                resign(rng, &mut segs);
            }
        }
        3 => {
            if let Some(s) = segs.get_mut(2) {
                let raw = URL_SAFE_NO_PAD.decode(s.as_bytes()).unwrap_or_default();
                *s = URL_SAFE_NO_PAD.encode(mutate::bytes(rng, &raw, &[&[0], &[0xff]]));
            }
        }
        4 => resign(rng, &mut segs),
        5 => {
            // Re-encode one segment (padding, standard alphabet) or add/drop a segment.
            let at = rng.below(segs.len());
            match rng.below(3) {
                0 => {
                    if let Some(s) = segs.get_mut(at) {
                        let raw = URL_SAFE_NO_PAD.decode(s.as_bytes()).unwrap_or_default();
                        *s = if rng.chance(1, 2) {
                            URL_SAFE.encode(&raw)
                        } else {
                            STANDARD.encode(&raw)
                        };
                    }
                }
                1 => segs.insert(at, String::new()),
                _ => {
                    segs.remove(at);
                }
            }
        }
        _ => return mutate::bytes(rng, input, DICT),
    }
    segs.join(".").into_bytes()
}
