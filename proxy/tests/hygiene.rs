//! Bad input gets a clear error, and nothing bad reaches the upstream.

mod support;

use support::*;

async fn json(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

#[tokio::test]
async fn duplicate_keys_are_rejected_before_forwarding() {
    let upstream = Upstream::start();
    let proxy = proxy(upstream.addr).await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","name":"delete_file","arguments":{}}}"#;
    let (status, v) = json(post(&mcp_url(&proxy)).body(body).send().await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], -32600);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("duplicate key"));
    assert_eq!(upstream.posts(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn oversized_body_gets_413_and_nothing_is_forwarded() {
    let upstream = Upstream::start();
    let proxy = proxy(upstream.addr).await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "a".repeat(10 * 1024 * 1024)
    );
    let (status, v) = json(post(&mcp_url(&proxy)).body(big).send().await.unwrap()).await;
    assert_eq!(status, 413);
    assert_eq!(v["error"]["code"], -32054);

    // Without a Content-Length the limit must still hold.
    let chunks = futures_util::stream::iter(
        (0..11).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024 * 1024])),
    );
    let resp = post(&mcp_url(&proxy))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(upstream.posts(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn malformed_and_too_deep_json_are_refused() {
    let upstream = Upstream::start();
    let proxy = proxy(upstream.addr).await;
    let (status, v) = json(
        post(&mcp_url(&proxy))
            .body("{\"jsonrpc\":")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, v["error"]["code"].as_i64()), (400, Some(-32700)));
    let deep = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"x\":{}1{}}}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    let (status, v) = json(post(&mcp_url(&proxy)).body(deep).send().await.unwrap()).await;
    assert_eq!((status, v["error"]["code"].as_i64()), (400, Some(-32600)));
    assert!(v["error"]["message"].as_str().unwrap().contains("nesting"));
    let gz = post(&mcp_url(&proxy))
        .header("content-encoding", "gzip")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), 415);
    assert_eq!(upstream.posts(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn dns_rebinding_is_refused() {
    let upstream = Upstream::start();
    let proxy = proxy(upstream.addr).await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let evil = post(&mcp_url(&proxy))
        .header("host", "evil.example.com")
        .header("origin", "http://evil.example.com")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    let (_, v) = json(evil).await;
    assert_eq!(v["error"]["code"], -32055);
    let bad_origin = post(&mcp_url(&proxy))
        .header("origin", "https://attacker.test")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_origin.status(), 403);
    assert_eq!(upstream.posts(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn modern_header_mismatch_gets_32020_and_is_not_forwarded() {
    let upstream = Upstream::start();
    let proxy = proxy(upstream.addr).await;
    // Headers claim the harmless tool, the body names the dangerous one.
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "delete_file", "arguments": {"path": "/"}, "_meta": modern_meta()}
    });
    let resp = post(&mcp_url(&proxy))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let (status, v) = json(resp).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], -32020);
    assert_eq!(upstream.posts(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn modern_calls_are_forwarded_and_policed() {
    let upstream = Upstream::start();
    let proxy = proxy(upstream.addr).await;
    let ok = modern_call(
        &mcp_url(&proxy),
        1,
        "echo",
        serde_json::json!({"text": "sessionless"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().get("mcp-session-id").is_none());
    let msgs = messages(&ok.text().await.unwrap());
    let result = msgs.iter().find(|m| m["id"] == 1).expect("a response");
    assert!(
        result["result"].to_string().contains("sessionless"),
        "{result}"
    );

    let denied = modern_call(
        &mcp_url(&proxy),
        2,
        "delete_file",
        serde_json::json!({"path": "/"}),
    )
    .send()
    .await
    .unwrap();
    let msgs = messages(&denied.text().await.unwrap());
    assert_eq!(msgs[0]["error"]["code"], -32051);
    assert_eq!(msgs[0]["id"], 2);
    assert_eq!(upstream.posts(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_down_gives_a_json_rpc_error_not_a_hang() {
    // Bind and drop to get a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = proxy(dead).await;
    let resp = modern_call(
        &mcp_url(&proxy),
        9,
        "echo",
        serde_json::json!({"text": "x"}),
    )
    .send()
    .await
    .unwrap();
    let (status, v) = json(resp).await;
    assert_eq!(status, 502);
    assert_eq!(v["error"]["code"], -32052);
    assert_eq!(v["id"], 9);
    proxy.shutdown().await;
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start();
    let mut cfg = config(upstream.addr, DENY_DELETE, "");
    cfg.listener.header_read_timeout = std::time::Duration::from_millis(300);
    cfg.listener.idle_timeout = std::time::Duration::from_millis(300);
    let proxy = portcullis::start(cfg).await.unwrap();

    // A client that never finishes its headers is cut off.
    let mut slow = tokio::net::TcpStream::connect(proxy.proxy_addr)
        .await
        .unwrap();
    slow.write_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        slow.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "connection with slow headers must be closed");

    // A keep-alive connection with nothing in flight is closed when idle.
    let mut idle = tokio::net::TcpStream::connect(proxy.proxy_addr)
        .await
        .unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(8),
        idle.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "idle connection must be closed");
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1"),
        "it was answered first"
    );
    proxy.shutdown().await;
}
