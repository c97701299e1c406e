//! Gateway settings (`policies/gateway.yaml`): what Envoy itself must do at the edge before any
//! filter runs — who the client is (remote address, trusted proxies), which request headers never
//! reach the filters or the upstream, how long a client may take to send a request, and how the
//! gateway holds up when the upstream fails or clients pile up (retries, circuit breakers,
//! outlier detection, the connection limit). They are
//! Envoy settings, not filter settings, so `portcullis render` writes them into the HTTP
//! connection manager and the route table; the filters then trust what Envoy established (e.g.
//! the ratelimit filter keys clients by Envoy's `source.address`, never by a header).

use crate::{CliError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The gateway settings file inside a policy directory (optional: defaults apply without it).
pub const GATEWAY_FILE: &str = "gateway.yaml";

/// Request headers removed at the edge by default. Some upstreams (or frameworks in front of
/// them) honour these as routing or method overrides, and some trust client-address headers that
/// Envoy does not use: a client must not be able to send any of them through the gateway.
pub const DEFAULT_STRIPPED_HEADERS: &[&str] = &[
    // Path / URL overrides (IIS URL Rewrite, Symfony, Laravel, some Java stacks).
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-override-url",
    // Method overrides (Rails, Express method-override, Google APIs, Spring HiddenHttpMethod…).
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // Envoy's own record of a rewritten path (sanitised for external clients too; stated here).
    "x-envoy-original-path",
    // Client-address headers Envoy does not use; Envoy rewrites X-Forwarded-For itself.
    "x-real-ip",
    "forwarded",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
];

/// The HTTP connection manager's `local_reply_config` for every listener `portcullis render`
/// writes: Envoy's own local replies (timeouts, oversize bodies, no upstream) in the problem+json
/// shape of the filters' denials, with Envoy's response code details as the reason. The CEL
/// filter selects only Envoy's replies — those always carry code details, a wasm filter's local
/// reply carries none — so a filter's denial stays exactly as the filter wrote it. One line of
/// JSON (which YAML reads as a flow mapping) so it fits any template's indentation.
pub const ENVOY_LOCAL_REPLIES: &str = concat!(
    r#"{"mappers": [{"#,
    r#""filter": {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel", "#,
    r#""typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter", "#,
    r#""expression": "response.code_details != ''"}}}, "#,
    r#""headers_to_add": ["#,
    r#"{"header": {"key": "x-portcullis-reason", "value": "%RESPONSE_CODE_DETAILS%"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}, "#,
    r#"{"header": {"key": "cache-control", "value": "no-store"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}], "#,
    r#""body_format_override": {"content_type": "application/problem+json", "json_format": {"#,
    r#""type": "about:blank", "status": "%RESPONSE_CODE%", "detail": "%LOCAL_REPLY_BODY%", "#,
    r#""reason": "%RESPONSE_CODE_DETAILS%", "filter": "envoy"}}}]}"#
);

/// What Envoy does with a request header whose name contains `_` (a CGI/WSGI upstream would read
/// `x_portcullis_tenant` as `X-Portcullis-Tenant`, slipping past the identity-header stripping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Underscores {
    /// Drop the header and serve the request (default).
    #[default]
    Drop,
    /// Refuse the request (400).
    Reject,
    /// Pass it (only behind something that already drops them).
    Allow,
}

impl Underscores {
    /// Envoy's `headers_with_underscores_action`.
    pub fn envoy(self) -> &'static str {
        match self {
            Underscores::Drop => "DROP_HEADER",
            Underscores::Reject => "REJECT_REQUEST",
            Underscores::Allow => "ALLOW",
        }
    }
}

/// Downstream and upstream time limits, in seconds (0 disables one; see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Time to receive the request headers (`request_headers_timeout`).
    pub request_headers_seconds: u64,
    /// Time to receive the whole request, body included (`request_timeout`): a client that
    /// announces more body than it sends gets 408 after this long.
    pub request_seconds: u64,
    /// A stream with no activity in either direction for this long is reset (`stream_idle_timeout`).
    pub stream_idle_seconds: u64,
    /// An idle downstream connection is closed after this long (`idle_timeout`).
    pub connection_idle_seconds: u64,
    /// Time the upstream has to answer (the route `timeout`).
    pub upstream_seconds: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request_headers_seconds: 10,
            request_seconds: 30,
            stream_idle_seconds: 60,
            connection_idle_seconds: 300,
            upstream_seconds: 15,
        }
    }
}

