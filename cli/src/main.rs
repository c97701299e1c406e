//! `portcullis`: check policies, render the Envoy config, mint demo tokens.
//!
//! Arguments are parsed by clap from the types below: each subcommand's `--help` is generated
//! from the same declarations that parse it, so the two cannot drift. Flag names, defaults and
//! positional arguments are an interface (the Makefile, the bench and compose scripts, the
//! README and the integration tests call them): `cli/tests/cli.rs` holds them in place.

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use portcullis_cli::render::{self, ConfigFormat, RenderOptions};
use portcullis_cli::token::{self, SigningAlg, TokenSpec};
use portcullis_cli::{catalog, chain, openapi, policy, policytest, reload, CliError, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Policy tooling for the Portcullis Envoy filters.
#[derive(Parser)]
#[command(name = "portcullis", version)]
// A repeated single-value option keeps its last value, as scripts that append overrides expect.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate policy files with the filters' own config compilers.
    Check(CheckArgs),
    /// Write an Envoy config (or Istio manifests) from a template and the policies.
    ///
    /// With `--format envoy` (the default) the template's placeholders are filled with the
    /// compiled policies and the options below; with `--format istio`, WasmPlugins and an
    /// EnvoyFilter for the same policies are written instead (a YAML stream).
    Render(Box<RenderArgs>),
    /// Publish changed policies to a running Envoy without a restart (hot reload).
    ///
    /// Loads and compiles every policy with the filters' own code (as `check` does); on any
    /// error nothing is written. Otherwise each changed filter configuration is written
    /// atomically to the reload directory `render --reload-dir` set up, where Envoy picks it up
    /// (extension config discovery from files). A change that would alter Envoy's bootstrap
    /// (listener buffers, edge settings) needs a restart and is refused.
    Apply(ApplyArgs),
    /// Turn emergency mode on or off at run time (through the same reload directory).
    ///
    /// On: only routes marked `essential` stay open (others get 503 `emergency_mode`), limits
    /// with an `emergency` amount drop to it, and no scope unmasks personal data.
    Emergency(EmergencyArgs),
    /// Run policy test files through the filters, with coverage.
    ///
    /// Every case runs through each filter's real callbacks, in chain order, on the fake host.
    Test(TestArgs),
    /// Which rule of each filter matched one request, and why.
    Explain(ExplainArgs),
    /// Policy files from another description of the API.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Generate an API key for a micro app.
    ///
    /// The key is printed once (stdout), then the authn.yaml entry that stores only its digest
    /// (stderr).
    Apikey(ApikeyArgs),
    /// Mint a DEMO token signed with the demo keys (never for production).
    Token(TokenArgs),
    /// List the app catalog: each app's owner, tier, status, and what it can reach.
    ///
    /// Offline, from the policies alone: the routes whose scope requirements the app's allowed
    /// scopes satisfy, and the data classes (with their pii rules) it can see unmasked.
    Catalog(CatalogArgs),
    /// Pack each filter as a Wasm OCI image (Istio's compat variant).
    ///
    /// Per filter: an OCI layout directory, and the same image as a `docker load` archive
    /// (FILTER.tar), tagged portcullis-FILTER:VERSION.
    Oci(OciArgs),
    /// Pack a staged root filesystem as a reproducible image archive.
    ///
    /// One layer, byte-identical for identical files whatever their times and umask (`make
    /// images`).
    Image(ImageArgs),
    /// Fresh keys for every algorithm the benchmark compares (`make bench`).
    #[command(hide = true)]
    BenchKeys(BenchKeysArgs),
    /// Copy a built module, leaving out the callbacks its filter does not implement (`make build`).
    #[command(hide = true)]
    TrimModule(TrimModuleArgs),
}

#[derive(Args)]
struct CatalogArgs {
    /// Policy directory.
    #[arg(long, value_name = "DIR", default_value = "policies")]
    policies: PathBuf,
}

#[derive(Args)]
struct CheckArgs {
    /// Policy directory.
    #[arg(value_name = "POLICY_DIR", default_value = "policies")]
    dir: PathBuf,
}

/// How `render` writes its output.
#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// An Envoy bootstrap config from `--template`.
    Envoy,
    /// Istio WasmPlugins and an EnvoyFilter (a YAML stream).
    Istio,
}

/// How filter configs are embedded in the Envoy config.
#[derive(Clone, Copy, ValueEnum)]
enum FilterConfigFormat {
    /// A JSON string (`google.protobuf.StringValue`).
    Json,
    /// A YAML struct (`google.protobuf.Struct`).
    Struct,
}

/// Which proxies the Istio manifests select.
#[derive(Clone, Copy, ValueEnum)]
enum IstioMode {
    /// An ingress gateway.
    Gateway,
    /// Sidecars, inbound traffic only.
    Sidecar,
}

/// A `HOST:PORT` option value.
#[derive(Clone)]
struct HostPort {
    host: String,
    port: u16,
}

