//! The fuzz targets: one small function per parser that reads untrusted bytes, each checking
//! invariants (against a reference where one exists), not only that nothing panics.
//!
//! The JSON target runs schema's structural scan and pii's parser for now; when both move onto
//! one shared tokenizer, point [`json`] at it and keep the oracles.

use crate::engine::Verdict;
use crate::gen::{jws as jws_gen, pb};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis_authn::jwk::Alg;
use serde_json::Value;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn verdict(accepted: bool) -> Verdict {
    if accepted {
        Verdict::Accepted
    } else {
        Verdict::Rejected
    }
}

/// API key tables (`portcullis_authn::keytable`), as `api_keys.table` carries them: a table
/// that loads finds each of its keys with the identity it lists, nothing else, and encodes
/// back to the same bytes; one that does not load is refused with a `table` error.
pub fn keytable(input: &[u8]) -> Result<Verdict, String> {
    use portcullis_authn::config::RawApiKey;
    use portcullis_authn::keytable::KeyTable;
    let t = match KeyTable::from_bytes(input.to_vec()) {
        Ok(t) => t,
        Err(e) => {
            ensure!(e.field == "table", "refused under `{}`: {e}", e.field);
            return Ok(Verdict::Rejected);
        }
    };
    let entries: Vec<_> = t.entries().collect();
    ensure!(
        entries.len() == t.len(),
        "{} entries of {} keys",
        entries.len(),
        t.len()
    );
    let mut keys = Vec::new();
    for (d, id) in &entries {
        ensure!(
            t.find(d).as_ref() == Some(id),
            "a listed key is not found as listed"
        );
        let mut other = *d;
        other[31] ^= 1;
        if !entries.iter().any(|(e, _)| *e == other) {
            ensure!(
                t.find(&other).is_none(),
                "a digest not in the table was found"
            );
        }
        keys.push(RawApiKey {
            id: id.issuer.clone().unwrap_or_default(),
            sha256: d.iter().map(|b| format!("{b:02x}")).collect(),
            prefix: None,
            app: id.app.clone().unwrap_or_default(),
            tenant: id.tenant.clone(),
            scopes: id.scopes.clone(),
            roles: id.roles.clone(),
            tier: id.tier.clone(),
            disabled: false,
        });
    }
    // Key ids may repeat in a hand-made table (the encoder refuses that): no round trip then.
    let mut ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() == keys.len() {
        let again = KeyTable::encode(&keys).map_err(|e| format!("re-encoding failed: {e}"))?;
        let back =
            KeyTable::from_bytes(again).map_err(|e| format!("re-encoded table refused: {e}"))?;
        ensure!(
            back.entries().collect::<Vec<_>>() == entries,
            "re-encoding changed the keys"
        );
    }
    Ok(Verdict::Accepted)
}

