//! The authn decision: `authenticate(config, cache, request, now) -> Decision`, a pure function
//! of its inputs (the cache is the only state), unit-tested natively and run unchanged in Envoy.
//!
//! Order of checks: path, route, token extraction, size, cache, header, issuer, algorithm,
//! time claims, audience, key lookup, signature, identity, route requirements. Cheap claim checks
//! come before the signature so an expired or foreign token costs no public-key operation.

use crate::cache::{TokenCache, Verified};
use crate::claims::{Claim, Claims};
use crate::config::{AuthnConfig, Binding, Expected, Provider, Requirement, Rule};
use crate::jws::{self, JwsError};
use crate::remote::KeyStore;
use portcullis_core::deny::Denial;
use portcullis_core::headers::HeaderMap;
use portcullis_core::identity::{AuthMethod, Identity};
use portcullis_core::path;
use serde_json::Value;

const REALM: &str = "Bearer realm=\"portcullis\"";

/// The parts of a request authn looks at.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path` as received (query included).
    pub path: &'a str,
    /// All request headers, names lower-cased, duplicates kept.
    pub headers: &'a HeaderMap,
    /// Hex SHA-256 of the client certificate presented on this connection (Envoy's
    /// `connection.sha256_peer_certificate_digest`), if any.
    /// Asked for only when a token is certificate-bound (in Envoy each read is a host call).
    pub peer_cert_sha256: &'a dyn Fn() -> Option<String>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values (credentials among them) are left out on purpose.
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Whether the verified-token cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// No token was verified (anonymous route or early denial).
    NotUsed,
    /// Served from the cache.
    Hit,
    /// Verified now.
    Miss,
}

/// A request that may proceed.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowed {
    /// The verified caller (method `anonymous` on anonymous routes).
    pub identity: Identity,
    /// The normalised path when it differs from the received one, to forward instead (so the
    /// upstream sees exactly the path that was authorised), query kept.
    pub rewrite_path: Option<String>,
}

/// The outcome of [`authenticate`], with what the adapter needs for metrics and logs.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Result<Allowed, Denial>,
    /// Name of the matched route.
    pub route: Option<String>,
    /// Cache use.
    pub cache: CacheUse,
    /// A DPoP proof passed every stateless check: the adapter must still record its `jti`
    /// (first use across all workers) before allowing the request.
    pub replay: Option<crate::dpop::ReplayCheck>,
    /// A token named a `kid` this provider's remote key set does not have: the adapter asks
    /// for a refetch (granted at most once per cooldown across workers).
    pub refetch: Option<usize>,
    /// The catalog app the caller was admitted or refused as (coverage, `explain`).
    pub catalog_app: Option<String>,
}

/// How the access token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
}

portcullis_core::reasons! {
    /// Every reason code authn answers with (the README's table lists the same).
    pub enum AuthnReason for "authn" {
        InvalidPath = ("invalid_path", 400),
        RouteNotAllowed = ("route_not_allowed", 403),
        MissingToken = ("missing_token", 401),
        MultipleTokens = ("multiple_tokens", 400),
        TokenTooLarge = ("token_too_large", 401),
        MalformedToken = ("malformed_token", 401),
        UnsupportedAlgorithm = ("unsupported_algorithm", 401),
        InvalidToken = ("invalid_token", 401),
        InvalidIssuer = ("invalid_issuer", 401),
        InvalidAudience = ("invalid_audience", 401),
        MissingClaim = ("missing_claim", 401),
        TokenExpired = ("token_expired", 401),
        TokenNotYetValid = ("token_not_yet_valid", 401),
        UnknownKey = ("unknown_key", 401),
        InvalidSignature = ("invalid_signature", 401),
        InvalidClaim = ("invalid_claim", 401),
        MissingScope = ("missing_scope", 403),
        MissingRole = ("missing_role", 403),
        TenantBoundary = ("tenant_boundary", 403),
        ClaimMismatch = ("claim_mismatch", 403),
        InvalidApiKey = ("invalid_api_key", 401),
        ApiKeyNotAccepted = ("api_key_not_accepted", 401),
        ApiKeyInQuery = ("api_key_in_query", 400),
        MultipleCredentials = ("multiple_credentials", 400),
        CertificateRequired = ("certificate_required", 401),
        CertificateMismatch = ("certificate_mismatch", 401),
        TokenNotBound = ("token_not_bound", 401),
        InvalidDpopProof = ("invalid_dpop_proof", 401),
        DpopKeyMismatch = ("dpop_key_mismatch", 401),
        DpopProofReplayed = ("dpop_proof_replayed", 401),
        DpopReplayUnavailable = ("dpop_replay_unavailable", 503),
        DpopDowngrade = ("dpop_downgrade", 401),
        JwksUnavailable = ("jwks_unavailable", 503),
        EmergencyMode = ("emergency_mode", 503),
        AppNotRegistered = ("app_not_registered", 403),
        AppSuspended = ("app_suspended", 403),
        InternalError = ("internal_error", 500),
    }
}

