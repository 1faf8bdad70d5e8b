//! MCP routing headers, and the check that they agree with the body.
//!
//! In 2026-07-28 an intermediary may route or authorize on `Mcp-Method` and
//! `Mcp-Name` without reading the body. If those headers could disagree with
//! the body, a gateway could authorize one call while the server runs
//! another, so a mismatch is refused (400, `-32020`) in every era.

use std::borrow::Cow;

use base64::Engine;
use http::{header::AsHeaderName, HeaderMap, HeaderName, HeaderValue};

use super::{
    json::is_control,
    message::{Call, Era, Kind},
};

pub const MCP_SESSION_ID: &str = "mcp-session-id";
pub const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const MCP_METHOD: &str = "mcp-method";
pub const MCP_NAME: &str = "mcp-name";

/// The same names parsed once: a lookup by text parses the text each time,
/// and these are looked up on every request.
pub const MCP_SESSION_ID_HEADER: HeaderName = HeaderName::from_static(MCP_SESSION_ID);
pub const MCP_PROTOCOL_VERSION_HEADER: HeaderName = HeaderName::from_static(MCP_PROTOCOL_VERSION);
const MCP_METHOD_HEADER: HeaderName = HeaderName::from_static(MCP_METHOD);
const MCP_NAME_HEADER: HeaderName = HeaderName::from_static(MCP_NAME);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct HeaderMismatch(pub String);

/// The prefix of the 2026-07-28 per-parameter routing headers.
pub const MCP_PARAM_PREFIX: &str = "mcp-param-";

/// A header's value as text, or `None` when absent. A header given more
/// than once is refused: a server may read either copy (or join them), so
/// checking only the first would authorize one value and forward another.
pub fn text<K>(headers: &HeaderMap, name: K) -> Result<Option<&str>, HeaderMismatch>
where
    K: AsHeaderName + Copy + std::fmt::Display,
{
    let mut all = headers.get_all(name).iter();
    let Some(v) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(HeaderMismatch(format!("{name} is given more than once")));
    }
    v.to_str()
        .map(Some)
        .map_err(|_| HeaderMismatch(format!("{name} is not visible ASCII")))
}

/// Refuses any MCP header (`Mcp-Session-Id`, `MCP-Protocol-Version`,
/// `Mcp-Method`, `Mcp-Name`, every `Mcp-Param-*`, and any other `mcp-*`)
/// that appears more than once. HTTP/1.1 and HTTP/2 both reach here as
/// one `HeaderMap`, where repeats are separate values of one name.
pub fn check_repeated(headers: &HeaderMap) -> Result<(), HeaderMismatch> {
    for name in headers.keys() {
        if name.as_str().starts_with("mcp-") && headers.get_all(name).iter().nth(1).is_some() {
            return Err(HeaderMismatch(format!(
                "{} is given more than once",
                name.as_str()
            )));
        }
    }
    Ok(())
}

/// A request's MCP headers (`mcp-*`, names in lower case), as policies
/// see them. Kept as the parsed header and value, not copied to strings:
/// cloning them shares their bytes, so building this costs one vector per
/// request, and the upstream request's copy of the headers then shares
/// the names too. Only values that are visible ASCII are kept (as before:
/// a policy reads text).
#[derive(Debug, Clone, Default)]
pub struct McpHeaders(Vec<(HeaderName, HeaderValue)>);

impl McpHeaders {
    /// No headers, for a request that has none to show.
    pub fn none() -> &'static Self {
        static NONE: McpHeaders = McpHeaders(Vec::new());
        &NONE
    }

    pub fn of(headers: &HeaderMap) -> Self {
        Self(
            headers
                .iter()
                .filter(|(name, value)| name.as_str().starts_with("mcp-") && value.to_str().is_ok())
                .map(|(name, value)| (shared_name(name), value.clone()))
                .collect(),
        )
    }

    /// Name and value of each, in the request's order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        // Every value was checked to be text when it was kept.
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or_default()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The name, as one of the constants when it is a routing header: a parsed
/// name's first copy allocates, a constant's never does.
fn shared_name(name: &HeaderName) -> HeaderName {
    [
        &MCP_METHOD_HEADER,
        &MCP_NAME_HEADER,
        &MCP_PROTOCOL_VERSION_HEADER,
        &MCP_SESSION_ID_HEADER,
    ]
    .into_iter()
    .find(|known| *known == name)
    .unwrap_or(name)
    .clone()
}

impl<'a> FromIterator<(&'a str, &'a str)> for McpHeaders {
    /// For tests and tools that state headers as text; a pair that is not
    /// a valid header is left out, as a request could not carry it.
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                map.append(n, v);
            }
        }
        Self::of(&map)
    }
}

/// Decodes the `=?base64?…?=` form used for non-ASCII header values.
/// A name (`Mcp-Name`) may not hold a control character.
pub fn decode_value(value: &str) -> Result<Cow<'_, str>, HeaderMismatch> {
    let text = decode_wrapped(value)?;
    if text.chars().any(is_control) {
        return Err(HeaderMismatch(
            "header value has a control character".into(),
        ));
    }
    Ok(text)
}

/// Decodes the `=?base64?…?=` form; a value without the exact wrapper is
/// literal. The Base64 must be canonical (padded, standard alphabet), so
/// one header has one reading. Control characters are kept: an argument
/// may hold a tab or a line break, which is why it was wrapped.
pub fn decode_wrapped(value: &str) -> Result<Cow<'_, str>, HeaderMismatch> {
    let Some(inner) = value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    else {
        return Ok(Cow::Borrowed(value));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(inner)
        .map_err(|_| HeaderMismatch("header value has invalid base64".into()))?;
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| HeaderMismatch("header value is not UTF-8".into()))
}

