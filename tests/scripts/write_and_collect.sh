#!/usr/bin/env bash
# Write a config file on the machine, run a job in that dir that lists what it made in
# .codex/artifacts.json, wait for it, and print each artifact's path, then the artifact itself
# (as the original tool's users script it: grep the JSON text, no jq).
set -euo pipefail
machine="$1"; dir="$2"
codex-remote file write --machine "$machine" --dst "$dir/config.txt" --content "lr=0.1" --mkdir >&2
job='mkdir -p .codex && cp config.txt model.txt && printf %s "{\"version\":\"1\",\"artifacts\":[{\"name\":\"model\",\"type\":\"file\",\"path\":\"model.txt\"}]}" > .codex/artifacts.json'
out="$(codex-remote exec start --machine "$machine" --cwd "$dir" --cmd "$job")"
exec_id="$(echo "$out" | grep -Eo '"exec_id" *: *"[^"]+"' | sed -E 's/.*"([^"]+)"$/\1/')"
until codex-remote exec result --machine "$machine" --id "$exec_id" | grep -q '"status" *: *"finished"'; do
  sleep 0.2
done
codex-remote exec result --machine "$machine" --id "$exec_id" | grep -Eo '"path" *: *"[^"]+"'
codex-remote file read --machine "$machine" --path "$dir/model.txt" --raw
