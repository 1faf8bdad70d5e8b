//! Responses that Portcullis writes itself: errors and denials, in the
//! format the client asked for.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{empty, full, ProxyBody};
use crate::mcp::sse;

pub const JSON: &str = "application/json";
pub const EVENT_STREAM: &str = "text/event-stream";

/// How a client wants to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Sse,
}

impl Format {
    /// SSE only if the client accepts SSE and not JSON; every Streamable
    /// HTTP client accepts both, and JSON is the simpler answer then.
    pub fn from_accept(accept: Option<&HeaderValue>) -> Self {
        let accept = accept.and_then(|a| a.to_str().ok()).unwrap_or("");
        let has = |t: &str| accept.split(',').any(|p| p.trim().starts_with(t));
        if has(EVENT_STREAM) && !has(JSON) && !has("*/*") {
            Self::Sse
        } else {
            Self::Json
        }
    }
}

/// One or more JSON-RPC messages as a complete answer, in `format`.
pub fn messages(
    status: StatusCode,
    format: Format,
    msgs: &[Bytes],
    batch: bool,
) -> Response<ProxyBody> {
    match format {
        Format::Sse => {
            let mut out = Vec::new();
            for m in msgs {
                out.extend_from_slice(&sse_message(m));
            }
            with_type(status, EVENT_STREAM, full(out))
        }
        Format::Json if batch => json(status, join_array(msgs)),
        Format::Json => json(status, msgs.first().cloned().unwrap_or_default()),
    }
}

pub fn json(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    with_type(status, JSON, full(body))
}

pub fn accepted() -> Response<ProxyBody> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

pub fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: ProxyBody,
) -> Response<ProxyBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// An SSE `message` event carrying one JSON-RPC message.
pub fn sse_message(msg: &[u8]) -> Bytes {
    sse::encode(Some("message"), None, &String::from_utf8_lossy(msg))
}

/// `[a,b,...]` from already-encoded JSON values.
pub fn join_array(items: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_accept() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            Format::from_accept(Some(&v("application/json, text/event-stream"))),
            Format::Json
        );
        assert_eq!(
            Format::from_accept(Some(&v("text/event-stream"))),
            Format::Sse
        );
        assert_eq!(Format::from_accept(None), Format::Json);
    }

    #[test]
    fn join_array_builds_a_batch() {
        let out = join_array(&[Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"2")]);
        assert_eq!(&out[..], b"[{\"a\":1},2]");
    }
}
