# codex-runner: `make ci` is what CI runs (.ci/run) and what people run before pushing.
CARGO ?= cargo

.PHONY: build fmt fmt-check lint test ci bench clean

build:
	$(CARGO) build --release --locked

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --locked --all-targets -- -D warnings

# The integration tests drive the release binaries, so build them first.
test: build
	$(CARGO) test --release --locked

ci: fmt-check lint test

bench: build
	bash scripts/bench.sh

clean:
	$(CARGO) clean
