//! Fleet-wide limits against real processes: two gateways (separate Envoys, 2 workers each)
//! share one `scope: global` limit of 100 through one `portcullis-rls` and one redis-server.
//! Concurrent load from many connections to both gateways must admit between 99 and 100
//! requests in every one of 10 runs, and the spent quota must survive a gateway restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::render;
use portcullis_tests::harness::{
    self, claims, rs256, Gateway, GatewayOptions, Policies, RedisServer, RlsService,
};
use portcullis_tests::http::Request;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// 100 per window: a bucket that does not refill measurably during a run (1 token an hour).
fn policies() -> Policies {
    let mut p = harness::demo_policies();
    // No per-IP limit: every request of the load comes from 127.0.0.1.
    p.ratelimit_ip = json!({"stat_prefix": "ratelimit_ip", "headers": "none", "limits": []});
    p.ratelimit = json!({
        "stat_prefix": "ratelimit",
        "headers": "draft",
        "global": {"timeout_ms": 2000, "failure_mode": "deny"},
        "limits": [{"name": "fleet", "scope": "global", "key": "tenant",
                    "rate": {"burst": 100, "refill": 1, "period_seconds": 3600}}]
    });
    p
}

fn token(tenant: &str) -> String {
    rs256(&claims(tenant, "customers:read"))
}

/// `threads` connections per gateway, each sending `per` requests (a new TCP connection per
/// request) for `tenant`; returns (admitted, limited, other statuses).
fn load(gws: &[&Gateway], tenant: &str, threads: usize, per: usize) -> (usize, usize, Vec<u16>) {
    let admitted = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tok = token(tenant);
    std::thread::scope(|s| {
        for g in gws {
            for _ in 0..threads {
                let (admitted, limited, other, tok) = (
                    admitted.clone(),
                    limited.clone(),
                    other.clone(),
                    tok.clone(),
                );
                let addr = g.addr;
                s.spawn(move || {
                    for _ in 0..per {
                        let req = Request::get(&format!("/api/v1/tenants/{tenant}/customers"))
                            .bearer(&tok);
                        match portcullis_tests::http::send(addr, &req) {
                            Ok(r) if r.status == 200 => {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) if r.status == 429 => {
                                assert_eq!(r.header("x-portcullis-reason"), Some("rate_limited"));
                                limited.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => other.lock().unwrap().push(r.status),
                            Err(_) => other.lock().unwrap().push(0),
                        }
                    }
                });
            }
        }
    });
    let other = other.lock().unwrap().clone();
    (
        admitted.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        other,
    )
}

#[test]
fn two_gateways_share_one_global_limit_and_it_survives_a_restart() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    if harness::envoy_binary().is_none() {
        return;
    }
    let p = policies();
    let rls = RlsService::start(&render::rls_config(&p).unwrap(), &redis, 200);
    let opts = || GatewayOptions {
        policies: p.clone(),
        concurrency: 2,
        rls: Some(rls.addr),
        ..GatewayOptions::default()
    };
    let Some(a) = Gateway::start(opts()) else {
        return;
    };
    let Some(b) = Gateway::start(opts()) else {
        return;
    };
    // Each gateway prints its Envoy log if the test fails while it is alive.

    // The admitted responses carry the global policy in the same headers as a local one.
    let r = a.send(&Request::get("/api/v1/tenants/probe/customers").bearer(&token("probe")));
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"fleet\";q=100;w=360000")
    );
    assert_eq!(r.header("ratelimit"), Some("\"fleet\";r=99;t=3600"));

    let mut results = Vec::new();
    for run in 0..10 {
        let tenant = format!("fleet-{run}");
        // 2 gateways × 12 connections × 13 requests = 312 requests for a limit of 100.
        let (admitted, limited, other) = load(&[&a, &b], &tenant, 12, 13);
        eprintln!("run {run}: admitted {admitted}, limited {limited}, other {other:?}");
        assert!(other.is_empty(), "run {run}: unexpected answers {other:?}");
        assert!(
            (99..=100).contains(&admitted),
            "run {run}: {admitted} admitted for a global limit of 100"
        );
        results.push(admitted);
    }
    eprintln!("admitted per run: {results:?}");
    let stat =
        |g: &Gateway, s: &str| g.stat(&format!("wasmcustom.portcullis.ratelimit.global.{s}"));
    for g in [&a, &b] {
        assert!(stat(g, "calls").unwrap_or(0) > 0);
        assert!(stat(g, "over_limit").unwrap_or(0) > 0);
        assert_eq!(stat(g, "timeouts").unwrap_or(0), 0);
        assert_eq!(stat(g, "errors").unwrap_or(0), 0);
    }

    // Restart gateway A (a new process): the quota spent through both is still spent.
    drop(a);
    let a2 = Gateway::start(opts()).expect("gateway restarts");
    for g in [&a2, &b] {
        let r =
            g.send(&Request::get("/api/v1/tenants/fleet-0/customers").bearer(&token("fleet-0")));
        assert_eq!(r.status, 429, "the spent quota survives the restart");
        assert_eq!(r.header("x-portcullis-reason"), Some("rate_limited"));
        assert!(r.header("retry-after").is_some());
        let body = r.json();
        assert_eq!(body["policy"], "fleet");
        assert_eq!(body["reason"], "rate_limited");
    }
    // And the restarted gateway shares fresh quotas with the other one.
    let (admitted, _, other) = load(&[&a2, &b], "fleet-after-restart", 6, 20);
    assert!(other.is_empty(), "{other:?}");
    assert!((99..=100).contains(&admitted), "{admitted}");
    // Restart B too: still spent.
    drop(b);
    let b2 = Gateway::start(opts()).expect("gateway restarts");
    let r = b2.send(
        &Request::get("/api/v1/tenants/fleet-after-restart/customers")
            .bearer(&token("fleet-after-restart")),
    );
    assert_eq!(r.status, 429);
}
