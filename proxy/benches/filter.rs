//! One WASM filter evaluation through the real host (small arguments), in a
//! fresh instance (`isolation: call`) and in a warm one (`isolation:
//! caller`, the default), and the four-filter chain, against the native
//! static rules as the baseline measured in the same run; and the least a
//! component call costs on the same engine (`component_call_floor`). The
//! `_cold_caches` cases evict the L2 before each call, as the sidecar's
//! other work between two calls does (see `cold`). arg-guard's load text
//! (`make bench`'s) holds nothing its regex's prefilter looks for; the
//! `_regex_searched` cases send one that does.

#[path = "../tests/support/wasm.rs"]
mod wasm;

#[path = "support/cold.rs"]
mod cold;

use std::{sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::{
    filter::{
        EngineOptions, FilterChain, FilterEngine, Hook, Isolation, Limits, OnError, WasmFilter,
    },
    identity::{Peer, Principal, SpiffeId},
    mcp::{parse_body, Body, Call, Era},
    metrics::Metrics,
    policy::{Policy, Request, StaticRules},
};
use serde_json::json;

fn engine() -> Arc<FilterEngine> {
    Arc::new(
        FilterEngine::new(&EngineOptions {
            cache_dir: None,
            max_instances: 64,
            max_memory: 32 << 20,
        })
        .unwrap(),
    )
}

/// A filter that evaluates every call: tool-rbac's reused decisions are
/// measured on their own (`wasm_tool_rbac_reused_decision`).
fn load(
    engine: &Arc<FilterEngine>,
    crate_name: &str,
    config: serde_json::Value,
    isolation: Isolation,
) -> Arc<WasmFilter> {
    load_reusing(engine, crate_name, config, isolation, false)
}

fn load_reusing(
    engine: &Arc<FilterEngine>,
    crate_name: &str,
    config: serde_json::Value,
    isolation: Isolation,
    reuse: bool,
) -> Arc<WasmFilter> {
    let limits = Limits {
        timeout: Duration::from_millis(10),
        memory: 32 << 20,
        max_output: 1 << 20,
        isolation,
    };
    Arc::new(
        WasmFilter::load(
            engine,
            crate_name,
            &wasm::filter(crate_name),
            config.to_string(),
            limits,
            OnError::Deny,
            vec![Hook::Request],
        )
        .unwrap()
        .with_decision_reuse(reuse)
        // As the sidecar's chain does: counters resolved once.
        .with_instance_counters(
            portcullis::metrics::Metrics::new()
                .unwrap()
                .filter
                .instance_counters(crate_name),
        ),
    )
}

fn parsed(body: serde_json::Value) -> Call {
    match parse_body(
        body.to_string().as_bytes(),
        64,
        &Era::from_version(Some("2025-11-25")),
    ) {
        Ok(Body::Single(c)) => c,
        _ => unreachable!(),
    }
}

fn call() -> Call {
    parsed(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "read_file", "arguments": {"path": "/srv/data/report.txt"}}}))
}

/// The call `make bench`'s load sends.
fn echo() -> Call {
    parsed(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "The quick brown fox jumps over the lazy dog, 0123456789"}}}))
}

/// `echo` with a text that contains arg-guard's prefilter literal
/// (`drop`), so that its regex is searched as well.
fn echo_near_a_match() -> Call {
    parsed(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "Drop the quick brown fox over the lazy dog, 0123456789"}}}))
}

