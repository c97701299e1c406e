//! The ratelimit decision: which limits apply to a request, with which key and cost, then check
//! them all before taking any (a request one limit refuses drains no other bucket), take them
//! atomically through the [`Store`] port, and describe the result as headers or a 429.

use crate::bucket::{Limit, Outcome};
use crate::config::{CompiledLimit, FailureMode, HeaderStyle, KeySource, RateLimitConfig, Scope};
use crate::global;
use crate::store::{self, Bucket, Charge, TakeError};
use portcullis_core::deny::Denial;
use portcullis_core::identity::{AuthMethod, IdentityView};
use portcullis_core::shared::SharedStore;
use portcullis_core::slots::Secret;
use portcullis_core::{path, push_decimal};
use serde_json::json;

portcullis_core::reasons! {
    /// Every reason code the ratelimit filter answers with.
    pub enum RateLimitReason for "ratelimit" {
        /// A token bucket is empty.
        RateLimited = ("rate_limited", 429),
        /// A fixed-window quota is used up.
        QuotaExceeded = ("quota_exceeded", 429),
        /// Shared data gave no verdict and the failure mode is `deny`.
        LimiterUnavailable = ("limiter_unavailable", 503),
        /// The rate limit service gave no verdict for a global limit and its failure mode is `deny`.
        GlobalLimiterUnavailable = ("global_limiter_unavailable", 503),
    }
}

/// What the limiter looks at.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`.
    pub path: &'a str,
    /// Headers, names lower-cased.
    pub headers: &'a [(String, String)],
    /// Identity authn published (filter state), if any: the parts a limit reads, borrowed.
    pub identity: Option<IdentityView<'a>>,
    /// Envoy's downstream source address (`ip:port` or `ip`), asked for only when a limit
    /// keys by it: in Envoy each read is a host call (about 1 µs, tests/bench/hostcalls.sh), and
    /// a verified caller's limits rarely need it.
    pub source_address: &'a dyn Fn() -> Option<String>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &self.headers)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// What a configuration reads from a request besides the client address. Each is a host call
/// per request in Envoy, so a filter whose limits never look at one does not fetch it (the IP
/// limiter in front of authn reads neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reads {
    /// The identity authn published: some limit keys by it, or has tiers.
    pub identity: bool,
    /// `:method` and `:path`: some limit applies to routes or costs by route.
    pub route: bool,
}

/// What `cfg` reads from a request (see [`Reads`]).
pub fn reads(cfg: &RateLimitConfig) -> Reads {
    Reads {
        identity: !cfg.tenant_tiers.is_empty()
            || cfg.limits.iter().any(|l| {
                !l.tiers.is_empty()
                    || matches!(
                        l.key,
                        KeySource::Tenant | KeySource::App | KeySource::Subject
                    )
            }),
        route: cfg.limits.iter().any(by_route),
    }
}

fn by_route(l: &CompiledLimit) -> bool {
    !l.routes.is_empty() || !l.route_costs.is_empty()
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
    /// Shared-data keys this request created (each limit's table bounds them).
    pub slots_created: u32,
}

/// The client's key: the address Envoy established as the downstream client
/// (`source.address`, which follows `use_remote_address` / `xff_num_trusted_hops`; never a
/// header), cut to its prefix — one IPv6 client usually controls a whole /64, so keying single
/// addresses would hand it 2^64 buckets.
pub fn client_ip(source_address: Option<&str>, v4_prefix: u8, v6_prefix: u8) -> Option<String> {
    let host = host_of(source_address?);
    let ip: std::net::IpAddr = match host.parse() {
        Ok(ip) => ip,
        // Not an address (a pipe, an internal listener): one key for all such callers.
        Err(_) => return Some("other".into()),
    };
    Some(match ip {
        std::net::IpAddr::V4(v4) if v4_prefix >= 32 => dotted(v4),
        std::net::IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(v4_prefix)).unwrap_or(0);
            format!(
                "{}/{v4_prefix}",
                std::net::Ipv4Addr::from(u32::from(v4) & mask)
            )
        }
        std::net::IpAddr::V6(v6) => {
            // An IPv4-mapped address is an IPv4 client.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return client_ip(Some(&v4.to_string()), v4_prefix, v6_prefix);
            }
            if v6_prefix >= 128 {
                v6.to_string()
            } else {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(v6_prefix))
                    .unwrap_or(0);
                format!(
                    "{}/{v6_prefix}",
                    std::net::Ipv6Addr::from(u128::from(v6) & mask)
                )
            }
        }
    })
}