/// Parses `HOST:PORT`; the port is what follows the last colon.
fn host_port(s: &str) -> std::result::Result<HostPort, String> {
    let (host, port) = s.rsplit_once(':').ok_or("expected HOST:PORT")?;
    let port = port
        .parse()
        .map_err(|_| format!("`{port}` is not a port (HOST:PORT)"))?;
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// Parses `NAME=VALUE` (split at the first `=`).
fn name_value(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected NAME=VALUE".to_string())
}

/// Parses `name: value` (split at the first `:`, both trimmed, the name lower-cased).
fn header(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once(':')
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .ok_or_else(|| "expected 'name: value'".to_string())
}

#[derive(Args)]
struct RenderArgs {
    /// Policy directory.
    #[arg(long, value_name = "DIR", default_value = "policies")]
    policies: PathBuf,
    /// What to write.
    #[arg(long, value_enum, default_value_t = OutputFormat::Envoy)]
    format: OutputFormat,
    /// Where the modules (authn.wasm, …) are: made absolute for the Envoy config; their
    /// digests go into the Istio manifests.
    #[arg(long, value_name = "DIR", default_value = "dist")]
    wasm_dir: PathBuf,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Envoy config template.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "envoy/gateway.yaml.tmpl",
        help_heading = "Envoy (--format envoy)"
    )]
    template: PathBuf,
    /// Gateway port on 127.0.0.1.
    // Numbers may look like flags (`-1`): taking them as values gets the clearer error.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10000,
        allow_negative_numbers = true,
        help_heading = "Envoy (--format envoy)"
    )]
    listen_port: u16,
    /// Admin port on 127.0.0.1.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 9901,
        allow_negative_numbers = true,
        help_heading = "Envoy (--format envoy)"
    )]
    admin_port: u16,
    /// Upstream address; several (comma-separated or the flag repeated) make one cluster
    /// whose failing endpoints are ejected.
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port, value_delimiter = ',', default_value = "127.0.0.1:8080", help_heading = "Envoy (--format envoy)")]
    upstream: Vec<HostPort>,
    /// How filter configs are embedded.
    #[arg(long, value_enum, default_value_t = FilterConfigFormat::Json, help_heading = "Envoy (--format envoy)")]
    config_format: FilterConfigFormat,
    /// Leave path normalisation to the filters alone (Envoy's own is on by default).
    #[arg(long, help_heading = "Envoy (--format envoy)")]
    no_envoy_normalize: bool,
    /// Run every filter from the one-module build (portcullis.wasm in --wasm-dir) in one VM
    /// per worker: one module for Envoy to compile at start-up instead of four.
    #[arg(long, help_heading = "Envoy (--format envoy)")]
    one_module: bool,
    /// The origin clients use (DPoP `htu`); overrides the authn policy's
    /// `dpop.external_origin`.
    #[arg(long, value_name = "URL", help_heading = "Envoy (--format envoy)")]
    external_origin: Option<String>,
    /// Serve the gateway over TLS with this certificate chain (needs --tls-key).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        help_heading = "Gateway TLS"
    )]
    tls_cert: Option<PathBuf>,
    /// The gateway's private key (needs --tls-cert).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        help_heading = "Gateway TLS"
    )]
    tls_key: Option<PathBuf>,
    /// CA of client certificates: clients may present one (optional; needed for RFC 8705
    /// certificate-bound tokens).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        help_heading = "Gateway TLS"
    )]
    tls_client_ca: Option<PathBuf>,
    /// Where remote JWKS are fetched (default: the upstream).
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port, help_heading = "Remote JWKS")]
    jwks_upstream: Option<HostPort>,
    /// Fetch remote JWKS over TLS (SNI and certificate checked against the host name).
    #[arg(long, help_heading = "Remote JWKS")]
    jwks_tls: bool,
    /// CA bundle for --jwks-tls.
    #[arg(
        long,
        value_name = "PEM",
        requires = "jwks_tls",
        default_value = "/etc/ssl/certs/ca-certificates.crt",
        help_heading = "Remote JWKS"
    )]
    jwks_ca: PathBuf,
    /// Rate limit service for `scope: global` limits.
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port, default_value = "127.0.0.1:8081", help_heading = "Fleet-wide limits")]
    rls: HostPort,
    /// Also write the rate limit service's config (`portcullis-rls --config`).
    #[arg(long, value_name = "FILE", help_heading = "Fleet-wide limits")]
    rls_out: Option<PathBuf>,
    /// Write the audit trail (one JSON record per request) to this file; `/dev/stdout` ships it
    /// with Envoy's output. Off unless given; needs --audit-key-file.
    #[arg(
        long,
        value_name = "PATH",
        requires = "audit_key_file",
        help_heading = "Audit trail"
    )]
    audit_log: Option<String>,
    /// The key (hex, at least 32 bytes: `openssl rand -hex 32`) the audit record's subject,
    /// client and address hashes are made with. Keep it secret and stable: records link across
    /// restarts and replicas only under the same key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "audit_log",
        help_heading = "Audit trail"
    )]
    audit_key_file: Option<PathBuf>,

    /// Serve the wasm filters' configurations from files in DIR (extension config discovery),
    /// so `portcullis apply` and `portcullis emergency` change them without a restart. Writes
    /// the files and DIR/portcullis-reload.json beside the bootstrap config.
    #[arg(long, value_name = "DIR", help_heading = "Hot reload")]
    reload_dir: Option<PathBuf>,

    /// Namespace of every resource.
    #[arg(
        long,
        value_name = "NS",
        default_value = "portcullis",
        help_heading = "Istio (--format istio)"
    )]
    namespace: String,
    /// Workload label to select, repeatable (default: app=portcullis-gateway).
    #[arg(long, value_name = "KEY=VALUE", value_parser = name_value, help_heading = "Istio (--format istio)")]
    selector: Vec<(String, String)>,
    /// An ingress gateway, or sidecars' inbound traffic.
    #[arg(long, value_enum, default_value_t = IstioMode::Gateway, help_heading = "Istio (--format istio)")]
    istio_mode: IstioMode,
    /// Modules from oci://REG/portcullis-<module>:<version> (pinned by manifest digest).
    #[arg(
        long,
        value_name = "REG",
        conflicts_with = "wasm_url_dir",
        help_heading = "Istio (--format istio)"
    )]
    oci_registry: Option<String>,
    /// Modules from file://DIR/<module>.wasm inside the proxy (default: /etc/portcullis/wasm).
    #[arg(long, value_name = "DIR", help_heading = "Istio (--format istio)")]
    wasm_url_dir: Option<String>,
}

