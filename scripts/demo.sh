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
cargo build --quiet --release --target wasm32-wasip2 -p tool-rbac -p arg-guard -p rate-limit -p redact
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
