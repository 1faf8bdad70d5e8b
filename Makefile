# Portcullis: the two commands a new machine needs are `make demo` and `make test`.
.PHONY: demo demo-up test lint unit interop peers clean

## Build everything, run the example server behind portcullis, and show
## allowed and denied calls. Exits 0 when every call behaved as it must.
demo:
	bash scripts/demo.sh

## Same, but leave the server and portcullis running for you to try.
demo-up:
	bash scripts/demo.sh --keep

## Everything CI runs: format, lints, unit and end-to-end tests, and
## interop with real MCP peers (installed into .tools/ on first use).
test: lint unit interop

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace

interop:
	bash proxy/tests/interop/run.sh

peers:
	bash scripts/install-peers.sh

clean:
	cargo clean
	rm -rf .tools .demo
