//! Project Wycheproof vectors through the authn verification core, natively. The same
//! `conformance` code runs compiled to wasm32 in V8 from `tests/tests/conformance_wasm.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use portcullis_authn::conformance::{self, Family};
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
    let family = conformance::FILES
        .iter()
        .find(|(f, _)| *f == file)
        .map(|(_, fam)| *fam)
        .unwrap();
    let report = conformance::run_file(&dir, file, family).unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
}

#[test]
fn every_file_is_run() {
    // The per-file tests below name each file; this keeps FILES and the tests in step.
    assert_eq!(conformance::FILES.len(), 10);
    assert!(conformance::FILES.iter().any(|(_, f)| *f == Family::Jws));
}

#[test]
fn json_web_signature_vectors() {
    run("json_web_signature_test.json");
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
