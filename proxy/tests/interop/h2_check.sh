#!/usr/bin/env bash
# HTTP/2 on Portcullis's inbound listener, with curl (nghttp2): a JSON answer
# (a 2026-07-28 tools/list) and an SSE stream (a 2025-11-25 session whose
# tools/call streams log events before its result), against the reference
# server behind Portcullis.
# Usage: h2_check.sh <label> <url> <curl options selecting HTTP/2 and TLS...>
#   h2c:  h2_check.sh h2c http://127.0.0.1:15113/mcp --http2-prior-knowledge
#   mTLS: h2_check.sh h2-mtls https://localhost:15114/mcp --http2 --cacert ca.pem --cert a.pem --key a.key
set -uo pipefail
label=$1 url=$2; shift 2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
post() { # out-file body extra-curl-args...
  local out=$1 body=$2; shift 2
  curl -sS --max-time 15 "$@" -D "$out.head" -o "$out" "$url" \
    -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' -d "$body"
}
passed=0 failed=0
verdict() { # ok? name detail
  if [ "$1" = 0 ]; then echo "PASS $label $2: $3"; passed=$((passed+1)); else echo "FAIL $label $2: $3"; failed=$((failed+1)); fi
}

meta='"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
post "$tmp/list" "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":{$meta}}" "$@" \
  -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/list'
ok=1
head -1 "$tmp/list.head" | grep -q '^HTTP/2 200' && grep -qi '^content-type: application/json' "$tmp/list.head" \
  && grep -q '"name":"test_simple_text"' "$tmp/list" && ok=0
verdict $ok "JSON answer" "$(head -1 "$tmp/list.head" | tr -d '\r'), $(wc -c <"$tmp/list") bytes"

init='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl-h2","version":"1"}}}'
post "$tmp/init" "$init" "$@"
sid=$(grep -i '^mcp-session-id:' "$tmp/init.head" | cut -d' ' -f2 | tr -d '\r')
h=(-H "mcp-session-id: $sid" -H 'mcp-protocol-version: 2025-11-25')
post "$tmp/note" '{"jsonrpc":"2.0","method":"notifications/initialized"}' "$@" "${h[@]}"
call='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow_progress","arguments":{"steps":3,"delay_ms":100}}}'
post "$tmp/call" "$call" "$@" "${h[@]}"
ok=1
head -1 "$tmp/call.head" | grep -q '^HTTP/2 200' && grep -qi '^content-type: text/event-stream' "$tmp/call.head" \
  && [ "$(grep -c 'step [0-9] of 3' "$tmp/call")" = 3 ] && grep -q '"id":2,"result".*counted to 3' "$tmp/call" && ok=0
verdict $ok "SSE stream" "$(head -1 "$tmp/call.head" | tr -d '\r'), $(grep -c '^data: {' "$tmp/call") events"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
