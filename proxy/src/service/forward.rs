//! Building upstream requests, and relaying responses that need no MCP
//! decoding on the way in (GET streams, DELETE).

use std::sync::Arc;

use bytes::Bytes;
use http::{
    header, request::Parts, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::{body::ProxyBody, exchange::Exchange, legacy, relay, respond, Shared};
use crate::{
    identity::Caller,
    mcp::{ErrorCode, RpcError},
    upstream::UpstreamError,
};

/// Set by Portcullis to the verified caller's SPIFFE ID. Any copy a client
/// sends is removed first, so the upstream can trust it.
pub const CALLER_HEADER: &str = "x-portcullis-caller";

/// Headers that describe one hop and must not be forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named by `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The upstream request for a client request's `parts` and (checked) body.
pub fn upstream_request(
    shared: &Shared,
    caller: &Caller,
    parts: &Parts,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, UpstreamError> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(shared.upstream.uri_for(path)?)
        .body(Full::new(body))?;
    let headers = req.headers_mut();
    *headers = parts.headers.clone();
    strip_hop_by_hop(headers);
    headers.remove(header::CONTENT_LENGTH);
    // The proxy must read responses to filter them, so it asks for them
    // uncompressed.
    headers.remove(header::ACCEPT_ENCODING);
    headers.remove(CALLER_HEADER);
    if !shared.config.upstream.forward_authorization {
        headers.remove(header::AUTHORIZATION);
    }
    if let Some(id) = caller
        .spiffe_id()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        headers.insert(CALLER_HEADER, id);
    }
    if let Ok(host) = HeaderValue::from_str(shared.upstream.authority().as_str()) {
        headers.insert(header::HOST, host);
    }
    Ok(req)
}

/// Copies an upstream response's head; `keep_length` is false when the
/// proxy rewrites the body.
pub fn response_head(resp: &Response<Incoming>, keep_length: bool) -> http::response::Builder {
    let mut builder = Response::builder().status(resp.status());
    if let Some(headers) = builder.headers_mut() {
        *headers = resp.headers().clone();
        strip_hop_by_hop(headers);
        if !keep_length {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
    builder
}

/// The answer to a client when the upstream failed before responding.
pub fn upstream_failure(
    shared: &Shared,
    err: &UpstreamError,
    ids: &[Bytes],
    extra: &[Bytes],
) -> Response<ProxyBody> {
    shared.metrics.upstream_error(err.kind());
    tracing::warn!(error = %err, "upstream request failed");
    let (status, code) = match err {
        UpstreamError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, ErrorCode::UpstreamTimeout),
        _ => (StatusCode::BAD_GATEWAY, ErrorCode::UpstreamUnavailable),
    };
    let mut msgs = relay::errors_for(ids, code, &err.to_string());
    msgs.extend_from_slice(extra);
    match msgs.len() {
        0 => respond::error(status, &RpcError::new(code, err.to_string())),
        1 => respond::json(status, msgs[0].clone()),
        _ => respond::json(status, respond::join_array(&msgs)),
    }
}

/// Forwards a body-less request (GET, DELETE, ...) and waits for the
/// answer's head; a failure is already turned into the client's answer.
async fn send_bodyless(
    shared: &Arc<Shared>,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, Response<ProxyBody>> {
    let (parts, _body) = req.into_parts();
    let upstream_req = upstream_request(shared, caller, &parts, Bytes::new())
        .map_err(|e| upstream_failure(shared, &e, &[], &[]))?;
    shared
        .upstream
        .send(upstream_req)
        .await
        .map_err(|e| upstream_failure(shared, &e, &[], &[]))
}

/// An upstream answer relayed byte for byte.
pub fn relay_raw(resp: Response<Incoming>) -> Response<ProxyBody> {
    let head = response_head(&resp, true);
    let body = resp
        .into_body()
        .map_err(|e| Box::new(e) as _)
        .boxed_unsync();
    head.body(body).unwrap_or_else(|_| internal())
}

/// DELETE and other body-less methods: forwarded, answer relayed as is.
pub async fn passthrough(
    shared: &Arc<Shared>,
    caller: &Caller,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    match send_bodyless(shared, caller, req).await {
        Ok(resp) => relay_raw(resp),
        Err(answer) => answer,
    }
}

/// GET: an SSE stream (standalone, resumed, or legacy HTTP+SSE) relayed
/// event by event with lists filtered, or any other answer as is.
pub async fn stream(
    shared: &Arc<Shared>,
    caller: &Caller,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let resp = match send_bodyless(shared, caller, req).await {
        Ok(resp) => resp,
        Err(answer) => return answer,
    };
    if !relay::is_event_stream(resp.headers()) {
        return relay_raw(resp);
    }
    let head = response_head(&resp, false);
    let legacy = legacy::StreamContext::new(shared.clone(), shared.upstream.authority().clone());
    let ex = Exchange::new(shared.clone(), caller.clone(), shared.policy.snapshot());
    let job = relay::SseRelay::new(ex, Vec::new())
        .with_legacy(legacy)
        .until(shared.draining.clone());
    head.body(job.spawn(resp.into_body()))
        .unwrap_or_else(|_| internal())
}

pub fn internal() -> Response<ProxyBody> {
    let err = RpcError::new(ErrorCode::UpstreamUnavailable, "invalid upstream response");
    respond::error(StatusCode::BAD_GATEWAY, &err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("mcp-session-id", "abc".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("connection").is_none());
        assert_eq!(h.get("mcp-session-id").unwrap(), "abc");
    }
}
