//! Public keys prepared once for verification, and the one entry point that checks a JWS
//! signature with them.
//!
//! Every constructor validates its material (RSA size and exponent bounds, points on their
//! curve, canonical non-small-order Ed25519 keys, HMAC secrets of at least 32 bytes), so a
//! [`VerifyingKey`] that exists can be used on every request without further checks.

use crate::ed25519_fast::Ed25519Public;
use crate::p256_fast::P256Public;
use crate::rsa_fast::{self, Hash, RsaPublic};
use crate::Alg;

/// How much work a key load does for later verifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precompute {
    /// Build per-key tables (P-256: ~52 KiB, Ed25519: ~77 KiB, a few ms once) so that every
    /// later verification is several times faster: for configured and fetched keys.
    #[default]
    Tables,
    /// No per-key table: for a key that verifies once (a DPoP proof's own `jwk`), where the
    /// table would cost more than the verification it speeds up.
    OneShot,
}

/// What kind of key a [`VerifyingKey`] holds (no key bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA (RS256/384/512, PS256/384/512).
    Rsa,
    /// ECDSA on P-256 (ES256).
    P256,
    /// ECDSA on P-384 (ES384).
    P384,
    /// Ed25519 (EdDSA).
    Ed25519,
    /// An HMAC secret (HS256/384/512).
    Hmac,
}

/// Why key material was refused. Value-free (never echoes key bytes): safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The RSA modulus or exponent is unusable (even or tiny modulus, `e` out of bounds…).
    Rsa(String),
    /// A coordinate or key is not the fixed width its curve requires, in bytes.
    Length {
        /// The width required.
        expected: usize,
    },
    /// Not a point on P-256: a coordinate `>= p`, off the curve, or the identity.
    NotOnP256,
    /// Not a point on P-384.
    NotOnP384,
    /// Not an acceptable Ed25519 key: non-canonical, not on the curve, or of small order.
    Ed25519,
    /// An HMAC secret shorter than 32 bytes (RFC 7518 §3.2: at least the hash output size).
    HmacTooShort,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Rsa(why) => write!(f, "invalid RSA key: {why}"),
            KeyError::Length { expected } => write!(f, "must be {expected} bytes"),
            KeyError::NotOnP256 => f.write_str("EC point is not on P-256"),
            KeyError::NotOnP384 => f.write_str("EC point is not on P-384"),
            KeyError::Ed25519 => f.write_str("not an acceptable Ed25519 public key"),
            KeyError::HmacTooShort => {
                f.write_str("HMAC key must be at least 32 bytes (RFC 7518 §3.2)")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// A public key (or HMAC secret) prepared for repeated verification.
#[derive(Clone)]
pub struct VerifyingKey(Inner);

#[derive(Clone)]
enum Inner {
    Rsa(Box<RsaPublic>),
    P256(Box<P256Public>),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(Box<Ed25519Public>),
    Hmac(Box<HmacKey>),
}

/// An HMAC secret and, for HS256, both hash states after their key block: in RFC 2104 the first
/// 64-byte block of the inner and of the outer hash is the padded key alone, so it is hashed once
/// here instead of twice per token (two of the ten or so SHA-256 blocks of a typical JWT).
#[derive(Clone)]
struct HmacKey {
    secret: Vec<u8>,
    hs256_inner: hmac_sha256::Hash,
    hs256_outer: hmac_sha256::Hash,
}

impl HmacKey {
    fn new(secret: &[u8]) -> Self {
        // RFC 2104 §2: a key longer than the block is hashed first; a shorter one is padded
        // with zeros to the block.
        let hashed;
        let k: &[u8] = if secret.len() > 64 {
            hashed = hmac_sha256::Hash::hash(secret);
            &hashed
        } else {
            secret
        };
        let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
        for (i, &b) in k.iter().enumerate() {
            ipad[i] ^= b;
            opad[i] ^= b;
        }
        let (mut hs256_inner, mut hs256_outer) =
            (hmac_sha256::Hash::new(), hmac_sha256::Hash::new());
        hs256_inner.update(ipad);
        hs256_outer.update(opad);
        HmacKey {
            secret: secret.to_vec(),
            hs256_inner,
            hs256_outer,
        }
    }

    /// HMAC-SHA-256 of `input` under this key, from the prepared states.
    fn hs256(&self, input: &[u8]) -> [u8; 32] {
        let mut inner = self.hs256_inner;
        inner.update(input);
        let mut outer = self.hs256_outer;
        outer.update(inner.finalize());
        outer.finalize()
    }
}

impl std::fmt::Debug for VerifyingKey {
    // Never print key bytes (an HMAC secret is a secret).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Rsa(k) => write!(f, "Rsa({} bits)", k.bits()),
            Inner::P256(_) => f.write_str("P256"),
            Inner::P384(_) => f.write_str("P384"),
            Inner::Ed25519(_) => f.write_str("Ed25519"),
            Inner::Hmac(_) => f.write_str("Hmac(<secret>)"),
        }
    }
}