/// The address part of `1.2.3.4:5678`, `[::1]:5678`, or a bare address.
fn host_of(src: &str) -> &str {
    if let Some(rest) = src.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match src.rsplit_once(':') {
            Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
            _ => src,
        }
    }
}

/// `a.b.c.d`, as `Display` writes it, without the formatting machinery (once per request for a
/// per-IP limit).
fn dotted(v4: std::net::Ipv4Addr) -> String {
    dotted_after(String::with_capacity(15), v4)
}

/// `s` followed by `a.b.c.d`.
fn dotted_after(mut s: String, v4: std::net::Ipv4Addr) -> String {
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        push_decimal(&mut s, u64::from(o));
    }
    s
}

/// The store key of the client's address (`ip:` and [`client_ip`]'s answer). The common case, a
/// whole IPv4 address (`ip:192.0.2.7`), is written into one allocation: `client_ip` then a
/// prefixed copy took two, on every request of a per-IP limit.
fn client_key(source_address: Option<&str>, v4_prefix: u8, v6_prefix: u8) -> Option<String> {
    if v4_prefix >= 32 {
        if let Some(Ok(v4)) = source_address.map(|s| host_of(s).parse::<std::net::Ipv4Addr>()) {
            let mut k = String::with_capacity(18);
            k.push_str("ip:");
            return Some(dotted_after(k, v4));
        }
    }
    client_ip(source_address, v4_prefix, v6_prefix).map(|ip| ["ip:", &ip].concat())
}

/// The key of a limit for this request. Identity keys come only from a verified identity; a
/// request without one falls back to its IP, so it never shares a bucket with everyone else.
/// `ip` is the client's key, worked out on first use (a verified caller's keys rarely need it).
fn key_for(
    l: &CompiledLimit,
    req: &Request<'_>,
    route: usize,
    ip: &dyn Fn() -> Option<String>,
) -> Option<String> {
    let verified = req.identity.filter(|i| i.method != AuthMethod::Anonymous);
    let pick = |v: Option<&str>, kind: &str| match v.filter(|v| !v.is_empty()) {
        Some(v) => {
            let mut k = String::with_capacity(kind.len() + 1 + v.len());
            k.push_str(kind);
            k.push(':');
            k.push_str(v);
            Some(k)
        }
        None => ip(),
    };
    match &l.key {
        KeySource::Global => Some("global".into()),
        KeySource::Tenant => pick(verified.and_then(|i| i.tenant), "tenant"),
        KeySource::App => pick(verified.and_then(|i| i.app), "app"),
        KeySource::Subject => pick(verified.and_then(|i| i.subject), "sub"),
        KeySource::Ip => ip(),
        KeySource::Route => Some(format!("route:{route}")),
        KeySource::Header { name, values } => {
            let v = req.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
            pick(v.filter(|v| values.contains(v)).map(String::as_str), "hdr")
        }
    }
}

/// The tier of a request: a per-tenant override, else the identity's own tier.
fn tier<'c>(cfg: &'c RateLimitConfig, req: &Request<'c>) -> Option<&'c str> {
    let id = req.identity?;
    id.tenant
        .and_then(|t| cfg.tenant_tiers.get(t))
        .map(String::as_str)
        .or(id.tier)
}

/// One applicable limit of one request: which key, which amount, what it costs.
struct Planned<'c> {
    /// Index of the limit in the configuration.
    index: usize,
    limit: &'c CompiledLimit,
    /// Store-style key (`tenant:acme`, `ip:192.0.2.7`, `global`).
    key: String,
    amount: Limit,
    cost: u64,
    /// The caller's tier when this limit defines an amount for it.
    tier: Option<&'c str>,
    /// Where a local limit's bucket lives.
    bucket: Bucket<'c>,
}

