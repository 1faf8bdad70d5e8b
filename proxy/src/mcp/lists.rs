//! Filtering of `tools/list`, `prompts/list` and `resources/list` results.
//!
//! A list is recognised by the shape of a response's `result` rather than by
//! remembering which request asked for it, so that the same filter applies
//! on every stream a list can arrive on: a POST's JSON or SSE answer, a
//! batch, a resumed GET stream, or the legacy HTTP+SSE stream.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{value::RawValue, Map, Value};

use super::{
    answer::{self, Answer, AnswerError},
    fold, json,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    const ALL: [Self; 4] = [
        Self::Tools,
        Self::Prompts,
        Self::Resources,
        Self::ResourceTemplates,
    ];

    /// The key of the array inside `result`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::ResourceTemplates => "resourceTemplates",
        }
    }

    /// The method that uses an item of this list: what a rule (or a
    /// scope rule) about the item is written against, so that a list shows
    /// only what the caller may then use.
    pub fn call_method(self) -> &'static str {
        match self {
            Self::Tools => "tools/call",
            Self::Prompts => "prompts/get",
            Self::Resources | Self::ResourceTemplates => "resources/read",
        }
    }

    /// The field that names an item.
    fn name_field(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => "name",
            Self::Resources => "uri",
            Self::ResourceTemplates => "uriTemplate",
        }
    }
}

/// One entry of a list, as a policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct ListItem<'a> {
    pub name: &'a str,
    /// A tool's `annotations` (hints from the server, not guarantees).
    pub annotations: Option<&'a Value>,
    /// A tool's `inputSchema`, for its `x-mcp-header` parameters.
    pub input_schema: Option<&'a Value>,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ResultProbe<'a> {
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompts: Option<&'a RawValue>,
    #[serde(borrow, default)]
    resources: Option<&'a RawValue>,
    #[serde(rename = "resourceTemplates", borrow, default)]
    resource_templates: Option<&'a RawValue>,
}

impl ResultProbe<'_> {
    fn any(&self) -> bool {
        self.tools.is_some()
            || self.prompts.is_some()
            || self.resources.is_some()
            || self.resource_templates.is_some()
    }
}

/// The keys inside `result` that hold a list.
const LIST_KEYS: [&str; 4] = ["tools", "prompts", "resources", "resourceTemplates"];
/// The tool annotations a policy may read.
const HINT_KEYS: [&str; 5] = [
    "title",
    "readOnlyHint",
    "destructiveHint",
    "idempotentHint",
    "openWorldHint",
];

/// What [`filter_answer`] made of an upstream answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// What each message of the answer is (for id tracking and routing).
    pub answer: Answer,
    /// Bytes to forward instead of the original; `None` to forward the
    /// original unchanged (no list, or nothing hidden).
    pub rewritten: Option<Bytes>,
    /// Items removed, over all lists of the answer.
    pub removed: usize,
    /// How many lists the answer carried.
    pub lists: usize,
}

