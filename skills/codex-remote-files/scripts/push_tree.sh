#!/bin/sh
# Makes REMOTE_DIR on MACHINE the same as LOCAL_DIR (what sync sends) and prints the summary.
# Usage: push_tree.sh MACHINE LOCAL_DIR REMOTE_DIR [sync push flags...]
# rsync's rule: LOCAL_DIR/ (a trailing slash) puts its contents in REMOTE_DIR; LOCAL_DIR without
# one puts the directory itself in REMOTE_DIR/<its name>.
# Exit 0 synced; 1 some files kept changing while sent (run again); else codex-remote's code.
set -u
if [ $# -lt 3 ]; then
  echo "usage: push_tree.sh MACHINE LOCAL_DIR REMOTE_DIR [flags...]" >&2
  exit 2
fi
machine=$1 src=$2 dst=$3
shift 3
exec codex-remote sync push --machine "$machine" --src "$src" --dst "$dst" "$@"
