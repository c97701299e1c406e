//! The pii filter's callbacks, written once over the host port: the verified identity from
//! authn's filter state, the header edits decided in [`crate::decide`], bodies buffered to the
//! end, masked, and written back. Headers are read only in header callbacks (the host refuses
//! them later).

use crate::charset;
use crate::config::{Locate, Mode, PiiConfig, Route};
use crate::decide::{self, BodyPlan, Cause, Finished, HeaderEdit, Job};
use crate::mask::{Caller, Report};
use portcullis_core::audit;
use portcullis_core::config::ConfigError;
use portcullis_core::headers::HeaderMap;
use portcullis_core::identity::{Identity, IDENTITY_PROPERTY};
use portcullis_core::metrics::{self, Counter};
use portcullis_core::port::{Callbacks, Filter, Flow, Host, Step, Stream};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// Asks the response-hold Lua filter (closest to the client) to keep the response until this
/// filter is done, so an unmaskable body can still become a 502 instead of leaking.
pub const HOLD_HEADER: &str = "x-portcullis-hold-response";

struct Metrics {
    masked: Vec<Counter>,
    revealed: Vec<Counter>,
    shadow_masked: Vec<Counter>,
    blocked: HashMap<&'static str, Counter>,
    passed_unmaskable: HashMap<&'static str, Counter>,
    bodies_scanned: Counter,
    bodies_masked: Counter,
    headers_masked: Counter,
}

impl Metrics {
    fn define<H: Host>(host: &H, cfg: &PiiConfig) -> Self {
        let name = |s: &str| format!("portcullis.{}.{s}", cfg.stat_prefix);
        let per_rule = |kind: &str| {
            cfg.rules
                .iter()
                .map(|r| Counter::define(host, &name(&format!("{kind}.{}", r.name))))
                .collect()
        };
        let per_cause = |kind: &str| {
            Cause::ALL
                .iter()
                .map(|c| {
                    let n = name(&format!("{kind}.{}", c.name()));
                    (c.name(), Counter::define(host, &n))
                })
                .collect()
        };
        Metrics {
            masked: per_rule("masked"),
            revealed: per_rule("revealed"),
            shadow_masked: if cfg.mode == Mode::Shadow {
                per_rule("shadow_masked")
            } else {
                Vec::new()
            },
            blocked: per_cause("blocked"),
            passed_unmaskable: per_cause("passed_unmaskable"),
            bodies_scanned: Counter::define(host, &name("bodies_scanned")),
            bodies_masked: Counter::define(host, &name("bodies_masked")),
            headers_masked: Counter::define(host, &name("headers_masked")),
        }
    }
}

/// The pii filter of one worker.
pub struct Pii {
    config: PiiConfig,
    metrics: Metrics,
}

impl Filter for Pii {
    type Stream = PiiStream;
    const NAME: &'static str = "pii";

    fn configure<H: Host>(host: &H, bytes: &[u8]) -> Result<Self, ConfigError> {
        let mut config = PiiConfig::from_bytes(bytes)?;
        config.locate = Locate::WhileDebugLogged;
        let metrics = Metrics::define(host, &config);
        Ok(Pii { config, metrics })
    }

    fn stream(root: &Rc<Self>) -> PiiStream {
        PiiStream {
            root: root.clone(),
            route: None,
            method: String::new(),
            scopes: Vec::new(),
            tenant: None,
            request: None,
            response: None,
            masked: BTreeMap::new(),
        }
    }
}

/// One request through the pii filter.
pub struct PiiStream {
    root: Rc<Pii>,
    route: Option<usize>,
    method: String,
    scopes: Vec<String>,
    tenant: Option<String>,
    request: Option<Job>,
    response: Option<Job>,
    /// Values masked so far in this request (headers and bodies, both directions), by rule:
    /// the audit record's `masked` field.
    masked: BTreeMap<String, u64>,
}

