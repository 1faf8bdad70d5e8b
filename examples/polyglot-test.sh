#!/usr/bin/env bash
# The Python and JavaScript example filters, run through the real host
# (`portcullis policy test`):
#   - require-ticket against the Rust example's fixtures, plus edge cases
#     (annotations and arguments of every odd shape) on which each
#     language's decisions and log lines must equal the Rust example's;
#   - team-tools against the parity fixtures (examples/parity/calls);
#   - a configuration that each require-ticket build must refuse at load;
#   - that require-ticket is built against contract 0.3 and team-tools
#     against 0.2, so both of the host's paths meet real toolchains.
# Every decision must be the expected one, in every language, and no
# filter may fault. Never skips: a missing binary or component is a
# failure (build them with `cargo build -p portcullis --bin portcullis`
# and `make filters`, which runs scripts/build-polyglot.sh).
# Prints one line per fixture and ends with `N passed, M failed`.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bin="${PORTCULLIS_BIN:-$root/target/debug/portcullis}"
wasm="${POLYGLOT_OUT:-$root/target/polyglot}"
rust_ticket="${RUST_TICKET_WASM:-$root/target/wasm32-wasip2/release/require_ticket.wasm}"
# The deadline: 10 ms by default, checked at the host's 10 ms epoch ticks,
# so an evaluation is stopped 10-20 ms in. On a loaded 2-core CI running the debug build, a first call
# of a fresh Python instance was seen to overrun it once (the release build
# needs about 1 ms cold, 10-45 us warm: policy-sdk/guides/python.md). This
# test is about decisions, so it gives 100 ms; a fault still fails it.
timeout="${POLYGLOT_TIMEOUT:-100ms}"
# Compiled components are kept between runs: compiling a Python or
# JavaScript component takes 10-20 s of CPU on the debug build.
cache="${POLYGLOT_CACHE:-$root/target/filter-cache}"
passed=0
failed=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

need() {
  [ -e "$1" ] || { echo "polyglot-test: $1 is missing ($2)" >&2; exit 1; }
}
need "$bin" "cargo build -p portcullis --bin portcullis"
need "$rust_ticket" "make filters"
for lang in python js; do
  for app in require_ticket parity; do
    need "$wasm/$lang/$app.wasm" "make filters, or bash scripts/build-polyglot.sh"
  done
done

# Each example is built against the contract it stands for
# (scripts/build-polyglot.sh): require_ticket against 0.3, parity against
# the frozen 0.2, so that both paths of the host meet real toolchains. A
# component names its contract in its imports.
for lang in python js; do
  for app in require_ticket parity; do
    case "$app" in require_ticket) want=0.3.0 ;; *) want=0.2.0 ;; esac
    got=""
    for v in 0.1.0 0.2.0 0.3.0; do
      if grep -aqF -e "portcullis:policy/host@$v" -e "portcullis:policy/types@$v" "$wasm/$lang/$app.wasm"; then
        got="$got$v "
      fi
    done
    if [ "$got" = "$want " ]; then
      pass "[$lang $app] built against portcullis:policy@$want"
    else
      fail "[$lang $app] built against ${got:-no contract}, not $want (run scripts/build-polyglot.sh)"
    fi
  done
done

# run LABEL OUT ARGS...: one `policy test` run, its output kept in OUT;
# adds its counts to the totals.
run() {
  local label="$1" log="$2"; shift 2
  local rc counts
  RUST_BACKTRACE=0 "$bin" policy test --timeout "$timeout" --cache-dir "$cache" "$@" >"$log" 2>&1
  rc=$?
  sed "s/^/[$label] /" "$log"
  # A fault (trap, deadline, memory) also denies, and would pass a fixture
  # that expects a denial: none is allowed.
  if grep -q 'filter failed' "$log"; then
    fail "$label: the filter faulted (see above): a decision by fault is no decision"
  fi
  counts="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)"
  if [ -z "$counts" ]; then
    fail "$label: policy test ran no fixture (exit $rc)"
    return
  fi
  passed=$((passed + ${counts%% passed*}))
  local f="${counts#*, }"
  failed=$((failed + ${f%% failed}))
  if [ "$rc" -ne 0 ] && [ "${f%% failed}" -eq 0 ]; then
    fail "$label: policy test exited $rc"
  fi
}

