#!/usr/bin/env bash
# Submit a command, optionally with a custom shell, and print its exec_id (as the original
# tool's users script it: grep the JSON text, no jq).
set -euo pipefail
machine="$1"; cmd="$2"; shell="${3:-}"
if [[ -n "$shell" ]]; then
  out="$(codex-remote exec start --machine "$machine" --shell "$shell" --cmd "$cmd")"
else
  out="$(codex-remote exec start --machine "$machine" --cmd "$cmd")"
fi
echo "$out" >&2
echo "$out" | grep -Eo '"exec_id" *: *"[^"]+"' | sed -E 's/.*"([^"]+)"$/\1/'
