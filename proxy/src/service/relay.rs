//! Relaying upstream answers to the client: SSE streams event by event,
//! JSON answers whole. Every message goes through [`Exchange::process`],
//! and everything the SSE relay writes to the client goes through
//! [`SseRelay::emit`] (where a replay buffer will hook in).

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    exchange::Exchange,
    legacy,
    metrics::HttpMetrics,
    rescue::{self, Cause, Refusal},
    respond,
};
use crate::{
    body::{BoxError, ProxyBody},
    mcp::{
        content_type::{self, BodyType},
        sse,
    },
};

/// Frames buffered between the relay task and the client connection. Small,
/// so that a slow client applies back-pressure to the upstream.
const CHANNEL_FRAMES: usize = 16;

/// The first message of a `subscriptions/listen` stream (2026-07-28).
const LISTEN_ACK: &str = "notifications/subscriptions/acknowledged";

/// How an answer's body will be read by a client: an SSE stream, JSON
/// (inspected whole), or other bytes; a body Portcullis could not see
/// through (compressed, a repeated or unreadable Content-Type, another
/// charset) is refused.
pub fn body_type(headers: &HeaderMap) -> Result<BodyType, Refusal> {
    content_type::check_encoding(headers)
        .and_then(|()| content_type::classify(headers))
        .map_err(|e| Cause::UnreadableAnswer(e.to_string()).into())
}

/// What an SSE relay needs besides its exchange.
#[derive(Clone)]
pub struct SseSettings {
    /// Largest single event read from the upstream.
    pub max_event_bytes: usize,
    pub metrics: HttpMetrics,
}

/// Processes a whole JSON answer (one message or a batch) and appends
/// `extra` messages (denials from a partly allowed batch). A body that
/// cannot be read with certainty is refused whole.
pub fn filter_json(ex: &mut Exchange, body: &[u8], extra: &[Bytes]) -> Result<Bytes, Refusal> {
    let trimmed = crate::mcp::message::trim_start(body);
    let is_batch = trimmed.first() == Some(&b'[');
    let mut msgs: Vec<Bytes> = if is_batch {
        ex.answers.admit_batch()?;
        let items = serde_json::from_slice::<Vec<&RawValue>>(trimmed)
            .map_err(|e| Refusal::from(Cause::UnreadableAnswer(e.to_string())))?;
        items
            .iter()
            .map(|m| process_or_copy(ex, m.get().as_bytes()))
            .collect::<Result<_, _>>()?
    } else if trimmed.is_empty() {
        Vec::new()
    } else {
        // The whole body, not the trimmed one: a BOM or other bytes before
        // the value are the strict reader's to refuse.
        vec![process_or_copy(ex, body)?]
    };
    if extra.is_empty() && msgs.len() == 1 && !is_batch {
        return Ok(msgs.remove(0));
    }
    msgs.extend_from_slice(extra);
    Ok(respond::join_array(&msgs))
}

fn process_or_copy(ex: &mut Exchange, msg: &[u8]) -> Result<Bytes, Refusal> {
    Ok(ex
        .process(msg)?
        .unwrap_or_else(|| Bytes::copy_from_slice(msg)))
}

/// A task that relays one upstream SSE stream to the client.
pub struct SseRelay {
    ex: Exchange,
    settings: SseSettings,
    /// Messages sent before anything from the upstream (batch denials).
    preface: Vec<Bytes>,
    legacy: Option<legacy::StreamContext>,
    until: Option<CancellationToken>,
    /// Whether an event with an id has passed: the client can resume the
    /// stream from it, so a clean end is the server's to explain.
    resumable: bool,
    /// Sends the request again if the upstream stream breaks: once before
    /// a POST's answer (set only for requests safe to run twice), or, for
    /// a session's GET stream, each time it breaks, so that the client's
    /// stream stays open across an upstream restart.
    retry: Option<Retry>,
    /// Whether `retry` serves a GET stream (no answer awaited).
    reopen: bool,
    /// The `params` of the acknowledgement a `subscriptions/listen` stream
    /// began with: when the request is issued again upstream, the new
    /// acknowledgement is not shown to the client if it is the same, and
    /// ends the stream if it is not (the subscription changed).
    acknowledged: Option<Option<serde_json::Value>>,
    /// Sends a POST to the upstream (the path, the body): for a legacy
    /// stream, which is then reopened when it breaks, and its session set
    /// up again on the new server.
    legacy_rebind: Option<LegacyPost>,
    /// Whether the stream was opened again upstream (an `endpoint` now
    /// comes from a restarted server).
    reopened: bool,
    /// The id of an answer not to show the client (to an `initialize`
    /// Portcullis sent again).
    swallow: Option<String>,
    /// When the stream ends, whatever comes: the expiry of the token that
    /// opened it (a long-lived stream must not outlive its credential).
    deadline: Option<tokio::time::Instant>,
    /// Whether a request left unanswered is reported as possibly run and
    /// not retryable (in a Portcullis session, for requests not safe to
    /// send again), rather than as the upstream being unavailable.
    outcome_unknown: bool,
}

