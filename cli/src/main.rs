//! `portcullis`: check policies, render the Envoy config, mint demo tokens.

use portcullis_cli::render::{self, ConfigFormat, RenderOptions};
use portcullis_cli::token::{self, SigningAlg, TokenSpec};
use portcullis_cli::{policy, CliError, Result};
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
    let o = Opts::parse(args, &["no-envoy-normalize"])?;
    o.reject_unknown(&[
        "policies",
        "template",
        "wasm-dir",
        "out",
        "listen-port",
        "admin-port",
        "upstream",
        "config-format",
    ])?;
    let policies = policy::load(Path::new(o.get("policies").unwrap_or("policies")))?;
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
    };
    let out = render::render(&template, &policies, &opts)?;
    match o.get("out") {
        Some(path) => std::fs::write(path, out).map_err(|e| CliError(format!("{path}: {e}")))?,
        None => print!("{out}"),
    }
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
    let mut extra = Vec::new();
    for c in o.all("claim") {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| CliError("--claim must be NAME=VALUE".into()))?;
        extra.push((k.to_string(), v.to_string()));
    }
    let spec = TokenSpec {
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
        scopes: o
            .all("scope")
            .iter()
            .flat_map(|s| s.split_whitespace())
            .map(str::to_string)
            .collect(),
        roles: o.all("role").iter().map(|s| s.to_string()).collect(),
        extra,
        ttl_secs: o.get("ttl").map_or(Ok(3600), |v| {
            v.parse()
                .map_err(|_| CliError("--ttl: not a number".into()))
        })?,
    };
    println!("{}", token::mint(&spec, alg, &pem, kid)?);
    Ok(())
}
