//! Runs every Wycheproof raw-signature vector file through the verification arithmetic and exits non-zero on any disagreement.
//!
//! Built by `make build` for wasm32-wasip1 in the same cargo invocation as the filters (same
//! release profile, same dependency versions), so `make test` runs the arithmetic compiled the
//! way Envoy loads it, in V8 (Node's WASI; `tests/tests/conformance_wasm.rs`). Native runs go
//! through `cargo test -p portcullis-jose` instead. Test support only: it is not part of any
//! filter module.
//!
//! Usage: `jose-conformance <wycheproof-dir>`

use portcullis_jose::wycheproof;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: jose-conformance <wycheproof-dir>");
        return ExitCode::from(2);
    };
    let reports = match wycheproof::run_all_raw(std::path::Path::new(&dir)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jose-conformance: {e}");
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
