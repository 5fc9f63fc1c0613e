#!/bin/sh
# Waits for a job to end, prints its final status and exits with the job's exit code
# (124: still running at the timeout). On failure the end of its stderr goes to stderr.
# Usage: wait_result.sh MACHINE EXEC_ID [TIMEOUT]
set -u
if [ $# -lt 2 ]; then
  echo "usage: wait_result.sh MACHINE EXEC_ID [TIMEOUT]" >&2
  exit 2
fi
machine=$1 id=$2 timeout=${3:-30m}
codex-remote exec wait --machine "$machine" --id "$id" --timeout "$timeout" --exit-status
code=$?
if [ $code -ne 0 ] && [ $code -ne 124 ]; then
  codex-remote --format text exec logs --machine "$machine" --id "$id" --stream stderr --tail-lines 30 >&2
fi
exit $code
