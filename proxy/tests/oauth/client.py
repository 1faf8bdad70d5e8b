"""The unmodified Python MCP SDK client with its OAuthClientProvider, through
Portcullis (auth: configured) to a real MCP server, against as_server.py.

The client starts with no token. Portcullis's 401 names the metadata; the
SDK discovers it (path-suffixed first), registers (DCR), authorizes with
PKCE and the `resource`, and retries. Then:
  - `count` (needs `mcp`): passes;
  - `append` (needs `ledger:write`): 403 insufficient_scope, the SDK steps
    up (re-authorizes with the union of scopes) and passes;
  - the authorization server rotates its signing key;
  - `pid` (needs `ops:read`): another step-up, a token signed with the new
    key, which Portcullis has never seen: it refetches the JWKS and passes.
Every call must succeed. Prints one JSON object.

Usage: client.py <mcp-url> <as-url>
"""

import asyncio
import json
import sys
import urllib.parse
import urllib.request

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

MCP, AS = sys.argv[1], sys.argv[2]


class Memory:
    def __init__(self):
        self.tokens = self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, info):
        self.client = info


async def main():
    redirect = {}

    async def redirect_handler(url):
        # A headless user agent: follow the authorization URL once and read
        # the code from where the server sends the browser back.
        async with httpx2.AsyncClient(follow_redirects=False) as http:
            resp = await http.get(url)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(resp.headers["location"]).query)
        redirect.clear()
        redirect.update({k: v[0] for k, v in query.items()})
        if "code" not in redirect:
            raise RuntimeError(f"authorization refused: {redirect}")

    async def callback_handler():
        return AuthorizationCodeResult(code=redirect["code"], state=redirect.get("state"), iss=redirect.get("iss"))

    auth = OAuthClientProvider(
        server_url=MCP,
        client_metadata=OAuthClientMetadata(
            client_name="portcullis-e2e", redirect_uris=["http://127.0.0.1:9/callback"],
            grant_types=["authorization_code", "refresh_token"], response_types=["code"]),
        storage=Memory(), redirect_handler=redirect_handler, callback_handler=callback_handler)
    r = {"calls": 0, "errors": 0, "error_samples": [], "results": {}}
    try:
        async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
            async with Client(streamable_http_client(MCP, http_client=http), mode="legacy") as client:
                tools = await client.list_tools()
                r["tools"] = sorted(t.name for t in tools.tools)
                for tool, args in [("count", {}), ("append", {"entry": "oauth-e2e"}),
                                   ("rotate", None), ("pid", {}), ("whoami", {})]:
                    if tool == "rotate":
                        urllib.request.urlopen(urllib.request.Request(f"{AS}/rotate", method="POST")).read()
                        continue
                    r["calls"] += 1
                    try:
                        res = await client.call_tool(tool, args)
                        text = "".join(getattr(c, "text", "") for c in res.content)
                        r["results"][tool] = text
                        if res.is_error:
                            raise RuntimeError(text)
                    except Exception as e:  # noqa: BLE001 - every exception is client-visible
                        r["errors"] += 1
                        r["error_samples"].append(f"{tool}: {type(e).__name__}: {e}"[:300])
    except Exception as e:  # noqa: BLE001
        while isinstance(e, BaseExceptionGroup) and e.exceptions:
            e = e.exceptions[0]
        r["errors"] += 1
        r["error_samples"].append(f"client: {type(e).__name__}: {e}"[:300])
    r["as_log"] = json.loads(urllib.request.urlopen(f"{AS}/log").read())
    print(json.dumps(r), flush=True)


asyncio.run(main())
