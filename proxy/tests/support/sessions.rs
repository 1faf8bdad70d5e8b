//! A 2025-06-18 client's session through the sidecar, by hand: the
//! requests the session tests repeat.

use serde_json::{json, Value};

pub const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"sessions-test","version":"1"}}}"#;

/// Initializes (sending `old` as the session id, if any) and returns the
/// session id the client was given.
pub async fn initialize(url: &str, old: Option<&str>) -> String {
    let mut req = super::post(url).body(INIT);
    if let Some(old) = old {
        req = req.header("mcp-session-id", old);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let sid = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = resp.text().await.unwrap();
    let resp = super::post(url)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    sid
}

/// Calls the example server's `echo` in session `sid`: the status, the
/// messages and the session id on the answer.
pub async fn echo(url: &str, sid: &str, n: u64) -> (u16, Vec<Value>, Option<String>) {
    let body = json!({"jsonrpc":"2.0","id":n,"method":"tools/call","params":{"name":"echo","arguments":{"text":format!("hello {n}")}}});
    let resp = super::post(url)
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let returned = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    (
        status,
        super::messages(&resp.text().await.unwrap()),
        returned,
    )
}

/// Whether `msgs` hold the echo of call `n`.
pub fn echoed(msgs: &[Value], n: u64) -> bool {
    msgs.iter().any(|m| {
        m["id"] == n && m["result"]["content"][0]["text"].as_str() == Some(&format!("hello {n}"))
    })
}

/// The sidecar's metrics, as text.
pub async fn metrics(proxy: &portcullis::Running) -> String {
    reqwest::get(format!("http://{}/metrics", proxy.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
