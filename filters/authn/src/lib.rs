//! Portcullis authn filter.
pub mod jwk;
pub mod jws;
