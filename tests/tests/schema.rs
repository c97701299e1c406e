//! schema against real Envoy: authn → schema → buffer → router, with the demo upstream
//! recording exactly what reached it. A rejected request must never reach the upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_tests::harness::{self, demo_token, Gateway, GatewayOptions};
use portcullis_tests::http::{Request, Response};
use serde_json::{json, Value};
use std::sync::OnceLock;

const CREATE: &str = "/api/v1/tenants/acme/customers";

fn gw() -> Option<&'static Gateway> {
    static G: OnceLock<Option<Gateway>> = OnceLock::new();
    G.get_or_init(|| Gateway::start(GatewayOptions::default()))
        .as_ref()
}

/// A gateway whose create route accepts any JSON (`true` schema) under small, round limits, so
/// each limit can be hit exactly; the export route allows large bodies for the nesting test, and
/// no body at all.
fn limits_gw() -> Option<&'static Gateway> {
    static G: OnceLock<Option<Gateway>> = OnceLock::new();
    G.get_or_init(|| {
        let mut policies = harness::demo_policies();
        policies.schema = json!({
            "routes": [
                {"name": "create", "match": {"methods": ["POST"], "template": "/api/v1/tenants/{tenant}/customers"},
                 "request": {"schema": true, "limits": {"max_body_bytes": 200, "max_depth": 4, "max_array_len": 5,
                                                         "max_string_len": 10, "max_object_members": 3}}},
                {"name": "export", "match": {"methods": ["POST"], "template": "/api/v1/tenants/{tenant}/reports/export"},
                 "request": {"schema": true, "body": "optional", "limits": {"max_body_bytes": 262144}}}
            ]
        });
        Gateway::start(GatewayOptions { policies, ..GatewayOptions::default() })
    })
    .as_ref()
}

macro_rules! gateway {
    ($f:ident) => {
        match $f() {
            Some(g) => (g, g.log_on_failure()),
            None => return,
        }
    };
}

/// A token allowed on both body routes (export also needs the `analyst` role).
fn writer_token() -> String {
    let mut c = harness::claims("acme", "customers:write reports:export");
    c["roles"] = json!(["analyst"]);
    harness::rs256(&c)
}

fn post(g: &Gateway, path: &str, body: &[u8], extra: &[(&str, &str)]) -> (Response, String) {
    let id = harness::test_id("schema");
    let mut r = Request::post(path, body.to_vec())
        .bearer(&writer_token())
        .header("x-test-id", &id);
    if !extra.iter().any(|(k, _)| *k == "content-type") {
        r = r.header("content-type", "application/json");
    }
    if !extra.iter().any(|(k, _)| *k == "idempotency-key") {
        r = r.header("idempotency-key", "req-12345678");
    }
    for (k, v) in extra {
        r = r.header(k, v);
    }
    (g.send(&r), id)
}

/// Asserts a schema denial and that the upstream never saw the request.
fn assert_rejected(g: &Gateway, (r, id): &(Response, String), status: u16, reason: &str) -> Value {
    assert_eq!(r.status, status, "want {status} {reason}: {}", r.body_str());
    assert_eq!(
        r.header("x-portcullis-reason"),
        Some(reason),
        "{}",
        r.body_str()
    );
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let v = r.json();
    assert_eq!(v["filter"], "schema");
    assert!(
        g.upstream_saw(id).is_none(),
        "a rejected request ({reason}) reached the upstream"
    );
    v
}

#[test]
fn valid_body_reaches_the_upstream_unchanged() {
    let (g, _log) = gateway!(gw);
    let body = br#"{"name":"Ada","email":"ada@acme.example.com","seats":3,"address":{"city":"London","country":"GB"},"tags":["vip"]}"#;
    let (r, id) = post(g, CREATE, body, &[]);
    assert_eq!(r.status, 201, "{}", r.body_str());
    let seen = g.upstream_saw(&id).expect("reached the upstream");
    assert_eq!(seen["body"].as_str().unwrap().as_bytes(), body);
    // Chunked, the same.
    let id = harness::test_id("chunked");
    let r = g.send(
        &Request::post(CREATE, body.to_vec())
            .chunked()
            .bearer(&demo_token("acme", "customers:write"))
            .header("content-type", "application/json; charset=utf-8")
            .header("idempotency-key", "req-12345678")
            .header("x-test-id", &id),
    );
    assert_eq!(r.status, 201, "{}", r.body_str());
    assert_eq!(
        g.upstream_saw(&id).unwrap()["body"]
            .as_str()
            .unwrap()
            .as_bytes(),
        body
    );
}