/// Request-header handling at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Headers {
    /// Names containing `_`.
    pub underscores: Underscores,
    /// Replace the default list of stripped headers (rarely wanted).
    pub strip: Option<Vec<String>>,
    /// Headers stripped in addition to the defaults.
    pub strip_extra: Vec<String>,
    /// Most request headers a request may carry (`max_headers_count`); more get 431.
    pub max_count: u32,
    /// Largest total size of the request headers in KiB (`max_request_headers_kb`); more get 431.
    pub max_request_kb: u32,
}

impl Default for Headers {
    fn default() -> Self {
        Headers {
            underscores: Underscores::default(),
            strip: None,
            strip_extra: Vec::new(),
            max_count: 100,
            max_request_kb: 60,
        }
    }
}

/// Request methods a gateway may replay: RFC 9110 idempotent methods. POST, PATCH and CONNECT
/// are never retried, whatever the policy says.
pub const IDEMPOTENT_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"];

/// Envoy `retry_on` conditions a policy may name (router filter, `x-envoy-retry-on`).
pub const RETRY_CONDITIONS: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "http3-post-connect-failure",
];

/// One `retry_on` entry: an Envoy condition or an upstream status code to retry on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RetryOn {
    /// An upstream response status (`retriable_status_codes`).
    Status(u16),
    /// An Envoy condition such as `connect-failure`.
    Condition(String),
}

/// Upstream retries (Envoy's virtual-host `retry_policy` and the cluster's retry budget).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Retries after the first attempt (`num_retries`); 0 turns retries off.
    pub attempts: u32,
    /// Only requests with one of these methods are retried (`retriable_request_headers` on
    /// `:method`); idempotent methods only.
    pub methods: Vec<String>,
    /// What is retried: Envoy conditions and upstream status codes.
    pub retry_on: Vec<RetryOn>,
    /// Time limit of one attempt in milliseconds (`per_try_timeout`); 0: only the route
    /// timeout bounds the attempts together.
    pub per_try_timeout_ms: u64,
    /// First backoff interval (`retry_back_off.base_interval`); Envoy jitters each wait.
    pub backoff_base_ms: u64,
    /// Longest backoff interval (`retry_back_off.max_interval`).
    pub backoff_max_ms: u64,
    /// Retries in flight may be at most this share of the requests in flight
    /// (`retry_budget.budget_percent`).
    pub budget_percent: u32,
    /// Retries always allowed in flight whatever the budget (`retry_budget.min_retry_concurrency`).
    pub min_retry_concurrency: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 2,
            methods: ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
                .iter()
                .map(|m| (*m).to_string())
                .collect(),
            retry_on: vec![
                RetryOn::Condition("connect-failure".into()),
                RetryOn::Condition("refused-stream".into()),
                RetryOn::Condition("reset".into()),
                RetryOn::Status(503),
            ],
            per_try_timeout_ms: 0,
            backoff_base_ms: 25,
            backoff_max_ms: 250,
            budget_percent: 20,
            min_retry_concurrency: 3,
        }
    }
}

/// Limits on what Envoy sends the upstream cluster at once (`circuit_breakers`); past one,
/// Envoy answers 503 at once instead of queueing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakers {
    /// Connections to the upstream cluster.
    pub max_connections: u32,
    /// Requests waiting for a connection.
    pub max_pending_requests: u32,
    /// Requests in flight.
    pub max_requests: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
        }
    }
}

/// Passive health checking of upstream endpoints (`outlier_detection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// An endpoint is ejected after this many 5xx (or connection failures) in a row; 0 turns
    /// outlier detection off.
    pub consecutive_5xx: u32,
    /// How often ejections are reviewed (`interval`).
    pub interval_seconds: u64,
    /// An ejected endpoint stays out this long, times the number of its ejections.
    pub base_ejection_seconds: u64,
    /// At most this share of the endpoints is ejected at once.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            interval_seconds: 10,
            base_ejection_seconds: 30,
            max_ejection_percent: 50,
        }
    }
}

