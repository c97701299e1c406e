//! proxy-wasm adapter: Envoy shared data as the [`Store`], the identity from authn's filter
//! state, the source address from Envoy; applies the decision (429, or headers on the response).
//! Global limits: the request is paused while `ShouldRateLimit` is in flight to the rate limit
//! service's cluster (`dispatch_grpc_call`), and finished in `on_grpc_call_response` — all
//! decisions about the answer are made by [`global::resolve`]; this file only moves bytes.

use crate::config::{FailureMode, Mode, RateLimitConfig};
use crate::decide::{self, Applied, Request, REASONS};
use crate::global::{self, CallOutcome, Pending, Reply};
use crate::rls;
use crate::store::{Store, StoreError};
use portcullis_core::deny::Denial;
use portcullis_core::host::{self, Counter, Histogram};
use portcullis_core::identity::{Identity, IDENTITY_PROPERTY};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, Status};
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(host::Root::new("ratelimit", State::load, |state| {
            Box::new(RateLimit { state, response_headers: Vec::new(), in_flight: None })
        }))
    });
}}

/// Envoy's process-wide shared data (one lock, shared by every worker's VM).
struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
        hostcalls::get_shared_data(key)
            .map(|(v, cas)| (v, cas.unwrap_or(0)))
            .map_err(|_| StoreError::Unavailable)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), (cas != 0).then_some(cas)) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}

struct Metrics {
    allowed: HashMap<String, Counter>,
    limited: HashMap<String, Counter>,
    denied: HashMap<&'static str, Counter>,
    shadow_limited: Counter,
    cas_retries: Counter,
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
    fn define(cfg: &RateLimitConfig) -> Self {
        let name = |s: &str| format!("portcullis.{}.{s}", cfg.stat_prefix);
        let per_limit = |kind: &str| {
            cfg.limits
                .iter()
                .map(|l| {
                    (
                        l.name.clone(),
                        Counter::define(&name(&format!("limit.{}.{kind}", l.name))),
                    )
                })
                .collect()
        };
        Metrics {
            allowed: per_limit("allowed"),
            limited: per_limit("limited"),
            denied: REASONS
                .iter()
                .map(|r| (*r, Counter::define(&name(&format!("denied.{r}")))))
                .collect(),
            shadow_limited: Counter::define(&name("shadow_limited")),
            cas_retries: Counter::define(&name("cas_retries")),
            failure_allowed: Counter::define(&name("failure_mode.allowed")),
            failure_denied: Counter::define(&name("failure_mode.denied")),
            global: GlobalMetrics {
                calls: Counter::define(&name("global.calls")),
                ok: Counter::define(&name("global.ok")),
                over_limit: Counter::define(&name("global.over_limit")),
                timeouts: Counter::define(&name("global.timeouts")),
                errors: Counter::define(&name("global.errors")),
                failure_allowed: Counter::define(&name("global.failure_mode.allowed")),
                failure_denied: Counter::define(&name("global.failure_mode.denied")),
                latency_us: Histogram::define(&name("global.latency_us")),
            },
        }
    }
}

struct State {
    config: RateLimitConfig,
    metrics: Metrics,
    /// When this worker last logged a failed call to the rate limit service (host clock, ns):
    /// an outage is logged once per worker every 10 s, not once per request (it is counted
    /// per request).
    last_service_warning: std::cell::Cell<u64>,
}

impl State {
    fn load(bytes: &[u8]) -> Result<Self, portcullis_core::config::ConfigError> {
        let config = RateLimitConfig::from_bytes(bytes)?;
        let metrics = Metrics::define(&config);
        Ok(State {
            config,
            metrics,
            last_service_warning: std::cell::Cell::new(0),
        })
    }
}

struct RateLimit {
    state: Rc<State>,
    response_headers: Vec<(&'static str, String)>,
    /// The call to the rate limit service this paused request waits for: token, what to finish
    /// with, and when it started (host clock, ns).
    in_flight: Option<(u32, Pending, u64)>,
}

impl RateLimit {
    /// Applies a verdict: remember the headers and continue, or answer with the denial.
    fn apply(&mut self, verdict: Result<Vec<Applied>, Denial>, limited_by: Option<&str>) -> Action {
        let st = self.state.clone();
        let cfg = &st.config;
        match verdict {
            Ok(applied) => {
                for a in &applied {
                    if let Some(c) = st.metrics.allowed.get(&a.name) {
                        c.inc();
                    }
                }
                self.response_headers = decide::response_headers(cfg.headers, &applied);
                Action::Continue
            }
            Err(denial) => {
                if let Some(c) = limited_by.and_then(|n| st.metrics.limited.get(n)) {
                    c.inc();
                }
                let policy = limited_by.unwrap_or("-");
                if cfg.mode == Mode::Shadow {
                    st.metrics.shadow_limited.inc();
                    log::info!(
                        "portcullis ratelimit: shadow deny policy={policy} reason={}",
                        denial.reason
                    );
                    return Action::Continue;
                }
                if let Some(c) = st.metrics.denied.get(denial.reason) {
                    c.inc();
                }
                log::debug!(
                    "portcullis ratelimit: deny policy={policy} reason={}",
                    denial.reason
                );
                host::send_denial(&denial);
                Action::Pause
            }
        }
    }

