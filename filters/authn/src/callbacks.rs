//! authn's callbacks, written once over the host port: reads the request, calls
//! [`crate::decide::authenticate_with`], and applies the decision (identity to filter state and
//! headers, or a local denial); the root keeps remote JWKS in shared data fresh.

use crate::cache::TokenCache;
use crate::config::{AuthnConfig, Mode};
use crate::decide::{self, AuthnReason, CacheUse, Request};
use crate::remote::{self, KeySet, KeyStore, SharedKeys};
use portcullis_core::audit;
use portcullis_core::config::ConfigError;
use portcullis_core::deny::Denial;
use portcullis_core::headers::HeaderMap;
use portcullis_core::identity::IDENTITY_PROPERTY;
use portcullis_core::metrics::{self, Counter, DenialCounters, Gauge};
use portcullis_core::port::{
    CallResponse, Callbacks, Filter, Flow, Host, HostExt, HttpCall, Step, Stream,
};
use portcullis_core::slots::Secret;
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Remote-JWKS metrics of one provider.
struct JwksMetrics {
    fetch_success: Counter,
    fetch_failure: Counter,
    keys_rejected: Counter,
    keys_loaded: Gauge,
    staleness: Gauge,
}

/// Counters declared once at configure time.
struct Metrics {
    allowed: Counter,
    cache_hit: Counter,
    cache_miss: Counter,
    denials: DenialCounters,
}

/// authn on one worker: compiled config, the verified-token cache, remote key sets as this
/// worker last read them from shared data, and the fetches it has in flight.
pub struct Authn {
    config: AuthnConfig,
    cache: RefCell<TokenCache>,
    metrics: Metrics,
    keys: RefCell<KeyStore>,
    jwks_metrics: HashMap<usize, JwksMetrics>,
    shared_keys: HashMap<usize, SharedKeys>,
    /// In-flight fetches: call token → provider.
    fetching: RefCell<HashMap<u32, usize>>,
    secret: OnceCell<Secret>,
}

impl Filter for Authn {
    type Stream = AuthnStream;
    const NAME: &'static str = "authn";

    fn configure<H: Host>(host: &H, bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::configure_owned(host, bytes.to_vec())
    }

    fn configure_owned<H: Host>(host: &H, bytes: Vec<u8>) -> Result<Self, ConfigError> {
        let config = AuthnConfig::from_owned(bytes)?;
        let prefix = format!("portcullis.{}", config.stat_prefix);
        let metrics = Metrics {
            allowed: Counter::define(host, &format!("{prefix}.allowed")),
            cache_hit: Counter::define(host, &format!("{prefix}.cache.hit")),
            cache_miss: Counter::define(host, &format!("{prefix}.cache.miss")),
            denials: DenialCounters::define::<AuthnReason, H>(
                host,
                &prefix,
                config.mode,
                "denied",
                "shadow_denied",
            ),
        };
        let mut jwks_metrics = HashMap::new();
        let mut shared_keys = HashMap::new();
        for (i, p) in config.providers.iter().enumerate() {
            if p.remote.is_none() {
                continue;
            }
            let n = |s: &str| format!("{prefix}.jwks.{}.{s}", p.name);
            jwks_metrics.insert(
                i,
                JwksMetrics {
                    fetch_success: Counter::define(host, &n("fetch_success")),
                    fetch_failure: Counter::define(host, &n("fetch_failure")),
                    keys_rejected: Counter::define(host, &n("keys_rejected")),
                    keys_loaded: Gauge::define(host, &n("keys_loaded")),
                    staleness: Gauge::define(host, &n("staleness_seconds")),
                },
            );
            shared_keys.insert(i, SharedKeys::new(&config.stat_prefix, &p.name));
        }
        if !shared_keys.is_empty() {
            host.set_tick_period(Duration::from_secs(1));
        }
        // A secret key per VM for the token cache's hash; without a secure random source the
        // cache falls back to SHA-256 (slower, equally safe).
        let mut secret = [0u8; 16];
        let cache = if host.secure_random(&mut secret) {
            TokenCache::keyed(config.cache_entries, secret)
        } else {
            log::warn!(
                "portcullis authn: no secure random source; the token cache hashes with SHA-256"
            );
            TokenCache::new(config.cache_entries)
        };
        Ok(Authn {
            cache: RefCell::new(cache),
            config,
            metrics,
            keys: RefCell::new(KeyStore::default()),
            jwks_metrics,
            shared_keys,
            fetching: RefCell::new(HashMap::new()),
            secret: OnceCell::new(),
        })
    }

