//! A scripted HTTP/1.1 upstream on loopback: it records every request it reads and answers each
//! as the test's script says (a status, a status after a delay, or a dropped connection), so
//! Envoy's retries, timeouts and ejections can be driven and counted from the upstream's side.

use crate::fail;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the upstream does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answer with this status (a small JSON body).
    Status(u16),
    /// Wait, then answer with this status.
    After(Duration, u16),
    /// Close the connection without answering.
    Close,
}

/// The script: the request's index among all requests this upstream has read (0-based) and
/// its method and path; returns what to do.
pub type Script = dyn Fn(usize, &str, &str) -> Reply + Send + Sync;

/// A running scripted upstream (its threads live until the test process ends).
pub struct StubUpstream {
    /// Its address on 127.0.0.1.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl StubUpstream {
    /// Starts one on a free loopback port.
    pub fn start(script: impl Fn(usize, &str, &str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| fail(format!("stub upstream: {e}")));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| fail(format!("stub upstream: {e}")));
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let shared = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (seen, script) = (Arc::clone(&shared), Arc::clone(&script));
                std::thread::spawn(move || serve(conn, &seen, &*script));
            }
        });
        StubUpstream { addr, seen }
    }

    /// Every request read so far, as (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// How many requests it has read.
    pub fn count(&self) -> usize {
        self.requests().len()
    }
}

/// Serves one keep-alive connection until the peer closes it or the script drops it.
fn serve(conn: TcpStream, seen: &Mutex<Vec<(String, String)>>, script: &Script) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let index = {
            let Ok(mut s) = seen.lock() else { return };
            s.push((method.clone(), path.clone()));
            s.len() - 1
        };
        let (delay, status) = match script(index, &method, &path) {
            Reply::Close => return,
            Reply::Status(s) => (Duration::ZERO, s),
            Reply::After(d, s) => (d, s),
        };
        std::thread::sleep(delay);
        let body = format!("{{\"stub\":{index},\"status\":{status}}}");
        let answer = format!(
            "HTTP/1.1 {status} Stub\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
