//! Policy files: YAML in `policies/`, validated by compiling them with the exact code the
//! filters run at configure time.
//!
//! One convenience exists only here: a provider may say `jwks_file: path` (relative to the
//! policy file) instead of an inline `jwks`; the CLI inlines the file, because a wasm filter
//! cannot read files.

use crate::gateway::{GatewaySettings, GATEWAY_FILE};
use crate::{CliError, Result};
use portcullis_authn::config::AuthnConfig;
use portcullis_authn::keytable::{self, KeyTable};
use portcullis_pii::config::PiiConfig;
use portcullis_ratelimit::config::RateLimitConfig;
use portcullis_schema::config::SchemaConfig;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The authn policy file inside a policy directory.
pub const AUTHN_FILE: &str = "authn.yaml";
/// The schema policy file inside a policy directory.
pub const SCHEMA_FILE: &str = "schema.yaml";
/// The post-authn ratelimit policy file.
pub const RATELIMIT_FILE: &str = "ratelimit.yaml";
/// The pre-authn (per-IP) ratelimit policy file.
pub const RATELIMIT_IP_FILE: &str = "ratelimit-ip.yaml";
/// The masking policy of the gateway (responses to callers).
pub const PII_FILE: &str = "pii.yaml";
/// The masking policy of the egress listener (request bodies synced out to external CRMs).
pub const PII_EGRESS_FILE: &str = "pii-egress.yaml";

/// A loaded, validated policy set: the filter configs as JSON, ready to inline.
#[derive(Debug, Clone)]
pub struct Policies {
    /// Directory they came from.
    pub dir: PathBuf,
    /// authn filter configuration (what the filter receives).
    pub authn: Value,
    /// schema filter configuration.
    pub schema: Value,
    /// ratelimit configuration (after authn).
    pub ratelimit: Value,
    /// ratelimit configuration of the per-IP instance before authn.
    pub ratelimit_ip: Value,
    /// pii configuration of the gateway.
    pub pii: Value,
    /// pii configuration of the egress listener.
    pub pii_egress: Value,
    /// Envoy's edge settings (`gateway.yaml`; defaults when the file is absent).
    pub gateway: GatewaySettings,
}

/// A listener's buffer limit from the largest body buffered as received and the largest body
/// held or written back.
fn listener_buffer(input: usize, held: usize) -> usize {
    input.saturating_mul(2).max(held).max(1 << 20)
}

/// What one pii configuration needs from Envoy's buffers.
#[derive(Debug, Clone, Copy, Default)]
struct PiiLimits {
    /// Largest body buffered as received.
    input: usize,
    /// Largest body buffered or written back.
    buffer: usize,
    /// Largest request body leaving the filter on a request-masking route.
    request_output: usize,
}

impl PiiLimits {
    /// From a configuration value (already validated by [`load`]; one a caller broke since
    /// counts for nothing here, and `render` refuses it when it checks the output).
    fn of(doc: &Value) -> Self {
        PiiConfig::from_value(doc.clone())
            .map(|c| PiiLimits {
                input: c.max_body_bytes(),
                buffer: c.min_envoy_buffer_bytes(),
                request_output: c.max_request_output_bytes(),
            })
            .unwrap_or_default()
    }
}

impl Policies {
    /// The largest request body the schema policy accepts (route or filter-wide limit), from
    /// the configuration as it is now.
    pub fn schema_max_body_bytes(&self) -> usize {
        SchemaConfig::from_value(self.schema.clone()).map_or(0, |c| c.max_body_bytes())
    }

    /// Envoy's per-connection buffer limit for the gateway listener: twice the largest body a
    /// filter buffers as received (so a body over a filter's own limit meets that filter's
    /// clear refusal, not Envoy's bare 500), at least the largest body pii writes back (Envoy
    /// resets a stream whose replaced body exceeds it), and never below Envoy's 1 MiB default.
    /// Computed from the configurations as they are now.
    pub fn connection_buffer_bytes(&self) -> usize {
        let gw = PiiLimits::of(&self.pii);
        listener_buffer(self.schema_max_body_bytes().max(gw.input), gw.buffer)
    }

    /// The same for the egress listener, which runs only the egress pii filter.
    pub fn egress_connection_buffer_bytes(&self) -> usize {
        let eg = PiiLimits::of(&self.pii_egress);
        listener_buffer(eg.input, eg.buffer)
    }