fn direction(response: bool) -> &'static str {
    if response {
        "response"
    } else {
        "request"
    }
}

impl PiiStream {
    fn shadow(&self) -> bool {
        self.root.config.mode == Mode::Shadow
    }

    fn route(&self) -> Option<&Route> {
        self.route.and_then(|i| self.root.config.routes.get(i))
    }

    fn route_name(&self) -> String {
        self.route().map_or_else(|| "-".into(), |r| r.name.clone())
    }

    /// Applies `edits` to the message whose header map, read in this callback, is `headers`.
    fn edit<H: Host>(&self, host: &H, response: bool, edits: &[HeaderEdit], headers: &HeaderMap) {
        if self.shadow() {
            return;
        }
        for e in edits.iter().filter(|e| e.changes(headers)) {
            let (name, value) = match e {
                HeaderEdit::Set(n, v) => (*n, Some(*v)),
                HeaderEdit::Remove(n) => (*n, None),
            };
            if response {
                host.set_response_header(name, value);
            } else {
                host.set_request_header(name, value);
            }
        }
    }

    /// Records a step of an explanation, built only when the host is explaining (the
    /// simulator): in Envoy the strings would be made and dropped on every request.
    fn explain<H: Host>(&self, host: &H, step: impl FnOnce() -> (String, Vec<String>)) {
        if host.explaining() {
            let (outcome, hits) = step();
            host.explain(Step {
                filter: String::new(),
                matched: self.route_name(),
                outcome,
                hits,
            });
        }
    }

    /// Applies how a body ended; returns the flow for the callback.
    fn conclude<H: Host>(
        &mut self,
        host: &H,
        finished: Finished,
        response: bool,
        size: usize,
    ) -> Flow {
        let st = self.root.clone();
        // For the log lines below (borrowed: most bodies log nothing).
        let route_name = self
            .route
            .and_then(|i| st.config.routes.get(i))
            .map_or("-", |r| r.name.as_str());
        let dir = direction(response);
        match finished {
            Finished::Write(new, report) => {
                self.record(host, &report, dir, false);
                // `decide::finish` keeps `new` within `max_output_bytes`, which is rendered at
                // or below Envoy's buffer limit (a larger write resets the stream from inside
                // this call and re-enters the VM).
                let written = if response {
                    host.replace_response_body(size, &new)
                } else {
                    host.replace_request_body(size, &new)
                };
                if written.is_err() {
                    log::error!(
                        "portcullis pii: could not replace the {dir} body route={route_name}"
                    );
                }
                Flow::Continue
            }
            Finished::Keep(report) => {
                self.record(host, &report, dir, false);
                Flow::Continue
            }
            Finished::PassUnmaskable(cause) => {
                if let Some(c) = st.metrics.passed_unmaskable.get(cause.name()) {
                    c.inc(host);
                }
                self.explain(host, || {
                    (
                        format!("{dir} passed unmasked ({})", cause.name()),
                        Vec::new(),
                    )
                });
                st.config.audit.set(host, "pii_passed", cause.name());
                log::warn!("portcullis pii: {dir} body passed unmasked route={route_name} cause={} (on_unmaskable: pass)", cause.name());
                Flow::Continue
            }
            Finished::Block(d, cause) => {
                if let Some(c) = st.metrics.blocked.get(cause.name()) {
                    c.inc(host);
                }
                let outcome = format!("{dir} deny {} {} — {}", d.status, d.reason, d.detail);
                audit::denied(host, "pii", &d, self.shadow());
                if self.shadow() {
                    self.explain(host, || (format!("shadow ({outcome})"), Vec::new()));
                    log::info!(
                        "portcullis pii: shadow block {dir} route={route_name} reason={} cause={}",
                        d.reason,
                        cause.name()
                    );
                    return Flow::Continue;
                }
                self.explain(host, || (outcome, Vec::new()));
                log::warn!(
                    "portcullis pii: blocked {dir} route={route_name} status={} reason={} cause={}",
                    d.status,
                    d.reason,
                    cause.name()
                );
                metrics::send(host, &d);
                Flow::Pause
            }
        }
    }

