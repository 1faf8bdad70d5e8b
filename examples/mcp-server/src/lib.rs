//! An example MCP server for the Portcullis demo and tests.
//!
//! It exposes a handful of tools with different risk levels, so that a
//! policy has something to allow and something to deny:
//! - `echo` and `read_file` are harmless;
//! - `delete_file` is destructive (annotated `destructiveHint`);
//! - `slow_count` streams progress notifications over SSE for a while,
//!   which lets tests check that the proxy does not buffer streams.

use std::{sync::Arc, time::Duration};

use rmcp::{
    handler::server::wrapper::Parameters,
    model::{
        CallToolResult, ContentBlock, ProgressNotificationParam, RequestMetaObject,
        ServerCapabilities, ServerConfig,
    },
    schemars, tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
    },
    ErrorData, Peer, RoleServer, ServerHandler,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EchoArgs {
    /// Text to send back.
    pub text: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct PathArgs {
    /// A path inside the demo's virtual file system.
    pub path: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct CountArgs {
    /// How many progress steps to send (default 5, at most 100).
    pub steps: Option<u32>,
    /// Pause between steps in milliseconds (default 500, at most 5000).
    pub interval_ms: Option<u64>,
}

/// The example server. Its "files" are fixed strings: nothing touches disk.
#[derive(Debug, Clone, Default)]
pub struct ExampleServer;

#[tool_router]
impl ExampleServer {
    #[tool(
        description = "Echo the given text back",
        annotations(read_only_hint = true)
    )]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(
        description = "Read a file from the demo file system",
        annotations(read_only_hint = true)
    )]
    fn read_file(&self, Parameters(PathArgs { path }): Parameters<PathArgs>) -> String {
        format!("contents of {path}: quarterly numbers look fine")
    }

    #[tool(
        description = "Delete a file (dangerous)",
        annotations(destructive_hint = true)
    )]
    fn delete_file(&self, Parameters(PathArgs { path }): Parameters<PathArgs>) -> String {
        format!("deleted {path}")
    }

    #[tool(description = "Count slowly, sending a progress notification at every step")]
    async fn slow_count(
        &self,
        Parameters(args): Parameters<CountArgs>,
        meta: RequestMetaObject,
        client: Peer<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let steps = args.steps.unwrap_or(5).min(100);
        let interval = Duration::from_millis(args.interval_ms.unwrap_or(500).min(5000));
        let token = meta.get_progress_token();
        for step in 1..=steps {
            if let Some(token) = &token {
                let param = ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(steps))
                    .with_message(format!("step {step} of {steps}"));
                // A client that went away is not an error for the tool.
                let _ = client.notify_progress(param).await;
            }
            tokio::time::sleep(interval).await;
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "counted to {steps}"
        ))]))
    }
}

#[tool_handler]
impl ServerHandler for ExampleServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "Portcullis example server: echo, read_file, delete_file, slow_count",
        )
    }
}

/// The Streamable HTTP service for the example server, mounted at `/mcp`.
pub fn router(ct: CancellationToken) -> axum::Router {
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(ct)
        .with_sse_keep_alive(None);
    let service: StreamableHttpService<ExampleServer, LocalSessionManager> =
        StreamableHttpService::new(
            || Ok(ExampleServer),
            Arc::new(LocalSessionManager::default()),
            config,
        );
    axum::Router::new().nest_service("/mcp", service)
}

/// Serves the example server on `listener` until `ct` is cancelled.
pub async fn serve(listener: TcpListener, ct: CancellationToken) -> std::io::Result<()> {
    let app = router(ct.child_token());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { ct.cancelled_owned().await })
        .await
}
