//! proxy-wasm adapter: runs [`crate::validate::check_head`] on the headers, buffers the body
//! (the native buffer filter placed after this one keeps the upstream from seeing anything
//! before the verdict), then runs [`crate::validate::check_body`].

use crate::config::{Mode, SchemaConfig};
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
            Box::new(Schema { state, route: None, route_name: None, max_body: 0 })
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
}

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
}
