//! The `portcullis` command's library: load policy files through the filters' own config
//! compilers, render an Envoy config from the `envoy/` template, and mint demo tokens.
//!
//! The integration tests use this library too, so what `make run` renders is what is tested.

pub mod apikey;
pub mod benchkeys;
pub mod catalog;
pub mod chain;
pub mod gateway;
pub mod istio;
pub mod oci;
pub mod openapi;
pub mod policy;
pub mod policytest;
pub mod reload;
pub mod render;
pub mod token;
pub mod trim;

/// A CLI error: one line for the user, never containing secrets.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError(e.to_string())
    }
}

/// Shorthand result type.
pub type Result<T> = std::result::Result<T, CliError>;
