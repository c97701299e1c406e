//! A seeded in-tree fuzzer for the parsers that read untrusted bytes: compact JWS, request paths, protobuf `Struct` configuration, JSON bodies and API key tables.
//!
//! cargo-fuzz (libFuzzer) needs a nightly toolchain; this needs none. It is not
//! coverage-guided: each [`Target`] brings a grammar instead (a generator of well-formed inputs
//! and structure-aware mutations), and a run keeps what the parser accepted to mutate further.
//! Every input is checked against invariants and, where one exists, a reference implementation
//! ([`targets`]), under `catch_unwind`. A run is fixed by its seed ([`engine`]): the same seed
//! replays the same cases on any machine. `make fuzz` runs long; `cargo test` (so `make test`)
//! runs each target briefly from a fixed seed.

pub mod engine;
pub mod gen;
pub mod mutate;
pub mod rng;
pub mod targets;

pub use engine::{Target, Verdict};

/// Every target, in the order a run visits them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "jws",
        about: "compact JWS parse + verify (authn::jws) against reference crates and the key selection rule",
        check: targets::jws,
        seeds: gen::jws::seeds,
        generate: gen::jws::generate,
        mutate: gen::jws::mutate,
        // authn refuses tokens over `max_token_bytes` (8 KiB by default) before parsing.
        max_input: 16 * 1024,
    },
    Target {
        name: "path",
        about: "request path normalisation (core::path): idempotent, no dot segments, `//`, encoded separators or controls",
        check: targets::path,
        seeds: seeds::path,
        generate: gen::path::generate,
        mutate: gen::path::mutate,
        // Envoy's default request-header limit is 60 KiB; real paths are far shorter.
        max_input: 16 * 1024,
    },
    Target {
        name: "pbstruct",
        about: "protobuf Struct decoding of arbitrary bytes (core::pbstruct): bounded nesting, stable re-encoding",
        check: targets::pbstruct,
        seeds: seeds::pbstruct,
        generate: gen::pb::generate,
        mutate: gen::pb::mutate,
        max_input: 64 * 1024,
    },
    Target {
        name: "pbstruct-roundtrip",
        about: "protobuf Struct: the encoding of a random JSON object decodes to that object",
        check: targets::pbstruct_roundtrip,
        seeds: seeds::json,
        generate: gen::json::object_document,
        mutate: gen::json::mutate,
        max_input: 64 * 1024,
    },
    Target {
        name: "json",
        about: "JSON bodies: schema's structural scan and pii's parser, each held to serde_json",
        check: targets::json,
        seeds: seeds::json,
        generate: gen::json::document,
        mutate: gen::json::mutate,
        max_input: 64 * 1024,
    },
    Target {
        name: "keytable",
        about: "API key tables (authn::keytable): what loads finds each key as listed and nothing else, and re-encodes to the same keys",
        check: targets::keytable,
        seeds: gen::keytable::seeds,
        generate: gen::keytable::generate,
        mutate: gen::keytable::mutate,
        max_input: 64 * 1024,
    },
    Target {
        name: "headermap",
        about: "serialized header maps as the host hands them over (core::headers): held to a plain reference decoder; malformed maps read as empty",
        check: targets::headermap,
        seeds: gen::headermap::seeds,
        generate: gen::headermap::generate,
        mutate: gen::headermap::mutate,
        max_input: 64 * 1024,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Built-in seeds (the checked-in `corpus/` adds regression inputs on top).
mod seeds {
    use crate::gen::pb;

    pub fn path() -> Vec<Vec<u8>> {
        [
            "/",
            "//",
            "/healthz",
            "/api/v1/tenants/acme/customers",
            "/api/v1/tenants/acme/%2e%2e/globex/customers",
            "/api/v1/tenants/a/.%2e/b/",
            "/a/b/..",
            "/a/./b/.",
            "/../../etc/passwd",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/a%00b",
            "/%61%70%69?x=1#f",
            "/caf%C3%A9/%7euser",
            "*",
            "a/b",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    }

    pub fn json() -> Vec<Vec<u8>> {
        [
            r#"{}"#,
            r#"{"a":[1,2,{"b":null}],"c":"\u00e9\ud83d\ude00","d":{}}"#,
            r#"{"name":"Ada","email":"ada@acme.example.com","tenant_id":"acme"}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"n":[0,-0,1e400,18446744073709551616,-9223372036854775809,0.5e-3]}"#,
            r#"{"s":"\ud800"}"#,
            r#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"#,
            "{\"ssn\":\"123-45-6789\",\"s\\u0073n\":\"x\"}",
            " \t\n{\"k\" : [ true , false , null ] }\r\n",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    }

    pub fn pbstruct() -> Vec<Vec<u8>> {
        json()
            .iter()
            .filter_map(|j| match serde_json::from_slice(j) {
                Ok(serde_json::Value::Object(m)) => Some(pb::encode_struct(&m)),
                _ => None,
            })
            .chain([Vec::new(), vec![0x0a, 0xff], vec![0x0f]])
            .collect()
    }
}
