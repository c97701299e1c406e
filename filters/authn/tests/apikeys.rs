//! API keys for micro apps, natively through `authenticate`: digests only, opt-in per route,
//! header only, one credential, the same route rules as tokens; 100k keys as a list or as the
//! compact table `portcullis render` writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_authn::cache::TokenCache;
use portcullis_authn::config::AuthnConfig;
use portcullis_authn::decide::{authenticate, Request};
use portcullis_core::headers::HeaderMap;
use portcullis_core::identity::AuthMethod;
use serde_json::{json, Value};

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const KEY: &str = "pcak_test-key-of-the-widget-app-0000000000";
const REVOKED: &str = "pcak_revoked-key-0000000000000000000000000";

/// The test's two keys (one live, one disabled) followed by `extra`, as a policy lists them.
fn keys(extra: Vec<Value>) -> Vec<Value> {
    let mut keys = vec![
        json!({"id": "widget-1", "sha256": sha256_hex(KEY), "app": "widget", "tenant": "acme",
               "scopes": ["customers:read"], "tier": "standard"}),
        json!({"id": "widget-0", "sha256": sha256_hex(REVOKED), "app": "widget", "tenant": "acme",
               "scopes": ["customers:read"], "disabled": true}),
    ];
    keys.extend(extra);
    keys
}

/// The configuration every test here runs, around an `api_keys` value (a list or a table).
fn document(api_keys: Value) -> Value {
    json!({
        "providers": [{"name": "main", "issuer": "https://idp", "algorithms": ["HS256"], "require_exp": false,
                       "jwks": {"keys": [{"kty": "oct", "k": "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI"}]}}],
        "api_keys": api_keys,
        "routes": [
            {"name": "list", "match": {"methods": ["GET"], "template": "/t/{tenant}/customers"},
             "require": {"providers": ["main", "api-keys"], "scopes": {"all_of": ["customers:read"]}, "tenant_param": "tenant"}},
            {"name": "write", "match": {"methods": ["POST"], "template": "/t/{tenant}/customers"},
             "require": {"providers": ["main", "api-keys"], "scopes": {"all_of": ["customers:write"]}}},
            {"name": "tokens-only", "match": {"prefix": "/admin"}, "require": {}}
        ]
    })
}

/// `n` keys `pcak_bulk_0…`, each its own app, over a thousand tenants.
fn bulk_keys(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("k{i}"), "sha256": sha256_hex(&format!("pcak_bulk_{i}")), "app": format!("app{i}"),
                         "tenant": format!("t{}", i % 1000), "scopes": ["customers:read"]}))
        .collect()
}

fn config(extra_keys: Vec<Value>) -> AuthnConfig {
    AuthnConfig::from_value(document(json!({"keys": keys(extra_keys)}))).unwrap()
}

fn run(
    cfg: &AuthnConfig,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<portcullis_core::identity::Identity, &'static str> {
    let headers = HeaderMap::from_pairs(headers);
    let mut cache = TokenCache::new(16);
    authenticate(
        cfg,
        &mut cache,
        &Request {
            method,
            path,
            headers: &headers,
            peer_cert_sha256: &|| None,
        },
        1_800_000_000,
    )
    .verdict
    .map(|a| a.identity)
    .map_err(|d| d.reason)
}

#[test]
fn a_known_key_gives_the_same_identity_shape_as_a_token() {
    let cfg = config(vec![]);
    let id = run(&cfg, "GET", "/t/acme/customers", &[("x-api-key", KEY)]).unwrap();
    assert_eq!(id.method, AuthMethod::ApiKey);
    assert_eq!(id.app.as_deref(), Some("widget"));
    assert_eq!(id.tenant.as_deref(), Some("acme"));
    assert_eq!(id.issuer.as_deref(), Some("widget-1"));
    assert_eq!(id.tier.as_deref(), Some("standard"));
    assert_eq!(id.scopes, ["customers:read"]);
}

