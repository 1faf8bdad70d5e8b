//! Typed JSON-RPC messages: what a policy sees of each POSTed message.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    answer::{self, AnswerError, Members},
    json::{self, JsonError},
    ErrorCode,
};

/// The `_meta` key that carries the protocol version in 2026-07-28.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The sessionless protocol version.
pub const SESSIONLESS_VERSION: &str = "2026-07-28";

/// The Streamable HTTP era a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Era {
    /// The deprecated HTTP+SSE transport of 2024-11-05.
    HttpSse2024,
    /// Streamable HTTP with sessions (2025-03-26, 2025-06-18, 2025-11-25).
    Streamable2025(String),
    /// Sessionless Streamable HTTP (2026-07-28).
    Sessionless2026,
}

impl Era {
    /// The era implied by a protocol version string. A missing version
    /// means 2025-03-26, as the specification says.
    pub fn from_version(version: Option<&str>) -> Self {
        match version {
            Some(SESSIONLESS_VERSION) => Self::Sessionless2026,
            Some(v) => Self::Streamable2025(v.to_string()),
            None => Self::Streamable2025("2025-03-26".to_string()),
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Self::HttpSse2024 => "2024-11-05",
            Self::Streamable2025(v) => v,
            Self::Sessionless2026 => SESSIONLESS_VERSION,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

/// The object a call is aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tool(String),
    Prompt(String),
    Resource(String),
    /// A task of the tasks extension (SEP-2663), by its id: `tasks/get`,
    /// `tasks/update`, `tasks/cancel`. (`tasks/result` is removed in that
    /// revision: the server answers it, -32601.)
    Task(String),
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Self::Tool(n) | Self::Prompt(n) | Self::Resource(n) | Self::Task(n) => n,
        }
    }
}

/// The task methods, which name their task by `params.taskId`.
pub const TASK_METHODS: [&str; 3] = ["tasks/get", "tasks/update", "tasks/cancel"];

/// One parsed JSON-RPC message.
#[derive(Debug, Clone)]
pub struct Call {
    pub kind: Kind,
    /// Empty for responses.
    pub method: String,
    pub id: Option<Box<RawValue>>,
    pub target: Option<Target>,
    /// `params.arguments`, byte for byte as the client sent it.
    pub arguments: Option<Box<RawValue>>,
    /// The version named in `_meta` (2026-07-28) or in `initialize`.
    pub body_version: Option<String>,
    pub era: Era,
}

impl Call {
    /// The tool, prompt or resource name, for logs and metrics.
    pub fn target_name(&self) -> Option<&str> {
        self.target.as_ref().map(Target::name)
    }
}

/// A POST body: one message or a 2025-03-26 batch. Each batch entry keeps
/// its own bytes, so that the allowed subset can be forwarded unchanged.
#[derive(Debug)]
pub enum Body {
    Single(Call),
    Batch(Vec<(Box<RawValue>, Call)>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("invalid JSON-RPC message: {0}")]
    Invalid(String),
    /// A request method sent without an id (as a notification, in a batch
    /// or not) or with `"id": null`. Lenient servers run such a message, so
    /// it must not slip past the rules that apply to requests.
    #[error("{method} is a request and needs a string or integer id")]
    MissingId { method: String },
    /// An id that is neither a string nor an integer.
    #[error("the id of {method} must be a string or an integer, not {id}")]
    BadId { method: String, id: String },
    /// A lone key that Go would read as an envelope or `params` key, but
    /// spelled otherwise (`Params`, `paramſ`, `_META`).
    #[error("key {found:?} is a case variant of {expected:?}")]
    CaseVariant {
        found: String,
        expected: &'static str,
    },
    /// A control character in the method or in a target name.
    #[error("control character in {what} {value:?}")]
    ControlChar { what: &'static str, value: String },
}

impl CodecError {
    /// The JSON-RPC code to refuse the body with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Json(JsonError::Malformed(_) | JsonError::Encoding(_)) => ErrorCode::ParseError,
            _ => ErrorCode::InvalidRequest,
        }
    }
}

/// The prefix of every method that may travel without an id.
pub const NOTIFICATION_PREFIX: &str = "notifications/";

