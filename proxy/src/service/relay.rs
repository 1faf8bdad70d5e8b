//! Relaying upstream answers to the client: SSE streams event by event,
//! JSON answers whole, with lists filtered by policy in both.

use std::{collections::HashSet, sync::Arc};

use bytes::Bytes;
use http::{header, HeaderMap};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    body::{BoxError, ProxyBody},
    legacy, respond, Shared,
};
use crate::{
    identity::Caller,
    mcp::{lists, sse, ErrorCode, RpcError},
};

/// Frames buffered between the relay task and the client connection. Small,
/// so that a slow client applies back-pressure to the upstream.
const CHANNEL_FRAMES: usize = 16;

pub fn is_event_stream(headers: &HeaderMap) -> bool {
    content_type_is(headers, respond::EVENT_STREAM)
}

pub fn is_json(headers: &HeaderMap) -> bool {
    content_type_is(headers, respond::JSON)
}

fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// A JSON-RPC id in a canonical text form, so that `1` and `1` from two
/// different serializers compare equal.
pub fn canonical_id(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| raw.to_string())
}

/// One error message per request id.
pub fn errors_for(ids: &[Bytes], code: ErrorCode, message: &str) -> Vec<Bytes> {
    ids.iter()
        .map(|id| {
            let raw = RawValue::from_string(String::from_utf8_lossy(id).into_owned()).ok();
            RpcError::new(code, message).with_id(raw).to_bytes()
        })
        .collect()
}

#[derive(Deserialize)]
struct ResponseProbe<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// The canonical id of a JSON-RPC response, if `msg` is one.
fn response_id(msg: &[u8]) -> Option<String> {
    let probe: ResponseProbe<'_> = serde_json::from_slice(msg).ok()?;
    if probe.result.is_none() && probe.error.is_none() {
        return None;
    }
    probe.id.map(|id| canonical_id(id.get()))
}

/// Applies list filtering to one JSON-RPC message. Returns the bytes to
/// send, or `None` to send the original.
pub fn filter_message(shared: &Shared, caller: &Caller, msg: &[u8]) -> Option<Bytes> {
    let (out, removed) = lists::filter_message(msg, |kind, items| {
        let verdicts = shared.policy.visible(caller, kind, items);
        if verdicts.len() != items.len() {
            tracing::warn!(
                kind = kind.key(),
                "policy returned a short verdict list; hiding the rest"
            );
        }
        shared.metrics.hidden(
            kind.key(),
            items.len() - verdicts.iter().filter(|v| **v).count(),
        );
        verdicts
    })?;
    tracing::debug!(removed, "filtered list response");
    Some(out)
}

/// Filters a whole JSON answer (one message or a batch) and appends
/// `extra` messages (denials from a partly allowed batch).
pub fn filter_json(shared: &Shared, caller: &Caller, body: &[u8], extra: &[Bytes]) -> Bytes {
    let trimmed = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&body[..0], |s| &body[s..]);
    let mut msgs: Vec<Bytes> = if trimmed.first() == Some(&b'[') {
        match serde_json::from_slice::<Vec<&RawValue>>(trimmed) {
            Ok(items) => items
                .iter()
                .map(|m| {
                    filter_message(shared, caller, m.get().as_bytes())
                        .unwrap_or_else(|| Bytes::copy_from_slice(m.get().as_bytes()))
                })
                .collect(),
            Err(_) => return Bytes::copy_from_slice(body),
        }
    } else if trimmed.is_empty() {
        Vec::new()
    } else {
        vec![filter_message(shared, caller, trimmed)
            .unwrap_or_else(|| Bytes::copy_from_slice(trimmed))]
    };
    if extra.is_empty() && msgs.len() == 1 && trimmed.first() != Some(&b'[') {
        return msgs.remove(0);
    }
    msgs.extend_from_slice(extra);
    respond::join_array(&msgs)
}

/// A task that relays one upstream SSE stream to the client.
pub struct SseRelay {
    shared: Arc<Shared>,
    caller: Caller,
    /// Ids of requests in this POST still waiting for their response.
    pending: HashSet<String>,
    /// Messages sent before anything from the upstream (batch denials).
    preface: Vec<Bytes>,
    legacy: Option<legacy::StreamContext>,
    until: Option<CancellationToken>,
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

impl SseRelay {
    pub fn new(
        shared: Arc<Shared>,
        caller: Caller,
        pending: Vec<Bytes>,
        preface: Vec<Bytes>,
    ) -> Self {
        let pending = pending
            .iter()
            .map(|id| canonical_id(&String::from_utf8_lossy(id)))
            .collect();
        Self {
            shared,
            caller,
            pending,
            preface,
            legacy: None,
            until: None,
        }
    }

    pub fn with_legacy(mut self, ctx: legacy::StreamContext) -> Self {
        self.legacy = Some(ctx);
        self
    }

