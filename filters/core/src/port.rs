//! The host port: everything a Portcullis filter asks of a proxy, as one trait, and the shape
//! of a filter written against it.
//!
//! Each filter's callbacks are written once, generic over [`Host`]. Three hosts run them: the
//! proxy-wasm adapter in Envoy (`crate::wasm`), the in-memory fake of native tests and of the
//! policy simulator (`crate::fake`), both behind the same calls. A filter never names
//! proxy-wasm; the adapter never decides anything.

use crate::config::ConfigError;
pub use crate::headers::HeaderMap;
use crate::shared::SharedStore;
use std::rc::Rc;
use std::time::Duration;

/// What a callback tells the host to do with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on to the next filter.
    Continue,
    /// Hold the stream: buffering a body, waiting for a call, or after a local reply.
    Pause,
}

/// A host call that failed (the proxy refused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError;

/// Kinds of metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Set to a value.
    Gauge,
    /// A distribution of recorded values (quantiles in `/stats`, buckets in Prometheus).
    Histogram,
}

/// A metric handle (`None`: the host could not define it, and it counts nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricId(pub Option<u32>);

/// An outbound call's answer, read whole by the adapter before the filter sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallResponse {
    /// Headers (`:status` included) of an HTTP call, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (HTTP) or message (gRPC).
    pub body: Vec<u8>,
    /// gRPC status (0 = OK) for a gRPC call; `None` for HTTP.
    pub grpc_status: Option<u32>,
}

impl CallResponse {
    /// A header of the answer.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An outbound HTTP call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall<'a> {
    /// Envoy cluster.
    pub cluster: &'a str,
    /// Headers, pseudo-headers (`:method`, `:path`, `:authority`) included.
    pub headers: Vec<(&'a str, &'a str)>,
    /// Body.
    pub body: Option<&'a [u8]>,
    /// Timeout.
    pub timeout: Duration,
}

/// An outbound gRPC call (unary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall<'a> {
    /// Envoy cluster.
    pub cluster: &'a str,
    /// Fully qualified service, e.g. `envoy.service.ratelimit.v3.RateLimitService`.
    pub service: &'a str,
    /// Method, e.g. `ShouldRateLimit`.
    pub method: &'a str,
    /// The serialized request message.
    pub message: &'a [u8],
    /// Timeout.
    pub timeout: Duration,
}

/// One line of an explanation: which filter matched what, and what it decided. Only the
/// simulator listens ([`Host::explaining`]); in Envoy nothing is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Filter instance (`authn`, `ratelimit_ip`, …).
    pub filter: String,
    /// Route, rule or limit that matched (`-` for none).
    pub matched: String,
    /// The decision in words.
    pub outcome: String,
    /// Coverage items exercised (`authn.route:list-customers`, `pii.rule:ssn`, …).
    pub hits: Vec<String>,
}

/// What a filter may ask of the proxy. In Envoy each header read by name is a host call that
/// returns data, and the whole map is one such call costing about the same: a filter that needs
/// one header asks for it by name, one that needs two or more (or a family of names) reads the
/// map once ([`HeaderMap`], borrowed from one buffer).
pub trait Host: SharedStore {
    // --- The request ---
    /// A request header (names lower-case; pseudo-headers such as `:path` included).
    fn request_header(&self, name: &str) -> Option<String>;
    /// Every request header, read once into one buffer ([`HeaderMap`]); values that are not
    /// UTF-8 (HTTP allows them) read as ISO-8859-1 with their bytes recoverable.
    fn request_headers(&self) -> HeaderMap;
    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// Adds a request header (keeps existing values).
    fn add_request_header(&self, name: &str, value: &str);
    /// Adds a request header from bytes.
    fn add_request_header_bytes(&self, name: &str, value: &[u8]);
    /// Reads `len` bytes of the buffered request body from `start`.
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Replaces the first `len` bytes of the buffered request body.
    fn replace_request_body(&self, len: usize, body: &[u8]) -> Result<(), HostError>;
    /// Resumes a request paused while waiting for a call.
    fn resume_request(&self);

    // --- The response ---
    /// A response header.
    fn response_header(&self, name: &str) -> Option<String>;
    /// Every response header, repeated ones included ([`HeaderMap`]).
    fn response_headers(&self) -> HeaderMap;
    /// Sets or removes a response header.
    fn set_response_header(&self, name: &str, value: Option<&str>);
    /// Adds a response header (keeps existing values).
    fn add_response_header(&self, name: &str, value: &str);
    /// Adds a response header from bytes.
    fn add_response_header_bytes(&self, name: &str, value: &[u8]);
    /// Reads the buffered response body.
    fn response_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;
    /// Replaces the first `len` bytes of the buffered response body.
    fn replace_response_body(&self, len: usize, body: &[u8]) -> Result<(), HostError>;

