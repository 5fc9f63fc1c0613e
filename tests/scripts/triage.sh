#!/usr/bin/env bash
# Triage a failed job: its status, the tail of stderr, and the exit code on the last line.
set -euo pipefail
machine="$1"; exec_id="$2"
echo "# result"
codex-remote exec result --machine "$machine" --id "$exec_id"
echo "# stderr"
codex-remote exec logs --machine "$machine" --id "$exec_id" --stream stderr --tail-lines 20
echo "# exit code"
codex-remote exec result --machine "$machine" --id "$exec_id" \
  | grep -Eo '"exit_code" *: *[0-9]+' | grep -Eo '[0-9]+$'
