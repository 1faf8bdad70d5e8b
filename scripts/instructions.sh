#!/usr/bin/env bash
# Instructions per call, counted by callgrind: the bare forwarder (h),
# portcullis plaintext with native rules (b), and portcullis plaintext with
# the bench's two WASM filters (i), each serving the bench's `tools/call`
# of `echo` over one keep-alive connection. Unlike CPU time on a shared VM
# (which moves by 20-50 % between runs), the count is the same to about
# 0.2-0.5 % from run to run, so it shows what a change to the request path or
# to a filter saves before a full `make bench` can. A smaller change shows
# in the count of the functions it touched, which does not move:
# INSTRUCTIONS_OUT=DIR keeps callgrind's outputs there for
# callgrind_annotate, and with PORTCULLIS_WASM_PERFMAP=1 the sidecar
# writes /tmp/perf-<pid>.map, which names the guest functions at the
# addresses callgrind reports. Userspace only: the kernel's share (TCP,
# epoll) is not counted. (i - b) / b counted this way is the filters' own
# code; their share of the CPU under load has been larger (bench/README.md,
# twenty-second pass, for a likely reason).
#
#   [INSTRUCTIONS_OUT=DIR] bash scripts/instructions.sh [PORTCULLIS_BINARY] [CALLS]
#
# Needs valgrind (Debian package `valgrind`) and python3. About two minutes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bin="${1:-}"
calls="${2:-1000}"
command -v valgrind > /dev/null || { echo "instructions.sh: needs valgrind" >&2; exit 2; }
cargo build --quiet --release -p portcullis-bench
# (cargo says so if the target is missing; rustup only adds noise.)
rustup target add wasm32-wasip2 > /dev/null 2>&1 || true
cargo build --quiet --release --target wasm32-wasip2 -p tool-rbac -p arg-guard
filters="$root/target/wasm32-wasip2/release"
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
# The filter engine's instance pool reserves address space for 256
# instances by default (about 2 TiB), more than valgrind can map: the
# sidecar refused to start under it, even b with no filter. One connection
# needs one instance per filter. The compile cache is filled outside
# valgrind (`prime`), where Cranelift takes seconds, not minutes.
engine="filter_engine:
  max_instances: 4
  cache_dir: $work/filter-cache"
# The ports, the same in every configuration.
ports="listener:
  addr: 127.0.0.1:$proxy
admin:
  addr: 127.0.0.1:$admin
upstream:
  url: http://127.0.0.1:$up"
cat > "$work/b.yaml" << EOF
$ports
policy:
  default: deny
  rules:
    - name: echo-only
      action: allow
      methods: ["tools/call"]
      names: ["echo"]
$engine
EOF

# i: the bench's configuration i (bench/configs), on these ports.
cat > "$work/i.yaml" << EOF
$ports
policy:
  default: allow
  rules: []
$engine
filters:
  - name: tool-rbac
    path: $filters/tool_rbac.wasm
    hooks: [request, list]
    # Guest code runs tens of times slower under valgrind than the 10 ms
    # default allows for (the load-time configuration check included).
    timeout: 5s
    config:
      default: deny
      rules:
        - name: anyone-echo
          effect: allow
          tools: ["echo"]
  - name: arg-guard
    path: $filters/arg_guard.wasm
    hooks: [request]
    timeout: 5s
    reuse_decisions: false
    config:
      constraints:
        - tools: ["echo"]
          pointer: /text
          required: true
          max_length: 1024
          deny_regex: "(?i)drop\\\\s+table"
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


# listening PID LOG NAME [PORT]: waits until PORT (the proxy's by default)
# answers and PID is still running (another process that holds the port
# would answer too); if PID exits first, or after two minutes, prints LOG
# and fails.
listening() {
  local port="${4:-$proxy}"
  local waited=0
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2> /dev/null; do
    sleep 0.5
    waited=$((waited + 1))
    if [ "$waited" -ge 240 ] || ! kill -0 "$1" 2> /dev/null; then
      echo "$3 never listened; its log:" >&2
      cat "$2" >&2
      exit 1
    fi
  done
  sleep 0.2
  kill -0 "$1" 2> /dev/null || { echo "$3 exited; its log:" >&2; cat "$2" >&2; exit 1; }
}

target/release/portcullis-bench upstream --listen "127.0.0.1:$up" > "$work/upstream.log" 2>&1 &
pids+=($!)
listening "$!" "$work/upstream.log" upstream "$up"

# count NAME COMMAND...: runs COMMAND under callgrind, warms it up with 200
# calls, counts `calls` more, and sets `counted` to the instructions per
# call. Not run in a command substitution: there a failed call would not
# stop the script (errexit is off in a subshell's function), and the
# proxy's pid would not reach the cleanup.
count() {
  local name="$1"
  shift
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" "$@" \
    > "$work/$name.log" 2>&1 &
  local vg=$!
  pids+=("$vg")
  listening "$vg" "$work/$name.log" "$name"
  python3 "$work/drive.py" "$proxy" 200
  callgrind_control -z "$vg" > /dev/null 2>&1
  python3 "$work/drive.py" "$proxy" "$calls"
  callgrind_control -d "$vg" > /dev/null 2>&1
  kill "$vg" 2> /dev/null || true
  wait "$vg" 2> /dev/null || true
  local total
  total=$(awk '/^summary:/ {print $2}' "$work/$name.out.1")
  [ -n "$total" ] || { echo "$name: callgrind wrote no count; its log:" >&2; cat "$work/$name.log" >&2; exit 1; }
  counted=$((total / calls))
  if [ -n "${INSTRUCTIONS_OUT:-}" ]; then
    mkdir -p "$INSTRUCTIONS_OUT"
    cp "$work/$name.out.1" "$INSTRUCTIONS_OUT/$name.callgrind"
  fi
}

# prime CONFIG: compiles CONFIG's filters into the cache, outside valgrind
# (filters are loaded before the listener binds).
prime() {
  RUST_LOG=warn "$bin" run --config "$1" > "$work/prime.log" 2>&1 &
  local p=$!
  pids+=("$p")
  listening "$p" "$work/prime.log" "$1"
  kill "$p" 2> /dev/null || true
  wait "$p" 2> /dev/null || true
}

count h target/release/portcullis-bench forward --listen "127.0.0.1:$proxy" --upstream "127.0.0.1:$up"
h=$counted
count b "$bin" run --config "$work/b.yaml"
b=$counted
prime "$work/i.yaml"
count i "$bin" run --config "$work/i.yaml"
i=$counted
echo "instructions per call (callgrind, $calls calls, one connection):"
echo "  h bare forwarder              $h"
echo "  b portcullis plain            $b"
echo "  i portcullis plain + filters  $i"
python3 -c "print('  b / h                         %.2f' % ($b / $h))"
python3 -c "print('  (i - b) / b                   %.3f (%d per call)' % (($i - $b) / $b, $i - $b))"