/// The `WWW-Authenticate` challenge a denial carries (RFC 6750 §3, RFC 9449 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// None (not an authentication problem, or a store that cannot answer).
    None,
    /// `Bearer realm="portcullis"` (no credential at all).
    Realm,
    /// `Bearer realm="portcullis", error="…"`.
    Bearer(&'static str),
    /// `DPoP algs="…", error="…"` (a `Bearer` challenge when DPoP is not configured).
    Dpop(&'static str),
}

impl AuthnReason {
    /// The challenge of this reason: one table, so a code and its header never disagree.
    pub fn challenge(self) -> Challenge {
        use AuthnReason as R;
        match self {
            R::InvalidPath
            | R::RouteNotAllowed
            | R::ApiKeyInQuery
            | R::MultipleCredentials
            | R::DpopReplayUnavailable
            | R::JwksUnavailable
            | R::EmergencyMode
            | R::AppNotRegistered
            | R::AppSuspended
            | R::InternalError => Challenge::None,
            R::MissingToken => Challenge::Realm,
            R::MultipleTokens => Challenge::Bearer("invalid_request"),
            R::TokenTooLarge
            | R::MalformedToken
            | R::UnsupportedAlgorithm
            | R::InvalidToken
            | R::InvalidIssuer
            | R::InvalidAudience
            | R::MissingClaim
            | R::TokenExpired
            | R::TokenNotYetValid
            | R::UnknownKey
            | R::InvalidSignature
            | R::InvalidClaim
            | R::InvalidApiKey
            | R::ApiKeyNotAccepted
            | R::CertificateRequired
            | R::CertificateMismatch => Challenge::Bearer("invalid_token"),
            R::MissingScope | R::MissingRole | R::TenantBoundary | R::ClaimMismatch => {
                Challenge::Bearer("insufficient_scope")
            }
            R::InvalidDpopProof | R::DpopProofReplayed => Challenge::Dpop("invalid_dpop_proof"),
            R::DpopKeyMismatch | R::DpopDowngrade | R::TokenNotBound => {
                Challenge::Dpop("invalid_token")
            }
        }
    }

    /// The `WWW-Authenticate` value of this reason, if any.
    pub fn www_authenticate(self, dpop: Option<&crate::dpop::Dpop>) -> Option<String> {
        match self.challenge() {
            Challenge::None => None,
            Challenge::Realm => Some(REALM.to_string()),
            Challenge::Bearer(e) => Some(format!("{REALM}, error=\"{e}\"")),
            Challenge::Dpop(e) => {
                Some(dpop.map_or_else(|| format!("{REALM}, error=\"{e}\""), |d| d.challenge(e)))
            }
        }
    }
}

/// authn's denial for `reason`: status and `WWW-Authenticate` from the reason's own table.
pub fn deny(reason: AuthnReason, detail: &'static str, dpop: Option<&crate::dpop::Dpop>) -> Denial {
    let d = Denial::of(reason, detail);
    match reason.www_authenticate(dpop) {
        Some(h) => d.with_header("www-authenticate", h),
        None => d,
    }
}

fn unauthorized(reason: AuthnReason, detail: &'static str) -> Denial {
    deny(reason, detail, None)
}

fn forbidden(reason: AuthnReason, detail: &'static str) -> Denial {
    deny(reason, detail, None)
}

/// Decides one request.
pub fn authenticate(
    cfg: &AuthnConfig,
    cache: &mut TokenCache,
    req: &Request<'_>,
    now: u64,
) -> Decision {
    authenticate_with(cfg, cache, &KeyStore::default(), req, now)
}

/// Decides one request, with the remote key sets this worker has read from shared data.
pub fn authenticate_with(
    cfg: &AuthnConfig,
    cache: &mut TokenCache,
    keys: &KeyStore,
    req: &Request<'_>,
    now: u64,
) -> Decision {
    let mut decision = Decision {
        verdict: Err(Denial::of(AuthnReason::InternalError, "")),
        route: None,
        cache: CacheUse::NotUsed,
        replay: None,
        refetch: None,
        catalog_app: None,
    };
    let normalized = match path::normalize_cow(req.path) {
        Ok(p) => p,
        Err(e) => {
            decision.verdict = Err(Denial::of(AuthnReason::InvalidPath, e.describe()));
            return decision;
        }
    };
    // A borrowed path is the received one, already canonical: nothing to rewrite.
    let rewrite_path = match &normalized {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(normalized) => {
            let (raw_path, query) = path::split_query(req.path);
            (normalized != raw_path).then(|| match query {
                Some(q) => format!("{normalized}?{q}"),
                None => normalized.clone(),
            })
        }
    };
    let Some(m) = cfg.routes.find(req.method, &normalized) else {
        decision.verdict = Err(Denial::of(
            AuthnReason::RouteNotAllowed,
            "No rule allows this method and path.",
        ));
        return decision;
    };
    decision.route = Some(m.route.name.clone());
    // Before any credential is looked at: in an emergency the gateway spends nothing on
    // routes it has closed.
    if cfg.emergency && !m.route.essential {
        decision.verdict = Err(Denial::of(
            AuthnReason::EmergencyMode,
            "The gateway is in emergency mode; only essential routes are open.",
        ));
        return decision;
    }
    let (providers, scopes, roles, tenant_param, claims, binding) = match &m.route.rule {
        Rule::Anonymous => {
            decision.verdict = Ok(Allowed {
                identity: Identity::anonymous(),
                rewrite_path,
            });
            return decision;
        }
        Rule::Require {
            providers,
            scopes,
            roles,
            tenant_param,
            claims,
            binding,
        } => (providers, scopes, roles, tenant_param, claims, binding),
    };
    let (verified, scheme) = match api_key(cfg, req, providers) {
        ApiKeyUse::Absent => match token_verdict(cfg, cache, keys, req, now, &mut decision) {
            Some((v, scheme, token)) => {
                if let Err(d) = check_dpop(cfg, req, &v, scheme, token, now, &mut decision) {
                    decision.verdict = Err(d);
                    return decision;
                }
                (v, scheme)
            }
            None => return decision,
        },
        ApiKeyUse::Valid(v) => (v, Scheme::Bearer),
        ApiKeyUse::Refused(d) => {
            decision.verdict = Err(d);
            return decision;
        }
    };
    if let Err(d) = check_binding(&verified, *binding, req, scheme == Scheme::Dpop) {
        decision.verdict = Err(d);
        return decision;
    }
    let verified = match admit(cfg, verified, &mut decision) {
        Ok(v) => v,
        Err(d) => {
            decision.verdict = Err(d);
            return decision;
        }
    };
    route_requirements(
        decision,
        verified,
        providers,
        scopes,
        roles,
        tenant_param,
        claims,
        &m.params,
        rewrite_path,
    )
}

/// The app catalog's word on a verified caller (token or API key alike): refused, narrowed to
/// what its app is granted, or left as it is (no catalog, or no app where the catalog allows
/// that). The identity is narrowed in place when nothing else holds it (the cache is off),
/// in a copy otherwise.
fn admit(
    cfg: &AuthnConfig,
    verified: std::rc::Rc<Verified>,
    decision: &mut Decision,
) -> Result<std::rc::Rc<Verified>, Denial> {
    let Some(catalog) = &cfg.catalog else {
        return Ok(verified);
    };
    let id = &verified.identity;
    decision.catalog_app = id
        .app
        .as_ref()
        .filter(|a| catalog.get(a).is_some())
        .cloned();
    match catalog.admission(id) {
        Ok(None) => Ok(verified),
        Ok(Some(app)) => {
            // Field by field: `(*shared).clone()` would copy the identity only to narrow it.
            let mut v = std::rc::Rc::try_unwrap(verified).unwrap_or_else(|shared| Verified {
                identity: shared.identity.clone(),
                provider: shared.provider,
                valid_until: shared.valid_until,
                bound: shared.bound.clone(),
                cnf_x5t: shared.cnf_x5t.clone(),
                cnf_jkt: shared.cnf_jkt.clone(),
            });
            app.narrow(&mut v.identity);
            Ok(std::rc::Rc::new(v))
        }
        Err(crate::catalog::Refusal::NotRegistered) => Err(Denial::of(
            AuthnReason::AppNotRegistered,
            "The app this credential belongs to is not registered in the app catalog.",
        )),
        Err(crate::catalog::Refusal::Suspended) => Err(Denial::of(
            AuthnReason::AppSuspended,
            "The app this credential belongs to is suspended.",
        )),
    }
}

/// What an API key on the request amounts to.
enum ApiKeyUse {
    /// None sent: use the bearer token.
    Absent,
    /// A known key: its identity, as a verified credential.
    Valid(std::rc::Rc<Verified>),
    /// Refused outright.
    Refused(Denial),
}

fn api_key(cfg: &AuthnConfig, req: &Request<'_>, providers: &[usize]) -> ApiKeyUse {
    let Some(keys) = &cfg.api_keys else {
        return ApiKeyUse::Absent;
    };
    // Keys in URLs end up in access logs, proxies and browser history: refused, never used.
    if let (_, Some(q)) = path::split_query(req.path) {
        let in_query = q.split('&').any(|kv| {
            let name = kv.split('=').next().unwrap_or("");
            keys.query_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
        });
        if in_query {
            return ApiKeyUse::Refused(Denial::of(
                AuthnReason::ApiKeyInQuery,
                "API keys are accepted in a header only, never in the URL.",
            ));
        }
    }
    let sent: Vec<&str> = req
        .headers
        .iter()
        .filter(|(k, _)| *k == keys.header)
        .map(|(_, v)| v)
        .collect();
    let Some(key) = sent.first() else {
        return ApiKeyUse::Absent;
    };
    if sent.len() > 1 || req.headers.iter().any(|(k, _)| *k == cfg.token.header) {
        return ApiKeyUse::Refused(Denial::of(
            AuthnReason::MultipleCredentials,
            "Send exactly one credential: one API key or one bearer token.",
        ));
    }
    let api_index = cfg.providers.len();
    if !providers.contains(&api_index) {
        return ApiKeyUse::Refused(unauthorized(
            AuthnReason::ApiKeyNotAccepted,
            "This route does not accept API keys.",
        ));
    }
    match keys.lookup(key.trim()) {
        Some(identity) => ApiKeyUse::Valid(std::rc::Rc::new(Verified {
            provider: api_index,
            valid_until: u64::MAX,
            identity,
            bound: Vec::new(),
            cnf_x5t: None,
            cnf_jkt: None,
        })),
        None => ApiKeyUse::Refused(unauthorized(
            AuthnReason::InvalidApiKey,
            "The API key is not valid.",
        )),
    }
}

/// Extracts and verifies the bearer token (through the cache); `None` with the denial set.
fn token_verdict<'r>(
    cfg: &AuthnConfig,
    cache: &mut TokenCache,
    keys: &KeyStore,
    req: &Request<'r>,
    now: u64,
    decision: &mut Decision,
) -> Option<(std::rc::Rc<Verified>, Scheme, &'r str)> {
    let (token, scheme) = match extract_token(cfg, req) {
        Ok(t) => t,
        Err(d) => {
            decision.verdict = Err(d);
            return None;
        }
    };
    let key = cache.key(token);
    if cache.is_rejected(&key) {
        decision.cache = CacheUse::Hit;
        decision.verdict = Err(unauthorized(
            AuthnReason::InvalidSignature,
            "The token signature is invalid.",
        ));
        return None;
    }
    let verified = match cache.get(&key, now) {
        Some(v) => {
            decision.cache = CacheUse::Hit;
            // A token verified with remote keys is only as good as those keys are fresh.
            if cfg
                .providers
                .get(v.provider)
                .is_some_and(|p| p.remote.is_some())
            {
                if let Err(d) = remote_keys(cfg, keys, v.provider, now) {
                    decision.verdict = Err(d);
                    return None;
                }
            }
            v
        }
        None => {
            decision.cache = CacheUse::Miss;
            match verify_token(cfg, keys, token, now, &mut decision.refetch) {
                Ok(v) => {
                    let v = std::rc::Rc::new(v);
                    cache.put(key, v.clone());
                    v
                }
                Err(d) => {
                    if d.reason == "invalid_signature" {
                        cache.reject(key);
                    }
                    decision.verdict = Err(d);
                    return None;
                }
            }
        }
    };
    Some((verified, scheme, token))
}

