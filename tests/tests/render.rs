//! Rendered gateway and egress configs (both embeddings of the filter config, with and without
//! the audit trail's access log) pass `envoy --mode validate`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::render::{self, ConfigFormat, RenderOptions};
use portcullis_tests::harness::{self, TempDir};

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
                if let Err(log) = harness::envoy_validate(&envoy, &path) {
                    panic!("{file} {format:?}/{normalize}: envoy --mode validate failed:\n{log}");
                }
            }
        }
    }
}

/// Every resilience shape `gateway.yaml` can ask for is a config Envoy accepts: several
/// endpoints, per-prefix timeouts, status codes and per-try timeouts in the retry policy, and
/// retries and outlier detection turned off.
#[test]
fn resilience_variants_pass_envoy_validate() {
    let Some(envoy) = harness::envoy_binary() else {
        return;
    };
    let dir = TempDir::new("validate-resilience");
    let template =
        std::fs::read_to_string(harness::repo_root().join("envoy/gateway.yaml.tmpl")).unwrap();
    let variants = [
        serde_json::json!({}),
        serde_json::json!({"resilience": {
            "retries": {"retry_on": ["gateway-error", "reset", 502, 503, 504], "per_try_timeout_ms": 1500,
                        "methods": ["GET", "HEAD"], "budget_percent": 50},
            "route_timeouts": [{"prefix": "/api/v1/reports", "upstream_seconds": 60},
                               {"prefix": "/api", "upstream_seconds": 0}],
            "max_downstream_connections": 1}}),
        serde_json::json!({"headers": {"max_count": 1, "max_request_kb": 8192}, "resilience": {
            "retries": {"attempts": 0, "methods": [], "retry_on": []},
            "outlier_detection": {"consecutive_5xx": 0}}}),
    ];
    for (i, gw) in variants.iter().enumerate() {
        let mut policies = harness::demo_policies();
        policies.gateway =
            portcullis_cli::gateway::GatewaySettings::from_value(gw.clone()).unwrap();
        let opts = RenderOptions {
            wasm_dir: harness::dist_dir(),
            extra_upstreams: vec![("127.0.0.2".into(), 8080), ("::1".into(), 8081)],
            ..Default::default()
        };
        let path = dir.0.join(format!("resilience-{i}.yaml"));
        std::fs::write(&path, render::render(&template, &policies, &opts).unwrap()).unwrap();
        if let Err(log) = harness::envoy_validate(&envoy, &path) {
            panic!("variant {i} {gw}: envoy --mode validate failed:\n{log}");
        }
    }
}

/// The one module runs the filter each plugin's `root_id` names; a `root_id` naming none of its
/// filters must stop Envoy from loading the plugin (fail closed, with the reason in the log),
/// never run some other filter in its place.
#[test]
fn the_one_module_refuses_a_root_id_that_names_no_filter() {
    let Some(envoy) = harness::envoy_binary() else {
        return;
    };
    let dir = TempDir::new("one-module-root-id");
    let template =
        std::fs::read_to_string(harness::repo_root().join("envoy/gateway.yaml.tmpl")).unwrap();
    let opts = RenderOptions {
        one_module: true,
        wasm_dir: harness::dist_dir(),
        listen_port: harness::free_port(),
        admin_port: harness::free_port(),
        ..Default::default()
    };
    let rendered = render::render(&template, &harness::demo_policies(), &opts).unwrap();
    let bad = rendered.replacen(
        "root_id: portcullis.schema\n",
        "root_id: portcullis.schemas\n",
        1,
    );
    assert_ne!(bad, rendered, "the template names portcullis.schema");
    let path = dir.0.join("envoy.yaml");
    std::fs::write(&path, bad).unwrap();
    let log = dir.0.join("envoy.log");
    let mut child = std::process::Command::new(&envoy)
        .args(["-c", &path.to_string_lossy(), "--concurrency", "1"])
        .args(["--disable-hot-restart", "--log-level", "warn", "--log-path"])
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("Envoy kept running with a root_id that names no filter");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("root_id `portcullis.schemas` names none of this module's filters"),
        "{text}"
    );
}
