//! The compose mesh's policies and templates (`envoy/compose/`), without Docker: every policy
//! directory loads through the filters' compilers, every template renders completely, and the
//! routes the gateway and the CRM API's sidecar enforce are the demo's (`policies/authn.yaml`)
//! — the mesh deploys the demo's policy, it does not fork it.

// Helpers outside #[test] functions fail the test loudly, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::policy;
use portcullis_cli::render::{self, RenderOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(dir: &str) -> policy::Policies {
    policy::load(&repo().join("envoy/compose/policies").join(dir))
        .unwrap_or_else(|e| panic!("envoy/compose/policies/{dir}: {e}"))
}

fn routes(v: &Value) -> Vec<Value> {
    v["routes"].as_array().cloned().unwrap_or_default()
}

#[test]
fn the_gateway_and_crm_sidecar_enforce_the_demo_routes() {
    let demo = policy::load(&repo().join("policies")).unwrap();
    let gw = load("gateway");
    let crm = load("crm-api");
    assert_eq!(
        routes(&crm.authn),
        routes(&demo.authn),
        "crm sidecar drifted from the demo"
    );
    let gw_routes = routes(&gw.authn);
    assert_eq!(
        &gw_routes[..routes(&demo.authn).len()],
        routes(&demo.authn).as_slice()
    );
    assert_eq!(
        gw_routes.len(),
        routes(&demo.authn).len() + 1,
        "only the sync route is added"
    );
    // Everything else of the gateway is the demo's, file for file.
    assert_eq!(gw.schema, demo.schema);
    assert_eq!(gw.pii, demo.pii);
    // The replicas share their limits: the gateway runs the fleet-wide variant.
    let fleet: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("policies/global/ratelimit.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(gw.ratelimit, fleet);
    assert_eq!(gw.ratelimit_ip, demo.ratelimit_ip);
}

#[test]
fn every_authn_filter_of_the_mesh_fetches_keys_from_the_idp_and_holds_no_inline_keys() {
    for dir in ["gateway", "crm-api", "sync-worker"] {
        let p = load(dir);
        for prov in p.authn["providers"].as_array().unwrap() {
            assert!(prov.get("jwks").is_none(), "{dir}: inline keys");
            assert_eq!(prov["jwks_uri"]["cluster"], "portcullis_jwks", "{dir}");
            assert!(prov["jwks_uri"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://idp:8080/")));
        }
    }
    // Identity is re-established at each hop from the token: the gateway and the sync
    // worker's sidecar pass the token on; the CRM API's sidecar keeps it from the service.
    assert_eq!(load("gateway").authn["forward_token"], true);
    assert_eq!(load("sync-worker").authn["forward_token"], true);
    assert_eq!(load("crm-api").authn["forward_token"], false);
}

#[test]
fn every_template_renders_completely_into_yaml() {
    for (tmpl, dir) in [
        ("gateway.yaml.tmpl", "gateway"),
        ("crm-sidecar.yaml.tmpl", "crm-api"),
        ("sync-sidecar.yaml.tmpl", "sync-worker"),
    ] {
        let text = std::fs::read_to_string(repo().join("envoy/compose").join(tmpl)).unwrap();
        let out = render::render(
            &text,
            &load(dir),
            &RenderOptions {
                wasm_dir: Path::new("/etc/portcullis/wasm").to_path_buf(),
                listen_port: 8080,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{tmpl}: {e}"));
        let y: serde_norway::Value =
            serde_norway::from_str(&out).unwrap_or_else(|e| panic!("{tmpl}: not YAML: {e}"));
        let y = serde_json::to_value(y).unwrap();
        let listeners = y["static_resources"]["listeners"].as_array().unwrap();
        assert!(!listeners.is_empty(), "{tmpl}");
        // Every listener a peer reaches over the mesh demands a client certificate.
        for l in listeners {
            if l["name"] == "inbound" {
                let tls = &l["filter_chains"][0]["transport_socket"]["typed_config"];
                assert_eq!(tls["require_client_certificate"], true, "{tmpl}");
                assert!(tls["common_tls_context"]["validation_context"]
                    ["match_typed_subject_alt_names"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty()));
            }
        }
    }
}
