//! Renders `envoy/gateway.yaml.tmpl` into a complete Envoy config: ports, upstream, wasm paths
//! and each filter's configuration inlined (as JSON in a `StringValue`, or as a `Struct`).

use crate::policy::Policies;
use crate::{CliError, Result};
use serde_json::{json, Value};
use std::path::PathBuf;

/// How a filter's configuration is embedded in the Wasm plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// `google.protobuf.StringValue` holding JSON.
    Json,
    /// `google.protobuf.Struct` (what a user writing YAML in envoy.yaml produces).
    Struct,
}

/// Everything a rendered config depends on besides the policies.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Gateway listener port on 127.0.0.1.
    pub listen_port: u16,
    /// Admin port on 127.0.0.1.
    pub admin_port: u16,
    /// Upstream host (an IP address).
    pub upstream_host: String,
    /// Upstream port.
    pub upstream_port: u16,
    /// More endpoints of the upstream cluster besides `upstream_host:upstream_port` (IP
    /// address, port): Envoy balances over all of them and ejects failing ones.
    pub extra_upstreams: Vec<(String, u16)>,
    /// Directory holding `authn.wasm` and the other modules (absolute path recommended).
    pub wasm_dir: PathBuf,
    /// Turn on Envoy's own path normalisation in front of the filters.
    pub envoy_normalize_path: bool,
    /// Embedding of filter configs.
    pub format: ConfigFormat,
    /// Serve the gateway over TLS.
    pub downstream_tls: Option<DownstreamTls>,
    /// Where the `portcullis_jwks` cluster sends remote JWKS fetches (host, port); the
    /// upstream when unset (the demo upstream doubles as the identity provider).
    pub jwks_upstream: Option<(String, u16)>,
    /// Fetch remote JWKS over TLS (SNI and certificate checked against the host name).
    pub jwks_tls: Option<JwksTls>,
    /// The origin clients use to reach the gateway (DPoP `htu`); replaces the authn policy's
    /// `dpop.external_origin` when set.
    pub external_origin: Option<String>,
    /// The rate limit service (`portcullis-rls`) for `scope: global` limits: host (IP or DNS
    /// name) and port of the `portcullis_rls` cluster.
    pub rls_host: String,
    /// Its port.
    pub rls_port: u16,
    /// The audit trail: one JSON record per request through Envoy's access log.
    pub audit: Option<AuditLog>,
    /// Emergency mode (`portcullis emergency on`): authn, both ratelimit instances and the
    /// gateway's pii get `emergency: true` and compile their emergency profile.
    pub emergency: bool,
    /// Every Portcullis filter runs from the one-module build ([`ONE_MODULE`]) in one VM per
    /// worker, instead of from its own module.
    pub one_module: bool,
}

/// The policies as they compile in emergency mode (what `portcullis test` runs an
/// `emergency: true` case against, and what `render` inlines when the mode is on).
pub fn emergency_policies(p: &Policies) -> Policies {
    let mut e = p.clone();
    for c in [
        &mut e.authn,
        &mut e.ratelimit,
        &mut e.ratelimit_ip,
        &mut e.pii,
    ] {
        *c = in_emergency(c, true);
    }
    e
}

/// A filter configuration with `emergency: true` when the mode is on (unchanged when off, so
/// the ordinary render is what it always was).
pub fn in_emergency(config: &Value, on: bool) -> Value {
    let mut c = config.clone();
    if let (true, Some(obj)) = (on, c.as_object_mut()) {
        obj.insert("emergency".into(), Value::Bool(true));
    }
    c
}

/// A filter's configuration with `audit: true` when the audit log is on, so the filter writes
/// its audit fields; without the log they would cost host calls on every request for nothing.
fn audited(config: &Value, opts: &RenderOptions) -> Value {
    let mut c = config.clone();
    if let (Some(_), Some(obj)) = (&opts.audit, c.as_object_mut()) {
        obj.insert("audit".into(), Value::Bool(true));
    }
    c
}

/// Where the audit trail goes and the key its hashes are made with.
#[derive(Debug, Clone)]
pub struct AuditLog {
    /// File Envoy appends the records to (`/dev/stdout` to ship them with the container's
    /// output).
    pub path: String,
    /// HMAC key (hex, at least 32 bytes) for the subject, client and address hashes.
    pub hash_key: String,
}

impl AuditLog {
    /// An audit log to `path`, with the key read from `key_file` (hex, as `openssl rand -hex
    /// 32` writes it). A missing, malformed or short key is refused: hashes made with a weak
    /// or known key could be reversed by trying candidate subjects.
    pub fn from_key_file(path: &str, key_file: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(key_file)
            .map_err(|e| CliError(format!("{}: {e}", key_file.display())))?;
        let hash_key = text.trim().to_string();
        portcullis_core::audit::HashKey::from_hex(&hash_key)
            .map_err(|why| CliError(format!("{}: audit key {why}", key_file.display())))?;
        if path.is_empty() {
            return Err(CliError("--audit-log: empty path".into()));
        }
        Ok(AuditLog {
            path: path.to_string(),
            hash_key,
        })
    }
}

