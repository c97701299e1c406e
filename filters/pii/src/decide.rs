//! Decisions of the pii filter as values: which route applies, which headers change, whether
//! a body is masked, passed or refused, and the masked body itself. The proxy-wasm adapter
//! only reads headers and bodies and applies these.

use crate::action::TokenKey;
use crate::charset;
use crate::codec::{self, Coding, DecodeError};
use crate::config::{BinaryPolicy, OnUnmaskable, PiiConfig, Profile, Route};
use crate::mask::{self, Caller, HeaderOutcome, Report};
use crate::stream::{self, StreamError};
use portcullis_core::deny::{Denial, Reason};
use portcullis_core::headers::HeaderMap;

portcullis_core::reasons! {
    /// Every reason code the pii filter answers with (the `cause` member says why).
    pub enum PiiReason for "pii" {
        /// A body that cannot be masked: 502 for a response, 413 or 422 for an egress request.
        UnmaskableBody = ("unmaskable_body", 502),
    }
}

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
    /// The masked (or decoded) body is larger than `max_output_bytes`, the largest body the
    /// filter may hand back to Envoy.
    OutputTooLarge,
    /// A text or JSON body in a charset the filter cannot decode (or write the masked text
    /// back in), or declared with two different charsets.
    UnsupportedCharset,
}

impl Cause {
    /// Every cause (for metrics).
    pub const ALL: [Cause; 9] = [
        Cause::TooLarge,
        Cause::UnsupportedEncoding,
        Cause::DecompressionLimit,
        Cause::CorruptEncoding,
        Cause::InvalidJson,
        Cause::Binary,
        Cause::NoTokenKey,
        Cause::OutputTooLarge,
        Cause::UnsupportedCharset,
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
            Cause::OutputTooLarge => "output_too_large",
            Cause::UnsupportedCharset => "unsupported_charset",
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
            Cause::OutputTooLarge => {
                "the masked body would exceed the largest body the gateway may write"
            }
            Cause::UnsupportedCharset => {
                "the body's charset is unknown or ambiguous, so it cannot be read to be masked"
            }
        }
    }

    /// The refusal: 502 for a response (the upstream sent something unmaskable), 413 or 422
    /// for a request body on an egress route.
    pub fn denial(self, response: bool) -> Denial {
        let status = match (response, self) {
            (true, _) => 502,
            (false, Cause::TooLarge | Cause::OutputTooLarge) => 413,
            (false, _) => 422,
        };
        Denial::new(
            PiiReason::FILTER,
            status,
            PiiReason::UnmaskableBody.code(),
            self.detail(),
        )
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

impl HeaderEdit {
    /// Whether the edit changes a message whose whole header map is `headers` (read in the
    /// same callback, so nothing else changed it since). Removing a header the message does not
    /// carry is a host call for nothing (0.2–0.3 µs in Envoy), and a masked response alone asks
    /// for up to seven removals, most of them of headers few upstreams send. An empty map is a read the host refused, never a real message
    /// (Envoy always holds the pseudo-headers): every removal is then kept, so a failed read can
    /// never leave a stale length or digest on a body that changed.
    pub fn changes(&self, headers: &HeaderMap) -> bool {
        match self {
            HeaderEdit::Set(..) => true,
            HeaderEdit::Remove(name) => headers.is_empty() || headers.contains(name),
        }
    }
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

/// Response headers never inspected: framing and content description the gateway itself
/// relies on, dates, caching validators, tracing ids, and Envoy's and Portcullis' own. Every
/// other response header — `Location`, `Content-Disposition`, `Set-Cookie`, `Link`, custom and
/// debug headers — goes through the profile's header rules and detectors.
pub const EXEMPT_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "trailer",
    "upgrade",
    "date",
    "age",
    "expires",
    "last-modified",
    "retry-after",
    "cache-control",
    "pragma",
    "vary",
    "etag",
    "accept-ranges",
    "content-range",
    "strict-transport-security",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// Request headers never inspected on egress routes: framing, the target (`:authority`,
/// `host`; `:path` is inspected), the credentials the sync presents to the external service
/// (masking them would only break the call), content negotiation and tracing ids.
pub const EXEMPT_REQUEST_HEADERS: &[&str] = &[
    ":method",
    ":scheme",
    ":authority",
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "authorization",
    "proxy-authorization",
    "cookie",
    "accept",
    "accept-encoding",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// Whether a header (lower-case name) is inspected on this direction.
pub fn inspects_header(cfg: &PiiConfig, name: &str, response: bool) -> bool {
    let exempt = if response {
        EXEMPT_RESPONSE_HEADERS
    } else {
        EXEMPT_REQUEST_HEADERS
    };
    // Pseudo-headers carry no personal data except the request path (`:path`, with its query).
    let pseudo = name.starts_with(':') && (response || name != ":path");
    !(pseudo
        || exempt.contains(&name)
        || name.starts_with("x-envoy-")
        || name.starts_with("x-portcullis-")
        || cfg.exempt_headers.iter().any(|h| h == name))
}

/// Masked headers: every value of each header to replace, in order (an empty list removes
/// the header), and what was masked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMasking {
    /// (name, all of its new values) for each header that changed.
    pub replace: Vec<(String, Vec<String>)>,
    /// Counts and locations (`/header:<name>`).
    pub report: Report,
}

/// Masks the headers of a message on a route (names in lower case; every copy of a repeated
/// header is seen). Shadow mode is the caller's: apply nothing, count the report.
pub fn mask_headers(
    cfg: &PiiConfig,
    route: &Route,
    caller: Caller<'_>,
    headers: &HeaderMap,
    response: bool,
) -> Result<HeaderMasking, Cause> {
    let applies = if response {
        route.direction.response()
    } else {
        route.direction.request()
    };
    let Some(profile) = cfg.profiles.get(route.profile) else {
        return Ok(HeaderMasking::default());
    };
    if !applies || (profile.detectors.is_empty() && profile.header_rules.is_empty()) {
        return Ok(HeaderMasking::default());
    }
    let inspected: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| inspects_header(cfg, k, response))
        .collect();
    let (outcomes, report) =
        mask::mask_headers(cfg, profile, caller, &inspected).map_err(|_| Cause::NoTokenKey)?;
    let mut replace: Vec<(String, Vec<String>)> = Vec::new();
    for ((name, _), outcome) in inspected.iter().zip(&outcomes) {
        if *outcome == HeaderOutcome::Keep || replace.iter().any(|(n, _)| n == name) {
            continue;
        }
        // Every value of a changed header, in order, each masked or kept.
        let values = inspected
            .iter()
            .zip(&outcomes)
            .filter(|((n, _), _)| n == name)
            .filter_map(|((_, v), o)| match o {
                HeaderOutcome::Keep => Some((*v).to_string()),
                HeaderOutcome::Replace(m) => Some(m.clone()),
                HeaderOutcome::Remove => None,
            })
            .collect();
        replace.push(((*name).to_string(), values));
    }
    Ok(HeaderMasking { replace, report })
}

/// How a body will be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON (`application/json`, `*/*+json`): field rules and detectors.
    Json,
    /// Text (`text/*`, CSV, XML, NDJSON, YAML, form data): detectors — or, when the text is a
    /// JSON object or array, read as JSON (a client may well parse it).
    Text,
    /// Anything else.
    Binary,
    /// No type, an unparseable one, or a list naming several kinds: JSON if it parses, else
    /// text if it decodes, else binary.
    Sniff,
}

