//! What filters see of the principal (issue 11): a filter built against
//! `portcullis:policy@0.2.0` sees the agent and the user together, and can
//! require both; a filter built against 0.1 still loads and sees the
//! documented mapping (policy-sdk/WIT-0.2.md); a component built against
//! neither is refused at load with a clear error.

#[path = "support/wasm.rs"]
mod wasm;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use portcullis::{
    filter::{
        EngineOptions, FilterChain, FilterEngine, FilterError, Hook, Isolation, Limits, OnError,
        WasmFilter,
    },
    identity::{Peer, Principal, SpiffeId, Token, TokenKind},
    mcp::{lists::ListItem, lists::ListKind, parse_body, Body, Call, Era},
    metrics::Metrics,
    policy::{Decision, Policy, Request, StaticRules},
};
use serde_json::{json, Value};

const PLANNER: &str = "spiffe://demo.local/ns/agents/sa/planner";
const INTERN: &str = "spiffe://demo.local/ns/agents/sa/intern";

fn engine() -> Arc<FilterEngine> {
    Arc::new(
        FilterEngine::new(&EngineOptions {
            cache_dir: None,
            max_instances: 32,
            max_memory: 32 << 20,
        })
        .unwrap(),
    )
}

fn load(
    engine: &Arc<FilterEngine>,
    crate_name: &str,
    config: Value,
) -> Result<WasmFilter, FilterError> {
    WasmFilter::load(
        engine,
        crate_name,
        &wasm::filter(crate_name),
        config.to_string(),
        Limits {
            timeout: Duration::from_secs(2),
            memory: 32 << 20,
            max_output: 1 << 20,
            isolation: Isolation::Caller,
        },
        OnError::Deny,
        vec![Hook::Request, Hook::List],
    )
}

fn chain(filter: WasmFilter) -> FilterChain {
    FilterChain::new(
        StaticRules::default(),
        vec![Arc::new(filter)],
        Metrics::new().unwrap().filter,
        64,
    )
}

fn principal(peer: Option<&str>, token: Option<(&str, &str)>) -> Principal {
    let peer = peer.map_or(Peer::Anonymous, |id| {
        Peer::Spiffe(SpiffeId::parse(id).unwrap())
    });
    let token = token.map(|(sub, scope)| {
        Arc::new(Token {
            kind: TokenKind::AccessToken,
            issuer: "idp".into(),
            subject: sub.into(),
            scopes: scope.split(' ').map(str::to_string).collect(),
            actor: None,
            expires_at: SystemTime::now() + Duration::from_secs(300),
            claims: json!({"sub": sub, "scope": scope}).to_string(),
        })
    });
    Principal::new(peer, token)
}

fn tool_call(tool: &str) -> Call {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": {}}});
    match parse_body(
        body.to_string().as_bytes(),
        64,
        &Era::from_version(Some("2025-11-25")),
    ) {
        Ok(Body::Single(c)) => c,
        _ => panic!("not a single call"),
    }
}

/// `allow`, or the denial's reason.
fn check(chain: &FilterChain, who: &Principal, tool: &str) -> String {
    let call = tool_call(tool);
    let req = Request {
        principal: who,
        call: &call,
        session: None,
        headers: portcullis::mcp::headers::McpHeaders::none(),
        annotations: None,
        instance: "test",
        task_tool: None,
    };
    match chain.check(&req) {
        Decision::Deny(d) => d.reason,
        Decision::Allow => "allow".into(),
        other => format!("{other:?}"),
    }
}

