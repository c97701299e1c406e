//! The app catalog against real Envoy: the demo chain with `policies/catalog.yaml` inlined into
//! authn as `portcullis render` does, plus one API key of an app the catalog does not list.
//! Unknown and suspended apps are refused whichever credential they bring; an admitted app
//! keeps only its allowed scopes, is rate-limited as its catalog tier, and sees unmasked only
//! the data classes it is granted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_tests::harness::{self, claims, rs256, Gateway, GatewayOptions};
use portcullis_tests::http::{Request, Response};
use serde_json::{json, Value};
use std::sync::OnceLock;

/// A key issued to an app that was never registered (only this test's gateway knows it).
const ROGUE_KEY: &str = "pcak_catalogTestRogueWidgetKey000000000000000000";

fn gw() -> Option<&'static Gateway> {
    static G: OnceLock<Option<Gateway>> = OnceLock::new();
    G.get_or_init(|| {
        let mut policies = harness::demo_policies();
        assert!(
            policies.authn["catalog"]["apps"].is_array(),
            "the demo policies carry the catalog"
        );
        policies.authn["api_keys"]["keys"]
            .as_array_mut()
            .unwrap()
            .push(
                json!({"id": "rogue-1", "app": "rogue-widget", "tenant": "acme",
                         "scopes": ["customers:read"],
                         "sha256": portcullis_cli::apikey::sha256_hex(ROGUE_KEY)}),
            );
        Gateway::start(GatewayOptions {
            policies,
            ..GatewayOptions::default()
        })
    })
    .as_ref()
}

macro_rules! gateway {
    () => {
        match gw() {
            Some(g) => (g, g.log_on_failure()),
            None => return,
        }
    };
}

const LIST: &str = "/api/v1/tenants/acme/customers";

fn token(app: Option<&str>, tenant: &str, scope: &str) -> String {
    let mut c = claims(tenant, scope);
    match app {
        Some(a) => c["client_id"] = json!(a),
        None => {
            c.as_object_mut().unwrap().remove("client_id");
        }
    }
    rs256(&c)
}

fn suspended_key() -> String {
    std::fs::read_to_string(
        harness::repo_root().join("policies/demo-keys/demo-api-key-suspended.txt"),
    )
    .unwrap()
    .trim()
    .to_string()
}

/// A 403 of authn in the shared problem+json shape, with no challenge (the credential itself
/// is fine) and nothing of the request echoed; the upstream never saw the request.
fn assert_refused(g: &Gateway, req: Request, reason: &str, secret: &str) {
    let id = harness::test_id(reason);
    let r: Response = g.send(&req.header("x-test-id", &id));
    let body = r.body_str();
    assert_eq!(r.status, 403, "want 403 {reason}: {body}");
    assert_eq!(r.header("x-portcullis-reason"), Some(reason), "{body}");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("www-authenticate"), None);
    let v = r.json();
    assert_eq!(v["reason"], reason);
    assert_eq!(v["filter"], "authn");
    assert_eq!(v["status"], 403);
    assert!(
        !body.contains(&secret[..secret.len().min(40)]),
        "credential echoed"
    );
    assert!(
        g.upstream_saw(&id).is_none(),
        "refused request reached the upstream"
    );
}

#[test]
fn unknown_apps_are_refused_by_token_and_by_api_key() {
    let (g, _log) = gateway!();
    let t = token(Some("rogue-app"), "acme", "customers:read");
    assert_refused(g, Request::get(LIST).bearer(&t), "app_not_registered", &t);
    assert_refused(
        g,
        Request::get(LIST).header("x-api-key", ROGUE_KEY),
        "app_not_registered",
        ROGUE_KEY,
    );
    assert!(
        g.stat("wasmcustom.portcullis.authn.denied.app_not_registered")
            .unwrap_or(0)
            >= 2,
        "denials counted:\n{}",
        g.prometheus()
    );
}

