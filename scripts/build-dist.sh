#!/usr/bin/env bash
# Release builds into dist/<os>-<arch>/ plus dist/SHA256SUMS (README "Install from dist/").
#
#   scripts/build-dist.sh linux|darwin|windows|all
#
# Installs what it needs: rustup targets, and zig + cargo-zigbuild from PyPI (in a venv under
# target/dist-tools) to link for other systems. Linux builds are static (musl) so codexd runs on
# old distributions. A target that cannot be built is reported by name with its error, the
# others are still built, and the script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1
TOOLS=target/dist-tools
DIST=dist

# os arch triple binaries
ALL_TARGETS="
linux   x86_64  x86_64-unknown-linux-musl   codexd,codex-remote
linux   aarch64 aarch64-unknown-linux-musl  codexd,codex-remote
darwin  x86_64  x86_64-apple-darwin         codex-remote
darwin  aarch64 aarch64-apple-darwin        codex-remote
windows x86_64  x86_64-pc-windows-gnu       codex-remote
windows aarch64 aarch64-pc-windows-gnullvm  codex-remote
"

die() { echo "build-dist: $*" >&2; exit 1; }

want="${1:-all}"
case "$want" in linux|darwin|windows|all) ;; *) die "usage: $0 linux|darwin|windows|all" ;; esac

ensure_zigbuild() {
    if [ ! -x "$TOOLS/venv/bin/cargo-zigbuild" ]; then
        echo "build-dist: installing zig $ZIGLANG_VERSION and cargo-zigbuild $ZIGBUILD_VERSION (PyPI) into $TOOLS/venv"
        python3 -m venv "$TOOLS/venv" || die "python3 -m venv failed: install python3-venv"
        "$TOOLS/venv/bin/pip" install -q "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION" \
            || die "pip install ziglang cargo-zigbuild failed (is PyPI reachable?)"
    fi
    # cargo-zigbuild finds zig as `python3 -m ziglang` with the venv's python first on PATH.
    export PATH="$PWD/$TOOLS/venv/bin:$PATH"
}

# Fails unless the ELF file has no program interpreter (statically linked).
check_static() {
    if readelf -lW "$1" | grep -q 'Requesting program interpreter'; then
        echo "build-dist: $1 is dynamically linked; expected a static musl build" >&2
        return 1
    fi
}

build_one() {
    local os=$1 arch=$2 triple=$3 bins=$4 log="$TOOLS/logs/$1-$2.log"
    local cargo_args=(--release --locked --target "$triple")
    local bin
    for bin in ${bins//,/ }; do cargo_args+=(--bin "$bin"); done
    echo "build-dist: $os-$arch ($triple): ${bins//,/ }"
    if ! rustup target add "$triple" >"$log" 2>&1; then
        cat "$log" >&2
        echo "build-dist: FAILED $os-$arch: rustup cannot add the target $triple" >&2
        return 1
    fi
    local build=(cargo zigbuild)
    # The x86_64 musl build links with rustc's own self-contained musl (as `make test` does).
    [ "$triple" = x86_64-unknown-linux-musl ] && build=(cargo build)
    if ! "${build[@]}" "${cargo_args[@]}" >>"$log" 2>&1; then
        tail -n 25 "$log" >&2
        echo "build-dist: FAILED $os-$arch ($triple): the build failed; full log: $log" >&2
        return 1
    fi
    local out="$DIST/$os-$arch" ext=""
    [ "$os" = windows ] && ext=.exe
    mkdir -p "$out"
    for bin in ${bins//,/ }; do
        cp "target/$triple/release/$bin$ext" "$out/$bin$ext"
        if [ "$os" = linux ]; then check_static "$out/$bin$ext" || return 1; fi
    done
}

mkdir -p "$TOOLS/logs"
command -v rustup >/dev/null || die "rustup is needed to add targets (https://rustup.rs)"
needs_zig=$(echo "$ALL_TARGETS" | awk -v w="$want" 'NF && (w == "all" || $1 == w) && $3 != "x86_64-unknown-linux-musl"' | wc -l)
[ "$needs_zig" -gt 0 ] && ensure_zigbuild

failed=()
while read -r os arch triple bins; do
    [ -n "$os" ] || continue
    [ "$want" = all ] || [ "$want" = "$os" ] || continue
    build_one "$os" "$arch" "$triple" "$bins" || failed+=("$os-$arch")
done <<<"$ALL_TARGETS"

# Checksums of everything in dist/, as `sha256sum -c` reads them.
if [ -d "$DIST" ]; then
    (cd "$DIST" && find . -mindepth 2 -type f | sed 's|^\./||' | LC_ALL=C sort | xargs -r sha256sum) \
        >"$DIST/SHA256SUMS.tmp"
    mv "$DIST/SHA256SUMS.tmp" "$DIST/SHA256SUMS"
    echo "build-dist: $DIST/SHA256SUMS:"
    cat "$DIST/SHA256SUMS"
fi

if [ ${#failed[@]} -gt 0 ]; then
    die "these targets could not be built here: ${failed[*]} (errors above)"
fi
echo "build-dist: done ($want)"
