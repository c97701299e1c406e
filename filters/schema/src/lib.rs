//! Portcullis schema filter: validates request bodies against JSON Schema per route, with
//! structural limits checked first and precise, value-free problem+json errors.
//!
//! The decision core ([`config`], [`scan`], [`onepass`], [`validate`]) is plain Rust; [`callbacks`] holds the
//! callbacks, written once over the core's host port.

pub mod callbacks;
pub mod config;
pub mod onepass;
pub mod scan;
pub mod validate;

pub use callbacks::Schema;

// The proxy-wasm entry point (wasm32 only): a few lines that hand the ABI to the callbacks.
#[cfg(all(target_arch = "wasm32", feature = "module"))]
mod filter;
