//! The decision phase: every message on its way in, every `tools/call`
//! result and every list on its way out, asked of the policy in force.
//!
//! A [`Judge`] is built per request for one principal. It reads the policy
//! from the [`PolicyHandle`] at each decision rather than keeping the
//! snapshot taken when the request arrived, so a stream that stays open
//! for hours is judged by the policy of the moment each event passes.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{
    catalog::ToolCatalog,
    metrics::HttpMetrics,
    rescue::{Cause, Refusal},
    tasks::{self, Owner, TaskOwners},
};
use crate::{
    audit::Record,
    identity::Principal,
    mcp::{answer::Answer, headers::McpHeaders, lists, with_arguments, Call, Target},
    policy::{Decision, Denial, PolicyHandle, Request, ResultDecision},
};

/// What every judge of this sidecar shares.
pub struct Court {
    pub policy: Arc<PolicyHandle>,
    pub catalog: ToolCatalog,
    pub metrics: HttpMetrics,
    /// This sidecar's instance identity, as policies see it.
    pub instance: String,
    /// How deep an upstream answer may nest before it is refused.
    pub max_json_depth: usize,
    /// Which tool call and caller each task belongs to.
    pub tasks: TaskOwners,
    /// The OAuth resource server, once started: lists hide what the
    /// token's scopes would not let the caller use.
    pub auth: std::sync::OnceLock<Arc<crate::auth::Auth>>,
}

/// What happens to one message once the policy has spoken.
#[derive(Debug)]
pub enum Verdict {
    /// Forward the message's bytes as they came.
    Forward(Bytes),
    /// Forward these bytes, in which a policy put these arguments in
    /// place of the client's.
    Rewrite(Bytes, Box<RawValue>),
    Deny(Denial),
}

pub struct Judge {
    court: Arc<Court>,
    pub principal: Principal,
    /// The client-facing session id, for policies and audit.
    pub session: Option<String>,
    /// The request's MCP headers (`mcp-*`), for policies.
    pub headers: McpHeaders,
}

impl Judge {
    pub fn new(court: Arc<Court>, principal: Principal) -> Self {
        Self {
            court,
            principal,
            session: None,
            headers: McpHeaders::default(),
        }
    }

    pub fn metrics(&self) -> &HttpMetrics {
        &self.court.metrics
    }