/// Compact JWS (`portcullis_authn::jws`): what `parse` accepts has exactly three canonical
/// base64url segments and a header that says what the parse says; `verify` accepts a token
/// exactly when a reference crate accepts its signature with one of the keys the documented
/// selection rule (exact `kid`, else the first three that fit) allows.
pub fn jws(input: &[u8]) -> Result<Verdict, String> {
    use portcullis_authn::jws::{parse, verify, JwsError};
    // Tokens reach authn as header values, which Envoy hands over as strings.
    let Ok(token) = std::str::from_utf8(input) else {
        return Ok(Verdict::Rejected);
    };
    let keys = jws_gen::keys()?;
    let segs: Vec<&str> = token.split('.').collect();
    let parsed = parse(token);
    let mut expected = false;
    if let Ok(c) = &parsed {
        let ([h, p, s], true) = (segs.as_slice(), segs.len() == 3) else {
            return Err(format!("parse accepted {} segments", segs.len()));
        };
        ensure!(
            c.signing_input.len() == h.len() + 1 + p.len() && token.starts_with(c.signing_input),
            "signing input is not `header.payload`"
        );
        ensure!(c.payload_b64 == *p, "payload segment differs");
        ensure!(
            URL_SAFE_NO_PAD.encode(c.signature()) == *s,
            "signature segment accepted but not canonical base64url"
        );
        let header_bytes = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|e| format!("header: {e}"))?;
        ensure!(
            URL_SAFE_NO_PAD.encode(&header_bytes) == *h,
            "header segment accepted but not canonical base64url"
        );
        ensure!(
            URL_SAFE_NO_PAD.decode(p).is_ok_and(|b| b == c.payload()),
            "payload segment accepted but not base64url, or decoded to other bytes"
        );
        // The members authn acts on, read by serde_json on its own (other members are
        // skipped unread: an unread `1e400` is no reason to refuse a header).
        let header: HeaderView = serde_json::from_slice(&header_bytes)
            .map_err(|e| format!("accepted header is not a JSON object to serde_json: {e}"))?;
        ensure!(
            header.alg.as_ref().and_then(Value::as_str) == Some(c.alg.name()),
            "parsed alg {:?} is not the header's",
            c.alg
        );
        let kid = header.kid.as_ref().and_then(Value::as_str);
        ensure!(
            c.kid() == kid.map(str::as_bytes),
            "parsed kid is not the header's"
        );
        ensure!(header.crit.is_none(), "a `crit` header was accepted");
        ensure!(
            header.b64.is_none_or(|b| b == Value::Bool(true)),
            "`b64` other than true was accepted"
        );
        expected = jws_gen::candidates(&keys.keys, kid, c.alg)
            .iter()
            .any(|k| k.reference_verify(c.alg, c.signing_input.as_bytes(), c.signature()));
    }
    match verify(token, &keys.jwks, &Alg::ALL) {
        Ok(payload) => {
            ensure!(
                expected,
                "verify accepted a token no reference verifier accepts with an allowed key"
            );
            let p = segs.get(1).copied().unwrap_or_default();
            ensure!(
                URL_SAFE_NO_PAD.decode(p).ok() == Some(payload),
                "verify returned a payload that is not the decoded payload segment"
            );
            Ok(Verdict::Accepted)
        }
        Err(e) => {
            ensure!(
                !expected,
                "verify refused ({e:?}) a token a reference verifier accepts with an allowed key"
            );
            match parsed {
                Err(pe) => ensure!(pe == e, "verify said {e:?} where parse said {pe:?}"),
                Ok(_) => ensure!(
                    e == JwsError::BadSignature,
                    "verify said {e:?} for a token parse accepted"
                ),
            }
            Ok(Verdict::Rejected)
        }
    }
}

/// The protected-header members a verifier must act on (RFC 7515 §4.1), any JSON type.
#[derive(serde::Deserialize)]
struct HeaderView {
    alg: Option<Value>,
    kid: Option<Value>,
    crit: Option<Value>,
    b64: Option<Value>,
}

/// Path normalisation (`portcullis_core::path::normalize`): idempotent; the result starts with
/// `/`, has no empty, `.` or `..` segment, no `?`/`#`, no `\` or control character, and only
/// canonical escapes (upper-case hex, never of an unreserved character, `/` or `\`); the query
/// never changes the result.
pub fn path(input: &[u8]) -> Result<Verdict, String> {
    use portcullis_core::path::normalize;
    // `:path` reaches the filters as a string.
    let Ok(target) = std::str::from_utf8(input) else {
        return Ok(Verdict::Rejected);
    };
    let out = match normalize(target) {
        Ok(out) => out,
        Err(_) => return Ok(Verdict::Rejected),
    };
    ensure!(out.starts_with('/'), "does not start with `/`");
    let body = out.strip_prefix('/').unwrap_or(&out);
    let segs: Vec<&str> = body.split('/').collect();
    let last = segs.len() - 1;
    for (i, seg) in segs.iter().enumerate() {
        // Only the last segment may be empty: that is the kept trailing slash (or `/` itself).
        ensure!(!seg.is_empty() || i == last, "empty segment (`//`)");
        ensure!(*seg != "." && *seg != "..", "dot segment `{seg}` left");
    }
    ensure!(
        !out.contains(['?', '#', '\\']),
        "`?`, `#` or `\\` in a normalised path"
    );
    ensure!(
        !out.chars().any(|c| c.is_ascii_control()),
        "control character in a normalised path"
    );
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
        ensure!(
            hex.len() == 2
                && hex
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "escape at {i} is not `%` + two upper-case hex digits"
        );
        let v = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        ensure!(
            !(v.is_ascii_alphanumeric() || b"-._~/\\".contains(&v) || v < 0x20 || v == 0x7f),
            "escape %{v:02X} should have been decoded or refused"
        );
    }
    ensure!(
        normalize(&out).as_deref() == Ok(out.as_str()),
        "not idempotent: {out:?} normalises to {:?}",
        normalize(&out)
    );
    if !target.contains(['?', '#']) {
        for suffix in ["?a=../../x", "?%2f", "#../y", "?"] {
            let with = format!("{target}{suffix}");
            ensure!(
                normalize(&with).as_deref() == Ok(out.as_str()),
                "query or fragment `{suffix}` changed the result"
            );
        }
    }
    Ok(Verdict::Accepted)
}