/// What a message's envelope holds. A member that is `null` reads as
/// absent, as serde reads an `Option`, except the id.
struct Envelope<'a> {
    /// `"id": null` is kept as the raw `null`, not folded into "absent":
    /// JSON-RPC gives the two different meanings.
    id: Option<&'a RawValue>,
    method: Option<String>,
    params: Option<&'a RawValue>,
    result: Option<&'a RawValue>,
    error: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    /// From the members the case-variant check has read already: one pass
    /// over the body, not two.
    fn of(members: &Members<'a>) -> Result<Self, CodecError> {
        let method = members
            .get("method")
            .map(|raw| serde_json::from_str::<Option<String>>(raw.get()))
            .transpose()
            .map_err(|e| CodecError::Invalid(format!("method: {e}")))?
            .flatten();
        Ok(Self {
            id: members.get("id"),
            method,
            params: not_null(members.get("params")),
            result: not_null(members.get("result")),
            error: not_null(members.get("error")),
        })
    }
}

fn not_null(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

/// The fields of `params` a policy may route on. They are kept raw and typed
/// only where the method gives them a meaning, so that an unrelated method
/// whose `params.name` is, say, an object is not refused.
#[derive(Default)]
struct Params<'a> {
    name: Option<&'a RawValue>,
    uri: Option<&'a RawValue>,
    arguments: Option<&'a RawValue>,
    meta: Option<&'a RawValue>,
    protocol_version: Option<&'a RawValue>,
    task_id: Option<&'a RawValue>,
}

impl<'a> Params<'a> {
    fn of(members: &Members<'a>) -> Self {
        let get = |key| not_null(members.get(key));
        Self {
            name: get("name"),
            uri: get("uri"),
            arguments: get("arguments"),
            meta: get("_meta"),
            protocol_version: get("protocolVersion"),
            task_id: get("taskId"),
        }
    }
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", default)]
    protocol_version: Option<String>,
}

fn string_of(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
}

/// Parses and validates a POST body. `era` comes from the transport
/// (headers or legacy endpoint) and is stamped on every call; it may be
/// refined by the body's own `_meta` version.
pub fn parse_body(bytes: &[u8], max_depth: usize, era: &Era) -> Result<Body, CodecError> {
    json::validate(bytes, max_depth)?;
    let trimmed = trim_start(bytes);
    if trimmed.first() == Some(&b'[') {
        let entries: Vec<Box<RawValue>> =
            serde_json::from_slice(bytes).map_err(|e| CodecError::Invalid(e.to_string()))?;
        if entries.is_empty() {
            return Err(CodecError::Invalid("empty batch".into()));
        }
        let calls = entries
            .into_iter()
            .map(|raw| {
                let call = parse_message(raw.get().as_bytes(), era)?;
                Ok((raw, call))
            })
            .collect::<Result<_, CodecError>>()?;
        return Ok(Body::Batch(calls));
    }
    parse_message(bytes, era).map(Body::Single)
}

/// `bytes` without leading JSON whitespace.
pub fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// Parses one already-validated JSON-RPC message. Validation
/// ([`json::validate`], as [`parse_body`] runs it) is what refuses a
/// repeated member: read here, the first of two would win, where
/// serde_json keeps the last.
pub fn parse_message(bytes: &[u8], era: &Era) -> Result<Call, CodecError> {
    let env = Envelope::of(&exact_spelling(bytes, &ENVELOPE_KEYS, "a message")?)?;
    let kind = kind_of(&env)?;
    let params: Params<'_> = match env.params {
        // By-position `params` (a JSON-RPC array) name nothing: read into
        // named fields in order, a policy would route on a name no MCP
        // server reads there.
        Some(raw) if raw.get().starts_with('[') => Params::default(),
        Some(raw) => Params::of(&exact_spelling(
            raw.get().as_bytes(),
            &PARAMS_KEYS,
            "params",
        )?),
        None => Params::default(),
    };
    let method = env.method.unwrap_or_default();
    let meta_version = params
        .meta
        .filter(|m| m.get().starts_with('{'))
        .and_then(|m| serde_json::from_str::<Meta>(m.get()).ok())
        .and_then(|m| m.protocol_version);
    let init_version = match method.as_str() {
        "initialize" => string_of(params.protocol_version),
        _ => None,
    };
    // `initialize` names the version it offers; only `_meta` fixes the era.
    let era = refine_era(era, meta_version.as_deref());
    let target = target_of(&method, &params, &era)?;
    if let Some(t) = &target {
        refuse_controls("target name", t.name())?;
    }
    let body_version = meta_version.or(init_version);
    Ok(Call {
        kind,
        method,
        id: env.id.map(ToOwned::to_owned),
        target,
        arguments: params.arguments.map(ToOwned::to_owned),
        body_version,
        era,
    })
}

/// The keys Portcullis reads, as the specification spells them.
const ENVELOPE_KEYS: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];
const PARAMS_KEYS: [&str; 6] = [
    "name",
    "uri",
    "arguments",
    "_meta",
    "protocolVersion",
    "taskId",
];

