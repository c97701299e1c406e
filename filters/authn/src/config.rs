//! authn configuration: the strict serde shape users write, and its compiled, immutable form.
//!
//! Everything is decided here, once: keys decoded and checked, algorithms resolved, routes
//! compiled, claim names fixed. The request path only reads the compiled [`AuthnConfig`].

use crate::jwk::{parse_jwks, Alg, Jwk, KeyPolicy};
use crate::keytable::KeyTable;
use portcullis_core::config::ConfigError;
use portcullis_core::identity::Identity;
use portcullis_core::route::{MatchSpec, RouteMatcher, RouteTable};
use serde::Deserialize;
use std::collections::BTreeMap;

pub use portcullis_core::config::Mode;

/// The configuration as written (JSON, or YAML in a `Struct`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `enforce` (default) or `shadow`.
    #[serde(default)]
    pub mode: Mode,
    /// Middle part of metric names: `portcullis.<stat_prefix>.…` (default `authn`).
    #[serde(default = "default_stat_prefix")]
    pub stat_prefix: String,
    /// Where the token is read from.
    #[serde(default)]
    pub token: TokenSource,
    /// Trusted issuers.
    pub providers: Vec<RawProvider>,
    /// Route rules, first match wins.
    pub routes: Vec<RawRoute>,
    /// Headers the verified identity is forwarded upstream in.
    #[serde(default)]
    pub identity_headers: IdentityHeaders,
    /// Verified-token cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Keep the `Authorization` header on the request sent upstream (default: removed).
    #[serde(default)]
    pub forward_token: bool,
    /// API keys for micro apps (stored as SHA-256 digests only).
    #[serde(default)]
    pub api_keys: Option<RawApiKeys>,
    /// DPoP (RFC 9449): accept `Authorization: DPoP` with a proof.
    #[serde(default)]
    pub dpop: Option<crate::dpop::RawDpop>,
    /// Emergency mode: only `essential` routes are served. `portcullis render` / `apply` /
    /// `emergency on` set it from the reload directory's state; policies leave it out.
    #[serde(default)]
    pub emergency: bool,
    /// The audit record's keyed hashes.
    #[serde(default)]
    pub audit: Option<RawAudit>,
    /// The app catalog (`portcullis render` fills it from `catalog.yaml`).
    #[serde(default)]
    pub catalog: Option<crate::catalog::RawCatalog>,
}

/// The audit trail's settings as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// HMAC-SHA-256 key (hex, at least 32 bytes) for the subject, client and address hashes in
    /// the audit record. `portcullis render --audit-key-file` fills it in; keep it out of policy
    /// files. Without it the record carries no hashes.
    pub hash_key: String,
}

/// API keys as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    /// Name routes use in `require.providers` to accept API keys (default `api-keys`). Routes
    /// that do not list it never accept an API key.
    #[serde(default = "default_api_key_provider")]
    pub name: String,
    /// Header carrying the key (default `x-api-key`). Keys in the query string are refused.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// The keys, as a list (policy files, hand-written configs).
    #[serde(default)]
    pub keys: Option<Vec<RawApiKey>>,
    /// The keys as one compact table (what `portcullis render` writes instead of `keys`):
    /// base64url without padding of [`crate::keytable`]'s layout. Not together with `keys`.
    #[serde(default)]
    pub table: Option<TableText>,
}

/// `api_keys.table` as deserialized: where its text lies in the configuration bytes when serde
/// could borrow it (JSON text, which base64url never needs to escape), or the text itself.
/// [`AuthnConfig::from_owned`] decodes a borrowed table in place inside the configuration
/// buffer and keeps that buffer, so 100k keys never exist twice in a VM's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableText {
    /// Address and length of the text inside the configuration bytes being parsed.
    Span {
        /// Address of the first byte.
        addr: usize,
        /// Length in bytes.
        len: usize,
    },
    /// The text itself (a `Struct` configuration, a `serde_json::Value`, escaped JSON).
    Owned(String),
}

impl<'de> Deserialize<'de> for TableText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TableText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the key table as base64url text")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<TableText, E> {
                Ok(TableText::Span {
                    addr: v.as_ptr() as usize,
                    len: v.len(),
                })
            }
            fn visit_str<E>(self, v: &str) -> Result<TableText, E> {
                Ok(TableText::Owned(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<TableText, E> {
                Ok(TableText::Owned(v))
            }
        }
        d.deserialize_str(V)
    }
}

