#!/usr/bin/env bash
# Instructions per call, counted by callgrind: the bare forwarder (h) and
# portcullis plaintext with native rules (b), each serving the bench's
# `tools/call` of `echo` over one keep-alive connection. Unlike CPU time
# on a shared VM (which moves by 20-50 % between runs), the count is the
# same to about 0.2 % from run to run, so it shows what a change to the
# request path saves before a full `make bench` can. Userspace only: the
# kernel's share (TCP, epoll) is not counted.
#
#   bash scripts/instructions.sh [PORTCULLIS_BINARY] [CALLS]
#
# Needs valgrind (Debian package `valgrind`) and python3. About a minute.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bin="${1:-}"
calls="${2:-1000}"
command -v valgrind > /dev/null || { echo "instructions.sh: needs valgrind" >&2; exit 2; }
cargo build --quiet --release -p portcullis-bench
if [ -z "$bin" ]; then
  cargo build --quiet --release -p portcullis --bin portcullis
  bin=target/release/portcullis
fi
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Ports off the bench's ranges.
up=18700 proxy=18702 admin=18721
cat > "$work/b.yaml" << EOF
listener:
  addr: 127.0.0.1:$proxy
admin:
  addr: 127.0.0.1:$admin
upstream:
  url: http://127.0.0.1:$up
policy:
  default: deny
  rules:
    - name: echo-only
      action: allow
      methods: ["tools/call"]
      names: ["echo"]
EOF

# One keep-alive connection; each call waits for its answer.
cat > "$work/drive.py" << 'EOF'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
body = ('{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo",'
        '"arguments":{"text":"The quick brown fox jumps over the lazy dog, 0123456789"},'
        '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}')
headers = {"Host": "localhost:%d" % port, "Content-Type": "application/json",
           "Accept": "application/json, text/event-stream",
           "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo"}
for i in range(n):
    conn.request("POST", "/mcp", body % i, headers)
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        sys.exit("call %d: HTTP %d" % (i, resp.status))
EOF

target/release/portcullis-bench upstream --listen "127.0.0.1:$up" > "$work/upstream.log" 2>&1 &
pids+=($!)

# count NAME COMMAND...: runs COMMAND under callgrind, warms it up with 200
# calls, counts `calls` more, and prints the instructions per call.
count() {
  local name="$1"
  shift
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" "$@" \
    > "$work/$name.log" 2>&1 &
  local vg=$!
  pids+=("$vg")
  local waited=0
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $proxy), 1)" 2> /dev/null; do
    sleep 0.5
    waited=$((waited + 1))
    [ "$waited" -lt 240 ] || { echo "$name never listened; its log:" >&2; cat "$work/$name.log" >&2; exit 1; }
  done
  python3 "$work/drive.py" "$proxy" 200
  callgrind_control -z "$vg" > /dev/null 2>&1
  python3 "$work/drive.py" "$proxy" "$calls"
  callgrind_control -d "$vg" > /dev/null 2>&1
  kill "$vg"
  wait "$vg" 2> /dev/null || true
  local total
  total=$(awk '/^summary:/ {print $2}' "$work/$name.out.1")
  echo $((total / calls))
}

h=$(count h target/release/portcullis-bench forward --listen "127.0.0.1:$proxy" --upstream "127.0.0.1:$up")
b=$(count b "$bin" run --config "$work/b.yaml")
echo "instructions per call (callgrind, $calls calls, one connection):"
echo "  h bare forwarder   $h"
echo "  b portcullis plain $b"
python3 -c "print('  b / h              %.2f' % ($b / $h))"