    // --- The stream ---
    /// Answers the client locally and ends the stream.
    fn send_response(
        &self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError>;
    /// A property (`source.address`, filter state another filter wrote, …).
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Writes filter state (readable by later filters and access logs, never by clients).
    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError>;

    // --- The process ---
    /// Nanoseconds since the Unix epoch (0 when the host has no clock).
    fn now_nanos(&self) -> u64;
    /// Fills `buf` from the host's random source.
    fn random_bytes(&self, buf: &mut [u8]);
    /// Fills `buf` from a cryptographically secure source and says so; false when there is
    /// none (`buf` is then unspecified), for keys that must stay secret or not be used at all.
    fn secure_random(&self, buf: &mut [u8]) -> bool;
    /// Defines (or finds) a metric by name.
    fn define_metric(&self, kind: MetricKind, name: &str) -> MetricId;
    /// Adds to a counter.
    fn increment_metric(&self, id: MetricId, by: u64);
    /// Sets a gauge, or records a value in a histogram.
    fn record_metric(&self, id: MetricId, value: u64);
    /// Starts an HTTP call; the answer arrives at the context that made it, with this token.
    fn http_call(&self, call: &HttpCall<'_>) -> Result<u32, HostError>;
    /// Starts a unary gRPC call; same delivery.
    fn grpc_call(&self, call: &GrpcCall<'_>) -> Result<u32, HostError>;
    /// Asks for [`Filter::on_tick`] every `period` on this worker.
    fn set_tick_period(&self, period: Duration);

    // --- Explanations (the simulator) ---
    /// True when [`Host::explain`] records anything; callers skip building steps otherwise.
    fn explaining(&self) -> bool {
        false
    }
    /// Records one step of an explanation.
    fn explain(&self, _step: Step) {}
}

/// A filter: its per-worker state (compiled config, metrics, caches), built once, and its
/// per-request streams.
pub trait Filter: Sized + 'static {
    /// Per-request state.
    type Stream: Stream<Root = Self>;
    /// Name in logs (`authn`, `ratelimit`, …).
    const NAME: &'static str;
    /// Compiles the configuration and defines metrics; an error refuses the plugin.
    fn configure<H: Host>(host: &H, config: &[u8]) -> Result<Self, ConfigError>;
    /// [`Filter::configure`] with the configuration buffer handed over, as the host delivers
    /// it: a filter that keeps part of it (authn's API key table) overrides this to avoid a
    /// copy, since a VM's memory never shrinks after its peak.
    fn configure_owned<H: Host>(host: &H, config: Vec<u8>) -> Result<Self, ConfigError> {
        Self::configure(host, &config)
    }
    /// A new stream for one request.
    fn stream(root: &Rc<Self>) -> Self::Stream;
    /// The worker's periodic tick (remote JWKS), when asked for with [`Host::set_tick_period`].
    fn on_tick<H: Host>(&self, _host: &H) {}
    /// The answer to an HTTP or gRPC call the root context made.
    fn on_call_response<H: Host>(&self, _host: &H, _token: u32, _response: CallResponse) {}
}

/// Which of `names` a plugin's `root_id` asks for, in a module that holds several filters: the
/// part after the last `.` is the filter's name, alone or followed by `_` and an instance
/// (`portcullis.authn`, `portcullis.ratelimit_ip`, `pii_egress`). Exact names, never a guess: a
/// root_id naming no filter refuses the plugin rather than run the wrong one.
pub fn filter_named(root_id: &str, names: &[&str]) -> Option<usize> {
    let last = root_id.rsplit('.').next().unwrap_or(root_id);
    names.iter().position(|n| {
        last.strip_prefix(n)
            .is_some_and(|rest| rest.is_empty() || (rest.len() > 1 && rest.starts_with('_')))
    })
}

/// The stream callbacks a filter implements beyond the request headers (which every filter
/// reads). Each one left out is left out of the filter's module too (`portcullis trim-module`,
/// run by `make build`): Envoy then never enters the VM for it and lets the stream pass, as the
/// trait's default would. The fake host runs only what is declared, so a callback implemented
/// and not declared fails the filter's own tests instead of being skipped silently in Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Callbacks {
    /// [`Stream::on_request_body`].
    pub request_body: bool,
    /// [`Stream::on_response_headers`].
    pub response_headers: bool,
    /// [`Stream::on_response_body`].
    pub response_body: bool,
    /// [`Stream::on_done`].
    pub done: bool,
}

impl Callbacks {
    /// Request headers only.
    pub const HEADERS: Callbacks = Callbacks {
        request_body: false,
        response_headers: false,
        response_body: false,
        done: false,
    };