impl VerifyingKey {
    /// An RSA public key from its big-endian modulus and exponent (leading zero bytes allowed).
    ///
    /// The `rsa` crate's checks gate it (modulus at most 4096 bits, `e` at most `2^33 - 1`),
    /// then [`RsaPublic::new`]'s (odd modulus of at least 512 bits, odd `e >= 3`, `e < n`), and
    /// its Montgomery form is built, once. A minimum modulus size is key policy, left to the
    /// caller ([`rsa_bits`](Self::rsa_bits)).
    pub fn rsa(n_be: &[u8], e_be: &[u8]) -> Result<Self, KeyError> {
        let n = rsa::BigUint::from_bytes_be(n_be);
        let e = rsa::BigUint::from_bytes_be(e_be);
        if let Err(e) = rsa::RsaPublicKey::new(n, e) {
            return Err(KeyError::Rsa(e.to_string()));
        }
        RsaPublic::new(n_be, e_be)
            .map(|k| VerifyingKey(Inner::Rsa(Box::new(k))))
            .ok_or_else(|| KeyError::Rsa("modulus or exponent not usable".into()))
    }

    /// An ECDSA P-256 public key from its affine coordinates (32 big-endian bytes each).
    pub fn p256(x: &[u8], y: &[u8], precompute: Precompute) -> Result<Self, KeyError> {
        let (Ok(x), Ok(y)) = (<&[u8; 32]>::try_from(x), <&[u8; 32]>::try_from(y)) else {
            return Err(KeyError::Length { expected: 32 });
        };
        let key = match precompute {
            Precompute::Tables => P256Public::from_affine(x, y),
            Precompute::OneShot => P256Public::from_affine_one_shot(x, y),
        };
        key.map(|k| VerifyingKey(Inner::P256(Box::new(k))))
            .ok_or(KeyError::NotOnP256)
    }

    /// An ECDSA P-384 public key from its affine coordinates (48 big-endian bytes each).
    pub fn p384(x: &[u8], y: &[u8]) -> Result<Self, KeyError> {
        if x.len() != 48 || y.len() != 48 {
            return Err(KeyError::Length { expected: 48 });
        }
        let mut point = Vec::with_capacity(97);
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        // Rejects coordinates >= p, points off the curve and the identity.
        p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
            .map(|k| VerifyingKey(Inner::P384(k)))
            .map_err(|_| KeyError::NotOnP384)
    }

    /// An Ed25519 public key from its 32-byte encoding. Non-canonical encodings and
    /// small-order points are refused, as by `ed25519-compact`, whose verdicts
    /// [`ed25519_fast`](crate::ed25519_fast) reproduces.
    pub fn ed25519(a: &[u8], precompute: Precompute) -> Result<Self, KeyError> {
        let Ok(a) = <&[u8; 32]>::try_from(a) else {
            return Err(KeyError::Length { expected: 32 });
        };
        let key = match precompute {
            Precompute::Tables => Ed25519Public::from_bytes(a),
            Precompute::OneShot => Ed25519Public::from_bytes_one_shot(a),
        };
        key.map(|k| VerifyingKey(Inner::Ed25519(Box::new(k))))
            .ok_or(KeyError::Ed25519)
    }

