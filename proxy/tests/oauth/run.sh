#!/usr/bin/env bash
# OAuth end to end (issue 11): the unmodified Python SDK client with its
# OAuthClientProvider, a real authorization server built on the SDK's auth
# routes (as_server.py), Portcullis with auth: required, and the Python SDK
# sessions server behind it. Checks the discovery, PKCE and resource
# parameters, two scope step-ups, a key rotation costing no failed call,
# and that the server never saw a token; then the signed identity assertion
# to an SDK server that trusts only it (assertion_server.py); then the token
# matrix minted by PyJWT against Portcullis and Envoy's jwt_authn
# (differential.py). Prints PASS/FAIL per check.
set -uo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
here="$root/proxy/tests/oauth"
py="$root/.tools/venv/bin/python"
pc="${PORTCULLIS_BIN:-$root/target/debug/portcullis}"
out="$root/target/oauth"
rm -rf "$out"; mkdir -p "$out"
bash "$root/scripts/install-peers.sh" >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
[ -n "${PORTCULLIS_BIN:-}" ] || cargo build --quiet --workspace --bins || exit 1
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "FAIL nothing listens on $1"; exit 1; }

as=3520; app=3521; proxy=15520; admin=15521
"$py" "$here/as_server.py" $as >"$out/as.log" 2>&1 & pids+=($!)
"$py" "$root/proxy/tests/sessions/server.py" $app "$out/ledger.txt" >"$out/server.log" 2>&1 & pids+=($!)
cat >"$out/pc.yaml" <<EOT
listener: {addr: "127.0.0.1:$proxy"}
admin: {addr: "127.0.0.1:$admin"}
upstream: {url: "http://127.0.0.1:$app"}
auth:
  resource: http://127.0.0.1:$proxy/mcp
  metadata: {authorization_servers: ["http://127.0.0.1:$as/"], scopes_supported: [mcp]}
  issuers:
    - name: e2e
      issuer: http://127.0.0.1:$as/
      jwks: {uri: "http://127.0.0.1:$as/jwks.json", min_refetch_interval: 1s}
      algorithms: [ES256]
  scopes:
    required: [mcp]
    rules:
      - {methods: ["tools/call"], names: ["append"], require: ["ledger:write"]}
      - {methods: ["tools/call"], names: ["pid"], require: ["ops:read"]}
EOT
wait_port $as; wait_port $app
"$pc" run --config "$out/pc.yaml" >"$out/pc.log" 2>&1 & pids+=($!)
wait_port $proxy
"$py" "$here/client.py" "http://127.0.0.1:$proxy/mcp" "http://127.0.0.1:$as" >"$out/client.json" 2>"$out/client.err"
curl -s "http://127.0.0.1:$admin/metrics" >"$out/metrics.txt"
"$py" - "$out" "$proxy" <<'PY'
import json, re, sys
out, proxy = sys.argv[1], sys.argv[2]
passed = failed = 0
def check(name, ok, detail=""):
    global passed, failed
    passed += ok; failed += not ok
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f"  [{detail}]" if detail else ""))
try:
    r = json.load(open(f"{out}/client.json"))
except Exception as e:
    print(f"FAIL the client ran  [{e}]"); print(open(f"{out}/client.err").read()[-2000:]); sys.exit(1)
metrics = open(f"{out}/metrics.txt").read()
def metric(pattern):
    return sum(float(v) for v in re.findall(rf"^{pattern} (\S+)$", metrics, re.M))
resource = f"http://127.0.0.1:{proxy}/mcp"
log = r["as_log"]
check("every call succeeded through discovery, two step-ups and a key rotation",
      r["errors"] == 0 and r["calls"] == 4 and r["results"].get("append") == "appended oauth-e2e",
      f"{r['errors']} errors {r['error_samples']}")
check("the SDK authorized with PKCE and resource = the metadata's resource, three times (first, two step-ups)",
      len(log["authorize"]) == 3 and all(a["pkce"] and a["resource"] == resource for a in log["authorize"])
      and all(t["resource"] == resource for t in log["token"]), json.dumps(log["authorize"]))
scopes = [sorted(a["scopes"] or []) for a in log["authorize"]]
check("each step-up asked for the union of scopes",
      scopes[1:] == [["ledger:write", "mcp"], ["ledger:write", "mcp", "ops:read"]] if len(scopes) == 3 else False, str(scopes))
