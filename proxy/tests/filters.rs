//! The WASM policy host end to end: real components built from `filters/`,
//! loaded by the real sidecar, in front of the rmcp example server.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{wasm, *};

/// A filter entry. Tests run unoptimised and in parallel, so the deadline
/// is generous unless `extra` sets one (the timeout test does).
fn filter_yaml(name: &str, crate_name: &str, config: Value, extra: &str) -> String {
    let timeout = if extra.contains("timeout:") {
        ""
    } else {
        "    timeout: 2s\n"
    };
    format!(
        "  - name: {name}\n    path: {}\n    config: {config}\n{timeout}{extra}",
        wasm::filter(crate_name).display()
    )
}

/// Compiled filters are cached here across tests, as in production.
fn cache_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../target/filter-cache").to_string()
}

async fn start(upstream: &Upstream, filters: &[String]) -> portcullis::Running {
    let extra = format!(
        "filter_engine:\n  cache_dir: {}\nfilters:\n{}",
        cache_dir(),
        filters.concat()
    );
    portcullis::start(config(upstream.addr, "default: allow\nrules: []", &extra))
        .await
        .unwrap()
}

async fn call(proxy: &portcullis::Running, id: u64, tool: &str, args: Value) -> Value {
    let resp = modern_call(&mcp_url(proxy), id, tool, args)
        .send()
        .await
        .unwrap();
    let msgs = messages(&resp.text().await.unwrap());
    msgs.into_iter()
        .find(|m| m["id"] == id)
        .unwrap_or(Value::Null)
}

fn rbac() -> String {
    filter_yaml(
        "tool-rbac",
        "tool-rbac",
        json!({"default": "allow", "rules": [{"name": "no-delete", "effect": "deny", "tools": ["delete_*"]}]}),
        "",
    )
}

#[tokio::test]
async fn denial_names_the_filter_and_lists_are_filtered() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[rbac()]).await;
    let denied = call(&proxy, 1, "delete_file", json!({"path": "/x"})).await;
    assert_eq!(denied["error"]["code"], -32051, "{denied}");
    assert_eq!(denied["error"]["data"]["by"], "filter:tool-rbac");
    assert!(denied["error"]["message"]
        .as_str()
        .unwrap()
        .contains("rule no-delete"));
    let ok = call(&proxy, 2, "echo", json!({"text": "hi"})).await;
    assert!(ok["result"].is_object(), "{ok}");

    let list = post(&mcp_url(&proxy))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": modern_meta()}}).to_string())
        .send()
        .await
        .unwrap();
    let body = list.text().await.unwrap();
    let msgs = messages(&body);
    let names: Vec<&str> = msgs[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"echo") && !names.contains(&"delete_file"),
        "{names:?}"
    );
    assert_eq!(
        upstream.posts(),
        2,
        "the denied call never reached the upstream"
    );
    proxy.shutdown().await;
}

/// tool-rbac declares what it decides on (the principal and the target),
/// arg-guard too (the method, the tool and the arguments): each one's
/// decisions are reused for calls equal in what it declared, denials
/// included, and counted as `cached`; a call that differs in its arguments
/// is evaluated by arg-guard.
#[tokio::test]
async fn declared_decisions_are_reused_and_counted() {
    let upstream = Upstream::start();
    let guard = filter_yaml(
        "arg-guard",
        "arg-guard",
        json!({"constraints": [{"tools": ["echo"], "pointer": "/text", "deny_regex": "(?i)drop\\s+table"}]}),
        "    hooks: [request]\n",
    );
    let rbac = filter_yaml(
        "tool-rbac",
        "tool-rbac",
        json!({"default": "allow", "rules": [{"name": "no-delete", "effect": "deny", "tools": ["delete_*"]}]}),
        "    hooks: [request]\n",
    );
    let proxy = start(&upstream, &[rbac, guard]).await;
    let mut denials = Vec::new();
    for id in 0..3 {
        assert!(call(&proxy, id, "echo", json!({"text": "hi"})).await["result"].is_object());
        let denied = call(&proxy, 10 + id, "delete_file", json!({"path": "/x"})).await;
        denials.push(denied["error"].clone());
    }
    assert_eq!(denials[0]["data"]["by"], "filter:tool-rbac", "{denials:?}");
    assert!(denials.iter().all(|d| *d == denials[0]), "{denials:?}");
    // New arguments: arg-guard evaluates them.
    let dropped = call(&proxy, 20, "echo", json!({"text": "DROP  table x"})).await;
    assert_eq!(
        dropped["error"]["data"]["by"], "filter:arg-guard",
        "{dropped}"
    );

    // Two distinct calls evaluated, the other five reused.
    assert_eq!(instances(&proxy, "tool-rbac", "cached").await, 5);
    assert_eq!(evaluated(&proxy, "tool-rbac").await, 2);
    // The first `hi` ran in a fresh instance. That instance drew WASI's
    // random seeds (a host call) when it was configured, before any call,
    // so the decision was kept (under 0.2 the seeds were drawn during the
    // first call, and its decision was not): the next two were reused; the
    // `DROP` evaluated.
    assert_eq!(instances(&proxy, "arg-guard", "cached").await, 2);
    assert_eq!(evaluated(&proxy, "arg-guard").await, 2);
    assert_eq!(upstream.posts(), 3, "only the allowed echo calls went on");
    proxy.shutdown().await;
}

