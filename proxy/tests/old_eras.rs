//! Eras the Rust SDK no longer speaks: 2025-03-26 batches and the
//! 2024-11-05 HTTP+SSE transport. The upstreams here are small hand-written
//! servers that answer exactly as those specifications say; the Python and
//! TypeScript interop suite covers the same paths against real SDKs.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::State,
    response::sse::{Event, Sse},
    routing::{self, get},
    Json, Router,
};
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;
use tokio::sync::mpsc;

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Value>>>);

impl Seen {
    fn methods(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|m| m["method"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

fn answer(msg: &Value) -> Option<Value> {
    let id = msg.get("id")?.clone();
    let result = match msg["method"].as_str()? {
        "tools/list" => json!({"tools": [{"name": "echo"}, {"name": "delete_file"}]}),
        other => json!({"method": other}),
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

async fn batch_server(State(seen): State<Seen>, Json(body): Json<Value>) -> Json<Value> {
    let msgs = body
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![body.clone()]);
    seen.0.lock().unwrap().extend(msgs.iter().cloned());
    Json(Value::Array(msgs.iter().filter_map(answer).collect()))
}

async fn start_batch_upstream() -> (std::net::SocketAddr, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/mcp", routing::post(batch_server))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test]
async fn batch_denies_only_the_denied_entries() {
    let (addr, seen) = start_batch_upstream().await;
    let proxy = proxy(addr).await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_file", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]);
    let resp = post(&mcp_url(&proxy))
        .header("mcp-protocol-version", "2025-03-26")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let msgs = messages(&resp.text().await.unwrap());
    let by_id = |id: i64| {
        msgs.iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(by_id(1)["result"]["method"], "tools/call");
    assert_eq!(by_id(2)["error"]["code"], -32051);
    let listed = by_id(3);
    let tools: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        vec!["echo"],
        "list inside a batch answer is filtered"
    );
    assert_eq!(
        seen.methods(),
        vec!["tools/call", "tools/list", "notifications/initialized"]
    );
    assert!(
        seen.0.lock().unwrap().iter().all(|m| m["id"] != 2),
        "denied entry never forwarded"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn fully_denied_batch_is_answered_without_forwarding() {
    let (addr, seen) = start_batch_upstream().await;
    let proxy = proxy(addr).await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "delete_file"}},
        {"jsonrpc": "2.0", "id": "b", "method": "tools/call", "params": {"name": "delete_dir"}},
    ]);
    let resp = post(&mcp_url(&proxy))
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    let msgs = messages(&resp.text().await.unwrap());
    assert_eq!(msgs.len(), 2);
    assert!(msgs.iter().all(|m| m["error"]["code"] == -32051));
    assert!(seen.methods().is_empty());
    proxy.shutdown().await;
}

/// A 2024-11-05 server: GET /sse announces `/messages?sessionId=s1`; POSTs
/// there are accepted with 202 and answered on the stream.
#[derive(Clone)]
struct Legacy {
    tx: Arc<Mutex<Option<mpsc::UnboundedSender<Value>>>>,
    seen: Seen,
    base: Arc<Mutex<String>>,
}

async fn legacy_sse(
    State(s): State<Legacy>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    *s.tx.lock().unwrap() = Some(tx);
    let endpoint = format!("{}/messages?sessionId=s1", s.base.lock().unwrap());
    let first =
        futures_util::stream::once(
            async move { Ok(Event::default().event("endpoint").data(endpoint)) },
        );
    let rest =
        tokio_stream_from(rx).map(|v| Ok(Event::default().event("message").data(v.to_string())));
    Sse::new(first.chain(rest))
}

fn tokio_stream_from(
    mut rx: mpsc::UnboundedReceiver<Value>,
) -> impl futures_util::Stream<Item = Value> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn legacy_post(State(s): State<Legacy>, Json(msg): Json<Value>) -> axum::http::StatusCode {
    s.seen.0.lock().unwrap().push(msg.clone());
    if let (Some(reply), Some(tx)) = (answer(&msg), s.tx.lock().unwrap().as_ref()) {
        let _ = tx.send(reply);
    }
    axum::http::StatusCode::ACCEPTED
}

async fn start_legacy_upstream() -> (std::net::SocketAddr, Legacy) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Legacy {
        tx: Arc::default(),
        seen: Seen::default(),
        // An absolute endpoint naming the upstream: the proxy must hide it.
        base: Arc::new(Mutex::new(format!("http://{addr}"))),
    };
    let app = Router::new()
        .route("/sse", get(legacy_sse))
        .route("/messages", routing::post(legacy_post))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, state)
}

async fn open_legacy_stream(base: &str) -> EventReader {
    let stream = reqwest::Client::new()
        .get(format!("{base}/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    EventReader {
        events: Box::pin(stream.bytes_stream()),
        buf: String::new(),
    }
}

/// The tool names in a list answer read from the stream.
async fn listed_names(reader: &mut EventReader, endpoint: &str, id: u32) -> Vec<String> {
    let list = post(endpoint)
        .body(json!({"jsonrpc":"2.0","id":id,"method":"tools/list"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 202);
    let listed = messages(&reader.next_event().await);
    assert_eq!(listed[0]["id"], id);
    listed[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every answer of a 2024-11-05 session arrives on one GET stream that can
/// stay open for hours. A policy reload must reach it: the stream used to
/// keep the policy snapshot taken when it opened.
#[tokio::test]
async fn a_policy_reload_reaches_a_stream_already_open() {
    tls_init();
    let (addr, _state) = start_legacy_upstream().await;
    let dir = std::env::temp_dir().join(format!("portcullis-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    let write = |names: &str| {
        let yaml = format!(
            "listener: {{addr: '127.0.0.1:0'}}\nadmin: {{addr: '127.0.0.1:0'}}\nupstream: {{url: 'http://{addr}'}}\nfilter_engine: {{reload_interval: 50ms}}\npolicy:\n  rules:\n    - {{name: hide, action: deny, methods: [tools/call], names: [{names}]}}\n"
        );
        std::fs::write(&path, yaml).unwrap();
    };
    write("delete_file");
    let proxy = portcullis::runtime::start_from_file(&path).await.unwrap();
    let base = format!("http://{}", proxy.proxy_addr);
    let mut reader = open_legacy_stream(&base).await;
    reader.next_event().await; // endpoint
    let endpoint = format!("{base}/messages?sessionId=s1");
    assert_eq!(listed_names(&mut reader, &endpoint, 1).await, ["echo"]);

    write("'delete_file', 'echo'");
    let metrics = format!("http://{}/metrics", proxy.admin_addr);
    let reloaded = eventually_async(|| async {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        text.contains(r#"portcullis_filter_reloads_total{result="success"} 1"#)
    })
    .await;
    assert!(reloaded, "the config change was not reloaded");
    assert_eq!(
        listed_names(&mut reader, &endpoint, 2).await,
        Vec::<String>::new(),
        "the open stream must judge answers by the policy now in force"
    );
    proxy.shutdown_token().cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn eventually_async<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn legacy_http_sse_endpoint_is_rewritten_and_denials_arrive_on_the_stream() {
    let (addr, state) = start_legacy_upstream().await;
    let proxy = proxy(addr).await;
    let base = format!("http://{}", proxy.proxy_addr);
    let mut reader = open_legacy_stream(&base).await;
    let endpoint_event = reader.next_event().await;
    assert!(
        endpoint_event.contains("event: endpoint"),
        "{endpoint_event}"
    );
    assert!(
        endpoint_event.contains("data: /messages?sessionId=s1"),
        "rewritten to relative: {endpoint_event}"
    );
    assert!(
        !endpoint_event.contains(&addr.to_string()),
        "upstream address leaked: {endpoint_event}"
    );

    let endpoint = format!("{base}/messages?sessionId=s1");
    let list = post(&endpoint)
        .body(json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 202);
    let listed = messages(&reader.next_event().await);
    assert_eq!(
        listed[0]["result"]["tools"],
        json!([{"name": "echo"}]),
        "list on the legacy stream is filtered"
    );

    let denied = post(&endpoint)
        .body(
            json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_file"}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        denied.status(),
        202,
        "legacy clients expect 202 and read answers from the stream"
    );
    let error = messages(&reader.next_event().await);
    assert_eq!(error[0]["id"], 2);
    assert_eq!(error[0]["error"]["code"], -32051);
    assert_eq!(
        state.seen.methods(),
        vec!["tools/list"],
        "denied call never forwarded"
    );
    proxy.shutdown_token().cancel();
}

struct EventReader {
    events:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl EventReader {
    async fn next_event(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                return self.buf.drain(..end + 2).collect();
            }
            let chunk = tokio::time::timeout(Duration::from_secs(3), self.events.next())
                .await
                .expect("event in time")
                .expect("stream open")
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// A batch of a client response (which the upstream acknowledges with 202)
/// and a denied call: the denial must not ride in the 202, whose body
/// clients discard, whatever content type the upstream put on it.
#[tokio::test]
async fn a_denial_never_rides_in_a_202() {
    for content_type in ["application/json", "text/plain", ""] {
        let seen = Seen::default();
        let recorded = seen.clone();
        let app = Router::new().route(
            "/mcp",
            routing::post(move |Json(body): Json<Value>| {
                let recorded = recorded.clone();
                async move {
                    recorded.0.lock().unwrap().push(body);
                    let mut resp = axum::http::Response::new(axum::body::Body::empty());
                    *resp.status_mut() = axum::http::StatusCode::ACCEPTED;
                    if !content_type.is_empty() {
                        resp.headers_mut()
                            .insert("content-type", content_type.parse().unwrap());
                    }
                    resp
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let proxy = proxy(addr).await;
        let batch = json!([
            {"jsonrpc": "2.0", "id": "srv-1", "result": {}},
            {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "delete_file", "arguments": {}}},
        ]);
        let resp = post(&mcp_url(&proxy))
            .header("mcp-protocol-version", "2025-03-26")
            .body(batch.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "content type {content_type:?}");
        let msgs = messages(&resp.text().await.unwrap());
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["id"], 7);
        assert_eq!(msgs[0]["error"]["code"], -32051);
        assert_eq!(
            seen.0.lock().unwrap().len(),
            1,
            "the response was forwarded"
        );
        proxy.shutdown().await;
    }
}
