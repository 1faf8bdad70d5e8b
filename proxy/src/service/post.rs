//! POST: the JSON-RPC path, in four one-way phases:
//! decode ([`inbound`]) → decide ([`Judge`]) → send ([`Outbound`]) → relay.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::value::RawValue;

use super::{
    exchange::Exchange,
    inbound::{self, Decoded},
    judge::{Judge, Verdict},
    metrics::method_label,
    outbound::{self, Outbound},
    passthrough, relay,
    rescue::{self, Cause, Refusal},
    respond::{self, Format},
    session::{self, Bound},
    Shared,
};
use crate::{
    body::{self, ProxyBody},
    identity::Principal,
    mcp::{
        content_type::{self, BodyType},
        headers::HeaderMismatch,
        Body, Call, Kind,
    },
    upstream::UpstreamError,
};

pub async fn handle(
    shared: &Arc<Shared>,
    principal: Principal,
    out: &Outbound<'_>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let (method, resp) =
        match inbound::decode(req, shared.limits, &shared.legacy, &shared.court.catalog).await {
            Ok(decoded) => {
                // Its label, not a copy: the label set is fixed.
                let method = method_label(decoded.method());
                (method, judged(shared, principal, out, decoded).await)
            }
            Err(refusal) => (method_label(""), rescue::answer(&refusal, shared.metrics())),
        };
    shared
        .metrics()
        .observe_latency(method, started.elapsed().as_secs_f64());
    resp
}

async fn judged(
    shared: &Arc<Shared>,
    principal: Principal,
    out: &Outbound<'_>,
    mut decoded: Decoded,
) -> Response<ProxyBody> {
    if let Some(auth) = &shared.auth {
        // The scopes every message of the body needs, together: a batch
        // needs the union (one 403 naming them all).
        let calls: Vec<&Call> = match &decoded.messages {
            Body::Single(call) => vec![call],
            Body::Batch(entries) => entries.iter().map(|(_, c)| c).collect(),
        };
        let ops: Vec<(&str, Option<&str>)> = calls
            .iter()
            .filter(|c| c.kind != Kind::Response)
            .map(|c| (c.method.as_str(), c.target_name()))
            .collect();
        if let Err(refused) = auth.check_scopes(principal.token(), &ops) {
            return auth.answer(&refused);
        }
    }
    let mut judge = Judge::new(shared.court.clone(), principal.clone());
    judge.session = match (&shared.sessions, &decoded.session) {
        // A sealed id is the client's credential for its session: policies
        // and audit records get a stable name for it, not the id.
        (Some(_), Some(id)) if decoded.legacy.is_none() => Some(session::public_name(id)),
        _ => decoded.session.clone(),
    };
    // Read by nothing else: moved, not copied.
    judge.headers = std::mem::take(&mut decoded.mcp_headers);
    let mut ex = Exchange::new(Arc::new(judge));
    ex.answers.only_asked = decoded.legacy.is_none();
    ex.answers.batch_asked = matches!(decoded.messages, Body::Batch(_));
    let plan = match &decoded.messages {
        Body::Single(call) => single(shared, &decoded, ex, call),
        Body::Batch(entries) => batch(shared, &decoded, ex, entries),
    };
    match plan {
        Ok(Plan::Forward(fwd)) => {
            if let Err(refusal) = route_legacy(shared, &mut decoded).await {
                return failure(
                    shared,
                    &refusal.with_id(single_id(&decoded)),
                    &fwd.ex,
                    &fwd.denials,
                );
            }
            send(shared, out, &principal, &mut decoded, fwd).await
        }
        Ok(Plan::Answered(resp)) => resp,
        Err(refusal) => rescue::answer(&refusal, shared.metrics()),
    }
}

/// What the decision phase leaves for the send phase.
enum Plan {
    Forward(Forward),
    /// Nothing to forward: this is the client's answer.
    Answered(Response<ProxyBody>),
}

