//! The schema decision, in steps because the body arrives after the headers:
//! [`check_head`] (route, required headers, media type), [`check_arrival`] as the body grows,
//! and [`check_body`] (structural scan, then the compiled JSON Schema). Pure functions over
//! plain data.

use crate::config::{BodyRule, ResponseRule, Route, SchemaConfig, Unmatched};
use crate::onepass::Program;
use crate::scan::{scan, scan_error, scan_limits, ScanError};
use portcullis_core::deny::Denial;
use portcullis_core::path;
use serde_json::{json, Value};

portcullis_core::reasons! {
    /// Every reason code the schema filter answers with.
    pub enum SchemaReason for "schema" {
        /// The path cannot be normalised safely.
        InvalidPath = ("invalid_path", 400),
        /// No route matches and `unmatched: deny`.
        RouteNotAllowed = ("route_not_allowed", 403),
        /// A required header is absent.
        MissingHeader = ("missing_header", 400),
        /// A header does not match its pattern.
        InvalidHeader = ("invalid_header", 400),
        /// A body with another media type.
        UnsupportedMediaType = ("unsupported_media_type", 415),
        /// The route requires a body and there is none.
        MissingBody = ("missing_body", 400),
        /// Over `max_body_bytes`.
        BodyTooLarge = ("body_too_large", 413),
        /// The body is not UTF-8.
        InvalidUtf8 = ("invalid_utf8", 400),
        /// The body is not JSON.
        MalformedJson = ("malformed_json", 400),
        /// An unpaired surrogate escape.
        LoneSurrogate = ("lone_surrogate", 400),
        /// A number that does not fit.
        NumberOutOfRange = ("number_out_of_range", 400),
        /// A member name repeated in one object.
        DuplicateKey = ("duplicate_key", 400),
        /// Nesting over `max_depth`.
        TooDeep = ("too_deep", 400),
        /// An array over `max_array_len`.
        ArrayTooLong = ("array_too_long", 400),
        /// A string over `max_string_len`.
        StringTooLong = ("string_too_long", 400),
        /// An object over `max_object_members`.
        TooManyMembers = ("too_many_members", 400),
        /// The body breaks the route's schema.
        SchemaViolation = ("schema_violation", 422),
        /// An enforced response contract was broken.
        ResponseContractViolation = ("response_contract_violation", 502),
    }
}