    /// A body refused from its headers (unknown coding, binary, declared too large).
    fn refuse_early<H: Host>(&mut self, host: &H, cause: Cause, response: bool) -> Flow {
        let st = self.root.clone();
        let Some(route) = self.route.and_then(|i| st.config.routes.get(i)) else {
            return Flow::Continue;
        };
        let finished = decide::refusal(route, cause, &[], self.shadow(), response);
        self.conclude(host, finished, response, 0)
    }

    /// Counts and logs what masking did to a body (`headers`: to a message's headers).
    fn record<H: Host>(&mut self, host: &H, report: &Report, dir: &str, headers: bool) {
        let root = self.root.clone();
        let m = &root.metrics;
        if !headers {
            m.bodies_scanned.inc(host);
        }
        let counters = if self.shadow() {
            &m.shadow_masked
        } else {
            &m.masked
        };
        for (c, n) in counters.iter().zip(&report.masked) {
            c.add(host, u64::from(*n));
        }
        for (c, n) in m.revealed.iter().zip(&report.revealed) {
            c.add(host, u64::from(*n));
        }
        let rules = &root.config.rules;
        if host.explaining() {
            let mut parts = Vec::new();
            let mut hits = Vec::new();
            for (i, r) in rules.iter().enumerate() {
                let masked = report.masked.get(i).copied().unwrap_or(0);
                let revealed = report.revealed.get(i).copied().unwrap_or(0);
                if masked > 0 {
                    parts.push(format!("{}×{masked}", r.name));
                }
                if revealed > 0 {
                    parts.push(format!("{} revealed×{revealed} (scope)", r.name));
                }
                if masked + revealed > 0 {
                    hits.push(format!("pii.rule:{}", r.name));
                }
            }
            let what = if parts.is_empty() {
                "nothing to mask".to_string()
            } else {
                parts.join(", ")
            };
            self.explain(host, || (format!("{dir} masked: {what}"), hits));
        }
        if report.total() == 0 {
            return;
        }
        if headers {
            m.headers_masked.inc(host);
        } else {
            m.bodies_masked.inc(host);
        }
        // Counts by rule name only, never values (the access log's `masked` field): kept
        // only when there is an audit record to write them to.
        if root.config.audit.is_on() {
            for (r, n) in rules.iter().zip(&report.masked) {
                if *n > 0 {
                    *self.masked.entry(r.name.clone()).or_insert(0) += u64::from(*n);
                }
            }
            let field = if self.shadow() {
                "shadow_masked"
            } else {
                "masked"
            };
            audit::set(host, field, &audit::counts(&self.masked));
        }
        // Per-request detail belongs to the audit record; the application log gets it at debug.
        // Rule names and counts only; JSON pointers (which name keys, never values).
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let names: Vec<String> = rules
            .iter()
            .zip(&report.masked)
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{}:{n}", r.name))
            .collect();
        let verb = if self.shadow() {
            "shadow masked"
        } else {
            "masked"
        };
        log::debug!(
            "portcullis pii: {verb} {dir} route={} rules={}",
            self.route_name(),
            names.join(",")
        );
        log::debug!("portcullis pii: masked at {}", report.pointers.join(" "));
    }