/// An allowed body to send, and how its answer comes back.
struct Forward {
    body: Bytes,
    ex: Exchange,
    /// Answers for the denied part of a batch.
    denials: Vec<Bytes>,
    /// Whether the answer may pass unread ([`passthrough`]): true only when
    /// every message sent is a request whose answer no policy reads.
    stream: bool,
}

/// Notes an allowed message whose answer must be matched (errors on a
/// broken stream, result policy). Returns whether its answer may pass
/// unread (anything not tracked as a request is read), or refuses the
/// message when its answer could not be matched, so would arrive
/// uninspected.
fn track_answer(
    shared: &Shared,
    decoded: &Decoded,
    ex: &mut Exchange,
    call: &Call,
) -> Result<bool, Refusal> {
    if call.kind != Kind::Request {
        return Ok(false);
    }
    let inspect = ex.judge.wants_result(call);
    if let (Some(endpoint), true) = (&decoded.legacy, inspect) {
        shared
            .legacy
            .track(endpoint, call)
            .map_err(|r| r.with_id(call.id.clone()))?;
    }
    ex.answers.track(call, inspect);
    // Legacy answers arrive on the GET stream, which is always read.
    Ok(decoded.legacy.is_none() && passthrough::may_stream(call, inspect))
}

fn single(
    shared: &Shared,
    decoded: &Decoded,
    mut ex: Exchange,
    call: &Call,
) -> Result<Plan, Refusal> {
    let forward = |ex: Exchange, body, stream| {
        Ok(Plan::Forward(Forward {
            body,
            ex,
            denials: Vec::new(),
            stream,
        }))
    };
    match ex.judge.decide(call, decoded.body.clone()) {
        Verdict::Forward(body) => {
            let stream = track_answer(shared, decoded, &mut ex, call)?;
            forward(ex, body, stream)
        }
        Verdict::Rewrite(body, arguments) => {
            let rewritten = rewritten(call, arguments);
            still_mirrored(shared, decoded, &rewritten, call.arguments.as_deref())?;
            let stream = track_answer(shared, decoded, &mut ex, &rewritten)?;
            forward(ex, body, stream)
        }
        // A notification has no answer to carry the denial: its status does.
        Verdict::Deny(d) if call.kind != Kind::Request => Err(Cause::Denied(d).into()),
        Verdict::Deny(d) => {
            let msg = Refusal::from(Cause::Denied(d))
                .with_id(call.id.clone())
                .to_message();
            // Legacy clients read answers from their GET stream only.
            if let Some(endpoint) = &decoded.legacy {
                if shared.legacy.inject(endpoint, msg.clone()) {
                    return Ok(Plan::Answered(respond::accepted()));
                }
            }
            Ok(Plan::Answered(rescue::denials(
                decoded.format,
                &[msg],
                false,
            )))
        }
    }
}

/// `call` as a policy's rewrite left it, for what reads its arguments
/// later (the mirrored headers, result hooks).
fn rewritten(call: &Call, arguments: Box<RawValue>) -> Call {
    Call {
        arguments: Some(arguments),
        ..call.clone()
    }
}

/// A policy's rewrite may change an argument the client mirrored in an
/// `Mcp-Param-*` header; forwarding the old header with the new body would
/// let a router act on one value and the server on another, so the
/// headers are checked again and a disagreement is refused.
fn still_mirrored(
    shared: &Shared,
    decoded: &Decoded,
    call: &Call,
    before: Option<&RawValue>,
) -> Result<(), Refusal> {
    if call.arguments.as_deref().map(RawValue::get) == before.map(RawValue::get) {
        return Ok(());
    }
    inbound::check_params(&decoded.parts.headers, call, &shared.court.catalog).map_err(|e| {
        let e = HeaderMismatch(format!("after the policy's rewrite: {}", e.0));
        Refusal::from(Cause::HeaderMismatch(e)).with_id(call.id.clone())
    })
}

