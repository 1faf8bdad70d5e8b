#!/usr/bin/env bash
# Runs the benchmark harness (bench/). With --smoke, a short check on the
# debug build that every configuration starts, enforces its policy and
# answers, and that every scaling curve runs; with --curves, the scaling
# curves on release builds (bench/CURVES.md); without either, the full
# comparison on release builds, written to bench/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mode=run
case "${1:-}" in
  --smoke) mode=smoke; shift ;;
  --curves) mode=curves; shift ;;
esac

# The portcullis binary measured: the release profile by default;
# PORTCULLIS_PROFILE=sidecar measures the shipped build (fat LTO, one
# codegen unit: about 6 minutes more to build here; bench/README.md).
# PORTCULLIS_PGO=1 measures that profile built with profile-guided
# optimisation (scripts/pgo.sh: about 13 minutes more here).
profile="${PORTCULLIS_PROFILE:-release}"
case "$profile" in
  release | sidecar) ;;
  *) echo "PORTCULLIS_PROFILE: release or sidecar, not $profile" >&2; exit 2 ;;
esac
pgo="${PORTCULLIS_PGO:-0}"
case "$pgo" in
  0 | 1) ;;
  *) echo "PORTCULLIS_PGO: 0 or 1, not $pgo" >&2; exit 2 ;;
esac
# Builds the measured binary and prints its path.
build_portcullis() {
  if [ "$pgo" = 1 ]; then
    bash scripts/pgo.sh "$profile" | tail -n 1
  else
    # `|| return`: errexit does not reach into a command substitution.
    cargo build --quiet --profile "$profile" -p portcullis --bin portcullis || return
    echo "target/$profile/portcullis"
  fi
}

rustup target add wasm32-wasip2 wasm32-unknown-unknown >/dev/null
# The chart's text is drawn with DejaVu Sans.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  apt-get update -qq && apt-get install -y -qq fonts-dejavu-core
fi
# Configuration d's filters are always release builds: they are what a
# user would deploy.
cargo build --quiet --release --target wasm32-wasip2 -p tool-rbac -p arg-guard

if [ "$mode" = curves ]; then
  # portcullis alone: no Envoy in the curves.
  bin="$(build_portcullis)"
  cargo build --quiet --release -p portcullis-bench
  exec target/release/portcullis-bench curves --portcullis "$bin" "$@"
fi

bash scripts/install-peers.sh >/dev/null
envoy="$(.tools/venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
# Configuration f's proxy-wasm module, also a release build.
cargo build --quiet --release --target wasm32-unknown-unknown -p envoy-mcp-guard
wasm="target/wasm32-unknown-unknown/release/envoy_mcp_guard.wasm"

if [ "$mode" = smoke ]; then
  # The binaries `cargo test --workspace` builds (for the integration
  # tests); after the unit step of `make test` this compiles nothing.
  cargo test --quiet --workspace --no-run
  target/debug/portcullis-bench run --smoke \
    --portcullis target/debug/portcullis --envoy "$envoy" --envoy-wasm "$wasm" \
    --work target/bench-smoke/work --out target/bench-smoke
  # Every scaling curve at one or two points; its own ports and work dir.
  exec target/debug/portcullis-bench curves --smoke \
    --portcullis target/debug/portcullis \
    --work target/bench-smoke/curves-work --out target/bench-smoke
fi

bin="$(build_portcullis)"
cargo build --quiet --release -p portcullis-bench
exec target/release/portcullis-bench run \
  --portcullis "$bin" --envoy "$envoy" --envoy-wasm "$wasm" "$@"
