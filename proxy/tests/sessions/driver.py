"""Drives one MCP session with the unmodified Python SDK client while the
backend server process is killed (SIGKILL) and started again, and reports
what the client saw.

The driver owns the backend: it starts `server.py`, and between calls (or
during one) kills it and starts a new one on the same port. Each kill is
proved: the new process has another PID, and it answers 404 to a session
id the old process had issued (a probe session opened directly).

Every client-visible failure counts as an error: an exception, a JSON-RPC
error, an `isError` result or a wrong answer. Prints one JSON object.

Usage: driver.py --url URL --port BACKEND_PORT --ledger FILE --label NAME
                 [--restarts N] [--mid-call K] [--mid-stream K]
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

from mcp import Client

HERE = os.path.dirname(os.path.abspath(__file__))
INIT = {
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "probe", "version": "1"}},
}


class Backend:
    def __init__(self, port, ledger, log, transport=""):
        self.port, self.ledger, self.log = port, ledger, log
        self.transport = transport
        self.proc = None

    def start(self):
        # A server left from another run would answer instead of ours.
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                time.sleep(0.05)
            except OSError:
                break
        else:
            raise RuntimeError(f"port {self.port} is taken by another process")
        out = open(self.log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server.py"), str(self.port), self.ledger]
            + ([self.transport] if self.transport else []),
            stdout=out, stderr=out)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self.proc.pid
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("backend did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self):
        old = self.proc.pid
        self.kill()
        new = self.start()
        return old, new


def post(url, body, sid=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "content-type": "application/json", "accept": "application/json, text/event-stream",
        **({"mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"} if sid else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return r.status, r.headers.get("mcp-session-id")
    except urllib.error.HTTPError as e:
        return e.code, None


def sse_endpoint(port):
    """Opens the server's /sse stream and returns the endpoint it names."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(f"GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        data = b""
        while b"data:" not in data or not data.split(b"data:", 1)[1].count(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                return None
            data += chunk
    return data.split(b"data:", 1)[1].split(b"\n", 1)[0].strip().decode()


def post_status(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@contextlib.asynccontextmanager
async def connect(a):
    """The SDK client for the mode: `Client` over Streamable HTTP, or a
    `ClientSession` over the 2024-11-05 HTTP+SSE transport."""
    if a.mode != "sse":
        async with Client(a.url, mode=a.mode) as client:
            yield client
        return
    from mcp import ClientSession
    from mcp.client.sse import sse_client
    async with sse_client(a.url, sse_read_timeout=120) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def rotate(path):
    """Phase 1+2 of a rotation: a new primary, the old key decrypt-only."""
    import base64
    import re
    text = open(path).read()
    old = re.search(r'key_b64: "([^"]+)"', text).group(1)
    new = base64.b64encode(os.urandom(32)).decode()
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f'keys:\n  - {{kid: rot2, key_b64: "{new}", state: primary}}\n'
                f'  - {{kid: ci1, key_b64: "{old}", state: decrypt-only}}\n')
    os.replace(tmp, path)
    time.sleep(6)  # the sidecars read the file every 5 s


def restart_redis(port):
    """Restarts a redis-server that keeps nothing: every record is lost."""
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
    subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)