#[test]
fn keys_are_refused_as_documented() {
    let cfg = config(vec![]);
    let r = |m: &str, p: &str, h: &[(&str, &str)]| run(&cfg, m, p, h).err();
    assert_eq!(
        r("GET", "/t/acme/customers", &[("x-api-key", "pcak_wrong")]),
        Some("invalid_api_key")
    );
    assert_eq!(
        r("GET", "/t/acme/customers", &[("x-api-key", REVOKED)]),
        Some("invalid_api_key")
    );
    // The route rules apply to keys exactly as to tokens.
    assert_eq!(
        r("GET", "/t/globex/customers", &[("x-api-key", KEY)]),
        Some("tenant_boundary")
    );
    assert_eq!(
        r("POST", "/t/acme/customers", &[("x-api-key", KEY)]),
        Some("missing_scope")
    );
    // Routes opt in; an empty `providers` means tokens only.
    assert_eq!(
        r("GET", "/admin", &[("x-api-key", KEY)]),
        Some("api_key_not_accepted")
    );
    // Never in the URL (the key is refused even when valid), never two credentials.
    assert_eq!(
        r("GET", &format!("/t/acme/customers?api_key={KEY}"), &[]),
        Some("api_key_in_query")
    );
    assert_eq!(
        r("GET", &format!("/t/acme/customers?X-API-KEY={KEY}"), &[]),
        Some("api_key_in_query")
    );
    assert_eq!(
        r(
            "GET",
            "/t/acme/customers",
            &[("x-api-key", KEY), ("x-api-key", KEY)]
        ),
        Some("multiple_credentials")
    );
    assert_eq!(
        r(
            "GET",
            "/t/acme/customers",
            &[("x-api-key", KEY), ("authorization", "Bearer x.y.z")]
        ),
        Some("multiple_credentials")
    );
    // Without a key, the bearer token path is unchanged.
    assert_eq!(r("GET", "/t/acme/customers", &[]), Some("missing_token"));
}

#[test]
fn bad_key_entries_name_the_field() {
    let err = |k: Value| {
        AuthnConfig::from_value(json!({
        "providers": [{"name": "main", "issuer": "https://idp", "algorithms": ["HS256"],
                       "jwks": {"keys": [{"kty": "oct", "k": "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI"}]}}],
        "api_keys": {"keys": [k]},
        "routes": []
    })).unwrap_err().to_string()
    };
    assert!(
        err(json!({"id": "a", "sha256": "abc", "app": "x"})).contains("api_keys.keys[0].sha256")
    );
    assert!(
        err(json!({"id": "a", "sha256": sha256_hex("k"), "app": "x", "key": "k"}))
            .contains("unknown field")
    );
    let dup = AuthnConfig::from_value(json!({
        "providers": [{"name": "main", "issuer": "https://idp", "algorithms": ["HS256"],
                       "jwks": {"keys": [{"kty": "oct", "k": "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI"}]}}],
        "api_keys": {"keys": [{"id": "a", "sha256": sha256_hex("k"), "app": "x"}, {"id": "b", "sha256": sha256_hex("k"), "app": "y"}]},
        "routes": []
    })).unwrap_err().to_string();
    assert!(dup.contains("same digest"), "{dup}");
}

#[test]
fn a_hundred_thousand_keys_compile_and_each_is_found() {
    let n = 100_000;
    let keys = bulk_keys(n);
    let cfg = config(keys);
    assert_eq!(cfg.api_keys.as_ref().unwrap().len(), n + 1);
    for i in [0, 1, 4_242, 99_999] {
        let id = cfg
            .api_keys
            .as_ref()
            .unwrap()
            .lookup(&format!("pcak_bulk_{i}"))
            .unwrap();
        assert_eq!(id.app.as_deref(), Some(format!("app{i}").as_str()));
    }
    assert!(cfg
        .api_keys
        .as_ref()
        .unwrap()
        .lookup("pcak_bulk_100000")
        .is_none());
}