/// JSON nesting (containers inside containers) the `Struct` decoder must accept: its depth
/// counter (64) counts the `Value` level between two containers too.
const PB_DEPTH_OK: usize = 33;
/// Beyond this nesting the decoder must refuse.
const PB_DEPTH_REFUSED: usize = 34;

/// Protobuf `Struct` decoding of arbitrary bytes (`portcullis_core::pbstruct`): the result is
/// an object within the nesting bound, and re-encoding it decodes to the same value.
pub fn pbstruct(input: &[u8]) -> Result<Verdict, String> {
    use portcullis_core::pbstruct::decode_struct;
    let Ok(v) = decode_struct(input) else {
        return Ok(Verdict::Rejected);
    };
    let Value::Object(m) = &v else {
        return Err("decoded a Struct into something other than an object".into());
    };
    ensure!(
        nesting(&v) < PB_DEPTH_REFUSED,
        "decoded nesting {} is past the bound",
        nesting(&v)
    );
    let again = decode_struct(&pb::encode_struct(m));
    ensure!(
        again.as_ref() == Ok(&v),
        "decode(encode(decode(x))) differs from decode(x)"
    );
    Ok(Verdict::Accepted)
}

/// `Struct` round trip from JSON text: the encoding of any JSON object decodes to that object
/// (numbers as doubles, integral ones as integers) while its nesting is within the bound, and is
/// refused past it.
pub fn pbstruct_roundtrip(input: &[u8]) -> Result<Verdict, String> {
    use portcullis_core::pbstruct::decode_struct;
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(input) else {
        return Ok(Verdict::Rejected);
    };
    let v = Value::Object(m);
    let depth = nesting(&v);
    let got = decode_struct(&pb::encode_struct(
        v.as_object().unwrap_or(&Default::default()),
    ));
    if depth <= PB_DEPTH_OK {
        ensure!(
            got.as_ref() == Ok(&as_doubles(&v)),
            "the encoding of a JSON object (nesting {depth}) did not decode to it: {got:?}"
        );
        Ok(Verdict::Accepted)
    } else if depth >= PB_DEPTH_REFUSED {
        ensure!(got.is_err(), "nesting {depth} was decoded, past the bound");
        Ok(Verdict::Rejected)
    } else {
        Ok(verdict(got.is_ok()))
    }
}

/// Containers inside containers: a scalar is 0, `[]` is 1, `[[]]` is 2.
fn nesting(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(nesting).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// `v` as a `Struct` carries it: every number a double, integral ones within 2^53 as integers.
fn as_doubles(v: &Value) -> Value {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                Value::from(f as i64)
            } else {
                serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(as_doubles).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, x)| (k.clone(), as_doubles(x))).collect())
        }
        other => other.clone(),
    }
}

/// JSON bodies: schema's structural scan and pii's parser, each held to serde_json.
pub fn json(input: &[u8]) -> Result<Verdict, String> {
    json_tokenizer(input)?;
    let scanned = json_scan(input)?;
    let parsed = json_pii(input)?;
    Ok(verdict(
        scanned == Verdict::Accepted || parsed == Verdict::Accepted,
    ))
}

/// What serde_json makes of a document: its nesting and whether an object repeats a member
/// name (after unescaping), or its error.
struct Shape {
    depth: usize,
    duplicate: bool,
}

impl<'de> serde::Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::SCALAR)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::SCALAR)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::SCALAR)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::SCALAR)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::SCALAR)
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::SCALAR)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut s = Shape {
            depth: 1,
            duplicate: false,
        };
        while let Some(x) = seq.next_element::<Shape>()? {
            s.merge(x);
        }
        Ok(s)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut s = Shape {
            depth: 1,
            duplicate: false,
        };
        let mut names = std::collections::HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            s.duplicate |= !names.insert(name);
            s.merge(map.next_value::<Shape>()?);
        }
        Ok(s)
    }
}

impl Shape {
    const SCALAR: Shape = Shape {
        depth: 0,
        duplicate: false,
    };
    fn merge(&mut self, inner: Shape) {
        self.depth = self.depth.max(inner.depth + 1);
        self.duplicate |= inner.duplicate;
    }
}