/// The access log block of the gateway's HTTP connection manager: one JSON object per line,
/// each field read from Envoy's own stream info or from a filter's audit field
/// (`wasm.portcullis.audit.*` filter state). `ratelimit` lists the ratelimit instances'
/// stat prefixes (each records its own limit).
fn access_log(audit: Option<&AuditLog>, ratelimit: &[String]) -> String {
    let Some(a) = audit else {
        return String::new();
    };
    let fs = |field: &str| format!("%FILTER_STATE(wasm.portcullis.audit.{field}:PLAIN)%");
    let mut fields = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        fields.insert(k.to_string(), v);
    };
    put("time", json!("%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%"));
    put("duration_ms", json!("%DURATION%"));
    put("method", json!("%REQ(:METHOD)%"));
    put("route", json!(fs("route")));
    put("status", json!("%RESPONSE_CODE%"));
    put("upstream_status", json!(fs("upstream_status")));
    put("details", json!("%RESPONSE_CODE_DETAILS%"));
    put("flags", json!("%RESPONSE_FLAGS%"));
    put("decision", json!(fs("decision")));
    put("decided_by", json!(fs("decided_by")));
    put("reason", json!(fs("reason")));
    put("shadow", json!(fs("shadow")));
    put("auth", json!(fs("auth")));
    put("tenant", json!(fs("tenant")));
    put("app", json!(fs("app")));
    put("subject", json!(fs("subject")));
    put("client", json!(fs("client")));
    put("ip", json!(fs("ip")));
    let mut limits = serde_json::Map::new();
    for r in ratelimit {
        limits.insert(
            r.clone(),
            json!({"limit": fs(&format!("{r}.limit")), "remaining": fs(&format!("{r}.remaining"))}),
        );
    }
    put("limits", Value::Object(limits));
    put("masked", json!(fs("masked")));
    put("shadow_masked", json!(fs("shadow_masked")));
    put("pii_passed", json!(fs("pii_passed")));
    put("schema", json!(fs("schema")));
    format!(
        "access_log:
                  - name: envoy.access_loggers.file
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
                      path: {}
                      log_format:
                        json_format: {}",
        Value::from(a.path.as_str()),
        Value::Object(fields)
    )
}

/// TLS toward the identity provider serving remote JWKS.
#[derive(Debug, Clone)]
pub struct JwksTls {
    /// CA bundle the IdP's certificate must chain to (PEM).
    pub ca_file: PathBuf,
}

/// Files for a TLS gateway listener.
#[derive(Debug, Clone)]
pub struct DownstreamTls {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA that signs client certificates (PEM); clients may still connect without one (the
    /// authn filter decides per token and route).
    pub client_ca: Option<PathBuf>,
}

impl DownstreamTls {
    /// The `transport_socket` block, indented for the template's filter chain.
    fn render(&self) -> String {
        let q = |p: &PathBuf| serde_json::Value::from(p.to_string_lossy().to_string()).to_string();
        let mut out = format!(
            "transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: false
              common_tls_context:
                tls_certificates:
                  - certificate_chain: {{ filename: {} }}
                    private_key: {{ filename: {} }}",
            q(&self.cert),
            q(&self.key)
        );
        if let Some(ca) = &self.client_ca {
            out.push_str(&format!(
                "
                validation_context:
                  trusted_ca: {{ filename: {} }}",
                q(ca)
            ));
        }
        out
    }
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            listen_port: 10000,
            admin_port: 9901,
            upstream_host: "127.0.0.1".into(),
            upstream_port: 8080,
            extra_upstreams: Vec::new(),
            wasm_dir: PathBuf::from("dist"),
            envoy_normalize_path: true,
            format: ConfigFormat::Json,
            downstream_tls: None,
            jwks_upstream: None,
            jwks_tls: None,
            external_origin: None,
            rls_host: "127.0.0.1".into(),
            rls_port: 8081,
            audit: None,
            emergency: false,
            one_module: false,
        }
    }
}

/// The `configuration` value of a Wasm plugin, as a YAML flow mapping (JSON is valid YAML).
pub fn plugin_configuration(config: &Value, format: ConfigFormat) -> String {
    match format {
        ConfigFormat::Json => json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": config.to_string(),
        }),
        ConfigFormat::Struct => json!({
            "@type": "type.googleapis.com/google.protobuf.Struct",
            "value": config,
        }),
    }
    .to_string()
}

/// Seconds as an Envoy duration.
fn secs(n: u64) -> String {
    format!("{n}s")
}

/// The authn configuration as rendered: the policy, with the DPoP origin replaced when the
/// gateway is reached at another origin than the policy names, and the API keys as one table.
fn authn_for(policies: &Policies, opts: &RenderOptions) -> Result<serde_json::Value> {
    let mut authn = policies.authn.clone();
    if let Some(origin) = &opts.external_origin {
        match authn.get_mut("dpop").and_then(Value::as_object_mut) {
            Some(dpop) => {
                dpop.insert("external_origin".into(), Value::from(origin.as_str()));
            }
            None => {
                return Err(CliError(
                    "--external-origin given, but the authn policy has no `dpop` section".into(),
                ))
            }
        }
        crate::policy::compile_authn(&authn)?;
    }
    authn = in_emergency(&authn, opts.emergency);
    if let Some(a) = &opts.audit {
        match authn.as_object_mut() {
            Some(obj) => {
                obj.insert("audit".into(), json!({ "hash_key": a.hash_key }));
            }
            None => return Err(CliError("the authn policy is not a mapping".into())),
        }
    }
    crate::policy::compact_api_keys(authn)
}

