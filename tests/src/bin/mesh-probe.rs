//! mesh-probe: a bounded HTTP/1.1 client for the docker-compose harness — container health
//! checks (exit status) and the compose tests' probes from inside the mesh (one JSON line).
//!
//! ```text
//! mesh-probe [--expect STATUS] [--timeout-ms N] [--method M] [-H 'name: value']... [--data BODY] http://HOST:PORT/PATH
//! mesh-probe --sleep        # idle forever (a container that only exists to be exec'ed into)
//! ```
//!
//! Prints `{"status":…,"headers":[[k,v],…],"body":"…"}`, or `{"error":"refused|timeout|resolve|io","detail":…}`
//! when no answer came. Exit status: 0 answered (and matched `--expect`), 1 answered otherwise,
//! 2 no answer. Every connect, read and write is bounded by the timeout (default 5 s).

use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

struct Args {
    expect: Option<u16>,
    timeout: Duration,
    method: String,
    headers: Vec<(String, String)>,
    data: Option<String>,
    url: String,
}

fn usage() -> ! {
    eprintln!("usage: mesh-probe [--expect STATUS] [--timeout-ms N] [--method M] [-H 'name: value'] [--data BODY] http://HOST:PORT/PATH | --sleep");
    std::process::exit(64)
}

fn parse_args() -> Args {
    let mut a = Args {
        expect: None,
        timeout: Duration::from_secs(5),
        method: String::new(),
        headers: Vec::new(),
        data: None,
        url: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sleep" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "--expect" => a.expect = it.next().and_then(|v| v.parse().ok()).or_else(|| usage()),
            "--timeout-ms" => {
                a.timeout = Duration::from_millis(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
            "--method" => a.method = it.next().unwrap_or_else(|| usage()),
            "-H" => {
                let h = it.next().unwrap_or_else(|| usage());
                let (k, v) = h.split_once(':').unwrap_or_else(|| usage());
                a.headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            "--data" => a.data = Some(it.next().unwrap_or_else(|| usage())),
            url if url.starts_with("http://") => a.url = url.to_string(),
            _ => usage(),
        }
    }
    if a.url.is_empty() {
        usage();
    }
    if a.method.is_empty() {
        a.method = if a.data.is_some() { "POST" } else { "GET" }.into();
    }
    a
}

fn fail(kind: &str, detail: &str) -> ! {
    println!("{}", json!({ "error": kind, "detail": detail }));
    std::process::exit(2)
}

fn io_kind(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "refused",
        TimedOut | WouldBlock => "timeout",
        _ => "io",
    }
}

fn main() {
    let a = parse_args();
    let rest = a.url.trim_start_matches("http://");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = match authority.to_socket_addrs().map(|mut it| it.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) => fail("resolve", authority),
        Err(e) => fail("resolve", &e.to_string()),
    };
    let stream = TcpStream::connect_timeout(&addr, a.timeout)
        .unwrap_or_else(|e| fail(io_kind(&e), &e.to_string()));
    let _ = stream.set_read_timeout(Some(a.timeout));
    let _ = stream.set_write_timeout(Some(a.timeout));
    let mut req = format!("{} {path} HTTP/1.1\r\n", a.method);
    if !a
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"))
    {
        req.push_str(&format!("host: {authority}\r\n"));
    }
    for (k, v) in &a.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = a.data.clone().unwrap_or_default();
    if a.data.is_some() {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("connection: close\r\n\r\n");
    req.push_str(&body);
    let mut w = &stream;
    if let Err(e) = w.write_all(req.as_bytes()) {
        fail(io_kind(&e), &e.to_string());
    }
    let mut r = BufReader::new(&stream);
    let mut line = String::new();
    if let Err(e) = r.read_line(&mut line) {
        fail(io_kind(&e), &e.to_string());
    }
    let status: u16 = match line.split(' ').nth(1).and_then(|s| s.parse().ok()) {
        Some(s) => s,
        None => fail("io", "no HTTP status line"),
    };
    let mut headers = Vec::new();
    let mut chunked = false;
    loop {
        let mut h = String::new();
        match r.read_line(&mut h) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => fail(io_kind(&e), &e.to_string()),
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
            headers.push((k, v));
        }
    }
    let mut raw = Vec::new();
    if let Err(e) = r.read_to_end(&mut raw) {
        fail(io_kind(&e), &e.to_string());
    }
    let body = if chunked { dechunk(&raw) } else { raw };
    println!(
        "{}",
        json!({ "status": status, "headers": headers, "body": String::from_utf8_lossy(&body) })
    );
    let ok = a
        .expect
        .map_or((200..300).contains(&status), |e| e == status);
    std::process::exit(if ok { 0 } else { 1 })
}

/// Chunked transfer coding, read to its end (connection: close bounds it).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..pos])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[pos + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
    out
}
