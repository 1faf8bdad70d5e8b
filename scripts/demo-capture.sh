#!/usr/bin/env bash
# make demo-capture: a client that dials the MCP server's own port (not the
# sidecar's) is still policed, because `portcullis capture` sends it there.
#
# Two network namespaces stand in for a client and an injected pod. In the
# pod: the example MCP server (rmcp) on :8080, and `portcullis run` as uid
# 1338 with a policy that denies delete_*. The client runs a whole MCP
# session against podIP:8080, before and after the capture rules.
# Needs root (namespaces, nat rules). Exits non-zero if the policy is not
# enforced once the rules are in.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug
PY=/usr/bin/python3
MCP_PY=$REPO/proxy/tests/capture_netns/mcp.py
POD=pcdemo$$-pod
CLI=pcdemo$$-cli
WORK=$(mktemp -d)
chmod 755 "$WORK"

[ "$(id -u)" -eq 0 ] || { echo "demo-capture: run as root (it creates network namespaces)" >&2; exit 1; }
if ! command -v nft >/dev/null || ! command -v setpriv >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables iproute2 util-linux >/dev/null
fi
(cd "$REPO" && cargo build -q -p portcullis --bin portcullis && cargo build -q -p example-mcp-server --bin example-mcp-server) || exit 1

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    ip netns del "$POD" 2>/dev/null
    ip netns del "$CLI" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
as() { local ns=$1 uid=$2; shift 2; ip netns exec "$ns" setpriv --reuid "$uid" --regid "$uid" --clear-groups timeout 120 "$@"; }
wait_port() { for _ in $(seq 1 250); do ip netns exec "$POD" ss -Hltn "sport = :$1" | grep -q . && return; sleep 0.02; done; echo "no listener on :$1"; exit 1; }

{
    ip netns add "$POD" && ip netns add "$CLI" &&
        ip link add "vp$$" type veth peer name "vc$$" &&
        ip link set "vp$$" netns "$POD" && ip link set "vc$$" netns "$CLI" &&
        ip -n "$POD" addr add 10.251.0.2/30 dev "vp$$" && ip -n "$CLI" addr add 10.251.0.1/30 dev "vc$$" &&
        ip -n "$POD" link set lo up && ip -n "$POD" link set "vp$$" up &&
        ip -n "$CLI" link set lo up && ip -n "$CLI" link set "vc$$" up
} || { echo "demo-capture: cannot set up the namespaces"; exit 1; }

cat >"$WORK/config.yaml" <<'YAML'
admin: {addr: '0.0.0.0:15120'}
upstream: {url: 'http://127.0.0.1:8080'}
policy:
  default: allow
  rules:
    - {name: no-delete, action: deny, methods: [tools/call], names: [delete_*], reason: destructive tools are off limits}
YAML
chmod 644 "$WORK/config.yaml"
as "$POD" 1000 "$BIN/example-mcp-server" --listen 0.0.0.0:8080 >"$WORK/server.log" 2>&1 &
PIDS+=($!)
as "$POD" 1338 env PORTCULLIS_CAPTURE_MODE=inbound PORTCULLIS_INBOUND_PORTS=8080 RUST_LOG=warn \
    "$BIN/portcullis" run --config "$WORK/config.yaml" >"$WORK/sidecar.log" 2>&1 &
PIDS+=($!)
wait_port 8080; wait_port 15106; wait_port 15120

# The example server (rmcp) refuses a Host that is not a loopback name
# (DNS-rebinding protection), so the client says `localhost:8080`, as a
# port-forwarded client would; Portcullis accepts loopback names too, and
# names the upstream 127.0.0.1:8080 itself.
session() {
    ip netns exec "$CLI" env MCP_HOST=localhost:8080 "$PY" "$MCP_PY" session \
        http://10.251.0.2:8080/mcp echo delete_file | sed 's/^/    /'
}

echo "== 1. No capture rules: the client dials podIP:8080 and talks to the server directly"
session
echo
echo "== 2. The init container's command: portcullis capture --mode inbound"
ip netns exec "$POD" "$BIN/portcullis" capture --backend nft --mode inbound | sed 's/^/    /'
echo
echo "== 3. Same client, same address (podIP:8080): now every call goes through Portcullis"
out=$(session)
echo "$out"
echo
echo "== The sidecar's metrics"
ip netns exec "$POD" "$PY" "$MCP_PY" get http://127.0.0.1:15120/metrics \
    | grep -E '^portcullis_(capture_connections_total|requests_total\{.*tools/call)' | sed 's/^/    /'
if grep -q "echo: ok" <<<"$out" && grep -q "delete_file: error .*off limits" <<<"$out"; then
    echo; echo "demo-capture: OK (echo allowed, delete_file denied on the server's own port)"
else
    echo; echo "demo-capture: FAILED"; tail -n 20 "$WORK/sidecar.log"; exit 1
fi
