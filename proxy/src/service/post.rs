//! POST: the JSON-RPC path. Read the body within limits, decode it
//! strictly, check routing headers, ask the policy about every message,
//! then forward what is allowed and relay the answer.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use http::{header, request::Parts, HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::value::RawValue;

use super::{
    body::ProxyBody,
    exchange::Exchange,
    forward::{self, internal, response_head, upstream_failure},
    relay,
    respond::{self, Format},
    Shared,
};
use crate::{
    audit,
    identity::Caller,
    mcp::{
        headers as mcp_headers, json::JsonError, parse_body, with_arguments, Body, Call,
        CodecError, Era, ErrorCode, Kind, RpcError,
    },
    policy::{self, Decision, Denial},
    upstream::UpstreamError,
};

/// What was asked, for the answer and the latency metric.
struct Ask {
    parts: Parts,
    format: Format,
    started: Instant,
    method: String,
    /// The legacy endpoint this POST went to, if it is one.
    legacy: Option<String>,
}

pub async fn handle(
    shared: &Arc<Shared>,
    caller: &Caller,
    req: Request<Incoming>,
    started: Instant,
) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    if let Some(resp) = refuse_encoding(shared, &parts.headers) {
        return resp;
    }
    let bytes = match read_body(shared, &parts.headers, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let endpoint = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let legacy = shared.legacy.contains(&endpoint);
    let version = mcp_headers::text(&parts.headers, mcp_headers::MCP_PROTOCOL_VERSION)
        .ok()
        .flatten();
    let era = if legacy {
        Era::HttpSse2024
    } else {
        Era::from_version(version)
    };
    let session = session_of(&parts, legacy);
    let parsed = match parse_body(
        &bytes,
        shared.config.limits.max_json_depth,
        &era,
        session.as_deref(),
    ) {
        Ok(p) => p,
        Err(e) => return codec_error(shared, &e),
    };
    let mut ex = Exchange::new(shared.clone(), caller.clone(), shared.policy.snapshot());
    ex.headers = mcp_header_pairs(&parts.headers);
    let format = Format::from_accept(parts.headers.get(header::ACCEPT));
    let mut ask = Ask {
        parts,
        format,
        started,
        method: String::new(),
        legacy: legacy.then_some(endpoint),
    };
    match parsed {
        Body::Single(call) => single(&mut ask, ex, bytes, call).await,
        Body::Batch(entries) => batch(&mut ask, ex, entries).await,
    }
}

fn session_of(parts: &Parts, legacy: bool) -> Option<String> {
    if legacy {
        return parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("sessionId=").map(str::to_string))
        });
    }
    mcp_headers::text(&parts.headers, mcp_headers::MCP_SESSION_ID)
        .ok()
        .flatten()
        .map(str::to_string)
}

/// The request's MCP headers, for policies.
fn mcp_header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("mcp-"))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect()
}

/// A compressed body could hide its content from the policy.
fn refuse_encoding(shared: &Shared, headers: &HeaderMap) -> Option<Response<ProxyBody>> {
    let enc = headers.get(header::CONTENT_ENCODING)?;
    if enc.as_bytes().eq_ignore_ascii_case(b"identity") {
        return None;
    }
    shared.metrics.rejected("content_encoding");
    let err = RpcError::new(
        ErrorCode::InvalidRequest,
        "compressed request bodies are not accepted",
    );
    Some(respond::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &err))
}

async fn read_body(
    shared: &Shared,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Bytes, Response<ProxyBody>> {
    let max = shared.config.limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Refuse early, before reading a byte, when the client says it is too big.
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(shared, max));
    }
    let timeout = shared.config.listener.body_read_timeout;
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(shared, max)),
        Ok(Err(e)) => {
            shared.metrics.rejected("body_read");
            let err = RpcError::new(
                ErrorCode::InvalidRequest,
                format!("could not read body: {e}"),
            );
            Err(respond::error(StatusCode::BAD_REQUEST, &err))
        }
        Err(_) => {
            shared.metrics.rejected("body_timeout");
            let err = RpcError::new(
                ErrorCode::InvalidRequest,
                "request body not received in time",
            );
            Err(respond::error(StatusCode::REQUEST_TIMEOUT, &err))
        }
    }
}

