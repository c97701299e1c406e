//! Project Wycheproof raw-signature vectors through [`VerifyingKey`], as plain data (test support, feature `wycheproof`).
//!
//! Lives in the library (behind a feature, not in a test) so that the very same code runs
//! twice: natively under `cargo test` (`tests/wycheproof.rs`) and compiled to wasm32-wasip1 by
//! the `jose-conformance` binary, whose module `make test` runs in V8 (Node), the engine Envoy
//! embeds. The arithmetic differs between the two targets (limb sizes, backends chosen by
//! pointer width), so agreement on one proves nothing about the other.
//!
//! Every `invalid` vector must be rejected and every `valid` one accepted; `acceptable` vectors
//! are counted and either verdict is allowed. Known exceptions are listed with their reason and
//! must still occur (a stale entry is reported). Keys are read from the vectors' raw hex fields,
//! so no JWK parser is involved; P-256 and Ed25519 keys are loaded both with and without their
//! per-key tables and must agree. [`Report`] is public so that callers holding a JWS parser (the
//! authn filter's tests) run the token-level vectors with the same bookkeeping.

use crate::{Alg, Precompute, VerifyingKey};
use serde_json::Value;
use std::path::Path;

/// A vector whose verdict is known to differ from its label, and why.
#[derive(Debug, Clone, Copy)]
pub struct Exception {
    /// The vector file.
    pub file: &'static str,
    /// The vector's `tcId`.
    pub tc_id: u64,
    /// Why our verdict differs from the label.
    pub why: &'static str,
}

/// Every raw-signature vector file the arithmetic is held to, with the algorithm it verifies.
pub const RAW_FILES: &[(&str, Alg)] = &[
    ("rsa_signature_2048_sha256_test.json", Alg::RS256),
    ("rsa_signature_2048_sha384_test.json", Alg::RS384),
    ("rsa_signature_2048_sha512_test.json", Alg::RS512),
    ("rsa_signature_3072_sha256_test.json", Alg::RS256),
    ("rsa_signature_4096_sha256_test.json", Alg::RS256),
    ("rsa_pss_2048_sha256_mgf1_32_test.json", Alg::PS256),
    ("ecdsa_secp256r1_sha256_p1363_test.json", Alg::ES256),
    ("ecdsa_secp384r1_sha384_p1363_test.json", Alg::ES384),
    ("ed25519_test.json", Alg::EdDSA),
];

/// Verdicts of one file against its labels.
#[derive(Debug)]
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
    /// Vectors whose verdict contradicts their label (or whose key load modes disagree).
    pub disagreements: Vec<String>,
    known: &'static [Exception],
}

impl Report {
    /// An empty report for `file`, with the exceptions that apply to it (others are ignored).
    pub fn new(file: &str, known: &'static [Exception]) -> Self {
        Report {
            file: file.to_owned(),
            agree: 0,
            acceptable: 0,
            exceptions: Vec::new(),
            stale_exceptions: Vec::new(),
            disagreements: Vec::new(),
            known,
        }
    }

    /// True when every labelled vector agreed, every exception occurred and something ran.
    pub fn passed(&self) -> bool {
        self.disagreements.is_empty() && self.stale_exceptions.is_empty() && self.agree > 0
    }

    /// Records the verdict on one test case (`tcId`, `result`, `comment` as in the vectors).
    pub fn check(&mut self, t: &Value, accepted: bool) {
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
        let listed = self
            .known
            .iter()
            .any(|x| x.file == self.file && x.tc_id == id);
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

    /// Records a problem that is not a verdict against a label (e.g. two key load modes
    /// disagreeing); it fails the report.
    pub fn fail(&mut self, t: &Value, why: &str) {
        self.disagreements
            .push(format!("tc{} ({}): {why}", t["tcId"], t["comment"]));
    }

    /// Closes the report: lists the exceptions for this file that did not occur.
    pub fn finish(mut self) -> Self {
        self.stale_exceptions = self
            .known
            .iter()
            .filter(|x| x.file == self.file && !self.exceptions.contains(&x.tc_id))
            .map(|x| x.tc_id)
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

/// Reads one vector file from `dir` and returns its test groups. An unreadable or malformed
/// file is an error, never an empty pass.
pub fn load_groups(dir: &Path, file: &str) -> Result<Vec<Value>, String> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut doc: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    match doc.get_mut("testGroups").map(Value::take) {
        Some(Value::Array(groups)) if !groups.is_empty() => Ok(groups),
        _ => Err(format!("{file}: no testGroups")),
    }
}

/// The test cases of one group.
pub fn tests_of<'g>(file: &str, group: &'g Value) -> Result<&'g [Value], String> {
    group["tests"]
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("{file}: a group without tests"))
}

/// Runs one raw-signature vector file from `dir` through [`VerifyingKey::verify`] with `alg`.
pub fn run_raw_file(dir: &Path, file: &str, alg: Alg) -> Result<Report, String> {
    let mut report = Report::new(file, &[]);
    for group in load_groups(dir, file)? {
        // Keys the loader refuses verify nothing: each of their vectors counts as rejected.
        // Both load modes must agree on the key and on every verdict.
        let keys = [Precompute::Tables, Precompute::OneShot].map(|p| raw_key(&group, alg, p));
        let [with_tables, one_shot] = &keys;
        for t in tests_of(file, &group)? {
            let field = |name: &str| {
                t[name]
                    .as_str()
                    .and_then(hex)
                    .ok_or_else(|| format!("{file}: tc{} has no hex {name}", t["tcId"]))
            };
            let (msg, sig) = (field("msg")?, field("sig")?);
            let verdict =
                |k: &Option<VerifyingKey>| k.as_ref().is_some_and(|k| k.verify(alg, &msg, &sig));
            let accepted = verdict(with_tables);
            if verdict(one_shot) != accepted || with_tables.is_some() != one_shot.is_some() {
                report.fail(t, "verdicts with and without per-key tables differ");
            }
            report.check(t, accepted);
        }
    }
    Ok(report.finish())
}

/// Runs every file of [`RAW_FILES`].
pub fn run_all_raw(dir: &Path) -> Result<Vec<Report>, String> {
    RAW_FILES
        .iter()
        .map(|(file, alg)| run_raw_file(dir, file, *alg))
        .collect()
}

/// The group's public key from its raw hex fields, loaded as `alg` needs it; `None` when the
/// key is refused (some groups hold deliberately bad keys) or absent.
fn raw_key(group: &Value, alg: Alg, precompute: Precompute) -> Option<VerifyingKey> {
    let pk = &group["publicKey"];
    let field = |name: &str| pk[name].as_str().and_then(hex);
    match alg {
        Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
            VerifyingKey::rsa(&field("modulus")?, &field("publicExponent")?).ok()
        }
        Alg::ES256 | Alg::ES384 => {
            // `uncompressed` is 04 || x || y with fixed-width coordinates.
            let point = field("uncompressed")?;
            let (&tag, xy) = point.split_first()?;
            let (x, y) = xy.split_at_checked(xy.len() / 2)?;
            if tag != 4 {
                return None;
            }
            if alg == Alg::ES256 {
                VerifyingKey::p256(x, y, precompute).ok()
            } else {
                VerifyingKey::p384(x, y).ok()
            }
        }
        Alg::EdDSA => VerifyingKey::ed25519(&field("pk")?, precompute).ok(),
        Alg::HS256 | Alg::HS384 | Alg::HS512 => None,
    }
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
