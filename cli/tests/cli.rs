//! The `portcullis` binary's command line: every subcommand answers `--help` with its options,
//! unknown flags and missing values are refused with a clear message, and the command lines the
//! Makefile, the bench and compose scripts and the README use keep working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the built binary from the repository root (where the default paths point).
fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every subcommand and the options its `--help` must list: the flag names are an interface.
const SUBCOMMANDS: &[(&[&str], &[&str])] = &[
    (&["check"], &["[POLICY_DIR]"]),
    (
        &["render"],
        &[
            "--policies <DIR>",
            "--format <FORMAT>",
            "--wasm-dir <DIR>",
            "--out <FILE>",
            "--template <FILE>",
            "--listen-port <N>",
            "--admin-port <N>",
            "--upstream <HOST:PORT>",
            "--config-format <CONFIG_FORMAT>",
            "--one-module",
            "--no-envoy-normalize",
            "--external-origin <URL>",
            "--tls-cert <PEM>",
            "--tls-key <PEM>",
            "--tls-client-ca <PEM>",
            "--jwks-upstream <HOST:PORT>",
            "--jwks-tls",
            "--jwks-ca <PEM>",
            "--rls <HOST:PORT>",
            "--rls-out <FILE>",
            "--reload-dir <DIR>",
            "--namespace <NS>",
            "--selector <KEY=VALUE>",
            "--istio-mode <ISTIO_MODE>",
            "--oci-registry <REG>",
            "--wasm-url-dir <DIR>",
            "istio",
            "struct",
            "sidecar",
        ],
    ),
    (
        &["apply"],
        &[
            "--policies <DIR>",
            "--reload-dir <DIR>",
            "--admin <HOST:PORT>",
            "--dry-run",
        ],
    ),
    (
        &["emergency"],
        &[
            "<STATE>",
            "--reload-dir <DIR>",
            "--admin <HOST:PORT>",
            "on",
            "off",
        ],
    ),
    (
        &["test"],
        &["[TESTS]", "--policies <DIR>", "--min-coverage <N>"],
    ),
    (
        &["explain"],
        &[
            "<METHOD>",
            "<PATH>",
            "--policies <DIR>",
            "--header <'name: value'>",
            "--body <JSON>",
            "--client-ip <IP>",
            "--token <JWT>",
            "--tenant <T>",
            "--scope <SCOPES>",
            "--role <R>",
            "--claim <NAME=VALUE>",
            "--upstream-status <N>",
            "--upstream-body <JSON>",
        ],
    ),
    (&["import"], &["openapi"]),
    (&["import", "openapi"], &["<SPEC>", "--out <DIR>"]),
    (
        &["apikey"],
        &[
            "--app <APP>",
            "--tenant <T>",
            "--scope <SCOPES>",
            "--tier <TIER>",
            "--id <ID>",
        ],
    ),
    (
        &["token"],
        &[
            "--tenant <T>",
            "--scope <SCOPES>",
            "--role <R>",
            "--claim <NAME=VALUE>",
            "--sub <S>",
            "--app <A>",
            "--ttl <SECONDS>",
            "--alg <ALG>",
            "--keys <DIR>",
            "--issuer <URL>",
            "--audience <AUD>",
            "RS256",
            "ES256",
        ],
    ),
    (
        &["oci"],
        &["[FILTER]...", "--wasm-dir <DIR>", "--out <DIR>"],
    ),
    (
        &["image"],
        &[
            "--rootfs <DIR>",
            "--tag <REPO:TAG>",
            "--out <FILE.tar>",
            "--entrypoint <a,b>",
            "--user <UID:GID>",
            "--env <K=V>",
            "--label <K=V>",
        ],
    ),
    (&["bench-keys"], &["<DIR>"]),
];

