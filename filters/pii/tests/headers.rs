//! Header masking, natively: response headers on masked routes (and request headers on egress
//! routes) go through the profile's header rules and detectors, except the structural headers
//! the gateway relies on; repeated headers are masked value by value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_core::headers::HeaderMap;
use portcullis_pii::config::PiiConfig;
use portcullis_pii::decide::{self, Cause, HeaderMasking};
use portcullis_pii::mask::Caller;
use serde_json::json;

const KEY: &str = "YWNtZS1rZXktMDEyMzQ1Njc4OWFiY2RlZg";

fn config() -> PiiConfig {
    PiiConfig::from_value(json!({
        "tokenization": {"tenant_keys": {"acme": KEY}},
        "exempt_headers": ["X-Order-Id"],
        "rules": [
            {"name": "customer_header", "headers": ["X-Customer-Email"], "action": "tokenize",
             "unmask_scopes": ["pii:email:read"]},
            {"name": "debug", "headers": ["x-debug-dump"], "action": "drop"},
            {"name": "mail", "detector": "email", "action": {"type": "partial", "keep_domain": true},
             "unmask_scopes": ["pii:email:read"]},
            {"name": "ssn", "detector": "ssn", "action": {"type": "redact", "placeholder": "[SSN]"}},
            {"name": "card", "detector": "payment_card", "action": {"type": "partial", "keep_last": 4}}
        ],
        "profiles": {"p": ["customer_header", "debug", "mail", "ssn", "card"]},
        "routes": [
            {"name": "egress", "match": {"prefix": "/out"}, "profile": "p", "direction": "request"},
            {"name": "r", "match": {"prefix": "/"}, "profile": "p"}
        ]
    }))
    .unwrap()
}

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    HeaderMap::from_pairs(pairs)
}

fn mask(path: &str, scopes: &[&str], headers: &[(&str, &str)], response: bool) -> HeaderMasking {
    let cfg = config();
    let route = decide::route_for(&cfg, "GET", path).unwrap().1.clone();
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let caller = Caller {
        scopes: &scopes,
        key: cfg.keys.for_tenant(Some("acme")),
    };
    decide::mask_headers(&cfg, &route, caller, &h(headers), response).unwrap()
}

fn replaced<'a>(m: &'a HeaderMasking, name: &str) -> Option<&'a [String]> {
    m.replace
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

#[test]
fn response_headers_carrying_personal_data_are_masked() {
    let m = mask(
        "/x",
        &[],
        &[
            (":status", "302"),
            (
                "location",
                "https://crm.example/find?ssn=123-45-6789&email=ada%40acme.example.com",
            ),
            (
                "content-disposition",
                "attachment; filename=\"ada@acme.example.com.csv\"",
            ),
            ("x-debug-user", "ada@acme.example.com"),
            ("set-cookie", "last_card=4111111111111111; Path=/"),
            ("set-cookie", "theme=dark; Path=/"),
            (
                "link",
                "<https://crm.example/u/grace@acme.example.com>; rel=\"author\"",
            ),
            ("x-customer-email", "ada@acme.example.com"),
            ("x-debug-dump", "anything at all"),
        ],
        true,
    );
    assert_eq!(
        replaced(&m, "location").unwrap(),
        ["https://crm.example/find?ssn=[SSN]&email=***%40acme.example.com"]
    );
    assert_eq!(
        replaced(&m, "content-disposition").unwrap(),
        ["attachment; filename=\"***@acme.example.com.csv\""]
    );
    assert_eq!(
        replaced(&m, "x-debug-user").unwrap(),
        ["***@acme.example.com"]
    );
    // Repeated headers: each value masked or kept, none lost, order kept.
    assert_eq!(
        replaced(&m, "set-cookie").unwrap(),
        ["last_card=************1111; Path=/", "theme=dark; Path=/"]
    );
    assert!(replaced(&m, "link").unwrap()[0].contains("***@acme.example.com"));
    // Header rules: the whole value, by the rule's action (a keyed token; drop removes it).
    let token = &replaced(&m, "x-customer-email").unwrap()[0];
    assert!(token.starts_with("tok_"), "{token}");
    assert_eq!(replaced(&m, "x-debug-dump").unwrap(), Vec::<String>::new());
    assert_eq!(m.report.total(), 8);
    assert!(m
        .report
        .pointers
        .iter()
        .all(|p| p.starts_with("/header:") && !p.contains("ada")));
}

