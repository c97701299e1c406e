//! Gateway settings (`policies/gateway.yaml`): what Envoy itself must do at the edge before any
//! filter runs — who the client is (remote address, trusted proxies), which request headers never
//! reach the filters or the upstream, and how long a client may take to send a request. They are
//! Envoy settings, not filter settings, so `portcullis render` writes them into the HTTP
//! connection manager and the route table; the filters then trust what Envoy established (e.g.
//! the ratelimit filter keys clients by Envoy's `source.address`, never by a header).

use crate::{CliError, Result};
use serde::Deserialize;

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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Headers {
    /// Names containing `_`.
    pub underscores: Underscores,
    /// Replace the default list of stripped headers (rarely wanted).
    pub strip: Option<Vec<String>>,
    /// Headers stripped in addition to the defaults.
    pub strip_extra: Vec<String>,
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
}
