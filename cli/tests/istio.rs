//! `portcullis render --format istio`, parsed back. No cluster here can run Istio, so the
//! manifests are checked against what Istio itself would check and do:
//!
//! - every field of a WasmPlugin / EnvoyFilter spec is one Istio's API defines, with its JSON
//!   type and enum values (the table below is transcribed from istio/api
//!   `extensions/v1alpha1/wasm.proto` and `networking/v1alpha3/envoy_filter.proto`, whose JSON
//!   names the CRDs use);
//! - ordering plugins the way istiod does (phase, then priority descending) gives exactly the
//!   order of the wasm filters in the rendered `envoy/gateway.yaml.tmpl` chain;
//! - `sha256` is what Istio compares: the module's digest for `file://`, the image manifest's
//!   digest for `oci://` (and that image carries the module);
//! - `pluginConfig`, turned into the JSON string istiod hands the filter (a `Struct`: every
//!   number a double), is accepted by each filter's own configuration loader.

// Helpers outside #[test] functions fail the test loudly, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::istio::{self, IstioOptions, Mode, ModuleSource, CHAIN};
use portcullis_cli::oci::{self, Image};
use portcullis_cli::policy;
use serde_json::Value;
use sha2::Digest;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `dist/` with the built modules, or a directory of stand-in modules when nothing is built
/// (a plain `cargo test`): digests are checked either way, against whatever is there.
fn wasm_dir() -> PathBuf {
    let dist = std::env::var("PORTCULLIS_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("dist"));
    if ["authn", "ratelimit", "schema", "pii"]
        .iter()
        .all(|m| dist.join(format!("{m}.wasm")).exists())
    {
        return dist;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI: dist/*.wasm missing (make build)"
    );
    let dir = std::env::temp_dir().join(format!("portcullis-istio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for m in ["authn", "ratelimit", "schema", "pii"] {
        std::fs::write(dir.join(format!("{m}.wasm")), format!("\0asm\x01\0\0\0{m}")).unwrap();
    }
    dir
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| {
            let v: serde_norway::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn render(source: ModuleSource, mode: Mode) -> (Vec<Value>, PathBuf) {
    let p = policy::load(&repo().join("policies")).unwrap();
    let dir = wasm_dir();
    let opts = IstioOptions {
        source,
        mode,
        wasm_dir: dir.clone(),
        ..Default::default()
    };
    (docs(&istio::render(&p, &opts).unwrap()), dir)
}

// ---- Istio's API, as published -----------------------------------------------------------

#[derive(Debug)]
enum Ty {
    Str,
    Int32,
    Obj,
    Enum(&'static [&'static str]),
    Labels,
    List,
}

/// `WasmPlugin.spec` (istio.extensions.v1alpha1.WasmPlugin), JSON names.
const WASM_PLUGIN_SPEC: &[(&str, Ty)] = &[
    ("selector", Ty::Obj),
    ("targetRef", Ty::Obj),
    ("targetRefs", Ty::List),
    ("url", Ty::Str),
    ("sha256", Ty::Str),
    (
        "imagePullPolicy",
        Ty::Enum(&["UNSPECIFIED_POLICY", "IfNotPresent", "Always"]),
    ),
    ("imagePullSecret", Ty::Str),
    ("verificationKey", Ty::Str),
    ("pluginConfig", Ty::Obj),
    ("pluginName", Ty::Str),
    (
        "phase",
        Ty::Enum(&["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"]),
    ),
    ("priority", Ty::Int32),
    (
        "failStrategy",
        Ty::Enum(&["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"]),
    ),
    ("vmConfig", Ty::Obj),
    ("match", Ty::List),
    (
        "type",
        Ty::Enum(&["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"]),
    ),
];

/// `WorkloadSelector` (istio.type.v1beta1).
const SELECTOR: &[(&str, Ty)] = &[("matchLabels", Ty::Labels)];

/// `WasmPlugin.TrafficSelector`.
const TRAFFIC_SELECTOR: &[(&str, Ty)] = &[
    (
        "mode",
        Ty::Enum(&["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"]),
    ),
    ("ports", Ty::List),
];

/// `EnvoyFilter.spec` (istio.networking.v1alpha3.EnvoyFilter).
const ENVOY_FILTER_SPEC: &[(&str, Ty)] = &[
    ("workloadSelector", Ty::Obj),
    ("targetRefs", Ty::List),
    ("configPatches", Ty::List),
    ("priority", Ty::Int32),
];
const WORKLOAD_SELECTOR: &[(&str, Ty)] = &[("labels", Ty::Labels)];
const CONFIG_PATCH: &[(&str, Ty)] = &[
    (
        "applyTo",
        Ty::Enum(&[
            "INVALID",
            "LISTENER",
            "FILTER_CHAIN",
            "NETWORK_FILTER",
            "HTTP_FILTER",
            "ROUTE_CONFIGURATION",
            "VIRTUAL_HOST",
            "HTTP_ROUTE",
            "CLUSTER",
            "EXTENSION_CONFIG",
            "BOOTSTRAP",
            "LISTENER_FILTER",
        ]),
    ),
    ("match", Ty::Obj),
    ("patch", Ty::Obj),
];
const PATCH_MATCH: &[(&str, Ty)] = &[
    (
        "context",
        Ty::Enum(&["ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"]),
    ),
    ("proxy", Ty::Obj),
    ("listener", Ty::Obj),
    ("routeConfiguration", Ty::Obj),
    ("cluster", Ty::Obj),
];
const LISTENER_MATCH: &[(&str, Ty)] = &[
    ("portNumber", Ty::Int32),
    ("filterChain", Ty::Obj),
    ("listenerFilter", Ty::Str),
    ("name", Ty::Str),
];
const FILTER_CHAIN_MATCH: &[(&str, Ty)] = &[
    ("name", Ty::Str),
    ("sni", Ty::Str),
    ("transportProtocol", Ty::Str),
    ("applicationProtocols", Ty::Str),
    ("filter", Ty::Obj),
    ("destinationPort", Ty::Int32),
];
const FILTER_MATCH: &[(&str, Ty)] = &[("name", Ty::Str), ("subFilter", Ty::Obj)];
const SUBFILTER_MATCH: &[(&str, Ty)] = &[("name", Ty::Str)];
const PATCH: &[(&str, Ty)] = &[
    (
        "operation",
        Ty::Enum(&[
            "INVALID",
            "MERGE",
            "ADD",
            "REMOVE",
            "INSERT_BEFORE",
            "INSERT_AFTER",
            "INSERT_FIRST",
            "REPLACE",
        ]),
    ),
    ("value", Ty::Obj),
    (
        "filterClass",
        Ty::Enum(&["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"]),
    ),
];

/// Checks an object against a field table: known names, right JSON types.
fn check(obj: &Value, table: &[(&str, Ty)], at: &str) {
    let map = obj
        .as_object()
        .unwrap_or_else(|| panic!("{at}: not an object: {obj}"));
    for (k, v) in map {
        let (_, ty) = table
            .iter()
            .find(|(name, _)| name == k)
            .unwrap_or_else(|| panic!("{at}.{k}: not a field of Istio's API"));
        let ok = match ty {
            Ty::Str => v.is_string(),
            Ty::Int32 => v
                .as_i64()
                .is_some_and(|i| i >= i64::from(i32::MIN) && i <= i64::from(i32::MAX)),
            Ty::Obj => v.is_object(),
            Ty::List => v.is_array(),
            Ty::Enum(values) => v.as_str().is_some_and(|s| values.contains(&s)),
            Ty::Labels => v
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string)),
        };
        assert!(ok, "{at}.{k}: {v} is not a valid {ty:?}");
    }
}

fn check_metadata(doc: &Value) {
    let name = doc["metadata"]["name"].as_str().unwrap();
    assert!(
        name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-'),
        "metadata.name `{name}` is not a DNS-1123 name"
    );
    assert!(doc["metadata"]["namespace"].is_string());
}

fn plugins(docs: &[Value]) -> Vec<&Value> {
    docs.iter().filter(|d| d["kind"] == "WasmPlugin").collect()
}

// ---- The tests ----------------------------------------------------------------------------

#[test]
fn every_field_is_one_istio_defines_with_its_type() {
    for (source, mode) in [
        (
            ModuleSource::File {
                dir: "/etc/portcullis/wasm".into(),
            },
            Mode::Gateway,
        ),
        (
            ModuleSource::Oci {
                registry: "registry.example.com/platform".into(),
            },
            Mode::SidecarInbound,
        ),
    ] {
        let (docs, _) = render(source, mode);
        assert_eq!(plugins(&docs).len(), CHAIN.len());
        for d in &docs {
            check_metadata(d);
            match d["kind"].as_str() {
                Some("WasmPlugin") => {
                    assert_eq!(d["apiVersion"], "extensions.istio.io/v1alpha1");
                    let spec = &d["spec"];
                    check(spec, WASM_PLUGIN_SPEC, "spec");
                    check(&spec["selector"], SELECTOR, "spec.selector");
                    for m in spec["match"].as_array().into_iter().flatten() {
                        check(m, TRAFFIC_SELECTOR, "spec.match[]");
                    }
                    let url = spec["url"].as_str().unwrap();
                    assert!(
                        ["oci://", "file://", "http://", "https://"]
                            .iter()
                            .any(|s| url.starts_with(s)),
                        "{url}"
                    );
                    let sha = spec["sha256"].as_str().unwrap();
                    assert!(
                        sha.len() == 64 && sha.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
                        "sha256 `{sha}` does not match Istio's pattern"
                    );
                    let name = spec["pluginName"].as_str().unwrap();
                    assert!(!name.is_empty() && name.len() <= 256);
                    assert_eq!(spec["failStrategy"], "FAIL_CLOSE", "fail closed");
                    assert_eq!(
                        spec.get("match").is_some(),
                        mode == Mode::SidecarInbound,
                        "inbound only on sidecars"
                    );
                }
                Some("EnvoyFilter") => {
                    assert_eq!(d["apiVersion"], "networking.istio.io/v1alpha3");
                    let spec = &d["spec"];
                    check(spec, ENVOY_FILTER_SPEC, "spec");
                    check(
                        &spec["workloadSelector"],
                        WORKLOAD_SELECTOR,
                        "workloadSelector",
                    );
                    for p in spec["configPatches"].as_array().unwrap() {
                        check(p, CONFIG_PATCH, "configPatches[]");
                        check(&p["match"], PATCH_MATCH, "configPatches[].match");
                        check(&p["patch"], PATCH, "configPatches[].patch");
                        if let Some(l) = p["match"].get("listener") {
                            check(l, LISTENER_MATCH, "match.listener");
                            if let Some(fc) = l.get("filterChain") {
                                check(fc, FILTER_CHAIN_MATCH, "match.listener.filterChain");
                                check(&fc["filter"], FILTER_MATCH, "filterChain.filter");
                                if let Some(sf) = fc["filter"].get("subFilter") {
                                    check(sf, SUBFILTER_MATCH, "filter.subFilter");
                                }
                            }
                        }
                        let ctx = if mode == Mode::Gateway {
                            "GATEWAY"
                        } else {
                            "SIDECAR_INBOUND"
                        };
                        assert_eq!(p["match"]["context"], ctx);
                    }
                }
                other => panic!("unexpected kind {other:?}"),
            }
        }
    }
}

/// The `portcullis.*` wasm filters of the rendered gateway config, in chain order (root ids).
fn gateway_chain() -> Vec<String> {
    let p = policy::load(&repo().join("policies")).unwrap();
    let tmpl = std::fs::read_to_string(repo().join("envoy/gateway.yaml.tmpl")).unwrap();
    let out = portcullis_cli::render::render(&tmpl, &p, &Default::default()).unwrap();
    let y: serde_norway::Value = serde_norway::from_str(&out).unwrap();
    let y = serde_json::to_value(y).unwrap();
    let filters = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"];
    filters
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["typed_config"]["config"]["root_id"].as_str())
        .map(str::to_string)
        .collect()
}

#[test]
fn phases_and_priorities_reproduce_the_gateway_chain_order() {
    let (docs, _) = render(
        ModuleSource::File {
            dir: "/wasm".into(),
        },
        Mode::Gateway,
    );
    let rank = |phase: &str| match phase {
        "AUTHN" => 0,
        "AUTHZ" => 1,
        "STATS" => 2,
        _ => 3, // unspecified: at the end of the chain, before the router
    };
    let mut ps = plugins(&docs);
    // istiod: by phase, then priority descending, then namespace/name.
    ps.sort_by(|a, b| {
        let (sa, sb) = (&a["spec"], &b["spec"]);
        rank(sa["phase"].as_str().unwrap_or(""))
            .cmp(&rank(sb["phase"].as_str().unwrap_or("")))
            .then(sb["priority"].as_i64().cmp(&sa["priority"].as_i64()))
            .then(
                a["metadata"]["name"]
                    .as_str()
                    .cmp(&b["metadata"]["name"].as_str()),
            )
    });
    let istio_order: Vec<String> = ps
        .iter()
        .map(|p| p["spec"]["pluginName"].as_str().unwrap().to_string())
        .collect();
    let chain = gateway_chain();
    assert_eq!(chain.len(), 5, "{chain:?}");
    assert_eq!(istio_order, chain);
    // No two plugins tie (a tie would fall back to name order, by accident).
    for w in ps.windows(2) {
        assert!(
            w[0]["spec"]["phase"] != w[1]["spec"]["phase"]
                || w[0]["spec"]["priority"] != w[1]["spec"]["priority"]
        );
    }
}

#[test]
fn sha256_is_what_istio_compares_for_each_url_scheme() {
    let (docs, dir) = render(
        ModuleSource::File {
            dir: "/etc/portcullis/wasm".into(),
        },
        Mode::Gateway,
    );
    for p in plugins(&docs) {
        let inst = CHAIN
            .iter()
            .find(|i| Some(i.root_id) == p["spec"]["pluginName"].as_str())
            .unwrap();
        let wasm = std::fs::read(dir.join(format!("{}.wasm", inst.module))).unwrap();
        let module = oci::hex(&sha2::Sha256::digest(&wasm));
        assert_eq!(p["spec"]["sha256"], module.as_str());
        assert_eq!(
            p["spec"]["url"],
            format!("file:///etc/portcullis/wasm/{}.wasm", inst.module)
        );
        assert_eq!(
            p["metadata"]["annotations"]["portcullis.dev/module-sha256"],
            module.as_str()
        );
    }
    let (docs, dir) = render(
        ModuleSource::Oci {
            registry: "registry.example.com/platform".into(),
        },
        Mode::Gateway,
    );
    for p in plugins(&docs) {
        let inst = CHAIN
            .iter()
            .find(|i| Some(i.root_id) == p["spec"]["pluginName"].as_str())
            .unwrap();
        let wasm = std::fs::read(dir.join(format!("{}.wasm", inst.module))).unwrap();
        let img = Image::wasm_compat(&wasm, inst.module, env!("CARGO_PKG_VERSION")).unwrap();
        assert_eq!(
            p["spec"]["url"],
            format!(
                "oci://registry.example.com/platform/portcullis-{}:{}",
                inst.module,
                env!("CARGO_PKG_VERSION")
            )
        );
        // Istio compares an oci:// sha256 with the manifest digest it pulls.
        assert_eq!(
            format!("sha256:{}", p["spec"]["sha256"].as_str().unwrap()),
            img.manifest_digest
        );
        assert_eq!(oci::extract_plugin(&img.layers[0]).unwrap(), wasm);
        assert_eq!(
            p["metadata"]["annotations"]["portcullis.dev/module-sha256"],
            oci::hex(&sha2::Sha256::digest(&wasm)).as_str()
        );
    }
}

/// A `Struct` as istiod turns it into the plugin's JSON string (`protomarshal.ToJSON`): every
/// number is a double, printed like Go's encoding/json (no fraction for integral values below
/// 1e21).
fn istio_json(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().unwrap();
            if f.fract() == 0.0 && f.abs() < 1e21 {
                format!("{f:.0}")
            } else {
                format!("{f}")
            }
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(istio_json).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), istio_json(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

#[test]
fn plugin_configs_as_istio_delivers_them_load_in_each_filter() {
    let (docs, _) = render(
        ModuleSource::File {
            dir: "/wasm".into(),
        },
        Mode::Gateway,
    );
    let p = policy::load(&repo().join("policies")).unwrap();
    for d in plugins(&docs) {
        let cfg = &d["spec"]["pluginConfig"];
        let json = istio_json(cfg);
        let bytes = json.as_bytes();
        let root = d["spec"]["pluginName"].as_str().unwrap();
        let res = match root {
            "portcullis.authn" => {
                portcullis_authn::config::AuthnConfig::from_bytes(bytes).map(|_| ())
            }
            "portcullis.ratelimit" | "portcullis.ratelimit_ip" => {
                portcullis_ratelimit::config::RateLimitConfig::from_bytes(bytes).map(|_| ())
            }
            "portcullis.pii" => portcullis_pii::config::PiiConfig::from_bytes(bytes).map(|_| ()),
            "portcullis.schema" => {
                portcullis_schema::config::SchemaConfig::from_bytes(bytes).map(|_| ())
            }
            other => panic!("unknown plugin {other}"),
        };
        res.unwrap_or_else(|e| panic!("{root}: Istio's JSON is refused: {e}"));
        // And it is the policy, unchanged but for authn's API keys, carried as one table.
        let authn = policy::compact_api_keys(p.authn.clone()).unwrap();
        assert!(authn["api_keys"]["table"].is_string());
        let expected = match root {
            "portcullis.authn" => &authn,
            "portcullis.ratelimit" => &p.ratelimit,
            "portcullis.ratelimit_ip" => &p.ratelimit_ip,
            "portcullis.pii" => &p.pii,
            _ => &p.schema,
        };
        assert_eq!(cfg, expected, "{root}");
    }
    // The two ratelimit instances share one VM under Istio (no vm_id): their shared-data keys
    // stay apart only through distinct stat prefixes.
    assert_ne!(p.ratelimit["stat_prefix"], p.ratelimit_ip["stat_prefix"]);
}

#[test]
fn the_envoy_filter_adds_what_wasm_plugins_cannot_express() {
    let (docs, _) = render(
        ModuleSource::File {
            dir: "/wasm".into(),
        },
        Mode::Gateway,
    );
    let p = policy::load(&repo().join("policies")).unwrap();
    let ef = docs.iter().find(|d| d["kind"] == "EnvoyFilter").unwrap();
    let patches = ef["spec"]["configPatches"].as_array().unwrap();
    let find = |op: &str, name: &str| {
        patches
            .iter()
            .find(|x| x["patch"]["operation"] == op && x["patch"]["value"]["name"] == name)
            .unwrap_or_else(|| panic!("no {op} {name}"))
    };
    let lua = find("INSERT_FIRST", "envoy.filters.http.lua");
    assert_eq!(
        lua["patch"]["value"]["typed_config"]["default_source_code"]["inline_string"],
        istio::RESPONSE_HOLD_LUA
    );
    let buffer = find("INSERT_BEFORE", "envoy.filters.http.buffer");
    assert_eq!(
        buffer["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router"
    );
    assert_eq!(
        buffer["patch"]["value"]["typed_config"]["max_request_bytes"],
        p.buffer_filter_bytes()
    );
    let listener = patches.iter().find(|x| x["applyTo"] == "LISTENER").unwrap();
    assert_eq!(
        listener["patch"]["value"]["per_connection_buffer_limit_bytes"],
        p.connection_buffer_bytes()
    );
    // The demo keys are inline: no JWKS cluster to add. The compose gateway's are remote.
    assert!(!patches.iter().any(|x| x["applyTo"] == "CLUSTER"));
    let remote = policy::load(&repo().join("envoy/compose/policies/gateway")).unwrap();
    let opts = IstioOptions {
        wasm_dir: wasm_dir(),
        ..Default::default()
    };
    let docs = docs_of(&istio::render(&remote, &opts).unwrap());
    let ef = docs.iter().find(|d| d["kind"] == "EnvoyFilter").unwrap();
    let cluster = ef["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["applyTo"] == "CLUSTER")
        .expect("a cluster for the remote JWKS");
    assert_eq!(cluster["patch"]["operation"], "ADD");
    assert_eq!(cluster["patch"]["value"]["name"], "portcullis_jwks");
}

fn docs_of(yaml: &str) -> Vec<Value> {
    docs(yaml)
}

#[test]
fn a_manifest_without_a_selector_is_refused() {
    let p = policy::load(&repo().join("policies")).unwrap();
    let opts = IstioOptions {
        selector: vec![],
        wasm_dir: wasm_dir(),
        ..Default::default()
    };
    assert!(istio::render(&p, &opts).is_err());
}
