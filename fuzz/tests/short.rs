//! The short fuzz run of `make test`: every target from a fixed seed, for a bounded number of
//! cases and at most a few seconds each; any panic or broken invariant fails the test with the
//! seed, the case and the input. `PORTCULLIS_FUZZ_SEED` (decimal or 0x-hex) picks another seed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use portcullis_fuzz::engine::{self, Options, Verdict};
use portcullis_fuzz::{target, TARGETS};
use std::path::PathBuf;
use std::time::Duration;

/// The seed `make test` uses unless told otherwise: the same cases on every run, so a red
/// test is red again on the next run and on the developer's machine.
const DEFAULT_SEED: u64 = 0x5eed_f022;

fn opts(cases: u64, seconds: u64) -> Options {
    let seed = std::env::var("PORTCULLIS_FUZZ_SEED")
        .ok()
        .map(|s| engine::parse_seed(&s).expect("PORTCULLIS_FUZZ_SEED is a number"))
        .unwrap_or(DEFAULT_SEED);
    Options {
        seed,
        max_cases: Some(cases),
        max_time: Some(Duration::from_secs(seconds)),
        corpus: Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/corpus"
        ))),
        trace: None,
        failures: Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/fuzz-failures"
        ))),
    }
}

fn run(name: &str, cases: u64, seconds: u64) {
    let t = target(name).unwrap();
    let summary = engine::run(t, &opts(cases, seconds)).unwrap();
    println!("{summary}");
    if let Some(f) = &summary.failure {
        panic!("{f}");
    }
    // A run that accepted nothing explored nothing past the first error: the grammar is broken.
    assert!(summary.accepted > 0, "{summary}");
}

#[test]
fn jws() {
    run("jws", 40_000, 10);
}

#[test]
fn path() {
    run("path", 40_000, 8);
}

#[test]
fn pbstruct() {
    run("pbstruct", 60_000, 6);
}

#[test]
fn pbstruct_roundtrip() {
    run("pbstruct-roundtrip", 100_000, 6);
}

#[test]
fn json() {
    run("json", 150_000, 10);
}

#[test]
fn keytable() {
    run("keytable", 40_000, 6);
}

#[test]
fn headermap() {
    run("headermap", 60_000, 6);
}

#[test]
fn every_target_has_a_test_here() {
    let names = [
        "jws",
        "path",
        "pbstruct",
        "pbstruct-roundtrip",
        "json",
        "keytable",
        "headermap",
    ];
    assert_eq!(TARGETS.len(), names.len());
    for t in TARGETS {
        assert!(
            names.contains(&t.name),
            "{} has no test in short.rs",
            t.name
        );
    }
}

#[test]
fn a_planted_bug_is_caught_with_its_seed_and_input() {
    // The engine itself must be able to fail: a check that panics on one byte pattern.
    fn check(input: &[u8]) -> Result<Verdict, String> {
        if input.windows(2).any(|w| w == b"%2") {
            panic!("planted");
        }
        if input.len() > 40 {
            return Err("planted invariant".into());
        }
        Ok(Verdict::Accepted)
    }
    let mut t = *target("path").unwrap();
    t.check = check;
    t.seeds = Vec::new;
    let o = Options {
        corpus: None,
        failures: None,
        ..opts(100_000, 30)
    };
    let s = engine::run(&t, &o).unwrap();
    let f = s.failure.expect("the planted bug is found");
    let report = f.to_string();
    assert!(report.contains(&format!("{:#x}", o.seed)), "{report}");
    assert!(report.contains("input ("), "{report}");
    assert!(f.panicked || f.message == "planted invariant");
    // Replaying the reported input reproduces it; the same seed reaches the same case.
    assert!(engine::replay(&t, &f.input).is_err());
    let again = engine::run(&t, &o).unwrap().failure.unwrap();
    assert_eq!((again.case, again.input), (f.case, f.input));
}

#[test]
fn the_seed_tokens_verify() {
    // Without valid seeds the JWS target would never get past the signature check.
    let t = target("jws").unwrap();
    let seeds = (t.seeds)();
    // HS256/384/512 with the 64-byte secret, HS256 with the 32-byte one, EdDSA, ES256, RS256/384/512.
    assert_eq!(seeds.len(), 9);
    for s in &seeds {
        assert_eq!(
            (t.check)(s),
            Ok(Verdict::Accepted),
            "{}",
            String::from_utf8_lossy(s)
        );
    }
}