fn too_large(shared: &Shared, max: usize) -> Response<ProxyBody> {
    shared.metrics.rejected(ErrorCode::PayloadTooLarge.name());
    let err = RpcError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body exceeds {max} bytes"),
    );
    respond::error(StatusCode::PAYLOAD_TOO_LARGE, &err)
}

fn codec_error(shared: &Shared, e: &CodecError) -> Response<ProxyBody> {
    let code = match e {
        CodecError::Json(JsonError::Malformed(_)) => ErrorCode::ParseError,
        _ => ErrorCode::InvalidRequest,
    };
    shared.metrics.rejected(code.name());
    tracing::info!(error = %e, "refused undecodable body");
    respond::error(StatusCode::BAD_REQUEST, &RpcError::new(code, e.to_string()))
}

fn header_error(shared: &Shared, why: &mcp_headers::HeaderMismatch) -> Response<ProxyBody> {
    shared.metrics.rejected(ErrorCode::HeaderMismatch.name());
    tracing::info!(error = %why, "refused request: routing headers disagree with body");
    respond::error(
        StatusCode::BAD_REQUEST,
        &RpcError::new(ErrorCode::HeaderMismatch, why.to_string()),
    )
}

/// What happens to one message once the policy has spoken.
enum Verdict {
    /// Forward these bytes.
    Forward(Bytes),
    Deny(Denial),
}

/// Asks the policy about one message (given with its bytes), records the
/// decision, and applies a rewrite.
fn decide(ex: &Exchange, call: &mut Call, raw: &[u8]) -> Verdict {
    let t = Instant::now();
    let annotations = call
        .target_name()
        .and_then(|t| ex.shared.catalog.annotations(t));
    let req = policy::Request {
        caller: &ex.caller,
        call,
        headers: &ex.headers,
        annotations: annotations.as_deref(),
        instance: &ex.shared.instance,
    };
    let decision = ex.policy.check(&req);
    audit::record(&ex.caller, call, &decision, t.elapsed());
    ex.shared
        .metrics
        .record_decision(&call.method, call.target_name(), decision.label());
    match decision {
        Decision::Allow => Verdict::Forward(Bytes::copy_from_slice(raw)),
        Decision::Deny(d) => Verdict::Deny(d),
        Decision::Rewrite { arguments, by } => match with_arguments(raw, &arguments) {
            Ok(bytes) => {
                call.arguments = Some(arguments);
                Verdict::Forward(bytes)
            }
            // A rewrite that cannot be applied must not fall back to the
            // original arguments: fail closed.
            Err(e) => Verdict::Deny(Denial::new(
                by,
                format!("rewrite could not be applied: {e}"),
            )),
        },
    }
}

fn denial_error(call: &Call, d: &Denial) -> Bytes {
    RpcError::new(
        ErrorCode::PolicyDenied,
        format!("denied by {}: {}", d.by, d.reason),
    )
    .with_code_override(d.code)
    .with_id(call.id.clone())
    .with_data(serde_json::json!({ "by": d.by, "reason": d.reason }))
    .to_bytes()
}

/// Notes an allowed request whose answer must be matched (errors on a
/// broken stream, result policy).
fn track_answer(ask: &Ask, ex: &mut Exchange, call: &Call) {
    if call.kind != Kind::Request {
        return;
    }
    ex.track(call);
    if let Some(endpoint) = &ask.legacy {
        if call.method == "tools/call" && ex.policy.inspects_results() {
            ex.shared.legacy.track(endpoint, call);
        }
    }
}

async fn single(
    ask: &mut Ask,
    mut ex: Exchange,
    bytes: Bytes,
    mut call: Call,
) -> Response<ProxyBody> {
    if let Err(why) = mcp_headers::check_single(&ask.parts.headers, &call) {
        return header_error(&ex.shared, &why);
    }
    ask.method.clone_from(&call.method);
    match decide(&ex, &mut call, &bytes) {
        Verdict::Forward(body) => {
            track_answer(ask, &mut ex, &call);
            forward_post(ask, ex, body, Vec::new()).await
        }
        Verdict::Deny(d) if call.kind != Kind::Request => {
            let err = RpcError::new(
                ErrorCode::PolicyDenied,
                format!("denied by {}: {}", d.by, d.reason),
            );
            respond::error(StatusCode::FORBIDDEN, &err)
        }
        Verdict::Deny(d) => {
            let msg = denial_error(&call, &d);
            // Legacy clients read answers from their GET stream only.
            if let Some(endpoint) = &ask.legacy {
                if ex.shared.legacy.inject(endpoint, msg.clone()) {
                    return respond::accepted();
                }
            }
            respond::messages(StatusCode::OK, ask.format, &[msg], false)
        }
    }
}

