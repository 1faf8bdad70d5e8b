//! The session phase: between the decision and the upstream.
//!
//! With `sessions:` configured, the client never sees the upstream's
//! `Mcp-Session-Id`. An `initialize` answer's id is sealed into Portcullis's
//! own (see [`crate::session`]); a request's sealed id is opened (any
//! failure: the same 404, nothing sent upstream) and replaced by the
//! upstream id currently bound to it. When the upstream answers that it
//! does not know the session (404, or a configured quirk status), it
//! refused before running anything, so Portcullis re-establishes the
//! upstream session with the recorded `initialize` and sends the request
//! once more ([`rebind`]).

use bytes::Bytes;
use http::{request::Parts, HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    catalog::ToolCatalog,
    outbound::Outbound,
    rebind, relay,
    rescue::{Cause, Refusal},
    Shared,
};
use crate::{
    identity::Principal,
    mcp::{
        headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID},
        Call, Kind,
    },
    session::{Opened, Record, Sessions, SyncError},
    upstream::Target,
};

/// Set on every request to the app in a Portcullis session: a key the app
/// may store per-session state under, stable across rebinds (the upstream
/// session id is not). Owned by Portcullis: a client's copy is removed.
pub const SESSION_KEY_HEADER: &str = "x-portcullis-session-key";

/// What the session phase decided for one request.
#[derive(Clone)]
pub enum Bound {
    /// Sessions are off, or the request names none: sent as it is (but an
    /// upstream session id in the answer is never shown to the client).
    Plain,
    /// An `initialize`: a client's old id is dropped (a fresh one is
    /// always issued, so an id cannot be planted), and the upstream id in
    /// the answer is sealed.
    Initialize {
        body: Bytes,
        requested_protocol: String,
    },
    /// A request in a session Portcullis issued.
    Session { token: String, opened: Opened },
}

/// Reads the request's session id, if sessions are on. `initialize` is the
/// body when the request is a lone `initialize`.
pub fn bind(
    shared: &Shared,
    principal: &Principal,
    headers: &HeaderMap,
    initialize: Option<(&Call, &Bytes)>,
) -> Result<Bound, Refusal> {
    let Some(sessions) = &shared.sessions else {
        return Ok(Bound::Plain);
    };
    if let Some((call, body)) = initialize {
        return Ok(Bound::Initialize {
            body: body.clone(),
            requested_protocol: call.body_version.clone().unwrap_or_default(),
        });
    }
    // A repeated header is refused before this phase (check_repeated).
    let Some(token) = headers.get(MCP_SESSION_ID).and_then(|v| v.to_str().ok()) else {
        return match headers.contains_key(MCP_SESSION_ID) {
            // Not visible ASCII: no id Portcullis issued.
            true => {
                sessions.metrics.reject("malformed");
                Err(Cause::UnknownSession.into())
            }
            false => Ok(Bound::Plain),
        };
    };
    match sessions.open(token, principal) {
        Some(opened) => Ok(Bound::Session {
            token: token.to_string(),
            opened,
        }),
        None => Err(Cause::UnknownSession.into()),
    }
}

/// Whether a request may be sent again after the upstream was lost while
/// answering it: methods that only read (by the spec), the idempotent
/// ones, and `tools/call` of a tool the server annotates read-only or
/// idempotent, unless the operator says never (`sessions.never_retry`).
/// Annotations are hints, learnt from the `tools/list` answers relayed.
pub fn replay_safe(call: &Call, catalog: &ToolCatalog, never: &[String]) -> bool {
    if call.kind != Kind::Request {
        return false;
    }
    match call.method.as_str() {
        "ping"
        | "tools/list"
        | "prompts/list"
        | "prompts/get"
        | "resources/list"
        | "resources/read"
        | "resources/templates/list"
        | "completion/complete"
        | "logging/setLevel"
        | "resources/subscribe"
        | "resources/unsubscribe"
        | "tasks/get"
        | "tasks/list"
        // Opens a stream of change notifications; runs nothing.
        | "subscriptions/listen" => true,
        "tools/call" => {
            let Some(tool) = call.target_name() else {
                return false;
            };
            if never.iter().any(|n| n == tool) {
                return false;
            }
            let hints = catalog
                .annotations(tool)
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok());
            hints.is_some_and(|h| {
                h.get("readOnlyHint") == Some(&serde_json::Value::Bool(true))
                    || h.get("idempotentHint") == Some(&serde_json::Value::Bool(true))
            })
        }
        _ => false,
    }
}