/// DPoP: a proof for `Authorization: DPoP` (stateless checks here, the `jti` replay check by
/// the adapter); a DPoP-bound token presented as `Bearer` is a downgrade and refused.
fn check_dpop(
    cfg: &AuthnConfig,
    req: &Request<'_>,
    v: &Verified,
    scheme: Scheme,
    token: &str,
    now: u64,
    decision: &mut Decision,
) -> Result<(), Denial> {
    match (scheme, &cfg.dpop) {
        (Scheme::Dpop, Some(d)) => {
            let check = crate::dpop::check_proof(
                d,
                req.headers,
                req.method,
                req.path,
                token,
                v.cnf_jkt.as_deref(),
                now,
            )?;
            decision.replay = Some(check);
            Ok(())
        }
        (Scheme::Bearer, _) if v.cnf_jkt.is_some() => Err(deny(
            AuthnReason::DpopDowngrade,
            "This token is DPoP-bound; present it with Authorization: DPoP and a proof.",
            cfg.dpop.as_ref(),
        )),
        _ => Ok(()),
    }
}

/// Route requirements: evaluated on every request (they depend on the route, not the token).
#[allow(clippy::too_many_arguments)]
fn route_requirements(
    mut decision: Decision,
    verified: std::rc::Rc<Verified>,
    providers: &[usize],
    scopes: &Requirement,
    roles: &Requirement,
    tenant_param: &Option<String>,
    claims: &[(String, Expected)],
    params: &portcullis_core::route::Params<'_>,
    rewrite_path: Option<String>,
) -> Decision {
    if !providers.is_empty() && !providers.contains(&verified.provider) {
        decision.verdict = Err(unauthorized(
            AuthnReason::InvalidIssuer,
            "Tokens from this issuer are not accepted on this route.",
        ));
        return decision;
    }
    let id = &verified.identity;
    if !scopes.satisfied_by(&id.scopes) {
        decision.verdict = Err(forbidden(
            AuthnReason::MissingScope,
            "The token lacks a scope this route requires.",
        ));
        return decision;
    }
    if !roles.satisfied_by(&id.roles) {
        decision.verdict = Err(forbidden(
            AuthnReason::MissingRole,
            "The token lacks a role this route requires.",
        ));
        return decision;
    }
    if let Some(tp) = tenant_param {
        let want = params.get(tp);
        if want.is_none() || id.tenant.as_deref() != want {
            decision.verdict = Err(forbidden(
                AuthnReason::TenantBoundary,
                "The token does not belong to the tenant in the path.",
            ));
            return decision;
        }
    }
    for (claim, expected) in claims {
        let want = match expected {
            Expected::Param(p) => params.get(p),
            Expected::Literal(l) => Some(l.as_str()),
        };
        let got = verified
            .bound
            .iter()
            .find(|(c, _)| c == claim)
            .map(|(_, v)| v);
        if !want.is_some_and(|w| claim_matches(got, w)) {
            decision.verdict = Err(forbidden(
                AuthnReason::ClaimMismatch,
                "A token claim does not match what this route requires.",
            ));
            return decision;
        }
    }
    // The identity is moved out when nothing else holds it (not cached: the cache is off, or
    // the catalog narrowed it for this request), copied otherwise.
    let identity = match std::rc::Rc::try_unwrap(verified) {
        Ok(v) => v.identity,
        Err(shared) => shared.identity.clone(),
    };
    decision.verdict = Ok(Allowed {
        identity,
        rewrite_path,
    });
    decision
}