# What a run decided, and what its filter logged, without timestamps.
decisions() {
  grep -E '^(PASS|FAIL|    ) [^ ]+\.json: |INFO portcullis::filter: ' "$1" \
    | sed -E 's/^(PASS|FAIL)/    /; s/^.*INFO portcullis::filter: /log: /'
}

# The require-ticket fixtures: the Rust example's, and edge cases with no
# expectation of their own: the Rust example's decisions are the truth.
ticket="$work/ticket"
mkdir -p "$ticket"
cp examples/policy-author/fixtures/calls/*.json "$ticket/"
edge=0
edge() {
  edge=$((edge + 1))
  printf '{"message": {"jsonrpc": "2.0", "id": %d, "method": "%s", "params": %s}, "annotations": %s}\n' \
    "$edge" "$1" "$2" "$3" >"$ticket/edge-$(printf %02d "$edge").json"
}
d='{"destructiveHint": true}'
edge tools/call '{"name": "d", "arguments": {"ticket": "CHG-1"}}' '{"destructiveHint": "true"}'
edge tools/call '{"name": "d", "arguments": {}}' '{"destructiveHint": false}'
edge tools/call '{"name": "d", "arguments": {}}' '[true]'
edge tools/call '{"name": "d", "arguments": {"ticket": "CHG-1"}}' 'null'
edge tools/call '{"name": "d", "arguments": {"ticket": "CHG-"}}' "$d"
edge tools/call '{"name": "d", "arguments": {"ticket": "CHG-1"}}' "$d"
edge tools/call '{"name": "d", "arguments": {"ticket": "chg-1"}}' "$d"
edge tools/call '{"name": "d", "arguments": {"ticket": 42}}' "$d"
edge tools/call '{"name": "d", "arguments": {"ticket": null}}' "$d"
edge tools/call '{"name": "d"}' "$d"
edge tools/call '{"name": "d", "arguments": null}' "$d"
edge tools/call '{"name": "d", "arguments": "CHG-1"}' "$d"
edge tools/call '{"name": "d", "arguments": ["CHG-1"]}' "$d"
edge tools/call '{"name": "d", "arguments": ["CHG-1", 2]}' "$d"
edge tools/call '{"name": "d", "arguments": []}' "$d"
edge tools/call '{"name": "d", "arguments": [null]}' "$d"
edge tools/call '{"name": "d\"q\u00e9", "arguments": {"ticket": "CHG-\u00e9", "x": {"y": [1, 2]}}}' \
  '{"destructiveHint": true, "readOnlyHint": false}'
edge prompts/get '{"name": "d", "arguments": {}}' "$d"
config=examples/policy-author/fixtures/config.json

run "rust require_ticket" "$work/rust.log" --filter "$rust_ticket" --config "$config" --fixtures "$ticket"
decisions "$work/rust.log" >"$work/rust.decisions"

bad_config="$work/bad-config.json"
echo '{"prefix": 42}' >"$bad_config"
for lang in python js; do
  log="$work/$lang-ticket.log"
  run "$lang require_ticket" "$log" --filter "$wasm/$lang/require_ticket.wasm" \
    --config "$config" --fixtures "$ticket"
  if [ -s "$work/rust.decisions" ] && diff <(decisions "$log") "$work/rust.decisions" >"$work/diff"; then
    pass "[$lang require_ticket] the Rust example's decisions and log lines on all $(ls "$ticket" | wc -l) calls"
  else
    fail "[$lang require_ticket] decides otherwise than the Rust example (<: $lang, >: Rust):"
    cat "$work/diff"
  fi
  run "$lang parity" "$work/$lang-parity.log" --filter "$wasm/$lang/parity.wasm" \
    --fixtures examples/parity/calls
  # configure's error (a raised Err / a thrown string) must refuse the
  # load, with the filter's own reason.
  out="$(RUST_BACKTRACE=0 "$bin" policy test --timeout "$timeout" --cache-dir "$cache" \
    --filter "$wasm/$lang/require_ticket.wasm" --config "$bad_config" \
    --fixtures examples/policy-author/fixtures/calls 2>&1)"
  if [ $? -ne 0 ] && grep -q 'configuration refused: config needs `prefix`, a string' <<<"$out"; then
    pass "[$lang require_ticket] a bad config is refused at load"
  else
    fail "[$lang require_ticket] a bad config was not refused with the filter's reason:"
    echo "$out" | tail -3
  fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
