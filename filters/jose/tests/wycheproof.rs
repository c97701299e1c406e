//! Project Wycheproof raw-signature vectors through `VerifyingKey`, natively. The same
//! `wycheproof` code runs compiled to wasm32 in V8 from `tests/tests/conformance_wasm.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use portcullis_jose::wycheproof::{self, RAW_FILES};
use portcullis_jose::Alg;
use std::path::PathBuf;

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

fn run(file: &str) {
    let Some(dir) = dir() else { return };
    let alg = RAW_FILES
        .iter()
        .find(|(f, _)| *f == file)
        .map(|(_, a)| *a)
        .unwrap();
    let report = wycheproof::run_raw_file(&dir, file, alg).unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
}

#[test]
fn every_file_is_run() {
    // The per-file tests below name each file; this keeps RAW_FILES and the tests in step.
    assert_eq!(RAW_FILES.len(), 9);
    for alg in [Alg::RS256, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA] {
        assert!(RAW_FILES.iter().any(|(_, a)| *a == alg), "{alg:?}");
    }
}

#[test]
fn a_missing_or_malformed_file_is_an_error_not_a_pass() {
    let Some(dir) = dir() else { return };
    assert!(wycheproof::run_raw_file(&dir, "no_such_file.json", Alg::RS256).is_err());
    // A file that is not JSON.
    assert!(wycheproof::run_raw_file(&dir, "LICENSE", Alg::RS256).is_err());
}

#[test]
fn rsa_pkcs1_2048_sha256() {
    run("rsa_signature_2048_sha256_test.json");
}

#[test]
fn rsa_pkcs1_2048_sha384() {
    run("rsa_signature_2048_sha384_test.json");
}

#[test]
fn rsa_pkcs1_2048_sha512() {
    run("rsa_signature_2048_sha512_test.json");
}

#[test]
fn rsa_pkcs1_3072_sha256() {
    run("rsa_signature_3072_sha256_test.json");
}

#[test]
fn rsa_pkcs1_4096_sha256() {
    run("rsa_signature_4096_sha256_test.json");
}

#[test]
fn rsa_pss_2048_sha256() {
    run("rsa_pss_2048_sha256_mgf1_32_test.json");
}

#[test]
fn ecdsa_p256_p1363() {
    run("ecdsa_secp256r1_sha256_p1363_test.json");
}

#[test]
fn ecdsa_p384_p1363() {
    run("ecdsa_secp384r1_sha384_p1363_test.json");
}

#[test]
fn ed25519() {
    run("ed25519_test.json");
}