/// The `transport_socket` of the JWKS cluster, indented for the template.
fn jwks_transport(host: &str, tls: Option<&JwksTls>) -> String {
    let Some(tls) = tls else {
        return String::new();
    };
    let q = |s: &str| Value::from(s).to_string();
    format!(
        "transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: {}
          common_tls_context:
            validation_context:
              trusted_ca: {{ filename: {} }}
              match_typed_subject_alt_names:
                - san_type: DNS
                  matcher: {{ exact: {} }}",
        q(host),
        q(&tls.ca_file.to_string_lossy()),
        q(host)
    )
}

/// Headers a client could forge about where it came from; with no trusted proxy in front they
/// are removed before Envoy adds its own X-Forwarded-For.
const UNTRUSTED_FORWARDING: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

/// The HTTP connection manager's `early_header_mutation_extensions` (before Envoy's own
/// X-Forwarded-For handling), indented for the template.
fn early_header_mutation(trusted_hops: u32) -> String {
    if trusted_hops > 0 {
        return String::new();
    }
    let mut out = String::from(
        "early_header_mutation_extensions:
                  - name: envoy.http.early_header_mutation.header_mutation
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation
                      mutations:",
    );
    for h in UNTRUSTED_FORWARDING {
        out.push_str(&format!(
            "
                        - remove: {h}"
        ));
    }
    out
}

/// The upstream cluster's `lb_endpoints`, as one line (a YAML flow sequence).
fn upstream_endpoints(opts: &RenderOptions) -> String {
    let first = (opts.upstream_host.clone(), opts.upstream_port);
    let endpoints: Vec<String> = std::iter::once(&first)
        .chain(&opts.extra_upstreams)
        .map(|(host, port)| {
            format!(
                "{{ endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {port} }} }} }} }}",
                Value::from(host.as_str())
            )
        })
        .collect();
    format!("[{}]", endpoints.join(", "))
}

/// `key: value` on one line (a JSON flow mapping), or a comment saying why it is absent.
fn optional_line(key: &str, value: Option<Value>, absent: &str) -> String {
    match value {
        Some(v) => format!("{key}: {v}"),
        None => format!("# {absent}"),
    }
}

/// Fills the template; an unknown or unfilled placeholder is an error.
pub fn render(template: &str, policies: &Policies, opts: &RenderOptions) -> Result<String> {
    let wasm_dir = opts.wasm_dir.to_string_lossy().to_string();
    let gw = &policies.gateway;
    let t = &gw.timeouts;
    let (jwks_host, jwks_port) = opts
        .jwks_upstream
        .clone()
        .unwrap_or_else(|| (opts.upstream_host.clone(), opts.upstream_port));
    let authn = authn_for(policies, opts)?;
    let instances: Vec<String> = [&policies.ratelimit_ip, &policies.ratelimit]
        .iter()
        .map(|p| {
            p.get("stat_prefix")
                .and_then(Value::as_str)
                .unwrap_or("ratelimit")
                .to_string()
        })
        .collect();
    let vars: Vec<(&str, String)> = vec![
        ("TRUSTED_HOPS", gw.trusted_hops.to_string()),
        ("ACCESS_LOG", access_log(opts.audit.as_ref(), &instances)),
        (
            "EARLY_HEADER_MUTATION",
            early_header_mutation(gw.trusted_hops),
        ),
        (
            "UNDERSCORES_ACTION",
            gw.headers.underscores.envoy().to_string(),
        ),
        ("CONNECTION_IDLE_TIMEOUT", secs(t.connection_idle_seconds)),
        ("REQUEST_HEADERS_TIMEOUT", secs(t.request_headers_seconds)),
        ("REQUEST_TIMEOUT", secs(t.request_seconds)),
        ("STREAM_IDLE_TIMEOUT", secs(t.stream_idle_seconds)),
        // Kept for templates that write their own route (the gateway's come from ROUTES).
        ("UPSTREAM_TIMEOUT", secs(t.upstream_seconds)),
        (
            "ROUTES",
            gw.resilience
                .routes("upstream", t.upstream_seconds)
                .to_string(),
        ),
        (
            "RETRY_POLICY",
            optional_line(
                "retry_policy",
                gw.resilience.retry_policy(),
                "no retries (resilience.retries.attempts: 0)",
            ),
        ),
        (
            "CIRCUIT_BREAKERS",
            gw.resilience.circuit_breakers().to_string(),
        ),
        (
            "OUTLIER_DETECTION",
            optional_line(
                "outlier_detection",
                gw.resilience.outlier_detection(),
                "no outlier detection (resilience.outlier_detection.consecutive_5xx: 0)",
            ),
        ),
        (
            "MAX_DOWNSTREAM_CONNECTIONS",
            gw.resilience.max_downstream_connections.to_string(),
        ),
        ("MAX_HEADERS_COUNT", gw.headers.max_count.to_string()),
        (
            "MAX_REQUEST_HEADERS_KB",
            gw.headers.max_request_kb.to_string(),
        ),
        ("UPSTREAM_ENDPOINTS", upstream_endpoints(opts)),
        (
            "STRIPPED_HEADERS",
            Value::from(gw.stripped_headers()).to_string(),
        ),
        ("RLS_HOST", opts.rls_host.clone()),
        ("RLS_PORT", opts.rls_port.to_string()),
        ("JWKS_HOST", jwks_host.clone()),
        ("JWKS_PORT", jwks_port.to_string()),
        (
            "JWKS_TRANSPORT_SOCKET",
            jwks_transport(&jwks_host, opts.jwks_tls.as_ref()),
        ),
        ("ADMIN_PORT", opts.admin_port.to_string()),
        ("LISTEN_PORT", opts.listen_port.to_string()),
        ("UPSTREAM_HOST", opts.upstream_host.clone()),
        ("UPSTREAM_PORT", opts.upstream_port.to_string()),
        ("WASM_DIR", wasm_dir),
        ("NORMALIZE_PATH", opts.envoy_normalize_path.to_string()),
        (
            "ENVOY_LOCAL_REPLIES",
            crate::gateway::ENVOY_LOCAL_REPLIES.to_string(),
        ),
        (
            "ESCAPED_SLASHES_ACTION",
            if opts.envoy_normalize_path {
                "REJECT_REQUEST"
            } else {
                "KEEP_UNCHANGED"
            }
            .to_string(),
        ),
        (
            "AUTHN_CONFIGURATION",
            plugin_configuration(&authn, opts.format),
        ),
        (
            "SCHEMA_CONFIGURATION",
            plugin_configuration(&audited(&policies.schema, opts), opts.format),
        ),
        (
            "RATELIMIT_CONFIGURATION",
            plugin_configuration(
                &in_emergency(&audited(&policies.ratelimit, opts), opts.emergency),
                opts.format,
            ),
        ),
        (
            "RATELIMIT_IP_CONFIGURATION",
            plugin_configuration(
                &in_emergency(&audited(&policies.ratelimit_ip, opts), opts.emergency),
                opts.format,
            ),
        ),
        (
            "DOWNSTREAM_TLS",
            opts.downstream_tls
                .as_ref()
                .map(DownstreamTls::render)
                .unwrap_or_default(),
        ),
        (
            "PII_CONFIGURATION",
            plugin_configuration(
                &in_emergency(&audited(&policies.pii, opts), opts.emergency),
                opts.format,
            ),
        ),
        (
            "PII_EGRESS_CONFIGURATION",
            plugin_configuration(&policies.pii_egress, opts.format),
        ),
        (
            "CONNECTION_BUFFER_BYTES",
            policies.connection_buffer_bytes().to_string(),
        ),
        (
            "EGRESS_CONNECTION_BUFFER_BYTES",
            policies.egress_connection_buffer_bytes().to_string(),
        ),
        // The egress buffer filter holds whole request bodies after pii masked them.
        (
            "EGRESS_BUFFER_MAX_BYTES",
            policies.egress_buffer_filter_bytes().to_string(),
        ),
        // The buffer filter must hold the largest body schema accepts (or pii writes).
        (
            "BUFFER_MAX_BYTES",
            policies.buffer_filter_bytes().to_string(),
        ),
    ];
    let mut out = template.to_string();
    for (k, v) in &vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    if let Some(pos) = out.find("{{") {
        let name: String = out[pos..]
            .chars()
            .take_while(|c| *c != '\n')
            .take(60)
            .collect();
        return Err(CliError(format!(
            "template has an unknown placeholder: {name}"
        )));
    }
    if opts.one_module {
        out = one_module(&out)?;
    }
    verify_buffer_limits(&out)?;
    Ok(out)
}

