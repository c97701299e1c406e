//! Input grammars: generators of well-formed (and nearly well-formed) inputs, and the
//! structure-aware mutations of each target.

pub mod headermap;
pub mod json;
pub mod jws;
pub mod keytable;
pub mod path;
pub mod pb;