fn default_api_key_provider() -> String {
    "api-keys".into()
}
fn default_api_key_header() -> String {
    "x-api-key".into()
}

/// One API key as written: its digest and what it grants, never the key itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// Key id (logs, metrics, the identity's issuer).
    pub id: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// The key's first characters, for humans recognising it (never used to match).
    #[serde(default)]
    pub prefix: Option<String>,
    /// App the key belongs to.
    pub app: String,
    /// Tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Roles granted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Plan tier.
    #[serde(default)]
    pub tier: Option<String>,
    /// A revoked key (kept for the record; never accepted).
    #[serde(default)]
    pub disabled: bool,
}

/// Compiled API keys: one [`KeyTable`], searched by digest.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    /// Provider name routes refer to.
    pub name: String,
    /// Header (lower-cased).
    pub header: String,
    /// Query parameters that would carry a key (refused).
    pub query_names: Vec<String>,
    table: KeyTable,
}

impl ApiKeys {
    /// The identity of a key, if the key is known and enabled.
    pub fn lookup(&self, key: &str) -> Option<Identity> {
        self.table.find(&crate::cache::digest(key))
    }

    /// Number of enabled keys.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True without keys.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes the key table holds.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }
}

/// The table's bytes: decoded in place where the text lies (inside the configuration buffer
/// when it was borrowed from it), moved to the front of that buffer, the rest given back.
fn table_bytes(text: TableText, config: &mut Option<Vec<u8>>) -> Result<Vec<u8>, ConfigError> {
    let (mut buf, range) = match text {
        TableText::Owned(s) => {
            let b = s.into_bytes();
            let n = b.len();
            (b, 0..n)
        }
        TableText::Span { addr, len } => {
            let buf = config.take().ok_or_else(|| {
                ConfigError::new(
                    "table",
                    "borrowed from configuration bytes that were not kept",
                )
            })?;
            let start = addr
                .checked_sub(buf.as_ptr() as usize)
                .filter(|s| s.checked_add(len).is_some_and(|e| e <= buf.len()))
                .ok_or_else(|| {
                    ConfigError::new("table", "not inside the configuration bytes it came from")
                })?;
            (buf, start..start + len)
        }
    };
    let start = range.start;
    let text = buf
        .get_mut(range)
        .ok_or_else(|| ConfigError::new("table", "out of range"))?;
    let n = crate::keytable::decode_in_place(text)?;
    buf.copy_within(start..start + n, 0);
    buf.truncate(n);
    buf.shrink_to_fit();
    Ok(buf)
}

fn compile_api_keys(
    raw: RawApiKeys,
    provider_names: &[&str],
    config: &mut Option<Vec<u8>>,
) -> Result<ApiKeys, ConfigError> {
    let header = raw.header.to_ascii_lowercase();
    if !valid_header_name(&header) || header == "authorization" {
        return Err(ConfigError::new(
            "header",
            "not a valid header name (and not `authorization`)",
        ));
    }
    if provider_names.contains(&raw.name.as_str()) {
        return Err(ConfigError::new(
            "name",
            "a JWT provider already has this name",
        ));
    }
    let bytes = match (raw.keys, raw.table) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "table",
                "give the keys either as `keys` or as `table`, not both",
            ))
        }
        (_, Some(text)) => table_bytes(text, config)?,
        (keys, None) => KeyTable::encode(&keys.unwrap_or_default())?,
    };
    let table = KeyTable::from_bytes(bytes)?;
    let mut query_names = vec![
        "api_key".to_string(),
        "apikey".to_string(),
        "api-key".to_string(),
    ];
    if !query_names.contains(&header) {
        query_names.push(header.clone());
    }
    Ok(ApiKeys {
        name: raw.name,
        header,
        query_names,
        table,
    })
}

fn default_stat_prefix() -> String {
    "authn".into()
}

/// Where a token is looked for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSource {
    /// Header name (default `authorization`).
    #[serde(default = "default_token_header")]
    pub header: String,
    /// Auth scheme before the token, matched case-insensitively (default `Bearer`); empty for a
    /// header that carries the bare token.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// Query parameter to read a token from; off unless set (tokens in URLs end up in logs).
    #[serde(default)]
    pub query_param: Option<String>,
    /// Longest token accepted, checked before any decoding (default 8192 bytes).
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
}

