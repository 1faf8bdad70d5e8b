//! The one place where a refusal becomes an answer.
//!
//! Every phase of the request path returns `Result<_, Refusal>`. A
//! [`Refusal`] knows its HTTP status, JSON-RPC code, message, extra headers
//! and metric label, and carries the request's id whenever the body yielded
//! one, so every error Portcullis writes has the same shape wherever it was
//! decided.

use bytes::Bytes;
use http::{header::HeaderName, HeaderValue, Response, StatusCode};
use serde_json::value::RawValue;

use super::{
    metrics::HttpMetrics,
    respond::{self, Format},
};
use crate::{
    body::ProxyBody,
    mcp::{headers::HeaderMismatch, CodecError, ErrorCode, RpcError},
    policy::Denial,
    upstream::UpstreamError,
};

/// Why Portcullis answered instead of the upstream.
#[derive(Debug)]
pub enum Cause {
    /// `Host` or `Origin` is not allowed (DNS-rebinding protection).
    ForbiddenOrigin(String),
    MethodNotAllowed,
    /// A compressed body could hide its content from the policy.
    CompressedBody,
    BodyTooLarge(usize),
    BodyRead(String),
    BodyTimeout,
    Undecodable(CodecError),
    HeaderMismatch(HeaderMismatch),
    /// A policy denied the message.
    Denied(Denial),
    /// A policy denied the `result` of an allowed call.
    ResultDenied(Denial),
    /// Every message of a batch was denied, and none needs an answer.
    BatchDenied,
    Upstream(UpstreamError),
    /// The upstream's answer could not be turned into one for the client.
    BadUpstreamResponse,
    /// An upstream answer Portcullis must inspect but cannot read with
    /// certainty (duplicate keys, a BOM, a case variant of a key it reads,
    /// an encoding it cannot see through...): refused, never relayed raw.
    UnreadableAnswer(String),
    /// A bound of Portcullis's own is reached (named here): the message
    /// is refused rather than let through unwatched.
    Overloaded(&'static str),
    /// The session id is unknown, tampered, expired, revoked or another
    /// caller's: one answer for all, so it is no oracle.
    UnknownSession,
    /// The upstream was lost while it ran a request that is not safe to
    /// run twice: it may or may not have run, and is not sent again.
    OutcomeUnknown(String),
    /// The shared session store is unreachable and `failure: closed` is
    /// set.
    StoreUnavailable,
}

/// A refusal, addressed to the request it answers.
#[derive(Debug)]
pub struct Refusal {
    pub cause: Cause,
    pub id: Option<Box<RawValue>>,
}

impl From<Cause> for Refusal {
    fn from(cause: Cause) -> Self {
        Self { cause, id: None }
    }
}

impl From<UpstreamError> for Refusal {
    fn from(e: UpstreamError) -> Self {
        Cause::Upstream(e).into()
    }
}

impl Refusal {
    pub fn with_id(mut self, id: Option<Box<RawValue>>) -> Self {
        self.id = id;
        self
    }

