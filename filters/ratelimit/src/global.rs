//! Fleet-wide (`scope: global`) limits, pure: the descriptors a request is asked about, the
//! `ShouldRateLimit` message, and the mapping of the service's answer — or its silence — to
//! the same decision values local limits produce (headers, 429, or the failure mode).
//!
//! Descriptor shape, per global limit (the service's configuration and the envoyproxy/ratelimit
//! and Limitador mappings in the README follow it):
//!
//! ```text
//! [("limit", <name>), ("tier", <tier>)?, (<kind>, <value>)?]
//! ```
//!
//! `kind` is `tenant`, `app`, `subject`, `remote_address` (the client IP, also the fallback of
//! identity keys for unauthenticated requests, as for local limits), `route` (the covering
//! entry's index) or `header`; `key: global` sends no third entry. `tier` is sent only when the
//! limit defines an amount for the caller's tier.

use crate::bucket::{Limit, Outcome, State};
use crate::config::{FailureMode, HeaderStyle, RateLimitConfig};
use crate::decide::Applied;
use crate::decide::RateLimitReason;
use crate::rls::{self, Code, Descriptor, Entry, RateLimitRequest, RateLimitResponse};
use crate::store::Charge;
use portcullis_core::deny::Denial;
use portcullis_core::shared::SharedStore;

/// gRPC status Envoy reports when the call's timeout fires.
pub const GRPC_DEADLINE_EXCEEDED: u32 = 4;

/// The reply of a call that ended with a non-zero gRPC status. Envoy reports its own call
/// timeout as a local HTTP 504 turned into gRPC `UNAVAILABLE`, not `DEADLINE_EXCEEDED`, so a
/// failure that took (about) the whole timeout is classified as a timeout by its duration.
///
/// "About": Envoy arms the call's timer against its event loop's cached time, taken when the
/// loop iteration began, so on a loaded worker the timer fires up to one iteration earlier than
/// the filter's own clock says the timeout is due (seen under CI load: a hung service counted
/// as an error). A fifth of the timeout (at least 1 ms) is allowed for that; the failures that
/// are not timeouts (connection refused, no such cluster) come back within a millisecond or two.
pub fn failed_call(status: u32, elapsed_ns: u64, timeout_ms: u64) -> Reply<'static> {
    let slack_ms = (timeout_ms / 5).max(1);
    let took_the_timeout = elapsed_ns.saturating_add(slack_ms.saturating_mul(1_000_000))
        >= timeout_ms.saturating_mul(1_000_000);
    if status == GRPC_DEADLINE_EXCEEDED || took_the_timeout {
        Reply::Status(GRPC_DEADLINE_EXCEEDED)
    } else {
        Reply::Status(status)
    }
}

/// One global limit applied to the request, in descriptor order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Limit name.
    pub name: String,
    /// Amount in this filter's configuration (for `RateLimit-Policy`).
    pub amount: Limit,
}

/// A request waiting for the rate limit service: everything needed to finish it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The serialized `RateLimitRequest`.
    pub message: Vec<u8>,
    /// The global limits asked about, in descriptor order.
    pub slots: Vec<Slot>,
    /// Local limits already admitted (for the response headers).
    pub local_applied: Vec<Applied>,
    /// Local units already taken, given back if the service refuses the request.
    pub local_taken: Vec<Charge>,
}

/// What came back from the host for the call.
#[derive(Debug, Clone, Copy)]
pub enum Reply<'a> {
    /// gRPC status 0 and the (unframed) response message.
    Answer(&'a [u8]),
    /// A non-zero gRPC status (Envoy's own for a timeout, a reset or no healthy host).
    Status(u32),
    /// The host refused to start the call.
    NotDispatched,
}

/// How the call went, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The service admitted the request.
    Ok,
    /// The service refused it.
    OverLimit,
    /// The call timed out.
    Timeout,
    /// Any other failure: a gRPC error, no dispatch, an unusable answer.
    Error,
}

