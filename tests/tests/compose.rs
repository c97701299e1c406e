//! Black-box tests of the docker-compose mesh (`envoy/compose/`), through its published
//! gateways (127.0.0.1) and, for attacks from inside the mesh, from the `intruder` container.
//!
//! `make compose-test` starts the mesh, sets `PORTCULLIS_COMPOSE=1` and runs this file with one
//! thread; without that variable every test prints `SKIPPED` and passes (a plain
//! `cargo test` has no mesh). With it, anything missing — Docker, an image, a container — is a
//! failure. Every request and every command is bounded (HTTP client timeouts, curl
//! `--max-time`, polling deadlines): nothing here can hang.
//!
//! Fault tests stop a container, check the documented behaviour, start it again and wait until
//! the mesh serves as before, so each test leaves the mesh as it found it.

// Helpers outside #[test] functions fail the test loudly, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::token::{self, SigningAlg, TokenSpec};
use portcullis_tests::http::{self, Request, Response};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tests share one mesh; faults must not overlap.
static MESH: Mutex<()> = Mutex::new(());

const CUSTOMERS: &str = "/api/v1/tenants/acme/customers";
const ALL_PII: &str = "pii:ssn:read pii:card:read pii:iban:read pii:email:read pii:phone:read";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Mesh {
    project: String,
    gw: [SocketAddr; 2],
}

/// The running mesh, or `None` (SKIPPED) when the test was not asked for.
fn mesh() -> Option<Mesh> {
    if std::env::var("PORTCULLIS_COMPOSE").as_deref() != Ok("1") {
        eprintln!("SKIPPED: PORTCULLIS_COMPOSE is not set (run `make images compose-test`)");
        return None;
    }
    let port = |var: &str, default: u16| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let m = Mesh {
        project: std::env::var("PORTCULLIS_COMPOSE_PROJECT")
            .unwrap_or_else(|_| "portcullis-mesh".into()),
        gw: [
            SocketAddr::from(([127, 0, 0, 1], port("PORTCULLIS_GATEWAY_1_PORT", 18081))),
            SocketAddr::from(([127, 0, 0, 1], port("PORTCULLIS_GATEWAY_2_PORT", 18082))),
        ],
    };
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "PORTCULLIS_COMPOSE=1 but no Docker daemon answers");
    let ps = run(
        "docker",
        &[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", m.project),
        ],
    );
    assert!(
        !ps.stdout.trim().is_empty(),
        "PORTCULLIS_COMPOSE=1 but the mesh `{}` is not running (make compose-up)",
        m.project
    );
    // Not only up: the first authenticated request has to succeed (the IdP's keys fetched by
    // every authn filter on the way).
    let read = m.token("acme", "customers:read");
    let sync = m.token("acme", "crm:sync customers:read");
    m.wait_until("the mesh serves authenticated requests", 120, || {
        m.get(0, CUSTOMERS, &read).status == 200
            && m.get(1, CUSTOMERS, &read).status == 200
            && m.sync(0, "acme", &sync, r#"{"dry_run":true}"#).status == 200
    });
    Some(m)
}

/// What a command printed, and how it ended.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &str, args: &[&str]) -> Out {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

impl Mesh {
    /// A service's container, found by Compose's labels (v1 and v2 name containers differently).
    fn container(&self, service: &str) -> String {
        let o = run(
            "docker",
            &[
                "ps",
                "-aq",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
            ],
        );
        let id = o.stdout.lines().next().unwrap_or("").trim().to_string();
        assert!(
            !id.is_empty(),
            "no container for {service} in {}",
            self.project
        );
        id
    }

