//! Strict reading of what the upstream sends back.
//!
//! Rule: an answer Portcullis must filter or inspect is either read with
//! certainty or refused, never relayed raw. [`read_answer`] is that reading:
//! one JSON document, UTF-8 without BOM, no duplicate or case-variant
//! envelope keys, no control characters in keys, and a shape that says
//! exactly what each message is (a response to an id, a request from the
//! server, or a notification).

use std::borrow::Cow;

use serde::{
    de::{MapAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::{value::RawValue, Value};

use super::{
    fold::variant_of,
    json::{self, is_control, JsonError, Key},
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
/// what it is. Integers beyond 64 bits are accepted here, since nothing in
/// the body is judged; [`super::lists::filter_answer`], which hands list
/// items to policies, refuses them.
pub fn read_answer(bytes: &[u8], max_depth: usize) -> Result<Answer, AnswerError> {
    json::validate(bytes, max_depth)?;
    classify(&messages(bytes)?)
}

pub(crate) fn malformed(e: serde_json::Error) -> AnswerError {
    AnswerError::Json(JsonError::Malformed(e.to_string()))
}

/// An object's members, each value left as its JSON text: classifying a
/// message reads its envelope only, so the rest is not built into a tree.
pub(crate) struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }
}

/// What a validated body holds: one message or a batch of them.
pub(crate) enum Messages<'a> {
    Single(Members<'a>),
    Batch(Vec<Members<'a>>),
}

impl<'a> Messages<'a> {
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Members<'a>> {
        match self {
            Self::Single(e) => std::slice::from_ref(e).iter(),
            Self::Batch(v) => v.iter(),
        }
    }
}

/// Reads the messages of a body a validator has passed (so every key is
/// unique, and an escaped key is read as every client reads it).
pub(crate) fn messages(bytes: &[u8]) -> Result<Messages<'_>, AnswerError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<&RawValue> = serde_json::from_slice(bytes).map_err(malformed)?;
        if items.is_empty() {
            return Err(AnswerError::Shape("empty batch".into()));
        }
        let batch = items
            .into_iter()
            .map(|item| message(item.get().as_bytes()))
            .collect::<Result<_, _>>()?;
        return Ok(Messages::Batch(batch));
    }
    message(bytes).map(Messages::Single)
}

/// The members of `bytes` if it is an object (validated already).
pub(crate) fn members(bytes: &[u8]) -> Result<Option<Members<'_>>, AnswerError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok(None);
    }
    serde_json::from_slice(bytes).map(Some).map_err(malformed)
}

fn message(bytes: &[u8]) -> Result<Members<'_>, AnswerError> {
    members(bytes)?.ok_or_else(|| AnswerError::Shape("a message must be an object".into()))
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Each;
        impl<'de> Visitor<'de> for Each {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC message")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(4);
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Each)
    }
}

/// Classifies a body's messages.
pub(crate) fn classify(messages: &Messages<'_>) -> Result<Answer, AnswerError> {
    Ok(match messages {
        Messages::Single(e) => Answer::Single(classify_message(e)?),
        Messages::Batch(v) => {
            Answer::Batch(v.iter().map(classify_message).collect::<Result<_, _>>()?)
        }
    })
}

/// Classifies one message, refusing every shape a client might read
/// otherwise than we do.
fn classify_message(env: &Members<'_>) -> Result<AnswerKind, AnswerError> {
    exact_keys(env.keys(), &ENVELOPE_KEYS)?;
    // The id and method are small: read as values, as a client reads them.
    let value = |raw: &RawValue| serde_json::from_str::<Value>(raw.get()).map_err(malformed);
    let id = env.get("id").map(value).transpose()?;
    let (result, error) = (env.get("result"), env.get("error"));
    match (env.get("method").map(value).transpose()?, result, error) {
        (None, Some(_), None) | (None, None, Some(_)) => {
            let id = id.ok_or_else(|| AnswerError::Shape("a response needs an id".into()))?;
            // A null id only on an error (the answer to an unreadable request).
            let null_error = id.is_null() && error.is_some();
            if !null_error && !is_id(&id) {
                return Err(AnswerError::Shape(format!("bad response id {id}")));
            }
            Ok(AnswerKind::Response {
                id: id.to_string(),
                is_error: error.is_some(),
            })
        }
        (Some(Value::String(method)), None, None) => classify_call(&method, id.as_ref()),
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
pub(crate) fn exact_keys<'k>(
    keys: impl IntoIterator<Item = &'k str>,
    known: &[&'static str],
) -> Result<(), AnswerError> {
    for key in keys {
        if let Some(expected) = variant_of(key, known) {
            return Err(AnswerError::CaseVariant {
                found: key.to_string(),
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