/// True when valid JSON text holds an integer literal (no fraction, no exponent) outside
/// `i64`..`u64`: serde_json reads it as a double, the schema scan refuses it.
fn has_wide_integer(text: &[u8]) -> bool {
    let mut in_string = false;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while text
                .get(i)
                .is_some_and(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
            {
                i += 1;
            }
            let lit = std::str::from_utf8(text.get(start..i).unwrap_or_default()).unwrap_or("");
            if !lit.contains(['.', 'e', 'E'])
                && lit.parse::<i64>().is_err()
                && lit.parse::<u64>().is_err()
            {
                return true;
            }
            continue;
        }
        i += 1;
    }
    false
}

/// The schema filter's structural scan with limits out of the way (depth at its ceiling):
/// it accepts exactly what serde_json accepts, except what it refuses on purpose — duplicate
/// member names, nesting past its ceiling, integers outside `i64`..`u64` — and each such
/// refusal must be true of the input.
/// The core tokenizer with no limits accepts exactly what serde_json accepts (up to serde's
/// own nesting limit of 128), and every string it yields unescapes to serde's value.
pub fn json_tokenizer(input: &[u8]) -> Result<Verdict, String> {
    use portcullis_core::json::{Event, Limits, Tokenizer};
    let mut strings = Vec::new();
    let mut depth = 0usize;
    let mut max_depth = 0usize;
    let got: Result<(), portcullis_core::json::Error> = (|| {
        let mut t = Tokenizer::new(input, Limits::default())?;
        while let Some(e) = t.next_event()? {
            match e {
                Event::StartObject | Event::StartArray => {
                    depth += 1;
                    max_depth = max_depth.max(depth);
                }
                Event::EndObject | Event::EndArray => depth -= 1,
                Event::Str(x) | Event::Name(x) => strings.push(x.unescape().into_owned()),
                _ => {}
            }
        }
        Ok(())
    })();
    let serde = serde_json::from_slice::<serde_json::Value>(input);
    match (&got, &serde) {
        (Ok(()), Ok(v)) => {
            let mut want = Vec::new();
            collect_strings(v, &mut want);
            let mut have = strings.clone();
            have.sort();
            want.sort();
            // serde keeps the last of duplicate names; the tokenizer yields every one.
            want.dedup();
            have.dedup();
            ensure!(
                want.iter().all(|w| have.contains(w)),
                "a string unescaped differently from serde_json"
            );
        }
        // Range checks are a limit (off here); serde refuses an f64 that overflows.
        (Ok(()), Err(e)) => ensure!(
            max_depth > 127 || e.to_string().contains("number out of range"),
            "the tokenizer accepted what serde_json refuses: {e}"
        ),
        (Err(e), Ok(_)) => return Err(format!("the tokenizer refused valid JSON: {e:?}")),
        (Err(_), Err(_)) => {}
    }
    Ok(verdict(got.is_ok()))
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                collect_strings(x, out);
            }
        }
        _ => {}
    }
}

pub fn json_scan(input: &[u8]) -> Result<Verdict, String> {
    use portcullis_schema::scan::{scan, Limits, ScanError, DEPTH_CEILING};
    let limits = Limits {
        max_body_bytes: usize::MAX,
        max_depth: DEPTH_CEILING,
        max_array_len: usize::MAX,
        max_string_len: usize::MAX,
        max_object_members: usize::MAX,
    };
    let got = scan(input, &limits);
    let shape = serde_json::from_slice::<Shape>(input);
    let utf8 = std::str::from_utf8(input).is_ok();
    ensure!(
        utf8 || got == Err(ScanError::InvalidUtf8),
        "invalid UTF-8 not reported as such: {got:?}"
    );
    match (&got, &shape) {
        (Ok(()), Ok(s)) => {
            ensure!(!s.duplicate, "accepted a duplicate member name");
            ensure!(s.depth <= DEPTH_CEILING, "accepted nesting {}", s.depth);
            ensure!(
                !has_wide_integer(input),
                "accepted an integer outside i64..u64"
            );
        }
        (Ok(()), Err(e)) => return Err(format!("accepted what serde_json refuses: {e}")),
        (Err(e), Ok(s)) => {
            let why = match e {
                ScanError::DuplicateKey => s.duplicate,
                ScanError::TooDeep => s.depth > DEPTH_CEILING,
                ScanError::NumberOutOfRange => has_wide_integer(input),
                _ => false,
            };
            ensure!(
                why,
                "refused with {e:?} what serde_json accepts, and that is not true of it"
            );
        }
        (Err(_), Err(_)) => {}
    }
    Ok(verdict(got.is_ok()))
}

