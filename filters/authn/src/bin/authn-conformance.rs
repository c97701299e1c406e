//! Runs every Wycheproof vector file through the authn verification core and exits non-zero on
//! any disagreement.
//!
//! Built by `make build` for wasm32-wasip1 together with the filter (same crate, same release
//! profile, same dependency graph), so `make test` runs the verification arithmetic compiled the
//! way Envoy loads it, in V8 (Node's WASI). Native runs go through `cargo test` instead.
//!
//! Usage: `authn-conformance <wycheproof-dir>`

use portcullis_authn::conformance;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: authn-conformance <wycheproof-dir>");
        return ExitCode::from(2);
    };
    let reports = match conformance::run_all(std::path::Path::new(&dir)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authn-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let target = if cfg!(target_arch = "wasm32") {
        "wasm32"
    } else {
        "native"
    };
    let mut failed = 0;
    for r in &reports {
        println!("[{target}] {r}");
        if !r.passed() {
            failed += 1;
        }
    }
    let vectors: usize = reports.iter().map(|r| r.agree + r.acceptable).sum();
    println!(
        "[{target}] {} files, {vectors} vectors agreed or acceptable, {failed} files failed",
        reports.len()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
