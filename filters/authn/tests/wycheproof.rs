//! Project Wycheproof vectors through the authn verification core: every `invalid` vector must
//! be rejected and every `valid` one (for a supported algorithm) accepted. `acceptable` vectors
//! are counted, either verdict is allowed. Exceptions are listed with their reason below, and
//! each must still occur (a stale entry fails the test).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use portcullis_authn::jwk::{Alg, Jwk, KeyPolicy};
use portcullis_authn::jws;
use serde_json::Value;
use std::path::PathBuf;

/// (file, tcId, why our verdict differs from the label).
const EXCEPTIONS: &[(&str, u64, &str)] = &[
    (
        "json_web_signature_test.json",
        346,
        "RFC 7520 PS384 example checked against a JWK whose own `alg` is PS256: a key's `alg` binds it (RFC 7517 §4.4), so PS384 is refused by design",
    ),
    (
        "json_web_signature_test.json",
        350,
        "same as tc346 (key_ops variant): the key declares PS256, the token uses PS384",
    ),
    (
        "json_web_signature_test.json",
        367,
        "labelled invalid, but the stored token is canonical unpadded base64url with a correct MAC (the padding defect the label names is not in it), so it verifies (known-inconsistent vector)",
    ),
    (
        "json_web_signature_test.json",
        370,
        "labelled invalid but identical to tc367 (a correct, canonical token): accepted (known-inconsistent vector)",
    ),
    (
        "json_web_signature_test.json",
        372,
        "labelled valid but the header segment contains `?`, which is not base64url: refused as malformed (known-inconsistent vector)",
    ),
    (
        "json_web_signature_test.json",
        373,
        "labelled valid but the payload segment contains `?`, which is not base64url: refused as malformed (known-inconsistent vector)",
    ),
    (
        "json_web_signature_test.json",
        347,
        "RFC 7520 ES512 (P-521) example: P-521 is not a supported algorithm, so the key is refused at load",
    ),
    (
        "json_web_signature_test.json",
        351,
        "RFC 7520 ES512 (P-521) example with key_ops: P-521 is not supported",
    ),
];

fn dir() -> Option<PathBuf> {
    let d = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/wycheproof"
    ));
    if d.is_dir() {
        return Some(d);
    }
    let msg = format!(
        "Wycheproof vectors not found at {} (../shared/testdata beside the repository)",
        d.display()
    );
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

fn load(name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir()?.join(name)).unwrap();
    Some(serde_json::from_str(&text).unwrap())
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Tallies verdicts against labels.
#[derive(Default)]
struct Tally {
    passed: usize,
    acceptable: usize,
    exceptions: Vec<u64>,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, file: &str, t: &Value, accepted: bool) {
        let id = t["tcId"].as_u64().unwrap();
        let label = t["result"].as_str().unwrap();
        let agrees = match label {
            "valid" => accepted,
            "invalid" => !accepted,
            _ => {
                self.acceptable += 1;
                return;
            }
        };
        if EXCEPTIONS.iter().any(|(f, i, _)| *f == file && *i == id) {
            assert!(
                !agrees,
                "{file} tc{id} is listed as an exception but now agrees with its label: remove it"
            );
            self.exceptions.push(id);
        } else if agrees {
            self.passed += 1;
        } else {
            self.failures.push(format!(
                "{file} tc{id} ({}; flags {}): expected {label}, got {}",
                t["comment"],
                t["flags"],
                if accepted { "accepted" } else { "rejected" }
            ));
        }
    }

    fn finish(self, file: &str) {
        println!(
            "wycheproof {file}: {} agree, {} acceptable, {} documented exceptions {:?}, {} disagree",
            self.passed,
            self.acceptable,
            self.exceptions.len(),
            self.exceptions,
            self.failures.len()
        );
        let expected: Vec<u64> = EXCEPTIONS
            .iter()
            .filter(|(f, _, _)| *f == file)
            .map(|(_, i, _)| *i)
            .collect();
        for id in expected {
            assert!(
                self.exceptions.contains(&id),
                "exception {file} tc{id} did not occur: remove it"
            );
        }
        assert!(
            self.failures.is_empty(),
            "disagreements:\n{}",
            self.failures.join("\n")
        );
        assert!(self.passed > 0, "{file}: no vector was checked");
    }
}