    fn request<'a>(&'a self, call: &'a Call, annotations: Option<&'a str>) -> Request<'a> {
        Request {
            principal: &self.principal,
            call,
            session: self.session.as_deref(),
            headers: &self.headers,
            annotations,
            instance: &self.court.instance,
            task_tool: None,
        }
    }

    /// The tool a task call reaches, or a denial when another caller
    /// created the task. A task id the sidecar did not see created is
    /// judged by its method alone and left to the server, which answers
    /// `-32602` for an id it does not know (refusing it here broke that
    /// answer for every client); the cost is that a task created before a
    /// restart of the sidecar is not tied to its tool (README, Limits).
    fn task_tool(&self, task_id: &str) -> Result<Option<String>, Denial> {
        match self.court.tasks.owner(task_id) {
            Some(o) if o.principal == self.principal.key() => Ok(Some(o.tool)),
            Some(_) => Err(Denial::new(
                "task-owner",
                "the task belongs to another caller".to_string(),
            )),
            None => Ok(None),
        }
    }

    /// Remembers the task that an allowed `tools/call` created, if any.
    /// A result that names a task in a spelling a client could read
    /// otherwise is refused.
    pub fn note_task(&self, called: Option<&Target>, result: &RawValue) -> Result<(), Refusal> {
        let created = tasks::created_task(result)
            .map_err(|e| Refusal::from(Cause::UnreadableAnswer(e.to_string())))?;
        let (Some(Target::Tool(tool)), Some(id)) = (called, created) else {
            return Ok(());
        };
        let owner = Owner {
            tool: tool.clone(),
            principal: self.principal.key().to_string(),
        };
        self.court.tasks.record(&id, owner);
        Ok(())
    }

    /// Asks the policy about one message (given with its bytes), records
    /// the decision, and applies a rewrite to the bytes. The call itself is
    /// not changed: allowed as it is (the usual case), it need not be
    /// copied for this.
    pub fn decide(&self, call: &Call, raw: Bytes) -> Verdict {
        let t = Instant::now();
        let annotations = call
            .target_name()
            .and_then(|t| self.court.catalog.annotations(t));
        let task_tool = match &call.target {
            Some(Target::Task(id)) => self.task_tool(id),
            _ => Ok(None),
        };
        let decision = match task_tool {
            Ok(task_tool) => self.court.policy.snapshot().check(&Request {
                task_tool: task_tool.as_deref(),
                ..self.request(call, annotations.as_deref())
            }),
            Err(denial) => Decision::Deny(denial),
        };
        self.record(call, &decision, t);
        match decision {
            Decision::Allow => Verdict::Forward(raw),
            Decision::Deny(d) => Verdict::Deny(d),
            Decision::Rewrite { arguments, by } => match with_arguments(&raw, &arguments) {
                Ok(bytes) => Verdict::Rewrite(bytes, arguments),
                // A rewrite that cannot be applied must not fall back to
                // the original arguments: fail closed.
                Err(e) => Verdict::Deny(Denial::new(
                    by,
                    format!("rewrite could not be applied: {e}"),
                )),
            },
        }
    }

    fn record(&self, call: &Call, decision: &Decision, started: Instant) {
        let rec = Record::for_call(&self.principal, call, self.session.as_deref());
        let rec = match decision {
            Decision::Allow => rec,
            Decision::Rewrite { by, .. } => rec.decided("rewrite", by, ""),
            Decision::Deny(d) => {
                self.court.metrics.denied(&d.by);
                rec.decided("deny", &d.by, &d.reason)
            }
        };
        rec.took(started.elapsed()).emit();
        self.court
            .metrics
            .record_decision(&call.method, call.target_name(), decision.label());
    }

    /// Whether the answer to `call` must be inspected by a result hook.
    pub fn wants_result(&self, call: &Call) -> bool {
        call.method == "tools/call" && self.court.policy.snapshot().inspects_results()
    }

    /// Applies the result hooks to the `result` of an allowed call.
    /// Returns the message to send instead, or `None` to send the original.
    pub fn check_result(&self, call: &Call, result: &RawValue) -> Option<Bytes> {
        let t = Instant::now();
        let decision = self
            .court
            .policy
            .snapshot()
            .check_result(&self.request(call, None), result);
        let rec = Record::for_call(&self.principal, call, self.session.as_deref());
        match decision {
            ResultDecision::Allow => None,
            ResultDecision::Replace { result, by } => {
                rec.decided("replace_result", &by, "")
                    .took(t.elapsed())
                    .emit();
                self.court.metrics.record_decision(
                    &call.method,
                    call.target_name(),
                    "replace_result",
                );
                let id = call.id.as_ref().map_or("null", |i| i.get());
                Some(Bytes::from(format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{}}}"#,
                    result.get()
                )))
            }
            ResultDecision::Deny(d) => {
                rec.decided("deny_result", &d.by, &d.reason)
                    .took(t.elapsed())
                    .emit();
                self.court
                    .metrics
                    .record_decision(&call.method, call.target_name(), "deny_result");
                self.court.metrics.denied(&d.by);
                Some(
                    Refusal::from(Cause::ResultDenied(d))
                        .with_id(call.id.clone())
                        .to_message(),
                )
            }
        }
    }

    /// Reads an upstream answer strictly and removes from every list in it
    /// what the principal may not see, learning tool annotations on the
    /// way. Returns what the answer is and the bytes to send instead
    /// (`None`: the original). An answer that cannot be read with
    /// certainty is refused, never relayed raw.
    pub fn judge_answer(&self, msg: &[u8]) -> Result<(Answer, Option<Bytes>), Refusal> {
        let policy = self.court.policy.snapshot();
        let depth = self.court.max_json_depth;
        let filtered = lists::filter_answer(msg, depth, |kind, items| {
            if kind == lists::ListKind::Tools {
                for item in items {
                    // A tool listed without annotations has none now: hints
                    // from an older list must not outlive it (a stale
                    // `readOnlyHint` would let a call be sent again).
                    match item.annotations {
                        Some(a) => self.court.catalog.record(item.name, a),
                        None => self.court.catalog.forget(item.name),
                    }
                    self.court
                        .catalog
                        .record_params(item.name, item.input_schema);
                }
            }
            let mut verdicts = policy.visible(&self.principal, kind, items);
            // One rule set for calls and lists: an item whose use needs
            // scopes the token lacks is not shown either.
            if let Some(auth) = self.court.auth.get() {
                let token = self.principal.token();
                for (shown, item) in verdicts.iter_mut().zip(items) {
                    *shown = *shown && auth.may_use(token, kind.call_method(), item.name);
                }
            }
            let shown = verdicts.iter().take(items.len()).filter(|v| **v).count();
            self.court.metrics.hidden(kind.key(), items.len() - shown);
            verdicts
        })
        .map_err(|e| Refusal::from(Cause::UnreadableAnswer(e.to_string())))?;
        if filtered.removed > 0 {
            tracing::debug!(removed = filtered.removed, "filtered list response");
        }
        Ok((filtered.answer, filtered.rewritten))
    }
}

#[cfg(test)]
mod tests;