fn batch(
    shared: &Shared,
    decoded: &Decoded,
    mut ex: Exchange,
    entries: &[(Box<RawValue>, Call)],
) -> Result<Plan, Refusal> {
    let mut allowed = Vec::new();
    let mut denials = Vec::new();
    let mut stream = true;
    for (raw, call) in entries {
        let verdict = ex
            .judge
            .decide(call, Bytes::copy_from_slice(raw.get().as_bytes()));
        let (bytes, call) = match verdict {
            Verdict::Forward(bytes) => (Ok(bytes), std::borrow::Cow::Borrowed(call)),
            Verdict::Rewrite(bytes, arguments) => (
                Ok(bytes),
                std::borrow::Cow::Owned(rewritten(call, arguments)),
            ),
            Verdict::Deny(d) => (Err(d), std::borrow::Cow::Borrowed(call)),
        };
        match bytes {
            Ok(bytes) => match track_answer(shared, decoded, &mut ex, &call) {
                Ok(may_stream) => {
                    allowed.push(bytes);
                    // A passed-through answer is watched for a task as one
                    // message only (passthrough::Sniff): a batch holding a
                    // `tools/call` is read whole, so that a task created in
                    // its answer is tied to its caller too.
                    stream &= may_stream && call.method != "tools/call";
                }
                Err(refusal) => {
                    stream = false;
                    denials.push(refusal.to_message());
                }
            },
            // Only requests get an answer; a denied notification is dropped.
            Err(d) if call.kind == Kind::Request => denials.push(
                Refusal::from(Cause::Denied(d))
                    .with_id(call.id.clone())
                    .to_message(),
            ),
            Err(_) => {}
        }
    }
    match (allowed.is_empty(), denials.is_empty()) {
        (true, true) => Err(Cause::BatchDenied.into()),
        (true, false) => Ok(Plan::Answered(rescue::denials(
            decoded.format,
            &denials,
            true,
        ))),
        (false, _) => Ok(Plan::Forward(Forward {
            body: respond::join_array(&allowed),
            ex,
            // Denials are merged into the answer, which must then be read.
            stream: stream && denials.is_empty(),
            denials,
        })),
    }
}

/// Forwards an allowed body and relays the answer, adding the denials of
/// a partly allowed batch.
async fn send(
    shared: &Arc<Shared>,
    out: &Outbound<'_>,
    principal: &Principal,
    decoded: &mut Decoded,
    fwd: Forward,
) -> Response<ProxyBody> {
    let Forward {
        body,
        ex,
        denials,
        stream,
    } = fwd;
    let bound = match bind_session(shared, principal, decoded, &body) {
        Ok(bound) => bound,
        Err(refusal) => {
            return failure(shared, &refusal.with_id(single_id(decoded)), &ex, &denials)
        }
    };
    let sent = send_once(shared, out, principal, decoded, &bound, &body).await;
    let decoded = &*decoded;
    let retry = retry(shared, out, principal, decoded, &body, &bound);
    let sent = match sent {
        Err(r) if shared.sessions.is_some() && r.is_unavailable() => {
            lost_before_answer(
                shared,
                out,
                principal,
                decoded,
                &body,
                &bound,
                r,
                retry.is_some(),
            )
            .await
        }
        sent => sent,
    };
    if let (Ok(resp), Body::Single(call)) = (&sent, &decoded.messages) {
        if resp.status().is_success() {
            // What a rebind must replay (a log level, subscriptions).
            session::note(shared, &bound, call, &body).await;
            if let (Some(endpoint), Some(_), true) = (
                &decoded.legacy,
                &shared.sessions,
                session::initialize_call(call),
            ) {
                shared.legacy.record_initialize(endpoint, body.clone());
            }
        }
    }
    match sent {
        Ok(resp) => {
            let how = Answering::new(decoded, principal, stream, retry);
            relay(shared, decoded.format, ex, resp, denials, how).await
        }
        Err(refusal) => failure(shared, &refusal, &ex, &denials),
    }
}

