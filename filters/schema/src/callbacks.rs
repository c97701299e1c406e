//! The schema filter's callbacks, written once over the host port: [`crate::validate::check_head`]
//! on the headers, [`crate::validate::check_arrival`] as the body is buffered to its end (the
//! native buffer filter placed after this one keeps the upstream from seeing anything before the
//! verdict), then [`crate::validate::check_body`]; and the response contract on the way back.

use crate::config::{ContractMode, Mode, SchemaConfig};
use crate::validate::{self, Arrival, Expect, Head, HeadOutcome, SchemaReason};
use portcullis_core::audit;
use portcullis_core::config::ConfigError;
use portcullis_core::deny::Denial;
use portcullis_core::metrics::{self, Counter, DenialCounters};
use portcullis_core::port::{Callbacks, Filter, Flow, Host, Step, Stream};
use std::collections::HashMap;
use std::rc::Rc;

/// Response header asking the response-hold Lua filter (first in the chain) to keep the whole
/// response until this filter has checked it, so a violation can still become a 502.
pub const HOLD_HEADER: &str = "x-portcullis-hold-response";

struct RouteMetrics {
    validated: Counter,
    rejected: Counter,
}

struct Metrics {
    validated: Counter,
    denials: DenialCounters,
    routes: HashMap<String, RouteMetrics>,
}

impl Metrics {
    fn define<H: Host>(host: &H, cfg: &SchemaConfig) -> Self {
        let prefix = format!("portcullis.{}", cfg.stat_prefix);
        let name = |s: &str| format!("{prefix}.{s}");
        Metrics {
            validated: Counter::define(host, &name("validated")),
            denials: DenialCounters::define::<SchemaReason, H>(
                host,
                &prefix,
                cfg.mode,
                "rejected",
                "shadow_rejected",
            ),
            routes: cfg
                .routes
                .iter()
                .map(|(_, r)| {
                    let m = RouteMetrics {
                        validated: Counter::define(
                            host,
                            &name(&format!("route.{}.validated", r.name)),
                        ),
                        rejected: Counter::define(
                            host,
                            &name(&format!("route.{}.rejected", r.name)),
                        ),
                    };
                    (r.name.clone(), m)
                })
                .collect(),
        }
    }
}

/// The schema filter of one worker.
pub struct Schema {
    config: SchemaConfig,
    metrics: Metrics,
}

impl Filter for Schema {
    type Stream = SchemaStream;
    const NAME: &'static str = "schema";

    fn configure<H: Host>(host: &H, config: &[u8]) -> Result<Self, ConfigError> {
        let config = SchemaConfig::from_bytes(config)?;
        let metrics = Metrics::define(host, &config);
        Ok(Schema { config, metrics })
    }

    fn stream(root: &Rc<Self>) -> SchemaStream {
        SchemaStream {
            root: root.clone(),
            expect: None,
            route_name: None,
            method: String::new(),
            checking_response: false,
            response_content_type: None,
        }
    }
}

/// One request through the schema filter.
pub struct SchemaStream {
    root: Rc<Schema>,
    /// What the body being buffered for validation is held to.
    expect: Option<Expect>,
    route_name: Option<String>,
    method: String,
    /// The response is being buffered to check it against the route's contract.
    checking_response: bool,
    /// Response content type, read in the headers phase: the host refuses header access during
    /// body callbacks.
    response_content_type: Option<String>,
}

impl SchemaStream {
    fn hits(&self) -> Vec<String> {
        self.route_name
            .iter()
            .map(|n| format!("schema.route:{n}"))
            .collect()
    }

    /// Applies a denial (or, in shadow mode, counts it and lets the request through).
    fn deny<H: Host>(&mut self, host: &H, d: &Denial) -> Flow {
        let st = self.root.clone();
        self.expect = None;
        let route = self.route_name.as_deref().unwrap_or("-");
        if let Some(m) = self
            .route_name
            .as_ref()
            .and_then(|n| st.metrics.routes.get(n))
        {
            m.rejected.inc(host);
        }
        metrics::apply_denial(
            host,
            "schema",
            st.config.mode,
            route,
            d,
            &st.metrics.denials,
            || self.hits(),
        )
    }

    fn validated<H: Host>(&self, host: &H, outcome: &str) {
        let m = &self.root.metrics;
        m.validated.inc(host);
        self.root.config.audit.set(host, "schema", "valid");
        if let Some(r) = self.route_name.as_ref().and_then(|n| m.routes.get(n)) {
            r.validated.inc(host);
        }
        self.explain(host, outcome);
    }

    fn explain<H: Host>(&self, host: &H, outcome: &str) {
        if host.explaining() {
            host.explain(Step {
                filter: String::new(),
                matched: self.route_name.clone().unwrap_or_else(|| "-".into()),
                outcome: outcome.into(),
                hits: self.hits(),
            });
        }
    }
}

