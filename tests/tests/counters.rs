//! Counters against real Envoy. A worker's filters hold counter increments back while other
//! streams are in flight on it and send them merged, one host call per counter instead of one
//! per request and counter (`HeldCounts` in the core crate). What that must never change, as
//! `/stats` shows it: a counter read right after a lone response has counted its request,
//! nothing is lost or counted twice under concurrency, and a stream that does not end holds
//! the others' counts back only until the next tick, not for as long as it lives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_tests::harness::{demo_policies, demo_token, Gateway, GatewayOptions};
use portcullis_tests::http::{Conn, Request};
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const LIST_ACME: &str = "/api/v1/tenants/acme/customers";
/// One per request authn lets through.
const ALLOWED: &str = "wasmcustom.portcullis.authn.allowed";
/// One per response body pii read (the customer list is masked for this caller).
const SCANNED: &str = "wasmcustom.portcullis.pii.bodies_scanned";

fn read(g: &Gateway) -> [u64; 2] {
    [ALLOWED, SCANNED].map(|n| g.stat(n).unwrap_or(0))
}

/// The demo gateway with its rate limits out of the way (hundreds of requests in a second).
fn gateway(concurrency: u32) -> Option<Gateway> {
    let mut p = demo_policies();
    let open = json!({"burst": 1_000_000, "refill": 1_000_000});
    p.ratelimit_ip["limits"][0]["rate"] = open.clone();
    p.ratelimit["limits"] =
        json!(["tenant", "app", "subject"].map(|k| json!({"name": k, "key": k, "rate": open})));
    p.ratelimit.as_object_mut().unwrap().remove("tenant_tiers");
    Gateway::start(GatewayOptions {
        policies: p,
        concurrency,
        ..GatewayOptions::default()
    })
}

#[test]
fn a_counter_read_right_after_a_response_has_counted_its_request() {
    let Some(g) = gateway(2) else { return };
    let _log = g.log_on_failure();
    let req = Request::get(LIST_ACME).bearer(&demo_token("acme", "customers:read"));
    let before = read(&g);
    for i in 1..=12u64 {
        let r = g.send(&req);
        assert_eq!(r.status, 200, "{}", r.body_str());
        // Read at once, never polled: with no other stream in flight nothing may be held.
        let now = read(&g);
        assert_eq!(
            [now[0] - before[0], now[1] - before[1]],
            [i, i],
            "after response {i}"
        );
    }
}

#[test]
fn concurrent_requests_are_each_counted_once() {
    let Some(g) = gateway(2) else { return };
    let _log = g.log_on_failure();
    let req = Request::get(LIST_ACME).bearer(&demo_token("acme", "customers:read"));
    let before = read(&g);
    let (threads, each) = (8u64, 40u64);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                // Keep-alive connections: the streams of a worker overlap, so counts are held.
                let mut c = Conn::connect(g.addr).unwrap();
                for _ in 0..each {
                    let r = c.send(&req).unwrap();
                    assert_eq!(r.status, 200, "{}", r.body_str());
                }
            });
        }
    });
    // Every stream has ended: the last one on each worker sent what was held.
    let now = read(&g);
    assert_eq!(
        [now[0] - before[0], now[1] - before[1]],
        [threads * each, threads * each]
    );
}

#[test]
fn a_stream_that_does_not_end_holds_other_counts_back_only_until_the_tick() {
    // One worker: the stalled stream and the requests after it share it.
    let Some(g) = gateway(1) else { return };
    let _log = g.log_on_failure();
    let before = read(&g);
    // Announces a body it never sends: the stream stays in flight (the request timeout is 30 s).
    let mut stalled = TcpStream::connect(g.addr).unwrap();
    write!(
        stalled,
        "POST {LIST_ACME} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\nidempotency-key: stalled-0001\r\ncontent-length: 100\r\n\r\n{{",
        demo_token("acme", "customers:write")
    )
    .unwrap();
    stalled.flush().unwrap();
    let req = Request::get(LIST_ACME).bearer(&demo_token("acme", "customers:read"));
    for _ in 0..3 {
        assert_eq!(g.send(&req).status, 200);
    }
    // The stalled request's allow and the three reads' allows all arrive while the stall still
    // lasts.
    let want = before[0] + 4;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = read(&g)[0];
    while now != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now = read(&g)[0];
    }
    assert_eq!(now, want, "counts held behind a stream in flight");
    // Still in flight: nothing has answered the stalled request.
    stalled
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 512];
    let read = std::io::Read::read(&mut stalled, &mut buf);
    assert!(
        read.is_err(),
        "the stalled request was answered before the counts arrived: {:?}",
        read.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
}