/// The strict, fail-closed list filter. Reads `message` (a whole body or
/// one SSE event's data; one message or a batch) with
/// [`answer::read_answer`]'s rules and removes the items `visible` hides
/// from every list in it. Every doubt is an error, never a pass-through:
/// the caller must answer the client with a JSON-RPC error instead.
pub fn filter_answer<F>(
    message: &[u8],
    max_depth: usize,
    mut visible: F,
) -> Result<Filtered, AnswerError>
where
    F: FnMut(ListKind, &[ListItem<'_>]) -> Vec<bool>,
{
    // Integers beyond 64 bits are refused: re-encoding would round them.
    json::validate_answer(message, max_depth)?;
    let messages = answer::messages(message)?;
    let mut out = Filtered {
        answer: answer::classify(&messages)?,
        rewritten: None,
        removed: 0,
        lists: 0,
    };
    // Most answers carry no list: for those only the member names of each
    // `result` are read, and no tree is built.
    let mut carries_list = false;
    for result in messages.iter().filter_map(|m| m.get("result")) {
        carries_list |= holds_list(result)?;
    }
    if !carries_list {
        return Ok(out);
    }
    let mut value = answer::tree(message)?;
    let messages: Vec<&mut Value> = match &mut value {
        Value::Array(items) => items.iter_mut().collect(),
        single => vec![single],
    };
    for msg in messages {
        let Some(Value::Object(result)) = msg.get_mut("result") else {
            continue;
        };
        check_list_shape(result)?;
        for kind in ListKind::ALL {
            if let Some(Value::Array(items)) = result.get_mut(kind.key()) {
                out.lists += 1;
                out.removed += retain_visible(kind, items, &mut visible);
            }
        }
    }
    if out.removed > 0 {
        out.rewritten = Some(Bytes::from(value.to_string()));
    }
    Ok(out)
}

/// Whether a `result` holds one of the list keys. A key that folds onto
/// one without being spelled like it is refused here, as
/// [`check_list_shape`] would.
fn holds_list(result: &RawValue) -> Result<bool, AnswerError> {
    // Most answers cannot name a list in any spelling: not read again.
    if !fold::may_spell(result.get(), &LIST_KEYS) {
        return Ok(false);
    }
    let Some(members) = answer::members(result.get().as_bytes())? else {
        return Ok(false);
    };
    answer::exact_keys(members.keys(), &LIST_KEYS)?;
    let holds = members.keys().any(|key| LIST_KEYS.contains(&key));
    Ok(holds)
}

/// Every key Portcullis reads in a list result is spelled exactly, and
/// every list is an array: a client that reads `Tools`, or a list given as
/// an object, must not see items the filter never judged.
fn check_list_shape(result: &Map<String, Value>) -> Result<(), AnswerError> {
    answer::exact_keys(result.keys().map(String::as_str), &LIST_KEYS)?;
    for kind in ListKind::ALL {
        let Some(list) = result.get(kind.key()) else {
            continue;
        };
        let items = list
            .as_array()
            .ok_or_else(|| AnswerError::Shape(format!("result.{} is not an array", kind.key())))?;
        for item in items.iter().filter_map(Value::as_object) {
            answer::exact_keys(
                item.keys().map(String::as_str),
                &[kind.name_field(), "annotations"],
            )?;
            if let Some(Value::Object(hints)) = item.get("annotations") {
                answer::exact_keys(hints.keys().map(String::as_str), &HINT_KEYS)?;
            }
        }
    }
    Ok(())
}

/// The lenient filter: returns `None` for anything it cannot read, which a
/// caller would relay raw. Kept for callers not yet moved to
/// [`filter_answer`], which refuses instead.
///
/// If `message` is a response carrying a list, returns it re-encoded with
/// the items `visible` hides removed, and how many were removed. Returns
/// `None` when the message is not a list or nothing was hidden, so that the
/// original bytes can be forwarded untouched.
pub fn filter_message<F>(message: &[u8], mut visible: F) -> Option<(Bytes, usize)>
where
    F: FnMut(ListKind, &[ListItem<'_>]) -> Vec<bool>,
{
    let probe: Probe<'_> = serde_json::from_slice(message).ok()?;
    let result: ResultProbe<'_> = serde_json::from_str(probe.result?.get()).ok()?;
    if !result.any() {
        return None;
    }
    let mut value: Value = serde_json::from_slice(message).ok()?;
    let result = value.get_mut("result")?.as_object_mut()?;
    let mut removed = 0;
    for kind in ListKind::ALL {
        if let Some(Value::Array(items)) = result.get_mut(kind.key()) {
            removed += retain_visible(kind, items, &mut visible);
        }
    }
    (removed > 0).then(|| (Bytes::from(value.to_string()), removed))
}

fn retain_visible<F>(kind: ListKind, items: &mut Vec<Value>, visible: &mut F) -> usize
where
    F: FnMut(ListKind, &[ListItem<'_>]) -> Vec<bool>,
{
    // An item without a readable name cannot be judged, so it is hidden.
    let named: Vec<Option<ListItem<'_>>> = items
        .iter()
        .map(|item| {
            let name = item.get(kind.name_field())?.as_str()?;
            Some(ListItem {
                name,
                annotations: item.get("annotations"),
                input_schema: item.get("inputSchema"),
            })
        })
        .collect();
    let judged: Vec<ListItem<'_>> = named.iter().flatten().copied().collect();
    let verdicts = visible(kind, &judged);
    let mut verdicts = verdicts.into_iter();
    // A policy that returns too few verdicts hides the rest: fail closed.
    let keep: Vec<bool> = named
        .iter()
        .map(|n| n.is_some() && verdicts.next().unwrap_or(false))
        .collect();
    let before = items.len();
    let mut keep = keep.into_iter();
    items.retain(|_| keep.next().unwrap_or(false));
    before - items.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hide_delete(_: ListKind, items: &[ListItem<'_>]) -> Vec<bool> {
        items
            .iter()
            .map(|i| !i.name.starts_with("delete"))
            .collect()
    }

    #[test]
    fn removes_hidden_tools() {
        let msg = br#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo"},{"name":"delete_file","annotations":{"destructiveHint":true}}],"nextCursor":"c"}}"#;
        let (out, removed) = filter_message(msg, hide_delete).unwrap();
        assert_eq!(removed, 1);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
        assert_eq!(v["result"]["tools"][0]["name"], "echo");
        assert_eq!(v["result"]["nextCursor"], "c");
        assert_eq!(v["id"], 2);
    }

    #[test]
    fn passes_annotations_to_the_policy() {
        let msg = br#"{"id":1,"result":{"tools":[{"name":"a","annotations":{"destructiveHint":true}},{"name":"b"}]}}"#;
        let (out, _) = filter_message(msg, |_, items| {
            items
                .iter()
                .map(|i| {
                    i.annotations
                        .and_then(|a| a.get("destructiveHint"))
                        .is_none()
                })
                .collect()
        })
        .unwrap();
        assert!(!String::from_utf8_lossy(&out).contains("\"a\""));
    }

    #[test]
    fn untouched_lists_and_other_messages_return_none() {
        let msg = br#"{"id":1,"result":{"tools":[{"name":"echo"}]}}"#;
        assert!(filter_message(msg, hide_delete).is_none());
        let call = br#"{"id":1,"result":{"content":[{"type":"text","text":"delete_file"}]}}"#;
        assert!(filter_message(call, |_, _| Vec::new()).is_none());
        assert!(filter_message(b"not json", hide_delete).is_none());
        let notification = br#"{"method":"notifications/progress","params":{}}"#;
        assert!(filter_message(notification, hide_delete).is_none());
    }

    #[test]
    fn resources_prompts_and_nameless_items() {
        let msg = br#"{"id":1,"result":{"resources":[{"uri":"file:///delete_me"},{"uri":"file:///ok"},{"nouri":1}]}}"#;
        let (out, removed) = filter_message(msg, |k, items| {
            assert_eq!(k, ListKind::Resources);
            items.iter().map(|i| !i.name.contains("delete")).collect()
        })
        .unwrap();
        assert_eq!(removed, 2);
        assert!(String::from_utf8_lossy(&out).contains("file:///ok"));
    }

    #[test]
    fn short_verdict_list_fails_closed() {
        let msg = br#"{"id":1,"result":{"prompts":[{"name":"a"},{"name":"b"}]}}"#;
        let (_, removed) = filter_message(msg, |_, _| vec![true]).unwrap();
        assert_eq!(removed, 1);
    }
}