impl Stream for SchemaStream {
    type Root = Schema;
    const CALLBACKS: Callbacks = Callbacks {
        request_body: true,
        response_headers: true,
        response_body: true,
        ..Callbacks::HEADERS
    };

    fn on_request_headers<H: Host>(&mut self, host: &H, end_of_stream: bool) -> Flow {
        let st = self.root.clone();
        st.metrics
            .denials
            .flush_due(|| host.now_nanos(), "schema", st.config.mode);
        // One read of the whole map: the method, the path and whichever headers the route
        // names (media type, idempotency key) are two to four headers, each a host call of its
        // own when asked for by name; the map is one, borrowed in place (`HeaderMap`).
        let headers = host.request_headers();
        let lookup = |n: &str| headers.get(n);
        let method = headers.get(":method").unwrap_or_default();
        let head = Head {
            method,
            path: headers.get(":path").unwrap_or_default(),
            header: &lookup,
            has_body: !end_of_stream,
        };
        let (name, outcome) = validate::check_head(&st.config, &head);
        self.method = method.to_string();
        self.route_name = name;
        match outcome {
            HeadOutcome::Pass => {
                self.explain(host, "pass (nothing to validate)");
                Flow::Continue
            }
            HeadOutcome::Deny(d) => self.deny(host, &d),
            HeadOutcome::ValidateBody(expect) => {
                self.expect = Some(expect);
                // Never pause the headers: the body callbacks would not run (see ENVOY-FACTS).
                // The native buffer filter behind this one holds the request instead.
                Flow::Continue
            }
        }
    }

    fn on_request_body<H: Host>(&mut self, host: &H, size: usize, end_of_stream: bool) -> Flow {
        let Some(expect) = &self.expect else {
            return Flow::Continue;
        };
        let route = expect.route;
        match validate::check_arrival(expect, size, end_of_stream) {
            Arrival::Wait => return Flow::Pause,
            Arrival::Deny(d) => return self.deny(host, &d),
            Arrival::Check => {}
        }
        let body = host.request_body(0, size).unwrap_or_default();
        match validate::check_body(&self.root.config, route, &body) {
            Ok(()) => {
                self.expect = None;
                self.validated(host, "body valid");
                Flow::Continue
            }
            Err(d) => self.deny(host, &d),
        }
    }

    fn on_response_headers<H: Host>(&mut self, host: &H, end_of_stream: bool) -> Flow {
        // schema sits closest to the router: the first to see the upstream's own answer.
        self.root.config.audit.upstream_status(host);
        let st = self.root.clone();
        let Some(rule) = self
            .route_name
            .as_deref()
            .and_then(|n| validate::response_rule(&st.config, n))
        else {
            return Flow::Continue;
        };
        // The status and, for a body to check, its media type: one read of the map.
        let headers = host.response_headers();
        let status = headers.get(":status").unwrap_or_default();
        // Contracts describe successful bodies; HEAD and bodiless responses carry none.
        if end_of_stream || self.method == "HEAD" || !status.starts_with('2') || status == "204" {
            return Flow::Continue;
        }
        self.checking_response = true;
        self.response_content_type = headers.get("content-type").map(str::to_string);
        if rule.mode == ContractMode::Enforce {
            host.add_response_header(HOLD_HEADER, "1");
        }
        Flow::Continue
    }

    fn on_response_body<H: Host>(&mut self, host: &H, size: usize, end_of_stream: bool) -> Flow {
        if !self.checking_response {
            return Flow::Continue;
        }
        let st = self.root.clone();
        let Some(rule) = self
            .route_name
            .as_deref()
            .and_then(|n| validate::response_rule(&st.config, n))
        else {
            return Flow::Continue;
        };
        if !end_of_stream && size <= rule.limits.max_body_bytes {
            return Flow::Pause;
        }
        self.checking_response = false;
        let body = host.response_body(0, size).unwrap_or_default();
        let content_type = self.response_content_type.take();
        let Err(d) = validate::check_response(&st.config, rule, content_type.as_deref(), &body)
        else {
            return Flow::Continue;
        };
        let route = self.route_name.as_deref().unwrap_or("-");
        st.metrics.denials.denied.inc(host, d.reason);
        let enforce = rule.mode == ContractMode::Enforce && st.config.mode == Mode::Enforce;
        if host.explaining() {
            host.explain(Step {
                filter: String::new(),
                matched: route.to_string(),
                outcome: format!("response deny {} {} — {}", d.status, d.reason, d.detail),
                hits: Vec::new(),
            });
        }
        audit::denied(host, "schema", &d, !enforce);
        if enforce {
            log::warn!(
                "portcullis schema: response contract violated route={route}; replaced with 502"
            );
            metrics::send(host, &d);
            return Flow::Pause;
        }
        log::warn!("portcullis schema: response contract violated route={route} (report)");
        Flow::Continue
    }
}
