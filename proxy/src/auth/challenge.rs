//! The answers of a resource server that says no: RFC 6750 challenges
//! with the RFC 9728 metadata URL, and the metadata document itself.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, ProxyBody};

/// An RFC 6750 quoted string: `"` and `\` escaped; anything not printable
/// ASCII dropped (header values must be ASCII, and nothing here should
/// carry more than scope names and fixed texts).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `WWW-Authenticate: Bearer …`, parameters in the order clients and the
/// conformance suite's mock expect.
pub fn www_authenticate(
    error: Option<(&str, &str)>,
    scope: &[String],
    resource_metadata: &str,
) -> HeaderValue {
    let mut params = Vec::new();
    if let Some((error, description)) = error {
        params.push(format!("error={}", quoted(error)));
        params.push(format!("error_description={}", quoted(description)));
    }
    if !scope.is_empty() {
        params.push(format!("scope={}", quoted(&scope.join(" "))));
    }
    params.push(format!("resource_metadata={}", quoted(resource_metadata)));
    let value = format!("Bearer {}", params.join(", "));
    // Built from ASCII only (see `quoted`), so this cannot fail; a plain
    // `Bearer` is still a valid challenge if it somehow did.
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer"))
}

/// A refusal: status, challenge, and the OAuth error body.
pub fn refusal(
    status: StatusCode,
    challenge: Option<HeaderValue>,
    error: &str,
    description: &str,
) -> Response<ProxyBody> {
    let body = serde_json::json!({"error": error, "error_description": description});
    let mut resp = Response::new(body::full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = challenge {
        h.insert(header::WWW_AUTHENTICATE, c);
    }
    // A browser client must be able to read the challenge to discover
    // how to authenticate; it reveals nothing the public metadata does not.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("WWW-Authenticate"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_quote_and_order_their_parameters() {
        let v = www_authenticate(
            None,
            &["mcp:tools".into()],
            "https://h/.well-known/oauth-protected-resource/mcp",
        );
        assert_eq!(
            v,
            "Bearer scope=\"mcp:tools\", resource_metadata=\"https://h/.well-known/oauth-protected-resource/mcp\""
        );
        let v = www_authenticate(
            Some(("insufficient_scope", "needs \"more\"\\")),
            &["a".into(), "b".into()],
            "u",
        );
        assert_eq!(
            v,
            "Bearer error=\"insufficient_scope\", error_description=\"needs \\\"more\\\"\\\\\", scope=\"a b\", resource_metadata=\"u\""
        );
        let v = www_authenticate(Some(("invalid_token", "é\r\n")), &[], "u");
        assert_eq!(
            v,
            "Bearer error=\"invalid_token\", error_description=\"\", resource_metadata=\"u\""
        );
    }
}
