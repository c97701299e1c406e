//! Portcullis authn filter: verifies JWTs, enforces per-route requirements and the tenant
//! boundary, and hands a trusted identity to the rest of the chain.
//!
//! The decision core ([`config`], [`jwk`], [`jws`], [`cache`], [`decide`]) is plain Rust,
//! unit-tested natively; [`callbacks`] holds the callbacks, written once over the core's host port
//! and run by Envoy, by the fake host in native tests, and by `portcullis test`.
//! The signature arithmetic under [`jws`] is the `portcullis-jose` crate's.

pub mod audit;
pub mod cache;
pub mod callbacks;
pub mod catalog;
pub mod claims;
pub mod config;
pub mod decide;
pub mod dpop;
pub mod jwk;
pub mod jws;
pub mod keytable;
pub mod remote;

pub use callbacks::Authn;

// The proxy-wasm entry point (wasm32 only): a few lines that hand the ABI to the callbacks.
#[cfg(all(target_arch = "wasm32", feature = "module"))]
mod filter;
