//! How a client will read an upstream answer, whatever its headers claim.
//!
//! A list hidden behind a content type the relay does not inspect is still
//! a list to a client that parses it as JSON: `application/json-rpc`,
//! `application/problem+json`, `text/json`, a repeated `Content-Type`, or no
//! JSON type at all for clients that parse any body that looks like JSON.
//! The relay inspects every answer [`classify`] calls `Json` or
//! `EventStream`, refuses every [`ContentTypeError`], and for `Other` asks
//! [`sniff_json`] before relaying raw.

use http::{
    header::{CONTENT_ENCODING, CONTENT_TYPE},
    HeaderMap,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    /// A body clients parse as JSON.
    Json,
    /// `text/event-stream`.
    EventStream,
    /// Anything else, or no Content-Type.
    Other,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContentTypeError {
    /// Two Content-Type headers, or two types joined in one: clients
    /// disagree on which one counts.
    #[error("Content-Type is given more than once")]
    Repeated,
    #[error("Content-Type is not readable: {0:?}")]
    Unreadable(String),
    /// A JSON or SSE body in a charset other than UTF-8: the client would
    /// decode text the strict parser never saw.
    #[error("charset {0:?} is not UTF-8")]
    Charset(String),
    /// A compressed answer: clients decompress it, the strict parser would
    /// see only compressed bytes.
    #[error("Content-Encoding {0:?} hides the answer from inspection")]
    Encoded(String),
}

/// Refuses an answer whose `Content-Encoding` is anything but `identity`
/// (including a repeated or empty header). The relay asks the upstream
/// for `identity`; an upstream that compresses anyway cannot be inspected.
pub fn check_encoding(headers: &HeaderMap) -> Result<(), ContentTypeError> {
    for value in headers.get_all(CONTENT_ENCODING) {
        let text = String::from_utf8_lossy(value.as_bytes());
        if !text.trim().eq_ignore_ascii_case("identity") {
            return Err(ContentTypeError::Encoded(text.into_owned()));
        }
    }
    Ok(())
}

/// Classifies a response's Content-Type.
pub fn classify(headers: &HeaderMap) -> Result<BodyType, ContentTypeError> {
    let mut all = headers.get_all(CONTENT_TYPE).iter();
    let Some(value) = all.next() else {
        return Ok(BodyType::Other);
    };
    if all.next().is_some() {
        return Err(ContentTypeError::Repeated);
    }
    let text = value.to_str().map_err(|_| {
        ContentTypeError::Unreadable(String::from_utf8_lossy(value.as_bytes()).into())
    })?;
    classify_value(text)
}

/// Classifies one Content-Type value (`type/subtype; param=value`).
pub fn classify_value(value: &str) -> Result<BodyType, ContentTypeError> {
    // A comma means two values joined by an intermediary.
    if value.contains(',') {
        return Err(ContentTypeError::Repeated);
    }
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return match essence.is_empty() {
            true => Ok(BodyType::Other),
            false => Err(ContentTypeError::Unreadable(value.to_string())),
        };
    };
    let body = if kind == "text" && subtype == "event-stream" {
        BodyType::EventStream
    } else if subtype.contains("json") {
        // json, x-json, json-rpc, jsonrequest, *+json, x-ndjson, json-seq:
        // each is parsed as JSON by some client.
        BodyType::Json
    } else {
        BodyType::Other
    };
    if body != BodyType::Other {
        check_charset(parts)?;
    }
    Ok(body)
}

fn check_charset<'a>(params: impl Iterator<Item = &'a str>) -> Result<(), ContentTypeError> {
    for param in params {
        let Some((name, val)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let val = val.trim().trim_matches('"');
        if !(val.eq_ignore_ascii_case("utf-8") || val.eq_ignore_ascii_case("utf8")) {
            return Err(ContentTypeError::Charset(val.to_string()));
        }
    }
    Ok(())
}

/// Whether a client that ignores Content-Type (or falls back to trying
/// JSON) would parse `body` as JSON: it starts, after whitespace or a BOM,
/// with `{` or `[`, or it looks like UTF-16/32 text, which such clients
/// decode by sniffing.
pub fn sniff_json(body: &[u8]) -> bool {
    if body.starts_with(b"\xFE\xFF") || body.starts_with(b"\xFF\xFE") {
        return true;
    }
    if body.iter().take(4).any(|b| *b == 0) {
        return true;
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    matches!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

#[cfg(test)]
mod tests;
