//! A minimal HTTP/1.1 client for tests that must send byte-exact requests (`/a/%2e%2e/b`, `//`,
//! duplicate `Authorization` headers, invalid UTF-8 bodies) which ordinary clients normalise
//! or refuse.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Read/write timeout, so a hung proxy fails a test instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A response as received.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order (names as sent by the server).
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header with this name, in order.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Body as text (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body as JSON; panics with the status and body when it is not JSON (tests only).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            crate::fail(format!(
                "response {} is not JSON ({e}): {}",
                self.status,
                self.body_str()
            ))
        })
    }
}

/// A request to send verbatim.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Request target, sent as is.
    pub target: String,
    /// Headers in order; duplicates allowed.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<Vec<u8>>,
    /// Send the body with `transfer-encoding: chunked`.
    pub chunked: bool,
    /// Chunked, in chunks of this many bytes, each written on its own after a short pause: Envoy
    /// then reads the body in many reads, as from a slow network, instead of one.
    pub paced: Option<usize>,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: &str, target: &str) -> Self {
        Request {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: None,
            chunked: false,
            paced: None,
        }
    }

    /// `GET target`.
    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    /// `POST target` with a body.
    pub fn post(target: &str, body: impl Into<Vec<u8>>) -> Self {
        let mut r = Self::new("POST", target);
        r.body = Some(body.into());
        r
    }

    /// Appends a header (duplicates allowed).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Appends `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Sends the body chunked (in two chunks or more).
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// Sends the body chunked, `piece` bytes a chunk, one write (and a pause) per chunk.
    pub fn paced(mut self, piece: usize) -> Self {
        self.chunked = true;
        self.paced = Some(piece.max(1));
        self
    }

    #[cfg(test)]
    fn encode(&self, close: bool) -> Vec<u8> {
        self.encode_parts(close).concat()
    }

    /// The request as the writes that send it: one, or with [`Request::paced`] the head and
    /// then one write per chunk.
    fn encode_parts(&self, close: bool) -> Vec<Vec<u8>> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        let has = |n: &str| self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if !has("host") {
            out.extend_from_slice(b"host: localhost\r\n");
        }
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if close && !has("connection") {
            out.extend_from_slice(b"connection: close\r\n");
        }
        match (&self.body, self.chunked) {
            (Some(b), true) => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                let piece = self.paced.unwrap_or(b.len().div_ceil(2)).max(1);
                let mut parts = vec![out];
                for part in b.chunks(piece) {
                    let mut chunk = format!("{:x}\r\n", part.len()).into_bytes();
                    chunk.extend_from_slice(part);
                    chunk.extend_from_slice(b"\r\n");
                    parts.push(chunk);
                }
                parts.push(b"0\r\n\r\n".to_vec());
                if self.paced.is_none() {
                    return vec![parts.concat()];
                }
                return parts;
            }
            (Some(b), false) => {
                out.extend_from_slice(format!("content-length: {}\r\n\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            (None, _) => out.extend_from_slice(b"\r\n"),
        }
        vec![out]
    }
}

/// One keep-alive connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects with read/write timeouts.
    pub fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(s),
        })
    }

    /// Sends a request on this connection and reads the response.
    pub fn send(&mut self, req: &Request) -> std::io::Result<Response> {
        self.send_inner(req, false)
    }

    fn send_inner(&mut self, req: &Request, close: bool) -> std::io::Result<Response> {
        let parts = req.encode_parts(close);
        let paced = parts.len() > 1;
        for (i, part) in parts.iter().enumerate() {
            if paced && i > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if let Err(e) = self.reader.get_mut().write_all(part) {
                // Refused mid-body: the answer was sent before the connection closed.
                if paced && i > 0 {
                    break;
                }
                return Err(e);
            }
        }
        read_response(&mut self.reader, req.method == "HEAD")
    }
}

/// Sends one request on a new connection (`connection: close`).
pub fn send(addr: SocketAddr, req: &Request) -> std::io::Result<Response> {
    Conn::connect(addr)?.send_inner(req, true)
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_response(r: &mut BufReader<TcpStream>, head: bool) -> std::io::Result<Response> {
    let status_line = read_line(r)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| bad("bad header line"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    let mut body = Vec::new();
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !read_line(r)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            read_line(r)?;
        }
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response { body, ..resp })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn requests_are_encoded_verbatim() {
        let r = Request::get("/a/%2e%2e//b")
            .bearer("t1")
            .bearer("t2")
            .encode(false);
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("GET /a/%2e%2e//b HTTP/1.1\r\nhost: localhost\r\n"));
        assert_eq!(s.matches("authorization: Bearer").count(), 2);
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn chunked_bodies_are_split() {
        let s = String::from_utf8(Request::post("/x", "abcdef").chunked().encode(true)).unwrap();
        assert!(
            s.contains("transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"),
            "{s}"
        );
        assert!(s.contains("connection: close"));
    }

    #[test]
    fn paced_bodies_are_one_write_per_chunk() {
        let parts = Request::post("/x", "abcdefg").paced(3).encode_parts(false);
        let parts: Vec<String> = parts
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect();
        assert!(parts[0].ends_with("transfer-encoding: chunked\r\n\r\n"));
        assert_eq!(
            parts[1..],
            ["3\r\nabc\r\n", "3\r\ndef\r\n", "1\r\ng\r\n", "0\r\n\r\n"]
        );
    }
}
