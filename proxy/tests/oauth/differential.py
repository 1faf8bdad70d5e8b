"""The token matrix, minted by an independent library (PyJWT, with keys
from `cryptography`; malformed tokens by hand), sent to Portcullis and to
Envoy's `jwt_authn` filter configured alike (same issuer, audience and
JWKS, the token required on every path). Both front a dummy upstream that
answers every POST.

A token is "accepted" when the answer is 2xx. Portcullis must accept
exactly the valid ones; every case where Envoy decides otherwise is
printed and written to target/oauth/differential.json, for the README.

Usage: differential.py <portcullis-binary> <envoy-binary> <out-dir>
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PC_BIN, ENVOY_BIN, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
UP, PC, PC_ADMIN, ENVOY, ENVOY_ADMIN = 3530, 15530, 15531, 15532, 15533
R = f"http://127.0.0.1:{PC}/mcp"
ISS = "https://idp.differential.test"
INIT = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                   "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                              "clientInfo": {"name": "diff", "version": "1"}}}).encode()


class Upstream(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"jsonrpc": "2.0", "id": 0, "result": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "serverInfo": {"name": "dummy", "version": "1"}}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def wait_port(port):
    for _ in range(150):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def main():
    os.makedirs(OUT, exist_ok=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    rsa_jwk.update(kid="r1", use="sig")
    ec_jwk.update(kid="e1", use="sig")
    jwks_path = os.path.join(OUT, "diff-jwks.json")
    with open(jwks_path, "w") as f:
        json.dump({"keys": [rsa_jwk, ec_jwk]}, f)

    now = int(time.time())
    base = {"iss": ISS, "aud": R, "sub": "alice", "iat": now, "exp": now + 600, "scope": "mcp"}

    def claims(**patch):
        c = dict(base)
        for k, v in patch.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def rs(c, **headers):
        return jwt.encode(c, rsa_key, algorithm="RS256", headers={"kid": "r1", **headers})

    def es(c, **headers):
        return jwt.encode(c, ec_key, algorithm="ES256", headers={"kid": "e1", **headers})

    def raw(header, c, sig=b""):
        return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(c).encode())}.{b64(sig)}"

    def hs(header, c, secret):
        signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(c).encode())}"
        return f"{signing}.{b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())}"

    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    good = rs(base)
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    other_key = ec.generate_private_key(ec.SECP256R1())
    # (name, token, where, should it be accepted)
    cases = [
        ("valid RS256", good, "header", True),
        ("valid ES256", es(base), "header", True),
        ("valid, several audiences including this one", rs(claims(aud=[R, "https://other.test"])), "header", True),
        ("valid, no typ", rs(base), "header", True),
        ("expired", rs(claims(exp=now - 3600)), "header", False),
        ("not yet valid", rs(claims(nbf=now + 3600)), "header", False),
        ("exp a string", rs(claims(exp="never")), "header", False),
        ("no exp", rs(claims(exp=None)), "header", False),
        ("issued in the future", rs(claims(iat=now + 3600)), "header", False),
        ("lifetime of ten years", rs(claims(exp=now + 10 * 365 * 86400)), "header", False),
        ("wrong audience", rs(claims(aud="https://other.test/mcp")), "header", False),
        ("no audience", rs(claims(aud=None)), "header", False),
        ("audience with a trailing slash", rs(claims(aud=R + "/")), "header", False),
        ("wrong issuer", rs(claims(iss="https://evil.test")), "header", False),
        ("no issuer", rs(claims(iss=None)), "header", False),
        ("no subject", rs(claims(sub=None)), "header", False),
        ("alg none", raw({"alg": "none", "typ": "JWT"}, base), "header", False),
        ("alg None", raw({"alg": "None"}, base, b"x"), "header", False),
        ("HS256 keyed with the RSA public key (PEM)", hs({"alg": "HS256", "kid": "r1"}, base, pem), "header", False),
        ("tampered signature", tampered, "header", False),
        ("signed by another key under kid e1", jwt.encode(base, other_key, algorithm="ES256", headers={"kid": "e1"}), "header", False),
        ("unknown kid", jwt.encode(base, other_key, algorithm="ES256", headers={"kid": "zz"}), "header", False),
        ("embedded jwk", raw({"alg": "ES256", "jwk": ec_jwk}, base, b"x"), "header", False),
        ("crit", rs(base, crit=["exp"]), "header", False),
        ("typ dpop+jwt", rs(base, typ="dpop+jwt"), "header", False),
        ("a JWE (five segments)", good + ".a.b", "header", False),
        ("9 KiB token", rs(claims(pad="x" * 9216)), "header", False),
        ("token in the query (access_token)", good, "query", False),
        ("two Authorization headers", good, "twice", False),
        ("no token", None, "none", False),
    ]

    upstream = ThreadingHTTPServer(("127.0.0.1", UP), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    procs = []
    try:
        pc_yaml = os.path.join(OUT, "diff-portcullis.yaml")
        with open(pc_yaml, "w") as f:
            f.write(f"""listener: {{addr: "127.0.0.1:{PC}"}}
