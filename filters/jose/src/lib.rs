//! Verification-only JOSE signature arithmetic: prepared public keys that check a JWS signature, tuned for wasm32, with nothing that signs.
//!
//! [`VerifyingKey`] is the API the authn filter uses: built once from public key material
//! (validated on the way in), then asked `verify(alg, signing_input, signature)` per request.
//! Parsing JWKs and JWS tokens, choosing keys and checking claims belong to the caller.
//!
//! The arithmetic underneath is specialised because wasm32 emulates 64×64-bit products and
//! general-purpose crates are several times slower there than native code: [`rsa_fast`]
//! (RS/PS), [`p256_fast`] (ES256), [`ed25519_fast`] (EdDSA); ES384 uses `p384`, HS* the
//! `hmac-sha256`/`hmac-sha512` crates. Every input is public, so all of it is variable-time. The
//! three modules are public for their differential tests and benchmarks; they verify only.
//!
//! With the `wycheproof` feature (test support, never enabled by a filter), [`wycheproof`] runs
//! the Project Wycheproof raw-signature vectors through [`VerifyingKey`], natively under
//! `cargo test` and compiled to wasm32 by the `jose-conformance` binary.

#![forbid(unsafe_code)]

mod alg;
mod key;

pub mod ed25519_fast;
pub mod p256_fast;
pub mod rsa_fast;

#[cfg(feature = "wycheproof")]
pub mod wycheproof;

pub use alg::Alg;
pub use key::{KeyError, KeyType, Precompute, VerifyingKey};
