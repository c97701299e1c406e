//! Istio manifests from the same policies as `envoy.yaml`: one `WasmPlugin` per filter instance
//! of the gateway chain, plus one `EnvoyFilter` for what a WasmPlugin cannot express.
//!
//! Field names, types and enum values follow Istio's published API (istio/api
//! `extensions/v1alpha1/wasm.proto`, `networking/v1alpha3/envoy_filter.proto`; the CRDs are
//! generated from them). What Istio does with them was read in istio/istio:
//!
//! - `pluginConfig` is a `google.protobuf.Struct`; istiod turns it into a **JSON string**
//!   (`protomarshal.ToJSON`) in a `StringValue` — the filters' JSON loading path. Every number
//!   becomes a double on the way (integers print without a fraction below 1e21, so the
//!   policies' integers survive).
//! - Istio sets no `vm_id`: every plugin on a proxy shares one shared-data namespace, and two
//!   plugins with the same module (both ratelimit instances) share one VM with distinct root
//!   contexts, told apart by `pluginName` (Envoy's `root_id`). Portcullis keys shared data with
//!   each instance's `stat_prefix`, so they stay apart; keep the prefixes distinct.
//! - Envoy's filter name is `<namespace>.<name>` of the WasmPlugin; `failStrategy: FAIL_CLOSE`
//!   becomes `failure_policy: FAIL_CLOSED` (a module that cannot load answers 5xx).
//! - Order: plugins are placed by `phase` (AUTHN before Istio's authentication filters, AUTHZ
//!   between authentication and authorization, STATS after authorization) and, within a phase,
//!   by `priority`, highest first.
//! - For an `oci://` URL, `sha256` is checked against the **image manifest digest**
//!   (`pkg/wasm/cache.go`), for `http(s)://` against the module's digest, and not at all for
//!   `file://` (a local data source carries no digest). The module digest is always recorded in
//!   the `portcullis.dev/module-sha256` annotation.

use crate::oci::{self, Image};
use crate::policy::Policies;
use crate::{CliError, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// One wasm filter instance of the gateway chain, in chain order.
#[derive(Debug, Clone, Copy)]
pub struct Instance {
    /// WasmPlugin name (`portcullis-<name>`).
    pub name: &'static str,
    /// The module (`dist/<module>.wasm`).
    pub module: &'static str,
    /// Envoy root id, as in `envoy/gateway.yaml.tmpl` (`pluginName`).
    pub root_id: &'static str,
    /// Istio phase.
    pub phase: &'static str,
    /// Priority within the phase (higher runs first).
    pub priority: i32,
}

/// The chain of `envoy/gateway.yaml.tmpl` mapped onto Istio's phases. The per-IP limiter and
/// authn run in AUTHN (before Istio's own JWT filters, so a token flood is capped before any
/// signature check); the identity limiter, pii and schema in AUTHZ, after authentication and
/// before Istio's authorization. Request order is the order of this list.
pub const CHAIN: [Instance; 5] = [
    Instance {
        name: "ratelimit-ip",
        module: "ratelimit",
        root_id: "portcullis.ratelimit_ip",
        phase: "AUTHN",
        priority: 20,
    },
    Instance {
        name: "authn",
        module: "authn",
        root_id: "portcullis.authn",
        phase: "AUTHN",
        priority: 10,
    },
    Instance {
        name: "ratelimit",
        module: "ratelimit",
        root_id: "portcullis.ratelimit",
        phase: "AUTHZ",
        priority: 30,
    },
    Instance {
        name: "pii",
        module: "pii",
        root_id: "portcullis.pii",
        phase: "AUTHZ",
        priority: 20,
    },
    Instance {
        name: "schema",
        module: "schema",
        root_id: "portcullis.schema",
        phase: "AUTHZ",
        priority: 10,
    },
];

/// The response-hold filter of `envoy/gateway.yaml.tmpl` (a test keeps the two identical).
pub const RESPONSE_HOLD_LUA: &str = r#"function envoy_on_response(handle)
  if handle:headers():get("x-portcullis-hold-response") ~= nil then
    handle:headers():remove("x-portcullis-hold-response")
    handle:body()
  end
end
"#;

/// Where the proxies get the modules from.
#[derive(Debug, Clone)]
pub enum ModuleSource {
    /// `oci://<registry>/portcullis-<module>:<version>`: the images `portcullis oci` writes.
    Oci {
        /// Registry and path prefix, e.g. `registry.example.com/platform`.
        registry: String,
    },
    /// `file://<dir>/<module>.wasm`, a path inside the proxy container.
    File {
        /// Directory inside the proxy container.
        dir: String,
    },
}

/// Which proxies the manifests select, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An ingress gateway (EnvoyFilter context `GATEWAY`).
    Gateway,
    /// Sidecars, inbound traffic only (WasmPlugin `match.mode: SERVER`, `SIDECAR_INBOUND`).
    SidecarInbound,
}