/// The request head as the schema filter sees it.
#[derive(Clone, Copy)]
pub struct Head<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`.
    pub path: &'a str,
    /// Looks up a request header by lower-case name (only the ones a route names are read).
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
    /// False when the headers ended the stream (no body follows).
    pub has_body: bool,
}

/// What to do after the headers.
#[derive(Debug)]
pub enum HeadOutcome {
    /// Nothing to validate: continue.
    Pass,
    /// Buffer the body, judge it with [`check_arrival`] as it grows, then [`check_body`].
    ValidateBody(Expect),
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

/// What the body of a request is held to, from its head.
#[derive(Debug)]
pub struct Expect {
    /// Route index.
    pub route: usize,
    /// Refuse as soon as the body grows past this.
    pub max_body_bytes: usize,
    /// The refusal for a body of another media type. It waits for the body's first byte: an
    /// empty body is no body, whatever its type (an HTTP/2 client may end the stream with an
    /// empty DATA frame rather than on the headers).
    pub unsupported: Option<Denial>,
}

/// What to do with a request body that has grown to `size` bytes (`end`: it is complete).
#[derive(Debug)]
pub enum Arrival {
    /// More is coming: hold it.
    Wait,
    /// Complete: read it and call [`check_body`].
    Check,
    /// Refuse now.
    Deny(Denial),
}

/// The decision as a body arrives, before its bytes are read. Its length is known only here:
/// a `content-length` header is not read (one host call on every validated request), so a
/// body over the limit is refused as soon as Envoy has buffered more than the limit, whether
/// it was announced or sent chunked.
pub fn check_arrival(expect: &Expect, size: usize, end: bool) -> Arrival {
    if size == 0 {
        return if end { Arrival::Check } else { Arrival::Wait };
    }
    if let Some(d) = &expect.unsupported {
        return Arrival::Deny(d.clone());
    }
    if size > expect.max_body_bytes {
        return Arrival::Deny(too_large());
    }
    if end {
        Arrival::Check
    } else {
        Arrival::Wait
    }
}

/// Checks what can be checked from the head; returns the matched route name too. An HTTP/1
/// request with `content-length: 0` ends on its headers (`has_body` false), as one without a
/// body does.
pub fn check_head(cfg: &SchemaConfig, head: &Head<'_>) -> (Option<String>, HeadOutcome) {
    let normalized = match path::normalize(head.path) {
        Ok(p) => p,
        Err(e) => {
            return (
                None,
                HeadOutcome::Deny(Denial::of(SchemaReason::InvalidPath, e.describe())),
            )
        }
    };
    let Some(m) = cfg.routes.find(head.method, &normalized) else {
        return match cfg.unmatched {
            Unmatched::Allow => (None, HeadOutcome::Pass),
            Unmatched::Deny => (
                None,
                HeadOutcome::Deny(Denial::of(
                    SchemaReason::RouteNotAllowed,
                    "No schema rule covers this method and path.",
                )),
            ),
        };
    };
    let route: &Route = m.route;
    let name = Some(route.name.clone());
    for rule in &route.headers {
        match (head.header)(&rule.name) {
            None if rule.required => {
                let d = Denial::of(
                    SchemaReason::MissingHeader,
                    "A required request header is missing.",
                )
                .with_member("header", json!(rule.name));
                return (name, HeadOutcome::Deny(d));
            }
            Some(v) if rule.pattern.as_ref().is_some_and(|p| !p.is_match(v)) => {
                let d = Denial::of(
                    SchemaReason::InvalidHeader,
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
    if !head.has_body {
        return match req.body {
            BodyRule::Required => (
                name,
                HeadOutcome::Deny(Denial::of(
                    SchemaReason::MissingBody,
                    "This request needs a JSON body.",
                )),
            ),
            BodyRule::Optional => (name, HeadOutcome::Pass),
        };
    }
    let unsupported = (!media_type_ok(cfg, &req.content_types, (head.header)("content-type")))
        .then(|| {
            Denial::of(
                SchemaReason::UnsupportedMediaType,
                "The request body must be JSON.",
            )
            .with_header("accept-post", req.content_types.join(", "))
        });
    (
        name,
        HeadOutcome::ValidateBody(Expect {
            route: m.index,
            max_body_bytes: req.limits.max_body_bytes,
            unsupported,
        }),
    )
}

/// The denial for a body over its limit.
pub fn too_large() -> Denial {
    Denial::of(
        SchemaReason::BodyTooLarge,
        "The request body is larger than this route accepts.",
    )
}

fn scan_denial(e: ScanError) -> Denial {
    let (reason, detail) = match e {
        ScanError::TooLarge => return too_large(),
        ScanError::InvalidUtf8 => (
            SchemaReason::InvalidUtf8,
            "The request body is not valid UTF-8.",
        ),
        ScanError::Malformed => (
            SchemaReason::MalformedJson,
            "The request body is not valid JSON.",
        ),
        ScanError::LoneSurrogate => (
            SchemaReason::LoneSurrogate,
            "The request body contains an unpaired UTF-16 surrogate escape.",
        ),
        ScanError::NumberOutOfRange => (
            SchemaReason::NumberOutOfRange,
            "The request body contains a number that does not fit.",
        ),
        ScanError::DuplicateKey => (
            SchemaReason::DuplicateKey,
            "The request body repeats a member name in one object.",
        ),
        ScanError::TooDeep => (
            SchemaReason::TooDeep,
            "The request body is nested too deeply.",
        ),
        ScanError::ArrayTooLong => (
            SchemaReason::ArrayTooLong,
            "The request body has an array that is too long.",
        ),
        ScanError::StringTooLong => (
            SchemaReason::StringTooLong,
            "The request body has a string that is too long.",
        ),
        ScanError::TooManyMembers => (
            SchemaReason::TooManyMembers,
            "The request body has an object with too many members.",
        ),
    };
    Denial::of(reason, detail)
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
            BodyRule::Required => Err(Denial::of(
                SchemaReason::MissingBody,
                "This request needs a JSON body.",
            )),
            BodyRule::Optional => Ok(()),
        };
    }
    match violations(
        &req.validator,
        req.fast.as_ref(),
        &req.limits,
        body,
        cfg.max_errors,
    ) {
        Ok(()) => Ok(()),
        Err(Problem::Structure(e)) => Err(scan_denial(e)),
        Err(Problem::Schema { errors, total }) => Err(Denial::of(
            SchemaReason::SchemaViolation,
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
///
/// With a one-pass program the scan and the verdict are one walk over the tokenizer; only an
/// invalid body is parsed into a tree, for `jsonschema` to list its errors.
fn violations(
    validator: &jsonschema::Validator,
    fast: Option<&Program>,
    limits: &crate::scan::Limits,
    body: &[u8],
    max_errors: usize,
) -> Result<(), Problem> {
    match fast {
        Some(p) => {
            if body.len() > limits.max_body_bytes {
                return Err(Problem::Structure(ScanError::TooLarge));
            }
            if p.validate(body, scan_limits(limits))
                .map_err(|e| Problem::Structure(scan_error(e)))?
            {
                return Ok(());
            }
        }
        None => scan(body, limits).map_err(Problem::Structure)?,
    }
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
        let mut d = Denial::of(
            SchemaReason::ResponseContractViolation,
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
    match violations(
        &rule.validator,
        rule.fast.as_ref(),
        &rule.limits,
        body,
        cfg.max_errors,
    ) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)] // test code: an unexpected outcome is a failed test
    use super::*;

    fn expect(unsupported: bool) -> Expect {
        Expect {
            route: 0,
            max_body_bytes: 10,
            unsupported: unsupported.then(|| {
                Denial::of(
                    SchemaReason::UnsupportedMediaType,
                    "The request body must be JSON.",
                )
            }),
        }
    }

    fn reason(a: Arrival) -> &'static str {
        match a {
            Arrival::Wait => "wait",
            Arrival::Check => "check",
            Arrival::Deny(d) => d.reason,
        }
    }

    #[test]
    fn a_body_is_judged_by_what_has_arrived() {
        for unsupported in [false, true] {
            let e = expect(unsupported);
            // Nothing yet: wait; nothing at all (an empty final DATA frame): no body, which
            // `check_body` judges by the route's body rule, whatever the declared type.
            assert_eq!(reason(check_arrival(&e, 0, false)), "wait");
            assert_eq!(reason(check_arrival(&e, 0, true)), "check");
            let first = if unsupported {
                "unsupported_media_type"
            } else {
                "wait"
            };
            assert_eq!(reason(check_arrival(&e, 1, false)), first);
            // The type is refused before the length, as a head-time check would.
            let over = if unsupported {
                "unsupported_media_type"
            } else {
                "body_too_large"
            };
            assert_eq!(reason(check_arrival(&e, 11, false)), over);
            assert_eq!(reason(check_arrival(&e, 11, true)), over);
        }
        assert_eq!(reason(check_arrival(&expect(false), 10, true)), "check");
    }

    #[test]
    fn the_head_never_reads_content_length() {
        let cfg = SchemaConfig::from_bytes(
            br#"{"routes": [{"name": "c", "match": {"methods": ["POST"], "template": "/c"},
                 "request": {"schema": true, "limits": {"max_body_bytes": 10}}}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let read = std::cell::RefCell::new(Vec::new());
        let header = |n: &str| {
            read.borrow_mut().push(n.to_string());
            (n == "content-length").then_some("999999")
        };
        let head = Head {
            method: "POST",
            path: "/c",
            header: &header,
            has_body: true,
        };
        let HeadOutcome::ValidateBody(e) = check_head(&cfg, &head).1 else {
            panic!("a body to validate")
        };
        assert_eq!(*read.borrow(), ["content-type"]);
        assert!(
            e.unsupported.is_some(),
            "no content type: refused once a byte arrives"
        );
        assert_eq!(e.max_body_bytes, 10);
    }
}
