#!/usr/bin/env bash
# The webhook's whole test: Rust unit/integration tests (the fixture test
# starts the real server on loopback and writes the raw answers), then the
# independent Python checker on those answers. Installs the checker's two
# PyPI packages into .tools/venv on first use.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
venv="$root/.tools/venv"
if ! "$venv/bin/python" -c 'import jsonpatch, kubernetes_validate' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'jsonpatch==1.*' 'kubernetes-validate==1.*'
fi
cd "$root"
log="$CARGO_TARGET_DIR/inject-test.log"
mkdir -p "$CARGO_TARGET_DIR"
if ! cargo test -p portcullis-inject -- --nocapture >"$log" 2>&1; then
  cat "$log"
  exit 1
fi
grep -E "^test result|^webhook fixtures" "$log"
"$venv/bin/python" inject/tests/check_patches.py --responses "$CARGO_TARGET_DIR/inject-responses"
