//! Shared harness for the end-to-end tests: the real example server (rmcp)
//! as upstream, the real sidecar in-process, and small HTTP helpers.
#![allow(dead_code)]

pub mod logs;
pub mod pki;
pub mod sessions;
pub mod wasm;
pub mod workload_api;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use portcullis::{Config, Running};
use tokio_util::sync::CancellationToken;

/// An upstream on its own runtime and thread, so that a test can kill it
/// abruptly (every socket closed at once) as a crash would.
pub struct Upstream {
    pub addr: SocketAddr,
    /// POSTs the upstream received.
    pub posts: Arc<AtomicUsize>,
    /// The `x-portcullis-caller` header of each POST, as received.
    pub callers: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    /// The headers of each POST and OPTIONS, as received.
    pub heads: Arc<std::sync::Mutex<Vec<http::HeaderMap>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// reqwest is built with rustls but no crypto provider (the product uses
/// ring only); HTTP clients in tests need ring as the process default.
pub fn tls_init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Upstream {
    pub fn start() -> Self {
        tls_init();
        Self::start_on("127.0.0.1:0".parse().unwrap())
    }

    pub fn start_on(addr: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let posts = Arc::new(AtomicUsize::new(0));
        let counter = posts.clone();
        let callers: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
        let seen = callers.clone();
        let heads: Arc<std::sync::Mutex<Vec<http::HeaderMap>>> = Arc::default();
        let heads_seen = heads.clone();
        // A killed upstream's runtime shuts down in the background, so its
        // listener may outlive `kill` by a moment: retry the same port.
        let std = (0..100)
            .find_map(|_| {
                std::net::TcpListener::bind(addr)
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                    .ok()
            })
            .expect("upstream port still busy after 2 s");
        std.set_nonblocking(true).unwrap();
        let addr = std.local_addr().unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std).unwrap();
            let ct = CancellationToken::new();
            let app = example_mcp_server::router(ct.clone()).layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let counter = counter.clone();
                    let seen = seen.clone();
                    let heads_seen = heads_seen.clone();
                    async move {
                        if req.method() == http::Method::OPTIONS {
                            heads_seen.lock().unwrap().push(req.headers().clone());
                        }
                        if req.method() == http::Method::POST {
                            heads_seen.lock().unwrap().push(req.headers().clone());
                            counter.fetch_add(1, Ordering::SeqCst);
                            let caller = req
                                .headers()
                                .get("x-portcullis-caller")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            seen.lock().unwrap().push(caller);
                        }
                        next.run(req).await
                    }
                },
            ));
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            posts,
            callers,
            heads,
            runtime: Some(runtime),
        }
    }

    pub fn posts(&self) -> usize {
        self.posts.load(Ordering::SeqCst)
    }

    /// Drops every connection and the listener at once.
    pub fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

pub const DENY_DELETE: &str = r#"
default: allow
rules:
  - name: no-delete
    action: deny
    methods: ["tools/call"]
    names: ["delete_*"]
    reason: destructive tools are off limits
"#;

pub fn config(upstream: SocketAddr, policy_yaml: &str, extra: &str) -> Config {
    let policy: String = policy_yaml.lines().map(|l| format!("  {l}\n")).collect();
    let yaml = format!(
        "listener:\n  addr: 127.0.0.1:0\nadmin:\n  addr: 127.0.0.1:0\nupstream:\n  url: http://{upstream}\n  request_timeout: 5s\npolicy:\n{policy}{extra}"
    );
    Config::from_yaml(&yaml).unwrap()
}

pub async fn proxy(upstream: SocketAddr) -> Running {
    portcullis::start(config(upstream, DENY_DELETE, ""))
        .await
        .unwrap()
}

pub fn mcp_url(proxy: &Running) -> String {
    format!("http://{}/mcp", proxy.proxy_addr)
}

pub const ACCEPT: &str = "application/json, text/event-stream";

/// A POST with MCP's usual headers.
pub fn post(url: &str) -> reqwest::RequestBuilder {
    tls_init();
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
}

/// A 2026-07-28 (sessionless) tools/call body and its routing headers.
pub fn modern_call(
    url: &str,
    id: u64,
    tool: &str,
    args: serde_json::Value,
) -> reqwest::RequestBuilder {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": tool, "arguments": args,
            "_meta": modern_meta(),
        }
    });
    post(url)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(body.to_string())
}

pub fn modern_meta() -> serde_json::Value {
    serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
        "progressToken": "p1",
    })
}

/// All JSON-RPC messages in a JSON or SSE response body.
pub fn messages(body: &str) -> Vec<serde_json::Value> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        return match v {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        };
    }
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            serde_json::from_str(&data.join("\n")).ok()
        })
        .collect()
}

/// Polls `f` until it is true or two seconds pass.
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A plain HTTP client (ring installed as the TLS provider).
pub fn tls_client() -> reqwest::Client {
    tls_init();
    reqwest::Client::new()
}
