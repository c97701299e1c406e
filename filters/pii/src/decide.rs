//! Decisions of the pii filter as values: which route applies, which headers change, whether
//! a body is masked, passed or refused, and the masked body itself. The proxy-wasm adapter
//! only reads headers and bodies and applies these.

use crate::codec::{self, Coding, DecodeError};
use crate::config::{BinaryPolicy, OnUnmaskable, PiiConfig, Route};
use crate::json;
use crate::mask::{self, Caller, Report};
use portcullis_core::deny::Denial;

/// Stable reason codes this filter answers with.
pub const REASONS: &[&str] = &["unmaskable_body"];

/// Why a body could not be masked (the `cause` member of the problem+json body and the
/// metric name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Larger than the route's `max_body_bytes`.
    TooLarge,
    /// A content coding the filter cannot decode.
    UnsupportedEncoding,
    /// Decompressed size or ratio over the caps.
    DecompressionLimit,
    /// Invalid compressed data.
    CorruptEncoding,
    /// Declared JSON that does not parse (or nests too deep).
    InvalidJson,
    /// A binary body on a route with `binary: block`.
    Binary,
    /// A `tokenize` rule and no key for the caller's tenant.
    NoTokenKey,
}

impl Cause {
    /// Every cause (for metrics).
    pub const ALL: [Cause; 7] = [
        Cause::TooLarge,
        Cause::UnsupportedEncoding,
        Cause::DecompressionLimit,
        Cause::CorruptEncoding,
        Cause::InvalidJson,
        Cause::Binary,
        Cause::NoTokenKey,
    ];

    /// Name in metrics and the problem body.
    pub fn name(self) -> &'static str {
        match self {
            Cause::TooLarge => "too_large",
            Cause::UnsupportedEncoding => "unsupported_encoding",
            Cause::DecompressionLimit => "decompression_limit",
            Cause::CorruptEncoding => "corrupt_encoding",
            Cause::InvalidJson => "invalid_json",
            Cause::Binary => "binary",
            Cause::NoTokenKey => "no_token_key",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Cause::TooLarge => "the body is larger than the masking limit of this route",
            Cause::UnsupportedEncoding => {
                "the body uses a content coding the masking filter cannot read"
            }
            Cause::DecompressionLimit => "the decompressed body exceeds the size or ratio limit",
            Cause::CorruptEncoding => "the compressed body is not valid",
            Cause::InvalidJson => "the body is declared as JSON but is not valid JSON",
            Cause::Binary => "binary bodies are not allowed on this route",
            Cause::NoTokenKey => "no tokenization key is configured for this tenant",
        }
    }

    /// The refusal: 502 for a response (the upstream sent something unmaskable), 413 or 422
    /// for a request body on an egress route.
    pub fn denial(self, response: bool) -> Denial {
        let status = match (response, self) {
            (true, _) => 502,
            (false, Cause::TooLarge) => 413,
            (false, _) => 422,
        };
        Denial::new("pii", status, "unmaskable_body", self.detail())
            .with_member("cause", serde_json::Value::from(self.name()))
    }
}

/// The route for a request, if one masks anything.
pub fn route_for<'c>(cfg: &'c PiiConfig, method: &str, path: &str) -> Option<(usize, &'c Route)> {
    let normalized = portcullis_core::path::normalize(path).ok()?;
    let index = cfg.routes.find(method, &normalized)?.index;
    cfg.routes.get(index).map(|r| (index, r))
}

/// A header change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replace (or add) a header.
    Set(&'static str, &'static str),
    /// Remove a header.
    Remove(&'static str),
}

/// Request header changes on a route: ask the upstream for an uncompressed, whole response
/// (a byte range of a masked document cannot be masked), and drop the length of a request
/// body that will change.
pub fn request_edits(route: &Route, has_body: bool) -> Vec<HeaderEdit> {
    let mut e = Vec::new();
    if route.direction.response() {
        e.push(HeaderEdit::Set("accept-encoding", "identity"));
        e.push(HeaderEdit::Remove("range"));
        e.push(HeaderEdit::Remove("if-range"));
    }
    if route.direction.request() && has_body {
        e.push(HeaderEdit::Remove("content-length"));
    }
    e
}

/// How a body will be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON (`application/json`, `*/*+json`): field rules and detectors.
    Json,
    /// Text (`text/*`, CSV, XML, NDJSON, form data): detectors.
    Text,
    /// Anything else.
    Binary,
    /// No content type: JSON if it parses, else text if it is UTF-8, else binary.
    Sniff,
}

/// Classifies a `Content-Type`.
pub fn kind_of(content_type: Option<&str>) -> Kind {
    let Some(ct) = content_type else {
        return Kind::Sniff;
    };
    let mt = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mt.is_empty() {
        return Kind::Sniff;
    }
    if mt == "application/json" || mt.ends_with("+json") {
        Kind::Json
    } else if mt.starts_with("text/")
        || matches!(
            mt.as_str(),
            "application/x-ndjson"
                | "application/ndjson"
                | "application/jsonl"
                | "application/xml"
                | "application/csv"
                | "application/x-www-form-urlencoded"
                | "application/javascript"
        )
        || mt.ends_with("+xml")
    {
        Kind::Text
    } else {
        Kind::Binary
    }
}

/// What to do with a body, decided from the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPlan {
    /// Leave it alone (no body, HEAD, 204/304, binary on a `binary: pass` route).
    Pass,
    /// Buffer it, decode `codings`, mask as `kind`.
    Mask {
        /// How to read it.
        kind: Kind,
        /// Codings to undo.
        codings: Vec<Coding>,
    },
    /// Refuse at once (unknown coding, binary on a `binary: block` route).
    Refuse(Cause),
}

