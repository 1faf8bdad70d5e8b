"""A Python SDK (mcp 2.x) server that serves both the 2025 handshake era
and the sessionless 2026-07-28 era, used as a real upstream in interop."""

import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("portcullis-interop")


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


@server.tool()
def delete_file(path: str) -> str:
    """Delete a file (dangerous; a policy should stop this)."""
    return f"deleted {path}"


@server.tool()
async def slow(steps: int, ctx: Context) -> str:
    """Count slowly, reporting progress."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        await anyio.sleep(0.4)
    return f"counted to {steps}"


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3103
    server.run("streamable-http", host="127.0.0.1", port=port)
