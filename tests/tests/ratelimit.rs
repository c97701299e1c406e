//! ratelimit against real Envoy: buckets in shared data, exact under 2 and 4 workers, headers,
//! costs, tiers, quotas, hierarchy, fallbacks, and the per-IP instance before authn.
//! Every test uses its own tenant, so tests sharing a gateway never share a bucket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_tests::harness::{self, claims, rs256, Gateway, GatewayOptions, Policies};
use portcullis_tests::http::{Conn, Request, Response};
use serde_json::{json, Value};
use std::sync::OnceLock;

/// Tiers give each test tenant its own numbers; `tenant_tiers` maps test tenants to them.
fn policy() -> Value {
    json!({
        "stat_prefix": "ratelimit",
        "headers": "draft_and_legacy",
        "tenant_tiers": {"seq": "five", "conc": "fifty", "refill": "fast", "cost": "cost", "hier": "five", "quota": "fifty"},
        "limits": [
            {"name": "tenant", "key": "tenant", "rate": {"burst": 1000, "refill": 1000},
             "tiers": {
                 "five": {"rate": {"burst": 5, "refill": 1, "period_seconds": 3600}},
                 "fifty": {"rate": {"burst": 50, "refill": 1, "period_seconds": 3600}},
                 "fast": {"rate": {"burst": 2, "refill": 2, "period_seconds": 1}},
                 "cost": {"rate": {"burst": 25, "refill": 1, "period_seconds": 3600}}
             },
             "route_costs": [{"match": {"methods": ["POST"], "template": "/api/v1/tenants/{tenant}/reports/export"}, "cost": 10}]},
            {"name": "app", "key": "app", "rate": {"burst": 3, "refill": 1, "period_seconds": 3600},
             "routes": [{"methods": ["GET"], "template": "/api/v1/tenants/{tenant}/customers/{id}"}]},
            {"name": "audit", "key": "tenant", "quota": {"limit": 2, "window": "day"},
             "routes": [{"methods": ["GET"], "template": "/api/v1/tenants/{tenant}/customers/{id}/audit"}]},
            {"name": "anon", "key": "tenant", "rate": {"burst": 2, "refill": 1, "period_seconds": 3600},
             "routes": [{"methods": ["GET"], "path": "/healthz"}]}
        ]
    })
}

fn policies(ip_burst: u64) -> Policies {
    let mut p = harness::demo_policies();
    // One trusted proxy in front (Envoy's xff_num_trusted_hops): tests pick client addresses
    // by sending the X-Forwarded-For entry that proxy would have added.
    p.gateway.trusted_hops = 1;
    p.ratelimit = policy();
    // Limits here are keyed by made-up app ids (`app-a`…); admitting apps is the app catalog's
    // subject (catalog.rs), so this gateway has none.
    if let Some(a) = p.authn.as_object_mut() {
        a.remove("catalog");
    }
    p.ratelimit_ip = json!({"stat_prefix": "ratelimit_ip", "headers": "none",
        "limits": [{"name": "per-ip", "key": "ip", "rate": {"burst": ip_burst, "refill": 1, "period_seconds": 3600}}]});
    p
}

fn gw(workers: u32) -> Option<&'static Gateway> {
    static G2: OnceLock<Option<Gateway>> = OnceLock::new();
    static G4: OnceLock<Option<Gateway>> = OnceLock::new();
    let cell = if workers == 4 { &G4 } else { &G2 };
    cell.get_or_init(|| {
        Gateway::start(GatewayOptions {
            policies: policies(100_000),
            concurrency: workers,
            ..GatewayOptions::default()
        })
    })
    .as_ref()
}

macro_rules! gateway {
    ($w:expr) => {
        match gw($w) {
            Some(g) => (g, g.log_on_failure()),
            None => return,
        }
    };
}

fn token(tenant: &str, app: &str, scope: &str) -> String {
    let mut c = claims(tenant, scope);
    c["client_id"] = json!(app);
    c["roles"] = json!(["analyst"]);
    rs256(&c)
}

fn list(g: &Gateway, tenant: &str) -> Response {
    g.send(
        &Request::get(&format!("/api/v1/tenants/{tenant}/customers")).bearer(&token(
            tenant,
            "app-1",
            "customers:read",
        )),
    )
}

fn assert_429(r: &Response, reason: &str, policy: &str) {
    assert_eq!(r.status, 429, "{}", r.body_str());
    let v = r.json();
    assert_eq!(
        (
            v["reason"].as_str(),
            v["policy"].as_str(),
            v["filter"].as_str()
        ),
        (Some(reason), Some(policy), Some("ratelimit"))
    );
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("numeric Retry-After");
    assert!(retry >= 1, "Retry-After {retry}");
}

