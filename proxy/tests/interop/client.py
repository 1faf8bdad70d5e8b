"""Drives an MCP server through Portcullis with the official Python SDK and
checks what a transparent, policy-enforcing proxy must guarantee.

Prints one line per check and a closing 'N passed, M failed' line; exits 1
if any check failed.
"""

import argparse
import asyncio
import json
import sys
import time
from contextlib import asynccontextmanager

from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError

DENIED = -32051
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""), flush=True)


@asynccontextmanager
async def connect(args):
    if args.mode == "sse":
        # The 2024-11-05 HTTP+SSE transport.
        async with sse_client(args.url) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session
    elif args.cert:
        # mTLS: present an X.509-SVID, trust the demo trust domain's CA.
        import ssl

        import httpx2

        ctx = ssl.create_default_context(cafile=args.cacert)
        ctx.load_cert_chain(args.cert, args.key)
        http = httpx2.AsyncClient(verify=ctx, timeout=httpx2.Timeout(30, read=300))
        async with http, Client(streamable_http_client(args.url, http_client=http), mode=args.mode) as client:
            yield client
    else:
        async with Client(args.url, mode=args.mode) as client:
            yield client


async def run(args):
    async with connect(args) as c:
        tools = [t.name for t in (await c.list_tools()).tools]
        check("tools/list shows the allowed tool", args.allow in tools, str(tools))
        check("tools/list hides the denied tool", args.deny not in tools, str(tools))

        res = await c.call_tool(args.allow, json.loads(args.allow_args))
        check("allowed tools/call succeeds", not res.is_error, str(res))

        try:
            res = await c.call_tool(args.deny, json.loads(args.deny_args))
            check("denied tools/call fails with -32051", False, f"got a result: {res}")
        except MCPError as e:
            check("denied tools/call fails with -32051", e.code == DENIED, f"code {e.code}: {e}")
            check("denial names the rule", "static:" in str(e), str(e))

        if args.stream:
            await stream_check(c, args)

        # The session (if any) still works after a denial.
        res = await c.call_tool(args.allow, json.loads(args.allow_args))
        check("calls after a denial still work", not res.is_error, str(res))


async def stream_check(c, args):
    start = time.monotonic()
    progress = []

    async def on_progress(p, total, message):
        progress.append(time.monotonic() - start)

    res = await c.call_tool(args.stream, json.loads(args.stream_args), progress_callback=on_progress)
    done = time.monotonic() - start
    check("streaming tool succeeds", not res.is_error, str(res))
    check("progress notifications arrive", len(progress) >= 2, str(progress))
    if progress:
        check(
            "first progress arrives well before the result",
            progress[0] + 0.5 < done,
            f"first {progress[0]:.2f}s, done {done:.2f}s",
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--mode", default="legacy", help="legacy | auto | 2026-07-28 | sse")
    p.add_argument("--allow", required=True)
    p.add_argument("--allow-args", default="{}")
    p.add_argument("--deny", required=True)
    p.add_argument("--deny-args", default="{}")
    p.add_argument("--stream")
    p.add_argument("--stream-args", default="{}")
    p.add_argument("--cacert", help="CA bundle for mTLS")
    p.add_argument("--cert", help="client SVID (PEM) for mTLS")
    p.add_argument("--key", help="client SVID key (PEM) for mTLS")
    args = p.parse_args()
    print(f"# python client ({args.mode}) -> {args.url}", flush=True)
    try:
        asyncio.run(asyncio.wait_for(run(args), 60))
    except Exception as e:  # a crash is a failed check, not a silent pass
        check("client ran to completion", False, repr(e))
    passed = sum(results)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not results else 0)


if __name__ == "__main__":
    main()
