//! List filtering of upstream answers, as a JSON body or an SSE stream,
//! with a policy that hides every name containing "secret": whatever the
//! filter lets through (rewritten or original) shows no such item to a
//! client reading it with a plain JSON reader, nor to one that matches
//! member names in any case (Go's `encoding/json`). Kept items are the
//! upstream's text, so both readings matter.

use crate::fuzzing::MAX_DEPTH;
use crate::mcp::{
    fold::fold_key,
    lists::{filter_answer, ListItem, ListKind},
    sse::Decoder,
};
use serde_json::Value;

fn visible(_: ListKind, items: &[ListItem<'_>]) -> Vec<bool> {
    items.iter().map(|i| !i.name.contains("secret")).collect()
}

/// The list keys and the field that names their items.
const LISTS: [(&str, &str); 4] = [
    ("tools", "name"),
    ("prompts", "name"),
    ("resources", "uri"),
    ("resourceTemplates", "uriTemplate"),
];

/// Panics if a client reading `bytes` would see a hidden item.
fn assert_clean(bytes: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        panic!("the filter passed what serde_json cannot read");
    };
    let messages = match &value {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    for msg in messages {
        for result in folded(msg, "result") {
            for (list, field) in LISTS {
                for items in folded(result, list).filter_map(Value::as_array) {
                    for item in items {
                        for name in folded(item, field).filter_map(Value::as_str) {
                            assert!(
                                !name.contains("secret"),
                                "hidden item {name:?} passed in {list}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Every member of `value` whose name is `key` in any case (Unicode simple
/// folding, as Go reads names): the exact spelling and every variant.
fn folded<'v>(value: &'v Value, key: &'static str) -> impl Iterator<Item = &'v Value> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter(move |(k, _)| fold_key(k) == fold_key(key))
        .map(|(_, v)| v)
}

fn check(message: &[u8]) {
    if let Ok(f) = filter_answer(message, MAX_DEPTH, visible) {
        assert_eq!(f.rewritten.is_some(), f.removed > 0);
        assert_clean(f.rewritten.as_deref().unwrap_or(message));
    }
}

/// One fuzz input.
pub fn run(data: &[u8]) {
    let input = data;
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        return check(rest);
    }
    let mut d = Decoder::new(1 << 16);
    d.push(rest);
    while let Ok(Some(event)) = d.next_event() {
        if let Some(data) = event.data.as_deref().filter(|_| event.is_message()) {
            check(data.as_bytes());
        }
    }
    if let Ok(Some(event)) = d.finish_checked() {
        if let Some(data) = event.data.as_deref() {
            check(data.as_bytes());
        }
    }
}
