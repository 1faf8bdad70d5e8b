//! One structured audit record per policy decision, on the
//! `portcullis::audit` tracing target so it can be routed on its own.

use std::time::Duration;

use crate::{identity::Caller, mcp::Call, policy::Decision};

pub fn record(caller: &Caller, call: &Call, decision: &Decision, took: Duration) {
    let latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let tool = call.target_name().unwrap_or("");
    let session = call.session.as_deref().unwrap_or("");
    let id = call.id.as_ref().map(|i| i.get()).unwrap_or("");
    match decision {
        Decision::Allow => tracing::info!(
            target: "portcullis::audit",
            caller = %caller,
            method = %call.method,
            tool,
            id,
            era = call.era.label(),
            session,
            decision = "allow",
            latency_us,
        ),
        Decision::Rewrite { by, .. } => tracing::info!(
            target: "portcullis::audit",
            caller = %caller,
            method = %call.method,
            tool,
            id,
            era = call.era.label(),
            session,
            decision = "rewrite",
            by = %by,
            latency_us,
        ),
        Decision::Deny(d) => tracing::warn!(
            target: "portcullis::audit",
            caller = %caller,
            method = %call.method,
            tool,
            id,
            era = call.era.label(),
            session,
            decision = "deny",
            by = %d.by,
            reason = %d.reason,
            latency_us,
        ),
    }
}
