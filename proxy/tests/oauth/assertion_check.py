"""The identity assertion end to end: a user's token goes to Portcullis,
the server behind it (assertion_server.py) sees only the sidecar's signed
assertion. Then, straight to the server: the user's own token and an
assertion signed by a stranger's key under the sidecar's kid are both
refused. Prints one JSON object.

Usage: assertion_check.py <proxy-mcp-url> <as-url> <server-mcp-url> <sidecar-jwks-url>
"""

import asyncio
import json
import sys
import time
import urllib.request

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

PROXY, AS, SERVER, JWKS = sys.argv[1:5]
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "assertion-check", "version": "1"}}}


def mint(resource, scope):
    req = urllib.request.Request(f"{AS}/mint", method="POST",
                                 data=json.dumps({"resource": resource, "scope": scope}).encode(),
                                 headers={"content-type": "application/json"})
    return json.loads(urllib.request.urlopen(req).read())["access_token"]


async def direct(token):
    async with httpx2.AsyncClient(timeout=10) as http:
        resp = await http.post(SERVER, json=INIT, headers={
            "authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"})
        return resp.status_code


async def main():
    r = {}
    user_token = mint(PROXY, "mcp")
    try:
        async with httpx2.AsyncClient(headers={"authorization": f"Bearer {user_token}"}, timeout=30) as http:
            async with Client(streamable_http_client(PROXY, http_client=http), mode="legacy") as client:
                res = await client.call_tool("whoami", {})
                r["through_portcullis"] = json.loads("".join(getattr(c, "text", "") for c in res.content))
    except Exception as e:  # noqa: BLE001
        while isinstance(e, BaseExceptionGroup) and e.exceptions:
            e = e.exceptions[0]
        r["through_portcullis_error"] = f"{type(e).__name__}: {e}"[:300]
    r["direct_user_token"] = await direct(user_token)
    kid = json.loads(urllib.request.urlopen(JWKS).read())["keys"][0]["kid"]
    now = int(time.time())
    forged_claims = {"iss": "portcullis:forged", "aud": SERVER.rsplit("/mcp", 1)[0], "sub": "mallory",
                     "iat": now, "exp": now + 60}
    stranger = ec.generate_private_key(ec.SECP256R1())
    r["direct_forged"] = await direct(jwt.encode(forged_claims, stranger, algorithm="ES256",
                                                 headers={"kid": kid, "typ": "portcullis-id+jwt"}))
    print(json.dumps(r), flush=True)


asyncio.run(main())
