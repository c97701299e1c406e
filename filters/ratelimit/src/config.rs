//! ratelimit configuration: named limits, each keyed by a verified identity field, the client
//! IP, an allow-listed header, the route, or one global key; compiled once.

use crate::bucket::Limit;
use portcullis_core::config::ConfigError;
use portcullis_core::route::{MatchSpec, RouteMatcher, RouteTable};
use portcullis_core::slots::SlotTable;
use serde::Deserialize;
use std::collections::BTreeMap;

pub use portcullis_core::config::Mode;

/// What to do when the store gives no verdict (CAS retries exhausted, host error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Let the request through and count it (default: a limiter fault must not take the API down).
    #[default]
    Allow,
    /// Refuse with 503 `limiter_unavailable`.
    Deny,
}

/// Where a limit's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// In this Envoy's shared data: exact across its workers, per gateway replica.
    #[default]
    Local,
    /// In the rate limit service (Redis): one quota across every gateway replica.
    Global,
}

/// The rate limit service that holds `scope: global` limits, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGlobal {
    /// Envoy cluster (HTTP/2) of the rate limit service (default `portcullis_rls`).
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// RLS domain (default `portcullis.<stat_prefix>`): one per filter instance.
    #[serde(default)]
    pub domain: Option<String>,
    /// How long a request waits for the service before the failure mode decides (default 100).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// When the service gives no verdict (error, timeout, unusable answer); default: the
    /// instance's `failure_mode`.
    #[serde(default)]
    pub failure_mode: Option<FailureMode>,
}

fn default_cluster() -> String {
    "portcullis_rls".into()
}
fn default_timeout_ms() -> u64 {
    100
}

/// The compiled rate limit service settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalConfig {
    /// Envoy cluster.
    pub cluster: String,
    /// RLS domain.
    pub domain: String,
    /// Call timeout.
    pub timeout_ms: u64,
    /// Failure mode for service faults.
    pub failure_mode: FailureMode,
}

/// Largest `burst × period_seconds` of a global token bucket: the service's arithmetic runs in
/// Redis' Lua, whose numbers are doubles, and stays exact while `burst × 1000 × period in µs`
/// fits in 2^53.
pub const MAX_GLOBAL_BURST_PERIOD: u64 = 9_000_000;
/// Largest global quota (exact in a double with room for any cost).
pub const MAX_GLOBAL_QUOTA: u64 = 1_000_000_000_000;

/// Which rate-limit headers to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeaderStyle {
    /// None.
    None,
    /// IETF draft `RateLimit-Policy` and `RateLimit`.
    #[default]
    Draft,
    /// The draft headers plus `X-RateLimit-Limit/Remaining/Reset`.
    DraftAndLegacy,
}

/// Where a limit's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// One key for everyone.
    Global,
    /// The verified tenant.
    Tenant,
    /// The verified app / client id.
    App,
    /// The verified subject.
    Subject,
    /// The client IP as Envoy established it (`source.address`), by prefix.
    Ip,
    /// The covering entry of the limit's `routes` (by position): one bucket per route.
    Route,
    /// A header, only for values in the allow-list (others fall back).
    Header {
        /// Lower-case header name.
        name: String,
        /// Accepted values: client input never creates new keys.
        values: Vec<String>,
    },
}

/// A rate or quota as written.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    /// Bucket capacity.
    pub burst: u64,
    /// Tokens refilled per `period_seconds`.
    pub refill: u64,
    /// Refill period (default 1 s).
    #[serde(default = "one")]
    pub period_seconds: u64,
}

fn one() -> u64 {
    1
}

/// Quota windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// 60 s.
    Minute,
    /// 3600 s.
    Hour,
    /// 86400 s.
    Day,
}

/// A quota as written.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    /// Units per window.
    pub limit: u64,
    /// Window.
    pub window: Window,
}

/// A limit's amount: exactly one of `rate` or `quota`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmount {
    /// Token bucket.
    pub rate: Option<RawRate>,
    /// Fixed-window quota.
    pub quota: Option<RawQuota>,
}

