//! Portcullis ratelimit filter: per-tenant, per-app and per-IP token buckets and quotas kept in
//! Envoy shared data, exact under many workers (CAS), with standard rate-limit headers.
//!
//! The decision core ([`bucket`], [`store`], [`config`], [`decide`]) is plain Rust; [`global`]
//! and [`rls`] build and read the calls to Envoy's rate limit service for fleet-wide limits
//! (shared with the service crate); [`callbacks`] holds the callbacks, written once over the
//! core's host port and run by Envoy, by the fake host in native tests, and by `portcullis test`.

pub mod bucket;
pub mod callbacks;
pub mod config;
pub mod decide;
pub mod global;
pub mod rls;
pub mod store;

pub use callbacks::RateLimit;

// The proxy-wasm entry point (wasm32 only): a few lines that hand the ABI to the callbacks.
#[cfg(all(target_arch = "wasm32", feature = "module"))]
mod filter;