/// The finished decision.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// Allow (with every applied limit, for headers) or a 429/503.
    pub verdict: Result<Vec<Applied>, Denial>,
    /// The global limit that refused.
    pub limited_by: Option<String>,
    /// How the call went.
    pub outcome: CallOutcome,
    /// The service gave no verdict and the failure mode decided.
    pub failure_mode_used: bool,
    /// The local units taken for this request must be given back (the request is refused).
    pub refund_local: bool,
}

/// The descriptor of one global limit for a store-style key (`tenant:acme`, `ip:…`, `global`).
pub fn descriptor(name: &str, tier: Option<&str>, key: &str) -> Descriptor {
    let mut entries = vec![Entry {
        key: "limit".into(),
        value: name.into(),
    }];
    if let Some(t) = tier {
        entries.push(Entry {
            key: "tier".into(),
            value: t.into(),
        });
    }
    if let Some((kind, value)) = key.split_once(':') {
        let kind = match kind {
            "sub" => "subject",
            "ip" => "remote_address",
            "hdr" => "header",
            other => other,
        };
        entries.push(Entry {
            key: kind.into(),
            value: value.into(),
        });
    }
    Descriptor {
        entries,
        hits_addend: None,
    }
}

/// Builds the `ShouldRateLimit` request: one descriptor per global limit. When the limits'
/// costs differ, each descriptor carries its own `hits_addend` and the request-level value is
/// the largest (what an engine that reads only the request-level field then charges).
pub fn request(domain: &str, mut descriptors: Vec<(Descriptor, u64)>) -> RateLimitRequest {
    let max = descriptors.iter().map(|(_, c)| *c).max().unwrap_or(1);
    let uniform = descriptors.iter().all(|(_, c)| *c == max);
    if !uniform {
        for (d, c) in &mut descriptors {
            d.hits_addend = Some(*c);
        }
    }
    RateLimitRequest {
        domain: domain.into(),
        descriptors: descriptors.into_iter().map(|(d, _)| d).collect(),
        hits_addend: u32::try_from(max).unwrap_or(u32::MAX),
    }
}

fn applied(slot: &Slot, status: &rls::DescriptorStatus) -> Applied {
    let secs = status.duration_until_reset_secs.unwrap_or(0);
    let over = status.code == Code::OverLimit;
    Applied {
        name: slot.name.clone(),
        capacity: slot.amount.capacity(),
        window_secs: slot.amount.window_secs(),
        outcome: Outcome {
            allowed: !over,
            remaining: u64::from(status.limit_remaining),
            reset_secs: secs,
            retry_after_secs: if over { secs.max(1) } else { 0 },
            // Not stored anywhere: the state lives in the service.
            next: State { level: 0, stamp: 0 },
        },
    }
}

