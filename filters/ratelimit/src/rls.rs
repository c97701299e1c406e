//! The messages of Envoy's rate limit service protocol
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), encoded and decoded by hand
//! so that no build machine needs `protoc`. Both directions are here because the filter (request
//! out, response in) and the service (request in, response out) share them.
//!
//! Only the fields Portcullis uses are modelled; every other field is skipped on decode, as
//! protobuf requires, so newer peers (Envoy's own filter, envoyproxy/ratelimit) interoperate.
//! Field numbers follow `envoy/service/ratelimit/v3/rls.proto` and
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`.

/// gRPC service name, as `dispatch_grpc_call` and the `:path` want it.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
/// gRPC method name.
pub const METHOD: &str = "ShouldRateLimit";
/// The HTTP/2 `:path` of the call.
pub const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// Longest message either side accepts (a request names at most a few dozen descriptors).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// One `RateLimitDescriptor.Entry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Descriptor key (`limit`, `tenant`, `remote_address`…).
    pub key: String,
    /// Its value.
    pub value: String,
}

/// One `RateLimitDescriptor`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// Entries, most general first.
    pub entries: Vec<Entry>,
    /// Descriptor-level `hits_addend` (field 3, a `UInt64Value`), which overrides the request's
    /// for this descriptor; sent only when the global limits of one request cost differently.
    pub hits_addend: Option<u64>,
}

/// `RateLimitRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateLimitRequest {
    /// Domain: one per filter instance.
    pub domain: String,
    /// Descriptors, all of which must admit the request.
    pub descriptors: Vec<Descriptor>,
    /// Units the request costs (0 on the wire means 1).
    pub hits_addend: u32,
}

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 0: not known (treated as an error by the filter).
    Unknown,
    /// 1: under the limit.
    Ok,
    /// 2: over the limit.
    OverLimit,
}

impl Code {
    fn from_wire(v: u64) -> Code {
        match v {
            1 => Code::Ok,
            2 => Code::OverLimit,
            _ => Code::Unknown,
        }
    }
    fn to_wire(self) -> u64 {
        match self {
            Code::Unknown => 0,
            Code::Ok => 1,
            Code::OverLimit => 2,
        }
    }
}

/// `RateLimitResponse.RateLimit.Unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// 0.
    Unknown,
    /// 1.
    Second,
    /// 2.
    Minute,
    /// 3.
    Hour,
    /// 4.
    Day,
}

impl Unit {
    fn from_wire(v: u64) -> Unit {
        match v {
            1 => Unit::Second,
            2 => Unit::Minute,
            3 => Unit::Hour,
            4 => Unit::Day,
            _ => Unit::Unknown,
        }
    }
    fn to_wire(self) -> u64 {
        match self {
            Unit::Unknown => 0,
            Unit::Second => 1,
            Unit::Minute => 2,
            Unit::Hour => 3,
            Unit::Day => 4,
        }
    }
}

/// `RateLimitResponse.RateLimit`: the limit the service applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLimit {
    /// Requests per unit.
    pub requests_per_unit: u32,
    /// Unit.
    pub unit: Unit,
    /// Name (Portcullis: the limit's name).
    pub name: String,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorStatus {
    /// Verdict for this descriptor.
    pub code: Code,
    /// The limit that applied (absent: the service knows no limit for this descriptor).
    pub current_limit: Option<CurrentLimit>,
    /// Units left.
    pub limit_remaining: u32,
    /// Seconds until the limit resets (Portcullis' service: until the request could pass, when
    /// over the limit; until the limit is whole again otherwise).
    pub duration_until_reset_secs: Option<u64>,
}

/// `RateLimitResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitResponse {
    /// Overall verdict.
    pub overall_code: Code,
    /// One status per request descriptor, in order.
    pub statuses: Vec<DescriptorStatus>,
}