impl RawAmount {
    /// Checks and compiles the amount (the rate limit service compiles its copy the same way).
    pub fn compile(&self) -> Result<Limit, ConfigError> {
        match (self.rate, self.quota) {
            (Some(r), None) => {
                if r.burst == 0 || r.period_seconds == 0 {
                    return Err(ConfigError::new(
                        "rate",
                        "burst and period_seconds must be at least 1",
                    ));
                }
                if r.burst > 1_000_000_000 {
                    return Err(ConfigError::new("rate.burst", "at most 1e9"));
                }
                Ok(Limit::Bucket {
                    burst: r.burst,
                    refill: r.refill,
                    period_secs: r.period_seconds,
                })
            }
            (None, Some(q)) => {
                let window_secs = match q.window {
                    Window::Minute => 60,
                    Window::Hour => 3_600,
                    Window::Day => 86_400,
                };
                Ok(Limit::Quota {
                    limit: q.limit,
                    window_secs,
                })
            }
            _ => Err(ConfigError::new(
                "",
                "exactly one of `rate` or `quota` is required",
            )),
        }
    }
}

/// A route-specific cost as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    /// Which requests.
    #[serde(rename = "match")]
    pub matcher: MatchSpec,
    /// Units they cost.
    pub cost: u64,
}

/// One named limit as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// Name, shown in headers, 429 bodies and metrics.
    pub name: String,
    /// `local` (default: this Envoy's shared data) or `global` (the rate limit service).
    #[serde(default)]
    pub scope: Scope,
    /// `global`, `tenant`, `app`, `subject`, `ip`, `route` or `header`.
    pub key: String,
    /// For `key: header`: the header name.
    #[serde(default)]
    pub header: Option<String>,
    /// For `key: header`: accepted values.
    #[serde(default)]
    pub values: Vec<String>,
    /// Token bucket (exactly one of `rate`, `quota`).
    #[serde(default)]
    pub rate: Option<RawRate>,
    /// Fixed-window quota.
    #[serde(default)]
    pub quota: Option<RawQuota>,
    /// Per-tier amounts, chosen by the identity's tier (or `tenant_tiers`).
    #[serde(default)]
    pub tiers: BTreeMap<String, RawAmount>,
    /// Requests covered (default: all).
    #[serde(default)]
    pub routes: Vec<MatchSpec>,
    /// Default cost of a request (default 1).
    #[serde(default = "one")]
    pub cost: u64,
    /// Costs of particular routes (first match wins), e.g. an export costs 10.
    #[serde(default)]
    pub route_costs: Vec<RawCost>,
    /// The amount while the gateway is in emergency mode (`portcullis emergency on`): it
    /// replaces the default amount and every tier. Limits without one keep their amounts.
    #[serde(default)]
    pub emergency: Option<RawAmount>,
}

/// The configuration as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Write this filter's audit fields (filter state the access log reads) on every request.
    /// `portcullis render --audit-log` turns it on; off, the request path makes no such writes.
    #[serde(default)]
    pub audit: bool,
    /// Emergency mode: each limit's `emergency` amount is in force. `portcullis render` /
    /// `apply` / `emergency on` set it from the reload directory's state; policies leave it out.
    #[serde(default)]
    pub emergency: bool,
    /// `enforce` or `shadow`.
    #[serde(default)]
    pub mode: Mode,
    /// Metric prefix and shared-data namespace (default `ratelimit`); give each instance its own.
    #[serde(default = "default_prefix")]
    pub stat_prefix: String,
    /// Store failures (default `allow`).
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// CAS retries before the failure mode decides (default 16).
    #[serde(default = "default_retries")]
    pub max_cas_retries: u32,
    /// Headers sent (default `draft`).
    #[serde(default)]
    pub headers: HeaderStyle,
    /// No longer a filter setting: who the client is is Envoy's decision (`source.address`,
    /// from `use_remote_address` and `xff_num_trusted_hops`). Accepted only to explain that.
    #[serde(default)]
    pub trusted_hops: Option<serde::de::IgnoredAny>,
    /// Keys each limit (per tier) can hold at once; the shared data a limit can ever use is
    /// bounded by this, whatever clients send (default 65536).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// IPv4 clients are keyed by this prefix length (default 32: one address).
    #[serde(default = "default_v4_prefix")]
    pub ipv4_prefix: u8,
    /// IPv6 clients are keyed by this prefix length (default 64: one subnet, as a single
    /// IPv6 client usually controls a whole /64).
    #[serde(default = "default_v6_prefix")]
    pub ipv6_prefix: u8,
    /// Tier per tenant, overriding the identity's own tier.
    #[serde(default)]
    pub tenant_tiers: BTreeMap<String, String>,
    /// The rate limit service for `scope: global` limits (defaults apply when omitted).
    #[serde(default)]
    pub global: Option<RawGlobal>,
    /// Limits; a request passes only if every applicable one admits it.
    pub limits: Vec<RawLimit>,
}