/// Turns the service's reply into the request's decision.
pub fn resolve(cfg: &RateLimitConfig, pending: &Pending, reply: Reply<'_>) -> Resolution {
    let failure_mode = cfg
        .global
        .as_ref()
        .map_or(cfg.failure_mode, |g| g.failure_mode);
    let fail = |outcome: CallOutcome| {
        let verdict = match failure_mode {
            FailureMode::Allow => Ok(pending.local_applied.clone()),
            FailureMode::Deny => Err(unavailable()),
        };
        Resolution {
            refund_local: verdict.is_err(),
            verdict,
            limited_by: None,
            outcome,
            failure_mode_used: true,
        }
    };
    let body = match reply {
        Reply::Answer(b) => b,
        Reply::Status(GRPC_DEADLINE_EXCEEDED) => return fail(CallOutcome::Timeout),
        Reply::Status(_) | Reply::NotDispatched => return fail(CallOutcome::Error),
    };
    let Ok(resp) = RateLimitResponse::decode(body) else {
        return fail(CallOutcome::Error);
    };
    match resp.overall_code {
        Code::Unknown => fail(CallOutcome::Error),
        Code::Ok => {
            let mut all = pending.local_applied.clone();
            // A status without a limit: the service knows none for that descriptor.
            all.extend(
                pending
                    .slots
                    .iter()
                    .zip(&resp.statuses)
                    .filter(|(_, s)| s.current_limit.is_some())
                    .map(|(slot, s)| applied(slot, s)),
            );
            Resolution {
                verdict: Ok(all),
                limited_by: None,
                outcome: CallOutcome::Ok,
                failure_mode_used: false,
                refund_local: false,
            }
        }
        Code::OverLimit => {
            let culprit = pending
                .slots
                .iter()
                .zip(&resp.statuses)
                .find(|(_, s)| s.code == Code::OverLimit);
            // An engine that gives no per-descriptor status still refuses: name the first limit.
            let (slot, a) = match (culprit, pending.slots.first()) {
                (Some((slot, s)), _) => (slot, applied(slot, s)),
                (None, Some(slot)) => {
                    let s = rls::DescriptorStatus {
                        code: Code::OverLimit,
                        current_limit: None,
                        limit_remaining: 0,
                        duration_until_reset_secs: None,
                    };
                    (slot, applied(slot, &s))
                }
                (None, None) => return fail(CallOutcome::Error),
            };
            Resolution {
                verdict: Err(crate::decide::too_many(
                    &slot.name,
                    &slot.amount,
                    &a.outcome,
                    cfg.headers,
                )),
                limited_by: Some(slot.name.clone()),
                outcome: CallOutcome::OverLimit,
                failure_mode_used: false,
                refund_local: true,
            }
        }
    }
}

/// Gives back the local units of a request the service refused (all or nothing, as for local
/// limits), best effort.
pub fn refund_local(
    cfg: &RateLimitConfig,
    store: &dyn SharedStore,
    pending: &Pending,
    now_ns: u64,
) {
    for c in &pending.local_taken {
        c.refund(cfg, store, now_ns);
    }
}

/// 503 when the service gives no verdict and the failure mode denies.
pub fn unavailable() -> Denial {
    Denial::of(
        RateLimitReason::GlobalLimiterUnavailable,
        "The fleet-wide rate limiter could not decide; retry shortly.",
    )
    .with_header("retry-after", "1")
}