#[test]
fn structural_exempt_and_revealed_headers_are_left_alone() {
    let m = mask(
        "/x",
        &[],
        &[
            (":status", "200"),
            ("content-type", "text/plain; name=ada@acme.example.com"),
            ("date", "Tue, 15 Nov 1994 08:12:31 GMT"),
            ("x-request-id", "4111111111111111"),
            ("x-order-id", "4111111111111111"),
            ("x-envoy-upstream-service-time", "4111111111111111"),
            ("x-portcullis-hold-response", "1"),
            ("server", "demo"),
        ],
        true,
    );
    assert!(m.replace.is_empty() && m.report.total() == 0, "{m:?}");
    // A scope that reveals the rule reveals it in headers too.
    let m = mask(
        "/x",
        &["pii:email:read"],
        &[
            ("x-debug-user", "ada@acme.example.com"),
            ("x-customer-email", "ada@acme.example.com"),
        ],
        true,
    );
    assert!(m.replace.is_empty(), "{m:?}");
    assert_eq!(m.report.revealed.iter().sum::<u32>(), 2);
    // Response routes leave request headers alone, and the other way round.
    let m = mask(
        "/x",
        &[],
        &[("x-debug-user", "ada@acme.example.com")],
        false,
    );
    assert!(m.replace.is_empty());
    let m = mask(
        "/out/x",
        &[],
        &[("x-debug-user", "ada@acme.example.com")],
        true,
    );
    assert!(m.replace.is_empty());
}

#[test]
fn egress_request_headers_and_the_path_are_masked_but_credentials_are_not() {
    let m = mask(
        "/out/x",
        &[],
        &[
            (":method", "POST"),
            (":path", "/out/contacts?email=ada@acme.example.com"),
            (":authority", "crm.example"),
            ("authorization", "Basic YWRhQGFjbWUuZXhhbXBsZS5jb206cHc="),
            ("x-sync-note", "for ada@acme.example.com, ssn 123-45-6789"),
        ],
        false,
    );
    assert_eq!(
        replaced(&m, ":path").unwrap(),
        ["/out/contacts?email=***@acme.example.com"]
    );
    assert_eq!(
        replaced(&m, "x-sync-note").unwrap(),
        ["for ***@acme.example.com, ssn [SSN]"]
    );
    assert!(replaced(&m, "authorization").is_none());
    assert!(replaced(&m, ":authority").is_none());
}

#[test]
fn a_header_rule_without_a_key_fails_closed_and_bad_names_are_refused() {
    let cfg = config();
    let route = decide::route_for(&cfg, "GET", "/x").unwrap().1.clone();
    let nobody = Caller {
        scopes: &[],
        key: None,
    };
    assert_eq!(
        decide::mask_headers(
            &cfg,
            &route,
            nobody,
            &h(&[("x-customer-email", "ada@acme.example.com")]),
            true
        ),
        Err(Cause::NoTokenKey)
    );
    let err = |rule: serde_json::Value| {
        PiiConfig::from_value(json!({
            "rules": [rule], "profiles": {"p": []},
            "routes": [{"name": "r", "match": {"prefix": "/"}, "profile": "p"}]
        }))
        .unwrap_err()
        .to_string()
    };
    assert!(
        err(json!({"name": "x", "headers": ["bad header"], "action": "redact"}))
            .contains("headers[0]")
    );
    assert!(
        err(json!({"name": "x", "headers": ["x-a"], "detector": "email", "action": "redact"}))
            .contains("not both")
    );
    assert!(err(json!({"name": "x", "fields": ["$.a"], "action": {"type": "redact", "placeholder": "a\r\nb"}}))
        .contains("control characters"));
}
