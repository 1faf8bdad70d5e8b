//! The upstream every configuration forwards to: a small, fast MCP server
//! with one `echo` tool that answers in plain JSON (no SSE), so that the
//! figures measure the proxies and not the server.

use std::convert::Infallible;
use std::net::SocketAddr;

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

/// Serves until the process is killed; the harness owns its lifetime.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    serve_on(TcpListener::bind(addr).await?).await
}

pub async fn serve_on(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        // Small request/response pairs: Nagle would add 40 ms stalls.
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle));
            // A client that goes away mid-request is normal at the end of a run.
            let _ = conn.await;
        });
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new()));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::PAYLOAD_TOO_LARGE, Bytes::new())),
    };
    Ok(answer(&body))
}

/// One JSON-RPC message in, one JSON answer out.
fn answer(body: &[u8]) -> Response<Full<Bytes>> {
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
    let params = rpc.params.unwrap_or_default();
    let outcome = match rpc.method.as_str() {
        "initialize" => Ok(json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "bench-upstream", "version": env!("CARGO_PKG_VERSION")}
        })),
        "tools/list" => Ok(json!({"tools": [{
            "name": "echo",
            "description": "Returns its text argument",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        }, {
            "name": "delete_file",
            "description": "Pretends to delete a file: what every policy under test must refuse",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}
        }]})),
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