#[test]
fn sequential_boundary_and_header_formats() {
    let (g, _log) = gateway!(2);
    for i in 0..5u64 {
        let r = list(g, "seq");
        assert_eq!(r.status, 200, "request {i}: {}", r.body_str());
        let policy = r.header("ratelimit-policy").unwrap_or_default();
        assert!(policy.contains("\"tenant\";q=5;w=18000"), "{policy}");
        assert_eq!(
            r.header("ratelimit"),
            Some(format!("\"tenant\";r={};t={}", 4 - i, (i + 1) * 3600).as_str())
        );
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some((4 - i).to_string().as_str())
        );
    }
    let r = list(g, "seq");
    assert_429(&r, "rate_limited", "tenant");
    assert_eq!(r.header("retry-after"), Some("3600"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
}

#[test]
fn tokens_refill_after_the_window() {
    let (g, _log) = gateway!(2);
    assert_eq!(list(g, "refill").status, 200);
    assert_eq!(list(g, "refill").status, 200);
    let r = list(g, "refill");
    assert_429(&r, "rate_limited", "tenant");
    assert_eq!(r.header("retry-after"), Some("1"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(list(g, "refill").status, 200);
}

/// Many connections hammer one bucket of 50 (refill 1/hour): exactly 50 are admitted.
fn exact_under_concurrency(workers: u32) {
    let (g, _log) = gateway!(workers);
    let tenant = format!("conc{workers}");
    // `conc2`/`conc4` are not in tenant_tiers: give them the 50-token tier via the token claim.
    let mut c = claims(&tenant, "customers:read");
    c["tier"] = json!("fifty");
    let t = rs256(&c);
    let path = format!("/api/v1/tenants/{tenant}/customers");
    let addr = g.addr;
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (t, path) = (t.clone(), path.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr).unwrap();
                let mut counts = (0u32, 0u32);
                for _ in 0..15 {
                    match conn.send(&Request::get(&path).bearer(&t)).unwrap().status {
                        200 => counts.0 += 1,
                        429 => counts.1 += 1,
                        other => panic!("unexpected status {other}"),
                    }
                }
                counts
            })
        })
        .collect();
    let (ok, limited) = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let retries = g
        .stat("wasmcustom.portcullis.ratelimit.cas_retries")
        .unwrap_or(0);
    println!("concurrency {workers} workers, 16 connections x 15 requests: {ok} admitted, {limited} limited, {retries} CAS retries so far");
    assert_eq!(
        ok, 50,
        "admitted must equal the burst exactly ({limited} limited)"
    );
    assert_eq!(limited, 16 * 15 - 50);
}

#[test]
fn exact_under_concurrency_with_2_workers() {
    exact_under_concurrency(2);
}

#[test]
fn exact_under_concurrency_with_4_workers() {
    exact_under_concurrency(4);
}

#[test]
fn route_cost_drains_ten_tokens_per_export() {
    let (g, _log) = gateway!(2);
    let export = |g: &Gateway| {
        g.send(
            &Request::post("/api/v1/tenants/cost/reports/export", r#"{"format":"csv"}"#)
                .bearer(&token("cost", "app-1", "reports:export customers:read"))
                .header("content-type", "application/json"),
        )
    };
    assert_eq!(export(g).status, 202);
    assert_eq!(export(g).status, 202);
    assert_429(&export(g), "rate_limited", "tenant");
    // 5 tokens are left: ordinary requests still pass.
    assert_eq!(list(g, "cost").status, 200);
}

#[test]
fn hierarchical_limits_and_a_denied_request_drains_no_other_bucket() {
    let (g, _log) = gateway!(2);
    let get = |app: &str| {
        g.send(
            &Request::get("/api/v1/tenants/hier/customers/c-1001").bearer(&token(
                "hier",
                app,
                "customers:read",
            )),
        )
    };
    // app-a: 3 per app; tenant `hier` has 5.
    for _ in 0..3 {
        assert_eq!(get("app-a").status, 200);
    }
    assert_429(&get("app-a"), "rate_limited", "app");
    // The app denial did not take a tenant token: 2 are left for another app.
    assert_eq!(get("app-b").status, 200);
    assert_eq!(list(g, "hier").status, 200);
    assert_429(&list(g, "hier"), "rate_limited", "tenant");
}

#[test]
fn tiers_and_per_tenant_overrides() {
    let (g, _log) = gateway!(2);
    // No override and no tier: the default 1000-token bucket.
    for _ in 0..20 {
        assert_eq!(list(g, "plain").status, 200);
    }
    // A `tier` claim picks the tier; a tenant_tiers entry overrides the claim.
    let mut c = claims("tiered", "customers:read");
    c["tier"] = json!("five");
    let t = rs256(&c);
    let send = |t: &str, tenant: &str| {
        g.send(&Request::get(&format!("/api/v1/tenants/{tenant}/customers")).bearer(t))
    };
    for _ in 0..5 {
        assert_eq!(send(&t, "tiered").status, 200);
    }
    assert_429(&send(&t, "tiered"), "rate_limited", "tenant");
    let mut c = claims("seq2", "customers:read");
    c["tier"] = json!("fifty");
    assert_eq!(
        send(&rs256(&c), "seq2").header("x-ratelimit-limit"),
        Some("50")
    );
}

#[test]
fn quota_per_window() {
    let (g, _log) = gateway!(2);
    let audit = || {
        g.send(
            &Request::get("/api/v1/tenants/quota/customers/c-1001/audit").bearer(&token(
                "quota",
                "a",
                "customers:read:admin",
            )),
        )
    };
    // The demo upstream has no audit page (404), but the limiter counts what it admits.
    assert_eq!(audit().status, 404);
    assert_eq!(audit().status, 404);
    let r = audit();
    assert_429(&r, "quota_exceeded", "audit");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry <= 86_400, "{retry}");
}

