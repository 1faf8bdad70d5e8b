#!/usr/bin/env python3
"""A minimal MCP server and client for the capture netns test (stdlib only).

serve HOST PORT LOG   Streamable-HTTP-shaped JSON-RPC on POST /mcp; every
                      message is logged to LOG as "<peer> <method> <tool>",
                      so the test can prove what reached the server.
                      GET /healthz answers 200 (the app's readiness probe).
call URL TOOL         POST a tools/call; prints "status=N <result or error>"
                      or "ERR <why>" when the connection fails. For an https
                      URL, $MCP_CA is the trust bundle and $MCP_SVID the
                      client SVID's path prefix (none: no client cert).
get URL               GET; prints "status=N <body>" or "ERR <why>".
session URL TOOL...   A whole MCP session (initialize, initialized, then one
                      tools/call per TOOL), as an SDK client would; prints
                      one line per call: "TOOL: ok <text>" or "TOOL: error <message>".
                      $MCP_HOST, if set, is sent as the Host header.
"""
import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TIMEOUT = 5
VERSION = "2026-07-28"


def answer(msg):
    method = msg.get("method")
    if method == "initialize":
        return {"protocolVersion": VERSION, "capabilities": {"tools": {}},
                "serverInfo": {"name": "netns-mcp", "version": "1"}}
    if method == "tools/list":
        return {"tools": [{"name": n, "inputSchema": {"type": "object"}}
                          for n in ("echo", "delete_file")]}
    if method == "tools/call":
        name = msg.get("params", {}).get("name")
        return {"content": [{"type": "text", "text": f"called {name}"}]}
    return {}


def handler(log_path):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status, body=b"", ctype="application/json"):
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/healthz":
                self.reply(200, b"healthy\n", "text/plain")
            else:
                self.reply(405)

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            msg = json.loads(raw)
            tool = msg.get("params", {}).get("name", "-") if isinstance(msg, dict) else "-"
            peer = self.client_address[0].removeprefix("::ffff:")
            with open(log_path, "a") as log:
                log.write(f"{peer} {msg.get('method')} {tool}\n")
            if "id" not in msg:
                return self.reply(202)
            out = {"jsonrpc": "2.0", "id": msg["id"], "result": answer(msg)}
            self.reply(200, json.dumps(out).encode())
    return Handler


class DualStack(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def call(url, tool):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": {"path": "/etc/x", "text": "hi"},
                       "_meta": {"io.modelcontextprotocol/protocolVersion": VERSION,
                                 "io.modelcontextprotocol/clientCapabilities": {},
                                 "io.modelcontextprotocol/clientInfo": {"name": "netns", "version": "1"}}}}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": VERSION, "mcp-method": "tools/call", "mcp-name": tool})
    return fetch(req)


def tls_context():
    """mTLS from $MCP_CA and $MCP_SVID (`<prefix>.pem`/`.key`), or None.
    SVIDs name a SPIFFE ID, not a host: the chain is verified, the name not."""
    if not os.environ.get("MCP_CA"):
        return None
    ctx = ssl.create_default_context(cafile=os.environ["MCP_CA"])
    ctx.check_hostname = False
    svid = os.environ.get("MCP_SVID")
    if svid:
        ctx.load_cert_chain(f"{svid}.pem", f"{svid}.key")
    return ctx


def fetch(req):
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT, context=tls_context()) as resp:
            return f"status={resp.status} {resp.read().decode().strip()}"
    except urllib.error.HTTPError as e:
        return f"status={e.code} {e.read().decode().strip()}"
    except Exception as e:  # connection refused or reset, timeout
        return f"ERR {type(e).__name__}: {e}"


def post(url, msg, session=None):
    headers = {"content-type": "application/json",
               "accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2025-06-18"}
    if session:
        headers["mcp-session-id"] = session
    if os.environ.get("MCP_HOST"):
        headers["host"] = os.environ["MCP_HOST"]
    req = urllib.request.Request(url, data=json.dumps(msg).encode(), method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        body = resp.read().decode()
        sid = resp.headers.get("mcp-session-id")
    # JSON, or an SSE stream whose data lines hold JSON-RPC messages.
    msgs = [json.loads(line[5:]) for line in body.splitlines()
            if line.startswith("data:") and line[5:].strip()]
    if not msgs and body.strip():
        msgs = [json.loads(body)]
    return sid, [m for m in msgs if m.get("id") == msg.get("id")]


def session(url, tools):
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "demo-capture", "version": "1"}}}
    sid, _ = post(url, init)
    post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    for i, tool in enumerate(tools, start=1):
        call = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": tool, "arguments": {"path": "/etc/passwd", "text": "hello"}}}
        try:
            _, answers = post(url, call, sid)
        except Exception as e:  # connection refused or reset, timeout
            print(f"{tool}: ERR {type(e).__name__}: {e}")
            continue
        a = answers[0] if answers else {}
        if "error" in a:
            print(f"{tool}: error {a['error'].get('message')}")
        else:
            text = " ".join(c.get("text", "") for c in a.get("result", {}).get("content", []))
            print(f"{tool}: ok {text}")


def main(argv):
    if argv[1] == "serve":
        DualStack((argv[2], int(argv[3])), handler(argv[4])).serve_forever()
    elif argv[1] == "call":
        print(call(argv[2], argv[3]))
    elif argv[1] == "session":
        try:
            session(argv[2], argv[3:])
        except Exception as e:  # the session could not even start
            print(f"ERR {type(e).__name__}: {e}")
    elif argv[1] == "get":
        print(fetch(urllib.request.Request(argv[2])))
    else:
        sys.exit(f"unknown command {argv[1]}")


if __name__ == "__main__":
    main(sys.argv)
