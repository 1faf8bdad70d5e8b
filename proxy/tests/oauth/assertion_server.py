"""An MCP server (Python SDK 2.x) behind Portcullis that trusts nothing but
the sidecar's signed identity assertion: its own SDK bearer verifier
(TokenVerifier) accepts a token only if it is a `portcullis-id+jwt` signed
by a key from the sidecar's published JWKS, for this server's audience.
The user's own access token is refused here, so the test shows both that
Portcullis never passes it on and that the assertion is all a remote
server needs.

Tool `whoami`: the verified assertion's claims.

Usage: assertion_server.py <port> <sidecar-jwks-url> <audience> <issuer-url>
"""

import json
import sys

import jwt
from jwt import PyJWKClient
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

PORT, JWKS, AUDIENCE, ISSUER = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
KEYS = PyJWKClient(JWKS, cache_keys=True)


class AssertionVerifier:
    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            if jwt.get_unverified_header(token).get("typ") != "portcullis-id+jwt":
                raise ValueError("not a Portcullis identity assertion")
            key = KEYS.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=AUDIENCE,
                                options={"require": ["iss", "sub", "aud", "exp", "iat"]})
            if not claims["iss"].startswith("portcullis:"):
                raise ValueError(f"issuer {claims['iss']}")
        except Exception as e:  # noqa: BLE001 - any failure is a refusal
            print(f"refused: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return None
        actor = (claims.get("act") or {}).get("sub")
        return AccessToken(token=token, client_id=actor or claims["sub"],
                           scopes=claims.get("scope", "").split(), expires_at=claims["exp"],
                           subject=claims["sub"], claims=claims, resource=AUDIENCE)


server = MCPServer("assertion-check", token_verifier=AssertionVerifier(),
                   auth=AuthSettings(issuer_url=ISSUER, resource_server_url=AUDIENCE))


@server.tool()
def whoami() -> str:
    """The claims of the verified identity assertion this call came with."""
    token = get_access_token()
    return json.dumps(token.claims if token else None)


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=PORT)
