#!/usr/bin/env bash
# Runs the benchmark harness (bench/). With --smoke, a five-second check on
# the debug build that every configuration starts, enforces its policy and
# answers; without, the full run on release builds, written to bench/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1

rustup target add wasm32-wasip2 wasm32-unknown-unknown >/dev/null
bash scripts/install-peers.sh >/dev/null
# The chart's text is drawn with DejaVu Sans.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  apt-get update -qq && apt-get install -y -qq fonts-dejavu-core
fi
envoy="$(.tools/venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"

# Configuration d's filters and configuration f's proxy-wasm module are
# always release builds: they are what a user would deploy.
cargo build --quiet --release --target wasm32-wasip2 -p tool-rbac -p arg-guard
cargo build --quiet --release --target wasm32-unknown-unknown -p envoy-mcp-guard
wasm="target/wasm32-unknown-unknown/release/envoy_mcp_guard.wasm"

if [ "$smoke" = 1 ]; then
  # The binaries `cargo test --workspace` builds (for the integration
  # tests); after the unit step of `make test` this compiles nothing.
  cargo test --quiet --workspace --no-run
  exec target/debug/portcullis-bench run --smoke \
    --portcullis target/debug/portcullis --envoy "$envoy" --envoy-wasm "$wasm" \
    --work target/bench-smoke/work --out target/bench-smoke
fi

cargo build --quiet --release -p portcullis --bin portcullis
cargo build --quiet --release -p portcullis-bench
exec target/release/portcullis-bench run \
  --portcullis target/release/portcullis --envoy "$envoy" --envoy-wasm "$wasm" "$@"