/// pii's document model: what it parses re-serialises to a document it parses to the same
/// tree and serde_json reads as the same value; it refuses nothing serde_json accepts, and
/// accepts nothing serde_json refuses beyond numbers past `f64` and nesting past serde_json's
/// own limit (it keeps numbers as text, and allows 256 levels).
pub fn json_pii(input: &[u8]) -> Result<Verdict, String> {
    use portcullis_pii::json::parse;
    let got = parse(input);
    let reference = serde_json::from_slice::<Value>(input);
    match (&got, &reference) {
        (Ok(tree), _) => {
            let bytes = tree.to_bytes();
            ensure!(
                parse(&bytes).as_ref() == Ok(tree),
                "its own serialisation does not parse back to the same tree"
            );
            match &reference {
                Ok(v) => ensure!(
                    serde_json::from_slice::<Value>(&bytes).as_ref().ok() == Some(v),
                    "re-serialised document means something else to serde_json"
                ),
                Err(e) => {
                    let m = e.to_string();
                    ensure!(
                        m.starts_with("number out of range")
                            || m.starts_with("recursion limit exceeded"),
                        "accepted what serde_json refuses: {m}"
                    );
                }
            }
        }
        (Err(e), Ok(_)) => return Err(format!("refused ({e:?}) what serde_json accepts")),
        (Err(_), Err(_)) => {}
    }
    Ok(verdict(got.is_ok()))
}

