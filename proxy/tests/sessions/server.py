"""A stateful Python SDK (mcp 2.x) server for the session-survival tests.

Tools: `count` (read-only), `append` (not idempotent: appends a line to the
ledger file, after an optional delay, so a duplicate execution shows),
`progress` (read-only, streams progress) and `pid` (which process answers).

Usage: server.py <port> <ledger-file>
"""

import os
import sys

import anyio
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


@server.tool(annotations=READ_ONLY)
def pid() -> str:
    """The process id of this server."""
    return str(os.getpid())


if __name__ == "__main__":
    port = int(sys.argv[1])
    server.run("streamable-http", host="127.0.0.1", port=port)
