//! Project Wycheproof vectors through the verification core, as plain data.
//!
//! Lives in the library (not in a test) so that the very same code runs twice: natively under
//! `cargo test` and compiled to wasm32-wasip1 by the `authn-conformance` binary, whose module
//! `make test` runs in V8 (Node), the engine Envoy embeds. The arithmetic differs between the
//! two targets (limb sizes, backends chosen by pointer width), so agreement on one proves
//! nothing about the other.
//!
//! Every `invalid` vector must be rejected and every `valid` one accepted; `acceptable` vectors
//! are counted and either verdict is allowed. Known exceptions are listed with their reason and
//! must still occur (a stale entry is reported).

use crate::jwk::{Alg, Jwk, KeyPolicy};
use crate::jws;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use std::path::Path;

/// (file, tcId, why our verdict differs from the label).
pub const EXCEPTIONS: &[(&str, u64, &str)] = &[
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

/// How a vector file is fed to the verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Whole compact JWS tokens with their JWK (`json_web_signature_test.json`).
    Jws,
    /// Raw (key, message, signature) triples verified with one algorithm.
    Raw(Alg),
}

/// Every vector file the verifier is held to.
pub const FILES: &[(&str, Family)] = &[
    ("json_web_signature_test.json", Family::Jws),
    (
        "rsa_signature_2048_sha256_test.json",
        Family::Raw(Alg::RS256),
    ),
    (
        "rsa_signature_2048_sha384_test.json",
        Family::Raw(Alg::RS384),
    ),
    (
        "rsa_signature_2048_sha512_test.json",
        Family::Raw(Alg::RS512),
    ),
    (
        "rsa_signature_3072_sha256_test.json",
        Family::Raw(Alg::RS256),
    ),
    (
        "rsa_signature_4096_sha256_test.json",
        Family::Raw(Alg::RS256),
    ),
    (
        "rsa_pss_2048_sha256_mgf1_32_test.json",
        Family::Raw(Alg::PS256),
    ),
    (
        "ecdsa_secp256r1_sha256_p1363_test.json",
        Family::Raw(Alg::ES256),
    ),
    (
        "ecdsa_secp384r1_sha384_p1363_test.json",
        Family::Raw(Alg::ES384),
    ),
    ("ed25519_test.json", Family::Raw(Alg::EdDSA)),
];

/// Verdicts of one file against its labels.
#[derive(Debug, Default)]
pub struct Report {
    /// The vector file.
    pub file: String,
    /// Vectors whose verdict matched a `valid`/`invalid` label.
    pub agree: usize,
    /// `acceptable` vectors (either verdict allowed).
    pub acceptable: usize,
    /// Listed exceptions that occurred.
    pub exceptions: Vec<u64>,
    /// Listed exceptions that did not occur (the list is stale).
    pub stale_exceptions: Vec<u64>,
    /// Vectors whose verdict contradicts their label.
    pub disagreements: Vec<String>,
}

impl Report {
    /// True when every labelled vector agreed, every exception occurred and something ran.
    pub fn passed(&self) -> bool {
        self.disagreements.is_empty() && self.stale_exceptions.is_empty() && self.agree > 0
    }

    fn check(&mut self, t: &Value, accepted: bool) {
        let id = t["tcId"].as_u64().unwrap_or(0);
        let label = t["result"].as_str().unwrap_or("");
        let agrees = match label {
            "valid" => accepted,
            "invalid" => !accepted,
            _ => {
                self.acceptable += 1;
                return;
            }
        };
        let listed = EXCEPTIONS
            .iter()
            .any(|(f, i, _)| *f == self.file && *i == id);
        if listed && !agrees {
            self.exceptions.push(id);
        } else if agrees && !listed {
            self.agree += 1;
        } else {
            let why = if listed {
                "listed as an exception but now agrees with its label"
            } else if accepted {
                "expected rejected, got accepted"
            } else {
                "expected accepted, got rejected"
            };
            self.disagreements
                .push(format!("tc{id} ({}): {why}", t["comment"]));
        }
    }

