//! `Mcp-Param-*` headers end to end: the sidecar learns a tool's
//! `x-mcp-header` parameters from the `tools/list` answer it relays, and
//! refuses a call whose headers disagree with its arguments before the
//! upstream sees it.

mod support;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use axum::{extract::State, routing, Json, Router};
use serde_json::{json, Value};
use support::*;

/// Counts the `tools/call`s that reach the upstream.
#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

async fn server(State(calls): State<Calls>, Json(msg): Json<Value>) -> Json<Value> {
    let result = match msg["method"].as_str() {
        Some("tools/list") => json!({"tools": [{
            "name": "route",
            "inputSchema": {"type": "object", "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "query": {"type": "string"}
            }}
        }, {
            "name": "read_file",
            "inputSchema": {"type": "object", "properties": {
                "path": {"type": "string", "x-mcp-header": "Path"}
            }}
        }]}),
        _ => {
            calls.0.fetch_add(1, Ordering::SeqCst);
            json!({"content": [{"type": "text", "text": "routed"}]})
        }
    };
    Json(json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}))
}

async fn start_upstream() -> (std::net::SocketAddr, Calls) {
    let calls = Calls::default();
    let app = Router::new()
        .route("/mcp", routing::post(server))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, calls)
}

async fn call(url: &str, id: u64, region: &str, header: Option<&str>) -> (u16, Value) {
    let mut req = modern_call(url, id, "route", json!({"region": region, "query": "q"}));
    if let Some(h) = header {
        req = req.header("Mcp-Param-Region", h);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (
        status,
        messages(&body).into_iter().next().unwrap_or(Value::Null),
    )
}

async fn list_tools(url: &str) {
    let resp = post(url)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(json!({"jsonrpc": "2.0", "id": 100, "method": "tools/list", "params": {"_meta": modern_meta()}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn assert_refused(got: &(u16, Value), id: u64) {
    assert_eq!(got.0, 400, "{got:?}");
    assert_eq!(got.1["error"]["code"], -32020, "{got:?}");
    assert_eq!(got.1["id"], id, "{got:?}");
}

#[tokio::test]
async fn param_header_disagreeing_with_the_argument_is_not_forwarded() {
    let (addr, calls) = start_upstream().await;
    let proxy = proxy(addr).await;
    let url = mcp_url(&proxy);

    // Before any tools/list, the header cannot be checked: refused.
    assert_refused(&call(&url, 1, "eu", Some("eu")).await, 1);
    list_tools(&url).await;

    let ok = call(&url, 2, "eu", Some("eu")).await;
    assert_eq!(ok.0, 200, "{ok:?}");
    // Routed to "us" by a load balancer, judged as "eu" by the policy.
    assert_refused(&call(&url, 3, "eu", Some("us")).await, 3);
    // A 2026-07-28 client must mirror the declared argument.
    assert_refused(&call(&url, 4, "eu", None).await, 4);
    let encoded = call(&url, 5, "élan", Some("=?base64?w6lsYW4=?=")).await;
    assert_eq!(encoded.0, 200, "{encoded:?}");
    assert_eq!(calls.0.load(Ordering::SeqCst), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn mismatch_on_a_listed_tool_is_refused_with_its_id() {
    let (addr, calls) = start_upstream().await;
    let proxy = proxy(addr).await;
    let url = mcp_url(&proxy);
    list_tools(&url).await;
    assert_refused(&call(&url, 7, "eu", Some("us")).await, 7);
    assert_eq!(calls.0.load(Ordering::SeqCst), 0);
    proxy.shutdown().await;
}

/// A filter's rewrite of a mirrored argument would leave the header
/// naming the old value: refused rather than forwarded half-rewritten.
#[tokio::test]
async fn rewrite_of_a_mirrored_argument_is_refused() {
    let (addr, calls) = start_upstream().await;
    let guard = format!(
        "filter_engine:\n  cache_dir: {}/../target/filter-cache\nfilters:\n  - name: arg-guard\n    path: {}\n    config: {}\n    timeout: 2s\n",
        env!("CARGO_MANIFEST_DIR"),
        wasm::filter("arg-guard").display(),
        json!({"constraints": [{"tools": ["read_file"], "pointer": "/path", "path_prefix": "/srv", "normalize": true}]}),
    );
    let proxy = portcullis::start(config(addr, "default: allow\nrules: []", &guard))
        .await
        .unwrap();
    let url = mcp_url(&proxy);
    list_tools(&url).await;
    let read = |id, path: &'static str| {
        modern_call(&url, id, "read_file", json!({"path": path})).header("mcp-param-path", path)
    };
    // Already normal: no rewrite, forwarded.
    let ok = read(1, "/srv/b").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    // Normalized to /srv/b by the filter while the header says /srv/a/../b.
    let resp = read(2, "/srv/a/../b").send().await.unwrap();
    let status = resp.status().as_u16();
    let v = messages(&resp.text().await.unwrap()).remove(0);
    assert_refused(&(status, v.clone()), 2);
    assert!(v["error"]["message"].to_string().contains("rewrite"), "{v}");
    assert_eq!(calls.0.load(Ordering::SeqCst), 1);
    proxy.shutdown().await;
}
