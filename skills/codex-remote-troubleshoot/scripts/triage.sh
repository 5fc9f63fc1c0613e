#!/bin/sh
# Prints MACHINE's doctor report and, with EXEC_ID, the job's status and the end of its stderr.
# Usage: triage.sh MACHINE [EXEC_ID]. Exit 0 healthy, 1 a required check failed, 2 usage.
set -u
if [ $# -lt 1 ]; then
  echo "usage: triage.sh MACHINE [EXEC_ID]" >&2
  exit 2
fi
machine=$1
codex-remote exec doctor --machine "$machine" --json
code=$?
if [ $# -ge 2 ]; then
  codex-remote exec result --machine "$machine" --id "$2"
  codex-remote --format text exec logs --machine "$machine" --id "$2" --stream stderr --tail-lines 30
fi
[ $code -eq 0 ] || [ $code -eq 2 ] || code=1
exit $code
