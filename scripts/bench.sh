#!/usr/bin/env bash
# `make bench`: installs what the benchmark compares against (a loopback sshd, pueue), builds the
# release binaries and prints the table of scripts/bench.py. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /usr/bin/time ] || need+=(time)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v pueue >/dev/null 2>&1 || ! command -v pueued >/dev/null 2>&1; then
    echo "installing pueue (the peer exec start is compared with) from crates.io..." >&2
    cargo install pueue --locked --quiet
fi
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --quiet
python3 scripts/bench.py
