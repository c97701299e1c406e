//! Portcullis authn filter: verifies JWTs, enforces per-route requirements and the tenant
//! boundary, and hands a trusted identity to the rest of the chain.
//!
//! The decision core ([`config`], [`jwk`], [`jws`], [`cache`], [`decide`]) is plain Rust,
//! unit-tested natively and used by the `portcullis` CLI; only `filter` (wasm32) talks to Envoy.
//! The signature arithmetic under [`jws`] is the `portcullis-jose` crate's.

pub mod cache;
pub mod config;
pub mod decide;
pub mod dpop;
pub mod jwk;
pub mod jws;
pub mod remote;

#[cfg(target_arch = "wasm32")]
mod filter;