    /// Buffers, then masks, one body. `response` selects the direction.
    fn on_body<H: Host>(
        &mut self,
        host: &H,
        size: usize,
        end_of_stream: bool,
        response: bool,
    ) -> Flow {
        let pending = if response {
            &self.response
        } else {
            &self.request
        };
        let Some(p) = pending else {
            return Flow::Continue;
        };
        // The route lives in the shared config: borrow it through a clone of the Rc, no copy.
        let st = self.root.clone();
        let Some(route) = self.route.and_then(|i| st.config.routes.get(i)) else {
            return Flow::Continue;
        };
        // Checked on every chunk before Envoy buffers it: Envoy never holds more than the cap.
        if decide::over_cap(route, size) {
            let codings = p.codings.clone();
            self.clear(response);
            let finished =
                decide::refusal(route, Cause::TooLarge, &codings, self.shadow(), response);
            return self.conclude(host, finished, response, size);
        }
        if !end_of_stream {
            return Flow::Pause;
        }
        let job = p.clone();
        self.clear(response);
        let raw = if response {
            host.response_body(0, size)
        } else {
            host.request_body(0, size)
        }
        .unwrap_or_default();
        let caller = Caller {
            scopes: &self.scopes,
            key: st.config.keys.for_tenant(self.tenant.as_deref()),
        };
        let finished = decide::finish(
            &st.config,
            route,
            &job,
            caller,
            &raw,
            self.shadow(),
            response,
        );
        self.conclude(host, finished, response, size)
    }

    /// Masks the header values of one direction (`headers` as read, names in lower case) and
    /// writes back the headers that changed, every value of each in order.
    fn mask_header_map<H: Host>(
        &mut self,
        host: &H,
        headers: &HeaderMap,
        response: bool,
    ) -> Result<(), Cause> {
        let st = self.root.clone();
        let Some(route) = self.route.and_then(|i| st.config.routes.get(i)) else {
            return Ok(());
        };
        let caller = Caller {
            scopes: &self.scopes,
            key: st.config.keys.for_tenant(self.tenant.as_deref()),
        };
        let masked = decide::mask_headers(&st.config, route, caller, headers, response)?;
        if masked.report.total() > 0 || masked.report.revealed.iter().any(|&n| n > 0) {
            let dir = if response {
                "response headers"
            } else {
                "request headers"
            };
            self.record(host, &masked.report, dir, true);
        }
        if self.shadow() {
            return Ok(());
        }
        for (name, values) in &masked.replace {
            let latin = headers.headers().any(|h| h.name == name && !h.utf8);
            // Pseudo-headers (`:path`) are replaced in place; others removed, then re-added.
            if name.starts_with(':') {
                if let Some(v) = values.first() {
                    if response {
                        host.set_response_header(name, Some(v));
                    } else {
                        host.set_request_header(name, Some(v));
                    }
                }
                continue;
            }
            if response {
                host.set_response_header(name, None);
                for v in values {
                    host.add_response_header_bytes(name, &header_bytes(v, latin));
                }
            } else {
                host.set_request_header(name, None);
                for v in values {
                    host.add_request_header_bytes(name, &header_bytes(v, latin));
                }
            }
        }
        Ok(())
    }

    fn clear(&mut self, response: bool) {
        if response {
            self.response = None;
        } else {
            self.request = None;
        }
    }
}

/// Every header of a message as read, names in lower case. HTTP allows header values that are
/// not UTF-8 (obs-text): such a value is read as windows-1252 (ISO-8859-1 for every byte HTTP
/// allows), so the detectors see its ASCII, and is written back the same way (the map marks
/// it as not UTF-8).
fn read_headers(map: HeaderMap) -> HeaderMap {
    map.decode_non_utf8(|bytes| {
        let d = charset::decode(
            bytes,
            Some(charset::Declared::Known(charset::Encoding::Windows1252)),
            charset::Guess::Text,
        );
        String::from_utf8_lossy(&d.utf8).into_owned()
    })
}

/// A header value to write: in windows-1252 when the header was read that way (and the mask
/// fits it), else as UTF-8.
fn header_bytes(value: &str, latin: bool) -> Vec<u8> {
    let form = charset::Form {
        encoding: charset::Encoding::Windows1252,
        bom: false,
    };
    if latin {
        if let Ok(b) = charset::encode(value, form) {
            return b;
        }
    }
    value.as_bytes().to_vec()
}

