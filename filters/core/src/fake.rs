//! An in-memory host: the filters' own callbacks run natively, with Envoy's contracts kept
//! (shared data's CAS rules, properties as filter state, local replies, paused streams resumed
//! by call answers), several workers sharing one process, a clock the test sets, injectable
//! CAS mismatches and host errors, and scripted answers for outbound calls.
//!
//! [`Gateway`] chains filter instances the way Envoy's HTTP connection manager does, with the
//! few native pieces the gateway template adds (edge header handling, the response-hold Lua
//! filter, the buffer filter, the router): native tests, `portcullis test` and `portcullis
//! explain` all run requests through it, and the scenario table runs the same requests through
//! real Envoy to keep the two honest.

use crate::config::ConfigError;
use crate::headers::value_text;
use crate::port::{
    CallResponse, Filter, Flow, GrpcCall, HeaderMap, Host, HostError, HttpCall, MetricId,
    MetricKind, Step, Stream,
};
use crate::shared::memory::MemoryStore;
use crate::shared::{SharedStore, StoreError};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// An outbound call as the fake host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// `http_call`.
    Http {
        /// Cluster.
        cluster: String,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
        /// Timeout.
        timeout: Duration,
    },
    /// `grpc_call`.
    Grpc {
        /// Cluster.
        cluster: String,
        /// Service.
        service: String,
        /// Method.
        method: String,
        /// Message.
        message: Vec<u8>,
        /// Timeout.
        timeout: Duration,
    },
}

/// Scripted answers for outbound calls: `None` leaves the call unanswered (a timeout the
/// test delivers itself, or never).
pub type CallScript = Box<dyn Fn(&Outbound) -> Option<CallResponse>>;

/// What every worker of one Envoy process shares: shared data, the clock, metrics, and the
/// outside world (call answers).
pub struct Process {
    /// Shared data (inject faults through it).
    pub shared: MemoryStore,
    clock: Cell<u64>,
    metric_names: RefCell<Vec<(String, MetricKind)>>,
    metric_values: RefCell<Vec<u64>>,
    rng: Cell<u64>,
    script: RefCell<Option<CallScript>>,
    calls: RefCell<Vec<Outbound>>,
    next_token: Cell<u32>,
    host_errors: Cell<u32>,
    host_calls: RefCell<Option<BTreeMap<String, u64>>>,
}

impl Default for Process {
    fn default() -> Self {
        Process {
            shared: MemoryStore::new(),
            clock: Cell::new(1_700_000_000 * 1_000_000_000),
            metric_names: RefCell::new(Vec::new()),
            metric_values: RefCell::new(Vec::new()),
            rng: Cell::new(0x9e37_79b9_7f4a_7c15),
            script: RefCell::new(None),
            calls: RefCell::new(Vec::new()),
            next_token: Cell::new(1),
            host_errors: Cell::new(0),
            host_calls: RefCell::new(None),
        }
    }
}

impl Process {
    /// A process whose clock reads `now_ns`.
    pub fn at(now_ns: u64) -> Self {
        let p = Process::default();
        p.set_now(now_ns);
        p
    }

    /// Sets the clock.
    pub fn set_now(&self, now_ns: u64) {
        self.clock.set(now_ns);
    }