/// Everything the manifests depend on besides the policies.
#[derive(Debug, Clone)]
pub struct IstioOptions {
    /// Namespace of every resource.
    pub namespace: String,
    /// `selector.matchLabels` / `workloadSelector.labels`.
    pub selector: Vec<(String, String)>,
    /// Gateway or sidecar inbound.
    pub mode: Mode,
    /// Module source.
    pub source: ModuleSource,
    /// Where the built modules are (their digests go into the manifests).
    pub wasm_dir: PathBuf,
    /// Image tag (`portcullis oci` uses the crate version).
    pub version: String,
}

impl Default for IstioOptions {
    fn default() -> Self {
        IstioOptions {
            namespace: "portcullis".into(),
            selector: vec![("app".into(), "portcullis-gateway".into())],
            mode: Mode::Gateway,
            source: ModuleSource::File {
                dir: "/etc/portcullis/wasm".into(),
            },
            wasm_dir: PathBuf::from("dist"),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// The image reference `portcullis oci` tags a module with.
pub fn image_name(module: &str) -> String {
    format!("portcullis-{module}")
}

/// The instance's `pluginConfig`: the policy as `portcullis render` inlines it (authn's API
/// keys as one compact table).
fn config_of(p: &Policies, inst: &Instance) -> Result<Value> {
    Ok(match inst.name {
        "ratelimit-ip" => p.ratelimit_ip.clone(),
        "authn" => crate::policy::compact_api_keys(p.authn.clone())?,
        "ratelimit" => p.ratelimit.clone(),
        "pii" => p.pii.clone(),
        _ => p.schema.clone(),
    })
}

fn labels(opts: &IstioOptions) -> Value {
    Value::Object(
        opts.selector
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect(),
    )
}

/// Renders every manifest as one multi-document YAML stream.
pub fn render(p: &Policies, opts: &IstioOptions) -> Result<String> {
    if opts.selector.is_empty() {
        return Err(CliError(
            "istio: a selector is required (a namespace-wide WasmPlugin would load the chain into every workload)".into(),
        ));
    }
    let mut docs = Vec::new();
    for inst in &CHAIN {
        let path = opts.wasm_dir.join(format!("{}.wasm", inst.module));
        let wasm = std::fs::read(&path).map_err(|e| {
            CliError(format!(
                "{}: {e} (run `make build` first: the manifests carry each module's digest)",
                path.display()
            ))
        })?;
        let module_sha = oci::hex(&Sha256::digest(&wasm));
        let (url, sha256) = match &opts.source {
            ModuleSource::Oci { registry } => {
                let img = Image::wasm_compat(&wasm, inst.module, &opts.version)?;
                (
                    format!(
                        "oci://{}/{}:{}",
                        registry.trim_end_matches('/'),
                        image_name(inst.module),
                        opts.version
                    ),
                    img.manifest_digest
                        .trim_start_matches("sha256:")
                        .to_string(),
                )
            }
            ModuleSource::File { dir } => (
                format!("file://{}/{}.wasm", dir.trim_end_matches('/'), inst.module),
                module_sha.clone(),
            ),
        };
        let mut spec = json!({
            "selector": { "matchLabels": labels(opts) },
            "url": url,
            "sha256": sha256,
            "imagePullPolicy": "IfNotPresent",
            "pluginName": inst.root_id,
            "phase": inst.phase,
            "priority": inst.priority,
            "failStrategy": "FAIL_CLOSE",
            "type": "HTTP",
            "pluginConfig": config_of(p, inst)?,
        });
        if opts.mode == Mode::SidecarInbound {
            spec["match"] = json!([{ "mode": "SERVER" }]);
        }
        docs.push(json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {
                "name": format!("portcullis-{}", inst.name),
                "namespace": opts.namespace,
                "annotations": { "portcullis.dev/module-sha256": module_sha },
            },
            "spec": spec,
        }));
    }
    docs.push(envoy_filter(p, opts)?);
    let mut out = String::from(
        "# Generated by `portcullis render --format istio` from the policies: one WasmPlugin per\n\
         # filter instance (phase and priority reproduce the gateway chain) and one EnvoyFilter\n\
         # for the native filters and listener settings the chain needs. Do not edit: re-render.\n",
    );
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&d).map_err(|e| CliError(e.to_string()))?);
    }
    Ok(out)
}

