//! Compact JWS (RFC 7515) parsing and signature verification, independent of what the payload
//! means, so the same code is checked against the Wycheproof JWS vectors.
//!
//! The header is parsed strictly: unpadded canonical base64url, a JSON object, no duplicate
//! members we act on, `crit` refused (no extension is understood), `b64: false` refused.
//! `jku`, `x5u`, `jwk` and `x5c` are never read: keys come from configuration only.

use crate::jwk::{Alg, Jwk};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine};
use serde::Deserialize;
use std::borrow::Cow;

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

/// The protected header members Portcullis reads, borrowed from the decoded header where they
/// hold no escape. Unknown members are ignored; a duplicated member that is read here is an
/// error (serde refuses duplicate struct fields). `typ` is only read to keep it as strict as it
/// has been (a string or null, once): nothing acts on it.
#[derive(Debug, Deserialize)]
struct Header<'a> {
    /// Algorithm.
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    /// Key id (exact lookup only).
    #[serde(borrow)]
    kid: Option<Cow<'a, str>>,
    /// Token type.
    #[serde(borrow, rename = "typ")]
    _typ: Option<Cow<'a, str>>,
    /// Critical extensions: any value is refused.
    crit: Option<serde_json::Value>,
    /// RFC 7797 unencoded payload flag: `false` is refused.
    b64: Option<serde_json::Value>,
}

/// A compact JWS split into its parts, header decoded, signature not yet checked.
#[derive(Debug, Clone)]
pub struct Compact<'a> {
    /// The parsed algorithm.
    pub alg: Alg,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: the bytes that are signed.
    pub signing_input: &'a str,
    /// The base64url payload segment.
    pub payload_b64: &'a str,
    /// `kid`, payload and signature, decoded, end to end in one buffer (one allocation).
    decoded: Vec<u8>,
    /// Length of the `kid` at the start of `decoded`, if the header has one.
    kid_len: Option<usize>,
    /// Where the payload starts in `decoded`.
    payload_at: usize,
    /// Where the signature starts in `decoded`.
    signature_at: usize,
}

impl Compact<'_> {
    /// The protected header's `kid` (its UTF-8 bytes, unescaped), if any.
    pub fn kid(&self) -> Option<&[u8]> {
        self.kid_len.and_then(|n| self.decoded.get(..n))
    }

    /// The payload, decoded (once: its encoding is checked here, and the claims layer reads it).
    pub fn payload(&self) -> &[u8] {
        self.decoded
            .get(self.payload_at..self.signature_at)
            .unwrap_or_default()
    }

    /// The decoded signature.
    pub fn signature(&self) -> &[u8] {
        self.decoded.get(self.signature_at..).unwrap_or_default()
    }
}

/// Bytes of decoded header kept on the stack: a JOSE header is a few dozen.
const HEADER_BUF: usize = 512;

/// Decodes unpadded, canonical base64url (non-zero trailing bits are refused).
pub fn b64url(s: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| JwsError::Malformed)
}