    /// The clock.
    pub fn now(&self) -> u64 {
        self.clock.get()
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        self.clock
            .set(self.clock.get() + u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Answers outbound calls with `script`.
    pub fn script_calls(&self, script: CallScript) {
        *self.script.borrow_mut() = Some(script);
    }

    /// Every outbound call made so far.
    pub fn calls(&self) -> Vec<Outbound> {
        self.calls.borrow().clone()
    }

    /// Starts (or restarts) counting the host calls the filters make, by kind: in Envoy each
    /// one crosses from the VM to the host (a read that returns data also calls back into the
    /// VM to allocate), so tests pin a request's budget with [`Process::host_calls`].
    pub fn count_host_calls(&self) {
        *self.host_calls.borrow_mut() = Some(BTreeMap::new());
    }

    /// The host calls counted since [`Process::count_host_calls`], keyed `instance: kind` or
    /// `instance: kind name` (`authn: request_headers`, `ratelimit: property source.address`);
    /// counting restarts.
    pub fn host_calls(&self) -> BTreeMap<String, u64> {
        self.host_calls
            .borrow_mut()
            .replace(BTreeMap::new())
            .unwrap_or_default()
    }

    fn note(&self, instance: &str, kind: &str, name: &str) {
        if let Some(m) = self.host_calls.borrow_mut().as_mut() {
            let key = if name.is_empty() {
                format!("{instance}: {kind}")
            } else {
                format!("{instance}: {kind} {name}")
            };
            *m.entry(key).or_default() += 1;
        }
    }

    /// Makes the next `n` host calls that can fail (property writes, local replies, outbound
    /// calls, body writes) fail.
    pub fn fail_next_host_calls(&self, n: u32) {
        self.host_errors.set(n);
    }

    fn host_error(&self) -> bool {
        let n = self.host_errors.get();
        if n > 0 {
            self.host_errors.set(n - 1);
            true
        } else {
            false
        }
    }

    /// A metric's value by its full name (as Envoy would show it, without `wasmcustom.`).
    pub fn metric(&self, name: &str) -> Option<u64> {
        let names = self.metric_names.borrow();
        let i = names.iter().position(|(n, _)| n == name)?;
        self.metric_values.borrow().get(i).copied()
    }

    /// Every metric with its value.
    pub fn metrics(&self) -> BTreeMap<String, u64> {
        let names = self.metric_names.borrow();
        let values = self.metric_values.borrow();
        names
            .iter()
            .zip(values.iter())
            .map(|((n, _), v)| (n.clone(), *v))
            .collect()
    }

    fn random(&self, buf: &mut [u8]) {
        // Deterministic, so a run is reproducible.
        let mut r = TestRng(self.rng.get());
        for b in buf.iter_mut() {
            *b = (r.next_u64() >> 56) as u8;
        }
        self.rng.set(r.0);
    }
}

/// A deterministic generator (xorshift64*) for the fake host's random bytes and for tests'
/// generated inputs: a run, and a failure, reproduce from the seed. Never for anything secret.
#[derive(Debug, Clone)]
pub struct TestRng(u64);

impl TestRng {
    /// A generator from `seed` (any value: a zero state would stay zero, so it is avoided).
    pub fn new(seed: u64) -> Self {
        TestRng(seed | 1)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }
}

/// One request as the filters see it (and change it).
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    /// Request headers (pseudo-headers included), names lower-case.
    pub request_headers: Vec<(String, String)>,
    /// Request body so far.
    pub request_body: Vec<u8>,
    /// Response headers (`:status` included).
    pub response_headers: Vec<(String, String)>,
    /// Response body so far.
    pub response_body: Vec<u8>,
    /// Properties: connection facts and filter state (`portcullis.identity`, …).
    pub properties: BTreeMap<String, Vec<u8>>,
    /// A local reply, and the filter instance that sent it.
    pub local_reply: Option<LocalReply>,
    /// `resume_request` was called.
    pub resumed: bool,
    /// Calls this stream made, waiting for an answer: token → filter instance index.
    pub pending: Vec<(u32, usize)>,
}

/// A response a filter (or Envoy) answered with locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// Who answered (`authn`, `ratelimit_ip`, … or `envoy`).
    pub by: String,
    /// Status.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn set(h: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    h.retain(|(k, _)| k != name);
    if let Some(v) = value {
        h.push((name.to_string(), v.to_string()));
    }
}

/// The fake [`Host`] one callback runs on: the process, and the stream when there is one.
pub struct FakeHost<'a> {
    process: &'a Process,
    stream: Option<&'a RefCell<StreamState>>,
    /// Name of the filter instance running (for local replies and explanations).
    instance: &'a str,
    index: usize,
    steps: Option<&'a RefCell<Vec<Step>>>,
    tick: &'a Cell<Option<Duration>>,
}

impl<'a> FakeHost<'a> {
    /// A host with no stream (configure, ticks, root call answers).
    pub fn root(process: &'a Process, instance: &'a str, tick: &'a Cell<Option<Duration>>) -> Self {
        FakeHost {
            process,
            stream: None,
            instance,
            index: 0,
            steps: None,
            tick,
        }
    }

    fn with_stream<T>(&self, f: impl FnOnce(&mut StreamState) -> T) -> Option<T> {
        self.stream.map(|s| f(&mut s.borrow_mut()))
    }
}

impl SharedStore for FakeHost<'_> {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), StoreError> {
        self.process.note(self.instance, "shared_get", "");
        self.process.shared.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.process.note(self.instance, "shared_set", "");
        self.process.shared.set(key, value, cas)
    }
}