    /// The upstream could not be reached (it may be restarting).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.cause,
            Cause::Upstream(UpstreamError::Unavailable(_) | UpstreamError::Refused(_))
        )
    }

    /// The upstream refused the connection: the request never reached it.
    pub fn is_refused(&self) -> bool {
        matches!(self.cause, Cause::Upstream(UpstreamError::Refused(_)))
    }

    pub fn status(&self) -> StatusCode {
        match &self.cause {
            Cause::ForbiddenOrigin(_) | Cause::BatchDenied => StatusCode::FORBIDDEN,
            // A notification has no answer but its status.
            Cause::Denied(_) => StatusCode::FORBIDDEN,
            Cause::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Cause::CompressedBody => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Cause::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Cause::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Cause::BodyRead(_) | Cause::Undecodable(_) | Cause::HeaderMismatch(_) => {
                StatusCode::BAD_REQUEST
            }
            Cause::ResultDenied(_) => StatusCode::OK,
            Cause::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Cause::UnknownSession => StatusCode::NOT_FOUND,
            Cause::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Cause::Upstream(UpstreamError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            Cause::Upstream(_)
            | Cause::BadUpstreamResponse
            | Cause::UnreadableAnswer(_)
            | Cause::OutcomeUnknown(_) => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match &self.cause {
            Cause::ForbiddenOrigin(_) => ErrorCode::ForbiddenOrigin,
            Cause::BodyTooLarge(_) => ErrorCode::PayloadTooLarge,
            Cause::Undecodable(e) => e.code(),
            Cause::MethodNotAllowed
            | Cause::CompressedBody
            | Cause::BodyRead(_)
            | Cause::BodyTimeout => ErrorCode::InvalidRequest,
            Cause::HeaderMismatch(_) => ErrorCode::HeaderMismatch,
            Cause::Overloaded(_) => ErrorCode::Overloaded,
            Cause::UnknownSession => ErrorCode::SessionNotFound,
            Cause::Denied(_) | Cause::ResultDenied(_) | Cause::BatchDenied => {
                ErrorCode::PolicyDenied
            }
            Cause::Upstream(UpstreamError::Timeout(_)) => ErrorCode::UpstreamTimeout,
            Cause::Upstream(_)
            | Cause::BadUpstreamResponse
            | Cause::UnreadableAnswer(_)
            | Cause::OutcomeUnknown(_)
            | Cause::StoreUnavailable => ErrorCode::UpstreamUnavailable,
        }
    }

    /// The `reason` of `rejected_total`, for refusals made before the
    /// policy was asked; `None` for denials and upstream failures, which
    /// have counters of their own.
    pub fn rejected_label(&self) -> Option<&'static str> {
        Some(match &self.cause {
            Cause::CompressedBody => "content_encoding",
            Cause::BodyRead(_) => "body_read",
            Cause::BodyTimeout => "body_timeout",
            Cause::MethodNotAllowed => "method_not_allowed",
            Cause::ForbiddenOrigin(_)
            | Cause::BodyTooLarge(_)
            | Cause::Undecodable(_)
            | Cause::HeaderMismatch(_)
            | Cause::Overloaded(_)
            | Cause::UnknownSession => self.code().name(),
            Cause::Denied(_)
            | Cause::ResultDenied(_)
            | Cause::BatchDenied
            | Cause::Upstream(_)
            | Cause::BadUpstreamResponse
            | Cause::UnreadableAnswer(_)
            | Cause::OutcomeUnknown(_)
            | Cause::StoreUnavailable => return None,
        })
    }

    pub fn message(&self) -> String {
        match &self.cause {
            Cause::ForbiddenOrigin(why) => why.clone(),
            Cause::MethodNotAllowed => "method not allowed".into(),
            Cause::CompressedBody => "compressed request bodies are not accepted".into(),
            Cause::BodyTooLarge(max) => format!("request body exceeds {max} bytes"),
            Cause::BodyRead(e) => format!("could not read body: {e}"),
            Cause::BodyTimeout => "request body not received in time".into(),
            Cause::Undecodable(e) => e.to_string(),
            Cause::HeaderMismatch(e) => e.to_string(),
            Cause::Denied(d) => format!("denied by {}: {}", d.by, d.reason),
            Cause::ResultDenied(d) => format!("result denied by {}: {}", d.by, d.reason),
            Cause::BatchDenied => "every message in the batch was denied".into(),
            Cause::Upstream(e) => e.to_string(),
            Cause::BadUpstreamResponse => "invalid upstream response".into(),
            Cause::UnreadableAnswer(why) => {
                format!("upstream answer refused: it cannot be read with certainty ({why})")
            }
            Cause::Overloaded(what) => format!("{what}; retry later"),
            Cause::UnknownSession => "Session not found".into(),
            Cause::StoreUnavailable => "the session store is unreachable; retry later".into(),
            Cause::OutcomeUnknown(why) => format!(
                "the upstream was lost while running this request ({why}); \
                 it may or may not have run, and was not sent again"
            ),
        }
    }

    /// Headers the answer needs besides its content type (the auth phase
    /// will add `WWW-Authenticate` here).
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        match self.cause {
            Cause::Overloaded(_) | Cause::StoreUnavailable => {
                vec![(http::header::RETRY_AFTER, HeaderValue::from_static("1"))]
            }
            _ => Vec::new(),
        }
    }

    /// The JSON-RPC error message, addressed to the request's id.
    pub fn to_message(&self) -> Bytes {
        let mut err = RpcError::new(self.code(), self.message()).with_id(self.id.clone());
        if let Cause::Denied(d) | Cause::ResultDenied(d) = &self.cause {
            err = err
                .with_code_override(d.code)
                .with_data(serde_json::json!({ "by": d.by, "reason": d.reason }));
        }
        if let Some(data) = self.data() {
            err = err.with_data(data);
        }
        err.to_bytes()
    }

    /// Machine-readable detail for causes a client may act on.
    fn data(&self) -> Option<serde_json::Value> {
        match &self.cause {
            Cause::OutcomeUnknown(_) => Some(serde_json::json!({
                "executed": "unknown",
                "retryable": false,
                "reason": "upstream_lost",
            })),
            _ => None,
        }
    }

    /// Counts the refusal and logs it; the answer comes from [`answer`].
    fn record(&self, metrics: &HttpMetrics) {
        if let Some(label) = self.rejected_label() {
            metrics.rejected(label);
            tracing::info!(reason = label, error = %self.message(), "refused request");
        }
        match &self.cause {
            Cause::Upstream(e) => {
                metrics.upstream_error(e.kind());
                tracing::warn!(error = %e, "upstream request failed");
            }
            Cause::UnreadableAnswer(why) => {
                metrics.upstream_error("unreadable_answer");
                tracing::warn!(error = %why, "refused an upstream answer it cannot read with certainty");
            }
            _ => {}
        }
    }
}

