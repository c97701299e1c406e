//! Shared-data operations per request, counted by the fake host: each one takes Envoy's
//! process-wide shared-data lock, so a second read of a key already read is a regression.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use portcullis_core::fake::{Edge, Gateway, Instance, Process, Request, Response};
use portcullis_ratelimit::RateLimit;
use std::time::Duration;

/// Two limits apply to every request (`tenant` and `app`, both falling back to the client IP
/// here: no authn runs), a third only to exports.
const CONFIG: &str = r#"{"stat_prefix": "ratelimit", "headers": "draft_and_legacy",
  "limits": [
    {"name": "tenant", "key": "tenant", "rate": {"burst": 3, "refill": 1, "period_seconds": 60}},
    {"name": "app", "key": "app", "rate": {"burst": 100, "refill": 50, "period_seconds": 1}},
    {"name": "exports", "key": "tenant", "routes": [{"methods": ["POST"], "path": "/export"}],
     "quota": {"limit": 50, "window": "day"}}
  ]}"#;

/// Shared-data reads and writes of one request.
fn ops(gw: &Gateway, req: &Request) -> (u16, u64, u64) {
    let (r, w) = (gw.process.shared.reads(), gw.process.shared.writes());
    gw.process.advance(Duration::from_millis(1));
    let status = gw
        .send(0, req, &|_| Response::json(200, "{}"))
        .response
        .status;
    (
        status,
        gw.process.shared.reads() - r,
        gw.process.shared.writes() - w,
    )
}

#[test]
fn one_read_and_one_write_per_limit_per_request() {
    let gw = Gateway::new(
        vec![Instance::new::<RateLimit>(
            "ratelimit",
            CONFIG.as_bytes().to_vec(),
        )],
        1,
        Edge::default(),
        Process::default(),
    )
    .unwrap();
    let req = Request::get("/api/v1/customers");
    // The first request also reads (and creates) the process secret and the limits' slots.
    assert_eq!(ops(&gw, &req).0, 200);
    // Two limits: two reads, two writes.
    assert_eq!(ops(&gw, &req), (200, 2, 2));
    assert_eq!(ops(&gw, &req), (200, 2, 2));
    // The tenant bucket (burst 3) is now empty: its check refuses, the rest is neither read
    // nor written.
    assert_eq!(ops(&gw, &req), (429, 1, 0));
}