/// How a sealed session id appears to policies and in audit records:
/// `s-` and 16 hex digits of its SHA-256, the same for the whole session.
pub fn public_name(id: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(id.as_bytes());
    let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("s-{hex}")
}

/// The lone `initialize` of a POST body, if that is what it is.
pub fn initialize_call(call: &Call) -> bool {
    call.kind == Kind::Request && call.method == "initialize"
}

/// Notes what a rebind must replay, once the upstream accepted it: the log
/// level and subscriptions of a lone message, read from the bytes that
/// were forwarded (after any rewrite by a policy). A denied message never
/// gets here. Other replicas learn it through the store.
pub async fn note(shared: &Shared, bound: &Bound, call: &Call, forwarded: &[u8]) {
    let (Some(sessions), Bound::Session { opened, .. }) = (&shared.sessions, bound) else {
        return;
    };
    let Some(record) = &opened.record else {
        return;
    };
    let Some(params) = params_of(forwarded) else {
        return;
    };
    let uri = || {
        serde_json::from_slice::<serde_json::Value>(&params)
            .ok()
            .and_then(|p| p.get("uri")?.as_str().map(str::to_string))
    };
    {
        let mut s = record.state();
        match call.method.as_str() {
            "logging/setLevel" => s.log_level = Some(params.clone()),
            "resources/subscribe" => match uri() {
                Some(u) if s.subscriptions.len() < MAX_SUBSCRIPTIONS => {
                    s.subscriptions.insert(u);
                }
                Some(_) => {
                    tracing::warn!(
                        max = MAX_SUBSCRIPTIONS,
                        "subscription not recorded: a rebind will not renew it"
                    );
                    return;
                }
                None => return,
            },
            "resources/unsubscribe" => match uri() {
                Some(u) => {
                    s.subscriptions.remove(&u);
                }
                None => return,
            },
            _ => return,
        }
        s.dirty = true;
    }
    sessions.publish(record).await;
}

/// Subscriptions a session may have recorded for replay.
const MAX_SUBSCRIPTIONS: usize = 256;

/// A message's `params`, byte for byte (it was read strictly already).
fn params_of(raw: &[u8]) -> Option<Bytes> {
    #[derive(serde::Deserialize)]
    struct P<'a> {
        #[serde(borrow)]
        params: Option<&'a serde_json::value::RawValue>,
    }
    let p: P<'_> = serde_json::from_slice(raw).ok()?;
    Some(Bytes::copy_from_slice(p.params?.get().as_bytes()))
}

/// Sends a request built by `build` in the session `bound` names, rebinding
/// and sending it once more if the upstream lost the session (`retry`:
/// whether sending again is safe; it is after a refusal, which is what the
/// lost-session statuses are). The answer's session id is the client's.
pub async fn send<F>(
    shared: &Shared,
    out: &Outbound<'_>,
    principal: &Principal,
    parts: &Parts,
    bound: &Bound,
    build: F,
) -> Result<Response<Incoming>, Refusal>
where
    F: Fn() -> Result<Request<Full<Bytes>>, Refusal>,
{
    let Some(sessions) = &shared.sessions else {
        return out.send(build()?).await;
    };
    let mut resp = match bound {
        Bound::Plain => out.send(build()?).await?,
        Bound::Initialize { .. } => {
            let mut req = build()?;
            req.headers_mut().remove(MCP_SESSION_ID);
            out.send(req).await?
        }
        // The client ends its session: refused from now on (on every
        // replica) before the upstream hears of it, whatever it answers.
        Bound::Session { opened, .. } if parts.method == Method::DELETE => {
            sessions
                .revoke(opened)
                .await
                .map_err(|()| Refusal::from(Cause::StoreUnavailable))?;
            shared.held.end(&opened.claims.handle);
            let (upstream_id, _) = opened.upstream();
            out.send(in_session(build()?, &upstream_id, opened)?)
                .await?
        }
        Bound::Session { opened, .. } => {
            send_in_session(shared, sessions, out, parts, opened, &build).await?
        }
    };
    if let Some(issued) = name_client_session(sessions, shared, principal, bound, &mut resp)? {
        // Before the client has its id, so that any replica can serve it.
        sessions.publish(&issued).await;
    }
    Ok(resp)
}