fn bench(c: &mut Criterion) {
    let engine = engine();
    let metrics = Metrics::new().unwrap().filter;
    let rbac_config = json!({"default": "deny", "rules": [
        {"name": "no-delete", "effect": "deny", "tools": ["delete_*"]},
        {"name": "agents", "effect": "allow", "principals": {"spiffe": ["spiffe://demo.local/ns/agents/sa/*"]}, "tools": ["*"]}
    ]});
    let rbac = load(&engine, "tool-rbac", rbac_config.clone(), Isolation::Caller);
    let rbac_fresh = load(&engine, "tool-rbac", rbac_config.clone(), Isolation::Call);
    let rbac_reused = load_reusing(&engine, "tool-rbac", rbac_config, Isolation::Caller, true);
    let guard = load(
        &engine,
        "arg-guard",
        json!({"constraints": [{"tools": ["read_file"], "pointer": "/path", "path_prefix": "/srv/data"}]}),
        Isolation::Caller,
    );
    let limit = load(
        &engine,
        "rate-limit",
        json!({"limits": [{"tools": ["*"], "capacity": 1000000000u64, "refill_per_second": 1e9}]}),
        Isolation::Caller,
    );
    let redact = load(&engine, "redact", json!({}), Isolation::Caller);

    let one = FilterChain::new(
        StaticRules::default(),
        vec![rbac.clone()],
        metrics.clone(),
        64,
    );
    let one_reused = FilterChain::new(
        StaticRules::default(),
        vec![rbac_reused],
        metrics.clone(),
        64,
    );
    let one_fresh = FilterChain::new(
        StaticRules::default(),
        vec![rbac_fresh],
        metrics.clone(),
        64,
    );
    // As `make bench` configures it (configuration i), on the call its load
    // sends.
    let bench_guard = load(
        &engine,
        "arg-guard",
        json!({"constraints": [{"tools": ["echo"], "pointer": "/text", "required": true,
            "max_length": 1024, "deny_regex": "(?i)drop\\s+table"}]}),
        Isolation::Caller,
    );
    let guard_alone = FilterChain::new(
        StaticRules::default(),
        vec![bench_guard],
        metrics.clone(),
        64,
    );
    let four = FilterChain::new(
        StaticRules::default(),
        vec![rbac, guard, limit, redact],
        metrics,
        64,
    );
    let rules: StaticRules = serde_yaml_ng::from_str(
        "default: deny\nrules:\n  - {name: no-delete, action: deny, names: ['delete_*']}\n  - {name: agents, action: allow, callers: ['spiffe://demo.local/ns/agents/sa/*']}\n",
    )
    .unwrap();

    let call = call();
    let caller = Principal::from_peer(Peer::Spiffe(
        SpiffeId::parse("spiffe://demo.local/ns/agents/sa/planner").unwrap(),
    ));
    let headers: portcullis::mcp::headers::McpHeaders = [("mcp-protocol-version", "2025-11-25")]
        .into_iter()
        .collect();
    let req = Request {
        principal: &caller,
        call: &call,
        session: None,
        headers: &headers,
        annotations: None,
        instance: "bench",
        task_tool: None,
    };
    assert!(one.check(&req).is_allow());
    assert!(four.check(&req).is_allow());
    let echo = echo();
    let echo_req = Request { call: &echo, ..req };
    assert!(guard_alone.check(&echo_req).is_allow());
    let near = echo_near_a_match();
    let near_req = Request { call: &near, ..req };
    assert!(guard_alone.check(&near_req).is_allow());
    assert!(rules.check(&req).is_allow());

    let mut g = c.benchmark_group("policy");
    g.bench_function("static_rules_native", |b| {
        b.iter(|| rules.check(std::hint::black_box(&req)))
    });
    g.bench_function("wasm_tool_rbac_fresh_instance", |b| {
        b.iter(|| one_fresh.check(std::hint::black_box(&req)))
    });
    g.bench_function("wasm_tool_rbac_warm_instance", |b| {
        b.iter(|| one.check(std::hint::black_box(&req)))
    });
    g.bench_function("wasm_tool_rbac_reused_decision", |b| {
        b.iter(|| one_reused.check(std::hint::black_box(&req)))
    });
    g.bench_function("wasm_arg_guard_warm_instance", |b| {
        b.iter(|| guard_alone.check(std::hint::black_box(&echo_req)))
    });
    // The text holds the prefilter's literal: the regex runs too.
    g.bench_function("wasm_arg_guard_warm_instance_regex_searched", |b| {
        b.iter(|| guard_alone.check(std::hint::black_box(&near_req)))
    });
    let mut junk = vec![1u8; cold::EVICT];
    g.bench_function("static_rules_native_cold_caches", |b| {
        cold::cold(b, &mut junk, || rules.check(std::hint::black_box(&req)))
    });
    g.bench_function("wasm_tool_rbac_warm_instance_cold_caches", |b| {
        cold::cold(b, &mut junk, || one.check(std::hint::black_box(&req)))
    });
    g.bench_function("wasm_arg_guard_warm_instance_cold_caches", |b| {
        cold::cold(b, &mut junk, || {
            guard_alone.check(std::hint::black_box(&echo_req))
        })
    });
    g.bench_function(
        "wasm_arg_guard_warm_instance_regex_searched_cold_caches",
        |b| {
            cold::cold(b, &mut junk, || {
                guard_alone.check(std::hint::black_box(&near_req))
            })
        },
    );
    // The least a component call costs on this engine: no argument, no
    // memory, a constant back.
    let floor = wasmtime::component::Component::new(
        engine.engine(),
        r#"(component
          (core module $m (func (export "run") (result i32) (i32.const 7)))
          (core instance $i (instantiate $m))
          (func (export "run") (result u32) (canon lift (core func $i "run"))))"#,
    )
    .unwrap();
    let mut store = wasmtime::Store::new(engine.engine(), ());
    store.set_epoch_deadline(1 << 40);
    let instance = wasmtime::component::Linker::new(engine.engine())
        .instantiate(&mut store, &floor)
        .unwrap();
    let run = instance
        .get_typed_func::<(), (u32,)>(&mut store, "run")
        .unwrap();
    let mut call_floor = move || run.call(&mut store, ()).unwrap();
    g.bench_function("component_call_floor", |b| b.iter(&mut call_floor));
    g.bench_function("component_call_floor_cold_caches", |b| {
        cold::cold(b, &mut junk, &mut call_floor)
    });
    g.bench_function("wasm_chain_of_four", |b| {
        b.iter(|| four.check(std::hint::black_box(&req)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
