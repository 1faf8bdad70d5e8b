//! Strict reading of what the upstream sends back.
//!
//! Rule: an answer Portcullis must filter or inspect is either read with
//! certainty or refused, never relayed raw. [`read_answer`] is that reading:
//! one JSON document, UTF-8 without BOM, no duplicate or case-variant
//! envelope keys, no control characters in keys, and a shape that says
//! exactly what each message is (a response to an id, a request from the
//! server, or a notification).

use serde_json::{Map, Value};

use super::{
    fold::variant_of,
    json::{self, is_control, JsonError},
    message::NOTIFICATION_PREFIX,
};

/// Why an upstream answer could not be read with certainty.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error(transparent)]
    Json(#[from] JsonError),
    /// A key a client folds onto one Portcullis reads, spelled otherwise
    /// (`Result`, `Tools`, `toolſ`).
    #[error("key {found:?} is a case variant of {expected:?}")]
    CaseVariant {
        found: String,
        expected: &'static str,
    },
    /// Well-formed JSON that is not a JSON-RPC message we can classify.
    #[error("not a JSON-RPC message: {0}")]
    Shape(String),
}

/// What one upstream message is, for the relay to route it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerKind {
    /// A response (`result` or `error`) to the request with this id.
    /// `id` is canonical JSON text (`1`, `"a"`, `null`).
    Response { id: String, is_error: bool },
    /// A request the server sends the client (sampling, elicitation,
    /// roots, ping).
    ServerRequest { id: String, method: String },
    /// A notification (progress, list changed, log).
    Notification { method: String },
}

/// An upstream body or SSE `data:` payload: one message or a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Single(AnswerKind),
    /// A JSON array. Batches exist only in 2025-03-26; the caller refuses
    /// them in other eras.
    Batch(Vec<AnswerKind>),
}

impl Answer {
    pub fn messages(&self) -> &[AnswerKind] {
        match self {
            Self::Single(k) => std::slice::from_ref(k),
            Self::Batch(v) => v,
        }
    }
}

/// Envelope keys, as JSON-RPC spells them.
const ENVELOPE_KEYS: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];

/// Reads an upstream body (or one SSE event's data) strictly, to learn
/// what it is. Integers beyond 64 bits are accepted here, since the body is
/// forwarded byte for byte; [`super::lists::filter_answer`], which
/// re-encodes, refuses them.
pub fn read_answer(bytes: &[u8], max_depth: usize) -> Result<Answer, AnswerError> {
    json::validate(bytes, max_depth)?;
    classify_value(&tree(bytes)?)
}

/// `bytes` as a tree, once a validator has passed it: every key is unique,
/// so the tree holds what every client reads.
pub(crate) fn tree(bytes: &[u8]) -> Result<Value, AnswerError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AnswerError::Json(JsonError::Malformed(e.to_string())))
}

pub(crate) fn classify_value(value: &Value) -> Result<Answer, AnswerError> {
    match value {
        Value::Array(items) if items.is_empty() => Err(AnswerError::Shape("empty batch".into())),
        Value::Array(items) => items
            .iter()
            .map(classify_message)
            .collect::<Result<_, _>>()
            .map(Answer::Batch),
        other => classify_message(other).map(Answer::Single),
    }
}

/// Classifies one message, refusing every shape a client might read
/// otherwise than we do.
pub(crate) fn classify_message(value: &Value) -> Result<AnswerKind, AnswerError> {
    let obj = value
        .as_object()
        .ok_or_else(|| AnswerError::Shape("a message must be an object".into()))?;
    exact_keys(obj, &ENVELOPE_KEYS)?;
    let id = obj.get("id");
    let (result, error) = (obj.get("result"), obj.get("error"));
    match (obj.get("method"), result, error) {
        (None, Some(_), None) | (None, None, Some(_)) => {
            let id = id.ok_or_else(|| AnswerError::Shape("a response needs an id".into()))?;
            // A null id only on an error (the answer to an unreadable request).
            let null_error = id.is_null() && error.is_some();
            if !null_error && !is_id(id) {
                return Err(AnswerError::Shape(format!("bad response id {id}")));
            }
            Ok(AnswerKind::Response {
                id: id.to_string(),
                is_error: error.is_some(),
            })
        }
        (Some(Value::String(method)), None, None) => classify_call(method, id),
        (Some(_), None, None) => Err(AnswerError::Shape("method must be a string".into())),
        _ => Err(AnswerError::Shape(
            "a message carries a method, a result or an error: exactly one".into(),
        )),
    }
}