/// Duplicates under folding are refused by the validator; this refuses the
/// lone variant, which Portcullis would ignore and Go would read.
/// Returns the object's members, for the caller to read the known ones.
fn exact_spelling<'a>(
    object: &'a [u8],
    known: &[&'static str],
    what: &str,
) -> Result<Members<'a>, CodecError> {
    let members = answer::members(object)
        .map_err(|e| CodecError::Invalid(format!("{what}: {e}")))?
        .ok_or_else(|| CodecError::Invalid(format!("{what} must be an object")))?;
    answer::exact_keys(members.keys(), known).map_err(|e| match e {
        AnswerError::CaseVariant { found, expected } => CodecError::CaseVariant { found, expected },
        other => CodecError::Invalid(other.to_string()),
    })?;
    Ok(members)
}

/// The rule for ids, made explicit: a method under `notifications/` is the
/// only kind of message that may come without one; every other method is a
/// request, needs a string or integer id, and meets the request rules.
fn kind_of(env: &Envelope<'_>) -> Result<Kind, CodecError> {
    let answer = env.result.is_some() || env.error.is_some();
    let Some(method) = env.method.as_deref() else {
        if env.result.is_some() && env.error.is_some() {
            return Err(CodecError::Invalid(
                "a response carries a result or an error, not both".into(),
            ));
        }
        return match answer {
            true => Ok(Kind::Response),
            false => Err(CodecError::Invalid(
                "a message needs either a method or a result/error".into(),
            )),
        };
    };
    if answer {
        return Err(CodecError::Invalid(
            "a message cannot carry both a method and a result/error".into(),
        ));
    }
    refuse_controls("method", method)?;
    match env.id {
        None if method.starts_with(NOTIFICATION_PREFIX) => Ok(Kind::Notification),
        Some(id) if is_request_id(id) => Ok(Kind::Request),
        None => Err(CodecError::MissingId {
            method: method.to_string(),
        }),
        Some(id) if id.get().trim() == "null" => Err(CodecError::MissingId {
            method: method.to_string(),
        }),
        Some(id) => Err(CodecError::BadId {
            method: method.to_string(),
            id: id.get().to_string(),
        }),
    }
}

