#!/bin/sh
# Copies REMOTE_PATH on MACHINE to LOCAL_PATH (atomically) and prints what was read.
# Usage: fetch_file.sh MACHINE REMOTE_PATH LOCAL_PATH. Exit 0 fetched; 4 missing or refused.
set -u
if [ $# -ne 3 ]; then
  echo "usage: fetch_file.sh MACHINE REMOTE_PATH LOCAL_PATH" >&2
  exit 2
fi
exec codex-remote file read --machine "$1" --path "$2" --dst "$3"