#[derive(Args)]
struct ApplyArgs {
    /// Policy directory (default: the one in force).
    #[arg(long, value_name = "DIR")]
    policies: Option<PathBuf>,
    /// The reload directory Envoy was rendered with (`render --reload-dir`).
    #[arg(long, value_name = "DIR")]
    reload_dir: PathBuf,
    /// Envoy's admin endpoint: wait until Envoy has loaded each changed filter, and fail if
    /// it refused one.
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<String>,
    /// Check the policies and print what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Args)]
struct EmergencyArgs {
    /// `on` or `off`.
    #[arg(value_enum)]
    state: Switch,
    /// The reload directory Envoy was rendered with (`render --reload-dir`).
    #[arg(long, value_name = "DIR")]
    reload_dir: PathBuf,
    /// Envoy's admin endpoint: wait until Envoy has loaded the new configurations.
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<String>,
}

/// `render`'s arguments alone, to parse what `render --reload-dir` recorded.
#[derive(Parser)]
#[command(name = "render", args_override_self = true)]
struct RenderOnly {
    #[command(flatten)]
    args: RenderArgs,
}

#[derive(Args)]
struct TestArgs {
    /// A test file or a directory of them (default: POLICY_DIR/tests).
    tests: Option<PathBuf>,
    /// Policy directory.
    #[arg(long, value_name = "DIR", default_value = "policies")]
    policies: PathBuf,
    /// Fail when fewer than N % of rules, routes and limits are exercised.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    min_coverage: f64,
}

/// The claims of a demo token (`explain` and `token`).
#[derive(Args)]
struct DemoClaims {
    /// `tenant` claim.
    #[arg(long, value_name = "T")]
    tenant: Option<String>,
    /// Scopes, space-separated; repeatable.
    #[arg(long, value_name = "SCOPES")]
    scope: Vec<String>,
    /// Role; repeatable.
    #[arg(long, value_name = "R")]
    role: Vec<String>,
    /// An extra string claim; repeatable.
    #[arg(long, value_name = "NAME=VALUE", value_parser = name_value)]
    claim: Vec<(String, String)>,
}

/// `--scope` values, each a space-separated list.
fn split_scopes(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|s| s.split_whitespace())
        .map(str::to_string)
        .collect()
}

#[derive(Args)]
struct ExplainArgs {
    /// HTTP method.
    method: String,
    /// Request path, with query.
    path: String,
    /// Policy directory.
    #[arg(long, value_name = "DIR", default_value = "policies")]
    policies: PathBuf,
    /// A request header; repeatable.
    #[arg(long, value_name = "'name: value'", value_parser = header)]
    header: Vec<(String, String)>,
    /// Request body (content-type application/json unless a --header sets one).
    #[arg(long, value_name = "JSON", allow_hyphen_values = true)]
    body: Option<String>,
    /// The client's address.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    client_ip: String,
    /// A bearer token; without one, the demo-token options mint one.
    #[arg(long, value_name = "JWT")]
    token: Option<String>,
    #[command(flatten, next_help_heading = "Demo token (without --token)")]
    claims: DemoClaims,
    /// What the upstream answers: status.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 200,
        allow_negative_numbers = true,
        help_heading = "Upstream answer"
    )]
    upstream_status: u16,
    /// What the upstream answers: a JSON body.
    #[arg(
        long,
        value_name = "JSON",
        default_value = "{}",
        allow_hyphen_values = true,
        help_heading = "Upstream answer"
    )]
    upstream_body: String,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// authn.yaml, schema.yaml and pii.yaml from an OpenAPI 3.x document (JSON or YAML).
    Openapi(ImportOpenapiArgs),
}

