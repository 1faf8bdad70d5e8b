//! One client exchange as the relay sees it: who asked, under which policy
//! snapshot, and which requests still wait for their answer. Every message
//! coming back passes through [`Exchange::process`], whatever stream it
//! arrives on.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Shared;
use crate::{
    identity::Caller,
    mcp::{lists, Call, ErrorCode, RpcError},
    policy::{Request, ResultDecision, Snapshot},
};

/// Calls whose results a policy wants to see, by canonical id. Shared with
/// the legacy stream, where the answers to POSTs arrive.
pub type PendingCalls = Arc<Mutex<HashMap<String, Call>>>;

pub struct Exchange {
    pub shared: Arc<Shared>,
    pub caller: Caller,
    pub policy: Snapshot,
    pub headers: Vec<(String, String)>,
    /// Requests of this POST still waiting for an answer.
    pub waiting: HashMap<String, Option<Call>>,
    /// Legacy streams: calls POSTed elsewhere whose answers come here.
    pub legacy_calls: Option<PendingCalls>,
}

/// A JSON-RPC id in a canonical text form, so that `1` and ` 1 ` from two
/// different serializers compare equal.
pub fn canonical_id(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| raw.to_string())
}

#[derive(Deserialize)]
struct ResponseProbe<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

impl Exchange {
    pub fn new(shared: Arc<Shared>, caller: Caller, policy: Snapshot) -> Self {
        Self {
            shared,
            caller,
            policy,
            headers: Vec::new(),
            waiting: HashMap::new(),
            legacy_calls: None,
        }
    }

    /// Expects an answer to the request `call` (its result is inspected
    /// if the policy wants results).
    pub fn track(&mut self, call: &Call) {
        let Some(id) = &call.id else { return };
        let keep = call.method == "tools/call" && self.policy.inspects_results();
        self.waiting
            .insert(canonical_id(id.get()), keep.then(|| call.clone()));
    }

    /// Ids still without an answer, as JSON text.
    pub fn unanswered(&self) -> Vec<Bytes> {
        self.waiting
            .keys()
            .map(|id| Bytes::from(id.clone()))
            .collect()
    }

    /// Applies the policy to one message from the upstream. Returns the
    /// bytes to send instead, or `None` to send the original.
    pub fn process(&mut self, msg: &[u8]) -> Option<Bytes> {
        let probe: ResponseProbe<'_> = serde_json::from_slice(msg).ok()?;
        if probe.result.is_none() && probe.error.is_none() {
            return None;
        }
        if let Some(id) = probe.id.map(|id| canonical_id(id.get())) {
            let call = match self.waiting.remove(&id) {
                Some(call) => call,
                None => self.legacy_call(&id),
            };
            if let (Some(call), Some(result)) = (call, probe.result) {
                return self.check_result(&call, result);
            }
        }
        self.filter_lists(msg)
    }

    fn legacy_call(&self, id: &str) -> Option<Call> {
        self.legacy_calls.as_ref()?.lock().ok()?.remove(id)
    }

    fn check_result(&self, call: &Call, result: &RawValue) -> Option<Bytes> {
        let req = Request {
            caller: &self.caller,
            call,
            headers: &self.headers,
            annotations: None,
            instance: &self.shared.instance,
        };
        match self.policy.check_result(&req, result) {
            ResultDecision::Allow => None,
            ResultDecision::Replace { result, by } => {
                tracing::info!(target: "portcullis::audit", caller = %self.caller, tool = call.target_name().unwrap_or(""), by = %by, decision = "replace_result");
                let id = call.id.as_ref().map_or("null", |i| i.get());
                Some(Bytes::from(format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{}}}"#,
                    result.get()
                )))
            }
            ResultDecision::Deny(d) => {
                tracing::warn!(target: "portcullis::audit", caller = %self.caller, tool = call.target_name().unwrap_or(""), by = %d.by, reason = %d.reason, decision = "deny_result");
                self.shared.metrics.record_decision(
                    "tools/call",
                    call.target_name(),
                    "deny_result",
                );
                Some(
                    RpcError::new(
                        ErrorCode::PolicyDenied,
                        format!("result denied by {}: {}", d.by, d.reason),
                    )
                    .with_code_override(d.code)
                    .with_id(call.id.clone())
                    .to_bytes(),
                )
            }
        }
    }

    fn filter_lists(&self, msg: &[u8]) -> Option<Bytes> {
        let (out, removed) = lists::filter_message(msg, |kind, items| {
            if kind == lists::ListKind::Tools {
                for item in items {
                    if let Some(a) = item.annotations {
                        self.shared.catalog.record(item.name, a);
                    }
                }
            }
            let verdicts = self.policy.visible(&self.caller, kind, items);
            let shown = verdicts.iter().take(items.len()).filter(|v| **v).count();
            self.shared.metrics.hidden(kind.key(), items.len() - shown);
            verdicts
        })?;
        tracing::debug!(removed, "filtered list response");
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ids() {
        assert_eq!(canonical_id(" 1 "), "1");
        assert_eq!(canonical_id(" \"x\" "), "\"x\"");
    }
}
