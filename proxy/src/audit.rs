//! One structured audit record per policy decision, on the
//! `portcullis::audit` tracing target so it can be routed on its own.
//!
//! Every decision (a call, a result, and later a replayed message) is
//! written through [`Record::emit`], so a field added here reaches every
//! record and none can be forgotten at one call site.

use std::time::Duration;

use crate::{identity::Principal, mcp::Call};

/// What one audit record says.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub principal: &'a Principal,
    pub method: &'a str,
    /// The tool or prompt name, or resource URI; empty when none.
    pub target: &'a str,
    /// The JSON-RPC id as JSON text; empty when none.
    pub id: &'a str,
    pub era: &'a str,
    pub session: &'a str,
    /// `allow`, `rewrite`, `deny`, `replace_result` or `deny_result`.
    pub decision: &'static str,
    /// The rule or filter that decided; empty for a plain allow.
    pub by: &'a str,
    pub reason: &'a str,
    pub latency_us: u64,
}

impl<'a> Record<'a> {
    /// A record about `call`, with the decision still to be filled in.
    pub fn for_call(principal: &'a Principal, call: &'a Call, session: Option<&'a str>) -> Self {
        Self {
            principal,
            method: &call.method,
            target: call.target_name().unwrap_or(""),
            id: call.id.as_ref().map_or("", |i| i.get()),
            era: call.era.label(),
            session: session.unwrap_or(""),
            decision: "allow",
            by: "",
            reason: "",
            latency_us: 0,
        }
    }

    pub fn decided(mut self, decision: &'static str, by: &'a str, reason: &'a str) -> Self {
        self.decision = decision;
        self.by = by;
        self.reason = reason;
        self
    }

    pub fn took(mut self, took: Duration) -> Self {
        self.latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self
    }

    /// Denials are warnings, so that a log level of `warn` still keeps
    /// every refusal.
    pub fn emit(&self) {
        if self.decision.starts_with("deny") {
            tracing::warn!(
                target: "portcullis::audit",
                caller = %self.principal,
                method = %self.method,
                tool = self.target,
                id = self.id,
                era = self.era,
                session = self.session,
                decision = self.decision,
                by = self.by,
                reason = self.reason,
                latency_us = self.latency_us,
            );
        } else {
            tracing::info!(
                target: "portcullis::audit",
                caller = %self.principal,
                method = %self.method,
                tool = self.target,
                id = self.id,
                era = self.era,
                session = self.session,
                decision = self.decision,
                by = self.by,
                reason = self.reason,
                latency_us = self.latency_us,
            );
        }
    }
}
