#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ and records what they did.
#
#   scripts/fuzz.sh [--seconds N] [--no-merge] [targets...]
#
# Each target runs N seconds (default 900) on a fresh directory seeded from
# fuzz/corpus/<target>; afterwards the inputs that add coverage are merged
# into fuzz/corpus/<target> (unless --no-merge). One line per target goes to
# fuzz/stats.tsv. Exits non-zero if any target crashed; the input is in
# fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=900
merge=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --no-merge) merge=0; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done

# Nightly and sanitizer flags: kept apart from the stable build's target dir.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target/fuzz}"
# `--dev` for quick smoke builds, empty (release) by default.
build_flags=(${FUZZ_BUILD_FLAGS:-})

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

stats=fuzz/stats.tsv
[ -f "$stats" ] || printf 'target\tseconds\texecutions\tcov\tft\tcorpus\tcrashes\n' > "$stats"
failed=0
for t in "${targets[@]}"; do
  nice -n 10 cargo +nightly fuzz build "${build_flags[@]}" "$t"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  work=$(mktemp -d)
  # Kept after the run (not committed): the figures come from here.
  logs="$CARGO_TARGET_DIR/fuzz-logs"
  mkdir -p "$logs"
  log="$logs/$t.log"
  before=$(ls "fuzz/artifacts/$t" | wc -l)
  status=0
  nice -n 10 cargo +nightly fuzz run "${build_flags[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  if [ "$merge" = 1 ]; then
    # The committed corpus is rebuilt as the smallest set of inputs that
    # keeps every feature reached (set cover), so it stays small.
    fresh=$(mktemp -d)
    nice -n 10 cargo +nightly fuzz run "${build_flags[@]}" "$t" "$fresh" "fuzz/corpus/$t" "$work" -- \
      -set_cover_merge=1 >"$log.merge" 2>&1 \
      && [ -n "$(ls "$fresh")" ] && rm -rf "fuzz/corpus/$t" && mv "$fresh" "fuzz/corpus/$t"
    rm -rf "$fresh"
  fi
  after=$(ls "fuzz/artifacts/$t" | wc -l)
  crashes=$((after - before))
  [ "$status" = 0 ] || [ "$crashes" -gt 0 ] || crashes=1
  # The run's own figures, not the merge's: the executions libFuzzer
  # counted, and its last status line ("#N  DONE  cov: C ft: F ...").
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$last")
  corpus=$(ls "fuzz/corpus/$t" | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$seconds" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
    "$corpus" "$crashes" | tee -a "$stats"
  if [ "$crashes" -gt 0 ]; then
    failed=1
    echo "fuzz: $t crashed; last lines of its log ($log):" >&2
    tail -40 "$log" >&2
  fi
  rm -rf "$work"
done
exit "$failed"