    /// Starts the `ShouldRateLimit` call and pauses the request; if the host refuses the call,
    /// the failure mode decides at once.
    fn ask_service(&mut self, pending: Pending) -> Action {
        let st = self.state.clone();
        let Some(g) = st.config.global.as_ref() else {
            return self.finish(&pending, Reply::NotDispatched, 0);
        };
        st.metrics.global.calls.inc();
        let started = host::now_unix_nanos();
        let dispatched = rls::grpc_service(&g.cluster).map(|service| {
            hostcalls::dispatch_grpc_call(
                &service,
                rls::SERVICE,
                rls::METHOD,
                Vec::new(),
                Some(&pending.message),
                std::time::Duration::from_millis(g.timeout_ms),
            )
        });
        match dispatched {
            Some(Ok(token)) => {
                self.in_flight = Some((token, pending, started));
                Action::Pause
            }
            _ => self.finish(&pending, Reply::NotDispatched, started),
        }
    }

    /// Counts the call's outcome, gives local units back when the request is refused, and
    /// applies the resolved verdict.
    fn finish(&mut self, pending: &Pending, reply: Reply<'_>, started: u64) -> Action {
        let st = self.state.clone();
        let cfg = &st.config;
        let r = global::resolve(cfg, pending, reply);
        let m = &st.metrics.global;
        match r.outcome {
            CallOutcome::Ok => m.ok.inc(),
            CallOutcome::OverLimit => m.over_limit.inc(),
            CallOutcome::Timeout => m.timeouts.inc(),
            CallOutcome::Error => m.errors.inc(),
        }
        if started > 0 {
            m.latency_us
                .record(host::now_unix_nanos().saturating_sub(started) / 1_000);
        }
        if r.failure_mode_used {
            let mode = cfg
                .global
                .as_ref()
                .map_or(cfg.failure_mode, |g| g.failure_mode);
            match mode {
                FailureMode::Allow => m.failure_allowed.inc(),
                FailureMode::Deny => m.failure_denied.inc(),
            }
            let now = host::now_unix_nanos();
            if now.saturating_sub(st.last_service_warning.get()) >= 10_000_000_000 {
                st.last_service_warning.set(now);
                log::warn!(
                    "portcullis ratelimit: no verdict from the rate limit service ({:?}); failure mode {mode:?} (logged at most every 10 s per worker; see global.* metrics)",
                    r.outcome
                );
            }
        }
        if r.refund_local && cfg.mode == Mode::Enforce {
            global::refund_local(&SharedData, pending, cfg.max_cas_retries);
        }
        self.apply(r.verdict, r.limited_by.as_deref())
    }
}

impl Context for RateLimit {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some((token, pending, started)) = self.in_flight.take() else {
            return;
        };
        if token != token_id {
            self.in_flight = Some((token, pending, started));
            return;
        }
        // The SDK's own getter panics on a host error; read the buffer through the hostcall.
        let body = if status_code == 0 {
            hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let timeout_ms = self
            .state
            .config
            .global
            .as_ref()
            .map_or(0, |g| g.timeout_ms);
        let elapsed = host::now_unix_nanos().saturating_sub(started);
        let reply = match status_code {
            0 => Reply::Answer(&body),
            s => global::failed_call(s, elapsed, timeout_ms),
        };
        if status_code != 0 {
            log::debug!("portcullis ratelimit: rate limit service call ended with gRPC status {status_code}");
        }
        if self.finish(&pending, reply, started) == Action::Continue {
            let _ = hostcalls::resume_http_request();
        }
    }
}

impl HttpContext for RateLimit {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let st = self.state.clone();
        let cfg = &st.config;
        let headers = host::request_headers();
        let identity = Identity::from_filter_state(host::property(&[IDENTITY_PROPERTY]).as_deref());
        let source = host::property(&["source", "address"])
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let pseudo = |n: &str| portcullis_core::header(&headers, n).unwrap_or_default();
        let req = Request {
            method: pseudo(":method"),
            path: pseudo(":path"),
            headers: &headers,
            identity: identity.as_ref(),
            source_address: source.as_deref(),
        };
        let d = decide::decide_with_service(cfg, &SharedData, &req, host::now_unix_nanos());
        st.metrics.cas_retries.add(d.cas_retries);
        if d.failure_mode_used {
            match cfg.failure_mode {
                FailureMode::Allow => st.metrics.failure_allowed.inc(),
                FailureMode::Deny => st.metrics.failure_denied.inc(),
            }
            log::warn!(
                "portcullis ratelimit: no verdict from shared data; failure mode {:?}",
                cfg.failure_mode
            );
        }
        match (d.verdict, d.global) {
            // Local limits admitted the request; the global ones are asked next.
            (Ok(_), Some(pending)) => self.ask_service(pending),
            (verdict, _) => self.apply(verdict, d.limited_by.as_deref()),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (k, v) in std::mem::take(&mut self.response_headers) {
            self.add_http_response_header(k, &v);
        }
        Action::Continue
    }
}
