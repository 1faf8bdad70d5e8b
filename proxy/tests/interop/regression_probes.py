"""Regression probes for the transparency defects of issue 15.

Each probe drives Portcullis in front of a scripted upstream (a tiny raw
HTTP/1.1 server in this file, so every byte the upstream sends is under the
probe's control) and prints PASS or FAIL against the EXPECTED, FIXED
behaviour. On code that still has a defect, its probe fails; that is the
point. Probes 6 and 7 are extra: 6 guards the resumption GET, 7 is a finding
(client-drop resumption) made while writing the TypeScript SDK client
scenarios.

Usage: regression_probes.py [--portcullis PATH] [--only N ...]
Exit status 1 when any probe fails; the last line is `N passed, M failed`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
UPSTREAM_PORT, PROXY_PORT, ADMIN_PORT = 3120, 15120, 15140
REQUEST_TIMEOUT_S = 8

CONFIG = f"""
listener: {{addr: "127.0.0.1:{PROXY_PORT}"}}
admin: {{addr: "127.0.0.1:{ADMIN_PORT}"}}
upstream: {{url: "http://127.0.0.1:{UPSTREAM_PORT}", request_timeout: {REQUEST_TIMEOUT_S}s}}
policy:
  default: allow
"""

MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}

# ------------------------------------------------------------ scripted upstream

HOLD_RELEASED = threading.Event()  # set when the upstream sees /hold's connection close


def head(status: str, ctype: str, extra: str = "", length: int | None = None) -> bytes:
    size = f"content-length: {length}\r\n" if length is not None else ""
    return f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\n{size}{extra}connection: close\r\n\r\n".encode()


def json_answer(status: str, obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    return head(status, "application/json", length=len(body)) + body


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    line = (await reader.readline()).decode()
    method, path, _ = line.split(" ", 2)
    headers = {}
    while (raw := (await reader.readline()).decode().strip()):
        name, _, value = raw.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Routes on the request path: one behaviour per probe."""
    try:
        method, path, headers, body = await read_request(reader)
        msg = json.loads(body) if body else {}
        if path == "/sse-clean-end":
            # A 2025-11-25 server polling (SEP-1699): an event with an id and a
            # retry hint, then a clean end; the answer comes on resumption.
            writer.write(head("200 OK", "text/event-stream", "mcp-session-id: s1\r\n"))
            writer.write(b"id: ev-1\nretry: 100\ndata: \n\n")
        elif path == "/endless-json":
            # Streams a JSON answer and never finishes it.
            writer.write(head("200 OK", "application/json"))
            writer.write(b'{"jsonrpc":"2.0","id":1,"result":{"content":[')
            await writer.drain()
            try:
                await asyncio.sleep(REQUEST_TIMEOUT_S + 5)
            except asyncio.CancelledError:
                return  # the probe run is over
        elif path == "/hold":
            # An SSE answer still in progress; notes when the proxy lets go.
            writer.write(head("200 OK", "text/event-stream", "mcp-session-id: s1\r\n"))
            writer.write(b"id: ev-1\ndata: \n\n")
            await writer.drain()
            try:
                while await asyncio.wait_for(reader.read(1024), REQUEST_TIMEOUT_S):
                    pass
                HOLD_RELEASED.set()
            except (asyncio.TimeoutError, asyncio.CancelledError):
                return
        elif path == "/resume" and method == "GET":
            # Resumption with Last-Event-ID: the replayed answer, then the end.
            last = headers.get("last-event-id", "")
            answer = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": f"after {last}"}]}}
            writer.write(head("200 OK", "text/event-stream", "mcp-session-id: s1\r\n"))
            writer.write(f"id: ev-3\ndata: {json.dumps(answer)}\n\n".encode())
        elif msg.get("method") in ("resources/subscribe", "resources/unsubscribe"):
            error = {"code": -32601, "message": "Method not found (upstream)"}
            writer.write(json_answer("404 Not Found", {"jsonrpc": "2.0", "id": msg.get("id"), "error": error}))
        else:
            result = {"upstream": "answered", "method": msg.get("method")}
            writer.write(json_answer("200 OK", {"jsonrpc": "2.0", "id": msg.get("id"), "result": result}))
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


