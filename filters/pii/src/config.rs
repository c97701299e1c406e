//! pii configuration: the strict shape users write and its compiled form (paths compiled to
//! automata, detector patterns compiled once per profile, keys decoded, routes indexed).

use crate::action::{Action, TokenFormat, TokenKey};
use crate::detect::{Builtin, Detector, Detectors};
use crate::jsonpath::FieldPath;
use base64::Engine as _;
use portcullis_core::config::ConfigError;
use portcullis_core::route::{MatchSpec, RouteMatcher, RouteTable};
use serde::Deserialize;
use std::collections::BTreeMap;

pub use portcullis_core::config::Mode;

/// The configuration as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Write this filter's audit fields (filter state the access log reads) on every request.
    /// `portcullis render --audit-log` turns it on; off, the request path makes no such writes.
    #[serde(default)]
    pub audit: bool,
    /// Emergency mode: no scope and no consent flag reveals anything; every rule masks.
    /// `portcullis render` / `apply` / `emergency on` set it; policies leave it out.
    #[serde(default)]
    pub emergency: bool,
    /// `enforce` (default) or `shadow` (count what would be masked, change nothing).
    #[serde(default)]
    pub mode: Mode,
    /// Metric name part: `portcullis.<stat_prefix>.…` (default `pii`).
    #[serde(default = "default_prefix")]
    pub stat_prefix: String,
    /// Default redaction text (default `[REDACTED]`).
    #[serde(default = "default_placeholder")]
    pub placeholder: String,
    /// Default character for partial masks (default `*`).
    #[serde(default = "default_mask_char")]
    pub mask_char: char,
    /// Largest body buffered for masking, as received (default 1 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Limits on decompressing bodies the upstream compressed anyway.
    #[serde(default)]
    pub decompression: RawDecompression,
    /// Largest body the filter writes back, after decoding and masking (default: the largest
    /// of `max_body_bytes`, every route's `max_body_bytes` and `decompression.max_bytes`).
    /// Envoy resets a stream whose replaced body exceeds the listener's
    /// `per_connection_buffer_limit_bytes`, so that limit must be at least this large
    /// (`portcullis render` sets it so); a body that would grow past it is refused.
    #[serde(default)]
    pub max_output_bytes: Option<usize>,
    /// Headers never inspected, besides the built-in structural ones
    /// (`decide::EXEMPT_HEADERS`): e.g. an opaque id the detectors mistake for a number.
    #[serde(default)]
    pub exempt_headers: Vec<String>,
    /// Keys for the `tokenize` action.
    #[serde(default)]
    pub tokenization: RawTokenization,
    /// Masking rules.
    pub rules: Vec<RawRule>,
    /// Named lists of rule names.
    pub profiles: BTreeMap<String, Vec<String>>,
    /// Route rules, first match wins; unmatched traffic is not touched.
    pub routes: Vec<RawRoute>,
}

fn default_prefix() -> String {
    "pii".into()
}
fn default_placeholder() -> String {
    "[REDACTED]".into()
}
fn default_mask_char() -> char {
    '*'
}
fn default_max_body() -> usize {
    1 << 20
}

/// Decompression limits as written.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecompression {
    /// Largest decompressed body (default 8 MiB).
    #[serde(default = "default_max_decompressed")]
    pub max_bytes: usize,
    /// Largest decompressed/compressed ratio (default 100): a zip bomb stops here.
    #[serde(default = "default_ratio")]
    pub max_ratio: usize,
}

impl Default for RawDecompression {
    fn default() -> Self {
        RawDecompression {
            max_bytes: default_max_decompressed(),
            max_ratio: default_ratio(),
        }
    }
}

fn default_max_decompressed() -> usize {
    8 << 20
}
fn default_ratio() -> usize {
    100
}