impl Host for FakeHost<'_> {
    fn request_header(&self, name: &str) -> Option<String> {
        self.process.note(self.instance, "request_header", name);
        self.with_stream(|s| get(&s.request_headers, name).map(str::to_string))
            .flatten()
    }

    fn request_headers(&self) -> HeaderMap {
        self.process.note(self.instance, "request_headers", "");
        self.with_stream(|s| wire_map(&s.request_headers))
            .unwrap_or_default()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.process.note(self.instance, "set_request_header", name);
        self.with_stream(|s| set(&mut s.request_headers, name, value));
    }

    fn add_request_header(&self, name: &str, value: &str) {
        self.process.note(self.instance, "add_request_header", name);
        self.with_stream(|s| {
            s.request_headers
                .push((name.to_string(), value.to_string()))
        });
    }

    fn add_request_header_bytes(&self, name: &str, value: &[u8]) {
        self.add_request_header(name, &latin1_text(value));
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.process.note(self.instance, "request_body", "");
        self.with_stream(|s| {
            s.request_body
                .get(start..start.saturating_add(len).min(s.request_body.len()))
                .map(<[u8]>::to_vec)
        })
        .flatten()
    }

    fn replace_request_body(&self, len: usize, body: &[u8]) -> Result<(), HostError> {
        self.process.note(self.instance, "replace_request_body", "");
        if self.process.host_error() {
            return Err(HostError);
        }
        self.with_stream(|s| {
            let len = len.min(s.request_body.len());
            s.request_body.splice(..len, body.iter().copied());
        })
        .ok_or(HostError)
    }

    fn resume_request(&self) {
        self.with_stream(|s| s.resumed = true);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.process.note(self.instance, "response_header", name);
        self.with_stream(|s| get(&s.response_headers, name).map(str::to_string))
            .flatten()
    }

    fn response_headers(&self) -> HeaderMap {
        self.process.note(self.instance, "response_headers", "");
        self.with_stream(|s| wire_map(&s.response_headers))
            .unwrap_or_default()
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) {
        self.process
            .note(self.instance, "set_response_header", name);
        self.with_stream(|s| set(&mut s.response_headers, name, value));
    }

    fn add_response_header(&self, name: &str, value: &str) {
        self.process
            .note(self.instance, "add_response_header", name);
        self.with_stream(|s| {
            s.response_headers
                .push((name.to_string(), value.to_string()))
        });
    }

    fn add_response_header_bytes(&self, name: &str, value: &[u8]) {
        self.add_response_header(name, &latin1_text(value));
    }

    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.process.note(self.instance, "response_body", "");
        self.with_stream(|s| {
            s.response_body
                .get(start..start.saturating_add(len).min(s.response_body.len()))
                .map(<[u8]>::to_vec)
        })
        .flatten()
    }

    fn replace_response_body(&self, len: usize, body: &[u8]) -> Result<(), HostError> {
        self.process
            .note(self.instance, "replace_response_body", "");
        if self.process.host_error() {
            return Err(HostError);
        }
        self.with_stream(|s| {
            let len = len.min(s.response_body.len());
            s.response_body.splice(..len, body.iter().copied());
        })
        .ok_or(HostError)
    }

    fn send_response(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        if self.process.host_error() {
            return Err(HostError);
        }
        let reply = LocalReply {
            by: self.instance.to_string(),
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_string()))
                .collect(),
            body: body.to_vec(),
        };
        self.with_stream(|s| s.local_reply = Some(reply))
            .ok_or(HostError)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        // Envoy serves filter state written as `x` under `x` and `filter_state.wasm.x`.
        let key = match path {
            ["filter_state", rest @ ..] => rest.join(".").trim_start_matches("wasm.").to_string(),
            _ => path.join("."),
        };
        self.process.note(self.instance, "property", &key);
        self.with_stream(|s| s.properties.get(&key).cloned())
            .flatten()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        if self.process.host_error() {
            return Err(HostError);
        }
        let key = path.join(".");
        self.process.note(self.instance, "set_property", &key);
        self.with_stream(|s| {
            s.properties.insert(key, value.to_vec());
        })
        .ok_or(HostError)
    }

    fn now_nanos(&self) -> u64 {
        self.process.note(self.instance, "now", "");
        self.process.now()
    }

    fn random_bytes(&self, buf: &mut [u8]) {
        self.process.random(buf);
    }

    fn secure_random(&self, buf: &mut [u8]) -> bool {
        // Reproducible rather than secret: tests only.
        self.process.random(buf);
        true
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> MetricId {
        let mut names = self.process.metric_names.borrow_mut();
        if let Some(i) = names.iter().position(|(n, _)| n == name) {
            return MetricId(u32::try_from(i).ok());
        }
        names.push((name.to_string(), kind));
        self.process.metric_values.borrow_mut().push(0);
        MetricId(u32::try_from(names.len() - 1).ok())
    }

    fn increment_metric(&self, id: MetricId, by: u64) {
        self.process.note(self.instance, "increment_metric", "");
        if let Some(i) = id.0.and_then(|i| usize::try_from(i).ok()) {
            if let Some(v) = self.process.metric_values.borrow_mut().get_mut(i) {
                *v += by;
            }
        }
    }

    fn record_metric(&self, id: MetricId, value: u64) {
        self.process.note(self.instance, "record_metric", "");
        if let Some(i) = id.0.and_then(|i| usize::try_from(i).ok()) {
            if let Some(v) = self.process.metric_values.borrow_mut().get_mut(i) {
                *v = value;
            }
        }
    }

    fn http_call(&self, call: &HttpCall<'_>) -> Result<u32, HostError> {
        self.dispatch(Outbound::Http {
            cluster: call.cluster.to_string(),
            headers: call
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            body: call.body.map(<[u8]>::to_vec).unwrap_or_default(),
            timeout: call.timeout,
        })
    }

    fn grpc_call(&self, call: &GrpcCall<'_>) -> Result<u32, HostError> {
        self.dispatch(Outbound::Grpc {
            cluster: call.cluster.to_string(),
            service: call.service.to_string(),
            method: call.method.to_string(),
            message: call.message.to_vec(),
            timeout: call.timeout,
        })
    }

    fn set_tick_period(&self, period: Duration) {
        self.tick.set(Some(period));
    }

    fn explaining(&self) -> bool {
        self.steps.is_some()
    }

    fn explain(&self, mut step: Step) {
        if let Some(steps) = self.steps {
            if step.filter.is_empty() {
                step.filter = self.instance.to_string();
            }
            steps.borrow_mut().push(step);
        }
    }
}