/// What a list of `Content-Type` values declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// How to read the body.
    pub kind: Kind,
    /// The declared charset, resolved.
    pub charset: Option<charset::Declared>,
}

/// Splits at `sep` outside quoted strings (a `\` escapes inside quotes).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(s.get(start..i).unwrap_or(""));
            start = i + c.len_utf8();
        }
    }
    out.push(s.get(start..).unwrap_or(""));
    out
}

/// The kind one media type (`type/subtype`, lower case) is read as; `None` when it is not a
/// media type at all.
fn kind_of_media_type(mt: &str) -> Option<Kind> {
    let (ty, sub) = mt.split_once('/')?;
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if !token(ty) || !token(sub) {
        return None;
    }
    Some(
        if sub == "json" || sub.ends_with("+json") || sub == "x-json" {
            Kind::Json
        } else if ty == "text"
            || sub.ends_with("+xml")
            || matches!(
                sub,
                "xml"
                    | "x-ndjson"
                    | "ndjson"
                    | "jsonl"
                    | "x-jsonlines"
                    | "json-seq"
                    | "csv"
                    | "x-www-form-urlencoded"
                    | "javascript"
                    | "x-javascript"
                    | "ecmascript"
                    | "yaml"
                    | "x-yaml"
                    | "graphql"
                    | "sql"
            )
        {
            Kind::Text
        } else {
            Kind::Binary
        },
    )
}