/// Checks the routing headers of a single-message POST against its body.
pub fn check_single(headers: &HeaderMap, call: &Call) -> Result<(), HeaderMismatch> {
    check_repeated(headers)?;
    check_version(headers, call)?;
    let method = text(headers, &MCP_METHOD_HEADER)?;
    let name = text(headers, &MCP_NAME_HEADER)?
        .map(decode_value)
        .transpose()?;
    let sessionless = call.era == Era::Sessionless2026 && call.kind != Kind::Response;
    match method {
        Some(m) if m != call.method => {
            return Err(HeaderMismatch(format!(
                "Mcp-Method {m:?} does not match body method {:?}",
                call.method
            )))
        }
        None if sessionless => return Err(HeaderMismatch("Mcp-Method header is required".into())),
        _ => {}
    }
    match (name.as_deref(), call.target_name()) {
        (Some(h), Some(b)) if h != b => Err(HeaderMismatch(format!(
            "Mcp-Name {h:?} does not match body name {b:?}"
        ))),
        (Some(h), None) => Err(HeaderMismatch(format!(
            "Mcp-Name {h:?} given for a message without a name"
        ))),
        (None, Some(_)) if sessionless => Err(HeaderMismatch("Mcp-Name header is required".into())),
        _ => Ok(()),
    }
}

/// A batch cannot be described by one set of routing headers.
pub fn check_batch(headers: &HeaderMap) -> Result<(), HeaderMismatch> {
    check_repeated(headers)?;
    let param = headers
        .keys()
        .any(|k| k.as_str().starts_with(MCP_PARAM_PREFIX));
    if headers.contains_key(MCP_METHOD) || headers.contains_key(MCP_NAME) || param {
        return Err(HeaderMismatch(
            "Mcp-Method/Mcp-Name/Mcp-Param-* cannot describe a batch".into(),
        ));
    }
    Ok(())
}

fn check_version(headers: &HeaderMap, call: &Call) -> Result<(), HeaderMismatch> {
    let header = text(headers, &MCP_PROTOCOL_VERSION_HEADER)?;
    // `initialize` negotiates the version, so its body may name a version
    // the client does not yet send in the header.
    if call.method == "initialize" {
        return Ok(());
    }
    match (header, call.body_version.as_deref()) {
        (Some(h), Some(b)) if h != b => Err(HeaderMismatch(format!(
            "MCP-Protocol-Version {h:?} does not match _meta version {b:?}"
        ))),
        (None, Some(_)) if call.era == Era::Sessionless2026 => Err(HeaderMismatch(
            "MCP-Protocol-Version header is required".into(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::message::{parse_body, Body};

    fn call(body: &str) -> Call {
        let era = Era::from_version(None);
        match parse_body(body.as_bytes(), 32, &era) {
            Ok(Body::Single(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const MODERN_CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

    #[test]
    fn matching_modern_headers_pass() {
        let h = headers(&[
            (MCP_PROTOCOL_VERSION, "2026-07-28"),
            (MCP_METHOD, "tools/call"),
            (MCP_NAME, "read"),
        ]);
        assert_eq!(check_single(&h, &call(MODERN_CALL)), Ok(()));
    }

    #[test]
    fn name_mismatch_is_refused() {
        let h = headers(&[
            (MCP_PROTOCOL_VERSION, "2026-07-28"),
            (MCP_METHOD, "tools/call"),
            (MCP_NAME, "delete"),
        ]);
        let err = check_single(&h, &call(MODERN_CALL)).unwrap_err();
        assert!(err.0.contains("Mcp-Name"), "{err}");
    }

    #[test]
    fn method_mismatch_is_refused_in_any_era() {
        let h = headers(&[(MCP_METHOD, "tools/list")]);
        let c = call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#);
        assert!(check_single(&h, &c).is_err());
    }

    #[test]
    fn modern_requests_need_routing_headers() {
        let h = headers(&[
            (MCP_PROTOCOL_VERSION, "2026-07-28"),
            (MCP_METHOD, "tools/call"),
        ]);
        let err = check_single(&h, &call(MODERN_CALL)).unwrap_err();
        assert!(err.0.contains("required"), "{err}");
        let none = headers(&[(MCP_METHOD, "tools/call"), (MCP_NAME, "read")]);
        assert!(check_single(&none, &call(MODERN_CALL)).is_err());
    }

    #[test]
    fn version_header_must_match_meta() {
        let h = headers(&[
            (MCP_PROTOCOL_VERSION, "2025-11-25"),
            (MCP_METHOD, "tools/call"),
            (MCP_NAME, "read"),
        ]);
        assert!(check_single(&h, &call(MODERN_CALL)).is_err());
    }

    #[test]
    fn base64_names_are_decoded() {
        assert_eq!(decode_value("=?base64?w6lsYW4=?=").unwrap(), "élan");
        assert_eq!(decode_value("plain").unwrap(), "plain");
        assert!(decode_value("=?base64?***?=").is_err());
        let c = call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"élan"}}"#);
        let h = headers(&[(MCP_NAME, "=?base64?w6lsYW4=?=")]);
        assert_eq!(check_single(&h, &c), Ok(()));
    }

    #[test]
    fn legacy_requests_without_headers_pass() {
        let c = call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#);
        assert_eq!(check_single(&HeaderMap::new(), &c), Ok(()));
        assert!(check_batch(&headers(&[(MCP_METHOD, "ping")])).is_err());
        assert!(check_batch(&headers(&[("mcp-param-region", "eu")])).is_err());
        assert_eq!(check_batch(&HeaderMap::new()), Ok(()));
    }
}