/// `https://host[:port]/...` → (host, port, tls).
fn url_host_port(url: &str) -> Option<(String, u16, bool)> {
    let (scheme, rest) = url.split_once("://")?;
    let tls = match scheme {
        "https" => true,
        "http" => false,
        _ => return None,
    };
    let authority = rest.split('/').next()?;
    match authority.rsplit_once(':') {
        Some((h, port)) => Some((h.to_string(), port.parse().ok()?, tls)),
        None => Some((authority.to_string(), if tls { 443 } else { 80 }, tls)),
    }
}

fn envoy_filter(p: &Policies, opts: &IstioOptions) -> Result<Value> {
    let context = match opts.mode {
        Mode::Gateway => "GATEWAY",
        Mode::SidecarInbound => "SIDECAR_INBOUND",
    };
    let hcm = json!({ "filterChain": { "filter": { "name": "envoy.filters.network.http_connection_manager" } } });
    let mut patches = vec![
        // Closest to the client: holds a response only when schema or pii asks, so a
        // violating or unmaskable response can still become a 502.
        json!({
            "applyTo": "HTTP_FILTER",
            "match": { "context": context, "listener": hcm },
            "patch": { "operation": "INSERT_FIRST", "value": {
                "name": "envoy.filters.http.lua",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                    "default_source_code": { "inline_string": RESPONSE_HOLD_LUA },
                },
            }},
        }),
        // Just before the router (after every WasmPlugin): nothing of a request reaches the
        // upstream before schema has validated its whole body.
        json!({
            "applyTo": "HTTP_FILTER",
            "match": { "context": context, "listener": {
                "filterChain": { "filter": {
                    "name": "envoy.filters.network.http_connection_manager",
                    "subFilter": { "name": "envoy.filters.http.router" },
                }},
            }},
            "patch": { "operation": "INSERT_BEFORE", "value": {
                "name": "envoy.filters.http.buffer",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": p.buffer_filter_bytes(),
                },
            }},
        }),
        // Above every body a filter buffers (see the gateway template).
        json!({
            "applyTo": "LISTENER",
            "match": { "context": context },
            "patch": { "operation": "MERGE", "value": {
                "per_connection_buffer_limit_bytes": p.connection_buffer_bytes(),
            }},
        }),
    ];
    // Remote JWKS are fetched through a named Envoy cluster; add one per cluster the policies
    // name (alternatively point `jwks_uri.cluster` at Istio's `outbound|443||<host>` cluster of
    // a ServiceEntry and drop this patch).
    let mut clusters = std::collections::BTreeMap::new();
    for prov in p.authn["providers"].as_array().into_iter().flatten() {
        let (Some(cluster), Some(url)) = (
            prov["jwks_uri"]["cluster"].as_str(),
            prov["jwks_uri"]["url"].as_str(),
        ) else {
            continue;
        };
        let (host, port, tls) = url_host_port(url).ok_or_else(|| {
            CliError(format!("istio: jwks_uri.url `{url}` is not an http(s) URL"))
        })?;
        clusters.insert(cluster.to_string(), (host, port, tls));
    }
    for (name, (host, port, tls)) in clusters {
        let mut cluster = json!({
            "name": name,
            "type": "STRICT_DNS",
            "connect_timeout": "2s",
            "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{
                "endpoint": { "address": { "socket_address": { "address": host, "port_value": port } } },
            }]}]},
        });
        if tls {
            cluster["transport_socket"] = json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": host,
                },
            });
        }
        patches.push(json!({
            "applyTo": "CLUSTER",
            "match": { "context": context },
            "patch": { "operation": "ADD", "value": cluster },
        }));
    }
    Ok(json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": { "name": "portcullis-native", "namespace": opts.namespace },
        "spec": {
            "workloadSelector": { "labels": labels(opts) },
            "configPatches": patches,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_hold_lua_is_the_gateway_templates() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let tmpl = std::fs::read_to_string(root.join("envoy/gateway.yaml.tmpl")).unwrap();
        // The template is not YAML until rendered: compare the script line by line.
        for line in RESPONSE_HOLD_LUA.lines() {
            assert!(tmpl.contains(line.trim()), "{line}");
        }
    }

    #[test]
    fn urls_give_host_port_and_tls() {
        assert_eq!(
            url_host_port("https://idp.example/.well-known/jwks.json"),
            Some(("idp.example".into(), 443, true))
        );
        assert_eq!(
            url_host_port("http://idp:8080/jwks"),
            Some(("idp".into(), 8080, false))
        );
        assert_eq!(url_host_port("file:///x"), None);
    }
}
