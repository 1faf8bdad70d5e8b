//! Re-establishing a lost upstream session under the client's session.
//!
//! The recorded `initialize` is sent again (without a session id), then
//! `notifications/initialized`, then the client's last `logging/setLevel`
//! and its open `resources/subscribe`s. If the new server negotiates
//! another protocol version than the client holds, the session is ended
//! and the client gets an honest 404 (it must initialize again) rather than
//! a contract that changed under it.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use http::{header, request::Parts, Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::{
    outbound::Outbound,
    relay,
    rescue::{Cause, Refusal},
    Shared,
};
use crate::{
    mcp::{
        content_type::BodyType,
        headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID},
        sse,
    },
    session::{self, RebindTurn, Record, Sessions, State},
    upstream::UpstreamError,
};

/// Why a rebind failed, for the metric and the client's answer.
struct Failed {
    outcome: &'static str,
    refusal: Refusal,
}

impl Failed {
    fn upstream(outcome: &'static str, why: impl Into<String>) -> Self {
        Self {
            outcome,
            refusal: UpstreamError::Unavailable(why.into()).into(),
        }
    }
}

impl From<Refusal> for Failed {
    fn from(refusal: Refusal) -> Self {
        Self {
            // Unreachable: the app is still restarting (the caller may try
            // again); anything else is an error.
            outcome: if refusal.is_unavailable() {
                "unreachable"
            } else {
                "upstream_error"
            },
            refusal,
        }
    }
}

/// Rebinds `record`, which the caller saw in state `seen`, unless another
/// request of the session already did: one rebind per loss, whatever the
/// number of requests waiting on it.
pub async fn rebind(
    shared: &Shared,
    sessions: &Sessions,
    out: &Outbound<'_>,
    parts: &Parts,
    record: &Arc<Record>,
    seen: &State,
    reason: &'static str,
) -> Result<State, Refusal> {
    let _single = record.rebinding.lock().await;
    let now = record.touch();
    if now.generation != seen.generation {
        return Ok(now);
    }
    // With replicas: one rebinds a session at a time; the others take its
    // binding.
    let turn = sessions.rebind_turn(&record.handle, now.generation).await;
    if let RebindTurn::Done(snap) = &turn {
        record.adopt(snap);
        return Ok(record.touch());
    }
    let result = rebind_here(shared, sessions, out, parts, record, &now, reason).await;
    if result.is_ok() {
        sessions.publish(record).await;
    }
    if let RebindTurn::Held = turn {
        sessions.unlock(&record.handle).await;
    }
    result
}

async fn rebind_here(
    shared: &Shared,
    sessions: &Sessions,
    out: &Outbound<'_>,
    parts: &Parts,
    record: &Arc<Record>,
    now: &State,
    reason: &'static str,
) -> Result<State, Refusal> {
    let started = Instant::now();
    let incarnation = shared.upstream.incarnation();
    // The version the client holds: seen on its requests, or named on this
    // one. A 2025-03-26 client sends none; then any version is taken (the
    // server may have negotiated down from the one asked for).
    let expected = now
        .negotiated
        .clone()
        .or_else(|| header_text(parts, MCP_PROTOCOL_VERSION));
    match handshake(shared, out, parts, record, now, expected.as_deref()).await {
        Ok((upstream_id, version)) => {
            let mut s = record.state();
            s.upstream_id = upstream_id;
            s.generation += 1;
            s.incarnation = incarnation;
            s.negotiated = Some(version);
            s.dirty = true;
            sessions.metrics.rebind(reason, "ok");
            tracing::info!(
                session = %session::short(&record.handle),
                generation = s.generation,
                reason,
                ms = started.elapsed().as_millis() as u64,
                "upstream session re-established"
            );
            Ok(s.clone())
        }
        Err(f) => {
            sessions.metrics.rebind(reason, f.outcome);
            tracing::warn!(
                session = %session::short(&record.handle),
                reason,
                outcome = f.outcome,
                error = %f.refusal.message(),
                "upstream session could not be re-established"
            );
            if f.outcome == "contract_changed" {
                sessions.end(&record.handle).await;
                shared.held.end(&record.handle);
            }
            Err(f.refusal)
        }
    }
}

