#!/usr/bin/env bash
# Builds the two contract probes (README.md) for `cargo bench -p portcullis
# --bench contract`. Each is its own workspace, outside the product's.
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-wasip2 >/dev/null
for probe in full lean; do
  (cd "$probe" && CARGO_TARGET_DIR=../../../target/contract-probe \
    cargo build --quiet --release --target wasm32-wasip2)
done
ls -l ../../target/contract-probe/wasm32-wasip2/release/probe_*.wasm
