//! The Wycheproof raw-signature vectors through the verification arithmetic compiled to
//! wasm32-wasip1 by `make build` (the `jose-conformance` module, built in the filters' cargo
//! invocation and release profile), run in V8 through Node's WASI. Native runs are
//! `filters/jose/tests/wycheproof.rs`; both use `portcullis_jose::wycheproof`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use portcullis_tests::harness::repo_root;
use std::path::PathBuf;
use std::process::Command;

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn skip_or_fail(msg: &str) {
    assert!(!under_ci(), "{msg} — under CI=true this is a failure");
    eprintln!("SKIPPED: {msg}");
}

#[test]
fn wycheproof_in_v8() {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let module = target.join("wasm32-wasip1/release/jose-conformance.wasm");
    if !module.is_file() {
        return skip_or_fail(&format!("{} not built: run `make build`", module.display()));
    }
    let vectors = repo_root().join("../shared/testdata/wycheproof");
    if !vectors.is_dir() {
        return skip_or_fail(&format!(
            "Wycheproof vectors not found at {}",
            vectors.display()
        ));
    }
    let out = match Command::new("node")
        .arg("--no-warnings")
        .arg(repo_root().join("tests/wasi-run.mjs"))
        .arg(&module)
        .arg(&vectors)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            return skip_or_fail(&format!(
                "node (Node.js ≥ 20, for its WASI) not runnable: {e}"
            ))
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "conformance module failed:\n{stdout}\n{stderr}"
    );
    // Every file reported, from the wasm32 build, with no failure.
    for (file, _) in portcullis_jose::wycheproof::RAW_FILES {
        assert!(
            stdout.lines().any(|l| l.starts_with("[wasm32] wycheproof ")
                && l.contains(file)
                && l.ends_with(" 0 disagree")),
            "{file} missing or failing in:\n{stdout}"
        );
    }
    assert!(stdout.contains("0 files failed"), "{stdout}");
}