fn classify_call(method: &str, id: Option<&Value>) -> Result<AnswerKind, AnswerError> {
    if method.chars().any(is_control) {
        return Err(AnswerError::Shape(format!(
            "control character in method {method:?}"
        )));
    }
    match id {
        None if method.starts_with(NOTIFICATION_PREFIX) => Ok(AnswerKind::Notification {
            method: method.to_string(),
        }),
        Some(id) if is_id(id) => Ok(AnswerKind::ServerRequest {
            id: id.to_string(),
            method: method.to_string(),
        }),
        _ => Err(AnswerError::Shape(format!(
            "{method} needs a string or integer id"
        ))),
    }
}

fn is_id(id: &Value) -> bool {
    match id {
        Value::String(s) => !s.chars().any(is_control),
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

/// Refuses a key that folds onto one of `known` without being spelled
/// exactly like it. Duplicates are already refused by the validator, so a
/// lone `Result` is what is left: Go would read it as `result`.
pub(crate) fn exact_keys(
    obj: &Map<String, Value>,
    known: &[&'static str],
) -> Result<(), AnswerError> {
    for key in obj.keys() {
        if let Some(expected) = variant_of(key, known) {
            return Err(AnswerError::CaseVariant {
                found: key.clone(),
                expected,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Result<Answer, AnswerError> {
        read_answer(s.as_bytes(), 32)
    }

    #[test]
    fn tells_responses_requests_and_notifications_apart() {
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Ok(Answer::Single(AnswerKind::Response {
                id: "1".into(),
                is_error: false
            }))
        );
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#),
            Ok(Answer::Single(AnswerKind::ServerRequest {
                id: "\"s1\"".into(),
                method: "sampling/createMessage".into()
            }))
        );
        assert_eq!(
            read(r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#),
            Ok(Answer::Single(AnswerKind::Notification {
                method: "notifications/progress".into()
            }))
        );
        let batch = read(r#"[{"id":1,"result":{}},{"id":null,"error":{"code":1,"message":"x"}}]"#);
        assert!(matches!(batch, Ok(Answer::Batch(v)) if v.len() == 2));
    }

    #[test]
    fn huge_integers_are_read_here_and_refused_by_the_list_filter() {
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"n":123456789012345678901234567890}}"#;
        assert!(read(body).is_ok());
        let filtered =
            crate::mcp::lists::filter_answer(body.as_bytes(), 32, |_, i| vec![true; i.len()]);
        assert!(matches!(
            filtered,
            Err(AnswerError::Json(JsonError::HugeNumber(_)))
        ));
    }

    #[test]
    fn ambiguous_shapes_are_refused() {
        for body in [
            r#"{"id":1,"result":{},"error":{}}"#,
            r#"{"id":1,"method":"x","result":{}}"#,
            r#"{"result":{}}"#,
            r#"{"id":null,"result":{}}"#,
            r#"{"id":1.5,"result":{}}"#,
            r#"{"id":[1],"result":{}}"#,
            r#"{"method":"sampling/createMessage"}"#,
            r#"{"id":null,"method":"roots/list"}"#,
            r#"{"method":7}"#,
            r#"{"jsonrpc":"2.0"}"#,
            r#"[]"#,
            r#"42"#,
        ] {
            assert!(
                matches!(read(body), Err(AnswerError::Shape(_))),
                "{body}: {:?}",
                read(body)
            );
        }
    }
}
