//! proxy-wasm adapter: reads the request from Envoy, calls [`crate::decide::authenticate`], and
//! applies the decision (identity to filter state and headers, or a local denial).

use crate::cache::TokenCache;
use crate::config::{AuthnConfig, Mode};
use crate::decide::{self, CacheUse, Request, REASONS};
use crate::remote::{self, Ctl, KeySet, KeyStore};
use portcullis_core::host::{self, Counter};
use portcullis_core::identity::IDENTITY_PROPERTY;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, LogLevel};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(AuthnRoot { state: None, fetching: HashMap::new() })
    });
}}

/// Remote-JWKS metrics of one provider.
struct JwksMetrics {
    fetch_success: Counter,
    fetch_failure: Counter,
    keys_rejected: Counter,
    keys_loaded: host::Gauge,
    staleness: host::Gauge,
}

/// Counters declared once at configure time.
struct Metrics {
    allowed: Counter,
    cache_hit: Counter,
    cache_miss: Counter,
    denied: HashMap<&'static str, Counter>,
    shadow: HashMap<&'static str, Counter>,
}

impl Metrics {
    fn define(prefix: &str, mode: Mode) -> Self {
        let name = |s: &str| format!("portcullis.{prefix}.{s}");
        Metrics {
            allowed: Counter::define(&name("allowed")),
            cache_hit: Counter::define(&name("cache.hit")),
            cache_miss: Counter::define(&name("cache.miss")),
            denied: REASONS
                .iter()
                .map(|r| (*r, Counter::define(&name(&format!("denied.{r}")))))
                .collect(),
            // Shadow counters exist only in shadow mode, so enforce-mode stats stay readable.
            shadow: if mode == Mode::Shadow {
                REASONS
                    .iter()
                    .map(|r| (*r, Counter::define(&name(&format!("shadow_denied.{r}")))))
                    .collect()
            } else {
                HashMap::new()
            },
        }
    }
}

/// Per-VM state shared by the request contexts of one worker.
struct State {
    config: AuthnConfig,
    cache: RefCell<TokenCache>,
    metrics: Metrics,
    /// Remote key sets as this worker last read them from shared data.
    keys: RefCell<KeyStore>,
    jwks_metrics: HashMap<usize, JwksMetrics>,
}