/// MCP: "a string or integer". Floats, `null`, booleans and structures
/// are refused; two peers could not agree on which request they answer.
fn is_request_id(id: &RawValue) -> bool {
    match serde_json::from_str::<serde_json::Value>(id.get()) {
        Ok(serde_json::Value::String(s)) => !s.chars().any(json::is_control),
        Ok(serde_json::Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

fn refuse_controls(what: &'static str, value: &str) -> Result<(), CodecError> {
    match value.chars().any(json::is_control) {
        true => Err(CodecError::ControlChar {
            what,
            value: value.to_string(),
        }),
        false => Ok(()),
    }
}

/// Re-encodes `message` with `params.arguments` replaced. What is
/// forwarded is then exactly what the policy produced and the serializer
/// wrote, so no other parser can read it differently.
pub fn with_arguments(message: &[u8], arguments: &RawValue) -> Result<bytes::Bytes, CodecError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(message).map_err(|e| CodecError::Invalid(e.to_string()))?;
    let args: serde_json::Value = serde_json::from_str(arguments.get())
        .map_err(|e| CodecError::Invalid(format!("rewritten arguments: {e}")))?;
    if !args.is_object() {
        return Err(CodecError::Invalid(
            "rewritten arguments must be an object".into(),
        ));
    }
    let params = value
        .get_mut("params")
        .and_then(serde_json::Value::as_object_mut)
        .ok_or_else(|| CodecError::Invalid("message has no params to rewrite".into()))?;
    params.insert("arguments".into(), args);
    Ok(bytes::Bytes::from(value.to_string()))
}

/// A 2026-07-28 body is sessionless whatever the transport guessed.
fn refine_era(era: &Era, body_version: Option<&str>) -> Era {
    match (era, body_version) {
        (Era::HttpSse2024, _) => Era::HttpSse2024,
        (_, Some(SESSIONLESS_VERSION)) => Era::Sessionless2026,
        _ => era.clone(),
    }
}

/// Methods an era removed: the server answers them (usually -32601), so a
/// missing target is the server's to refuse; a target that is present
/// must still be readable.
fn removed_in(era: &Era, method: &str) -> bool {
    *era == Era::Sessionless2026
        && matches!(method, "resources/subscribe" | "resources/unsubscribe")
}

fn target_of(method: &str, params: &Params<'_>, era: &Era) -> Result<Option<Target>, CodecError> {
    let need = |field: Option<&RawValue>, what: &str| {
        string_of(field)
            .ok_or_else(|| CodecError::Invalid(format!("{method} requires a string params.{what}")))
    };
    Ok(match method {
        "tools/call" => Some(Target::Tool(need(params.name, "name")?)),
        "prompts/get" => Some(Target::Prompt(need(params.name, "name")?)),
        _ if removed_in(era, method) && params.uri.is_none() => None,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            Some(Target::Resource(need(params.uri, "uri")?))
        }
        m if TASK_METHODS.contains(&m) => Some(Target::Task(need(params.task_id, "taskId")?)),
        // 2025-11-25 tasks read their result with `tasks/result`, which
        // the tasks extension of 2026-07-28 removed.
        "tasks/result" if *era != Era::Sessionless2026 => {
            Some(Target::Task(need(params.task_id, "taskId")?))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn era() -> Era {
        Era::from_version(Some("2025-11-25"))
    }

    fn single(body: &str) -> Call {
        match parse_body(body.as_bytes(), 64, &era()) {
            Ok(Body::Single(c)) => c,
            other => panic!("expected single message, got {other:?}"),
        }
    }

    #[test]
    fn parses_tool_call() {
        let c = single(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi" }}}"#,
        );
        assert_eq!(c.kind, Kind::Request);
        assert_eq!(c.method, "tools/call");
        assert_eq!(c.target, Some(Target::Tool("echo".into())));
        assert_eq!(
            c.arguments.as_ref().map(|a| a.get()),
            Some(r#"{"text":"hi" }"#)
        );
        assert_eq!(c.id.as_ref().map(|i| i.get()), Some("7"));
        assert_eq!(c.era, era());
    }

    #[test]
    fn parses_resource_and_prompt_targets() {
        let r = single(
            r#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}"#,
        );
        assert_eq!(r.target, Some(Target::Resource("file:///x".into())));
        let p = single(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}"#);
        assert_eq!(p.target, Some(Target::Prompt("p".into())));
    }

    #[test]
    fn classifies_notifications_and_responses() {
        let n = single(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(n.kind, Kind::Notification);
        let r = single(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#);
        assert_eq!(r.kind, Kind::Response);
        assert_eq!(r.method, "");
    }

    #[test]
    fn sessionless_meta_sets_era() {
        let c = single(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        assert_eq!(c.era, Era::Sessionless2026);
        assert_eq!(c.body_version.as_deref(), Some("2026-07-28"));
    }

    #[test]
    fn initialize_offer_does_not_fix_the_era() {
        let c = single(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"capabilities":{},"protocolVersion":"2026-07-28"}}"#,
        );
        assert_eq!(c.era, era());
        assert_eq!(c.body_version.as_deref(), Some("2026-07-28"));
    }

    #[test]
    fn rejects_tool_call_without_name() {
        let err = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
            64,
            &era(),
        );
        assert!(matches!(err, Err(CodecError::Invalid(m)) if m.contains("params.name")));
    }

    #[test]
    fn rejects_non_string_name_and_shapeless_messages() {
        let bad = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
            64,
            &era(),
        );
        assert!(matches!(bad, Err(CodecError::Invalid(_))));
        let none = parse_body(br#"{"jsonrpc":"2.0","id":1}"#, 64, &era());
        assert!(matches!(none, Err(CodecError::Invalid(_))));
        let scalar = parse_body(b"42", 64, &era());
        assert!(matches!(scalar, Err(CodecError::Invalid(_))));
    }

    /// The envelope and `params` are read from the members the case check
    /// reads: escaped names are the names they spell, `null` members read
    /// as absent (an id as the raw `null`), and what is not an object, or
    /// a method that is not a string, is refused.
    #[test]
    fn envelope_members_read_as_a_client_reads_them() {
        let call = single(
            r#"{"jsonrpc":"2.0","id":1,"m\u0065thod":"tools/call","par\u0061ms":{"n\u0061me":"echo","_meta":null}}"#,
        );
        assert_eq!(call.method, "tools/call");
        assert_eq!(call.target_name(), Some("echo"));
        let call = single(r#"{"jsonrpc":"2.0","id":2,"method":"ping","params":null}"#);
        assert_eq!(call.kind, Kind::Request);
        // A null id is an id, and no request may have it.
        let null_id = parse_body(
            br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            64,
            &era(),
        );
        assert!(
            matches!(null_id, Err(CodecError::MissingId { .. })),
            "{null_id:?}"
        );
        let notification = single(r#"{"jsonrpc":"2.0","method":"notifications/x","result":null}"#);
        assert_eq!(notification.kind, Kind::Notification);
        for bad in [
            r#"[["2.0",1,"tools/call"]]"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"echo"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","Params":{"name":"echo"}}"#,
        ] {
            assert!(parse_body(bad.as_bytes(), 64, &era()).is_err(), "{bad}");
        }
    }

    #[test]
    fn batch_keeps_each_entry_bytes() {
        let body = br#"[ {"jsonrpc":"2.0","id":1,"method":"ping"} , {"jsonrpc":"2.0","method":"notifications/x"} ]"#;
        let Ok(Body::Batch(entries)) = parse_body(body, 64, &era()) else {
            panic!("expected batch");
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].0.get(),
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#
        );
        assert_eq!(entries[1].1.kind, Kind::Notification);
        assert!(parse_body(b"[]", 64, &super::tests::era()).is_err());
    }

    #[test]
    fn arguments_can_be_rewritten() {
        let msg = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"w","arguments":{"path":"../x"}}}"#;
        let args = RawValue::from_string(r#"{"path":"/safe/x"}"#.into()).unwrap();
        let out = with_arguments(msg, &args).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["params"]["arguments"]["path"], "/safe/x");
        assert_eq!(v["params"]["name"], "w");
        let not_object = RawValue::from_string("[1]".into()).unwrap();
        assert!(with_arguments(msg, &not_object).is_err());
    }

    #[test]
    fn duplicate_keys_fail_before_typing() {
        let err = parse_body(
            br#"{"method":"tools/call","params":{"name":"read","name":"delete"}}"#,
            64,
            &era(),
        );
        assert_eq!(
            err.err(),
            Some(CodecError::Json(JsonError::DuplicateKey("name".into())))
        );
    }

    /// Found by the `differential` fuzz target: `params` given as an array
    /// (JSON-RPC's by-position form) was read positionally into the named
    /// fields, so Portcullis saw a tool name (and a `_meta` version) that
    /// no MCP server reads there.
    #[test]
    fn fuzz_regression_params_by_position() {
        let positional = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["echo"]}"#;
        assert!(parse_body(positional.as_bytes(), 64, &era()).is_err());
        let meta = r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":["2026-07-28"]}}"#;
        let call = single(meta);
        assert_eq!(call.era, era());
        assert_eq!(call.body_version, None);
        // By-position params of a method without a target stay accepted.
        let ping = single(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#);
        assert_eq!(ping.target, None);
    }

    /// Found by the libFuzzer `differential` target: `"arguments": null`
    /// is read as no arguments, which is how servers read it too (the
    /// target's oracle now says so); the call and its tool stay judged.
    #[test]
    fn fuzz_regression_null_arguments() {
        let call = single(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_file","arguments":null}}"#,
        );
        assert_eq!(call.target_name(), Some("delete_file"));
        assert!(call.arguments.is_none());
    }
}

#[cfg(test)]
mod fidelity {
    use super::*;

    fn parse(body: &str, version: &str) -> Result<Call, CodecError> {
        match parse_body(body.as_bytes(), 64, &Era::from_version(Some(version)))? {
            Body::Single(c) => Ok(c),
            Body::Batch(_) => panic!("batch"),
        }
    }

    /// Tasks (SEP-2663) name their task, so `Mcp-Name: <taskId>` has
    /// something to agree with; a task call without a readable id is
    /// refused like a tool call without a name.
    #[test]
    fn task_methods_name_their_task() {
        for method in TASK_METHODS {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"taskId":"task-7"}}}}"#
            );
            let c = parse(&body, "2026-07-28").unwrap();
            assert_eq!(c.target, Some(Target::Task("task-7".into())), "{method}");
            let bad = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"taskId":5}}}}"#
            );
            assert!(parse(&bad, "2026-07-28").is_err(), "{method}");
        }
        let variant = r#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"TaskId":"a"}}"#;
        assert!(parse(variant, "2026-07-28").is_err());
    }

    /// A method the era removed is the server's to answer: without a target
    /// it passes to the server (which answers -32601); a target that is
    /// there must still be readable.
    #[test]
    fn removed_methods_reach_the_server_but_targets_stay_strict() {
        let bare = r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{}}"#;
        assert_eq!(parse(bare, "2026-07-28").unwrap().target, None);
        assert!(parse(bare, "2025-11-25").is_err(), "still required in 2025");
        let odd = r#"{"jsonrpc":"2.0","id":1,"method":"resources/unsubscribe","params":{"uri":7}}"#;
        assert!(parse(odd, "2026-07-28").is_err());
        let named = r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///a"}}"#;
        assert_eq!(
            parse(named, "2026-07-28").unwrap().target,
            Some(Target::Resource("file:///a".into()))
        );
    }
}