    /// An HMAC secret. At least 32 bytes; HS384 and HS512 further need 48 and 64
    /// ([`fits`](Self::fits)).
    pub fn hmac(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::HmacTooShort);
        }
        Ok(VerifyingKey(Inner::Hmac(Box::new(HmacKey::new(secret)))))
    }

    /// The kind of key.
    pub fn key_type(&self) -> KeyType {
        match &self.0 {
            Inner::Rsa(_) => KeyType::Rsa,
            Inner::P256(_) => KeyType::P256,
            Inner::P384(_) => KeyType::P384,
            Inner::Ed25519(_) => KeyType::Ed25519,
            Inner::Hmac(_) => KeyType::Hmac,
        }
    }

    /// The modulus size in bits, for an RSA key.
    pub fn rsa_bits(&self) -> Option<usize> {
        match &self.0 {
            Inner::Rsa(k) => Some(k.bits()),
            _ => None,
        }
    }

    /// True when this key can verify `alg`: the key type matches, and an HMAC secret is at
    /// least as long as the hash output (RFC 7518 §3.2).
    pub fn fits(&self, alg: Alg) -> bool {
        match (&self.0, alg) {
            (
                Inner::Rsa(_),
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512,
            ) => true,
            (Inner::P256(_), Alg::ES256)
            | (Inner::P384(_), Alg::ES384)
            | (Inner::Ed25519(_), Alg::EdDSA) => true,
            (Inner::Hmac(k), Alg::HS256) => k.secret.len() >= 32,
            (Inner::Hmac(k), Alg::HS384) => k.secret.len() >= 48,
            (Inner::Hmac(k), Alg::HS512) => k.secret.len() >= 64,
            _ => false,
        }
    }

    /// Verifies `signature` over a JWS signing input under `alg`. A key that does not
    /// [`fit`](Self::fits) `alg` never verifies; malformed signatures (wrong length, `s >= n`,
    /// ECDSA `r`/`s` outside `[1, n-1]`, non-canonical EdDSA `s`) are refused, never panic.
    pub fn verify(&self, alg: Alg, signing_input: &[u8], signature: &[u8]) -> bool {
        use p384::ecdsa::signature::Verifier as _;
        use sha2::Digest as _;
        if !self.fits(alg) {
            return false;
        }
        let input = signing_input;
        match (&self.0, alg) {
            (Inner::Rsa(k), Alg::RS256) => {
                rsa_fast::verify_pkcs1v15(k, Hash::Sha256, input, signature)
            }
            (Inner::Rsa(k), Alg::RS384) => {
                rsa_fast::verify_pkcs1v15(k, Hash::Sha384, input, signature)
            }
            (Inner::Rsa(k), Alg::RS512) => {
                rsa_fast::verify_pkcs1v15(k, Hash::Sha512, input, signature)
            }
            // PSS with salt length = hash length (RFC 7518 §3.5), and s < n enforced (the `rsa`
            // crate's `RsaPublicKey::verify` did not, leaving PS* signatures malleable).
            (Inner::Rsa(k), Alg::PS256) => rsa_fast::verify_pss(k, Hash::Sha256, input, signature),
            (Inner::Rsa(k), Alg::PS384) => rsa_fast::verify_pss(k, Hash::Sha384, input, signature),
            (Inner::Rsa(k), Alg::PS512) => rsa_fast::verify_pss(k, Hash::Sha512, input, signature),
            // P1363 (r || s): wrong lengths and r or s outside [1, n-1] are refused.
            (Inner::P256(k), Alg::ES256) => {
                k.verify_prehashed(&sha2::Sha256::digest(input).into(), signature)
            }
            (Inner::P384(k), Alg::ES384) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| k.verify(input, &sig).is_ok()),
            (Inner::Ed25519(k), Alg::EdDSA) => k.verify(input, signature),
            (Inner::Hmac(k), Alg::HS256) => ct_eq(&k.hs256(input), signature),
            (Inner::Hmac(k), Alg::HS384) => {
                ct_eq(&hmac_sha512::sha384::HMAC::mac(input, &k.secret), signature)
            }
            (Inner::Hmac(k), Alg::HS512) => {
                ct_eq(&hmac_sha512::HMAC::mac(input, &k.secret), signature)
            }
            _ => false,
        }
    }
}