/// Why bytes are not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Ran out of bytes inside a field.
    Truncated,
    /// A varint longer than 10 bytes, or a wire type protobuf does not define / we cannot skip.
    Malformed,
    /// A string field that is not UTF-8.
    NotUtf8,
    /// Over [`MAX_MESSAGE_BYTES`].
    TooLarge,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeError::Truncated => "truncated protobuf message",
            DecodeError::Malformed => "malformed protobuf message",
            DecodeError::NotUtf8 => "protobuf string is not UTF-8",
            DecodeError::TooLarge => "protobuf message too large",
        })
    }
}

// ---- wire primitives ----

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    // proto3: default values are not sent.
    if v != 0 {
        put_key(out, field, VARINT);
        put_varint(out, v);
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(out, field, s.as_bytes());
    }
}

/// A cursor over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// One field's value as read from the wire.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Skipped,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::Malformed)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// The next field number and value, or `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, Value<'a>)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(DecodeError::Malformed);
        }
        let v = match (key & 7) as u8 {
            VARINT => Value::Varint(self.varint()?),
            FIXED64 => {
                self.take(8)?;
                Value::Skipped
            }
            LEN => {
                let n = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
                Value::Bytes(self.take(n)?)
            }
            FIXED32 => {
                self.take(4)?;
                Value::Skipped
            }
            // Groups (3, 4) are long deprecated and never used by these messages.
            _ => return Err(DecodeError::Malformed),
        };
        Ok(Some((field, v)))
    }
}

fn utf8(b: &[u8]) -> Result<String, DecodeError> {
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| DecodeError::NotUtf8)
}

fn check_size(b: &[u8]) -> Result<(), DecodeError> {
    if b.len() > MAX_MESSAGE_BYTES {
        Err(DecodeError::TooLarge)
    } else {
        Ok(())
    }
}

// ---- RateLimitRequest ----

impl Descriptor {
    fn encode(&self, out: &mut Vec<u8>) {
        for e in &self.entries {
            let mut m = Vec::with_capacity(e.key.len() + e.value.len() + 4);
            put_str(&mut m, 1, &e.key);
            put_str(&mut m, 2, &e.value);
            put_bytes(out, 1, &m);
        }
        if let Some(h) = self.hits_addend {
            // google.protobuf.UInt64Value { uint64 value = 1; }
            let mut w = Vec::new();
            put_uint(&mut w, 1, h);
            put_bytes(out, 3, &w);
        }
    }

    fn decode(b: &[u8]) -> Result<Descriptor, DecodeError> {
        let mut d = Descriptor::default();
        let mut r = Reader::new(b);
        while let Some((field, v)) = r.next()? {
            match (field, v) {
                (1, Value::Bytes(e)) => {
                    let mut er = Reader::new(e);
                    let (mut key, mut value) = (String::new(), String::new());
                    while let Some((f, v)) = er.next()? {
                        match (f, v) {
                            (1, Value::Bytes(s)) => key = utf8(s)?,
                            (2, Value::Bytes(s)) => value = utf8(s)?,
                            _ => {}
                        }
                    }
                    d.entries.push(Entry { key, value });
                }
                (3, Value::Bytes(w)) => {
                    let mut wr = Reader::new(w);
                    let mut h = 0;
                    while let Some((f, v)) = wr.next()? {
                        if let (1, Value::Varint(x)) = (f, v) {
                            h = x;
                        }
                    }
                    d.hits_addend = Some(h);
                }
                _ => {}
            }
        }
        Ok(d)
    }
}

impl RateLimitRequest {
    /// Serialises the request.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        put_str(&mut out, 1, &self.domain);
        for d in &self.descriptors {
            let mut m = Vec::with_capacity(64);
            d.encode(&mut m);
            put_bytes(&mut out, 2, &m);
        }
        put_uint(&mut out, 3, u64::from(self.hits_addend));
        out
    }

    /// Parses a request (unknown fields skipped).
    pub fn decode(b: &[u8]) -> Result<RateLimitRequest, DecodeError> {
        check_size(b)?;
        let mut req = RateLimitRequest::default();
        let mut r = Reader::new(b);
        while let Some((field, v)) = r.next()? {
            match (field, v) {
                (1, Value::Bytes(s)) => req.domain = utf8(s)?,
                (2, Value::Bytes(d)) => req.descriptors.push(Descriptor::decode(d)?),
                (3, Value::Varint(h)) => req.hits_addend = u32::try_from(h).unwrap_or(u32::MAX),
                _ => {}
            }
        }
        Ok(req)
    }

    /// The units descriptor `i` costs: its own `hits_addend`, else the request's, else 1.
    pub fn hits_for(&self, i: usize) -> u64 {
        self.descriptors
            .get(i)
            .and_then(|d| d.hits_addend)
            .unwrap_or(u64::from(self.hits_addend))
            .max(1)
    }
}