fn default_token_header() -> String {
    "authorization".into()
}
fn default_scheme() -> String {
    "Bearer".into()
}
fn default_max_token_bytes() -> usize {
    8192
}

impl Default for TokenSource {
    fn default() -> Self {
        TokenSource {
            header: default_token_header(),
            scheme: default_scheme(),
            query_param: None,
            max_token_bytes: default_max_token_bytes(),
        }
    }
}

/// One trusted token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// Name used in route rules and logs.
    pub name: String,
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values (any one must match exactly); empty means `aud` is not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Algorithms accepted from this issuer.
    pub algorithms: Vec<String>,
    /// Inline JWKS (`{"keys": [...]}`).
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Remote JWKS, fetched through an Envoy cluster and shared by all workers (instead of
    /// `jwks`).
    #[serde(default)]
    pub jwks_uri: Option<crate::remote::RawRemoteJwks>,
    /// Allowed clock difference for `exp`, `nbf`, `iat` (default 60 s).
    #[serde(default = "default_skew")]
    pub clock_skew_seconds: u64,
    /// Refuse tokens without `exp` (default true).
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Claim names the identity is built from.
    #[serde(default)]
    pub claims: ClaimNames,
}

fn default_skew() -> u64 {
    60
}
fn yes() -> bool {
    true
}

/// Claim names the identity is read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimNames {
    /// Tenant claim (default `tenant`).
    #[serde(default = "c_tenant")]
    pub tenant: String,
    /// App / client id claims, first present wins (default `client_id`, `azp`).
    #[serde(default = "c_app")]
    pub app: Vec<String>,
    /// Subject claim (default `sub`).
    #[serde(default = "c_subject")]
    pub subject: String,
    /// Scope claims, first present wins: a space-delimited string or an array
    /// (default `scope`, `scp`).
    #[serde(default = "c_scopes")]
    pub scopes: Vec<String>,
    /// Roles claim: array or space-delimited string (default `roles`).
    #[serde(default = "c_roles")]
    pub roles: String,
    /// Plan tier claim, if any.
    #[serde(default)]
    pub tier: Option<String>,
}

fn c_tenant() -> String {
    "tenant".into()
}
fn c_app() -> Vec<String> {
    vec!["client_id".into(), "azp".into()]
}
fn c_subject() -> String {
    "sub".into()
}
fn c_scopes() -> Vec<String> {
    vec!["scope".into(), "scp".into()]
}
fn c_roles() -> String {
    "roles".into()
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            tenant: c_tenant(),
            app: c_app(),
            subject: c_subject(),
            scopes: c_scopes(),
            roles: c_roles(),
            tier: None,
        }
    }
}

/// Headers carrying the identity upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeaders {
    /// Default `x-portcullis-tenant`.
    #[serde(default = "h_tenant")]
    pub tenant: String,
    /// Default `x-portcullis-app`.
    #[serde(default = "h_app")]
    pub app: String,
    /// Default `x-portcullis-subject`.
    #[serde(default = "h_subject")]
    pub subject: String,
    /// Default `x-portcullis-scopes` (space-delimited).
    #[serde(default = "h_scopes")]
    pub scopes: String,
}

fn h_tenant() -> String {
    "x-portcullis-tenant".into()
}
fn h_app() -> String {
    "x-portcullis-app".into()
}
fn h_subject() -> String {
    "x-portcullis-subject".into()
}
fn h_scopes() -> String {
    "x-portcullis-scopes".into()
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        IdentityHeaders {
            tenant: h_tenant(),
            app: h_app(),
            subject: h_subject(),
            scopes: h_scopes(),
        }
    }
}

/// Verified-token cache settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Most entries per VM (per worker); 0 disables the cache (default 10000).
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
}

fn default_cache_entries() -> usize {
    10_000
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: default_cache_entries(),
        }
    }
}

/// One route rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Name used in logs, metrics and `explain`.
    pub name: String,
    /// Which requests the rule covers.
    #[serde(rename = "match")]
    pub matcher: MatchSpec,
    /// `anonymous`: no credential needed (health checks).
    #[serde(default)]
    pub allow: Option<AllowKind>,
    /// What a valid token must also satisfy; `{}` means any valid token.
    #[serde(default)]
    pub require: Option<RawRequire>,
    /// Stays open in emergency mode; every other route is answered 503 `emergency_mode`.
    #[serde(default)]
    pub essential: bool,
}

