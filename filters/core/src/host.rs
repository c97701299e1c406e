//! The proxy-wasm adapter: [`Host`] over Envoy's ABI, and the root and HTTP contexts that run a
//! [`Filter`]'s callbacks. The only module of the project that names proxy-wasm; it decides
//! nothing, it only turns host status codes into plain values and back.

use crate::headers::value_text;
use crate::port::{
    CallResponse, Filter, Flow, GrpcCall, HeaderMap, Host, HostError, HttpCall, MetricId,
    MetricKind, Stream,
};
use crate::shared::{SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType, Status};
use std::rc::Rc;
use std::time::Duration;

/// Envoy, as seen from inside a callback: every call acts on the context the host is
/// currently running (proxy-wasm sets it before each callback).
pub struct WasmHost;

// Header values are read as bytes: the SDK's string readers unwrap UTF-8, and one client
// header holding a byte above 0x7F that is not UTF-8 (obs-text, legal in HTTP/1.1) would panic
// the VM and fail every later request on the worker (`value_text` reads it as ISO-8859-1).

fn map_value(map: MapType, name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(map, name)
        .ok()
        .flatten()
        .map(value_text)
}

// The SDK's map readers build an owned name and value per header (two allocations each, most
// of a map read's cost inside the VM: tests/bench/README.md) and trap the VM on a refused read
// (`unexpected status`). The host's serialized buffer is taken over whole instead, and a refused
// or malformed read is an empty map.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

fn map_all(map: MapType) -> HeaderMap {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a length through the two out-pointers, which point
    // at locals that outlive the call.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    if status != Status::Ok || data.is_null() {
        return HeaderMap::default();
    }
    // SAFETY: on success the host filled a buffer of exactly `size` bytes that it obtained
    // from this module's `proxy_on_memory_allocate` (the SDK's allocator: a boxed slice of
    // `size` bytes, so capacity and length are both `size`), and handed ownership to us.
    let buf = unsafe { Vec::from_raw_parts(data, size, size) };
    HeaderMap::from_wire(buf)
}

// The module logs at the level of Envoy's `wasm` logger (`--component-log-level wasm:debug`, or
// the admin's `/logging?wasm=debug` at run time), read when a plugin is configured and again on
// every root's tick (`LOG_LEVEL_EVERY`); `info` until then and where the host does not say.
// Lines below that level, and what is worked out only for them (pii's masked locations), then
// cost nothing. The SDK's reader traps the VM on a refused call and reads the host's answer
// straight into an enum.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_log_level(return_level: *mut u32) -> Status;
}

/// How often a root reads the level again. Envoy tells a module nothing when `/logging` changes
/// it, so without a tick a change would wait for the next configuration update; a read is one
/// host call per root and worker per period, on no request's path.
const LOG_LEVEL_EVERY: Duration = Duration::from_secs(1);

fn follow_host_log_level() {
    use proxy_wasm::types::LogLevel;
    let mut raw = u32::MAX;
    // SAFETY: the host writes one u32 through the out-pointer, which points at a local that
    // outlives the call.
    let status = unsafe { proxy_get_log_level(&mut raw) };
    let level = match (status, raw) {
        (Status::Ok, 0) => LogLevel::Trace,
        (Status::Ok, 1) => LogLevel::Debug,
        (Status::Ok, 2) => LogLevel::Info,
        (Status::Ok, 3) => LogLevel::Warn,
        (Status::Ok, 4) => LogLevel::Error,
        // Envoy's `off` (6) too: the SDK logs nothing at `Critical`.
        (Status::Ok, 5 | 6) => LogLevel::Critical,
        _ => return,
    };
    proxy_wasm::set_log_level(level);
}

fn buffer(kind: BufferType, start: usize, len: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(kind, start, len).ok().flatten()
}

impl SharedStore for WasmHost {
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

impl Host for WasmHost {
    fn request_header(&self, name: &str) -> Option<String> {
        map_value(MapType::HttpRequestHeaders, name)
    }