// ---- RateLimitResponse ----

impl DescriptorStatus {
    fn encode(&self, out: &mut Vec<u8>) {
        put_uint(out, 1, self.code.to_wire());
        if let Some(l) = &self.current_limit {
            let mut m = Vec::new();
            put_uint(&mut m, 1, u64::from(l.requests_per_unit));
            put_uint(&mut m, 2, l.unit.to_wire());
            put_str(&mut m, 3, &l.name);
            put_bytes(out, 2, &m);
        }
        put_uint(out, 3, u64::from(self.limit_remaining));
        if let Some(s) = self.duration_until_reset_secs {
            // google.protobuf.Duration { int64 seconds = 1; int32 nanos = 2; }
            let mut m = Vec::new();
            put_uint(&mut m, 1, s);
            put_bytes(out, 4, &m);
        }
    }

    fn decode(b: &[u8]) -> Result<DescriptorStatus, DecodeError> {
        let mut s = DescriptorStatus {
            code: Code::Unknown,
            current_limit: None,
            limit_remaining: 0,
            duration_until_reset_secs: None,
        };
        let mut r = Reader::new(b);
        while let Some((field, v)) = r.next()? {
            match (field, v) {
                (1, Value::Varint(c)) => s.code = Code::from_wire(c),
                (2, Value::Bytes(m)) => {
                    let mut l = CurrentLimit {
                        requests_per_unit: 0,
                        unit: Unit::Unknown,
                        name: String::new(),
                    };
                    let mut lr = Reader::new(m);
                    while let Some((f, v)) = lr.next()? {
                        match (f, v) {
                            (1, Value::Varint(x)) => {
                                l.requests_per_unit = u32::try_from(x).unwrap_or(u32::MAX)
                            }
                            (2, Value::Varint(x)) => l.unit = Unit::from_wire(x),
                            (3, Value::Bytes(n)) => l.name = utf8(n)?,
                            _ => {}
                        }
                    }
                    s.current_limit = Some(l);
                }
                (3, Value::Varint(x)) => s.limit_remaining = u32::try_from(x).unwrap_or(u32::MAX),
                (4, Value::Bytes(m)) => {
                    let mut secs: u64 = 0;
                    let mut nanos: u64 = 0;
                    let mut dr = Reader::new(m);
                    while let Some((f, v)) = dr.next()? {
                        match (f, v) {
                            // A negative duration (int64 as a 10-byte varint) reads as
                            // huge: treat it as zero.
                            (1, Value::Varint(x)) => secs = if x > i64::MAX as u64 { 0 } else { x },
                            (2, Value::Varint(x)) => nanos = x,
                            _ => {}
                        }
                    }
                    // Round up partial seconds: a client told "0 s" would retry at once.
                    let extra = u64::from(nanos > 0 && nanos < 1_000_000_000);
                    s.duration_until_reset_secs = Some(secs.saturating_add(extra));
                }
                _ => {}
            }
        }
        Ok(s)
    }
}

