pub mod harness;
pub mod http;
