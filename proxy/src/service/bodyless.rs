//! Body-less methods. GET opens an SSE stream (standalone, resumed, or the
//! legacy HTTP+SSE one), relayed event by event with lists filtered and
//! results judged; DELETE, OPTIONS and HEAD are relayed as they are.

use std::sync::Arc;

use bytes::Bytes;
use http::{request::Parts, Method, Request, Response};
use hyper::body::Incoming;

use super::{
    exchange::Exchange,
    judge::Judge,
    legacy,
    outbound::{self, Outbound},
    relay,
    rescue::{self, Cause, Refusal},
    session::{self, Bound},
    Shared,
};
use crate::{
    body::ProxyBody,
    identity::Principal,
    mcp::{content_type::BodyType, headers as mcp_headers},
};

/// Forwards a body-less request and waits for the answer's head; a failure
/// is already turned into the client's answer.
async fn send(
    shared: &Arc<Shared>,
    principal: &Principal,
    out: &Outbound<'_>,
    parts: &Parts,
) -> Result<(Response<Incoming>, Bound), Response<ProxyBody>> {
    // A doubled Mcp-Session-Id (or any MCP header) could be read as either
    // value by the server: refused here as on POST.
    if let Err(e) = mcp_headers::check_repeated(&parts.headers) {
        return Err(rescue::answer(
            &Cause::HeaderMismatch(e).into(),
            shared.metrics(),
        ));
    }
    let fail = |r: Refusal| rescue::upstream_failure(&r, &[], &[], shared.metrics());
    let bound = session::bind(shared, principal, &parts.headers, None).map_err(fail)?;
    let build = || out.request(parts, Bytes::new());
    let resp = match session::send(shared, out, principal, parts, &bound, build).await {
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
    .map_err(fail)?;
    Ok((resp, bound))
}

/// DELETE and other body-less methods: forwarded, answer relayed as is.
pub async fn passthrough(
    shared: &Arc<Shared>,
    principal: &Principal,
    out: &Outbound<'_>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (parts, _body) = req.into_parts();
    match send(shared, principal, out, &parts).await {
        Ok((resp, _)) => outbound::relay_raw(resp),
        Err(answer) => answer,
    }
}

/// GET: an SSE stream relayed event by event, or any other answer as is.
/// The stream's judge reads the policy in force at each event, so a reload
/// reaches streams that stay open for hours.
pub async fn stream(
    shared: &Arc<Shared>,
    principal: Principal,
    out: &Outbound<'_>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (parts, _body) = req.into_parts();
    let (resp, bound) = match send(shared, &principal, out, &parts).await {
        Ok(sent) => sent,
        Err(answer) => return answer,
    };
    match relay::body_type(resp.headers()) {
        Ok(BodyType::EventStream) if resp.status().is_success() => {}
        Ok(_) => return outbound::relay_raw(resp),
        Err(refusal) => return rescue::upstream_failure(&refusal, &[], &[], shared.metrics()),
    }
    let head = outbound::response_head(&resp, false);
    let legacy = legacy::StreamContext::new(shared.legacy.clone());
    let reopen = reopen(shared, &principal, out, parts, bound);
    let ex = Exchange::new(Arc::new(Judge::new(shared.court.clone(), principal)));
    let job = relay::SseRelay::new(ex, Vec::new(), shared.sse_settings())
        .with_legacy(legacy)
        .with_reopen(reopen)
        .until(shared.draining.clone());
    outbound::with_body(head, job.spawn(resp.into_body()))
}

/// In a Portcullis session, a GET stream whose upstream breaks is opened
/// again upstream (rebound if the app restarted) while the client's stays
/// open: the client never sees the restart. Without the client's
/// `Last-Event-ID`, which named an event of the stream that broke.
fn reopen(
    shared: &Arc<Shared>,
    principal: &Principal,
    out: &Outbound<'_>,
    mut parts: Parts,
    bound: Bound,
) -> Option<relay::Retry> {
    if !matches!(bound, Bound::Session { .. }) {
        return None;
    }
    parts.headers.remove("last-event-id");
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
