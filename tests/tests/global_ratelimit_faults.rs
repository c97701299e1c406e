//! Fleet-wide limits under faults, against real Envoy, a real `portcullis-rls` and a real
//! redis-server: Redis stopped, Redis hung, the service stopped, the service hung. Each case
//! must answer within the call timeout + 100 ms with the configured failure mode — allow and
//! count (the per-IP instance on `/healthz`) or 503 `global_limiter_unavailable` (the identity
//! instance on the customer list) — and recover without restarting anything else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::render;
use portcullis_tests::harness::{
    self, claims, rs256, Gateway, GatewayOptions, Policies, RedisServer, RlsService,
};
use portcullis_tests::http::{Request, Response};
use serde_json::json;
use std::time::{Duration, Instant};

const TIMEOUT_MS: u64 = 250;

fn policies() -> Policies {
    let mut p = harness::demo_policies();
    // Allow and count: a global per-IP limit on the anonymous health route.
    p.ratelimit_ip = json!({
        "stat_prefix": "ratelimit_ip", "headers": "draft",
        "global": {"timeout_ms": TIMEOUT_MS, "failure_mode": "allow"},
        "limits": [{"name": "ip-fleet", "scope": "global", "key": "ip",
                    "rate": {"burst": 100000, "refill": 10000},
                    "routes": [{"methods": ["GET"], "path": "/healthz"}]}]
    });
    // Deny: a global per-tenant limit on the customer list.
    p.ratelimit = json!({
        "stat_prefix": "ratelimit", "headers": "draft",
        "global": {"timeout_ms": TIMEOUT_MS, "failure_mode": "deny"},
        "limits": [{"name": "tenant-fleet", "scope": "global", "key": "tenant",
                    "rate": {"burst": 100000, "refill": 10000},
                    "routes": [{"methods": ["GET"], "template": "/api/v1/tenants/{tenant}/customers"}]}]
    });
    p
}

struct Rig {
    redis: RedisServer,
    rls: RlsService,
    gw: Gateway,
    token: String,
}

impl Rig {
    fn health(&self) -> (Response, Duration) {
        let t = Instant::now();
        let r = self.gw.send(&Request::get("/healthz"));
        (r, t.elapsed())
    }

    fn list(&self) -> (Response, Duration) {
        let t = Instant::now();
        let r = self
            .gw
            .send(&Request::get("/api/v1/tenants/acme/customers").bearer(&self.token));
        (r, t.elapsed())
    }

    fn stat(&self, prefix: &str, s: &str) -> u64 {
        self.gw
            .stat(&format!("wasmcustom.portcullis.{prefix}.global.{s}"))
            .unwrap_or(0)
    }

    /// Both routes answer through the service (global headers present).
    fn assert_healthy(&self, when: &str) {
        let (h, _) = self.health();
        assert_eq!(h.status, 200, "{when}: health");
        assert_eq!(
            h.header("ratelimit-policy"),
            Some("\"ip-fleet\";q=100000;w=10"),
            "{when}: the service decided"
        );
        let (l, _) = self.list();
        assert_eq!(l.status, 200, "{when}: list {}", l.body_str());
        assert!(
            l.header("ratelimit")
                .is_some_and(|v| v.starts_with("\"tenant-fleet\"")),
            "{when}: the service decided"
        );
    }

    /// Within timeout + 100 ms: allow (no global headers) and 503 `global_limiter_unavailable`.
    fn assert_failure_mode(&self, when: &str) {
        let bound = Duration::from_millis(TIMEOUT_MS + 100);
        let (h, th) = self.health();
        assert_eq!(h.status, 200, "{when}: allow mode lets the request through");
        assert_eq!(
            h.header("ratelimit-policy"),
            None,
            "{when}: no verdict, no headers"
        );
        assert!(th <= bound, "{when}: allow took {th:?}");
        let (l, tl) = self.list();
        assert_eq!(l.status, 503, "{when}: deny mode, {}", l.body_str());
        assert_eq!(
            l.header("x-portcullis-reason"),
            Some("global_limiter_unavailable")
        );
        assert_eq!(l.header("retry-after"), Some("1"));
        assert_eq!(l.header("content-type"), Some("application/problem+json"));
        assert_eq!(l.json()["reason"], "global_limiter_unavailable");
        assert!(tl <= bound, "{when}: deny took {tl:?}");
    }