    /// `docker-compose` (or `PORTCULLIS_COMPOSE_CMD`, e.g. `docker compose`) on the mesh.
    fn compose(&self, args: &[&str]) -> Out {
        let cmd =
            std::env::var("PORTCULLIS_COMPOSE_CMD").unwrap_or_else(|_| "docker-compose".into());
        let mut words = cmd.split_whitespace();
        let program = words.next().unwrap_or("docker-compose").to_string();
        let file = repo().join("envoy/compose/docker-compose.yml");
        let file = file.to_string_lossy().to_string();
        let mut all: Vec<&str> = words.collect();
        all.extend(["-p", &self.project, "-f", &file]);
        all.extend_from_slice(args);
        let o = run(&program, &all);
        assert_eq!(o.code, 0, "{cmd} {args:?}: {}", o.stderr);
        o
    }

    fn stop(&self, service: &str) {
        self.compose(&["stop", "-t", "5", service]);
    }

    fn start(&self, service: &str) {
        self.compose(&["start", service]);
    }

    fn exec(&self, service: &str, args: &[&str]) -> Out {
        let c = self.container(service);
        let mut all = vec!["exec", c.as_str()];
        all.extend_from_slice(args);
        run("docker", &all)
    }

    /// `mesh-probe` inside a container: its JSON line.
    fn probe(&self, service: &str, args: &[&str]) -> Value {
        let mut all = vec!["/usr/local/bin/mesh-probe", "--timeout-ms", "3000"];
        all.extend_from_slice(args);
        let o = self.exec(service, &all);
        serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "mesh-probe in {service} {args:?}: {e}: {} {}",
                o.stdout, o.stderr
            )
        })
    }

    /// What a demo-upstream (crm-api, external-crm, idp) recorded, oldest first, without the
    /// container health checks' `/healthz`.
    fn recorded(&self, service: &str) -> Vec<Value> {
        let v = self.probe(service, &["http://127.0.0.1:8080/__admin/requests"]);
        let body: Value =
            serde_json::from_str(v["body"].as_str().unwrap_or("")).unwrap_or_default();
        body["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["path"] != "/healthz")
            .cloned()
            .collect()
    }

    fn reset(&self, service: &str) {
        let v = self.probe(
            service,
            &["--method", "POST", "http://127.0.0.1:8080/__admin/reset"],
        );
        assert_eq!(v["status"], 204, "{v}");
    }

    /// curl in the intruder container, bounded. Returns (exit code, status or 0, body).
    fn curl(&self, args: &[&str]) -> (i32, u16, String) {
        let mut all = vec![
            "/usr/bin/curl",
            "-sS",
            "--connect-timeout",
            "3",
            "--max-time",
            "8",
            "-o",
            "/tmp/body",
            "-w",
            "%{http_code}",
        ];
        all.extend_from_slice(args);
        let o = self.exec("intruder", &all);
        let status = o.stdout.trim().parse().unwrap_or(0);
        let body = self.exec("intruder", &["/usr/bin/curl", "-s", "file:///tmp/body"]);
        (o.code, status, body.stdout)
    }

    fn token_spec(&self, tenant: &str, scopes: &str) -> TokenSpec {
        TokenSpec {
            issuer: "https://idp.demo.portcullis.local".into(),
            audience: "portcullis-demo-api".into(),
            subject: "compose-user".into(),
            tenant: Some(tenant.into()),
            app: Some("compose-test".into()),
            scopes: scopes.split_whitespace().map(str::to_string).collect(),
            roles: vec![],
            extra: vec![],
            ttl_secs: 600,
        }
    }

    fn token(&self, tenant: &str, scopes: &str) -> String {
        let pem = std::fs::read_to_string(repo().join("policies/demo-keys/demo-rs256.key.pem"))
            .unwrap_or_else(|e| panic!("demo key: {e}"));
        token::mint(
            &self.token_spec(tenant, scopes),
            SigningAlg::RS256,
            &pem,
            "demo-rs256",
        )
        .unwrap_or_else(|e| panic!("mint: {e}"))
    }

    fn send(&self, gw: usize, req: &Request) -> Response {
        match http::send(self.gw[gw], req) {
            Ok(r) => r,
            Err(e) => Response {
                status: 0,
                headers: vec![("x-test-error".into(), e.to_string())],
                body: Vec::new(),
            },
        }
    }

    fn get(&self, gw: usize, path: &str, token: &str) -> Response {
        self.send(gw, &Request::get(path).bearer(token))
    }

    fn sync(&self, gw: usize, tenant: &str, token: &str, body: &str) -> Response {
        self.send(
            gw,
            &Request::post(&format!("/api/v1/tenants/{tenant}/sync"), body)
                .bearer(token)
                .header("content-type", "application/json"),
        )
    }

    /// Polls `ok` every 500 ms until it holds, or fails the test after `secs`.
    fn wait_until(&self, what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s\n{}",
                self.compose(&["ps"]).stdout
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn wait_healthy(&self, service: &str) {
        let c = self.container(service);
        self.wait_until(&format!("{service} healthy"), 180, || {
            let o = run(
                "docker",
                &[
                    "inspect",
                    "--format",
                    "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
                    &c,
                ],
            );
            matches!(o.stdout.trim(), "running healthy" | "running none")
        });
    }

    /// An address of a container on one of its networks (for attacks by address, not name).
    fn ip(&self, service: &str, network: &str) -> String {
        let net = format!("{}_{network}", self.project);
        let o = run(
            "docker",
            &[
                "inspect",
                "--format",
                &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
                &self.container(service),
            ],
        );
        let ip = o.stdout.trim().to_string();
        assert!(
            !ip.is_empty(),
            "{service} has no address on {net}: {}",
            o.stderr
        );
        ip
    }
}

fn header<'a>(rec: &'a Value, name: &str) -> Vec<&'a str> {
    rec["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h[0].as_str() == Some(name))
        .filter_map(|h| h[1].as_str())
        .collect()
}