admin: {{addr: "127.0.0.1:{PC_ADMIN}"}}
upstream: {{url: "http://127.0.0.1:{UP}"}}
auth:
  resource: {R}
  metadata: {{authorization_servers: ["{ISS}"]}}
  issuers:
    - {{name: diff, issuer: "{ISS}", jwks: {{file: {jwks_path}}}}}
""")
        envoy_yaml = os.path.join(OUT, "diff-envoy.yaml")
        with open(envoy_yaml, "w") as f:
            f.write(f"""admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {ENVOY_ADMIN}}}}}}}
static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {ENVOY}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: diff
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: app, timeout: 10s}}
          http_filters:
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                idp:
                  issuer: "{ISS}"
                  audiences: ["{R}"]
                  local_jwks: {{filename: {jwks_path}}}
                  forward: false
              rules:
              - match: {{prefix: "/"}}
                requires: {{provider_name: idp}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: STATIC
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {UP}}}}}}}
""")
        log = open(os.path.join(OUT, "diff-portcullis.log"), "w")
        procs.append(subprocess.Popen([PC_BIN, "run", "--config", pc_yaml], stdout=log, stderr=log))
        elog = open(os.path.join(OUT, "diff-envoy.log"), "w")
        procs.append(subprocess.Popen([ENVOY_BIN, "-c", envoy_yaml, "--log-level", "warn",
                                       "--concurrency", "1"], stdout=elog, stderr=elog))
        wait_port(PC)
        wait_port(ENVOY)

        def send(port, token, where):
            url = f"http://127.0.0.1:{port}/mcp"
            headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                       "mcp-protocol-version": "2025-06-18"}
            if where == "query":
                url += f"?access_token={token}"
            req = urllib.request.Request(url, data=INIT, method="POST", headers=headers)
            if where == "header":
                req.add_header("authorization", f"Bearer {token}")
            if where == "twice":
                # urllib keeps one value per name: send two by hand.
                return send_twice(port, token)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        def send_twice(port, token):
            body = INIT
            head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
                    f"accept: application/json, text/event-stream\r\nmcp-protocol-version: 2025-06-18\r\n"
                    f"authorization: Bearer {token}\r\nauthorization: Bearer {token}\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
            with socket.create_connection(("127.0.0.1", port), 5) as s:
                s.sendall(head + body)
                data = s.recv(4096)
            return int(data.split(b" ", 2)[1])

        rows = []
        for name, token, where, ok in cases:
            p, e = send(PC, token, where), send(ENVOY, token, where)
            rows.append({"case": name, "expected": "accept" if ok else "refuse",
                         "portcullis": p, "envoy": e})
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        upstream.shutdown()

    accepted = lambda status: 200 <= status < 300  # noqa: E731
    wrong = [r for r in rows if accepted(r["portcullis"]) != (r["expected"] == "accept")]
    differ = [r for r in rows if accepted(r["portcullis"]) != accepted(r["envoy"])]
    json.dump({"rows": rows, "portcullis_wrong": wrong, "envoy_differs": differ},
              open(os.path.join(OUT, "differential.json"), "w"), indent=2)
    print(f"{len(rows)} tokens; Portcullis wrong on {len(wrong)}; Envoy decides otherwise on {len(differ)}:")
    for r in differ:
        print(f"  {r['case']}: expected {r['expected']}, Portcullis {r['portcullis']}, Envoy {r['envoy']}")
    for r in wrong:
        print(f"  PORTCULLIS WRONG: {r['case']}: {r['portcullis']}")
    sys.exit(1 if wrong or not rows else 0)


main()