/// `portcullis_filter_instances_total{filter,outcome}`.
async fn instances(proxy: &portcullis::Running, filter: &str, outcome: &str) -> u64 {
    let metrics = support::sessions::metrics(proxy).await;
    let line =
        format!("portcullis_filter_instances_total{{filter=\"{filter}\",outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line} in {metrics}"))
}

/// Calls of `filter` that were evaluated, in a warm or a fresh instance.
async fn evaluated(proxy: &portcullis::Running, filter: &str) -> u64 {
    instances(proxy, filter, "warm").await + instances(proxy, filter, "fresh").await
}

/// The denial's message, or "allowed" when the call reached the server
/// (which may not know the tool).
async fn outcome(proxy: &portcullis::Running, id: u64, tool: &str) -> String {
    let r = call(proxy, id, tool, json!({"secret": "s"})).await;
    match (
        r["error"]["data"]["by"].as_str(),
        r["error"]["message"].as_str(),
    ) {
        (Some(_), Some(m)) => m.to_string(),
        _ if r["result"].is_object() || r["error"].is_object() => "allowed".into(),
        _ => panic!("{r}"),
    }
}

/// A filter that declares it decides on the target alone: it sees nothing
/// else, a decision is reused only when its evaluation called no host
/// function, and `reuse_decisions: false` evaluates every call.
#[tokio::test]
async fn only_pure_evaluations_of_a_declaring_filter_are_reused() {
    let upstream = Upstream::start();
    let declared = filter_yaml(
        "declared",
        "declared-filter",
        json!({}),
        "    hooks: [request]\n",
    );
    let proxy = start(&upstream, &[declared]).await;
    let seen = outcome(&proxy, 1, "whoami").await;
    assert!(
        seen.contains(r#"peer=None key="" method="" args=None"#),
        "the filter saw more than the target: {seen}"
    );
    // Warm up, so that a first evaluation's random seeds (a host call)
    // do not count below.
    outcome(&proxy, 2, "echo").await;
    let (cached, warm) = (
        instances(&proxy, "declared", "cached").await,
        instances(&proxy, "declared", "warm").await,
    );
    let first = outcome(&proxy, 3, "count").await;
    assert!(first.contains(": evaluation "), "{first}");
    for id in 4..6 {
        assert_eq!(outcome(&proxy, id, "count").await, first, "reused");
    }
    for id in 10..12 {
        assert_eq!(outcome(&proxy, id, "logged").await, "allowed");
        assert_eq!(outcome(&proxy, id + 10, "clocked").await, "allowed");
    }
    assert_eq!(instances(&proxy, "declared", "cached").await - cached, 2);
    assert_eq!(
        instances(&proxy, "declared", "warm").await - warm,
        5,
        "count once, logged and clocked every time"
    );
    proxy.shutdown().await;

    let declared = filter_yaml(
        "declared",
        "declared-filter",
        json!({}),
        "    hooks: [request]\n    reuse_decisions: false\n",
    );
    let proxy = start(&upstream, &[declared]).await;
    let mut seen = Vec::new();
    for id in 0..3 {
        seen.push(outcome(&proxy, id, "count").await);
    }
    assert_ne!(seen[0], seen[1], "evaluated every time: {seen:?}");
    assert_ne!(seen[1], seen[2], "evaluated every time: {seen:?}");
    assert_eq!(instances(&proxy, "declared", "cached").await, 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn rewrite_is_forwarded_and_results_are_redacted() {
    let upstream = Upstream::start();
    let guard = filter_yaml(
        "arg-guard",
        "arg-guard",
        json!({"constraints": [{"tools": ["read_file"], "pointer": "/path", "path_prefix": "/srv", "normalize": true}]}),
        "",
    );
    // A later filter judges the rewritten arguments, not the client's:
    // this one refuses the resolved spelling of a path that the client
    // wrote another way.
    let after = filter_yaml(
        "after-guard",
        "arg-guard",
        json!({"constraints": [{"tools": ["read_file"], "pointer": "/path", "deny_regex": "^/srv/c$"}]}),
        "",
    );
    let redact = filter_yaml("redact", "redact", json!({}), "    hooks: [result]\n");
    let proxy = start(&upstream, &[guard, after, redact]).await;
    // The example server echoes the path it was given: the rewrite shows.
    let r = call(&proxy, 1, "read_file", json!({"path": "/srv/a/../b"})).await;
    assert!(
        r["result"].to_string().contains("contents of /srv/b"),
        "{r}"
    );
    let resolved = call(&proxy, 4, "read_file", json!({"path": "/srv/a/../c"})).await;
    assert_eq!(
        resolved["error"]["data"]["by"], "filter:after-guard",
        "{resolved}"
    );
    let escape = call(
        &proxy,
        2,
        "read_file",
        json!({"path": "/srv/../etc/passwd"}),
    )
    .await;
    assert_eq!(
        escape["error"]["data"]["by"], "filter:arg-guard",
        "{escape}"
    );
    let secret = call(
        &proxy,
        3,
        "echo",
        json!({"text": "key AKIAIOSFODNN7EXAMPLE for bob@example.com"}),
    )
    .await;
    let text = secret["result"].to_string();
    assert!(
        text.contains("[REDACTED:aws-access-key]") && text.contains("[REDACTED:email]"),
        "{text}"
    );
    assert!(!text.contains("AKIAIOSFODNN7EXAMPLE"));
    proxy.shutdown().await;
}

/// A rewrite by a filter that declares its inputs (arg-guard) reaches a
/// later one that does not, whose whole call is shared with the filters
/// before it: built before the rewrite (by the first fault filter, which
/// allows the call), it must not be shown stale.
#[tokio::test]
async fn a_rewrite_reaches_later_filters_shown_the_whole_call() {
    let upstream = Upstream::start();
    let before = fault("none", "    hooks: [request]\n");
    let guard = filter_yaml(
        "arg-guard",
        "arg-guard",
        json!({"constraints": [{"tools": ["args"], "pointer": "/path", "path_prefix": "/srv", "normalize": true}]}),
        "",
    )
    .replace("name: arg-guard", "name: guard");
    let after = filter_yaml(
        "shown",
        "fault-filter",
        json!({"mode": "show-args"}),
        "    hooks: [request]\n",
    );
    for (chain, by) in [
        (vec![before.clone(), guard.clone(), after.clone()], "before"),
        (vec![guard, after], "none"),
    ] {
        let proxy = start(&upstream, &chain).await;
        let r = call(&proxy, 1, "args", json!({"path": "/srv/a/../b"})).await;
        assert_eq!(r["error"]["data"]["by"], "filter:shown", "{by}: {r}");
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(r#"shown {"path":"/srv/b"}"#),
            "{by}: {message}"
        );
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn rate_limit_counts_tool_calls_across_instances() {
    let upstream = Upstream::start();
    let limit = filter_yaml(
        "rate-limit",
        "rate-limit",
        json!({"limits": [{"tools": ["echo"], "capacity": 2, "refill_per_second": 0.1}]}),
        "",
    );
    let proxy = start(&upstream, &[limit]).await;
    for id in 1..=2 {
        assert!(call(&proxy, id, "echo", json!({"text": "x"})).await["result"].is_object());
    }
    let third = call(&proxy, 3, "echo", json!({"text": "x"})).await;
    assert!(
        third["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate limit"),
        "{third}"
    );
    assert!(
        call(&proxy, 4, "read_file", json!({"path": "/a"})).await["result"].is_object(),
        "other tools unaffected"
    );
    proxy.shutdown().await;
}

/// A 0.3 instance is configured when it is made; one that refuses the
/// configuration the filter was loaded with serves nothing, and the call
/// is denied (fail closed), never forwarded unchecked: even for a filter
/// that fails open, which is for a filter breaking on some input, not
/// one running without its policy.
#[tokio::test]
async fn an_instance_that_refuses_its_configuration_denies() {
    let upstream = Upstream::start();
    for extra in ["", "    on_error: allow\n"] {
        let proxy = start(&upstream, &[fault("refuse-later", extra)]).await;
        let r = call(&proxy, 1, "echo", json!({"text": "hi"})).await;
        assert_eq!(r["error"]["code"], -32051, "{extra:?}: {r}");
        assert_eq!(r["error"]["data"]["by"], "filter:fault", "{r}");
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("refused its configuration: refused on purpose by instance 2"),
            "{r}"
        );
        proxy.shutdown().await;
    }
    assert_eq!(upstream.posts(), 0, "nothing went on");
}

/// The check at load runs a first instance under the filter's deadline. A
/// first instance that runs past it is tried again (the first one after a
/// load also faults in the filter's code and memory image), three
/// instances in all; then the deadline refuses the load.
#[tokio::test]
async fn a_configuration_check_past_the_deadline_is_tried_again_then_refused() {
    let upstream = Upstream::start();
    // Long enough that a check that does not spin never misses it.
    let quick = "    timeout: 200ms\n";
    let slow = |n: u32| {
        filter_yaml(
            "fault",
            "fault-filter",
            json!({"mode": "slow-config", "slow": n}),
            quick,
        )
    };
    for n in [1, 2] {
        let proxy = start(&upstream, &[slow(n)]).await;
        let r = call(&proxy, 1, "echo", json!({"text": "hi"})).await;
        assert!(r["result"].is_object(), "{n} slow: {r}");
        proxy.shutdown().await;
    }
    let err = portcullis::start(config(
        upstream.addr,
        "rules: []",
        &format!("filters:\n{}", slow(3)),
    ))
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("configuration check exceeded its 200ms deadline"),
        "{err:?}"
    );
    assert_eq!(upstream.posts(), 2, "only the allowed calls went on");
}

/// A later instance whose `configure` never finishes denies the call even
/// for a filter that fails open: it could not be configured, which is not
/// a filter breaking on some input.
#[tokio::test]
async fn an_instance_whose_configure_runs_past_the_deadline_denies_even_failing_open() {
    let upstream = Upstream::start();
    let extra = "    timeout: 200ms\n    on_error: allow\n";
    let proxy = start(&upstream, &[fault("loop-later", extra)]).await;
    let r = call(&proxy, 1, "echo", json!({"text": "hi"})).await;
    assert_eq!(r["error"]["code"], -32051, "{r}");
    assert_eq!(r["error"]["data"]["by"], "filter:fault", "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("could not be configured: exceeded its 200ms deadline"),
        "{r}"
    );
    // Counted as what happened.
    let metrics = support::sessions::metrics(&proxy).await;
    let line = r#"portcullis_filter_faults_total{filter="fault",kind="timeout"} 1"#;
    assert!(metrics.contains(line), "missing {line}");
    proxy.shutdown().await;
    assert_eq!(upstream.posts(), 0, "nothing went on");
}

fn fault(mode: &str, extra: &str) -> String {
    filter_yaml("fault", "fault-filter", json!({"mode": mode}), extra)
}

async fn assert_fault_denies_then_recovers(mode: &str, kind: &str, extra: &str) {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[fault(mode, extra)]).await;
    let t = Instant::now();
    let r = call(&proxy, 1, "boom", json!({})).await;
    assert_eq!(r["error"]["code"], -32051, "{mode}: {r}");
    assert_eq!(r["error"]["data"]["by"], "filter:fault");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("filter failed"),
        "{r}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "{mode} took {:?}",
        t.elapsed()
    );
    let next = call(&proxy, 2, "echo", json!({"text": "still alive"})).await;
    assert!(
        next["result"].to_string().contains("still alive"),
        "{mode}: next call must work: {next}"
    );
    let metrics = support::sessions::metrics(&proxy).await;
    let line = format!(r#"portcullis_filter_faults_total{{filter="fault",kind="{kind}"}} 1"#);
    assert!(metrics.contains(&line), "{mode}: missing {line}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn infinite_loop_hits_the_deadline() {
    assert_fault_denies_then_recovers("loop", "timeout", "    timeout: 50ms\n").await;
}

#[tokio::test]
async fn huge_allocation_hits_the_memory_limit() {
    assert_fault_denies_then_recovers("alloc", "memory", "").await;
}

#[tokio::test]
async fn trap_denies() {
    assert_fault_denies_then_recovers("trap", "trap", "").await;
}

#[tokio::test]
async fn ten_megabyte_message_denies() {
    // Building 10 MB takes the guest longer than the default 10 ms; give it
    // time so that the size check itself is what stops it.
    assert_fault_denies_then_recovers("big", "oversize", "    timeout: 2s\n").await;
}

#[tokio::test]
async fn fail_open_is_possible_but_loud() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, &[fault("trap", "    on_error: allow\n")]).await;
    let r = call(&proxy, 1, "boom", json!({})).await;
    // The example server has no `boom` tool: its own error proves the call
    // got through.
    assert_ne!(r["error"]["code"], -32051, "fail-open lets it through: {r}");
    assert_eq!(upstream.posts(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn broken_filters_are_refused_at_load() {
    let upstream = Upstream::start();
    let dir = std::env::temp_dir().join(format!("portcullis-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A valid component that exports nothing of the filter world.
    let empty = dir.join("empty.wasm");
    std::fs::write(&empty, wasmtime_component_bytes("(component)")).unwrap();
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    let cases = [
        (
            format!("  - name: empty\n    path: {}\n", empty.display()),
            "match none of portcullis:policy@0.3.0, @0.2.0 or @0.1.0",
        ),
        (
            format!("  - name: garbage\n    path: {}\n", garbage.display()),
            "not a valid component",
        ),
        (fault("reject", ""), "refused on purpose"),
        (
            "  - name: missing\n    path: /nonexistent.wasm\n".to_string(),
            "cannot read",
        ),
    ];
    for (yaml, why) in cases {
        let err = portcullis::start(config(
            upstream.addr,
            "rules: []",
            &format!("filters:\n{yaml}"),
        ))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains(why), "expected {why:?}, got {err:?}");
    }
}

fn wasmtime_component_bytes(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

#[tokio::test]
async fn filter_changes_are_picked_up_without_restart() {
    let upstream = Upstream::start();
    let dir = std::env::temp_dir().join(format!("portcullis-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("portcullis.yaml");
    let write = |deny: &str| {
        let rbac = filter_yaml(
            "tool-rbac",
            "tool-rbac",
            json!({"default": "allow", "rules": [{"name": "r", "effect": "deny", "tools": [deny]}]}),
            "",
        );
        let yaml = format!(
            "listener: {{addr: '127.0.0.1:0'}}\nadmin: {{addr: '127.0.0.1:0'}}\nupstream: {{url: 'http://{}'}}\nfilter_engine:\n  cache_dir: {}\n  reload_interval: 100ms\nfilters:\n{rbac}",
            upstream.addr,
            cache_dir()
        );
        std::fs::write(&path, yaml).unwrap();
    };
    write("delete_*");
    let proxy = portcullis::runtime::start_from_file(&path).await.unwrap();
    assert!(call(&proxy, 1, "echo", json!({"text": "a"})).await["result"].is_object());

    write("echo");
    let mut reloaded = false;
    for id in 2..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if call(&proxy, id, "echo", json!({"text": "a"})).await["error"]["code"] == -32051 {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the new rule must apply without a restart");

    // A broken config is refused; the chain in force keeps serving.
    std::fs::write(
        &path,
        "upstream: {url: 'http://x:1'}\nfilters:\n  - {name: b, path: /nonexistent.wasm}\n",
    )
    .unwrap();
    let metrics_url = format!("http://{}/metrics", proxy.admin_addr);
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains(r#"portcullis_filter_reloads_total{result="failure"}"#) {
            refused = true;
            break;
        }
    }
    assert!(refused, "the broken config must be refused and counted");
    assert_eq!(
        call(&proxy, 200, "echo", json!({"text": "a"})).await["error"]["code"],
        -32051,
        "old chain still serves"
    );
    assert!(call(&proxy, 201, "read_file", json!({"path": "/a"})).await["result"].is_object());
    proxy.shutdown().await;
}