/// Tokenization keys as written (base64 or base64url, at least 16 bytes each).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenization {
    /// Key for callers whose tenant has no key of its own (and for requests without identity).
    #[serde(default)]
    pub default_key: Option<String>,
    /// Per-tenant keys: tenants get unrelated tokens for the same value.
    #[serde(default)]
    pub tenant_keys: BTreeMap<String, String>,
    /// Prefix of opaque tokens (default `tok_`).
    #[serde(default = "default_token_prefix")]
    pub prefix: String,
}

fn default_token_prefix() -> String {
    "tok_".into()
}

/// A detector as written: a built-in name or `{regex: …}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDetector {
    /// `email`, `phone`, `ssn`, `payment_card`, `iban`.
    Builtin(Builtin),
    /// A custom pattern.
    Custom {
        /// Rust `regex` syntax.
        regex: String,
    },
}

/// Action kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Replace with a placeholder.
    Redact,
    /// Keep some characters.
    Partial,
    /// Keyed pseudonym.
    Tokenize,
    /// Remove the member.
    Drop,
}

/// An action as written: `redact` or `{type: partial, keep_last: 4}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawAction {
    /// Just the kind, with defaults.
    Kind(ActionKind),
    /// Kind and options.
    Full(RawActionOptions),
}

/// Action options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActionOptions {
    /// The kind.
    #[serde(rename = "type")]
    pub kind: ActionKind,
    /// `redact`: replacement text.
    #[serde(default)]
    pub placeholder: Option<String>,
    /// `partial`: letters/digits kept at the start.
    #[serde(default)]
    pub keep_first: usize,
    /// `partial`: letters/digits kept at the end.
    #[serde(default)]
    pub keep_last: usize,
    /// `partial`: keep an e-mail's domain.
    #[serde(default)]
    pub keep_domain: bool,
    /// `partial`: mask character.
    #[serde(default)]
    pub mask_char: Option<char>,
    /// `tokenize`: `opaque` (default) or `digits`.
    #[serde(default)]
    pub format: TokenFormat,
    /// `tokenize`: domain-separation label (default: the rule name).
    #[serde(default)]
    pub class: Option<String>,
}

/// A rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Name used in profiles, metrics and logs.
    pub name: String,
    /// Field rule: JSON paths whose values are personal data.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Header rule (alone or beside `fields`): headers whose whole value is personal data
    /// (`x-customer-email`), on the route's direction.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Detector rule: what to look for in every string value and text body.
    #[serde(default)]
    pub detector: Option<RawDetector>,
    /// What to do with it.
    pub action: RawAction,
    /// Scopes (verified by authn) any one of which reveals the value unmasked.
    #[serde(default)]
    pub unmask_scopes: Vec<String>,
    /// Field rules: dotted path, relative to the object holding the field, of a consent flag;
    /// the value is revealed only when that flag is `true`.
    #[serde(default)]
    pub consent: Option<String>,
    /// The data class of what the rule covers (`contact`, `financial`, `government-id`…): a
    /// value is revealed only to callers whose app the catalog grants this class. Required on
    /// rules that can reveal once an app catalog exists (`portcullis check`).
    #[serde(default)]
    pub data_class: Option<String>,
}

/// Which direction a route masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Response bodies (what the caller reads).
    #[default]
    Response,
    /// Request bodies (egress: what is sent out, e.g. a sync to an external CRM).
    Request,
    /// Both.
    Both,
}

impl Direction {
    /// Masks responses.
    pub fn response(self) -> bool {
        matches!(self, Direction::Response | Direction::Both)
    }
    /// Masks requests.
    pub fn request(self) -> bool {
        matches!(self, Direction::Request | Direction::Both)
    }
}

/// What to do with a body that cannot be masked (too large, unparseable, unknown encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnUnmaskable {
    /// Refuse it (502 for responses, 413/422 for requests), reason `unmaskable_body`.
    #[default]
    Block,
    /// Let it through unmasked (counted and logged). For routes where availability matters more.
    Pass,
}