#[test]
fn schema_violations_name_pointers_and_keywords_never_values() {
    let (g, _log) = gateway!(gw);
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            r#"{"name":"A","email":"a@b.io","tenant_id":"globex"}"#,
            "",
            "additionalProperties",
        ),
        (
            r#"{"name":"A","email":"a@b.io","seats":"3"}"#,
            "/seats",
            "type",
        ),
        (
            r#"{"name":"A","email":"a@b.io","tier":"platinum"}"#,
            "/tier",
            "enum",
        ),
        (
            r#"{"name":"A","email":"a@b.io","seats":10001}"#,
            "/seats",
            "maximum",
        ),
        (
            r#"{"name":"A","email":"a@b.io","phone":"555-SECRET-99"}"#,
            "/phone",
            "pattern",
        ),
        (r#"{"name":"A","email":"not-an-email"}"#, "/email", "format"),
        (r#"{"name":"A"}"#, "", "required"),
        (
            r#"{"name":"A","email":"a@b.io","address":{"city":"X","country":"gb"}}"#,
            "/address/country",
            "pattern",
        ),
    ];
    for (body, pointer, keyword) in cases {
        let res = post(g, CREATE, body.as_bytes(), &[]);
        let v = assert_rejected(g, &res, 422, "schema_violation");
        let errors = v["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["pointer"] == pointer && e["keyword"] == keyword),
            "{body}: want {pointer} {keyword}, got {errors:?}"
        );
        let text = res.0.body_str();
        for secret in [
            "globex",
            "platinum",
            "555-SECRET-99",
            "not-an-email",
            "10001",
        ] {
            assert!(
                !text.contains(secret),
                "offending value `{secret}` echoed: {text}"
            );
        }
    }
}

#[test]
fn required_headers_and_media_types() {
    let (g, _log) = gateway!(gw);
    let body = br#"{"name":"A","email":"a@b.io"}"#;
    // Missing idempotency key: build the request by hand (post() adds one).
    let id = harness::test_id("nohdr");
    let r = g.send(
        &Request::post(CREATE, body.to_vec())
            .bearer(&demo_token("acme", "customers:write"))
            .header("content-type", "application/json")
            .header("x-test-id", &id),
    );
    assert_rejected(g, &(r, id), 400, "missing_header");
    assert_rejected(
        g,
        &post(g, CREATE, body, &[("idempotency-key", "bad key!")]),
        400,
        "invalid_header",
    );
    assert_rejected(
        g,
        &post(g, CREATE, body, &[("content-type", "text/plain")]),
        415,
        "unsupported_media_type",
    );
    assert_rejected(
        g,
        &post(
            g,
            CREATE,
            body,
            &[("content-type", "application/x-www-form-urlencoded")],
        ),
        415,
        "unsupported_media_type",
    );
    let (r, _) = post(
        g,
        CREATE,
        body,
        &[("content-type", "application/merge-patch+json")],
    );
    assert_eq!(
        r.status,
        201,
        "+json media types are accepted: {}",
        r.body_str()
    );
}

