//! The MCP-aware HTTP handler: one request in, one response out.
//!
//! Each request goes through explicit phases: hygiene checks (Host/Origin,
//! size, encoding), decoding, policy, forwarding, and response relaying.
//! Errors become JSON-RPC error responses here and nowhere else.

mod body;
mod catalog;
mod exchange;
mod forward;
mod legacy;
mod post;
mod relay;
mod respond;

use std::{sync::Arc, time::Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

pub use self::body::{BoxError, Guarded, ProxyBody};
use self::{catalog::ToolCatalog, legacy::LegacySessions};
use crate::{
    config::Config,
    guard::HostGuard,
    identity::Caller,
    mcp::{ErrorCode, RpcError},
    metrics::Metrics,
    policy::PolicyHandle,
    upstream::Upstream,
};

/// Everything a request needs, shared by all connections.
pub struct Shared {
    pub config: Arc<Config>,
    pub upstream: Upstream,
    pub policy: Arc<PolicyHandle>,
    pub metrics: Metrics,
    pub catalog: ToolCatalog,
    /// This sidecar's instance identity, as policies see it.
    pub instance: String,
    pub hosts: HostGuard,
    pub legacy: LegacySessions,
    /// Cancelled when the process starts draining: long-lived GET streams
    /// end then, so that their clients reconnect elsewhere.
    pub draining: CancellationToken,
}

impl Shared {
    pub fn new(
        config: Arc<Config>,
        policy: Arc<PolicyHandle>,
        metrics: Metrics,
        draining: CancellationToken,
        upstream_tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, crate::config::ConfigError> {
        let upstream = Upstream::new(&config.upstream, &config.upstream_uri()?, upstream_tls)?;
        Ok(Self {
            hosts: HostGuard::new(&config.security.allowed_hosts),
            catalog: ToolCatalog::default(),
            instance: config.instance_id(),
            config,
            upstream,
            policy,
            metrics,
            legacy: LegacySessions::default(),
            draining,
        })
    }
}

/// Decrements the in-flight gauge when the response body is finished.
struct InflightGuard(prometheus::IntGauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves one HTTP request from `caller`.
pub async fn handle(
    shared: Arc<Shared>,
    caller: Caller,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let gauge = shared.metrics.inflight().clone();
    gauge.inc();
    let guard = InflightGuard(gauge);
    let started = Instant::now();
    let resp = route(&shared, caller, req, started).await;
    let (parts, body) = resp.into_parts();
    let body = http_body_util::BodyExt::boxed_unsync(Guarded::new(body, guard));
    Ok(Response::from_parts(parts, body))
}

async fn route(
    shared: &Arc<Shared>,
    caller: Caller,
    req: Request<Incoming>,
    started: Instant,
) -> Response<ProxyBody> {
    if let Err(why) = shared.hosts.check(req.uri(), req.headers()) {
        shared.metrics.rejected(ErrorCode::ForbiddenOrigin.name());
        tracing::warn!(%why, "refused request: DNS-rebinding protection");
        let err = RpcError::new(ErrorCode::ForbiddenOrigin, why);
        return respond::error(StatusCode::FORBIDDEN, &err);
    }
    match *req.method() {
        Method::POST => post::handle(shared, &caller, req, started).await,
        Method::GET => forward::stream(shared, &caller, req).await,
        Method::DELETE | Method::OPTIONS | Method::HEAD => {
            forward::passthrough(shared, &caller, req).await
        }
        _ => {
            let err = RpcError::new(ErrorCode::InvalidRequest, "method not allowed");
            respond::error(StatusCode::METHOD_NOT_ALLOWED, &err)
        }
    }
}