/// The session id on the answer is the client's: sealed from the upstream's
/// on `initialize`, the same token in a session, none otherwise. Returns
/// the record of a session it issued.
fn name_client_session(
    sessions: &Sessions,
    shared: &Shared,
    principal: &Principal,
    bound: &Bound,
    resp: &mut Response<Incoming>,
) -> Result<Option<Arc<Record>>, Refusal> {
    let mut issued = None;
    let success = resp.status().is_success();
    let headers = resp.headers_mut();
    match bound {
        Bound::Plain => {
            // The client opened no session through Portcullis: it cannot
            // be handed the upstream's raw id.
            headers.remove(MCP_SESSION_ID);
        }
        Bound::Initialize {
            body,
            requested_protocol,
        } => {
            let upstream_id = headers
                .get(MCP_SESSION_ID)
                .map(|v| v.to_str().map(str::to_string));
            match upstream_id {
                // A sessionless server: nothing to seal.
                None => {}
                Some(Ok(id)) if success => {
                    let (token, kept) = sessions
                        .issue(
                            principal,
                            &id,
                            body.clone(),
                            requested_protocol,
                            shared.upstream.incarnation(),
                        )
                        .map_err(|e| {
                            tracing::warn!(error = %e, "cannot seal the upstream session id");
                            Refusal::from(Cause::BadUpstreamResponse)
                        })?;
                    let value = HeaderValue::from_str(&token)
                        .map_err(|_| Refusal::from(Cause::BadUpstreamResponse))?;
                    headers.insert(MCP_SESSION_ID, value);
                    issued = kept;
                }
                Some(_) => {
                    headers.remove(MCP_SESSION_ID);
                }
            }
        }
        Bound::Session { token, .. } => {
            // Whatever id the upstream names, the client's stays the same.
            if headers.contains_key(MCP_SESSION_ID) {
                if let Ok(v) = HeaderValue::from_str(token) {
                    headers.insert(MCP_SESSION_ID, v);
                }
            }
        }
    }
    Ok(issued)
}

/// A session brought up to date before use: a record another replica
/// wrote or updated, or a revocation there; and still valid. Checked at
/// every send, not only when the request came in: a stream reopened later
/// must not outlive a `DELETE` or the id's expiry.
pub async fn refresh(
    shared: &Shared,
    sessions: &Sessions,
    opened: &Opened,
) -> Result<Opened, Refusal> {
    let mut opened = opened.clone();
    sessions
        .sync(&mut opened, shared.upstream.incarnation())
        .await
        .map_err(|e| match e {
            SyncError::Revoked => Refusal::from(Cause::UnknownSession),
            SyncError::StoreDown => Refusal::from(Cause::StoreUnavailable),
        })?;
    if !sessions.still_valid(&opened.claims) {
        return Err(Cause::UnknownSession.into());
    }
    Ok(opened)
}

