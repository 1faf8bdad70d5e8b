//! One client exchange as the relay sees it: the [`Judge`] that decides
//! for this principal, and the [`Answers`] still expected. Every message
//! coming back passes through [`Exchange::process`], whatever stream it
//! arrives on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    judge::Judge,
    rescue::{Cause, Refusal},
    tasks,
};
use crate::mcp::{
    answer::{Answer, AnswerKind},
    Call, Target,
};

/// Calls whose results a policy wants to see, by canonical id. Shared with
/// the legacy stream, where the answers to POSTs arrive.
pub type PendingCalls = Arc<Mutex<HashMap<String, Call>>>;

/// A JSON-RPC id in a canonical text form, so that `1` and ` 1 ` from two
/// different serializers compare equal.
pub fn canonical_id(raw: &str) -> String {
    if written_back_as_is(raw) {
        return raw.to_string();
    }
    serde_json::from_str::<serde_json::Value>(raw)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| raw.to_string())
}

/// Whether serde_json writes the JSON text `raw` back unchanged: an
/// integer with no sign, no leading zero and at most 19 digits (it fits
/// in a u64), or a string with no escape (serde_json escapes only `"`,
/// `\` and control characters). Almost every id is one, and is its own
/// canonical form without a parse.
fn written_back_as_is(raw: &str) -> bool {
    match raw.as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.len() <= 18 && rest.iter().all(u8::is_ascii_digit),
        [b'"', inner @ .., b'"'] => !inner.iter().any(|&c| c == b'\\' || c == b'"' || c < 0x20),
        _ => false,
    }
}

/// A request whose answer must be read, not only matched, and what it is
/// read for.
enum Pending {
    /// Result hooks apply: they see the whole call.
    Inspect(Call),
    /// A `tools/call` without result hooks: its answer is read only for a
    /// task it creates, which needs the tool called, not the arguments (or
    /// a copy of the rest of the call).
    TaskOf(Option<Target>),
}

impl Pending {
    fn target(&self) -> Option<&Target> {
        match self {
            Self::Inspect(call) => call.target.as_ref(),
            Self::TaskOf(target) => target.as_ref(),
        }
    }
}

/// Requests still waiting for their answer.
#[derive(Default)]
pub struct Answers {
    /// By canonical id; the call is kept when its answer must be read.
    waiting: HashMap<String, Option<Pending>>,
    /// Legacy streams: calls POSTed elsewhere whose answers come here.
    pub legacy_calls: Option<PendingCalls>,
    /// The answer to a POST may only answer that POST's requests, each
    /// once. (A GET stream carries replays of earlier POSTs' answers, and
    /// a legacy stream the answers to POSTs made elsewhere.)
    pub only_asked: bool,
    /// The POST was a batch (2025-03-26), so its answer may be one too.
    pub batch_asked: bool,
}

impl Answers {
    /// Expects an answer to the request `call`; `inspect` keeps the call
    /// for the result hooks.
    pub fn track(&mut self, call: &Call, inspect: bool) {
        let Some(id) = &call.id else { return };
        let pending = match inspect {
            true => Some(Pending::Inspect(call.clone())),
            false if call.method == "tools/call" => Some(Pending::TaskOf(call.target.clone())),
            false => None,
        };
        self.waiting.insert(canonical_id(id.get()), pending);
    }

    /// Refuses an answer that a client could match to a request this
    /// exchange did not forward, or already has the answer of: a denied
    /// call's id (the client has its denial), an id never asked, a second
    /// answer to one id; and a batch answering a single request, which
    /// eras without batches do not define. Clients differ on which of two
    /// answers they keep, so neither is relayed. An error with `id: null`
    /// (the server could not read an id) answers nothing and may pass.
    pub fn admit(&self, answer: &Answer) -> Result<(), Refusal> {
        if !self.only_asked {
            return Ok(());
        }
        if matches!(answer, Answer::Batch(_)) {
            self.admit_batch()?;
        }
        for m in answer.messages() {
            let AnswerKind::Response { id, is_error } = m else {
                continue;
            };
            let unaddressed = *is_error && id == "null";
            if !unaddressed && !self.waiting.contains_key(id) {
                return Err(unasked(format!(
                    "an answer to id {id}, which this request did not forward or was already answered"
                )));
            }
        }
        Ok(())
    }

    /// Refuses a JSON array answering a POST that was not a batch.
    pub fn admit_batch(&self) -> Result<(), Refusal> {
        match self.only_asked && !self.batch_asked {
            true => Err(unasked(
                "a batch answers a request that was not a batch".into(),
            )),
            false => Ok(()),
        }
    }