check("the last token was signed with the rotated key, and Portcullis fetched it once on the unknown kid",
      log["token"][-1]["kid"] == "k2" and metric(r'portcullis_jwks_refresh_total\{issuer="e2e",result="ok",trigger="kid_miss"\}') >= 1,
      f"kids {[t['kid'] for t in log['token']]}")
check("Portcullis challenged (401), stepped up twice (403), then allowed",
      metric(r'portcullis_auth_decisions_total\{issuer="none",outcome="challenge",reason="missing"\}') >= 1
      and metric(r'portcullis_auth_decisions_total\{issuer="e2e",outcome="refuse",reason="insufficient_scope"\}') == 2
      and metric(r'portcullis_auth_decisions_total\{issuer="e2e",outcome="allow",reason="(?:ok|cached)"\}') >= 3)
seen = json.loads(r["results"].get("whoami", "{}"))
check("the server saw no token, and the verified subject and scopes",
      seen.get("authorization") is False and seen.get("subject") == "alice"
      and seen.get("scopes") == "ledger:write mcp ops:read", str(seen))
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
oauth=$?
echo "# the signed identity assertion, to a Python SDK server that verifies it against the sidecar's JWKS"
srv=3522; proxy2=15522; admin2=15523
cat >"$out/pc-assert.yaml" <<EOT
listener: {addr: "127.0.0.1:$proxy2"}
admin: {addr: "127.0.0.1:$admin2"}
upstream:
  url: "http://127.0.0.1:$srv"
  identity: {mode: assertion, assertion: {header: authorization}}
auth:
  resource: http://127.0.0.1:$proxy2/mcp
  metadata: {authorization_servers: ["http://127.0.0.1:$as/"]}
  issuers:
    - name: e2e
      issuer: http://127.0.0.1:$as/
      jwks: {uri: "http://127.0.0.1:$as/jwks.json"}
      algorithms: [ES256]
EOT
"$pc" run --config "$out/pc-assert.yaml" >"$out/pc-assert.log" 2>&1 & pids+=($!)
wait_port $admin2
"$py" "$here/assertion_server.py" $srv "http://127.0.0.1:$admin2/.well-known/jwks.json" \
  "http://127.0.0.1:$srv" "http://127.0.0.1:$as/" >"$out/assertion-server.log" 2>&1 & pids+=($!)
wait_port $srv; wait_port $proxy2
"$py" "$here/assertion_check.py" "http://127.0.0.1:$proxy2/mcp" "http://127.0.0.1:$as" \
  "http://127.0.0.1:$srv/mcp" "http://127.0.0.1:$admin2/.well-known/jwks.json" \
  >"$out/assertion.json" 2>"$out/assertion.err"
"$py" - "$out" <<'PY' || oauth=1
import json, sys
out = sys.argv[1]
try:
    r = json.load(open(f"{out}/assertion.json"))
except Exception as e:
    print(f"FAIL the assertion check ran  [{e}]"); print(open(f"{out}/assertion.err").read()[-2000:]); sys.exit(1)
seen = r.get("through_portcullis") or {}
ok = (seen.get("sub") == "alice" and seen.get("orig_iss") == "e2e" and seen.get("scope") == "mcp"
      and seen.get("iss", "").startswith("portcullis:") and seen.get("exp", 0) - seen.get("iat", 0) == 60)
print(f"{'PASS' if ok else 'FAIL'} the server verified the sidecar's assertion: sub alice, the token's scope and issuer, 60 s  [{r.get('through_portcullis_error') or seen}]")
refused = r.get("direct_user_token") == 401 and r.get("direct_forged") == 401
print(f"{'PASS' if refused else 'FAIL'} straight to the server, the user's own token and a forged assertion get 401  [{r.get('direct_user_token')}, {r.get('direct_forged')}]")
sys.exit(0 if ok and refused else 1)
PY
echo "# the token matrix minted by PyJWT, against Portcullis and Envoy jwt_authn configured alike"
envoy="$("$py" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
if "$py" "$here/differential.py" "$pc" "$envoy" "$out"; then
  echo "PASS Portcullis accepted exactly the valid tokens of the PyJWT matrix"
else
  echo "FAIL Portcullis decided a PyJWT token wrongly (target/oauth/differential.json)"; oauth=1
fi
exit $oauth
