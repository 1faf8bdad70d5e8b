//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), for code the
//! crate keeps private. Not an API: hidden from the docs, may change with
//! any commit. Each function only forwards to the code the proxy runs.

// A fuzz target reports a bug by panicking: asserts and `expect` are how
// it speaks, here and only here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod envelope;
pub mod targets;

use crate::filter::{bindings::types, chain};
use crate::mcp::Era;

/// Every era a message can be read in, picked by one byte.
pub fn era(pick: u8) -> Era {
    match pick % 5 {
        0 => Era::HttpSse2024,
        1 => Era::Streamable2025("2025-03-26".into()),
        2 => Era::Streamable2025("2025-06-18".into()),
        3 => Era::Streamable2025("2025-11-25".into()),
        _ => Era::Sessionless2026,
    }
}

/// The depth bound the proxy uses by default.
pub const MAX_DEPTH: usize = 64;

/// The legacy (2024-11-05) `endpoint` event rewrite: the URI the client is
/// told, or why the upstream's endpoint was refused.
pub fn rewrite_endpoint(data: &str) -> Result<String, String> {
    crate::service::legacy::rewrite_endpoint(data)
}

/// A guest's answer to `on-request`, as the fuzzer builds it (the WIT
/// types are private to the filter host).
#[derive(Debug, Clone)]
pub enum GuestDecision {
    Allow,
    Deny { code: i32, message: String },
    Rewrite(String),
}

/// What the host made of a guest's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Allow,
    Deny {
        reason: String,
        code: Option<i64>,
    },
    /// Rewritten arguments, as the next filter will see them.
    Rewrite(String),
}

/// Decodes a guest's `on-request` answer as the filter chain does; `Err`
/// is the fault the chain would raise (and deny on, failing closed).
pub fn decode_request(d: GuestDecision, max_depth: usize) -> Result<Decoded, String> {
    let wit = match d {
        GuestDecision::Allow => types::Decision::Allow,
        GuestDecision::Deny { code, message } => {
            types::Decision::Deny(types::Denial { code, message })
        }
        GuestDecision::Rewrite(text) => types::Decision::RewriteArguments(text),
    };
    match chain::decode_request(wit, max_depth).map_err(|f| f.to_string())? {
        chain::Step::Allow => Ok(Decoded::Allow),
        chain::Step::Deny(d) => Ok(Decoded::Deny {
            code: chain::denial_code(d.code),
            reason: d.message,
        }),
        chain::Step::Rewrite(raw) => Ok(Decoded::Rewrite(raw.get().to_string())),
    }
}

/// A guest's `on-result` replacement, checked as the chain checks it.
pub fn decode_replace(text: &str, max_depth: usize) -> Result<String, String> {
    chain::accept_json(text, max_depth, false)
        .map(|raw| raw.get().to_string())
        .map_err(|f| f.to_string())
}

/// Folds a guest's `on-list` verdicts into `shown`, as the chain does.
pub fn merge_verdicts(shown: &mut [bool], verdicts: &[bool]) {
    chain::merge_verdicts(shown, verdicts);
}
