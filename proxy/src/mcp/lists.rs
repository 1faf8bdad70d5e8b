//! Filtering of `tools/list`, `prompts/list` and `resources/list` results.
//!
//! A list is recognised by the shape of a response's `result` rather than by
//! remembering which request asked for it, so that the same filter applies
//! on every stream a list can arrive on: a POST's JSON or SSE answer, a
//! batch, a resumed GET stream, or the legacy HTTP+SSE stream.

use std::{borrow::Cow, fmt, ops::Range};

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{
    answer::{self, malformed, Answer, AnswerError},
    fold,
    json::{self, Key},
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

    /// The members of an item Portcullis reads, each of which must be
    /// spelled exactly: a client that reads `Name` or `InputSchema` must
    /// not act on a member the filter never saw.
    fn item_keys(self) -> &'static [&'static str] {
        match self {
            Self::Tools => &["name", "annotations", "inputSchema"],
            Self::Prompts => &["name", "annotations"],
            Self::Resources => &["uri", "annotations"],
            Self::ResourceTemplates => &["uriTemplate", "annotations"],
        }
    }
}

/// One entry of a list, as a policy sees it. The JSON members are the
/// upstream's own text (validated, never re-encoded).
#[derive(Debug, Clone, Copy)]
pub struct ListItem<'a> {
    pub name: &'a str,
    /// A tool's `annotations` (hints from the server, not guarantees).
    pub annotations: Option<&'a RawValue>,
    /// A tool's `inputSchema`, for its `x-mcp-header` parameters.
    pub input_schema: Option<&'a RawValue>,
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
///
/// A list is read as JSON text, not built into a tree: a `tools/list` of
/// a thousand tools would otherwise cost tens of thousands of allocations,
/// all on the one malloc arena the sidecar keeps (`memory.rs`). What is
/// forwarded is the upstream's bytes with the hidden items cut out, so a
/// client sees every kept item exactly as the server wrote it.
pub fn filter_answer<F>(
    message: &[u8],
    max_depth: usize,
    mut visible: F,
) -> Result<Filtered, AnswerError>
where
    F: FnMut(ListKind, &[ListItem<'_>]) -> Vec<bool>,
{
    // Integers beyond 64 bits are refused: serde_json, Go and JavaScript
    // each read them otherwise (an id, a value a policy reads).
    json::validate_answer(message, max_depth)?;
    let messages = answer::messages(message)?;
    let mut out = Filtered {
        answer: answer::classify(&messages)?,
        rewritten: None,
        removed: 0,
        lists: 0,
    };
    let mut edits = Vec::new();
    for result in messages.iter().filter_map(|m| m.get("result")) {
        // Most answers cannot name a list in any spelling: not read again.
        if !fold::may_spell(result.get(), &LIST_KEYS) {
            continue;
        }
        let Some(members) = answer::members(result.get().as_bytes())? else {
            continue;
        };
        answer::exact_keys(members.keys(), &LIST_KEYS)?;
        for kind in ListKind::ALL {
            let Some(list) = members.get(kind.key()) else {
                continue;
            };
            out.lists += 1;
            let items: Vec<&RawValue> = match list.get().as_bytes().first() {
                Some(b'[') => serde_json::from_str(list.get()).map_err(malformed)?,
                _ => {
                    return Err(AnswerError::Shape(format!(
                        "result.{} is not an array",
                        kind.key()
                    )))
                }
            };
            let keep = judge_items(kind, &items, &mut visible)?;
            let removed = keep.iter().filter(|k| !**k).count();
            if removed == 0 {
                continue;
            }
            out.removed += removed;
            let mut with = Vec::with_capacity(list.get().len());
            with.push(b'[');
            for (n, item) in items.iter().zip(&keep).filter(|(_, k)| **k).enumerate() {
                if n > 0 {
                    with.push(b',');
                }
                with.extend_from_slice(item.0.get().as_bytes());
            }
            with.push(b']');
            edits.push((span(message, list.get())?, with));
        }
    }
    if !edits.is_empty() {
        out.rewritten = Some(splice(message, edits)?);
    }
    Ok(out)
}

/// Where `part`, a slice of `message`'s text, lies in it.
fn span(message: &[u8], part: &str) -> Result<Range<usize>, AnswerError> {
    let start = (part.as_ptr() as usize).checked_sub(message.as_ptr() as usize);
    let end = start.and_then(|s| s.checked_add(part.len()));
    match (start, end) {
        (Some(start), Some(end)) if end <= message.len() => Ok(start..end),
        // Every list is read from `message` itself; fail closed if not.
        _ => Err(AnswerError::Shape("a list outside its message".into())),
    }
}

/// `message` with each span replaced. The spans are distinct lists, so
/// none overlaps another.
fn splice(message: &[u8], mut edits: Vec<(Range<usize>, Vec<u8>)>) -> Result<Bytes, AnswerError> {
    edits.sort_by_key(|(at, _)| at.start);
    let mut out = Vec::with_capacity(message.len());
    let mut from = 0;
    for (at, with) in edits {
        let kept = message
            .get(from..at.start)
            .ok_or_else(|| AnswerError::Shape("overlapping lists".into()))?;
        out.extend_from_slice(kept);
        out.extend_from_slice(&with);
        from = at.end;
    }
    out.extend_from_slice(message.get(from..).unwrap_or_default());
    Ok(Bytes::from(out))
}

/// Reads each item, refuses the spellings a client could read otherwise,
/// and asks `visible` about the named ones. An item without a readable
/// name cannot be judged, so it is hidden; so is every item `visible`
/// gives no verdict for (fail closed).
fn judge_items<F>(
    kind: ListKind,
    items: &[&RawValue],
    visible: &mut F,
) -> Result<Vec<bool>, AnswerError>
where
    F: FnMut(ListKind, &[ListItem<'_>]) -> Vec<bool>,
{
    let mut read: Vec<Option<Fields<'_>>> = Vec::with_capacity(items.len());
    for item in items {
        read.push(match item.get().as_bytes().first() {
            Some(b'{') => {
                let mut de = serde_json::Deserializer::from_str(item.get());
                let fields = ItemSeed(kind).deserialize(&mut de).map_err(malformed)?;
                fields.check()?;
                Some(fields)
            }
            _ => None,
        });
    }
    let names: Vec<Option<Cow<'_, str>>> = read
        .iter()
        .map(|f| f.as_ref().and_then(Fields::name))
        .collect();
    let judged: Vec<ListItem<'_>> = read
        .iter()
        .zip(&names)
        .filter_map(|(fields, name)| {
            let (fields, name) = (fields.as_ref()?, name.as_deref()?);
            Some(ListItem {
                name,
                annotations: fields.annotations,
                input_schema: fields.input_schema,
            })
        })
        .collect();
    let mut verdicts = visible(kind, &judged).into_iter();
    Ok(names
        .iter()
        .map(|n| n.is_some() && verdicts.next().unwrap_or(false))
        .collect())
}

/// The members of a list item Portcullis reads, as the upstream's text.
struct Fields<'a> {
    name: Option<&'a RawValue>,
    annotations: Option<&'a RawValue>,
    input_schema: Option<&'a RawValue>,
    /// The first member spelled as a variant of one of these.
    variant: Option<(String, &'static str)>,
}

impl<'a> Fields<'a> {
    /// The name, if it is a string (unescaped, as every client reads it).
    fn name(&self) -> Option<Cow<'a, str>> {
        let raw = self.name?;
        serde_json::from_str::<Key<'a>>(raw.get()).ok().map(|k| k.0)
    }

    fn check(&self) -> Result<(), AnswerError> {
        if let Some((found, expected)) = &self.variant {
            return Err(AnswerError::CaseVariant {
                found: found.clone(),
                expected,
            });
        }
        // A hint spelled `DestructiveHint` is read as the hint by Go.
        if let Some(hints) = self.annotations {
            if let Some(members) = answer::members(hints.get().as_bytes())? {
                answer::exact_keys(members.keys(), &HINT_KEYS)?;
            }
        }
        Ok(())
    }
}

/// Reads one item's members without building them: a custom visitor, so
/// that an item costs no allocation unless a key is escaped.
struct ItemSeed(ListKind);

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = Fields<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list item")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let kind = self.0;
        let mut fields = Fields {
            name: None,
            annotations: None,
            input_schema: None,
            variant: None,
        };
        while let Some(Key(key)) = map.next_key()? {
            let slot = if key == kind.name_field() {
                &mut fields.name
            } else if key == "annotations" {
                &mut fields.annotations
            } else if key == "inputSchema" && kind == ListKind::Tools {
                &mut fields.input_schema
            } else {
                if fields.variant.is_none() {
                    if let Some(expected) = fold::variant_of(&key, kind.item_keys()) {
                        fields.variant = Some((key.into_owned(), expected));
                    }
                }
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            *slot = Some(map.next_value()?);
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn hide_delete(_: ListKind, items: &[ListItem<'_>]) -> Vec<bool> {
        items
            .iter()
            .map(|i| !i.name.starts_with("delete"))
            .collect()
    }

    /// The filtered bytes and how many items were removed.
    fn filter<F>(msg: &[u8], visible: F) -> (Vec<u8>, usize)
    where
        F: FnMut(ListKind, &[ListItem<'_>]) -> Vec<bool>,
    {
        let f = filter_answer(msg, 32, visible).unwrap();
        let out = f.rewritten.as_deref().unwrap_or(msg).to_vec();
        (out, f.removed)
    }

    #[test]
    fn removes_hidden_tools() {
        let msg = br#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo"},{"name":"delete_file","annotations":{"destructiveHint":true}}],"nextCursor":"c"}}"#;
        let (out, removed) = filter(msg, hide_delete);
        assert_eq!(removed, 1);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
        assert_eq!(v["result"]["tools"][0]["name"], "echo");
        assert_eq!(v["result"]["nextCursor"], "c");
        assert_eq!(v["id"], 2);
    }

    #[test]
    fn kept_items_and_the_rest_of_the_answer_keep_their_bytes() {
        // Spacing, member order, escapes and number spellings are the
        // server's: only the hidden item is cut out.
        let msg = br#"{ "id" : 9, "jsonrpc":"2.0", "result": { "nextCursor":"c\u0041", "tools" : [ {"name":"delete_me"}, { "name" : "e\u0063ho", "x": 1.0e2 } ,{"name":"z","inputSchema":{"b":1,"a":2}} ] } }"#;
        let (out, removed) = filter(msg, hide_delete);
        assert_eq!(removed, 1);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{ "id" : 9, "jsonrpc":"2.0", "result": { "nextCursor":"c\u0041", "tools" : [{ "name" : "e\u0063ho", "x": 1.0e2 },{"name":"z","inputSchema":{"b":1,"a":2}}] } }"#
        );
    }

    #[test]
    fn every_list_of_a_batch_is_filtered() {
        let msg = br#"[{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"delete_p"},{"name":"p"}],"tools":[{"name":"t"},{"name":"delete_t"}]}},{"jsonrpc":"2.0","id":2,"result":{"resources":[{"uri":"delete:/r"},{"uri":"r"}]}}]"#;
        let f = filter_answer(msg, 32, |_, items| {
            items
                .iter()
                .map(|i| !i.name.starts_with("delete"))
                .collect()
        })
        .unwrap();
        assert_eq!((f.removed, f.lists), (3, 3));
        assert_eq!(
            std::str::from_utf8(f.rewritten.as_deref().unwrap()).unwrap(),
            r#"[{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"p"}],"tools":[{"name":"t"}]}},{"jsonrpc":"2.0","id":2,"result":{"resources":[{"uri":"r"}]}}]"#
        );
    }

    #[test]
    fn passes_annotations_and_schemas_as_the_servers_text() {
        let msg = br#"{"id":1,"result":{"tools":[{"name":"a","annotations":{ "destructiveHint" : true }},{"name":"b","inputSchema":{"type":"object"}}]}}"#;
        let mut seen = Vec::new();
        let (out, _) = filter(msg, |_, items| {
            seen = items
                .iter()
                .map(|i| {
                    (
                        i.annotations.map(|a| a.get().to_string()),
                        i.input_schema.map(|a| a.get().to_string()),
                    )
                })
                .collect();
            items.iter().map(|i| i.annotations.is_none()).collect()
        });
        assert_eq!(
            seen,
            [
                (Some(r#"{ "destructiveHint" : true }"#.to_string()), None),
                (None, Some(r#"{"type":"object"}"#.to_string())),
            ]
        );
        assert!(!String::from_utf8_lossy(&out).contains("\"a\""));
    }

    #[test]
    fn escaped_names_are_judged_as_clients_read_them() {
        let msg = br#"{"id":1,"result":{"tools":[{"name":"d\u0065lete_file"},{"name":"echo"}]}}"#;
        let (out, removed) = filter(msg, hide_delete);
        assert_eq!(removed, 1);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":1,"result":{"tools":[{"name":"echo"}]}}"#
        );
    }

    #[test]
    fn untouched_lists_and_other_messages_are_forwarded_as_they_are() {
        let msg = br#"{"id":1,"result":{"tools":[{"name":"echo"}]}}"#;
        let f = filter_answer(msg, 32, hide_delete).unwrap();
        assert_eq!((f.rewritten, f.removed, f.lists), (None, 0, 1));
        let call = br#"{"id":1,"result":{"content":[{"type":"text","text":"delete_file"}]}}"#;
        let f = filter_answer(call, 32, |_, _| Vec::new()).unwrap();
        assert_eq!((f.rewritten, f.lists), (None, 0));
        assert!(filter_answer(b"not json", 32, hide_delete).is_err());
        let notification = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#;
        assert!(filter_answer(notification, 32, hide_delete)
            .unwrap()
            .rewritten
            .is_none());
    }

    #[test]
    fn resources_prompts_and_nameless_items() {
        let msg = br#"{"id":1,"result":{"resources":[{"uri":"file:///delete_me"},{"uri":"file:///ok"},{"nouri":1},7,{"uri":5}]}}"#;
        let (out, removed) = filter(msg, |k, items| {
            assert_eq!(k, ListKind::Resources);
            items.iter().map(|i| !i.name.contains("delete")).collect()
        });
        assert_eq!(removed, 4);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":1,"result":{"resources":[{"uri":"file:///ok"}]}}"#
        );
    }

    #[test]
    fn a_list_hidden_whole_is_an_empty_array() {
        let msg = br#"{"id":1,"result":{"tools":[{"name":"delete_a"},{"name":"delete_b"}]}}"#;
        let (out, removed) = filter(msg, hide_delete);
        assert_eq!(removed, 2);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":1,"result":{"tools":[]}}"#
        );
    }

    #[test]
    fn short_verdict_list_fails_closed() {
        let msg = br#"{"id":1,"result":{"prompts":[{"name":"a"},{"name":"b"}]}}"#;
        let (_, removed) = filter(msg, |_, _| vec![true]);
        assert_eq!(removed, 1);
    }

    #[test]
    fn member_variants_of_an_item_are_refused() {
        for item in [
            r#"{"Name":"x"}"#,
            r#"{"name":"x","Annotations":{}}"#,
            r#"{"name":"x","annotations":{"DestructiveHint":false}}"#,
            r#"{"name":"x","InputSchema":{}}"#,
            r#"{"name":"x","inputſchema":{}}"#,
        ] {
            let msg = format!(r#"{{"id":1,"result":{{"tools":[{item}]}}}}"#);
            let err = filter_answer(msg.as_bytes(), 32, hide_delete).unwrap_err();
            assert!(
                matches!(err, AnswerError::CaseVariant { .. }),
                "{item}: {err}"
            );
        }
        // `InputSchema` is only read on tools.
        let msg = br#"{"id":1,"result":{"prompts":[{"name":"x","InputSchema":{}}]}}"#;
        assert!(filter_answer(msg, 32, hide_delete).is_ok());
    }
}
