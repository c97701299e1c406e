//! Portcullis ratelimit filter: per-tenant, per-app and per-IP token buckets and quotas kept in
//! Envoy shared data, exact under many workers (CAS), with standard rate-limit headers.
//!
//! The decision core ([`bucket`], [`store`], [`config`], [`decide`]) is plain Rust tested
//! natively with a fake store; [`global`] and [`rls`] build and read the calls to Envoy's rate
//! limit service for fleet-wide limits (shared with the service crate); only `filter` (wasm32)
//! talks to Envoy.

pub mod bucket;
pub mod config;
pub mod decide;
pub mod global;
pub mod rls;
pub mod store;

#[cfg(target_arch = "wasm32")]
mod filter;