fn claim_matches(got: Option<&Value>, want: &str) -> bool {
    match got {
        Some(Value::String(s)) => s == want,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
        Some(Value::Number(n)) => n.to_string() == want,
        Some(Value::Bool(b)) => b.to_string() == want,
        _ => false,
    }
}

/// Finds exactly one token in the configured places.
fn extract_token<'r>(cfg: &AuthnConfig, req: &Request<'r>) -> Result<(&'r str, Scheme), Denial> {
    let src = &cfg.token;
    // The first token found and how many there are: all that is decided on (no vector of
    // them per request).
    let mut first: Option<&'r str> = None;
    let mut count = 0usize;
    let mut found = |t: &'r str| {
        first.get_or_insert(t);
        count += 1;
    };
    req.headers
        .iter()
        .filter(|(k, _)| *k == src.header)
        .for_each(|(_, v)| found(v));
    if let Some(param) = &src.query_param {
        if let (_, Some(q)) = path::split_query(req.path) {
            q.split('&')
                .filter_map(|kv| kv.strip_prefix(param.as_str())?.strip_prefix('='))
                .for_each(&mut found);
        }
    }
    let multiple = || {
        deny(
            AuthnReason::MultipleTokens,
            "More than one access token was sent.",
            None,
        )
    };
    let raw = match (first, count) {
        (Some(one), 1) => one,
        (None, _) => {
            return Err(deny(
                AuthnReason::MissingToken,
                "An access token is required.",
                None,
            ))
        }
        _ => return Err(multiple()),
    };
    let (token, scheme) = if src.scheme.is_empty() {
        (raw.trim(), Scheme::Bearer)
    } else {
        let raw = raw.trim();
        // RFC 7235: the scheme is case-insensitive, followed by one or more spaces.
        match raw.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(&src.scheme) => {
                (rest.trim_start(), Scheme::Bearer)
            }
            Some((scheme, rest)) if cfg.dpop.is_some() && scheme.eq_ignore_ascii_case("DPoP") => {
                (rest.trim_start(), Scheme::Dpop)
            }
            _ => {
                return Err(deny(
                    AuthnReason::MissingToken,
                    "An access token is required.",
                    None,
                ))
            }
        }
    };
    if token.len() > src.max_token_bytes {
        return Err(unauthorized(
            AuthnReason::TokenTooLarge,
            "The access token is too large.",
        ));
    }
    if has_space_or_comma(token.as_bytes()) {
        // `Bearer a, Bearer b` folded into one header is still two tokens.
        return Err(multiple());
    }
    if token.is_empty() {
        return Err(unauthorized(
            AuthnReason::MalformedToken,
            "The access token is malformed.",
        ));
    }
    Ok((token, scheme))
}