#[test]
fn malformed_bodies_are_refused_before_the_schema() {
    let (g, _log) = gateway!(gw);
    let cases: Vec<(&[u8], u16, &str)> = vec![
        (br#"{"name":"A","email":"a@b.io""#, 400, "malformed_json"),
        (
            br#"{"name":"A","name":"B","email":"a@b.io"}"#,
            400,
            "duplicate_key",
        ),
        (
            br#"{"name":"A","n\u0061me":"B","email":"a@b.io"}"#,
            400,
            "duplicate_key",
        ),
        (
            b"{\"name\":\"\xff\xfe\",\"email\":\"a@b.io\"}",
            400,
            "invalid_utf8",
        ),
        (
            br#"{"name":"\ud800","email":"a@b.io"}"#,
            400,
            "lone_surrogate",
        ),
        (
            br#"{"name":"A","email":"a@b.io","seats":1e999}"#,
            400,
            "number_out_of_range",
        ),
        (b"", 400, "missing_body"),
    ];
    for (body, status, reason) in cases {
        assert_rejected(g, &post(g, CREATE, body, &[]), status, reason);
    }
    let big = format!(r#"{{"name":"{}","email":"a@b.io"}}"#, "x".repeat(20_000));
    assert_rejected(
        g,
        &post(g, CREATE, big.as_bytes(), &[]),
        413,
        "body_too_large",
    );
}

#[test]
fn a_get_without_body_passes_where_no_schema_applies() {
    let (g, _log) = gateway!(gw);
    let r = g.send(&Request::get(CREATE).bearer(&demo_token("acme", "customers:read")));
    assert_eq!(r.status, 200, "{}", r.body_str());
}

#[test]
fn each_limit_holds_exactly_at_its_boundary() {
    let (g, _log) = gateway!(limits_gw);
    let ok = |body: &str| {
        let (r, id) = post(g, CREATE, body.as_bytes(), &[]);
        assert_eq!(r.status, 201, "{body} should pass: {}", r.body_str());
        assert!(g.upstream_saw(&id).is_some());
    };
    ok(r#"{"a":{"b":{"c":[1]}}}"#);
    assert_rejected(
        g,
        &post(g, CREATE, br#"{"a":{"b":{"c":[[1]]}}}"#, &[]),
        400,
        "too_deep",
    );
    ok(r#"{"a":[1,2,3,4,5]}"#);
    assert_rejected(
        g,
        &post(g, CREATE, br#"{"a":[1,2,3,4,5,6]}"#, &[]),
        400,
        "array_too_long",
    );
    ok(r#"{"a":"0123456789"}"#);
    assert_rejected(
        g,
        &post(g, CREATE, br#"{"a":"0123456789A"}"#, &[]),
        400,
        "string_too_long",
    );
    ok(r#"{"a":1,"b":2,"c":3}"#);
    assert_rejected(
        g,
        &post(g, CREATE, br#"{"a":1,"b":2,"c":3,"d":4}"#, &[]),
        400,
        "too_many_members",
    );
    let exact = format!("{{\"a\":1}}{}", " ".repeat(200 - 7));
    assert_eq!(exact.len(), 200);
    ok(&exact);
    let over = format!("{exact} ");
    assert_rejected(
        g,
        &post(g, CREATE, over.as_bytes(), &[]),
        413,
        "body_too_large",
    );
    // The same over-limit body sent chunked (no content-length to refuse early).
    let id = harness::test_id("chunked-over");
    let r = g.send(
        &Request::post(CREATE, over.into_bytes())
            .chunked()
            .bearer(&demo_token("acme", "customers:write"))
            .header("content-type", "application/json")
            .header("x-test-id", &id),
    );
    assert_rejected(g, &(r, id), 413, "body_too_large");
}

/// A body is judged by its length as it arrives, never by the `content-length` the client
/// announced: an empty body is no body however it is sent, and its media type is only judged
/// once there is one.
#[test]
fn an_empty_body_is_no_body_however_it_is_sent() {
    let (g, _log) = gateway!(limits_gw);
    const EXPORT: &str = "/api/v1/tenants/acme/reports/export";
    let send = |path: &str, body: &[u8], chunked: bool, content_type: &str| {
        let id = harness::test_id("empty");
        let mut r = Request::post(path, body.to_vec())
            .bearer(&writer_token())
            .header("content-type", content_type)
            .header("x-test-id", &id);
        if chunked {
            r = r.chunked();
        }
        (g.send(&r), id)
    };
    for chunked in [false, true] {
        // Required: missing, whatever the declared type.
        for ct in ["application/json", "text/plain"] {
            assert_rejected(g, &send(CREATE, b"", chunked, ct), 400, "missing_body");
        }
        // Optional: an empty body of any declared type passes; one byte of the wrong type does not.
        let (r, id) = send(EXPORT, b"", chunked, "text/plain");
        assert!(
            r.status < 400 && g.upstream_saw(&id).is_some(),
            "an empty optional body passes (chunked: {chunked}): {} {}",
            r.status,
            r.body_str()
        );
        assert_rejected(
            g,
            &send(EXPORT, b"1", chunked, "text/plain"),
            415,
            "unsupported_media_type",
        );
        // Over the limit and of the wrong type: the type is refused first, as before the body.
        let big = vec![b' '; 300];
        assert_rejected(
            g,
            &send(CREATE, &big, chunked, "text/plain"),
            415,
            "unsupported_media_type",
        );
    }
}

#[test]
fn a_hundred_thousand_open_brackets_are_refused_without_a_trap() {
    let (g, _log) = gateway!(limits_gw);
    let body = "[".repeat(100_000);
    assert_rejected(
        g,
        &post(
            g,
            "/api/v1/tenants/acme/reports/export",
            body.as_bytes(),
            &[],
        ),
        400,
        "too_deep",
    );
    // The VM survived: the next request is served normally.
    let (r, _) = post(g, CREATE, br#"{"a":1}"#, &[]);
    assert_eq!(r.status, 201);
    assert!(
        !g.log().contains("panicked"),
        "the filter panicked:\n{}",
        g.log_tail()
    );
}

#[test]
fn metrics_count_validated_and_rejected_per_reason_and_route() {
    let (g, _log) = gateway!(gw);
    let before = g
        .stat("wasmcustom.portcullis.schema.route.create-customer.validated")
        .unwrap_or(0);
    let (r, _) = post(g, CREATE, br#"{"name":"A","email":"a@b.io"}"#, &[]);
    assert_eq!(r.status, 201);
    assert!(
        g.stat("wasmcustom.portcullis.schema.route.create-customer.validated")
            .unwrap_or(0)
            > before
    );
    let rejected = g
        .stat("wasmcustom.portcullis.schema.rejected.duplicate_key")
        .unwrap_or(0);
    post(g, CREATE, br#"{"a":1,"a":2}"#, &[]);
    assert!(
        g.stat("wasmcustom.portcullis.schema.rejected.duplicate_key")
            .unwrap_or(0)
            > rejected
    );
}

/// Response contracts: the demo record passes; a contract the upstream breaks gives 502 in
/// enforce mode (nothing of the original body reaches the client) and passes in report mode.
#[test]
fn response_contracts_report_or_enforce() {
    let (g, _log) = gateway!(gw);
    let t = demo_token("acme", "customers:read");
    let ok = g.send(&Request::get("/api/v1/tenants/acme/customers/c-1001").bearer(&t));
    assert_eq!(ok.status, 200, "{}", ok.body_str());
    assert_eq!(ok.json()["id"], "c-1001");
    assert!(
        ok.header("x-portcullis-hold-response").is_none(),
        "the internal hold header never leaves Envoy"
    );

    let mut policies = harness::demo_policies();
    // The upstream's records carry `ssn`, `owner`…: a contract without them is broken by it.
    let strict = json!({"type": "object", "additionalProperties": false,
                        "properties": {"id": {"type": "string"}, "name": {"type": "string"}}});
    policies.schema["routes"] = json!([
        {"name": "strict-enforce", "match": {"methods": ["GET"], "template": "/api/v1/tenants/{tenant}/customers/{id}"},
         "response": {"schema": strict, "mode": "enforce"}},
        {"name": "strict-report", "match": {"methods": ["GET"], "template": "/api/v1/tenants/{tenant}/customers"},
         "response": {"schema": strict, "mode": "report"}}
    ]);
    let Some(g2) = Gateway::start(GatewayOptions {
        policies,
        concurrency: 1,
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _log2 = g2.log_on_failure();
    let r = g2.send(&Request::get("/api/v1/tenants/acme/customers/c-1001").bearer(&t));
    assert_eq!(r.status, 502, "{}", r.body_str());
    assert_eq!(
        r.header("x-portcullis-reason"),
        Some("response_contract_violation")
    );
    let body = r.body_str();
    assert!(body.contains("additionalProperties"), "{body}");
    for leaked in ["123-45-678", "4111111111111111", "rep-"] {
        assert!(
            !body.contains(leaked),
            "upstream data leaked in the 502: {body}"
        );
    }
    // Report mode: the response goes out, the violation is counted.
    let r = g2.send(&Request::get("/api/v1/tenants/acme/customers").bearer(&t));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tenant"], "acme");
    assert!(
        g2.stat("wasmcustom.portcullis.schema.rejected.response_contract_violation")
            .unwrap_or(0)
            >= 2
    );
    // The connection survives: a keep-alive request after the 502 still works.
    let mut conn = portcullis_tests::http::Conn::connect(g2.addr).unwrap();
    assert_eq!(
        conn.send(&Request::get("/api/v1/tenants/acme/customers/c-1002").bearer(&t))
            .unwrap()
            .status,
        502
    );
    assert_eq!(conn.send(&Request::get("/healthz")).unwrap().status, 200);
}
