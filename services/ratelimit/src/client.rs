//! A minimal `ShouldRateLimit` client over h2, for the service's own tests and `portcullis-rls
//! bench` (Envoy is the client in production).

use bytes::Bytes;
use h2::client::SendRequest;
use http::Request;
use portcullis_ratelimit::rls::{self, RateLimitRequest, RateLimitResponse};
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// An open HTTP/2 connection to the service.
#[derive(Clone)]
pub struct Client {
    send: SendRequest<Bytes>,
}

impl Client {
    /// Connects (the connection is driven by a spawned task).
    pub async fn connect(addr: SocketAddr) -> Result<Client, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) = h2::client::handshake(tcp)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Client { send })
    }

    /// One call: the response, or the gRPC status (and message) of a failure.
    pub async fn should_rate_limit(
        &mut self,
        req: &RateLimitRequest,
    ) -> Result<RateLimitResponse, (u32, String)> {
        let err = |m: String| (u32::MAX, m);
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| err(e.to_string()))?;
        let http_req = Request::post(format!("http://rls{}", rls::PATH))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| err(e.to_string()))?;
        let (resp, mut stream) = send
            .send_request(http_req, false)
            .map_err(|e| err(e.to_string()))?;
        stream
            .send_data(Bytes::from(rls::frame(&req.encode())), true)
            .map_err(|e| err(e.to_string()))?;
        let resp = resp.await.map_err(|e| err(e.to_string()))?;
        let grpc_status = |h: &http::HeaderMap| {
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
        };
        if let Some(s) = grpc_status(resp.headers()).filter(|s| *s != 0) {
            let m = resp
                .headers()
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            return Err((s, m));
        }
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| err(e.to_string()))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            buf.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(|e| err(e.to_string()))?;
        match trailers.as_ref().and_then(grpc_status) {
            Some(0) => {}
            other => return Err((other.unwrap_or(u32::MAX), "no grpc-status 0".into())),
        }
        let msg = rls::unframe(&buf).map_err(|_| err("bad framing".into()))?;
        RateLimitResponse::decode(msg).map_err(|e| err(e.to_string()))
    }
}
