//! The gateway as an edge proxy, against real Envoy: who the client is cannot be forged with
//! forwarding headers, headers some upstreams would honour never reach them, a credential never
//! travels upstream unchecked, and a client that is slow to send gets a bounded answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_tests::gateway;
use portcullis_tests::harness::{self, demo_token, test_id, Gateway, GatewayOptions, Policies};
use portcullis_tests::http::{Request, Response};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The demo policies with a per-IP limit of 3 and short client timeouts.
fn policies() -> Policies {
    let mut p = harness::demo_policies();
    p.ratelimit_ip = json!({"stat_prefix": "ratelimit_ip", "headers": "none",
        "limits": [{"name": "per-ip", "key": "ip", "rate": {"burst": 3, "refill": 1, "period_seconds": 3600}}]});
    p.gateway.timeouts.request_seconds = 2;
    p.gateway.timeouts.request_headers_seconds = 2;
    p
}

/// A gateway whose per-IP bucket the XFF test drains (so the other tests use their own).
fn limited() -> Option<&'static Gateway> {
    static G: OnceLock<Option<Gateway>> = OnceLock::new();
    G.get_or_init(|| {
        Gateway::start(GatewayOptions {
            policies: policies(),
            ..GatewayOptions::default()
        })
    })
    .as_ref()
}

/// A gateway for the header and timeout tests (per-IP limit out of the way).
fn open() -> Option<&'static Gateway> {
    static G: OnceLock<Option<Gateway>> = OnceLock::new();
    G.get_or_init(|| {
        let mut p = policies();
        p.ratelimit_ip["limits"][0]["rate"] = json!({"burst": 100000, "refill": 100000});
        Gateway::start(GatewayOptions {
            policies: p,
            ..GatewayOptions::default()
        })
    })
    .as_ref()
}

fn upstream_header(g: &Gateway, id: &str, name: &str) -> Option<String> {
    let seen = g
        .upstream_saw(id)
        .unwrap_or_else(|| panic!("{id} did not reach the upstream"));
    seen["headers"].as_array().and_then(|h| {
        h.iter()
            .find(|kv| kv[0] == name)
            .and_then(|kv| kv[1].as_str().map(str::to_string))
    })
}

#[test]
fn forged_forwarding_headers_never_buy_a_fresh_per_ip_bucket() {
    let (g, _log) = gateway!(limited());
    let forged: [(&str, String); 9] = [
        ("x-forwarded-for", "203.0.113.1".into()),
        ("x-forwarded-for", "203.0.113.2, 198.51.100.7".into()),
        ("x-real-ip", "203.0.113.3".into()),
        ("forwarded", "for=203.0.113.4".into()),
        ("forwarded", "for=\"[2001:db8::1]\";proto=https".into()),
        ("x-client-ip", "203.0.113.5".into()),
        ("true-client-ip", "203.0.113.6".into()),
        ("x-forwarded-for", "::1".into()),
        ("x-forwarded-for", "not-an-address".into()),
    ];
    let statuses: Vec<u16> = forged
        .iter()
        .map(|(h, v)| g.send(&Request::get("/healthz").header(h, v)).status)
        .collect();
    // One client (127.0.0.1), one bucket of 3, whatever it writes in its headers.
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(
        statuses[3..].iter().all(|s| *s == 429),
        "every later request drew from the same exhausted bucket: {statuses:?}"
    );
}