fn default_prefix() -> String {
    "ratelimit".into()
}
fn default_retries() -> u32 {
    16
}
fn default_max_keys() -> usize {
    65_536
}
fn default_v4_prefix() -> u8 {
    32
}
fn default_v6_prefix() -> u8 {
    64
}

/// Entries per shared-data slot of a limit's key table.
pub const WAYS: usize = 8;

/// A compiled limit.
#[derive(Debug)]
pub struct CompiledLimit {
    /// Name.
    pub name: String,
    /// Local or global.
    pub scope: Scope,
    /// Key source.
    pub key: KeySource,
    /// Default amount.
    pub limit: Limit,
    /// Per-tier amounts.
    pub tiers: BTreeMap<String, Limit>,
    /// Covered routes (empty: all).
    pub routes: Vec<RouteMatcher>,
    /// Default cost.
    pub cost: u64,
    /// Route costs.
    pub route_costs: RouteTable<u64>,
    /// Where the keys of the default amount live (bounded).
    pub table: SlotTable,
    /// Where the keys of each tier live: entries of one table share one amount, so a
    /// collision charges a bucket of the same size.
    pub tier_tables: BTreeMap<String, SlotTable>,
}

impl CompiledLimit {
    /// The amount and key table for a tier (the default when the tier has no amount).
    pub fn amount(&self, tier: Option<&str>) -> (Limit, &SlotTable) {
        match tier.and_then(|t| Some((self.tiers.get(t)?, self.tier_tables.get(t)?))) {
            Some((l, t)) => (*l, t),
            None => (self.limit, &self.table),
        }
    }
}

/// The compiled configuration.
#[derive(Debug)]
pub struct RateLimitConfig {
    /// Audit fields written per request (`audit` as written).
    pub audit: portcullis_core::audit::Recorder,
    /// Emergency mode is on: the limits with an `emergency` amount are compiled to it.
    pub emergency: bool,
    /// Mode.
    pub mode: Mode,
    /// Prefix.
    pub stat_prefix: String,
    /// Failure mode.
    pub failure_mode: FailureMode,
    /// CAS retries.
    pub max_cas_retries: u32,
    /// Headers.
    pub headers: HeaderStyle,
    /// IPv4 key prefix length.
    pub ipv4_prefix: u8,
    /// IPv6 key prefix length.
    pub ipv6_prefix: u8,
    /// Keys per limit and tier.
    pub max_keys: usize,
    /// Tenant tier overrides.
    pub tenant_tiers: BTreeMap<String, String>,
    /// Limits.
    pub limits: Vec<CompiledLimit>,
    /// The rate limit service, when any limit is global.
    pub global: Option<GlobalConfig>,
}

/// Refuses amounts the service's Lua arithmetic cannot hold exactly.
fn check_global_amount(l: &Limit) -> Result<(), ConfigError> {
    match *l {
        Limit::Bucket {
            burst, period_secs, ..
        } if burst.saturating_mul(period_secs) > MAX_GLOBAL_BURST_PERIOD => Err(ConfigError::new(
            "rate",
            format!(
                "a global token bucket needs burst × period_seconds ≤ {MAX_GLOBAL_BURST_PERIOD}; \
                 use a quota for long windows"
            ),
        )),
        Limit::Quota { limit, .. } if limit > MAX_GLOBAL_QUOTA => Err(ConfigError::new(
            "quota.limit",
            format!("a global quota is at most {MAX_GLOBAL_QUOTA}"),
        )),
        _ => Ok(()),
    }
}