/// Whether `b` holds a space or a comma, eight bytes at a time. Not `str::contains([' ', ','])`:
/// that char-pattern search decodes every character of the token (about 3k instructions for a
/// 300-byte JWT, on every request); both are ASCII, so bytes answer the same.
fn has_space_or_comma(b: &[u8]) -> bool {
    use portcullis_core::word;
    let (words, rest) = b.as_chunks::<8>();
    for w in words {
        let w = word::le(w);
        if word::bytes_equal(w, b' ') | word::bytes_equal(w, b',') != 0 {
            return true;
        }
    }
    rest.iter().any(|&c| c == b' ' || c == b',')
}

/// Numeric date (RFC 7519 §2): an integer or a finite decimal; anything else is malformed.
fn numeric_date(claims: &Claims<'_>, name: &str) -> Result<Option<u64>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Claim::Json(Value::Number(n))) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else {
                match n.as_f64() {
                    // Floor of a non-negative finite date; the cast saturates, never wraps.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f.floor() as u64)),
                    _ => Err(unauthorized(
                        AuthnReason::MalformedToken,
                        "A time claim of the token is not a valid date.",
                    )),
                }
            }
        }
        Some(_) => Err(unauthorized(
            AuthnReason::MalformedToken,
            "A time claim of the token is not a valid date.",
        )),
    }
}

