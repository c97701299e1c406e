//! The thin proxy-wasm adapter shared by the filters: the only place in the core that talks to
//! the host. It turns host status codes into plain values and applies a [`Denial`].

use crate::deny::Denial;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, MetricType, Status};
use std::rc::Rc;

/// Answers the client locally with a denial (problem+json body and its headers).
pub fn send_denial(denial: &Denial) {
    let headers = denial.response_headers();
    let body = denial.body();
    if let Err(status) =
        hostcalls::send_http_response(u32::from(denial.status), headers, Some(&body))
    {
        log::error!(
            "portcullis: could not send local reply ({status:?}) for reason {}",
            denial.reason
        );
    }
}

/// A counter visible in Envoy's `/stats` (Envoy prefixes wasm metrics with `wasmcustom.`).
#[derive(Debug, Clone, Copy)]
pub struct Counter(Option<u32>);

impl Counter {
    /// Defines (or finds) a counter by name; a host failure leaves a counter that does nothing
    /// rather than failing the request path.
    pub fn define(name: &str) -> Self {
        match hostcalls::define_metric(MetricType::Counter, name) {
            Ok(id) => Counter(Some(id)),
            Err(status) => {
                log::warn!("portcullis: could not define metric {name}: {status:?}");
                Counter(None)
            }
        }
    }

    /// Adds one.
    pub fn inc(self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(self, n: u32) {
        if let (Some(id), true) = (self.0, n > 0) {
            let _ = hostcalls::increment_metric(id, i64::from(n));
        }
    }
}

/// A gauge visible in Envoy's `/stats`.
#[derive(Debug, Clone, Copy)]
pub struct Gauge(Option<u32>);

impl Gauge {
    /// Defines (or finds) a gauge by name; a host failure leaves a gauge that does nothing.
    pub fn define(name: &str) -> Self {
        match hostcalls::define_metric(MetricType::Gauge, name) {
            Ok(id) => Gauge(Some(id)),
            Err(status) => {
                log::warn!("portcullis: could not define metric {name}: {status:?}");
                Gauge(None)
            }
        }
    }

    /// Sets the value.
    pub fn set(self, v: i64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, u64::try_from(v).unwrap_or(0));
        }
    }
}

/// A histogram visible in Envoy's `/stats` (quantiles) and `/stats/prometheus` (buckets).
#[derive(Debug, Clone, Copy)]
pub struct Histogram(Option<u32>);

impl Histogram {
    /// Defines (or finds) a histogram by name; a host failure leaves one that does nothing.
    pub fn define(name: &str) -> Self {
        match hostcalls::define_metric(MetricType::Histogram, name) {
            Ok(id) => Histogram(Some(id)),
            Err(status) => {
                log::warn!("portcullis: could not define metric {name}: {status:?}");
                Histogram(None)
            }
        }
    }

    /// Records one value.
    pub fn record(self, v: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, v);
        }
    }
}

/// Reads a property (e.g. filter state written by another filter).
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// Writes a property as filter state (readable by later filters, never by clients).
pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    hostcalls::set_property(path.to_vec(), Some(value))
}

/// Seconds since the Unix epoch from the host clock.
pub fn now_unix() -> u64 {
    now_unix_nanos() / 1_000_000_000
}

/// Nanoseconds since the Unix epoch from the host clock (0 if the host has no clock).
pub fn now_unix_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Request headers with lower-cased names (pseudo-headers included), as the cores expect.
pub fn request_headers() -> Vec<(String, String)> {
    let mut headers =
        hostcalls::get_map(proxy_wasm::types::MapType::HttpRequestHeaders).unwrap_or_default();
    for (k, _) in &mut headers {
        k.make_ascii_lowercase();
    }
    headers
}

/// Builds a filter's per-VM state from its configuration bytes.
pub type Loader<S> = fn(&[u8]) -> Result<S, crate::config::ConfigError>;
/// Builds a request context around the shared per-VM state.
pub type ContextMaker<S> = fn(Rc<S>) -> Box<dyn HttpContext>;

/// The root context every Portcullis filter uses: configuration compiled once in
/// `on_configure` (a bad one refuses to load, with one log line naming the field), then shared
/// by every request context of the VM.
pub struct Root<S> {
    filter: &'static str,
    load: Loader<S>,
    make: ContextMaker<S>,
    state: Option<Rc<S>>,
}

impl<S> Root<S> {
    /// A root for `filter` (used in the log line).
    pub fn new(filter: &'static str, load: Loader<S>, make: ContextMaker<S>) -> Self {
        Root {
            filter,
            load,
            make,
            state: None,
        }
    }
}

impl<S> Context for Root<S> {}

impl<S> RootContext for Root<S> {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match (self.load)(&bytes) {
            Ok(state) => {
                self.state = Some(Rc::new(state));
                true
            }
            Err(e) => {
                log::error!("portcullis {}: {e}", self.filter);
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.state.clone().map(self.make)
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