impl RateLimitResponse {
    /// Serialises the response.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 24 * self.statuses.len());
        put_uint(&mut out, 1, self.overall_code.to_wire());
        for s in &self.statuses {
            let mut m = Vec::new();
            s.encode(&mut m);
            put_bytes(&mut out, 2, &m);
        }
        out
    }

    /// Parses a response (unknown fields, such as headers to add, skipped).
    pub fn decode(b: &[u8]) -> Result<RateLimitResponse, DecodeError> {
        check_size(b)?;
        let mut resp = RateLimitResponse {
            overall_code: Code::Unknown,
            statuses: Vec::new(),
        };
        let mut r = Reader::new(b);
        while let Some((field, v)) = r.next()? {
            match (field, v) {
                (1, Value::Varint(c)) => resp.overall_code = Code::from_wire(c),
                (2, Value::Bytes(m)) => resp.statuses.push(DescriptorStatus::decode(m)?),
                _ => {}
            }
        }
        Ok(resp)
    }
}

/// A serialized `envoy.config.core.v3.GrpcService { envoy_grpc { cluster_name } }`, the first
/// argument of `proxy_grpc_call`.
///
/// Envoy also accepts a bare cluster name there, but only after failing to parse it as a
/// `GrpcService`; a name whose bytes happen to parse (unknown fields are legal) would yield a
/// service with no target and a host error, so the filter always sends the message.
/// `None` when the encoding would not be valid UTF-8 (the SDK takes a `&str`): names of 128 bytes
/// or more, which configuration refuses anyway.
pub fn grpc_service(cluster: &str) -> Option<String> {
    let mut envoy_grpc = Vec::new();
    put_str(&mut envoy_grpc, 1, cluster);
    let mut out = Vec::new();
    put_bytes(&mut out, 1, &envoy_grpc);
    String::from_utf8(out).ok()
}

/// gRPC length-prefixed message framing (uncompressed), as carried in HTTP/2 DATA frames.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Why a gRPC body is not exactly one uncompressed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not enough bytes yet (the caller may wait for more).
    Incomplete,
    /// Compressed, over the size cap, or trailing bytes after the message.
    Invalid,
}

