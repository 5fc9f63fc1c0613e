#!/usr/bin/env bash
# Makes (once) a venv with the official Python MCP SDK 2.x and prints its python's path.
# Usage: scripts/mcp-python-client.sh [VENV_DIR]   (default target/mcp-py)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-target/mcp-py}"
if ! "$venv/bin/python" -c 'from mcp import Client' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q 'mcp>=2.3,<3' >&2
fi
echo "$venv/bin/python"