/// What to do with binary (non-JSON, non-text) bodies on a masked route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BinaryPolicy {
    /// Pass them uninspected (images, PDFs…): an explicit choice per route.
    Pass,
    /// Treat them as unmaskable (the default: a route that masks cannot vouch for bytes it
    /// cannot read).
    #[default]
    Block,
}

/// A route as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Name used in metrics and logs.
    pub name: String,
    /// Which requests.
    #[serde(rename = "match")]
    pub matcher: MatchSpec,
    /// Profile applied.
    pub profile: String,
    /// `response` (default), `request` or `both`.
    #[serde(default)]
    pub direction: Direction,
    /// `block` (default) or `pass`.
    #[serde(default)]
    pub on_unmaskable: OnUnmaskable,
    /// `block` (default) or `pass`.
    #[serde(default)]
    pub binary: BinaryPolicy,
    /// Overrides the filter-wide `max_body_bytes`.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name.
    pub name: String,
    /// Field paths (empty for detector rules).
    pub fields: Vec<FieldPath>,
    /// Header names, lower case, whose whole value the rule covers.
    pub headers: Vec<String>,
    /// Detector (detector rules).
    pub detector: Option<Detector>,
    /// Action.
    pub action: Action,
    /// Scope tokens that reveal, as the masking engine compares them with
    /// [`PiiConfig::caller_scopes`]: the scopes as written, each bound to the rule's data class
    /// ([`class_scope`]) when it has one; a class rule revealed by consent alone carries its
    /// class token.
    pub unmask_scopes: Vec<String>,
    /// The scopes that reveal, as written.
    pub written_scopes: Vec<String>,
    /// The rule's data class.
    pub data_class: Option<String>,
    /// Consent flag path.
    pub consent: Option<Vec<String>>,
}

/// The scope token a rule of class `class` compares with: `scope`, bound to the class by a unit
/// separator (a control character, which no verified scope can contain: authn refuses them in
/// claims, and pii refuses them in scopes and classes it is configured with). A caller holds it
/// only when it holds the scope and is granted the class.
pub fn class_scope(scope: &str, class: &str) -> String {
    format!("{scope}\u{1f}{class}")
}

fn free_of_controls(field: &str, s: &str) -> Result<(), ConfigError> {
    if s.is_empty() || s.chars().any(char::is_control) {
        return Err(ConfigError::new(
            field,
            "must be non-empty, without control characters",
        ));
    }
    Ok(())
}

/// A compiled profile: its rules split by kind, detectors compiled together.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Name.
    pub name: String,
    /// Index of every rule of the profile, in the profile's order.
    pub rules: Vec<usize>,
    /// Rules of the profile that name headers, in the profile's order.
    pub header_rules: Vec<usize>,
    /// (rule index, path index) for every field path of the profile's field rules, in order.
    pub paths: Vec<(usize, usize)>,
    /// Rule index of each detector in `detectors` (same order).
    pub detector_rules: Vec<usize>,
    /// Compiled detectors.
    pub detectors: Detectors,
    /// Rule index of the first payment-card detector (applied to JSON numbers too).
    pub card_rule: Option<usize>,
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name.
    pub name: String,
    /// Profile index.
    pub profile: usize,
    /// Direction.
    pub direction: Direction,
    /// Unmaskable bodies.
    pub on_unmaskable: OnUnmaskable,
    /// Binary bodies.
    pub binary: BinaryPolicy,
    /// Buffer cap.
    pub max_body_bytes: usize,
}

/// Tokenization keys, decoded.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// Fallback key.
    pub default: Option<TokenKey>,
    /// Per tenant.
    pub tenants: BTreeMap<String, TokenKey>,
}

