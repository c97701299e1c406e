//! The one-module build: the four filters behind one proxy-wasm entry point. Every plugin that
//! loads `portcullis.wasm` gets a root context that runs the filter its `root_id` names
//! (`portcullis.authn`, `portcullis.ratelimit_ip`, …; see `portcullis_core::port::filter_named`).
//!
//! Why it exists: Envoy compiles every module with TurboFan before it is ready, and the four
//! separate modules each carry their own copy of what they share (the standard library, serde,
//! the regex engines of schema and pii). One module is compiled once, and with one `vm_id` the
//! whole chain is one VM per worker. The filters are the same code either way.

#[cfg(target_arch = "wasm32")]
mod entry {
    use portcullis_core::host::{register_many, root, Entry, Filters};

    struct All;

    impl Filters for All {
        const FILTERS: &'static [Entry] = &[
            ("authn", root::<portcullis_authn::Authn>),
            ("ratelimit", root::<portcullis_ratelimit::RateLimit>),
            ("schema", root::<portcullis_schema::Schema>),
            ("pii", root::<portcullis_pii::Pii>),
        ];
    }

    proxy_wasm::main! {{
        register_many::<All>();
    }}
}