/// What [`Retry`] gives back.
pub type Resent =
    futures_util::future::BoxFuture<'static, Result<http::Response<Incoming>, Refusal>>;

/// Sends a request again, in a session rebound if need be.
pub type Retry = std::sync::Arc<dyn Fn() -> Resent + Send + Sync>;

/// Sends a POST (path and query, body) to the upstream, waiting for it to
/// be up; gives the answer's status.
pub type LegacyPost = std::sync::Arc<
    dyn Fn(
            String,
            Bytes,
        ) -> futures_util::future::BoxFuture<'static, Result<http::StatusCode, Refusal>>
        + Send
        + Sync,
>;

/// How one upstream body ended.
enum Ended {
    /// The client went away.
    ClientGone,
    /// Cleanly (`None`) or not.
    Upstream(Option<Failure>),
}

struct Failure {
    why: String,
    /// The connection broke (rather than Portcullis refusing what came).
    transport: bool,
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

impl SseRelay {
    pub fn new(ex: Exchange, preface: Vec<Bytes>, settings: SseSettings) -> Self {
        Self {
            ex,
            settings,
            preface,
            legacy: None,
            until: None,
            resumable: false,
            retry: None,
            reopen: false,
            acknowledged: None,
            legacy_rebind: None,
            reopened: false,
            swallow: None,
            deadline: None,
            outcome_unknown: false,
        }
    }

    /// See [`SseRelay::outcome_unknown`].
    pub fn outcome_unknown(mut self, yes: bool) -> Self {
        self.outcome_unknown = yes;
        self
    }

    /// See [`SseRelay::retry`]: a POST's request, sent again at most once.
    pub fn with_retry(mut self, retry: Option<Retry>) -> Self {
        self.retry = retry;
        self
    }

    /// See [`SseRelay::retry`]: a GET stream (or a `subscriptions/listen`
    /// request), opened again each time the upstream's breaks.
    pub fn with_reopen(mut self, reopen: Option<Retry>) -> Self {
        self.reopen = reopen.is_some();
        self.retry = reopen;
        self
    }

    pub fn with_legacy(mut self, ctx: legacy::StreamContext) -> Self {
        self.legacy = Some(ctx);
        self
    }

    /// A legacy (2024-11-05) stream that survives a server restart: with
    /// `reopen` (opening `/sse` again) and `post` (to set up the new
    /// server's session). Used only once the stream has an endpoint.
    pub fn with_legacy_rebind(mut self, reopen: Option<Retry>, post: Option<LegacyPost>) -> Self {
        if let (Some(reopen), Some(post)) = (reopen, post) {
            self.reopen = true;
            self.retry = Some(reopen);
            self.legacy_rebind = Some(post);
        }
        self
    }

