#!/bin/sh
# Starts CMD on MACHINE with N GPUs and prints the exec_id (the job may wait `queued`).
# Usage: submit_gpu.sh MACHINE N CMD. Exit 0 started; 4 the ask can never be met.
set -u
if [ $# -ne 3 ]; then
  echo "usage: submit_gpu.sh MACHINE N CMD" >&2
  exit 2
fi
out=$(codex-remote exec start --machine "$1" --gpus "$2" --cmd "$3")
code=$?
if [ $code -ne 0 ]; then
  printf '%s\n' "$out"
  exit $code
fi
printf '%s\n' "$out" | sed -n 's/.*"exec_id":"\([^"]*\)".*/\1/p'