/// The first sending of an allowed body, in its session.
async fn send_once(
    shared: &Shared,
    out: &Outbound<'_>,
    principal: &Principal,
    decoded: &mut Decoded,
    bound: &Bound,
    body: &Bytes,
) -> Result<Response<Incoming>, Refusal> {
    if shared.sessions.is_none() {
        // Sent once, and nothing reads the client's headers after that (no
        // retry without sessions): they are moved into the request.
        let headers = std::mem::take(&mut decoded.parts.headers);
        return out
            .send(out.request_from(&decoded.parts, headers, body.clone())?)
            .await;
    }
    let build = || out.request(&decoded.parts, body.clone());
    session::send(shared, out, principal, &decoded.parts, bound, build).await
}

/// A POST to a legacy endpoint goes to the upstream endpoint it is routed
/// to (another than the client's after a server restart, with sessions
/// configured), once that stream is ready.
async fn route_legacy(shared: &Shared, decoded: &mut Decoded) -> Result<(), Refusal> {
    let (Some(endpoint), Some(_)) = (&decoded.legacy, &shared.sessions) else {
        return Ok(());
    };
    let upstream = shared
        .legacy
        .route(endpoint, shared.upstream.request_timeout())
        .await?;
    if upstream != *endpoint {
        decoded.parts.uri = upstream.parse().map_err(|_| {
            Refusal::from(Cause::UnreadableAnswer(format!(
                "legacy endpoint {upstream:?}"
            )))
        })?;
    }
    Ok(())
}

/// The session phase: which session the allowed body is sent in.
fn bind_session(
    shared: &Shared,
    principal: &Principal,
    decoded: &Decoded,
    body: &Bytes,
) -> Result<Bound, Refusal> {
    // Legacy (2024-11-05) sessions are the endpoint's, not a header's.
    if decoded.legacy.is_some() {
        return Ok(Bound::Plain);
    }
    let initialize = match &decoded.messages {
        Body::Single(call) if session::initialize_call(call) => Some((call, body)),
        _ => None,
    };
    session::bind(shared, principal, &decoded.parts.headers, initialize)
}

/// In a session, the upstream was lost before the answer's head: a request
/// it never received (refused connect), or one safe to run twice, is sent
/// again once it is back (within the request timeout); any other may have
/// run, and the client is told so.
#[allow(clippy::too_many_arguments)]
async fn lost_before_answer(
    shared: &Arc<Shared>,
    out: &Outbound<'_>,
    principal: &Principal,
    decoded: &Decoded,
    body: &Bytes,
    bound: &Bound,
    refusal: Refusal,
    replay_safe: bool,
) -> Result<Response<Incoming>, Refusal> {
    if !(refusal.is_refused() || replay_safe) {
        return Err(Cause::OutcomeUnknown(refusal.message()).into());
    }
    let resend = session::resender(
        shared,
        out.target(),
        principal,
        decoded.parts.clone(),
        body.clone(),
        bound.clone(),
        if refusal.is_refused() {
            "refused"
        } else {
            "lost_before_answer"
        },
    );
    resend().await
}

/// How to send a replay-safe request again if the upstream stream breaks
/// before its answer (with `sessions:` configured): in the session, rebound
/// if the upstream restarted, for as long as the request timeout allows
/// while the upstream comes back.
fn retry(
    shared: &Arc<Shared>,
    out: &Outbound<'_>,
    principal: &Principal,
    decoded: &Decoded,
    body: &Bytes,
    bound: &Bound,
) -> Option<relay::Retry> {
    let sessions = shared.sessions.as_ref()?;
    let Body::Single(call) = &decoded.messages else {
        return None;
    };
    if decoded.legacy.is_some()
        || !session::replay_safe(call, &shared.court.catalog, &sessions.never_retry)
    {
        return None;
    }
    Some(session::resender(
        shared,
        out.target(),
        principal,
        decoded.parts.clone(),
        body.clone(),
        bound.clone(),
        "stream_break",
    ))
}

