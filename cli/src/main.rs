//! `portcullis`: check policies, render the Envoy config, mint demo tokens.

use portcullis_cli::render::{self, ConfigFormat, RenderOptions};
use portcullis_cli::token::{self, SigningAlg, TokenSpec};
use portcullis_cli::{chain, openapi, policy, policytest, CliError, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "portcullis — policy tooling for the Portcullis Envoy filters

USAGE:
  portcullis check [POLICY_DIR]            validate policy files (default: policies)
  portcullis render [options]              write an Envoy config from envoy/ and policies/
      --policies DIR        policy directory (default: policies)
      --template FILE       template (default: envoy/gateway.yaml.tmpl)
      --wasm-dir DIR        where authn.wasm etc. are (default: dist, made absolute)
      --out FILE            output file (default: stdout)
      --listen-port N       gateway port on 127.0.0.1 (default: 10000)
      --admin-port N        admin port on 127.0.0.1 (default: 9901)
      --upstream HOST:PORT  upstream address (default: 127.0.0.1:8080)
      --config-format json|struct   how filter configs are embedded (default: json)
      --no-envoy-normalize  leave path normalisation to the filters alone
      --tls-cert PEM --tls-key PEM [--tls-client-ca PEM]   serve the gateway over TLS
                            (client certificates optional; needed for RFC 8705 bound tokens)
      --jwks-upstream HOST:PORT  where remote JWKS are fetched (default: the upstream)
      --jwks-tls [--jwks-ca PEM] fetch them over TLS (default CA bundle: the system's)
      --external-origin URL      the origin clients use (DPoP htu); overrides the policy's
      --rls HOST:PORT       rate limit service for scope: global limits (default: 127.0.0.1:8081)
      --rls-out FILE        also write the rate limit service's config (portcullis-rls --config)
  portcullis render --format istio [options]   Istio WasmPlugins + EnvoyFilter (YAML stream)
      --namespace NS        (default: portcullis)
      --selector KEY=VALUE  workload labels, repeatable (default: app=portcullis-gateway)
      --istio-mode gateway|sidecar   gateway, or sidecars' inbound traffic (default: gateway)
      --oci-registry REG    url oci://REG/portcullis-<module>:<version> (sha256: manifest digest)
      --wasm-url-dir DIR    else url file://DIR/<module>.wasm (default: /etc/portcullis/wasm)
  portcullis oci [FILTER...] [--wasm-dir dist] [--out dist/oci]
                            Wasm images (Istio's compat variant): an OCI layout per filter,
                            and the same as a `docker load` archive (FILTER.tar)
  portcullis test [TESTS] [options]        run policy test files through the filters' decision code
      --policies DIR        policy directory (default: policies)
      --min-coverage N      fail when fewer than N % of rules, routes and limits are exercised
      TESTS: a test file or directory (default: POLICY_DIR/tests)
  portcullis explain METHOD PATH [options] which rule of each filter matched one request, and why
      --policies DIR  --header 'name: value' (repeatable)  --body JSON  --client-ip IP
      --token JWT, or a demo token: --tenant T --scope \"a b\" --role R --claim NAME=VALUE
      --upstream-status N  --upstream-body JSON  (what the upstream answers; default 200 {})
  portcullis import openapi SPEC [options] policy files from an OpenAPI 3.x document
      --out DIR             where to write authn.yaml, schema.yaml, pii.yaml (default: stdout summary)
  portcullis apikey --app APP [options]    generate an API key; prints it once, and the policy entry
      --tenant T  --scope \"a b\"  --tier TIER  --id ID (default: APP-<key prefix>)
  portcullis token [options]               mint a DEMO token signed with the demo key
      --tenant T  --scope \"a b\"  --role R (repeatable)  --sub S  --app A
      --ttl SECONDS (default 3600)  --alg RS256|ES256 (default RS256)
      --claim NAME=VALUE (repeatable)  --keys DIR (default: policies/demo-keys)
      --issuer URL  --audience AUD (defaults: the demo provider's)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("check") => check(&args[1..]),
        Some("render") => render_cmd(&args[1..]),
        Some("token") => token_cmd(&args[1..]),
        Some("test") => test_cmd(&args[1..]),
        Some("apikey") => apikey_cmd(&args[1..]),
        // Benchmark material (make bench); not part of the documented interface.
        Some("bench-keys") => match args.get(1) {
            Some(dir) => portcullis_cli::benchkeys::generate(
                Path::new(dir),
                "https://idp.demo.portcullis.local",
                "portcullis-demo-api",
            ),
            None => Err(CliError("usage: portcullis bench-keys DIR".into())),
        },
        Some("explain") => explain_cmd(&args[1..]),
        Some("oci") => oci_cmd(&args[1..]),
        // Packs a staged root filesystem as a reproducible image archive (`make images`).
        Some("image") => image_cmd(&args[1..]),
        Some("import") => import_cmd(&args[1..]),
        Some("help" | "-h" | "--help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(CliError(format!(
            "unknown command `{other}`; see `portcullis help`"
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` options; flags without values are listed in `flags`.
struct Opts {
    pairs: Vec<(String, String)>,
    flags: Vec<String>,
    positional: Vec<String>,
}

impl Opts {
    fn parse(args: &[String], flags: &[&str]) -> Result<Opts> {
        let mut o = Opts {
            pairs: vec![],
            flags: vec![],
            positional: vec![],
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if flags.contains(&name) {
                    o.flags.push(name.to_string());
                } else {
                    let v = it
                        .next()
                        .ok_or_else(|| CliError(format!("--{name} needs a value")))?;
                    o.pairs.push((name.to_string(), v.clone()));
                }
            } else {
                o.positional.push(a.clone());
            }
        }
        Ok(o)
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn port(&self, name: &str, default: u16) -> Result<u16> {
        self.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| CliError(format!("--{name}: not a port")))
        })
    }
    fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(CliError(format!("unknown option --{k}"))),
            None => Ok(()),
        }
    }
}

fn check(args: &[String]) -> Result<()> {
    let o = Opts::parse(args, &[])?;
    o.reject_unknown(&[])?;
    let dir = PathBuf::from(o.positional.first().map_or("policies", String::as_str));
    let p = policy::load(&dir)?;
    let authn = policy::compile_authn(&p.authn)?;
    println!(
        "ok: {}/{}: {} provider(s), {} route(s)",
        dir.display(),
        policy::AUTHN_FILE,
        authn.providers.len(),
        authn.routes.len()
    );
    let schema = policy::compile_schema(&p.schema)?;
    println!(
        "ok: {}/{}: {} route(s)",
        dir.display(),
        policy::SCHEMA_FILE,
        schema.routes.len()
    );
    for (file, doc) in [
        (policy::RATELIMIT_IP_FILE, &p.ratelimit_ip),
        (policy::RATELIMIT_FILE, &p.ratelimit),
    ] {
        let rl = policy::compile_ratelimit(doc, file)?;
        println!("ok: {}/{file}: {} limit(s)", dir.display(), rl.limits.len());
    }
    let gw = &p.gateway;
    println!(
        "ok: {}/{}: trusted_hops {}, request timeout {} s, {} header(s) stripped",
        dir.display(),
        portcullis_cli::gateway::GATEWAY_FILE,
        gw.trusted_hops,
        gw.timeouts.request_seconds,
        gw.stripped_headers().len()
    );
    for (file, doc) in [
        (policy::PII_FILE, &p.pii),
        (policy::PII_EGRESS_FILE, &p.pii_egress),
    ] {
        let pii = policy::compile_pii(doc, file)?;
        println!(
            "ok: {}/{file}: {} rule(s), {} profile(s), {} route(s)",
            dir.display(),
            pii.rules.len(),
            pii.profiles.len(),
            pii.routes.len()
        );
    }
    Ok(())
}

fn render_cmd(args: &[String]) -> Result<()> {
    let o = Opts::parse(args, &["no-envoy-normalize", "jwks-tls"])?;
    o.reject_unknown(&[
        "jwks-upstream",
        "jwks-ca",
        "external-origin",
        "policies",
        "template",
        "wasm-dir",
        "out",
        "listen-port",
        "admin-port",
        "upstream",
        "config-format",
        "tls-cert",
        "tls-key",
        "tls-client-ca",
        "format",
        "namespace",
        "selector",
        "istio-mode",
        "oci-registry",
        "wasm-url-dir",
        "rls",
        "rls-out",
    ])?;
    let policies = policy::load(Path::new(o.get("policies").unwrap_or("policies")))?;
    match o.get("format").unwrap_or("envoy") {
        "envoy" => {}
        "istio" => return istio_render(&o, &policies),
        other => {
            return Err(CliError(format!(
                "--format: `{other}` is not envoy or istio"
            )))
        }
    }
    let (rls_host, rls_port) = o
        .get("rls")
        .unwrap_or("127.0.0.1:8081")
        .rsplit_once(':')
        .ok_or_else(|| CliError("--rls must be HOST:PORT".into()))?;
    let template_path = o.get("template").unwrap_or("envoy/gateway.yaml.tmpl");
    let template = std::fs::read_to_string(template_path)
        .map_err(|e| CliError(format!("{template_path}: {e}")))?;
    let wasm_dir = PathBuf::from(o.get("wasm-dir").unwrap_or("dist"));
    let wasm_dir = std::fs::canonicalize(&wasm_dir).unwrap_or(wasm_dir);
    let (host, port) = o
        .get("upstream")
        .unwrap_or("127.0.0.1:8080")
        .rsplit_once(':')
        .ok_or_else(|| CliError("--upstream must be HOST:PORT".into()))?;
    let format = match o.get("config-format").unwrap_or("json") {
        "json" => ConfigFormat::Json,
        "struct" => ConfigFormat::Struct,
        other => {
            return Err(CliError(format!(
                "--config-format: `{other}` is not json or struct"
            )))
        }
    };
    let opts = RenderOptions {
        listen_port: o.port("listen-port", 10000)?,
        admin_port: o.port("admin-port", 9901)?,
        upstream_host: host.to_string(),
        upstream_port: port
            .parse()
            .map_err(|_| CliError("--upstream: bad port".into()))?,
        wasm_dir,
        envoy_normalize_path: !o.flags.iter().any(|f| f == "no-envoy-normalize"),
        format,
        downstream_tls: match (o.get("tls-cert"), o.get("tls-key")) {
            (Some(c), Some(k)) => Some(render::DownstreamTls {
                cert: std::fs::canonicalize(c).map_err(|e| CliError(format!("{c}: {e}")))?,
                key: std::fs::canonicalize(k).map_err(|e| CliError(format!("{k}: {e}")))?,
                client_ca: o
                    .get("tls-client-ca")
                    .map(|a| std::fs::canonicalize(a).map_err(|e| CliError(format!("{a}: {e}"))))
                    .transpose()?,
            }),
            (None, None) => None,
            _ => return Err(CliError("--tls-cert and --tls-key go together".into())),
        },
        jwks_upstream: o
            .get("jwks-upstream")
            .map(|hp| {
                let (h, p) = hp
                    .rsplit_once(':')
                    .ok_or_else(|| CliError("--jwks-upstream must be HOST:PORT".into()))?;
                let p = p
                    .parse()
                    .map_err(|_| CliError("--jwks-upstream: bad port".into()))?;
                Ok::<_, CliError>((h.to_string(), p))
            })
            .transpose()?,
        jwks_tls: o
            .flags
            .iter()
            .any(|f| f == "jwks-tls")
            .then(|| render::JwksTls {
                ca_file: PathBuf::from(
                    o.get("jwks-ca")
                        .unwrap_or("/etc/ssl/certs/ca-certificates.crt"),
                ),
            }),
        external_origin: o.get("external-origin").map(str::to_string),
        rls_host: rls_host.to_string(),
        rls_port: rls_port
            .parse()
            .map_err(|_| CliError("--rls: bad port".into()))?,
    };
    if let Some(path) = o.get("rls-out") {
        let cfg = render::rls_config(&policies)?;
        std::fs::write(path, cfg).map_err(|e| CliError(format!("{path}: {e}")))?;
    }
    let out = render::render(&template, &policies, &opts)?;
    match o.get("out") {
        Some(path) => std::fs::write(path, out).map_err(|e| CliError(format!("{path}: {e}")))?,
        None => print!("{out}"),
    }
    Ok(())
}

fn test_cmd(args: &[String]) -> Result<()> {
    let o = Opts::parse(args, &[])?;
    o.reject_unknown(&["policies", "min-coverage"])?;
    let dir = PathBuf::from(o.get("policies").unwrap_or("policies"));
    let tests = o
        .positional
        .first()
        .map_or_else(|| dir.join("tests"), PathBuf::from);
    let min: f64 = o.get("min-coverage").map_or(Ok(0.0), |v| {
        v.parse()
            .map_err(|_| CliError("--min-coverage: not a number".into()))
    })?;
    let policies = policy::load(&dir)?;
    let suites = policytest::load(&tests)?;
    let mut stdout = std::io::stdout();
    let report = policytest::run(&policies, &suites, &mut stdout)?;
    let _ = std::io::Write::flush(&mut stdout);
    if report.failed > 0 {
        return Err(CliError(format!("{} case(s) failed", report.failed)));
    }
    if report.percent() + 1e-9 < min {
        return Err(CliError(format!(
            "coverage {:.1} % is below --min-coverage {min}",
            report.percent()
        )));
    }
    Ok(())
}

/// A demo token from `--tenant/--scope/--role/--claim` (explain), or `None`.
fn demo_token_from(o: &Opts) -> Result<Option<String>> {
    if o.get("tenant").is_none() && o.all("scope").is_empty() && o.all("role").is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read_to_string("policies/demo-keys/demo-rs256.key.pem")
        .map_err(|e| CliError(format!("policies/demo-keys/demo-rs256.key.pem: {e}")))?;
    token::mint(&token_spec(o, 600)?, SigningAlg::RS256, &pem, "demo-rs256").map(Some)
}

/// `--scope` values, each a space-separated list.
fn scopes_of(o: &Opts) -> Vec<String> {
    o.all("scope")
        .iter()
        .flat_map(|s| s.split_whitespace())
        .map(str::to_string)
        .collect()
}

/// The demo token described by the token options (`token` and `explain`).
fn token_spec(o: &Opts, default_ttl: u64) -> Result<TokenSpec> {
    let mut extra = Vec::new();
    for c in o.all("claim") {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| CliError("--claim must be NAME=VALUE".into()))?;
        extra.push((k.to_string(), v.to_string()));
    }
    Ok(TokenSpec {
        issuer: o
            .get("issuer")
            .unwrap_or("https://idp.demo.portcullis.local")
            .to_string(),
        audience: o
            .get("audience")
            .unwrap_or("portcullis-demo-api")
            .to_string(),
        subject: o.get("sub").unwrap_or("demo-user").to_string(),
        tenant: o.get("tenant").map(str::to_string),
        app: o.get("app").map(str::to_string),
        scopes: scopes_of(o),
        roles: o.all("role").iter().map(|s| s.to_string()).collect(),
        extra,
        ttl_secs: o.get("ttl").map_or(Ok(default_ttl), |v| {
            v.parse()
                .map_err(|_| CliError("--ttl: not a number".into()))
        })?,
    })
}

fn explain_cmd(args: &[String]) -> Result<()> {
    let o = Opts::parse(args, &[])?;
    o.reject_unknown(&[
        "policies",
        "header",
        "body",
        "client-ip",
        "token",
        "tenant",
        "scope",
        "role",
        "claim",
        "upstream-status",
        "upstream-body",
    ])?;
    let (Some(method), Some(path)) = (o.positional.first(), o.positional.get(1)) else {
        return Err(CliError(
            "usage: portcullis explain METHOD PATH [options]".into(),
        ));
    };
    let policies = policy::load(Path::new(o.get("policies").unwrap_or("policies")))?;
    let compiled = chain::Compiled::new(&policies)?;
    let mut headers = Vec::new();
    for h in o.all("header") {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| CliError("--header must be 'name: value'".into()))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let token = match o.get("token") {
        Some(t) => Some(t.to_string()),
        None => demo_token_from(&o)?,
    };
    if let Some(t) = token {
        headers.push(("authorization".into(), format!("Bearer {t}")));
    }
    let body = o.get("body").map(|b| b.as_bytes().to_vec());
    if body.is_some() && !headers.iter().any(|(k, _)| k == "content-type") {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let req = chain::SimRequest {
        method: method.to_ascii_uppercase(),
        path: path.clone(),
        headers,
        body,
        client_ip: o.get("client-ip").unwrap_or("127.0.0.1").to_string(),
    };
    let resp = chain::SimResponse {
        status: o.get("upstream-status").map_or(Ok(200), |v| {
            v.parse()
                .map_err(|_| CliError("--upstream-status: not a number".into()))
        })?,
        headers: vec![("content-type".into(), "application/json".into())],
        body: o.get("upstream-body").unwrap_or("{}").as_bytes().to_vec(),
    };
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut state = chain::ChainState::new(&compiled)?;
    let out = chain::run(&compiled, &mut state, &req, &resp, now_ns);
    println!("{} {}", req.method, req.path);
    for s in &out.trace {
        println!("  {:<13} {:<26} {}", s.filter, s.matched, s.outcome);
    }
    match &out.reason {
        Some(r) => println!("=> {} {r} (decided by {})", out.status, out.decided_by),
        None => println!("=> {} from the upstream", out.status),
    }
    if out.reason.is_some() || !out.body.is_empty() {
        println!("{}", String::from_utf8_lossy(&out.body));
    }
    Ok(())
}

fn import_cmd(args: &[String]) -> Result<()> {
    let o = Opts::parse(args, &[])?;
    o.reject_unknown(&["out"])?;
    let (Some(kind), Some(spec)) = (o.positional.first(), o.positional.get(1)) else {
        return Err(CliError(
            "usage: portcullis import openapi SPEC [--out DIR]".into(),
        ));
    };
    if kind != "openapi" {
        return Err(CliError(format!(
            "import: `{kind}` is not supported (only `openapi`)"
        )));
    }
    let text = std::fs::read_to_string(spec).map_err(|e| CliError(format!("{spec}: {e}")))?;
    let imported = openapi::import(&text)?;
    println!("{}", imported.summary());
    if let Some(out) = o.get("out") {
        imported.write(Path::new(out))?;
        println!(
            "wrote {out}/authn.yaml, {out}/schema.yaml, {out}/pii.yaml — review the REVIEW markers"
        );
    }
    Ok(())
}

fn apikey_cmd(args: &[String]) -> Result<()> {
    let o = Opts::parse(args, &[])?;
    o.reject_unknown(&["app", "tenant", "scope", "tier", "id"])?;
    let app = o
        .get("app")
        .ok_or_else(|| CliError("apikey: --app is required".into()))?;
    let scopes = scopes_of(&o);
    let mut g =
        portcullis_cli::apikey::generate(app, app, o.get("tenant"), &scopes, o.get("tier"))?;
    let id = match o.get("id") {
        Some(id) => id.to_string(),
        None => format!(
            "{app}-{}",
            &g.key[portcullis_cli::apikey::KEY_PREFIX.len()..][..6]
        ),
    };
    g.entry["id"] = serde_json::Value::from(id);
    let entry = serde_norway::to_string(&vec![g.entry]).map_err(|e| CliError(e.to_string()))?;
    eprintln!("API key for `{app}` (shown once; give it to the app, store it as a secret):");
    println!("{}", g.key);
    eprintln!("\nAdd to authn.yaml under api_keys.keys (only the digest is stored):\n");
    eprint!("{entry}");
    Ok(())
}

fn token_cmd(args: &[String]) -> Result<()> {
    let o = Opts::parse(args, &[])?;
    o.reject_unknown(&[
        "tenant", "scope", "role", "sub", "app", "ttl", "alg", "claim", "keys", "issuer",
        "audience",
    ])?;
    let alg = SigningAlg::parse(o.get("alg").unwrap_or("RS256"))?;
    let keys = PathBuf::from(o.get("keys").unwrap_or("policies/demo-keys"));
    let (file, kid) = match alg {
        SigningAlg::RS256 => ("demo-rs256.key.pem", "demo-rs256"),
        SigningAlg::ES256 => ("demo-es256.key.pem", "demo-es256"),
        SigningAlg::HS256 => return Err(CliError("the demo provider has no HMAC key".into())),
    };
    let pem = std::fs::read_to_string(keys.join(file))
        .map_err(|e| CliError(format!("{}: {e}", keys.join(file).display())))?;
    let spec = token_spec(&o, 3600)?;
    println!("{}", token::mint(&spec, alg, &pem, kid)?);
    Ok(())
}

/// `render --format istio`: WasmPlugins and an EnvoyFilter from the same policies.
fn istio_render(o: &Opts, policies: &policy::Policies) -> Result<()> {
    use portcullis_cli::istio::{self, IstioOptions, Mode, ModuleSource};
    let mut opts = IstioOptions::default();
    if let Some(ns) = o.get("namespace") {
        opts.namespace = ns.to_string();
    }
    let selectors = o.all("selector");
    if !selectors.is_empty() {
        opts.selector = selectors
            .iter()
            .map(|s| {
                s.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| CliError("--selector must be KEY=VALUE".into()))
            })
            .collect::<Result<_>>()?;
    }
    opts.mode = match o.get("istio-mode").unwrap_or("gateway") {
        "gateway" => Mode::Gateway,
        "sidecar" => Mode::SidecarInbound,
        other => {
            return Err(CliError(format!(
                "--istio-mode: `{other}` is not gateway or sidecar"
            )))
        }
    };
    opts.source = match (o.get("oci-registry"), o.get("wasm-url-dir")) {
        (Some(_), Some(_)) => {
            return Err(CliError(
                "--oci-registry and --wasm-url-dir exclude each other".into(),
            ))
        }
        (Some(r), None) => ModuleSource::Oci {
            registry: r.to_string(),
        },
        (None, Some(d)) => ModuleSource::File { dir: d.to_string() },
        (None, None) => opts.source,
    };
    opts.wasm_dir = PathBuf::from(o.get("wasm-dir").unwrap_or("dist"));
    let out = istio::render(policies, &opts)?;
    match o.get("out") {
        Some(path) => std::fs::write(path, out).map_err(|e| CliError(format!("{path}: {e}")))?,
        None => print!("{out}"),
    }
    Ok(())
}

/// `oci`: each filter as a Wasm compat image, an OCI layout directory plus a `docker load`
/// archive, named `portcullis-<filter>:<version>`.
fn oci_cmd(args: &[String]) -> Result<()> {
    use portcullis_cli::oci::Image;
    let o = Opts::parse(args, &[])?;
    o.reject_unknown(&["wasm-dir", "out"])?;
    let wasm_dir = PathBuf::from(o.get("wasm-dir").unwrap_or("dist"));
    let out = PathBuf::from(o.get("out").unwrap_or("dist/oci"));
    let filters: Vec<String> = if o.positional.is_empty() {
        ["authn", "ratelimit", "schema", "pii"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        o.positional.clone()
    };
    std::fs::create_dir_all(&out).map_err(|e| CliError(format!("{}: {e}", out.display())))?;
    let version = env!("CARGO_PKG_VERSION");
    for f in &filters {
        let path = wasm_dir.join(format!("{f}.wasm"));
        let wasm =
            std::fs::read(&path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        let img = Image::wasm_compat(&wasm, f, version)?;
        let tag = format!("{}:{version}", portcullis_cli::istio::image_name(f));
        img.write_layout_dir(&out.join(f), &tag)?;
        let tar = out.join(format!("{f}.tar"));
        std::fs::write(&tar, img.archive(&tag)?)
            .map_err(|e| CliError(format!("{}: {e}", tar.display())))?;
        println!(
            "{tag}  manifest {}  module {}  {}",
            img.manifest_digest,
            portcullis_cli::oci::digest(&wasm),
            tar.display()
        );
    }
    Ok(())
}

/// `image`: a staged directory as a one-layer image archive, byte-identical for identical
/// files (`make images`).
fn image_cmd(args: &[String]) -> Result<()> {
    use portcullis_cli::oci::{self, Image, RuntimeConfig};
    let o = Opts::parse(args, &[])?;
    o.reject_unknown(&["rootfs", "tag", "out", "entrypoint", "user", "env", "label"])?;
    let (Some(rootfs), Some(tag), Some(out)) = (o.get("rootfs"), o.get("tag"), o.get("out")) else {
        return Err(CliError(
            "usage: portcullis image --rootfs DIR --tag REPO:TAG --out FILE.tar [--entrypoint a,b] [--user UID:GID] [--env K=V] [--label K=V]".into(),
        ));
    };
    let layer = oci::layer_tar(&oci::entries_from_dir(Path::new(rootfs))?)?;
    let rc = RuntimeConfig {
        entrypoint: o
            .get("entrypoint")
            .map(|e| e.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        user: o.get("user").map(str::to_string),
        env: o.all("env").iter().map(|s| s.to_string()).collect(),
        labels: o
            .all("label")
            .iter()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let img = Image::build(&[layer], false, &rc, &[])?;
    std::fs::write(out, img.archive(tag)?).map_err(|e| CliError(format!("{out}: {e}")))?;
    println!("{tag}  image id {}", img.config_digest);
    Ok(())
}
