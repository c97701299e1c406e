//! proxy-wasm adapter: reads the request from Envoy, calls [`crate::decide::authenticate`], and
//! applies the decision (identity to filter state and headers, or a local denial).

use crate::cache::TokenCache;
use crate::config::{AuthnConfig, Mode};
use crate::decide::{self, CacheUse, Request, REASONS};
use portcullis_core::host::{self, Counter};
use portcullis_core::identity::IDENTITY_PROPERTY;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, LogLevel};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(host::Root::new("authn", State::load, |state| Box::new(Authn { state })))
    });
}}

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
}

impl State {
    fn load(bytes: &[u8]) -> Result<Self, portcullis_core::config::ConfigError> {
        let config = AuthnConfig::from_bytes(bytes)?;
        let metrics = Metrics::define(&config.stat_prefix, config.mode);
        let cache = RefCell::new(TokenCache::new(config.cache_entries));
        Ok(State {
            config,
            cache,
            metrics,
        })
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
        let decision =
            decide::authenticate(cfg, &mut st.cache.borrow_mut(), &req, host::now_unix());
        match decision.cache {
            CacheUse::Hit => st.metrics.cache_hit.inc(),
            CacheUse::Miss => st.metrics.cache_miss.inc(),
            CacheUse::NotUsed => {}
        }
        let route = decision.route.as_deref().unwrap_or("-");
        // A DPoP proof that passed every stateless check is accepted only on first use of its
        // `jti`, across all workers (shared data, CAS).
        let verdict = match (decision.verdict, &decision.replay, &cfg.dpop) {
            (Ok(allowed), Some(check), Some(d)) => {
                record_proof(&cfg.stat_prefix, d, check, host::now_unix()).map(|()| allowed)
            }
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
                if !cfg.forward_token
                    && allowed.identity.method != portcullis_core::identity::AuthMethod::Anonymous
                {
                    self.set_http_request_header(&cfg.token.header, None);
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

/// Records a DPoP proof's `jti` in its shared-data slot: `Ok` on first use, the replay denial
/// otherwise; fails closed when the store cannot answer.
fn record_proof(
    prefix: &str,
    cfg: &crate::dpop::Dpop,
    check: &crate::dpop::ReplayCheck,
    now: u64,
) -> Result<(), portcullis_core::deny::Denial> {
    use crate::dpop::{replay_update, ReplayOutcome};
    use proxy_wasm::hostcalls;
    let key = format!("portcullis.{prefix}.dpop.{:04x}", check.slot);
    for _ in 0..32 {
        let Ok((value, cas)) = hostcalls::get_shared_data(&key) else {
            break;
        };
        match replay_update(value.as_deref(), check, now) {
            ReplayOutcome::Replayed => return Err(crate::dpop::replayed(cfg)),
            ReplayOutcome::Full => break,
            ReplayOutcome::Fresh(next) => {
                // A missing key is created with a CAS it cannot have: if another worker
                // created it meanwhile, this write fails and the loop reads again.
                let cas = Some(cas.unwrap_or(u32::MAX));
                match hostcalls::set_shared_data(&key, Some(&next), cas) {
                    Ok(()) => return Ok(()),
                    Err(proxy_wasm::types::Status::CasMismatch) => continue,
                    Err(_) => break,
                }
            }
        }
    }
    log::warn!("portcullis authn: DPoP replay store unavailable for slot {key}");
    Err(crate::dpop::replay_unavailable())
}