fn plan<'c>(cfg: &'c RateLimitConfig, secret: &Secret, req: &Request<'c>) -> Vec<Planned<'c>> {
    // Only limits with routes or route costs look at the path: normalise it for them alone.
    let normalized = if cfg.limits.iter().any(by_route) {
        path::normalize_cow(req.path).unwrap_or(std::borrow::Cow::Borrowed(req.path))
    } else {
        std::borrow::Cow::Borrowed("")
    };
    let ip_cell = std::cell::OnceCell::new();
    let ip = || {
        ip_cell
            .get_or_init(|| {
                client_key(
                    (req.source_address)().as_deref(),
                    cfg.ipv4_prefix,
                    cfg.ipv6_prefix,
                )
            })
            .clone()
    };
    let tier = tier(cfg, req);
    let mut plan = Vec::with_capacity(cfg.limits.len());
    for (index, l) in cfg.limits.iter().enumerate() {
        // The covering route's index is the `route` key: bounded by config, never by the path.
        let route = if l.routes.is_empty() {
            Some(0)
        } else {
            l.routes
                .iter()
                .position(|m| m.matches(req.method, &normalized).is_some())
        };
        let Some(route) = route else { continue };
        let cost = if l.route_costs.is_empty() {
            l.cost
        } else {
            l.route_costs
                .find(req.method, &normalized)
                .map_or(l.cost, |m| *m.route)
        };
        let Some(key) = key_for(l, req, route, &ip) else {
            continue;
        };
        let tier = tier.filter(|t| l.tiers.contains_key(*t));
        let (amount, table) = l.amount(tier);
        let bucket = Bucket {
            table,
            slot: table.locate(secret, key.as_bytes()),
            limit: amount,
        };
        plan.push(Planned {
            index,
            limit: l,
            key,
            amount,
            cost,
            tier,
            bucket,
        });
    }
    plan
}

/// Decides one request at `now_ns` with every limit — global ones included — kept in `store`.
/// This is what the policy simulator runs (`portcullis test`, `explain`): the arithmetic of a
/// global limit is the same, only its state is elsewhere.
pub fn decide(
    cfg: &RateLimitConfig,
    store: &dyn SharedStore,
    secret: &Secret,
    req: &Request<'_>,
    now_ns: u64,
) -> Decision {
    let all = plan(cfg, secret, req);
    run_local(cfg, store, &all, now_ns).0
}

