//! Envoy's side of the WASM comparison (benchmark configuration f).
//!
//! It does what portcullis configuration d asks of its `tool-rbac` and
//! `arg-guard` filters, and no more: parse the JSON-RPC body, allow only
//! `tools/call` of the tools in the allowlist, and check one argument
//! (`/text`: at most 1024 characters, and no `drop table`). Anything else
//! gets 403 before a byte reaches the upstream, which is why Envoy must be
//! told `allow_on_headers_stop_iteration`.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use serde::Deserialize;

const ALLOWED_TOOLS: &[&str] = &["echo"];
const MAX_TEXT_CHARS: usize = 1024;
const DENIED_PHRASE: &str = "drop table";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(McpGuard) });
}}

struct McpGuard;

impl Context for McpGuard {}

impl HttpContext for McpGuard {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            self.deny("a tool call needs a body");
            return Action::Pause;
        }
        // Hold the headers until the body has been checked.
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        match verdict(&body) {
            Ok(()) => Action::Continue,
            Err(reason) => {
                self.deny(reason);
                Action::Pause
            }
        }
    }
}

impl McpGuard {
    fn deny(&self, reason: &str) {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": null,
            "error": {"code": -32001, "message": reason}
        })
        .to_string();
        self.send_http_response(
            403,
            vec![("content-type", "application/json")],
            Some(body.as_bytes()),
        );
    }
}

#[derive(Deserialize)]
struct Rpc {
    method: String,
    #[serde(default)]
    params: Option<Params>,
}

#[derive(Deserialize)]
struct Params {
    name: String,
    #[serde(default)]
    arguments: serde_json::Map<String, serde_json::Value>,
}

/// The decision, apart from the host so that it can be tested natively.
pub fn verdict(body: &[u8]) -> Result<(), &'static str> {
    let rpc: Rpc = serde_json::from_slice(body).map_err(|_| "body is not a JSON-RPC request")?;
    if rpc.method != "tools/call" {
        return Err("only tools/call is allowed");
    }
    let params = rpc.params.ok_or("tools/call without params")?;
    if !ALLOWED_TOOLS.contains(&params.name.as_str()) {
        return Err("tool not allowed");
    }
    let text = params
        .arguments
        .get("text")
        .and_then(|v| v.as_str())
        .ok_or("argument /text is required")?;
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err("argument /text is too long");
    }
    if text.to_ascii_lowercase().contains(DENIED_PHRASE) {
        return Err("argument /text is denied");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::verdict;

    fn call(name: &str, text: &str) -> Vec<u8> {
        serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":name,"arguments":{"text":text}}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn allows_echo_with_a_plain_text() {
        assert_eq!(verdict(&call("echo", "hello")), Ok(()));
    }

    #[test]
    fn denies_other_tools_long_or_dangerous_text_and_garbage() {
        assert_eq!(verdict(&call("delete_file", "x")), Err("tool not allowed"));
        assert_eq!(
            verdict(&call("echo", &"x".repeat(1025))),
            Err("argument /text is too long")
        );
        assert_eq!(
            verdict(&call("echo", "please DROP TABLE users")),
            Err("argument /text is denied")
        );
        assert_eq!(verdict(b"{"), Err("body is not a JSON-RPC request"));
        assert_eq!(
            verdict(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            Err("only tools/call is allowed")
        );
    }
}
