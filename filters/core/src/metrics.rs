//! Metrics declared once at configure time through the host port, and the one function every
//! filter applies a denial with: shadow → count → audit → log (summarised) → send.

use crate::audit::{self, DenialSummary};
use crate::config::Mode;
use crate::deny::{Denial, Reason};
use crate::port::{Flow, Host, MetricId, MetricKind, Step};
use std::cell::RefCell;

/// A counter in Envoy's `/stats` (Envoy prefixes wasm metrics with `wasmcustom.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(MetricId);

impl Counter {
    /// Defines (or finds) a counter; a host failure leaves one that counts nothing.
    pub fn define<H: Host>(host: &H, name: &str) -> Self {
        let id = host.define_metric(MetricKind::Counter, name);
        if id.0.is_none() {
            log::warn!("portcullis: could not define metric {name}");
        }
        Counter(id)
    }

    /// Adds one.
    pub fn inc<H: Host>(self, host: &H) {
        self.add(host, 1);
    }

    /// Adds `n`.
    pub fn add<H: Host>(self, host: &H, n: u64) {
        if n > 0 {
            host.increment_metric(self.0, n);
        }
    }
}

/// A gauge in Envoy's `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge(MetricId);

impl Gauge {
    /// Defines (or finds) a gauge.
    pub fn define<H: Host>(host: &H, name: &str) -> Self {
        Gauge(host.define_metric(MetricKind::Gauge, name))
    }

    /// Sets the value (negative values read as 0).
    pub fn set<H: Host>(self, host: &H, v: i64) {
        host.record_metric(self.0, u64::try_from(v).unwrap_or(0));
    }
}

/// A histogram in Envoy's `/stats` (quantiles) and `/stats/prometheus` (buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram(MetricId);

impl Histogram {
    /// Defines (or finds) a histogram.
    pub fn define<H: Host>(host: &H, name: &str) -> Self {
        Histogram(host.define_metric(MetricKind::Histogram, name))
    }

    /// Records one value.
    pub fn record<H: Host>(self, host: &H, v: u64) {
        host.record_metric(self.0, v);
    }
}

/// One counter per reason code of a filter: `<prefix>.<kind>.<code>`, declared from the
/// reason enum's list of all values, so no code can go uncounted.
#[derive(Debug, Clone)]
pub struct ReasonCounters(Vec<(&'static str, Counter)>);

impl ReasonCounters {
    /// Declares `<prefix>.<kind>.<code>` for every reason of `R`.
    pub fn define<R: Reason, H: Host>(host: &H, prefix: &str, kind: &str) -> Self {
        ReasonCounters(
            R::ALL
                .iter()
                .map(|r| {
                    let code = r.code();
                    (
                        code,
                        Counter::define(host, &format!("{prefix}.{kind}.{code}")),
                    )
                })
                .collect(),
        )
    }

    /// No counters (e.g. shadow counters in enforce mode, so enforce-mode stats stay readable).
    pub fn none() -> Self {
        ReasonCounters(Vec::new())
    }

    /// Counts one denial for `code`.
    pub fn inc<H: Host>(&self, host: &H, code: &str) {
        if let Some((_, c)) = self.0.iter().find(|(k, _)| *k == code) {
            c.inc(host);
        }
    }
}

/// The counters a denial is applied with, and the worker's summary of recent denials (the
/// application log gets one line per window, not one per request).
#[derive(Debug, Clone)]
pub struct DenialCounters {
    /// `denied.<code>` (or the filter's own word, e.g. schema's `rejected`).
    pub denied: ReasonCounters,
    /// `shadow_denied.<code>` (defined only in shadow mode).
    pub shadow: ReasonCounters,
    /// Denials not yet written to the application log.
    summary: RefCell<DenialSummary>,
}

impl DenialCounters {
    /// Declares `<prefix>.<denied>.<code>` and, in shadow mode, `<prefix>.<shadow>.<code>`.
    pub fn define<R: Reason, H: Host>(
        host: &H,
        prefix: &str,
        mode: Mode,
        denied: &str,
        shadow: &str,
    ) -> Self {
        DenialCounters {
            denied: ReasonCounters::define::<R, H>(host, prefix, denied),
            shadow: if mode == Mode::Shadow {
                ReasonCounters::define::<R, H>(host, prefix, shadow)
            } else {
                ReasonCounters::none()
            },
            summary: RefCell::new(DenialSummary::default()),
        }
    }

    /// Counts a denial into the summary and writes the summary line when one is due.
    fn summarise<H: Host>(&self, host: &H, filter: &str, reason: &'static str, shadow: bool) {
        let due = self.summary.borrow_mut().record(reason, host.now_nanos());
        if let Some(s) = due {
            log::info!("{}", s.line(filter, verb(shadow)));
        }
    }

    /// Writes the pending summary if its window is over (called on any request, so a window's
    /// tail is not held back until the next denial). The clock is read only while a window is
    /// open: a filter that needs no time for its decision (schema) then makes no clock call.
    pub fn flush_due(&self, now_ns: impl FnOnce() -> u64, filter: &str, mode: Mode) {
        if !self.summary.borrow().is_open() {
            return;
        }
        let due = self.summary.borrow_mut().due(now_ns());
        if let Some(s) = due {
            log::info!("{}", s.line(filter, verb(mode == Mode::Shadow)));
        }
    }
}

fn verb(shadow: bool) -> &'static str {
    if shadow {
        "shadow denials"
    } else {
        "denials"
    }
}

/// Applies a denial: in shadow mode counts it and lets the request through; otherwise counts
/// it and answers the client. Either way the decision goes into the request's audit record
/// (filter state) and into the worker's denial summary: the application log gets a debug
/// line per request (route and reason code only, never request data) and an info line per
/// summary window. Returns the flow for the callback.
/// `hits` names the coverage items the decision exercised (built only when explaining).
pub fn apply_denial<H: Host>(
    host: &H,
    filter: &str,
    mode: Mode,
    route: &str,
    denial: &Denial,
    counters: &DenialCounters,
    hits: impl FnOnce() -> Vec<String>,
) -> Flow {
    let shadow = mode == Mode::Shadow;
    if host.explaining() {
        let outcome = format!(
            "deny {} {} — {}",
            denial.status, denial.reason, denial.detail
        );
        host.explain(Step {
            filter: String::new(),
            matched: route.to_string(),
            outcome: if shadow {
                format!("shadow ({outcome})")
            } else {
                outcome
            },
            hits: hits(),
        });
    }
    audit::denied(host, filter, denial, shadow);
    counters.summarise(host, filter, denial.reason, shadow);
    if shadow {
        counters.shadow.inc(host, denial.reason);
        log::debug!(
            "portcullis {filter}: shadow deny route={route} status={} reason={}",
            denial.status,
            denial.reason
        );
        return Flow::Continue;
    }
    counters.denied.inc(host, denial.reason);
    log::debug!(
        "portcullis {filter}: deny route={route} status={} reason={}",
        denial.status,
        denial.reason
    );
    send(host, denial);
    Flow::Pause
}

/// Answers the client with a denial (problem+json body and its headers).
pub fn send<H: Host>(host: &H, denial: &Denial) {
    let headers = denial.response_headers();
    let body = denial.body();
    if host.send_response(denial.status, &headers, &body).is_err() {
        log::error!(
            "portcullis: could not send local reply for reason {}",
            denial.reason
        );
    }
}