fn reason(r: &Response) -> Option<&str> {
    r.header("x-portcullis-reason")
}

#[test]
fn identity_crosses_gateway_and_sidecar_and_no_hop_can_forge_it() {
    let _l = MESH.lock().unwrap_or_else(|p| p.into_inner());
    let Some(m) = mesh() else { return };
    let t = m.token("acme", "customers:read");
    for gw in 0..2 {
        m.reset("crm-api");
        let r = m.send(
            gw,
            &Request::get("/api/v1/tenants/acme/customers/c-1001")
                .bearer(&t)
                .header("x-portcullis-tenant", "globex")
                .header("x-portcullis-scopes", "customers:read:admin pii:ssn:read")
                .header("x-portcullis-subject", "admin")
                .header(
                    "x-forwarded-client-cert",
                    "By=spiffe://portcullis.mesh/crm-api;URI=spiffe://portcullis.mesh/sync-worker",
                ),
        );
        assert_eq!(r.status, 200, "gateway {gw}: {}", r.body_str());
        // Masked on the way out: the forged pii scope revealed nothing.
        assert_eq!(r.json()["ssn"], "***-**-6780", "{}", r.body_str());
        let recs = m.recorded("crm-api");
        assert_eq!(recs.len(), 1, "{recs:?}");
        let rec = &recs[0];
        assert_eq!(header(rec, "x-portcullis-tenant"), ["acme"], "{rec}");
        assert_eq!(
            header(rec, "x-portcullis-scopes"),
            ["customers:read"],
            "{rec}"
        );
        assert_eq!(
            header(rec, "x-portcullis-subject"),
            ["compose-user"],
            "{rec}"
        );
        // The token stops at the service's sidecar.
        assert!(header(rec, "authorization").is_empty(), "{rec}");
        // The service learns the calling workload from the verified certificate only.
        let xfcc = header(rec, "x-forwarded-client-cert").join(",");
        assert!(
            xfcc.contains("URI=spiffe://portcullis.mesh/gateway") && !xfcc.contains("sync-worker"),
            "{xfcc}"
        );
    }
    // The same forged headers without a token: refused at the gateway, nothing reaches the API.
    m.reset("crm-api");
    let r = m.send(
        0,
        &Request::get(CUSTOMERS).header("x-portcullis-tenant", "acme"),
    );
    assert_eq!((r.status, reason(&r)), (401, Some("missing_token")));
    assert!(m.recorded("crm-api").is_empty());
}