    /// Ends the stream at `deadline` (see [`SseRelay::deadline`]).
    pub fn expires(mut self, deadline: Option<tokio::time::Instant>) -> Self {
        self.deadline = deadline;
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
            if Self::emit(&tx, respond::sse_message(&msg)).await.is_err() {
                return;
            }
        }
        let mut injected: Option<mpsc::Receiver<Bytes>> = None;
        // Reopened streams that broke again within a second, in a row.
        let mut quick_breaks = 0u32;
        loop {
            let opened_at = std::time::Instant::now();
            let failure = match self.relay_body(upstream, &mut injected, &tx).await {
                Ended::ClientGone => return,
                Ended::Upstream(failure) => failure,
            };
            let retry = self.retry_after(failure.as_ref());
            let failure = failure.map(|f| f.why);
            let Some(retry) = retry else {
                return self.finish(failure, &tx).await;
            };
            if let Some(why) = &failure {
                tracing::info!(error = %why, "upstream stream broke; opening it again");
            }
            if let (Some(ctx), true) = (&self.legacy, self.legacy_rebind.is_some()) {
                ctx.lost();
            }
            if self.reopen {
                // A stream that breaks at once each time must not spin:
                // 100 ms doubling to 5 s, and no more after 8 in a row.
                quick_breaks = match opened_at.elapsed() < std::time::Duration::from_secs(1) {
                    true => quick_breaks + 1,
                    false => 0,
                };
                if quick_breaks > 8 {
                    return self.finish(failure, &tx).await;
                }
                let pause = std::time::Duration::from_millis(100 << quick_breaks.min(6));
                tokio::time::sleep(pause.min(std::time::Duration::from_secs(5))).await;
            }
            // The client may leave while the upstream comes back.
            let resent = tokio::select! {
                r = retry() => r,
                () = tx.closed() => return,
            };
            match resent {
                Ok(resp) if resp.status().is_success() => match body_type(resp.headers()) {
                    Ok(BodyType::EventStream) => {
                        self.reopened = true;
                        upstream = resp.into_body();
                    }
                    Ok(BodyType::Json) => return self.finish_json(resp, &tx).await,
                    _ => return self.finish(failure, &tx).await,
                },
                Ok(resp) => {
                    let why = format!("sent again, the upstream answered {}", resp.status());
                    return self.finish(Some(why), &tx).await;
                }
                Err(refusal) => return self.finish(Some(refusal.message()), &tx).await,
            }
        }
    }

    /// How to send for the stream again after it ended with `failure`, if
    /// at all.
    fn retry_after(&mut self, failure: Option<&Failure>) -> Option<Retry> {
        // Only the transport breaking is the upstream going away: an event
        // Portcullis refused (too large, unreadable) is not sent for again.
        let transport = failure.is_some_and(|f| f.transport);
        let waiting = !self.ex.answers.unanswered().is_empty();
        // A legacy stream is reopened only once it has an endpoint: there
        // is a session to carry over.
        let reopen = self.reopen
            && (self.legacy_rebind.is_none()
                || self.legacy.as_ref().is_some_and(|c| c.registered()));
        match (transport, waiting || reopen) {
            (true, true) if reopen => self.retry.clone(),
            (true, true) => self.retry.take(),
            _ => None,
        }
    }

    /// Relays one upstream body until it ends, breaks, or the client goes.
    async fn relay_body(
        &mut self,
        mut upstream: Incoming,
        injected: &mut Option<mpsc::Receiver<Bytes>>,
        tx: &Tx,
    ) -> Ended {
        let mut decoder = sse::Decoder::new(self.settings.max_event_bytes);
        let until = self.until.clone();
        let failure = loop {
            tokio::select! {
                frame = upstream.frame() => match frame {
                    None => break None,
                    Some(Err(e)) => break Some(Failure {
                        why: format!("upstream stream broke: {e}"),
                        transport: true,
                    }),
                    Some(Ok(frame)) => {
                        let Ok(data) = frame.into_data() else { continue };
                        decoder.push(&data);
                        match self.drain(&mut decoder, injected, tx).await {
                            Ok(true) => {}
                            Ok(false) => return Ended::ClientGone,
                            Err(why) => break Some(Failure { why, transport: false }),
                        }
                    }
                },
                msg = recv(injected) => match msg {
                    Some(msg) => if Self::emit(tx, respond::sse_message(&msg)).await.is_err() {
                        return Ended::ClientGone;
                    },
                    None => *injected = None,
                },
                () = cancelled(until.as_ref()) => break None,
                () = at(self.deadline) => {
                    tracing::info!("stream ended: the token that opened it expired");
                    break None;
                }
                // The client went away: let go of the upstream request now
                // (dropping its body resets it), not at the next event, so
                // that the server frees the stream for a resumption.
                () = tx.closed() => return Ended::ClientGone,
            }
        };
        let mut failure = failure;
        if let Some(event) = decoder.finish() {
            match self.on_event(event, injected) {
                Ok(out) => {
                    if !out.is_empty() && Self::emit(tx, out).await.is_err() {
                        return Ended::ClientGone;
                    }
                }
                Err(why) => {
                    failure = Some(Failure {
                        why,
                        transport: false,
                    })
                }
            }
        }
        Ended::Upstream(failure)
    }