impl State {
    fn load(bytes: &[u8]) -> Result<Self, portcullis_core::config::ConfigError> {
        let config = AuthnConfig::from_bytes(bytes)?;
        let metrics = Metrics::define(&config.stat_prefix, config.mode);
        let cache = RefCell::new(TokenCache::new(config.cache_entries));
        let jwks_metrics = config
            .providers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.remote.is_some())
            .map(|(i, p)| {
                let n = |s: &str| format!("portcullis.{}.jwks.{}.{s}", config.stat_prefix, p.name);
                let m = JwksMetrics {
                    fetch_success: Counter::define(&n("fetch_success")),
                    fetch_failure: Counter::define(&n("fetch_failure")),
                    keys_rejected: Counter::define(&n("keys_rejected")),
                    keys_loaded: host::Gauge::define(&n("keys_loaded")),
                    staleness: host::Gauge::define(&n("staleness_seconds")),
                };
                (i, m)
            })
            .collect();
        Ok(State {
            config,
            cache,
            metrics,
            keys: RefCell::new(KeyStore::default()),
            jwks_metrics,
        })
    }

    fn doc_key(&self, provider: usize) -> String {
        let name = self
            .config
            .providers
            .get(provider)
            .map_or("", |p| p.name.as_str());
        format!("portcullis.{}.jwks.{name}.doc", self.config.stat_prefix)
    }

    fn ctl_key(&self, provider: usize) -> String {
        let name = self
            .config
            .providers
            .get(provider)
            .map_or("", |p| p.name.as_str());
        format!("portcullis.{}.jwks.{name}.ctl", self.config.stat_prefix)
    }

    /// Reads a provider's shared document if it changed since this worker last read it.
    fn sync_keys(&self, provider: usize) {
        let Some(p) = self.config.providers.get(provider) else {
            return;
        };
        let Some(remote) = &p.remote else { return };
        let Ok((Some(doc), Some(cas))) = hostcalls::get_shared_data(&self.doc_key(provider)) else {
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
        match remote::load_keys(p, remote, body) {
            Ok(loaded) => {
                if let Some(m) = self.jwks_metrics.get(&provider) {
                    m.keys_loaded.set(loaded.keys.len() as i64);
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

    /// Asks for a refetch after an unknown `kid` (single flight, once per cooldown).
    fn request_refetch(&self, provider: usize, now: u64) {
        let Some(remote) = self
            .config
            .providers
            .get(provider)
            .and_then(|p| p.remote.as_ref())
        else {
            return;
        };
        let key = self.ctl_key(provider);
        for _ in 0..4 {
            let Ok((v, cas)) = hostcalls::get_shared_data(&key) else {
                return;
            };
            let Some(next) = Ctl::decode(v.as_deref()).with_refetch(remote, now) else {
                return;
            };
            match hostcalls::set_shared_data(
                &key,
                Some(&next.encode()),
                Some(cas.unwrap_or(u32::MAX)),
            ) {
                Err(proxy_wasm::types::Status::CasMismatch) => continue,
                _ => return,
            }
        }
    }
}

/// Root context: configuration, and for remote JWKS the once-a-second tick that syncs keys
/// from shared data and, on the worker that wins the lease, fetches them.
struct AuthnRoot {
    state: Option<Rc<State>>,
    /// In-flight fetches: HTTP call token → provider.
    fetching: HashMap<u32, usize>,
}

impl Context for AuthnRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let (Some(st), Some(provider)) = (self.state.clone(), self.fetching.remove(&token_id))
        else {
            return;
        };
        let now = host::now_unix();
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        let Some(p) = st.config.providers.get(provider) else {
            return;
        };
        let Some(remote) = &p.remote else { return };
        let loaded = if status != "200" {
            Err("the JWKS endpoint did not answer 200")
        } else if body_size > remote.max_body_bytes {
            Err("JWKS body over max_body_bytes")
        } else {
            remote::load_keys(p, remote, &body)
        };
        let m = st.jwks_metrics.get(&provider);
        let ctl_key = st.ctl_key(provider);
        let ctl = Ctl::decode(
            hostcalls::get_shared_data(&ctl_key)
                .ok()
                .and_then(|(v, _)| v)
                .as_deref(),
        );
        let next = match loaded {
            Ok(l) => {
                if let Some(m) = m {
                    m.fetch_success.inc();
                    m.keys_rejected
                        .add(u32::try_from(l.rejected).unwrap_or(u32::MAX));
                }
                if l.rejected > 0 {
                    log::warn!("portcullis authn: JWKS of {}: {} key(s) refused (weak, malformed or not for signing)", p.name, l.rejected);
                }
                let _ = hostcalls::set_shared_data(
                    &st.doc_key(provider),
                    Some(&remote::encode_doc(now, &body)),
                    None,
                );
                log::info!(
                    "portcullis authn: JWKS of {} fetched, {} key(s)",
                    p.name,
                    l.keys.len()
                );
                ctl.succeeded(now)
            }
            Err(why) => {
                if let Some(m) = m {
                    m.fetch_failure.inc();
                }
                log::warn!(
                    "portcullis authn: JWKS fetch for {} failed: {why}; last-good keys stay in use",
                    p.name
                );
                ctl.failed()
            }
        };
        // Only the lease holder writes the outcome; a plain set is enough.
        let _ = hostcalls::set_shared_data(&ctl_key, Some(&next.encode()), None);
        st.sync_keys(provider);
    }
}

impl RootContext for AuthnRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match State::load(&bytes) {
            Ok(state) => {
                if state.config.providers.iter().any(|p| p.remote.is_some()) {
                    self.set_tick_period(std::time::Duration::from_secs(1));
                }
                self.state = Some(Rc::new(state));
                true
            }
            Err(e) => {
                log::error!("portcullis authn: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(st) = self.state.clone() else { return };
        let now = host::now_unix();
        for (i, p) in st.config.providers.iter().enumerate() {
            let Some(remote) = &p.remote else { continue };
            st.sync_keys(i);
            if let (Some(m), Some(set)) = (st.jwks_metrics.get(&i), st.keys.borrow().get(i)) {
                m.staleness
                    .set(i64::try_from(now.saturating_sub(set.fetched_at)).unwrap_or(i64::MAX));
            }
            if self.fetching.values().any(|&v| v == i) {
                continue;
            }
            let key = st.ctl_key(i);
            let Ok((v, cas)) = hostcalls::get_shared_data(&key) else {
                continue;
            };
            let ctl = Ctl::decode(v.as_deref());
            if !ctl.due(remote, now) {
                continue;
            }
            // Claim the lease with CAS: one worker fetches, the others see it in flight.
            let claimed = ctl.claim(remote, now);
            if hostcalls::set_shared_data(
                &key,
                Some(&claimed.encode()),
                Some(cas.unwrap_or(u32::MAX)),
            )
            .is_err()
            {
                continue;
            }
            let headers = vec![
                (":method", "GET"),
                (":path", remote.path.as_str()),
                (":authority", remote.authority.as_str()),
                ("accept", "application/json"),
                ("user-agent", "portcullis-authn"),
            ];
            match self.dispatch_http_call(
                &remote.cluster,
                headers,
                None,
                vec![],
                std::time::Duration::from_millis(remote.timeout_ms),
            ) {
                Ok(token) => {
                    self.fetching.insert(token, i);
                }
                Err(status) => {
                    log::warn!(
                        "portcullis authn: cannot call cluster {} for the JWKS of {} ({status:?})",
                        remote.cluster,
                        p.name
                    );
                    if let Some(m) = st.jwks_metrics.get(&i) {
                        m.fetch_failure.inc();
                    }
                    let _ =
                        hostcalls::set_shared_data(&key, Some(&claimed.failed().encode()), None);
                }
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.state
            .clone()
            .map(|state| Box::new(Authn { state }) as Box<dyn HttpContext>)
    }

    fn get_type(&self) -> Option<proxy_wasm::types::ContextType> {
        Some(proxy_wasm::types::ContextType::HttpContext)
    }
}

struct Authn {
    state: Rc<State>,
}

impl Context for Authn {}

impl HttpContext for Authn {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let st = &self.state;
        let cfg = &st.config;
        let headers = host::request_headers();
        // Strip client-sent identity headers on every request, whatever the outcome.
        for (name, _) in headers
            .iter()
            .filter(|(n, _)| decide::is_identity_header(cfg, n))
        {
            self.set_http_request_header(name, None);
        }
        let pseudo = |n: &str| portcullis_core::header(&headers, n).unwrap_or_default();
        // The client certificate's SHA-256 (hex) on TLS connections that presented one: what
        // RFC 8705 certificate-bound tokens are checked against.
        let peer = host::property(&["connection", "sha256_peer_certificate_digest"])
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty());
        let req = Request {
            method: pseudo(":method"),
            path: pseudo(":path"),
            headers: &headers,
            peer_cert_sha256: peer.as_deref(),
        };
        let now = host::now_unix();
        // A worker that has not read a remote key set yet (just started) reads it now.
        for (i, p) in cfg.providers.iter().enumerate() {
            if p.remote.is_some() && st.keys.borrow().get(i).is_none() {
                st.sync_keys(i);
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
            st.request_refetch(p, now);
        }
        match decision.cache {
            CacheUse::Hit => st.metrics.cache_hit.inc(),
            CacheUse::Miss => st.metrics.cache_miss.inc(),
            CacheUse::NotUsed => {}
        }
        let route = decision.route.as_deref().unwrap_or("-");
        // A DPoP proof that passed every stateless check is accepted only on first use of its
        // `jti`, across all workers (shared data, CAS).
        let verdict = match (decision.verdict, &decision.replay, &cfg.dpop) {
            (Ok(allowed), Some(check), Some(d)) => match host::process_secret() {
                Some(secret) => crate::dpop::record(
                    &host::SharedData,
                    &secret,
                    &cfg.stat_prefix,
                    d,
                    check,
                    host::now_unix(),
                )
                .map(|()| allowed),
                None => Err(crate::dpop::replay_unavailable()),
            },
            (v, _, _) => v,
        };
        match verdict {
            Ok(allowed) => {
                st.metrics.allowed.inc();
                if let Err(status) =
                    host::set_property(&[IDENTITY_PROPERTY], &allowed.identity.to_filter_state())
                {
                    // Without the identity later filters would treat the caller as anonymous:
                    // fail closed rather than forward a request the chain cannot judge.
                    log::error!(
                        "portcullis authn: could not publish identity ({status:?}); route={route}"
                    );
                    host::send_denial(&portcullis_core::deny::Denial::new(
                        "authn",
                        500,
                        "internal_error",
                        "Identity could not be recorded.",
                    ));
                    return Action::Pause;
                }
                for (name, value) in decide::identity_headers(cfg, &allowed.identity) {
                    self.set_http_request_header(&name, Some(&value));
                }
                if let Some(p) = &allowed.rewrite_path {
                    self.set_http_request_header(":path", Some(p));
                }
                // A credential never travels past the gateway unless the policy says so — on
                // anonymous routes too, where nobody checked it.
                if !cfg.forward_token {
                    self.set_http_request_header(&cfg.token.header, None);
                    if cfg.dpop.is_some() {
                        self.set_http_request_header("dpop", None);
                    }
                }
                // An API key is a long-lived secret: it never travels past the gateway.
                if let Some(keys) = &cfg.api_keys {
                    self.set_http_request_header(&keys.header, None);
                }
                Action::Continue
            }
            Err(denial) => {
                if cfg.mode == Mode::Shadow {
                    if let Some(c) = st.metrics.shadow.get(denial.reason) {
                        c.inc();
                    }
                    log::info!(
                        "portcullis authn: shadow deny route={route} status={} reason={}",
                        denial.status,
                        denial.reason
                    );
                    return Action::Continue;
                }
                if let Some(c) = st.metrics.denied.get(denial.reason) {
                    c.inc();
                }
                log::info!(
                    "portcullis authn: deny route={route} status={} reason={}",
                    denial.status,
                    denial.reason
                );
                host::send_denial(&denial);
                Action::Pause
            }
        }
    }
}