/// The keys of [`config`] and `extra`, as `portcullis render` carries them: one table.
fn table_config_bytes(extra: Vec<Value>) -> Vec<u8> {
    use portcullis_authn::config::RawApiKey;
    use portcullis_authn::keytable::{to_text, KeyTable};
    let keys: Vec<RawApiKey> = keys(extra)
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let table = to_text(&KeyTable::encode(&keys).unwrap());
    document(json!({"table": table})).to_string().into_bytes()
}

#[test]
fn the_table_form_decides_exactly_as_the_list_form() {
    let list = config(vec![]);
    let table = AuthnConfig::from_owned(table_config_bytes(vec![])).unwrap();
    assert_eq!(table.api_keys.as_ref().unwrap().len(), 1);
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        ("GET", "/t/acme/customers", &[("x-api-key", KEY)]),
        ("GET", "/t/acme/customers", &[("x-api-key", REVOKED)]),
        ("GET", "/t/acme/customers", &[("x-api-key", "pcak_wrong")]),
        ("GET", "/t/globex/customers", &[("x-api-key", KEY)]),
        ("POST", "/t/acme/customers", &[("x-api-key", KEY)]),
        ("GET", "/admin", &[("x-api-key", KEY)]),
    ];
    for (m, p, h) in cases {
        assert_eq!(run(&table, m, p, h), run(&list, m, p, h), "{m} {p} {h:?}");
    }
    let id = run(&table, "GET", "/t/acme/customers", &[("x-api-key", KEY)]).unwrap();
    assert_eq!(id.issuer.as_deref(), Some("widget-1"));
    assert_eq!(id.tier.as_deref(), Some("standard"));
}

#[test]
fn keys_and_table_together_or_a_damaged_table_are_config_errors() {
    let mut doc: Value = serde_json::from_slice(&table_config_bytes(vec![])).unwrap();
    doc["api_keys"]["keys"] = json!([]);
    let e = AuthnConfig::from_bytes(doc.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("api_keys.table") && e.contains("not both"),
        "{e}"
    );
    let mut doc: Value = serde_json::from_slice(&table_config_bytes(vec![])).unwrap();
    let text = doc["api_keys"]["table"].as_str().unwrap().to_string();
    for (damaged, why) in [
        (format!("{text}="), "base64"),
        (text[..text.len() - 8].to_string(), "announces"),
        (format!("A{}", &text[1..]), "magic"),
    ] {
        doc["api_keys"]["table"] = json!(damaged);
        let e = AuthnConfig::from_owned(doc.to_string().into_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_keys.table") && e.contains(why), "{e}");
    }
}

#[test]
fn a_hundred_thousand_keys_in_table_form_load_in_about_their_own_size() {
    let n = 100_000;
    let keys = bulk_keys(n);
    let bytes = table_config_bytes(keys);
    let config_len = bytes.len();
    let cfg = AuthnConfig::from_owned(bytes).unwrap();
    let keys = cfg.api_keys.as_ref().unwrap();
    assert_eq!(keys.len(), n + 1);
    // Three quarters of the base64 text: the table is the configuration buffer, decoded.
    assert!(
        keys.table_size() * 4 < config_len * 3,
        "{}",
        keys.table_size()
    );
    assert!(keys.table_size() < 64 * n, "{}", keys.table_size());
    for i in [0, 1, 4_242, 99_999] {
        let id = keys.lookup(&format!("pcak_bulk_{i}")).unwrap();
        assert_eq!(id.app.as_deref(), Some(format!("app{i}").as_str()));
        assert_eq!(id.issuer.as_deref(), Some(format!("k{i}").as_str()));
        assert_eq!(
            id.tenant.as_deref(),
            Some(format!("t{}", i % 1000).as_str())
        );
    }
    assert!(keys.lookup("pcak_bulk_100000").is_none());
}
