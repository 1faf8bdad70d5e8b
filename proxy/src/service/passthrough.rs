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
//! forever. Nothing is buffered (the client's connection reads the
//! upstream's body directly), so no byte limit is needed.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use serde::de::IgnoredAny;

use super::{exchange::Exchange, metrics::HttpMetrics, outbound, rescue::Refusal};
use crate::{
    body::{BoxError, ProxyBody},
    mcp::{Call, Kind},
    upstream::UpstreamError,
};

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
/// The client's connection polls the upstream body directly: no task and
/// no channel between them, so a frame costs no wakeup of another task
/// (the relay task and its channel were a measurable part of the plain
/// path's CPU per call; see bench/README.md).
pub fn relay(
    resp: Response<Incoming>,
    idle: Duration,
    metrics: HttpMetrics,
    sniff: Sniff,
) -> Response<ProxyBody> {
    let (head, upstream) = outbound::split_response(resp, true);
    let body = Relayed {
        upstream,
        stall: tokio::time::sleep(Duration::ZERO),
        idle,
        waiting: false,
        done: false,
        metrics,
        sniff,
    };
    outbound::with_body(head, body.boxed_unsync())
}

pin_project_lite::pin_project! {
    /// The upstream's body, watched for a task and for stalls.
    struct Relayed {
        #[pin]
        upstream: Incoming,
        #[pin]
        stall: tokio::time::Sleep,
        idle: Duration,
        // Whether the stall clock runs: only while the client waits for
        // the next frame. Time spent waiting on a slow client does not
        // count against the upstream.
        waiting: bool,
        done: bool,
        metrics: HttpMetrics,
        sniff: Sniff,
    }
}

impl http_body::Body for Relayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if !*this.waiting {
            // A configured timeout too large to add is a stall clock that
            // never rings, not a panic.
            let now = tokio::time::Instant::now();
            let at = now
                .checked_add(*this.idle)
                .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
            this.stall.as_mut().reset(at);
            *this.waiting = true;
        }
        match this.upstream.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.waiting = false;
                let last = this.upstream.is_end_stream();
                if let Err(refusal) = this.sniff.frame(&frame, last) {
                    *this.done = true;
                    this.metrics.upstream_error("unreadable_answer");
                    let why = refusal.message();
                    tracing::warn!(%why, "passed-through answer refused; ending it");
                    return Poll::Ready(Some(Err(Box::new(std::io::Error::other(why)))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                this.metrics.upstream_error("stream_broken");
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if std::future::Future::poll(this.stall, cx).is_pending() {
                    return Poll::Pending;
                }
                *this.done = true;
                this.metrics.upstream_error("body_stalled");
                tracing::warn!(idle = ?*this.idle, "upstream answer stalled; ending it");
                Poll::Ready(Some(Err(Box::new(UpstreamError::Timeout(*this.idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.upstream.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.upstream.size_hint()
    }
}

/// Watches a passed-through `tools/call` answer for the task it creates,
/// so that the task is tied to its tool and caller before the client can
/// read its id: the bytes seen so far (up to `max_response_bytes`, the
/// bound a read-whole answer has) are read as an answer, before the frame
/// that completes them is sent on, when they may be complete and their
/// text may name a task ([`Exchange::worth_reading`]). A complete answer
/// that names one in a way the sidecar cannot read with certainty (a case
/// variant of `taskId`, say) is refused: the body ends with an error
/// instead of that frame.
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

    /// Sees one frame before it is sent on; `last` says the upstream's
    /// body ends with it (hyper knows: a declared length reached, or an
    /// HTTP/2 end of stream; never for a chunked HTTP/1 body). An error
    /// is an answer that must not reach the client.
    pub fn frame(&mut self, frame: &Frame<Bytes>, last: bool) -> Result<(), Refusal> {
        let (Some(ex), Some(data)) = (&mut self.ex, frame.data_ref()) else {
            return Ok(());
        };
        // The usual answer, whole in one frame: read where it is, not
        // copied first.
        if last && self.seen.is_empty() {
            let read = match data.len() <= self.cap && ex.worth_reading(data) {
                true => ex.process(data).map(drop),
                false => Ok(()),
            };
            self.ex = None;
            return read;
        }
        if self.seen.len() + data.len() > self.cap {
            // Larger than any answer Portcullis reads whole: not read
            // (README, Limits).
            self.ex = None;
            self.seen = Vec::new();
            return Ok(());
        }
        self.seen.extend_from_slice(data);
        let may_be_whole = last || self.seen.trim_ascii_end().last() == Some(&b'}');
        if !may_be_whole || !ex.worth_reading(&self.seen) {
            if last {
                self.ex = None;
                self.seen = Vec::new();
            }
            return Ok(());
        }
        let read = ex.process(&self.seen);
        // Text that is not yet a whole JSON value may still be completed
        // by the next frame; a whole answer that was refused is refused.
        let whole = last || serde_json::from_slice::<IgnoredAny>(&self.seen).is_ok();
        if read.is_ok() || whole {
            self.ex = None;
            self.seen = Vec::new();
        }
        match (read, whole) {
            (Err(refusal), true) => Err(refusal),
            _ => Ok(()),
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