#[test]
fn routing_overrides_client_address_and_underscore_headers_never_reach_the_upstream() {
    let (g, _log) = gateway!(open());
    let token = demo_token("acme", "customers:read");
    let id = test_id("strip");
    let r = g.send(
        &Request::get("/api/v1/tenants/acme/customers")
            .bearer(&token)
            .header("x-test-id", &id)
            .header("x-original-url", "/api/v1/tenants/globex/customers")
            .header("x-rewrite-url", "/admin")
            .header("x-http-method-override", "DELETE")
            .header("x-http-method", "DELETE")
            .header("x-method-override", "PUT")
            .header("x-envoy-original-path", "/admin")
            .header("x-real-ip", "10.0.0.1")
            .header("forwarded", "for=10.0.0.1")
            .header("x_portcullis_tenant", "globex")
            .header("x_portcullis_scopes", "admin")
            .header("x-envoy-upstream-rq-timeout-ms", "1")
            .header("x-envoy-internal", "true")
            .header("x-forwarded-for", "203.0.113.50")
            .header("x-forwarded-host", "evil.example"),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    for h in [
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-envoy-original-path",
        "x-real-ip",
        "forwarded",
        "x_portcullis_tenant",
        "x_portcullis_scopes",
        "x-envoy-upstream-rq-timeout-ms",
        "x-envoy-internal",
    ] {
        assert_eq!(upstream_header(g, &id, h), None, "{h} reached the upstream");
    }
    // Envoy wrote X-Forwarded-For itself (for a loopback peer Envoy writes its own address)
    // and names the real peer; nothing the client chose survives.
    assert_eq!(
        upstream_header(g, &id, "x-envoy-external-address").as_deref(),
        Some("127.0.0.1")
    );
    let xff = upstream_header(g, &id, "x-forwarded-for").unwrap_or_default();
    assert!(!xff.contains("203.0.113") && !xff.contains(','), "{xff}");
    assert_eq!(upstream_header(g, &id, "x-forwarded-host"), None);
}

#[test]
fn a_bearer_token_is_not_forwarded_on_anonymous_routes_either() {
    let (g, _log) = gateway!(open());
    let id = test_id("anon-token");
    let r = g.send(
        &Request::get("/healthz")
            .bearer(&demo_token("acme", "customers:read"))
            .header("x-test-id", &id),
    );
    assert_eq!(r.status, 200);
    assert_eq!(upstream_header(g, &id, "authorization"), None);
    let id = test_id("anon-garbage");
    g.send(
        &Request::get("/healthz")
            .header("authorization", "Bearer not.even.a-token")
            .header("x-test-id", &id),
    );
    assert_eq!(upstream_header(g, &id, "authorization"), None);
}

/// Reads whatever the gateway answers on `s` until it closes or `limit` passes.
fn read_answer(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

/// The payload of a chunked body.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn a_client_that_announces_more_body_than_it_sends_gets_408_in_bounded_time() {
    let (g, _log) = gateway!(open());
    let token = demo_token("acme", "customers:write");
    let mut s = TcpStream::connect(g.addr).unwrap();
    write!(
        s,
        "POST /api/v1/tenants/acme/customers HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\nidempotency-key: slow-client-01\r\ncontent-length: 5000\r\n\r\n{{\"name\":"
    )
    .unwrap();
    let (answer, took) = read_answer(&mut s, Duration::from_secs(15));
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {took:?}: {answer:?}"
    );
    assert!(took < Duration::from_secs(6), "answered after {took:?}");
    // Envoy's own reply has the filters' shape: problem+json with a reason.
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert_eq!(v["status"], 408);
    assert_eq!(v["filter"], "envoy");
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    assert!(answer
        .to_ascii_lowercase()
        .contains("content-type: application/problem+json"));
}

#[test]
fn a_client_that_trickles_its_headers_is_cut_off_in_bounded_time() {
    let (g, _log) = gateway!(open());
    let mut s = TcpStream::connect(g.addr).unwrap();
    let start = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let mut closed = false;
    // Keep trickling a header line byte by byte; the gateway must give up on us.
    for b in b"x-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
        if start.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let (answer, _) = read_answer(&mut s, Duration::from_secs(3));
    assert!(
        closed || answer.starts_with("HTTP/1.1 408") || answer.is_empty(),
        "{answer:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "still connected after {:?}",
        start.elapsed()
    );
    // And the gateway serves the next client.
    let r: Response = g.send(&Request::get("/healthz"));
    assert_eq!(r.status, 200);
}

#[test]
fn a_filter_denial_keeps_its_own_shape_under_the_local_reply_mapping() {
    let (g, _log) = gateway!(open());
    let r = g.send(&Request::get("/api/v1/tenants/acme/customers"));
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-portcullis-reason"), Some("missing_token"));
    let v = r.json();
    assert_eq!(
        (v["filter"].as_str(), v["reason"].as_str()),
        (Some("authn"), Some("missing_token"))
    );
    assert!(
        v["detail"].as_str().is_some_and(|d| !d.contains('%')),
        "{v}"
    );
}

/// Header values with bytes that are not UTF-8 (obs-text, legal in HTTP/1.1) once panicked the
/// SDK's string readers and left a worker's VM failing every later request. Each filter sees
/// them (request and response headers, authenticated and anonymous routes); every request
/// after them is still served, and no VM trapped.
#[test]
fn header_bytes_that_are_not_utf8_never_trap_a_vm() {
    let (g, _log) = gateway!(open());
    let token = demo_token("acme", "customers:read");
    let raw = |target: &str, extra: &[u8]| {
        let mut s = TcpStream::connect(g.addr).unwrap();
        let mut req =
            format!("GET {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n")
                .into_bytes();
        req.extend_from_slice(extra);
        req.extend_from_slice(b"connection: close\r\n\r\n");
        s.write_all(&req).unwrap();
        read_answer(&mut s, Duration::from_secs(5)).0
    };
    for (target, header) in [
        ("/healthz", &b"x-odd: caf\xe9\r\n"[..]),
        ("/api/v1/tenants/acme/customers", b"x-odd: \xff\xfe\r\n"),
        (
            "/api/v1/tenants/acme/customers/c-1001",
            b"x-portcullis-tenant: gl\xf6bex\r\n",
        ),
        ("/api/v1/tenants/acme/customers", b"x-api-key: \xc3\x28\r\n"),
    ] {
        let answer = raw(target, header);
        assert!(answer.starts_with("HTTP/1.1 "), "{target}: {answer:?}");
    }
    for _ in 0..4 {
        let r = g.send(&Request::get("/api/v1/tenants/acme/customers").bearer(&token));
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
    let log = g.log();
    assert!(
        !log.contains("panicked"),
        "a VM panicked:\n{}",
        g.log_tail()
    );
    assert!(!log.contains("wasm_fail_stream"), "{}", g.log_tail());
}