    fn finish(mut self) -> Self {
        self.stale_exceptions = EXCEPTIONS
            .iter()
            .filter(|(f, i, _)| *f == self.file && !self.exceptions.contains(i))
            .map(|(_, i, _)| *i)
            .collect();
        self
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wycheproof {}: {} agree, {} acceptable, {} documented exceptions {:?}, {} stale exceptions {:?}, {} disagree",
            self.file,
            self.agree,
            self.acceptable,
            self.exceptions.len(),
            self.exceptions,
            self.stale_exceptions.len(),
            self.stale_exceptions,
            self.disagreements.len()
        )?;
        for d in &self.disagreements {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// Runs one vector file from `dir`. An unreadable or malformed file is an error, never a pass.
pub fn run_file(dir: &Path, file: &str, family: Family) -> Result<Report, String> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let groups = doc["testGroups"]
        .as_array()
        .ok_or_else(|| format!("{file}: no testGroups"))?;
    let mut report = Report {
        file: file.to_owned(),
        ..Report::default()
    };
    for group in groups {
        let tests = group["tests"]
            .as_array()
            .ok_or_else(|| format!("{file}: a group without tests"))?;
        match family {
            Family::Jws => jws_group(group, tests, &mut report),
            Family::Raw(alg) => raw_group(group, tests, alg, &mut report)?,
        }
    }
    Ok(report.finish())
}

/// Runs every file of [`FILES`].
pub fn run_all(dir: &Path) -> Result<Vec<Report>, String> {
    FILES
        .iter()
        .map(|(file, family)| run_file(dir, file, *family))
        .collect()
}

fn jws_group(group: &Value, tests: &[Value], report: &mut Report) {
    let jwk = group.get("public").or_else(|| group.get("private"));
    // Keys the loader refuses (encryption keys, P-521, private members) verify nothing.
    let key = jwk.and_then(|k| Jwk::parse(k, &KeyPolicy::default()).ok());
    for t in tests {
        let accepted = match (&key, t["jws"].as_str()) {
            (Some(k), Some(token)) => {
                jws::verify(token, std::slice::from_ref(k), &Alg::ALL).is_ok()
            }
            // JSON serialization (an object) is not supported: always rejected.
            _ => false,
        };
        report.check(t, accepted);
    }
}

fn raw_group(group: &Value, tests: &[Value], alg: Alg, report: &mut Report) -> Result<(), String> {
    // Raw vectors include 1024-bit keys in some groups; the verifier's arithmetic is what is
    // under test here, so the size floor is lowered for them (configs keep 2048).
    let policy = KeyPolicy {
        min_rsa_bits: 1024,
        allow_symmetric: false,
        precompute: true,
    };
    let mut jwk = match group.get("publicKeyJwk").or_else(|| group.get("keyJwk")) {
        Some(j) => j.clone(),
        None => ec_jwk(group),
    };
    if let Some(o) = jwk.as_object_mut() {
        // The vectors' own `alg`/`kid` fields are labels, not constraints under test.
        o.remove("alg");
        o.remove("kid");
    }
    let key = Jwk::parse(&jwk, &policy);
    for t in tests {
        let field = |name: &str| {
            t[name]
                .as_str()
                .and_then(hex)
                .ok_or_else(|| format!("{}: tc{} has no hex {name}", report.file, t["tcId"]))
        };
        let (msg, sig) = (field("msg")?, field("sig")?);
        let accepted = match &key {
            Ok(k) => jws::verify_signature(k, alg, &msg, &sig),
            Err(_) => false,
        };
        report.check(t, accepted);
    }
    Ok(())
}

/// Some ECDSA groups (the special-case `r`/`s` keys) give only the uncompressed point.
fn ec_jwk(group: &Value) -> Value {
    let pk = &group["publicKey"];
    let (Some(point), Some(curve)) = (
        pk["uncompressed"].as_str().and_then(hex),
        pk["curve"].as_str(),
    ) else {
        return Value::Null;
    };
    let crv = match curve {
        "secp256r1" => "P-256",
        "secp384r1" => "P-384",
        _ => return Value::Null,
    };
    let w = point.len().saturating_sub(1) / 2;
    let (Some(x), Some(y)) = (point.get(1..1 + w), point.get(1 + w..)) else {
        return Value::Null;
    };
    serde_json::json!({
        "kty": "EC",
        "crv": crv,
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
    })
}

/// Decodes lowercase or uppercase hex (the vectors' encoding); `None` if it is not hex.
pub fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}
