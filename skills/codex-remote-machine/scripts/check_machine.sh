#!/bin/sh
# Checks MACHINE; with --up, runs machine up when it is not ready and checks again.
# Usage: check_machine.sh MACHINE [--up]. Exit 0 ready, 1 not ready, 2 usage or config.
set -u
if [ $# -lt 1 ]; then
  echo "usage: check_machine.sh MACHINE [--up]" >&2
  exit 2
fi
machine=$1 up=${2:-}
codex-remote machine check --machine "$machine" --strict
code=$?
if [ $code -eq 0 ] || [ "$up" != "--up" ]; then
  [ $code -eq 0 ] || [ $code -eq 2 ] || code=1
  exit $code
fi
codex-remote machine up --machine "$machine" >&2 || true
codex-remote machine check --machine "$machine" --strict || exit 1
