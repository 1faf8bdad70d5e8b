"""A stateful Python SDK (mcp 2.x) server for the session-survival tests.

Tools: `count` (read-only), `append` (not idempotent: appends a line to the
ledger file, after an optional delay, so a duplicate execution shows),
`progress` (read-only, streams progress), `pid` (which process answers) and
`notify` (sends numbered `resources/updated` notifications on the session's
GET stream a moment later, to the sessions subscribed to `ledger://count`).
The resource `ledger://count` is subscribable.

Usage: server.py <port> <ledger-file> [sse]
"""

import asyncio
import json
import os
import sys

import anyio
import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("portcullis-sessions")
LEDGER = sys.argv[2] if len(sys.argv) > 2 else "ledger.txt"
READ_ONLY = ToolAnnotations(readOnlyHint=True)


@server.tool(annotations=READ_ONLY)
def count() -> str:
    """How many entries the ledger holds."""
    try:
        with open(LEDGER) as f:
            return str(sum(1 for _ in f))
    except FileNotFoundError:
        return "0"


@server.tool()
async def append(entry: str, delay: float = 0.0) -> str:
    """Append an entry to the ledger (after `delay` seconds)."""
    await anyio.sleep(delay)
    with open(LEDGER, "a") as f:
        f.write(f"{entry}\n")
    return f"appended {entry}"


@server.tool(annotations=READ_ONLY)
async def progress(steps: int, ctx: Context) -> str:
    """Count slowly, reporting progress."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        await anyio.sleep(0.2)
    return f"counted to {steps}"


# Sessions subscribed to ledger://count in this process (the subscriptions a
# rebind replays land here again).
SUBSCRIBED = set()


async def on_subscribe(ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
    if params.uri == "ledger://count":
        SUBSCRIBED.add(ctx.session)
    return types.EmptyResult()


async def on_unsubscribe(ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    SUBSCRIBED.discard(ctx.session)
    return types.EmptyResult()


server._lowlevel_server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, on_subscribe)
server._lowlevel_server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, on_unsubscribe)


@server.resource("ledger://count")
def ledger_count() -> str:
    """The number of ledger entries (subscribable)."""
    return count()


@server.tool()
async def notify(first: int, ctx: Context, n: int = 3, delay: float = 0.5, listen: bool = False) -> str:
    """After `delay` seconds, sends `n` resources/updated notifications
    (ledger://count#first ...) on the GET stream of every session
    subscribed to ledger://count in this process; with `listen`, at once
    to the `subscriptions/listen` streams (2026-07-28) whose filter names
    them."""
    if listen:
        for i in range(first, first + n):
            await ctx.notify_resource_updated(f"ledger://count#{i}")
        return f"sent {n}"
    if not SUBSCRIBED:
        return "not subscribed"
    sessions = list(SUBSCRIBED)

    async def later():
        await anyio.sleep(delay)
        for i in range(first, first + n):
            for session in sessions:
                await session.send_resource_updated(f"ledger://count#{i}")
            await anyio.sleep(0.05)

    TASKS.add(asyncio.ensure_future(later()))
    return f"will send {n}"


TASKS = set()


@server.tool(annotations=READ_ONLY)
def whoami(ctx: Context) -> str:
    """What the request carried: whether any Authorization header reached
    this server, and the verified subject Portcullis passed on."""
    headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
    return json.dumps({"authorization": "authorization" in headers,
                       "subject": headers.get("x-portcullis-subject"),
                       "scopes": headers.get("x-portcullis-scopes")})


@server.tool(annotations=READ_ONLY)
def pid() -> str:
    """The process id of this server."""
    return str(os.getpid())


if __name__ == "__main__":
    port = int(sys.argv[1])
    # The 2024-11-05 HTTP+SSE transport with `sse` as a third argument.
    if len(sys.argv) > 3 and sys.argv[3] == "sse":
        server.run("sse", host="127.0.0.1", port=port)
    else:
        server.run("streamable-http", host="127.0.0.1", port=port)
