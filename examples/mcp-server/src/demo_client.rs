//! The scripted demo client: makes allowed and denied calls through
//! Portcullis with the official Rust SDK, tries two smuggling attacks over
//! raw HTTP, prints what happened, and exits non-zero if anything did not
//! go as a correct sidecar must make it go.

use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use rmcp::{
    model::{CallToolRequestParams, ProgressNotificationParam},
    service::NotificationContext,
    transport::StreamableHttpClientTransport,
    ClientHandler, RoleClient, ServiceError, ServiceExt,
};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// The MCP endpoint, through Portcullis.
    #[arg(long, default_value = "https://localhost:15001/mcp")]
    url: String,
    /// Portcullis's admin address, for the metrics summary.
    #[arg(long, default_value = "http://127.0.0.1:15020")]
    admin: String,
    /// The demo trust domain's CA (PEM).
    #[arg(long)]
    ca: String,
    /// The planner agent's SVID and key (PEM): the one allowed to work.
    #[arg(long)]
    planner: String,
    /// The intern agent's SVID and key (PEM): the one mostly denied.
    #[arg(long)]
    intern: String,
}

/// An HTTP client that presents `svid` (`<prefix>.pem` and `<prefix>.key`)
/// and trusts the demo CA.
fn mtls_client(ca: &str, svid: &str) -> anyhow::Result<reqwest::Client> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let chain =
        CertificateDer::pem_file_iter(format!("{svid}.pem"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(format!("{svid}.key"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()?)
}

async fn connect(
    http: reqwest::Client,
    url: &str,
    start: Instant,
) -> anyhow::Result<rmcp::service::RunningService<RoleClient, Progress>> {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let transport = StreamableHttpClientTransport::with_client(
        http,
        StreamableHttpClientTransportConfig::with_uri(url.to_string()),
    );
    Progress { start }
        .serve(transport)
        .await
        .context("initialize through portcullis")
}

/// Prints progress notifications as they arrive, to show streaming.
struct Progress {
    start: Instant,
}

impl ClientHandler for Progress {
    async fn on_progress(&self, p: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        let msg = p.message.unwrap_or_default();
        println!(
            "          progress at {:>5.2}s: {msg}",
            self.start.elapsed().as_secs_f64()
        );
    }
}

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    // reqwest carries rustls without a provider: the product uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let start = Instant::now();
    let planner_http = mtls_client(&a.ca, &a.planner)?;
    let client = connect(planner_http.clone(), &a.url, start).await?;
    println!(
        "agent spiffe://demo.local/ns/agents/sa/planner connected over mTLS to {}",
        a.url
    );

    let tools = client.list_all_tools().await?;
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    println!("[allow] tools/list -> {}", names.join(", "));
    if names.iter().any(|n| n == "delete_file") {
        bail!("delete_file should have been hidden from tools/list");
    }
    println!("        (delete_file exists upstream but the policy hides it)");

    let echo = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(args(json!({"text": "hello through the portcullis"}))),
        )
        .await?;
    println!(
        "[allow] tools/call echo -> {}",
        serde_json::to_string(&echo.content)?
    );

    expect_denied(
        &client,
        "delete_file",
        json!({"path": "/etc/passwd"}),
        "filter:tool-rbac",
    )
    .await?;

    let read = client
        .call_tool(
            CallToolRequestParams::new("read_file")
                .with_arguments(args(json!({"path": "/srv/data/reports/../q3.txt"}))),
        )
        .await?;
    println!(
        "[allow] tools/call read_file /srv/data/reports/../q3.txt -> {}",
        serde_json::to_string(&read.content)?
    );
    println!("        (arg-guard rewrote the path to the one it checked)");
    expect_denied(
        &client,
        "read_file",
        json!({"path": "/srv/data/../../etc/shadow"}),
        "filter:arg-guard",
    )
    .await?;

    let leak = client
        .call_tool(CallToolRequestParams::new("echo").with_arguments(args(
            json!({"text": "use key AKIAIOSFODNN7EXAMPLE, ask ops@example.com"}),
        )))
        .await?;
    let leaked = serde_json::to_string(&leak.content)?;
    println!("[allow] tools/call echo with secrets -> {leaked}");
    println!("        (the redact filter scrubbed the result)");
    if leaked.contains("AKIAIOSFODNN7EXAMPLE") {
        bail!("the AWS key should have been redacted");
    }

    println!("[allow] tools/call slow_count (streams progress over SSE):");
    let t = Instant::now();
    let count = client
        .call_tool(
            CallToolRequestParams::new("slow_count")
                .with_arguments(args(json!({"steps": 4, "interval_ms": 400}))),
        )
        .await?;
    println!(
        "          result at {:>5.2}s: {}",
        start.elapsed().as_secs_f64(),
        serde_json::to_string(&count.content)?
    );
    println!(
        "          (tool ran {:.2}s; progress arrived while it ran)",
        t.elapsed().as_secs_f64()
    );
    let quick = json!({"steps": 1, "interval_ms": 10});
    client
        .call_tool(CallToolRequestParams::new("slow_count").with_arguments(args(quick.clone())))
        .await?;
    expect_denied(&client, "slow_count", quick, "filter:rate-limit").await?;
    client.cancel().await?;

    intern(&a, start).await?;
    attacks(&planner_http, &a.url).await?;
    metrics(&a.admin).await
}