/// Kinds of unauthenticated access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowKind {
    /// No credential is checked.
    Anonymous,
}

/// Requirements of a route.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRequire {
    /// Providers whose tokens are accepted here (default: all).
    #[serde(default)]
    pub providers: Vec<String>,
    /// Scopes (whole-token match).
    #[serde(default)]
    pub scopes: Option<Requirement>,
    /// Roles.
    #[serde(default)]
    pub roles: Option<Requirement>,
    /// Path parameter that must equal the caller's tenant (the tenant boundary).
    #[serde(default)]
    pub tenant_param: Option<String>,
    /// Claims that must equal a value: `"{param}"` names a path parameter, anything else is a
    /// literal. A claim that is an array matches when it contains the value.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// Sender-constrained tokens only: `mtls` (RFC 8705 certificate-bound), `dpop` (RFC 9449),
    /// or `any` of the two.
    #[serde(default)]
    pub binding: Option<Binding>,
}

/// A sender constraint a route can demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// RFC 8705: the token carries `cnf["x5t#S256"]` and the connection presents that
    /// certificate.
    Mtls,
    /// RFC 9449: the token carries `cnf.jkt` and comes with a valid DPoP proof.
    Dpop,
    /// Either.
    Any,
}

/// A set requirement.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// Every one of these.
    #[serde(default)]
    pub all_of: Vec<String>,
    /// At least one of these (when not empty).
    #[serde(default)]
    pub any_of: Vec<String>,
}

impl Requirement {
    /// True when `granted` satisfies the requirement.
    pub fn satisfied_by(&self, granted: &[String]) -> bool {
        let has = |s: &String| granted.iter().any(|g| g == s);
        self.all_of.iter().all(has) && (self.any_of.is_empty() || self.any_of.iter().any(has))
    }
}

/// A compiled provider.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Name.
    pub name: String,
    /// Exact issuer.
    pub issuer: String,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Accepted algorithms.
    pub algorithms: Vec<Alg>,
    /// Verification keys (inline JWKS; empty with `remote`).
    pub keys: Vec<Jwk>,
    /// Remote JWKS settings.
    pub remote: Option<crate::remote::RemoteJwks>,
    /// Clock skew in seconds.
    pub skew: u64,
    /// `exp` required.
    pub require_exp: bool,
    /// Claim names.
    pub claims: ClaimNames,
}

/// A claim binding: claim must equal a path parameter or a literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Value of a path parameter.
    Param(String),
    /// A fixed value.
    Literal(String),
}

/// A compiled route rule.
#[derive(Debug, Clone)]
pub enum Rule {
    /// No credential needed.
    Anonymous,
    /// A valid token, plus requirements.
    Require {
        /// Provider indexes accepted (empty: all).
        providers: Vec<usize>,
        /// Scope requirement.
        scopes: Requirement,
        /// Role requirement.
        roles: Requirement,
        /// Tenant boundary parameter.
        tenant_param: Option<String>,
        /// Claim bindings.
        claims: Vec<(String, Expected)>,
        /// Sender constraint required.
        binding: Option<Binding>,
    },
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name.
    pub name: String,
    /// Rule.
    pub rule: Rule,
    /// Open in emergency mode.
    pub essential: bool,
}

/// The compiled, immutable authn configuration.
#[derive(Debug, Clone)]
pub struct AuthnConfig {
    /// Enforce or shadow.
    pub mode: Mode,
    /// Emergency mode: routes that are not `essential` are refused.
    pub emergency: bool,
    /// Metric prefix part.
    pub stat_prefix: String,
    /// Token source (header name lower-cased).
    pub token: TokenSource,
    /// Providers.
    pub providers: Vec<Provider>,
    /// Routes.
    pub routes: RouteTable<Route>,
    /// Identity headers (lower-cased).
    pub identity_headers: IdentityHeaders,
    /// Cache size.
    pub cache_entries: usize,
    /// Forward the token upstream.
    pub forward_token: bool,
    /// Claim names referenced by any route binding: the only claims kept in the cache.
    pub bound_claims: Vec<String>,
    /// API keys, when configured. Routes accept them by listing their name in `providers`;
    /// internally that name is provider index `providers.len()`.
    pub api_keys: Option<ApiKeys>,
    /// DPoP, when configured.
    pub dpop: Option<crate::dpop::Dpop>,
    /// Key of the audit record's hashes, when configured.
    pub audit_key: Option<portcullis_core::audit::HashKey>,
    /// The app catalog, when configured: every caller naming an app is admitted by it.
    pub catalog: Option<crate::catalog::Catalog>,
}