#[test]
fn every_subcommand_answers_help_with_its_options() {
    for (cmd, options) in SUBCOMMANDS {
        for help in ["--help", "-h"] {
            let mut args = cmd.to_vec();
            args.push(help);
            let out = portcullis(&args);
            let stdout = text(&out.stdout);
            assert!(
                out.status.success(),
                "{args:?} exits {:?}: {}",
                out.status.code(),
                text(&out.stderr)
            );
            assert!(
                stdout.contains(&format!("Usage: portcullis {}", cmd.join(" "))),
                "{args:?}: no usage line:\n{stdout}"
            );
            for o in *options {
                assert!(
                    stdout.contains(o),
                    "{args:?} does not list `{o}`:\n{stdout}"
                );
            }
        }
        // `portcullis help CMD` says the same.
        let mut args = vec!["help"];
        args.extend_from_slice(cmd);
        let out = portcullis(&args);
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains(options[0]), "{args:?}");
    }
}

#[test]
fn help_lists_every_documented_command_and_no_arguments_means_help() {
    for args in [&[][..], &["help"], &["--help"]] {
        let out = portcullis(args);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        for cmd in [
            "check",
            "render",
            "apply",
            "emergency",
            "test",
            "explain",
            "import",
            "apikey",
            "token",
            "oci",
            "image",
        ] {
            assert!(
                stdout.lines().any(|l| l.trim_start().starts_with(cmd)),
                "{args:?} does not list `{cmd}`:\n{stdout}"
            );
        }
        // Benchmark material only: it answers --help, but is not advertised.
        assert!(!stdout.contains("bench-keys"), "{stdout}");
    }
    let out = portcullis(&["--version"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// Runs a command line that must be refused; returns stderr.
fn refused(args: &[&str]) -> String {
    let out = portcullis(args);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} must be a usage error: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{args:?} printed {:?}",
        text(&out.stdout)
    );
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    assert!(
        stderr.contains("For more information, try '--help'."),
        "{args:?}: {stderr}"
    );
    stderr
}

#[test]
fn unknown_flags_and_commands_are_refused_by_name() {
    for (cmd, _) in SUBCOMMANDS {
        let mut args = cmd.to_vec();
        args.push("--no-such-flag");
        let stderr = refused(&args);
        assert!(
            stderr.contains("unexpected argument '--no-such-flag'"),
            "{args:?}: {stderr}"
        );
    }
    assert!(refused(&["no-such-command"]).contains("unrecognized subcommand 'no-such-command'"));
    assert!(refused(&["import", "swagger", "x.yaml"]).contains("'swagger'"));
    // A near miss gets a suggestion.
    assert!(refused(&["render", "--listen-prot", "1"]).contains("--listen-port"));
    // Positional arguments a command does not take are refused, not ignored.
    assert!(refused(&["check", "policies", "extra"]).contains("'extra'"));
}

#[test]
fn missing_and_malformed_values_are_refused_by_name() {
    for (args, says) in [
        (
            &["render", "--out"][..],
            "a value is required for '--out <FILE>'",
        ),
        (&["render", "--policies", "--out", "x"], "--policies <DIR>"),
        (&["render", "--listen-port", "port"], "'--listen-port <N>'"),
        (&["render", "--listen-port", "70000"], "'--listen-port <N>'"),
        (&["render", "--upstream", "nohost"], "HOST:PORT"),
        (&["render", "--rls", "h:p"], "`p` is not a port"),
        (&["render", "--jwks-upstream", "idp"], "HOST:PORT"),
        (
            &["render", "--format", "helm"],
            "[possible values: envoy, istio]",
        ),
        (
            &["render", "--config-format", "xml"],
            "[possible values: json, struct]",
        ),
        (
            &["render", "--istio-mode", "mesh"],
            "[possible values: gateway, sidecar]",
        ),
        (&["render", "--selector", "app"], "NAME=VALUE"),
        (&["render", "--tls-cert", "c.pem"], "--tls-key <PEM>"),
        (&["render", "--tls-key", "k.pem"], "--tls-cert <PEM>"),
        (&["render", "--tls-client-ca", "ca.pem"], "--tls-cert <PEM>"),
        (&["render", "--jwks-ca", "ca.pem"], "--jwks-tls"),
        (
            &[
                "render",
                "--format",
                "istio",
                "--oci-registry",
                "r",
                "--wasm-url-dir",
                "/w",
            ],
            "cannot be used with",
        ),
        (&["test", "--min-coverage", "all"], "'--min-coverage <N>'"),
        (&["explain", "GET"], "<PATH>"),
        (
            &["explain", "GET", "/", "--header", "novalue"],
            "'name: value'",
        ),
        (
            &["explain", "GET", "/", "--upstream-status", "x"],
            "--upstream-status",
        ),
        (&["import", "openapi"], "<SPEC>"),
        (&["apikey", "--tenant", "acme"], "--app <APP>"),
        (
            &["token", "--alg", "HS256"],
            "[possible values: RS256, ES256]",
        ),
        (
            &["token", "--ttl", "-1"],
            "invalid value '-1' for '--ttl <SECONDS>'",
        ),
        (
            &["render", "--listen-port", "-1"],
            "invalid value '-1' for '--listen-port <N>'",
        ),
        (&["token", "--claim", "region"], "NAME=VALUE"),
        (
            &["image", "--rootfs", "r", "--tag", "t:1"],
            "--out <FILE.tar>",
        ),
        (
            &[
                "image", "--rootfs", "r", "--tag", "t:1", "--out", "o", "--label", "nolabel",
            ],
            "NAME=VALUE",
        ),
        (&["bench-keys"], "<DIR>"),
    ] {
        let stderr = refused(args);
        assert!(
            stderr.contains(says),
            "{args:?} should say `{says}`: {stderr}"
        );
    }
}

#[test]
fn errors_after_parsing_exit_1_with_one_line() {
    let out = portcullis(&["check", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("portcullis: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The JWT minted by a `token` command line, decoded claims.
fn claims_of(args: &[&str]) -> serde_json::Value {
    let out = portcullis(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    let jwt = text(&out.stdout);
    let parts: Vec<&str> = jwt.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

#[test]
fn token_options_reach_the_claims() {
    let c = claims_of(&[
        "token",
        "--tenant",
        "acme",
        "--scope",
        "customers:read",
        "--app",
        "bench",
        "--ttl",
        "86400",
    ]);
    assert_eq!(c["tenant"], "acme");
    assert_eq!(c["scope"], "customers:read");
    assert_eq!(c["client_id"], "bench");
    assert_eq!(c["sub"], "demo-user");
    assert_eq!(c["iss"], "https://idp.demo.portcullis.local");
    assert_eq!(c["aud"], "portcullis-demo-api");
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        86400
    );
    let c = claims_of(&[
        "token",
        "--scope",
        "a b",
        "--scope",
        "c",
        "--role",
        "analyst",
        "--role",
        "admin",
        "--claim",
        "region=eu=west",
        "--alg",
        "ES256",
        "--sub",
        "s",
        "--issuer",
        "https://i",
        "--audience",
        "x",
        // A repeated single-value option keeps its last value.
        "--ttl",
        "10",
        "--ttl",
        "60",
    ]);
    assert_eq!(c["scope"], "a b c");
    assert_eq!(c["roles"], serde_json::json!(["analyst", "admin"]));
    assert_eq!(c["region"], "eu=west");
    assert_eq!(
        (c["sub"].as_str(), c["iss"].as_str()),
        (Some("s"), Some("https://i"))
    );
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 60);
    assert!(c.get("tenant").is_none());
}

#[test]
fn the_command_lines_of_the_makefile_and_scripts_work() {
    let dir = scratch("callers");
    let d = |f: &str| dir.join(f).display().to_string();
    // Modules to pack and digest: any bytes do, the CLI does not run them.
    let wasm = dir.join("wasm");
    std::fs::create_dir_all(&wasm).unwrap();
    for m in ["authn", "ratelimit", "schema", "pii"] {
        std::fs::write(wasm.join(format!("{m}.wasm")), format!("\0asm{m}")).unwrap();
    }
    let w = wasm.display().to_string();
    let ok = |args: &[&str]| {
        let out = portcullis(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    assert!(ok(&["check", "policies"]).contains("ok: policies/authn.yaml"));
    assert!(ok(&["check"]).contains("ok: policies/authn.yaml"));
    let summary = ok(&[
        "test",
        "policies/tests",
        "--policies",
        "policies",
        "--min-coverage",
        "100",
    ]);
    assert!(summary.contains(" 0 failed"), "{summary}");
    // make build (per filter and the one module) and tests/bench/*.sh (the no-op filter): a
    // module exporting a body callback and the access-log call.
    let module = {
        let mut m = b"\0asm\x01\0\0\0\x07".to_vec();
        let names = [
            "proxy_on_request_headers",
            "proxy_on_request_body",
            "proxy_on_log",
        ];
        let mut sec = vec![names.len() as u8];
        for (i, n) in names.iter().enumerate() {
            sec.push(n.len() as u8);
            sec.extend_from_slice(n.as_bytes());
            sec.extend_from_slice(&[0, i as u8]);
        }
        m.push(sec.len() as u8);
        m.extend_from_slice(&sec);
        m
    };
    std::fs::write(dir.join("built.wasm"), &module).unwrap();
    let (built, trimmed) = (d("built.wasm"), d("trimmed.wasm"));
    for args in [
        &["--filter", "authn"][..],
        &["--filter", "all"][..],
        &["--callbacks", "response_headers"][..],
    ] {
        let mut a = vec!["trim-module"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[&built, &trimmed]);
        let said = ok(&a);
        let names =
            portcullis_cli::trim::export_names(&std::fs::read(dir.join("trimmed.wasm")).unwrap())
                .unwrap();
        let body_kept = args[1] == "all";
        assert_eq!(
            names,
            if body_kept {
                vec!["proxy_on_request_headers", "proxy_on_request_body"]
            } else {
                vec!["proxy_on_request_headers"]
            },
            "{args:?}: {said}"
        );
        assert!(said.contains("proxy_on_log"), "{said}");
    }
    // make render / run-global, tests/bench/*.sh, envoy/compose/config.sh.
    ok(&[
        "render",
        "--policies",
        "policies",
        "--wasm-dir",
        "dist",
        "--out",
        &d("envoy.yaml"),
        "--listen-port",
        "10123",
        "--admin-port",
        "9123",
        "--upstream",
        "127.0.0.1:8123",
        "--external-origin",
        "http://127.0.0.1:10123",
        "--rls",
        "127.0.0.1:8124",
        "--rls-out",
        &d("rls.yaml"),
    ]);
    let envoy = std::fs::read_to_string(dir.join("envoy.yaml")).unwrap();
    for s in [
        "port_value: 10123",
        "port_value: 9123",
        "port_value: 8123",
        "port_value: 8124",
    ] {
        assert!(envoy.contains(s), "{s} not in the rendered config");
    }
    assert!(std::fs::read_to_string(dir.join("rls.yaml"))
        .unwrap()
        .contains("domains"));
    // make render: the audit trail to stdout, hashed with a key from a file, and the filter
    // configurations in a reload directory.
    std::fs::write(dir.join("audit.key"), format!("{}\n", "3c".repeat(32))).unwrap();
    let audited = ok(&[
        "render",
        "--audit-log",
        "/dev/stdout",
        "--audit-key-file",
        &d("audit.key"),
        "--reload-dir",
        &d("xds"),
    ]);
    assert!(audited.contains("config_discovery"), "{audited}");
    let authn = std::fs::read_to_string(dir.join("xds/portcullis.authn.yaml")).unwrap();
    assert!(
        authn.contains("hash_key"),
        "the audit key reaches authn's file"
    );
    let ratelimit = std::fs::read_to_string(dir.join("xds/portcullis.ratelimit.yaml")).unwrap();
    assert!(ratelimit.contains("audit"), "{ratelimit}");
    // The README's apply and emergency commands (no Envoy here: no --admin).
    let same = ok(&["apply", "--reload-dir", &d("xds"), "--dry-run"]);
    assert!(
        same.contains("0 of 5 filter configurations change"),
        "{same}"
    );
    let on = ok(&["emergency", "on", "--reload-dir", &d("xds")]);
    assert!(on.contains("emergency mode on"), "{on}");
    assert!(
        std::fs::read_to_string(dir.join("xds/portcullis.authn.yaml"))
            .unwrap()
            .contains(r#""emergency":true"#)
    );
    let off = ok(&["emergency", "off", "--reload-dir", &d("xds")]);
    assert!(off.contains("4 of 5 filter configurations change"), "{off}");
    assert_eq!(
        std::fs::read_to_string(dir.join("xds/portcullis.authn.yaml")).unwrap(),
        authn
    );
    // An invalid policy is refused with nothing written.
    let bad = dir.join("bad-policies");
    assert!(std::process::Command::new("cp")
        .arg("-r")
        .arg(root().join("policies"))
        .arg(&bad)
        .status()
        .unwrap()
        .success());
    std::fs::write(bad.join("ratelimit.yaml"), "limits: [{name: x, key: nope}]").unwrap();
    let refused_apply = portcullis(&[
        "apply",
        "--policies",
        &bad.display().to_string(),
        "--reload-dir",
        &d("xds"),
    ]);
    assert_eq!(refused_apply.status.code(), Some(1));
    assert!(text(&refused_apply.stderr).contains("ratelimit.yaml"));
    assert_eq!(
        std::fs::read_to_string(dir.join("xds/portcullis.authn.yaml")).unwrap(),
        authn
    );
    assert!(audited.contains("envoy.access_loggers.file"), "{audited}");
    assert!(audited.contains("wasm.portcullis.audit.decided_by"));
    // Without a key, or with a weak one, no audit log.
    assert!(refused(&["render", "--audit-log", "/dev/stdout"]).contains("--audit-key-file"));
    std::fs::write(dir.join("short.key"), "3c3c3c3c").unwrap();
    let weak = portcullis(&[
        "render",
        "--audit-log",
        "/dev/stdout",
        "--audit-key-file",
        &d("short.key"),
    ]);
    assert_eq!(weak.status.code(), Some(1));
    assert!(text(&weak.stderr).contains("at least 32 bytes"));
    ok(&[
        "render",
        "--template",
        "envoy/compose/gateway.yaml.tmpl",
        "--policies",
        "envoy/compose/policies/gateway",
        "--wasm-dir",
        "/etc/portcullis/wasm",
        "--listen-port",
        "8080",
        "--admin-port",
        "9901",
        "--upstream",
        "crm-sidecar:15443",
        "--out",
        &d("gateway.yaml"),
    ]);
    // Defaults, and the README's variants, to stdout.
    assert!(ok(&["render"]).contains("port_value: 10000"));
    assert!(ok(&[
        "render",
        "--config-format",
        "struct",
        "--no-envoy-normalize"
    ])
    .contains("portcullis"));
    assert!(ok(&[
        "render",
        "--jwks-upstream",
        "idp.example.com:443",
        "--jwks-tls"
    ])
    .contains("idp.example.com"));
    // make istio
    ok(&[
        "render",
        "--format",
        "istio",
        "--policies",
        "policies",
        "--wasm-dir",
        &w,
        "--namespace",
        "team-a",
        "--out",
        &d("istio.yaml"),
    ]);
    let istio = std::fs::read_to_string(dir.join("istio.yaml")).unwrap();
    assert!(istio.contains("namespace: team-a"), "{istio}");
    let istio = ok(&[
        "render",
        "--format",
        "istio",
        "--wasm-dir",
        &w,
        "--oci-registry",
        "reg.example/p",
        "--selector",
        "app=gw",
        "--selector",
        "tier=edge",
        "--istio-mode",
        "sidecar",
    ]);
    for s in [
        "oci://reg.example/p/portcullis-authn",
        "app: gw",
        "tier: edge",
    ] {
        assert!(istio.contains(s), "{s} not in:\n{istio}");
    }
    // make oci
    let oci = ok(&["oci", "--wasm-dir", &w, "--out", &d("oci")]);
    assert_eq!(oci.lines().count(), 4, "{oci}");
    assert!(dir.join("oci/pii.tar").is_file());
    assert_eq!(
        ok(&["oci", "authn", "--wasm-dir", &w, "--out", &d("oci1")])
            .lines()
            .count(),
        1
    );
    // envoy/compose/images.sh
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), "hi").unwrap();
    let image = ok(&[
        "image",
        "--rootfs",
        &rootfs.display().to_string(),
        "--tag",
        "t/x:1",
        "--out",
        &d("x.tar"),
        "--label",
        "org.opencontainers.image.source=portcullis",
        "--user",
        "65532:65532",
        "--entrypoint",
        "/usr/local/bin/envoy",
        "--env",
        "A=b",
    ]);
    assert!(image.starts_with("t/x:1  image id sha256:"), "{image}");
    // tests/bench/run.sh
    ok(&["bench-keys", &d("keys")]);
    assert!(std::fs::read_dir(dir.join("keys")).unwrap().count() > 0);
    // README
    let explained = ok(&[
        "explain",
        "GET",
        "/api/v1/tenants/globex/customers",
        "--tenant",
        "acme",
        "--scope",
        "customers:read",
    ]);
    assert!(explained.contains("tenant_boundary"), "{explained}");
    let explained = ok(&[
        "explain",
        "post",
        "/api/v1/tenants/acme/customers",
        "--header",
        "Idempotency-Key: demo-0000001",
        "--body",
        "-1",
        "--tenant",
        "acme",
        "--scope",
        "customers:write",
    ]);
    assert!(
        explained.starts_with("POST /api/v1/tenants/acme/customers"),
        "{explained}"
    );
    assert!(explained.contains("schema_violation"), "{explained}");
    ok(&[
        "import",
        "openapi",
        "cli/tests/data/openapi/readme-legacy.yaml",
        "--out",
        &d("imported"),
    ]);
    assert!(dir.join("imported/authn.yaml").is_file());
    let out = portcullis(&[
        "apikey",
        "--app",
        "crm-sync",
        "--tenant",
        "acme",
        "--scope",
        "customers:read",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("pcak_"));
    assert!(text(&out.stderr).contains("id: crm-sync-"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn several_upstreams_make_one_cluster_and_check_warns_about_resilience_defaults() {
    let dir = scratch("resilience");
    let render = |args: &[&str]| {
        let out = portcullis(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let y: serde_norway::Value = serde_norway::from_slice(&out.stdout).unwrap();
        let y = serde_json::to_value(y).unwrap();
        y["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["endpoint"]["address"]["socket_address"]["port_value"].clone())
            .collect::<Vec<_>>()
    };
    let both = serde_json::json!([8123, 8124]);
    assert_eq!(
        serde_json::Value::from(render(&[
            "render",
            "--upstream",
            "127.0.0.1:8123,127.0.0.1:8124"
        ])),
        both
    );
    assert_eq!(
        serde_json::Value::from(render(&[
            "render",
            "--upstream",
            "127.0.0.1:8123",
            "--upstream",
            "127.0.0.1:8124"
        ])),
        both
    );
    // The shipped gateway.yaml spells out every default: no warning.
    let out = portcullis(&["check", "policies"]);
    assert!(out.status.success());
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    // Without it, every default is named; a warning does not fail the check.
    for f in [
        "authn.yaml",
        "schema.yaml",
        "ratelimit.yaml",
        "ratelimit-ip.yaml",
        "pii.yaml",
        "pii-egress.yaml",
    ] {
        std::fs::copy(root().join("policies").join(f), dir.join(f)).unwrap();
    }
    // The authn policy's `jwks_file` is relative to the policy directory.
    std::fs::create_dir_all(dir.join("demo-keys")).unwrap();
    std::fs::copy(
        root().join("policies/demo-keys/demo-jwks.json"),
        dir.join("demo-keys/demo-jwks.json"),
    )
    .unwrap();
    let out = portcullis(&["check", &dir.display().to_string()]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    for needle in [
        "gateway.yaml: no such file",
        "resilience.retries not set",
        "resilience.max_downstream_connections not set; default 10000 applies",
        "headers.max_count not set; default 100 applies",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn the_one_module_is_refused_for_istio_manifests() {
    let out = portcullis(&["render", "--format", "istio", "--one-module"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--one-module renders an Envoy config"));
}