async fn batch(
    ask: &mut Ask,
    mut ex: Exchange,
    entries: Vec<(Box<RawValue>, Call)>,
) -> Response<ProxyBody> {
    if let Err(why) = mcp_headers::check_batch(&ask.parts.headers) {
        return header_error(&ex.shared, &why);
    }
    ask.method = "batch".into();
    let mut allowed = Vec::new();
    let mut denials = Vec::new();
    for (raw, mut call) in entries {
        match decide(&ex, &mut call, raw.get().as_bytes()) {
            Verdict::Forward(bytes) => {
                allowed.push(bytes);
                track_answer(ask, &mut ex, &call);
            }
            // Only requests get an answer; a denied notification is dropped.
            Verdict::Deny(d) if call.kind == Kind::Request => denials.push(denial_error(&call, &d)),
            Verdict::Deny(_) => {}
        }
    }
    if allowed.is_empty() {
        if denials.is_empty() {
            let err = RpcError::new(
                ErrorCode::PolicyDenied,
                "every message in the batch was denied",
            );
            return respond::error(StatusCode::FORBIDDEN, &err);
        }
        return respond::messages(StatusCode::OK, ask.format, &denials, true);
    }
    forward_post(ask, ex, respond::join_array(&allowed), denials).await
}

/// Forwards an allowed body and relays the answer, appending `extra`
/// messages (denials from a partly allowed batch).
async fn forward_post(
    ask: &Ask,
    mut ex: Exchange,
    body: Bytes,
    extra: Vec<Bytes>,
) -> Response<ProxyBody> {
    let shared = ex.shared.clone();
    let req = match forward::upstream_request(&shared, &ex.caller, &ask.parts, body) {
        Ok(r) => r,
        Err(e) => return upstream_failure(&shared, &e, &ex.unanswered(), &extra),
    };
    let resp = match shared.upstream.send(req).await {
        Ok(r) => r,
        Err(e) => return upstream_failure(&shared, &e, &ex.unanswered(), &extra),
    };
    shared
        .metrics
        .observe_latency(&ask.method, ask.started.elapsed().as_secs_f64());
    let status = resp.status();
    if relay::is_event_stream(resp.headers()) && status.is_success() {
        let head = response_head(&resp, false);
        let body = relay::SseRelay::new(ex, extra).spawn(resp.into_body());
        return head.body(body).unwrap_or_else(|_| internal());
    }
    if relay::is_json(resp.headers()) && status.is_success() {
        return relay_json(&mut ex, resp, &extra).await;
    }
    if !extra.is_empty() && status.is_success() {
        // The upstream accepted the allowed part (202); the client still
        // needs the denials.
        return respond::messages(StatusCode::OK, ask.format, &extra, true);
    }
    forward::relay_raw(resp)
}

async fn relay_json(
    ex: &mut Exchange,
    resp: Response<Incoming>,
    extra: &[Bytes],
) -> Response<ProxyBody> {
    let shared = ex.shared.clone();
    let head = response_head(&resp, false);
    let max = shared.config.limits.max_response_bytes;
    let read = Limited::new(resp.into_body(), max).collect();
    let timeout = shared.upstream.request_timeout();
    let bytes = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            let err = UpstreamError::Unavailable(format!("reading JSON answer: {e}"));
            return upstream_failure(&shared, &err, &ex.unanswered(), extra);
        }
        Err(_) => {
            return upstream_failure(
                &shared,
                &UpstreamError::Timeout(timeout),
                &ex.unanswered(),
                extra,
            )
        }
    };
    let out = relay::filter_json(ex, &bytes, extra);
    head.body(super::body::full(out))
        .unwrap_or_else(|_| internal())
}
