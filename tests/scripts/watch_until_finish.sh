#!/usr/bin/env bash
# Poll a job until its status says finished; print the last result.
set -euo pipefail
machine="$1"; exec_id="$2"
while true; do
  out="$(codex-remote exec result --machine "$machine" --id "$exec_id")"
  if echo "$out" | grep -Eq '"status" *: *"finished"'; then
    echo "$out"
    break
  fi
  sleep 0.2
done
