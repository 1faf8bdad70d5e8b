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