#[derive(Args)]
struct ImportOpenapiArgs {
    /// The OpenAPI document.
    spec: PathBuf,
    /// Where to write the policy files (default: print a summary only).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct ApikeyArgs {
    /// The micro app the key is for.
    #[arg(long, value_name = "APP")]
    app: String,
    /// Tenant the key is bound to.
    #[arg(long, value_name = "T")]
    tenant: Option<String>,
    /// Scopes, space-separated; repeatable.
    #[arg(long, value_name = "SCOPES")]
    scope: Vec<String>,
    /// Rate limit tier.
    #[arg(long, value_name = "TIER")]
    tier: Option<String>,
    /// Entry id (default: APP-<first 6 characters of the key>).
    #[arg(long, value_name = "ID")]
    id: Option<String>,
}

/// Algorithms the demo keys sign with.
#[derive(Clone, Copy, ValueEnum)]
enum DemoAlg {
    /// RSA PKCS#1 v1.5 SHA-256 (demo-rs256.key.pem).
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 SHA-256 (demo-es256.key.pem).
    #[value(name = "ES256")]
    Es256,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    claims: DemoClaims,
    /// `sub` claim.
    #[arg(long, value_name = "S", default_value = "demo-user")]
    sub: String,
    /// `client_id` claim.
    #[arg(long, value_name = "A")]
    app: Option<String>,
    /// Lifetime in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 3600,
        allow_negative_numbers = true
    )]
    ttl: u64,
    /// Signing algorithm.
    #[arg(long, value_enum, default_value_t = DemoAlg::Rs256)]
    alg: DemoAlg,
    /// Directory of the demo keys.
    #[arg(long, value_name = "DIR", default_value = "policies/demo-keys")]
    keys: PathBuf,
    /// `iss` claim (default: the demo provider's).
    #[arg(long, value_name = "URL", default_value = DEMO_ISSUER)]
    issuer: String,
    /// `aud` claim (default: the demo provider's).
    #[arg(long, value_name = "AUD", default_value = DEMO_AUDIENCE)]
    audience: String,
}

#[derive(Args)]
struct OciArgs {
    /// Filters to pack (default: authn ratelimit schema pii).
    #[arg(value_name = "FILTER")]
    filters: Vec<String>,
    /// Where FILTER.wasm are.
    #[arg(long, value_name = "DIR", default_value = "dist")]
    wasm_dir: PathBuf,
    /// Output directory.
    #[arg(long, value_name = "DIR", default_value = "dist/oci")]
    out: PathBuf,
}

#[derive(Args)]
struct ImageArgs {
    /// The staged root filesystem.
    #[arg(long, value_name = "DIR")]
    rootfs: PathBuf,
    /// Image reference written into the archive.
    #[arg(long, value_name = "REPO:TAG")]
    tag: String,
    /// The `docker load` archive to write.
    #[arg(long, value_name = "FILE.tar")]
    out: PathBuf,
    /// Entrypoint, its arguments separated by commas.
    #[arg(long, value_name = "a,b")]
    entrypoint: Option<String>,
    /// User the container runs as.
    #[arg(long, value_name = "UID:GID")]
    user: Option<String>,
    /// An environment variable; repeatable.
    #[arg(long, value_name = "K=V")]
    env: Vec<String>,
    /// An image label; repeatable.
    #[arg(long, value_name = "K=V", value_parser = name_value)]
    label: Vec<(String, String)>,
}

#[derive(Args)]
struct TrimModuleArgs {
    /// The filter the module runs (`authn`, `ratelimit`, `schema`, `pii`, `all` for the one module).
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "callbacks",
        required_unless_present = "callbacks"
    )]
    filter: Option<String>,
    /// For another module: the callbacks it implements besides the request headers
    /// (`request_body`, `response_headers`, `response_body`, `done`), comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    callbacks: Option<Vec<String>>,
    /// The module cargo built.
    input: PathBuf,
    /// Where to write the trimmed module.
    output: PathBuf,
}

#[derive(Args)]
struct BenchKeysArgs {
    /// Directory to write the keys, JWKS and tokens to.
    dir: PathBuf,
}

