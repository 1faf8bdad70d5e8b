# Portcullis: the two commands a new machine needs are `make demo` and `make test`.
.PHONY: demo demo-up test toolchain filters lint unit interop kube bench bench-smoke peers clean

## Build everything, run the example server behind portcullis, and show
## allowed and denied calls. Exits 0 when every call behaved as it must.
demo:
	bash scripts/demo.sh

## Same, but leave the server and portcullis running for you to try.
demo-up:
	bash scripts/demo.sh --keep

## Everything CI runs: format, lints, unit and end-to-end tests, and
## interop with real MCP peers (installed into .tools/ on first use).
test: toolchain lint filters unit kube interop bench-smoke

## The WASM target that filters are built for.
toolchain:
	rustup target add wasm32-wasip2

## The ready-made filters and the example policy, as components.
filters:
	cargo build --release --target wasm32-wasip2 -p tool-rbac -p arg-guard -p rate-limit -p redact -p require-ticket
	cargo clippy --target wasm32-wasip2 -p portcullis-policy-sdk -p tool-rbac -p arg-guard -p rate-limit -p redact -p require-ticket -- -D warnings

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Every cargo call below uses --workspace, so that features resolve the
# same way each time and nothing is compiled twice.
unit:
	cargo test --workspace
	target/debug/portcullis policy test \
	  --filter target/wasm32-wasip2/release/require_ticket.wasm \
	  --config examples/policy-author/fixtures/config.json \
	  --fixtures examples/policy-author/fixtures/calls

interop:
	bash proxy/tests/interop/run.sh

## The Kubernetes half: the webhook's fixtures over HTTPS with goldens and
## the independent patch checker (jsonpatch + kubernetes-validate), then
## every kustomization rendered and validated (1.29, 1.33, newest).
kube:
	bash inject/tests/run.sh
	bash deploy/tests/validate.sh

## The benchmark: portcullis against direct and Envoy 1.40 (configurations
## a-g, see bench/README.md). Release builds; writes bench/RESULTS.md,
## bench/results.json and bench/latency.png. Takes about 10 minutes.
bench:
	bash scripts/bench.sh

## Five seconds of every benchmark configuration on the debug build, so
## that the harness keeps working. Not a measurement.
bench-smoke:
	bash scripts/bench.sh --smoke

peers:
	bash scripts/install-peers.sh

clean:
	cargo clean
	rm -rf .tools .demo
