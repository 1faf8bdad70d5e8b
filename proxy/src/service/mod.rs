//! The MCP-aware HTTP handler: one request in, one response out.
//!
//! A request goes through one-way phases, each in its own module:
//!
//! ```text
//! guard (Host/Origin) → inbound::decode → Judge::decide → Outbound::send → relay
//! ```
//!
//! Every phase returns `Result<_, Refusal>`, and [`rescue`] is the one place
//! where a refusal becomes an answer.

mod bodyless;
mod catalog;
mod exchange;
mod inbound;
mod judge;
pub(crate) mod legacy;
mod metrics;
mod outbound;
mod passthrough;
mod post;
mod rebind;
mod relay;
mod rescue;
mod respond;
mod session;
mod standalone;
mod tasks;

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use self::{catalog::ToolCatalog, legacy::LegacySessions, relay::SseSettings};
pub use self::{
    judge::{Court, Judge, Verdict},
    metrics::HttpMetrics,
    outbound::CALLER_HEADER,
    rescue::{Cause, Refusal},
    session::SESSION_KEY_HEADER,
};
use crate::{
    admission::{Admitted, Limit, Permit},
    body::{Guarded, ProxyBody},
    config::Config,
    guard::HostGuard,
    identity::Principal,
    instance::Instance,
    policy::PolicyHandle,
    session::Sessions,
    upstream::{Target, Upstream},
};
use outbound::Outbound;

/// Everything a request needs, shared by all connections.
pub struct Shared {
    pub upstream: Upstream,
    /// What every judge shares: the policy handle, catalog, metrics.
    pub court: Arc<Court>,
    pub hosts: HostGuard,
    pub legacy: Arc<LegacySessions>,
    pub limits: inbound::Limits,
    /// Largest JSON answer or single SSE event read from the upstream.
    pub max_response_bytes: usize,
    /// What the upstream learns of the caller, and whether the client's
    /// `Authorization` is passed on (explicit opt-in).
    pub upstream_identity: outbound::UpstreamIdentity,
    /// Cancelled when the process starts draining: long-lived GET streams
    /// end then, so that their clients reconnect elsewhere.
    pub draining: CancellationToken,
    /// `Portcullis-Instance` on every response, unless turned off.
    pub instance_header: Option<HeaderValue>,
    /// Sealed client-facing session ids, when `sessions:` is configured.
    pub sessions: Option<Arc<Sessions>>,
    /// The OAuth resource server, when `auth:` is configured and on.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Sessions' GET streams, held across client reconnects.
    pub held: Arc<standalone::HeldStreams>,
}

/// The response header naming this instance (its UUID).
pub const INSTANCE_HEADER: &str = "portcullis-instance";

impl Shared {
    pub fn new(
        config: &Config,
        instance: &Instance,
        policy: Arc<PolicyHandle>,
        metrics: HttpMetrics,
        draining: CancellationToken,
        upstream_tls: Option<rustls::ClientConfig>,
        sessions: Option<Arc<Sessions>>,
    ) -> Result<Self, crate::config::ConfigError> {
        let upstream = Upstream::new(&config.upstream, &config.upstream_uri()?, upstream_tls)?;
        Ok(Self {
            upstream,
            court: Arc::new(Court {
                policy,
                catalog: ToolCatalog::default(),
                metrics,
                instance: instance.id.clone(),
                max_json_depth: config.limits.max_json_depth,
                tasks: Default::default(),
                auth: Default::default(),
            }),
            hosts: HostGuard::new(&config.security.allowed_hosts),
            legacy: Arc::default(),
            limits: inbound::Limits {
                max_body_bytes: config.limits.max_body_bytes,
                max_json_depth: config.limits.max_json_depth,
                body_read_timeout: config.listener.body_read_timeout,
            },
            max_response_bytes: config.limits.max_response_bytes,
            upstream_identity: outbound::UpstreamIdentity::from_config(config, &instance.id)?,
            draining,
            instance_header: config
                .instance_header
                .then(|| HeaderValue::from_str(&instance.uuid.to_string()).ok())
                .flatten(),
            sessions,
            auth: None,
            held: Arc::new(standalone::HeldStreams::new(
                config.sessions.as_ref().map_or(0, |s| s.max_sessions),
            )),
        })
    }

    pub fn metrics(&self) -> &HttpMetrics {
        &self.court.metrics
    }

    fn sse_settings(&self) -> SseSettings {
        SseSettings {
            max_event_bytes: self.max_response_bytes,
            metrics: self.court.metrics.clone(),
        }
    }
}