    /// A request sent again was answered in JSON: its answer goes on the
    /// client's stream as one event.
    async fn finish_json(mut self, resp: http::Response<Incoming>, tx: &Tx) {
        let read = http_body_util::Limited::new(resp.into_body(), self.settings.max_event_bytes)
            .collect()
            .await;
        let out = match read {
            Ok(c) => filter_json(&mut self.ex, &c.to_bytes(), &[]).map_err(|r| r.message()),
            Err(e) => Err(format!("reading the answer: {e}")),
        };
        match out {
            Ok(msg) => {
                if Self::emit(tx, respond::sse_message(&msg)).await.is_ok() {
                    self.finish(None, tx).await;
                }
            }
            Err(why) => self.finish(Some(why), tx).await,
        }
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
            let out = self.on_event(event, injected)?;
            if !out.is_empty() && Self::emit(tx, out).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn on_event(
        &mut self,
        event: sse::Event,
        injected: &mut Option<mpsc::Receiver<Bytes>>,
    ) -> Result<Bytes, String> {
        if event.id.as_deref().is_some_and(|id| !id.is_empty()) {
            self.resumable = true;
        }
        if event.kind() == "endpoint" {
            if let (Some(ctx), Some(data), Some(post), true) = (
                self.legacy.as_mut(),
                event.data.as_deref(),
                self.legacy_rebind.clone(),
                self.reopened,
            ) {
                if ctx.registered() {
                    // A restarted server's endpoint: the client keeps its own.
                    let rebound = ctx.rebound(data)?;
                    self.swallow = rebound.initialize.as_ref().map(|(_, id)| id.clone());
                    tokio::spawn(legacy_setup(post, ctx.sessions(), rebound));
                    return Ok(Bytes::new());
                }
            }
            if let (Some(ctx), Some(data)) = (self.legacy.as_mut(), event.data.as_deref()) {
                // An endpoint that could lead the client around the proxy
                // ends the stream: without it the client cannot POST at all.
                let (rewritten, rx, calls) = ctx.register(data)?;
                *injected = Some(rx);
                self.ex.answers.legacy_calls = Some(calls);
                return Ok(sse::encode(
                    Some("endpoint"),
                    event.id.as_deref(),
                    &rewritten,
                ));
            }
        }
        // An event with no data carries no message: servers send one with
        // just an id to prime resumption (SEP-1699), and clients skip it.
        let Some(data) = event
            .data
            .as_deref()
            .filter(|d| event.kind() == "message" && !d.is_empty())
        else {
            return Ok(event.raw);
        };
        if self.reopen && !acknowledge(&mut self.acknowledged, data)? {
            return Ok(Bytes::new());
        }
        if self.swallow.as_deref().is_some_and(|id| answers(data, id)) {
            self.swallow = None;
            return Ok(Bytes::new());
        }
        let processed = self.ex.process(data.as_bytes()).map_err(|r| r.message())?;
        Ok(match processed {
            Some(out) => sse::encode(
                event.event.as_deref(),
                event.id.as_deref(),
                &String::from_utf8_lossy(&out),
            ),
            None => event.raw,
        })
    }

    /// Requests that never got their answer get a JSON-RPC error, so that
    /// no client waits forever on a stream the upstream dropped.
    async fn finish(self, failure: Option<String>, tx: &Tx) {
        let pending = self.ex.answers.unanswered();
        if let Some(why) = &failure {
            self.settings.metrics.upstream_error("stream_broken");
            tracing::warn!(error = %why, pending = pending.len(), "upstream SSE stream ended abnormally");
        }
        // A server may end a stream on purpose once it has sent an event
        // with an id (SSE polling, SEP-1699): the client resumes with
        // Last-Event-ID and gets the answers there. Only a stream that broke,
        // or ended before anything resumable, leaves the client waiting.
        if pending.is_empty() || (failure.is_none() && self.resumable) {
            return;
        }
        let why = failure.unwrap_or_else(|| "upstream closed the stream before answering".into());
        // The request reached the upstream and no answer came back: it may
        // have run. In a session, where Portcullis resends what is safe to
        // run twice, the client is told so for the rest.
        let refusal = match self.outcome_unknown {
            true => Refusal::from(Cause::OutcomeUnknown(why)),
            false => Refusal::from(crate::upstream::UpstreamError::Unavailable(why)),
        };
        for id in &pending {
            let msg = rescue::for_id(&refusal, id);
            if Self::emit(tx, respond::sse_message(&msg)).await.is_err() {
                return;
            }
        }
    }

    /// The one way bytes reach the client of an SSE relay. `Err`: the
    /// client went away.
    async fn emit(tx: &Tx, bytes: Bytes) -> Result<(), ()> {
        tx.send(Ok(Frame::data(bytes))).await.map_err(|_| ())
    }
}

/// Whether a message of a re-issued stream reaches the client: the first
/// `subscriptions/listen` acknowledgement does, the same one again (from
/// the request issued anew) does not, and a different one ends the stream:
/// the client was told what it is subscribed to.
fn acknowledge(first: &mut Option<Option<serde_json::Value>>, data: &str) -> Result<bool, String> {
    if !data.contains(LISTEN_ACK) {
        return Ok(true);
    }
    #[derive(serde::Deserialize)]
    struct Note {
        method: Option<String>,
        params: Option<serde_json::Value>,
    }
    let Ok(note) = serde_json::from_str::<Note>(data) else {
        return Ok(true);
    };
    if note.method.as_deref() != Some(LISTEN_ACK) {
        return Ok(true);
    }
    match first {
        None => {
            *first = Some(note.params);
            Ok(true)
        }
        Some(seen) if *seen == note.params => Ok(false),
        Some(_) => Err("the subscription issued again was acknowledged differently".into()),
    }
}

/// Whether `data` is the answer to request `id` (a string id).
fn answers(data: &str, id: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        id: Option<serde_json::Value>,
        method: Option<serde_json::Value>,
    }
    data.contains(id)
        && serde_json::from_str::<Answer>(data)
            .is_ok_and(|a| a.method.is_none() && a.id.as_ref().and_then(|v| v.as_str()) == Some(id))
}

