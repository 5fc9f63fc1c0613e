#!/bin/sh
# Starts CMD on MACHINE (optionally in CWD) and prints the job's exec_id.
# Usage: submit.sh MACHINE CMD [CWD]. Exit 0 started; else codex-remote's error and exit code.
set -u
if [ $# -lt 2 ]; then
  echo "usage: submit.sh MACHINE CMD [CWD]" >&2
  exit 2
fi
machine=$1 cmd=$2
key="skill-$(date +%s)-$$"
if [ $# -ge 3 ]; then
  out=$(codex-remote exec start --machine "$machine" --idempotency-key "$key" --cwd "$3" --cmd "$cmd")
else
  out=$(codex-remote exec start --machine "$machine" --idempotency-key "$key" --cmd "$cmd")
fi
code=$?
if [ $code -ne 0 ]; then
  printf '%s\n' "$out"
  exit $code
fi
printf '%s\n' "$out" | sed -n 's/.*"exec_id":"\([^"]*\)".*/\1/p'
