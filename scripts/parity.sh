#!/usr/bin/env bash
# The parity table: one policy ("team-tools", examples/parity/) written as
# static rules, tool-rbac, Cedar, Rego, Python and JavaScript, run through
# the real host over one fixture set. Every implementation must give every
# fixture its expected decision (and visible list), so they all agree;
# then Cedar and Rego are checked against the engines' own implementations
# (cedarpy, regopy: examples/parity/crosscheck.py).
#
# Prints a table of warm cost per evaluation and component size. With
# --release it uses the release binary (the figures in the README come
# from that); otherwise the debug one, whose figures mean nothing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
profile=debug
[ "${1:-}" = "--release" ] && profile=release
bin="target/$profile/portcullis"
[ -x "$bin" ] || { echo "parity: $bin is missing (cargo build${profile/debug/} -p portcullis)" >&2; exit 2; }
rust="target/wasm32-wasip2/release"
poly="target/polyglot"
repeat=200
[ "$profile" = release ] && repeat=2000
work="target/parity"
mkdir -p "$work"
# cedarpy and regopy, for the cross-check below.
bash scripts/install-peers.sh >/dev/null

# name | --filter or --rules | config | component
impls=(
  "static rules|--rules examples/parity/rules.yaml||"
  "tool-rbac|--filter $rust/tool_rbac.wasm|examples/parity/tool-rbac.json|$rust/tool_rbac.wasm"
  "Cedar|--filter $rust/cedar_filter.wasm|examples/parity/cedar.json|$rust/cedar_filter.wasm"
  "Rego|--filter $rust/rego_filter.wasm|examples/parity/rego.json|$rust/rego_filter.wasm"
  "Python|--filter $poly/python/parity.wasm||$poly/python/parity.wasm"
  "JavaScript|--filter $poly/js/parity.wasm||$poly/js/parity.wasm"
)

failed=0
rows=()
for impl in "${impls[@]}"; do
  IFS='|' read -r name what config component <<<"$impl"
  log="$work/${name// /-}.log"
  # shellcheck disable=SC2086
  if ! "$bin" policy test $what ${config:+--config "$config"} --timeout 100ms --cache-dir "$root/target/filter-cache" \
    --fixtures examples/parity/calls --repeat "$repeat" >"$log" 2>&1; then
    echo "parity: $name does not give every fixture its expected decision:" >&2
    grep -v '^PASS' "$log" | sed 's/^/  /' >&2
    failed=1
    continue
  fi
  # Calls (the fixtures without a list) and lists, mean µs per evaluation.
  calls=$(grep -v 'visible:' "$log" | sed -n 's/.*\[\([0-9.]*\) us\/eval\]$/\1/p' | awk '{s+=$1; n++} END {printf "%.1f", s/n}')
  lists=$(grep 'visible:' "$log" | sed -n 's/.*\[\([0-9.]*\) us\/eval\]$/\1/p' | awk '{s+=$1; n++} END {printf "%.1f", s/n}')
  size="-"
  [ -n "$component" ] && size=$(du -k "$component" | awk '{printf "%.2f MB", $1/1024}')
  passed=$(tail -1 "$log")
  rows+=("| $name | $passed | $calls | $lists | $size |")
done

echo "== parity: team-tools over examples/parity/calls ($profile binary, $repeat warm evaluations per fixture) =="
echo "| implementation | fixtures | µs per call (mean) | µs per 5-item list (mean) | component |"
echo "|---|---|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
[ "$failed" = 0 ] || { echo "parity: FAILED" >&2; exit 1; }

# The engines' own implementations must agree with ours.
.tools/venv/bin/python examples/parity/crosscheck.py --portcullis "$bin" --wasm-dir "$rust"