/// Serialized header maps (`core::headers`, what the proxy-wasm adapter reads every header
/// map through): held to a plain reference decoder. A map the reference decodes is read with
/// the same names (lower-cased), the same value bytes and the same first value per name; one
/// it refuses (a length past the buffer, a missing NUL) is read as empty.
pub fn headermap(input: &[u8]) -> Result<Verdict, String> {
    use portcullis_core::headers::HeaderMap;
    // The reference: a cursor over the buffer, every step checked.
    fn reference(b: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        let word = |at: usize| -> Option<usize> {
            let w = b.get(at..at + 4)?;
            Some(u32::from_le_bytes(w.try_into().ok()?) as usize)
        };
        let n = word(0)?;
        if n > b.len() / 8 {
            return None;
        }
        let mut at = 4 + 8 * n;
        let mut out = Vec::new();
        for i in 0..n {
            let mut take = |len: usize| -> Option<Vec<u8>> {
                let f = b.get(at..at.checked_add(len)?)?.to_vec();
                if b.get(at + len) != Some(&0) {
                    return None;
                }
                at += len + 1;
                Some(f)
            };
            let name = take(word(4 + 8 * i)?)?;
            let value = take(word(8 + 8 * i)?)?;
            out.push((name, value));
        }
        Some(out)
    }
    let map = HeaderMap::from_wire(input.to_vec());
    let Some(want) = reference(input) else {
        ensure!(
            map.is_empty(),
            "a malformed map read as {} headers",
            map.len()
        );
        return Ok(Verdict::Rejected);
    };
    ensure!(
        map.len() == want.len(),
        "{} headers of {}",
        map.len(),
        want.len()
    );
    let latin1 = |b: &[u8]| -> String {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .unwrap_or_else(|_| b.iter().map(|&c| char::from(c)).collect())
    };
    for (h, (name, value)) in map.headers().zip(&want) {
        let name = latin1(&name.to_ascii_lowercase());
        ensure!(h.name == name, "name {:?} read as {:?}", name, h.name);
        ensure!(
            HeaderMap::value_bytes(&h).as_ref() == value.as_slice(),
            "value of {name:?} changed"
        );
        ensure!(
            h.utf8 == std::str::from_utf8(value).is_ok(),
            "value of {name:?} marked utf8={}",
            h.utf8
        );
        let first = want
            .iter()
            .find(|(n, _)| latin1(&n.to_ascii_lowercase()) == name)
            .map(|(_, v)| latin1(v));
        ensure!(
            map.get(&name).map(str::to_owned) == first,
            "get({name:?}) is not the first value"
        );
    }
    // Another rule for non-UTF-8 values leaves every other field, and every value's bytes, as
    // they were.
    let tagged = map.clone().decode_non_utf8(|b| format!("<{}>", b.len()));
    for (a, b) in map.headers().zip(tagged.headers()) {
        ensure!(a.name == b.name, "a name changed under decode_non_utf8");
        ensure!(
            HeaderMap::value_bytes(&a) == HeaderMap::value_bytes(&b),
            "a value's bytes changed under decode_non_utf8"
        );
        if a.utf8 {
            ensure!(
                a.value == b.value,
                "a UTF-8 value changed under decode_non_utf8"
            );
        } else {
            ensure!(
                b.value == format!("<{}>", HeaderMap::value_bytes(&a).len()),
                "a non-UTF-8 value was not decoded by the rule given"
            );
        }
    }
    Ok(verdict(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The oracles are code too: each must say yes and no where it should.

    #[test]
    fn wide_integers_are_found_outside_strings_only() {
        assert!(has_wide_integer(b"[18446744073709551616]"));
        assert!(has_wide_integer(b"{\"a\":-9223372036854775809}"));
        assert!(!has_wide_integer(
            b"[18446744073709551615,-9223372036854775808]"
        ));
        assert!(!has_wide_integer(
            b"[1e400,1.5,123456789012345678901234567890.0]"
        ));
        assert!(!has_wide_integer(
            b"[\"18446744073709551616\",\"\\\"99999999999999999999\"]"
        ));
    }

    #[test]
    fn shape_sees_duplicates_after_unescaping_and_counts_nesting() {
        let s: Shape = serde_json::from_slice(br#"{"a":1,"\u0061":2}"#).unwrap();
        assert!(s.duplicate);
        let s: Shape = serde_json::from_slice(br#"[{"a":[{}]},{"a":1}]"#).unwrap();
        assert!(!s.duplicate);
        assert_eq!(s.depth, 4);
        assert_eq!(nesting(&serde_json::json!([{"a": [{}]}, 1])), 4);
    }

    #[test]
    fn struct_nesting_bounds_are_where_the_decoder_puts_them() {
        let nested = |levels: usize| {
            let mut v = serde_json::json!({});
            for _ in 1..levels {
                v = serde_json::json!({ "k": v });
            }
            v.to_string().into_bytes()
        };
        assert_eq!(
            pbstruct_roundtrip(&nested(PB_DEPTH_OK)),
            Ok(Verdict::Accepted)
        );
        assert_eq!(
            pbstruct_roundtrip(&nested(PB_DEPTH_REFUSED)),
            Ok(Verdict::Rejected)
        );
    }

    #[test]
    fn struct_numbers_are_doubles_and_integral_ones_integers() {
        let v = serde_json::json!({"a": 2.0, "b": -0.0, "c": 0.5, "d": 18446744073709551615u64});
        let d = as_doubles(&v);
        assert!(d["a"].is_i64() && d["b"] == 0 && d["c"] == 0.5);
        assert!(d["d"].is_f64());
        assert_eq!(
            pbstruct_roundtrip(v.to_string().as_bytes()),
            Ok(Verdict::Accepted)
        );
    }

    #[test]
    fn the_jws_oracle_follows_the_kid_rule() {
        let keys = jws_gen::keys().unwrap();
        // kid names one key; a kid naming a key of another type selects nothing.
        assert_eq!(
            jws_gen::candidates(&keys.keys, Some("hs"), Alg::HS256).len(),
            1
        );
        assert!(jws_gen::candidates(&keys.keys, Some("rs"), Alg::HS256).is_empty());
        // Without kid: both HMAC keys fit HS256, only the 64-byte one HS512.
        assert_eq!(jws_gen::candidates(&keys.keys, None, Alg::HS256).len(), 2);
        assert_eq!(jws_gen::candidates(&keys.keys, None, Alg::HS512).len(), 1);
        assert!(jws_gen::candidates(&keys.keys, None, Alg::ES384).is_empty());
    }

    #[test]
    fn path_invariants_hold_on_known_paths_and_refusals_are_not_failures() {
        for p in [
            "/",
            "/a/../b",
            "/%7euser/%3a",
            "/a%2fb",
            "x",
            "/a/./b/?q=../x",
        ] {
            assert!(path(p.as_bytes()).is_ok(), "{p}");
        }
        assert_eq!(path(b"/a%2fb"), Ok(Verdict::Rejected));
    }
}
