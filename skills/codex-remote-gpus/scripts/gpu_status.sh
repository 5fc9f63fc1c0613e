#!/bin/sh
# Prints MACHINE's report with its GPUs (index, memory, utilisation, free, jobs) and queue.
# Usage: gpu_status.sh MACHINE. Exit 0 the report was made (a machine without GPUs says so in
# `gpus.error`), 3 the machine could not be reached, 2 usage or config.
set -u
if [ $# -ne 1 ]; then
  echo "usage: gpu_status.sh MACHINE" >&2
  exit 2
fi
codex-remote machine check --machine "$1"