fn trim_module_cmd(a: &TrimModuleArgs) -> portcullis_cli::Result<()> {
    use portcullis_cli::trim;
    let callbacks = match (&a.filter, &a.callbacks) {
        (Some(f), _) => trim::callbacks_of(f).ok_or_else(|| {
            CliError(format!(
                "unknown filter `{f}` (authn, ratelimit, schema, pii, all)"
            ))
        })?,
        (None, Some(list)) => trim::callbacks_named(list)?,
        (None, None) => return Err(CliError("--filter or --callbacks is required".into())),
    };
    let module =
        std::fs::read(&a.input).map_err(|e| CliError(format!("{}: {e}", a.input.display())))?;
    let (out, dropped) = trim::drop_exports(&module, &callbacks.unneeded_exports())
        .map_err(|e| CliError(format!("{}: {e}", a.input.display())))?;
    std::fs::write(&a.output, out).map_err(|e| CliError(format!("{}: {e}", a.output.display())))?;
    println!(
        "{}: left out {}",
        a.output.display(),
        if dropped.is_empty() {
            "nothing".into()
        } else {
            dropped.join(", ")
        }
    );
    Ok(())
}

/// The demo provider's issuer and audience (policies/authn.yaml).
const DEMO_ISSUER: &str = "https://idp.demo.portcullis.local";
const DEMO_AUDIENCE: &str = "portcullis-demo-api";

