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
    /// The items of `list` that must stay visible, in order; checked
    /// when given.
    #[serde(default)]
    pub expect_visible: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFixture {
    pub kind: String,
    pub items: Vec<String>,
}

/// What `policy test` runs the fixtures against: a filter, static rules,
/// or both (the rules first, as in the sidecar).
#[derive(Debug, Clone)]
pub struct Setup<'a> {
    pub filter: Option<&'a Path>,
    /// The filter's configuration (JSON text).
    pub config: &'a str,
    pub rules: StaticRules,
    pub timeout: Duration,
    /// The filter's memory limit; components of interpreted languages
    /// need more than the default.
    pub memory: usize,
    /// Where compiled filters are kept between runs (as the sidecar's
    /// `filter_engine.cache_dir`): a Python or JavaScript component takes
    /// seconds to compile.
    pub cache_dir: Option<PathBuf>,
    /// Reuse decisions of a filter that declares what it decides on, as
    /// the sidecar does by default. `--repeat` turns it off, so that its
    /// figure is the filter's evaluation, not a lookup.
    pub reuse_decisions: bool,
}

/// Loads the filter alone in a chain, as the sidecar would.
pub fn load(setup: &Setup<'_>) -> Result<FilterChain, PolicyTestError> {
    let mut filters = Vec::new();
    if let Some(filter) = setup.filter {
        let engine = Arc::new(FilterEngine::new(&EngineOptions {
            cache_dir: setup.cache_dir.clone(),
            // A componentize-py filter links 38 core instances (CPython,
            // libc, its WASI stubs...); the pool allows 8 per instance.
            max_instances: 16,
            max_memory: setup.memory,
        })?);
        let limits = Limits {
            timeout: setup.timeout,
            memory: setup.memory,
            max_output: 1 << 20,
            isolation: Isolation::default(),
        };
        let hooks = vec![Hook::Request, Hook::Result, Hook::List];
        let name = filter
            .file_stem()
            .map_or("filter".into(), |s| s.to_string_lossy().into_owned());
        filters.push(Arc::new(
            WasmFilter::load(
                &engine,
                &name,
                filter,
                setup.config.to_string(),
                limits,
                OnError::Deny,
                hooks,
            )?
            .with_decision_reuse(setup.reuse_decisions),
        ));
    }
    Ok(FilterChain::new(
        setup.rules.clone(),
        filters,
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
            expect_visible: None,
        });
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

/// One fixture, parsed once, so that timing it times the policy alone.
struct Prepared {
    fixture: Fixture,
    call: crate::mcp::Call,
    principal: Principal,
    annotations: Option<String>,
    result: Option<Box<RawValue>>,
}

impl Prepared {
    fn new(fixture: Fixture) -> Result<Self, String> {
        let bytes = fixture.message.to_string();
        let era = Era::from_version(Some("2025-11-25"));
        let call = match parse_body(bytes.as_bytes(), 64, &era).map_err(|e| e.to_string())? {
            Body::Single(c) => c,
            Body::Batch(_) => return Err("batches are not supported in fixtures".into()),
        };
        let peer = match fixture.caller.as_deref() {
            None => Peer::Anonymous,
            Some(id) => {
                Peer::Spiffe(SpiffeId::parse(id).map_err(|e| format!("caller {id:?}: {e}"))?)
            }
        };
        let annotations = fixture.annotations.as_ref().map(Value::to_string);
        let result = match &fixture.result {
            Some(r) => Some(RawValue::from_string(r.to_string()).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Self {
            fixture,
            call,
            principal: Principal::from_peer(peer),
            annotations,
            result,
        })
    }

    fn request(&self) -> Request<'_> {
        Request {
            principal: &self.principal,
            call: &self.call,
            session: None,
            headers: crate::mcp::headers::McpHeaders::none(),
            annotations: self.annotations.as_deref(),
            instance: "policy-test",
            task_tool: None,
        }
    }
}

/// What the chain decided for one fixture.
struct Outcome {
    /// Starts with the call's label (`allow`, `deny`, `rewrite`).
    line: String,
    visible: Option<Vec<String>>,
}

/// Runs one fixture file; returns the report line and whether it passed.
/// With `repeat`, the fixture is then evaluated that many more times and
/// the line ends with the mean time of one evaluation (warm).
pub fn run(
    chain: &FilterChain,
    path: &Path,
    repeat: u32,
) -> Result<(String, bool), PolicyTestError> {
    let bad = |reason: String| PolicyTestError::Fixture {
        path: path.display().to_string(),
        reason,
    };
    let fx = Prepared::new(read_fixture(path)?).map_err(bad)?;
    let out = decide(chain, &fx).map_err(bad)?;
    let label = out.line.split([' ', ';']).next().unwrap_or_default();
    let expect = &fx.fixture.expect;
    let call_ok = expect.as_deref().is_none_or(|e| e == label);
    let list_ok = match (&fx.fixture.expect_visible, &out.visible) {
        (None, _) => true,
        (Some(want), Some(got)) => want == got,
        (Some(_), None) => false,
    };
    let passed = call_ok && list_ok;
    let checked = expect.is_some() || fx.fixture.expect_visible.is_some();
    let verdict = match (checked, passed) {
        (false, _) => "    ",
        (true, true) => "PASS",
        (true, false) => "FAIL",
    };
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut line = format!("{verdict} {name}: {}", out.line);
    if let (Some(e), false) = (expect, call_ok) {
        line.push_str(&format!(" (expected {e})"));
    }
    if let (Some(want), false) = (&fx.fixture.expect_visible, list_ok) {
        line.push_str(&format!(" (expected visible: {want:?})"));
    }
    if repeat > 0 {
        let start = std::time::Instant::now();
        for _ in 0..repeat {
            std::hint::black_box(decide(chain, &fx).map_err(bad)?);
        }
        let each = start.elapsed().as_secs_f64() * 1e6 / f64::from(repeat);
        line.push_str(&format!(" [{each:.2} us/eval]"));
    }
    Ok((line, passed))
}

/// What the chain decides for one fixture: the call, then its result and
/// list if the fixture has them.
fn decide(chain: &FilterChain, fx: &Prepared) -> Result<Outcome, String> {
    let req = fx.request();
    let mut line = match chain.check(&req) {
        Decision::Allow => "allow".to_string(),
        Decision::Deny(d) => format!("deny by {}: {}", d.by, d.reason),
        Decision::Rewrite { arguments, by } => {
            format!("rewrite by {by}: arguments {}", arguments.get())
        }
    };
    if let Some(raw) = &fx.result {
        line.push_str(&match chain.check_result(&req, raw) {
            ResultDecision::Allow => "; result: allow".to_string(),
            ResultDecision::Replace { result, by } => {
                format!("; result replaced by {by}: {}", result.get())
            }
            ResultDecision::Deny(d) => format!("; result denied by {}: {}", d.by, d.reason),
        });
    }
    let mut shown = None;
    if let Some(list) = &fx.fixture.list {
        let v = visible(chain, &fx.principal, list)?;
        line.push_str(&format!("; visible: {v:?}"));
        shown = Some(v);
    }
    Ok(Outcome {
        line,
        visible: shown,
    })
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

/// What replaying an audit log against a candidate found.
#[derive(Debug, Default)]
pub struct Replay {
    /// One line per record whose decision would change.
    pub changes: Vec<String>,
    pub replayed: usize,
    /// Allowed (or rewritten) then, denied by the candidate.
    pub newly_denied: usize,
    /// Denied then (by whatever denied it), allowed by the candidate.
    pub newly_allowed: usize,
    /// Lines that were no audit record of a call (other logs, results,
    /// shadow records).
    pub skipped: usize,
}

/// Replays the call records of an audit log (the sidecar's JSON log
/// lines, `--log-format json`) against `chain` and reports every decision
/// that would change. Audit records carry the caller's SPIFFE ID, the
/// method and the target, not arguments or tokens: a candidate sees each
/// call with no arguments and the agent alone.
pub fn replay(chain: &FilterChain, path: &Path) -> Result<Replay, PolicyTestError> {
    let bad = |reason: String| PolicyTestError::Fixture {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut out = Replay::default();
    for (n, line) in text.lines().enumerate() {
        let Some(record) = audit_record(line) else {
            out.skipped += 1;
            continue;
        };
        let fixture = Fixture {
            message: record.message(n),
            caller: record.caller.clone(),
            annotations: None,
            result: None,
            list: None,
            expect: None,
            expect_visible: None,
        };
        let prepared = Prepared::new(fixture).map_err(|e| bad(format!("line {}: {e}", n + 1)))?;
        let now = decide(chain, &prepared).map_err(|e| bad(format!("line {}: {e}", n + 1)))?;
        let label = now.line.split([' ', ';']).next().unwrap_or_default();
        out.replayed += 1;
        let was_denied = record.decision == "deny";
        let is_denied = label == "deny";
        if was_denied == is_denied {
            continue;
        }
        let who = record.caller.as_deref().unwrap_or("anonymous");
        let change = if is_denied {
            out.newly_denied += 1;
            format!(
                "NOW DENIED  line {}: {who} {} {}: {}",
                n + 1,
                record.method,
                record.tool,
                now.line
            )
        } else {
            out.newly_allowed += 1;
            format!(
                "NOW ALLOWED line {}: {who} {} {} (was denied by {})",
                n + 1,
                record.method,
                record.tool,
                record.by
            )
        };
        out.changes.push(change);
    }
    Ok(out)
}

/// The fields of one audit record of a call.
struct AuditRecord {
    caller: Option<String>,
    method: String,
    tool: String,
    decision: String,
    by: String,
}

impl AuditRecord {
    /// The call as a JSON-RPC message: the target where the method has
    /// one, no arguments.
    fn message(&self, n: usize) -> Value {
        let params = match self.method.as_str() {
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                serde_json::json!({ "uri": self.tool })
            }
            _ if self.tool.is_empty() => serde_json::json!({}),
            _ => serde_json::json!({ "name": self.tool }),
        };
        serde_json::json!({"jsonrpc": "2.0", "id": n, "method": self.method, "params": params})
    }
}

/// A JSON log line that is an audit record of a request decision
/// (`allow`, `rewrite` or `deny`); `None` for anything else.
fn audit_record(line: &str) -> Option<AuditRecord> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v.get("target")?.as_str()? != "portcullis::audit" {
        return None;
    }
    // tracing-subscriber's JSON puts an event's fields under `fields`.
    let f = v.get("fields").unwrap_or(&v);
    let text = |k: &str| {
        f.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let decision = text("decision");
    if !matches!(decision.as_str(), "allow" | "rewrite" | "deny") {
        return None;
    }
    // The principal's key: the agent, then ` token:...` for a user.
    let key = text("caller");
    let agent = key.split(' ').next().unwrap_or_default();
    let caller = (agent != "anonymous" && !agent.is_empty()).then(|| agent.to_string());
    Some(AuditRecord {
        caller,
        method: text("method"),
        tool: text("tool"),
        decision,
        by: text("by"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_lines_become_calls() {
        let line = r#"{"timestamp":"t","level":"WARN","fields":{"caller":"spiffe://d/ns/a/sa/b token:corp#alice","method":"tools/call","tool":"delete_file","decision":"deny","by":"filter:x","reason":"no"},"target":"portcullis::audit"}"#;
        let r = audit_record(line).expect("an audit record");
        assert_eq!(r.caller.as_deref(), Some("spiffe://d/ns/a/sa/b"));
        assert_eq!(r.message(3)["params"]["name"], "delete_file");
        assert_eq!(r.decision, "deny");
        let shadow = line.replace(r#""decision":"deny""#, r#""decision":"shadow_deny""#);
        assert!(audit_record(&shadow).is_none());
        let other = line.replace("portcullis::audit", "portcullis::service");
        assert!(audit_record(&other).is_none());
        assert!(audit_record("not json").is_none());
        let anon = r#"{"fields":{"caller":"anonymous","method":"resources/read","tool":"file:///x","decision":"allow"},"target":"portcullis::audit"}"#;
        let r = audit_record(anon).expect("an audit record");
        assert_eq!(r.caller, None);
        assert_eq!(r.message(1)["params"]["uri"], "file:///x");
    }
}
