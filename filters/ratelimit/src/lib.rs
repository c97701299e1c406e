//! Portcullis ratelimit filter: per-tenant, per-app and per-IP token buckets and quotas kept in
//! Envoy shared data, exact under many workers (CAS), with standard rate-limit headers.
//!
//! The decision core ([`bucket`], [`store`], [`config`], [`decide`]) is plain Rust;
//! [`filter`] holds the callbacks, written once over the core's host port and run by Envoy,
//! by the fake host in native tests, and by `portcullis test`.

pub mod bucket;
pub mod config;
pub mod decide;
pub mod filter;
pub mod store;

pub use filter::RateLimit;

// The module's proxy-wasm entry point: everything else is in `filter`.
#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{ portcullis_core::host::register::<RateLimit>(); }}