def text_of(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--restarts", type=int, default=10)
    p.add_argument("--mid-call", type=int, default=0)
    p.add_argument("--mid-stream", type=int, default=0)
    p.add_argument("--log", default="/dev/null")
    p.add_argument("--mode", default="legacy",
                   help="the SDK's connect mode: legacy (2025 sessions) | 2026-07-28 | sse (the 2024-11-05 HTTP+SSE transport)")
    p.add_argument("--listen", type=int, default=0,
                   help="2026-07-28: kills while a subscriptions/listen stream is open")
    p.add_argument("--kill-replica", type=int, default=0,
                   help="PID of a Portcullis replica to stop (SIGTERM) once the restarts are done")
    p.add_argument("--rotate-keyring", default="",
                   help="keyring file: halfway, a new primary key is added and the old one kept for decryption")
    p.add_argument("--restart-redis", type=int, default=0,
                   help="port of a redis-server to restart (empty) halfway")
    a = p.parse_args()
    direct = f"http://127.0.0.1:{a.port}/mcp"
    backend = Backend(a.port, a.ledger, a.log, "sse" if a.mode == "sse" else "")
    backend.start()
    r = {"label": a.label, "restarts": 0, "calls": 0, "errors": 0, "error_samples": [],
         "pids_changed": 0, "old_ids_404": 0, "first_after_restart_ms": [], "steady_ms": [],
         "mid_call_kills": 0, "mid_call_errors": 0, "mid_call_samples": [], "mid_stream_kills": 0, "mid_stream_errors": 0,
         "appended": [], "listen_kills": 0, "listen_events": 0, "listen_missing": 0, "listen_lost": 0,
         "listen_samples": [], "replica_killed": False, "keyring_rotated": False, "redis_restarted": False}

    def error(what, e):
        r["errors"] += 1
        if len(r["error_samples"]) < 5:
            r["error_samples"].append(f"{what}: {type(e).__name__}: {e}"[:300])

    async def call(client, name, args, expect=None, bucket=None):
        r["calls"] += 1
        t = time.perf_counter()
        try:
            res = await client.call_tool(name, args)
        except Exception as e:  # noqa: BLE001 - every exception is a client-visible error
            error(name, e)
            return None
        ms = (time.perf_counter() - t) * 1000
        if bucket is not None:
            bucket.append(ms)
        if res.is_error or (expect is not None and text_of(res) != expect):
            error(name, RuntimeError(text_of(res)))
            return None
        return text_of(res)

    def prove_kill():
        if a.mode == "sse":
            # The old process's message endpoint, opened directly.
            probe = sse_endpoint(a.port)
            old, new = backend.restart()
            r["restarts"] += 1
            r["pids_changed"] += int(old != new)
            if probe and post_status(f"http://127.0.0.1:{a.port}{probe}",
                                     {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}) == 404:
                r["old_ids_404"] += 1
            return
        # A session the old process issued, opened directly.
        status, probe = post(direct, INIT)
        old, new = backend.restart()
        r["restarts"] += 1
        r["pids_changed"] += int(old != new)
        if probe and post(direct, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, probe)[0] == 404:
            r["old_ids_404"] += 1

    try:
        await drive(a, r, backend, call, prove_kill)
    finally:
        if backend.proc.poll() is None:
            backend.kill()
    report(a, r)


async def drive(a, r, backend, call, prove_kill):
    def error(what, e):
        r["errors"] += 1
        if len(r["error_samples"]) < 5:
            r["error_samples"].append(f"{what}: {type(e).__name__}: {e}"[:300])

    try:
        await session(a, r, backend, call, prove_kill, error)
    except Exception as e:  # noqa: BLE001 - a client that dies is a client-visible error
        error("client", e)


async def session(a, r, backend, call, prove_kill, error):
    async with connect(a) as client:
        n = 0
        for i in range(a.restarts):
            entry = f"{a.label}-{n}"
            n += 1
            if await call(client, "append", {"entry": entry}, f"appended {entry}", r["steady_ms"]):
                r["appended"].append(entry)
            await call(client, "count", {}, None, r["steady_ms"])
            prove_kill()
            entry = f"{a.label}-{n}"
            n += 1
            # The first call after the restart: the one a rebind serves.
            if await call(client, "append", {"entry": entry}, f"appended {entry}",
                          r["first_after_restart_ms"]):
                r["appended"].append(entry)
            pid = await call(client, "pid", {})
            if pid is not None and pid != str(backend.proc.pid):
                error("pid", RuntimeError(f"answered by {pid}, backend is {backend.proc.pid}"))
            if i == a.restarts // 2 and a.rotate_keyring:
                rotate(a.rotate_keyring)
                r["keyring_rotated"] = True
            if i == a.restarts // 2 and a.restart_redis:
                restart_redis(a.restart_redis)
                r["redis_restarted"] = True

        # A replica goes away (its pod deleted: SIGTERM, and it drains):
        # the client's next connections reach the other one.
        if a.kill_replica:
            os.kill(a.kill_replica, signal.SIGTERM)
            for _ in range(300):
                try:
                    os.kill(a.kill_replica, 0)
                    await asyncio.sleep(0.1)
                except ProcessLookupError:
                    break
            r["replica_killed"] = True
            for j in range(5):
                entry = f"{a.label}-after-replica-{j}"
                if await call(client, "append", {"entry": entry}, f"appended {entry}"):
                    r["appended"].append(entry)
            prove_kill()
            entry = f"{a.label}-after-replica-restart"
            if await call(client, "append", {"entry": entry}, f"appended {entry}"):
                r["appended"].append(entry)

        # A subscriptions/listen stream open across kills (2026-07-28):
        # after each restart, change notifications must arrive on it.
        if a.listen:
            await listen_across_kills(a, r, client, prove_kill)

        # Killed during a call that is not idempotent: the outcome is
        # unknown, so the client must get an error, and never a duplicate.
        for i in range(a.mid_call):
            entry = f"{a.label}-slow-{i}"
            task = asyncio.create_task(client.call_tool("append", {"entry": entry, "delay": 1.5}))
            await asyncio.sleep(0.5)
            prove_kill()
            r["mid_call_kills"] += 1
            try:
                res = await task
                if res.is_error:
                    r["mid_call_errors"] += 1
                    r["mid_call_samples"].append(text_of(res)[:200])
                else:
                    r["appended"].append(entry)
            except Exception as e:  # noqa: BLE001
                r["mid_call_errors"] += 1
                r["mid_call_samples"].append(f"{type(e).__name__}: {e}"[:200])
            await call(client, "count", {})

        # Killed during a streaming read-only call.
        for i in range(a.mid_stream):
            task = asyncio.create_task(client.call_tool("progress", {"steps": 8}))
            await asyncio.sleep(0.5)
            prove_kill()
            r["mid_stream_kills"] += 1
            try:
                res = await task
                if res.is_error or text_of(res) != "counted to 8":
                    r["mid_stream_errors"] += 1
            except Exception:  # noqa: BLE001
                r["mid_stream_errors"] += 1
            await call(client, "count", {})


async def listen_across_kills(a, r, client, prove_kill):
    uris = [f"ledger://count#{i}" for i in range(200)]
    got = []

    async def read(sub):
        async for event in sub:
            got.append(getattr(event, "uri", None))

    try:
        async with client.listen(resource_subscriptions=uris) as sub:
            reader = asyncio.create_task(read(sub))
            n = 0
            for _ in range(a.listen):
                prove_kill()
                r["listen_kills"] += 1
                # The stream is issued again on the new server: probe with
                # one notification until it is there, then send three.
                for _ in range(20):
                    await client.call_tool("notify", {"first": n, "n": 1, "listen": True})
                    await asyncio.sleep(0.25)
                    if uris[n] in got or reader.done():
                        break
                n += 1
                want = uris[n:n + 3]
                await client.call_tool("notify", {"first": n, "n": 3, "listen": True})
                for _ in range(40):
                    if all(u in got for u in want) or reader.done():
                        break
                    await asyncio.sleep(0.05)
                r["listen_missing"] += sum(1 for u in want if u not in got)
                n += 3
                if reader.done():
                    break
            r["listen_events"] = len(got)
            if reader.done() and reader.exception() is not None:
                raise reader.exception()
            reader.cancel()
    except Exception as e:  # noqa: BLE001 - SubscriptionLost and the like are client-visible
        r["listen_lost"] += 1
        r["listen_samples"].append(f"{type(e).__name__}: {e}"[:200])


def report(a, r):
    try:
        with open(a.ledger) as f:
            lines = [l.strip() for l in f if l.strip()]
    except FileNotFoundError:  # nothing was appended
        lines = []
    mine = [l for l in lines if l.startswith(a.label + "-")]
    r["ledger_entries"] = len(mine)
    r["duplicates"] = len(mine) - len(set(mine))
    r["lost"] = len(set(r["appended"]) - set(mine))
    for k in ("first_after_restart_ms", "steady_ms"):
        v = sorted(r[k])
        r[k] = {"n": len(v), "p50": round(statistics.median(v), 1) if v else None,
                "p99": round(v[min(len(v) - 1, int(len(v) * 0.99))], 1) if v else None}
    del r["appended"]
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