    fn stream(root: &Rc<Self>) -> AuthnStream {
        AuthnStream { root: root.clone() }
    }

    /// Once a second on every worker: re-read shared documents that changed, and on the
    /// worker that wins the lease, fetch what is due (single flight).
    fn on_tick<H: Host>(&self, host: &H) {
        let now = host.now_secs();
        for (i, p) in self.config.providers.iter().enumerate() {
            let (Some(r), Some(keys)) = (&p.remote, self.shared_keys.get(&i)) else {
                continue;
            };
            self.sync_keys(host, i);
            if let (Some(m), Some(set)) = (self.jwks_metrics.get(&i), self.keys.borrow().get(i)) {
                m.staleness.set(
                    host,
                    i64::try_from(now.saturating_sub(set.fetched_at)).unwrap_or(i64::MAX),
                );
            }
            if self.fetching.borrow().values().any(|&v| v == i) {
                continue;
            }
            let Some(_claimed) = remote::claim_fetch(host, keys, r, now) else {
                continue;
            };
            let call = HttpCall {
                cluster: &r.cluster,
                headers: vec![
                    (":method", "GET"),
                    (":path", r.path.as_str()),
                    (":authority", r.authority.as_str()),
                    ("accept", "application/json"),
                    ("user-agent", "portcullis-authn"),
                ],
                body: None,
                timeout: Duration::from_millis(r.timeout_ms),
            };
            match host.http_call(&call) {
                Ok(token) => {
                    self.fetching.borrow_mut().insert(token, i);
                }
                Err(_) => {
                    log::warn!(
                        "portcullis authn: cannot call cluster {} for the JWKS of {}",
                        r.cluster,
                        p.name
                    );
                    if let Some(m) = self.jwks_metrics.get(&i) {
                        m.fetch_failure.inc(host);
                    }
                    remote::record_fetch(host, keys, Err(()), now);
                }
            }
        }
    }

    /// A JWKS fetch answered (or timed out): keys checked one by one, the document published
    /// for every worker, the lease released.
    fn on_call_response<H: Host>(&self, host: &H, token: u32, response: CallResponse) {
        let Some(provider) = self.fetching.borrow_mut().remove(&token) else {
            return;
        };
        let (Some(p), Some(keys)) = (
            self.config.providers.get(provider),
            self.shared_keys.get(&provider),
        ) else {
            return;
        };
        let Some(r) = &p.remote else { return };
        let now = host.now_secs();
        let loaded = if response.header(":status") != Some("200") {
            Err("the JWKS endpoint did not answer 200")
        } else if response.body.len() > r.max_body_bytes {
            Err("JWKS body over max_body_bytes")
        } else {
            remote::load_keys(p, r, &response.body)
        };
        let m = self.jwks_metrics.get(&provider);
        match loaded {
            Ok(l) => {
                if let Some(m) = m {
                    m.fetch_success.inc(host);
                    m.keys_rejected.add(host, l.rejected as u64);
                }
                if l.rejected > 0 {
                    log::warn!("portcullis authn: JWKS of {}: {} key(s) refused (weak, malformed or not for signing)", p.name, l.rejected);
                }
                log::info!(
                    "portcullis authn: JWKS of {} fetched, {} key(s)",
                    p.name,
                    l.keys.len()
                );
                remote::record_fetch(host, keys, Ok(&response.body), now);
            }
            Err(why) => {
                if let Some(m) = m {
                    m.fetch_failure.inc(host);
                }
                log::warn!(
                    "portcullis authn: JWKS fetch for {} failed: {why}; last-good keys stay in use",
                    p.name
                );
                remote::record_fetch(host, keys, Err(()), now);
            }
        }
        self.sync_keys(host, provider);
    }
}

