//! Portcullis schema filter: validates request bodies against JSON Schema per route, with
//! structural limits checked first and precise, value-free problem+json errors.
//!
//! The decision core ([`config`], [`scan`], [`validate`]) is plain Rust; [`filter`] holds the
//! callbacks, written once over the core's host port.

pub mod config;
pub mod filter;
pub mod scan;
pub mod validate;

pub use filter::Schema;

// The module's proxy-wasm entry point: everything else is in `filter`.
#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{ portcullis_core::host::register::<Schema>(); }}