    /// Whether some expected answer must be read (a result hook, or a
    /// `tools/call` that may create a task).
    pub fn reads_any(&self) -> bool {
        self.waiting.values().any(Option::is_some)
    }

    /// Ids still without an answer, as JSON text.
    pub fn unanswered(&self) -> Vec<Bytes> {
        self.waiting
            .keys()
            .map(|id| Bytes::from(id.clone()))
            .collect()
    }

    /// The call answered by `id`, if its answer is to be read.
    fn answered(&mut self, id: &str) -> Option<Pending> {
        match self.waiting.remove(id) {
            Some(pending) => pending,
            None => {
                let call = self.legacy_calls.as_ref()?.lock().ok()?.remove(id)?;
                Some(Pending::Inspect(call))
            }
        }
    }
}

fn unasked(why: String) -> Refusal {
    Cause::UnreadableAnswer(why).into()
}

/// The `result` of a response already read strictly.
#[derive(Deserialize)]
struct ResultOf<'a> {
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
}

pub struct Exchange {
    pub judge: Arc<Judge>,
    pub answers: Answers,
}

impl Exchange {
    pub fn new(judge: Arc<Judge>) -> Self {
        Self {
            judge,
            answers: Answers::default(),
        }
    }

    /// Whether a passed-through answer is worth reading: a result hook
    /// waits for it, or it may name a task (in any spelling a client
    /// reads; see [`tasks::may_name_task`]). It passes through because no
    /// policy reads it, so the task is what it is read for; most cannot
    /// name one, and their strict reading, the largest part of the plain
    /// path's work on the answer, is skipped. (The tool catalog is still
    /// learnt from `tools/list` answers, which are always read whole.)
    pub fn worth_reading(&self, msg: &[u8]) -> bool {
        let inspects =
            (self.answers.waiting.values().flatten()).any(|p| matches!(p, Pending::Inspect(_)));
        inspects || std::str::from_utf8(msg).map_or(true, tasks::may_name_task)
    }

    /// Applies the policy to one message from the upstream. Returns the
    /// bytes to send instead, or `None` to send the original; an answer
    /// that cannot be read with certainty is refused.
    pub fn process(&mut self, msg: &[u8]) -> Result<Option<Bytes>, Refusal> {
        let (answer, rewritten) = self.judge.judge_answer(msg)?;
        self.answers.admit(&answer)?;
        let Answer::Single(AnswerKind::Response { id, is_error }) = &answer else {
            return Ok(rewritten);
        };
        let Some(pending) = self.answers.answered(id) else {
            return Ok(rewritten);
        };
        if *is_error {
            return Ok(rewritten);
        }
        let shown = rewritten.as_deref().unwrap_or(msg);
        // Without result hooks, the result is read only for a task it
        // creates: not at all when none can be named in it.
        let task_text = std::str::from_utf8(shown).map_or(true, tasks::may_name_task);
        if matches!(pending, Pending::TaskOf(_)) && !task_text {
            return Ok(rewritten);
        }
        let Some(result) = serde_json::from_slice::<ResultOf<'_>>(shown)
            .ok()
            .and_then(|r| r.result)
        else {
            return Ok(rewritten);
        };
        self.judge.note_task(pending.target(), result)?;
        Ok(match &pending {
            Pending::Inspect(call) => self.judge.check_result(call, result).or(rewritten),
            Pending::TaskOf(_) => rewritten,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ids() {
        assert_eq!(canonical_id(" 1 "), "1");
        assert_eq!(canonical_id(" \"x\" "), "\"x\"");
        // Every shortcut gives what the parse would give.
        let slow = |raw: &str| {
            serde_json::from_str::<serde_json::Value>(raw)
                .unwrap()
                .to_string()
        };
        for raw in [
            "0",
            "7",
            "1234567890123456789",
            "18446744073709551615",
            "-1",
            "-0",
            "1e3",
            "1.0",
            r#""""#,
            r#""a-b_c 1""#,
            r#""é☃""#,
            r#""\u0061""#,
            r#""a\nb""#,
            r#""\/""#,
        ] {
            assert_eq!(canonical_id(raw), slow(raw), "{raw}");
        }
        assert!(written_back_as_is("1234567890123456789"));
        assert!(!written_back_as_is("12345678901234567890"));
        assert!(!written_back_as_is(r#""\u0061""#));
    }
}
