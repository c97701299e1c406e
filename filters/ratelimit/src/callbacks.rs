//! The ratelimit filter's callbacks, written once over the host port: the identity from
//! authn's filter state, the client address Envoy settled on, the decision from
//! [`crate::decide`], and its application (a 429, or headers on the response). When global
//! limits apply, the request waits for the rate limit service ([`crate::global`] decides what
//! its answer, or its silence, means; this file only moves bytes).

use crate::config::{FailureMode, KeySource, Mode, RateLimitConfig};
use crate::decide::{self, Applied, RateLimitReason, Request};
use crate::global::{self, CallOutcome, Pending, Reply};
use crate::rls;
use portcullis_core::audit;
use portcullis_core::config::ConfigError;
use portcullis_core::deny::Denial;
use portcullis_core::identity::{IdentityView, IDENTITY_PROPERTY};
use portcullis_core::metrics::{self, Counter, DenialCounters, Histogram};
use portcullis_core::port::{CallResponse, Callbacks, Filter, Flow, GrpcCall, Host, Step, Stream};
use portcullis_core::slots::Secret;
use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::rc::Rc;

/// A counter per limit, found by the limit's name (names are unique: config refuses a
/// duplicate). Looked up for every applied limit of every request: a few names compared cost
/// less than SipHash over one (about 170 instructions), so short lists are searched in order;
/// long ones keep a map.
enum PerLimit {
    Few(Vec<(String, Counter)>),
    Many(HashMap<String, Counter>),
}

impl PerLimit {
    /// Above this many limits the map answers faster than a scan.
    const SCAN_UP_TO: usize = 8;

    fn new(counters: Vec<(String, Counter)>) -> Self {
        if counters.len() <= Self::SCAN_UP_TO {
            PerLimit::Few(counters)
        } else {
            PerLimit::Many(counters.into_iter().collect())
        }
    }

    fn get(&self, name: &str) -> Option<&Counter> {
        match self {
            PerLimit::Few(v) => v.iter().find(|(n, _)| n == name).map(|(_, c)| c),
            PerLimit::Many(m) => m.get(name),
        }
    }
}

struct Metrics {
    allowed: PerLimit,
    limited: PerLimit,
    denials: DenialCounters,
    shadow_limited: Counter,
    cas_retries: Counter,
    slots_created: Counter,
    failure_allowed: Counter,
    failure_denied: Counter,
    global: GlobalMetrics,
}

/// Calls to the rate limit service: `global.calls` = `ok + over_limit + timeouts + errors`.
struct GlobalMetrics {
    calls: Counter,
    ok: Counter,
    over_limit: Counter,
    timeouts: Counter,
    errors: Counter,
    failure_allowed: Counter,
    failure_denied: Counter,
    latency_us: Histogram,
}

impl Metrics {
    fn define<H: Host>(host: &H, cfg: &RateLimitConfig) -> Self {
        let prefix = format!("portcullis.{}", cfg.stat_prefix);
        let name = |s: &str| format!("{prefix}.{s}");
        let per_limit = |kind: &str| {
            PerLimit::new(
                cfg.limits
                    .iter()
                    .map(|l| {
                        let n = name(&format!("limit.{}.{kind}", l.name));
                        (l.name.clone(), Counter::define(host, &n))
                    })
                    .collect(),
            )
        };
        Metrics {
            allowed: per_limit("allowed"),
            limited: per_limit("limited"),
            denials: DenialCounters::define::<RateLimitReason, H>(
                host,
                &prefix,
                cfg.mode,
                "denied",
                "shadow_denied",
            ),
            shadow_limited: Counter::define(host, &name("shadow_limited")),
            cas_retries: Counter::define(host, &name("cas_retries")),
            slots_created: Counter::define(host, &name("slots_created")),
            failure_allowed: Counter::define(host, &name("failure_mode.allowed")),
            failure_denied: Counter::define(host, &name("failure_mode.denied")),
            global: GlobalMetrics {
                calls: Counter::define(host, &name("global.calls")),
                ok: Counter::define(host, &name("global.ok")),
                over_limit: Counter::define(host, &name("global.over_limit")),
                timeouts: Counter::define(host, &name("global.timeouts")),
                errors: Counter::define(host, &name("global.errors")),
                failure_allowed: Counter::define(host, &name("global.failure_mode.allowed")),
                failure_denied: Counter::define(host, &name("global.failure_mode.denied")),
                latency_us: Histogram::define(host, &name("global.latency_us")),
            },
        }
    }
}