#[test]
fn missing_identity_falls_back_to_the_client_ip_not_a_shared_bucket() {
    let (g, _log) = gateway!(2);
    let health = |ip: &str| g.send(&Request::get("/healthz").header("x-forwarded-for", ip));
    assert_eq!(health("10.1.1.1").status, 200);
    assert_eq!(health("10.1.1.1").status, 200);
    assert_429(&health("10.1.1.1"), "rate_limited", "anon");
    assert_eq!(
        health("10.1.1.2").status,
        200,
        "another client has its own bucket"
    );
    // With one trusted hop only the last entry counts: a client cannot pick its own bucket.
    assert_429(&health("10.9.9.9, 10.1.1.1"), "rate_limited", "anon");
}

#[test]
fn per_ip_limit_before_authn_stops_token_floods() {
    let Some(g) = Gateway::start(GatewayOptions {
        policies: policies(3),
        concurrency: 1,
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _log = g.log_on_failure();
    for _ in 0..3 {
        let r =
            g.send(&Request::get("/api/v1/tenants/acme/customers").bearer("garbage.token.here"));
        assert_eq!(
            (r.status, r.json()["filter"].as_str()),
            (401, Some("authn"))
        );
    }
    let r = g.send(&Request::get("/api/v1/tenants/acme/customers").bearer("garbage.token.here"));
    assert_429(&r, "rate_limited", "per-ip");
    let denied = g
        .stat("wasmcustom.portcullis.ratelimit_ip.limit.per-ip.limited")
        .unwrap_or(0);
    assert!(denied >= 1, "per-ip limited counter {denied}");
}

/// Shared data never forgets a key, so the per-IP instance keeps its keys in a fixed table:
/// 10 000 client addresses create at most `max_keys / 8` shared-data keys, while a client that
/// keeps sending during the flood keeps exactly its own bucket.
#[test]
fn ten_thousand_addresses_stay_within_the_table_and_active_clients_stay_exact() {
    let mut p = policies(5);
    // Only the per-IP instance limits /healthz here.
    p.ratelimit = json!({"stat_prefix": "ratelimit", "limits": [
        {"name": "tenant", "key": "tenant", "rate": {"burst": 100000, "refill": 100000}}]});
    p.ratelimit_ip = json!({"stat_prefix": "ratelimit_ip", "headers": "none", "max_keys": 1024,
        "limits": [{"name": "per-ip", "key": "ip", "rate": {"burst": 5, "refill": 5, "period_seconds": 10}}]});
    let Some(g) = Gateway::start(GatewayOptions {
        policies: p,
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let _log = g.log_on_failure();
    let addr = g.addr;
    let flood: Vec<_> = (0..4u32)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr).unwrap();
                for i in 0..2_500u32 {
                    let ip = format!("10.{t}.{}.{}", i >> 8, i & 255);
                    let r = Request::get("/healthz").header("x-forwarded-for", &ip);
                    match conn.send(&r) {
                        Ok(_) => {}
                        Err(_) => conn = Conn::connect(addr).unwrap(),
                    }
                }
            })
        })
        .collect();
    // Three bursts of 10 back-to-back requests, 2.5 s apart. The bucket refills one token per
    // 2 s, so it is never full again: an active client's entry is never idle, and an idle entry
    // is what a newcomer may take over (a full bucket is as good as a fresh one). Its own
    // bucket admits 5, then 1 and 1; a fresh bucket would admit 5 again, and an overflow
    // entry shared with a flood address (4 left) 4.
    let mut admitted = Vec::new();
    for _ in 0..3 {
        let mut conn = Conn::connect(addr).unwrap();
        let ok = (0..10)
            .filter(|_| {
                let r = Request::get("/healthz").header("x-forwarded-for", "198.51.100.77");
                conn.send(&r).is_ok_and(|r| r.status == 200)
            })
            .count();
        admitted.push(ok);
        std::thread::sleep(std::time::Duration::from_millis(2500));
    }
    for f in flood {
        f.join().unwrap();
    }
    assert_eq!(
        admitted,
        vec![5, 1, 1],
        "the active client's bucket stayed its own"
    );
    let created = g
        .stat("wasmcustom.portcullis.ratelimit_ip.slots_created")
        .unwrap_or(u64::MAX);
    assert!(
        (1..=128).contains(&created),
        "{created} shared-data keys for 10 000 addresses; the table has 128 slots"
    );
}
