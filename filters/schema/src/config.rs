//! schema configuration: the strict shape users write and its compiled form (JSON Schemas
//! compiled once with `jsonschema`, header patterns compiled once, routes indexed).

use crate::onepass::{self, Program};
use crate::scan::{Limits, DEPTH_CEILING};
use jsonschema::{Draft, Registry, Retrieve, Uri, Validator};
use portcullis_core::config::ConfigError;
use portcullis_core::route::{MatchSpec, RouteMatcher, RouteTable};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// URI prefix under which the named `schemas` are registered, for `$ref` between them.
pub const SCHEMA_URI_PREFIX: &str = "urn:portcullis:schema:";

pub use portcullis_core::config::Mode;

/// What to do with a request no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Pass it on unvalidated (authn's route rules decide whether it is allowed at all).
    #[default]
    Allow,
    /// Refuse it (403 `route_not_allowed`).
    Deny,
}

/// Whether a route's request carries a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyRule {
    /// A body is required (400 `missing_body` without one).
    Required,
    /// A body is validated when present.
    Optional,
}

/// Limits as written: every field optional, falling back to the filter-wide limits.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Largest body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Deepest nesting.
    pub max_depth: Option<usize>,
    /// Longest array.
    pub max_array_len: Option<usize>,
    /// Longest string.
    pub max_string_len: Option<usize>,
    /// Most object members.
    pub max_object_members: Option<usize>,
}

impl LimitOverrides {
    fn apply(&self, base: Limits) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes.unwrap_or(base.max_body_bytes),
            max_depth: self.max_depth.unwrap_or(base.max_depth),
            max_array_len: self.max_array_len.unwrap_or(base.max_array_len),
            max_string_len: self.max_string_len.unwrap_or(base.max_string_len),
            max_object_members: self.max_object_members.unwrap_or(base.max_object_members),
        }
    }
}

/// The configuration as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Write this filter's audit fields (filter state the access log reads) on every request.
    /// `portcullis render --audit-log` turns it on; off, the request path makes no such writes.
    #[serde(default)]
    pub audit: bool,
    /// `enforce` (default) or `shadow`.
    #[serde(default)]
    pub mode: Mode,
    /// Metric name part: `portcullis.<stat_prefix>.…` (default `schema`).
    #[serde(default = "default_prefix")]
    pub stat_prefix: String,
    /// Accepted media types (default `application/json`); `application/*+json` types are
    /// accepted too unless `json_suffix` is false.
    #[serde(default = "default_types")]
    pub content_types: Vec<String>,
    /// Accept any `+json` structured-syntax suffix (default true).
    #[serde(default = "yes")]
    pub json_suffix: bool,
    /// Filter-wide structural limits (each route may override).
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Assert `format` (email, date, uuid…) instead of treating it as an annotation, which is
    /// the 2020-12 default (default true: a gateway wants `format: email` enforced).
    #[serde(default = "yes")]
    pub validate_formats: bool,
    /// Most validation errors listed in a response (default 10).
    #[serde(default = "default_max_errors")]
    pub max_errors: usize,
    /// Named schemas, referenced by name from routes or by `$ref` as
    /// `urn:portcullis:schema:<name>` from other schemas.
    #[serde(default)]
    pub schemas: BTreeMap<String, Value>,
    /// Unmatched requests (default `allow`).
    #[serde(default)]
    pub unmatched: Unmatched,
    /// Route rules, first match wins.
    pub routes: Vec<RawRoute>,
}

fn default_prefix() -> String {
    "schema".into()
}
fn default_types() -> Vec<String> {
    vec!["application/json".into()]
}
fn yes() -> bool {
    true
}
fn default_max_errors() -> usize {
    10
}

/// One route as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Name used in metrics and logs.
    pub name: String,
    /// Which requests.
    #[serde(rename = "match")]
    pub matcher: MatchSpec,
    /// Request body rules.
    #[serde(default)]
    pub request: Option<RawRequest>,
    /// Required headers.
    #[serde(default)]
    pub headers: Vec<RawHeader>,
    /// Response contract for 2xx responses.
    #[serde(default)]
    pub response: Option<RawResponse>,
}

/// Request body rules as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    /// A schema name from `schemas`, or an inline schema object.
    pub schema: Value,
    /// `required` (default) or `optional`.
    #[serde(default)]
    pub body: Option<BodyRule>,
    /// Limits for this route.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Accepted media types for this route (default: the filter-wide list).
    #[serde(default)]
    pub content_types: Option<Vec<String>>,
}

/// How a response contract is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ContractMode {
    /// Count and log violations; the response goes out as it is.
    #[default]
    Report,
    /// Replace a violating response with 502 problem+json (needs the response-hold Lua filter
    /// in front of the chain, see README).
    Enforce,
}