    /// Both sets' callbacks.
    pub const fn union(self, other: Callbacks) -> Callbacks {
        Callbacks {
            request_body: self.request_body || other.request_body,
            response_headers: self.response_headers || other.response_headers,
            response_body: self.response_body || other.response_body,
            done: self.done || other.done,
        }
    }

    /// The proxy-wasm exports Envoy calls per request that a module of these callbacks does
    /// not need: its other callbacks, and those the port has no callback for (trailers, the
    /// access-log call). Envoy skips a callback whose export is missing (proxy-wasm host:
    /// `CHECK_HTTP`, `onDone`, `onLog`) and continues the stream.
    pub fn unneeded_exports(self) -> Vec<&'static str> {
        let mut out = vec![
            "proxy_on_log",
            "proxy_on_request_trailers",
            "proxy_on_response_trailers",
        ];
        for (used, export) in [
            (self.request_body, "proxy_on_request_body"),
            (self.response_headers, "proxy_on_response_headers"),
            (self.response_body, "proxy_on_response_body"),
            (self.done, "proxy_on_done"),
        ] {
            if !used {
                out.push(export);
            }
        }
        out
    }
}

/// One request through one filter. Every callback has a default that lets the stream pass.
pub trait Stream {
    /// The filter this stream belongs to.
    type Root;
    /// The callbacks this filter implements (see [`Callbacks`]).
    const CALLBACKS: Callbacks;
    /// Request headers arrived (`end_of_stream`: no body follows).
    fn on_request_headers<H: Host>(&mut self, _host: &H, _end_of_stream: bool) -> Flow {
        Flow::Continue
    }
    /// Request body data; `size` is everything buffered so far.
    fn on_request_body<H: Host>(&mut self, _host: &H, _size: usize, _end_of_stream: bool) -> Flow {
        Flow::Continue
    }
    /// Response headers arrived.
    fn on_response_headers<H: Host>(&mut self, _host: &H, _end_of_stream: bool) -> Flow {
        Flow::Continue
    }
    /// Response body data; `size` is everything buffered so far.
    fn on_response_body<H: Host>(&mut self, _host: &H, _size: usize, _end_of_stream: bool) -> Flow {
        Flow::Continue
    }
    /// The answer to a call this stream made.
    fn on_call_response<H: Host>(&mut self, _host: &H, _token: u32, _response: CallResponse) {}
    /// The stream is over (after the response was sent, or after a reset).
    fn on_done<H: Host>(&mut self, _host: &H) {}
}

/// Conveniences over [`Host`].
pub trait HostExt: Host {
    /// Seconds since the epoch.
    fn now_secs(&self) -> u64 {
        self.now_nanos() / 1_000_000_000
    }
}

impl<H: Host + ?Sized> HostExt for H {}

#[cfg(test)]
mod tests {
    use super::filter_named;

    const NAMES: &[&str] = &["authn", "ratelimit", "schema", "pii"];

    #[test]
    fn a_root_id_names_its_filter_by_its_last_segment() {
        for (id, want) in [
            ("portcullis.authn", Some(0)),
            ("portcullis.ratelimit", Some(1)),
            ("portcullis.ratelimit_ip", Some(1)),
            ("portcullis.schema", Some(2)),
            ("portcullis.pii", Some(3)),
            ("portcullis.pii_egress", Some(3)),
            ("pii", Some(3)),
            ("mesh.v2.authn_b", Some(0)),
        ] {
            assert_eq!(filter_named(id, NAMES), want, "{id}");
        }
    }

    #[test]
    fn a_root_id_that_names_no_filter_exactly_is_refused() {
        for id in [
            "",
            "portcullis",
            "portcullis.",
            "portcullis.authnx",
            "portcullis.pii_",
            "portcullis.piiegress",
            "authn.portcullis",
            "portcullis.AUTHN",
            "portcullis.ratelimit-ip",
        ] {
            assert_eq!(filter_named(id, NAMES), None, "{id:?}");
        }
    }
}
