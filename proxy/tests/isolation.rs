//! Which evaluations share a filter instance: with the default isolation,
//! only calls of the same caller; after a fault, none; with `call`
//! isolation, no two calls at all. The fault filter's `count` tool reports
//! how many calls its instance has seen.

#[path = "support/wasm.rs"]
mod wasm;

use std::sync::Arc;

use portcullis::{
    filter::{
        EngineOptions, FilterChain, FilterEngine, Hook, Isolation, Limits, OnError, WasmFilter,
    },
    identity::{Peer, Principal, SpiffeId},
    mcp::{parse_body, Body, Call, Era},
    metrics::Metrics,
    policy::{Decision, Policy, Request, StaticRules},
};
use serde_json::json;

fn chain(isolation: Isolation) -> FilterChain {
    let engine = Arc::new(
        FilterEngine::new(&EngineOptions {
            cache_dir: None,
            max_instances: 16,
            max_memory: 32 << 20,
        })
        .unwrap(),
    );
    let limits = Limits {
        timeout: std::time::Duration::from_secs(2),
        memory: 32 << 20,
        max_output: 1 << 20,
        isolation,
    };
    let filter = WasmFilter::load(
        &engine,
        "fault",
        &wasm::filter("fault-filter"),
        json!({"mode": "trap"}).to_string(),
        limits,
        OnError::Deny,
        vec![Hook::Request],
    )
    .unwrap();
    FilterChain::new(
        StaticRules::default(),
        vec![Arc::new(filter)],
        Metrics::new().unwrap().filter,
        64,
    )
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

/// The reason the `count` tool was denied with, or the other outcome.
fn check(chain: &FilterChain, who: &str, tool: &str) -> String {
    let caller = Principal::from_peer(Peer::Spiffe(
        SpiffeId::parse(&format!("spiffe://td/ns/x/sa/{who}")).unwrap(),
    ));
    let call = tool_call(tool);
    let req = Request {
        principal: &caller,
        call: &call,
        session: None,
        headers: portcullis::mcp::headers::McpHeaders::none(),
        annotations: None,
        instance: "test",
        task_tool: None,
    };
    match chain.check(&req) {
        Decision::Deny(d) => d.reason,
        other => format!("{other:?}"),
    }
}

#[test]
fn an_instance_is_reused_only_for_its_own_caller() {
    let c = chain(Isolation::Caller);
    assert_eq!(check(&c, "alice", "count"), "call 1 of this instance");
    assert_eq!(check(&c, "alice", "count"), "call 2 of this instance");
    // Bob never sees an instance that served Alice.
    assert_eq!(check(&c, "bob", "count"), "call 1 of this instance");
    assert_eq!(check(&c, "alice", "count"), "call 3 of this instance");
    assert_eq!(check(&c, "bob", "count"), "call 2 of this instance");
}

#[test]
fn a_faulted_instance_is_thrown_away() {
    let c = chain(Isolation::Caller);
    assert_eq!(check(&c, "alice", "count"), "call 1 of this instance");
    let fault = check(&c, "alice", "boom");
    assert!(fault.contains("filter failed"), "{fault}");
    assert_eq!(check(&c, "alice", "count"), "call 1 of this instance");
}

#[test]
fn call_isolation_never_reuses() {
    let c = chain(Isolation::Call);
    for _ in 0..3 {
        assert_eq!(check(&c, "alice", "count"), "call 1 of this instance");
    }
}
