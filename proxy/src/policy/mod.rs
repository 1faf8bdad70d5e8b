//! The decision point. Every message is checked by a [`Policy`] before it is
//! forwarded, every `tools/call` result on its way back, and every list is
//! filtered by the same policy. The static rule set lives here; the WASM
//! filter chain (`crate::filter`) implements the same trait.

pub(crate) mod glob;
mod handle;
mod rules;

use serde_json::value::RawValue;

pub use self::{
    handle::{PolicyHandle, Snapshot},
    rules::{Action, Rule, StaticRules},
};
use crate::{
    identity::Principal,
    mcp::{
        lists::{ListItem, ListKind},
        Call,
    },
};

/// Whether a rule or filter decides (`enforce`, the default) or only
/// reports what it would have decided (`shadow`): how a stricter policy is
/// rolled out without breaking agents.
#[derive(Debug, Clone, Copy, serde::Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Shadow => "shadow",
        }
    }
}

/// What a policy is asked about: one message and its context.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub principal: &'a Principal,
    pub call: &'a Call,
    /// The client-facing MCP session id (2025 eras), if any. The session
    /// phase decides what it is; the codec never sees it.
    pub session: Option<&'a str>,
    /// The request's MCP headers (`mcp-*`), lower case.
    pub headers: &'a crate::mcp::headers::McpHeaders,
    /// The tool's annotations from the last `tools/list`, as JSON.
    pub annotations: Option<&'a str>,
    /// This sidecar's instance identity.
    pub instance: &'a str,
    /// For a task call (`tasks/get`...), the tool whose `tools/call`
    /// created the task: a task is judged as a call of its tool too.
    pub task_tool: Option<&'a str>,
}

/// Why a message was refused, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The rule or filter that decided, e.g. `static:no-destructive` or
    /// `filter:tool-rbac`.
    pub by: String,
    pub reason: String,
    /// A JSON-RPC code chosen by a filter; `None` means `-32051`.
    pub code: Option<i64>,
}

impl Denial {
    pub fn new(by: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            by: by.into(),
            reason: reason.into(),
            code: None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Decision {
    Allow,
    Deny(Denial),
    /// Forward the message with `params.arguments` replaced.
    Rewrite {
        arguments: Box<RawValue>,
        by: String,
    },
}

impl Decision {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny(_) => "deny",
            Self::Rewrite { .. } => "rewrite",
        }
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow)
    }
}

#[derive(Debug, Clone)]
pub enum ResultDecision {
    Allow,
    /// Send this `result` instead of the server's.
    Replace {
        result: Box<RawValue>,
        by: String,
    },
    Deny(Denial),
}

/// A policy decides on calls, results and list visibility. Implementations
/// must fail closed: if they cannot decide, they deny.
pub trait Policy: Send + Sync + 'static {
    /// Decides whether one message may reach the upstream.
    fn check(&self, req: &Request<'_>) -> Decision;

    /// Decides on the `result` of an allowed `tools/call`.
    fn check_result(&self, _req: &Request<'_>, _result: &RawValue) -> ResultDecision {
        ResultDecision::Allow
    }

    /// Returns, for each item, whether `principal` may see it. A missing
    /// verdict counts as hidden.
    fn visible(&self, principal: &Principal, kind: ListKind, items: &[ListItem<'_>]) -> Vec<bool>;

    /// Whether any result hook is active, so the proxy can skip result
    /// inspection when none is.
    fn inspects_results(&self) -> bool {
        false
    }
}