impl Stream for PiiStream {
    type Root = Pii;
    const CALLBACKS: Callbacks = Callbacks {
        request_body: true,
        response_headers: true,
        response_body: true,
        ..Callbacks::HEADERS
    };

    fn on_request_headers<H: Host>(&mut self, host: &H, end_of_stream: bool) -> Flow {
        // Every header: each value may carry personal data to mask on an egress route.
        let headers = read_headers(host.request_headers());
        let h = |n: &str| headers.get(n);
        self.method = h(":method").unwrap_or_default().to_string();
        let st = self.root.clone();
        let Some((index, route)) =
            decide::route_for(&st.config, &self.method, h(":path").unwrap_or_default())
        else {
            self.explain(host, || ("no route: not masked".into(), Vec::new()));
            return Flow::Continue;
        };
        self.route = Some(index);
        // Scopes and tenant come from the identity authn verified (filter state no client can
        // write), never from request headers.
        if let Some(id) =
            Identity::from_filter_state(host.property(&[IDENTITY_PROPERTY]).as_deref())
        {
            // Bound to the data classes the app catalog grants the caller's app.
            self.scopes = st
                .config
                .caller_scopes(id.scopes, id.data_classes.as_deref());
            self.tenant = id.tenant;
        }
        self.explain(host, || {
            ("masking".into(), vec![format!("pii.route:{}", route.name)])
        });
        self.edit(
            host,
            false,
            &decide::request_edits(route, !end_of_stream),
            &headers,
        );
        if let Err(cause) = self.mask_header_map(host, &headers, false) {
            return self.refuse_early(host, cause, false);
        }
        match decide::plan_request(route, &headers, end_of_stream) {
            BodyPlan::Pass => Flow::Continue,
            BodyPlan::Refuse(cause) => self.refuse_early(host, cause, false),
            plan @ BodyPlan::Mask(_) => {
                self.edit(host, false, &decide::body_edits(&plan, false), &headers);
                if let BodyPlan::Mask(job) = plan {
                    self.request = Some(job);
                }
                // Never pause headers (body callbacks would stop); the native buffer filter
                // behind this one holds the request until the body is masked.
                Flow::Continue
            }
        }
    }

    fn on_request_body<H: Host>(&mut self, host: &H, size: usize, end_of_stream: bool) -> Flow {
        self.on_body(host, size, end_of_stream, false)
    }

    fn on_response_headers<H: Host>(&mut self, host: &H, end_of_stream: bool) -> Flow {
        let st = self.root.clone();
        let Some(route) = self.route.and_then(|i| st.config.routes.get(i)) else {
            return Flow::Continue;
        };
        // Every header, repeated ones included (a single-value read returns only the first).
        let headers = &read_headers(host.response_headers());
        let status = headers
            .get(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        if let Err(cause) = self.mask_header_map(host, headers, true) {
            return self.refuse_early(host, cause, true);
        }
        let plan = decide::plan_response(route, &self.method, status, headers, end_of_stream);
        match plan {
            BodyPlan::Pass => Flow::Continue,
            BodyPlan::Refuse(cause) => self.refuse_early(host, cause, true),
            plan @ BodyPlan::Mask(_) => {
                self.edit(host, true, &decide::body_edits(&plan, true), headers);
                let key = st.config.keys.for_tenant(self.tenant.as_deref());
                if !self.shadow() && decide::needs_hold(&st.config, route, &plan, key) {
                    host.add_response_header(HOLD_HEADER, "1");
                }
                if let BodyPlan::Mask(job) = plan {
                    self.response = Some(job);
                }
                Flow::Continue
            }
        }
    }

    fn on_response_body<H: Host>(&mut self, host: &H, size: usize, end_of_stream: bool) -> Flow {
        self.on_body(host, size, end_of_stream, true)
    }
}
