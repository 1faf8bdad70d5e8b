//! `portcullis policy test`: runs one filter, in the real host, against
//! recorded calls, and prints its decisions. For policy authors and CI.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;
use serde_json::{value::RawValue, Value};

use crate::{
    filter::{
        EngineOptions, FilterChain, FilterEngine, FilterError, Hook, Isolation, Limits, OnError,
        WasmFilter,
    },
    identity::{Peer, Principal, SpiffeId},
    mcp::{
        lists::{ListItem, ListKind},
        parse_body, Body, Era,
    },
    metrics::Metrics,
    policy::{Decision, Policy, Request, ResultDecision, StaticRules},
};

#[derive(Debug, thiserror::Error)]
pub enum PolicyTestError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("{path}: {reason}")]
    Fixture { path: String, reason: String },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// One recorded call. A bare JSON-RPC message is accepted too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// The JSON-RPC message, as the client sent it.
    pub message: Value,
    /// The caller's SPIFFE ID; absent means anonymous.
    #[serde(default)]
    pub caller: Option<String>,
    /// A tool's annotations, as `tools/list` gave them.
    #[serde(default)]
    pub annotations: Option<Value>,
    /// A `result` to run the result hook on.
    #[serde(default)]
    pub result: Option<Value>,
    /// Items of a list to run the list hook on.
    #[serde(default)]
    pub list: Option<ListFixture>,
    /// `allow`, `deny` or `rewrite`; checked when given.
    #[serde(default)]
    pub expect: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFixture {
    pub kind: String,
    pub items: Vec<String>,
}

/// Loads the filter alone in a chain, as the sidecar would.
pub fn load(
    filter: &Path,
    config: &str,
    timeout: Duration,
) -> Result<FilterChain, PolicyTestError> {
    let engine = Arc::new(FilterEngine::new(&EngineOptions {
        cache_dir: None,
        max_instances: 4,
        max_memory: 32 << 20,
    })?);
    let limits = Limits {
        timeout,
        memory: 32 << 20,
        max_output: 1 << 20,
        isolation: Isolation::default(),
    };
    let hooks = vec![Hook::Request, Hook::Result, Hook::List];
    let name = filter
        .file_stem()
        .map_or("filter".into(), |s| s.to_string_lossy().into_owned());
    let wasm = WasmFilter::load(
        &engine,
        &name,
        filter,
        config.to_string(),
        limits,
        OnError::Deny,
        hooks,
    )?;
    Ok(FilterChain::new(
        StaticRules::default(),
        vec![Arc::new(wasm)],
        Metrics::new()?.filter,
        64,
    ))
}

/// The fixture files to run: one file, or every `.json` in a directory.
pub fn fixture_files(path: &Path) -> Result<Vec<PathBuf>, PolicyTestError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let err = |e: std::io::Error| PolicyTestError::Fixture {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

fn read_fixture(path: &Path) -> Result<Fixture, PolicyTestError> {
    let bad = |reason: String| PolicyTestError::Fixture {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if value.get("jsonrpc").is_some() {
        return Ok(Fixture {
            message: value,
            caller: None,
            annotations: None,
            result: None,
            list: None,
            expect: None,
        });
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

/// Runs one fixture file; returns the report line and whether it passed.
pub fn run(chain: &FilterChain, path: &Path) -> Result<(String, bool), PolicyTestError> {
    let fx = read_fixture(path)?;
    let bad = |reason: String| PolicyTestError::Fixture {
        path: path.display().to_string(),
        reason,
    };
    let line = decide(chain, &fx).map_err(bad)?;
    let label = line.split([' ', ';']).next().unwrap_or_default();
    let passed = fx.expect.as_deref().is_none_or(|e| e == label);
    let verdict = match (&fx.expect, passed) {
        (None, _) => "    ",
        (Some(_), true) => "PASS",
        (Some(_), false) => "FAIL",
    };
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let expected = fx
        .expect
        .map(|e| format!(" (expected {e})"))
        .unwrap_or_default();
    Ok((format!("{verdict} {name}: {line}{expected}"), passed))
}

/// What the chain decides for one fixture: the call, then its result and
/// list if the fixture has them. The line starts with the call's label.
fn decide(chain: &FilterChain, fx: &Fixture) -> Result<String, String> {
    let bytes = fx.message.to_string();
    let era = Era::from_version(Some("2025-11-25"));
    let call = match parse_body(bytes.as_bytes(), 64, &era).map_err(|e| e.to_string())? {
        Body::Single(c) => c,
        Body::Batch(_) => return Err("batches are not supported in fixtures".into()),
    };
    let peer = match fx.caller.as_deref() {
        None => Peer::Anonymous,
        Some(id) => Peer::Spiffe(SpiffeId::parse(id).map_err(|e| format!("caller {id:?}: {e}"))?),
    };
    let principal = Principal::from_peer(peer);
    let annotations = fx.annotations.as_ref().map(Value::to_string);
    let req = Request {
        principal: &principal,
        call: &call,
        session: None,
        headers: &[],
        annotations: annotations.as_deref(),
        instance: "policy-test",
        task_tool: None,
    };
    let mut line = match chain.check(&req) {
        Decision::Allow => "allow".to_string(),
        Decision::Deny(d) => format!("deny by {}: {}", d.by, d.reason),
        Decision::Rewrite { arguments, by } => {
            format!("rewrite by {by}: arguments {}", arguments.get())
        }
    };
    if let Some(result) = &fx.result {
        let raw = RawValue::from_string(result.to_string()).map_err(|e| e.to_string())?;
        line.push_str(&match chain.check_result(&req, &raw) {
            ResultDecision::Allow => "; result: allow".to_string(),
            ResultDecision::Replace { result, by } => {
                format!("; result replaced by {by}: {}", result.get())
            }
            ResultDecision::Deny(d) => format!("; result denied by {}: {}", d.by, d.reason),
        });
    }
    if let Some(list) = &fx.list {
        line.push_str(&format!(
            "; visible: {:?}",
            visible(chain, &principal, list)?
        ));
    }
    Ok(line)
}

fn visible(
    chain: &FilterChain,
    principal: &Principal,
    list: &ListFixture,
) -> Result<Vec<String>, String> {
    let kind = match list.kind.as_str() {
        "tools" => ListKind::Tools,
        "prompts" => ListKind::Prompts,
        "resources" => ListKind::Resources,
        other => return Err(format!("unknown list kind {other:?}")),
    };
    let items: Vec<ListItem<'_>> = list
        .items
        .iter()
        .map(|n| ListItem {
            name: n,
            annotations: None,
            input_schema: None,
        })
        .collect();
    let shown = chain.visible(principal, kind, &items);
    Ok(list
        .items
        .iter()
        .zip(shown)
        .filter(|(_, v)| *v)
        .map(|(n, _)| n.clone())
        .collect())
}
