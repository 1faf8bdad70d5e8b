#!/usr/bin/env bash
# Runs the demo: the example MCP server, Portcullis in front of it, and the
# scripted client. With --keep, leaves both running for you to try.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
keep=0
[ "${1:-}" = "--keep" ] && keep=1

# The demo's policy is a chain of WASM filters built from filters/.
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
# tool-rbac and arg-guard apart from Cedar and Rego, whose dependencies
# would turn on `regex`'s Unicode features in arg-guard (see Makefile).
cargo build --quiet --release --target wasm32-wasip2 -p tool-rbac -p arg-guard
cargo build --quiet --release --target wasm32-wasip2 -p rate-limit -p redact -p cedar-filter -p rego-filter
cargo build --quiet --workspace --bins
bin="$root/target/debug"
logs="$root/.demo"
mkdir -p "$logs"

pids=()
cleanup() {
  [ "$keep" = 1 ] && return
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on port $1; see $logs" >&2
  return 1
}

# The demo trust domain: a CA, the sidecar's SVID (with a DNS SAN so that
# ordinary TLS clients can check the host name too) and two agents.
pki="$logs/pki"
rm -rf "$pki"
"$bin/portcullis" ca init --dir "$pki/ca" --trust-domain demo.local >/dev/null
"$bin/portcullis" ca issue --dir "$pki/ca" --id spiffe://demo.local/ns/mcp/sa/portcullis --dns localhost --out "$pki/sidecar" >/dev/null
"$bin/portcullis" ca issue --dir "$pki/ca" --id spiffe://demo.local/ns/agents/sa/planner --out "$pki/planner" >/dev/null
"$bin/portcullis" ca issue --dir "$pki/ca" --id spiffe://demo.local/ns/agents/sa/intern --out "$pki/intern" >/dev/null

"$bin/example-mcp-server" --listen 127.0.0.1:3001 >"$logs/server.log" 2>&1 &
pids+=($!)
wait_port 3001
"$bin/portcullis" run --config examples/config/demo.yaml >"$logs/portcullis.log" 2>&1 &
pids+=($!)
wait_port 15001

echo "== demo: example server on :3001, portcullis on :15001 (mTLS, SPIFFE), admin on :15020 =="
"$bin/demo-client" --url https://localhost:15001/mcp --admin http://127.0.0.1:15020 \
  --ca "$pki/ca/ca.pem" --planner "$pki/planner" --intern "$pki/intern"
echo
echo "== audit records (from $logs/portcullis.log) =="
grep 'portcullis::audit' "$logs/portcullis.log" | sed -e 's/^[^ ]* //' | cut -c1-220

# Sessions that survive a backend restart: a second example server behind a
# second sidecar with sealed session ids, killed and started again while
# one client session carries on.
echo
echo "== sessions: one client session across a backend restart (server :3002, portcullis :15002) =="
printf 'keys:\n  - {kid: demo, key_b64: "%s", state: primary}\n' "$(head -c 32 /dev/urandom | base64 -w0)" >"$logs/keyring.yaml"
cat >"$logs/sessions.yaml" <<EOT
listener: {addr: "127.0.0.1:15002"}
admin: {addr: "127.0.0.1:15022"}
upstream: {url: "http://127.0.0.1:3002"}
sessions: {keyring_file: $logs/keyring.yaml}
EOT
"$bin/example-mcp-server" --listen 127.0.0.1:3002 >"$logs/server-sessions.log" 2>&1 &
server=$!
pids+=($server)
wait_port 3002
"$bin/portcullis" run --config "$logs/sessions.yaml" >"$logs/portcullis-sessions.log" 2>&1 &
pids+=($!)
wait_port 15002
mcp() { # session-id body -> response (headers and body)
  curl -sS -i http://127.0.0.1:15002/mcp -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-06-18' \
    ${1:+-H "mcp-session-id: $1"} -d "$2"
}
sid=$(mcp "" '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"demo","version":"1"}}}' \
  | tr -d '\r' | sed -n 's/^mcp-session-id: //Ip')
