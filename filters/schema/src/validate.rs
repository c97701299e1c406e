//! The schema decision, in two steps because the body arrives after the headers:
//! [`check_head`] (route, required headers, media type, declared length) and [`check_body`]
//! (structural scan, then the compiled JSON Schema). Pure functions over plain data.

use crate::config::{BodyRule, ResponseRule, Route, SchemaConfig, Unmatched};
use crate::scan::{scan, ScanError};
use portcullis_core::deny::Denial;
use portcullis_core::header;
use portcullis_core::path;
use serde_json::{json, Value};

const FILTER: &str = "schema";

/// Every reason code the schema filter can deny with.
pub const REASONS: &[&str] = &[
    "invalid_path",
    "route_not_allowed",
    "missing_header",
    "invalid_header",
    "unsupported_media_type",
    "missing_body",
    "body_too_large",
    "invalid_utf8",
    "malformed_json",
    "lone_surrogate",
    "number_out_of_range",
    "duplicate_key",
    "too_deep",
    "array_too_long",
    "string_too_long",
    "too_many_members",
    "schema_violation",
    "response_contract_violation",
];

/// The request head as the schema filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`.
    pub path: &'a str,
    /// Headers, names lower-cased.
    pub headers: &'a [(String, String)],
    /// False when the headers ended the stream (no body follows).
    pub has_body: bool,
}

/// What to do after the headers.
#[derive(Debug)]
pub enum HeadOutcome {
    /// Nothing to validate: continue.
    Pass,
    /// Buffer the body and call [`check_body`] with this route index.
    ValidateBody {
        /// Route index.
        route: usize,
        /// Refuse as soon as the body grows past this.
        max_body_bytes: usize,
    },
    /// Refuse now.
    Deny(Denial),
}

fn media_type_ok(cfg: &SchemaConfig, allowed: &[String], content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let mt = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    allowed.contains(&mt)
        || (cfg.json_suffix && mt.starts_with("application/") && mt.ends_with("+json"))
}

/// Checks what can be checked from the head; returns the matched route name too.
pub fn check_head(cfg: &SchemaConfig, head: &Head<'_>) -> (Option<String>, HeadOutcome) {
    let normalized = match path::normalize(head.path) {
        Ok(p) => p,
        Err(e) => {
            return (
                None,
                HeadOutcome::Deny(Denial::new(FILTER, 400, "invalid_path", e.describe())),
            )
        }
    };
    let Some(m) = cfg.routes.find(head.method, &normalized) else {
        return match cfg.unmatched {
            Unmatched::Allow => (None, HeadOutcome::Pass),
            Unmatched::Deny => (
                None,
                HeadOutcome::Deny(Denial::new(
                    FILTER,
                    403,
                    "route_not_allowed",
                    "No schema rule covers this method and path.",
                )),
            ),
        };
    };
    let route: &Route = m.route;
    let name = Some(route.name.clone());
    for rule in &route.headers {
        match header(head.headers, &rule.name) {
            None if rule.required => {
                let d = Denial::new(
                    FILTER,
                    400,
                    "missing_header",
                    "A required request header is missing.",
                )
                .with_member("header", json!(rule.name));
                return (name, HeadOutcome::Deny(d));
            }
            Some(v) if rule.pattern.as_ref().is_some_and(|p| !p.is_match(v)) => {
                let d = Denial::new(
                    FILTER,
                    400,
                    "invalid_header",
                    "A request header does not have the required format.",
                )
                .with_member("header", json!(rule.name));
                return (name, HeadOutcome::Deny(d));
            }
            _ => {}
        }
    }
    let Some(req) = &route.request else {
        return (name, HeadOutcome::Pass);
    };
    let declared: Option<usize> =
        header(head.headers, "content-length").and_then(|v| v.trim().parse().ok());
    let has_body = head.has_body && declared != Some(0);
    if !has_body {
        return match req.body {
            BodyRule::Required => (
                name,
                HeadOutcome::Deny(Denial::new(
                    FILTER,
                    400,
                    "missing_body",
                    "This request needs a JSON body.",
                )),
            ),
            BodyRule::Optional => (name, HeadOutcome::Pass),
        };
    }
    if !media_type_ok(
        cfg,
        &req.content_types,
        header(head.headers, "content-type"),
    ) {
        let d = Denial::new(
            FILTER,
            415,
            "unsupported_media_type",
            "The request body must be JSON.",
        )
        .with_header("accept-post", req.content_types.join(", "));
        return (name, HeadOutcome::Deny(d));
    }
    if declared.is_some_and(|n| n > req.limits.max_body_bytes) {
        return (name, HeadOutcome::Deny(too_large()));
    }
    (
        name,
        HeadOutcome::ValidateBody {
            route: m.index,
            max_body_bytes: req.limits.max_body_bytes,
        },
    )
}

/// The denial for a body over its limit.
pub fn too_large() -> Denial {
    Denial::new(
        FILTER,
        413,
        "body_too_large",
        "The request body is larger than this route accepts.",
    )
}