fn valid_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl AuthnConfig {
    /// Parses raw plugin configuration bytes and compiles them.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_owned(bytes.to_vec())
    }

    /// Parses and compiles the plugin configuration, taking its buffer: an API key table in it
    /// is decoded in place and the buffer, trimmed to the table, becomes the table's storage,
    /// so a VM's peak memory for the keys is about the configuration's size.
    pub fn from_owned(bytes: Vec<u8>) -> Result<Self, ConfigError> {
        // A `Struct` becomes JSON text first: the table is then borrowed from, and decoded in,
        // that text like any other.
        let bytes = portcullis_core::config::json_text(bytes)?;
        let raw = portcullis_core::config::parse(&bytes)?;
        Self::compile_in(raw, Some(bytes))
    }

    /// Parses a JSON value (as the CLI loads policy files) and compiles it.
    pub fn from_value(v: serde_json::Value) -> Result<Self, ConfigError> {
        Self::compile(portcullis_core::config::from_value(v)?)
    }

    /// Compiles a raw configuration; errors name the field.
    pub fn compile(raw: RawConfig) -> Result<Self, ConfigError> {
        Self::compile_in(raw, None)
    }

    fn compile_in(raw: RawConfig, mut bytes: Option<Vec<u8>>) -> Result<Self, ConfigError> {
        // The key table first: until it is decoded and trimmed, the whole configuration buffer
        // is alive, and whatever is allocated meanwhile adds to the VM's peak.
        let names: Vec<&str> = raw.providers.iter().map(|p| p.name.as_str()).collect();
        let api_keys = match raw.api_keys {
            Some(k) => {
                Some(compile_api_keys(k, &names, &mut bytes).map_err(|e| e.within("api_keys"))?)
            }
            None => None,
        };
        drop(bytes);
        let mut token = raw.token;
        token.header = token.header.to_ascii_lowercase();
        if !valid_header_name(&token.header) {
            return Err(ConfigError::new("token.header", "not a valid header name"));
        }
        if token.max_token_bytes == 0 || token.max_token_bytes > 65_536 {
            return Err(ConfigError::new(
                "token.max_token_bytes",
                "must be between 1 and 65536",
            ));
        }
        if raw.providers.is_empty() {
            return Err(ConfigError::new(
                "providers",
                "at least one provider is required",
            ));
        }
        let mut providers = Vec::new();
        for (i, p) in raw.providers.into_iter().enumerate() {
            let at = format!("providers[{i}]");
            providers.push(compile_provider(p).map_err(|e| e.within(&at))?);
        }
        for (i, p) in providers.iter().enumerate() {
            if providers[..i].iter().any(|q| q.name == p.name) {
                return Err(ConfigError::new(
                    format!("providers[{i}].name"),
                    format!("duplicate provider `{}`", p.name),
                ));
            }
            if providers[..i].iter().any(|q| q.issuer == p.issuer) {
                return Err(ConfigError::new(
                    format!("providers[{i}].issuer"),
                    "two providers with the same issuer",
                ));
            }
        }
        let mut ih = raw.identity_headers;
        for (field, h) in [
            ("tenant", &mut ih.tenant),
            ("app", &mut ih.app),
            ("subject", &mut ih.subject),
            ("scopes", &mut ih.scopes),
        ] {
            *h = h.to_ascii_lowercase();
            if !valid_header_name(h) {
                return Err(ConfigError::new(
                    format!("identity_headers.{field}"),
                    "not a valid header name",
                ));
            }
        }
        let api_key_provider = api_keys.as_ref().map(|k| (k.name.clone(), providers.len()));
        let mut routes = Vec::new();
        let mut bound_claims: Vec<String> = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            let at = format!("routes[{i}]");
            if routes
                .iter()
                .any(|(_, x): &(RouteMatcher, Route)| x.name == r.name)
            {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate route name `{}`", r.name),
                ));
            }
            let matcher =
                RouteMatcher::compile(&r.matcher).map_err(|e| e.within(&format!("{at}.match")))?;
            let rule = compile_rule(&r, &matcher, &providers, api_key_provider.as_ref())
                .map_err(|e| e.within(&at))?;
            if let Rule::Require { claims, .. } = &rule {
                for (c, _) in claims {
                    if !bound_claims.contains(c) {
                        bound_claims.push(c.clone());
                    }
                }
            }
            routes.push((
                matcher,
                Route {
                    name: r.name,
                    rule,
                    essential: r.essential,
                },
            ));
        }
        Ok(AuthnConfig {
            mode: raw.mode,
            emergency: raw.emergency,
            stat_prefix: raw.stat_prefix,
            token,
            providers,
            routes: RouteTable::new(routes),
            identity_headers: ih,
            cache_entries: raw.cache.max_entries,
            forward_token: raw.forward_token,
            bound_claims,
            api_keys,
            dpop: match raw.dpop {
                Some(d) => Some(crate::dpop::Dpop::compile(d).map_err(|e| e.within("dpop"))?),
                None => None,
            },
            audit_key: match raw.audit {
                Some(a) => Some(
                    portcullis_core::audit::HashKey::from_hex(&a.hash_key)
                        .map_err(|why| ConfigError::new("audit.hash_key", why))?,
                ),
                None => None,
            },
            catalog: match raw.catalog {
                Some(c) => {
                    Some(crate::catalog::Catalog::compile(c).map_err(|e| e.within("catalog"))?)
                }
                None => None,
            },
        })
    }
}