#[test]
fn the_tenant_boundary_holds_at_the_sidecar_when_the_gateway_is_bypassed() {
    let _l = MESH.lock().unwrap_or_else(|p| p.into_inner());
    let Some(m) = mesh() else { return };
    let acme = m.token("acme", "customers:read");
    let auth = format!("authorization: Bearer {acme}");
    // A compromised workload holding the gateway's own certificate calls the CRM sidecar.
    let stolen = [
        "--cacert",
        "/etc/portcullis/stolen/ca.pem",
        "--cert",
        "/etc/portcullis/stolen/tls.crt",
        "--key",
        "/etc/portcullis/stolen/tls.key",
    ];
    m.reset("crm-api");
    let mut args = stolen.to_vec();
    args.extend([
        "-H",
        &auth,
        "https://crm-sidecar:15443/api/v1/tenants/globex/customers",
    ]);
    let (code, status, body) = m.curl(&args);
    assert_eq!((code, status), (0, 403), "{body}");
    assert!(body.contains("tenant_boundary"), "{body}");
    // No token, identity headers written by the caller: refused.
    let mut args = stolen.to_vec();
    args.extend([
        "-H",
        "x-portcullis-tenant: globex",
        "-H",
        "x-portcullis-scopes: customers:read",
        "https://crm-sidecar:15443/api/v1/tenants/globex/customers",
    ]);
    let (_, status, body) = m.curl(&args);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("missing_token"), "{body}");
    assert!(
        m.recorded("crm-api").is_empty(),
        "a refused request reached the service"
    );
    // A valid token for its own tenant plus forged headers: the service sees the token's identity.
    let mut args = stolen.to_vec();
    args.extend([
        "-H",
        &auth,
        "-H",
        "x-portcullis-tenant: globex",
        "https://crm-sidecar:15443/api/v1/tenants/acme/customers",
    ]);
    let (_, status, body) = m.curl(&args);
    assert_eq!(status, 200, "{body}");
    let recs = m.recorded("crm-api");
    assert_eq!(recs.len(), 1);
    assert_eq!(header(&recs[0], "x-portcullis-tenant"), ["acme"]);
}

