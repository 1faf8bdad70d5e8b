//! The upstream every configuration forwards to: a small, fast MCP server
//! with one `echo` tool that answers in plain JSON (no SSE), so that the
//! figures measure the proxies and not the server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const MAX_BODY: usize = 1 << 20;

#[derive(Deserialize)]
struct Rpc<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    method: String,
    #[serde(default)]
    params: Option<Params>,
}

#[derive(Deserialize, Default)]
struct Params {
    name: Option<String>,
    #[serde(default)]
    arguments: Value,
}

/// What `tools/list` answers: `echo` and `delete_file`, then fillers up
/// to the length asked for (the scaling curves' list sizes). Fillers
/// alternate `read_N` and `write_N`, so a list filter that allows
/// `read_*` keeps about half of them. Serialized once: the upstream
/// should cost the machine little next to the proxy under test.
pub struct Catalog {
    tools: String,
}

impl Catalog {
    /// `len` tools in all (at least the two real ones).
    pub fn new(len: usize) -> Self {
        let mut tools = vec![
            json!({
                "name": "echo",
                "description": "Returns its text argument",
                "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
            }),
            json!({
                "name": "delete_file",
                "description": "Pretends to delete a file: what every policy under test must refuse",
                "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}
            }),
        ];
        for i in 2..len {
            let verb = if i % 2 == 0 { "read" } else { "write" };
            tools.push(json!({
                "name": format!("{verb}_{i}"),
                "description": format!("Filler tool {i} of the list-size curve; never called"),
                "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
            }));
        }
        Self {
            tools: json!({ "tools": tools }).to_string(),
        }
    }

    /// How many tools a list filter allowing `echo` and `read_*` keeps.
    pub fn visible_to_readers(len: usize) -> usize {
        1 + (2..len).filter(|i| i % 2 == 0).count()
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new(2)
    }
}

/// Serves until the process is killed; the harness owns its lifetime.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    serve_on(TcpListener::bind(addr).await?).await
}

/// As `serve`, with `tools/list` answering `tools` tools.
pub async fn serve_catalog(addr: SocketAddr, tools: usize) -> anyhow::Result<()> {
    serve_catalog_on(TcpListener::bind(addr).await?, Catalog::new(tools)).await
}

pub async fn serve_on(listener: TcpListener) -> anyhow::Result<()> {
    serve_catalog_on(listener, Catalog::default()).await
}

pub async fn serve_catalog_on(listener: TcpListener, catalog: Catalog) -> anyhow::Result<()> {
    let catalog = Arc::new(catalog);
    loop {
        let (stream, _) = listener.accept().await?;
        // Small request/response pairs: Nagle would add 40 ms stalls.
        stream.set_nodelay(true)?;
        let catalog = catalog.clone();
        tokio::spawn(async move {
            let handle = move |req| handle(req, catalog.clone());
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle));
            // A client that goes away mid-request is normal at the end of a run.
            let _ = conn.await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    catalog: Arc<Catalog>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new()));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::PAYLOAD_TOO_LARGE, Bytes::new())),
    };
    Ok(answer_from(&body, &catalog))
}

#[cfg(test)]
fn answer(body: &[u8]) -> Response<Full<Bytes>> {
    answer_from(body, &Catalog::default())
}

/// One JSON-RPC message in, one JSON answer out.
fn answer_from(body: &[u8], catalog: &Catalog) -> Response<Full<Bytes>> {
    let rpc: Rpc = match serde_json::from_slice(body) {
        Ok(rpc) => rpc,
        Err(e) => {
            let err =
                json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":e.to_string()}});
            return reply(StatusCode::BAD_REQUEST, Bytes::from(err.to_string()));
        }
    };
    // Notifications and responses get 202 with no body, as the transport says.
    let Some(id) = rpc.id else {
        return reply(StatusCode::ACCEPTED, Bytes::new());
    };
    if rpc.method == "tools/list" {
        // Spliced, not rebuilt: the list is serialized once.
        let msg = format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{}}}"#,
            id.get(),
            catalog.tools
        );
        return reply(StatusCode::OK, Bytes::from(msg));
    }
    let params = rpc.params.unwrap_or_default();
    let outcome = match rpc.method.as_str() {
        "initialize" => Ok(json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "bench-upstream", "version": env!("CARGO_PKG_VERSION")}
        })),
        "tools/call" if params.name.as_deref() == Some("echo") => {
            let text = params.arguments.get("text").cloned().unwrap_or(Value::Null);
            Ok(json!({"content": [{"type": "text", "text": text}], "isError": false}))
        }
        "tools/call" if params.name.as_deref() == Some("delete_file") => {
            Ok(json!({"content": [{"type": "text", "text": "deleted"}], "isError": false}))
        }
        "ping" => Ok(json!({})),
        _ => Err(json!({"code": -32601, "message": "method or tool not found"})),
    };
    let msg = match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    };
    reply(StatusCode::OK, Bytes::from(msg.to_string()))
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(resp: Response<Full<Bytes>>) -> Value {
        let bytes = futures_body(resp);
        serde_json::from_slice(&bytes).unwrap()
    }

    fn futures_body(resp: Response<Full<Bytes>>) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { resp.into_body().collect().await.unwrap().to_bytes() })
    }

    #[test]
    fn echo_returns_the_text_argument() {
        let resp = answer(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#);
        assert_eq!(resp.status(), StatusCode::OK);
        let v = body_of(resp);
        assert_eq!(v["id"], 7);
        assert_eq!(v["result"]["content"][0]["text"], "hi");
    }

    #[test]
    fn unknown_tool_is_a_json_rpc_error() {
        let v = body_of(answer(
            br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"rm"}}"#,
        ));
        assert_eq!(v["id"], "a");
        assert_eq!(v["error"]["code"], -32601);
    }

    #[test]
    fn the_list_has_the_length_asked_for_and_half_its_fillers_are_read_tools() {
        let body = br#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;
        let v = body_of(answer(body));
        assert_eq!(v["id"], 3);
        let names: Vec<&str> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["echo", "delete_file"]);
        for len in [2, 10, 101] {
            let v = body_of(answer_from(body, &Catalog::new(len)));
            let tools = v["result"]["tools"].as_array().unwrap();
            assert_eq!(tools.len(), len);
            let readers = tools
                .iter()
                .filter(|t| {
                    let n = t["name"].as_str().unwrap();
                    n == "echo" || n.starts_with("read_")
                })
                .count();
            assert_eq!(readers, Catalog::visible_to_readers(len), "{len}");
        }
    }

    #[test]
    fn notification_is_accepted_without_body() {
        let resp = answer(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        let resp = answer(b"{not json");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body_of(resp)["error"]["code"], -32700);
    }
}
