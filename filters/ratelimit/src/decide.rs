//! The ratelimit decision: which limits apply to a request, with which key and cost, then check
//! them all before taking any (a request one limit refuses drains no other bucket), take them
//! atomically through the [`Store`] port, and describe the result as headers or a 429.

use crate::bucket::{Limit, Outcome};
use crate::config::{CompiledLimit, FailureMode, HeaderStyle, KeySource, RateLimitConfig, Scope};
use crate::global;
use crate::store::{self, Store, TakeError};
use portcullis_core::deny::Denial;
use portcullis_core::identity::{AuthMethod, Identity};
use portcullis_core::path;
use serde_json::json;

const FILTER: &str = "ratelimit";

/// What the limiter looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`.
    pub path: &'a str,
    /// Headers, names lower-cased.
    pub headers: &'a [(String, String)],
    /// Identity authn published (filter state), if any.
    pub identity: Option<&'a Identity>,
    /// Envoy's downstream source address (`ip:port` or `ip`).
    pub source_address: Option<&'a str>,
}

/// One limit as applied to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Limit name.
    pub name: String,
    /// Capacity (burst or quota).
    pub capacity: u64,
    /// Policy window in seconds.
    pub window_secs: u64,
    /// Outcome.
    pub outcome: Outcome,
}

/// The decision.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Allow (with the limits applied, for headers) or a 429/503.
    pub verdict: Result<Vec<Applied>, Denial>,
    /// Name of the limit that refused.
    pub limited_by: Option<String>,
    /// CAS mismatches retried.
    pub cas_retries: u32,
    /// The store gave no verdict and the failure mode decided.
    pub failure_mode_used: bool,
    /// Global limits to ask the rate limit service about (only from [`decide_with_service`],
    /// and only when every local limit admitted the request).
    pub global: Option<global::Pending>,
}

/// The client IP: the source address, or with `trusted_hops` = N the N-th `x-forwarded-for`
/// entry from the right (the address the first trusted proxy saw). Never a client-chosen value
/// unless a trusted proxy vouches for it.
pub fn client_ip(req: &Request<'_>, trusted_hops: usize) -> Option<String> {
    if trusted_hops > 0 {
        let xff: Vec<&str> = req
            .headers
            .iter()
            .filter(|(k, _)| k == "x-forwarded-for")
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .collect();
        if xff.len() >= trusted_hops {
            return xff.get(xff.len() - trusted_hops).map(|s| (*s).to_string());
        }
    }
    let src = req.source_address?;
    // `1.2.3.4:5678` or `[::1]:5678`.
    let ip = if let Some(rest) = src.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match src.rsplit_once(':') {
            Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
            _ => src,
        }
    };
    Some(ip.to_string())
}

/// The key of a limit for this request. Identity keys come only from a verified identity; a
/// request without one falls back to its IP, so it never shares a bucket with everyone else.
fn key_for(l: &CompiledLimit, req: &Request<'_>, route: usize, ip: Option<&str>) -> Option<String> {
    let verified = req.identity.filter(|i| i.method != AuthMethod::Anonymous);
    let pick = |v: Option<&String>, kind: &str| match v.filter(|v| !v.is_empty()) {
        Some(v) => Some(format!("{kind}:{v}")),
        None => ip.map(|ip| format!("ip:{ip}")),
    };
    match &l.key {
        KeySource::Global => Some("global".into()),
        KeySource::Tenant => pick(verified.and_then(|i| i.tenant.as_ref()), "tenant"),
        KeySource::App => pick(verified.and_then(|i| i.app.as_ref()), "app"),
        KeySource::Subject => pick(verified.and_then(|i| i.subject.as_ref()), "sub"),
        KeySource::Ip => ip.map(|ip| format!("ip:{ip}")),
        KeySource::Route => Some(format!("route:{route}")),
        KeySource::Header { name, values } => {
            let v = req.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
            pick(v.filter(|v| values.contains(v)), "hdr")
        }
    }
}