/// Constant-time equality for MAC tags (the length is public).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7515 Appendix A.3 (ES256) public key.
    const P256_X: [u8; 32] = [
        127, 205, 206, 39, 112, 246, 196, 93, 65, 131, 203, 238, 111, 219, 75, 123, 88, 7, 51, 53,
        123, 233, 239, 19, 186, 207, 110, 60, 123, 209, 84, 69,
    ];
    const P256_Y: [u8; 32] = [
        199, 241, 68, 205, 27, 189, 155, 126, 135, 44, 223, 237, 185, 238, 185, 244, 179, 105, 93,
        110, 169, 11, 36, 173, 138, 70, 35, 40, 133, 136, 229, 173,
    ];

    #[test]
    fn p256_key_loads_in_both_modes_and_fits_only_es256() {
        for pre in [Precompute::Tables, Precompute::OneShot] {
            let k = VerifyingKey::p256(&P256_X, &P256_Y, pre).unwrap();
            assert_eq!(k.key_type(), KeyType::P256);
            for a in Alg::ALL {
                assert_eq!(k.fits(a), a == Alg::ES256, "{a:?}");
            }
        }
        let mut y = P256_Y;
        y[31] ^= 1;
        assert_eq!(
            VerifyingKey::p256(&P256_X, &y, Precompute::Tables).unwrap_err(),
            KeyError::NotOnP256
        );
        assert_eq!(
            VerifyingKey::p256(&P256_X[..31], &P256_Y, Precompute::Tables).unwrap_err(),
            KeyError::Length { expected: 32 }
        );
    }

    #[test]
    fn hmac_secret_length_limits_algorithms_and_is_never_printed() {
        assert_eq!(
            VerifyingKey::hmac(&[7; 31]).unwrap_err(),
            KeyError::HmacTooShort
        );
        let k = VerifyingKey::hmac(&[7; 48]).unwrap();
        assert!(k.fits(Alg::HS256) && k.fits(Alg::HS384) && !k.fits(Alg::HS512));
        assert!(!k.fits(Alg::RS256));
        assert_eq!(format!("{k:?}"), "Hmac(<secret>)");
    }

    #[test]
    fn hmac_verifies_its_own_tag_only_under_its_algorithm() {
        let k = VerifyingKey::hmac(&[9; 64]).unwrap();
        let tag = hmac_sha256::HMAC::mac(b"a.b", [9u8; 64]);
        assert!(k.verify(Alg::HS256, b"a.b", &tag));
        assert!(!k.verify(Alg::HS256, b"a.c", &tag));
        assert!(!k.verify(Alg::HS512, b"a.b", &tag));
        assert!(!k.verify(Alg::HS256, b"a.b", &tag[..31]));
        let mut bad = tag;
        bad[31] ^= 0x80;
        assert!(!k.verify(Alg::HS256, b"a.b", &bad));
    }

    /// The prepared HS256 states give `HMAC::mac`'s tag for every key length around the block
    /// size (short, exactly 64, hashed first above 64) and inputs across block boundaries.
    #[test]
    fn prepared_hs256_states_agree_with_the_one_shot_mac() {
        for key_len in (32..=80).chain([127, 128, 129, 200]) {
            let key: Vec<u8> = (0..key_len).map(|i| (i * 37 + key_len) as u8).collect();
            let prepared = HmacKey::new(&key);
            for input_len in (0..=200).chain([511, 512, 513, 1000]) {
                let input: Vec<u8> = (0..input_len).map(|i| (i * 11 + 3) as u8).collect();
                assert_eq!(
                    prepared.hs256(&input),
                    hmac_sha256::HMAC::mac(&input, &key),
                    "key {key_len} bytes, input {input_len} bytes"
                );
            }
        }
    }

    #[test]
    fn rsa_keys_outside_the_rsa_crate_bounds_are_refused() {
        // An even modulus, a tiny one, and an even exponent.
        let mut n = vec![0xc5u8; 256];
        assert!(VerifyingKey::rsa(&n, &[1, 0, 1]).is_ok());
        n[255] = 0xc4;
        assert!(matches!(
            VerifyingKey::rsa(&n, &[1, 0, 1]),
            Err(KeyError::Rsa(_))
        ));
        assert!(VerifyingKey::rsa(&[0xc5; 16], &[1, 0, 1]).is_err());
        assert!(VerifyingKey::rsa(&[0xc5; 256], &[1, 0, 0]).is_err());
        assert_eq!(
            VerifyingKey::rsa(&[0xc5; 256], &[1, 0, 1])
                .unwrap()
                .rsa_bits(),
            Some(2048)
        );
    }

    #[test]
    fn malformed_signatures_are_refused_not_panics() {
        let keys = [
            VerifyingKey::rsa(&[0xc5; 256], &[1, 0, 1]).unwrap(),
            VerifyingKey::p256(&P256_X, &P256_Y, Precompute::OneShot).unwrap(),
            VerifyingKey::hmac(&[1; 64]).unwrap(),
        ];
        for k in &keys {
            for a in Alg::ALL {
                for sig in [&[][..], &[0u8; 1], &[0xff; 64], &[0xff; 256], &[0; 512]] {
                    assert!(!k.verify(a, b"x.y", sig), "{k:?} {a:?} {}", sig.len());
                }
            }
        }
    }
}
