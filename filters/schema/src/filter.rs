//! proxy-wasm adapter: runs [`crate::validate::check_head`] on the headers, buffers the body
//! (the native buffer filter placed after this one keeps the upstream from seeing anything
//! before the verdict), then runs [`crate::validate::check_body`].

use crate::config::{ContractMode, Mode, SchemaConfig};
use crate::validate::{self, Head, HeadOutcome, REASONS};
use portcullis_core::deny::Denial;
use portcullis_core::host::{self, Counter};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, LogLevel};
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(host::Root::new("schema", State::load, |state| {
            Box::new(Schema { state, route: None, route_name: None, max_body: 0, method: String::new(), checking_response: false, response_content_type: None })
        }))
    });
}}

struct RouteMetrics {
    validated: Counter,
    rejected: Counter,
}

struct Metrics {
    validated: Counter,
    rejected: HashMap<&'static str, Counter>,
    shadow: HashMap<&'static str, Counter>,
    routes: HashMap<String, RouteMetrics>,
}

impl Metrics {
    fn define(cfg: &SchemaConfig) -> Self {
        let name = |s: &str| format!("portcullis.{}.{s}", cfg.stat_prefix);
        let per_reason = |kind: &str| {
            REASONS
                .iter()
                .map(|r| (*r, Counter::define(&name(&format!("{kind}.{r}")))))
                .collect()
        };
        Metrics {
            validated: Counter::define(&name("validated")),
            rejected: per_reason("rejected"),
            shadow: if cfg.mode == Mode::Shadow {
                per_reason("shadow_rejected")
            } else {
                HashMap::new()
            },
            routes: cfg
                .routes
                .iter()
                .map(|(_, r)| {
                    let m = RouteMetrics {
                        validated: Counter::define(&name(&format!("route.{}.validated", r.name))),
                        rejected: Counter::define(&name(&format!("route.{}.rejected", r.name))),
                    };
                    (r.name.clone(), m)
                })
                .collect(),
        }
    }
}

struct State {
    config: SchemaConfig,
    metrics: Metrics,
}

impl State {
    fn load(bytes: &[u8]) -> Result<Self, portcullis_core::config::ConfigError> {
        let config = SchemaConfig::from_bytes(bytes)?;
        let metrics = Metrics::define(&config);
        Ok(State { config, metrics })
    }
}

struct Schema {
    state: Rc<State>,
    /// Route whose body is being buffered for validation.
    route: Option<usize>,
    route_name: Option<String>,
    max_body: usize,
    method: String,
    /// The response is being buffered to check it against the route's contract.
    checking_response: bool,
    /// Response content type, read in the headers phase: the host refuses header access during
    /// body callbacks (and the SDK would trap on that refusal).
    response_content_type: Option<String>,
}

/// Response header asking the response-hold Lua filter (first in the chain) to keep the whole
/// response until this filter has checked it, so a violation can still become a 502.
const HOLD_HEADER: &str = "x-portcullis-hold-response";

impl Schema {
    /// Applies a denial (or, in shadow mode, counts it and lets the request through).
    fn deny(&mut self, d: &Denial) -> Action {
        let st = &self.state;
        let route = self.route_name.as_deref().unwrap_or("-");
        self.route = None;
        if let Some(m) = self
            .route_name
            .as_ref()
            .and_then(|n| st.metrics.routes.get(n))
        {
            m.rejected.inc();
        }
        if st.config.mode == Mode::Shadow {
            if let Some(c) = st.metrics.shadow.get(d.reason) {
                c.inc();
            }
            log::info!(
                "portcullis schema: shadow reject route={route} status={} reason={}",
                d.status,
                d.reason
            );
            return Action::Continue;
        }
        if let Some(c) = st.metrics.rejected.get(d.reason) {
            c.inc();
        }
        log::info!(
            "portcullis schema: reject route={route} status={} reason={}",
            d.status,
            d.reason
        );
        host::send_denial(d);
        Action::Pause
    }

    fn validated(&self) {
        self.state.metrics.validated.inc();
        if let Some(m) = self
            .route_name
            .as_ref()
            .and_then(|n| self.state.metrics.routes.get(n))
        {
            m.validated.inc();
        }
    }
}

impl Context for Schema {}

impl HttpContext for Schema {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = host::request_headers();
        let pseudo = |n: &str| portcullis_core::header(&headers, n).unwrap_or_default();
        let head = Head {
            method: pseudo(":method"),
            path: pseudo(":path"),
            headers: &headers,
            has_body: !end_of_stream,
        };
        self.method = head.method.to_string();
        let (name, outcome) = validate::check_head(&self.state.config, &head);
        self.route_name = name;
        match outcome {
            HeadOutcome::Pass => Action::Continue,
            HeadOutcome::Deny(d) => self.deny(&d),
            HeadOutcome::ValidateBody {
                route,
                max_body_bytes,
            } => {
                self.route = Some(route);
                self.max_body = max_body_bytes;
                // Never pause the headers: the body callbacks would not run (see ENVOY-FACTS).
                // The native buffer filter behind this one holds the request instead.
                Action::Continue
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(route) = self.route else {
            return Action::Continue;
        };
        if body_size > self.max_body {
            return self.deny(&validate::too_large());
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        match validate::check_body(&self.state.config, route, &body) {
            Ok(()) => {
                self.route = None;
                self.validated();
                Action::Continue
            }
            Err(d) => self.deny(&d),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(name) = self.route_name.as_deref() else {
            return Action::Continue;
        };
        let Some(rule) = validate::response_rule(&self.state.config, name) else {
            return Action::Continue;
        };
        let status = self.get_http_response_header(":status").unwrap_or_default();
        // Contracts describe successful bodies; HEAD and bodiless responses carry none.
        if end_of_stream || self.method == "HEAD" || !status.starts_with('2') || status == "204" {
            return Action::Continue;
        }
        self.checking_response = true;
        self.response_content_type = self.get_http_response_header("content-type");
        if rule.mode == ContractMode::Enforce {
            self.add_http_response_header(HOLD_HEADER, "1");
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.checking_response {
            return Action::Continue;
        }
        let st = self.state.clone();
        let Some(rule) = self
            .route_name
            .as_deref()
            .and_then(|n| validate::response_rule(&st.config, n))
        else {
            return Action::Continue;
        };
        if !end_of_stream && body_size <= rule.limits.max_body_bytes {
            return Action::Pause;
        }
        self.checking_response = false;
        let body = self
            .get_http_response_body(0, body_size)
            .unwrap_or_default();
        let content_type = self.response_content_type.take();
        let Err(d) = validate::check_response(&st.config, rule, content_type.as_deref(), &body)
        else {
            return Action::Continue;
        };
        let route = self.route_name.as_deref().unwrap_or("-");
        if let Some(c) = st.metrics.rejected.get(d.reason) {
            c.inc();
        }
        if rule.mode == ContractMode::Enforce && st.config.mode == Mode::Enforce {
            log::warn!(
                "portcullis schema: response contract violated route={route}; replaced with 502"
            );
            host::send_denial(&d);
            return Action::Pause;
        }
        log::warn!("portcullis schema: response contract violated route={route} (report)");
        Action::Continue
    }
}