/// A domain or cluster name: printable ASCII without spaces or `|` (the service's key
/// separator), at most 100 bytes.
fn valid_service_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_graphic() && b != b'|')
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl RateLimitConfig {
    /// Parses raw plugin configuration and compiles it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::compile(portcullis_core::config::parse(bytes)?)
    }

    /// Compiles a JSON value.
    pub fn from_value(v: serde_json::Value) -> Result<Self, ConfigError> {
        Self::compile(portcullis_core::config::from_value(v)?)
    }

    /// Compiles a raw configuration.
    pub fn compile(raw: RawConfig) -> Result<Self, ConfigError> {
        if !valid_name(&raw.stat_prefix) {
            return Err(ConfigError::new(
                "stat_prefix",
                "letters, digits, `-` and `_` only",
            ));
        }
        if raw.trusted_hops.is_some() {
            return Err(ConfigError::new(
                "trusted_hops",
                "moved: the client address is Envoy's decision — set `trusted_hops` in \
                 policies/gateway.yaml (rendered as xff_num_trusted_hops); the filter keys \
                 clients by Envoy's source.address",
            ));
        }
        if raw.ipv4_prefix == 0 || raw.ipv4_prefix > 32 {
            return Err(ConfigError::new("ipv4_prefix", "between 1 and 32"));
        }
        if raw.ipv6_prefix == 0 || raw.ipv6_prefix > 128 {
            return Err(ConfigError::new("ipv6_prefix", "between 1 and 128"));
        }
        if raw.max_keys == 0 || raw.max_keys > 16_777_216 {
            return Err(ConfigError::new("max_keys", "between 1 and 16777216"));
        }
        let table = |limit: &str, tier: Option<&str>| {
            let prefix = match tier {
                Some(t) => format!("portcullis.{}.{limit}.tier.{t}", raw.stat_prefix),
                None => format!("portcullis.{}.{limit}", raw.stat_prefix),
            };
            SlotTable::new(prefix, raw.max_keys, WAYS, crate::bucket::STATE_BYTES)
        };
        let mut limits = Vec::new();
        for (i, l) in raw.limits.iter().enumerate() {
            let at = format!("limits[{i}]");
            if !valid_name(&l.name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    "letters, digits, `-` and `_` only (it is a header token)",
                ));
            }
            if limits.iter().any(|c: &CompiledLimit| c.name == l.name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate limit `{}`", l.name),
                ));
            }
            let key = match l.key.as_str() {
                "global" => KeySource::Global,
                "tenant" => KeySource::Tenant,
                "app" => KeySource::App,
                "subject" => KeySource::Subject,
                "ip" => KeySource::Ip,
                "route" => KeySource::Route,
                "header" => {
                    let Some(name) = &l.header else {
                        return Err(ConfigError::new(
                            format!("{at}.header"),
                            "required with `key: header`",
                        ));
                    };
                    if l.values.is_empty() {
                        return Err(ConfigError::new(
                            format!("{at}.values"),
                            "`key: header` needs an allow-list of values (client input must not create keys)",
                        ));
                    }
                    KeySource::Header {
                        name: name.to_ascii_lowercase(),
                        values: l.values.clone(),
                    }
                }
                other => {
                    return Err(ConfigError::new(
                        format!("{at}.key"),
                        format!(
                        "unknown key `{other}` (global, tenant, app, subject, ip, route, header)"
                    ),
                    ))
                }
            };
            let limit = RawAmount {
                rate: l.rate,
                quota: l.quota,
            }
            .compile()
            .map_err(|e| e.within(&at))?;
            let mut tiers = BTreeMap::new();
            let mut tier_tables = BTreeMap::new();
            for (t, a) in &l.tiers {
                if !valid_name(t) {
                    return Err(ConfigError::new(
                        format!("{at}.tiers.{t}"),
                        "tier names: letters, digits, `-` and `_` only",
                    ));
                }
                tiers.insert(
                    t.clone(),
                    a.compile()
                        .map_err(|e| e.within(&format!("{at}.tiers.{t}")))?,
                );
                tier_tables.insert(t.clone(), table(&l.name, Some(t)));
            }
            // Compiled whether or not the mode is on, so a policy is checked before anyone needs it.
            let emergency = match &l.emergency {
                Some(_) if l.scope == Scope::Global => {
                    return Err(ConfigError::new(
                        format!("{at}.emergency"),
                        "only `scope: local` limits have an emergency amount (the rate limit service keeps its own amounts)",
                    ));
                }
                Some(a) => Some(
                    a.compile()
                        .map_err(|e| e.within(&format!("{at}.emergency")))?,
                ),
                None => None,
            };
            let (limit, tiers, tier_tables, default_table) = match emergency {
                // The emergency amount keeps its buckets under its own keys: they start full
                // when the mode goes on, and the ordinary buckets are where they were when it
                // goes off.
                Some(e) if raw.emergency => (
                    e,
                    BTreeMap::new(),
                    BTreeMap::new(),
                    SlotTable::new(
                        format!("portcullis.{}.{}.emergency", raw.stat_prefix, l.name),
                        raw.max_keys,
                        WAYS,
                        crate::bucket::STATE_BYTES,
                    ),
                ),
                _ => (limit, tiers, tier_tables, table(&l.name, None)),
            };
            if l.scope == Scope::Global {
                check_global_amount(&limit).map_err(|e| e.within(&at))?;
                for (t, a) in &tiers {
                    check_global_amount(a).map_err(|e| e.within(&format!("{at}.tiers.{t}")))?;
                }
            }
            let mut routes = Vec::new();
            for (j, m) in l.routes.iter().enumerate() {
                routes.push(
                    RouteMatcher::compile(m).map_err(|e| e.within(&format!("{at}.routes[{j}]")))?,
                );
            }
            let mut costs = Vec::new();
            for (j, c) in l.route_costs.iter().enumerate() {
                let m = RouteMatcher::compile(&c.matcher)
                    .map_err(|e| e.within(&format!("{at}.route_costs[{j}].match")))?;
                costs.push((m, c.cost));
            }
            limits.push(CompiledLimit {
                name: l.name.clone(),
                scope: l.scope,
                key,
                limit,
                tiers,
                routes,
                cost: l.cost,
                route_costs: RouteTable::new(costs),
                table: default_table,
                tier_tables,
            });
        }
        let any_global = limits.iter().any(|l| l.scope == Scope::Global);
        let global = match (raw.global, any_global) {
            (None, false) => None,
            (raw_global, _) => {
                let g = raw_global.unwrap_or(RawGlobal {
                    cluster: default_cluster(),
                    domain: None,
                    timeout_ms: default_timeout_ms(),
                    failure_mode: None,
                });
                if !valid_service_name(&g.cluster) {
                    return Err(ConfigError::new(
                        "global.cluster",
                        "an Envoy cluster name: printable ASCII, no spaces, at most 100 bytes",
                    ));
                }
                let domain = g
                    .domain
                    .unwrap_or_else(|| format!("portcullis.{}", raw.stat_prefix));
                if !valid_service_name(&domain) {
                    return Err(ConfigError::new(
                        "global.domain",
                        "printable ASCII without spaces or `|`, at most 100 bytes",
                    ));
                }
                if g.timeout_ms == 0 || g.timeout_ms > 60_000 {
                    return Err(ConfigError::new("global.timeout_ms", "between 1 and 60000"));
                }
                Some(GlobalConfig {
                    cluster: g.cluster,
                    domain,
                    timeout_ms: g.timeout_ms,
                    failure_mode: g.failure_mode.unwrap_or(raw.failure_mode),
                })
            }
        };
        Ok(RateLimitConfig {
            audit: portcullis_core::audit::Recorder::new(raw.audit),
            emergency: raw.emergency,
            global,
            mode: raw.mode,
            stat_prefix: raw.stat_prefix,
            failure_mode: raw.failure_mode,
            max_cas_retries: raw.max_cas_retries,
            headers: raw.headers,
            ipv4_prefix: raw.ipv4_prefix,
            ipv6_prefix: raw.ipv6_prefix,
            max_keys: raw.max_keys,
            tenant_tiers: raw.tenant_tiers,
            limits,
        })
    }
}