fn main() -> ExitCode {
    // Usage errors, --help and --version exit here, with clap's messages and exit codes.
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check(a)) => check(&a),
        Some(Command::Render(a)) => render_cmd(&a),
        Some(Command::Apply(a)) => apply_cmd(&a),
        Some(Command::Emergency(a)) => emergency_cmd(&a),
        Some(Command::Test(a)) => test_cmd(&a),
        Some(Command::Explain(a)) => explain_cmd(&a),
        Some(Command::Import(ImportCommand::Openapi(a))) => import_openapi(&a),
        Some(Command::Apikey(a)) => apikey_cmd(&a),
        Some(Command::Token(a)) => token_cmd(&a),
        Some(Command::Catalog(a)) => catalog_cmd(&a),
        Some(Command::Oci(a)) => oci_cmd(&a),
        Some(Command::Image(a)) => image_cmd(&a),
        Some(Command::TrimModule(a)) => trim_module_cmd(&a),
        Some(Command::BenchKeys(a)) => {
            portcullis_cli::benchkeys::generate(&a.dir, DEMO_ISSUER, DEMO_AUDIENCE)
        }
        // Bare `portcullis` lists the commands, as `portcullis help` does.
        None => Cli::command()
            .print_help()
            .map_err(|e| CliError(e.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `path: error`, for errors about a file the user named.
fn catalog_cmd(a: &CatalogArgs) -> Result<()> {
    let p = policy::load(&a.policies)?;
    print!("{}", catalog::report(&p)?);
    Ok(())
}

fn at(path: &Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError(format!("{}: {e}", path.display()))
}

fn check(a: &CheckArgs) -> Result<()> {
    let dir = &a.dir;
    let p = policy::load(dir)?;
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
        "ok: {}/{}: trusted_hops {}, request timeout {} s, {} header(s) stripped, {} retries (idempotent methods), at most {} connections",
        dir.display(),
        portcullis_cli::gateway::GATEWAY_FILE,
        gw.trusted_hops,
        gw.timeouts.request_seconds,
        gw.stripped_headers().len(),
        gw.resilience.retries.attempts,
        gw.resilience.max_downstream_connections
    );
    // Resilience settings left to their defaults are worth a look, not a failure.
    let gw_path = dir.join(portcullis_cli::gateway::GATEWAY_FILE);
    let raw = if gw_path.exists() {
        Some(policy::read_yaml(&gw_path)?)
    } else {
        eprintln!(
            "warning: {}: no such file; every edge and resilience default applies",
            gw_path.display()
        );
        None
    };
    for w in portcullis_cli::gateway::unset_settings(raw.as_ref()) {
        eprintln!("warning: {}: {w}", gw_path.display());
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
    if let Some((_, cat)) = catalog::of(&p)? {
        for w in catalog::check(&p)? {
            eprintln!("warning: {}/{w}", dir.display());
        }
        println!(
            "ok: {}/{}: {} app(s)",
            dir.display(),
            catalog::CATALOG_FILE,
            cat.apps.len()
        );
    }
    Ok(())
}

/// Writes `out` to the file, or to stdout without one.
fn emit(out: &str, file: Option<&Path>) -> Result<()> {
    match file {
        Some(path) => std::fs::write(path, out).map_err(at(path)),
        None => {
            print!("{out}");
            Ok(())
        }
    }
}

fn render_cmd(a: &RenderArgs) -> Result<()> {
    let policies = policy::load(&a.policies)?;
    if let OutputFormat::Istio = a.format {
        if a.audit_log.is_some() {
            return Err(CliError(
                "--audit-log renders an Envoy access log (--format envoy); with Istio, add the same json_format to the mesh's access logging (see README, \"Audit trail\")".into(),
            ));
        }
        if a.reload_dir.is_some() {
            return Err(CliError(
                "--reload-dir serves configs to Envoy from files (--format envoy); Istio reloads WasmPlugins itself".into(),
            ));
        }
        if a.one_module {
            return Err(CliError(
                "--one-module renders an Envoy config (--format envoy); the Istio manifests name each filter's own module".into(),
            ));
        }
        return istio_render(a, &policies);
    }
    if let Some(path) = &a.rls_out {
        let cfg = render::rls_config(&policies)?;
        std::fs::write(path, cfg).map_err(at(path))?;
    }
    let Some(dir) = &a.reload_dir else {
        let out = render_envoy(a, &policies, false)?;
        return emit(&out, a.out.as_deref());
    };
    let dir = reload::absolute(dir)?;
    // A directory already in use keeps its emergency state: rendering again (a restart) must
    // not silently end an emergency.
    let emergency = reload::Manifest::read(&dir).is_ok_and(|m| m.emergency);
    let inline = render_envoy(a, &policies, emergency)?;
    let (bootstrap, files) = reload::split(&inline, &dir)?;
    reload::publish(&dir, &files)?;
    let cwd = std::env::current_dir()?;
    reload::Manifest {
        render_args: recorded_render_args(),
        cwd,
        policies: std::fs::canonicalize(&a.policies).map_err(at(&a.policies))?,
        emergency,
        bootstrap: bootstrap.clone(),
    }
    .write(&dir)?;
    emit(&bootstrap, a.out.as_deref())
}

/// This process's `render` arguments without the output file: what `apply` renders again.
fn recorded_render_args() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip_while(|a| a != "render").skip(1);
    while let Some(a) = args.next() {
        if a == "--out" || a == "--rls-out" {
            args.next();
        } else if !a.starts_with("--out=") && !a.starts_with("--rls-out=") {
            out.push(a);
        }
    }
    out
}

/// The Envoy config with every filter configuration inline.
fn render_envoy(a: &RenderArgs, policies: &policy::Policies, emergency: bool) -> Result<String> {
    let template = std::fs::read_to_string(&a.template).map_err(at(&a.template))?;
    let wasm_dir = std::fs::canonicalize(&a.wasm_dir).unwrap_or_else(|_| a.wasm_dir.clone());
    let canonical = |p: &PathBuf| std::fs::canonicalize(p).map_err(at(p));
    let Some((first_upstream, rest)) = a.upstream.split_first() else {
        return Err(CliError("--upstream: at least one HOST:PORT".into()));
    };
    let opts = RenderOptions {
        listen_port: a.listen_port,
        admin_port: a.admin_port,
        upstream_host: first_upstream.host.clone(),
        upstream_port: first_upstream.port,
        extra_upstreams: rest.iter().map(|hp| (hp.host.clone(), hp.port)).collect(),
        wasm_dir,
        envoy_normalize_path: !a.no_envoy_normalize,
        format: match a.config_format {
            FilterConfigFormat::Json => ConfigFormat::Json,
            FilterConfigFormat::Struct => ConfigFormat::Struct,
        },
        // clap makes --tls-cert and --tls-key require each other.
        downstream_tls: match (&a.tls_cert, &a.tls_key) {
            (Some(c), Some(k)) => Some(render::DownstreamTls {
                cert: canonical(c)?,
                key: canonical(k)?,
                client_ca: a.tls_client_ca.as_ref().map(canonical).transpose()?,
            }),
            _ => None,
        },
        jwks_upstream: a
            .jwks_upstream
            .as_ref()
            .map(|hp| (hp.host.clone(), hp.port)),
        jwks_tls: a.jwks_tls.then(|| render::JwksTls {
            ca_file: a.jwks_ca.clone(),
        }),
        external_origin: a.external_origin.clone(),
        rls_host: a.rls.host.clone(),
        rls_port: a.rls.port,
        audit: match (&a.audit_log, &a.audit_key_file) {
            (Some(log), Some(key)) => Some(render::AuditLog::from_key_file(log, key)?),
            _ => None,
        },
        emergency,
        one_module: a.one_module,
    };
    render::render(&template, policies, &opts)
}

fn apply_cmd(a: &ApplyArgs) -> Result<()> {
    apply(
        &a.reload_dir,
        a.policies.as_deref(),
        None,
        a.admin.as_deref(),
        a.dry_run,
    )
}

fn emergency_cmd(a: &EmergencyArgs) -> Result<()> {
    let on = matches!(a.state, Switch::On);
    apply(&a.reload_dir, None, Some(on), a.admin.as_deref(), false)
}

/// Renders the policies (new ones, or those in force) with the recorded options and the
/// emergency state (new, or the one in force), and publishes the filter files that changed.
fn apply(
    reload_dir: &Path,
    policies: Option<&Path>,
    emergency: Option<bool>,
    admin: Option<&str>,
    dry_run: bool,
) -> Result<()> {
    let dir = std::fs::canonicalize(reload_dir).map_err(at(reload_dir))?;
    let manifest = reload::Manifest::read(&dir)?;
    let policies_dir = match policies {
        Some(p) => std::fs::canonicalize(p).map_err(at(p))?,
        None => manifest.policies.clone(),
    };
    let emergency = emergency.unwrap_or(manifest.emergency);
    // Relative paths in the recorded arguments (template, keys, modules) are render's.
    std::env::set_current_dir(&manifest.cwd).map_err(at(&manifest.cwd))?;
    let argv = std::iter::once("render".to_string())
        .chain(manifest.render_args.iter().cloned())
        .chain([
            "--policies".to_string(),
            policies_dir.to_string_lossy().to_string(),
        ]);
    let recorded = RenderOnly::try_parse_from(argv)
        .map_err(|e| CliError(format!("{}: recorded render arguments: {e}", dir.display())))?
        .args;
    let loaded = policy::load(&policies_dir)?;
    let inline = render_envoy(&recorded, &loaded, emergency)?;
    let (bootstrap, files) = reload::split(&inline, &dir)?;
    if bootstrap != manifest.bootstrap {
        return Err(CliError(format!(
            "this change alters Envoy's bootstrap config, not only the filters' ({}); render again and restart Envoy",
            reload::first_difference(&manifest.bootstrap, &bootstrap)
        )));
    }
    let changed: Vec<&reload::FilterFile> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(dir.join(f.file_name()))
                .ok()
                .as_ref()
                != Some(&f.content)
        })
        .collect();
    let mode = if emergency { "on" } else { "off" };
    println!(
        "policies {} (emergency mode {mode}): {} of {} filter configurations change",
        policies_dir.display(),
        changed.len(),
        files.len()
    );
    for f in &changed {
        println!("  {}", f.name);
    }
    if dry_run {
        return Ok(());
    }
    let before = match admin {
        Some(addr) => {
            let stats = reload::admin_stats(addr)?;
            changed
                .iter()
                .map(|f| (f.name.clone(), reload::counters(&stats, &f.name)))
                .collect()
        }
        None => Vec::new(),
    };
    reload::publish(&dir, &files)?;
    reload::Manifest {
        policies: policies_dir,
        emergency,
        ..manifest
    }
    .write(&dir)?;
    if let Some(addr) = admin {
        let refused = reload::confirm(addr, &before, std::time::Duration::from_secs(10))?;
        if !refused.is_empty() {
            return Err(CliError(format!(
                "Envoy refused the new configuration of {} and keeps serving the previous one (see its log)",
                refused.join(", ")
            )));
        }
        println!("Envoy at {addr} loaded every changed configuration");
    }
    Ok(())
}