    fn request_headers(&self) -> HeaderMap {
        map_all(MapType::HttpRequestHeaders)
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn add_request_header(&self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn add_request_header_bytes(&self, name: &str, value: &[u8]) {
        let _ = hostcalls::add_map_value_bytes(MapType::HttpRequestHeaders, name, value);
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        buffer(BufferType::HttpRequestBody, start, len)
    }

    fn replace_request_body(&self, len: usize, body: &[u8]) -> Result<(), HostError> {
        hostcalls::set_buffer(BufferType::HttpRequestBody, 0, len, body).map_err(|_| HostError)
    }

    fn resume_request(&self) {
        let _ = hostcalls::resume_http_request();
    }

    fn response_header(&self, name: &str) -> Option<String> {
        map_value(MapType::HttpResponseHeaders, name)
    }

    fn response_headers(&self) -> HeaderMap {
        map_all(MapType::HttpResponseHeaders)
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn add_response_header(&self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn add_response_header_bytes(&self, name: &str, value: &[u8]) {
        let _ = hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, name, value);
    }

    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        buffer(BufferType::HttpResponseBody, start, len)
    }

    fn replace_response_body(&self, len: usize, body: &[u8]) -> Result<(), HostError> {
        hostcalls::set_buffer(BufferType::HttpResponseBody, 0, len, body).map_err(|_| HostError)
    }

    fn send_response(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body))
            .map_err(|_| HostError)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        hostcalls::set_property(path.to_vec(), Some(value)).map_err(|_| HostError)
    }

    fn now_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    fn random_bytes(&self, buf: &mut [u8]) {
        // WASI `random_get`, which Envoy serves from its own CSPRNG.
        if getrandom::fill(buf).is_err() {
            let t = self.now_nanos().to_le_bytes();
            for (i, b) in buf.iter_mut().enumerate() {
                *b = t[i % 8] ^ (i as u8).wrapping_mul(151);
            }
        }
    }

