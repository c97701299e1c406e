//! The rate limit service against a real redis-server, without Envoy: the Lua script replays
//! the filter's own arithmetic (`bucket::Limit::take`) decision for decision, one request's
//! descriptors are all-or-nothing, and concurrent calls never over-admit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_ratelimit::bucket::{Limit, State};
use portcullis_ratelimit::global::{descriptor, request};
use portcullis_ratelimit::rls::Code;
use portcullis_ratelimit_service::backend::Backend;
use portcullis_ratelimit_service::client::Client;
use portcullis_ratelimit_service::config::ServiceConfig;
use portcullis_ratelimit_service::script::{self, verdicts};
use portcullis_tests::harness::{RedisServer, RlsService};
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A deterministic pseudo-random sequence (no extra dependency, reproducible failures).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

#[test]
fn the_script_makes_the_same_decisions_as_the_filter_arithmetic() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let backend = Backend::new(&redis.url(), Duration::from_secs(2)).unwrap();
    // Refill rates that divide the period in µs: there the service's µs clock and the filter's
    // ns clock cannot round differently, so every decision must be identical.
    let limits = [
        Limit::Bucket {
            burst: 5,
            refill: 1,
            period_secs: 1,
        },
        Limit::Bucket {
            burst: 3,
            refill: 1,
            period_secs: 10,
        },
        Limit::Bucket {
            burst: 100,
            refill: 40,
            period_secs: 1,
        },
        Limit::Bucket {
            burst: 20,
            refill: 8,
            period_secs: 60,
        },
        Limit::Bucket {
            burst: 7,
            refill: 0,
            period_secs: 1,
        },
        Limit::Bucket {
            burst: 2000,
            refill: 1000,
            period_secs: 1,
        },
        Limit::Quota {
            limit: 10,
            window_secs: 60,
        },
        Limit::Quota {
            limit: 3,
            window_secs: 3600,
        },
    ];
    let rt = runtime();
    let mut rng = Lcg(0x5eed);
    for (i, limit) in limits.iter().enumerate() {
        let key = format!("diff|{i}");
        let mut state: Option<State> = None;
        let window_us = limit.window_secs().max(1) * 1_000_000;
        let mut now_us: u64 = 1_700_000_000_000_000 + rng.next(1_000_000);
        for step in 0..400 {
            now_us += rng.next(window_us / 4 + 1);
            let cost = 1 + rng.next(if limit.capacity() > 10 { 12 } else { 3 });
            let local = limit.take(state, now_us * 1_000, cost);
            if local.allowed {
                state = Some(local.next);
            }
            let mut args = vec![now_us];
            args.extend(script::args(limit, cost));
            let flat = rt
                .block_on(backend.decide(std::slice::from_ref(&key), &args))
                .unwrap();
            let v = verdicts(&flat, 1).unwrap()[0];
            let got = (v.allowed, v.remaining, v.reset_secs, v.retry_after_secs);
            let want = (
                local.allowed,
                local.remaining,
                local.reset_secs,
                local.retry_after_secs,
            );
            assert_eq!(
                got, want,
                "limit {limit:?}, step {step}, cost {cost}, t {now_us}"
            );
        }
    }
}

fn config() -> ServiceConfig {
    ServiceConfig::parse(
        "domains:\n  t:\n    tenant: { key: tenant, rate: { burst: 100, refill: 1, period_seconds: 3600 } }\n    app: { key: app, rate: { burst: 1, refill: 1, period_seconds: 3600 } }\n",
    )
    .unwrap()
}

#[test]
fn one_request_is_all_or_nothing_and_concurrent_calls_never_over_admit() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let text = "domains:\n  t:\n    tenant: { key: tenant, rate: { burst: 100, refill: 1, period_seconds: 3600 } }\n    app: { key: app, rate: { burst: 1, refill: 1, period_seconds: 3600 } }\n";
    assert!(!config().domains.is_empty());
    let rls = RlsService::start(text, &redis, 500);
    let rt = runtime();
    rt.block_on(async {
        let mut c = Client::connect(rls.addr).await.unwrap();
        // app has 1 unit: the first call takes tenant 1 + app 1; the second is refused by app
        // and must leave the tenant bucket untouched.
        let both = request(
            "t",
            vec![
                (descriptor("tenant", None, "tenant:aon"), 1),
                (descriptor("app", None, "app:aon"), 1),
            ],
        );
        let r = c.should_rate_limit(&both).await.unwrap();
        assert_eq!(r.overall_code, Code::Ok);
        assert_eq!(r.statuses[0].limit_remaining, 99);
        let r = c.should_rate_limit(&both).await.unwrap();
        assert_eq!(r.overall_code, Code::OverLimit);
        assert_eq!(r.statuses[1].code, Code::OverLimit);
        let only_tenant = request("t", vec![(descriptor("tenant", None, "tenant:aon"), 1)]);
        let r = c.should_rate_limit(&only_tenant).await.unwrap();
        assert_eq!(
            r.statuses[0].limit_remaining, 98,
            "the refused call took nothing"
        );

        // 40 connections × 5 calls for a bucket of 100: exactly 100 admitted.
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let mut c = Client::connect(rls.addr).await.unwrap();
            tasks.push(tokio::spawn(async move {
                let req = request("t", vec![(descriptor("tenant", None, "tenant:race"), 1)]);
                let mut ok = 0;
                for _ in 0..5 {
                    if c.should_rate_limit(&req).await.unwrap().overall_code == Code::Ok {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += t.await.unwrap();
        }
        assert_eq!(admitted, 100);

        // Unknown domains and limits are not limited (as in envoyproxy/ratelimit).
        let unknown = request("nope", vec![(descriptor("tenant", None, "tenant:x"), 1)]);
        let r = c.should_rate_limit(&unknown).await.unwrap();
        assert_eq!(r.overall_code, Code::Ok);
        assert!(r.statuses[0].current_limit.is_none());
        // Garbage is INVALID_ARGUMENT, never a crash: the next call still works.
        let mut bad = request("t", vec![(descriptor("tenant", None, "tenant:x"), 1)]);
        bad.descriptors[0].entries[0].value = "x".repeat(600);
        assert_eq!(c.should_rate_limit(&bad).await.unwrap_err().0, 3);
        assert!(c.should_rate_limit(&only_tenant).await.is_ok());
    });
}
