//! Resilience defaults of the rendered gateway against real Envoy and scripted upstreams on
//! loopback: a failing endpoint is ejected while the healthy one serves, a slow upstream times
//! out with the documented 504, only idempotent requests are retried (after a 503, a dropped
//! connection or a per-try timeout), the circuit breaker and the connection limit refuse what
//! is past them, and oversized header blocks get 431.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::gateway::RouteTimeout;
use portcullis_tests::gateway;
use portcullis_tests::harness::{self, Gateway, GatewayOptions, Policies};
use portcullis_tests::http::Request;
use portcullis_tests::stub::{Reply, StubUpstream};
use serde_json::json;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The demo policies with `/stub/...` open to anonymous callers of any method, the per-IP
/// limit out of the way, and a 1 s upstream timeout under `/stub/slow`. Every other
/// resilience setting is the shipped default.
fn policies() -> Policies {
    let mut p = harness::demo_policies();
    p.ratelimit_ip["limits"][0]["rate"] = json!({"burst": 100000, "refill": 100000});
    p.authn["routes"].as_array_mut().unwrap().insert(
        0,
        json!({"name": "stub", "match": {"prefix": "/stub"}, "allow": "anonymous"}),
    );
    p.gateway.resilience.route_timeouts = vec![RouteTimeout {
        prefix: "/stub/slow".into(),
        upstream_seconds: 1,
    }];
    p
}

/// The first request on each path fails (`/stub/close/...` by a dropped connection, others
/// with 503); `/stub/slow/...` answers after 3 s; everything else is 200.
fn scripted() -> &'static StubUpstream {
    static S: OnceLock<StubUpstream> = OnceLock::new();
    S.get_or_init(|| {
        let failed: Mutex<HashSet<String>> = Mutex::default();
        StubUpstream::start(move |_, _, path| {
            if path.starts_with("/stub/slow") {
                return Reply::After(Duration::from_secs(3), 200);
            }
            let first = failed.lock().unwrap().insert(path.to_string());
            match (first, path.starts_with("/stub/close")) {
                (true, true) => Reply::Close,
                (true, false) => Reply::Status(503),
                (false, _) => Reply::Status(200),
            }
        })
    })
}

/// A gateway in front of [`scripted`] alone.
fn single() -> Option<&'static Gateway> {
    static G: OnceLock<Option<Gateway>> = OnceLock::new();
    G.get_or_init(|| {
        Gateway::start(GatewayOptions {
            policies: policies(),
            upstreams: vec![scripted().addr],
            ..GatewayOptions::default()
        })
    })
    .as_ref()
}

/// Requests the upstream read on `path`.
fn hits(up: &StubUpstream, path: &str) -> usize {
    up.requests().iter().filter(|(_, p)| p == path).count()
}

#[test]
fn a_failing_endpoint_is_ejected_and_the_healthy_one_serves_everything() {
    let failing = StubUpstream::start(|_, _, _| Reply::Status(503));
    let healthy = StubUpstream::start(|_, _, _| Reply::Status(200));
    let Some(g) = Gateway::start(GatewayOptions {
        policies: policies(),
        upstreams: vec![failing.addr, healthy.addr],
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _log = g.log_on_failure();
    // Each 503 from the failing endpoint is retried on the other one: no client sees it.
    for i in 0..30 {
        let r = g.send(&Request::get(&format!("/stub/eject/{i}")));
        assert_eq!(r.status, 200, "request {i}: {}", r.body_str());
    }
    let failed = failing.count();
    // Five 5xx in a row eject it (a request or two may pass while the ejection, decided on
    // Envoy's main thread, reaches the workers).
    assert!(
        (5..=7).contains(&failed),
        "5 consecutive 5xx eject it; it saw {failed}"
    );
    assert_eq!(
        g.stat("cluster.upstream.outlier_detection.ejections_enforced_total"),
        Some(1)
    );
    assert_eq!(
        g.stat("cluster.upstream.outlier_detection.ejections_active"),
        Some(1)
    );
    // Ejected: every later request goes to the healthy endpoint, first try.
    let healthy_before = healthy.count();
    for i in 0..20 {
        let r = g.send(&Request::get(&format!("/stub/after/{i}")));
        assert_eq!(r.status, 200);
    }
    assert_eq!(failing.count(), failed, "an ejected endpoint got traffic");
    assert_eq!(healthy.count(), healthy_before + 20);
}

#[test]
fn a_slow_upstream_times_out_with_504_and_the_documented_reason() {
    let (g, _log) = gateway!(single());
    let start = Instant::now();
    let r = g.send(&Request::get("/stub/slow/one"));
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.body_str());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "the route's 1 s timeout, not the upstream's 3 s: {took:?}"
    );
    let v = r.json();
    assert_eq!(v["status"], 504);
    assert_eq!(v["filter"], "envoy");
    assert_eq!(v["reason"], "response_timeout");
    assert_eq!(r.header("x-portcullis-reason"), Some("response_timeout"));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    // A timeout is not a retry condition: the upstream saw the request once.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hits(scripted(), "/stub/slow/one"), 1);
}

