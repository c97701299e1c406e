//! proxy-wasm adapter: reads the verified identity (filter state written by authn), applies the
//! header edits decided in [`crate::decide`], buffers bodies to the end, masks them and writes
//! them back. Headers are read only in header callbacks (the host refuses them later).

use crate::charset;
use crate::config::{Mode, PiiConfig, Route};
use crate::decide::{self, BodyPlan, Cause, Finished, HeaderEdit, Job};
use crate::mask::{Caller, Report};
use portcullis_core::host::{self, Counter};
use portcullis_core::identity::{Identity, IDENTITY_PROPERTY};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(host::Root::new("pii", State::load, |state| {
            Box::new(Pii { state, route: None, method: String::new(), scopes: Vec::new(), tenant: None, request: None, response: None })
        }))
    });
}}

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
    fn define(cfg: &PiiConfig) -> Self {
        let name = |s: &str| format!("portcullis.{}.{s}", cfg.stat_prefix);
        let per_rule = |kind: &str| {
            cfg.rules
                .iter()
                .map(|r| Counter::define(&name(&format!("{kind}.{}", r.name))))
                .collect()
        };
        let per_cause = |kind: &str| {
            Cause::ALL
                .iter()
                .map(|c| {
                    (
                        c.name(),
                        Counter::define(&name(&format!("{kind}.{}", c.name()))),
                    )
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
            bodies_scanned: Counter::define(&name("bodies_scanned")),
            bodies_masked: Counter::define(&name("bodies_masked")),
            headers_masked: Counter::define(&name("headers_masked")),
        }
    }
}

struct State {
    config: PiiConfig,
    metrics: Metrics,
}

impl State {
    fn load(bytes: &[u8]) -> Result<Self, portcullis_core::config::ConfigError> {
        let config = PiiConfig::from_bytes(bytes)?;
        let metrics = Metrics::define(&config);
        Ok(State { config, metrics })
    }
}

struct Pii {
    state: Rc<State>,
    route: Option<usize>,
    method: String,
    scopes: Vec<String>,
    tenant: Option<String>,
    request: Option<Job>,
    response: Option<Job>,
}

/// Asks the response-hold Lua filter (closest to the client) to keep the response until this
/// filter is done, so an unmaskable body can still become a 502 instead of leaking.
const HOLD_HEADER: &str = "x-portcullis-hold-response";

impl Pii {
    fn shadow(&self) -> bool {
        self.state.config.mode == Mode::Shadow
    }

    fn route(&self) -> Option<&Route> {
        self.route.and_then(|i| self.state.config.routes.get(i))
    }

    fn route_name(&self) -> String {
        self.route().map_or_else(|| "-".into(), |r| r.name.clone())
    }

    fn edit(&self, map: MapType, edits: &[HeaderEdit]) {
        if self.shadow() {
            return;
        }
        for e in edits {
            let _ = match e {
                HeaderEdit::Set(n, v) => hostcalls::set_map_value(map, n, Some(v)),
                HeaderEdit::Remove(n) => hostcalls::set_map_value(map, n, None),
            };
        }
    }

    /// Applies how a body ended; returns the action for the callback.
    fn conclude(&mut self, finished: Finished, response: bool, body_size: usize) -> Action {
        let st = self.state.clone();
        let route_name = self.route_name();
        let direction = if response { "response" } else { "request" };
        match finished {
            Finished::Write(new, report) => {
                self.record(&report, direction, false);
                let buffer = if response {
                    BufferType::HttpResponseBody
                } else {
                    BufferType::HttpRequestBody
                };
                // `decide::finish` keeps `new` within `max_output_bytes`, which is rendered at
                // or below Envoy's buffer limit (a larger write resets the stream from inside
                // this call and re-enters the VM).
                if let Err(status) = hostcalls::set_buffer(buffer, 0, body_size, &new) {
                    log::error!("portcullis pii: could not replace the {direction} body ({status:?}) route={route_name}");
                }
                Action::Continue
            }
            Finished::Keep(report) => {
                self.record(&report, direction, false);
                Action::Continue
            }
            Finished::PassUnmaskable(cause) => {
                if let Some(c) = st.metrics.passed_unmaskable.get(cause.name()) {
                    c.inc();
                }
                log::warn!("portcullis pii: {direction} body passed unmasked route={route_name} cause={} (on_unmaskable: pass)", cause.name());
                Action::Continue
            }
            Finished::Block(d, cause) => {
                if let Some(c) = st.metrics.blocked.get(cause.name()) {
                    c.inc();
                }
                if self.shadow() {
                    log::info!(
                        "portcullis pii: shadow block {direction} route={route_name} reason={} cause={}",
                        d.reason,
                        cause.name()
                    );
                    return Action::Continue;
                }
                log::warn!(
                    "portcullis pii: blocked {direction} route={route_name} status={} reason={} cause={}",
                    d.status,
                    d.reason,
                    cause.name()
                );
                host::send_denial(&d);
                Action::Pause
            }
        }
    }

    /// A body refused from its headers (unknown coding, binary, declared too large).
    fn refuse_early(&mut self, cause: Cause, response: bool) -> Action {
        let st = self.state.clone();
        let Some(route) = self.route.and_then(|i| st.config.routes.get(i)) else {
            return Action::Continue;
        };
        let finished = decide::refusal(route, cause, &[], self.shadow(), response);
        self.conclude(finished, response, 0)
    }

    /// Counts and logs what masking did to a body (`headers`: to a message's headers).
    fn record(&self, report: &Report, direction: &str, headers: bool) {
        let m = &self.state.metrics;
        if !headers {
            m.bodies_scanned.inc();
        }
        let counters = if self.shadow() {
            &m.shadow_masked
        } else {
            &m.masked
        };
        for (c, n) in counters.iter().zip(&report.masked) {
            c.add(*n);
        }
        for (c, n) in m.revealed.iter().zip(&report.revealed) {
            c.add(*n);
        }
        if report.total() == 0 {
            return;
        }
        if headers {
            m.headers_masked.inc();
        } else {
            m.bodies_masked.inc();
        }
        // Rule names and counts only; JSON pointers (which name keys, never values) at debug.
        let rules: Vec<String> = self
            .state
            .config
            .rules
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
        log::info!(
            "portcullis pii: {verb} {direction} route={} rules={}",
            self.route_name(),
            rules.join(",")
        );
        log::debug!("portcullis pii: masked at {}", report.pointers.join(" "));
    }

    /// Buffers, then masks, one body. `response` selects the direction.
    fn on_body(&mut self, body_size: usize, end_of_stream: bool, response: bool) -> Action {
        let pending = if response {
            &self.response
        } else {
            &self.request
        };
        let Some(p) = pending else {
            return Action::Continue;
        };
        // The route lives in the shared config: borrow it through a clone of the Rc, no copy.
        let st = self.state.clone();
        let Some(route) = self.route.and_then(|i| st.config.routes.get(i)) else {
            return Action::Continue;
        };
        // Checked on every chunk before Envoy buffers it: Envoy never holds more than the cap.
        if decide::over_cap(route, body_size) {
            let codings = p.codings.clone();
            self.clear(response);
            let finished =
                decide::refusal(route, Cause::TooLarge, &codings, self.shadow(), response);
            return self.conclude(finished, response, body_size);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let job = p.clone();
        self.clear(response);
        let buffer = if response {
            BufferType::HttpResponseBody
        } else {
            BufferType::HttpRequestBody
        };
        let raw = hostcalls::get_buffer(buffer, 0, body_size)
            .ok()
            .flatten()
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
        self.conclude(finished, response, body_size)
    }

    /// Masks the header values of one direction (`headers` as read, names in lower case) and
    /// writes back the headers that changed, every value of each in order.
    fn mask_header_map(
        &mut self,
        map: MapType,
        headers: &Headers,
        response: bool,
    ) -> Result<(), Cause> {
        let st = self.state.clone();
        let Some(route) = self.route.and_then(|i| st.config.routes.get(i)) else {
            return Ok(());
        };
        let caller = Caller {
            scopes: &self.scopes,
            key: st.config.keys.for_tenant(self.tenant.as_deref()),
        };
        let masked = decide::mask_headers(&st.config, route, caller, &headers.pairs, response)?;
        if masked.report.total() > 0 || masked.report.revealed.iter().any(|&n| n > 0) {
            let direction = if response {
                "response headers"
            } else {
                "request headers"
            };
            self.record(&masked.report, direction, true);
        }
        if self.shadow() {
            return Ok(());
        }
        for (name, values) in &masked.replace {
            let latin = headers.latin.contains(name);
            // Pseudo-headers (`:path`) are replaced in place; others removed, then re-added.
            if name.starts_with(':') {
                if let Some(v) = values.first() {
                    let _ =
                        hostcalls::set_map_value_bytes(map, name, Some(&header_bytes(v, latin)));
                }
                continue;
            }
            let _ = hostcalls::set_map_value(map, name, None);
            for v in values {
                let _ = hostcalls::add_map_value_bytes(map, name, &header_bytes(v, latin));
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

/// Headers as read: names in lower case, values as text, and the names that had a value that
/// was not UTF-8.
struct Headers {
    pairs: Vec<(String, String)>,
    latin: Vec<String>,
}

/// Every header of a map. Read as bytes: HTTP allows header values that are not UTF-8
/// (obs-text), and the SDK's string reads panic on them, trapping the VM. Such a value is read
/// as windows-1252 (ISO-8859-1 for every byte HTTP allows), so the detectors see its ASCII,
/// and is written back the same way.
fn read_headers(map: MapType) -> Headers {
    let mut latin = Vec::new();
    let pairs = hostcalls::get_map_bytes(map)
        .unwrap_or_default()
        .into_iter()
        .map(|(mut k, v)| {
            k.make_ascii_lowercase();
            let value = match String::from_utf8(v) {
                Ok(text) => text,
                Err(e) => {
                    latin.push(k.clone());
                    let d = charset::decode(
                        e.as_bytes(),
                        Some(charset::Declared::Known(charset::Encoding::Windows1252)),
                        charset::Guess::Text,
                    );
                    String::from_utf8_lossy(&d.utf8).into_owned()
                }
            };
            (k, value)
        })
        .collect();
    Headers { pairs, latin }
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

impl Context for Pii {}

impl HttpContext for Pii {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let read = read_headers(MapType::HttpRequestHeaders);
        let headers = read.pairs.clone();
        let h = |n: &str| portcullis_core::header(&headers, n);
        self.method = h(":method").unwrap_or_default().to_string();
        let st = self.state.clone();
        let Some((index, route)) =
            decide::route_for(&st.config, &self.method, h(":path").unwrap_or_default())
        else {
            return Action::Continue;
        };
        self.route = Some(index);
        // Scopes and tenant come from the identity authn verified (filter state no client can
        // write), never from request headers.
        if let Some(id) =
            Identity::from_filter_state(host::property(&[IDENTITY_PROPERTY]).as_deref())
        {
            self.scopes = id.scopes;
            self.tenant = id.tenant;
        }
        self.edit(
            MapType::HttpRequestHeaders,
            &decide::request_edits(route, !end_of_stream),
        );
        if let Err(cause) = self.mask_header_map(MapType::HttpRequestHeaders, &read, false) {
            return self.refuse_early(cause, false);
        }
        match decide::plan_request(route, &headers, end_of_stream) {
            BodyPlan::Pass => Action::Continue,
            BodyPlan::Refuse(cause) => self.refuse_early(cause, false),
            plan @ BodyPlan::Mask(_) => {
                self.edit(
                    MapType::HttpRequestHeaders,
                    &decide::body_edits(&plan, false),
                );
                if let BodyPlan::Mask(job) = plan {
                    self.request = Some(job);
                }
                // Never pause headers (body callbacks would stop); the native buffer filter
                // behind this one holds the request until the body is masked.
                Action::Continue
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_body(body_size, end_of_stream, false)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // The route lives in the shared config: borrow it through a clone of the Rc, no copy.
        let st = self.state.clone();
        let Some(route) = self.route.and_then(|i| st.config.routes.get(i)) else {
            return Action::Continue;
        };
        // Every header, repeated ones included (a single-value read returns only the first).
        let read = read_headers(MapType::HttpResponseHeaders);
        let headers = &read.pairs;
        let status = portcullis_core::header(headers, ":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        if let Err(cause) = self.mask_header_map(MapType::HttpResponseHeaders, &read, true) {
            return self.refuse_early(cause, true);
        }
        let plan = decide::plan_response(route, &self.method, status, headers, end_of_stream);
        match plan {
            BodyPlan::Pass => Action::Continue,
            BodyPlan::Refuse(cause) => self.refuse_early(cause, true),
            plan @ BodyPlan::Mask(_) => {
                self.edit(
                    MapType::HttpResponseHeaders,
                    &decide::body_edits(&plan, true),
                );
                let key = st.config.keys.for_tenant(self.tenant.as_deref());
                if !self.shadow() && decide::needs_hold(&st.config, route, &plan, key) {
                    let _ =
                        hostcalls::add_map_value(MapType::HttpResponseHeaders, HOLD_HEADER, "1");
                }
                if let BodyPlan::Mask(job) = plan {
                    self.response = Some(job);
                }
                Action::Continue
            }
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_body(body_size, end_of_stream, true)
    }
}