fn compile_provider(p: RawProvider) -> Result<Provider, ConfigError> {
    if p.issuer.is_empty() {
        return Err(ConfigError::new("issuer", "must not be empty"));
    }
    let mut algorithms = Vec::new();
    for (i, a) in p.algorithms.iter().enumerate() {
        match Alg::parse(a) {
            Some(alg) => algorithms.push(alg),
            None => {
                return Err(ConfigError::new(
                    format!("algorithms[{i}]"),
                    format!("unsupported algorithm `{a}` (supported: RS256/384/512, PS256/384/512, ES256, ES384, EdDSA, HS256/384/512)"),
                ))
            }
        }
    }
    if algorithms.is_empty() {
        return Err(ConfigError::new(
            "algorithms",
            "at least one algorithm is required",
        ));
    }
    if p.clock_skew_seconds > 600 {
        return Err(ConfigError::new(
            "clock_skew_seconds",
            "must be at most 600",
        ));
    }
    let (jwks, remote) = match (p.jwks, p.jwks_uri) {
        (Some(j), None) => (j, None),
        (None, Some(r)) => (
            serde_json::json!({"keys": []}),
            Some(crate::remote::RemoteJwks::compile(r).map_err(|e| e.within("jwks_uri"))?),
        ),
        _ => {
            return Err(ConfigError::new(
                "jwks",
                "give exactly one of `jwks` (inline), `jwks_file` (CLI) or `jwks_uri`",
            ))
        }
    };
    let keys = parse_jwks(&jwks, &KeyPolicy::default())
        .map_err(|(i, e)| ConfigError::new(format!("jwks.keys[{i}]"), e.0))?;
    if keys.is_empty() && remote.is_none() {
        return Err(ConfigError::new(
            "jwks.keys",
            "at least one key is required",
        ));
    }
    for (i, k) in keys.iter().enumerate() {
        if !algorithms.iter().any(|a| k.supports(*a)) {
            return Err(ConfigError::new(
                format!("jwks.keys[{i}]"),
                "key cannot verify any of the provider's algorithms",
            ));
        }
        if let Some(kid) = &k.kid {
            if keys[..i]
                .iter()
                .any(|q| q.kid.as_deref() == Some(kid.as_str()))
            {
                return Err(ConfigError::new(
                    format!("jwks.keys[{i}].kid"),
                    "duplicate kid",
                ));
            }
        }
    }
    Ok(Provider {
        name: p.name,
        issuer: p.issuer,
        audiences: p.audiences,
        algorithms,
        keys,
        remote,
        skew: p.clock_skew_seconds,
        require_exp: p.require_exp,
        claims: p.claims,
    })
}