/// Longest identity value accepted from a token (tenant, app, subject, each scope or role).
const MAX_CLAIM_LEN: usize = 256;
/// Most scopes or roles accepted from a token.
const MAX_CLAIM_ITEMS: usize = 128;

fn clean(s: &str) -> bool {
    s.len() <= MAX_CLAIM_LEN && !s.is_empty() && !has_control(s)
}

/// Whether `s` holds a control character (`char::is_control`), eight bytes at a time while it
/// is ASCII (a C0 control or DEL is one byte); a string with any other byte is decoded and
/// asked character by character, for the C1 controls.
fn has_control(s: &str) -> bool {
    use portcullis_core::word;
    let (words, rest) = s.as_bytes().as_chunks::<8>();
    let mut flags = 0;
    for w in words {
        let w = word::le(w);
        flags |= w & word::HIGH | word::bytes_below(w, 0x20) | word::bytes_equal(w, 0x7f);
    }
    if flags != 0 || rest.iter().any(|c| !(0x20..0x7f).contains(c)) {
        return s.chars().any(char::is_control);
    }
    false
}

fn string_claim(claims: &Claims<'_>, name: &str) -> Result<Option<String>, Denial> {
    match claims.get(name) {
        None | Some(Claim::Json(Value::Null)) => Ok(None),
        Some(Claim::Str(s)) if clean(s) => Ok(Some(s.to_owned())),
        Some(Claim::Json(Value::Number(n))) => Ok(Some(n.to_string())),
        Some(_) => Err(unauthorized(
            AuthnReason::InvalidClaim,
            "An identity claim of the token is malformed.",
        )),
    }
}

fn list_claim(v: Option<Claim<'_>>) -> Result<Vec<String>, Denial> {
    let items: Vec<String> = match v {
        None | Some(Claim::Json(Value::Null)) => Vec::new(),
        Some(Claim::Str(s)) => s.split_ascii_whitespace().map(str::to_string).collect(),
        Some(Claim::Json(Value::Array(a))) => {
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                match x.as_str() {
                    Some(s) => out.push(s.to_string()),
                    None => {
                        return Err(unauthorized(
                            AuthnReason::InvalidClaim,
                            "A scope or role claim of the token is malformed.",
                        ))
                    }
                }
            }
            out
        }
        Some(_) => {
            return Err(unauthorized(
                AuthnReason::InvalidClaim,
                "A scope or role claim of the token is malformed.",
            ))
        }
    };
    if items.len() > MAX_CLAIM_ITEMS || !items.iter().all(|s| clean(s) && !s.contains(' ')) {
        return Err(unauthorized(
            AuthnReason::InvalidClaim,
            "A scope or role claim of the token is malformed.",
        ));
    }
    Ok(items)
}

fn map_jws(e: JwsError) -> Denial {
    match e {
        JwsError::Malformed => unauthorized(
            AuthnReason::MalformedToken,
            "The access token is malformed.",
        ),
        JwsError::UnsupportedAlgorithm => unauthorized(
            AuthnReason::UnsupportedAlgorithm,
            "The token's signing algorithm is not accepted.",
        ),
        JwsError::UnsupportedHeader => unauthorized(
            AuthnReason::InvalidToken,
            "The token uses a header extension that is not supported.",
        ),
        JwsError::BadSignature => unauthorized(
            AuthnReason::InvalidSignature,
            "The token signature is invalid.",
        ),
    }
}

/// A remote provider's keys, if fetched and not older than `max_staleness`; otherwise the
/// gateway cannot judge the token, which is not the caller's fault (503, not 401).
fn remote_keys<'k>(
    cfg: &AuthnConfig,
    keys: &'k KeyStore,
    provider: usize,
    now: u64,
) -> Result<&'k [crate::jwk::Jwk], Denial> {
    let staleness = cfg
        .providers
        .get(provider)
        .and_then(|p| p.remote.as_ref())
        .map_or(0, |r| r.max_staleness);
    match keys.get(provider) {
        Some(set) if now <= set.fetched_at + staleness => Ok(&set.keys),
        _ => Err(Denial::of(
            AuthnReason::JwksUnavailable,
            "The issuer's signing keys are not available right now.",
        )
        .with_header("retry-after", "5")),
    }
}

