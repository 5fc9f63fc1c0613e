#!/usr/bin/env bash
# Drives `codex-remote mcp` with the official MCP Inspector CLI (a client nobody here wrote):
# `key=value` arguments that are numbers, booleans and objects, each converted by the tool's
# inputSchema; answers validated by the Inspector's SDK against each tool's outputSchema; bad
# arguments answered as `isError: true`. Needs node and npm; run after `cargo build --release`.
#   scripts/mcp-inspector-check.sh [INSPECTOR_VERSION]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
remote="$root/target/release/codex-remote"
version=${1:-0.21.2} # the newest 0.x that runs on node 20 (2.x needs node >= 22.19)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HOME="$work/home"
unset CODEX_REMOTE_CONFIG
mkdir -p "$HOME"
npm install --prefix "$work/npm" --no-audit --no-fund --silent \
  "@modelcontextprotocol/inspector@$version" >/dev/null 2>&1
inspector="$work/npm/node_modules/.bin/mcp-inspector"

call() { # call TOOL KEY=VALUE... -> the result JSON on stdout
  local tool=$1; shift
  local args=()
  for a in "$@"; do args+=(--tool-arg "$a"); done
  "$inspector" --cli "$remote" mcp --method tools/call --tool-name "$tool" "${args[@]}"
}
check() { # check WHAT JSON JQ-EXPRESSION
  if ! jq -e "$3" >/dev/null <<<"$2"; then
    echo "FAIL: $1: $2" >&2
    exit 1
  fi
  echo "ok: $1"
}

out=$(call machines check=false)
check "boolean check=false" "$out" '.isError == false and .structuredContent.machines[0].ok == null'
out=$(call exec_start 'argv=["sh","-c","echo hi; echo err >&2"]' 'labels={"run":"inspector"}' \
  'env={"A":"1"}' idempotency_key=inspector-1)
check "object and array arguments" "$out" '.isError == false and .structuredContent.labels.run == "inspector"'
id=$(jq -r .structuredContent.exec_id <<<"$out")
out=$(call exec_wait "exec_id=$id" timeout_seconds=10)
check "number timeout_seconds=10" "$out" '.structuredContent.state == "succeeded"'
out=$(call exec_logs "exec_id=$id" since_stdout=0 since_stderr=0 max_bytes=100)
check "numbers since_*/max_bytes, plain text page" "$out" \
  '(.content[0].text | startswith("[stdout from byte 0]\nhi\n[stderr from byte 0]\nerr\n[next_offset"))'
out=$(call exec_list limit=5 state=succeeded)
check "number limit=5" "$out" '.isError == false and (.structuredContent.jobs | length) == 1'
out=$(call exec_start 'argv=["echo","other"]' idempotency_key=inspector-1)
check "idempotency conflict" "$out" '.isError == true and .structuredContent.code == "idempotency_conflict"'
out=$(call exec_logs "exec_id=$id" max_bytes=0)
check "out of range: isError usage" "$out" '.isError == true and .structuredContent.code == "usage"'
out=$(call exec_status "exec_id=$id" stray=1)
check "unknown argument: isError usage" "$out" '.isError == true and .structuredContent.code == "usage"'
out=$(call exec_start cmd=true 'argv=["true"]')
check "exclusive arguments: isError usage" "$out" '.isError == true and .structuredContent.code == "usage"'
echo "all Inspector CLI checks passed (inspector $version)"
