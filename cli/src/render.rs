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
    /// Directory holding `authn.wasm` and the other modules (absolute path recommended).
    pub wasm_dir: PathBuf,
    /// Turn on Envoy's own path normalisation in front of the filters.
    pub envoy_normalize_path: bool,
    /// Embedding of filter configs.
    pub format: ConfigFormat,
    /// Serve the gateway over TLS.
    pub downstream_tls: Option<DownstreamTls>,
    /// The rate limit service (`portcullis-rls`) for `scope: global` limits: host (IP or DNS
    /// name) and port of the `portcullis_rls` cluster.
    pub rls_host: String,
    /// Its port.
    pub rls_port: u16,
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
            wasm_dir: PathBuf::from("dist"),
            envoy_normalize_path: true,
            format: ConfigFormat::Json,
            downstream_tls: None,
            rls_host: "127.0.0.1".into(),
            rls_port: 8081,
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

/// Fills the template; an unknown or unfilled placeholder is an error.
pub fn render(template: &str, policies: &Policies, opts: &RenderOptions) -> Result<String> {
    let wasm_dir = opts.wasm_dir.to_string_lossy().to_string();
    let vars: Vec<(&str, String)> = vec![
        ("ADMIN_PORT", opts.admin_port.to_string()),
        ("LISTEN_PORT", opts.listen_port.to_string()),
        ("UPSTREAM_HOST", opts.upstream_host.clone()),
        ("UPSTREAM_PORT", opts.upstream_port.to_string()),
        ("WASM_DIR", wasm_dir),
        ("NORMALIZE_PATH", opts.envoy_normalize_path.to_string()),
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
            plugin_configuration(&policies.authn, opts.format),
        ),
        (
            "SCHEMA_CONFIGURATION",
            plugin_configuration(&policies.schema, opts.format),
        ),
        (
            "RATELIMIT_CONFIGURATION",
            plugin_configuration(&policies.ratelimit, opts.format),
        ),
        (
            "RATELIMIT_IP_CONFIGURATION",
            plugin_configuration(&policies.ratelimit_ip, opts.format),
        ),
        (
            "DOWNSTREAM_TLS",
            opts.downstream_tls
                .as_ref()
                .map(DownstreamTls::render)
                .unwrap_or_default(),
        ),
        ("RLS_HOST", opts.rls_host.clone()),
        ("RLS_PORT", opts.rls_port.to_string()),
        (
            "PII_CONFIGURATION",
            plugin_configuration(&policies.pii, opts.format),
        ),
        (
            "PII_EGRESS_CONFIGURATION",
            plugin_configuration(&policies.pii_egress, opts.format),
        ),
        (
            "CONNECTION_BUFFER_BYTES",
            policies.connection_buffer_bytes().to_string(),
        ),
        // The egress buffer filter holds whole request bodies while pii masks them.
        (
            "EGRESS_BUFFER_MAX_BYTES",
            policies.pii_egress_max_body_bytes.max(1024).to_string(),
        ),
        // The buffer filter must hold at least the largest body the schema filter accepts.
        (
            "BUFFER_MAX_BYTES",
            policies.schema_max_body_bytes.to_string(),
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
    Ok(out)
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
    let yaml = serde_yaml::to_string(&json!({ "domains": domains }))
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
            let y: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
            assert!(y["static_resources"]["listeners"][0].is_mapping());
        }
        assert!(render("x {{NOPE}}", &p, &RenderOptions::default()).is_err());
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
        p.ratelimit = serde_yaml::from_str(&text).unwrap();
        crate::policy::compile_ratelimit(&p.ratelimit, "global/ratelimit.yaml").unwrap();
        let out = rls_config(&p).unwrap();
        let y: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
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