impl Authn {
    /// Reads a provider's shared document if it changed since this worker last read it.
    fn sync_keys<H: Host>(&self, host: &H, provider: usize) {
        let (Some(p), Some(keys)) = (
            self.config.providers.get(provider),
            self.shared_keys.get(&provider),
        ) else {
            return;
        };
        let Some(r) = &p.remote else { return };
        let Ok((Some(doc), cas)) = host.get(&keys.doc) else {
            return;
        };
        if self
            .keys
            .borrow()
            .get(provider)
            .is_some_and(|s| s.cas == cas)
        {
            return;
        }
        let Some((fetched_at, body)) = remote::decode_doc(&doc) else {
            return;
        };
        match remote::load_keys(p, r, body) {
            Ok(loaded) => {
                if let Some(m) = self.jwks_metrics.get(&provider) {
                    m.keys_loaded.set(host, loaded.keys.len() as i64);
                }
                self.keys.borrow_mut().set(
                    provider,
                    KeySet {
                        keys: loaded.keys,
                        fetched_at,
                        cas,
                    },
                );
                // A removed key must not keep vouching for tokens verified with it.
                self.cache.borrow_mut().clear();
            }
            Err(why) => log::warn!(
                "portcullis authn: shared JWKS of {} unusable: {why}",
                p.name
            ),
        }
    }

    fn secret<H: Host>(&self, host: &H) -> Option<Secret> {
        if let Some(s) = self.secret.get() {
            return Some(*s);
        }
        let s = Secret::obtain(host, |b| host.random_bytes(b)).ok()?;
        Some(*self.secret.get_or_init(|| s))
    }
}

/// One request through authn.
pub struct AuthnStream {
    root: Rc<Authn>,
}

impl Stream for AuthnStream {
    type Root = Authn;
    const CALLBACKS: Callbacks = Callbacks::HEADERS;

