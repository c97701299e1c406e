//! Portcullis pii filter: masks personal data in response bodies (and, on egress routes, in
//! request bodies) by JSON field rules and detectors, revealing a value only to callers whose
//! scopes — verified by authn, read from filter state — allow it. Bodies it cannot read are
//! refused, never passed on unmasked (unless a route says otherwise).
//!
//! - [`config`]: the policy, compiled once;
//! - [`json`], [`jsonpath`]: the document model and field paths;
//! - [`detect`], [`action`]: what is personal data and what happens to it;
//! - [`charset`]: text encodings, decoded and written back;
//! - [`mask`]: the engine (its decisions), [`stream`]: JSON bodies masked in one pass; [`number`]: what a JSON number denotes; [`codec`]: content
//!   codings; [`decide`]: the filter's decisions;
//! - [`callbacks`]: the callbacks, written once over the core's host port.

pub mod action;
pub mod callbacks;
pub mod charset;
pub mod codec;
pub mod config;
pub mod decide;
pub mod detect;
pub mod json;
pub mod jsonpath;
pub mod mask;
pub mod number;
mod sha256;
pub mod stream;

pub use callbacks::Pii;

// The proxy-wasm entry point (wasm32 only): a few lines that hand the ABI to the callbacks.
#[cfg(all(target_arch = "wasm32", feature = "module"))]
mod filter;
