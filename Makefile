# Portcullis: the two commands a new machine needs are `make demo` and `make test`.
.PHONY: demo demo-up demo-capture test redis sessions-test oauth-test soak-sessions fuzz fuzz-smoke toolchain filters lint unit kube interop capture-test bench bench-curves instructions bench-smoke soak peers clean

## Build everything, run the example server behind portcullis, and show
## allowed and denied calls. Exits 0 when every call behaved as it must.
demo:
	bash scripts/demo.sh

## Same, but leave the server and portcullis running for you to try.
demo-up:
	bash scripts/demo.sh --keep

## Transparent capture: a client that dials the MCP server's own port in a
## pod (two network namespaces) is still policed. Needs root.
demo-capture:
	bash scripts/demo-capture.sh

## Everything CI runs: format, lints, unit and end-to-end tests, and
## interop with real MCP peers (installed into .tools/ on first use).
test: toolchain lint filters unit kube interop sessions-test oauth-test capture-test bench-smoke

## Fuzzing (cargo-fuzz, nightly): every target in fuzz/ for 15 minutes,
## new coverage merged into fuzz/corpus, a line each in fuzz/stats.tsv.
fuzz:
	scripts/fuzz.sh --seconds 900

## Every fuzz target for 5 seconds under libFuzzer, corpus untouched. Not in
## `make test`: the first nightly+ASan build of wasmtime takes over half an
## hour here. `make unit` runs the same target bodies on the stable build
## (proxy/tests/fuzz_corpus.rs: every corpus input plus seeded mutations).
fuzz-smoke:
	scripts/fuzz.sh --seconds 5 --no-merge

## Sessions that survive backend restarts: the Python and TypeScript SDK
## clients through portcullis while a stateful Python SDK server is killed
## and restarted (14 kills per client); two replicas sharing Redis with a
## key rotation, a Redis restart and a replica stopped; the same clients
## without portcullis as the control. Prints N passed, M failed.
sessions-test: redis
	bash proxy/tests/sessions/run.sh 10

## The same, 104 kills per client (208 in all). Not in `make test`.
soak-sessions: redis
	bash proxy/tests/sessions/run.sh 100

## OAuth end to end: the Python SDK client's OAuthClientProvider against
## a real authorization server (the SDK's auth routes), through portcullis
## (auth: required): discovery, DCR, PKCE, resource, two scope step-ups, a
## signing-key rotation, and no token reaching the server; then the token
## matrix minted by PyJWT against portcullis and Envoy jwt_authn.
oauth-test:
	bash proxy/tests/oauth/run.sh

## redis-server, which the shared session store's tests start (Debian).
redis:
	@command -v redis-server >/dev/null || { $(AS_ROOT) apt-get update -qq && $(AS_ROOT) apt-get install -y -qq redis-server; }

## The WASM target that filters are built for.
toolchain:
	rustup target add wasm32-wasip2

## The ready-made filters and the example policy, as components.
filters:
	# tool-rbac and arg-guard on their own: built in one cargo call with the
	# Cedar and Rego filters, they would get `regex`'s Unicode features by
	# feature unification (arg-guard 0.89 -> 1.63 MB, 1.4 MiB more resident
	# per sidecar; bench/README.md, fifth pass). The bench builds them so too.
	cargo build --release --target wasm32-wasip2 -p tool-rbac -p arg-guard
	cargo build --release --target wasm32-wasip2 -p rate-limit -p redact -p require-ticket -p cedar-filter -p rego-filter -p fault-filter -p declared-filter -p v0_1-filter
	cargo clippy --target wasm32-wasip2 -p portcullis-policy-sdk -p tool-rbac -p arg-guard -p rate-limit -p redact -p require-ticket -- -D warnings
	bash scripts/build-polyglot.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Every cargo call below uses --workspace, so that features resolve the
# same way each time and nothing is compiled twice.
# The integration tests take the filters `make filters` built (see
# proxy/tests/support/wasm.rs); Cedar and Rego are clippy-checked natively
# by `lint`.
unit: redis filters
	PORTCULLIS_PREBUILT_FILTERS=$(abspath $(or $(CARGO_TARGET_DIR),target))/wasm32-wasip2/release cargo test --workspace
	target/debug/portcullis policy test \
	  --filter target/wasm32-wasip2/release/require_ticket.wasm \
	  --config examples/policy-author/fixtures/config.json \
	  --fixtures examples/policy-author/fixtures/calls
	bash examples/polyglot-test.sh
	bash scripts/parity.sh

interop:
	bash proxy/tests/interop/run.sh

## The Kubernetes half: the webhook's fixtures over HTTPS with goldens and
## the independent patch checker (jsonpatch + kubernetes-validate), then
## every kustomization rendered and validated (1.29, 1.33, newest).
kube:
	bash inject/tests/run.sh
	bash deploy/tests/validate.sh

# Root for network namespaces and nat rules: sudo when not root already.
# The scripts install iptables/nftables with apt-get if missing, and fail
# (never skip) when they cannot run.
AS_ROOT := $(shell [ "$$(id -u)" = 0 ] || echo sudo -E)
CAPTURE_BIN := $(abspath $(or $(CARGO_TARGET_DIR),target))/debug

## Capture in real network namespaces, both backends: the rules with a
## stand-in sidecar (capture/tests/netns.sh), then the real sidecar in front
## of an MCP server (proxy/tests/capture_netns.sh). Each prints N passed, M failed.
capture-test:
	cargo build -p portcullis-capture --bin portcullis-capture --example origdst_echo
	cargo build -p portcullis --bin portcullis
	$(AS_ROOT) env PCX_BIN_DIR=$(CAPTURE_BIN) timeout 300 bash capture/tests/netns.sh
	$(AS_ROOT) env PORTCULLIS_BIN=$(CAPTURE_BIN)/portcullis timeout 300 bash proxy/tests/capture_netns.sh

## The benchmark: portcullis against direct and Envoy 1.40 (configurations
## a-i, see bench/README.md). Release builds; writes bench/RESULTS.md,
## bench/results.json and bench/latency.png. Takes about 10 minutes.
bench:
	bash scripts/bench.sh

## Scaling curves (bench/README.md, "Scaling curves"): portcullis's CPU
## per call and p99 against argument size, filters in the chain, tools/list
## size, connections and distinct callers, and memory per idle connection.
## Release builds; writes bench/CURVES.md, bench/curves.json and
## bench/curve-*.png. Takes about 5 minutes.
bench-curves:
	bash scripts/bench.sh --curves

## Instructions per call of b, i and the bare forwarder h, counted by
## callgrind (repeats to 0.2-0.5 %, where CPU time on this VM moves
## by 20-50 %): what a change to the request path or a filter saves, in
## two minutes.
instructions:
	bash scripts/instructions.sh

## The soak test (soak/README.md): one hour of 200 calls/s through
## portcullis (mTLS + WASM filters) with a filter reload every 10 s, an SVID
## rotation every minute and an upstream restart every 5 minutes; writes
## soak/RESULTS.md, soak/results.json and soak/soak.png. Not part of `make
## test`. Shorter: `bash scripts/soak.sh --duration 3m --restart-every 60s`.
soak:
	bash scripts/soak.sh

## Five seconds of every benchmark configuration, then every scaling curve
## at one or two points, on the debug build, so that the harness keeps
## working. Not a measurement.
bench-smoke:
	bash scripts/bench.sh --smoke

peers:
	bash scripts/install-peers.sh

clean:
	cargo clean
	rm -rf .tools .demo
