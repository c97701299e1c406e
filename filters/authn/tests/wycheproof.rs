//! Project Wycheproof JWS vectors (whole compact tokens with their JWK) through authn's JWK
//! loader and JWS verifier, natively. The raw-signature vectors, which hold the arithmetic
//! itself, run in `portcullis-jose` (natively and compiled to wasm32 in V8).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use portcullis_authn::jwk::{Alg, Jwk, KeyPolicy};
use portcullis_authn::jws;
use portcullis_jose::wycheproof::{self, Exception, Report};
use std::path::PathBuf;

const FILE: &str = "json_web_signature_test.json";

/// Vectors whose verdict differs from their label, by design or because the vector is
/// inconsistent; each must still occur (a stale entry fails the test).
const EXCEPTIONS: &[Exception] = &[
    Exception {
        file: FILE,
        tc_id: 346,
        why: "RFC 7520 PS384 example checked against a JWK whose own `alg` is PS256: a key's `alg` binds it (RFC 7517 §4.4), so PS384 is refused by design",
    },
    Exception {
        file: FILE,
        tc_id: 350,
        why: "same as tc346 (key_ops variant): the key declares PS256, the token uses PS384",
    },
    Exception {
        file: FILE,
        tc_id: 367,
        why: "labelled invalid, but the stored token is canonical unpadded base64url with a correct MAC (the padding defect the label names is not in it), so it verifies (known-inconsistent vector)",
    },
    Exception {
        file: FILE,
        tc_id: 370,
        why: "labelled invalid but identical to tc367 (a correct, canonical token): accepted (known-inconsistent vector)",
    },
    Exception {
        file: FILE,
        tc_id: 372,
        why: "labelled valid but the header segment contains `?`, which is not base64url: refused as malformed (known-inconsistent vector)",
    },
    Exception {
        file: FILE,
        tc_id: 373,
        why: "labelled valid but the payload segment contains `?`, which is not base64url: refused as malformed (known-inconsistent vector)",
    },
    Exception {
        file: FILE,
        tc_id: 347,
        why: "RFC 7520 ES512 (P-521) example: P-521 is not a supported algorithm, so the key is refused at load",
    },
    Exception {
        file: FILE,
        tc_id: 351,
        why: "RFC 7520 ES512 (P-521) example with key_ops: P-521 is not supported",
    },
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

#[test]
fn json_web_signature_vectors() {
    let Some(dir) = dir() else { return };
    let mut report = Report::new(FILE, EXCEPTIONS);
    for group in wycheproof::load_groups(&dir, FILE).unwrap() {
        let jwk = group.get("public").or_else(|| group.get("private"));
        // Keys the loader refuses (encryption keys, P-521, private members) verify nothing.
        let key = jwk.and_then(|k| Jwk::parse(k, &KeyPolicy::default()).ok());
        for t in wycheproof::tests_of(FILE, &group).unwrap() {
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
    let report = report.finish();
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.exceptions.len(), EXCEPTIONS.len());
}
