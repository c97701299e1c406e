//! RFC 8705 certificate-bound tokens against real Envoy: a TLS gateway listener (client
//! certificates optional, signed by a test CA), certificates made by `openssl` for this run,
//! `curl` as the TLS client. Matrix: no certificate / another certificate / the right one ×
//! unbound / bound token, plus a route that demands a bound token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::render::DownstreamTls;
use portcullis_tests::harness::{self, claims, rs256, Gateway, GatewayOptions, TempDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 key and a certificate signed by the test CA.
fn issue(dir: &Path, name: &str, subject: &str, ext: Option<&str>) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    let (csr, pem) = (format!("{name}.csr"), format!("{name}.pem"));
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        &pem,
    ];
    let extfile = format!("{name}.ext");
    if let Some(e) = ext {
        std::fs::write(dir.join(&extfile), e).unwrap();
        args.extend(["-extfile", extfile.as_str()]);
    }
    openssl(dir, &args);
}

/// `x5t#S256` of a certificate: base64url SHA-256 of its DER.
fn thumbprint(dir: &Path, cert: &str) -> String {
    use base64::Engine as _;
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["x509", "-in", cert, "-noout", "-fingerprint", "-sha256"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().rsplit('=').next().unwrap().replace(':', "");
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert_eq!(bytes.len(), 32, "{text}");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("pki");
        let d = &dir.0;
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=portcullis-test-ca",
            ],
        );
        issue(
            d,
            "server",
            "/CN=localhost",
            Some("subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
        );
        issue(d, "client-a", "/CN=client-a", None);
        issue(d, "client-b", "/CN=client-b", None);
        Pki { dir }
    }
    fn path(&self, f: &str) -> PathBuf {
        self.dir.0.join(f)
    }
}

/// GET over TLS with curl; (status, problem reason or "").
fn get(g: &Gateway, pki: &Pki, path: &str, token: &str, cert: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "--cacert"])
        .arg(pki.path("ca.pem"));
    if let Some(c) = cert {
        cmd.arg("--cert").arg(pki.path(&format!("{c}.pem")));
        cmd.arg("--key").arg(pki.path(&format!("{c}.key")));
    }
    cmd.args([
        "-H",
        &format!("authorization: Bearer {token}"),
        "-w",
        "\n%{http_code}",
    ]);
    cmd.arg(format!("https://127.0.0.1:{}{path}", g.addr.port()));
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let reason = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    (code.trim().parse().unwrap_or(0), reason)
}

#[test]
fn certificate_bound_tokens_need_their_certificate() {
    if harness::envoy_binary().is_none() {
        return;
    }
    let pki = Pki::new();
    let mut policies = harness::demo_policies();
    // The single-record route demands a bound token.
    for r in policies.authn["routes"].as_array_mut().unwrap() {
        if r["name"] == "get-customer" {
            r["require"]["binding"] = json!("mtls");
        }
    }
    let Some(g) = Gateway::start(GatewayOptions {
        policies,
        tls: Some(DownstreamTls {
            cert: pki.path("server.pem"),
            key: pki.path("server.key"),
            client_ca: Some(pki.path("ca.pem")),
        }),
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _log = g.log_on_failure();
    let unbound = rs256(&claims("acme", "customers:read"));
    let mut c = claims("acme", "customers:read");
    c["cnf"] = json!({"x5t#S256": thumbprint(&pki.dir.0, "client-a.pem")});
    let bound = rs256(&c);
    let list = "/api/v1/tenants/acme/customers";

    // Unbound tokens work with or without a certificate.
    for cert in [None, Some("client-a"), Some("client-b")] {
        assert_eq!(
            get(&g, &pki, list, &unbound, cert),
            (200, String::new()),
            "unbound, {cert:?}"
        );
    }
    // A bound token works only with its own certificate.
    assert_eq!(
        get(&g, &pki, list, &bound, None),
        (401, "certificate_required".into())
    );
    assert_eq!(
        get(&g, &pki, list, &bound, Some("client-b")),
        (401, "certificate_mismatch".into())
    );
    assert_eq!(
        get(&g, &pki, list, &bound, Some("client-a")),
        (200, String::new())
    );
    // Cached or not, the binding is checked on every request (the cache is per token, the
    // certificate per connection).
    assert_eq!(
        get(&g, &pki, list, &bound, Some("client-b")),
        (401, "certificate_mismatch".into())
    );
    // A route that demands a bound token refuses an unbound one, even over mTLS.
    let one = "/api/v1/tenants/acme/customers/c-1001";
    assert_eq!(
        get(&g, &pki, one, &unbound, Some("client-a")),
        (401, "token_not_bound".into())
    );
    assert_eq!(
        get(&g, &pki, one, &bound, Some("client-a")),
        (200, String::new())
    );
    assert_eq!(
        get(&g, &pki, one, &bound, Some("client-b")),
        (401, "certificate_mismatch".into())
    );
}