/// The one-module build's file (filters/all): the four filters behind one entry point, each
/// plugin running the filter its `root_id` names.
pub const ONE_MODULE: &str = "portcullis.wasm";

/// The modules a template names, each one filter.
const MODULES: [&str; 4] = ["authn", "ratelimit", "schema", "pii"];

/// `vm_id` of the one VM the one-module build runs in.
const ONE_VM: &str = "portcullis";

/// A rendered config with every Portcullis filter loading [`ONE_MODULE`] into one VM: Envoy
/// compiles one module instead of four at start-up and keeps one VM per worker. Each filter's
/// `root_id` (which the templates already give as `portcullis.<filter>[_<instance>]`) tells the
/// module which filter to run. Line by line, on the two lines a template writes per filter,
/// so the config keeps its comments; a template whose filters are written otherwise is refused
/// rather than half converted.
fn one_module(rendered: &str) -> Result<String> {
    let (mut codes, mut vms) = (0, 0);
    let mut out = String::with_capacity(rendered.len());
    for line in rendered.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let module = MODULES
            .iter()
            .find(|m| trimmed.contains(&format!("/{m}.wasm\"")) && trimmed.starts_with("code:"));
        if let Some(m) = module {
            codes += 1;
            out.push_str(&line.replacen(&format!("/{m}.wasm\""), &format!("/{ONE_MODULE}\""), 1));
        } else if trimmed.starts_with("vm_id: portcullis.") {
            vms += 1;
            out.push_str(indent);
            out.push_str(&format!("vm_id: {ONE_VM}"));
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    if codes == 0 || codes != vms {
        return Err(CliError(format!(
            "--one-module: the template names {codes} Portcullis module(s) and {vms} \
             `vm_id: portcullis.*` line(s); each filter needs one of each"
        )));
    }
    Ok(out)
}

/// Envoy's default `per_connection_buffer_limit_bytes` when a listener sets none.
const ENVOY_DEFAULT_BUFFER_BYTES: u64 = 1 << 20;

/// A Portcullis filter's configuration in a rendered Wasm filter, with the module it runs.
fn wasm_filter(filter: &serde_norway::Value) -> Option<(String, Value)> {
    let config = filter.get("typed_config")?.get("config")?;
    let file = config
        .get("vm_config")?
        .get("code")?
        .get("local")?
        .get("filename")?
        .as_str()?;
    let mut module = std::path::Path::new(file)
        .file_stem()?
        .to_string_lossy()
        .to_string();
    if std::path::Path::new(file).file_name()? == ONE_MODULE {
        let root_id = config.get("root_id")?.as_str()?;
        let i = portcullis_core::port::filter_named(root_id, &MODULES)?;
        module = (*MODULES.get(i)?).to_string();
    }
    let value = config.get("configuration")?.get("value")?;
    let json = match value.as_str() {
        Some(text) => serde_json::from_str(text).ok()?,
        None => serde_json::to_value(value).ok()?,
    };
    Some((module, json))
}

/// Refuses a rendered config in which Envoy's buffers are smaller than what the filters
/// buffer or write: a pii filter that replaces a body larger than the listener's
/// `per_connection_buffer_limit_bytes` gets its stream reset from inside the host call (the
/// VM panics and Envoy can crash), and a buffer filter behind pii or schema must take the
/// largest request body they let through. Checked on the output, so a hand-edited template
/// cannot slip past.
pub fn verify_buffer_limits(yaml: &str) -> Result<()> {
    let doc: serde_norway::Value = serde_norway::from_str(yaml)
        .map_err(|e| CliError(format!("rendered config is not valid YAML: {e}")))?;
    let listeners = doc
        .get("static_resources")
        .and_then(|r| r.get("listeners"))
        .and_then(serde_norway::Value::as_sequence)
        .cloned()
        .unwrap_or_default();
    for l in &listeners {
        let name = l.get("name").and_then(|n| n.as_str()).unwrap_or("-");
        let limit = l
            .get("per_connection_buffer_limit_bytes")
            .and_then(serde_norway::Value::as_u64)
            .unwrap_or(ENVOY_DEFAULT_BUFFER_BYTES);
        let chains = l
            .get("filter_chains")
            .and_then(serde_norway::Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for chain in &chains {
            let http_filters = chain
                .get("filters")
                .and_then(serde_norway::Value::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(|f| f.get("typed_config")?.get("http_filters")?.as_sequence())
                .flatten();
            // Largest request body that the filters seen so far may pass to a buffer filter.
            let mut request_bytes = 0u64;
            for f in http_filters {
                let fname = f.get("name").and_then(|n| n.as_str()).unwrap_or("-");
                if let Some((module, cfg)) = wasm_filter(f) {
                    let (needed, request, what) = match module.as_str() {
                        "pii" => {
                            let c = portcullis_pii::config::PiiConfig::from_value(cfg).map_err(
                                |e| CliError(format!("listener `{name}`, filter `{fname}`: {e}")),
                            )?;
                            (
                                c.min_envoy_buffer_bytes(),
                                c.max_request_output_bytes(),
                                "the largest body pii buffers or writes back (max_body_bytes, max_output_bytes)",
                            )
                        }
                        "schema" => {
                            let c = portcullis_schema::config::SchemaConfig::from_value(cfg)
                                .map_err(|e| {
                                    CliError(format!("listener `{name}`, filter `{fname}`: {e}"))
                                })?;
                            // What schema itself buffers: validated request bodies and
                            // responses under a contract (its filter-wide default caps only
                            // the routes that use it).
                            let (mut requests, mut held) = (0, 0);
                            for (_, r) in c.routes.iter() {
                                if let Some(q) = &r.request {
                                    requests = q.limits.max_body_bytes.max(requests);
                                }
                                if let Some(q) = &r.response {
                                    held = q.limits.max_body_bytes.max(held);
                                }
                            }
                            (
                                requests.max(held),
                                requests,
                                "the largest body schema buffers (a route's max_body_bytes)",
                            )
                        }
                        _ => continue,
                    };
                    let needed = u64::try_from(needed).unwrap_or(u64::MAX);
                    if limit < needed {
                        return Err(CliError(format!(
                            "listener `{name}`: per_connection_buffer_limit_bytes is {limit}, below {needed}, {what} in `{fname}`; \
                             Envoy would reset such streams mid-write. Raise the listener's limit or lower the policy's"
                        )));
                    }
                    request_bytes = request_bytes.max(u64::try_from(request).unwrap_or(u64::MAX));
                }
                let max_request = f
                    .get("typed_config")
                    .and_then(|t| t.get("max_request_bytes"))
                    .and_then(serde_norway::Value::as_u64);
                if let Some(max) = max_request {
                    if max < request_bytes {
                        return Err(CliError(format!(
                            "listener `{name}`: `{fname}` max_request_bytes is {max}, below {request_bytes}, \
                             the largest request body the filters before it let through"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The rate limit service's configuration (`portcullis-rls --config`): every `scope: global`
/// limit of both ratelimit instances, under the RLS domain of its instance, with the amounts
/// written in the policy — so one policy describes local and global limits.
pub fn rls_config(p: &Policies) -> Result<String> {
    use crate::policy::{compile_ratelimit, RATELIMIT_FILE, RATELIMIT_IP_FILE};
    use portcullis_ratelimit::config::Scope;
    let mut domains = serde_json::Map::new();
    for (file, doc) in [
        (RATELIMIT_IP_FILE, &p.ratelimit_ip),
        (RATELIMIT_FILE, &p.ratelimit),
    ] {
        let cfg = compile_ratelimit(doc, file)?;
        let Some(g) = &cfg.global else { continue };
        let raw = doc["limits"].as_array().cloned().unwrap_or_default();
        let mut limits = serde_json::Map::new();
        for (r, l) in raw.iter().zip(&cfg.limits) {
            if l.scope != Scope::Global {
                continue;
            }
            let mut out = serde_json::Map::new();
            for field in ["key", "rate", "quota", "tiers"] {
                if let Some(v) = r.get(field) {
                    out.insert(field.into(), v.clone());
                }
            }
            limits.insert(l.name.clone(), Value::Object(out));
        }
        if domains.contains_key(&g.domain) {
            return Err(CliError(format!(
                "{file}: global.domain `{}` is already used by another ratelimit instance",
                g.domain
            )));
        }
        domains.insert(g.domain.clone(), Value::Object(limits));
    }
    let yaml = serde_norway::to_string(&json!({ "domains": domains }))
        .map_err(|e| CliError(format!("rls config: {e}")))?;
    Ok(format!(
        "# portcullis-rls configuration, generated by `portcullis render --rls-out` from {}.\n\
         # Do not edit: change the policies (scope: global limits) and render again.\n{yaml}",
        p.dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_authn::config::AuthnConfig as AuthnConfigUnderTest;

    #[test]
    fn renders_every_placeholder_and_both_config_formats() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = crate::policy::load(&root.join("policies")).unwrap();
        let tmpl = std::fs::read_to_string(root.join("envoy/gateway.yaml.tmpl")).unwrap();
        for format in [ConfigFormat::Json, ConfigFormat::Struct] {
            let out = render(
                &tmpl,
                &p,
                &RenderOptions {
                    format,
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(!out.contains("{{"));
            let y: serde_norway::Value = serde_norway::from_str(&out).unwrap();
            assert!(y["static_resources"]["listeners"][0].is_mapping());
        }
        assert!(render("x {{NOPE}}", &p, &RenderOptions::default()).is_err());
    }

    /// Every wasm filter of a rendered config: (module file name, vm_id, root_id).
    fn wasm_filters(out: &str) -> Vec<(String, String, String)> {
        let y: serde_norway::Value = serde_norway::from_str(out).unwrap();
        let mut found = Vec::new();
        for l in y["static_resources"]["listeners"].as_sequence().unwrap() {
            for chain in l["filter_chains"].as_sequence().unwrap() {
                for f in chain["filters"].as_sequence().unwrap() {
                    let Some(hf) = f["typed_config"]["http_filters"].as_sequence() else {
                        continue;
                    };
                    for h in hf {
                        let c = &h["typed_config"]["config"];
                        let Some(file) = c["vm_config"]["code"]["local"]["filename"].as_str()
                        else {
                            continue;
                        };
                        found.push((
                            file.rsplit('/').next().unwrap().to_string(),
                            c["vm_config"]["vm_id"].as_str().unwrap().to_string(),
                            c["root_id"].as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn one_module_runs_every_filter_from_portcullis_wasm_in_one_vm() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = crate::policy::load(&root.join("policies")).unwrap();
        for t in ["envoy/gateway.yaml.tmpl", "envoy/egress.yaml.tmpl"] {
            let tmpl = std::fs::read_to_string(root.join(t)).unwrap();
            let separate = wasm_filters(&render(&tmpl, &p, &RenderOptions::default()).unwrap());
            let opts = RenderOptions {
                one_module: true,
                ..Default::default()
            };
            let one = wasm_filters(&render(&tmpl, &p, &opts).unwrap());
            assert!(!separate.is_empty(), "{t}");
            assert_eq!(separate.len(), one.len(), "{t}");
            for ((module, _, root_id), (one_file, vm, one_root)) in separate.iter().zip(&one) {
                assert_eq!(
                    (one_file.as_str(), vm.as_str()),
                    (ONE_MODULE, ONE_VM),
                    "{t}"
                );
                // The one module runs, for each root_id, the filter the separate config loads.
                let i = portcullis_core::port::filter_named(root_id, &MODULES).unwrap();
                assert_eq!(format!("{}.wasm", MODULES[i]), *module, "{t}: {root_id}");
                assert_eq!(root_id, one_root);
            }
        }
        let refused = render(
            "code: { local: { filename: \"x/authn.wasm\" } }\n",
            &p,
            &RenderOptions {
                one_module: true,
                ..Default::default()
            },
        );
        assert!(refused.unwrap_err().0.contains("--one-module"));
    }

    #[test]
    fn resilience_settings_land_in_the_route_table_cluster_and_bootstrap() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut p = crate::policy::load(&root.join("policies")).unwrap();
        p.gateway.resilience.route_timeouts = vec![crate::gateway::RouteTimeout {
            prefix: "/api/v1/reports".into(),
            upstream_seconds: 60,
        }];
        let tmpl = std::fs::read_to_string(root.join("envoy/gateway.yaml.tmpl")).unwrap();
        let opts = RenderOptions {
            extra_upstreams: vec![("127.0.0.2".into(), 9000)],
            ..Default::default()
        };
        let y: serde_json::Value =
            serde_norway::from_str(&render(&tmpl, &p, &opts).unwrap()).unwrap();
        let hcm = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        assert_eq!(hcm["max_request_headers_kb"], 60);
        assert_eq!(
            hcm["common_http_protocol_options"]["max_headers_count"],
            100
        );
        let vh = &hcm["route_config"]["virtual_hosts"][0];
        assert_eq!(vh["retry_policy"]["num_retries"], 2);
        assert_eq!(vh["routes"][0]["match"]["prefix"], "/api/v1/reports");
        assert_eq!(vh["routes"][0]["route"]["timeout"], "60s");
        assert_eq!(vh["routes"][1]["route"]["timeout"], "15s");
        let cluster = &y["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], "upstream");
        assert_eq!(cluster["outlier_detection"]["consecutive_5xx"], 5);
        assert_eq!(
            cluster["circuit_breakers"]["thresholds"][0]["max_pending_requests"],
            1024
        );
        let eps = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap();
        let addrs: Vec<String> = eps
            .iter()
            .map(|e| {
                let a = &e["endpoint"]["address"]["socket_address"];
                format!("{}:{}", a["address"].as_str().unwrap(), a["port_value"])
            })
            .collect();
        assert_eq!(addrs, ["127.0.0.1:8080", "127.0.0.2:9000"]);
        let monitor = &y["overload_manager"]["resource_monitors"][0];
        assert_eq!(
            monitor["name"],
            "envoy.resource_monitors.global_downstream_max_connections"
        );
        assert_eq!(
            monitor["typed_config"]["max_active_downstream_connections"],
            10_000
        );
        assert_eq!(y["admin"]["ignore_global_conn_limit"], true);
        // Turned off, retries and outlier detection leave no trace in the config.
        p.gateway.resilience.retries.attempts = 0;
        p.gateway.resilience.outlier_detection.consecutive_5xx = 0;
        let y: serde_json::Value =
            serde_norway::from_str(&render(&tmpl, &p, &opts).unwrap()).unwrap();
        let hcm = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        assert!(hcm["route_config"]["virtual_hosts"][0]
            .get("retry_policy")
            .is_none());
        assert!(y["static_resources"]["clusters"][0]
            .get("outlier_detection")
            .is_none());
    }

    #[test]
    fn the_audit_log_is_one_json_object_per_line_with_the_key_in_authn_only() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = crate::policy::load(&root.join("policies")).unwrap();
        let tmpl = std::fs::read_to_string(root.join("envoy/gateway.yaml.tmpl")).unwrap();
        let key = "ab".repeat(32);
        let opts = RenderOptions {
            audit: Some(AuditLog {
                path: "/var/log/portcullis/audit.log".into(),
                hash_key: key.clone(),
            }),
            ..Default::default()
        };
        let out = render(&tmpl, &p, &opts).unwrap();
        let y: serde_norway::Value = serde_norway::from_str(&out).unwrap();
        let y = serde_json::to_value(y).unwrap();
        let hcm = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let log = &hcm["access_log"][0]["typed_config"];
        assert_eq!(log["path"], "/var/log/portcullis/audit.log");
        let f = &log["log_format"]["json_format"];
        assert_eq!(
            f["decided_by"],
            "%FILTER_STATE(wasm.portcullis.audit.decided_by:PLAIN)%"
        );
        assert_eq!(f["status"], "%RESPONSE_CODE%");
        assert_eq!(
            f["limits"]["ratelimit_ip"]["remaining"],
            "%FILTER_STATE(wasm.portcullis.audit.ratelimit_ip.remaining:PLAIN)%"
        );
        assert!(f["limits"]["ratelimit"].is_object());
        // No path, no headers, no addresses in clear.
        let text = f.to_string();
        for never in [
            "PATH",
            "REQ(:PATH",
            "DOWNSTREAM_REMOTE_ADDRESS",
            "AUTHORIZATION",
        ] {
            assert!(!text.contains(never), "{never} in {text}");
        }
        // The key reaches authn's configuration, and only there.
        assert_eq!(out.matches(&key).count(), 1);
        let authn = authn_for(&p, &opts).unwrap();
        assert_eq!(authn["audit"]["hash_key"], key.as_str());
        assert!(crate::policy::compile_authn(&authn)
            .unwrap()
            .audit_key
            .is_some());
        // Off unless asked for.
        let plain = render(&tmpl, &p, &RenderOptions::default()).unwrap();
        assert!(!plain.contains("envoy.access_loggers.file"));
    }

    #[test]
    fn api_keys_render_as_one_table_that_answers_as_the_list_does() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = crate::policy::load(&root.join("policies")).unwrap();
        let authn = authn_for(&p, &RenderOptions::default()).unwrap();
        assert!(authn["api_keys"].get("keys").is_none());
        assert!(authn["api_keys"]["table"].is_string());
        assert_eq!(authn["api_keys"]["header"], p.authn["api_keys"]["header"]);
        // Deterministic: `apply` and the reload directory compare rendered files.
        assert_eq!(authn, authn_for(&p, &RenderOptions::default()).unwrap());
        // Through the filter's own entry point, as Envoy hands it the JSON text.
        let table = AuthnConfigUnderTest::from_bytes(authn.to_string().as_bytes()).unwrap();
        let list = crate::policy::compile_authn(&p.authn).unwrap();
        let demo =
            std::fs::read_to_string(root.join("policies/demo-keys/demo-api-key.txt")).unwrap();
        let other =
            std::fs::read_to_string(root.join("policies/demo-keys/demo-api-key-suspended.txt"))
                .unwrap();
        let (t, l) = (table.api_keys.unwrap(), list.api_keys.unwrap());
        assert!(t.lookup(demo.trim()).is_some());
        for k in [demo.trim(), other.trim(), "pcak_not-a-key"] {
            assert_eq!(t.lookup(k), l.lookup(k), "{k}");
        }
        assert_eq!((t.len(), t.name, t.header), (l.len(), l.name, l.header));
    }

    #[test]
    fn a_bad_key_list_stops_the_render_with_the_field_path() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut p = crate::policy::load(&root.join("policies")).unwrap();
        let keys = p.authn["api_keys"]["keys"].as_array_mut().unwrap();
        let first = keys[0].clone();
        keys.push(first);
        let e = authn_for(&p, &RenderOptions::default()).unwrap_err().0;
        assert!(
            e.contains("authn.yaml") && e.contains("api_keys.keys[2].id"),
            "{e}"
        );
        p.authn["api_keys"]["keys"][2]["sha256"] = json!("abc");
        p.authn["api_keys"]["keys"][2]["id"] = json!("fresh");
        let e = authn_for(&p, &RenderOptions::default()).unwrap_err().0;
        assert!(e.contains("api_keys.keys[2].sha256"), "{e}");
    }

    #[test]
    fn audit_key_files_must_hold_a_strong_hex_key() {
        let dir = std::env::temp_dir().join(format!("portcullis-audit-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let good = write("good", &format!("{}\n", "0f".repeat(32)));
        assert_eq!(
            AuditLog::from_key_file("/dev/stdout", &good)
                .unwrap()
                .hash_key,
            "0f".repeat(32)
        );
        for (name, text) in [
            ("short", "0f".repeat(16)),
            ("text", "correct horse battery staple".repeat(3)),
        ] {
            let e = AuditLog::from_key_file("/dev/stdout", &write(name, &text))
                .unwrap_err()
                .0;
            assert!(e.contains("audit key"), "{e}");
        }
        assert!(AuditLog::from_key_file("/dev/stdout", &dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn buffer_limits_cover_what_pii_decodes_and_writes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = crate::policy::load(&root.join("policies")).unwrap();
        let pii = crate::policy::compile_pii(&p.pii, crate::policy::PII_FILE).unwrap();
        // The documented decompression limit is usable: Envoy can hold what pii writes.
        assert!(p.connection_buffer_bytes() >= pii.max_decompressed_bytes);
        assert!(p.connection_buffer_bytes() >= pii.max_output_bytes);
        for (tmpl, fmt) in [
            ("gateway.yaml.tmpl", ConfigFormat::Json),
            ("gateway.yaml.tmpl", ConfigFormat::Struct),
            ("egress.yaml.tmpl", ConfigFormat::Struct),
        ] {
            let text = std::fs::read_to_string(root.join("envoy").join(tmpl)).unwrap();
            let opts = RenderOptions {
                format: fmt,
                ..Default::default()
            };
            render(&text, &p, &opts).unwrap();
            // A template that hard-codes a smaller listener limit is refused, naming it.
            let small = text
                .replace("{{CONNECTION_BUFFER_BYTES}}", "2097152")
                .replace("{{EGRESS_CONNECTION_BUFFER_BYTES}}", "2097152");
            let e = render(&small, &p, &opts).unwrap_err().0;
            assert!(
                e.contains("per_connection_buffer_limit_bytes is 2097152"),
                "{e}"
            );
            // A listener without a limit gets Envoy's 1 MiB default, which is too small too.
            let none = text
                .replace(
                    "per_connection_buffer_limit_bytes: {{CONNECTION_BUFFER_BYTES}}",
                    "",
                )
                .replace(
                    "per_connection_buffer_limit_bytes: {{EGRESS_CONNECTION_BUFFER_BYTES}}",
                    "",
                );
            assert!(render(&none, &p, &opts).is_err());
        }
        // A buffer filter smaller than the masked sync bodies is refused.
        let text = std::fs::read_to_string(root.join("envoy/egress.yaml.tmpl")).unwrap();
        let small = text.replace("{{EGRESS_BUFFER_MAX_BYTES}}", "1024");
        let e = render(&small, &p, &RenderOptions::default()).unwrap_err().0;
        assert!(e.contains("max_request_bytes is 1024"), "{e}");
    }

    #[test]
    fn rls_config_holds_every_global_limit_of_the_shipped_fleet_policy() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut p = crate::policy::load(&root.join("policies")).unwrap();
        assert!(
            rls_config(&p).unwrap().contains("domains: {}"),
            "the default demo is local-only"
        );
        let text = std::fs::read_to_string(root.join("policies/global/ratelimit.yaml")).unwrap();
        p.ratelimit = serde_norway::from_str(&text).unwrap();
        crate::policy::compile_ratelimit(&p.ratelimit, "global/ratelimit.yaml").unwrap();
        let out = rls_config(&p).unwrap();
        let y: serde_norway::Value = serde_norway::from_str(&out).unwrap();
        let d = &y["domains"]["portcullis.ratelimit"];
        assert_eq!(d["tenant"]["key"], "tenant");
        assert_eq!(d["tenant"]["tiers"]["sandbox"]["rate"]["burst"], 20);
        assert_eq!(d["exports"]["quota"]["limit"], 50);
        assert!(
            d.get("burst").is_none() && d.get("app").is_none(),
            "local limits stay out"
        );
        // Two instances may not share a domain.
        p.ratelimit_ip = json!({"stat_prefix": "ip", "global": {"domain": "portcullis.ratelimit"},
            "limits": [{"name": "x", "scope": "global", "key": "ip", "rate": {"burst": 1, "refill": 1}}]});
        assert!(rls_config(&p).is_err());
    }
}