#[test]
fn json_web_signature_vectors() {
    let file = "json_web_signature_test.json";
    let Some(doc) = load(file) else { return };
    let mut tally = Tally::default();
    for group in doc["testGroups"].as_array().unwrap() {
        let jwk = group.get("public").or_else(|| group.get("private"));
        // Keys the loader refuses (encryption keys, P-521, private members) verify nothing.
        let key = jwk.and_then(|k| Jwk::parse(k, &KeyPolicy::default()).ok());
        for t in group["tests"].as_array().unwrap() {
            let accepted = match (&key, t["jws"].as_str()) {
                (Some(k), Some(token)) => {
                    jws::verify(token, std::slice::from_ref(k), &Alg::ALL).is_ok()
                }
                // JSON serialization (an object) is not supported: always rejected.
                _ => false,
            };
            tally.check(file, t, accepted);
        }
    }
    tally.finish(file);
}

fn raw_family(file: &str, alg: Alg) {
    let Some(doc) = load(file) else { return };
    let mut tally = Tally::default();
    // Raw vectors include 1024-bit keys in some groups; the verifier's arithmetic is what is
    // under test here, so the size floor is lowered for them (configs keep 2048).
    let policy = KeyPolicy {
        min_rsa_bits: 1024,
        allow_symmetric: false,
    };
    for group in doc["testGroups"].as_array().unwrap() {
        let mut jwk = group
            .get("publicKeyJwk")
            .or_else(|| group.get("keyJwk"))
            .cloned()
            .unwrap_or_else(|| ec_jwk(group));
        if let Some(o) = jwk.as_object_mut() {
            // The vectors' own `alg`/`kid` fields are labels, not constraints under test.
            o.remove("alg");
            o.remove("kid");
        }
        let key = Jwk::parse(&jwk, &policy);
        for t in group["tests"].as_array().unwrap() {
            let accepted = match &key {
                Ok(k) => jws::verify_signature(
                    k,
                    alg,
                    &hex(t["msg"].as_str().unwrap()),
                    &hex(t["sig"].as_str().unwrap()),
                ),
                Err(_) => false,
            };
            tally.check(file, t, accepted);
        }
    }
    tally.finish(file);
}

/// Some ECDSA groups (the special-case `r`/`s` keys) give only the uncompressed point.
fn ec_jwk(group: &Value) -> Value {
    use base64::Engine;
    let pk = &group["publicKey"];
    let (Some(point), Some(curve)) = (pk["uncompressed"].as_str(), pk["curve"].as_str()) else {
        return Value::Null;
    };
    let p = hex(point);
    let w = (p.len() - 1) / 2;
    let b = |x: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x);
    let crv = match curve {
        "secp256r1" => "P-256",
        "secp384r1" => "P-384",
        _ => return Value::Null,
    };
    serde_json::json!({"kty": "EC", "crv": crv, "x": b(&p[1..1 + w]), "y": b(&p[1 + w..])})
}

#[test]
fn rsa_pkcs1_2048_sha256() {
    raw_family("rsa_signature_2048_sha256_test.json", Alg::RS256);
}

#[test]
fn rsa_pkcs1_2048_sha384() {
    raw_family("rsa_signature_2048_sha384_test.json", Alg::RS384);
}

#[test]
fn rsa_pkcs1_2048_sha512() {
    raw_family("rsa_signature_2048_sha512_test.json", Alg::RS512);
}

#[test]
fn rsa_pkcs1_3072_sha256() {
    raw_family("rsa_signature_3072_sha256_test.json", Alg::RS256);
}

#[test]
fn rsa_pkcs1_4096_sha256() {
    raw_family("rsa_signature_4096_sha256_test.json", Alg::RS256);
}

#[test]
fn rsa_pss_2048_sha256() {
    raw_family("rsa_pss_2048_sha256_mgf1_32_test.json", Alg::PS256);
}

#[test]
fn ecdsa_p256_p1363() {
    raw_family("ecdsa_secp256r1_sha256_p1363_test.json", Alg::ES256);
}

#[test]
fn ecdsa_p384_p1363() {
    raw_family("ecdsa_secp384r1_sha384_p1363_test.json", Alg::ES384);
}

#[test]
fn ed25519() {
    raw_family("ed25519_test.json", Alg::EdDSA);
}