    fn on_request_headers<H: Host>(&mut self, host: &H, _end_of_stream: bool) -> Flow {
        let st = self.root.clone();
        let cfg = &st.config;
        // One clock read per request (each is a host call).
        let now_ns = host.now_nanos();
        st.metrics.denials.flush_due(|| now_ns, "authn", cfg.mode);
        // Every header is needed once: client-sent identity headers are a family of names,
        // and credentials must be counted (two tokens, a key and a token).
        let headers = host.request_headers();
        // Strip client-sent identity headers on every request, whatever the outcome.
        for (name, _) in headers
            .iter()
            .filter(|(n, _)| decide::is_identity_header(cfg, n))
        {
            host.set_request_header(name, None);
        }
        let pseudo = |n: &str| headers.get(n).unwrap_or_default();
        // The client certificate's SHA-256 (hex) on TLS connections that presented one: what
        // RFC 8705 certificate-bound tokens are checked against. Read only for such a token
        // (a host call per read).
        let peer = || {
            host.property(&["connection", "sha256_peer_certificate_digest"])
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty())
        };
        let req = Request {
            method: pseudo(":method"),
            path: pseudo(":path"),
            headers: &headers,
            peer_cert_sha256: &peer,
        };
        let now = now_ns / 1_000_000_000;
        // A worker that has not read a remote key set yet (just started) reads it now.
        for (i, p) in cfg.providers.iter().enumerate() {
            if p.remote.is_some() && st.keys.borrow().get(i).is_none() {
                st.sync_keys(host, i);
            }
        }
        let decision = decide::authenticate_with(
            cfg,
            &mut st.cache.borrow_mut(),
            &st.keys.borrow(),
            &req,
            now,
        );
        if let Some(p) = decision.refetch {
            if let (Some(keys), Some(r)) = (
                st.shared_keys.get(&p),
                cfg.providers.get(p).and_then(|p| p.remote.as_ref()),
            ) {
                remote::request_refetch(host, keys, r, now);
            }
        }
        match decision.cache {
            CacheUse::Hit => st.metrics.cache_hit.inc(host),
            CacheUse::Miss => st.metrics.cache_miss.inc(host),
            CacheUse::NotUsed => {}
        }
        // Moved out, not copied: the decision is taken apart field by field below.
        let route_name = decision.route;
        let route = route_name.as_deref().unwrap_or("-");
        // The audit record is written only when the access log asks for it (a key is
        // configured): off, the request path makes none of these host calls.
        let auditing = cfg.audit_key.is_some();
        let source = auditing
            .then(|| host.property(&["source", "address"]))
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let record = |allowed: Option<&portcullis_core::identity::Identity>| {
            if !auditing {
                return;
            }
            for (field, value) in crate::audit::fields(
                cfg.audit_key.as_ref(),
                route_name.as_deref(),
                source.as_deref(),
                allowed,
            ) {
                audit::set(host, field, &value);
            }
        };
        let catalog_app = decision.catalog_app;
        let hits = || {
            route_name
                .iter()
                .map(|r| format!("authn.route:{r}"))
                .chain(catalog_app.iter().map(|a| format!("catalog.app:{a}")))
                .collect()
        };
        // A DPoP proof that passed every stateless check is accepted only on first use of its
        // `jti`, across all workers (shared data, CAS).
        let verdict = match (decision.verdict, &decision.replay, &cfg.dpop) {
            (Ok(allowed), Some(check), Some(d)) => match st.secret(host) {
                Some(secret) => crate::dpop::record(host, &secret, &cfg.stat_prefix, d, check, now)
                    .map(|()| allowed),
                None => Err(crate::dpop::replay_unavailable()),
            },
            (v, _, _) => v,
        };
        let allowed = match verdict {
            Ok(a) => a,
            Err(denial) => {
                record(None);
                let flow = metrics::apply_denial(
                    host,
                    "authn",
                    cfg.mode,
                    route,
                    &denial,
                    &st.metrics.denials,
                    hits,
                );
                // Shadow mode lets it through without an identity — and without credentials.
                if flow == Flow::Continue {
                    strip_credentials(host, cfg, &headers);
                }
                return flow;
            }
        };
        // Without the identity later filters would treat the caller as anonymous: fail closed
        // rather than forward a request the chain cannot judge.
        if host
            .set_property(&[IDENTITY_PROPERTY], &allowed.identity.to_filter_state())
            .is_err()
        {
            log::error!("portcullis authn: could not publish identity; route={route}");
            record(None);
            let d = Denial::of(
                AuthnReason::InternalError,
                "Identity could not be recorded.",
            );
            return metrics::apply_denial(
                host,
                "authn",
                Mode::Enforce,
                route,
                &d,
                &st.metrics.denials,
                hits,
            );
        }
        st.metrics.allowed.inc(host);
        record(Some(&allowed.identity));
        if host.explaining() {
            host.explain(Step {
                filter: String::new(),
                matched: route.to_string(),
                outcome: format!(
                    "allow {:?} tenant={} scopes=[{}]",
                    allowed.identity.method,
                    allowed.identity.tenant.as_deref().unwrap_or("-"),
                    allowed.identity.scopes.join(" ")
                ),
                hits: hits(),
            });
        }
        decide::each_identity_header(cfg, &allowed.identity, |name, value| {
            host.set_request_header(name, Some(value));
        });
        if let Some(p) = &allowed.rewrite_path {
            host.set_request_header(":path", Some(p));
        }
        strip_credentials(host, cfg, &headers);
        Flow::Continue
    }
}

/// Removes credentials before the request goes on: the token (and a DPoP proof) unless the
/// policy forwards it — on anonymous routes too, where nobody checked it — and an API key
/// always (a long-lived secret never travels past the gateway).
/// `headers` are the request's as read on arrival: a header that is not there is not removed
/// (each removal is a host call).
fn strip_credentials<H: Host>(host: &H, cfg: &AuthnConfig, headers: &HeaderMap) {
    let strip = |name: &str| {
        if headers.contains(name) {
            host.set_request_header(name, None);
        }
    };
    if !cfg.forward_token {
        strip(&cfg.token.header);
        if cfg.dpop.is_some() {
            strip("dpop");
        }
    }
    if let Some(keys) = &cfg.api_keys {
        strip(&keys.header);
    }
}
