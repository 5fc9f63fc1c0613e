# codex-runner: `make ci` is what CI runs (.ci/run) and what people run before pushing.
CARGO ?= cargo

.PHONY: build fmt fmt-check lint test ci bench mcp-inspector clean check-cross codexd-musl fuzz fuzz-merge \
	build-linux build-darwin build-windows build-all

build:
	$(CARGO) build --release --locked

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --locked --all-targets -- -D warnings

# The integration tests drive the release binaries, so build them first; the static codexd too
# (tests/it/release.rs runs it).
MUSL_CODEXD := target/x86_64-unknown-linux-musl/release/codexd
test: build codexd-musl
	CODEXD_MUSL=$(CURDIR)/$(MUSL_CODEXD) $(CARGO) test --release --locked

ci: fmt-check lint check-cross test

# codex-remote must keep building for Windows and macOS (codexd is Linux-only). blake3/pure: no C
# compiler for those targets here (the dist builds compile blake3's SIMD C through zig).
CROSS_CHECK_TARGETS := x86_64-pc-windows-gnu aarch64-apple-darwin
check-cross:
	rustup target add $(CROSS_CHECK_TARGETS)
	for t in $(CROSS_CHECK_TARGETS); do \
		$(CARGO) clippy --locked --bin codex-remote --target $$t --features blake3/pure -- -D warnings || exit 1; \
	done

codexd-musl:
	rustup target add x86_64-unknown-linux-musl
	$(CARGO) build --release --locked --target x86_64-unknown-linux-musl --bin codexd

# Release builds into dist/<os>-<arch>/ with dist/SHA256SUMS (scripts/build-dist.sh).
build-linux build-darwin build-windows build-all:
	bash scripts/build-dist.sh $(@:build-%=%)

# Fuzzing (libFuzzer via cargo-fuzz, nightly only; CI replays fuzz/corpus/ on stable instead, in
# tests/it/fuzz_corpus.rs). Each target runs FUZZ_SECONDS from the checked-in corpus; what it
# finds goes to fuzz/target/corpus/ (crashes to fuzz/artifacts/). `make fuzz-merge` then adds the
# finds that reach new code to fuzz/corpus/ (commit those).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := request_line config http sync_tar sync_frames
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/target/corpus/$$t && \
		$(CARGO) +nightly fuzz run $$t fuzz/target/corpus/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=30 || exit 1; \
	done

fuzz-merge:
	for t in $(FUZZ_TARGETS); do \
		$(CARGO) +nightly fuzz run $$t fuzz/corpus/$$t fuzz/target/corpus/$$t -- -merge=1 || exit 1; \
	done

bench: build
	bash scripts/bench.sh

# The MCP server driven by the official MCP Inspector CLI (needs node and npm).
mcp-inspector: build
	bash scripts/mcp-inspector-check.sh

clean:
	$(CARGO) clean