impl FakeHost<'_> {
    fn dispatch(&self, call: Outbound) -> Result<u32, HostError> {
        if self.process.host_error() {
            return Err(HostError);
        }
        let token = self.process.next_token.get();
        self.process.next_token.set(token + 1);
        self.process.calls.borrow_mut().push(call);
        self.with_stream(|s| s.pending.push((token, self.index)));
        Ok(token)
    }
}

// --- Filters with their types erased, so one chain can hold different filters. ---

trait DynStream {
    fn request_headers(&mut self, h: &FakeHost<'_>, eos: bool) -> Flow;
    fn request_body(&mut self, h: &FakeHost<'_>, size: usize, eos: bool) -> Flow;
    fn response_headers(&mut self, h: &FakeHost<'_>, eos: bool) -> Flow;
    fn response_body(&mut self, h: &FakeHost<'_>, size: usize, eos: bool) -> Flow;
    fn call_response(&mut self, h: &FakeHost<'_>, token: u32, r: CallResponse);
    fn done(&mut self, h: &FakeHost<'_>);
}

impl<S: Stream> DynStream for S {
    fn request_headers(&mut self, h: &FakeHost<'_>, eos: bool) -> Flow {
        self.on_request_headers(h, eos)
    }
    // Only the callbacks the filter declares run, as in Envoy, whose module for the filter
    // does not export the others (`Callbacks`): an undeclared one lets the stream pass.
    fn request_body(&mut self, h: &FakeHost<'_>, size: usize, eos: bool) -> Flow {
        if !S::CALLBACKS.request_body {
            return Flow::Continue;
        }
        self.on_request_body(h, size, eos)
    }
    fn response_headers(&mut self, h: &FakeHost<'_>, eos: bool) -> Flow {
        if !S::CALLBACKS.response_headers {
            return Flow::Continue;
        }
        self.on_response_headers(h, eos)
    }
    fn response_body(&mut self, h: &FakeHost<'_>, size: usize, eos: bool) -> Flow {
        if !S::CALLBACKS.response_body {
            return Flow::Continue;
        }
        self.on_response_body(h, size, eos)
    }
    fn call_response(&mut self, h: &FakeHost<'_>, token: u32, r: CallResponse) {
        self.on_call_response(h, token, r);
    }
    fn done(&mut self, h: &FakeHost<'_>) {
        if S::CALLBACKS.done {
            self.on_done(h);
        }
    }
}

trait DynFilter {
    fn stream(&self) -> Box<dyn DynStream>;
    fn tick(&self, h: &FakeHost<'_>);
    fn call_response(&self, h: &FakeHost<'_>, token: u32, r: CallResponse);
}

struct Erased<F: Filter>(Rc<F>);

impl<F: Filter> DynFilter for Erased<F> {
    fn stream(&self) -> Box<dyn DynStream> {
        Box::new(F::stream(&self.0))
    }
    fn tick(&self, h: &FakeHost<'_>) {
        self.0.on_tick(h);
    }
    fn call_response(&self, h: &FakeHost<'_>, token: u32, r: CallResponse) {
        self.0.on_call_response(h, token, r);
    }
}

/// Configures one filter instance on a worker.
type MakeFilter = dyn Fn(&FakeHost<'_>) -> Result<Box<dyn DynFilter>, ConfigError>;

/// A configured filter instance of a worker: its name, its VM, the tick it asked for.
type WorkerFilter = (String, Box<dyn DynFilter>, Cell<Option<Duration>>);

/// One filter instance of the chain: its name (`ratelimit_ip`) and configuration.
#[derive(Clone)]
pub struct Instance {
    /// Instance name (the `decided_by` of its denials).
    pub name: String,
    make: Rc<MakeFilter>,
}

impl Instance {
    /// An instance of filter `F` configured with `config` (the plugin configuration bytes).
    pub fn new<F: Filter>(name: &str, config: Vec<u8>) -> Self {
        Instance {
            name: name.to_string(),
            make: Rc::new(move |h| {
                F::configure_owned(h, config.clone())
                    .map(|f| Box::new(Erased(Rc::new(f))) as Box<dyn DynFilter>)
            }),
        }
    }
}

/// Envoy's `headers_with_underscores_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoreAction {
    /// Drop such headers.
    Drop,
    /// Refuse the request (400).
    Reject,
    /// Pass them.
    Allow,
}

/// Envoy's own behaviour around the filters, as the gateway template renders it.
#[derive(Debug, Clone)]
pub struct Edge {
    /// `xff_num_trusted_hops` (with `use_remote_address: true`).
    pub trusted_hops: u32,
    /// Request headers whose names contain `_`.
    pub underscores: UnderscoreAction,
    /// Headers removed before the upstream (the route's `request_headers_to_remove`).
    pub stripped: Vec<String>,
    /// The buffer filter's `max_request_bytes` (0: no buffer filter).
    pub max_request_bytes: usize,
    /// Envoy's path normalisation (`normalize_path`, `merge_slashes`, escaped slashes refused).
    pub normalize_path: bool,
    /// The response-hold Lua filter is first in the chain.
    pub response_hold: bool,
}

impl Default for Edge {
    fn default() -> Self {
        Edge {
            trusted_hops: 0,
            underscores: UnderscoreAction::Drop,
            stripped: Vec::new(),
            max_request_bytes: 0,
            normalize_path: false,
            response_hold: true,
        }
    }
}

/// Header the schema and pii filters set to have the Lua filter hold a response.
pub const HOLD_HEADER: &str = "x-portcullis-hold-response";

/// A worker: one VM per filter instance, in chain order.
pub struct Worker {
    filters: Vec<WorkerFilter>,
}

/// A request as the client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Request target (path and query).
    pub path: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body (`None`: no body at all).
    pub body: Option<Vec<u8>>,
    /// Client address (`ip:port`).
    pub source: String,
    /// SHA-256 (hex) of the client certificate on a TLS connection that presented one.
    pub peer_cert_sha256: Option<String>,
}

impl Request {
    /// A GET for `path` from 127.0.0.1.
    pub fn get(path: &str) -> Self {
        Request {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            body: None,
            source: "127.0.0.1:40000".into(),
            peer_cert_sha256: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }
}

/// What reached the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// Method.
    pub method: String,
    /// Path as forwarded.
    pub path: String,
    /// Headers as forwarded.
    pub headers: Vec<(String, String)>,
    /// Body as forwarded.
    pub body: Vec<u8>,
}

impl UpstreamRequest {
    /// A header as forwarded.
    pub fn header(&self, name: &str) -> Option<&str> {
        get(&self.headers, name)
    }
}

/// A response (the upstream's, or the one the client gets).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// Status.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: &str) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    /// A header.
    pub fn header(&self, name: &str) -> Option<&str> {
        get(&self.headers, name)
    }
}

/// One request's journey through the chain.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// What the client receives (`status` 0: the stream was reset, nothing usable arrived).
    pub response: Response,
    /// Who answered locally (`authn`, …, `envoy`), `None` when the upstream's answer went out.
    pub decided_by: Option<String>,
    /// What reached the upstream, if anything did.
    pub upstream: Option<UpstreamRequest>,
    /// The filters' explanation (when asked for).
    pub steps: Vec<Step>,
    /// The audit fields the filters recorded (`portcullis.audit.<field>` → value), what
    /// Envoy's access log would read.
    pub audit: BTreeMap<String, String>,
}

impl Exchange {
    /// The reason code of a local reply (`x-portcullis-reason`).
    pub fn reason(&self) -> Option<&str> {
        self.response.header("x-portcullis-reason")
    }
}

/// A gateway: one process, some workers, each running the same chain of filter instances.
pub struct Gateway {
    /// The process (shared data, clock, metrics, calls).
    pub process: Process,
    workers: Vec<Worker>,
    edge: Edge,
    instances: Vec<Instance>,
}

impl Gateway {
    /// Configures `instances` (chain order) on `workers` workers; a configuration error
    /// names the instance.
    pub fn new(
        instances: Vec<Instance>,
        workers: usize,
        edge: Edge,
        process: Process,
    ) -> Result<Self, (String, ConfigError)> {
        let mut g = Gateway {
            process,
            workers: Vec::new(),
            edge,
            instances,
        };
        for _ in 0..workers.max(1) {
            g.add_worker()?;
        }
        Ok(g)
    }

    fn add_worker(&mut self) -> Result<(), (String, ConfigError)> {
        let mut filters = Vec::new();
        for inst in &self.instances {
            let tick = Cell::new(None);
            let host = FakeHost::root(&self.process, &inst.name, &tick);
            let f = (inst.make)(&host).map_err(|e| (inst.name.clone(), e))?;
            filters.push((inst.name.clone(), f, tick));
        }
        self.workers.push(Worker { filters });
        Ok(())
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Runs every tick that is due (each worker's filters that asked for one), and delivers
    /// root calls the script answers.
    pub fn tick(&self) {
        for w in &self.workers {
            for (name, f, tick) in &w.filters {
                if tick.get().is_some() {
                    let host = FakeHost::root(&self.process, name, tick);
                    let before = self.process.calls.borrow().len();
                    f.tick(&host);
                    self.answer_root_calls(name, f.as_ref(), tick, before);
                }
            }
        }
    }

    fn answer_root_calls(
        &self,
        name: &str,
        f: &dyn DynFilter,
        tick: &Cell<Option<Duration>>,
        from: usize,
    ) {
        // Tokens count calls from 1: call n (0-based) has token n + 1.
        let made: Vec<(u32, Outbound)> = {
            let calls = self.process.calls.borrow();
            calls[from..]
                .iter()
                .enumerate()
                .map(|(i, c)| (u32::try_from(from + i + 1).unwrap_or(u32::MAX), c.clone()))
                .collect()
        };
        for (token, call) in made {
            let answer = self.process.script.borrow().as_ref().and_then(|s| s(&call));
            if let Some(a) = answer {
                let host = FakeHost::root(&self.process, name, tick);
                f.call_response(&host, token, a);
            }
        }
    }

    /// Sends a request on `worker`; `upstream` answers whatever reaches it.
    pub fn send(
        &self,
        worker: usize,
        req: &Request,
        upstream: &dyn Fn(&UpstreamRequest) -> Response,
    ) -> Exchange {
        self.run(worker, req, upstream, false)
    }

    /// Like [`Gateway::send`], recording each filter's explanation.
    pub fn explain(
        &self,
        worker: usize,
        req: &Request,
        upstream: &dyn Fn(&UpstreamRequest) -> Response,
    ) -> Exchange {
        self.run(worker, req, upstream, true)
    }

    fn envoy_reply(status: u16, details: &str, body: &str) -> LocalReply {
        // The gateway's local_reply_config mapper, for replies Envoy itself generates.
        let json = format!(
            "{{\"detail\":{},\"filter\":\"envoy\",\"reason\":{},\"status\":{status},\"type\":\"about:blank\"}}",
            json_string(body),
            json_string(details)
        );
        LocalReply {
            by: "envoy".into(),
            status,
            headers: vec![
                ("content-type".into(), "application/problem+json".into()),
                ("x-portcullis-reason".into(), details.into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: json.into_bytes(),
        }
    }

    /// What Envoy's connection manager does before the first filter: edge header handling,
    /// path normalisation, the client address.
    fn edge_request(&self, req: &Request, st: &mut StreamState) -> Option<LocalReply> {
        let e = &self.edge;
        if e.underscores == UnderscoreAction::Reject
            && req.headers.iter().any(|(k, _)| k.contains('_'))
        {
            return Some(Self::envoy_reply(
                400,
                "http1.unexpected_underscore",
                "Bad Request",
            ));
        }
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .filter(|(k, _)| !(e.underscores == UnderscoreAction::Drop && k.contains('_')))
            .filter(|(k, _)| !k.starts_with("x-envoy-"))
            .cloned()
            .collect();
        let mut path = req.path.clone();
        if e.normalize_path {
            // What Envoy's canonicalizer refuses (seen with Envoy 1.40): an encoded slash or
            // backslash (REJECT_REQUEST), an encoded NUL, a fragment. A raw backslash becomes
            // a slash.
            let (p, q) = match path.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path.as_str(), None),
            };
            let lower = p.to_ascii_lowercase();
            if lower.contains("%2f")
                || lower.contains("%5c")
                || lower.contains("%00")
                || p.contains('#')
            {
                return Some(Self::envoy_reply(
                    400,
                    "path_normalization_failed",
                    "Bad Request",
                ));
            }
            let merged = merge_slashes(&p.replace('\\', "/"));
            let resolved = remove_dot_segments(&merged);
            path = match q {
                Some(q) => format!("{resolved}?{q}"),
                None => resolved,
            };
        }
        let peer = req.source.clone();
        let client = if e.trusted_hops == 0 {
            for h in [
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-port",
                "x-forwarded-prefix",
            ] {
                set(&mut headers, h, None);
            }
            peer.clone()
        } else {
            let xff: Vec<String> = headers
                .iter()
                .filter(|(k, _)| k == "x-forwarded-for")
                .flat_map(|(_, v)| v.split(','))
                .map(|s| s.trim().to_string())
                .collect();
            let n = e.trusted_hops as usize;
            if xff.len() >= n {
                xff.get(xff.len() - n)
                    .map_or(peer.clone(), |ip| format!("{ip}:0"))
            } else {
                peer.clone()
            }
        };
        let peer_ip = peer.rsplit_once(':').map_or(peer.as_str(), |(ip, _)| ip);
        let xff = match get(&headers, "x-forwarded-for") {
            Some(v) => format!("{v}, {peer_ip}"),
            None => peer_ip.to_string(),
        };
        set(&mut headers, "x-forwarded-for", Some(&xff));
        set(&mut headers, "x-forwarded-proto", Some("http"));
        let mut all = vec![
            (":method".to_string(), req.method.clone()),
            (":path".to_string(), path),
            (
                ":authority".to_string(),
                get(&req.headers, "host").unwrap_or("gateway").to_string(),
            ),
            (":scheme".to_string(), "http".to_string()),
        ];
        all.extend(headers.into_iter().filter(|(k, _)| k != "host"));
        st.request_headers = all;
        st.properties
            .insert("source.address".into(), client.into_bytes());
        if let Some(d) = &req.peer_cert_sha256 {
            st.properties.insert(
                "connection.sha256_peer_certificate_digest".into(),
                d.clone().into_bytes(),
            );
        }
        None
    }

    fn run(
        &self,
        worker: usize,
        req: &Request,
        upstream: &dyn Fn(&UpstreamRequest) -> Response,
        explain: bool,
    ) -> Exchange {
        let w = &self.workers[worker % self.workers.len()];
        let steps = RefCell::new(Vec::new());
        let st = RefCell::new(StreamState::default());
        let mut streams: Vec<Box<dyn DynStream>> =
            w.filters.iter().map(|(_, f, _)| f.stream()).collect();
        let host = |i: usize| FakeHost {
            process: &self.process,
            stream: Some(&st),
            instance: &w.filters[i].0,
            index: i,
            steps: explain.then_some(&steps),
            tick: &w.filters[i].2,
        };
        let finish = |streams: &mut Vec<Box<dyn DynStream>>, ex: Exchange| {
            for (i, s) in streams.iter_mut().enumerate() {
                s.done(&host(i));
            }
            let audit = st
                .borrow()
                .properties
                .iter()
                .filter_map(|(k, v)| {
                    let field = k.strip_prefix(crate::audit::PREFIX)?;
                    Some((field.to_string(), String::from_utf8_lossy(v).into_owned()))
                })
                .collect();
            Exchange {
                steps: steps.borrow().clone(),
                audit,
                ..ex
            }
        };
        let local = |r: LocalReply, upstream: Option<UpstreamRequest>| Exchange {
            response: Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            },
            decided_by: Some(r.by),
            upstream,
            steps: Vec::new(),
            audit: BTreeMap::new(),
        };
        let edge = self.edge_request(req, &mut st.borrow_mut());
        if let Some(r) = edge {
            return finish(&mut streams, local(r, None));
        }
        let has_body = req.body.is_some();
        // Decoding: headers, then the body, through every filter in order.
        let mut reached = streams.len();
        for (i, s) in streams.iter_mut().enumerate() {
            let flow = s.request_headers(&host(i), !has_body);
            if let Some(r) = self.settle(s.as_mut(), flow, &st, &host(i)) {
                reached = i;
                let ex = self.encode_local(&mut streams[..reached], r, &st, &host);
                return finish(&mut streams, ex);
            }
        }
        let _ = reached;
        if let Some(body) = &req.body {
            st.borrow_mut().request_body = body.clone();
            for (i, s) in streams.iter_mut().enumerate() {
                let size = st.borrow().request_body.len();
                let flow = s.request_body(&host(i), size, true);
                if let Some(r) = self.settle(s.as_mut(), flow, &st, &host(i)) {
                    let ex = self.encode_local(&mut streams[..i], r, &st, &host);
                    return finish(&mut streams, ex);
                }
            }
            if self.edge.max_request_bytes > 0
                && st.borrow().request_body.len() > self.edge.max_request_bytes
            {
                let r = Self::envoy_reply(413, "request_payload_too_large", "Payload Too Large");
                let n = streams.len();
                let ex = self.encode_local(&mut streams[..n], r, &st, &host);
                return finish(&mut streams, ex);
            }
        }
        // The router.
        let up = {
            let s = st.borrow();
            let headers: Vec<(String, String)> = s
                .request_headers
                .iter()
                .filter(|(k, _)| !k.starts_with(':') && !self.edge.stripped.contains(k))
                .cloned()
                .collect();
            UpstreamRequest {
                method: get(&s.request_headers, ":method")
                    .unwrap_or("GET")
                    .to_string(),
                path: get(&s.request_headers, ":path").unwrap_or("/").to_string(),
                headers,
                body: s.request_body.clone(),
            }
        };
        // The router connected: what Envoy serves as `upstream.address`.
        st.borrow_mut()
            .properties
            .insert("upstream.address".into(), b"127.0.0.1:8080".to_vec());
        let answer = upstream(&up);
        if explain {
            steps.borrow_mut().push(Step {
                filter: "upstream".into(),
                matched: format!("{} {}", up.method, up.path),
                outcome: format!("answers {}", answer.status),
                hits: Vec::new(),
            });
        }
        {
            let mut s = st.borrow_mut();
            s.response_headers = vec![(":status".into(), answer.status.to_string())];
            s.response_headers.extend(answer.headers.iter().cloned());
            s.response_body.clear();
        }
        // Encoding: response headers, then the body, through the filters in reverse.
        let body_empty = answer.body.is_empty() || up.method == "HEAD";
        let n = streams.len();
        for i in (0..n).rev() {
            let flow = streams[i].response_headers(&host(i), body_empty);
            if let Some(r) = self.settle(streams[i].as_mut(), flow, &st, &host(i)) {
                let mut ex = self.encode_local(&mut streams[..i], r, &st, &host);
                ex.upstream = Some(up);
                return finish(&mut streams, ex);
            }
        }
        let held = self.edge.response_hold
            && st
                .borrow()
                .response_headers
                .iter()
                .any(|(k, _)| k == HOLD_HEADER);
        if !body_empty {
            st.borrow_mut().response_body = answer.body.clone();
            for i in (0..n).rev() {
                let size = st.borrow().response_body.len();
                let flow = streams[i].response_body(&host(i), size, true);
                let reply = self.settle(streams[i].as_mut(), flow, &st, &host(i));
                if let Some(r) = reply {
                    if held {
                        // The Lua filter still holds the headers: the reply replaces the
                        // response, through the filters closer to the client.
                        let mut ex = self.encode_local(&mut streams[..i], r, &st, &host);
                        ex.upstream = Some(up);
                        return finish(&mut streams, ex);
                    }
                    // Headers already left: Envoy can only reset the stream.
                    return finish(
                        &mut streams,
                        Exchange {
                            response: Response::default(),
                            decided_by: Some(r.by),
                            upstream: Some(up),
                            steps: Vec::new(),
                            audit: BTreeMap::new(),
                        },
                    );
                }
            }
        }
        let s = st.borrow();
        let mut headers: Vec<(String, String)> = s
            .response_headers
            .iter()
            .filter(|(k, _)| k != ":status" && k != HOLD_HEADER)
            .cloned()
            .collect();
        if !held {
            headers.retain(|(k, _)| k != HOLD_HEADER);
        }
        let status = get(&s.response_headers, ":status")
            .and_then(|v| v.parse().ok())
            .unwrap_or(answer.status);
        let body = if up.method == "HEAD" {
            Vec::new()
        } else {
            s.response_body.clone()
        };
        drop(s);
        finish(
            &mut streams,
            Exchange {
                response: Response {
                    status,
                    headers,
                    body,
                },
                decided_by: None,
                upstream: Some(up),
                steps: Vec::new(),
                audit: BTreeMap::new(),
            },
        )
    }

    /// After a callback: a local reply ends the phase; a pause without one waits for this
    /// stream's calls, answered by the script (an unanswered call ends as Envoy's timeout
    /// would: the filter gets an empty answer with gRPC status 4, DEADLINE_EXCEEDED).
    fn settle(
        &self,
        s: &mut dyn DynStream,
        flow: Flow,
        st: &RefCell<StreamState>,
        host: &FakeHost<'_>,
    ) -> Option<LocalReply> {
        if let Some(r) = st.borrow_mut().local_reply.take() {
            return Some(r);
        }
        if flow == Flow::Continue {
            return None;
        }
        let pending: Vec<(u32, usize)> = std::mem::take(&mut st.borrow_mut().pending);
        if pending.is_empty() {
            // Buffering (a body callback before end of stream never happens here) — or a
            // stream that would hang in Envoy. Treat it as the stream timing out.
            return Some(Self::envoy_reply(
                504,
                "stream_idle_timeout",
                "stream timeout",
            ));
        }
        st.borrow_mut().resumed = false;
        let calls = self.process.calls.borrow().clone();
        for (token, _) in pending {
            let call = calls.get((token as usize).saturating_sub(1)).cloned();
            let answer = call
                .as_ref()
                .and_then(|c| self.process.script.borrow().as_ref().and_then(|f| f(c)))
                .unwrap_or(CallResponse {
                    headers: Vec::new(),
                    body: Vec::new(),
                    grpc_status: Some(4),
                });
            s.call_response(host, token, answer);
        }
        if let Some(r) = st.borrow_mut().local_reply.take() {
            return Some(r);
        }
        if st.borrow().resumed {
            None
        } else {
            Some(Self::envoy_reply(
                504,
                "stream_idle_timeout",
                "stream timeout",
            ))
        }
    }

    /// A local reply travels back through the filters that already saw the request (closest
    /// to the client last), as Envoy encodes it.
    fn encode_local<'h>(
        &self,
        before: &mut [Box<dyn DynStream>],
        reply: LocalReply,
        st: &RefCell<StreamState>,
        host: &dyn Fn(usize) -> FakeHost<'h>,
    ) -> Exchange {
        {
            let mut s = st.borrow_mut();
            s.response_headers = vec![(":status".into(), reply.status.to_string())];
            s.response_headers.extend(reply.headers.iter().cloned());
            s.response_body = reply.body.clone();
        }
        let eos = reply.body.is_empty();
        for i in (0..before.len()).rev() {
            let _ = before[i].response_headers(&host(i), eos);
            if !eos {
                let size = st.borrow().response_body.len();
                let _ = before[i].response_body(&host(i), size, true);
            }
            // A second local reply while encoding one is ignored by Envoy.
            st.borrow_mut().local_reply = None;
        }
        let s = st.borrow();
        Exchange {
            response: Response {
                status: reply.status,
                headers: s
                    .response_headers
                    .iter()
                    .filter(|(k, _)| k != ":status" && k != HOLD_HEADER)
                    .cloned()
                    .collect(),
                body: s.response_body.clone(),
            },
            decided_by: Some(reply.by),
            upstream: None,
            steps: Vec::new(),
            audit: BTreeMap::new(),
        }
    }
}

/// A header list as the adapter reads Envoy's: serialized, then read back with each value's
/// bytes (the fake keeps values as text: bytes that are not UTF-8 are held as ISO-8859-1
/// characters and handed over as those bytes).
fn wire_map(headers: &[(String, String)]) -> HeaderMap {
    let pairs: Vec<(&str, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), latin1_bytes(v)))
        .collect();
    HeaderMap::from_pairs(&pairs)
}

/// A value's bytes: UTF-8 unless every character fits one byte and one does not fit ASCII
/// (then it was read as ISO-8859-1).
fn latin1_bytes(v: &str) -> Vec<u8> {
    if !v.is_ascii() && v.chars().all(|c| u32::from(c) <= 0xFF) {
        v.chars().map(|c| c as u8).collect()
    } else {
        v.as_bytes().to_vec()
    }
}

/// Bytes as text, as the adapter reads a value: UTF-8, or one character per byte.
fn latin1_text(b: &[u8]) -> String {
    value_text(b.to_vec())
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn merge_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// RFC 3986 §5.2.4 on a path (what Envoy's `normalize_path` does after decoding unreserved
/// escapes; escapes are left to the filters here).
fn remove_dot_segments(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = p.ends_with("/.") || p.ends_with("/..");
    let mut s = format!("/{}", out.join("/"));
    if trailing && !s.ends_with('/') {
        s.push('/');
    }
    s
}