/// A response contract as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResponse {
    /// A schema name from `schemas`, or an inline schema object.
    pub schema: Value,
    /// `report` (default) or `enforce`.
    #[serde(default)]
    pub mode: ContractMode,
    /// Limits for response bodies (default: the filter-wide limits).
    #[serde(default)]
    pub limits: LimitOverrides,
}

/// A compiled response contract (checked on 2xx responses).
#[derive(Debug)]
pub struct ResponseRule {
    /// Compiled schema.
    pub validator: Validator,
    /// The same schema for one-pass validation, when it can be decided that way.
    pub fast: Option<Program>,
    /// Report or enforce.
    pub mode: ContractMode,
    /// Structural limits.
    pub limits: Limits,
}

/// A required header as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    /// Header name.
    pub name: String,
    /// The whole value must match this regex (anchored automatically).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Missing is an error (default true); when false only a present value is checked.
    #[serde(default = "yes")]
    pub required: bool,
}

/// A compiled header rule.
#[derive(Debug, Clone)]
pub struct HeaderRule {
    /// Lower-case name.
    pub name: String,
    /// Anchored pattern.
    pub pattern: Option<regex::Regex>,
    /// Must be present.
    pub required: bool,
}

/// A compiled request body rule.
#[derive(Debug)]
pub struct RequestRule {
    /// Compiled schema.
    pub validator: Validator,
    /// The same schema for one-pass validation, when it can be decided that way.
    pub fast: Option<Program>,
    /// Body presence.
    pub body: BodyRule,
    /// Structural limits.
    pub limits: Limits,
    /// Accepted media types (lower case).
    pub content_types: Vec<String>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Name.
    pub name: String,
    /// Body rule, if the route validates bodies.
    pub request: Option<RequestRule>,
    /// Header rules.
    pub headers: Vec<HeaderRule>,
    /// Response contract.
    pub response: Option<ResponseRule>,
}

/// The compiled schema filter configuration.
#[derive(Debug)]
pub struct SchemaConfig {
    /// Audit fields written per request (`audit` as written).
    pub audit: portcullis_core::audit::Recorder,
    /// Enforce or shadow.
    pub mode: Mode,
    /// Metric prefix.
    pub stat_prefix: String,
    /// Accept `+json` suffixes.
    pub json_suffix: bool,
    /// Error list cap.
    pub max_errors: usize,
    /// Unmatched requests.
    pub unmatched: Unmatched,
    /// Routes.
    pub routes: RouteTable<Route>,
    /// Filter-wide limits (before route overrides).
    pub default_limits: Limits,
}

/// Refuses every retrieval: a `$ref` to anything not shipped in the policy is a config error,
/// never a network fetch.
struct NoFetch;

impl Retrieve for NoFetch {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "`{}` is not a schema shipped in the policy (nothing is fetched)",
            uri.as_str()
        )
        .into())
    }
}

/// Compiles one schema with the named schemas available for `$ref`. Draft 2020-12 unless the
/// schema's `$schema` says otherwise (draft 7 is accepted).
pub fn compile_schema(
    schema: &Value,
    named: &BTreeMap<String, Value>,
    validate_formats: bool,
    retriever: Option<Box<dyn Retrieve>>,
) -> Result<Validator, String> {
    let mut builder = Registry::new();
    for (name, s) in named {
        builder = builder
            .add(format!("{SCHEMA_URI_PREFIX}{name}"), s.clone())
            .map_err(|e| format!("schema `{name}`: {e}"))?;
    }
    let registry = builder.prepare().map_err(|e| e.to_string())?;
    let mut opts = jsonschema::options()
        .with_registry(&registry)
        .should_validate_formats(validate_formats);
    if schema.get("$schema").is_none() {
        opts = opts.with_draft(Draft::Draft202012);
    }
    opts = match retriever {
        Some(r) => opts.with_retriever(BoxedRetriever(r)),
        None => opts.with_retriever(NoFetch),
    };
    opts.build(schema).map_err(|e| e.to_string())
}

struct BoxedRetriever(Box<dyn Retrieve>);

impl Retrieve for BoxedRetriever {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        self.0.retrieve(uri)
    }
}

/// A route's schema: a name from `schemas`, or an inline schema, compiled for `jsonschema` and,
/// when every keyword it uses allows it, for one-pass validation.
fn route_schema(
    v: &Value,
    raw: &RawConfig,
    field: &str,
) -> Result<(Validator, Option<Program>), ConfigError> {
    let schema = match v {
        Value::String(name) => raw.schemas.get(name).ok_or_else(|| {
            ConfigError::new(field, format!("no schema named `{name}` in `schemas`"))
        })?,
        v @ (Value::Object(_) | Value::Bool(_)) => v,
        _ => return Err(ConfigError::new(field, "a schema name or a schema object")),
    };
    let validator = compile_schema(schema, &raw.schemas, raw.validate_formats, None)
        .map_err(|e| ConfigError::new(field, e))?;
    Ok((
        validator,
        onepass::compile(schema, &raw.schemas, raw.validate_formats),
    ))
}

