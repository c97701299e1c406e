//! Portcullis authn filter: verifies JWTs, enforces per-route requirements and the tenant
//! boundary, and hands a trusted identity to the rest of the chain.
//!
//! The decision core ([`config`], [`jwk`], [`jws`], [`cache`], [`decide`]) is plain Rust,
//! unit-tested natively; [`filter`] holds the callbacks, written once over the core's host port
//! and run by Envoy, by the fake host in native tests, and by `portcullis test`.

pub mod cache;
pub mod config;
pub mod conformance;
pub mod decide;
pub mod dpop;
pub mod ed25519_fast;
pub mod filter;
pub mod jwk;
pub mod jws;
pub mod p256_fast;
pub mod remote;
pub mod rsa_fast;

pub use filter::Authn;

// The module's proxy-wasm entry point: everything else is in `filter`.
#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{ portcullis_core::host::register::<Authn>(); }}
