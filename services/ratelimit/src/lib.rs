//! Portcullis rate limit service: Envoy's rate limit service protocol
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`) over HTTP/2, with every
//! limit's state in Redis — one atomic script call per decision, token buckets and fixed
//! windows with the ratelimit filter's semantics — so the service is stateless and any number
//! of replicas can serve one fleet of gateways.
//!
//! [`config`] (limits per domain, generated from the policy files), [`engine`] (request →
//! Redis keys → response, pure), [`script`] (the Lua arithmetic), [`backend`] (Redis with
//! deadlines and reconnects), [`server`] (gRPC over h2), [`client`] (tests and bench).

pub mod backend;
pub mod client;
pub mod config;
pub mod engine;
pub mod script;
pub mod server;
