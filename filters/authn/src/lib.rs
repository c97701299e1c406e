//! Portcullis authn filter: verifies JWTs, enforces per-route requirements and the tenant
//! boundary, and hands a trusted identity to the rest of the chain.
//!
//! The decision core ([`config`], [`jwk`], [`jws`], [`cache`], [`decide`]) is plain Rust,
//! unit-tested natively and used by the `portcullis` CLI; only `filter` (wasm32) talks to Envoy.

pub mod cache;
pub mod config;
pub mod conformance;
pub mod decide;
pub mod dpop;
pub mod ed25519_fast;
pub mod jwk;
pub mod jws;
pub mod p256_fast;
pub mod remote;
pub mod rsa_fast;

#[cfg(target_arch = "wasm32")]
mod filter;