#[test]
fn a_post_is_never_retried_while_a_get_is() {
    let (g, _log) = gateway!(single());
    let up = scripted();
    // 503 on the first try.
    let r = g.send(
        &Request::post("/stub/once/post", r#"{"a":1}"#).header("content-type", "application/json"),
    );
    assert_eq!(r.status, 503, "{}", r.body_str());
    let r = g.send(&Request::get("/stub/once/get"));
    assert_eq!(r.status, 200, "{}", r.body_str());
    let r = g.send(&Request::new("PUT", "/stub/once/put").header("content-length", "0"));
    assert_eq!(r.status, 200, "{}", r.body_str());
    // The connection dropped after the request was read (`reset`).
    let r = g.send(
        &Request::post("/stub/close/post", r#"{"a":1}"#).header("content-type", "application/json"),
    );
    assert_eq!(r.status, 503, "{}", r.body_str());
    let r = g.send(&Request::get("/stub/close/get"));
    assert_eq!(r.status, 200, "{}", r.body_str());
    // Past the longest backoff: no late retry either.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hits(up, "/stub/once/post"), 1, "a POST was sent twice");
    assert_eq!(hits(up, "/stub/close/post"), 1, "a POST was sent twice");
    assert_eq!(hits(up, "/stub/once/get"), 2);
    assert_eq!(hits(up, "/stub/once/put"), 2);
    assert_eq!(hits(up, "/stub/close/get"), 2);
}

/// Sends `GET /healthz` on an open keep-alive connection: `Ok(status line)`, or `Err` saying
/// how the connection ended without an answer (`closed`, or `no answer` after 5 s).
fn keepalive_get(s: &mut TcpStream) -> Result<String, &'static str> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .is_err()
    {
        return Err("closed");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Err("closed"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err("no answer")
            }
            Err(_) => return Err("closed"),
        }
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return Ok(head.lines().next().unwrap_or_default().to_string());
            }
        }
    }
}

