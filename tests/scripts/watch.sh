#!/usr/bin/env bash
# Attach to a job with `exec watch` and keep the summary line; the script's exit is the job's.
set -uo pipefail
machine="$1"; exec_id="$2"
codex-remote exec watch --machine "$machine" --id "$exec_id" --stream both --poll 1s > watch.out
code=$?
grep '"type":"summary"' watch.out
exit "$code"