/// Splits a compact JWS and decodes its header; does not verify anything cryptographic.
pub fn parse(token: &str) -> Result<Compact<'_>, JwsError> {
    // Three segments: the header ends at the first dot, the signature starts after the last.
    // The payload is not searched for a further dot: base64url has none, so its decoding
    // refuses one, and a header refusal below yields to it (a token of four or more segments
    // is malformed, whatever its header says).
    let (Some(first), Some(last)) = (token.find('.'), token.rfind('.')) else {
        return Err(JwsError::Malformed);
    };
    if first == last {
        return Err(JwsError::Malformed);
    }
    let (h, p, s) = (&token[..first], &token[first + 1..last], &token[last + 1..]);
    let refuse = |e: JwsError| {
        if p.contains('.') {
            JwsError::Malformed
        } else {
            e
        }
    };
    // A header longer than the buffer (no token in practice) is decoded onto the heap.
    let mut buf = [0u8; HEADER_BUF];
    let heap;
    let header_bytes: &[u8] = match URL_SAFE_NO_PAD.decode_slice(h, &mut buf) {
        Ok(n) => &buf[..n],
        Err(DecodeSliceError::OutputSliceTooSmall) => {
            heap = b64url(h)?;
            &heap
        }
        Err(DecodeSliceError::DecodeError(_)) => return Err(JwsError::Malformed),
    };
    if header_bytes.first() != Some(&b'{') {
        return Err(JwsError::Malformed);
    }
    let header: Header<'_> =
        serde_json::from_slice(header_bytes).map_err(|_| JwsError::Malformed)?;
    if header.crit.is_some() {
        return Err(refuse(JwsError::UnsupportedHeader));
    }
    if let Some(b) = &header.b64 {
        if b != &serde_json::Value::Bool(true) {
            return Err(refuse(JwsError::UnsupportedHeader));
        }
    }
    let alg = header
        .alg
        .as_deref()
        .and_then(Alg::parse)
        .ok_or_else(|| refuse(JwsError::UnsupportedAlgorithm))?;
    // Validate the payload encoding here, before any key is looked at; the claims layer reads
    // the decoded bytes. Room for three bytes per (started) group of four characters, as the
    // decoder reserves it: the buffer is allocated once.
    let kid = header.kid.as_deref().map(str::as_bytes);
    let room = |seg: &str| seg.len().div_ceil(4) * 3;
    let mut decoded = Vec::with_capacity(kid.map_or(0, <[u8]>::len) + room(p) + room(s));
    if let Some(k) = kid {
        decoded.extend_from_slice(k);
    }
    let payload_at = decoded.len();
    URL_SAFE_NO_PAD
        .decode_vec(p, &mut decoded)
        .map_err(|_| JwsError::Malformed)?;
    let signature_at = decoded.len();
    URL_SAFE_NO_PAD
        .decode_vec(s, &mut decoded)
        .map_err(|_| JwsError::Malformed)?;
    Ok(Compact {
        alg,
        signing_input: &token[..h.len() + 1 + p.len()],
        payload_b64: p,
        decoded,
        kid_len: kid.map(<[u8]>::len),
        payload_at,
        signature_at,
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
/// that support the algorithm. An iterator, so picking them allocates nothing.
pub fn candidate_keys<'k: 'c, 'c>(
    keys: &'k [Jwk],
    compact: &'c Compact<'_>,
) -> impl Iterator<Item = &'k Jwk> + Clone + 'c {
    let kid = compact.kid();
    let alg = compact.alg;
    let limit = match kid {
        Some(_) => usize::MAX,
        None => MAX_KEYS_WITHOUT_KID,
    };
    keys.iter()
        .filter(move |k| {
            let named = match kid {
                Some(kid) => k.kid.as_deref().map(str::as_bytes) == Some(kid),
                None => true,
            };
            named && k.supports(alg)
        })
        .take(limit)
}

/// Parses and verifies a compact JWS against a key set, returning the decoded payload.
pub fn verify(token: &str, keys: &[Jwk], allowed: &[Alg]) -> Result<Vec<u8>, JwsError> {
    let c = parse(token)?;
    if !allowed.contains(&c.alg) {
        return Err(JwsError::UnsupportedAlgorithm);
    }
    let ok = candidate_keys(keys, &c)
        .any(|k| verify_signature(k, c.alg, c.signing_input.as_bytes(), c.signature()));
    if !ok {
        return Err(JwsError::BadSignature);
    }
    Ok(c.payload().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::fake::TestRng;

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

    /// The header as it was read before it was borrowed: every member an owned `String`.
    #[derive(Deserialize)]
    struct OwnedHeader {
        alg: Option<String>,
        kid: Option<String>,
        #[allow(dead_code)]
        typ: Option<String>,
        crit: Option<serde_json::Value>,
        b64: Option<serde_json::Value>,
    }

    /// Algorithm, `kid`, payload and signature.
    type Parsed = (Alg, Option<String>, Vec<u8>, Vec<u8>);

    /// The long way: the owned header, then the same checks in the same order.
    fn reference(token: &str) -> Result<Parsed, JwsError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed);
        };
        let bytes = b64url(h)?;
        if bytes.first() != Some(&b'{') {
            return Err(JwsError::Malformed);
        }
        let header: OwnedHeader =
            serde_json::from_slice(&bytes).map_err(|_| JwsError::Malformed)?;
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
        let payload = b64url(p)?;
        let signature = b64url(s)?;
        Ok((alg, header.kid, payload, signature))
    }

    /// Generated headers (every member read, duplicated, escaped, of every kind of value,
    /// unknown members, headers too long for the stack buffer), and one-byte changes of them:
    /// the same algorithm and `kid`, or the same error, as the owned header gives.
    #[test]
    fn borrowed_header_agrees_with_owned_header() {
        const NAMES: &[&str] = &[
            "alg",
            "\\u0061lg",
            "kid",
            "ki\\u0064",
            "typ",
            "crit",
            "b64",
            "x5u",
            "jwk",
            "algg",
            "",
        ];
        const VALUES: &[&str] = &[
            "\"HS256\"",
            "\"RS256\"",
            "\"H\\u005356\"",
            "\"none\"",
            "\"k-1\"",
            "\"k\\\"1\"",
            "\"\"",
            "null",
            "true",
            "false",
            "1",
            "1e999",
            "[\"exp\"]",
            "{}",
            "{\"a\":[1,{}]}",
        ];
        let mut rng = TestRng::new(0x2545_f491_4f6c_dd1d);
        for round in 0..4000 {
            let mut members: Vec<String> = (0..rng.below(6))
                .map(|_| {
                    let ws = [" ", "", "\n"][rng.below(3)];
                    format!(
                        "{ws}\"{}\"{ws}:{ws}{}",
                        NAMES[rng.below(NAMES.len())],
                        VALUES[rng.below(VALUES.len())]
                    )
                })
                .collect();
            if round % 7 == 0 {
                members.push(format!("\"pad\":\"{}\"", "x".repeat(rng.below(900))));
            }
            let header = format!("{{{}}}", members.join(","));
            let mut variants = vec![header.clone().into_bytes()];
            let mut changed = header.into_bytes();
            let at = rng.below(changed.len());
            let swaps = b"{}[]\",:\\ 0a\x80\xc3\xe2\xff";
            changed[at] = swaps[rng.below(swaps.len())];
            variants.push(changed);
            for bytes in variants {
                const SEGMENTS: &[&str] = &[
                    "e3.0.",
                    ".",
                    "..",
                    "",
                    "e30",
                    "eyJpc3MiOiJ4In0",
                    "AA",
                    "AB",
                    "A",
                    "A=",
                    "-_8",
                    "e3.0",
                ];
                let head = URL_SAFE_NO_PAD.encode(&bytes);
                let (p, s) = (
                    SEGMENTS[rng.below(SEGMENTS.len())],
                    SEGMENTS[rng.below(SEGMENTS.len())],
                );
                for t in [
                    format!("{head}.{p}.{s}"),
                    format!("{head}.{p}"),
                    head.clone(),
                ] {
                    let fast = parse(&t).map(|c| {
                        let kid = c.kid().map(|k| String::from_utf8(k.to_vec()).unwrap());
                        (c.alg, kid, c.payload().to_vec(), c.signature().to_vec())
                    });
                    assert_eq!(fast, reference(&t), "{t}");
                }
            }
        }
    }

    /// Generated key sets (kids shared, missing, escaped in the token; keys limited to an
    /// algorithm or not) and tokens: the same keys, in the same order, as collecting them did.
    #[test]
    fn candidate_keys_agree_with_collected_list() {
        fn collected<'k>(keys: &'k [Jwk], alg: Alg, kid: Option<&str>) -> Vec<&'k Jwk> {
            match kid {
                Some(kid) => keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid) && k.supports(alg))
                    .collect(),
                None => keys
                    .iter()
                    .filter(|k| k.supports(alg))
                    .take(MAX_KEYS_WITHOUT_KID)
                    .collect(),
            }
        }
        let kids = [None, Some("a"), Some("b"), Some("é")];
        let algs = [None, Some(Alg::HS256), Some(Alg::HS384), Some(Alg::RS256)];
        let mut rng = TestRng::new(0x5851_f42d_4c95_7f2d);
        for _ in 0..2000 {
            let keys: Vec<Jwk> = (0..rng.below(7))
                .map(|i| Jwk {
                    kid: kids[rng.below(kids.len())].map(str::to_string),
                    alg: algs[rng.below(algs.len())],
                    key: portcullis_jose::VerifyingKey::hmac(&[u8::try_from(i).unwrap(); 32])
                        .unwrap(),
                })
                .collect();
            let alg = [Alg::HS256, Alg::HS384, Alg::HS512][rng.below(3)];
            let (kid_json, kid) = [
                ("", None),
                (r#","kid":"a""#, Some("a")),
                (r#","kid":"\u0062""#, Some("b")),
                (r#","kid":"\u00e9""#, Some("é")),
                (r#","kid":"c""#, Some("c")),
            ][rng.below(5)];
            let header = format!(r#"{{"alg":"{}"{kid_json}}}"#, alg.name());
            let t = format!("{}.e30.AA", URL_SAFE_NO_PAD.encode(&header));
            let c = parse(&t).unwrap();
            let fast: Vec<*const Jwk> = candidate_keys(&keys, &c).map(std::ptr::from_ref).collect();
            let long: Vec<*const Jwk> = collected(&keys, alg, kid)
                .into_iter()
                .map(std::ptr::from_ref)
                .collect();
            assert_eq!(fast, long, "{header}");
        }
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