    fn secure_random(&self, buf: &mut [u8]) -> bool {
        getrandom::fill(buf).is_ok()
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> MetricId {
        let t = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        MetricId(hostcalls::define_metric(t, name).ok())
    }

    fn increment_metric(&self, id: MetricId, by: u64) {
        if let Some(id) = id.0 {
            let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    fn record_metric(&self, id: MetricId, value: u64) {
        if let Some(id) = id.0 {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn http_call(&self, call: &HttpCall<'_>) -> Result<u32, HostError> {
        hostcalls::dispatch_http_call(
            call.cluster,
            call.headers.clone(),
            call.body,
            vec![],
            call.timeout,
        )
        .map_err(|_| HostError)
    }

    fn grpc_call(&self, call: &GrpcCall<'_>) -> Result<u32, HostError> {
        hostcalls::dispatch_grpc_call(
            call.cluster,
            call.service,
            call.method,
            vec![],
            Some(call.message),
            call.timeout,
        )
        .map_err(|_| HostError)
    }

    fn set_tick_period(&self, period: Duration) {
        let _ = hostcalls::set_tick_period(period);
    }
}

fn action(f: Flow) -> Action {
    match f {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

/// Reads an HTTP call's answer while the host still holds it.
fn http_answer(body_size: usize) -> CallResponse {
    CallResponse {
        headers: map_all(MapType::HttpCallResponseHeaders)
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default(),
        grpc_status: None,
    }
}

/// Reads a gRPC call's answer while the host still holds it.
fn grpc_answer(status: u32, size: usize) -> CallResponse {
    CallResponse {
        headers: Vec::new(),
        body: buffer(BufferType::GrpcReceiveBuffer, 0, size).unwrap_or_default(),
        grpc_status: Some(status),
    }
}

/// The root context of a filter: configuration compiled once in `on_configure` (a bad one
/// refuses the plugin, with one log line naming the field), ticks and root calls forwarded.
pub struct Root<F: Filter> {
    filter: Option<Rc<F>>,
}

impl<F: Filter> Context for Root<F> {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _t: usize) {
        if let Some(f) = &self.filter {
            f.on_call_response(&WasmHost, token, http_answer(body_size));
        }
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        if let Some(f) = &self.filter {
            f.on_call_response(&WasmHost, token, grpc_answer(status, size));
        }
    }
}

impl<F: Filter> RootContext for Root<F> {
    fn on_configure(&mut self, _size: usize) -> bool {
        follow_host_log_level();
        // Before the filter configures: one that asks for its own period (authn's remote JWKS)
        // sets it there, and the level is then read at that period.
        let _ = hostcalls::set_tick_period(LOG_LEVEL_EVERY);
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match F::configure_owned(&WasmHost, bytes) {
            Ok(f) => {
                self.filter = Some(Rc::new(f));
                true
            }
            Err(e) => {
                // The tick stays: a refused update keeps the filter it would have replaced.
                log::error!("portcullis {}: {e}", F::NAME);
                false
            }
        }
    }

    fn on_tick(&mut self) {
        follow_host_log_level();
        if let Some(f) = &self.filter {
            f.on_tick(&WasmHost);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let f = self.filter.as_ref()?;
        Some(Box::new(Http::<F> {
            stream: F::stream(f),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's context: each callback is the filter's own, run on [`WasmHost`].
struct Http<F: Filter> {
    stream: F::Stream,
}

impl<F: Filter> Context for Http<F> {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _t: usize) {
        self.stream
            .on_call_response(&WasmHost, token, http_answer(body_size));
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        self.stream
            .on_call_response(&WasmHost, token, grpc_answer(status, size));
    }

    fn on_done(&mut self) -> bool {
        self.stream.on_done(&WasmHost);
        true
    }
}

impl<F: Filter> HttpContext for Http<F> {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        action(self.stream.on_request_headers(&WasmHost, end_of_stream))
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        action(self.stream.on_request_body(&WasmHost, size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        action(self.stream.on_response_headers(&WasmHost, end_of_stream))
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        action(self.stream.on_response_body(&WasmHost, size, end_of_stream))
    }
}

/// Registers `F` as the module's filter: the whole of a filter's proxy-wasm entry point.
pub fn register<F: Filter>() {
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { root::<F>() });
}

/// A root context that runs `F`.
pub fn root<F: Filter>() -> Box<dyn RootContext> {
    Box::new(Root::<F> { filter: None })
}

/// One of the filters a module holds: the name a `root_id` gives it and its root context.
pub type Entry = (&'static str, fn() -> Box<dyn RootContext>);

/// The filters of a module that holds several (a type, because the SDK takes the root context
/// factory as a plain function pointer, which cannot carry a table).
pub trait Filters {
    /// Name and root context of each filter.
    const FILTERS: &'static [Entry];
}

/// Registers several filters in one module (the one-module build): each root context runs the
/// filter its plugin's `root_id` names (see [`crate::port::filter_named`]). Envoy gives a
/// module's root contexts no other sign of which plugin they serve; the `root_id` is read in
/// `on_configure`, where the plugin's properties are certainly there to read.
pub fn register_many<M: Filters>() {
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Dispatch {
            filters: M::FILTERS,
            inner: None,
        })
    });
}

/// The root context of the one-module build until `on_configure` picks its filter.
struct Dispatch {
    filters: &'static [Entry],
    inner: Option<Box<dyn RootContext>>,
}

impl Context for Dispatch {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        if let Some(r) = &mut self.inner {
            r.on_http_call_response(token, headers, body, trailers);
        }
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        if let Some(r) = &mut self.inner {
            r.on_grpc_call_response(token, status, size);
        }
    }
}

impl RootContext for Dispatch {
    fn on_configure(&mut self, size: usize) -> bool {
        let root_id = hostcalls::get_property(vec!["plugin_root_id"])
            .ok()
            .flatten()
            .map(value_text)
            .unwrap_or_default();
        let names: Vec<&str> = self.filters.iter().map(|(n, _)| *n).collect();
        let Some(i) = crate::port::filter_named(&root_id, &names) else {
            log::error!(
                "portcullis: root_id `{root_id}` names none of this module's filters ({}): \
                 write it as `<prefix>.<filter>` or `<prefix>.<filter>_<instance>`",
                names.join(", ")
            );
            return false;
        };
        let Some((_, make)) = self.filters.get(i) else {
            return false;
        };
        // A root context is configured again on a configuration update: the new filter
        // replaces the old one only when its configuration compiles (as `Root` does).
        let inner = self.inner.get_or_insert_with(make);
        inner.on_configure(size)
    }

    fn on_tick(&mut self) {
        if let Some(r) = &mut self.inner {
            r.on_tick();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.inner.as_ref()?.create_http_context(context_id)
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
