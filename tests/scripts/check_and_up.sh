#!/usr/bin/env bash
# Check a machine and bring it up when its daemon does not answer.
set -euo pipefail
machine="$1"
check="$(codex-remote machine check --machine "$machine")"
echo "$check"
if echo "$check" | grep -Eq '"daemon_ok" *: *false'; then
  codex-remote machine up --machine "$machine"
  codex-remote machine check --machine "$machine"
fi