async fn send_in_session<F>(
    shared: &Shared,
    sessions: &Sessions,
    out: &Outbound<'_>,
    parts: &Parts,
    opened: &Opened,
    build: &F,
) -> Result<Response<Incoming>, Refusal>
where
    F: Fn() -> Result<Request<Full<Bytes>>, Refusal>,
{
    let opened = &refresh(shared, sessions, opened).await?;
    if let (Some(record), Some(v)) = (&opened.record, parts.headers.get(MCP_PROTOCOL_VERSION)) {
        // The version the client holds, which a rebind must keep.
        let mut s = record.state();
        if s.negotiated.is_none() {
            s.negotiated = v.to_str().ok().map(str::to_string);
        }
    }
    let (mut upstream_id, mut state) = opened.upstream();
    let may_rebind = sessions.rebind;
    // The upstream restarted since this session was bound: rebind before
    // sending, since some servers accept an unknown id silently.
    if let (Some(record), Some(s), true) = (&opened.record, &state, may_rebind) {
        if s.incarnation != shared.upstream.incarnation() {
            // Boxed, like the rebind below: a rebind is rare, and its
            // state would otherwise be part of every request's future.
            let fresh = Box::pin(rebind::rebind(
                shared,
                sessions,
                out,
                parts,
                record,
                s,
                "incarnation",
            ))
            .await?;
            upstream_id.clone_from(&fresh.upstream_id);
            state = Some(fresh);
        }
    }
    let resp = out
        .send(in_session(build()?, &upstream_id, opened)?)
        .await?;
    let (Some(record), Some(seen), true) = (&opened.record, state, may_rebind) else {
        return Ok(resp);
    };
    if !sessions.is_lost(resp.status()) {
        return Ok(resp);
    }
    // The upstream refused before running anything: rebinding and sending
    // again cannot run the request twice.
    drop(resp);
    let fresh = Box::pin(rebind::rebind(
        shared,
        sessions,
        out,
        parts,
        record,
        &seen,
        "upstream_lost",
    ))
    .await?;
    sessions.metrics.retry("after_lost_session");
    out.send(in_session(build()?, &fresh.upstream_id, opened)?)
        .await
}

/// Names the upstream session (and the app's session key) on a request.
fn in_session(
    mut req: Request<Full<Bytes>>,
    upstream_id: &str,
    opened: &Opened,
) -> Result<Request<Full<Bytes>>, Refusal> {
    let id = HeaderValue::from_str(upstream_id).map_err(|_| Cause::UnknownSession)?;
    let key = HeaderValue::from_str(&Sessions::app_key(&opened.claims.handle))
        .map_err(|_| Cause::UnknownSession)?;
    let headers = req.headers_mut();
    headers.insert(MCP_SESSION_ID, id);
    headers.insert(SESSION_KEY_HEADER, key);
    Ok(req)
}

/// Sends a request again after its upstream stream broke (see
/// [`relay::Retry`]): in the session, rebound if the upstream restarted,
/// and while the upstream is unreachable, again after a pause (100 ms
/// doubling to 1 s) until the request timeout has passed.
pub fn resender(
    shared: &Arc<Shared>,
    target: Target,
    principal: &Principal,
    parts: Parts,
    body: Bytes,
    bound: Bound,
    cause: &'static str,
) -> relay::Retry {
    let (shared, principal) = (shared.clone(), principal.clone());
    Arc::new(move || {
        let (shared, principal) = (shared.clone(), principal.clone());
        let (parts, body, bound) = (parts.clone(), body.clone(), bound.clone());
        Box::pin(async move {
            if let Some(s) = &shared.sessions {
                s.metrics.retry(cause);
            }
            let out = Outbound::new(
                &shared.upstream,
                target,
                &principal,
                &shared.upstream_identity,
            );
            let deadline = Instant::now() + shared.upstream.request_timeout();
            let mut pause = Duration::from_millis(100);
            loop {
                let build = || out.request(&parts, body.clone());
                match send(&shared, &out, &principal, &parts, &bound, build).await {
                    Err(r) if r.is_unavailable() && Instant::now() + pause < deadline => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    sent => return sent,
                }
            }
        })
    })
}