/// The client's answer for a refusal of the whole request: its status, a
/// JSON-RPC error with the request's id, and any headers it needs.
pub fn answer(refusal: &Refusal, metrics: &HttpMetrics) -> Response<ProxyBody> {
    refusal.record(metrics);
    let mut resp = respond::json(refusal.status(), refusal.to_message());
    for (name, value) in refusal.headers() {
        resp.headers_mut().insert(name, value);
    }
    resp
}

/// The answer when the upstream failed before responding: one error per
/// request still waiting (`ids`), then `extra` messages (denials of a
/// partly allowed batch). A single request gets its own error shape.
pub fn upstream_failure(
    refusal: &Refusal,
    ids: &[Bytes],
    extra: &[Bytes],
    metrics: &HttpMetrics,
) -> Response<ProxyBody> {
    refusal.record(metrics);
    let mut msgs: Vec<Bytes> = ids.iter().map(|id| for_id(refusal, id)).collect();
    msgs.extend_from_slice(extra);
    match msgs.len() {
        0 => respond::json(refusal.status(), refusal.to_message()),
        1 => respond::json(refusal.status(), msgs.remove(0)),
        _ => respond::json(refusal.status(), respond::join_array(&msgs)),
    }
}

/// `refusal`'s error message addressed to `id` (JSON text).
pub fn for_id(refusal: &Refusal, id: &[u8]) -> Bytes {
    let raw = RawValue::from_string(String::from_utf8_lossy(id).into_owned()).ok();
    let err = RpcError::new(refusal.code(), refusal.message()).with_id(raw);
    match refusal.data() {
        Some(data) => err.with_data(data).to_bytes(),
        None => err.to_bytes(),
    }
}

/// Denials of requests as messages, in the format the client asked for
/// (status 200: the HTTP exchange itself succeeded).
pub fn denials(format: Format, msgs: &[Bytes], batch: bool) -> Response<ProxyBody> {
    respond::messages(StatusCode::OK, format, msgs, batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::json::JsonError;

    fn id(text: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(text.into()).unwrap())
    }

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn every_refusal_carries_the_request_id() {
        let causes = [
            Cause::HeaderMismatch(HeaderMismatch("Mcp-Name".into())),
            Cause::Undecodable(CodecError::Invalid("needs params.name".into())),
            Cause::Denied(Denial::new("static:x", "no")),
            Cause::BodyTimeout,
        ];
        for cause in causes {
            let r = Refusal::from(cause).with_id(id("\"req-7\""));
            assert_eq!(json(&r.to_message())["id"], "req-7", "{r:?}");
        }
        let none = Refusal::from(Cause::BodyTimeout);
        assert!(json(&none.to_message())["id"].is_null());
    }

    #[test]
    fn denials_always_say_by_whom() {
        let mut d = Denial::new("filter:rbac", "not for you");
        d.code = Some(-32001);
        let v = json(&Refusal::from(Cause::Denied(d)).to_message());
        assert_eq!(v["error"]["code"], -32001);
        assert_eq!(v["error"]["data"]["by"], "filter:rbac");
        assert_eq!(v["error"]["data"]["reason"], "not for you");
        assert_eq!(v["error"]["message"], "denied by filter:rbac: not for you");
    }

    #[test]
    fn statuses_codes_and_labels() {
        let header = Refusal::from(Cause::HeaderMismatch(HeaderMismatch("x".into())));
        assert_eq!(header.status(), StatusCode::BAD_REQUEST);
        assert_eq!(header.code().code(), -32020);
        assert_eq!(header.rejected_label(), Some("header_mismatch"));
        let parse = Refusal::from(Cause::Undecodable(CodecError::Json(JsonError::Malformed(
            "eof".into(),
        ))));
        assert_eq!(parse.code().code(), -32700);
        let timeout = Refusal::from(UpstreamError::Timeout(std::time::Duration::from_secs(1)));
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(timeout.rejected_label(), None);
        let denied = Refusal::from(Cause::Denied(Denial::new("a", "b")));
        assert_eq!(denied.rejected_label(), None);
    }

    #[test]
    fn upstream_failure_answers_each_waiting_id() {
        let m = crate::metrics::Metrics::new().unwrap();
        let r = Refusal::from(UpstreamError::Unavailable("refused".into()));
        let ids = [Bytes::from_static(b"1"), Bytes::from_static(b"\"b\"")];
        let resp = upstream_failure(&r, &ids, &[], &m.http);
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        assert!(
            text.contains(r#"portcullis_upstream_errors_total{kind="unavailable"} 1"#),
            "{text}"
        );
    }
}