impl Keys {
    /// The key for a caller's tenant.
    pub fn for_tenant(&self, tenant: Option<&str>) -> Option<&TokenKey> {
        tenant
            .and_then(|t| self.tenants.get(t))
            .or(self.default.as_ref())
    }
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct PiiConfig {
    /// Audit fields written per request (`audit` as written).
    pub audit: portcullis_core::audit::Recorder,
    /// Mode.
    pub mode: Mode,
    /// Metric prefix.
    pub stat_prefix: String,
    /// Decompressed size cap.
    pub max_decompressed_bytes: usize,
    /// Decompression ratio cap.
    pub max_ratio: usize,
    /// Largest body written back (decoded and masked): never above Envoy's buffer limit.
    pub max_output_bytes: usize,
    /// Extra header names (lower case) never inspected.
    pub exempt_headers: Vec<String>,
    /// Tokenization keys.
    pub keys: Keys,
    /// Rules.
    pub rules: Vec<Rule>,
    /// Profiles.
    pub profiles: Vec<Profile>,
    /// Routes.
    pub routes: RouteTable<Route>,
    /// The data classes the rules name, each once, in rule order.
    pub classes: Vec<String>,
    /// Whether masking reports list where they masked (`Report::pointers`). `Always` as
    /// compiled, for policy tests and tools; the filter asks for them only while its debug log,
    /// the one place that shows them, is enabled.
    pub locate: Locate,
}

/// When masking reports list where they masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locate {
    /// Every report (policy tests, tools, the differential tests).
    Always,
    /// No report (the masker measured alone).
    Never,
    /// While `debug` lines are written: asked per report, because the module follows Envoy's
    /// log level as an operator changes it.
    WhileDebugLogged,
}

impl Locate {
    /// Whether a report starting now lists locations.
    pub fn now(self) -> bool {
        match self {
            Locate::Always => true,
            Locate::Never => false,
            Locate::WhileDebugLogged => log::log_enabled!(log::Level::Debug),
        }
    }
}

fn decode_key(field: &str, text: &str) -> Result<Vec<u8>, ConfigError> {
    let t = text.trim().trim_end_matches('=');
    let key = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
        .map_err(|_| ConfigError::new(field, "must be base64"))?;
    if key.len() < 16 {
        return Err(ConfigError::new(
            field,
            "must be at least 16 bytes (128 bits) of key material",
        ));
    }
    Ok(key)
}