/// Full verification of a token not in the cache. Kept out of line: inlined into
/// [`authenticate_with`] its frame and registers weighed on every cached request too.
#[inline(never)]
fn verify_token(
    cfg: &AuthnConfig,
    keys: &KeyStore,
    token: &str,
    now: u64,
    refetch: &mut Option<usize>,
) -> Result<Verified, Denial> {
    let compact = jws::parse(token).map_err(map_jws)?;
    let claims = Claims::parse(compact.payload()).map_err(|_| {
        unauthorized(
            AuthnReason::MalformedToken,
            "The token claims are not a JSON object.",
        )
    })?;
    let issuer = claims.get("iss").and_then(Claim::as_str);
    let Some((pidx, provider)) = cfg
        .providers
        .iter()
        .enumerate()
        .find(|(_, p)| Some(p.issuer.as_str()) == issuer)
    else {
        return Err(unauthorized(
            AuthnReason::InvalidIssuer,
            "The token issuer is not trusted.",
        ));
    };
    if !provider.algorithms.contains(&compact.alg) {
        return Err(unauthorized(
            AuthnReason::UnsupportedAlgorithm,
            "The token's signing algorithm is not accepted.",
        ));
    }
    let valid_until = check_times(provider, &claims, now)?;
    check_audience(provider, &claims)?;
    let key_list: &[crate::jwk::Jwk] = match provider.remote {
        None => &provider.keys,
        Some(_) => remote_keys(cfg, keys, pidx, now)?,
    };
    let mut candidates = jws::candidate_keys(key_list, &compact).peekable();
    if candidates.peek().is_none() {
        if provider.remote.is_some() {
            *refetch = Some(pidx);
        }
        return Err(unauthorized(
            AuthnReason::UnknownKey,
            "The token names a key that is not known.",
        ));
    }
    let input = compact.signing_input.as_bytes();
    if !candidates.any(|k| jws::verify_signature(k, compact.alg, input, compact.signature())) {
        return Err(unauthorized(
            AuthnReason::InvalidSignature,
            "The token signature is invalid.",
        ));
    }
    let names = &provider.claims;
    let mut app = None;
    for n in &names.app {
        app = string_claim(&claims, n)?;
        if app.is_some() {
            break;
        }
    }
    let scope_claim = names.scopes.iter().find_map(|n| claims.get(n));
    let identity = Identity {
        method: AuthMethod::Jwt,
        issuer: Some(provider.issuer.clone()),
        tenant: string_claim(&claims, &names.tenant)?,
        app,
        subject: string_claim(&claims, &names.subject)?,
        scopes: list_claim(scope_claim)?,
        roles: list_claim(claims.get(&names.roles))?,
        tier: match &names.tier {
            Some(t) => string_claim(&claims, t)?,
            None => None,
        },
        data_classes: None,
    };
    let bound = cfg
        .bound_claims
        .iter()
        .filter_map(|c| claims.get(c).map(|v| (c.clone(), v.to_value())))
        .collect();
    // RFC 8705 §3: a certificate-bound token names its certificate's SHA-256 thumbprint;
    // RFC 9449 §6.1: a DPoP-bound token names its key's RFC 7638 thumbprint.
    let cnf_x5t = cnf_member(&claims, "x5t#S256")?;
    let cnf_jkt = cnf_member(&claims, "jkt")?;
    Ok(Verified {
        provider: pidx,
        valid_until,
        identity,
        bound,
        cnf_x5t,
        cnf_jkt,
    })
}

/// A thumbprint in the token's `cnf` (confirmation) claim: absent, or a short non-empty string.
fn cnf_member(claims: &Claims<'_>, name: &str) -> Result<Option<String>, Denial> {
    let cnf = match claims.get("cnf") {
        Some(Claim::Json(c)) => c.get(name),
        // A string has no members (as `Value::get` answers it).
        Some(Claim::Str(_)) | None => None,
    };
    match cnf {
        None => Ok(None),
        Some(Value::String(t)) if !t.is_empty() && t.len() <= 64 => Ok(Some(t.clone())),
        Some(_) => Err(unauthorized(
            AuthnReason::InvalidClaim,
            "The token's confirmation claim is malformed.",
        )),
    }
}

/// Hex (Envoy's digest format) to unpadded base64url (the `x5t#S256` format).
fn hex_to_b64url(hex: &str) -> Option<String> {
    use base64::Engine as _;
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..32)
        .map(|i| {
            hex.get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes?))
}