/// Classifies every `Content-Type` value of a message: a header sent twice, or one value
/// listing several types, is read as every type it names. One kind throughout is that kind
/// (JSON and text together read as text that may be JSON); anything mixed with binary or
/// unparseable is sniffed, never passed as binary. A charset the filter cannot decode, or two
/// different ones, is refused.
pub fn classify(values: &[&str]) -> Result<Declared, Cause> {
    let mut kinds = Vec::new();
    let mut charset: Option<charset::Declared> = None;
    for value in values {
        for item in split_unquoted(value, ',') {
            let mut parts = split_unquoted(item, ';').into_iter();
            let mt = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if mt.is_empty() {
                continue;
            }
            kinds.push(kind_of_media_type(&mt));
            for param in parts {
                let Some((name, v)) = param.split_once('=') else {
                    continue;
                };
                if !name.trim().eq_ignore_ascii_case("charset") {
                    continue;
                }
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .unwrap_or(v)
                    .replace('\\', "");
                let resolved = charset::resolve(&v).ok_or(Cause::UnsupportedCharset)?;
                if charset.is_some_and(|c| c != resolved) {
                    return Err(Cause::UnsupportedCharset);
                }
                charset = Some(resolved);
            }
        }
    }
    let all = |k: Kind| !kinds.is_empty() && kinds.iter().all(|x| *x == Some(k));
    let kind = if all(Kind::Json) {
        Kind::Json
    } else if !kinds.is_empty()
        && kinds
            .iter()
            .all(|x| matches!(x, Some(Kind::Json | Kind::Text)))
    {
        Kind::Text
    } else if all(Kind::Binary) {
        Kind::Binary
    } else {
        Kind::Sniff
    };
    Ok(Declared { kind, charset })
}

/// A body to buffer and mask: how to read it and what to undo first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// How to read it.
    pub kind: Kind,
    /// Its declared charset.
    pub charset: Option<charset::Declared>,
    /// Content codings to undo, in the order they were applied.
    pub codings: Vec<Coding>,
}

impl Job {
    /// A body of `kind`, no charset declared, no coding.
    pub fn plain(kind: Kind) -> Self {
        Job {
            kind,
            charset: None,
            codings: Vec::new(),
        }
    }
}

/// What to do with a body, decided from the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPlan {
    /// Leave it alone (no body, HEAD, 204/304, binary on a `binary: pass` route).
    Pass,
    /// Buffer it, decode, mask.
    Mask(Job),
    /// Refuse at once (unknown coding or charset, binary, declared too large).
    Refuse(Cause),
}

/// Every value of header `name` (lower case) in a list with lower-case names, in order.
fn values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .collect()
}

