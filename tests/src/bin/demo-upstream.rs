//! demo-upstream: a small CRM-style customers API behind the Portcullis gateway, for the
//! `make run` demo and the integration tests. It records every request it receives (headers,
//! body) so tests can assert exactly what reached the upstream.
//!
//! std only: one thread per connection, HTTP/1.1 with keep-alive, `content-length` and
//! chunked request bodies. The data is fake but shaped like real CRM records (e-mail, phone,
//! SSN, card number, IBAN, consent flags) so the masking filter has something to mask.

use portcullis_tests::crm::{self, customers};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
const RECORD_LIMIT: usize = 10_000;

/// What the upstream saw of one request.
struct Recorder {
    next_seq: u64,
    records: VecDeque<Value>,
    /// What `GET /.well-known/jwks.json` serves (a local identity provider for the remote-JWKS
    /// tests and the demo): the document (none: 503), a forced status, a delay.
    jwks: Option<Vec<u8>>,
    jwks_status: Option<u16>,
    jwks_delay_ms: u64,
    /// Scripted answers by `x-test-id` (scenario tables describe what the upstream answers).
    scripts: HashMap<String, Resp>,
}

type Shared = Arc<Mutex<Recorder>>;

struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
struct Resp {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    seq: Option<u64>,
    /// `content-encoding` the body was compressed with.
    encoding: Option<&'static str>,
    /// Send with `transfer-encoding: chunked` instead of `content-length`.
    chunked: bool,
    /// More headers, sent after `content-type` (which is left out when empty).
    headers: Vec<(String, String)>,
    /// Header lines sent verbatim (bytes that are not UTF-8 included), each ending in CRLF.
    raw_headers: Vec<u8>,
}

impl Resp {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Resp {
            status,
            content_type,
            body,
            seq: None,
            encoding: None,
            chunked: false,
            headers: Vec::new(),
            raw_headers: Vec::new(),
        }
    }
}