/// The tier of a request: a per-tenant override, else the identity's own tier.
fn tier<'c>(cfg: &'c RateLimitConfig, req: &Request<'c>) -> Option<&'c str> {
    let id = req.identity?;
    id.tenant
        .as_ref()
        .and_then(|t| cfg.tenant_tiers.get(t))
        .map(String::as_str)
        .or(id.tier.as_deref())
}

/// The shared-data key of a limit: namespaced by instance; the value part is bounded input
/// (verified identity fields, IPs, route names, allow-listed header values).
pub fn store_key(cfg: &RateLimitConfig, limit: &str, key: &str) -> String {
    format!("portcullis.{}.{limit}.{key}", cfg.stat_prefix)
}

/// Every reason code this filter can deny with.
pub const REASONS: &[&str] = &[
    "rate_limited",
    "quota_exceeded",
    "limiter_unavailable",
    crate::global::UNAVAILABLE_REASON,
];

/// One applicable limit of one request: which key, which amount, what it costs.
struct Planned<'c> {
    limit: &'c CompiledLimit,
    /// Store-style key (`tenant:acme`, `ip:192.0.2.7`, `global`).
    key: String,
    amount: Limit,
    cost: u64,
    /// The caller's tier when this limit defines an amount for it.
    tier: Option<&'c str>,
}

fn plan<'c>(cfg: &'c RateLimitConfig, req: &Request<'c>) -> Vec<Planned<'c>> {
    let normalized = path::normalize(req.path).unwrap_or_else(|_| req.path.to_string());
    let ip = client_ip(req, cfg.trusted_hops);
    let tier = tier(cfg, req);
    let mut plan = Vec::new();
    for l in &cfg.limits {
        // The covering route's index is the `route` key: bounded by config, never by the path.
        let route = if l.routes.is_empty() {
            Some(0)
        } else {
            l.routes
                .iter()
                .position(|m| m.matches(req.method, &normalized).is_some())
        };
        let Some(route) = route else { continue };
        let cost = l
            .route_costs
            .find(req.method, &normalized)
            .map_or(l.cost, |m| *m.route);
        let Some(key) = key_for(l, req, route, ip.as_deref()) else {
            continue;
        };
        let tier = tier.filter(|t| l.tiers.contains_key(*t));
        let amount = tier
            .and_then(|t| l.tiers.get(t))
            .copied()
            .unwrap_or(l.limit);
        plan.push(Planned {
            limit: l,
            key,
            amount,
            cost,
            tier,
        });
    }
    plan
}

/// Decides one request at `now_ns` with every limit — global ones included — kept in `store`.
/// This is what the policy simulator runs (`portcullis test`, `explain`): the arithmetic of a
/// global limit is the same, only its state is elsewhere.
pub fn decide(
    cfg: &RateLimitConfig,
    store: &dyn Store,
    req: &Request<'_>,
    now_ns: u64,
) -> Decision {
    let all = plan(cfg, req);
    run_local(cfg, store, &all, now_ns).0
}

/// Decides the local limits of one request at `now_ns`; when they admit it and global limits
/// apply, [`Decision::global`] holds the call to make to the rate limit service (local limits
/// first, so a burst is cut before any network call).
pub fn decide_with_service(
    cfg: &RateLimitConfig,
    store: &dyn Store,
    req: &Request<'_>,
    now_ns: u64,
) -> Decision {
    let (global, local): (Vec<Planned<'_>>, Vec<Planned<'_>>) = plan(cfg, req)
        .into_iter()
        .partition(|p| p.limit.scope == Scope::Global);
    let (mut d, taken) = run_local(cfg, store, &local, now_ns);
    if let (Ok(applied), Some(g), false) = (&d.verdict, &cfg.global, global.is_empty()) {
        let descriptors = global
            .iter()
            .map(|p| (global::descriptor(&p.limit.name, p.tier, &p.key), p.cost))
            .collect();
        d.global = Some(global::Pending {
            message: global::request(&g.domain, descriptors).encode(),
            slots: global
                .iter()
                .map(|p| global::Slot {
                    name: p.limit.name.clone(),
                    amount: p.amount,
                })
                .collect(),
            local_applied: applied.clone(),
            local_taken: taken,
        });
    }
    d
}

