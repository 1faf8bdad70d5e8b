//! The official Rust SDK (rmcp) as client, through Portcullis, to the rmcp
//! example server: the path a real agent takes.

mod support;

use rmcp::{
    model::CallToolRequestParams, transport::StreamableHttpClientTransport, ServiceError,
    ServiceExt,
};
use support::*;

fn args(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[tokio::test]
async fn allowed_calls_work_and_denied_calls_fail_closed() {
    let upstream = Upstream::start();
    let proxy = proxy(upstream.addr).await;
    let client =
        ().serve(StreamableHttpClientTransport::from_uri(mcp_url(&proxy)))
            .await
            .expect("initialize through portcullis");

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"echo"), "{names:?}");
    assert!(names.contains(&"slow_count"), "{names:?}");
    assert!(
        !names.contains(&"delete_file"),
        "denied tool must be hidden: {names:?}"
    );

    let echo = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(args(serde_json::json!({"text": "hi"}))),
        )
        .await
        .unwrap();
    let text = serde_json::to_string(&echo.content).unwrap();
    assert!(text.contains("hi"), "{text}");

    let posts_before = upstream.posts();
    let denied = client
        .call_tool(
            CallToolRequestParams::new("delete_file")
                .with_arguments(args(serde_json::json!({"path": "/etc"}))),
        )
        .await;
    match denied {
        Err(ServiceError::McpError(e)) => {
            assert_eq!(e.code.0, -32051);
            assert!(e.message.contains("static:no-delete"), "{}", e.message);
        }
        other => panic!("expected a policy denial, got {other:?}"),
    }
    assert_eq!(
        upstream.posts(),
        posts_before,
        "a denied call must not reach the upstream"
    );

    client.cancel().await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test]
async fn metrics_count_decisions() {
    let upstream = Upstream::start();
    let proxy = proxy(upstream.addr).await;
    let client = ().serve(StreamableHttpClientTransport::from_uri(mcp_url(&proxy))).await.unwrap();
    let _ = client
        .call_tool(
            CallToolRequestParams::new("delete_file")
                .with_arguments(args(serde_json::json!({"path": "/x"}))),
        )
        .await;
    let metrics = reqwest::get(format!("http://{}/metrics", proxy.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"portcullis_requests_total{decision="deny",method="tools/call",tool="delete_file"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics
        .contains(r#"portcullis_requests_total{decision="allow",method="initialize",tool=""} 1"#));
    assert!(metrics.contains("portcullis_request_duration_seconds_bucket"));
    let ready = reqwest::get(format!("http://{}/readyz", proxy.admin_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    client.cancel().await.unwrap();
    proxy.shutdown().await;
}