/// The second agent: same server, different verified identity, different
/// answers.
async fn intern(a: &Args, start: Instant) -> anyhow::Result<()> {
    let client = connect(mtls_client(&a.ca, &a.intern)?, &a.url, start).await?;
    println!("\nagent spiffe://demo.local/ns/agents/sa/intern connected over mTLS");
    let tools = client.list_all_tools().await?;
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    println!("[allow] tools/list -> {}", names.join(", "));
    if names.iter().any(|n| n == "slow_count") {
        bail!("the intern should not see slow_count");
    }
    expect_denied(
        &client,
        "slow_count",
        json!({"steps": 1}),
        "spiffe://demo.local/ns/agents/sa/intern may not use slow_count",
    )
    .await?;
    client.cancel().await?;
    Ok(())
}

async fn expect_denied(
    client: &rmcp::service::RunningService<RoleClient, Progress>,
    tool: &str,
    arguments: Value,
    by: &str,
) -> anyhow::Result<()> {
    let shown = arguments.to_string();
    match client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args(arguments)))
        .await
    {
        Err(ServiceError::McpError(e)) if e.code.0 == -32051 && e.message.contains(by) => {
            println!(
                "[deny ] tools/call {tool} {shown} -> error {}: {}",
                e.code.0, e.message
            );
            Ok(())
        }
        other => bail!("{tool} should have been denied by {by}, got {other:?}"),
    }
}

/// Two attempts to make the sidecar and the server read different calls.
async fn attacks(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let smuggled = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_file","arguments":{"path":"/"}}}"#;
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(smuggled)
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    println!(
        "[deny ] duplicate-key smuggling (name: echo, name: delete_file) -> HTTP {status}, {}",
        body["error"]
    );
    if status != 400 {
        bail!("duplicate keys must be refused");
    }

    let body = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/"},
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}});
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    println!(
        "[deny ] Mcp-Name says echo, body says delete_file -> HTTP {status}, {}",
        body["error"]
    );
    if body["error"]["code"] != -32020 {
        bail!("a header/body mismatch must be refused with -32020");
    }
    Ok(())
}

async fn metrics(admin: &str) -> anyhow::Result<()> {
    let text = reqwest::get(format!("{admin}/metrics"))
        .await?
        .text()
        .await?;
    println!("\nportcullis metrics ({admin}/metrics):");
    for line in text.lines().filter(|l| {
        l.starts_with("portcullis_requests_total")
            || l.starts_with("portcullis_rejected_total")
            || l.starts_with("portcullis_list_items_hidden_total")
    }) {
        println!("  {line}");
    }
    Ok(())
}