/// Polls a counter until it reaches `at_least` (stats are read live, but give the main thread
/// a moment), returning the last value.
fn counter_reaches(g: &Gateway, name: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = g.stat(name).unwrap_or(0);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_connection_past_the_limit_is_closed_and_the_admin_endpoint_still_answers() {
    let mut p = policies();
    p.gateway.resilience.max_downstream_connections = 3;
    let Some(g) = Gateway::start(GatewayOptions {
        policies: p,
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _log = g.log_on_failure();
    let overflow = format!(
        "listener.127.0.0.1_{}.downstream_global_cx_overflow",
        g.addr.port()
    );
    // The readiness probe's connection may still be counted for a moment.
    std::thread::sleep(Duration::from_millis(500));
    let mut open: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(g.addr).unwrap())
        .collect();
    for s in &mut open {
        let status = keepalive_get(s);
        assert!(
            status.as_deref().is_ok_and(|l| l.contains(" 200 ")),
            "{status:?}"
        );
    }
    let mut extra = TcpStream::connect(g.addr).unwrap();
    assert_eq!(
        keepalive_get(&mut extra),
        Err("closed"),
        "a 4th connection was not closed at once"
    );
    // Counted, and the admin listener (exempt from the limit) answered the question.
    assert_eq!(counter_reaches(&g, &overflow, 1), 1);
    // One closed, one more admitted.
    drop(open.pop());
    std::thread::sleep(Duration::from_millis(500));
    let mut next = TcpStream::connect(g.addr).unwrap();
    let status = keepalive_get(&mut next);
    assert!(
        status.as_deref().is_ok_and(|l| l.contains(" 200 ")),
        "{status:?}"
    );
}

#[test]
fn too_many_or_too_large_request_headers_get_431() {
    let (g, _log) = gateway!(single());
    let mut many = Request::get("/stub/headers/many");
    for i in 0..101 {
        many = many.header(&format!("x-h{i}"), "1");
    }
    let r = g.send(&many);
    assert_eq!(r.status, 431, "{}", r.body_str());
    let v = r.json();
    assert_eq!(
        (v["filter"].as_str(), v["reason"].as_str()),
        (Some("envoy"), Some("http1.too_many_headers"))
    );
    let r = g.send(&Request::get("/stub/headers/large").header("x-big", &"a".repeat(61 * 1024)));
    assert_eq!(r.status, 431, "{}", r.body_str());
    assert_eq!(r.json()["reason"], "http1.headers_too_large");
    assert_eq!(hits(scripted(), "/stub/headers/many"), 0);
    assert_eq!(hits(scripted(), "/stub/headers/large"), 0);
    // Within the limits the same request goes through.
    let mut fine = Request::get("/stub/headers/fine");
    for i in 0..90 {
        fine = fine.header(&format!("x-h{i}"), "1");
    }
    assert_eq!(g.send(&fine).status, 200);
}

#[test]
fn past_the_circuit_breaker_envoy_answers_503_at_once() {
    let up = StubUpstream::start(|_, _, _| Reply::After(Duration::from_millis(1500), 200));
    let mut p = policies();
    let cb = &mut p.gateway.resilience.circuit_breakers;
    (cb.max_connections, cb.max_pending_requests, cb.max_requests) = (1, 1, 1);
    let Some(g) = Gateway::start(GatewayOptions {
        policies: p,
        upstreams: vec![up.addr],
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _log = g.log_on_failure();
    let answers: Vec<(u16, Duration, portcullis_tests::http::Response)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let g = &g;
                s.spawn(move || {
                    let start = Instant::now();
                    let r = g.send(&Request::get(&format!("/stub/hold/{i}")));
                    (r.status, start.elapsed(), r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(
        !refused.is_empty(),
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    for (_, took, r) in &refused {
        assert!(*took < Duration::from_millis(1000), "{took:?}");
        assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
        let v = r.json();
        assert_eq!(v["filter"], "envoy");
        assert_eq!(
            v["reason"],
            "upstream_reset_before_response_started{overflow}"
        );
    }
    assert!(answers.iter().any(|(s, _, _)| *s == 200));
}

#[test]
fn a_per_try_timeout_is_retried_for_a_get_and_answered_504_for_a_post() {
    // The first request on each path hangs for 2 s; later ones answer at once.
    let slow_once: Mutex<HashSet<String>> = Mutex::default();
    let up = StubUpstream::start(move |_, _, path| {
        if slow_once.lock().unwrap().insert(path.to_string()) {
            Reply::After(Duration::from_secs(2), 200)
        } else {
            Reply::Status(200)
        }
    });
    let mut p = policies();
    let r = &mut p.gateway.resilience.retries;
    r.per_try_timeout_ms = 400;
    r.retry_on = vec![portcullis_cli::gateway::RetryOn::Condition(
        "gateway-error".into(),
    )];
    let Some(g) = Gateway::start(GatewayOptions {
        policies: p,
        upstreams: vec![up.addr],
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _log = g.log_on_failure();
    let start = Instant::now();
    let r = g.send(&Request::get("/stub/try/get"));
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    let start = Instant::now();
    let r = g.send(
        &Request::post("/stub/try/post", r#"{"a":1}"#).header("content-type", "application/json"),
    );
    assert_eq!(r.status, 504, "{}", r.body_str());
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    let v = r.json();
    assert_eq!(v["filter"], "envoy");
    assert_eq!(v["reason"], "upstream_per_try_timeout");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hits(&up, "/stub/try/get"), 2);
    assert_eq!(hits(&up, "/stub/try/post"), 1);
}