/// How an answer is relayed besides its exchange.
struct Answering {
    /// It may pass unread ([`passthrough`]).
    stream: bool,
    retry: Option<Resend>,
    /// When a long-lived stream must end.
    deadline: Option<tokio::time::Instant>,
}

impl Answering {
    fn new(
        decoded: &Decoded,
        principal: &Principal,
        stream: bool,
        retry: Option<relay::Retry>,
    ) -> Self {
        const LISTEN: &str = "subscriptions/listen";
        let (listen, subscribes) = match &decoded.messages {
            Body::Single(c) => (c.method == LISTEN, c.method == LISTEN),
            Body::Batch(calls) => (false, calls.iter().any(|(_, c)| c.method == LISTEN)),
        };
        Self {
            stream,
            retry: retry.map(|r| match listen {
                true => Resend::Reopen(r),
                false => Resend::Once(r),
            }),
            // A subscription is a long-lived stream: it ends with the token
            // that opened it, whether it came alone or inside a batch (whose
            // one stream then carries it).
            deadline: subscribes
                .then(|| super::token_deadline(principal))
                .flatten(),
        }
    }
}

/// How an answer's stream is sent for again when the upstream breaks it.
enum Resend {
    /// Once, before the answer (a replay-safe request).
    Once(relay::Retry),
    /// Each time it breaks, for as long as the client stays: a
    /// `subscriptions/listen` stream, which is meant to stay open.
    Reopen(relay::Retry),
}

fn single_id(decoded: &Decoded) -> Option<Box<RawValue>> {
    match &decoded.messages {
        Body::Single(call) => call.id.clone(),
        Body::Batch(_) => None,
    }
}

fn failure(
    shared: &Shared,
    refusal: &Refusal,
    ex: &Exchange,
    denials: &[Bytes],
) -> Response<ProxyBody> {
    rescue::upstream_failure(refusal, &ex.answers.unanswered(), denials, shared.metrics())
}

async fn relay(
    shared: &Shared,
    format: Format,
    mut ex: Exchange,
    resp: Response<Incoming>,
    denials: Vec<Bytes>,
    how: Answering,
) -> Response<ProxyBody> {
    let Answering {
        stream,
        retry,
        deadline,
    } = how;
    let status = resp.status();
    let kind = match relay::body_type(resp.headers()) {
        Ok(kind) => kind,
        Err(refusal) => return failure(shared, &refusal, &ex, &denials),
    };
    // A 202 carries no answer a client reads, so the denials of a partly
    // allowed batch cannot ride in it.
    if !denials.is_empty() && status == StatusCode::ACCEPTED {
        return rescue::denials(format, &denials, true);
    }
    match kind {
        BodyType::EventStream if status.is_success() => {
            let head = outbound::response_head(&resp, false);
            // In a session, a request not safe to send again is reported as
            // possibly run if the upstream is lost before answering it.
            let unknown = shared.sessions.is_some() && retry.is_none();
            let sse = relay::SseRelay::new(ex, denials, shared.sse_settings());
            let sse = match retry {
                Some(Resend::Reopen(r)) => sse.with_reopen(Some(r)),
                Some(Resend::Once(r)) => sse.with_retry(Some(r)),
                None => sse,
            }
            .outcome_unknown(unknown)
            .expires(deadline);
            outbound::with_body(head, sse.spawn(resp.into_body()))
        }
        // No policy reads this answer (and there are no denials to add):
        // it passes as it arrives, bounded by progress, not by its end.
        _ if stream => passthrough::relay(
            resp,
            shared.upstream.request_timeout(),
            shared.metrics().clone(),
            passthrough::Sniff::new(ex, shared.max_response_bytes),
        ),
        // Whatever the status: a list answered with a 500 is still a list.
        BodyType::Json => relay_json(shared, &mut ex, resp, &denials).await,
        _ if !denials.is_empty() && status.is_success() => {
            // The upstream accepted the allowed part; the client still
            // needs the denials.
            rescue::denials(format, &denials, true)
        }
        _ => relay_other(shared, &mut ex, resp, &denials).await,
    }
}

