//! The decode phase of a POST: read the body within limits, decode it
//! strictly, and check the routing headers against it. What comes out is
//! either a [`Decoded`] request the policy can judge, or a [`Refusal`].
//!
//! The session id is read here from the transport, but it is not a codec
//! input: the messages are decoded the same whoever's session they are in.

use std::time::Duration;

use bytes::Bytes;
use http::{header, request::Parts, HeaderMap, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    catalog::ToolCatalog,
    legacy::LegacySessions,
    rescue::{Cause, Refusal},
    respond::Format,
};
use crate::mcp::{
    headers::{self as mcp_headers, McpHeaders},
    json,
    param_headers::{self, Declared},
    parse_body, Body, Call, Era, Kind,
};

/// The limits the decode phase enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    pub body_read_timeout: Duration,
}

/// A POST, read and decoded.
#[derive(Debug)]
pub struct Decoded {
    pub parts: Parts,
    pub body: Bytes,
    pub messages: Body,
    /// The legacy endpoint this POST went to, if it is one.
    pub legacy: Option<String>,
    /// The client-facing session id: `Mcp-Session-Id`, or the legacy
    /// endpoint's `sessionId`.
    pub session: Option<String>,
    pub format: Format,
    /// The request's MCP headers (`mcp-*`), for policies.
    pub mcp_headers: McpHeaders,
}

impl Decoded {
    /// The method, for metrics: `batch` for a batch.
    pub fn method(&self) -> &str {
        match &self.messages {
            Body::Single(call) => &call.method,
            Body::Batch(_) => "batch",
        }
    }
}

pub async fn decode(
    req: Request<Incoming>,
    limits: Limits,
    legacy: &LegacySessions,
    catalog: &ToolCatalog,
) -> Result<Decoded, Refusal> {
    let (parts, body) = req.into_parts();
    refuse_encoding(&parts.headers)?;
    let body = read_body(&parts.headers, body, limits).await?;
    let endpoint = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let legacy = legacy.contains(endpoint).then(|| endpoint.to_string());
    let era = match legacy {
        Some(_) => Era::HttpSse2024,
        None => Era::from_version(
            mcp_headers::text(&parts.headers, &mcp_headers::MCP_PROTOCOL_VERSION_HEADER)
                .ok()
                .flatten(),
        ),
    };
    let messages = parse_body(&body, limits.max_json_depth, &era)
        .map_err(|e| Refusal::from(Cause::Undecodable(e)).with_id(readable_id(&body, limits)))?;
    check_headers(&parts.headers, &messages, catalog)?;
    Ok(Decoded {
        session: session_of(&parts, legacy.is_some()),
        mcp_headers: McpHeaders::of(&parts.headers),
        format: Format::from_accept(parts.headers.get(header::ACCEPT)),
        parts,
        body,
        messages,
        legacy,
    })
}

/// The routing headers must agree with the body, for a single message and
/// for a batch alike.
fn check_headers(
    headers: &HeaderMap,
    messages: &Body,
    catalog: &ToolCatalog,
) -> Result<(), Refusal> {
    let checked = match messages {
        Body::Single(call) => mcp_headers::check_single(headers, call)
            .and_then(|()| check_params(headers, call, catalog))
            .map_err(|e| Refusal::from(Cause::HeaderMismatch(e)).with_id(call.id.clone())),
        Body::Batch(_) => {
            mcp_headers::check_batch(headers).map_err(|e| Refusal::from(Cause::HeaderMismatch(e)))
        }
    };
    if let Err(r) = &checked {
        tracing::info!(error = %r.message(), "routing headers disagree with body");
    }
    checked
}

/// `Mcp-Param-*` headers are checked against the schema the upstream's
/// `tools/list` gave for the tool (see [`param_headers`]).
pub fn check_params(
    headers: &HeaderMap,
    call: &Call,
    catalog: &ToolCatalog,
) -> Result<(), mcp_headers::HeaderMismatch> {
    let tool = match (call.method.as_str(), call.kind, call.target_name()) {
        ("tools/call", Kind::Request, Some(tool)) => tool,
        _ => return param_headers::refuse_any(headers),
    };
    let known = catalog.params(tool);
    let declared = known.as_deref().map_or(Declared::Unknown, Declared::Known);
    let modern = call.era == Era::Sessionless2026;
    param_headers::check(headers, declared, call.arguments.as_deref(), modern)
}

#[derive(Deserialize)]
struct IdProbe<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// The id of a body that is one strict JSON object but not an acceptable
/// message, so its error can still be addressed. Nothing is read from a
/// body the strict parser refuses: a lenient reading could pick another id.
fn readable_id(body: &[u8], limits: Limits) -> Option<Box<RawValue>> {
    json::validate(body, limits.max_json_depth).ok()?;
    // serde reads a struct from an array too; only an object has an id.
    if crate::mcp::message::trim_start(body).first() != Some(&b'{') {
        return None;
    }
    let probe: IdProbe<'_> = serde_json::from_slice(body).ok()?;
    probe.id.map(ToOwned::to_owned)
}