fn compile_rule(
    r: &RawRoute,
    matcher: &RouteMatcher,
    providers: &[Provider],
    api_key_provider: Option<&(String, usize)>,
) -> Result<Rule, ConfigError> {
    let params = matcher.param_names();
    match (&r.allow, &r.require) {
        (Some(AllowKind::Anonymous), None) => Ok(Rule::Anonymous),
        (None, Some(req)) => {
            let mut pidx = Vec::new();
            for (i, name) in req.providers.iter().enumerate() {
                let api = api_key_provider
                    .filter(|(n, _)| n == name)
                    .map(|(_, ix)| *ix);
                match providers.iter().position(|p| &p.name == name).or(api) {
                    Some(ix) => pidx.push(ix),
                    None => {
                        return Err(ConfigError::new(
                            format!("require.providers[{i}]"),
                            format!("unknown provider `{name}`"),
                        ))
                    }
                }
            }
            if let Some(tp) = &req.tenant_param {
                if !params.iter().any(|p| p == tp) {
                    return Err(ConfigError::new(
                        "require.tenant_param",
                        format!("the route template has no `{{{tp}}}` parameter"),
                    ));
                }
            }
            let mut claims = Vec::new();
            for (claim, value) in &req.claims {
                let expected = match value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                    Some(param) => {
                        if !params.iter().any(|p| p == param) {
                            return Err(ConfigError::new(
                                format!("require.claims.{claim}"),
                                format!("the route template has no `{{{param}}}` parameter"),
                            ));
                        }
                        Expected::Param(param.to_string())
                    }
                    None => Expected::Literal(value.clone()),
                };
                claims.push((claim.clone(), expected));
            }
            Ok(Rule::Require {
                providers: pidx,
                scopes: req.scopes.clone().unwrap_or_default(),
                roles: req.roles.clone().unwrap_or_default(),
                tenant_param: req.tenant_param.clone(),
                claims,
                binding: req.binding,
            })
        }
        _ => Err(ConfigError::new(
            "",
            "a route needs exactly one of `allow: anonymous` or `require`",
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_json_table_is_borrowed_from_the_configuration_and_decoded_where_it_lies() {
        let table = crate::keytable::to_text(&KeyTable::encode(&[]).unwrap());
        let text = format!(r#"{{"table": "{table}"}}"#);
        let raw: RawApiKeys = portcullis_core::config::parse(text.as_bytes()).unwrap();
        let Some(TableText::Span { addr, len }) = raw.table else {
            panic!("not borrowed: {:?}", raw.table)
        };
        assert_eq!(addr - text.as_ptr() as usize, 11);
        assert_eq!(len, table.len());

        let mut bytes = Some(text.clone().into_bytes());
        let raw: RawApiKeys = portcullis_core::config::parse(bytes.as_deref().unwrap()).unwrap();
        let start = bytes.as_ref().unwrap().as_ptr();
        let decoded = table_bytes(raw.table.unwrap(), &mut bytes).unwrap();
        assert_eq!(
            decoded.as_ptr(),
            start,
            "copied instead of decoded in place"
        );
        assert!(KeyTable::from_bytes(decoded).unwrap().is_empty());

        // A span that does not lie in the bytes at hand is refused, not read.
        let raw: RawApiKeys = portcullis_core::config::parse(text.as_bytes()).unwrap();
        let mut other = Some(text.as_bytes().to_vec());
        let e = table_bytes(raw.table.unwrap(), &mut other).unwrap_err();
        assert!(e.problem.contains("not inside"), "{e}");
        let e = table_bytes(TableText::Span { addr: 1, len: 4 }, &mut None).unwrap_err();
        assert!(e.problem.contains("not kept"), "{e}");
    }

    #[test]
    fn a_table_in_a_value_or_with_escapes_is_taken_as_text() {
        let table = crate::keytable::to_text(&KeyTable::encode(&[]).unwrap());
        let raw: RawApiKeys =
            portcullis_core::config::from_value(serde_json::json!({ "table": table })).unwrap();
        assert_eq!(raw.table, Some(TableText::Owned(table.clone())));
        let escaped = format!(r#"{{"table": "\u0055{}"}}"#, &table[1..]);
        let raw: RawApiKeys = portcullis_core::config::parse(escaped.as_bytes()).unwrap();
        assert_eq!(raw.table, Some(TableText::Owned(table)));
    }
}
