//! Rendered gateway and egress configs (both embeddings of the filter config, with and without
//! the audit trail's access log) pass `envoy --mode validate`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::render::{self, ConfigFormat, RenderOptions};
use portcullis_tests::harness::{self, TempDir};
use std::process::Command;

#[test]
fn rendered_configs_pass_envoy_validate() {
    let Some(envoy) = harness::envoy_binary() else {
        return;
    };
    let policies = harness::demo_policies();
    let dir = TempDir::new("validate");
    for file in ["gateway.yaml.tmpl", "egress.yaml.tmpl"] {
        let template =
            std::fs::read_to_string(harness::repo_root().join("envoy").join(file)).unwrap();
        for format in [ConfigFormat::Json, ConfigFormat::Struct] {
            for normalize in [true, false] {
                let opts = RenderOptions {
                    format,
                    envoy_normalize_path: normalize,
                    wasm_dir: harness::dist_dir(),
                    // The audit trail's access log on one of the two variants.
                    audit: normalize.then(|| render::AuditLog {
                        path: dir.0.join("audit.log").to_string_lossy().to_string(),
                        hash_key: harness::AUDIT_TEST_KEY.to_string(),
                    }),
                    ..Default::default()
                };
                let path = dir.0.join(format!("{file}-{format:?}-{normalize}.yaml"));
                std::fs::write(&path, render::render(&template, &policies, &opts).unwrap())
                    .unwrap();
                let out = Command::new(&envoy)
                    .args(["--mode", "validate", "--log-level", "warn", "-c"])
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{file} {format:?}/{normalize}: envoy --mode validate failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}