fn scan_denial(e: ScanError) -> Denial {
    let (status, reason, detail) = match e {
        ScanError::TooLarge => return too_large(),
        ScanError::InvalidUtf8 => (400, "invalid_utf8", "The request body is not valid UTF-8."),
        ScanError::Malformed => (400, "malformed_json", "The request body is not valid JSON."),
        ScanError::LoneSurrogate => (
            400,
            "lone_surrogate",
            "The request body contains an unpaired UTF-16 surrogate escape.",
        ),
        ScanError::NumberOutOfRange => (
            400,
            "number_out_of_range",
            "The request body contains a number that does not fit.",
        ),
        ScanError::DuplicateKey => (
            400,
            "duplicate_key",
            "The request body repeats a member name in one object.",
        ),
        ScanError::TooDeep => (400, "too_deep", "The request body is nested too deeply."),
        ScanError::ArrayTooLong => (
            400,
            "array_too_long",
            "The request body has an array that is too long.",
        ),
        ScanError::StringTooLong => (
            400,
            "string_too_long",
            "The request body has a string that is too long.",
        ),
        ScanError::TooManyMembers => (
            400,
            "too_many_members",
            "The request body has an object with too many members.",
        ),
    };
    Denial::new(FILTER, status, reason, detail)
}

/// Validates a complete body for the route at `route` (index from [`check_head`]).
///
/// Errors list JSON pointers and keywords only, never the offending values (they may be
/// personal data or secrets), capped at `max_errors`.
pub fn check_body(cfg: &SchemaConfig, route: usize, body: &[u8]) -> Result<(), Denial> {
    let Some(req) = cfg.routes.get(route).and_then(|r| r.request.as_ref()) else {
        return Ok(());
    };
    if body.is_empty() {
        return match req.body {
            BodyRule::Required => Err(Denial::new(
                FILTER,
                400,
                "missing_body",
                "This request needs a JSON body.",
            )),
            BodyRule::Optional => Ok(()),
        };
    }
    match violations(&req.validator, &req.limits, body, cfg.max_errors) {
        Ok(()) => Ok(()),
        Err(Problem::Structure(e)) => Err(scan_denial(e)),
        Err(Problem::Schema { errors, total }) => Err(Denial::new(
            FILTER,
            422,
            "schema_violation",
            "The request body does not match the schema for this route.",
        )
        .with_member("errors", Value::Array(errors))
        .with_member("error_count", json!(total))),
    }
}

/// Why a JSON document failed: its structure, or the schema (pointers and keywords only).
enum Problem {
    Structure(ScanError),
    Schema { errors: Vec<Value>, total: usize },
}

/// Structural scan, then the schema; the one validation path for requests and responses.
fn violations(
    validator: &jsonschema::Validator,
    limits: &crate::scan::Limits,
    body: &[u8],
    max_errors: usize,
) -> Result<(), Problem> {
    scan(body, limits).map_err(Problem::Structure)?;
    // The scan guarantees syntax and depth, so this parse cannot fail or recurse too far; treat
    // a failure as malformed anyway rather than trusting that.
    let instance: Value =
        serde_json::from_slice(body).map_err(|_| Problem::Structure(ScanError::Malformed))?;
    // Fast path: `is_valid` short-circuits and builds no error values.
    if validator.is_valid(&instance) {
        return Ok(());
    }
    let mut errors = Vec::new();
    let mut total = 0usize;
    for e in validator.iter_errors(&instance) {
        total += 1;
        if errors.len() < max_errors {
            errors.push(
                json!({"pointer": e.instance_path().to_string(), "keyword": e.kind().keyword()}),
            );
        }
    }
    if total == 0 {
        Ok(())
    } else {
        Err(Problem::Schema { errors, total })
    }
}

/// The response contract of a route, by name.
pub fn response_rule<'c>(cfg: &'c SchemaConfig, route: &str) -> Option<&'c ResponseRule> {
    cfg.routes
        .iter()
        .find(|(_, r)| r.name == route)
        .and_then(|(_, r)| r.response.as_ref())
}

/// Checks a complete 2xx response body against its route's contract. The denial (502) is what
/// an enforcing gateway sends instead; it names pointers and keywords, never values.
pub fn check_response(
    cfg: &SchemaConfig,
    rule: &ResponseRule,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), Denial> {
    let violation = |members: Vec<(&'static str, Value)>| {
        let mut d = Denial::new(
            FILTER,
            502,
            "response_contract_violation",
            "The upstream response does not match the contract for this route.",
        );
        for (k, v) in members {
            d = d.with_member(k, v);
        }
        d
    };
    let json_type = content_type.is_some_and(|ct| {
        let mt = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        mt == "application/json" || (mt.starts_with("application/") && mt.ends_with("+json"))
    });
    if !json_type {
        return Err(violation(vec![(
            "errors",
            json!([{"pointer": "", "keyword": "contentType"}]),
        )]));
    }
    match violations(&rule.validator, &rule.limits, body, cfg.max_errors) {
        Ok(()) => Ok(()),
        Err(Problem::Structure(_)) => Err(violation(vec![(
            "errors",
            json!([{"pointer": "", "keyword": "json"}]),
        )])),
        Err(Problem::Schema { errors, total }) => Err(violation(vec![
            ("errors", Value::Array(errors)),
            ("error_count", json!(total)),
        ])),
    }
}
