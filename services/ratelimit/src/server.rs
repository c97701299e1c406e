//! The gRPC endpoint over HTTP/2 (h2 directly: one unary method needs no framework): reads one
//! length-prefixed `RateLimitRequest`, asks Redis through one script call, answers one
//! `RateLimitResponse` with `grpc-status: 0` — or a trailers-only gRPC error.

use crate::backend::{Backend, BackendError};
use crate::config::ServiceConfig;
use crate::engine;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response};
use portcullis_ratelimit::rls::{self, RateLimitRequest};
use std::sync::Arc;
use tokio::net::TcpListener;

/// gRPC status codes the service answers with.
pub mod status {
    /// Success.
    pub const OK: u32 = 0;
    /// The message is not a valid `RateLimitRequest`.
    pub const INVALID_ARGUMENT: u32 = 3;
    /// Not `ShouldRateLimit`.
    pub const UNIMPLEMENTED: u32 = 12;
    /// Redis gave no verdict (down, slow, script error): the caller's failure mode decides.
    pub const UNAVAILABLE: u32 = 14;
}

/// Concurrent calls one HTTP/2 connection may have open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// Everything a request needs.
pub struct Service {
    /// Limits per domain.
    pub config: ServiceConfig,
    /// Redis key prefix.
    pub prefix: String,
    /// Redis.
    pub backend: Backend,
}

/// Accepts connections until the listener fails.
pub async fn serve(listener: TcpListener, svc: Arc<Service>) -> std::io::Result<()> {
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        let svc = svc.clone();
        tokio::spawn(async move {
            // Bounded per connection: a gateway keeps far fewer calls in flight (Envoy's
            // circuit breaker), and request headers are a few hundred bytes.
            let Ok(mut conn) = h2::server::Builder::new()
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
                .max_header_list_size(16 * 1024)
                .handshake(sock)
                .await
            else {
                return;
            };
            while let Some(Ok((req, respond))) = conn.accept().await {
                tokio::spawn(handle(req, respond, svc.clone()));
            }
        });
    }
}

async fn read_body(body: &mut RecvStream) -> Result<Vec<u8>, u32> {
    let mut buf = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| status::INVALID_ARGUMENT)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        if buf.len() > 5 + rls::MAX_MESSAGE_BYTES {
            return Err(status::INVALID_ARGUMENT);
        }
    }
    Ok(buf)
}

/// Decides one call: `Ok(message)` or a gRPC status.
async fn decide(req: Request<RecvStream>, svc: &Service) -> Result<Vec<u8>, (u32, &'static str)> {
    if req.uri().path() != rls::PATH {
        return Err((status::UNIMPLEMENTED, "only ShouldRateLimit is served"));
    }
    let mut body = req.into_body();
    let buf = read_body(&mut body)
        .await
        .map_err(|s| (s, "unreadable request body"))?;
    let msg = rls::unframe(&buf).map_err(|_| (status::INVALID_ARGUMENT, "bad gRPC framing"))?;
    let rl = RateLimitRequest::decode(msg)
        .map_err(|_| (status::INVALID_ARGUMENT, "not a RateLimitRequest"))?;
    let plan =
        engine::plan(&svc.config, &svc.prefix, &rl).map_err(|e| (status::INVALID_ARGUMENT, e.0))?;
    let verdicts = if plan.checks.is_empty() {
        Vec::new()
    } else {
        let keys: Vec<String> = plan.checks.iter().map(|c| c.key.clone()).collect();
        let flat = svc
            .backend
            .decide(&keys, &engine::script_args(&plan))
            .await
            .map_err(|e| match e {
                BackendError::Timeout => (status::UNAVAILABLE, "redis timed out"),
                BackendError::Unavailable => (status::UNAVAILABLE, "redis unavailable"),
            })?;
        crate::script::verdicts(&flat, plan.checks.len())
            .ok_or((status::UNAVAILABLE, "unexpected script reply"))?
    };
    Ok(engine::respond(&plan, &verdicts).encode())
}

fn grpc_headers() -> Response<()> {
    let mut r = Response::new(());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

async fn handle(req: Request<RecvStream>, mut respond: SendResponse<Bytes>, svc: Arc<Service>) {
    match decide(req, &svc).await {
        Ok(msg) => {
            let Ok(mut stream) = respond.send_response(grpc_headers(), false) else {
                return;
            };
            let _ = stream.send_data(Bytes::from(rls::frame(&msg)), false);
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let _ = stream.send_trailers(trailers);
        }
        Err((code, message)) => {
            // Trailers-only response: the status travels in the one HEADERS frame.
            let mut r = grpc_headers();
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from(code));
            r.headers_mut()
                .insert("grpc-message", HeaderValue::from_static(message));
            let _ = respond.send_response(r, true);
        }
    }
}