/// Reads a whole answer body within the response limit and the timeout.
async fn read_answer(shared: &Shared, body: Incoming) -> Result<Bytes, Refusal> {
    let read = Limited::new(body, shared.max_response_bytes).collect();
    let timeout = shared.upstream.request_timeout();
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(UpstreamError::Unavailable(format!("reading the answer: {e}")).into()),
        Err(_) => Err(UpstreamError::Timeout(timeout).into()),
    }
}

async fn relay_json(
    shared: &Shared,
    ex: &mut Exchange,
    resp: Response<Incoming>,
    denials: &[Bytes],
) -> Response<ProxyBody> {
    let head = outbound::response_head(&resp, false);
    let judged = match read_answer(shared, resp.into_body()).await {
        Ok(bytes) => relay::filter_json(ex, &bytes, denials),
        Err(refusal) => Err(refusal),
    };
    match judged {
        Ok(out) => outbound::with_body(head, body::full(out)),
        Err(refusal) => failure(shared, &refusal, ex, denials),
    }
}

/// An answer under a content type that is neither JSON nor SSE: relayed as
/// it is, unless it looks like JSON to a client that parses any body
/// (then it is judged like JSON).
async fn relay_other(
    shared: &Shared,
    ex: &mut Exchange,
    resp: Response<Incoming>,
    denials: &[Bytes],
) -> Response<ProxyBody> {
    let head = outbound::response_head(&resp, true);
    let bytes = match read_answer(shared, resp.into_body()).await {
        Ok(bytes) => bytes,
        Err(refusal) => return failure(shared, &refusal, ex, denials),
    };
    if !content_type::sniff_json(&bytes) {
        return outbound::with_body(head, body::full(bytes));
    }
    match relay::filter_json(ex, &bytes, denials) {
        Ok(out) if out == bytes => outbound::with_body(head, body::full(out)),
        Ok(out) => {
            let mut resp = outbound::with_body(head, body::full(out));
            resp.headers_mut().remove(http::header::CONTENT_LENGTH);
            resp
        }
        Err(refusal) => failure(shared, &refusal, ex, denials),
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{
        identity::{Peer, Token, TokenKind},
        mcp::{parse_body, Era},
        service::respond::Format,
    };

    fn decoded(body: &str, version: &str) -> Decoded {
        let messages = parse_body(body.as_bytes(), 64, &Era::from_version(Some(version))).unwrap();
        let (parts, ()) = http::Request::new(()).into_parts();
        Decoded {
            parts,
            body: Bytes::new(),
            messages,
            legacy: None,
            session: None,
            format: Format::Json,
            mcp_headers: Default::default(),
        }
    }

    fn user() -> Principal {
        Principal::new(
            Peer::Anonymous,
            Some(Arc::new(Token {
                kind: TokenKind::AccessToken,
                issuer: "idp".into(),
                subject: "alice".into(),
                scopes: vec![],
                actor: None,
                expires_at: std::time::SystemTime::now() + Duration::from_secs(30),
                claims: "{}".into(),
            })),
        )
    }

    /// A subscription ends with its token whether it comes alone or in a
    /// batch; an ordinary call's stream does not.
    #[test]
    fn a_subscription_anywhere_gets_the_token_deadline() {
        let listen = r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{}}"#;
        let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
        let p = user();
        let single = Answering::new(&decoded(listen, "2026-07-28"), &p, true, None);
        assert!(single.deadline.is_some());
        let batch = format!("[{call},{listen}]");
        let batched = Answering::new(&decoded(&batch, "2025-03-26"), &p, true, None);
        assert!(batched.deadline.is_some(), "a listen inside a batch");
        let plain = Answering::new(&decoded(call, "2026-07-28"), &p, true, None);
        assert!(plain.deadline.is_none());
    }
}