/// `render --format istio`: WasmPlugins and an EnvoyFilter from the same policies.
fn istio_render(a: &RenderArgs, policies: &policy::Policies) -> Result<()> {
    use portcullis_cli::istio::{self, IstioOptions, Mode, ModuleSource};
    let mut opts = IstioOptions {
        namespace: a.namespace.clone(),
        mode: match a.istio_mode {
            IstioMode::Gateway => Mode::Gateway,
            IstioMode::Sidecar => Mode::SidecarInbound,
        },
        wasm_dir: a.wasm_dir.clone(),
        ..IstioOptions::default()
    };
    if !a.selector.is_empty() {
        opts.selector = a.selector.clone();
    }
    // clap makes --oci-registry and --wasm-url-dir exclude each other.
    if let Some(r) = &a.oci_registry {
        opts.source = ModuleSource::Oci {
            registry: r.clone(),
        };
    } else if let Some(d) = &a.wasm_url_dir {
        opts.source = ModuleSource::File { dir: d.clone() };
    }
    let out = istio::render(policies, &opts)?;
    emit(&out, a.out.as_deref())
}

fn test_cmd(a: &TestArgs) -> Result<()> {
    let tests = a.tests.clone().unwrap_or_else(|| a.policies.join("tests"));
    let policies = policy::load(&a.policies)?;
    let suites = policytest::load(&tests)?;
    let mut stdout = std::io::stdout();
    let report = policytest::run(&policies, &suites, &mut stdout)?;
    let _ = std::io::Write::flush(&mut stdout);
    if report.failed > 0 {
        return Err(CliError(format!("{} case(s) failed", report.failed)));
    }
    if report.percent() + 1e-9 < a.min_coverage {
        return Err(CliError(format!(
            "coverage {:.1} % is below --min-coverage {}",
            report.percent(),
            a.min_coverage
        )));
    }
    Ok(())
}

/// The demo token described by the claim options and the rest of its spec.
fn token_spec(c: &DemoClaims, rest: TokenSpec) -> TokenSpec {
    TokenSpec {
        tenant: c.tenant.clone(),
        scopes: split_scopes(&c.scope),
        roles: c.role.clone(),
        extra: c.claim.clone(),
        ..rest
    }
}

