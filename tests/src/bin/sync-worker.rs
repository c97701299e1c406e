//! sync-worker: the docker-compose mesh's second service. On
//! `POST /api/v1/tenants/{tenant}/sync` it reads the tenant's customers from the CRM API and
//! pushes them to an external CRM — both calls through its own sidecar's egress listeners, never
//! directly (its private network reaches nothing else):
//!
//! - `--mesh-egress HOST:PORT`: the sidecar's mesh egress (`Host: crm-api`), which opens mTLS
//!   to the CRM API's sidecar. The caller's token goes along; that sidecar verifies it again,
//!   so the worker can read no more than its caller may.
//! - `--external-egress HOST:PORT`: the sidecar's external egress, where pii masks the body.
//!   The worker sends the records as it read them and no credentials.
//!
//! Answers `{"synced":N,"crm_status":S,"unmasked_ssn_read":K}` (counts only, never values; K
//! shows what the egress had to mask), or problem+json with a reason: `crm_api_unavailable`
//! (503), `crm_api_refused` (502, with the upstream's status and reason),
//! `external_crm_unavailable` (503), `external_crm_refused` (502).

use portcullis_tests::http::{self, Request};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const MAX_BODY: usize = 64 * 1024;

struct Config {
    mesh: SocketAddr,
    external: SocketAddr,
}

struct Incoming {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(s: &TcpStream) -> Option<Incoming> {
    let mut r = BufReader::new(s.take(MAX_BODY as u64 + 16 * 1024));
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if len > MAX_BODY {
        return None;
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Incoming {
        method,
        path,
        headers,
        body,
    })
}

fn respond(mut s: &TcpStream, status: u16, v: &Value) {
    let body = v.to_string();
    let ct = if status >= 400 {
        "application/problem+json"
    } else {
        "application/json"
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\ncontent-type: {ct}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn problem(status: u16, reason: &str, extra: Value) -> (u16, Value) {
    let mut v = json!({"type": "about:blank", "status": status, "reason": reason});
    if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
    }
    (status, v)
}

/// `ddd-dd-dddd`: an SSN that reached the worker unmasked.
fn is_raw_ssn(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 11
        && b.iter().enumerate().all(|(i, c)| match i {
            3 | 6 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

fn sync(cfg: &Config, tenant: &str, auth: Option<&str>, body: &[u8]) -> (u16, Value) {
    let dry_run = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["dry_run"].as_bool())
        .unwrap_or(false);
    let mut read =
        Request::get(&format!("/api/v1/tenants/{tenant}/customers")).header("host", "crm-api");
    if let Some(a) = auth {
        read = read.header("authorization", a);
    }
    let resp = match http::send(cfg.mesh, &read) {
        Ok(r) => r,
        Err(e) => {
            return problem(
                503,
                "crm_api_unavailable",
                json!({"detail": e.kind().to_string()}),
            )
        }
    };
    if resp.status != 200 {
        let status = if resp.status == 503 { 503 } else { 502 };
        return problem(
            status,
            if status == 503 {
                "crm_api_unavailable"
            } else {
                "crm_api_refused"
            },
            json!({"upstream_status": resp.status, "upstream_reason": resp.header("x-portcullis-reason")}),
        );
    }
    let records = serde_json::from_slice::<Value>(&resp.body)
        .ok()
        .and_then(|v| v.get("customers").cloned())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let unmasked = records
        .iter()
        .filter(|r| r["ssn"].as_str().is_some_and(is_raw_ssn))
        .count();
    if dry_run {
        return (
            200,
            json!({"synced": 0, "read": records.len(), "unmasked_ssn_read": unmasked}),
        );
    }
    let push = Request::post(
        &format!("/crm/v1/sync/{tenant}"),
        json!({"tenant": tenant, "records": records}).to_string(),
    )
    .header("host", "external-crm")
    .header("content-type", "application/json");
    match http::send(cfg.external, &push) {
        Ok(r) if (200..300).contains(&r.status) => (
            200,
            json!({"synced": records.len(), "crm_status": r.status, "unmasked_ssn_read": unmasked}),
        ),
        Ok(r) => {
            let status = if r.status == 503 { 503 } else { 502 };
            problem(
                status,
                if status == 503 {
                    "external_crm_unavailable"
                } else {
                    "external_crm_refused"
                },
                json!({"upstream_status": r.status, "upstream_reason": r.header("x-portcullis-reason")}),
            )
        }
        Err(e) => problem(
            503,
            "external_crm_unavailable",
            json!({"detail": e.kind().to_string()}),
        ),
    }
}

fn serve(s: TcpStream, cfg: &Config) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let Some(req) = read_request(&s) else {
        let (st, v) = problem(400, "bad_request", json!({}));
        respond(&s, st, &v);
        return;
    };
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let auth = req
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str());
    let (status, v) = match (req.method.as_str(), segs.as_slice()) {
        ("GET" | "HEAD", ["healthz"]) => (200, json!({"status": "ok"})),
        ("POST", ["api", "v1", "tenants", t, "sync"]) => sync(cfg, t, auth, &req.body),
        _ => problem(404, "not_found", json!({})),
    };
    respond(&s, status, &v);
}

fn main() {
    let mut listen = "127.0.0.1:8080".to_string();
    let mut mesh = None;
    let mut external = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--listen", Some(v)) => listen = v,
            ("--mesh-egress", Some(v)) => mesh = v.parse().ok(),
            ("--external-egress", Some(v)) => external = v.parse().ok(),
            _ => {
                eprintln!("usage: sync-worker --listen ADDR --mesh-egress IP:PORT --external-egress IP:PORT");
                std::process::exit(64);
            }
        }
    }
    let (Some(mesh), Some(external)) = (mesh, external) else {
        eprintln!("sync-worker: --mesh-egress and --external-egress (IP:PORT) are required");
        std::process::exit(64);
    };
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sync-worker: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    let cfg = std::sync::Arc::new(Config { mesh, external });
    println!("sync-worker listening on {listen}");
    let _ = std::io::stdout().flush();
    for s in listener.incoming().flatten() {
        let cfg = cfg.clone();
        std::thread::spawn(move || serve(s, &cfg));
    }
}
