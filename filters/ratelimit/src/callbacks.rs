//! The ratelimit filter's callbacks, written once over the host port: the identity from
//! authn's filter state, the client address Envoy settled on, the decision from
//! [`crate::decide`], and its application (a 429, or headers on the response).

use crate::config::{FailureMode, KeySource, Mode, RateLimitConfig};
use crate::decide::{self, RateLimitReason, Request};
use portcullis_core::config::ConfigError;
use portcullis_core::identity::{Identity, IDENTITY_PROPERTY};
use portcullis_core::metrics::{self, Counter, DenialCounters, DenyLog};
use portcullis_core::port::{Filter, Flow, Host, HostExt, Step, Stream};
use portcullis_core::slots::Secret;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::rc::Rc;

struct Metrics {
    allowed: HashMap<String, Counter>,
    limited: HashMap<String, Counter>,
    denials: DenialCounters,
    shadow_limited: Counter,
    cas_retries: Counter,
    slots_created: Counter,
    failure_allowed: Counter,
    failure_denied: Counter,
}

impl Metrics {
    fn define<H: Host>(host: &H, cfg: &RateLimitConfig) -> Self {
        let prefix = format!("portcullis.{}", cfg.stat_prefix);
        let name = |s: &str| format!("{prefix}.{s}");
        let per_limit = |kind: &str| {
            cfg.limits
                .iter()
                .map(|l| {
                    let n = name(&format!("limit.{}.{kind}", l.name));
                    (l.name.clone(), Counter::define(host, &n))
                })
                .collect()
        };
        Metrics {
            allowed: per_limit("allowed"),
            limited: per_limit("limited"),
            denials: DenialCounters::define::<RateLimitReason, H>(
                host,
                &prefix,
                cfg.mode,
                "denied",
                "shadow_denied",
            ),
            shadow_limited: Counter::define(host, &name("shadow_limited")),
            cas_retries: Counter::define(host, &name("cas_retries")),
            slots_created: Counter::define(host, &name("slots_created")),
            failure_allowed: Counter::define(host, &name("failure_mode.allowed")),
            failure_denied: Counter::define(host, &name("failure_mode.denied")),
        }
    }
}

/// The ratelimit filter of one worker: compiled config, metrics, and the process secret its
/// key tables are hashed with (read from shared data on first use).
pub struct RateLimit {
    config: RateLimitConfig,
    metrics: Metrics,
    /// Request headers some limit is keyed by (read by name; nothing else is copied).
    header_names: Vec<String>,
    secret: OnceCell<Secret>,
}

impl Filter for RateLimit {
    type Stream = RateLimitStream;
    const NAME: &'static str = "ratelimit";