fn visible(chain: &FilterChain, who: &Principal, names: &[&'static str]) -> Vec<&'static str> {
    let items: Vec<ListItem<'_>> = names
        .iter()
        .map(|n| ListItem {
            name: n,
            annotations: None,
            input_schema: None,
        })
        .collect();
    let shown = chain.visible(who, ListKind::Tools, &items);
    names
        .iter()
        .zip(shown)
        .filter_map(|(n, s)| s.then_some(*n))
        .collect()
}

/// tool-rbac, built with the SDK against 0.2: "the planner may delete only
/// for users granted files:write".
#[test]
fn a_filter_can_require_the_agent_and_the_user_together() {
    let engine = engine();
    let rbac = load(
        &engine,
        "tool-rbac",
        json!({"default": "deny", "rules": [
            {"name": "planner-for-writers", "effect": "allow",
             "principals": {"spiffe": [PLANNER], "scopes": ["files:write"], "require": "both"},
             "tools": ["delete_*"]},
            {"name": "agents-read", "effect": "allow",
             "principals": {"spiffe": ["spiffe://demo.local/ns/agents/sa/*"]},
             "tools": ["read_*"]}
        ]}),
    )
    .unwrap();
    let c = chain(rbac);
    let writer = Some(("alice", "mcp files:write"));
    let reader = Some(("bob", "mcp files:read"));
    assert_eq!(
        check(&c, &principal(Some(PLANNER), writer), "delete_file"),
        "allow"
    );
    for (who, why) in [
        (
            principal(Some(PLANNER), reader),
            "bob via spiffe://demo.local/ns/agents/sa/planner",
        ),
        (
            principal(Some(INTERN), writer),
            "alice via spiffe://demo.local/ns/agents/sa/intern",
        ),
        (principal(Some(PLANNER), None), PLANNER),
        (principal(None, writer), "alice may not"),
    ] {
        let reason = check(&c, &who, "delete_file");
        assert!(reason.contains(why), "{} got {reason}", who.key());
    }
    let tools = ["delete_file", "read_file"];
    assert_eq!(
        visible(&c, &principal(Some(PLANNER), writer), &tools),
        tools
    );
    assert_eq!(
        visible(&c, &principal(Some(PLANNER), reader), &tools),
        ["read_file"]
    );
    assert!(visible(&c, &principal(None, writer), &tools).is_empty());
}

/// tool-rbac declares that it decides on the principal and the target, so
/// the host reuses its decisions; a reused decision must never serve a
/// principal that differs in anything the filter sees. Here the two differ
/// only in the token's scopes: the same peer, issuer and subject, so the
/// same principal key.
#[test]
fn a_reused_decision_never_serves_another_principal() {
    let engine = engine();
    let rbac = load(
        &engine,
        "tool-rbac",
        json!({"default": "deny", "rules": [
            {"name": "writers", "effect": "allow",
             "principals": {"spiffe": [PLANNER], "scopes": ["files:write"], "require": "both"},
             "tools": ["delete_*"]}
        ]}),
    )
    .unwrap();
    let c = chain(rbac);
    let writer = principal(Some(PLANNER), Some(("alice", "mcp files:write")));
    let reader = principal(Some(PLANNER), Some(("alice", "mcp files:read")));
    assert_eq!(writer.key(), reader.key());
    for _ in 0..3 {
        assert_eq!(check(&c, &writer, "delete_file"), "allow");
        let denied = check(&c, &reader, "delete_file");
        assert!(denied.contains("may not use delete_file"), "{denied}");
    }
    // And the target: the same principal, another tool.
    assert_eq!(check(&c, &writer, "delete_dir"), "allow");
    assert_ne!(check(&c, &writer, "read_file"), "allow");
}

/// A filter built against 0.1 before the bump: it loads, and sees one
/// identity per the mapping: the peer wins, a token alone is its claims.
#[test]
fn a_0_1_filter_still_loads_and_sees_the_documented_mapping() {
    let engine = engine();
    let c = chain(load(&engine, "v0_1-filter", json!({})).unwrap());
    let token = Some(("alice", "mcp"));
    assert_eq!(
        check(&c, &principal(Some(PLANNER), token), "whoami"),
        format!("0.1 saw spiffe({PLANNER})")
    );
    let seen = check(&c, &principal(None, token), "whoami");
    let claims = seen
        .strip_prefix("0.1 saw jwt(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{seen}"));
    assert_eq!(
        serde_json::from_str::<Value>(claims).unwrap(),
        json!({"sub": "alice", "scope": "mcp"})
    );
    assert_eq!(
        check(&c, &principal(None, None), "whoami"),
        "0.1 saw anonymous"
    );
    assert_eq!(check(&c, &principal(None, None), "echo"), "allow");
    let items = ["agents-only", "echo"];
    assert_eq!(visible(&c, &principal(Some(PLANNER), token), &items), items);
    assert_eq!(visible(&c, &principal(None, token), &items), ["echo"]);
    // Its configuration check still runs at load.
    let refused = load(&engine, "v0_1-filter", json!({"x": 1})).err().unwrap();
    assert!(
        refused.to_string().contains("takes no configuration"),
        "{refused}"
    );
}

/// A component that exports neither contract is refused at load, naming
/// the versions the host speaks.
#[test]
fn a_component_of_another_contract_is_refused() {
    let dir = std::env::temp_dir().join(format!("portcullis-principal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("other.wat");
    std::fs::write(
        &path,
        r#"(component
            (core module $m (func (export "f") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $v (result u32) (canon lift (core func $i "f")))
            (export "validate-config" (func $v)))"#,
    )
    .unwrap();
    let err = WasmFilter::load(
        &engine(),
        "other",
        &path,
        "{}".into(),
        Limits {
            timeout: Duration::from_secs(1),
            memory: 16 << 20,
            max_output: 1 << 10,
            isolation: Isolation::Caller,
        },
        OnError::Deny,
        vec![Hook::Request],
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("exports match none of portcullis:policy@0.3.0, @0.2.0 or @0.1.0"),
        "{err}"
    );
}