# ------------------------------------------------------------ client side


def http(method: str, path: str, body: dict | None, headers: dict[str, str], timeout: float) -> tuple[int, dict, bytes]:
    """A blocking raw HTTP/1.1 exchange; returns what arrived before the end
    of the body or the timeout, whichever comes first."""
    data = json.dumps(body).encode() if body is not None else b""
    hdrs = {"host": f"127.0.0.1:{PROXY_PORT}", "content-type": "application/json",
            "accept": "application/json, text/event-stream", "content-length": str(len(data)),
            "connection": "close", **headers}
    req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    sock = socket.create_connection(("127.0.0.1", PROXY_PORT), timeout=timeout)
    sock.sendall(req.encode() + data)
    raw = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    except (socket.timeout, TimeoutError):
        pass
    finally:
        sock.close()
    head_raw, _, body_raw = raw.partition(b"\r\n\r\n")
    lines = head_raw.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    resp_headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if resp_headers.get("transfer-encoding") == "chunked":
        body_raw = dechunk(body_raw)
    return status, resp_headers, body_raw


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def modern(method: str, params: dict, **extra: str) -> dict[str, str]:
    return {"mcp-protocol-version": "2026-07-28", "mcp-method": method, **extra}


# ------------------------------------------------------------ the probes


def probe_sse_clean_end() -> tuple[bool, str]:
    """Defect 1: a stream that ends cleanly after an event with an id is relayed as it is."""
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "poll", "arguments": {}}}
    status, _, body = http("POST", "/sse-clean-end", call,
                           {"mcp-session-id": "s1", "mcp-protocol-version": "2025-11-25"}, 5)
    text = body.decode(errors="replace")
    ok = status == 200 and "id: ev-1" in text and "-32052" not in text
    return ok, f"status {status}, body {text.strip()!r}"


def probe_error_ids() -> tuple[bool, str]:
    """Defect 2: Portcullis's own -32020 and -32600 errors carry the request's id."""
    details, ok = [], True
    mismatch = {"jsonrpc": "2.0", "id": 42, "method": "tools/list", "params": {"_meta": MODERN_META}}
    cases = [
        ("-32020", mismatch, modern("tools/call", {})),
        ("-32600", {"jsonrpc": "2.0", "id": 43, "method": "tools/call",
                    "params": {"name": 7, "_meta": MODERN_META}}, modern("tools/call", {})),
    ]
    for label, body, headers in cases:
        status, _, raw = http("POST", "/mcp", body, headers, 5)
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {}
        code = (answer.get("error") or {}).get("code")
        good = answer.get("id") == body["id"] and code is not None
        ok &= good
        details.append(f"{label} case: status {status}, code {code}, id {answer.get('id')!r} (want {body['id']})")
    return ok, "; ".join(details)


def probe_tasks_mcp_name() -> tuple[bool, str]:
    """Defect 3: tasks/get with Mcp-Name: <taskId> reaches the server."""
    body = {"jsonrpc": "2.0", "id": 9, "method": "tasks/get", "params": {"taskId": "task-123", "_meta": MODERN_META}}
    status, _, raw = http("POST", "/mcp", body, modern("tasks/get", {}, **{"mcp-name": "task-123"}), 5)
    text = raw.decode(errors="replace")
    ok = status == 200 and '"upstream": "answered"' in text
    return ok, f"status {status}, body {text[:200]!r}"


def probe_removed_method_passthrough() -> tuple[bool, str]:
    """Defect 4: resources/subscribe without uri (2026-07-28) gets the server's -32601."""
    body = {"jsonrpc": "2.0", "id": 11, "method": "resources/subscribe", "params": {"_meta": MODERN_META}}
    status, _, raw = http("POST", "/mcp", body, modern("resources/subscribe", {}), 5)
    text = raw.decode(errors="replace")
    ok = status == 404 and "-32601" in text and "(upstream)" in text
    return ok, f"status {status}, body {text[:200]!r}"


