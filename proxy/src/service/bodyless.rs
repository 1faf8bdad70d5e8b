//! Body-less methods. GET opens an SSE stream (standalone, resumed, or the
//! legacy HTTP+SSE one), relayed event by event with lists filtered and
//! results judged; DELETE, OPTIONS and HEAD are relayed as they are.

use std::sync::Arc;

use bytes::Bytes;
use http::{request::Parts, Method, Request, Response};
use hyper::body::Incoming;

/// The SSE resumption header.
const LAST_EVENT_ID: &str = "last-event-id";

use super::{
    exchange::Exchange,
    judge::Judge,
    legacy,
    outbound::{self, Outbound},
    relay,
    rescue::{self, Cause, Refusal},
    session::{self, Bound},
    standalone::{self, Plan},
    Shared,
};
use crate::{
    body::ProxyBody,
    identity::Principal,
    mcp::{content_type::BodyType, headers as mcp_headers},
};

/// The checks before a body-less request is forwarded, and its session.
fn admit(shared: &Shared, principal: &Principal, parts: &Parts) -> Result<Bound, Refusal> {
    // A doubled Mcp-Session-Id (or any MCP header) could be read as either
    // value by the server: refused here as on POST.
    mcp_headers::check_repeated(&parts.headers)
        .map_err(|e| Refusal::from(Cause::HeaderMismatch(e)))?;
    session::bind(shared, principal, &parts.headers, None)
}

/// Forwards a body-less request and waits for the answer's head.
async fn forward(
    shared: &Arc<Shared>,
    principal: &Principal,
    out: &Outbound<'_>,
    parts: &Parts,
    bound: &Bound,
) -> Result<Response<Incoming>, Refusal> {
    let build = || out.request(parts, Bytes::new());
    match session::send(shared, out, principal, parts, bound, build).await {
        // With sessions, a GET stream opened while the app restarts waits
        // for it (within the request timeout): nothing runs on a GET, so
        // sending it again is always safe. (Found by `make soak-sessions`:
        // the TypeScript client reconnecting its stream got 502s.)
        Err(r)
            if shared.sessions.is_some() && parts.method == Method::GET && r.is_unavailable() =>
        {
            let resend = session::resender(
                shared,
                out.target(),
                principal,
                parts.clone(),
                Bytes::new(),
                bound.clone(),
                "stream_reopen",
            );
            resend().await
        }
        sent => sent,
    }
}

/// DELETE and other body-less methods: forwarded, answer relayed as is.
pub async fn passthrough(
    shared: &Arc<Shared>,
    principal: &Principal,
    out: &Outbound<'_>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (parts, _body) = req.into_parts();
    let bound = match admit(shared, principal, &parts) {
        Ok(bound) => bound,
        Err(refusal) => return rescue::answer(&refusal, shared.metrics()),
    };
    match forward(shared, principal, out, &parts, &bound).await {
        Ok(resp) => outbound::relay_raw(resp),
        Err(refusal) => rescue::upstream_failure(&refusal, &[], &[], shared.metrics()),
    }
}