    /// The gateway's native buffer filter limit: the largest request body schema accepts, or
    /// a masked request body leaving pii on a request-masking route, whichever is larger.
    pub fn buffer_filter_bytes(&self) -> usize {
        self.schema_max_body_bytes()
            .max(PiiLimits::of(&self.pii).request_output)
    }

    /// The egress listener's buffer filter limit: every masked sync body must fit, and it sits
    /// a whole connection buffer above pii's own body cap. The buffer filter sets the stream's
    /// buffer limit for every filter, so while pii buffers a chunked body Envoy refuses the
    /// read that crosses this limit before pii sees it (a bare `413 Payload Too Large`): with
    /// the margin, the read that crosses pii's cap reaches pii, which answers with its own
    /// problem+json (`too_large`). Every egress route is pii's, so the margin admits nothing.
    pub fn egress_buffer_filter_bytes(&self) -> usize {
        let eg = PiiLimits::of(&self.pii_egress);
        eg.request_output
            .max(
                eg.input
                    .saturating_add(self.egress_connection_buffer_bytes()),
            )
            .max(1024)
    }
}

/// Reads a YAML file as JSON data, naming the file in any error.
pub fn read_yaml(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    serde_norway::from_str(&text)
        .map_err(|e| CliError(format!("{}: not valid YAML: {e}", path.display())))
}

/// Inlines `jwks_file` references of providers.
fn inline_jwks_files(authn: &mut Value, base: &Path) -> Result<()> {
    let Some(providers) = authn.get_mut("providers").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for (i, p) in providers.iter_mut().enumerate() {
        let Some(obj) = p.as_object_mut() else {
            continue;
        };
        let Some(file) = obj.remove("jwks_file") else {
            continue;
        };
        let Some(file) = file.as_str() else {
            return Err(CliError(format!(
                "providers[{i}].jwks_file must be a string"
            )));
        };
        if obj.contains_key("jwks") {
            return Err(CliError(format!(
                "providers[{i}]: give either `jwks` or `jwks_file`, not both"
            )));
        }
        let path = base.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        let jwks: Value = serde_json::from_str(&text)
            .map_err(|e| CliError(format!("{}: not valid JSON: {e}", path.display())))?;
        obj.insert("jwks".into(), jwks);
    }
    Ok(())
}

/// Resolves CLI-only conveniences in an authn policy document.
pub fn prepare_authn(mut doc: Value, base: &Path) -> Result<Value> {
    inline_jwks_files(&mut doc, base)?;
    Ok(doc)
}

/// The authn configuration as the filter receives it: the policy's `api_keys.keys` list
/// compiled into one compact `api_keys.table` (base64url of the authn crate's
/// [`portcullis_authn::keytable`] layout; disabled keys dropped), which the filter decodes in
/// place: 100k keys cost a few MiB per VM instead of a hundred. Errors name the same fields as
/// loading the list does.
pub fn compact_api_keys(mut doc: Value) -> Result<Value> {
    let Some(api) = doc.get_mut("api_keys").and_then(Value::as_object_mut) else {
        return Ok(doc);
    };
    if api.contains_key("table") {
        return Ok(doc);
    }
    let Some(list) = api.remove("keys") else {
        return Ok(doc);
    };
    let err = |e: portcullis_core::config::ConfigError| {
        CliError(format!("{AUTHN_FILE}: {}", e.within("api_keys")))
    };
    let keys: Vec<portcullis_authn::config::RawApiKey> =
        portcullis_core::config::from_value(list).map_err(|e| err(e.within("keys")))?;
    let table = KeyTable::encode(&keys).map_err(err)?;
    api.insert("table".into(), Value::String(keytable::to_text(&table)));
    Ok(doc)
}

/// Compiles an authn config with the filter's own code.
pub fn compile_authn(doc: &Value) -> Result<AuthnConfig> {
    AuthnConfig::from_value(doc.clone()).map_err(|e| CliError(format!("{AUTHN_FILE}: {e}")))
}

/// Compiles a schema config with the filter's own code.
pub fn compile_schema(doc: &Value) -> Result<SchemaConfig> {
    SchemaConfig::from_value(doc.clone()).map_err(|e| CliError(format!("{SCHEMA_FILE}: {e}")))
}

