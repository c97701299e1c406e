//! Data classes: a value is revealed only when the caller holds an unmasking scope *and* the
//! app catalog grants the caller's app the rule's class (`PiiConfig::caller_scopes`), natively
//! through the masking engine the filter runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_pii::config::PiiConfig;
use portcullis_pii::json;
use portcullis_pii::mask::{self, Caller};
use serde_json::{json, Value};

fn config() -> PiiConfig {
    PiiConfig::from_value(json!({
        "rules": [
            {"name": "email", "fields": ["$..email"], "action": "redact",
             "unmask_scopes": ["pii:read"], "data_class": "contact"},
            {"name": "card", "fields": ["$..card"], "action": "redact",
             "unmask_scopes": ["pii:read"], "data_class": "financial"},
            {"name": "phone", "fields": ["$..phone"], "action": "redact",
             "consent": "ok", "data_class": "contact"},
            {"name": "note", "fields": ["$..note"], "action": "redact",
             "unmask_scopes": ["pii:read"]}
        ],
        "profiles": {"p": ["email", "card", "phone", "note"]},
        "routes": [{"name": "r", "match": {"prefix": "/"}, "profile": "p"}]
    }))
    .unwrap()
}

const BODY: &str = r#"{"email":"a@b.example","card":"4111","phone":"555","ok":true,"note":"n"}"#;

fn seen(cfg: &PiiConfig, scopes: &[&str], granted: Option<&[&str]>) -> Value {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let granted: Option<Vec<String>> = granted.map(|g| g.iter().map(|s| s.to_string()).collect());
    let tokens = cfg.caller_scopes(scopes, granted.as_deref());
    let caller = Caller {
        scopes: &tokens,
        key: None,
    };
    let mut doc = json::parse(BODY.as_bytes()).unwrap();
    mask::mask_json(cfg, &cfg.profiles[0], caller, &mut doc).unwrap();
    serde_json::from_slice(&doc.to_bytes()).unwrap()
}

fn revealed(v: &Value) -> Vec<&'static str> {
    let plain = [
        ("email", "a@b.example"),
        ("card", "4111"),
        ("phone", "555"),
        ("note", "n"),
    ];
    plain
        .into_iter()
        .filter(|(k, raw)| v[*k] == *raw)
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn an_unrestricted_caller_sees_what_its_scopes_allow() {
    let cfg = config();
    assert_eq!(cfg.classes, vec!["contact", "financial"]);
    assert_eq!(
        revealed(&seen(&cfg, &["pii:read"], None)),
        ["email", "card", "phone", "note"]
    );
    // Consent alone reveals the phone; scopes are still needed for the rest.
    assert_eq!(revealed(&seen(&cfg, &[], None)), ["phone"]);
}

#[test]
fn a_restricted_app_sees_only_its_classes_whatever_its_scopes() {
    let cfg = config();
    assert_eq!(
        revealed(&seen(&cfg, &["pii:read"], Some(&["contact"]))),
        ["email", "phone"]
    );
    assert_eq!(
        revealed(&seen(&cfg, &["pii:read"], Some(&["financial"]))),
        ["card"]
    );
    // Granted nothing: nothing is revealed, not even by consent, nor unclassified rules.
    assert!(revealed(&seen(&cfg, &["pii:read"], Some(&[]))).is_empty());
    // A granted class without the scope reveals nothing the scope guards.
    assert_eq!(revealed(&seen(&cfg, &[], Some(&["contact"]))), ["phone"]);
}

#[test]
fn a_scope_cannot_forge_a_class_token() {
    let cfg = config();
    let forged = format!("pii:read{}financial", '\u{1f}');
    let forged: &str = &forged;
    assert!(revealed(&seen(&cfg, &["pii:read"], Some(&[]))).is_empty());
    // Even if a scope carried the separator, the caller tokens of a restricted caller are
    // rebuilt from the classes it is granted, never taken from the scopes as they are.
    assert!(revealed(&seen(&cfg, &[forged], Some(&[]))).is_empty());
}

#[test]
fn without_classes_the_scopes_are_passed_through_untouched() {
    let cfg = PiiConfig::from_value(json!({
        "rules": [{"name": "e", "fields": ["$..e"], "action": "redact", "unmask_scopes": ["s"]}],
        "profiles": {"p": ["e"]},
        "routes": [{"name": "r", "match": {"prefix": "/"}, "profile": "p"}]
    }))
    .unwrap();
    assert_eq!(cfg.caller_scopes(vec!["s".into()], None), vec!["s"]);
    assert!(cfg.caller_scopes(vec!["s".into()], Some(&[])).is_empty());
}

#[test]
fn classes_and_scopes_with_control_characters_are_refused() {
    for rule in [
        json!({"name": "e", "fields": ["$..e"], "action": "redact", "data_class": "a\u{1f}b"}),
        json!({"name": "e", "fields": ["$..e"], "action": "redact", "unmask_scopes": ["a\u{1f}"]}),
        json!({"name": "e", "fields": ["$..e"], "action": "redact", "data_class": ""}),
    ] {
        let e = PiiConfig::from_value(json!({
            "rules": [rule], "profiles": {"p": ["e"]},
            "routes": [{"name": "r", "match": {"prefix": "/"}, "profile": "p"}]
        }))
        .unwrap_err();
        assert!(e.field.starts_with("rules[0]"), "{e}");
    }
}