    /// Recovery needs no restart: poll until both routes are decided by the service again.
    fn await_recovery(&self, when: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (h, _) = self.health();
            let (l, _) = self.list();
            if h.header("ratelimit-policy").is_some() && l.status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "{when}: no recovery within 10 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.assert_healthy(when);
    }
}

#[test]
fn faults_answer_with_the_failure_mode_within_the_timeout_and_recover() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    if harness::envoy_binary().is_none() {
        return;
    }
    let p = policies();
    // The service's own Redis deadline is shorter than the filter's timeout, so a slow Redis
    // is reported as UNAVAILABLE before Envoy gives up on the call.
    let rls = RlsService::start(&render::rls_config(&p).unwrap(), &redis, 50);
    let Some(gw) = Gateway::start(GatewayOptions {
        policies: p,
        rls: Some(rls.addr),
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let mut rig = Rig {
        redis,
        rls,
        gw,
        token: rs256(&claims("acme", "customers:read")),
    };
    rig.assert_healthy("at start");

    // 1. Redis stopped: the service answers UNAVAILABLE at once.
    rig.redis.stop();
    rig.assert_failure_mode("redis stopped");
    let errors = rig.stat("ratelimit", "errors");
    assert!(errors > 0, "service errors are counted");
    rig.redis.restart();
    rig.await_recovery("redis restarted");

    // 2. Redis hung: the service's Redis deadline fires first.
    rig.redis.pause();
    rig.assert_failure_mode("redis hung");
    rig.redis.resume();
    rig.await_recovery("redis resumed");

    // 3. The service stopped: Envoy cannot connect.
    rig.rls.stop();
    rig.assert_failure_mode("service stopped");
    rig.rls.restart();
    rig.await_recovery("service restarted");

    // 4. The service hung: Envoy's call timeout fires.
    let timeouts_before = rig.stat("ratelimit", "timeouts");
    rig.rls.pause();
    rig.assert_failure_mode("service hung");
    assert!(
        rig.stat("ratelimit", "timeouts") > timeouts_before,
        "timeouts are counted"
    );
    assert!(rig.stat("ratelimit_ip", "failure_mode.allowed") > 0);
    assert!(rig.stat("ratelimit", "failure_mode.denied") > 0);
    rig.rls.resume();
    rig.await_recovery("service resumed");

    // Latency of the calls is recorded (a histogram in /stats).
    let prom = rig.gw.prometheus();
    assert!(
        prom.contains("portcullis_ratelimit_global_latency_us"),
        "latency histogram exported"
    );
}

#[test]
fn a_cluster_that_does_not_exist_is_the_failure_mode_not_a_crash() {
    let mut p = harness::demo_policies();
    p.ratelimit = json!({
        "stat_prefix": "ratelimit",
        "global": {"cluster": "no_such_cluster", "timeout_ms": TIMEOUT_MS, "failure_mode": "deny"},
        "limits": [{"name": "t", "scope": "global", "key": "tenant", "rate": {"burst": 10, "refill": 1}}]
    });
    let Some(gw) = Gateway::start(GatewayOptions {
        policies: p,
        ..GatewayOptions::default()
    }) else {
        return;
    };
    let token = rs256(&claims("acme", "customers:read"));
    for _ in 0..3 {
        let r = gw.send(&Request::get("/api/v1/tenants/acme/customers").bearer(&token));
        assert_eq!(r.status, 503, "{}", r.body_str());
        assert_eq!(
            r.header("x-portcullis-reason"),
            Some("global_limiter_unavailable")
        );
    }
    assert!(
        gw.stat("wasmcustom.portcullis.ratelimit.global.errors")
            .unwrap_or(0)
            >= 3
    );
}
