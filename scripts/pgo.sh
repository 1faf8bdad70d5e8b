#!/usr/bin/env bash
# Builds the sidecar with profile-guided optimisation (bench/README.md,
# "Round 2, fourth pass"):
#   1. an instrumented build (-Cprofile-generate),
#   2. a training run: the benchmark harness drives that build through
#      configurations b, c, d and i (plaintext and mTLS, with and without
#      the two filters, closed loop at 1/16/64 connections and an open
#      loop) and every scaling curve at its smoke points (argument sizes
#      up to 1 MB, chains of 0-8 filters, lists of 10 and 100 tools, a
#      few connections and callers); the profile must then hold the
#      serving path, or the script stops; only the profiles of processes
#      that served requests are merged (not the filters' compile child,
#      whose Cranelift code the sidecar never runs once it has compiled),
#   3. the optimised build (-Cprofile-use), linked with the text section
#      prefixes kept, so code the training never ran (.text.unlikely) is
#      laid out apart from the code it did run and is not paged in,
#   4. the harness's smoke run on the optimised build: every
#      configuration must refuse what its policy forbids and answer.
#
#   bash scripts/pgo.sh [release|sidecar]  -> target/pgo/<profile>/portcullis
#
# The last line on stdout is the binary's path; everything else goes to
# stderr. Paths the training does not run (other MCP eras, OAuth,
# sessions, capture) are compiled as cold code: optimised for size, not
# left out. Two full builds of portcullis: about 13 minutes here with the
# release profile. The section layout needs lld (rust's default linker
# on x86_64-unknown-linux-gnu); other linkers ignore the flag.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
profile="${1:-release}"
case "$profile" in
  release | sidecar) ;;
  *) echo "scripts/pgo.sh: profile release or sidecar, not $profile" >&2; exit 2 ;;
esac

# The target triple is given explicitly so RUSTFLAGS reach only the
# binary's crates, not build scripts and proc macros.
host="$(rustc -vV | sed -n 's/^host: //p')"
rustup component add llvm-tools >/dev/null 2>&1
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
[ -x "$profdata" ] || { echo "scripts/pgo.sh: no llvm-profdata at $profdata" >&2; exit 1; }

work="$root/target/pgo"
out="$work/$profile"
raw="$work/raw"
rm -rf "$raw" "$work/train" "$work/train-curves"
mkdir -p "$raw" "$out"

rustup target add wasm32-wasip2 >/dev/null
cargo build --quiet --locked --release --target wasm32-wasip2 -p tool-rbac -p arg-guard
cargo build --quiet --locked --release -p portcullis-bench

echo "pgo: instrumented build" >&2
CARGO_TARGET_DIR="$work/gen" RUSTFLAGS="-Cprofile-generate=$raw" \
  cargo build --quiet --locked --profile "$profile" --target "$host" -p portcullis --bin portcullis
gen="$work/gen/$host/$profile/portcullis"

echo "pgo: training" >&2
# One profile per process (%p), not the runtime's merged pool: the
# filters' compile child runs Cranelift, megabytes of code a sidecar with
# a compiled filter never runs again. Counted in, it was laid out as hot
# and warm code between the serving path's functions (2.4 MiB of
# .text.hot, a third of it Cranelift), and every page of it the proxy
# touched at start-up stayed resident. Only the profiles of processes
# that served requests are merged below.
export LLVM_PROFILE_FILE="$raw/proc-%p.profraw"
target/release/portcullis-bench run --configs b,c,d,i --concurrency 1,16,64 \
  --rounds 1 --duration 2s --warmup 1s --rate 500 \
  --portcullis "$gen" --work "$work/train-work" --out "$work/train" --base-port 19100 >&2
target/release/portcullis-bench curves --smoke --portcullis "$gen" \
  --work "$work/train-curves-work" --out "$work/train-curves" --base-port 19400 >&2
unset LLVM_PROFILE_FILE
# A process that decoded no request body (a compile child, a proxy that
# served nothing) is left out; with none left (a proxy killed instead of
# stopped writes none), the hot path would be laid out as cold code, so
# the script stops. parse_body decodes every request body.
served=()
# The output is read whole before it is matched: `show | grep -q` under
# pipefail could fail on show's SIGPIPE and drop a serving profile.
for f in "$raw"/*.profraw; do
  counts="$("$profdata" show --counts --function=mcp7message10parse_body "$f" 2>/dev/null)" || continue
  if [[ "$counts" =~ Block\ counts:\ \[[^]]*[1-9] ]]; then
    served+=("$f")
  fi
done
echo "pgo: $(ls "$raw" | wc -l) profiles, ${#served[@]} from processes that served requests" >&2
[ "${#served[@]}" -gt 0 ] || { echo "scripts/pgo.sh: no profile holds request decoding" >&2; exit 1; }
"$profdata" merge -o "$work/merged.profdata" "${served[@]}"
# About 15 MB a process: half a gigabyte once merged for nothing.
rm -rf "$raw"
# Named by its digest: the path is in RUSTFLAGS, so a new profile is a
# new fingerprint and cargo rebuilds what it optimised with the old one.
digest="$(sha256sum "$work/merged.profdata" | cut -c1-16)"
profile_data="$work/portcullis-$digest.profdata"
rm -f "$work"/portcullis-*.profdata
mv "$work/merged.profdata" "$profile_data"

echo "pgo: optimised build" >&2
# -z keep-text-section-prefix: rust-lld otherwise merges .text.unlikely.*
# and .text.hot.* back into .text in input order, losing the layout.
CARGO_TARGET_DIR="$work/use" \
  RUSTFLAGS="-Cprofile-use=$profile_data -Clink-arg=-Wl,-z,keep-text-section-prefix" \
  cargo build --quiet --locked --profile "$profile" --target "$host" -p portcullis --bin portcullis
cp "$work/use/$host/$profile/portcullis" "$out/portcullis"

echo "pgo: checking the optimised build" >&2
target/release/portcullis-bench run --smoke --configs b,c,d,i --portcullis "$out/portcullis" \
  --work "$work/check-work" --out "$work/check" --base-port 19100 >&2
echo "$out/portcullis"
