//! `portcullis apikey`: a new API key for a micro app, and the policy entry that stores only
//! its SHA-256 digest (the key itself is shown once and never written anywhere).

use crate::{CliError, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Prefix of generated keys: recognisable by secret scanners and humans.
pub const KEY_PREFIX: &str = "pcak_";

/// A generated key and its policy entry.
pub struct Generated {
    /// The key (give it to the app; shown once).
    pub key: String,
    /// The `api_keys.keys` entry for `authn.yaml`.
    pub entry: Value,
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Generates a 256-bit key for `app`.
pub fn generate(
    id: &str,
    app: &str,
    tenant: Option<&str>,
    scopes: &[String],
    tier: Option<&str>,
) -> Result<Generated> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| CliError(format!("no randomness from the OS: {e}")))?;
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    let mut entry = json!({
        "id": id,
        "prefix": key.chars().take(KEY_PREFIX.len() + 6).collect::<String>(),
        "sha256": sha256_hex(&key),
        "app": app,
        "scopes": scopes,
    });
    if let Some(t) = tenant {
        entry["tenant"] = Value::from(t);
    }
    if let Some(t) = tier {
        entry["tier"] = Value::from(t);
    }
    Ok(Generated { key, entry })
}
