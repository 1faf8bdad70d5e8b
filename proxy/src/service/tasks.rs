//! Who owns each task of the tasks extension.
//!
//! A task is the deferred answer of one `tools/call`: `tasks/get` reads
//! its result, `tasks/update` feeds it input, `tasks/cancel` stops it. A
//! caller that may not call a tool must not reach that tool's result
//! through its task, and one caller must not read or cancel another
//! caller's task. The task messages name only the task id, so the sidecar
//! remembers, from each `tools/call` answer that created a task, which
//! tool it runs and which principal created it.
//!
//! A task id the sidecar has not seen created is refused: it may belong to
//! any tool or caller, and the only safe reading of "unknown" is "no".
//! Tasks created before a restart of the sidecar are therefore lost to
//! their callers (the README says so).

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use serde::Deserialize;
use serde_json::value::RawValue;

/// How many tasks are remembered. The oldest are forgotten first; the
/// upstream creates tasks, so the map must not grow at its pace.
pub const MAX_TASKS: usize = 65_536;

/// The tool call a task belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub tool: String,
    /// [`crate::identity::Principal::key`] of the caller that created it.
    pub principal: String,
}

#[derive(Default)]
pub struct TaskOwners {
    inner: Mutex<Owners>,
}

#[derive(Default)]
struct Owners {
    by_id: HashMap<String, Owner>,
    /// Insertion order, for eviction.
    order: VecDeque<String>,
}

impl TaskOwners {
    pub fn record(&self, task_id: &str, owner: Owner) {
        let Ok(mut o) = self.inner.lock() else { return };
        if o.by_id.insert(task_id.to_string(), owner).is_some() {
            return;
        }
        o.order.push_back(task_id.to_string());
        while o.order.len() > MAX_TASKS {
            if let Some(old) = o.order.pop_front() {
                o.by_id.remove(&old);
            }
        }
    }

    pub fn owner(&self, task_id: &str) -> Option<Owner> {
        self.inner.lock().ok()?.by_id.get(task_id).cloned()
    }
}

/// The task id a `tools/call` result creates, if it creates one: the flat
/// `CreateTaskResult` of the tasks extension (`"resultType": "task"` with a
/// top-level `taskId`), or the 2025-11-25 form (`"task": {"taskId": ...}`).
/// The result was already read strictly (no duplicate keys, no case
/// variants), so serde's reading is the only one.
/// Whether JSON `text` could hold a member that creates a task. Most
/// answers create none: with neither `task` in the text nor an escape
/// that could spell it, no member can be named `task` or `taskId` (nor
/// `resultType` be `task`), and the text need not be read.
pub fn may_name_task(text: &str) -> bool {
    text.contains("task") || text.contains('\\')
}

pub fn created_task(result: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Nested {
        #[serde(rename = "taskId")]
        task_id: Option<String>,
    }
    #[derive(Deserialize)]
    struct Created {
        #[serde(rename = "resultType")]
        result_type: Option<String>,
        #[serde(rename = "taskId")]
        task_id: Option<String>,
        task: Option<Nested>,
    }
    let text = result.get();
    if !may_name_task(text) {
        return None;
    }
    let c: Created = serde_json::from_str(text).ok()?;
    match (c.result_type.as_deref(), c.task_id, c.task) {
        (Some("task"), Some(id), _) => Some(id),
        (_, _, Some(Nested { task_id: Some(id) })) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    fn owner(tool: &str) -> Owner {
        Owner {
            tool: tool.into(),
            principal: "p".into(),
        }
    }

    #[test]
    fn reads_both_forms_of_created_task() {
        let flat = raw(r#"{"resultType":"task","taskId":"t-1","status":"working"}"#);
        assert_eq!(created_task(&flat).as_deref(), Some("t-1"));
        let nested = raw(r#"{"task":{"taskId":"t-2","status":"working"}}"#);
        assert_eq!(created_task(&nested).as_deref(), Some("t-2"));
        // Spelled with escapes only (the text has no `task`): still read.
        let escaped = raw(r#"{"\u0074ask":{"t\u0061skId":"t-3"}}"#);
        assert_eq!(created_task(&escaped).as_deref(), Some("t-3"));
        let flat = raw(r#"{"resultType":"t\u0061sk","t\u0061skId":"t-4"}"#);
        assert_eq!(created_task(&flat).as_deref(), Some("t-4"));
    }

    #[test]
    fn ordinary_results_create_no_task() {
        for r in [
            r#"{"content":[{"type":"text","text":"hi"}]}"#,
            r#"{"resultType":"complete","taskId":"t-1","content":[]}"#,
            r#"{"taskId":"t-1"}"#,
            r#"{"task":{"status":"working"}}"#,
            r#"{"resultType":"task","taskId":7}"#,
        ] {
            assert_eq!(created_task(&raw(r)), None, "{r}");
        }
    }

    #[test]
    fn remembers_and_forgets_the_oldest() {
        let t = TaskOwners::default();
        assert_eq!(t.owner("a"), None);
        t.record("a", owner("x"));
        assert_eq!(t.owner("a"), Some(owner("x")));
        for i in 0..MAX_TASKS {
            t.record(&format!("n{i}"), owner("y"));
        }
        assert_eq!(t.owner("a"), None, "oldest evicted");
        assert_eq!(t.owner("n0"), Some(owner("y")));
        assert_eq!(t.owner(&format!("n{}", MAX_TASKS - 1)), Some(owner("y")));
    }
}