/// Decrements the in-flight gauge when the response body is finished.
struct InflightGuard(prometheus::IntGauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves one HTTP request from `principal`, forwarding what the policy
/// allows to `target` (chosen by the listener for the whole connection).
/// Admission comes first: a request over a limit is answered `503` before
/// anything of it is read.
pub async fn handle(
    shared: Arc<Shared>,
    principal: Principal,
    target: Target,
    admitted: Admitted,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let permit = match admitted.request() {
        Ok(permit) => permit,
        Err(limit) => return overloaded(&shared, limit),
    };
    let gauge = shared.metrics().inflight().clone();
    gauge.inc();
    let guard = (InflightGuard(gauge), permit);
    let (resp, stream) = route(&shared, principal, target, &admitted, req).await;
    let (mut parts, body) = resp.into_parts();
    if let Some(value) = &shared.instance_header {
        parts.headers.insert(INSTANCE_HEADER, value.clone());
    }
    let body = http_body_util::BodyExt::boxed_unsync(Guarded::new(body, (guard, stream)));
    Response::from_parts(parts, body)
}

/// The metadata paths, then the bearer token: the principal gains the
/// verified token, or the client gets the challenge. A body-less request
/// needs the scopes every request needs (its operation has no name).
async fn authenticate(
    shared: &Shared,
    principal: Principal,
    req: Request<Incoming>,
) -> Result<(Principal, Request<Incoming>), Response<ProxyBody>> {
    let Some(auth) = &shared.auth else {
        return Ok((principal, req));
    };
    if let Some(answer) = auth.intercept(req.method(), req.uri().path()) {
        return Err(answer);
    }
    // A CORS preflight cannot carry credentials (the Fetch standard sends
    // none): it goes to the app stripped to its CORS headers
    // (`bodyless::preflight`), and runs nothing there.
    if bodyless::is_preflight(req.method(), req.headers()) {
        return Ok((principal, req));
    }
    let (parts, body) = req.into_parts();
    let token = auth
        .authenticate(&parts, principal.peer())
        .await
        .map_err(|r| auth.answer(&r))?;
    if parts.method != Method::POST {
        auth.check_scopes(token.as_deref(), &[])
            .map_err(|r| auth.answer(&r))?;
    }
    let principal = match token {
        Some(token) => Principal::new(principal.peer().clone(), Some(token)),
        None => principal,
    };
    Ok((principal, Request::from_parts(parts, body)))
}

/// When a long-lived stream opened with `principal`'s token must end: at
/// the token's expiry (`None`: no token, no deadline).
pub(crate) fn token_deadline(principal: &Principal) -> Option<tokio::time::Instant> {
    let exp = principal.token()?.expires_at;
    let left = exp
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Some(tokio::time::Instant::now() + left)
}

fn overloaded(shared: &Shared, limit: Limit) -> Response<ProxyBody> {
    rescue::answer(
        &Cause::Overloaded(limit.describe()).into(),
        shared.metrics(),
    )
}

/// The response, and the stream place a `GET` holds for as long as its
/// body is open.
async fn route(
    shared: &Arc<Shared>,
    principal: Principal,
    target: Target,
    admitted: &Admitted,
    req: Request<Incoming>,
) -> (Response<ProxyBody>, Option<Permit>) {
    if let Err(why) = shared.hosts.check(req.uri(), req.headers()) {
        let refusal = Refusal::from(Cause::ForbiddenOrigin(why));
        return (rescue::answer(&refusal, shared.metrics()), None);
    }
    // The resource server's part comes before anything reads the request:
    // every method and path on this listener needs the token.
    let (principal, req) = match authenticate(shared, principal, req).await {
        Ok(authenticated) => authenticated,
        Err(answer) => return (answer, None),
    };
    let out = Outbound::new(
        &shared.upstream,
        target,
        &principal,
        &shared.upstream_identity,
    );
    // The future of a request is allocated with its connection and holds
    // the largest state any of its paths could need; so the paths other
    // than `POST` (a stream lives long, the rest are rare) are boxed, each
    // paying one allocation, and a connection holds only what `POST` needs.
    let resp = match *req.method() {
        Method::POST => post::handle(shared, principal, &out, req).await,
        Method::GET => match admitted.stream() {
            Ok(place) => {
                let resp = Box::pin(bodyless::stream(shared, principal, &out, req)).await;
                return (resp, Some(place));
            }
            Err(limit) => overloaded(shared, limit),
        },
        Method::OPTIONS
            if shared.auth.is_some() && bodyless::is_preflight(req.method(), req.headers()) =>
        {
            Box::pin(bodyless::preflight(shared, &out, req)).await
        }
        Method::DELETE | Method::OPTIONS | Method::HEAD => {
            Box::pin(bodyless::passthrough(shared, &principal, &out, req)).await
        }
        _ => rescue::answer(&Cause::MethodNotAllowed.into(), shared.metrics()),
    };
    (resp, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn returns.
    fn future_size<A, B, C, D, E, F: std::future::Future>(_: impl Fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper allocates room for a request's future with every connection,
    /// so its size is memory per connection (64 connections: 64 times).
    /// Paths other than `POST`, the token check's key fetch and a session
    /// rebind are boxed (`route`, `keys::lookup`, `send_in_session`); each
    /// of them unboxed takes this past the bound. A test build lays
    /// futures out larger than a release build (8376 bytes before the
    /// boxing, 7496 after; release: about 6 KiB).
    #[test]
    fn a_request_future_stays_small() {
        let size = future_size(handle);
        assert!(size <= 8 << 10, "a request's future is {size} bytes");
    }
}