    fn configure<H: Host>(host: &H, config: &[u8]) -> Result<Self, ConfigError> {
        let config = RateLimitConfig::from_bytes(config)?;
        let metrics = Metrics::define(host, &config);
        let header_names = config
            .limits
            .iter()
            .filter_map(|l| match &l.key {
                KeySource::Header { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        Ok(RateLimit {
            config,
            metrics,
            header_names,
            secret: OnceCell::new(),
        })
    }

    fn stream(root: &Rc<Self>) -> RateLimitStream {
        RateLimitStream {
            root: root.clone(),
            response_headers: Vec::new(),
        }
    }
}

impl RateLimit {
    fn secret<H: Host>(&self, host: &H) -> Option<Secret> {
        if let Some(s) = self.secret.get() {
            return Some(*s);
        }
        let s = Secret::obtain(host, |b| host.random_bytes(b)).ok()?;
        Some(*self.secret.get_or_init(|| s))
    }

    /// The store could not answer at all: the failure mode decides.
    fn unavailable<H: Host>(&self, host: &H) -> Flow {
        log::warn!(
            "portcullis ratelimit: shared data unavailable; failure mode {:?}",
            self.config.failure_mode
        );
        match self.config.failure_mode {
            FailureMode::Allow => {
                self.metrics.failure_allowed.inc(host);
                Flow::Continue
            }
            FailureMode::Deny => {
                self.metrics.failure_denied.inc(host);
                let d = decide::unavailable();
                metrics::apply_denial(
                    host,
                    "ratelimit",
                    self.config.mode,
                    "-",
                    &d,
                    &self.metrics.denials,
                    DenyLog::Debug,
                    Vec::new,
                )
            }
        }
    }
}

/// One request through one ratelimit instance.
pub struct RateLimitStream {
    root: Rc<RateLimit>,
    /// Rate-limit headers for the response, decided on the request.
    response_headers: Vec<(&'static str, String)>,
}

impl Stream for RateLimitStream {
    type Root = RateLimit;

    fn on_request_headers<H: Host>(&mut self, host: &H, _end_of_stream: bool) -> Flow {
        let rl = self.root.clone();
        let cfg = &rl.config;
        let m = &rl.metrics;
        let Some(secret) = rl.secret(host) else {
            return rl.unavailable(host);
        };
        let identity = Identity::from_filter_state(host.property(&[IDENTITY_PROPERTY]).as_deref());
        let source = host
            .property(&["source", "address"])
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let headers: Vec<(String, String)> = rl
            .header_names
            .iter()
            .filter_map(|n| Some((n.clone(), host.request_header(n)?)))
            .collect();
        let (method, path) = (host.method(), host.path());
        let req = Request {
            method: &method,
            path: &path,
            headers: &headers,
            identity: identity.as_ref(),
            source_address: source.as_deref(),
        };
        let d = decide::decide(cfg, host, &secret, &req, host.now_nanos());
        m.cas_retries.add(host, u64::from(d.cas_retries));
        m.slots_created.add(host, u64::from(d.slots_created));
        if d.failure_mode_used {
            match cfg.failure_mode {
                FailureMode::Allow => m.failure_allowed.inc(host),
                FailureMode::Deny => m.failure_denied.inc(host),
            }
            log::warn!(
                "portcullis ratelimit: no verdict from shared data; failure mode {:?}",
                cfg.failure_mode
            );
        }
        let hits = |names: &mut dyn Iterator<Item = &str>| -> Vec<String> {
            names
                .map(|n| format!("{}.limit:{n}", cfg.stat_prefix))
                .collect()
        };
        match d.verdict {
            Ok(applied) => {
                for a in &applied {
                    if let Some(c) = m.allowed.get(&a.name) {
                        c.inc(host);
                    }
                }
                if host.explaining() {
                    let left: Vec<String> = applied
                        .iter()
                        .map(|a| format!("{} ({} left)", a.name, a.outcome.remaining))
                        .collect();
                    host.explain(Step {
                        filter: String::new(),
                        matched: if left.is_empty() {
                            "-".into()
                        } else {
                            left.join(", ")
                        },
                        outcome: "allow".into(),
                        hits: hits(&mut applied.iter().map(|a| a.name.as_str())),
                    });
                }
                self.response_headers = decide::response_headers(cfg.headers, &applied);
                Flow::Continue
            }
            Err(denial) => {
                let policy = d.limited_by.as_deref().unwrap_or("-");
                if let Some(c) = d.limited_by.as_ref().and_then(|n| m.limited.get(n)) {
                    c.inc(host);
                }
                if cfg.mode == Mode::Shadow {
                    m.shadow_limited.inc(host);
                }
                metrics::apply_denial(
                    host,
                    "ratelimit",
                    cfg.mode,
                    policy,
                    &denial,
                    &m.denials,
                    DenyLog::Debug,
                    || hits(&mut d.limited_by.iter().map(String::as_str)),
                )
            }
        }
    }

    fn on_response_headers<H: Host>(&mut self, host: &H, _end_of_stream: bool) -> Flow {
        for (k, v) in std::mem::take(&mut self.response_headers) {
            host.add_response_header(k, &v);
        }
        Flow::Continue
    }
}