/// Checks every planned limit, then takes them all through the store; returns the decision and
/// what was taken (store key, amount, cost).
fn run_local(
    cfg: &RateLimitConfig,
    store: &dyn Store,
    plan: &[Planned<'_>],
    now_ns: u64,
) -> (Decision, Vec<(String, Limit, u64)>) {
    let mut d = Decision {
        verdict: Ok(Vec::new()),
        limited_by: None,
        cas_retries: 0,
        failure_mode_used: false,
        global: None,
    };
    let fail = |d: &mut Decision| {
        d.failure_mode_used = true;
        if cfg.failure_mode == FailureMode::Deny {
            d.verdict = Err(Denial::new(
                FILTER,
                503,
                "limiter_unavailable",
                "The rate limiter could not decide; retry shortly.",
            )
            .with_header("retry-after", "1"));
        }
    };
    let keys: Vec<String> = plan
        .iter()
        .map(|p| store_key(cfg, &p.limit.name, &p.key))
        .collect();
    // Phase 1: check every limit without writing; the first refusal decides.
    for (p, key) in plan.iter().zip(&keys) {
        match store::peek(store, key, &p.amount, now_ns, p.cost) {
            Ok(o) if !o.allowed => {
                d.limited_by = Some(p.limit.name.clone());
                d.verdict = Err(too_many(&p.limit.name, &p.amount, &o, cfg.headers));
                return (d, Vec::new());
            }
            Ok(_) => {}
            Err(_) => {
                fail(&mut d);
                return (d, Vec::new());
            }
        }
    }
    // Phase 2: take them all; if a race made one refuse, give back what was taken.
    let mut applied = Vec::new();
    let mut taken: Vec<(String, Limit, u64)> = Vec::new();
    let give_back = |taken: &[(String, Limit, u64)]| {
        for (k, a, c) in taken {
            store::refund(store, k, a, *c, cfg.max_cas_retries);
        }
    };
    for (p, key) in plan.iter().zip(&keys) {
        let t = store::take(store, key, &p.amount, now_ns, p.cost, cfg.max_cas_retries);
        d.cas_retries += t.retries;
        match t.result {
            Ok(o) if o.allowed => {
                taken.push((key.clone(), p.amount, p.cost));
                applied.push(Applied {
                    name: p.limit.name.clone(),
                    capacity: p.amount.capacity(),
                    window_secs: p.amount.window_secs(),
                    outcome: o,
                });
            }
            Ok(o) => {
                give_back(&taken);
                d.limited_by = Some(p.limit.name.clone());
                d.verdict = Err(too_many(&p.limit.name, &p.amount, &o, cfg.headers));
                return (d, Vec::new());
            }
            Err(TakeError::Contended | TakeError::Unavailable) => {
                fail(&mut d);
                if d.verdict.is_err() {
                    give_back(&taken);
                    return (d, Vec::new());
                }
            }
        }
    }
    d.verdict = Ok(applied);
    (d, taken)
}

/// The 429 of a limit that refused, with its headers and `Retry-After`.
pub fn too_many(name: &str, amount: &Limit, o: &Outcome, style: HeaderStyle) -> Denial {
    let (reason, detail) = match amount {
        Limit::Bucket { .. } => (
            "rate_limited",
            "Too many requests; slow down and retry after the indicated time.",
        ),
        Limit::Quota { .. } => (
            "quota_exceeded",
            "The quota for this window is used up; retry after it resets.",
        ),
    };
    let applied = Applied {
        name: name.to_string(),
        capacity: amount.capacity(),
        window_secs: amount.window_secs(),
        outcome: *o,
    };
    let mut d = Denial::new(FILTER, 429, reason, detail)
        .with_header("retry-after", o.retry_after_secs.to_string())
        .with_member("policy", json!(name));
    for (k, v) in response_headers(style, std::slice::from_ref(&applied)) {
        d = d.with_header(k, v);
    }
    d
}

/// Rate-limit headers for the applied limits: `RateLimit-Policy` lists every policy,
/// `RateLimit` (and the legacy headers) describe the most restrictive one.
pub fn response_headers(style: HeaderStyle, applied: &[Applied]) -> Vec<(&'static str, String)> {
    if style == HeaderStyle::None || applied.is_empty() {
        return Vec::new();
    }
    let policy = applied
        .iter()
        .map(|a| format!("\"{}\";q={};w={}", a.name, a.capacity, a.window_secs))
        .collect::<Vec<_>>()
        .join(", ");
    let tightest = applied
        .iter()
        .min_by_key(|a| (a.outcome.remaining, std::cmp::Reverse(a.outcome.reset_secs)));
    let mut out = vec![("ratelimit-policy", policy)];
    if let Some(t) = tightest {
        out.push((
            "ratelimit",
            format!(
                "\"{}\";r={};t={}",
                t.name, t.outcome.remaining, t.outcome.reset_secs
            ),
        ));
        if style == HeaderStyle::DraftAndLegacy {
            out.push(("x-ratelimit-limit", t.capacity.to_string()));
            out.push(("x-ratelimit-remaining", t.outcome.remaining.to_string()));
            out.push(("x-ratelimit-reset", t.outcome.reset_secs.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fake::FakeStore;
    use serde_json::json;

    const S: u64 = 1_000_000_000;

    fn cfg(v: serde_json::Value) -> RateLimitConfig {
        RateLimitConfig::from_value(v).unwrap()
    }

    fn id(tenant: &str, app: &str, tier: Option<&str>) -> Identity {
        let mut i = Identity::anonymous();
        i.method = AuthMethod::Jwt;
        i.tenant = Some(tenant.into());
        i.app = Some(app.into());
        i.tier = tier.map(str::to_string);
        i
    }

    fn run(
        c: &RateLimitConfig,
        s: &FakeStore,
        ident: Option<&Identity>,
        method: &str,
        path: &str,
        hdrs: &[(&str, &str)],
    ) -> Decision {
        let headers: Vec<(String, String)> = hdrs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        decide(
            c,
            s,
            &Request {
                method,
                path,
                headers: &headers,
                identity: ident,
                source_address: Some("192.0.2.7:5555"),
            },
            100 * S,
        )
    }

    #[test]
    fn all_limits_must_admit_and_a_refusal_drains_nothing() {
        let c = cfg(json!({"limits": [
            {"name": "tenant", "key": "tenant", "rate": {"burst": 10, "refill": 1, "period_seconds": 3600}},
            {"name": "app", "key": "app", "rate": {"burst": 1, "refill": 1, "period_seconds": 3600}}
        ]}));
        let s = FakeStore::default();
        let i = id("acme", "a1", None);
        let d = run(&c, &s, Some(&i), "GET", "/x", &[]);
        assert_eq!(d.verdict.as_ref().unwrap().len(), 2);
        let d = run(&c, &s, Some(&i), "GET", "/x", &[]);
        assert_eq!(d.limited_by.as_deref(), Some("app"));
        let tenant_key = store_key(&c, "tenant", "tenant:acme");
        let st = crate::bucket::State::decode(&s.data.borrow()[&tenant_key].0).unwrap();
        assert_eq!(st.level, 9_000, "the app refusal took no tenant token");
    }

    #[test]
    fn keys_come_from_verified_identity_or_fall_back_to_ip() {
        let c = cfg(
            json!({"limits": [{"name": "t", "key": "tenant", "rate": {"burst": 5, "refill": 1}}]}),
        );
        let s = FakeStore::default();
        run(&c, &s, None, "GET", "/", &[]);
        let anon = Identity::anonymous();
        run(&c, &s, Some(&anon), "GET", "/", &[]);
        let keys: Vec<String> = s.data.borrow().keys().cloned().collect();
        assert_eq!(
            keys,
            vec![store_key(&c, "t", "ip:192.0.2.7")],
            "no shared `tenant:` bucket for anonymous callers"
        );
    }

    #[test]
    fn header_keys_only_for_allow_listed_values() {
        let c = cfg(
            json!({"limits": [{"name": "h", "key": "header", "header": "X-Plan", "values": ["gold"], "rate": {"burst": 5, "refill": 1}}]}),
        );
        let s = FakeStore::default();
        run(&c, &s, None, "GET", "/", &[("x-plan", "gold")]);
        run(&c, &s, None, "GET", "/", &[("x-plan", "random-123")]);
        let mut keys: Vec<String> = s.data.borrow().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![
                store_key(&c, "h", "hdr:gold"),
                store_key(&c, "h", "ip:192.0.2.7")
            ]
        );
    }

    #[test]
    fn xff_is_used_only_with_trusted_hops() {
        let headers = vec![(
            "x-forwarded-for".to_string(),
            "198.51.100.1, 203.0.113.9".to_string(),
        )];
        let req = Request {
            method: "GET",
            path: "/",
            headers: &headers,
            identity: None,
            source_address: Some("10.0.0.1:1"),
        };
        assert_eq!(client_ip(&req, 0).as_deref(), Some("10.0.0.1"));
        assert_eq!(client_ip(&req, 1).as_deref(), Some("203.0.113.9"));
        assert_eq!(client_ip(&req, 2).as_deref(), Some("198.51.100.1"));
        assert_eq!(
            client_ip(&req, 3).as_deref(),
            Some("10.0.0.1"),
            "too few entries: the source address"
        );
        let v6 = Request {
            source_address: Some("[::1]:8080"),
            ..req
        };
        assert_eq!(client_ip(&v6, 0).as_deref(), Some("::1"));
    }

    #[test]
    fn failure_mode_decides_when_the_store_is_contended() {
        for (mode, denied) in [("allow", false), ("deny", true)] {
            let c = cfg(json!({"failure_mode": mode, "max_cas_retries": 1,
                "limits": [{"name": "g", "key": "global", "rate": {"burst": 5, "refill": 1}}]}));
            let s = FakeStore::default();
            run(&c, &s, None, "GET", "/", &[]);
            for _ in 0..4 {
                s.interfere.borrow_mut().push(Box::new(|s: &FakeStore| {
                    let (k, v) = s
                        .data
                        .borrow()
                        .iter()
                        .next()
                        .map(|(k, (v, _))| (k.clone(), v.clone()))
                        .unwrap();
                    s.raw_set(&k, &v);
                }));
            }
            let d = run(&c, &s, None, "GET", "/", &[]);
            assert!(d.failure_mode_used);
            assert_eq!(d.verdict.is_err(), denied, "{mode}");
            if let Err(den) = d.verdict {
                assert_eq!((den.status, den.reason), (503, "limiter_unavailable"));
            }
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = RateLimitConfig::from_value(json!({"limits": [{"name": "x", "key": "header", "header": "h", "rate": {"burst": 1, "refill": 1}}]}))
            .unwrap_err();
        assert_eq!(e.field, "limits[0].values");
        let e = RateLimitConfig::from_value(json!({"limits": [{"name": "x", "key": "tenant"}]}))
            .unwrap_err();
        assert!(
            e.problem.contains("exactly one of `rate` or `quota`"),
            "{e}"
        );
        let e = RateLimitConfig::from_value(
            json!({"limits": [{"name": "x", "key": "cookie", "rate": {"burst": 1, "refill": 1}}]}),
        )
        .unwrap_err();
        assert_eq!(e.field, "limits[0].key");
        let e = RateLimitConfig::from_value(
            json!({"limits": [{"name": "x", "key": "ip", "rate": {"burst": 1, "refil": 1}}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("refil"), "{e}");
    }
}