mcp "$sid" '{"jsonrpc":"2.0","method":"notifications/initialized"}' >/dev/null
echo "initialize: the client's Mcp-Session-Id is Portcullis's sealed one: ${sid:0:40}... (${#sid} chars)"
echo_call() {
  mcp "$sid" "{\"jsonrpc\":\"2.0\",\"id\":$1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"text\":\"$2\"}}}" \
    | grep -o '"text":"[^"]*"' | head -1
}
before=$(echo_call 1 "before the restart")
echo "call 1 (server pid $server): $before"
kill -9 "$server"; wait "$server" 2>/dev/null || true
"$bin/example-mcp-server" --listen 127.0.0.1:3002 >>"$logs/server-sessions.log" 2>&1 &
server=$!
pids+=($server)
wait_port 3002
after=$(echo_call 2 "after the restart")
echo "server killed (SIGKILL) and started again: new pid $server"
echo "call 2, same client session id: $after"
rebinds=$(curl -s http://127.0.0.1:15022/metrics | sed -n 's/^portcullis_session_rebinds_total{outcome="ok",reason="[a-z_]*"} //p' | awk '{s+=$1} END {print s+0}')
echo "portcullis_session_rebinds_total{outcome=\"ok\"} = $rebinds"
if [ "$before" != '"text":"before the restart"' ] || [ "$after" != '"text":"after the restart"' ] || [ "$rebinds" != 1 ]; then
  echo "FAIL: the session did not survive the restart (logs in $logs)" >&2
  exit 1
fi
echo "The session survived: same client id, new server process, one rebind."

# Portcullis as the OAuth resource server: a third sidecar with auth: in
# front of the same server. The demo's identity provider is a key made here
# (RS256 tokens signed with openssl); its JWKS is a file.
echo
echo "== authorization: portcullis :15003 as the OAuth 2.1 resource server =="
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
openssl genrsa -out "$logs/idp.key" 2048 2>/dev/null
n=$(openssl rsa -in "$logs/idp.key" -noout -modulus | cut -d= -f2 | perl -ne 'chomp; print pack "H*", $_' | b64url)
printf '{"keys":[{"kty":"RSA","kid":"demo","use":"sig","n":"%s","e":"AQAB"}]}' "$n" >"$logs/jwks.json"
mint() { # scope -> a token for alice, valid ten minutes
  local now h p sig
  now=$(date +%s)
  h=$(printf '{"alg":"RS256","kid":"demo","typ":"at+jwt"}' | b64url)
  p=$(printf '{"iss":"https://idp.demo.local","aud":"http://127.0.0.1:15003/mcp","sub":"alice","scope":"%s","iat":%s,"exp":%s}' \
    "$1" "$now" "$((now + 600))" | b64url)
  sig=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$logs/idp.key" | b64url)
  printf '%s.%s.%s' "$h" "$p" "$sig"
}
cat >"$logs/auth.yaml" <<EOT
listener: {addr: "127.0.0.1:15003"}
admin: {addr: "127.0.0.1:15023"}
upstream: {url: "http://127.0.0.1:3002"}
auth:
  resource: http://127.0.0.1:15003/mcp
  metadata: {authorization_servers: ["https://idp.demo.local"], scopes_supported: [mcp]}
  issuers:
    - {name: demo-idp, issuer: "https://idp.demo.local", jwks: {file: $logs/jwks.json}, algorithms: [RS256]}
  scopes:
    required: [mcp]
    rules:
      - {methods: ["tools/call"], names: ["delete_*"], require: ["files:write"]}
EOT
"$bin/portcullis" run --config "$logs/auth.yaml" >"$logs/portcullis-auth.log" 2>&1 &
pids+=($!)
wait_port 15003
call() { # token body -> "status www-authenticate"
  curl -sS -o /dev/null -D - http://127.0.0.1:15003/mcp -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-06-18' \
    ${1:+-H "authorization: Bearer $1"} -d "$2" | tr -d '\r' \
    | awk 'NR==1 {s=$2} tolower($1)=="www-authenticate:" {sub(/^[^:]*: /, ""); w=$0} END {print s, w}'
}
init='{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"demo","version":"1"}}}'
delete='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/tmp/x"}}}'
no_token=$(call "" "$init")
with_token=$(call "$(mint mcp)" "$init")
short=$(call "$(mint mcp)" "$delete")
echo "no token:                      $no_token"
echo "token (scope mcp), initialize: $with_token"
echo "same token, delete_file:       $short"
prm=$(curl -s http://127.0.0.1:15003/.well-known/oauth-protected-resource/mcp)
echo "protected resource metadata:   $prm"
if [ "${no_token%% *}" != 401 ] || [ "${with_token%% *}" != 200 ] || [ "${short%% *}" != 403 ] \
  || [[ "$short" != *'error="insufficient_scope"'*'scope="files:write mcp"'* ]]; then
  echo "FAIL: the resource server did not answer 401 / 200 / 403 (logs in $logs)" >&2
  exit 1
fi
echo "401 challenge, a call with a token, and a 403 naming the scopes it needs."

# Policy languages and shadow mode: a fourth sidecar whose policy is
# written in Cedar (enforced), with a stricter Rego policy in shadow mode
# beside it: its would-be denials are logged, not applied. Then the audit
# log is replayed against the Rego policy as a candidate.
echo
echo "== policy languages: portcullis :15004 with a Cedar policy enforced and a Rego policy in shadow mode =="
wasm="$root/target/wasm32-wasip2/release"
cat >"$logs/languages.yaml" <<EOT
listener: {addr: "127.0.0.1:15004"}
admin: {addr: "127.0.0.1:15024"}
upstream: {url: "http://127.0.0.1:3002"}
filter_engine: {cache_dir: $logs/filter-cache}
filters:
  - name: cedar
    path: $wasm/cedar_filter.wasm
    timeout: 50ms
    config:
      policies: |
        permit (principal, action, resource);
        @id("ticket")
        @reason("destructive tools need a ticket argument starting with CHG-")
        forbid (principal, action == Mcp::Action::"tools/call", resource)
        when { context.kind == "call" && resource.annotations has destructiveHint
               && resource.annotations.destructiveHint }
        unless { resource.hasTag("ticket") && resource.getTag("ticket") like "CHG-*" };
  - name: files-under-srv
    path: $wasm/rego_filter.wasm
    mode: shadow
    timeout: 50ms
    config:
      policies: |
        package portcullis
        default allow := false
        allow if input.target.name != "read_file"
        allow if input.kind != "call"
        allow if startswith(input.arguments.path, "/srv/")
        reason := "read_file is limited to /srv/"
EOT
"$bin/portcullis" --log-format json run --config "$logs/languages.yaml" >"$logs/portcullis-languages.log" 2>&1 &
pids+=($!)
wait_port 15004
meta='{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"demo","version":"1"}}'
tool() { # id name arguments -> the answer's text or error message
  curl -sS http://127.0.0.1:15004/mcp -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2026-07-28' \
    -H 'mcp-method: tools/call' -H "mcp-name: $2" \
    -d "{\"jsonrpc\":\"2.0\",\"id\":$1,\"method\":\"tools/call\",\"params\":{\"name\":\"$2\",\"arguments\":$3,\"_meta\":$meta}}" \
    | grep -o '"text":"[^"]*"\|"message":"[^"]*"' | head -1
}
list=$(curl -sS http://127.0.0.1:15004/mcp -H 'content-type: application/json' \
  -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/list' \
  -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{\"_meta\":$meta}}" \
  | grep -o '"name":"[a-z_]*"' | tr '\n' ' ')
no_ticket=$(tool 2 delete_file '{"path":"/tmp/x"}')
ticket=$(tool 3 delete_file '{"path":"/tmp/x","ticket":"CHG-42"}')
read_etc=$(tool 4 read_file '{"path":"/etc/hosts"}')
echo "tools/list (annotations for Cedar):       $list"
echo "delete_file without a ticket (Cedar):     $no_ticket"
echo "delete_file with ticket CHG-42 (Cedar):   $ticket"
echo "read_file /etc/hosts (Rego, shadow):      $read_etc"
sleep 0.2
shadow=$(grep 'portcullis::audit' "$logs/portcullis-languages.log" | grep '"shadow_deny"' | head -1)
echo "the shadow denial in the audit log:"
echo "  $shadow" | cut -c1-260
echo "replaying the audit log against the Rego policy as a candidate (portcullis policy test --audit):"
sed -n '/^        package portcullis/,/reason :=/p' "$logs/languages.yaml" | sed 's/^        //' >"$logs/candidate.rego"
python3 -c 'import json,sys; print(json.dumps({"policies": open(sys.argv[1]).read()}))' "$logs/candidate.rego" >"$logs/candidate.json"
"$bin/portcullis" policy test --filter "$wasm/rego_filter.wasm" --config "$logs/candidate.json" \
  --audit "$logs/portcullis-languages.log" --timeout 100ms | sed 's/^/  /'
if [[ "$no_ticket" != *"need a ticket"* ]] || [[ "$ticket" != *"deleted /tmp/x"* ]] \
  || [[ "$read_etc" != *"contents of /etc/hosts"* ]] || [[ "$shadow" != *'read_file is limited to /srv/'* ]]; then
  echo "FAIL: Cedar did not enforce, or the shadow policy did not report (logs in $logs)" >&2
  exit 1
fi
echo "Cedar denied the call without a ticket; the shadow Rego policy let read_file through and logged what it would deny."

if [ "$keep" = 1 ]; then
  cat <<EOT

Left running (pids ${pids[*]}). Try:
  curl -s --cacert $pki/ca/ca.pem --cert $pki/planner.pem --key $pki/planner.key \\
    -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\
    -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: delete_file' \\
    https://localhost:15001/mcp -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/x"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}'
  curl -s http://127.0.0.1:15020/metrics | grep portcullis_
Stop them with: kill ${pids[*]}
EOT
fi
