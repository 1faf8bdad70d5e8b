//! Answers Portcullis has no reason to read, relayed as they arrive.
//!
//! A JSON answer that a policy inspects (a list, a `tools/call` result) is
//! read whole, within `max_response_bytes` and `request_timeout`, and then
//! judged. Any other JSON answer used to be read whole as well, so an
//! upstream that streamed one under `application/json` and never ended it
//! held the client until the timeout. Such answers now pass frame by frame.
//!
//! The bound on a passed-through body is progress, not its total length or
//! duration: `request_timeout` covers the wait for the head (as for every
//! answer) and then each wait for the next frame. A body that keeps moving
//! is never cut; one that stalls for a whole `request_timeout` is ended
//! with an error, so the client sees a broken body instead of waiting
//! forever. Nothing is buffered beyond the relay channel, so no byte limit
//! is needed.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::{exchange::Exchange, metrics::HttpMetrics, outbound};
use crate::{
    body::{BoxError, ProxyBody},
    mcp::{Call, Kind},
    upstream::UpstreamError,
};

/// Frames buffered between the relay task and the client connection.
const CHANNEL_FRAMES: usize = 16;

/// Methods whose answers no policy reads. An allowlist, so that a method
/// added later (or one Portcullis does not know) is inspected until it is
/// put here on purpose: lists are filtered, `tools/call` results go to the
/// result hooks when any is in force, and the `tasks/*` methods answer
/// with those results.
const UNINSPECTED: &[&str] = &[
    // Without result hooks; its bytes are watched for a task it creates
    // (see [`Sniff`]), never held.
    "tools/call",
    "initialize",
    "ping",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
];

/// Whether the answer to the allowed message `call` may pass unread: it is
/// a request with an id whose method no policy reads the answer of.
/// `inspected` is the judge's own say (`Judge::wants_result`), kept so that
/// a result hook added for another method wins over the list above.
pub fn may_stream(call: &Call, inspected: bool) -> bool {
    call.kind == Kind::Request
        && call.id.is_some()
        && !inspected
        && UNINSPECTED.contains(&call.method.as_str())
}

/// Relays `resp` as it is (head as for every answer, body frame by frame),
/// ending the body with an error once the upstream is silent for `idle`.
pub fn relay(
    resp: Response<Incoming>,
    idle: Duration,
    metrics: HttpMetrics,
    sniff: Sniff,
) -> Response<ProxyBody> {
    let head = outbound::response_head(&resp, true);
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    tokio::spawn(pump(resp.into_body(), tx, idle, metrics, sniff));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    outbound::with_body(head, StreamBody::new(stream).boxed_unsync())
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

/// Watches a passed-through `tools/call` answer for the task it creates,
/// so that the task is tied to its tool and caller before the client can
/// read its id: the bytes seen so far (up to `max_response_bytes`, the
/// bound a read-whole answer has) are read as an answer whenever they may
/// be complete, before the frame that completes them is sent on.
pub struct Sniff {
    ex: Option<Exchange>,
    seen: Vec<u8>,
    cap: usize,
}

impl Sniff {
    /// `ex` expects the answer; nothing is watched when it keeps no call.
    pub fn new(ex: Exchange, cap: usize) -> Self {
        Self {
            ex: ex.answers.reads_any().then_some(ex),
            seen: Vec::new(),
            cap,
        }
    }

    pub fn frame(&mut self, frame: &Frame<Bytes>) {
        let (Some(ex), Some(data)) = (&mut self.ex, frame.data_ref()) else {
            return;
        };
        if self.seen.len() + data.len() > self.cap {
            // Larger than any answer Portcullis reads whole: not a task.
            self.ex = None;
            self.seen = Vec::new();
            return;
        }
        self.seen.extend_from_slice(data);
        if self.seen.trim_ascii_end().last() == Some(&b'}') && ex.process(&self.seen).is_ok() {
            self.ex = None;
            self.seen = Vec::new();
        }
    }
}

/// Moves frames from the upstream to the client. Time spent waiting on a
/// slow client does not count against the upstream.
async fn pump(
    mut upstream: Incoming,
    tx: Tx,
    idle: Duration,
    metrics: HttpMetrics,
    mut sniff: Sniff,
) {
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(idle, upstream.frame()) => next,
            // The client went away: drop the upstream request now.
            () = tx.closed() => return,
        };
        let item = match next {
            Ok(None) => return,
            Ok(Some(Ok(frame))) => {
                sniff.frame(&frame);
                Ok(frame)
            }
            Ok(Some(Err(e))) => {
                metrics.upstream_error("stream_broken");
                Err(Box::new(e) as BoxError)
            }
            Err(_) => {
                metrics.upstream_error("body_stalled");
                tracing::warn!(?idle, "upstream answer stalled; ending it");
                Err(Box::new(UpstreamError::Timeout(idle)) as BoxError)
            }
        };
        let done = item.is_err();
        if tx.send(item).await.is_err() || done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::{message::parse_message, Era};

    fn call(body: &str) -> Call {
        parse_message(body.as_bytes(), &Era::from_version(Some("2025-06-18"))).unwrap()
    }

    fn request(method: &str) -> Call {
        call(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"uri":"x","name":"x","taskId":"t"}}}}"#
        ))
    }

    #[test]
    fn only_answers_no_policy_reads_may_stream() {
        for method in [
            "resources/read",
            "prompts/get",
            "initialize",
            "ping",
            "tools/call",
        ] {
            assert!(may_stream(&request(method), false), "{method}");
        }
        for method in [
            "tools/list",
            "prompts/list",
            "resources/list",
            "resources/templates/list",
            "tasks/get",
            "tasks/list",
            "vendor/unknown",
        ] {
            assert!(!may_stream(&request(method), false), "{method}");
        }
    }

    #[test]
    fn the_judge_can_claim_any_answer() {
        assert!(!may_stream(&request("resources/read"), true));
    }

    #[test]
    fn only_requests_with_ids_may_stream() {
        let note = call(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert!(!may_stream(&note, false));
    }
}
