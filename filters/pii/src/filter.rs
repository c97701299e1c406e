//! The module's proxy-wasm entry point, and all of it: the ABI's root and HTTP contexts come
//! from the core's adapter (`portcullis_core::host`), which runs [`crate::Pii`]'s callbacks
//! ([`crate::callbacks`]) on Envoy. Nothing here decides anything.

// Exports the ABI's entry points (`_initialize`, `proxy_abi_version_0_2_1`) and registers the
// root context factory when Envoy instantiates the module.
proxy_wasm::main! {{
    portcullis_core::host::register::<crate::Pii>();
}}
