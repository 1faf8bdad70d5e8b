//! Policy languages through the real sidecar: the Cedar filter in front of
//! the rmcp example server (annotations from its real `tools/list`), its
//! deadline failing closed, and shadow mode (rules and filters evaluated,
//! reported, not enforced).

mod support;

use serde_json::{json, Value};
use support::{wasm, *};

const POLICIES: &str = r#"
@id("tools")
permit (principal, action == Mcp::Action::"tools/call", resource)
unless { resource.name == "slow_count" };

@id("ticket")
@reason("destructive tools need a ticket argument starting with CHG-")
forbid (principal, action == Mcp::Action::"tools/call", resource)
when { context.kind == "call" && resource.annotations has destructiveHint && resource.annotations.destructiveHint }
unless { resource.hasTag("ticket") && resource.getTag("ticket") like "CHG-*" };
"#;

async fn start(upstream: &Upstream, policies: &str, timeout: &str) -> portcullis::Running {
    start_filter(upstream, "cedar", json!({ "policies": policies }), timeout).await
}

/// The sidecar with one ready-made filter (`cedar` or `rego`).
async fn start_filter(
    upstream: &Upstream,
    language: &str,
    filter_config: Value,
    timeout: &str,
) -> portcullis::Running {
    let extra = format!(
        "filter_engine:\n  cache_dir: {}\nfilters:\n  - name: {language}\n    path: {}\n    config: {filter_config}\n    timeout: {timeout}\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/filter-cache"),
        wasm::filter(&format!("{language}-filter")).display(),
    );
    portcullis::start(config(upstream.addr, "default: allow\nrules: []", &extra))
        .await
        .unwrap()
}

async fn rpc(proxy: &portcullis::Running, id: u64, method: &str, params: Value) -> Value {
    let mut params = params;
    params["_meta"] = modern_meta();
    let mut req = post(&mcp_url(proxy))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = params["name"].as_str() {
        req = req.header("mcp-name", name.to_string());
    }
    let resp = req
        .body(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string())
        .send()
        .await
        .unwrap();
    messages(&resp.text().await.unwrap())
        .into_iter()
        .find(|m| m["id"] == id)
        .unwrap_or(Value::Null)
}

async fn call_tool(proxy: &portcullis::Running, id: u64, name: &str, args: Value) -> Value {
    rpc(
        proxy,
        id,
        "tools/call",
        json!({"name": name, "arguments": args}),
    )
    .await
}

/// The tool names a `tools/list` through the sidecar shows.
async fn listed(proxy: &portcullis::Running, id: u64) -> Vec<String> {
    let list = rpc(proxy, id, "tools/list", json!({})).await;
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect()
}