fn ct_eq_str(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Sender constraint: a bound token is only good on a connection presenting its certificate
/// (checked on every request, cache or not: the binding is per connection, not per token);
/// a route may also demand a bound token.
fn check_binding(
    v: &Verified,
    binding: Option<Binding>,
    req: &Request<'_>,
    dpop_proven: bool,
) -> Result<(), Denial> {
    if let Some(want) = &v.cnf_x5t {
        let Some(have) = (req.peer_cert_sha256)().as_deref().and_then(hex_to_b64url) else {
            return Err(unauthorized(
                AuthnReason::CertificateRequired,
                "This token is bound to a client certificate; present it on the connection.",
            ));
        };
        if !ct_eq_str(&have, want) {
            return Err(unauthorized(
                AuthnReason::CertificateMismatch,
                "The client certificate is not the one this token is bound to.",
            ));
        }
    }
    let satisfied = match binding {
        None => true,
        Some(Binding::Mtls) => v.cnf_x5t.is_some(),
        Some(Binding::Dpop) => dpop_proven,
        Some(Binding::Any) => v.cnf_x5t.is_some() || dpop_proven,
    };
    if !satisfied {
        return Err(unauthorized(
            AuthnReason::TokenNotBound,
            "This route requires a sender-constrained (mTLS- or DPoP-bound) token.",
        ));
    }
    Ok(())
}

/// `exp`, `nbf`, `iat` with the provider's skew; returns the last second the token is valid.
fn check_times(p: &Provider, claims: &Claims<'_>, now: u64) -> Result<u64, Denial> {
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    let valid_until = match exp {
        Some(e) => e.saturating_add(p.skew),
        None if p.require_exp => {
            return Err(unauthorized(
                AuthnReason::MissingClaim,
                "The token has no expiry (`exp`).",
            ))
        }
        None => u64::MAX,
    };
    if now > valid_until {
        return Err(unauthorized(
            AuthnReason::TokenExpired,
            "The access token has expired.",
        ));
    }
    let horizon = now.saturating_add(p.skew);
    if nbf.is_some_and(|n| n > horizon) || iat.is_some_and(|i| i > horizon) {
        return Err(unauthorized(
            AuthnReason::TokenNotYetValid,
            "The access token is not valid yet.",
        ));
    }
    Ok(valid_until)
}

fn check_audience(p: &Provider, claims: &Claims<'_>) -> Result<(), Denial> {
    if p.audiences.is_empty() {
        return Ok(());
    }
    let ok = match claims.get("aud") {
        Some(Claim::Str(a)) => p.audiences.iter().any(|x| x == a),
        Some(Claim::Json(Value::Array(list))) => list.iter().any(|a| {
            a.as_str()
                .is_some_and(|a| p.audiences.iter().any(|x| x == a))
        }),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(unauthorized(
            AuthnReason::InvalidAudience,
            "The token is not meant for this API.",
        ))
    }
}

/// Header names removed from every request before it goes upstream: the configured identity
/// headers and anything under `x-portcullis-`, so a client can never forge an identity.
pub fn is_identity_header(cfg: &AuthnConfig, name: &str) -> bool {
    let h = &cfg.identity_headers;
    name.starts_with("x-portcullis-")
        || name == h.tenant
        || name == h.app
        || name == h.subject
        || name == h.scopes
}

/// Headers to add upstream for an allowed request (none for anonymous callers).
pub fn identity_headers(cfg: &AuthnConfig, id: &Identity) -> Vec<(String, String)> {
    let mut out = Vec::new();
    each_identity_header(cfg, id, |name, value| {
        out.push((name.to_string(), value.to_string()));
    });
    out
}

/// [`identity_headers`] handed to `f` one by one, borrowed: the adapter sets each at once, so
/// on every allowed request nothing is copied but a multi-scope list joined.
pub fn each_identity_header(cfg: &AuthnConfig, id: &Identity, mut f: impl FnMut(&str, &str)) {
    let h = &cfg.identity_headers;
    if id.method == AuthMethod::Anonymous {
        return;
    }
    for (name, value) in [
        (&h.tenant, &id.tenant),
        (&h.app, &id.app),
        (&h.subject, &id.subject),
    ] {
        if let Some(v) = value {
            f(name, v);
        }
    }
    match id.scopes.as_slice() {
        [] => {}
        [one] => f(&h.scopes, one),
        many => f(&h.scopes, &many.join(" ")),
    }
}

#[cfg(test)]
mod tests {

    /// Every character class at every position of strings up to three words long: the same
    /// answer as asking each character.
    #[test]
    fn has_control_agrees_with_char_is_control() {
        let chars = [
            'a', ' ', '~', '\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}', '\u{a0}', 'é',
            '\u{2028}', '\u{feff}', '😀',
        ];
        for len in 0..=24 {
            for at in 0..len.max(1) {
                for &c in &chars {
                    for &fill in &['x', 'é'] {
                        let s: String = (0..len).map(|i| if i == at { c } else { fill }).collect();
                        assert_eq!(has_control(&s), s.chars().any(char::is_control), "{s:?}");
                    }
                }
            }
        }
    }
    use super::*;

    /// The word-at-a-time scan answers as `str::contains([' ', ','])` does, at every length and
    /// position, next to bytes one off from either (`!`, `+`, `-`, 0x1f, 0xa0 in `é`…).
    #[test]
    fn space_or_comma_scan_agrees_with_contains() {
        let fillers = ["a", "!", "+", "-", "\u{1f}", "é", "\u{2c00}"];
        for len in 0..40 {
            for f in fillers {
                let base: String = f.repeat(len);
                assert_eq!(
                    has_space_or_comma(base.as_bytes()),
                    base.contains([' ', ','])
                );
                for at in 0..=base.len() {
                    if !base.is_char_boundary(at) {
                        continue;
                    }
                    for c in [" ", ","] {
                        let t = format!("{}{c}{}", &base[..at], &base[at..]);
                        assert!(has_space_or_comma(t.as_bytes()), "{t:?}");
                    }
                }
            }
        }
    }
}