/// The ratelimit filter of one worker: compiled config, metrics, and the process secret its
/// key tables are hashed with (read from shared data on first use).
pub struct RateLimit {
    config: RateLimitConfig,
    metrics: Metrics,
    /// Request headers some limit is keyed by (read by name; nothing else is copied).
    header_names: Vec<String>,
    /// Whether the limits look at the identity and at the route (else neither is fetched).
    reads: decide::Reads,
    secret: OnceCell<Secret>,
    /// When this worker last logged a silent rate limit service (at most every 10 s).
    last_service_warning: Cell<u64>,
    /// When this worker last warned that shared data gave no verdict (same rule).
    last_store_warning: Cell<u64>,
}

impl Filter for RateLimit {
    type Stream = RateLimitStream;
    const NAME: &'static str = "ratelimit";

    fn configure<H: Host>(host: &H, config: &[u8]) -> Result<Self, ConfigError> {
        let config = RateLimitConfig::from_bytes(config)?;
        let metrics = Metrics::define(host, &config);
        let header_names = config
            .limits
            .iter()
            .filter_map(|l| match &l.key {
                KeySource::Header { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        Ok(RateLimit {
            reads: decide::reads(&config),
            config,
            metrics,
            header_names,
            secret: OnceCell::new(),
            last_service_warning: Cell::new(0),
            last_store_warning: Cell::new(0),
        })
    }

    fn stream(root: &Rc<Self>) -> RateLimitStream {
        RateLimitStream {
            root: root.clone(),
            response_headers: decide::HeaderValues::default(),
            in_flight: None,
        }
    }
}

impl RateLimit {
    fn secret<H: Host>(&self, host: &H) -> Option<Secret> {
        if let Some(s) = self.secret.get() {
            return Some(*s);
        }
        let s = Secret::obtain(host, |b| host.random_bytes(b)).ok()?;
        Some(*self.secret.get_or_init(|| s))
    }

    /// True at most once per 10 s on this worker: a store under attack or contention must not
    /// turn every request into a warning line.
    fn store_warning_due<H: Host>(&self, host: &H) -> bool {
        let now = host.now_nanos();
        let last = self.last_store_warning.get();
        if last != 0 && now.saturating_sub(last) < 10_000_000_000 {
            return false;
        }
        self.last_store_warning.set(now.max(1));
        true
    }

    /// The store could not answer at all: the failure mode decides.
    fn unavailable<H: Host>(&self, host: &H) -> Flow {
        if self.store_warning_due(host) {
            log::warn!(
                "portcullis ratelimit: shared data unavailable; failure mode {:?} (logged at most every 10 s per worker; see failure_* metrics)",
                self.config.failure_mode
            );
        }
        match self.config.failure_mode {
            FailureMode::Allow => {
                self.metrics.failure_allowed.inc(host);
                Flow::Continue
            }
            FailureMode::Deny => {
                self.metrics.failure_denied.inc(host);
                let d = decide::unavailable();
                metrics::apply_denial(
                    host,
                    &self.config.stat_prefix,
                    self.config.mode,
                    "-",
                    &d,
                    &self.metrics.denials,
                    Vec::new,
                )
            }
        }
    }
}

/// Writes this instance's part of the audit record (`<stat_prefix>.limit`, `.remaining`) when
/// the recorder is on; the fields are worked out only then.
fn record<H: Host>(
    host: &H,
    audit: audit::Recorder,
    instance: &str,
    fields: impl FnOnce() -> Option<(String, u64)>,
) {
    if !audit.is_on() {
        return;
    }
    if let Some((limit, remaining)) = fields() {
        audit.set(host, &format!("{instance}.limit"), &limit);
        audit.set(
            host,
            &format!("{instance}.remaining"),
            &remaining.to_string(),
        );
    }
}

/// One request through one ratelimit instance.
pub struct RateLimitStream {
    root: Rc<RateLimit>,
    /// Rate-limit headers for the response, decided on the request.
    response_headers: decide::HeaderValues,
    /// The rate limit service call this request waits for: token, what to finish with, start.
    in_flight: Option<(u32, Pending, u64)>,
}

impl RateLimitStream {
    /// Applies a verdict: remember the headers and continue, or answer with the denial.
    fn apply<H: Host>(
        &mut self,
        host: &H,
        verdict: Result<Vec<Applied>, Denial>,
        limited_by: Option<&str>,
    ) -> Flow {
        let rl = self.root.clone();
        let cfg = &rl.config;
        let m = &rl.metrics;
        let hits = |names: &mut dyn Iterator<Item = &str>| -> Vec<String> {
            names
                .map(|n| format!("{}.limit:{n}", cfg.stat_prefix))
                .collect()
        };
        match verdict {
            Ok(applied) => {
                for a in &applied {
                    if let Some(c) = m.allowed.get(&a.name) {
                        c.inc(host);
                    }
                }
                if host.explaining() {
                    let left: Vec<String> = applied
                        .iter()
                        .map(|a| format!("{} ({} left)", a.name, a.outcome.remaining))
                        .collect();
                    host.explain(Step {
                        filter: String::new(),
                        matched: if left.is_empty() {
                            "-".into()
                        } else {
                            left.join(", ")
                        },
                        outcome: "allow".into(),
                        hits: hits(&mut applied.iter().map(|a| a.name.as_str())),
                    });
                }
                record(host, cfg.audit, &cfg.stat_prefix, || {
                    decide::audit_fields(Ok(&applied))
                });
                decide::write_response_headers(cfg.headers, &applied, &mut self.response_headers);
                Flow::Continue
            }
            Err(denial) => {
                let policy = limited_by.unwrap_or("-");
                if let Some(c) = limited_by.and_then(|n| m.limited.get(n)) {
                    c.inc(host);
                }
                if cfg.mode == Mode::Shadow {
                    m.shadow_limited.inc(host);
                }
                record(host, cfg.audit, &cfg.stat_prefix, || {
                    decide::audit_fields(Err(limited_by))
                });
                metrics::apply_denial(
                    host,
                    &cfg.stat_prefix,
                    cfg.mode,
                    policy,
                    &denial,
                    &m.denials,
                    || hits(&mut limited_by.into_iter()),
                )
            }
        }
    }

    /// Starts the `ShouldRateLimit` call and pauses the request; if the host refuses the call,
    /// the failure mode decides at once.
    fn ask_service<H: Host>(&mut self, host: &H, pending: Pending) -> Flow {
        let rl = self.root.clone();
        let Some(g) = rl.config.global.as_ref() else {
            return self.finish(host, &pending, Reply::NotDispatched, 0);
        };
        rl.metrics.global.calls.inc(host);
        let started = host.now_nanos();
        // The cluster goes as a serialized GrpcService (see `rls::grpc_service`).
        let dispatched = rls::grpc_service(&g.cluster).map(|service| {
            host.grpc_call(&GrpcCall {
                cluster: &service,
                service: rls::SERVICE,
                method: rls::METHOD,
                message: &pending.message,
                timeout: std::time::Duration::from_millis(g.timeout_ms),
            })
        });
        match dispatched {
            Some(Ok(token)) => {
                self.in_flight = Some((token, pending, started));
                Flow::Pause
            }
            _ => self.finish(host, &pending, Reply::NotDispatched, started),
        }
    }

    /// Counts the call's outcome, gives local units back when the request is refused, and
    /// applies the resolved verdict.
    fn finish<H: Host>(
        &mut self,
        host: &H,
        pending: &Pending,
        reply: Reply<'_>,
        started: u64,
    ) -> Flow {
        let rl = self.root.clone();
        let cfg = &rl.config;
        let r = global::resolve(cfg, pending, reply);
        let m = &rl.metrics.global;
        match r.outcome {
            CallOutcome::Ok => m.ok.inc(host),
            CallOutcome::OverLimit => m.over_limit.inc(host),
            CallOutcome::Timeout => m.timeouts.inc(host),
            CallOutcome::Error => m.errors.inc(host),
        }
        let now = host.now_nanos();
        if started > 0 {
            m.latency_us
                .record(host, now.saturating_sub(started) / 1_000);
        }
        if r.failure_mode_used {
            let mode = cfg
                .global
                .as_ref()
                .map_or(cfg.failure_mode, |g| g.failure_mode);
            match mode {
                FailureMode::Allow => m.failure_allowed.inc(host),
                FailureMode::Deny => m.failure_denied.inc(host),
            }
            if now.saturating_sub(rl.last_service_warning.get()) >= 10_000_000_000 {
                rl.last_service_warning.set(now);
                log::warn!(
                    "portcullis ratelimit: no verdict from the rate limit service ({:?}); failure mode {mode:?} (logged at most every 10 s per worker; see global.* metrics)",
                    r.outcome
                );
            }
        }
        if r.refund_local && cfg.mode == Mode::Enforce {
            global::refund_local(cfg, host, pending, now);
        }
        self.apply(host, r.verdict, r.limited_by.as_deref())
    }
}

impl Stream for RateLimitStream {
    type Root = RateLimit;
    const CALLBACKS: Callbacks = Callbacks {
        response_headers: true,
        ..Callbacks::HEADERS
    };

    fn on_request_headers<H: Host>(&mut self, host: &H, _end_of_stream: bool) -> Flow {
        let rl = self.root.clone();
        let cfg = &rl.config;
        let m = &rl.metrics;
        // One clock read per request (each is a host call).
        let now = host.now_nanos();
        m.denials.flush_due(|| now, &cfg.stat_prefix, cfg.mode);
        let Some(secret) = rl.secret(host) else {
            return rl.unavailable(host);
        };
        // The bytes stay here; the view borrows the few strings a limit keys by.
        let identity_bytes = if rl.reads.identity {
            host.property(&[IDENTITY_PROPERTY])
        } else {
            None
        };
        let identity = IdentityView::from_filter_state(identity_bytes.as_deref());
        let source = || {
            // The host's bytes become the string in place when they are UTF-8 (they always are
            // for an address): `from_utf8_lossy(..).into_owned()` copied them.
            host.property(&["source", "address"]).map(|b| {
                String::from_utf8(b)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
            })
        };
        // Headers by name are a host call each; two or more (the route's method and path, the
        // headers limits key by) are one read of the whole map instead, borrowed in place.
        let by_name = 2 * usize::from(rl.reads.route) + rl.header_names.len();
        let map = (by_name >= 2).then(|| host.request_headers());
        let read = |n: &str| match &map {
            Some(m) => m.get(n).map(str::to_string),
            None => host.request_header(n),
        };
        let headers: Vec<(String, String)> = rl
            .header_names
            .iter()
            .filter_map(|n| Some((n.clone(), read(n)?)))
            .collect();
        let (method, path) = if rl.reads.route {
            (
                read(":method").unwrap_or_default(),
                read(":path").unwrap_or_default(),
            )
        } else {
            (String::new(), String::new())
        };
        let req = Request {
            method: &method,
            path: &path,
            headers: &headers,
            identity,
            source_address: &source,
        };
        let d = decide::decide_with_service(cfg, host, &secret, &req, now);
        m.cas_retries.add(host, u64::from(d.cas_retries));
        m.slots_created.add(host, u64::from(d.slots_created));
        if d.failure_mode_used {
            match cfg.failure_mode {
                FailureMode::Allow => m.failure_allowed.inc(host),
                FailureMode::Deny => m.failure_denied.inc(host),
            }
            if rl.store_warning_due(host) {
                log::warn!(
                    "portcullis ratelimit: no verdict from shared data; failure mode {:?} (logged at most every 10 s per worker; see failure_* metrics)",
                    cfg.failure_mode
                );
            }
        }
        match (d.verdict, d.global) {
            // Local limits admitted the request; the global ones are asked next.
            (Ok(_), Some(pending)) => self.ask_service(host, pending),
            (verdict, _) => self.apply(host, verdict, d.limited_by.as_deref()),
        }
    }

    /// The rate limit service answered (or Envoy gave up on it): finish the request.
    fn on_call_response<H: Host>(&mut self, host: &H, token: u32, response: CallResponse) {
        let Some((t, pending, started)) = self.in_flight.take() else {
            return;
        };
        if t != token {
            self.in_flight = Some((t, pending, started));
            return;
        }
        let status = response.grpc_status.unwrap_or(2);
        let timeout_ms = self.root.config.global.as_ref().map_or(0, |g| g.timeout_ms);
        let elapsed = host.now_nanos().saturating_sub(started);
        let reply = match status {
            0 => Reply::Answer(&response.body),
            s => global::failed_call(s, elapsed, timeout_ms),
        };
        if status != 0 {
            log::debug!(
                "portcullis ratelimit: rate limit service call ended with gRPC status {status}"
            );
        }
        if self.finish(host, &pending, reply, started) == Flow::Continue {
            host.resume_request();
        }
    }

    fn on_response_headers<H: Host>(&mut self, host: &H, _end_of_stream: bool) -> Flow {
        for (k, v) in std::mem::take(&mut self.response_headers).iter() {
            host.add_response_header(k, v);
        }
        Flow::Continue
    }
}