    /// Ends the stream cleanly when `token` is cancelled (used for GET
    /// streams while draining; a POST stream always runs to its answer).
    pub fn until(mut self, token: CancellationToken) -> Self {
        self.until = Some(token);
        self
    }

    /// Starts relaying and returns the client-side body.
    pub fn spawn(self, upstream: Incoming) -> ProxyBody {
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        tokio::spawn(self.run(upstream, tx));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        StreamBody::new(stream).boxed_unsync()
    }

    async fn run(mut self, mut upstream: Incoming, tx: Tx) {
        for msg in std::mem::take(&mut self.preface) {
            if send(&tx, respond::sse_message(&msg)).await.is_err() {
                return;
            }
        }
        let max = self.shared.config.limits.max_response_bytes;
        let mut decoder = sse::Decoder::new(max);
        let mut injected: Option<mpsc::Receiver<Bytes>> = None;
        let until = self.until.clone();
        let failure = loop {
            tokio::select! {
                frame = upstream.frame() => match frame {
                    None => break None,
                    Some(Err(e)) => break Some(format!("upstream stream broke: {e}")),
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else { continue };
                        decoder.push(&data);
                        match self.drain(&mut decoder, &mut injected, &tx).await {
                            Ok(true) => {}
                            Ok(false) => return,
                            Err(e) => break Some(e),
                        }
                    }
                },
                msg = recv(&mut injected) => match msg {
                    Some(msg) => if send(&tx, respond::sse_message(&msg)).await.is_err() { return },
                    None => injected = None,
                },
                () = cancelled(until.as_ref()) => break None,
            }
        };
        if let Some(event) = decoder.finish() {
            let out = self.on_event(event, &mut injected);
            if send(&tx, out).await.is_err() {
                return;
            }
        }
        self.finish(failure, &tx).await;
    }

    /// Sends every complete event in the decoder. `Ok(false)` means the
    /// client went away.
    async fn drain(
        &mut self,
        decoder: &mut sse::Decoder,
        injected: &mut Option<mpsc::Receiver<Bytes>>,
        tx: &Tx,
    ) -> Result<bool, String> {
        while let Some(event) = decoder.next_event().map_err(|e| e.to_string())? {
            let out = self.on_event(event, injected);
            if send(tx, out).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn on_event(
        &mut self,
        event: sse::Event,
        injected: &mut Option<mpsc::Receiver<Bytes>>,
    ) -> Bytes {
        if event.kind() == "endpoint" {
            if let (Some(ctx), Some(data)) = (self.legacy.as_mut(), event.data.as_deref()) {
                let (rewritten, rx) = ctx.register(data);
                *injected = Some(rx);
                return sse::encode(Some("endpoint"), event.id.as_deref(), &rewritten);
            }
        }
        let Some(data) = event.data.as_deref().filter(|_| event.kind() == "message") else {
            return event.raw;
        };
        if let Some(id) = response_id(data.as_bytes()) {
            self.pending.remove(&id);
        }
        match filter_message(&self.shared, &self.caller, data.as_bytes()) {
            Some(filtered) => sse::encode(
                event.event.as_deref(),
                event.id.as_deref(),
                &String::from_utf8_lossy(&filtered),
            ),
            None => event.raw,
        }
    }

    /// Requests that never got their answer get a JSON-RPC error, so that
    /// no client waits forever on a stream the upstream dropped.
    async fn finish(self, failure: Option<String>, tx: &Tx) {
        if let Some(why) = &failure {
            self.shared.metrics.upstream_error("stream_broken");
            tracing::warn!(error = %why, pending = self.pending.len(), "upstream SSE stream ended abnormally");
        }
        if self.pending.is_empty() {
            return;
        }
        let why = failure.unwrap_or_else(|| "upstream closed the stream before answering".into());
        let ids: Vec<Bytes> = self
            .pending
            .iter()
            .map(|id| Bytes::from(id.clone()))
            .collect();
        for msg in errors_for(&ids, ErrorCode::UpstreamUnavailable, &why) {
            if send(tx, respond::sse_message(&msg)).await.is_err() {
                return;
            }
        }
    }
}

async fn send(tx: &Tx, bytes: Bytes) -> Result<(), ()> {
    tx.send(Ok(Frame::data(bytes))).await.map_err(|_| ())
}

async fn recv(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_ids_are_canonical() {
        assert_eq!(
            response_id(br#"{"jsonrpc":"2.0","id": 1 ,"result":{}}"#),
            Some("1".into())
        );
        assert_eq!(
            response_id(br#"{"id":"a","error":{"code":1}}"#),
            Some("\"a\"".into())
        );
        assert_eq!(response_id(br#"{"id":1,"method":"x"}"#), None);
        assert_eq!(canonical_id(" \"x\" "), "\"x\"");
    }

    #[test]
    fn errors_carry_ids() {
        let out = errors_for(
            &[Bytes::from_static(b"7")],
            ErrorCode::UpstreamTimeout,
            "slow",
        );
        let v: serde_json::Value = serde_json::from_slice(&out[0]).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32053);
    }
}