/// An upstream timeout for the paths under one prefix, instead of `timeouts.upstream_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeout {
    /// Path prefix (`/api/v1/reports`); the longest matching prefix wins.
    pub prefix: String,
    /// Time the upstream has to answer on these paths (0 disables the timeout).
    pub upstream_seconds: u64,
}

/// How the gateway protects itself and the upstream (see the README, "Resilience defaults").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resilience {
    /// Upstream retries.
    pub retries: Retries,
    /// Upstream circuit breakers.
    pub circuit_breakers: CircuitBreakers,
    /// Ejection of failing upstream endpoints.
    pub outlier_detection: OutlierDetection,
    /// Open client connections across the whole Envoy process (the overload manager's
    /// `global_downstream_max_connections`); one more is closed at accept.
    pub max_downstream_connections: u64,
    /// Per-path upstream timeouts.
    pub route_timeouts: Vec<RouteTimeout>,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            retries: Retries::default(),
            circuit_breakers: CircuitBreakers::default(),
            outlier_detection: OutlierDetection::default(),
            max_downstream_connections: 10_000,
            route_timeouts: Vec::new(),
        }
    }
}

/// Milliseconds as an Envoy duration (`"0.025s"`).
fn millis(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

impl Resilience {
    /// Refuses settings Envoy would reject or that would retry what must not be retried.
    fn check(&self) -> Result<()> {
        let err = |m: String| Err(CliError(format!("{GATEWAY_FILE}: resilience.{m}")));
        let r = &self.retries;
        if r.attempts > 10 {
            return err(format!(
                "retries.attempts {} is implausible (at most 10)",
                r.attempts
            ));
        }
        for m in &r.methods {
            if !IDEMPOTENT_METHODS.contains(&m.as_str()) {
                return err(format!(
                    "retries.methods: `{m}` is not an idempotent method (allowed: {})",
                    IDEMPOTENT_METHODS.join(", ")
                ));
            }
        }
        if r.attempts > 0 && (r.methods.is_empty() || r.retry_on.is_empty()) {
            return err("retries: `methods` and `retry_on` must not be empty while attempts > 0 (set attempts: 0 to turn retries off)".into());
        }
        for on in &r.retry_on {
            match on {
                RetryOn::Status(s) if !(400..=599).contains(s) => {
                    return err(format!(
                        "retries.retry_on: status {s} is not an error status (400-599)"
                    ))
                }
                RetryOn::Condition(c) if !RETRY_CONDITIONS.contains(&c.as_str()) => {
                    return err(format!(
                        "retries.retry_on: unknown condition `{c}` (known: {}, or a status code)",
                        RETRY_CONDITIONS.join(", ")
                    ))
                }
                _ => {}
            }
        }
        if r.backoff_base_ms == 0 || r.backoff_max_ms < r.backoff_base_ms {
            return err(format!(
                "retries: backoff_base_ms must be at least 1 and backoff_max_ms at least backoff_base_ms (got {} and {})",
                r.backoff_base_ms, r.backoff_max_ms
            ));
        }
        if !(1..=100).contains(&r.budget_percent) {
            return err(format!(
                "retries.budget_percent {} is not a percentage (1-100)",
                r.budget_percent
            ));
        }
        let cb = &self.circuit_breakers;
        if cb.max_connections == 0 || cb.max_pending_requests == 0 || cb.max_requests == 0 {
            return err("circuit_breakers: every limit must be at least 1".into());
        }
        let od = &self.outlier_detection;
        if od.max_ejection_percent > 100
            || od.interval_seconds == 0
            || od.base_ejection_seconds == 0
        {
            return err("outlier_detection: max_ejection_percent is at most 100; interval_seconds and base_ejection_seconds at least 1".into());
        }
        if self.max_downstream_connections == 0 {
            return err("max_downstream_connections must be at least 1".into());
        }
        let mut seen: Vec<&str> = Vec::new();
        for rt in &self.route_timeouts {
            if !rt.prefix.starts_with('/') {
                return err(format!(
                    "route_timeouts: prefix `{}` must start with `/`",
                    rt.prefix
                ));
            }
            if seen.contains(&rt.prefix.as_str()) {
                return err(format!(
                    "route_timeouts: prefix `{}` given twice",
                    rt.prefix
                ));
            }
            seen.push(&rt.prefix);
        }
        Ok(())
    }

    /// The virtual host's `retry_policy`, or `None` when retries are off. Envoy applies a route
    /// retry policy to every method, so `retriable_request_headers` on `:method` confines it to
    /// the idempotent ones: a POST is never sent twice. A retry goes to another endpoint when
    /// there is one (`previous_hosts`).
    pub fn retry_policy(&self) -> Option<Value> {
        let r = &self.retries;
        if r.attempts == 0 {
            return None;
        }
        let mut conditions: Vec<String> = Vec::new();
        let mut statuses: Vec<u16> = Vec::new();
        for on in &r.retry_on {
            match on {
                RetryOn::Status(s) => statuses.push(*s),
                RetryOn::Condition(c) => conditions.push(c.clone()),
            }
        }
        if !statuses.is_empty() {
            conditions.push("retriable-status-codes".into());
        }
        let methods: Vec<Value> = r
            .methods
            .iter()
            .map(|m| json!({"name": ":method", "string_match": {"exact": m}}))
            .collect();
        let mut policy = json!({
            "retry_on": conditions.join(","),
            "num_retries": r.attempts,
            "retry_back_off": {
                "base_interval": millis(r.backoff_base_ms),
                "max_interval": millis(r.backoff_max_ms),
            },
            "retriable_request_headers": methods,
            "retry_host_predicate": [{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
            }],
            "host_selection_retry_max_attempts": 3,
        });
        if !statuses.is_empty() {
            policy["retriable_status_codes"] = json!(statuses);
        }
        if r.per_try_timeout_ms > 0 {
            policy["per_try_timeout"] = json!(millis(r.per_try_timeout_ms));
        }
        Some(policy)
    }

    /// The upstream cluster's `circuit_breakers`, retry budget included.
    pub fn circuit_breakers(&self) -> Value {
        let cb = &self.circuit_breakers;
        json!({"thresholds": [{
            "priority": "DEFAULT",
            "max_connections": cb.max_connections,
            "max_pending_requests": cb.max_pending_requests,
            "max_requests": cb.max_requests,
            "retry_budget": {
                "budget_percent": {"value": f64::from(self.retries.budget_percent)},
                "min_retry_concurrency": self.retries.min_retry_concurrency,
            },
        }]})
    }

    /// The upstream cluster's `outlier_detection`, or `None` when it is off.
    pub fn outlier_detection(&self) -> Option<Value> {
        let od = &self.outlier_detection;
        (od.consecutive_5xx > 0).then(|| {
            json!({
                "consecutive_5xx": od.consecutive_5xx,
                "interval": format!("{}s", od.interval_seconds),
                "base_ejection_time": format!("{}s", od.base_ejection_seconds),
                "max_ejection_percent": od.max_ejection_percent,
            })
        })
    }

    /// The gateway's routes to `cluster`: one per `route_timeouts` prefix, longest first, then
    /// the catch-all with `default_seconds`.
    pub fn routes(&self, cluster: &str, default_seconds: u64) -> Value {
        let mut overrides: Vec<&RouteTimeout> = self.route_timeouts.iter().collect();
        overrides.sort_by_key(|rt| std::cmp::Reverse(rt.prefix.len()));
        let route = |prefix: &str, seconds: u64| {
            json!({"match": {"prefix": prefix},
                   "route": {"cluster": cluster, "timeout": format!("{seconds}s")}})
        };
        let mut out: Vec<Value> = overrides
            .iter()
            .map(|rt| route(&rt.prefix, rt.upstream_seconds))
            .collect();
        out.push(route("/", default_seconds));
        Value::Array(out)
    }
}

/// Settings `gateway.yaml` leaves to their defaults that decide how the gateway holds up
/// under failure and load, each as `setting: default` (one line for a section left out
/// whole). `raw` is the file's content, `None` when there is no file. `portcullis check`
/// prints these as warnings.
pub fn unset_settings(raw: Option<&Value>) -> Vec<String> {
    let defaults = GatewaySettings::default();
    let empty = json!({});
    let raw = raw.unwrap_or(&empty);
    let mut out = Vec::new();
    let leaf = |out: &mut Vec<String>, path: &str, default: Value| {
        out.push(format!("{path} not set; default {default} applies"));
    };
    for (section, key, default) in [
        (
            "timeouts",
            "upstream_seconds",
            json!(defaults.timeouts.upstream_seconds),
        ),
        ("headers", "max_count", json!(defaults.headers.max_count)),
        (
            "headers",
            "max_request_kb",
            json!(defaults.headers.max_request_kb),
        ),
    ] {
        if raw.get(section).and_then(|s| s.get(key)).is_none() {
            leaf(&mut out, &format!("{section}.{key}"), default);
        }
    }
    let res_defaults = serde_json::to_value(&defaults.resilience).unwrap_or_default();
    let Some(res_defaults) = res_defaults.as_object() else {
        return out;
    };
    let res = raw.get("resilience");
    for (key, default) in res_defaults {
        // An empty override list is no omission: every route has the upstream timeout.
        if key == "route_timeouts" {
            continue;
        }
        match (res.and_then(|r| r.get(key)), default.as_object()) {
            (None, _) => leaf(&mut out, &format!("resilience.{key}"), default.clone()),
            (Some(given), Some(fields)) => {
                for (field, d) in fields {
                    if given.get(field).is_none() {
                        leaf(&mut out, &format!("resilience.{key}.{field}"), d.clone());
                    }
                }
            }
            (Some(_), None) => {}
        }
    }
    out
}

/// `policies/gateway.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Proxies in front of Envoy whose `X-Forwarded-For` entries are trusted
    /// (`xff_num_trusted_hops`). 0: the TCP peer is the client, whatever the headers say.
    pub trusted_hops: u32,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Header handling.
    pub headers: Headers,
    /// Retries, circuit breakers, outlier detection, connection limit, per-path timeouts.
    pub resilience: Resilience,
}

