#!/usr/bin/env bash
# A chain of jobs: each starts when the one before finished with exit code 0.
set -euo pipefail
machine="$1"; shift
here="$(cd "$(dirname "$0")" && pwd)"
for cmd in "$@"; do
  id="$("$here/submit.sh" "$machine" "$cmd")"
  result="$("$here/watch_until_finish.sh" "$machine" "$id")"
  if ! echo "$result" | grep -Eq '"exit_code" *: *0[,}]'; then
    echo "chain stopped at: $cmd" >&2
    echo "$result"
    exit 1
  fi
  echo "ok: $cmd"
done
