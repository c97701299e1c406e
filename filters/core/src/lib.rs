//! Host-agnostic core shared by every Portcullis filter.
//!
//! Everything here is plain data and pure functions so it is unit-tested natively; only
//! [`host`] (compiled for wasm32 alone) talks to proxy-wasm. Filters build on:
//! - [`config`]: load the plugin configuration (JSON string or protobuf `Struct`) into
//!   `deny_unknown_fields` serde types, with errors that name the offending field;
//! - [`path`]: normalise a request path once, so no encoding trick dodges a rule;
//! - [`route`]: method + path matching (exact, prefix, `{param}` templates), first match wins;
//! - [`identity`]: the verified caller handed from authn to the later filters;
//! - [`audit`]: each filter's part of the per-request audit record, keyed hashes, and the
//!   denial summary that replaces one log line per denied request;
//! - [`deny`]: the one shape every filter denies with (status, reason code, problem+json);
//! - [`shared`]: the shared-data port and the one CAS loop every filter uses on it;
//! - [`slots`]: fixed-capacity, keyed-hash tables in shared data for state keyed by clients.

pub mod audit;
pub mod config;
pub mod deny;
pub mod identity;
pub mod json;

/// The first value of a header in a lower-cased header list (`:method`, `:path` included).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
pub mod path;
pub mod pbstruct;
pub mod route;
pub mod shared;
pub mod slots;

pub mod metrics;
pub mod port;

#[cfg(target_arch = "wasm32")]
pub mod host;

#[cfg(not(target_arch = "wasm32"))]
pub mod fake;
