//! JSON-RPC error codes that Portcullis emits, and the error-response
//! builder. The codes are part of the public contract (see the README).

use bytes::Bytes;
use serde_json::value::RawValue;

/// Stable error codes. The `-3205x` range is Portcullis's own; the others
/// are JSON-RPC or MCP codes that carry the same meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is not valid JSON (JSON-RPC).
    ParseError,
    /// Valid JSON, but not an acceptable JSON-RPC/MCP message (JSON-RPC).
    InvalidRequest,
    /// An MCP routing header disagrees with the body (MCP 2026-07-28).
    HeaderMismatch,
    /// A policy denied the message.
    PolicyDenied,
    /// The upstream could not be reached or broke off mid-response.
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The body exceeds the configured limit.
    PayloadTooLarge,
    /// `Host` or `Origin` is not on the allowlist (DNS-rebinding protection).
    ForbiddenOrigin,
    /// A bound of Portcullis's own is reached; retry later.
    Overloaded,
    /// The session id is not one this server (Portcullis) knows: the same
    /// code the MCP SDK servers use, under 404.
    SessionNotFound,
}

impl ErrorCode {
    pub const fn code(self) -> i64 {
        match self {
            Self::ParseError => -32700,
            Self::InvalidRequest => -32600,
            Self::HeaderMismatch => -32020,
            Self::PolicyDenied => -32051,
            Self::UpstreamUnavailable => -32052,
            Self::UpstreamTimeout => -32053,
            Self::PayloadTooLarge => -32054,
            Self::ForbiddenOrigin => -32055,
            Self::Overloaded => -32056,
            Self::SessionNotFound => -32001,
        }
    }

    /// A short stable name, used in metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ParseError => "parse_error",
            Self::InvalidRequest => "invalid_request",
            Self::HeaderMismatch => "header_mismatch",
            Self::PolicyDenied => "policy_denied",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::Overloaded => "overloaded",
            Self::SessionNotFound => "session_not_found",
        }
    }
}

/// A JSON-RPC error addressed to one request id (or to none).
#[derive(Debug, Clone)]
pub struct RpcError {
    pub id: Option<Box<RawValue>>,
    pub code: ErrorCode,
    /// A code chosen by a policy filter, sent instead of `code`.
    pub code_override: Option<i64>,
    pub message: String,
    pub data: Option<serde_json::Value>,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id: None,
            code,
            code_override: None,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_id(mut self, id: Option<Box<RawValue>>) -> Self {
        self.id = id;
        self
    }

    pub fn with_code_override(mut self, code: Option<i64>) -> Self {
        self.code_override = code;
        self
    }

    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The JSON-RPC error object as a value.
    pub fn to_value(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code_override.unwrap_or(self.code.code()),
            "message": self.message,
        });
        if let (Some(data), Some(obj)) = (&self.data, error.as_object_mut()) {
            obj.insert("data".into(), data.clone());
        }
        let id = match &self.id {
            Some(raw) => serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        };
        serde_json::json!({ "jsonrpc": "2.0", "id": id, "error": error })
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.to_value().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_keeps_id_and_data() {
        let id = RawValue::from_string("\"abc\"".into()).ok();
        let err = RpcError::new(ErrorCode::PolicyDenied, "no")
            .with_id(id)
            .with_data(serde_json::json!({"filter": "static"}));
        let v = err.to_value();
        assert_eq!(v["id"], "abc");
        assert_eq!(v["error"]["code"], -32051);
        assert_eq!(v["error"]["message"], "no");
        assert_eq!(v["error"]["data"]["filter"], "static");
    }

    #[test]
    fn error_response_without_id_has_null_id() {
        let v = RpcError::new(ErrorCode::ParseError, "bad").to_value();
        assert!(v["id"].is_null());
        assert_eq!(v["error"]["code"], -32700);
    }
}