/// Whether `headers` make a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`, as browsers send it (with no
/// credentials, which the Fetch standard forbids on a preflight).
pub fn is_preflight(method: &Method, headers: &http::HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(http::header::ORIGIN)
        && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// A CORS preflight when a token is required: it cannot carry one, so it
/// reaches the app unauthenticated, and therefore carries nothing else
/// either. Only the preflight's own headers go up (no cookie, session id
/// or body), and only the app's `Access-Control-*` and `Vary` headers come
/// back, with no body: an unauthenticated request learns the app's CORS
/// policy and nothing more.
pub async fn preflight(
    shared: &Arc<Shared>,
    out: &Outbound<'_>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    const ASKED: [http::HeaderName; 3] = [
        http::header::ORIGIN,
        http::header::ACCESS_CONTROL_REQUEST_METHOD,
        http::header::ACCESS_CONTROL_REQUEST_HEADERS,
    ];
    let (mut parts, _body) = req.into_parts();
    let mut asked = http::HeaderMap::new();
    for name in ASKED {
        for value in parts.headers.get_all(&name) {
            asked.append(name.clone(), value.clone());
        }
    }
    parts.headers = asked;
    let sent = match out.request(&parts, Bytes::new()) {
        Ok(req) => out.send(req).await,
        Err(refusal) => Err(refusal),
    };
    let resp = match sent {
        Ok(resp) => resp,
        Err(refusal) => return rescue::upstream_failure(&refusal, &[], &[], shared.metrics()),
    };
    let mut answer = Response::new(crate::body::empty());
    *answer.status_mut() = resp.status();
    for (name, value) in resp.headers() {
        let n = name.as_str();
        if n.starts_with("access-control-") || n == "vary" {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    answer
}

/// GET: an SSE stream relayed event by event, or any other answer as is.
/// The stream's judge reads the policy in force at each event, so a reload
/// reaches streams that stay open for hours. In a session this replica
/// holds a record of, the stream is held ([`standalone`]).
pub async fn stream(
    shared: &Arc<Shared>,
    principal: Principal,
    out: &Outbound<'_>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, _body) = req.into_parts();
    let bound = match admit(shared, &principal, &parts) {
        Ok(bound) => bound,
        Err(refusal) => return rescue::answer(&refusal, shared.metrics()),
    };
    if let Some(answer) = held(shared, &principal, out, &mut parts, &bound).await {
        return answer;
    }
    let resp = match forward(shared, &principal, out, &parts, &bound).await {
        Ok(resp) => resp,
        Err(refusal) => return rescue::upstream_failure(&refusal, &[], &[], shared.metrics()),
    };
    match is_event_stream(&resp) {
        Ok(true) => {}
        Ok(false) => return outbound::relay_raw(resp),
        Err(refusal) => return rescue::upstream_failure(&refusal, &[], &[], shared.metrics()),
    }
    let head = outbound::response_head(&resp, false);
    // The stream is the client's: it ends when the token that opened it
    // expires.
    let deadline = super::token_deadline(&principal);
    let relayed = relay_stream(shared, principal, out, (parts, bound), resp, deadline);
    outbound::with_body(head, relayed)
}

/// A GET in a session this replica holds a record of: served from the
/// session's held stream ([`standalone`]), or refused (another session's
/// event id). `None`: forwarded as usual, without an event id of ours.
async fn held(
    shared: &Arc<Shared>,
    principal: &Principal,
    out: &Outbound<'_>,
    parts: &mut Parts,
    bound: &Bound,
) -> Option<Response<ProxyBody>> {
    let (Some(sessions), Bound::Session { opened, .. }) = (&shared.sessions, bound) else {
        return None;
    };
    // Revoked or expired on another replica: no held stream either.
    let opened = match session::refresh(shared, sessions, opened).await {
        Ok(opened) => opened,
        Err(refusal) => return Some(rescue::answer(&refusal, shared.metrics())),
    };
    let last = parts
        .headers
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok());
    if let Some(record) = &opened.record {
        match shared.held.plan(record, last, &sessions.metrics) {
            Plan::Refuse => {
                return Some(rescue::answer(
                    &Cause::UnknownSession.into(),
                    shared.metrics(),
                ))
            }
            Plan::Forward => {}
            Plan::Attach { hub, resume, start } => {
                if start {
                    // Undone if this request goes away before the
                    // upstream stream is open.
                    let starting = hub.starting(shared.held.clone());
                    if let Err(answer) =
                        hold(shared, principal, out, parts.clone(), bound.clone(), &hub).await
                    {
                        return Some(answer);
                    }
                    starting.started();
                }
                return Some(hub.attach(
                    resume,
                    &sessions.metrics,
                    super::token_deadline(principal),
                ));
            }
        }
    }
    // Not held: an id of Portcullis's is never the server's to read.
    match last.and_then(|id| standalone::unheld(&opened.claims.handle, id, &sessions.metrics)) {
        Some(Err(())) => {
            return Some(rescue::answer(
                &Cause::UnknownSession.into(),
                shared.metrics(),
            ))
        }
        Some(Ok(())) => {
            parts.headers.remove(LAST_EVENT_ID);
        }
        None => {}
    }
    None
}

/// Whether a GET's answer is a stream to relay event by event (rather
/// than an answer relayed as it is); `Err`: a stream Portcullis cannot
/// read.
fn is_event_stream(resp: &Response<Incoming>) -> Result<bool, Refusal> {
    Ok(
        matches!(relay::body_type(resp.headers())?, BodyType::EventStream)
            && resp.status().is_success(),
    )
}

/// Relays an upstream GET stream (reopened across restarts in a session).
fn relay_stream(
    shared: &Arc<Shared>,
    principal: Principal,
    out: &Outbound<'_>,
    (parts, bound): (Parts, Bound),
    resp: Response<Incoming>,
    deadline: Option<tokio::time::Instant>,
) -> ProxyBody {
    let legacy = legacy::StreamContext::new(shared.legacy.clone());
    let survive = matches!(bound, Bound::Plain) && shared.sessions.is_some();
    let legacy_post = survive.then(|| legacy_post(shared, &principal, out, &parts));
    let reopen = reopen(shared, &principal, out, parts, bound);
    let ex = Exchange::new(Arc::new(Judge::new(shared.court.clone(), principal)));
    let relay = relay::SseRelay::new(ex, Vec::new(), shared.sse_settings()).with_legacy(legacy);
    let relay = match survive {
        true => relay.with_legacy_rebind(reopen, legacy_post),
        false => relay.with_reopen(reopen),
    };
    relay
        .until(shared.draining.clone())
        .expires(deadline)
        .spawn(resp.into_body())
}

/// POSTs to the upstream for a legacy stream's session set-up, as the
/// client's own POSTs are sent (same target, identity and credentials
/// policy), waiting for a restarting app.
fn legacy_post(
    shared: &Arc<Shared>,
    principal: &Principal,
    out: &Outbound<'_>,
    get: &Parts,
) -> relay::LegacyPost {
    let (shared, principal, target) = (shared.clone(), principal.clone(), out.target());
    let mut base = get.clone();
    base.method = Method::POST;
    base.headers.remove(LAST_EVENT_ID);
    base.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Arc::new(move |path: String, body: Bytes| {
        let mut parts = base.clone();
        let (shared, principal) = (shared.clone(), principal.clone());
        Box::pin(async move {
            parts.uri = path.parse().map_err(|_| {
                Refusal::from(Cause::UnreadableAnswer(format!("legacy endpoint {path:?}")))
            })?;
            let send = session::resender(
                &shared,
                target,
                &principal,
                parts,
                body,
                Bound::Plain,
                "legacy_rebind",
            );
            send().await.map(|resp| resp.status())
        })
    })
}

/// Opens the session's GET stream upstream for a held stream (without the
/// client's `Last-Event-ID`, which names an event of ours), and starts the
/// hub's pump on it. `Err`: the client's answer (the upstream's, if it is
/// not a stream).
async fn hold(
    shared: &Arc<Shared>,
    principal: &Principal,
    out: &Outbound<'_>,
    mut parts: Parts,
    bound: Bound,
    hub: &Arc<standalone::Hub>,
) -> Result<(), Response<ProxyBody>> {
    parts.headers.remove(LAST_EVENT_ID);
    let failure = |r: Refusal| rescue::upstream_failure(&r, &[], &[], shared.metrics());
    let resp = forward(shared, principal, out, &parts, &bound)
        .await
        .map_err(failure)?;
    match is_event_stream(&resp) {
        Ok(true) => {}
        Ok(false) => return Err(outbound::relay_raw(resp)),
        Err(refusal) => return Err(failure(refusal)),
    }
    let head = outbound::response_head(&resp, false);
    let head = (
        resp.status(),
        head.headers_ref().cloned().unwrap_or_default(),
    );
    let grace = shared
        .sessions
        .as_ref()
        .map_or(std::time::Duration::ZERO, |s| s.stream_grace);
    // The held stream is the session's, not one client's: each client's
    // own stream ends at its token's expiry (Hub::attach).
    let relayed = relay_stream(shared, principal.clone(), out, (parts, bound), resp, None);
    hub.pump(shared.held.clone(), head, relayed, grace);
    Ok(())
}

/// With sessions configured, a GET stream whose upstream breaks is opened
/// again upstream (rebound if the app restarted) while the client's stays
/// open: the client never sees the restart. A session's stream, or one
/// that may be a 2024-11-05 `/sse` stream (used only if it is one).
/// Without the client's `Last-Event-ID`, which named an event of the
/// stream that broke.
fn reopen(
    shared: &Arc<Shared>,
    principal: &Principal,
    out: &Outbound<'_>,
    mut parts: Parts,
    bound: Bound,
) -> Option<relay::Retry> {
    match bound {
        Bound::Session { .. } => {}
        Bound::Plain if shared.sessions.is_some() => {}
        _ => return None,
    }
    parts.headers.remove(LAST_EVENT_ID);
    Some(session::resender(
        shared,
        out.target(),
        principal,
        parts,
        Bytes::new(),
        bound,
        "stream_reopen",
    ))
}
