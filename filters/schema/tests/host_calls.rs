//! The host calls of one valid POST through the schema filter, counted by the fake host. In
//! Envoy a call that returns data costs about 0.8 µs (it calls back into the VM to allocate;
//! `tests/bench/hostcalls.sh`), as much as validating a few hundred bytes: the budget is pinned
//! so that a call added to the request path is a decision, not an accident. If this fails after
//! a deliberate change, update the table and say why in the commit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use portcullis_core::fake::{Edge, Gateway, Instance, Process, Request, Response};
use portcullis_schema::Schema;
use std::collections::BTreeMap;

const CONFIG: &str = r#"{"routes": [{"name": "create", "match": {"methods": ["POST"], "template": "/t/{tenant}/customers"},
  "request": {"schema": {"type": "object", "required": ["name"],
                         "properties": {"name": {"type": "string"}}}}}]}"#;

fn post(body: &[u8]) -> Request {
    let mut r = Request::get("/t/acme/customers")
        .header("content-type", "application/json")
        .header("content-length", &body.len().to_string())
        .header("accept", "*/*");
    r.method = "POST".into();
    r.body = Some(body.to_vec());
    r
}

fn gateway() -> Gateway {
    let schema = Instance::new::<Schema>("schema", CONFIG.as_bytes().to_vec());
    Gateway::new(vec![schema], 1, Edge::default(), Process::default()).unwrap()
}

fn calls(req: &Request) -> BTreeMap<String, u64> {
    let gw = gateway();
    let upstream = |_: &_| Response::json(201, "{}");
    assert_eq!(gw.send(0, req, &upstream).response.status, 201);
    gw.process.count_host_calls();
    let ex = gw.send(0, req, &upstream);
    assert_eq!(ex.response.status, 201, "{:?}", ex.decided_by);
    gw.process.host_calls()
}

#[test]
fn a_valid_body_costs_only_the_host_calls_its_decision_needs() {
    let got = calls(&post(br#"{"name": "Ada"}"#));
    let want: BTreeMap<String, u64> = [
        // The route and the media type, in one read of the header map (three reads by name
        // would be three calls). Not the clock (read only while a denial summary is pending).
        ("schema: request_headers", 1),
        ("schema: request_body", 1),
        // validated, and validated on the route.
        ("schema: increment_metric", 2),
    ]
    .iter()
    .map(|(k, n)| ((*k).to_string(), *n))
    .collect();
    assert_eq!(got, want, "host calls of one valid request changed");
}

#[test]
fn the_clock_is_read_only_while_a_denial_summary_is_pending() {
    let gw = gateway();
    let upstream = |_: &_| Response::json(201, "{}");
    // A denial opens the worker's summary window (its first line is written at once).
    assert_eq!(gw.send(0, &post(b"{}"), &upstream).response.status, 422);
    gw.process.count_host_calls();
    assert_eq!(
        gw.send(0, &post(br#"{"name": "Ada"}"#), &upstream)
            .response
            .status,
        201
    );
    assert_eq!(gw.process.host_calls().get("schema: now"), Some(&1));
}

#[test]
fn a_checked_response_reads_its_headers_once() {
    const CONTRACT: &str = r#"{"routes": [{"name": "get", "match": {"methods": ["GET"], "template": "/t/{tenant}/customers/{id}"},
      "response": {"schema": {"type": "object", "required": ["id"]}, "mode": "report"}}]}"#;
    let schema = Instance::new::<Schema>("schema", CONTRACT.as_bytes().to_vec());
    let gw = Gateway::new(vec![schema], 1, Edge::default(), Process::default()).unwrap();
    let req = Request::get("/t/acme/customers/c-1");
    let upstream = |_: &_| Response::json(200, r#"{"id": "c-1"}"#);
    assert_eq!(gw.send(0, &req, &upstream).response.status, 200);
    gw.process.count_host_calls();
    assert_eq!(gw.send(0, &req, &upstream).response.status, 200);
    let want: BTreeMap<String, u64> = [
        // The route, then the status and media type of the answer, each map read once.
        ("schema: request_headers", 1),
        ("schema: response_headers", 1),
        // The body checked; a contract that holds counts nothing.
        ("schema: response_body", 1),
    ]
    .iter()
    .map(|(k, n)| ((*k).to_string(), *n))
    .collect();
    assert_eq!(
        gw.process.host_calls(),
        want,
        "host calls of one checked response changed"
    );
}
