"""A client's GET stream ended by an intermediary, resumed with
`Last-Event-ID`, while the server sends notifications in the gap; with the
backend killed and restarted between rounds (the subscription and the
stream must come back with it).

The unmodified Python SDK client subscribes to `ledger://count`. Each round
it calls `notify` (the server sends three numbered `resources/updated` on
the session's GET stream half a second later) and, at once, the cutter
ends the client's GET stream the way a load balancer's stream timeout does
(a clean end of the chunked body, then close). The client reconnects about
a second later with the `Last-Event-ID` of the last event it saw. Every
notification must arrive exactly once.

The cutter sits between the client and the URL's host (Portcullis, or the
server itself for the control run).

Prints one JSON object. Usage:
  resume.py --url URL --port BACKEND_PORT --cut-port PORT --label NAME
            [--rounds N] [--kill-every K] [--ledger FILE] [--log FILE]
"""

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mcp import Client  # noqa: E402
import mcp_types as types  # noqa: E402

from driver import INIT, Backend, post  # noqa: E402


class Cutter:
    """A TCP relay that can end the GET streams passing through it cleanly:
    it forwards a response's chunked body only in whole chunks, so that it
    can always write the last chunk and close."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.gets = set()
        self.cuts = 0

    async def start(self, port):
        self.server = await asyncio.start_server(self.accept, "127.0.0.1", port)

    async def accept(self, c_reader, c_writer):
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            c_writer.close()
            return
        first = await c_reader.read(65536)
        if not first:
            u_writer.close()
            c_writer.close()
            return
        u_writer.write(first)
        is_get = first.startswith(b"GET ")
        conn = {"cut": asyncio.Event()}
        if is_get:
            self.gets.add(id(conn))
            self.gets_by_id = getattr(self, "gets_by_id", {})
            self.gets_by_id[id(conn)] = conn
        up = asyncio.ensure_future(self.pipe(c_reader, u_writer))
        down = asyncio.ensure_future(self.respond(u_reader, c_writer, conn if is_get else None))
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for t in (up, down):
            t.cancel()
        for w in (u_writer, c_writer):
            w.close()
        if is_get:
            self.gets.discard(id(conn))

    async def pipe(self, reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def respond(self, reader, writer, conn):
        if conn is None:
            return await self.pipe(reader, writer)
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        await writer.drain()
        if b"transfer-encoding: chunked" not in head.lower():
            return await self.pipe(reader, writer)
        cut = asyncio.ensure_future(conn["cut"].wait())
        while True:
            line = asyncio.ensure_future(reader.readline())
            await asyncio.wait([line, cut], return_when=asyncio.FIRST_COMPLETED)
            if cut.done():
                line.cancel()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return
            size = int(line.result().split(b";")[0].strip() or b"0", 16)
            chunk = await reader.readexactly(size + 2)
            writer.write(line.result() + chunk)
            await writer.drain()
            if size == 0:
                return

    def cut_gets(self):
        n = 0
        for conn in list(getattr(self, "gets_by_id", {}).values()):
            if not conn["cut"].is_set():
                conn["cut"].set()
                n += 1
        self.gets_by_id = {}
        self.cuts += n
        return n


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cut-port", type=int, required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--kill-every", type=int, default=0)
    p.add_argument("--ledger", default="/dev/null")
    p.add_argument("--log", default="/dev/null")
    a = p.parse_args()
    target = urllib.parse.urlsplit(a.url)
    cutter = Cutter(target.port)
    await cutter.start(a.cut_port)
    backend = Backend(a.port, a.ledger, a.log)
    backend.start()
    got = []

    async def handler(message):
        if isinstance(message, types.ServerNotification) or hasattr(message, "root"):
            message = getattr(message, "root", message)
        if isinstance(message, types.ResourceUpdatedNotification):
            got.append(message.params.uri)

    r = {"label": a.label, "rounds": 0, "expected": 0, "received": 0, "missing": 0,
         "duplicates": 0, "cuts": 0, "kills": 0, "pids_changed": 0, "old_ids_404": 0,
         "errors": 0, "error_samples": []}

    def error(what, e):
        while isinstance(e, BaseExceptionGroup) and e.exceptions:
            e = e.exceptions[0]
        r["errors"] += 1
        if len(r["error_samples"]) < 5:
            r["error_samples"].append(f"{what}: {type(e).__name__}: {e}"[:300])

    async def wait_for(uris, timeout=8.0):
        deadline = time.time() + timeout
        while time.time() < deadline and not all(u in got for u in uris):
            await asyncio.sleep(0.05)

    url = f"http://127.0.0.1:{a.cut_port}{target.path}"
    try:
        async with Client(url, mode="legacy", message_handler=handler) as client:
            await client.subscribe_resource("ledger://count")
            n = 0
            # A first notification gives the client an event id to resume from.
            await client.call_tool("notify", {"first": n, "n": 1, "delay": 0.1})
            await wait_for([f"ledger://count#{n}"])
            n += 1
            for i in range(a.rounds):
                if a.kill_every and i and i % a.kill_every == 0:
                    status, probe = post(f"http://127.0.0.1:{a.port}/mcp", INIT)
                    old, new = backend.restart()
                    r["kills"] += 1
                    r["pids_changed"] += int(old != new)
                    if probe and post(f"http://127.0.0.1:{a.port}/mcp",
                                      {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, probe)[0] == 404:
                        r["old_ids_404"] += 1
                    # The held stream comes back on the new server first.
                    await asyncio.sleep(1.0)
                want = [f"ledger://count#{j}" for j in range(n, n + 3)]
                try:
                    res = await client.call_tool("notify", {"first": n, "n": 3, "delay": 0.5})
                    if res.is_error or "will send" not in "".join(getattr(c, "text", "") for c in res.content):
                        error("notify", RuntimeError(str(res.content)[:200]))
                except Exception as e:  # noqa: BLE001 - any exception is client-visible
                    error("notify", e)
                await asyncio.sleep(0.05)
                cutter.cut_gets()
                await wait_for(want)
                r["rounds"] += 1
                r["expected"] += 3
                n += 3
    except Exception as e:  # noqa: BLE001
        error("client", e)
    finally:
        if backend.proc.poll() is None:
            backend.kill()
    wanted = [f"ledger://count#{j}" for j in range(1, 1 + 3 * r["rounds"])]
    r["received"] = sum(1 for u in got if u in wanted)
    r["missing"] = len(set(wanted) - set(got))
    r["duplicates"] = len(got) - len(set(got))
    r["cuts"] = cutter.cuts
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