fn printable(field: &str, text: &str) -> Result<(), ConfigError> {
    if text.chars().any(char::is_control) {
        return Err(ConfigError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn compile_action(raw: &RawAction, rule: &RawRule, cfg: &RawConfig) -> Result<Action, ConfigError> {
    let opts = match raw {
        RawAction::Kind(kind) => RawActionOptions {
            kind: *kind,
            placeholder: None,
            keep_first: 0,
            keep_last: 0,
            keep_domain: false,
            mask_char: None,
            format: TokenFormat::Opaque,
            class: None,
        },
        RawAction::Full(o) => o.clone(),
    };
    if let Some(p) = &opts.placeholder {
        printable("action.placeholder", p)?;
    }
    if let Some(c) = opts.mask_char {
        printable("action.mask_char", &c.to_string())?;
    }
    Ok(match opts.kind {
        ActionKind::Redact => Action::Redact {
            placeholder: opts.placeholder.unwrap_or_else(|| cfg.placeholder.clone()),
        },
        ActionKind::Partial => Action::Partial {
            keep_first: opts.keep_first,
            keep_last: opts.keep_last,
            keep_domain: opts.keep_domain,
            mask_char: opts.mask_char.unwrap_or(cfg.mask_char),
        },
        ActionKind::Tokenize => {
            if cfg.tokenization.default_key.is_none() && cfg.tokenization.tenant_keys.is_empty() {
                return Err(ConfigError::new(
                    "action",
                    "tokenize needs keys: set tokenization.default_key and/or tokenization.tenant_keys",
                ));
            }
            Action::Tokenize {
                format: opts.format,
                class: opts.class.unwrap_or_else(|| rule.name.clone()),
                prefix: cfg.tokenization.prefix.clone(),
            }
        }
        ActionKind::Drop => {
            if rule.detector.is_some() {
                return Err(ConfigError::new(
                    "action",
                    "drop removes a JSON member or a header: it applies to field and header rules, not detectors",
                ));
            }
            Action::Drop
        }
    })
}

fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        return Err(ConfigError::new(
            field,
            format!("`{name}` is not a header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn compile_rule(raw: &RawRule, cfg: &RawConfig) -> Result<Rule, ConfigError> {
    let named = !raw.fields.is_empty() || !raw.headers.is_empty();
    if named == raw.detector.is_some() {
        return Err(ConfigError::new(
            "fields",
            "give `fields` (paths) and/or `headers`, or a `detector`, not both",
        ));
    }
    let headers = raw
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| header_name(&format!("headers[{i}]"), h))
        .collect::<Result<Vec<_>, _>>()?;
    let fields = raw
        .fields
        .iter()
        .enumerate()
        .map(|(i, p)| {
            FieldPath::compile(p).map_err(|e| ConfigError::new(format!("fields[{i}]"), e.0))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let detector = match &raw.detector {
        None => None,
        Some(RawDetector::Builtin(b)) => Some(Detector::Builtin(*b)),
        Some(RawDetector::Custom { regex }) => {
            let r = regex::bytes::RegexBuilder::new(regex)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    ConfigError::new("detector.regex", format!("does not compile: {e}"))
                })?;
            if r.is_match(b"") {
                return Err(ConfigError::new(
                    "detector.regex",
                    "matches the empty string",
                ));
            }
            Some(Detector::Custom(r))
        }
    };
    if raw.consent.is_some() && detector.is_some() {
        return Err(ConfigError::new(
            "consent",
            "applies to field rules (a record's own flag)",
        ));
    }
    let consent = match &raw.consent {
        None => None,
        Some(c) => {
            let segs: Vec<String> = c.split('.').map(str::to_string).collect();
            if segs.iter().any(String::is_empty) {
                return Err(ConfigError::new(
                    "consent",
                    "a dotted member path like `consent.marketing`",
                ));
            }
            Some(segs)
        }
    };
    for (i, sc) in raw.unmask_scopes.iter().enumerate() {
        free_of_controls(&format!("unmask_scopes[{i}]"), sc)?;
    }
    if let Some(c) = &raw.data_class {
        free_of_controls("data_class", c)?;
    }
    let class_bound = match &raw.data_class {
        None => raw.unmask_scopes.clone(),
        Some(c) if raw.unmask_scopes.is_empty() && consent.is_some() => vec![class_scope("", c)],
        Some(c) => raw
            .unmask_scopes
            .iter()
            .map(|sc| class_scope(sc, c))
            .collect(),
    };
    // Both were checked above, so a policy is validated the same way whether or not the
    // mode is on; in an emergency neither can reveal a value.
    let (unmask_scopes, consent) = if cfg.emergency {
        (Vec::new(), None)
    } else {
        (class_bound, consent)
    };
    Ok(Rule {
        name: raw.name.clone(),
        fields,
        headers,
        detector,
        action: compile_action(&raw.action, raw, cfg)?,
        unmask_scopes,
        written_scopes: raw.unmask_scopes.clone(),
        data_class: raw.data_class.clone(),
        consent,
    })
}

/// Largest size limit accepted: a body is held whole in Envoy's buffers and in the VM, once
/// received and once masked, so limits stay far below what a worker can afford.
pub const MAX_LIMIT_BYTES: usize = 64 << 20;

fn check_limit(field: &str, n: usize) -> Result<(), ConfigError> {
    if n == 0 || n > MAX_LIMIT_BYTES {
        return Err(ConfigError::new(
            field,
            format!("must be between 1 and {MAX_LIMIT_BYTES} bytes"),
        ));
    }
    Ok(())
}

impl PiiConfig {
    /// Compiles a configuration value.
    pub fn from_value(value: serde_json::Value) -> Result<Self, ConfigError> {
        let raw: RawConfig = portcullis_core::config::from_value(value)?;
        Self::compile(&raw)
    }

    /// Compiles the plugin configuration bytes (JSON string or protobuf Struct).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = portcullis_core::config::parse(bytes)?;
        Self::compile(&raw)
    }

    /// Compiles a parsed configuration.
    pub fn compile(raw: &RawConfig) -> Result<Self, ConfigError> {
        check_limit("max_body_bytes", raw.max_body_bytes)?;
        check_limit("decompression.max_bytes", raw.decompression.max_bytes)?;
        if raw.decompression.max_ratio == 0 {
            return Err(ConfigError::new(
                "decompression.max_ratio",
                "must be positive",
            ));
        }
        if raw.placeholder.is_empty() {
            return Err(ConfigError::new("placeholder", "must not be empty"));
        }
        // Masks are written into header values too, where a control character would split or
        // corrupt the header.
        printable("placeholder", &raw.placeholder)?;
        printable("mask_char", &raw.mask_char.to_string())?;
        printable("tokenization.prefix", &raw.tokenization.prefix)?;
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, r) in raw.rules.iter().enumerate() {
            if rules.iter().any(|x: &Rule| x.name == r.name) {
                return Err(ConfigError::new(
                    format!("rules[{i}].name"),
                    format!("duplicate rule `{}`", r.name),
                ));
            }
            rules.push(compile_rule(r, raw).map_err(|e| e.within(&format!("rules[{i}]")))?);
        }
        let mut profiles = Vec::new();
        let mut profile_index = BTreeMap::new();
        for (name, names) in &raw.profiles {
            let mut paths = Vec::new();
            let mut detector_rules = Vec::new();
            let mut detectors = Vec::new();
            let mut card_rule = None;
            let mut members = Vec::with_capacity(names.len());
            for n in names {
                let Some(ri) = rules.iter().position(|r| &r.name == n) else {
                    return Err(ConfigError::new(
                        format!("profiles.{name}"),
                        format!("unknown rule `{n}`"),
                    ));
                };
                members.push(ri);
                let rule = &rules[ri];
                paths.extend((0..rule.fields.len()).map(|pi| (ri, pi)));
                if let Some(d) = &rule.detector {
                    if card_rule.is_none() && matches!(d, Detector::Builtin(Builtin::PaymentCard)) {
                        card_rule = Some(ri);
                    }
                    detector_rules.push(ri);
                    detectors.push(d.clone());
                }
            }
            profile_index.insert(name.clone(), profiles.len());
            let header_rules = members
                .iter()
                .copied()
                .filter(|&ri| rules.get(ri).is_some_and(|r| !r.headers.is_empty()))
                .collect();
            profiles.push(Profile {
                name: name.clone(),
                rules: members,
                header_rules,
                paths,
                detector_rules,
                detectors: Detectors::new(detectors),
                card_rule,
            });
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.iter().enumerate() {
            let at = |e: ConfigError| e.within(&format!("routes[{i}]"));
            let matcher = RouteMatcher::compile(&r.matcher).map_err(at)?;
            let profile = *profile_index.get(&r.profile).ok_or_else(|| {
                at(ConfigError::new(
                    "profile",
                    format!("unknown profile `{}`", r.profile),
                ))
            })?;
            let max_body_bytes = r.max_body_bytes.unwrap_or(raw.max_body_bytes);
            check_limit("max_body_bytes", max_body_bytes).map_err(at)?;
            routes.push((
                matcher,
                Route {
                    name: r.name.clone(),
                    profile,
                    direction: r.direction,
                    on_unmaskable: r.on_unmaskable,
                    binary: r.binary,
                    max_body_bytes,
                },
            ));
        }
        let mut keys = Keys::default();
        if let Some(k) = &raw.tokenization.default_key {
            keys.default = Some(TokenKey::new(&decode_key("tokenization.default_key", k)?));
        }
        for (t, k) in &raw.tokenization.tenant_keys {
            keys.tenants.insert(
                t.clone(),
                TokenKey::new(&decode_key(&format!("tokenization.tenant_keys.{t}"), k)?),
            );
        }
        let largest_input = routes
            .iter()
            .map(|(_, r)| r.max_body_bytes)
            .fold(raw.max_body_bytes, usize::max);
        let max_output_bytes = match raw.max_output_bytes {
            None => largest_input.max(raw.decompression.max_bytes),
            Some(n) => {
                check_limit("max_output_bytes", n)?;
                // A body masked without growing must always be writable.
                if n < largest_input {
                    return Err(ConfigError::new(
                        "max_output_bytes",
                        format!("must be at least the largest max_body_bytes ({largest_input})"),
                    ));
                }
                n
            }
        };
        let mut classes: Vec<String> = Vec::new();
        for c in rules.iter().filter_map(|r| r.data_class.as_ref()) {
            if !classes.contains(c) {
                classes.push(c.clone());
            }
        }
        Ok(PiiConfig {
            classes,
            audit: portcullis_core::audit::Recorder::new(raw.audit),
            mode: raw.mode,
            stat_prefix: raw.stat_prefix.clone(),
            max_decompressed_bytes: raw.decompression.max_bytes,
            max_ratio: raw.decompression.max_ratio,
            max_output_bytes,
            exempt_headers: raw
                .exempt_headers
                .iter()
                .enumerate()
                .map(|(i, h)| header_name(&format!("exempt_headers[{i}]"), h))
                .collect::<Result<Vec<_>, _>>()?,
            keys,
            rules,
            profiles,
            routes: RouteTable::new(routes),
            locate: Locate::Always,
        })
    }

    /// The scope tokens a caller holds, from its verified scopes and the data classes the app
    /// catalog grants it (`None`: no restriction). An unrestricted caller keeps its scopes and
    /// holds each of them for every class; a restricted one holds its scopes only for the
    /// classes it is granted, and reveals nothing of a rule without a class. Without classes
    /// in the rules and without a restriction, the scopes are returned as they are.
    pub fn caller_scopes(&self, scopes: Vec<String>, granted: Option<&[String]>) -> Vec<String> {
        if self.classes.is_empty() && granted.is_none() {
            return scopes;
        }
        let visible = self
            .classes
            .iter()
            .filter(|c| granted.is_none_or(|g| g.contains(c)));
        let mut out = if granted.is_none() {
            scopes.clone()
        } else {
            Vec::new()
        };
        for c in visible {
            out.push(class_scope("", c));
            out.extend(scopes.iter().map(|s| class_scope(s, c)));
        }
        out
    }

    /// Largest body any route buffers (Envoy's per-connection buffer limit must exceed it, or
    /// Envoy answers 500 before this filter can apply its own limit).
    pub fn max_body_bytes(&self) -> usize {
        self.routes
            .iter()
            .map(|(_, r)| r.max_body_bytes)
            .max()
            .unwrap_or(0)
    }

    /// Smallest `per_connection_buffer_limit_bytes` of a listener running this filter: Envoy
    /// must hold every body the filter buffers (as received) and every body it writes back.
    pub fn min_envoy_buffer_bytes(&self) -> usize {
        self.max_body_bytes().max(self.max_output_bytes)
    }

    /// Largest request body that leaves the filter on a request-masking route (masked, or
    /// passed as received): what a buffer filter behind it must accept. 0 without such routes.
    pub fn max_request_output_bytes(&self) -> usize {
        if self.max_request_body_bytes() == 0 {
            0
        } else {
            self.max_output_bytes.max(self.max_request_body_bytes())
        }
    }

    /// Largest request body a request-masking route buffers (for the native buffer filter).
    pub fn max_request_body_bytes(&self) -> usize {
        self.routes
            .iter()
            .filter(|(_, r)| r.direction.request())
            .map(|(_, r)| r.max_body_bytes)
            .max()
            .unwrap_or(0)
    }
}