#[test]
fn suspended_apps_are_refused_by_token_and_by_api_key() {
    let (g, _log) = gateway!();
    let t = token(Some("legacy-exporter"), "acme", "customers:read");
    assert_refused(g, Request::get(LIST).bearer(&t), "app_suspended", &t);
    let key = suspended_key();
    assert_refused(
        g,
        Request::get(LIST).header("x-api-key", &key),
        "app_suspended",
        &key,
    );
}

#[test]
fn registered_apps_and_callers_without_an_app_pass() {
    let (g, _log) = gateway!();
    let key =
        std::fs::read_to_string(harness::repo_root().join("policies/demo-keys/demo-api-key.txt"))
            .unwrap();
    let r = g.send(&Request::get(LIST).header("x-api-key", key.trim()));
    assert_eq!(r.status, 200, "{}", r.body_str());
    // An end-user token without an app claim: the demo catalog does not require one.
    let r = g.send(&Request::get(LIST).bearer(&token(None, "acme", "customers:read")));
    assert_eq!(r.status, 200, "{}", r.body_str());
}

const PII_SCOPES: &str = "customers:read pii:email:read pii:card:read pii:ssn:read";

#[test]
fn an_app_sees_its_granted_class_unmasked_and_other_classes_masked() {
    let (g, _log) = gateway!();
    // The first-party app is granted every class: the raw values.
    let raw = g.send(&Request::get(LIST).bearer(&token(Some("crm-sync"), "acme", PII_SCOPES)));
    assert_eq!(raw.status, 200, "{}", raw.body_str());
    let raw: Value = raw.json()["customers"][0].clone();
    let (email, card, ssn) = (
        raw["email"].as_str().unwrap().to_string(),
        raw["card_number"].as_str().unwrap().to_string(),
        raw["ssn"].as_str().unwrap().to_string(),
    );
    assert!(!card.contains('*') && !ssn.contains('*'), "{raw}");
    // The partner portal holds the same scopes, but only the contact class.
    let id = harness::test_id("partner");
    let r = g.send(
        &Request::get(LIST)
            .bearer(&token(Some("partner-portal"), "acme", PII_SCOPES))
            .header("x-test-id", &id),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = &r.json()["customers"][0];
    assert_eq!(seen["email"], email.as_str(), "contact: granted, unmasked");
    let masked_card = seen["card_number"].as_str().unwrap();
    assert_ne!(masked_card, card, "financial: not granted, masked");
    assert!(
        masked_card.ends_with(&card[card.len() - 4..]),
        "{masked_card}"
    );
    assert_ne!(seen["ssn"].as_str().unwrap(), ssn, "government-id: masked");
    let body = r.body_str();
    assert!(!body.contains(&card) && !body.contains(&ssn), "{body}");
    // The scope the catalog does not allow the app never reaches the upstream either.
    let rec = g.upstream_saw(&id).expect("reached the upstream");
    let scopes: Vec<&str> = rec["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h[0] == "x-portcullis-scopes")
        .filter_map(|h| h[1].as_str())
        .collect();
    assert_eq!(
        scopes,
        ["customers:read pii:email:read pii:card:read"],
        "{rec}"
    );
}

#[test]
fn an_app_is_rate_limited_as_its_catalog_tier() {
    let (g, _log) = gateway!();
    // The token says nothing of a tier; the catalog puts the partner portal on `sandbox`.
    let t = token(Some("partner-portal"), "cat-tier", "customers:read");
    let r = g.send(&Request::get("/api/v1/tenants/cat-tier/customers").bearer(&t));
    let policy = r.header("ratelimit-policy").unwrap_or_default().to_string();
    assert!(policy.contains("\"tenant\";q=20;"), "{} {policy}", r.status);
    let t = token(Some("crm-sync"), "cat-tier2", "customers:read");
    let r = g.send(&Request::get("/api/v1/tenants/cat-tier2/customers").bearer(&t));
    let policy = r.header("ratelimit-policy").unwrap_or_default().to_string();
    assert!(
        policy.contains("\"tenant\";q=200;"),
        "{} {policy}",
        r.status
    );
}
