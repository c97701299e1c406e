//! Portcullis schema filter: validates request bodies against JSON Schema per route, with
//! structural limits checked first and precise, value-free problem+json errors.
//!
//! The decision core ([`config`], [`scan`], [`validate`]) is plain Rust tested natively; only
//! `filter` (wasm32) talks to Envoy.

pub mod config;
pub mod scan;
pub mod validate;

#[cfg(target_arch = "wasm32")]
mod filter;