def probe_endless_json() -> tuple[bool, str]:
    """Defect 5: an uninspected JSON answer is relayed as it arrives, not after request_timeout."""
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "stream", "arguments": {}}}
    t0 = time.monotonic()
    status, _, body = http("POST", "/endless-json", call,
                           {"mcp-session-id": "s1", "mcp-protocol-version": "2025-11-25"}, 3)
    took = time.monotonic() - t0
    ok = status == 200 and body.startswith(b'{"jsonrpc":"2.0","id":1,"result"')
    return ok, f"after {took:.1f}s: status {status}, first bytes {body[:60]!r} (request_timeout {REQUEST_TIMEOUT_S}s)"


def probe_resume_get() -> tuple[bool, str]:
    """Extra: a GET with Last-Event-ID relays the replayed answer (the id is not pending at Portcullis)."""
    status, _, body = http("GET", "/resume", None,
                           {"mcp-session-id": "s1", "mcp-protocol-version": "2025-11-25",
                            "last-event-id": "ev-2", "accept": "text/event-stream"}, 5)
    text = body.decode(errors="replace")
    ok = status == 200 and '"id": 7' in text and "after ev-2" in text
    return ok, f"status {status}, body {text.strip()[:200]!r}"


def probe_client_drop_reaches_upstream() -> tuple[bool, str]:
    """Extra: when the client drops a POST's SSE stream, Portcullis drops its
    upstream request too, as a direct connection would; otherwise the server
    keeps the stream registered and a resumption GET gets nothing until the
    call ends (seen with the TypeScript SDK client and the Python SDK server)."""
    HOLD_RELEASED.clear()
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "hold", "arguments": {}}}
    status, _, body = http("POST", "/hold", call, {"mcp-session-id": "s1", "mcp-protocol-version": "2025-11-25"}, 1)
    released = HOLD_RELEASED.wait(3)
    return released, f"client got status {status} and {len(body)} bytes, then left; upstream connection closed: {released}"


PROBES = [
    ("1 SSE clean end after an event with an id is relayed without -32052", probe_sse_clean_end),
    ("2 -32020/-32600 errors carry the request id", probe_error_ids),
    ("3 tasks/get with Mcp-Name: <taskId> is forwarded", probe_tasks_mcp_name),
    ("4 resources/subscribe without uri (2026-07-28) gets the server's -32601", probe_removed_method_passthrough),
    ("5 an endless application/json answer streams to the client", probe_endless_json),
    ("6 resumption GET with Last-Event-ID relays the replayed answer", probe_resume_get),
    ("7 a client dropping a POST stream releases the upstream request", probe_client_drop_reaches_upstream),
]


def wait_port(port: int) -> None:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"FAIL nothing listening on :{port}")


# Defects still open (issue 15): reported as XFAIL and not counted as a
# failure, so that the suite stays a gate for everything else. A known-open
# probe that passes is reported as XPASS: take it off this list.
# Probes for defects still open (none now: defect 5 closed with the
# pass-through relay of answers no policy reads).
KNOWN_OPEN: dict[str, str] = {}


async def run(args: argparse.Namespace) -> int:
    server = await asyncio.start_server(upstream, "127.0.0.1", UPSTREAM_PORT)
    work = pathlib.Path(tempfile.mkdtemp(prefix="probes-"))
    (work / "portcullis.yaml").write_text(CONFIG)
    log = (work / "portcullis.log").open("w")
    proc = subprocess.Popen([args.portcullis, "run", "--config", str(work / "portcullis.yaml")],
                            stdout=log, stderr=subprocess.STDOUT)
    passed = failed = 0
    try:
        await asyncio.to_thread(wait_port, PROXY_PORT)
        for name, probe in PROBES:
            if args.only and name.split()[0] not in args.only:
                continue
            ok, detail = await asyncio.to_thread(probe)
            number = name.split()[0]
            if number in KNOWN_OPEN:
                tag = "XPASS (take it off KNOWN_OPEN)" if ok else f"XFAIL ({KNOWN_OPEN[number]})"
                print(f"{tag} probe {name}: {detail}", flush=True)
                continue
            passed, failed = passed + ok, failed + (not ok)
            print(f"{'PASS' if ok else 'FAIL'} probe {name}: {detail}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.close()
    print(f"# portcullis log in {work}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portcullis", default=os.environ.get("PORTCULLIS_BIN", str(ROOT / "target/debug/portcullis")))
    ap.add_argument("--only", action="append", help="probe numbers to run (1-7)")
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
