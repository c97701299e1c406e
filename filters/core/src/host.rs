//! The thin proxy-wasm adapter shared by the filters: the only place in the core that talks to
//! the host. It turns host status codes into plain values and applies a [`Denial`].

use crate::deny::Denial;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};

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