/// Compiles a ratelimit config with the filter's own code.
pub fn compile_ratelimit(doc: &Value, file: &str) -> Result<RateLimitConfig> {
    RateLimitConfig::from_value(doc.clone()).map_err(|e| CliError(format!("{file}: {e}")))
}

/// Compiles a pii config with the filter's own code.
pub fn compile_pii(doc: &Value, file: &str) -> Result<PiiConfig> {
    PiiConfig::from_value(doc.clone()).map_err(|e| CliError(format!("{file}: {e}")))
}

/// Loads and validates every policy file in a directory.
pub fn load(dir: &Path) -> Result<Policies> {
    let mut authn = prepare_authn(read_yaml(&dir.join(AUTHN_FILE))?, dir)?;
    // The app catalog is authn's to enforce: inlined like `jwks_file` (`catalog.yaml`).
    crate::catalog::inline(dir, &mut authn)?;
    compile_authn(&authn)?;
    let schema = read_yaml(&dir.join(SCHEMA_FILE))?;
    compile_schema(&schema)?;
    let ratelimit = read_yaml(&dir.join(RATELIMIT_FILE))?;
    let ratelimit_ip = read_yaml(&dir.join(RATELIMIT_IP_FILE))?;
    let ip = compile_ratelimit(&ratelimit_ip, RATELIMIT_IP_FILE)?;
    // Both instances run in one VM (one vm_id, so the module is compiled once at start-up) and
    // so share one shared-data namespace: their buckets are told apart only by the prefix.
    let main = compile_ratelimit(&ratelimit, RATELIMIT_FILE)?;
    if ip.stat_prefix == main.stat_prefix {
        return Err(CliError(format!(
            "{RATELIMIT_IP_FILE}: stat_prefix `{}` is also {RATELIMIT_FILE}'s: the two instances \
             share one VM and its shared data, so their prefixes must differ",
            ip.stat_prefix
        )));
    }
    let pii = read_yaml(&dir.join(PII_FILE))?;
    compile_pii(&pii, PII_FILE)?;
    let pii_egress = read_yaml(&dir.join(PII_EGRESS_FILE))?;
    compile_pii(&pii_egress, PII_EGRESS_FILE)?;
    let gateway_path = dir.join(GATEWAY_FILE);
    let gateway = if gateway_path.exists() {
        GatewaySettings::from_value(read_yaml(&gateway_path)?)?
    } else {
        GatewaySettings::default()
    };
    Ok(Policies {
        dir: dir.to_path_buf(),
        authn,
        schema,
        ratelimit,
        ratelimit_ip,
        pii,
        pii_egress,
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn shipped_demo_policies_load_through_the_filter_compiler() {
        let p = load(&repo().join("policies")).unwrap();
        let cfg = compile_authn(&p.authn).unwrap();
        assert!(cfg.routes.len() >= 5);
        assert!(p.authn["providers"][0]["jwks"]["keys"].is_array());
        assert!(p.authn["providers"][0].get("jwks_file").is_none());
    }

    #[test]
    fn the_two_ratelimit_instances_need_distinct_prefixes() {
        let dir = std::env::temp_dir().join(format!("pc-policy-prefix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(repo().join("policies")).unwrap() {
            let p = e.unwrap().path();
            let to = dir.join(p.file_name().unwrap());
            if p.is_file() {
                std::fs::copy(&p, to).unwrap();
            } else if !to.exists() {
                std::os::unix::fs::symlink(&p, to).unwrap();
            }
        }
        load(&dir).unwrap();
        let ip = std::fs::read_to_string(dir.join(RATELIMIT_IP_FILE)).unwrap();
        let same = ip.replace("stat_prefix: ratelimit_ip", "stat_prefix: ratelimit");
        assert_ne!(ip, same, "the demo's ratelimit-ip.yaml names its prefix");
        std::fs::write(dir.join(RATELIMIT_IP_FILE), same).unwrap();
        let e = load(&dir).unwrap_err().0;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(e.contains("stat_prefix `ratelimit`"), "{e}");
    }

    #[test]
    fn a_typo_in_a_policy_is_reported_with_its_path() {
        let mut doc = load(&repo().join("policies")).unwrap().authn;
        doc["routes"][1]["require"]["scopez"] = serde_json::json!([]);
        let e = compile_authn(&doc).unwrap_err().0;
        assert!(e.contains("routes[1].require"), "{e}");
        assert!(e.contains("scopez"), "{e}");
    }
}