/// A demo token from `--tenant/--scope/--role/--claim` (explain), or `None`.
fn demo_token_from(c: &DemoClaims) -> Result<Option<String>> {
    if c.tenant.is_none() && c.scope.is_empty() && c.role.is_empty() {
        return Ok(None);
    }
    let path = Path::new("policies/demo-keys/demo-rs256.key.pem");
    let pem = std::fs::read_to_string(path).map_err(at(path))?;
    let spec = token_spec(
        c,
        TokenSpec {
            issuer: DEMO_ISSUER.into(),
            audience: DEMO_AUDIENCE.into(),
            subject: "demo-user".into(),
            tenant: None,
            app: None,
            scopes: vec![],
            roles: vec![],
            extra: vec![],
            ttl_secs: 600,
        },
    );
    token::mint(&spec, SigningAlg::RS256, &pem, "demo-rs256").map(Some)
}

fn explain_cmd(a: &ExplainArgs) -> Result<()> {
    let policies = policy::load(&a.policies)?;
    let compiled = chain::Compiled::new(&policies)?;
    let mut headers = a.header.clone();
    let token = match &a.token {
        Some(t) => Some(t.clone()),
        None => demo_token_from(&a.claims)?,
    };
    if let Some(t) = token {
        headers.push(("authorization".into(), format!("Bearer {t}")));
    }
    let body = a.body.as_ref().map(|b| b.as_bytes().to_vec());
    if body.is_some() && !headers.iter().any(|(k, _)| k == "content-type") {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let req = chain::SimRequest {
        method: a.method.to_ascii_uppercase(),
        path: a.path.clone(),
        headers,
        body,
        client_ip: a.client_ip.clone(),
    };
    let resp = chain::SimResponse {
        status: a.upstream_status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: a.upstream_body.as_bytes().to_vec(),
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

fn import_openapi(a: &ImportOpenapiArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.spec).map_err(at(&a.spec))?;
    let imported = openapi::import(&text)?;
    println!("{}", imported.summary());
    if let Some(out) = &a.out {
        imported.write(out)?;
        let out = out.display();
        println!(
            "wrote {out}/authn.yaml, {out}/schema.yaml, {out}/pii.yaml — review the REVIEW markers"
        );
    }
    Ok(())
}

fn apikey_cmd(a: &ApikeyArgs) -> Result<()> {
    let app = a.app.as_str();
    let scopes = split_scopes(&a.scope);
    let mut g = portcullis_cli::apikey::generate(
        app,
        app,
        a.tenant.as_deref(),
        &scopes,
        a.tier.as_deref(),
    )?;
    let id = match &a.id {
        Some(id) => id.clone(),
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

fn token_cmd(a: &TokenArgs) -> Result<()> {
    let (alg, file, kid) = match a.alg {
        DemoAlg::Rs256 => (SigningAlg::RS256, "demo-rs256.key.pem", "demo-rs256"),
        DemoAlg::Es256 => (SigningAlg::ES256, "demo-es256.key.pem", "demo-es256"),
    };
    let path = a.keys.join(file);
    let pem = std::fs::read_to_string(&path).map_err(at(&path))?;
    let spec = token_spec(
        &a.claims,
        TokenSpec {
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            subject: a.sub.clone(),
            tenant: None,
            app: a.app.clone(),
            scopes: vec![],
            roles: vec![],
            extra: vec![],
            ttl_secs: a.ttl,
        },
    );
    println!("{}", token::mint(&spec, alg, &pem, kid)?);
    Ok(())
}

/// `oci`: each filter as a Wasm compat image, an OCI layout directory plus a `docker load`
/// archive, named `portcullis-<filter>:<version>`.
fn oci_cmd(a: &OciArgs) -> Result<()> {
    use portcullis_cli::oci::Image;
    let filters: Vec<String> = if a.filters.is_empty() {
        ["authn", "ratelimit", "schema", "pii"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        a.filters.clone()
    };
    let out = &a.out;
    std::fs::create_dir_all(out).map_err(at(out))?;
    let version = env!("CARGO_PKG_VERSION");
    for f in &filters {
        let path = a.wasm_dir.join(format!("{f}.wasm"));
        let wasm = std::fs::read(&path).map_err(at(&path))?;
        let img = Image::wasm_compat(&wasm, f, version)?;
        let tag = format!("{}:{version}", portcullis_cli::istio::image_name(f));
        img.write_layout_dir(&out.join(f), &tag)?;
        let tar = out.join(format!("{f}.tar"));
        std::fs::write(&tar, img.archive(&tag)?).map_err(at(&tar))?;
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
fn image_cmd(a: &ImageArgs) -> Result<()> {
    use portcullis_cli::oci::{self, Image, RuntimeConfig};
    let layer = oci::layer_tar(&oci::entries_from_dir(&a.rootfs)?)?;
    let rc = RuntimeConfig {
        entrypoint: a
            .entrypoint
            .as_ref()
            .map(|e| e.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        user: a.user.clone(),
        env: a.env.clone(),
        labels: a.label.clone(),
        ..Default::default()
    };
    let img = Image::build(&[layer], false, &rc, &[])?;
    std::fs::write(&a.out, img.archive(&a.tag)?).map_err(at(&a.out))?;
    println!("{}  image id {}", a.tag, img.config_digest);
    Ok(())
}