/// `echo` is allowed; `delete_file` (destructive in the server's list) is
/// denied by `by` without a ticket, never reaching the server, and allowed
/// with one.
async fn assert_ticket_policy(proxy: &portcullis::Running, upstream: &Upstream, by: &str) {
    let call = |id, args: Value| {
        call_tool(
            proxy,
            id,
            if id == 2 { "echo" } else { "delete_file" },
            args,
        )
    };
    let ok = call(2, json!({"text": "hi"})).await;
    assert!(ok["result"].is_object(), "{ok}");
    let before = upstream.posts();
    let denied = call(3, json!({"path": "/x"})).await;
    assert_eq!(denied["error"]["code"], -32051, "{denied}");
    assert_eq!(denied["error"]["data"]["by"], by, "{denied}");
    let message = denied["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("need a ticket"), "{denied}");
    assert_eq!(
        upstream.posts(),
        before,
        "the denied call never reached the server"
    );
    let ticket = call(4, json!({"path": "/x", "ticket": "CHG-9"})).await;
    assert!(ticket["result"].is_object(), "{ticket}");
}

#[tokio::test]
async fn cedar_decides_calls_and_lists_with_the_servers_annotations() {
    let upstream = Upstream::start();
    let proxy = start(&upstream, POLICIES, "2s").await;

    let names = listed(&proxy, 1).await;
    // delete_file stays listed: a call with a ticket would be allowed.
    assert!(
        names.iter().any(|n| n == "echo") && names.iter().any(|n| n == "delete_file"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "slow_count"), "{names:?}");

    // The destructive hint comes from the server's own list.
    assert_ticket_policy(&proxy, &upstream, "filter:cedar").await;

    let hidden = call_tool(&proxy, 5, "slow_count", json!({"n": 1})).await;
    assert!(
        hidden["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no Cedar policy permits"),
        "{hidden}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_cedar_evaluation_past_the_deadline_denies() {
    // Cedar always terminates, but its cost grows with the input: a
    // hundred wildcard matches over a 600 KB argument take about 400 ms
    // here, far past the 100 ms deadline, and the call fails closed. A
    // short argument under the same policy is decided in time (loading
    // and validating the policies takes 10-20 ms).
    let mut policies = String::from("permit (principal, action, resource);\nforbid (principal, action, resource) when { resource.hasTag(\"text\") && (false");
    for i in 0..100 {
        policies.push_str(&format!(
            " || resource.getTag(\"text\") like \"*q*u*x*{i}\""
        ));
    }
    policies.push_str(") };\n");
    let upstream = Upstream::start();
    let proxy = start(&upstream, &policies, "100ms").await;
    let short = call_tool(&proxy, 1, "echo", json!({"text": "hi"})).await;
    assert!(short["result"].is_object(), "{short}");
    let long = "a".repeat(600_000);
    let r = call_tool(&proxy, 2, "echo", json!({"text": long})).await;
    assert_eq!(r["error"]["code"], -32051, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("deadline"),
        "{r}"
    );
    assert_eq!(
        upstream.posts(),
        1,
        "the slow call never reached the server"
    );
    proxy.shutdown().await;
}

/// A stricter policy rolled out in shadow: a tool-rbac that would deny
/// `delete_*`, a static rule that would deny `read_file`, and a filter
/// that traps, all `mode: shadow`. Every call still goes through; each
/// would-be denial, hidden item and fault is in the audit log and counted.
#[tokio::test]
async fn shadow_rules_and_filters_report_and_change_nothing() {
    let logs = logs::capture();
    let upstream = Upstream::start();
    let rbac = json!({"default": "allow", "rules": [{"name": "no-delete", "effect": "deny", "tools": ["delete_*"]}]});
    let extra = format!(
        "filter_engine:\n  cache_dir: {cache}\nfilters:\n\
         \x20 - name: strict\n    path: {rbac_path}\n    config: {rbac}\n    mode: shadow\n    timeout: 2s\n\
         \x20 - name: broken\n    path: {fault_path}\n    config: {{\"mode\": \"trap\"}}\n    mode: shadow\n    timeout: 2s\n",
        cache = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/filter-cache"),
        rbac_path = wasm::filter("tool-rbac").display(),
        fault_path = wasm::filter("fault-filter").display(),
    );
    let rules = "default: allow\nrules:\n  - name: no-read\n    action: deny\n    methods: [\"tools/call\"]\n    names: [\"read_file\"]\n    mode: shadow\n";
    let proxy = portcullis::start(config(upstream.addr, rules, &extra))
        .await
        .unwrap();

    let deleted = call_tool(&proxy, 1, "delete_file", json!({"path": "/x"})).await;
    assert!(
        deleted["result"].is_object(),
        "shadow denies nothing: {deleted}"
    );
    let read = call_tool(&proxy, 2, "read_file", json!({"path": "/x"})).await;
    assert!(read["result"].is_object(), "{read}");
    // The fault filter traps on `boom`: in shadow, the call still goes
    // through (the example server answers that it has no such tool).
    let boom = call_tool(&proxy, 9, "boom", json!({})).await;
    assert_ne!(boom["error"]["code"], -32051, "{boom}");
    assert_eq!(upstream.posts(), 3);

    assert!(
        logs.wait_for(&[
            "portcullis::audit",
            "delete_file",
            "shadow_deny",
            "filter:strict",
            "rule no-delete"
        ])
        .await,
        "{}",
        logs.text()
    );
    assert!(
        logs.wait_for(&[
            "portcullis::audit",
            "read_file",
            "shadow_deny",
            "static:no-read"
        ])
        .await
    );
    assert!(
        logs.wait_for(&["portcullis::audit", "shadow_fault", "filter:broken"])
            .await
    );

    let names = listed(&proxy, 3).await;
    assert!(
        names.iter().any(|n| n == "delete_file") && names.iter().any(|n| n == "read_file"),
        "{names:?}"
    );
    assert!(
        logs.wait_for(&["shadow_hide", "filter:strict", "delete_file"])
            .await
    );
    assert!(logs.wait_for(&["shadow_hide", "static", "read_file"]).await);

    let metrics = reqwest::get(format!("http://{}/metrics", proxy.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"portcullis_decisions_total{by="filter:strict",decision="deny",mode="shadow"} 1"#,
        r#"portcullis_decisions_total{by="static:no-read",decision="deny",mode="shadow"} 1"#,
        r#"portcullis_decisions_total{by="filter:strict",decision="hide",mode="shadow"} 1"#,
        r#"portcullis_decisions_total{by="",decision="allow",mode="enforce"} 4"#,
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(
            r#"portcullis_decisions_total{by="filter:broken",decision="fault",mode="shadow"}"#
        ),
        "{metrics}"
    );
    proxy.shutdown().await;
}

const REGO: &str = r#"
package portcullis

default allow := false

allow if not destructive

allow if startswith(object.get(input.arguments, "ticket", ""), "CHG-")

destructive if {
    input.kind == "call"
    input.annotations.destructiveHint
}

reason := "destructive tools need a ticket argument starting with CHG-"
"#;

#[tokio::test]
async fn rego_decides_calls_with_the_servers_annotations() {
    let upstream = Upstream::start();
    let proxy = start_filter(&upstream, "rego", json!({ "policies": REGO }), "2s").await;
    let list = rpc(&proxy, 1, "tools/list", json!({})).await;
    assert!(
        list["result"]["tools"]
            .as_array()
            .is_some_and(|t| t.len() >= 3),
        "{list}"
    );
    assert_ticket_policy(&proxy, &upstream, "filter:rego").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_runaway_rego_policy_hits_the_deadline() {
    // Rego has no unbounded recursion, but a comprehension over a huge
    // range runs for as long as it likes: the host's deadline stops it,
    // and the call is denied. The same policy lets `echo` through.
    let policy = r#"
package portcullis
default allow := false
allow if input.target.name == "echo"
allow if {
    input.target.name == "spin"
    count([x | some x in numbers.range(1, 100000000)]) > 0
}
"#;
    let upstream = Upstream::start();
    let proxy = start_filter(&upstream, "rego", json!({ "policies": policy }), "200ms").await;
    let ok = call_tool(&proxy, 1, "echo", json!({"text": "hi"})).await;
    assert!(ok["result"].is_object(), "{ok}");
    let r = call_tool(&proxy, 2, "spin", json!({})).await;
    assert_eq!(r["error"]["code"], -32051, "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("deadline") || msg.contains("memory"), "{r}");
    assert_eq!(
        upstream.posts(),
        1,
        "the runaway call never reached the server"
    );
    proxy.shutdown().await;
}

/// A Cedar policy kept in a file (`config_files`), as operators keep
/// policies: read when the filter loads, and reloaded when the file
/// changes.
#[tokio::test]
async fn a_policy_file_is_read_and_reloaded() {
    let dir = std::env::temp_dir().join(format!("pcx-policy-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("team.cedar");
    std::fs::write(&file, "permit (principal, action, resource);\n").unwrap();
    let upstream = Upstream::start();
    let extra = format!(
        "filter_engine:\n  cache_dir: {}\n  reload_interval: 100ms\nfilters:\n  - name: cedar\n    path: {}\n    config_files: {{policies: {}}}\n    timeout: 2s\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/filter-cache"),
        wasm::filter("cedar-filter").display(),
        file.display(),
    );
    let proxy = portcullis::start(config(upstream.addr, "default: allow\nrules: []", &extra))
        .await
        .unwrap();
    let echo = |id| call_tool(&proxy, id, "echo", json!({"text": "hi"}));
    let ok = echo(1).await;
    assert!(ok["result"].is_object(), "{ok}");

    std::fs::write(
        &file,
        "permit (principal, action, resource);\n@reason(\"echo is off\")\nforbid (principal, action, resource) when { resource has name && resource.name == \"echo\" };\n",
    )
    .unwrap();
    let mut denied = Value::Null;
    for id in 2..60 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        denied = echo(id).await;
        if denied["error"].is_object() {
            break;
        }
    }
    assert!(
        denied["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("echo is off"),
        "the new policy file was not loaded: {denied}"
    );
    proxy.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