/// Sets up a restarted server's session for a legacy stream: the client's
/// `initialize` (under Portcullis's id) and `notifications/initialized`,
/// then lets the client's POSTs through to it. If the server refuses,
/// POSTs still flow, and the client gets the server's own answers.
async fn legacy_setup(
    post: LegacyPost,
    sessions: std::sync::Arc<legacy::LegacySessions>,
    rebound: legacy::Rebound,
) {
    if let Some((initialize, _)) = rebound.initialize {
        let initialized =
            Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        for body in [initialize, initialized] {
            match post(rebound.upstream.clone(), body).await {
                Ok(status) if status.is_success() => {}
                Ok(status) => {
                    tracing::warn!(%status, "the restarted server refused the session set-up");
                    break;
                }
                Err(refusal) => {
                    tracing::warn!(error = %refusal.message(), "session set-up on the restarted server failed");
                    break;
                }
            }
        }
    }
    sessions.set_ready(&rebound.endpoint, true);
}

async fn recv(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn at(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
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

    use crate::upstream::UpstreamError;

    #[test]
    fn a_listen_acknowledged_again_is_shown_once_and_a_changed_one_ends_it() {
        let ack = |uris: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","method":"{LISTEN_ACK}","params":{{"notifications":{{"resourceSubscriptions":[{uris}]}}}}}}"#
            )
        };
        let mut first = None;
        assert_eq!(acknowledge(&mut first, &ack(r#""a""#)), Ok(true));
        let event =
            r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"a"}}"#;
        assert_eq!(acknowledge(&mut first, event), Ok(true));
        assert_eq!(acknowledge(&mut first, &ack(r#""a""#)), Ok(false));
        assert!(acknowledge(&mut first, &ack(r#""b""#)).is_err());
        // A message merely mentioning the method is not an acknowledgement.
        let mention = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"text":"{LISTEN_ACK}"}}}}"#);
        assert_eq!(acknowledge(&mut first, &mention), Ok(true));
    }

    #[test]
    fn errors_carry_ids() {
        let r = Refusal::from(UpstreamError::Timeout(std::time::Duration::from_secs(1)));
        let out = rescue::for_id(&r, b"7");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32053);
    }
}
