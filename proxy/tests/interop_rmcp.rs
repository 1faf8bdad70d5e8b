//! The rmcp client against a real non-Rust server (the TypeScript
//! `server-everything`) through Portcullis. Run by `make test` through
//! `proxy/tests/interop/run.sh`, which starts both and sets
//! `PORTCULLIS_INTEROP_URL`; ignored in a plain `cargo test`.

use std::time::Instant;

use rmcp::{
    model::{CallToolRequestParams, ProgressNotificationParam},
    service::NotificationContext,
    transport::StreamableHttpClientTransport,
    ClientHandler, RoleClient, ServiceError, ServiceExt,
};
use serde_json::json;
use tokio::sync::mpsc;

struct Progress(mpsc::UnboundedSender<Instant>);

impl ClientHandler for Progress {
    async fn on_progress(&self, _: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        let _ = self.0.send(Instant::now());
    }
}

fn args(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs server-everything and portcullis started by interop/run.sh"]
async fn rmcp_client_through_portcullis_to_server_everything() {
    let url = std::env::var("PORTCULLIS_INTEROP_URL").expect("PORTCULLIS_INTEROP_URL");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = Progress(tx)
        .serve(StreamableHttpClientTransport::from_uri(url))
        .await
        .expect("initialize");

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"echo"), "{names:?}");
    assert!(!names.contains(&"get-env"), "denied tool listed: {names:?}");

    let echo = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(args(json!({"message": "from rmcp"}))),
        )
        .await
        .unwrap();
    assert!(serde_json::to_string(&echo.content)
        .unwrap()
        .contains("from rmcp"));

    match client
        .call_tool(CallToolRequestParams::new("get-env"))
        .await
    {
        Err(ServiceError::McpError(e)) => assert_eq!(e.code.0, -32051, "{e:?}"),
        other => panic!("expected denial, got {other:?}"),
    }

    let start = Instant::now();
    let res = client
        .call_tool(
            CallToolRequestParams::new("trigger-long-running-operation")
                .with_arguments(args(json!({"duration": 2, "steps": 4}))),
        )
        .await
        .unwrap();
    let done = Instant::now();
    assert_ne!(res.is_error, Some(true));
    let first = rx.try_recv().expect("progress notifications arrived");
    assert!(
        first.duration_since(start).as_millis() + 500 < done.duration_since(start).as_millis(),
        "first progress must arrive well before the result"
    );
    client.cancel().await.unwrap();
}