fn media_types(list: &[String], field: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let t = t.trim().to_ascii_lowercase();
        if !t.contains('/') || t.contains(';') {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                "a media type like `application/json` (no parameters)",
            ));
        }
        out.push(t);
    }
    Ok(out)
}

fn check_limits(l: &Limits, field: &str) -> Result<(), ConfigError> {
    if l.max_depth == 0 || l.max_depth > DEPTH_CEILING {
        return Err(ConfigError::new(
            format!("{field}.max_depth"),
            format!("must be between 1 and {DEPTH_CEILING}"),
        ));
    }
    if l.max_body_bytes == 0 || l.max_body_bytes > 64 * 1024 * 1024 {
        return Err(ConfigError::new(
            format!("{field}.max_body_bytes"),
            "must be between 1 and 67108864",
        ));
    }
    Ok(())
}

impl SchemaConfig {
    /// Parses raw plugin configuration and compiles it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::compile(portcullis_core::config::parse(bytes)?)
    }

    /// Compiles a JSON value (as the CLI loads policy files).
    pub fn from_value(v: Value) -> Result<Self, ConfigError> {
        Self::compile(portcullis_core::config::from_value(v)?)
    }

    /// The largest body any route accepts, and at least the filter-wide limit: what the native
    /// buffer filter behind this one must hold (it caps every request, validated or not).
    pub fn max_body_bytes(&self) -> usize {
        self.routes
            .iter()
            .filter_map(|(_, r)| r.request.as_ref().map(|q| q.limits.max_body_bytes))
            .fold(self.default_limits.max_body_bytes, usize::max)
    }

    /// Compiles a raw configuration.
    pub fn compile(raw: RawConfig) -> Result<Self, ConfigError> {
        let base = raw.limits.apply(Limits::default());
        check_limits(&base, "limits")?;
        let types = media_types(&raw.content_types, "content_types")?;
        for (name, s) in &raw.schemas {
            compile_schema(s, &raw.schemas, raw.validate_formats, None)
                .map_err(|e| ConfigError::new(format!("schemas.{name}"), e))?;
        }
        let mut routes = Vec::new();
        for (i, r) in raw.routes.iter().cloned().enumerate() {
            let at = format!("routes[{i}]");
            let matcher =
                RouteMatcher::compile(&r.matcher).map_err(|e| e.within(&format!("{at}.match")))?;
            let request = match r.request {
                None => None,
                Some(q) => {
                    let (validator, fast) =
                        route_schema(&q.schema, &raw, &format!("{at}.request.schema"))?;
                    let limits = q.limits.apply(base);
                    check_limits(&limits, &format!("{at}.request.limits"))?;
                    let content_types = match &q.content_types {
                        Some(list) => media_types(list, &format!("{at}.request.content_types"))?,
                        None => types.clone(),
                    };
                    Some(RequestRule {
                        validator,
                        fast,
                        body: q.body.unwrap_or(BodyRule::Required),
                        limits,
                        content_types,
                    })
                }
            };
            let response = match &r.response {
                None => None,
                Some(q) => {
                    let (validator, fast) =
                        route_schema(&q.schema, &raw, &format!("{at}.response.schema"))?;
                    let limits = q.limits.apply(base);
                    check_limits(&limits, &format!("{at}.response.limits"))?;
                    Some(ResponseRule {
                        validator,
                        fast,
                        mode: q.mode,
                        limits,
                    })
                }
            };
            if routes
                .iter()
                .any(|(_, x): &(RouteMatcher, Route)| x.name == r.name)
            {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate route name `{}`", r.name),
                ));
            }
            let mut headers = Vec::new();
            for (j, h) in r.headers.iter().enumerate() {
                let pattern = match &h.pattern {
                    Some(p) => Some(regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                        ConfigError::new(
                            format!("{at}.headers[{j}].pattern"),
                            format!("invalid regex: {e}"),
                        )
                    })?),
                    None => None,
                };
                headers.push(HeaderRule {
                    name: h.name.to_ascii_lowercase(),
                    pattern,
                    required: h.required,
                });
            }
            routes.push((
                matcher,
                Route {
                    name: r.name,
                    request,
                    headers,
                    response,
                },
            ));
        }
        Ok(SchemaConfig {
            audit: portcullis_core::audit::Recorder::new(raw.audit),
            mode: raw.mode,
            stat_prefix: raw.stat_prefix,
            json_suffix: raw.json_suffix,
            max_errors: raw.max_errors.max(1),
            unmatched: raw.unmatched,
            routes: RouteTable::new(routes),
            default_limits: base,
        })
    }
}