/// Decides the local limits of one request at `now_ns`; when they admit it and global limits
/// apply, [`Decision::global`] holds the call to make to the rate limit service (local limits
/// first, so a burst is cut before any network call).
pub fn decide_with_service(
    cfg: &RateLimitConfig,
    store: &dyn SharedStore,
    secret: &Secret,
    req: &Request<'_>,
    now_ns: u64,
) -> Decision {
    let all = plan(cfg, secret, req);
    // Without global limits (no `global` section: config refuses a global limit without one)
    // every planned limit is local: no partition, no two more vectors per request.
    let (global, local): (Vec<Planned<'_>>, Vec<Planned<'_>>) = if cfg.global.is_some() {
        all.into_iter()
            .partition(|p| p.limit.scope == Scope::Global)
    } else {
        (Vec::new(), all)
    };
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
/// what was taken (to give back if a later decision refuses the request).
fn run_local(
    cfg: &RateLimitConfig,
    store: &dyn SharedStore,
    plan: &[Planned<'_>],
    now_ns: u64,
) -> (Decision, Vec<Charge>) {
    let mut d = Decision {
        verdict: Ok(Vec::new()),
        limited_by: None,
        cas_retries: 0,
        failure_mode_used: false,
        global: None,
        slots_created: 0,
    };
    let fail = |d: &mut Decision| {
        d.failure_mode_used = true;
        if cfg.failure_mode == FailureMode::Deny {
            d.verdict = Err(unavailable());
        }
    };
    // Phase 1: check every limit without writing; the first refusal decides. What each read
    // returned is where its take starts: one read and one write per limit, unless contended.
    let mut snapshots = Vec::with_capacity(plan.len());
    for p in plan {
        match store::peek_snapshot(store, &p.bucket, now_ns, p.cost) {
            Ok((o, _)) if !o.allowed => {
                d.limited_by = Some(p.limit.name.clone());
                d.verdict = Err(too_many(&p.limit.name, &p.amount, &o, cfg.headers));
                return (d, Vec::new());
            }
            Ok((_, snapshot)) => snapshots.push(Some(snapshot)),
            Err(_) => {
                fail(&mut d);
                return (d, Vec::new());
            }
        }
    }
    // Phase 2: take them all; if a race made one refuse, give back what was taken.
    let mut applied = Vec::with_capacity(plan.len());
    let mut taken: Vec<Charge> = Vec::with_capacity(plan.len());
    let give_back = |taken: &[Charge]| {
        for c in taken {
            c.refund(cfg, store, now_ns);
        }
    };
    for (p, snapshot) in plan.iter().zip(snapshots) {
        let t = store::take_from(
            store,
            &p.bucket,
            now_ns,
            p.cost,
            cfg.max_cas_retries,
            snapshot,
        );
        d.cas_retries += t.retries;
        d.slots_created += u32::from(t.created_slot);
        match t.result {
            Ok(o) if o.allowed => {
                taken.push(Charge {
                    limit: p.index,
                    tier: p.tier.map(str::to_string),
                    slot: p.bucket.slot.clone(),
                    amount: p.amount,
                    cost: p.cost,
                });
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

/// The refusal when the limiter cannot decide and the failure mode is `deny`.
pub fn unavailable() -> Denial {
    Denial::of(
        RateLimitReason::LimiterUnavailable,
        "The rate limiter could not decide; retry shortly.",
    )
    .with_header("retry-after", "1")
}

/// The 429 of a limit that refused, with its headers and `Retry-After`.
pub fn too_many(name: &str, amount: &Limit, o: &Outcome, style: HeaderStyle) -> Denial {
    let (reason, detail) = match amount {
        Limit::Bucket { .. } => (
            RateLimitReason::RateLimited,
            "Too many requests; slow down and retry after the indicated time.",
        ),
        Limit::Quota { .. } => (
            RateLimitReason::QuotaExceeded,
            "The quota for this window is used up; retry after it resets.",
        ),
    };
    let applied = Applied {
        name: name.to_string(),
        capacity: amount.capacity(),
        window_secs: amount.window_secs(),
        outcome: *o,
    };
    let mut d = Denial::of(reason, detail)
        .with_header("retry-after", o.retry_after_secs.to_string())
        .with_member("policy", json!(name));
    for (k, v) in response_headers(style, std::slice::from_ref(&applied)) {
        d = d.with_header(k, v);
    }
    d
}

/// The most restrictive of the applied limits: fewest units left, then the latest reset.
pub fn tightest(applied: &[Applied]) -> Option<&Applied> {
    applied
        .iter()
        .min_by_key(|a| (a.outcome.remaining, std::cmp::Reverse(a.outcome.reset_secs)))
}

/// This instance's part of the audit record: the limit that decided (the one that refused, or
/// the tightest one that admitted) and the units it has left (`0` on a refusal).
pub fn audit_fields(verdict: Result<&[Applied], Option<&str>>) -> Option<(String, u64)> {
    match verdict {
        Ok(applied) => tightest(applied).map(|t| (t.name.clone(), t.outcome.remaining)),
        Err(limited_by) => limited_by.map(|n| (n.to_string(), 0)),
    }
}

/// Rate-limit headers for the applied limits: `RateLimit-Policy` lists every policy,
/// `RateLimit` (and the legacy headers) describe the most restrictive one.
pub fn response_headers(style: HeaderStyle, applied: &[Applied]) -> Vec<(&'static str, String)> {
    let mut values = HeaderValues::default();
    write_response_headers(style, applied, &mut values);
    values.iter().map(|(k, v)| (k, v.to_string())).collect()
}

/// Response header values written one after another into one string: what an allowed request
/// keeps until its response (one allocation for the text, where a `String` per header was
/// five on every request with draft and legacy headers).
#[derive(Debug, Default, Clone)]
pub struct HeaderValues {
    text: String,
    /// Each header's name and where its value ends in `text` (it starts where the previous
    /// one ends).
    ends: Vec<(&'static str, usize)>,
}

impl HeaderValues {
    /// The headers in order, with their values.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&(name, end)| {
            let v = self.text.get(start..end).unwrap_or_default();
            start = end;
            (name, v)
        })
    }

    /// True when there is no header.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Ends the value being written as header `name`'s.
    fn end(&mut self, name: &'static str) {
        self.ends.push((name, self.text.len()));
    }
}

/// [`response_headers`], written into `out` (replacing what it held).
pub fn write_response_headers(style: HeaderStyle, applied: &[Applied], out: &mut HeaderValues) {
    out.text.clear();
    out.ends.clear();
    if style == HeaderStyle::None || applied.is_empty() {
        return;
    }
    // Built with pushes, not `format!`: these are written on every allowed request.
    // `"name";q=10;w=60`, or with `r=`/`t=` for the `RateLimit` field.
    let item = |out: &mut String, name: &str, (k1, v1): (&str, u64), (k2, v2): (&str, u64)| {
        out.push('"');
        out.push_str(name);
        out.push_str("\";");
        out.push_str(k1);
        push_decimal(out, v1);
        out.push(';');
        out.push_str(k2);
        push_decimal(out, v2);
    };
    out.text.reserve(applied.len() * 32 + 96);
    out.ends.reserve(5);
    for (i, a) in applied.iter().enumerate() {
        if i > 0 {
            out.text.push_str(", ");
        }
        item(
            &mut out.text,
            &a.name,
            ("q=", a.capacity),
            ("w=", a.window_secs),
        );
    }
    out.end("ratelimit-policy");
    if let Some(t) = tightest(applied) {
        let (r, reset) = (t.outcome.remaining, t.outcome.reset_secs);
        item(&mut out.text, &t.name, ("r=", r), ("t=", reset));
        out.end("ratelimit");
        if style == HeaderStyle::DraftAndLegacy {
            push_decimal(&mut out.text, t.capacity);
            out.end("x-ratelimit-limit");
            push_decimal(&mut out.text, r);
            out.end("x-ratelimit-remaining");
            push_decimal(&mut out.text, reset);
            out.end("x-ratelimit-reset");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::identity::Identity;
    use portcullis_core::shared::memory::{Fault, MemoryStore as FakeStore};
    use serde_json::json;

    const SECRET: Secret = Secret::from_bytes([9; 16]);

    /// The shared-data key and fingerprint of a limit's key (default amount).
    fn slot_of(c: &RateLimitConfig, limit: &str, key: &str) -> portcullis_core::slots::Slot {
        let l = c.limits.iter().find(|l| l.name == limit).unwrap();
        l.table.locate(&SECRET, key.as_bytes())
    }

    /// Units left for a limit's key, read back from the store.
    fn left(c: &RateLimitConfig, s: &FakeStore, limit: &str, key: &str) -> Option<u64> {
        let l = c.limits.iter().find(|l| l.name == limit).unwrap();
        let b = Bucket {
            table: &l.table,
            slot: slot_of(c, limit, key),
            limit: l.limit,
        };
        s.value(&b.slot.key)?;
        Some(store::peek(s, &b, 100 * S, 0).unwrap().remaining)
    }

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
            &SECRET,
            &Request {
                method,
                path,
                headers: &headers,
                identity: ident.map(Identity::view),
                source_address: &|| Some("192.0.2.7:5555".into()),
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
        assert_eq!(
            left(&c, &s, "tenant", "tenant:acme"),
            Some(9),
            "the app refusal took no tenant token"
        );
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
        assert_eq!(
            left(&c, &s, "t", "ip:192.0.2.7"),
            Some(3),
            "both fell back to the IP"
        );
        assert_eq!(
            s.len(),
            1,
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
        assert_eq!(left(&c, &s, "h", "hdr:gold"), Some(4));
        assert_eq!(left(&c, &s, "h", "ip:192.0.2.7"), Some(4));
        assert_eq!(
            left(&c, &s, "h", "hdr:random-123"),
            None,
            "no key from client input"
        );
    }

    #[test]
    fn clients_are_keyed_by_envoys_address_and_prefix() {
        let ip = |src: &str, v4: u8, v6: u8| client_ip(Some(src), v4, v6);
        assert_eq!(ip("10.0.0.1:1", 32, 64).as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("10.1.2.3:1", 24, 64).as_deref(), Some("10.1.2.0/24"));
        assert_eq!(
            ip("[2001:db8:1:2:3:4:5:6]:443", 32, 64).as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            ip("[2001:db8:1:2:ffff::1]:443", 32, 64),
            ip("[2001:db8:1:2::9]:1", 32, 64),
            "one /64, one bucket"
        );
        assert_eq!(ip("[::1]:8080", 32, 128).as_deref(), Some("::1"));
        assert_eq!(
            ip("[::ffff:192.0.2.9]:1", 32, 64).as_deref(),
            Some("192.0.2.9"),
            "IPv4-mapped"
        );
        assert_eq!(ip("envoy://internal", 32, 64).as_deref(), Some("other"));
        assert_eq!(client_ip(None, 32, 64), None);
    }

    #[test]
    fn every_ipv4_address_is_keyed_as_display_writes_it() {
        for (a, b, c, d) in [
            (0, 0, 0, 0),
            (255, 255, 255, 255),
            (10, 0, 100, 9),
            (192, 0, 2, 7),
        ] {
            let v4 = std::net::Ipv4Addr::new(a, b, c, d);
            assert_eq!(dotted(v4), v4.to_string());
            assert_eq!(
                client_ip(Some(&format!("{v4}:9")), 32, 64),
                Some(v4.to_string())
            );
        }
    }

    #[test]
    fn rate_limit_headers_describe_every_policy_and_the_tightest_limit() {
        let applied = |name: &str, capacity, window_secs, remaining, reset_secs| Applied {
            name: name.into(),
            capacity,
            window_secs,
            outcome: Outcome {
                allowed: true,
                remaining,
                reset_secs,
                retry_after_secs: 0,
                next: crate::bucket::State { level: 0, stamp: 0 },
            },
        };
        let both = [
            applied("tenant", 200, 2, 150, 1),
            applied("app", 100, 1, 7, 12),
        ];
        let h = response_headers(HeaderStyle::DraftAndLegacy, &both);
        let want = [
            ("ratelimit-policy", r#""tenant";q=200;w=2, "app";q=100;w=1"#),
            ("ratelimit", r#""app";r=7;t=12"#),
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "7"),
            ("x-ratelimit-reset", "12"),
        ];
        let got: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(got, want);
        assert_eq!(response_headers(HeaderStyle::Draft, &both).len(), 2);
        assert!(response_headers(HeaderStyle::None, &both).is_empty());
    }

    #[test]
    fn forwarding_headers_never_change_the_key() {
        let c = cfg(
            json!({"limits": [{"name": "ip", "key": "ip", "rate": {"burst": 1, "refill": 1, "period_seconds": 3600}}]}),
        );
        let s = FakeStore::default();
        assert!(run(&c, &s, None, "GET", "/", &[]).verdict.is_ok());
        for (h, v) in [
            ("x-forwarded-for", "203.0.113.5"),
            ("x-real-ip", "203.0.113.6"),
            ("forwarded", "for=203.0.113.7"),
        ] {
            let d = run(&c, &s, None, "GET", "/", &[(h, v)]);
            assert_eq!(
                d.limited_by.as_deref(),
                Some("ip"),
                "{h} minted no fresh bucket"
            );
        }
    }

    #[test]
    fn failure_mode_decides_when_the_store_is_contended() {
        for (mode, denied) in [("allow", false), ("deny", true)] {
            let c = cfg(json!({"failure_mode": mode, "max_cas_retries": 1,
                "limits": [{"name": "g", "key": "global", "rate": {"burst": 5, "refill": 1}}]}));
            let s = FakeStore::default();
            run(&c, &s, None, "GET", "/", &[]);
            for _ in 0..4 {
                s.fault_next_set(Fault::Bump);
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
        let e = RateLimitConfig::from_value(
            json!({"trusted_hops": 1, "limits": [{"name": "x", "key": "ip", "rate": {"burst": 1, "refill": 1}}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("gateway.yaml"), "{e}");
    }
}