fn session_of(parts: &Parts, legacy: bool) -> Option<String> {
    if legacy {
        return parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("sessionId=").map(str::to_string))
        });
    }
    mcp_headers::text(&parts.headers, &mcp_headers::MCP_SESSION_ID_HEADER)
        .ok()
        .flatten()
        .map(str::to_string)
}

/// A compressed body could hide its content from the policy.
fn refuse_encoding(headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.get(header::CONTENT_ENCODING) {
        Some(enc) if !enc.as_bytes().eq_ignore_ascii_case(b"identity") => {
            Err(Cause::CompressedBody.into())
        }
        _ => Ok(()),
    }
}

async fn read_body(headers: &HeaderMap, body: Incoming, limits: Limits) -> Result<Bytes, Refusal> {
    let max = limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Refuse early, before reading a byte, when the client says it is too big.
    if declared.is_some_and(|n| n > max as u64) {
        return Err(Cause::BodyTooLarge(max).into());
    }
    match tokio::time::timeout(limits.body_read_timeout, Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Cause::BodyTooLarge(max).into())
        }
        Ok(Err(e)) => Err(Cause::BodyRead(e.to_string()).into()),
        Err(_) => Err(Cause::BodyTimeout.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_body_bytes: 1024,
        max_json_depth: 16,
        body_read_timeout: Duration::from_secs(1),
    };

    #[test]
    fn undecodable_messages_keep_a_readable_id() {
        let id = readable_id(br#"{"jsonrpc":"2.0","id":"x1","method":5}"#, LIMITS);
        assert_eq!(id.unwrap().get(), r#""x1""#);
        // Duplicate keys: two readings possible, so no id is read at all.
        assert!(readable_id(br#"{"id":1,"id":2,"method":"m"}"#, LIMITS).is_none());
        assert!(readable_id(b"{not json", LIMITS).is_none());
        assert!(readable_id(b"[1]", LIMITS).is_none());
    }

    #[test]
    fn only_identity_encoding_passes() {
        let mut h = HeaderMap::new();
        assert!(refuse_encoding(&h).is_ok());
        h.insert(header::CONTENT_ENCODING, "Identity".parse().unwrap());
        assert!(refuse_encoding(&h).is_ok());
        h.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        assert!(matches!(
            refuse_encoding(&h).map_err(|r| r.cause),
            Err(Cause::CompressedBody)
        ));
    }

    #[test]
    fn header_mismatch_is_addressed_to_the_request() {
        let era = Era::from_version(Some("2026-07-28"));
        let body = br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo"}}"#;
        let messages = parse_body(body, 16, &era).unwrap();
        let mut h = HeaderMap::new();
        h.insert("mcp-method", "tools/call".parse().unwrap());
        h.insert("mcp-name", "delete_file".parse().unwrap());
        let r = check_headers(&h, &messages, &ToolCatalog::default()).unwrap_err();
        assert_eq!(r.id.unwrap().get(), "9");
    }

    const ROUTED: &str = r#"{"jsonrpc":"2.0","id":"c7","method":"tools/call","params":{"name":"route","arguments":{"region":"eu"}}}"#;

    fn routed_catalog() -> ToolCatalog {
        let catalog = ToolCatalog::default();
        let schema = serde_json::value::RawValue::from_string(
            r#"{"properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}"#
                .to_string(),
        )
        .unwrap();
        catalog.record_params("route", Some(&schema));
        catalog
    }

    fn param(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("mcp-param-region", value.parse().unwrap());
        h
    }

    #[test]
    fn param_header_mismatch_is_refused_with_the_id() {
        let messages = parse_body(ROUTED.as_bytes(), 16, &Era::from_version(None)).unwrap();
        let catalog = routed_catalog();
        assert!(check_headers(&param("eu"), &messages, &catalog).is_ok());
        let r = check_headers(&param("us"), &messages, &catalog).unwrap_err();
        assert!(matches!(r.cause, Cause::HeaderMismatch(_)));
        assert_eq!(r.id.unwrap().get(), r#""c7""#);
    }

    #[test]
    fn param_header_needs_a_known_schema() {
        let messages = parse_body(ROUTED.as_bytes(), 16, &Era::from_version(None)).unwrap();
        let unknown = ToolCatalog::default();
        assert!(check_headers(&param("eu"), &messages, &unknown).is_err());
        assert!(check_headers(&HeaderMap::new(), &messages, &unknown).is_ok());
    }

    #[test]
    fn param_header_on_other_methods_is_refused() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let messages = parse_body(body, 16, &Era::from_version(None)).unwrap();
        assert!(check_headers(&param("eu"), &messages, &routed_catalog()).is_err());
        let batch = format!("[{ROUTED}]");
        let messages = parse_body(batch.as_bytes(), 16, &Era::from_version(None)).unwrap();
        assert!(check_headers(&param("eu"), &messages, &routed_catalog()).is_err());
    }
}