#[test]
fn services_are_reachable_only_through_their_sidecars_and_sidecars_only_over_mtls() {
    let _l = MESH.lock().unwrap_or_else(|p| p.into_inner());
    let Some(m) = mesh() else { return };
    // By name: the services are not on the mesh network at all (Docker's DNS has no answer:
    // "could not resolve", or a timeout while it asks upstream resolvers that are not there).
    for url in [
        "http://crm-api:8080/healthz",
        "http://sync-worker:8080/healthz",
    ] {
        let (code, status, _) = m.curl(&[url]);
        assert!(
            matches!(code, 6 | 28) && status == 0,
            "{url} answered from the mesh ({code}, {status})"
        );
    }
    // By address: no route from the mesh to a private network.
    let crm_api = m.ip("crm-api", "crm-pod");
    let sync_worker = m.ip("sync-worker", "sync-pod");
    for url in [
        format!("http://{crm_api}:8080/healthz"),
        format!("http://{sync_worker}:8080/healthz"),
        // The sync sidecar's egress listeners, bound to its private address only.
        "http://10.250.2.10:15001/".to_string(),
        "http://10.250.2.10:15002/crm/v1/sync/acme".to_string(),
    ] {
        let (code, status, _) = m.curl(&[&url]);
        assert!(
            code != 0 && status == 0,
            "{url} answered from the mesh ({code}, {status})"
        );
    }
    // And not listening on the mesh address either.
    let (code, status, _) = m.curl(&["http://sync-sidecar:15001/"]);
    assert_eq!(
        (code, status),
        (7, 0),
        "egress listener reachable on the mesh"
    );
    // The sidecars' inbound: mTLS with an allowed identity, nothing else.
    let url = "https://crm-sidecar:15443/healthz";
    let ca = ["--cacert", "/etc/portcullis/certs/ca.pem"];
    let attempts: [(&str, Vec<&str>); 4] = [
        ("no client certificate", ca.to_vec()),
        (
            "a certificate from a foreign CA",
            [
                &ca[..],
                &[
                    "--cert",
                    "/etc/portcullis/rogue/tls.crt",
                    "--key",
                    "/etc/portcullis/rogue/tls.key",
                ],
            ]
            .concat(),
        ),
        (
            "a valid mesh certificate of a workload not allowed to call",
            [
                &ca[..],
                &[
                    "--cert",
                    "/etc/portcullis/certs/tls.crt",
                    "--key",
                    "/etc/portcullis/certs/tls.key",
                ],
            ]
            .concat(),
        ),
        ("plain HTTP", vec![]),
    ];
    for (what, mut args) in attempts {
        let u = if what == "plain HTTP" {
            "http://crm-sidecar:15443/healthz"
        } else {
            url
        };
        args.push(u);
        let (code, status, body) = m.curl(&args);
        assert!(
            code != 0 && status == 0,
            "{what}: answered {status} ({code}) {body}"
        );
    }
    // The same request with the gateway's identity is answered: the refusals above were mTLS.
    let (code, status, body) = m.curl(&[
        "--cacert",
        "/etc/portcullis/stolen/ca.pem",
        "--cert",
        "/etc/portcullis/stolen/tls.crt",
        "--key",
        "/etc/portcullis/stolen/tls.key",
        url,
    ]);
    assert_eq!((code, status), (0, 200), "{body}");
    // The sync worker cannot reach the external CRM around its sidecar...
    let v = m.probe("sync-worker", &["http://external-crm:8080/healthz"]);
    assert!(v["error"].is_string() && v["status"].is_null(), "{v}");
    // ...and its mesh egress is no open proxy: only the services it names.
    let v = m.probe(
        "sync-worker",
        &[
            "-H",
            "host: idp:8080",
            "http://10.250.2.10:15001/.well-known/jwks.json",
        ],
    );
    assert_eq!(v["status"], 404, "{v}");
    assert!(
        v["body"]
            .as_str()
            .is_some_and(|b| b.contains("unknown_destination")),
        "{v}"
    );
}

