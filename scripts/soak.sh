#!/usr/bin/env bash
# The soak test (soak/): release builds, then `portcullis-soak run` with
# its defaults (1 h, 200 calls/s over 8 connections, a filter reload every
# 10 s, an SVID rotation every minute, an upstream restart every 5 min).
# Arguments are passed through, for example a short check:
#   scripts/soak.sh --duration 3m --reload-every 10s --rotate-every 30s --restart-every 60s --window 30s
# Writes soak/RESULTS.md, soak/results.json and soak/soak.png (or --out DIR).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-target}"

# The chart's text is drawn with DejaVu Sans.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  apt-get update -qq && apt-get install -y -qq fonts-dejavu-core
fi
make filters
cargo build --release -p portcullis -p portcullis-bench -p portcullis-soak
exec "$target/release/portcullis-soak" run \
  --portcullis "$target/release/portcullis" \
  --filters "$target/wasm32-wasip2/release" "$@"