/// Plans a response body from its headers. `method` is the request method.
pub fn plan_response(
    route: &Route,
    method: &str,
    status: u16,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    end_of_stream: bool,
) -> BodyPlan {
    // No body to mask: HEAD answers, 204, 304 and 1xx carry none by definition.
    if !route.direction.response()
        || end_of_stream
        || method == "HEAD"
        || status == 204
        || status == 304
        || status < 200
    {
        return BodyPlan::Pass;
    }
    plan_body(route, content_type, content_encoding)
}

/// Plans a request body on an egress route.
pub fn plan_request(
    route: &Route,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    end_of_stream: bool,
) -> BodyPlan {
    if !route.direction.request() || end_of_stream {
        return BodyPlan::Pass;
    }
    plan_body(route, content_type, content_encoding)
}

fn plan_body(
    route: &Route,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> BodyPlan {
    let kind = kind_of(content_type);
    if kind == Kind::Binary {
        return match route.binary {
            BinaryPolicy::Pass => BodyPlan::Pass,
            BinaryPolicy::Block => BodyPlan::Refuse(Cause::Binary),
        };
    }
    match codec::parse_codings(content_encoding) {
        Ok(codings) => BodyPlan::Mask { kind, codings },
        Err(_) => BodyPlan::Refuse(Cause::UnsupportedEncoding),
    }
}

/// Header changes when a response or request body will be replaced: its length, digests and
/// validators no longer describe it, and it is sent decoded.
pub fn body_edits(plan: &BodyPlan, response: bool) -> Vec<HeaderEdit> {
    let BodyPlan::Mask { codings, .. } = plan else {
        return Vec::new();
    };
    let mut e = vec![
        HeaderEdit::Remove("content-length"),
        HeaderEdit::Remove("content-md5"),
        HeaderEdit::Remove("digest"),
        HeaderEdit::Remove("content-digest"),
        HeaderEdit::Remove("repr-digest"),
    ];
    if response {
        e.push(HeaderEdit::Remove("etag"));
        e.push(HeaderEdit::Set("accept-ranges", "none"));
    }
    if !codings.is_empty() {
        e.push(HeaderEdit::Remove("content-encoding"));
    }
    e
}

/// The masked body (`None`: unchanged) and what was done.
#[derive(Debug, Clone)]
pub struct Masked {
    /// Replacement body, when it changed (or was decoded).
    pub body: Option<Vec<u8>>,
    /// Counts and pointers.
    pub report: Report,
}

/// Decodes and masks a complete body. `shadow` computes the report and leaves the body exactly
/// as it was (in shadow mode the adapter changes no header either).
pub fn mask_body(
    cfg: &PiiConfig,
    route: &Route,
    kind: Kind,
    codings: &[Coding],
    caller: Caller<'_>,
    raw: &[u8],
    shadow: bool,
) -> Result<Masked, Cause> {
    let Some(profile) = cfg.profiles.get(route.profile) else {
        return Err(Cause::InvalidJson);
    };
    let decoded;
    let body: &[u8] = if codings.is_empty() {
        raw
    } else {
        decoded = codec::decode(codings, raw, cfg.max_decompressed_bytes, cfg.max_ratio).map_err(
            |e| match e {
                DecodeError::Unsupported => Cause::UnsupportedEncoding,
                DecodeError::TooLarge => Cause::DecompressionLimit,
                DecodeError::Corrupt => Cause::CorruptEncoding,
            },
        )?;
        &decoded
    };
    let as_json = match kind {
        Kind::Json => Some(json::parse(body).map_err(|_| Cause::InvalidJson)?),
        Kind::Sniff => json::parse(body).ok(),
        Kind::Text | Kind::Binary => None,
    };
    let unchanged = || (!codings.is_empty()).then(|| body.to_vec());
    if let Some(mut doc) = as_json {
        let report =
            mask::mask_json(cfg, profile, caller, &mut doc).map_err(|_| Cause::NoTokenKey)?;
        let out = if shadow {
            None
        } else if report.total() == 0 {
            unchanged()
        } else {
            Some(doc.to_bytes())
        };
        return Ok(Masked { body: out, report });
    }
    if kind == Kind::Sniff && std::str::from_utf8(body).is_err() {
        return match route.binary {
            BinaryPolicy::Pass => Ok(Masked {
                body: unchanged(),
                report: Report::default(),
            }),
            BinaryPolicy::Block => Err(Cause::Binary),
        };
    }
    let (out, report) =
        mask::mask_text(cfg, profile, caller, body).map_err(|_| Cause::NoTokenKey)?;
    let out = if shadow { None } else { out.or_else(unchanged) };
    Ok(Masked { body: out, report })
}

/// What the adapter does with a body it could not mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmaskable {
    /// Refuse with this denial.
    Block(Denial),
    /// Let it through unmasked (route says `on_unmaskable: pass`).
    Pass,
}

/// Applies the route's `on_unmaskable` policy to a cause.
pub fn unmaskable(route: &Route, cause: Cause, response: bool) -> Unmaskable {
    // A missing key is a configuration fault, and passing would leak what a rule asked to
    // tokenize: refuse whatever the route says.
    match (route.on_unmaskable, cause) {
        (OnUnmaskable::Pass, c) if c != Cause::NoTokenKey => Unmaskable::Pass,
        _ => Unmaskable::Block(cause.denial(response)),
    }
}