#[test]
fn the_external_crm_never_receives_raw_personal_data_from_the_sync_worker() {
    let _l = MESH.lock().unwrap_or_else(|p| p.into_inner());
    let Some(m) = mesh() else { return };
    let t = m.token("acme", &format!("crm:sync customers:read {ALL_PII}"));
    m.reset("external-crm");
    let r = m.sync(0, "acme", &t, r#"{"dry_run":false}"#);
    assert_eq!(r.status, 200, "{}", r.body_str());
    let v = r.json();
    assert_eq!(v["synced"], 3, "{v}");
    // The worker read raw records (its caller may see them): the egress had to mask them.
    assert_eq!(v["unmasked_ssn_read"], 3, "{v}");
    let recs = m.recorded("external-crm");
    assert_eq!(recs.len(), 1, "{recs:?}");
    let body = recs[0]["body"].as_str().unwrap_or("");
    let sent: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let records = sent["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 3, "{body}");
    for raw in [
        "123-45-6780",
        "124-45-6781",
        "125-45-6782",
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "GB82WEST12345698765432",
        "DE89370400440532013000",
        "ada@acme.example.com",
        "grace@acme.example.com",
    ] {
        assert!(
            !body.contains(raw),
            "raw `{raw}` reached the external CRM: {body}"
        );
    }
    for rec in &records {
        assert!(
            rec.get("ssn").is_none() && rec.get("card_number").is_none(),
            "{rec}"
        );
        assert!(
            rec["email"].as_str().is_some_and(|e| e.starts_with("tok_")),
            "{rec}"
        );
        assert!(
            rec["id"].as_str().is_some_and(|i| i.starts_with("c-")),
            "{rec}"
        );
    }
    // No mesh credential left the mesh.
    for h in [
        "authorization",
        "x-portcullis-tenant",
        "x-portcullis-scopes",
        "x-forwarded-client-cert",
    ] {
        assert!(
            header(&recs[0], h).is_empty(),
            "{h} reached the external CRM"
        );
    }
    // The worker's sidecar enforces its own policy: scope, tenant, body schema.
    let r = m.sync(1, "acme", &m.token("acme", "customers:read"), "{}");
    assert_eq!((r.status, reason(&r)), (403, Some("missing_scope")));
    let r = m.sync(1, "globex", &t, "{}");
    assert_eq!((r.status, reason(&r)), (403, Some("tenant_boundary")));
    let r = m.sync(1, "acme", &t, r#"{"tenant":"globex"}"#);
    assert_eq!(
        (r.status, reason(&r)),
        (422, Some("schema_violation")),
        "{}",
        r.body_str()
    );
    assert_eq!(
        m.recorded("external-crm").len(),
        1,
        "a refused sync reached the CRM"
    );
}

#[test]
fn a_stopped_gateway_replica_leaves_the_other_serving_and_comes_back() {
    let _l = MESH.lock().unwrap_or_else(|p| p.into_inner());
    let Some(m) = mesh() else { return };
    let t = m.token("acme", "customers:read");
    m.stop("gateway-2");
    let started = Instant::now();
    let r = m.get(1, CUSTOMERS, &t);
    assert_eq!(r.status, 0, "a stopped replica answered");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal took {:?}",
        started.elapsed()
    );
    for _ in 0..10 {
        assert_eq!(m.get(0, CUSTOMERS, &t).status, 200);
    }
    m.start("gateway-2");
    m.wait_healthy("gateway-2");
    m.wait_until("gateway-2 serves again", 60, || {
        m.get(1, CUSTOMERS, &t).status == 200
    });
}

#[test]
fn with_the_idp_down_known_keys_keep_serving_a_fresh_sidecar_fails_closed_and_recovers() {
    let _l = MESH.lock().unwrap_or_else(|p| p.into_inner());
    let Some(m) = mesh() else { return };
    let t = m.token("acme", "customers:read");
    m.stop("idp");
    // Every filter already holds the keys: nothing changes for callers.
    for gw in 0..2 {
        assert_eq!(m.get(gw, CUSTOMERS, &t).status, 200);
    }
    // A sidecar that starts while the IdP is down has no keys: 503, never an unchecked 200.
    m.compose(&["restart", "-t", "5", "crm-sidecar"]);
    m.wait_healthy("crm-sidecar");
    let r = m.get(0, CUSTOMERS, &t);
    assert_eq!(
        (r.status, reason(&r)),
        (503, Some("jwks_unavailable")),
        "{}",
        r.body_str()
    );
    assert!(r.header("retry-after").is_some());
    m.start("idp");
    m.wait_healthy("idp");
    m.wait_until("the sidecar fetches the keys again", 60, || {
        m.get(0, CUSTOMERS, &t).status == 200
    });
}

impl Mesh {
    /// A token of a fresh tenant on the `pilot` plan (5 requests, then one a minute, held by
    /// the fleet-wide rate limit service for both replicas; the CRM sidecar's own local policy
    /// does not know the plan, so only the gateways' shared count can refuse).
    fn pilot(&self) -> (String, String) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tenant = format!(
            "pilot-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut spec = self.token_spec(&tenant, "customers:read");
        spec.extra.push(("tier".into(), "pilot".into()));
        let pem = std::fs::read_to_string(repo().join("policies/demo-keys/demo-rs256.key.pem"))
            .unwrap_or_else(|e| panic!("demo key: {e}"));
        let t = token::mint(&spec, SigningAlg::RS256, &pem, "demo-rs256")
            .unwrap_or_else(|e| panic!("mint: {e}"));
        (format!("/api/v1/tenants/{tenant}/customers"), t)
    }
}

#[test]
fn fleet_wide_limits_hold_across_both_gateway_replicas() {
    let _l = MESH.lock().unwrap_or_else(|p| p.into_inner());
    let Some(m) = mesh() else { return };
    let (path, t) = m.pilot();
    // Alternate replicas: each sees half the traffic, and the tenant still gets exactly 5.
    let statuses: Vec<u16> = (0..12).map(|i| m.get(i % 2, &path, &t).status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    let r = m.get(0, &path, &t);
    assert_eq!(r.status, 429, "{}", r.body_str());
    assert_eq!(
        (r.json()["reason"].as_str(), r.json()["policy"].as_str()),
        (Some("rate_limited"), Some("tenant"))
    );
}

#[test]
fn with_redis_or_the_rate_limit_service_down_global_limits_fail_open_fast_and_recover() {
    let _l = MESH.lock().unwrap_or_else(|p| p.into_inner());
    let Some(m) = mesh() else { return };
    // The documented failure mode of the demo's global limits is `allow`: callers are served
    // (local limits still apply), within the call's 100 ms timeout, and counted.
    for service in ["redis", "ratelimit-service"] {
        m.stop(service);
        let (path, t) = m.pilot();
        for i in 0..8 {
            let started = Instant::now();
            let r = m.get(i % 2, &path, &t);
            assert_eq!(
                r.status,
                200,
                "{service} down, request {i}: {}",
                r.body_str()
            );
            assert!(
                r.header("ratelimit").is_some(),
                "local limits still applied"
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{service} down: took {:?}",
                started.elapsed()
            );
        }
        m.start(service);
        if service == "redis" {
            m.wait_healthy("redis");
        }
        // Exact again once the service answers: a fresh pilot tenant gets 5.
        m.wait_until(
            &format!("global limits after {service} restarts"),
            60,
            || {
                let (path, t) = m.pilot();
                (0..7)
                    .filter(|i| m.get(i % 2, &path, &t).status == 200)
                    .count()
                    == 5
            },
        );
    }
}

#[test]
fn a_stopped_sidecar_gives_503_upstream_unavailable_and_recovers() {
    let _l = MESH.lock().unwrap_or_else(|p| p.into_inner());
    let Some(m) = mesh() else { return };
    let t = m.token("acme", &format!("crm:sync customers:read {ALL_PII}"));
    m.stop("crm-sidecar");
    let started = Instant::now();
    let r = m.get(0, CUSTOMERS, &t);
    assert_eq!(
        (r.status, reason(&r)),
        (503, Some("upstream_unavailable")),
        "{}",
        r.body_str()
    );
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/problem+json")));
    assert_eq!(r.json()["reason"], "upstream_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    // The sync worker's read fails through its own sidecar: 503 with its reason, nothing sent.
    m.reset("external-crm");
    let r = m.sync(0, "acme", &t, "{}");
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert_eq!(
        r.json()["reason"],
        "crm_api_unavailable",
        "{}",
        r.body_str()
    );
    assert!(m.recorded("external-crm").is_empty());
    m.start("crm-sidecar");
    m.wait_healthy("crm-sidecar");
    m.wait_until("the CRM API is served again", 60, || {
        m.get(0, CUSTOMERS, &t).status == 200
    });
    // The other way round: the sync worker's sidecar down, the CRM API unaffected.
    m.stop("sync-sidecar");
    let r = m.sync(1, "acme", &t, "{}");
    assert_eq!(
        (r.status, reason(&r)),
        (503, Some("upstream_unavailable")),
        "{}",
        r.body_str()
    );
    assert_eq!(m.get(1, CUSTOMERS, &t).status, 200);
    m.start("sync-sidecar");
    m.wait_healthy("sync-sidecar");
    m.wait_until("syncs are served again", 60, || {
        m.sync(1, "acme", &t, r#"{"dry_run":true}"#).status == 200
    });
}
