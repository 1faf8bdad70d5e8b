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

use serde_json::value::RawValue;

use crate::mcp::{
    answer::{self, AnswerError},
    fold,
};

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

/// The member names a created task is read from.
const CREATED_KEYS: [&str; 3] = ["resultType", "taskId", "task"];

/// The task id a `tools/call` result creates, if it creates one: the flat
/// `CreateTaskResult` of the tasks extension (`"resultType": "task"` with a
/// top-level `taskId`), or the 2025-11-25 form (`"task": {"taskId": ...}`).
/// The result has no repeated member (the answer was validated), but a
/// case variant of these names (`TaskId`) is refused: a client that folds
/// case would read a task the sidecar did not record, and an unrecorded
/// task is open to every caller.
pub fn created_task(result: &RawValue) -> Result<Option<String>, AnswerError> {
    // Most results cannot name a task in any spelling: not read again.
    if !may_name_task(result.get()) {
        return Ok(None);
    }
    let Some(members) = answer::members(result.get().as_bytes())? else {
        return Ok(None);
    };
    answer::exact_keys(members.keys(), &CREATED_KEYS)?;
    let string =
        |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok());
    if let (Some("task"), Some(id)) = (
        string(members.get("resultType")).as_deref(),
        string(members.get("taskId")),
    ) {
        return Ok(Some(id));
    }
    let Some(task) = members.get("task") else {
        return Ok(None);
    };
    let Some(nested) = answer::members(task.get().as_bytes())? else {
        return Ok(None);
    };
    answer::exact_keys(nested.keys(), &["taskId"])?;
    Ok(string(nested.get("taskId")))
}

/// Whether JSON `text` may name a task in any spelling a client reads
/// (see [`fold::may_spell`]): `task`, `taskId`, and the `task` value of
/// `resultType` all hold `task`.
pub fn may_name_task(text: &str) -> bool {
    fold::may_spell(text, &["task"])
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
        assert_eq!(created_task(&flat).unwrap().as_deref(), Some("t-1"));
        let nested = raw(r#"{"task":{"taskId":"t-2","status":"working"}}"#);
        assert_eq!(created_task(&nested).unwrap().as_deref(), Some("t-2"));
        // Spelled with escapes only (the text has no `task`): still read.
        let escaped = raw(r#"{"\u0074ask":{"t\u0061skId":"t-3"}}"#);
        assert_eq!(created_task(&escaped).unwrap().as_deref(), Some("t-3"));
        let flat = raw(r#"{"resultType":"t\u0061sk","t\u0061skId":"t-4"}"#);
        assert_eq!(created_task(&flat).unwrap().as_deref(), Some("t-4"));
        // A task member of another kind does not hide a flat one.
        let both = raw(r#"{"resultType":"task","taskId":"t-5","task":"x"}"#);
        assert_eq!(created_task(&both).unwrap().as_deref(), Some("t-5"));
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
            assert_eq!(created_task(&raw(r)), Ok(None), "{r}");
        }
    }

    /// A client that folds case (Go's encoding/json) reads these as the
    /// task a result creates; the sidecar would not record it, and an
    /// unrecorded task is open to every caller. So they are refused.
    #[test]
    fn case_variants_of_task_names_are_refused() {
        for r in [
            r#"{"resultType":"task","TaskId":"t-1"}"#,
            r#"{"ResultType":"task","taskId":"t-1"}"#,
            r#"{"TASK":{"taskId":"t-1"}}"#,
            r#"{"task":{"TaskID":"t-1"}}"#,
            r#"{"resultType":"task","taſkId":"t-1"}"#,
            r#"{"resultType":"task","t\u0041skId":"t-1"}"#,
        ] {
            assert!(
                matches!(created_task(&raw(r)), Err(AnswerError::CaseVariant { .. })),
                "{r}"
            );
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