/// `%XX` escapes of a query parameter undone (and `+` as a space).
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (c, hex) {
            (b'%', Some(x)) => {
                out.push(x);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` in a charset: `utf-16le`, `utf-16be`, `utf-32le`, `latin1`, each optionally with a
/// `-bom`, or `utf-8-bom`; anything else leaves it UTF-8.
fn encode_text(text: &str, charset: &str) -> Vec<u8> {
    let (name, bom) = match charset.strip_suffix("-bom") {
        Some(n) => (n, true),
        None => (charset, false),
    };
    let mut out = Vec::new();
    match name {
        "utf-16le" => {
            if bom {
                out.extend_from_slice(&[0xFF, 0xFE]);
            }
            text.encode_utf16()
                .for_each(|u| out.extend_from_slice(&u.to_le_bytes()));
        }
        "utf-16be" => {
            if bom {
                out.extend_from_slice(&[0xFE, 0xFF]);
            }
            text.encode_utf16()
                .for_each(|u| out.extend_from_slice(&u.to_be_bytes()));
        }
        "utf-32le" => {
            if bom {
                out.extend_from_slice(&[0xFF, 0xFE, 0, 0]);
            }
            text.chars()
                .for_each(|c| out.extend_from_slice(&(c as u32).to_le_bytes()));
        }
        "latin1" => out.extend(text.chars().map(|c| u8::try_from(c as u32).unwrap_or(b'?'))),
        _ => {
            if bom {
                out.extend_from_slice(&[0xEF, 0xBB, 0xBF]);
            }
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

fn json_resp(status: u16, v: Value) -> Resp {
    Resp::new(status, "application/json", v.to_string().into_bytes())
}

fn problem(status: u16, title: &str) -> Resp {
    Resp::new(
        status,
        "application/problem+json",
        json!({"type": "about:blank", "title": title, "status": status})
            .to_string()
            .into_bytes(),
    )
}

/// Masking fixtures: bodies shaped to exercise every rule, detector and body path of the pii
/// filter (`?encoding=gzip|deflate|deflate-raw|br|zstd` compresses, `?chunked=1` streams).
fn fixture(tenant: &str, name: &str, query: &str) -> Resp {
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
    };
    let text = |ct: &'static str, b: &str| Resp::new(200, ct, b.as_bytes().to_vec());
    let mut resp = match name {
        "customers" => json_resp(200, json!({"tenant": tenant, "customers": customers(tenant)})),
        // Keys written with escapes (`s\u0073n` is `ssn`), arrays inside arrays.
        "nested" => text(
            "application/json",
            r#"{"accounts":[{"name":"Acme","contacts":[[{"s\u0073n":"123-45-6789","emails":["ada@acme.example.com","grace@acme.example.com"]}]],"notes":"call +1-555-123-4567"}]}"#,
        ),
        "numbers" => text(
            "application/json",
            r#"{"card_as_number":4111111111111111,"created_at":1700000000000,"amount":12.50,"big_id":12345678901234567890123}"#,
        ),
        "text" => text(
            "text/plain; charset=utf-8",
            "Contact ada@acme.example.com or +1-555-123-4567.\nSSN 123-45-6789, card 4111 1111 1111 1111.\n",
        ),
        "csv" => text(
            "text/csv",
            "name,email,ssn\nAda,ada@acme.example.com,123-45-6789\nAlan,alan@acme.example.com,125-45-6782\n",
        ),
        "binary" => Resp::new(200, "application/octet-stream", b"\x00\x01ada@acme.example.com\xff".to_vec()),
        "empty" => Resp::new(204, "application/json", Vec::new()),
        // `?n=` records (at most 5000) for throughput measurements.
        "bulk" => {
            let n: usize = param("n").and_then(|n| n.parse().ok()).unwrap_or(100).min(5000);
            let base = customers(tenant);
            let list: Vec<Value> = (0..n).filter_map(|i| base.get(i % base.len()).cloned()).collect();
            json_resp(200, json!({"tenant": tenant, "customers": list}))
        }
        "invalid" => text("application/json", r#"{"ssn":"123-45-6789""#),
        // `?bytes=N`: about N bytes of CRM account records with nothing personal in them (no
        // rule's field, nothing a detector finds): what masking costs when it changes nothing.
        "clean" => {
            let n: usize = param("bytes").and_then(|n| n.parse().ok()).unwrap_or(1024).clamp(64, 64 << 20);
            let mut b = br#"{"accounts":["#.to_vec();
            let mut i = 0u32;
            loop {
                let item = format!(
                    r#"{{"id":"acct-{i:06}","status":"active","plan":"standard","seats":{},"region":"eu-west","renewal":"quarterly","tags":["renewal","upsell"],"notes":"renewed and upgraded after the annual review"}}"#,
                    i % 97 + 1
                );
                if b.len() + item.len() + 3 > n && i > 0 {
                    break;
                }
                if i > 0 {
                    b.push(b',');
                }
                b.extend_from_slice(item.as_bytes());
                i += 1;
            }
            b.extend_from_slice(b"]}");
            Resp::new(200, "application/json", b)
        }

        // The benchmark's response: 4 KiB of CRM records, fifteen values to mask.
        "bench" => json_resp(200, crm::bench(tenant)),
        // `?bytes=N`: exactly N bytes of JSON (at least 40), one SSN and padding; masking keeps
        // its size, so it measures the raw and decoded limits.
        "filler" => {
            let n: usize = param("bytes").and_then(|n| n.parse().ok()).unwrap_or(1024).clamp(40, 64 << 20);
            let head = r#"{"ssn":"123-45-6789","pad":""#;
            let mut b = head.as_bytes().to_vec();
            if param("pad") == Some("words") {
                // Four words in a pseudo-random order: gzip shrinks it about 14 times (a ratio
                // under the default cap of 100), so a small compressed body decodes large.
                let words: [&[u8]; 4] = [b"alpha ", b"bravo ", b"charlie ", b"delta "];
                let mut state = 12_345u32;
                while b.len() < n - 2 {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345) & 0x7fff_ffff;
                    b.extend_from_slice(words[(state >> 16) as usize % 4]);
                }
                b.truncate(n - 2);
            } else {
                b.resize(n - 2, b'x');
            }
            b.extend_from_slice(b"\"}");
            Resp::new(200, "application/json", b)
        }
        // `?bytes=N`: about N bytes of `{"iban":0}` records; the iban rule tokenizes each value,
        // so the masked body is about 3.6 times the size of the one received.
        "grow" => {
            let n: usize = param("bytes").and_then(|n| n.parse().ok()).unwrap_or(1024).clamp(2, 64 << 20);
            let item = br#"{"iban":0},"#;
            let mut b = b"[".to_vec();
            while b.len() + item.len() < n {
                b.extend_from_slice(item);
            }
            if b.len() > 1 {
                b.pop();
            }
            b.push(b']');
            Resp::new(200, "application/json", b)
        }
        // Card numbers as JSON numbers in every spelling a parser reads as the same value.
        "spelled" => text(
            "application/json",
            r#"{"a":4.111111111111111e15,"b":4111111111111111E0,"c":4111111111111111.0,"d":41111111111111110e-1,"e":-4111111111111111.0,"f":5.555555555554444E+15,"amount":12.50,"ts":1700000000000}"#,
        ),
        // Maps keyed by personal data.
        "keyed" => text(
            "application/json",
            r#"{"by_email":{"ada@acme.example.com":{"tier":"gold"},"grace@acme.example.com":{"tier":"silver"}},"by_phone":{"+15555550123":"mobile"},"by_ssn":{"123-45-6789":true},"by_card":{"4111111111111111":"visa","5555 5555 5555 4444":"mc"}}"#,
        ),
        // Items of one kind side by side.
        "adjacent" => text(
            "text/plain",
            "IBANs GB82WEST12345698765432 DE89370400440532013000; cards 4111111111111111 5555555555554444; phones +15555550123 +15555550124; ssns 123-45-6789 234-56-7890\n",
        ),
        // `?ct=` (repeatable: one content-type header each; escaped), `?charset=` (how the
        // body is encoded, see `encode_text`), `?body=json|text`.
        "typed" => {
            let body = match param("body") {
                Some("text") => "Contact ada@acme.example.com, SSN 123-45-6789.\n".to_string(),
                _ => r#"{"name":"Ada","ssn":"123-45-6789","note":"ada\u0040acme.example.com"}"#.to_string(),
            };
            let mut r = Resp::new(200, "", encode_text(&body, param("charset").unwrap_or("utf-8")));
            for kv in query.split('&') {
                if let Some(v) = kv.strip_prefix("ct=") {
                    r.headers.push(("content-type".into(), unescape(v)));
                }
            }
            r
        }
        // Personal data in response headers.
        "headers" => {
            let mut r = json_resp(200, json!({"ok": true}));
            for (k, v) in [
                ("location", "https://crm.example/customers?ssn=123-45-6789&email=ada%40acme.example.com"),
                ("content-disposition", "attachment; filename=\"ada@acme.example.com.csv\""),
                ("x-debug-user", "ada@acme.example.com"),
                ("set-cookie", "last_card=4111111111111111; Path=/"),
                ("set-cookie", "theme=dark; Path=/"),
                ("x-customer-email", "grace@acme.example.com"),
            ] {
                r.headers.push((k.into(), v.into()));
            }
            r
        }
        // Header values with bytes that are not UTF-8 (obs-text, as HTTP allows).
        "latin1-headers" => {
            let mut r = json_resp(200, json!({"ok": true}));
            r.raw_headers = b"x-note: caf\xe9 ada@acme.example.com\r\nx-plain: \xff\xfe\r\n".to_vec();
            r
        }
        "large" => {
            let item = json!({"email": "ada@acme.example.com", "pad": "x".repeat(1000)});
            json_resp(200, json!({"items": vec![item; 1500]}))
        }
        // 64 MiB of JSON whitespace inside an array: ~64 KiB gzipped.
        "bomb" => {
            let mut body = b"[".to_vec();
            body.resize(64 << 20, b' ');
            body.push(b']');
            let mut r = Resp::new(200, "application/json", compress("gzip", &body));
            r.encoding = Some("gzip");
            return r;
        }
        _ => return problem(404, "Not Found"),
    };
    if let Some(enc) = param("encoding") {
        let (header, body): (&'static str, Vec<u8>) = match enc {
            "gzip" => ("gzip", compress("gzip", &resp.body)),
            "deflate" => ("deflate", compress("deflate", &resp.body)),
            "deflate-raw" => ("deflate", compress("deflate-raw", &resp.body)),
            "br" => ("br", compress("br", &resp.body)),
            // Not really zstd: the filter must refuse the coding without reading it.
            "zstd" => ("zstd", resp.body.clone()),
            _ => return problem(400, "Bad Request"),
        };
        resp.encoding = Some(header);
        resp.body = body;
    }
    resp.chunked = param("chunked") == Some("1");
    resp
}

fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let level = flate2::Compression::default();
    let out = match coding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(data).and_then(|()| e.finish())
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(data).and_then(|()| e.finish())
        }
        "deflate-raw" => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
            e.write_all(data).and_then(|()| e.finish())
        }
        _ => {
            let mut out = Vec::new();
            {
                let mut e = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                let _ = e.write_all(data);
            }
            Ok(out)
        }
    };
    out.unwrap_or_default()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Content Too Large",
        _ => "Status",
    }
}

fn route(req: &Req) -> Resp {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET" | "HEAD", ["healthz"]) => json_resp(200, json!({"status": "ok"})),
        ("GET" | "HEAD", ["api", "v1", "tenants", t, "customers"]) => {
            json_resp(200, json!({"tenant": t, "customers": customers(t)}))
        }
        ("GET" | "HEAD", ["api", "v1", "tenants", t, "customers", id]) => {
            match customers(t).into_iter().find(|c| c["id"] == *id) {
                Some(c) => json_resp(200, c),
                None => problem(404, "Not Found"),
            }
        }
        ("POST", ["api", "v1", "tenants", t, "customers"]) => {
            match serde_json::from_slice::<Value>(&req.body) {
                Ok(Value::Object(mut m)) => {
                    m.insert("id".into(), json!("c-2001"));
                    m.insert("tenant".into(), json!(t));
                    json_resp(201, Value::Object(m))
                }
                _ => problem(400, "Bad Request"),
            }
        }
        // POST too: the benchmark sends a 1 KiB body for schema and reads a masked response.
        ("GET" | "HEAD" | "POST", ["api", "v1", "tenants", t, "fixtures", name]) => {
            fixture(t, name, query)
        }
        // Egress target: an external CRM receiving a sync (the recorder keeps what arrived).
        ("POST" | "PUT", ["crm", "v1", "sync", ..]) => json_resp(202, json!({"accepted": true})),
        ("POST", ["api", "v1", "tenants", t, "reports", "export"]) => json_resp(
            202,
            json!({"export_id": format!("exp-{t}-1"), "status": "queued"}),
        ),
        _ => problem(404, "Not Found"),
    }
}

fn jwks_resp(rec: &Shared) -> Resp {
    let (body, status, delay) = {
        let r = rec.lock().unwrap_or_else(|p| p.into_inner());
        (r.jwks.clone(), r.jwks_status, r.jwks_delay_ms)
    };
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    match (status, body) {
        (Some(s), _) => problem(s, reason(s)),
        (None, Some(b)) => Resp::new(200, "application/json", b),
        (None, None) => problem(503, "Status"),
    }
}

fn admin(req: &Req, rec: &Shared) -> Option<Resp> {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let mut r = rec.lock().unwrap_or_else(|p| p.into_inner());
    match (req.method.as_str(), path) {
        // The JWKS to serve (body: a JWKS document).
        ("PUT", "/__admin/jwks") => {
            r.jwks = Some(req.body.clone());
            Some(Resp::new(204, "application/json", Vec::new()))
        }
        // {"status": 503} forces a status (null: normal), {"delay_ms": 3000} delays answers.
        ("PUT", "/__admin/jwks-behavior") => {
            let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            r.jwks_status = v["status"].as_u64().and_then(|s| u16::try_from(s).ok());
            r.jwks_delay_ms = v["delay_ms"].as_u64().unwrap_or(0);
            Some(Resp::new(204, "application/json", Vec::new()))
        }
        ("GET", "/__admin/requests") => {
            let since: u64 = query
                .strip_prefix("since=")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let list: Vec<Value> = r
                .records
                .iter()
                .filter(|x| x["seq"].as_u64().unwrap_or(0) > since)
                .cloned()
                .collect();
            Some(json_resp(200, json!({ "requests": list })))
        }
        ("GET", "/__admin/last") => Some(match r.records.back() {
            Some(last) => json_resp(200, last.clone()),
            None => problem(404, "Not Found"),
        }),
        // {"id": "…", "status": 200, "headers": [["k", "v"]], "body" or "body_b64": "…"}: requests
        // carrying `x-test-id: …` get exactly this answer (headers as given, no content type added).
        ("PUT", "/__admin/script") => {
            let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let Some(id) = v["id"].as_str() else {
                return Some(problem(400, "Bad Request"));
            };
            let headers: Vec<(String, String)> = v["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|kv| Some((kv[0].as_str()?.to_string(), kv[1].as_str()?.to_string())))
                .collect();
            let body = match v["body_b64"].as_str() {
                Some(b) => {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .unwrap_or_default()
                }
                None => v["body"].as_str().unwrap_or("").as_bytes().to_vec(),
            };
            let status = v["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(200);
            let mut resp = Resp::new(status, "", body);
            resp.headers = headers;
            r.scripts.insert(id.to_string(), resp);
            Some(Resp::new(204, "application/json", Vec::new()))
        }
        ("POST", "/__admin/reset") => {
            r.records.clear();
            Some(Resp::new(204, "application/json", Vec::new()))
        }
        _ => None,
    }
}

fn record(req: &Req, rec: &Shared) -> u64 {
    let mut r = rec.lock().unwrap_or_else(|p| p.into_inner());
    r.next_seq += 1;
    let seq = r.next_seq;
    let headers: Vec<Value> = req.headers.iter().map(|(k, v)| json!([k, v])).collect();
    r.records.push_back(json!({
        "seq": seq,
        "method": req.method,
        "path": req.target,
        "headers": headers,
        "body": String::from_utf8_lossy(&req.body),
        "body_len": req.body.len(),
    }));
    while r.records.len() > RECORD_LIMIT {
        r.records.pop_front();
    }
    seq
}

enum ReadError {
    Closed,
    Bad(u16),
}

fn read_line(r: &mut BufReader<TcpStream>, budget: &mut usize) -> Result<String, ReadError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|_| ReadError::Closed)?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if n > *budget {
        return Err(ReadError::Bad(400));
    }
    *budget -= n;
    let s = String::from_utf8_lossy(&line)
        .trim_end_matches(['\r', '\n'])
        .to_string();
    Ok(s)
}

fn read_request(r: &mut BufReader<TcpStream>) -> Result<Req, ReadError> {
    let mut budget = MAX_HEADER_BYTES;
    let first = read_line(r, &mut budget)?;
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(400));
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, &mut budget)?;
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(ReadError::Bad(400));
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut req = Req {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(r, &mut budget)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| ReadError::Bad(400))?;
            if size == 0 {
                while !read_line(r, &mut budget)?.is_empty() {}
                break;
            }
            if req.body.len() + size > MAX_BODY_BYTES {
                return Err(ReadError::Bad(413));
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            r.read_exact(&mut req.body[start..])
                .map_err(|_| ReadError::Closed)?;
            read_line(r, &mut budget)?;
        }
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(|_| ReadError::Bad(400))?;
        if len > MAX_BODY_BYTES {
            return Err(ReadError::Bad(413));
        }
        req.body.resize(len, 0);
        r.read_exact(&mut req.body).map_err(|_| ReadError::Closed)?;
    }
    Ok(req)
}

fn write_response(s: &mut TcpStream, resp: &Resp, head: bool, close: bool) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    if !resp.content_type.is_empty() {
        out.push_str(&format!("content-type: {}\r\n", resp.content_type));
    }
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if resp.chunked {
        out.push_str("transfer-encoding: chunked\r\n");
    } else if resp.status != 204 {
        out.push_str(&format!("content-length: {}\r\n", resp.body.len()));
    }
    if let Some(enc) = resp.encoding {
        out.push_str(&format!("content-encoding: {enc}\r\n"));
    }
    if let Some(seq) = resp.seq {
        out.push_str(&format!("x-demo-request-seq: {seq}\r\n"));
    }
    if close {
        out.push_str("connection: close\r\n");
    }
    let mut out = out.into_bytes();
    out.extend_from_slice(&resp.raw_headers);
    out.extend_from_slice(b"\r\n");
    // One write per response: a separate body write would meet Nagle + delayed ACK (40 ms).
    let mut buf = out;
    if !head && resp.status != 204 {
        if resp.chunked {
            for chunk in resp.body.chunks(700) {
                buf.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                buf.extend_from_slice(chunk);
                buf.extend_from_slice(b"\r\n");
            }
            buf.extend_from_slice(b"0\r\n\r\n");
        } else {
            buf.extend_from_slice(&resp.body);
        }
    }
    s.write_all(&buf)?;
    s.flush()
}

fn serve(stream: TcpStream, rec: Shared, quiet: bool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let req = match read_request(&mut reader) {
            Ok(r) => r,
            Err(ReadError::Closed) => return,
            Err(ReadError::Bad(status)) => {
                let _ = write_response(&mut writer, &problem(status, reason(status)), false, true);
                return;
            }
        };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let resp = match admin(&req, &rec) {
            Some(r) => r,
            None => {
                let seq = record(&req, &rec);
                let scripted = req.header("x-test-id").and_then(|id| {
                    let r = rec.lock().unwrap_or_else(|p| p.into_inner());
                    r.scripts.get(id).cloned()
                });
                let resp = if let Some(s) = scripted {
                    s
                } else if req.target.split('?').next() == Some("/.well-known/jwks.json") {
                    jwks_resp(&rec)
                } else {
                    route(&req)
                };
                Resp {
                    seq: Some(seq),
                    ..resp
                }
            }
        };
        if !quiet {
            eprintln!("{} {} {}", req.method, req.target, resp.status);
        }
        if write_response(&mut writer, &resp, req.method == "HEAD", close).is_err() || close {
            return;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut listen =
        std::env::var("DEMO_UPSTREAM_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let mut quiet = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => listen = it.next().cloned().unwrap_or(listen),
            "--quiet" => quiet = true,
            other => {
                eprintln!("demo-upstream: unknown argument {other}\nusage: demo-upstream [--listen 127.0.0.1:8080] [--quiet]");
                std::process::exit(2);
            }
        }
    }
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-upstream: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("demo-upstream: {e}");
            std::process::exit(1);
        }
    }
    let _ = std::io::stdout().flush();
    let rec: Shared = Arc::new(Mutex::new(Recorder {
        next_seq: 0,
        records: VecDeque::new(),
        jwks: std::env::var("DEMO_UPSTREAM_JWKS")
            .ok()
            .and_then(|p| std::fs::read(p).ok()),
        jwks_status: None,
        jwks_delay_ms: 0,
        scripts: HashMap::new(),
    }));
    for stream in listener.incoming().flatten() {
        let rec = rec.clone();
        std::thread::spawn(move || serve(stream, rec, quiet));
    }
}
