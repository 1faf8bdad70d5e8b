"""A small OAuth 2.1 authorization server for the end-to-end test, built on
the Python MCP SDK's own authorization routes (RFC 8414 metadata, DCR,
/authorize with PKCE, /token), with an in-memory provider that approves at
once and mints ES256 JWT access tokens with PyJWT: `aud` is the RFC 8707
`resource` the client asked for, `scope` what it asked for.

Extra routes: /jwks.json (the public keys), POST /rotate (a new signing
key, published beside the old one), GET /log (what /authorize and /token
were asked, for the test to check), POST /mint (a token for alice with the
JSON body's `resource` and `scope`, without the browser dance, for the
identity assertion check).

Usage: as_server.py <port>
"""

import secrets
import sys
import time
import json

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import AnyHttpUrl
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp.server.auth.provider import AuthorizationCode, AuthorizationParams, construct_redirect_uri
from mcp.server.auth.routes import create_auth_routes
from mcp.server.auth.settings import ClientRegistrationOptions
from mcp.shared.auth import OAuthToken

PORT = int(sys.argv[1])
ISSUER = f"http://127.0.0.1:{PORT}/"


class Keys:
    def __init__(self):
        self.keys = []  # (kid, private key), newest last
        self.rotate()

    def rotate(self):
        self.keys.append((f"k{len(self.keys) + 1}", ec.generate_private_key(ec.SECP256R1())))

    def jwks(self):
        out = []
        for kid, key in self.keys:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "use": "sig", "alg": "ES256"})
            out.append(jwk)
        return {"keys": out}

    def sign(self, claims):
        kid, key = self.keys[-1]
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, "typ": "at+jwt"})


KEYS = Keys()
LOG = {"authorize": [], "token": []}


class Provider:
    def __init__(self):
        self.clients = {}
        self.codes = {}

    async def get_client(self, client_id):
        return self.clients.get(client_id)

    async def register_client(self, client_info):
        # The scopes this client may ask for, step-ups included (a real
        # authorization server grants them by its own policy).
        client_info.scope = "mcp ledger:write ops:read"
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client, params: AuthorizationParams):
        LOG["authorize"].append({"resource": params.resource, "scopes": params.scopes,
                                 "pkce": bool(params.code_challenge)})
        code = secrets.token_urlsafe(24)
        self.codes[code] = AuthorizationCode(
            code=code, scopes=params.scopes or [], expires_at=time.time() + 300,
            client_id=client.client_id, code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource, subject="alice")
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client, authorization_code):
        return self.codes.get(authorization_code)

    async def exchange_authorization_code(self, client, authorization_code):
        self.codes.pop(authorization_code.code, None)
        LOG["token"].append({"resource": authorization_code.resource, "scopes": authorization_code.scopes,
                             "kid": KEYS.keys[-1][0]})
        now = int(time.time())
        token = KEYS.sign({"iss": ISSUER, "sub": "alice", "aud": authorization_code.resource,
                           "client_id": client.client_id, "scope": " ".join(authorization_code.scopes),
                           "iat": now, "exp": now + 600, "jti": secrets.token_hex(8)})
        return OAuthToken(access_token=token, expires_in=600, scope=" ".join(authorization_code.scopes))

    async def load_refresh_token(self, client, refresh_token):
        return None

    async def exchange_refresh_token(self, client, refresh_token, scopes):
        raise NotImplementedError

    async def load_access_token(self, token):
        return None

    async def revoke_token(self, token):
        return None


async def jwks(_request):
    return JSONResponse(KEYS.jwks())


async def rotate(_request):
    KEYS.rotate()
    return JSONResponse({"kid": KEYS.keys[-1][0]})


async def mint(request):
    body = await request.json()
    now = int(time.time())
    token = KEYS.sign({"iss": ISSUER, "sub": "alice", "aud": body["resource"], "client_id": "minted",
                       "scope": body["scope"], "iat": now, "exp": now + 600, "jti": secrets.token_hex(8)})
    return JSONResponse({"access_token": token})


async def log(_request):
    return Response(json.dumps(LOG), media_type="application/json")


routes = create_auth_routes(Provider(), AnyHttpUrl(ISSUER),
                            client_registration_options=ClientRegistrationOptions(enabled=True,
                                                                                  valid_scopes=None))
routes += [Route("/jwks.json", jwks), Route("/rotate", rotate, methods=["POST"]), Route("/log", log),
           Route("/mint", mint, methods=["POST"])]

if __name__ == "__main__":
    uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=PORT, log_level="warning")
