//! SSE is relayed event by event, broken streams end in clean errors, and
//! a drain waits for streams in flight.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::*;

/// Reads an SSE response, returning each JSON-RPC message with the time it
/// arrived, measured from `start`.
async fn timed_messages(
    resp: reqwest::Response,
    start: Instant,
) -> Vec<(Duration, serde_json::Value)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for m in messages(&event) {
                out.push((start.elapsed(), m));
            }
        }
    }
    out
}

#[tokio::test]
async fn first_event_arrives_long_before_the_tool_finishes() {
    let upstream = Upstream::start();
    let proxy = proxy(upstream.addr).await;
    let start = Instant::now();
    let resp = modern_call(
        &mcp_url(&proxy),
        1,
        "slow_count",
        serde_json::json!({"steps": 4, "interval_ms": 400}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let msgs = timed_messages(resp, start).await;
    let first_progress = msgs
        .iter()
        .find(|(_, m)| m["method"] == "notifications/progress")
        .map(|(t, _)| *t)
        .expect("progress notifications");
    let result = msgs
        .iter()
        .find(|(_, m)| m["id"] == 1)
        .map(|(t, _)| *t)
        .expect("final result");
    // The tool runs for ~1.6 s; its first step is sent at once.
    assert!(
        result >= Duration::from_millis(1500),
        "result at {result:?}"
    );
    assert!(
        first_progress + Duration::from_millis(1000) < result,
        "first progress at {first_progress:?}, result at {result:?}: the stream was buffered"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_killed_mid_stream_gives_clean_error_and_recovery() {
    let upstream = Upstream::start();
    let addr = upstream.addr;
    let proxy = proxy(addr).await;
    let start = Instant::now();
    let resp = modern_call(
        &mcp_url(&proxy),
        7,
        "slow_count",
        serde_json::json!({"steps": 20, "interval_ms": 200}),
    )
    .send()
    .await
    .unwrap();
    let reader = tokio::spawn(timed_messages(resp, start));
    tokio::time::sleep(Duration::from_millis(500)).await;
    upstream.kill();
    let msgs = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the client must not hang")
        .unwrap();
    let (_, last) = msgs.last().expect("some messages");
    assert_eq!(last["id"], 7, "the pending request gets an answer: {last}");
    assert_eq!(last["error"]["code"], -32052);
    assert!(msgs
        .iter()
        .any(|(_, m)| m["method"] == "notifications/progress"));

    // The upstream comes back on the same port; the next call works.
    let upstream = Upstream::start_on(addr);
    let ok = modern_call(
        &mcp_url(&proxy),
        8,
        "echo",
        serde_json::json!({"text": "back"}),
    )
    .send()
    .await
    .unwrap();
    let body = ok.text().await.unwrap();
    assert!(body.contains("back"), "{body}");
    drop(upstream);
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_streams_in_flight() {
    let upstream = Upstream::start();
    let proxy = proxy(upstream.addr).await;
    let admin = proxy.admin_addr;
    let start = Instant::now();
    let resp = modern_call(
        &mcp_url(&proxy),
        3,
        "slow_count",
        serde_json::json!({"steps": 3, "interval_ms": 300}),
    )
    .send()
    .await
    .unwrap();
    let reader = tokio::spawn(timed_messages(resp, start));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let token = proxy.shutdown_token();
    let stopping = tokio::spawn(proxy.wait());
    token.cancel();
    // While draining, readiness is withdrawn but the stream goes on.
    let mut draining = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("http://{admin}/readyz")).await {
            if r.status() == 503 {
                draining = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(draining, "/readyz must report draining");
    assert!(!stopping.is_finished(), "the drain waits for the stream");
    let msgs = reader.await.unwrap();
    let (_, last) = msgs.last().unwrap();
    assert_eq!(last["id"], 3);
    assert!(
        last["result"].is_object(),
        "stream completed during drain: {last}"
    );
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("drain finishes once the stream is done")
        .unwrap();
}

/// The start of an answer that a held-open upstream never finishes.
const HELD_PREFIX: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"x","text":"ab"#;

/// An upstream that answers every POST with `application/json`, writes
/// [`HELD_PREFIX`], then holds the body open without ever ending it.
async fn start_held_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     transfer-encoding: chunked\r\n\r\n{:x}\r\n{HELD_PREFIX}\r\n",
                    HELD_PREFIX.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(sock);
            });
        }
    });
    addr
}

/// A 2025-06-18 request (no routing headers needed) with id 1.
fn held_request(url: &str, method: &str, params: serde_json::Value) -> reqwest::RequestBuilder {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    post(url)
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string())
}

const HELD_TIMEOUT: Duration = Duration::from_millis(1500);

async fn held_proxy() -> portcullis::Running {
    let upstream = start_held_upstream().await;
    let mut cfg = config(upstream, DENY_DELETE, "");
    cfg.upstream.request_timeout = HELD_TIMEOUT;
    portcullis::start(cfg).await.unwrap()
}

#[tokio::test]
async fn an_endless_json_answer_nobody_inspects_arrives_as_it_is_written() {
    arrives_as_written("resources/read", serde_json::json!({"uri": "x"})).await;
}

/// With no result hook in force, a `tools/call` answer passes as it
/// arrives too (its bytes are only watched for a task it creates).
#[tokio::test]
async fn an_endless_tools_call_answer_without_result_hooks_arrives_as_it_is_written() {
    let params = serde_json::json!({"name": "echo", "arguments": {"text": "x"}});
    arrives_as_written("tools/call", params).await;
}

async fn arrives_as_written(method: &str, params: serde_json::Value) {
    let proxy = held_proxy().await;
    let start = Instant::now();
    let resp = held_request(&mcp_url(&proxy), method, params)
        .send()
        .await
        .unwrap();
    if resp.status() != 200 {
        panic!("{}: {}", resp.status(), resp.text().await.unwrap());
    }
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut body = resp.bytes_stream();
    let mut got = Vec::new();
    while got.len() < HELD_PREFIX.len() {
        match body.next().await {
            Some(Ok(chunk)) => got.extend_from_slice(&chunk),
            other => panic!("body ended early: {other:?}"),
        }
    }
    let first = start.elapsed();
    assert_eq!(String::from_utf8_lossy(&got), HELD_PREFIX);
    assert!(first < HELD_TIMEOUT, "first bytes after {first:?}");
    // A body that stops making progress for a whole request_timeout is cut
    // (the client sees a broken body), not held open forever.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(end.is_ok(), "a stalled body was never cut");
    assert!(start.elapsed() >= HELD_TIMEOUT, "cut too early");
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_endless_json_list_is_still_bounded_by_the_timeout() {
    let proxy = held_proxy().await;
    let start = Instant::now();
    let resp = held_request(&mcp_url(&proxy), "tools/list", serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .expect("the list answer never ended")
        .unwrap();
    assert!(start.elapsed() >= HELD_TIMEOUT);
    assert!(!text.contains("contents"), "raw bytes relayed: {text}");
    assert_eq!(status, 504, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], -32053, "{text}");
    assert_eq!(v["id"], 1);
    proxy.shutdown().await;
}
