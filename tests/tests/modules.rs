//! The modules `make build` puts in `dist/` leave out the proxy-wasm callbacks their filter does
//! not implement, so Envoy never enters a VM only to run a default that lets the stream pass
//! (`Stream::CALLBACKS`, `portcullis trim-module`). What the filters do without them is what
//! every other test here sends through Envoy; this one holds the modules themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::trim::{callbacks_of, export_names};
use portcullis_tests::harness::dist_dir;

/// Exports Envoy needs from any HTTP filter module: the VM's memory and allocator, the root's
/// configuration, a stream's context, its request headers, and the context's deletion (the SDK
/// frees the stream's state there).
const ALWAYS: &[&str] = &[
    "memory",
    "proxy_on_memory_allocate",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_delete",
];

#[test]
fn every_module_exports_its_filters_callbacks_and_no_other_per_request_callback() {
    let dist = dist_dir();
    for (file, filter) in [
        ("authn.wasm", "authn"),
        ("ratelimit.wasm", "ratelimit"),
        ("schema.wasm", "schema"),
        ("pii.wasm", "pii"),
        ("portcullis.wasm", "all"),
    ] {
        let path = dist.join(file);
        let Ok(module) = std::fs::read(&path) else {
            if std::env::var_os("CI").is_some() {
                panic!("{} is missing: run `make build`", path.display());
            }
            eprintln!("skipping {file}: {} not built (make build)", path.display());
            continue;
        };
        let names = export_names(&module).unwrap();
        for want in ALWAYS {
            assert!(names.iter().any(|n| n == want), "{file} lacks {want}");
        }
        let callbacks = callbacks_of(filter).unwrap();
        for unneeded in callbacks.unneeded_exports() {
            assert!(
                !names.iter().any(|n| n == unneeded),
                "{file} still exports {unneeded}: Envoy enters the VM for it on every request"
            );
        }
        for (used, export) in [
            (callbacks.request_body, "proxy_on_request_body"),
            (callbacks.response_headers, "proxy_on_response_headers"),
            (callbacks.response_body, "proxy_on_response_body"),
        ] {
            if used {
                assert!(names.iter().any(|n| n == export), "{file} lacks {export}");
            }
        }
    }
}

#[test]
fn the_filters_that_read_only_request_headers_are_not_entered_for_bodies() {
    // The class of call the trim removes, named for the two filters every request meets
    // first: authn decides on the request headers alone, ratelimit adds response headers.
    let dist = dist_dir();
    for (file, absent) in [
        (
            "authn.wasm",
            &[
                "proxy_on_request_body",
                "proxy_on_response_headers",
                "proxy_on_response_body",
                "proxy_on_log",
                "proxy_on_done",
            ][..],
        ),
        (
            "ratelimit.wasm",
            &[
                "proxy_on_request_body",
                "proxy_on_response_body",
                "proxy_on_log",
                "proxy_on_done",
            ][..],
        ),
    ] {
        let Ok(module) = std::fs::read(dist.join(file)) else {
            assert!(std::env::var_os("CI").is_none(), "{file} missing under CI");
            eprintln!("skipping {file}: not built (make build)");
            continue;
        };
        let names = export_names(&module).unwrap();
        for a in absent {
            assert!(!names.iter().any(|n| n == a), "{file} exports {a}");
        }
    }
}
