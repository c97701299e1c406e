//! Loading a filter's configuration: JSON (from a `StringValue`) or a protobuf `Struct` (YAML in
//! envoy.yaml), into strict serde types whose errors name the offending field.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Whether a filter acts on its decisions or only reports them (shared by every filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Deny what fails a check.
    #[default]
    Enforce,
    /// Run every check, never deny; would-be denials are counted and logged (for rollouts).
    Shadow,
}

/// A configuration that cannot be loaded; the message names the field and the problem, and is
/// safe to log (it never contains secret values, only field paths and serde's description).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path to the field, e.g. `routes[2].require.scopes`; empty for the whole document.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    /// An error about one field.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Prefixes the field path, for errors raised while compiling a nested part.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid configuration: {}", self.problem)
        } else {
            write!(
                f,
                "invalid configuration at `{}`: {}",
                self.field, self.problem
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Turns the raw plugin configuration bytes into a JSON value.
///
/// A `StringValue` arrives as the plain JSON text; a `Struct` arrives as serialized protobuf. The
/// two cannot be confused: JSON config is an object (`{`), and no `Struct` encoding starts with
/// byte 0x7b (it would be field 15 with the unused wire type 3).
pub fn raw_value(bytes: &[u8]) -> Result<Value, ConfigError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(ConfigError::new("", "configuration is empty")),
        Some(b'{') => serde_json::from_slice(bytes)
            .map_err(|e| ConfigError::new("", format!("configuration is not valid JSON: {e}"))),
        Some(_) => {
            crate::pbstruct::decode_struct(bytes).map_err(|e| ConfigError::new("", e.to_string()))
        }
    }
}

/// Deserializes a JSON value into a strict config type, naming the failing field on error.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        ConfigError::new(field, e.into_inner().to_string())
    })
}

/// Parses raw plugin configuration bytes (JSON or `Struct`) into a strict config type.
///
/// JSON text is deserialized straight into the config type, without an intermediate
/// `serde_json::Value`: a VM's linear memory never shrinks, so the peak of loading a large
/// policy (100k API keys) is what every worker keeps.
///
/// A `Struct` is re-encoded as JSON text first, so every config type is deserialized through one
/// deserializer: each one instantiated costs a module code that V8 compiles before Envoy is ready.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    if is_json_text(bytes) {
        parse_json(bytes)
    } else {
        parse_json(&json_text(bytes.to_vec())?)
    }
}

/// The configuration as JSON text: JSON text as it is, a `Struct` re-encoded.
pub fn json_text(bytes: Vec<u8>) -> Result<Vec<u8>, ConfigError> {
    if is_json_text(&bytes) {
        return Ok(bytes);
    }
    serde_json::to_vec(&raw_value(&bytes)?)
        .map_err(|e| ConfigError::new("", format!("configuration could not be re-encoded: {e}")))
}

fn is_json_text(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        ConfigError::new(field, e.into_inner().to_string())
    })?;
    de.end()
        .map_err(|e| ConfigError::new("", format!("configuration is not valid JSON: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
        #[serde(default)]
        scopes: Vec<String>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        routes: Vec<Inner>,
        skew: Option<u32>,
    }

    #[test]
    fn unknown_field_error_names_its_path() {
        let e =
            parse::<Outer>(br#"{"routes":[{"name":"a"},{"name":"b","scopez":[]}]}"#).unwrap_err();
        assert_eq!(e.field, "routes[1].scopez");
        assert!(
            e.problem.contains("unknown field `scopez`"),
            "{}",
            e.problem
        );
        assert!(e.to_string().contains("routes[1]"));
    }

    #[test]
    fn wrong_type_error_names_its_path() {
        let e = parse::<Outer>(br#"{"routes":[],"skew":"sixty"}"#).unwrap_err();
        assert_eq!(e.field, "skew");
    }

    #[test]
    fn empty_and_malformed_json_are_errors() {
        assert!(parse::<Outer>(b"  ").is_err());
        assert!(parse::<Outer>(b"{\"routes\": [").is_err());
    }

    #[test]
    fn within_prefixes_paths() {
        assert_eq!(
            ConfigError::new("x", "p").within("routes[0]").field,
            "routes[0].x"
        );
        assert_eq!(ConfigError::new("[1]", "p").within("keys").field, "keys[1]");
        assert_eq!(ConfigError::new("", "p").within("a").field, "a");
    }
}