/// `Content-Length` when every copy of it states the same number; `None` otherwise (absent,
/// unparseable or conflicting lengths are left to the body callbacks to measure).
fn content_length(headers: &HeaderMap) -> Option<usize> {
    let mut found = None;
    for v in values(headers, "content-length") {
        for part in v.split(',') {
            let n: usize = part.trim().parse().ok()?;
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    found
}

/// Plans a response body from its headers (names in lower case; every copy of a repeated
/// header is seen). `method` is the request method.
pub fn plan_response(
    route: &Route,
    method: &str,
    status: u16,
    headers: &HeaderMap,
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
    plan_body(route, headers)
}

/// Plans a request body on an egress route (headers as for [`plan_response`]).
pub fn plan_request(route: &Route, headers: &HeaderMap, end_of_stream: bool) -> BodyPlan {
    if !route.direction.request() || end_of_stream {
        return BodyPlan::Pass;
    }
    plan_body(route, headers)
}

fn plan_body(route: &Route, headers: &HeaderMap) -> BodyPlan {
    let declared = match classify(&values(headers, "content-type")) {
        Ok(d) => d,
        Err(cause) => return BodyPlan::Refuse(cause),
    };
    if declared.kind == Kind::Binary {
        return match route.binary {
            BinaryPolicy::Pass => BodyPlan::Pass,
            BinaryPolicy::Block => BodyPlan::Refuse(Cause::Binary),
        };
    }
    let encoding = values(headers, "content-encoding").join(",");
    let codings = match codec::parse_codings(Some(&encoding)) {
        Ok(c) => c,
        Err(_) => return BodyPlan::Refuse(Cause::UnsupportedEncoding),
    };
    // A declared length over the cap is refused before a byte is buffered.
    if content_length(headers).is_some_and(|n| n > route.max_body_bytes) {
        return BodyPlan::Refuse(Cause::TooLarge);
    }
    BodyPlan::Mask(Job {
        kind: declared.kind,
        charset: declared.charset,
        codings,
    })
}

/// Whether the response must be held by the response-hold filter until this one is done:
/// only when the body may still be refused after its headers have gone on. On a route that
/// passes unmaskable bodies nothing is refused, unless a coding was undone (the coding header
/// is already gone) or the profile tokenizes and the caller's tenant has no key; such a
/// response then streams instead of meeting the hold's buffer limit.
pub fn needs_hold(cfg: &PiiConfig, route: &Route, plan: &BodyPlan, key: Option<&TokenKey>) -> bool {
    let BodyPlan::Mask(Job { codings, .. }) = plan else {
        return false;
    };
    let tokenizes = cfg.profiles.get(route.profile).is_some_and(|p| {
        p.rules
            .iter()
            .filter_map(|&ri| cfg.rules.get(ri))
            .any(|r| matches!(r.action, crate::action::Action::Tokenize { .. }))
    });
    route.on_unmaskable == OnUnmaskable::Block
        || !codings.is_empty()
        || (tokenizes && key.is_none())
}

/// Header changes when a response or request body will be replaced: its length, digests and
/// validators no longer describe it, and it is sent decoded.
pub fn body_edits(plan: &BodyPlan, response: bool) -> Vec<HeaderEdit> {
    let BodyPlan::Mask(Job { codings, .. }) = plan else {
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
    job: &Job,
    caller: Caller<'_>,
    raw: &[u8],
    shadow: bool,
) -> Result<Masked, Cause> {
    let Some(profile) = cfg.profiles.get(route.profile) else {
        return Err(Cause::InvalidJson);
    };
    let decoded;
    let body: &[u8] = if job.codings.is_empty() {
        raw
    } else {
        decoded = codec::decode(&job.codings, raw, cfg.max_decompressed_bytes, cfg.max_ratio)
            .map_err(|e| match e {
                DecodeError::Unsupported => Cause::UnsupportedEncoding,
                DecodeError::TooLarge => Cause::DecompressionLimit,
                DecodeError::Corrupt => Cause::CorruptEncoding,
            })?;
        &decoded
    };
    let guess = if job.kind == Kind::Text {
        charset::Guess::Text
    } else {
        charset::Guess::Json
    };
    let text = charset::decode(body, job.charset, guess);
    // JSON is masked in one pass over its text, copying what no rule touches (`stream`).
    let json_text = std::str::from_utf8(&text.utf8);
    let as_json = match (job.kind, json_text) {
        (Kind::Binary, _) => None,
        (Kind::Json, Err(_)) => return Err(Cause::InvalidJson),
        (Kind::Json, Ok(s)) => Some((s, stream_json(cfg, profile, caller, s)?)),
        // Text that is a JSON object or array is read as JSON too: a client may parse it, and
        // JSON escapes (`\u0040`) would hide what the detectors look for in the raw text.
        (Kind::Text, Ok(s))
            if s.trim_start_matches([' ', '\t', '\n', '\r'])
                .starts_with(['{', '[']) =>
        {
            json_or_text(cfg, profile, caller, s)?
        }
        (Kind::Sniff, Ok(s)) => json_or_text(cfg, profile, caller, s)?,
        (Kind::Text | Kind::Sniff, _) => None,
    };
    let unchanged = || (!job.codings.is_empty()).then(|| body.to_vec());
    let write = |masked: String| {
        charset::encode_owned(masked, text.form).map_err(|_| Cause::UnsupportedCharset)
    };
    if let Some((input, m)) = as_json {
        let out = if shadow {
            None
        } else if m.report.total() == 0 {
            unchanged()
        } else {
            Some(write(m.body.unwrap_or_else(|| input.to_owned()))?)
        };
        return Ok(Masked {
            body: out,
            report: m.report,
        });
    }
    // Sniffed bytes are text only when they decode cleanly (UTF-8, or wide text with a BOM).
    let readable = match job.kind {
        Kind::Json | Kind::Text => true,
        Kind::Sniff => text.form.bom || std::str::from_utf8(&text.utf8).is_ok(),
        Kind::Binary => false,
    };
    if !readable {
        return match route.binary {
            BinaryPolicy::Pass => Ok(Masked {
                body: unchanged(),
                report: Report::default(),
            }),
            BinaryPolicy::Block => Err(Cause::Binary),
        };
    }
    // Read as a browser shows it: invalid sequences become U+FFFD.
    let s = String::from_utf8_lossy(&text.utf8);
    let (out, report) = mask::mask_text(cfg, profile, caller, &s).map_err(|_| Cause::NoTokenKey)?;
    let out = match out {
        _ if shadow => None,
        Some(masked) => Some(write(masked)?),
        None => unchanged(),
    };
    Ok(Masked { body: out, report })
}

/// Masks a body that must be JSON.
fn stream_json(
    cfg: &PiiConfig,
    profile: &Profile,
    caller: Caller<'_>,
    s: &str,
) -> Result<stream::Streamed, Cause> {
    stream::mask_document(cfg, profile, caller, s).map_err(|e| match e {
        StreamError::Json(_) => Cause::InvalidJson,
        StreamError::NoKey => Cause::NoTokenKey,
    })
}

/// Masks a body as JSON when it is JSON; `None` when it is not (it is text then).
fn json_or_text<'s>(
    cfg: &PiiConfig,
    profile: &Profile,
    caller: Caller<'_>,
    s: &'s str,
) -> Result<Option<(&'s str, stream::Streamed)>, Cause> {
    match stream_json(cfg, profile, caller, s) {
        Ok(m) => Ok(Some((s, m))),
        Err(Cause::InvalidJson) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How a buffered body ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Replace the body with this one (never longer than `max_output_bytes`).
    Write(Vec<u8>, Report),
    /// Leave the body as it is (nothing masked, shadow mode, or passed unmaskable).
    Keep(Report),
    /// Refuse it: the denial, and why.
    Block(Denial, Cause),
    /// Let it through unmasked because the route says `on_unmaskable: pass` (counted).
    PassUnmaskable(Cause),
}

/// Whether a body being buffered has grown past the route's cap (`body_size` is what has
/// arrived so far, counting the chunk in hand): checked on every chunk, before Envoy buffers
/// it, so Envoy never holds more than the cap for this filter.
pub fn over_cap(route: &Route, body_size: usize) -> bool {
    body_size > route.max_body_bytes
}

/// Decides what becomes of a complete body: masked and written back, kept, passed, or
/// refused. `shadow` computes and counts only (a block is the adapter's to count, not apply). The one place that applies the route's
/// `on_unmaskable` policy and the output cap, for the filter and the policy simulator alike.
pub fn finish(
    cfg: &PiiConfig,
    route: &Route,
    job: &Job,
    caller: Caller<'_>,
    raw: &[u8],
    shadow: bool,
    response: bool,
) -> Finished {
    let codings = job.codings.as_slice();
    let result = if over_cap(route, raw.len()) {
        Err(Cause::TooLarge)
    } else {
        // Masked for real even in shadow mode, so a body that would grow too large is counted.
        mask_body(cfg, route, job, caller, raw, false)
    };
    let cause = match result {
        Ok(Masked {
            body: Some(new),
            report,
        }) => {
            // Envoy resets the stream, from inside the very call that writes the body, when the
            // body exceeds the listener's buffer limit; the reset re-enters the VM and kills it.
            // `max_output_bytes` is rendered at or below that limit: never write past it.
            if new.len() <= cfg.max_output_bytes {
                return if shadow {
                    Finished::Keep(report)
                } else {
                    Finished::Write(new, report)
                };
            }
            Cause::OutputTooLarge
        }
        Ok(Masked { body: None, report }) => return Finished::Keep(report),
        Err(cause) => cause,
    };
    refusal(route, cause, codings, shadow, response)
}

/// A body that cannot be masked, for `cause`: blocked, or passed when the route allows it.
/// `codings` are those undone on it (their header is gone, unless in `shadow` mode, where no
/// header changes and a block is only counted by the adapter).
pub fn refusal(
    route: &Route,
    cause: Cause,
    codings: &[Coding],
    shadow: bool,
    response: bool,
) -> Finished {
    // A body whose coding header is already gone cannot be passed on intact: block it.
    let verdict = if codings.is_empty() || shadow {
        unmaskable(route, cause, response)
    } else {
        Unmaskable::Block(cause.denial(response))
    };
    match verdict {
        Unmaskable::Pass => Finished::PassUnmaskable(cause),
        Unmaskable::Block(d) => Finished::Block(d, cause),
    }
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

#[cfg(test)]
mod tests {
    use super::HeaderEdit;
    use portcullis_core::headers::HeaderMap;

    fn map(names: &[&str]) -> HeaderMap {
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (*n, "v")).collect();
        HeaderMap::from_pairs(&pairs)
    }

    #[test]
    fn an_edit_is_made_only_where_it_changes_the_message() {
        let got = map(&[":status", "content-length", "ETag"]);
        assert!(HeaderEdit::Remove("content-length").changes(&got));
        assert!(
            HeaderEdit::Remove("etag").changes(&got),
            "names compare without case"
        );
        assert!(!HeaderEdit::Remove("digest").changes(&got));
        assert!(HeaderEdit::Set("accept-ranges", "none").changes(&got));
        // A refused read is no message: every removal stays.
        assert!(HeaderEdit::Remove("digest").changes(&HeaderMap::default()));
    }
}