/// Headers of a resolution's allowed limits (re-exported for the adapter).
pub fn response_headers(style: HeaderStyle, applied: &[Applied]) -> Vec<(&'static str, String)> {
    crate::decide::response_headers(style, applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{decide_with_service, Request};
    use crate::rls::{CurrentLimit, DescriptorStatus, Unit};
    use portcullis_core::deny::Reason;
    use portcullis_core::identity::{AuthMethod, Identity};
    use portcullis_core::shared::memory::MemoryStore as FakeStore;
    use portcullis_core::slots::Secret;
    use serde_json::json;

    const S: u64 = 1_000_000_000;

    fn cfg(v: serde_json::Value) -> RateLimitConfig {
        RateLimitConfig::from_value(v).unwrap()
    }

    fn acme(tier: Option<&str>) -> Identity {
        let mut i = Identity::anonymous();
        i.method = AuthMethod::Jwt;
        i.tenant = Some("acme".into());
        i.app = Some("crm-sync".into());
        i.tier = tier.map(str::to_string);
        i
    }

    fn run(
        c: &RateLimitConfig,
        s: &FakeStore,
        id: Option<&Identity>,
        path: &str,
    ) -> crate::decide::Decision {
        decide_with_service(
            c,
            s,
            &Secret::from_bytes([4; 16]),
            &Request {
                method: "POST",
                path,
                headers: &[],
                identity: id.map(Identity::view),
                source_address: &|| Some("192.0.2.7:5555".into()),
            },
            100 * S,
        )
    }

    fn fleet() -> RateLimitConfig {
        cfg(
            json!({"stat_prefix": "rl", "failure_mode": "deny", "limits": [
                {"name": "burst", "key": "tenant", "rate": {"burst": 2, "refill": 1, "period_seconds": 3600}},
                {"name": "tenant", "scope": "global", "key": "tenant",
                 "rate": {"burst": 100, "refill": 10},
                 "tiers": {"gold": {"rate": {"burst": 1000, "refill": 100}}},
                 "route_costs": [{"match": {"methods": ["POST"], "prefix": "/export"}, "cost": 10}]},
                {"name": "daily", "scope": "global", "key": "app", "quota": {"limit": 5000, "window": "day"}}
            ]}),
        )
    }

    fn entries(d: &Descriptor) -> Vec<(&str, &str)> {
        d.entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }

    #[test]
    fn defaults_name_the_cluster_and_a_domain_per_instance() {
        let g = fleet().global.unwrap();
        assert_eq!(g.cluster, "portcullis_rls");
        assert_eq!(g.domain, "portcullis.rl");
        assert_eq!(g.timeout_ms, 100);
        assert_eq!(g.failure_mode, FailureMode::Deny, "inherits the instance's");
        let local_only =
            cfg(json!({"limits": [{"name": "a", "key": "ip", "rate": {"burst": 1, "refill": 1}}]}));
        assert!(local_only.global.is_none());
    }

    #[test]
    fn descriptors_come_from_the_verified_identity_tier_and_route_cost() {
        let c = fleet();
        let s = FakeStore::default();
        let d = run(&c, &s, Some(&acme(Some("gold"))), "/export");
        let p = d.global.expect("a call to make");
        let req = RateLimitRequest::decode(&p.message).unwrap();
        assert_eq!(req.domain, "portcullis.rl");
        assert_eq!(
            entries(&req.descriptors[0]),
            vec![("limit", "tenant"), ("tier", "gold"), ("tenant", "acme")]
        );
        assert_eq!(
            entries(&req.descriptors[1]),
            vec![("limit", "daily"), ("app", "crm-sync")]
        );
        assert_eq!(req.hits_for(0), 10, "the export's route cost");
        assert_eq!(req.hits_for(1), 1);
        assert_eq!(req.hits_addend, 10);
        assert_eq!(p.slots[0].amount.capacity(), 1000, "the gold tier's amount");
        assert_eq!(p.local_taken.len(), 1, "the local limit was taken first");
        // An unknown tier sends no tier entry (the service applies the default amount).
        let d = run(&c, &s, Some(&acme(Some("bronze"))), "/x");
        let req = RateLimitRequest::decode(&d.global.unwrap().message).unwrap();
        assert_eq!(
            entries(&req.descriptors[0]),
            vec![("limit", "tenant"), ("tenant", "acme")]
        );
        assert_eq!(req.hits_addend, 1);
        assert!(req.descriptors.iter().all(|d| d.hits_addend.is_none()));
    }

    #[test]
    fn unauthenticated_requests_are_keyed_by_ip_never_by_a_shared_bucket() {
        let c = fleet();
        let d = run(&c, &FakeStore::default(), None, "/x");
        let req = RateLimitRequest::decode(&d.global.unwrap().message).unwrap();
        assert_eq!(
            entries(&req.descriptors[0]),
            vec![("limit", "tenant"), ("remote_address", "192.0.2.7")]
        );
    }

    #[test]
    fn a_local_refusal_makes_no_call() {
        let c = fleet();
        let s = FakeStore::default();
        let id = acme(None);
        assert!(run(&c, &s, Some(&id), "/x").global.is_some());
        assert!(run(&c, &s, Some(&id), "/x").global.is_some());
        let d = run(&c, &s, Some(&id), "/x");
        assert_eq!(d.limited_by.as_deref(), Some("burst"));
        assert!(
            d.global.is_none(),
            "the burst is cut before any network call"
        );
    }

    fn status(code: Code, remaining: u32, secs: u64) -> DescriptorStatus {
        DescriptorStatus {
            code,
            current_limit: Some(CurrentLimit {
                requests_per_unit: 100,
                unit: Unit::Second,
                name: String::new(),
            }),
            limit_remaining: remaining,
            duration_until_reset_secs: Some(secs),
        }
    }

    fn pending(c: &RateLimitConfig, s: &FakeStore) -> Pending {
        run(c, s, Some(&acme(None)), "/x").global.unwrap()
    }

    #[test]
    fn ok_answers_add_the_global_limits_to_the_headers() {
        let c = fleet();
        let s = FakeStore::default();
        let p = pending(&c, &s);
        let answer = RateLimitResponse {
            overall_code: Code::Ok,
            statuses: vec![status(Code::Ok, 41, 6), status(Code::Ok, 4999, 3600)],
        }
        .encode();
        let r = resolve(&c, &p, Reply::Answer(&answer));
        assert_eq!(r.outcome, CallOutcome::Ok);
        let applied = r.verdict.unwrap();
        let names: Vec<&str> = applied.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, vec!["burst", "tenant", "daily"]);
        let h = response_headers(HeaderStyle::Draft, &applied);
        assert_eq!(
            h[0].1,
            "\"burst\";q=2;w=7200, \"tenant\";q=100;w=10, \"daily\";q=5000;w=86400"
        );
        assert_eq!(h[1].1, "\"burst\";r=1;t=3600");
    }

    #[test]
    fn over_limit_is_the_same_429_as_a_local_limit_and_gives_local_units_back() {
        let c = fleet();
        let s = FakeStore::default();
        let p = pending(&c, &s);
        let answer = RateLimitResponse {
            overall_code: Code::OverLimit,
            statuses: vec![status(Code::Ok, 3, 1), status(Code::OverLimit, 0, 1234)],
        }
        .encode();
        let r = resolve(&c, &p, Reply::Answer(&answer));
        assert_eq!(r.outcome, CallOutcome::OverLimit);
        assert_eq!(r.limited_by.as_deref(), Some("daily"));
        assert!(r.refund_local);
        let den = r.verdict.unwrap_err();
        assert_eq!((den.status, den.reason), (429, "quota_exceeded"));
        assert!(den.headers.contains(&("retry-after", "1234".to_string())));
        assert!(den
            .headers
            .contains(&("ratelimit-policy", "\"daily\";q=5000;w=86400".to_string())));
        let body: serde_json::Value = serde_json::from_slice(&den.body()).unwrap();
        assert_eq!(body["policy"], "daily");
        // The local unit comes back.
        let charge = &p.local_taken[0];
        let left = |s: &FakeStore| {
            let (_, table) = c.limits[charge.limit].amount(charge.tier.as_deref());
            let b = crate::store::Bucket {
                table,
                slot: charge.slot.clone(),
                limit: charge.amount,
            };
            crate::store::peek(s, &b, 100 * S, 0).unwrap().remaining
        };
        let before = left(&s);
        refund_local(&c, &s, &p, 100 * S);
        assert_eq!(left(&s), before + 1);
        // An engine that names no descriptor still refuses, with the first limit's name.
        let bare = RateLimitResponse {
            overall_code: Code::OverLimit,
            statuses: vec![],
        }
        .encode();
        let r = resolve(&c, &p, Reply::Answer(&bare));
        assert_eq!(r.limited_by.as_deref(), Some("tenant"));
        assert_eq!(r.verdict.unwrap_err().reason, "rate_limited");
    }

    #[test]
    fn no_verdict_means_the_failure_mode_decides() {
        let garbage = [0x0b_u8];
        let unknown = RateLimitResponse {
            overall_code: Code::Unknown,
            statuses: vec![],
        }
        .encode();
        let cases: [(Reply<'_>, CallOutcome); 5] = [
            (Reply::Status(GRPC_DEADLINE_EXCEEDED), CallOutcome::Timeout),
            (Reply::Status(14), CallOutcome::Error),
            (Reply::NotDispatched, CallOutcome::Error),
            (Reply::Answer(&garbage), CallOutcome::Error),
            (Reply::Answer(&unknown), CallOutcome::Error),
        ];
        for mode in ["allow", "deny"] {
            let mut v = json!({"failure_mode": "allow", "global": {"failure_mode": mode}, "limits": [
                {"name": "g", "scope": "global", "key": "tenant", "rate": {"burst": 5, "refill": 1}},
                {"name": "l", "key": "tenant", "rate": {"burst": 5, "refill": 1}}]});
            v["global"]["timeout_ms"] = json!(50);
            let c = cfg(v);
            let s = FakeStore::default();
            let p = pending(&c, &s);
            for (reply, outcome) in cases {
                let r = resolve(&c, &p, reply);
                assert_eq!(r.outcome, outcome);
                assert!(r.failure_mode_used);
                match mode {
                    "allow" => {
                        assert!(!r.refund_local);
                        let a = r.verdict.unwrap();
                        assert_eq!(a.len(), 1, "only the local limit's headers");
                    }
                    _ => {
                        assert!(r.refund_local);
                        let d = r.verdict.unwrap_err();
                        assert_eq!(
                            (d.status, d.reason),
                            (503, RateLimitReason::GlobalLimiterUnavailable.code())
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_failure_that_took_the_whole_timeout_is_a_timeout() {
        let ms = 1_000_000;
        assert!(matches!(
            failed_call(14, 100 * ms, 100),
            Reply::Status(GRPC_DEADLINE_EXCEEDED)
        ));
        assert!(matches!(
            failed_call(14, 250 * ms, 100),
            Reply::Status(GRPC_DEADLINE_EXCEEDED)
        ));
        assert!(matches!(
            failed_call(4, 3 * ms, 100),
            Reply::Status(GRPC_DEADLINE_EXCEEDED)
        ));
        assert!(matches!(failed_call(14, 3 * ms, 100), Reply::Status(14)));
        // A timer armed against a loop iteration's cached start fires early by the filter's
        // clock: 85 ms of a 100 ms timeout is still the timeout, 70 ms is not.
        assert!(matches!(
            failed_call(14, 85 * ms, 100),
            Reply::Status(GRPC_DEADLINE_EXCEEDED)
        ));
        assert!(matches!(failed_call(14, 70 * ms, 100), Reply::Status(14)));
        assert!(matches!(
            failed_call(14, 0, 1),
            Reply::Status(GRPC_DEADLINE_EXCEEDED)
        ));
    }

    #[test]
    fn global_config_errors_name_the_field() {
        let bad = |v: serde_json::Value| RateLimitConfig::from_value(v).unwrap_err();
        let e = bad(
            json!({"limits": [{"name": "x", "scope": "global", "key": "tenant",
            "rate": {"burst": 10000, "refill": 10000, "period_seconds": 3600}}]}),
        );
        assert_eq!(e.field, "limits[0].rate");
        assert!(e.problem.contains("use a quota"), "{e}");
        let e = bad(json!({"global": {"cluster": "a b"}, "limits": []}));
        assert_eq!(e.field, "global.cluster");
        let e = bad(json!({"global": {"domain": "a|b"}, "limits": []}));
        assert_eq!(e.field, "global.domain");
        let e = bad(json!({"global": {"timeout_ms": 0}, "limits": []}));
        assert_eq!(e.field, "global.timeout_ms");
        let e = bad(
            json!({"limits": [{"name": "x", "scope": "fleet", "key": "ip", "rate": {"burst": 1, "refill": 1}}]}),
        );
        assert!(e.to_string().contains("fleet"), "{e}");
    }
}