impl GatewaySettings {
    /// Parses and checks a `gateway.yaml` document.
    pub fn from_value(v: serde_json::Value) -> Result<Self> {
        let s: GatewaySettings = serde_path_to_error::deserialize(v).map_err(|e| {
            CliError(format!(
                "{GATEWAY_FILE}: invalid setting at `{}`: {}",
                e.path(),
                e.inner()
            ))
        })?;
        for name in s.stripped_headers() {
            let ok = !name.is_empty()
                && !name.starts_with(':')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(CliError(format!(
                    "{GATEWAY_FILE}: `{name}` is not a header name that can be stripped"
                )));
            }
        }
        if s.headers.max_count == 0 || !(1..=8192).contains(&s.headers.max_request_kb) {
            return Err(CliError(format!(
                "{GATEWAY_FILE}: headers.max_count must be at least 1 and headers.max_request_kb within 1-8192 (Envoy's range)"
            )));
        }
        s.resilience.check()?;
        if s.trusted_hops > 10 {
            return Err(CliError(format!(
                "{GATEWAY_FILE}: trusted_hops {} is implausible (at most 10 proxies in front)",
                s.trusted_hops
            )));
        }
        Ok(s)
    }

    /// Every request header removed before the upstream, lower-cased and deduplicated.
    pub fn stripped_headers(&self) -> Vec<String> {
        let base: Vec<String> = match &self.headers.strip {
            Some(list) => list.clone(),
            None => DEFAULT_STRIPPED_HEADERS
                .iter()
                .map(|s| (*s).to_string())
                .collect(),
        };
        let mut out: Vec<String> = Vec::new();
        for h in base.into_iter().chain(self.headers.strip_extra.clone()) {
            let h = h.to_ascii_lowercase();
            if !out.contains(&h) {
                out.push(h);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_strip_overrides_and_drop_underscores() {
        let s = GatewaySettings::from_value(json!({})).unwrap();
        assert_eq!(s.trusted_hops, 0);
        assert_eq!(s.headers.underscores.envoy(), "DROP_HEADER");
        let h = s.stripped_headers();
        for n in [
            "x-original-url",
            "x-http-method-override",
            "x-real-ip",
            "forwarded",
        ] {
            assert!(h.contains(&n.to_string()), "{n}");
        }
        assert_eq!(s.timeouts.request_seconds, 30);
    }

    #[test]
    fn extra_headers_add_and_bad_names_are_refused() {
        let s = GatewaySettings::from_value(
            json!({"headers": {"strip_extra": ["X-Debug-User", "x-real-ip"]}}),
        )
        .unwrap();
        let h = s.stripped_headers();
        assert!(h.contains(&"x-debug-user".to_string()));
        assert_eq!(h.iter().filter(|n| *n == "x-real-ip").count(), 1);
        let e = GatewaySettings::from_value(json!({"headers": {"strip_extra": [":path"]}}))
            .unwrap_err();
        assert!(e.0.contains(":path"), "{e}");
        let e = GatewaySettings::from_value(json!({"timeouts": {"request": 3}})).unwrap_err();
        assert!(e.0.contains("timeouts"), "{e}");
    }

    #[test]
    fn the_shipped_gateway_yaml_spells_out_every_default() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/gateway.yaml");
        let raw = crate::policy::read_yaml(&path).unwrap();
        assert_eq!(unset_settings(Some(&raw)), Vec::<String>::new());
        assert_eq!(
            GatewaySettings::from_value(raw).unwrap(),
            GatewaySettings::default()
        );
    }

    #[test]
    fn resilience_defaults_retry_only_idempotent_methods_with_a_budget() {
        let s = GatewaySettings::from_value(json!({})).unwrap();
        let r = s.resilience.retry_policy().unwrap();
        assert_eq!(
            r["retry_on"],
            "connect-failure,refused-stream,reset,retriable-status-codes"
        );
        assert_eq!(r["retriable_status_codes"], json!([503]));
        assert_eq!(r["num_retries"], 2);
        assert_eq!(r["retry_back_off"]["base_interval"], "0.025s");
        assert_eq!(r["retry_back_off"]["max_interval"], "0.250s");
        let methods: Vec<&str> = r["retriable_request_headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                assert_eq!(h["name"], ":method");
                h["string_match"]["exact"].as_str().unwrap()
            })
            .collect();
        assert_eq!(methods, ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);
        assert!(r.get("per_try_timeout").is_none());
        let cb = s.resilience.circuit_breakers();
        let t = &cb["thresholds"][0];
        assert_eq!(t["max_requests"], 1024);
        assert_eq!(t["retry_budget"]["budget_percent"]["value"], 20.0);
        assert_eq!(t["retry_budget"]["min_retry_concurrency"], 3);
        let od = s.resilience.outlier_detection().unwrap();
        assert_eq!(od["consecutive_5xx"], 5);
        assert_eq!(od["base_ejection_time"], "30s");
        assert_eq!(s.resilience.max_downstream_connections, 10_000);
        assert_eq!((s.headers.max_count, s.headers.max_request_kb), (100, 60));
    }

    #[test]
    fn non_idempotent_methods_and_unknown_conditions_are_refused() {
        for (doc, needle) in [
            (
                json!({"retries": {"methods": ["GET", "POST"]}}),
                "`POST` is not an idempotent",
            ),
            (json!({"retries": {"methods": ["PATCH"]}}), "PATCH"),
            (json!({"retries": {"retry_on": ["5xxx"]}}), "5xxx"),
            (json!({"retries": {"retry_on": [200]}}), "200"),
            (json!({"retries": {"retry_on": []}}), "must not be empty"),
            (json!({"retries": {"backoff_base_ms": 0}}), "backoff"),
            (
                json!({"retries": {"backoff_base_ms": 500, "backoff_max_ms": 100}}),
                "backoff",
            ),
            (json!({"retries": {"budget_percent": 0}}), "budget_percent"),
            (json!({"circuit_breakers": {"max_requests": 0}}), "circuit"),
            (
                json!({"outlier_detection": {"max_ejection_percent": 101}}),
                "max_ejection_percent",
            ),
            (json!({"max_downstream_connections": 0}), "max_downstream"),
            (
                json!({"route_timeouts": [{"prefix": "api", "upstream_seconds": 3}]}),
                "start with `/`",
            ),
            (json!({"retries": {"attempt": 1}}), "attempt"),
        ] {
            let e = GatewaySettings::from_value(json!({ "resilience": doc })).unwrap_err();
            assert!(e.0.contains(needle), "{doc}: {e}");
        }
        let e =
            GatewaySettings::from_value(json!({"headers": {"max_request_kb": 9000}})).unwrap_err();
        assert!(e.0.contains("max_request_kb"), "{e}");
    }

    #[test]
    fn retries_and_outlier_detection_can_be_turned_off() {
        let s = GatewaySettings::from_value(json!({"resilience": {
            "retries": {"attempts": 0, "methods": [], "retry_on": []},
            "outlier_detection": {"consecutive_5xx": 0}}}))
        .unwrap();
        assert_eq!(s.resilience.retry_policy(), None);
        assert_eq!(s.resilience.outlier_detection(), None);
    }

    #[test]
    fn status_codes_and_conditions_mix_in_retry_on_and_per_try_timeouts_render() {
        let s = GatewaySettings::from_value(json!({"resilience": {"retries": {
            "retry_on": ["gateway-error", 502, 504], "per_try_timeout_ms": 1500,
            "methods": ["GET"]}}}))
        .unwrap();
        let r = s.resilience.retry_policy().unwrap();
        assert_eq!(r["retry_on"], "gateway-error,retriable-status-codes");
        assert_eq!(r["retriable_status_codes"], json!([502, 504]));
        assert_eq!(r["per_try_timeout"], "1.500s");
    }

    #[test]
    fn route_timeouts_render_longest_prefix_first_before_the_catch_all() {
        let s = GatewaySettings::from_value(json!({"resilience": {"route_timeouts": [
            {"prefix": "/api", "upstream_seconds": 5},
            {"prefix": "/api/v1/reports", "upstream_seconds": 60}]}}))
        .unwrap();
        let routes = s.resilience.routes("upstream", 15);
        let got: Vec<(String, String)> = routes
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["match"]["prefix"].as_str().unwrap().to_string(),
                    r["route"]["timeout"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/api/v1/reports".to_string(), "60s".to_string()),
                ("/api".into(), "5s".into()),
                ("/".into(), "15s".into())
            ]
        );
        let e = GatewaySettings::from_value(json!({"resilience": {"route_timeouts": [
            {"prefix": "/a", "upstream_seconds": 5}, {"prefix": "/a", "upstream_seconds": 6}]}}))
        .unwrap_err();
        assert!(e.0.contains("twice"), "{e}");
    }

    #[test]
    fn unset_resilience_settings_are_named_with_their_defaults() {
        let all = unset_settings(None);
        for needle in [
            "timeouts.upstream_seconds not set; default 15 applies",
            "headers.max_count not set; default 100 applies",
            "headers.max_request_kb not set; default 60 applies",
            "resilience.retries not set",
            "resilience.circuit_breakers not set",
            "resilience.outlier_detection not set",
            "resilience.max_downstream_connections not set; default 10000 applies",
        ] {
            assert!(all.iter().any(|w| w.contains(needle)), "{needle}: {all:?}");
        }
        assert!(!all.iter().any(|w| w.contains("route_timeouts")), "{all:?}");
        let some = unset_settings(Some(&json!({
            "timeouts": {"upstream_seconds": 5},
            "headers": {"max_count": 50, "max_request_kb": 32},
            "resilience": {"retries": {"attempts": 1}, "circuit_breakers": {},
                           "outlier_detection": {}, "max_downstream_connections": 5}})));
        assert!(
            some.iter()
                .any(|w| w.starts_with("resilience.retries.backoff_base_ms not set; default 25")),
            "{some:?}"
        );
        assert!(
            !some
                .iter()
                .any(|w| w.starts_with("resilience.retries.attempts")),
            "{some:?}"
        );
        assert!(
            some.iter()
                .any(|w| w.starts_with("resilience.circuit_breakers.max_requests")),
            "{some:?}"
        );
        assert!(
            !some
                .iter()
                .any(|w| w.starts_with("timeouts") || w.starts_with("headers")),
            "{some:?}"
        );
    }
}