/// The one message in a gRPC body (unary call).
pub fn unframe(body: &[u8]) -> Result<&[u8], FrameError> {
    let (Some(&flag), Some(len)) = (body.first(), body.get(1..5)) else {
        return Err(FrameError::Incomplete);
    };
    if flag != 0 {
        return Err(FrameError::Invalid);
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(len);
    let n = u32::from_be_bytes(n) as usize;
    if n > MAX_MESSAGE_BYTES {
        return Err(FrameError::Invalid);
    }
    match body.len().cmp(&(5 + n)) {
        std::cmp::Ordering::Less => Err(FrameError::Incomplete),
        std::cmp::Ordering::Greater => Err(FrameError::Invalid),
        std::cmp::Ordering::Equal => body.get(5..).ok_or(FrameError::Incomplete),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RateLimitRequest {
        RateLimitRequest {
            domain: "portcullis.ratelimit".into(),
            descriptors: vec![
                Descriptor {
                    entries: vec![
                        Entry {
                            key: "limit".into(),
                            value: "tenant".into(),
                        },
                        Entry {
                            key: "tenant".into(),
                            value: "acme".into(),
                        },
                    ],
                    hits_addend: None,
                },
                Descriptor {
                    entries: vec![Entry {
                        key: "limit".into(),
                        value: "app".into(),
                    }],
                    hits_addend: Some(10),
                },
            ],
            hits_addend: 3,
        }
    }

    #[test]
    fn request_round_trips_and_hits_fall_back_to_the_request() {
        let r = req();
        let back = RateLimitRequest::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.hits_for(0), 3);
        assert_eq!(back.hits_for(1), 10);
        let none = RateLimitRequest {
            hits_addend: 0,
            ..r
        };
        assert_eq!(none.hits_for(0), 1, "0 on the wire means 1");
    }

    #[test]
    fn request_bytes_match_protobuf_encoding() {
        // domain "d", one descriptor {entries [{key "k", value "v"}]}, hits_addend 2 — the bytes
        // protoc's encoder produces for this message.
        let r = RateLimitRequest {
            domain: "d".into(),
            descriptors: vec![Descriptor {
                entries: vec![Entry {
                    key: "k".into(),
                    value: "v".into(),
                }],
                hits_addend: None,
            }],
            hits_addend: 2,
        };
        assert_eq!(
            r.encode(),
            vec![0x0a, 1, b'd', 0x12, 8, 0x0a, 6, 0x0a, 1, b'k', 0x12, 1, b'v', 0x18, 2]
        );
    }

    #[test]
    fn response_round_trips_and_unknown_fields_are_skipped() {
        let resp = RateLimitResponse {
            overall_code: Code::OverLimit,
            statuses: vec![
                DescriptorStatus {
                    code: Code::Ok,
                    current_limit: Some(CurrentLimit {
                        requests_per_unit: 100,
                        unit: Unit::Minute,
                        name: "tenant".into(),
                    }),
                    limit_remaining: 7,
                    duration_until_reset_secs: Some(42),
                },
                DescriptorStatus {
                    code: Code::OverLimit,
                    current_limit: None,
                    limit_remaining: 0,
                    duration_until_reset_secs: None,
                },
            ],
        };
        let mut bytes = resp.encode();
        // response_headers_to_add (3), raw_body (5), a fixed64 (field 9) and fixed32 (field 10).
        bytes.extend_from_slice(&[0x1a, 3, 0x0a, 1, b'x']);
        bytes.extend_from_slice(&[0x2a, 2, b'h', b'i']);
        bytes.extend_from_slice(&[0x49, 1, 2, 3, 4, 5, 6, 7, 8, 0x55, 1, 2, 3, 4]);
        assert_eq!(RateLimitResponse::decode(&bytes).unwrap(), resp);
    }

    #[test]
    fn partial_seconds_round_up_and_negative_durations_read_as_zero() {
        // Duration { seconds: 2, nanos: 1 } → 3 s.
        let m = [0x08, 0x01, 0x22, 4, 0x08, 2, 0x10, 1];
        let s = DescriptorStatus::decode(&m).unwrap();
        assert_eq!(s.duration_until_reset_secs, Some(3));
        // seconds: -1 (ten-byte varint).
        let mut neg = vec![0x22, 11, 0x08];
        neg.extend_from_slice(&[0xff; 9]);
        neg.push(0x01);
        let s = DescriptorStatus::decode(&neg).unwrap();
        assert_eq!(s.duration_until_reset_secs, Some(0));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let good = req().encode();
        // Every truncation and every single-byte corruption decodes or errors; none panics.
        for n in 0..good.len() {
            let _ = RateLimitRequest::decode(&good[..n]);
            for b in [0x00, 0x07, 0x0b, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[n] = b;
                let _ = RateLimitRequest::decode(&bad);
                let _ = RateLimitResponse::decode(&bad);
            }
        }
        assert_eq!(
            RateLimitResponse::decode(&[0x0a, 5, 1]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            RateLimitResponse::decode(&[0x0b]),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            RateLimitRequest::decode(&[0x0a, 2, 0xc3, 0x28]),
            Err(DecodeError::NotUtf8)
        );
        assert_eq!(
            RateLimitRequest::decode(&vec![0; MAX_MESSAGE_BYTES + 1]),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(
            RateLimitResponse::decode(
                &[0x08; 11]
                    .iter()
                    .chain(&[0x80u8; 11])
                    .copied()
                    .collect::<Vec<_>>()
            ),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn grpc_service_names_the_cluster_and_framing_is_strict() {
        let g = grpc_service("portcullis_rls").unwrap();
        assert_eq!(&g.as_bytes()[..4], &[0x0a, 16, 0x0a, 14]);
        assert!(grpc_service(&"x".repeat(200)).is_none());
        let f = frame(b"abc");
        assert_eq!(unframe(&f), Ok(&b"abc"[..]));
        assert_eq!(unframe(&f[..6]), Err(FrameError::Incomplete));
        let mut extra = f.clone();
        extra.push(0);
        assert_eq!(unframe(&extra), Err(FrameError::Invalid));
        let mut compressed = f;
        compressed[0] = 1;
        assert_eq!(unframe(&compressed), Err(FrameError::Invalid));
    }
}
