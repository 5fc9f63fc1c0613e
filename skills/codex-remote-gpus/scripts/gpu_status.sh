#!/bin/sh
# Prints MACHINE's report with its GPUs (index, memory, utilisation, free, jobs) and queue.
# Usage: gpu_status.sh MACHINE. Exit 0 the report was made (a machine without GPUs says so in
# `gpus.error`), 3 the machine could not be reached (the report says why in `error`), 2 usage
# or config.
set -u
if [ $# -ne 1 ]; then
  echo "usage: gpu_status.sh MACHINE" >&2
  exit 2
fi
# `machine check` exits 0 whenever it made a report, reachable or not: the report tells.
report=$(codex-remote machine check --machine "$1")
code=$?
printf '%s\n' "$report"
[ $code -eq 0 ] || exit $code
case $report in
  *'"daemon_ok":false'*) exit 3 ;;
esac
exit 0
