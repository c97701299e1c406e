//! proxy-wasm adapter: Envoy shared data as the [`Store`], the identity from authn's filter
//! state, the source address from Envoy; applies the decision (429, or headers on the response).

use crate::config::{FailureMode, Mode, RateLimitConfig};
use crate::decide::{self, Request, REASONS};
use portcullis_core::host::{self, Counter};
use portcullis_core::identity::{Identity, IDENTITY_PROPERTY};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, LogLevel};
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(host::Root::new("ratelimit", State::load, |state| {
            Box::new(RateLimit { state, response_headers: Vec::new() })
        }))
    });
}}

struct Metrics {
    allowed: HashMap<String, Counter>,
    limited: HashMap<String, Counter>,
    denied: HashMap<&'static str, Counter>,
    shadow_limited: Counter,
    cas_retries: Counter,
    slots_created: Counter,
    failure_allowed: Counter,
    failure_denied: Counter,
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
            slots_created: Counter::define(&name("slots_created")),
            failure_allowed: Counter::define(&name("failure_mode.allowed")),
            failure_denied: Counter::define(&name("failure_mode.denied")),
        }
    }
}

struct State {
    config: RateLimitConfig,
    metrics: Metrics,
}

impl State {
    fn load(bytes: &[u8]) -> Result<Self, portcullis_core::config::ConfigError> {
        let config = RateLimitConfig::from_bytes(bytes)?;
        let metrics = Metrics::define(&config);
        Ok(State { config, metrics })
    }
}

struct RateLimit {
    state: Rc<State>,
    response_headers: Vec<(&'static str, String)>,
}

impl Context for RateLimit {}

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
        let Some(secret) = host::process_secret() else {
            log::warn!(
                "portcullis ratelimit: shared data unavailable; failure mode {:?}",
                cfg.failure_mode
            );
            return match cfg.failure_mode {
                FailureMode::Allow => {
                    st.metrics.failure_allowed.inc();
                    Action::Continue
                }
                FailureMode::Deny => {
                    st.metrics.failure_denied.inc();
                    host::send_denial(&decide::unavailable());
                    Action::Pause
                }
            };
        };
        let d = decide::decide(cfg, &host::SharedData, &secret, &req, host::now_unix_nanos());
        st.metrics.cas_retries.add(d.cas_retries);
        st.metrics.slots_created.add(d.slots_created);
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
        match d.verdict {
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
                if let Some(c) = d
                    .limited_by
                    .as_ref()
                    .and_then(|n| st.metrics.limited.get(n))
                {
                    c.inc();
                }
                let policy = d.limited_by.as_deref().unwrap_or("-");
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

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (k, v) in std::mem::take(&mut self.response_headers) {
            self.add_http_response_header(k, &v);
        }
        Action::Continue
    }
}