async fn handshake(
    shared: &Shared,
    out: &Outbound<'_>,
    parts: &Parts,
    record: &Record,
    state: &State,
    expected: Option<&str>,
) -> Result<(String, String), Failed> {
    // 1. initialize, as the client sent it.
    let req = request(out, parts, record.initialize.clone(), None, None)?;
    let resp = out.send(req).await?;
    if !resp.status().is_success() {
        return Err(Failed::upstream(
            "initialize_refused",
            format!("initialize answered {}", resp.status()),
        ));
    }
    let upstream_id = resp
        .headers()
        .get(MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let version = negotiated(shared, resp).await?;
    let Some(upstream_id) = upstream_id else {
        return Err(changed("the server no longer issues a session id"));
    };
    let version = match (version, expected) {
        (Some(v), None) => v,
        (Some(v), Some(e)) if v == e => v,
        (v, e) => {
            return Err(changed(format!(
                "protocol version {v:?}, the client holds {e:?}"
            )))
        }
    };
    // 2. The client's side of the handshake, then what it had set up.
    let mut replay = vec![Bytes::from_static(
        br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )];
    if let Some(level) = &state.log_level {
        replay.push(message("logging/setLevel", 0, level));
    }
    for (n, uri) in state.subscriptions.iter().enumerate() {
        let params = serde_json::json!({ "uri": uri }).to_string();
        replay.push(message("resources/subscribe", n + 1, params.as_bytes()));
    }
    for body in replay {
        let req = request(out, parts, body, Some(&upstream_id), Some(&version))?;
        let resp = out.send(req).await?;
        if !resp.status().is_success() {
            return Err(Failed::upstream(
                "replay_refused",
                format!("replaying the session's setup answered {}", resp.status()),
            ));
        }
        drain(shared, resp).await?;
    }
    Ok((upstream_id, version))
}

fn changed(why: impl Into<String>) -> Failed {
    let why = why.into();
    tracing::info!(%why, "the rebound server changed the session's contract");
    Failed {
        outcome: "contract_changed",
        refusal: Cause::UnknownSession.into(),
    }
}

/// A request of Portcullis's own in the session: fresh headers (nothing of
/// the client's request but its path and, if passed through at all, its
/// `Authorization`), so nothing a client sent for one request is replayed
/// into another.
fn request(
    out: &Outbound<'_>,
    parts: &Parts,
    body: Bytes,
    session: Option<&str>,
    version: Option<&str>,
) -> Result<Request<Full<Bytes>>, Refusal> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(parts.uri.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream");
    if let Some(id) = session {
        builder = builder.header(MCP_SESSION_ID, id);
    }
    if let Some(v) = version {
        builder = builder.header(MCP_PROTOCOL_VERSION, v);
    }
    // The client's credentials, for an upstream that checks them on every
    // request: `Outbound` drops them again unless the operator chose to
    // pass them through (`forward_authorization`).
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        builder = builder.header(header::AUTHORIZATION, auth.clone());
    }
    let (synth, ()) = builder
        .body(())
        .map_err(UpstreamError::Request)?
        .into_parts();
    out.request(&synth, body)
}

fn message(method: &str, n: usize, params: &[u8]) -> Bytes {
    let mut out =
        format!(r#"{{"jsonrpc":"2.0","id":"portcullis-rebind-{n}","method":"{method}","params":"#)
            .into_bytes();
    out.extend_from_slice(params);
    out.push(b'}');
    Bytes::from(out)
}

fn header_text(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn read(shared: &Shared, resp: Response<Incoming>) -> Result<(BodyType, Bytes), Failed> {
    let kind = relay::body_type(resp.headers()).map_err(Failed::from)?;
    let timeout = shared.upstream.request_timeout();
    let body = Limited::new(resp.into_body(), shared.max_response_bytes).collect();
    match tokio::time::timeout(timeout, body).await {
        Ok(Ok(c)) => Ok((kind, c.to_bytes())),
        Ok(Err(e)) => Err(Failed::upstream("read_failed", e.to_string())),
        Err(_) => Err(Refusal::from(UpstreamError::Timeout(timeout)).into()),
    }
}

async fn drain(shared: &Shared, resp: Response<Incoming>) -> Result<(), Failed> {
    read(shared, resp).await.map(drop)
}

/// The `protocolVersion` of an `initialize` answer, in JSON or in the
/// first message event of an SSE stream. This answer is Portcullis's own
/// (it never reaches a client), so a plain JSON read is enough.
async fn negotiated(shared: &Shared, resp: Response<Incoming>) -> Result<Option<String>, Failed> {
    let (kind, bytes) = read(shared, resp).await?;
    let version = |data: &[u8]| -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(data).ok()?;
        Some(
            v.get("result")?
                .get("protocolVersion")?
                .as_str()?
                .to_string(),
        )
    };
    Ok(match kind {
        BodyType::EventStream => {
            let mut decoder = sse::Decoder::new(shared.max_response_bytes);
            decoder.push(&bytes);
            let mut found = None;
            while let Ok(Some(event)) = decoder.next_event() {
                if let Some(v) = event.data.as_deref().and_then(|d| version(d.as_bytes())) {
                    found = Some(v);
                    break;
                }
            }
            found.or_else(|| {
                decoder
                    .finish()
                    .and_then(|e| e.data)
                    .and_then(|d| version(d.as_bytes()))
            })
        }
        _ => version(&bytes),
    })
}
