"""Drives `codex-remote mcp` with the official Python MCP SDK 2.x, which speaks MCP 2026-07-28:
`server/discover`, then every request with its own `_meta`. Checks every exec and file tool and
that no tool's inputSchema has `$ref`, `$defs`, `anyOf` or `oneOf`. Prints one JSON line with
what it saw; exits non-zero on the first failed check.

Usage: python mcp-python-client.py CODEX_REMOTE MACHINE WORKDIR
(tests/it/mcp_current.rs runs it from a venv made by scripts/mcp-python-client.sh)
"""

import asyncio
import json
import os
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters

NOT_FLAT = {"$ref", "$defs", "definitions", "anyOf", "oneOf"}


def not_flat(schema, path=""):
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in NOT_FLAT and not path.endswith("/properties"):
                return f"{path}/{key}"
            found = not_flat(value, f"{path}/{key}")
            if found:
                return found
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found = not_flat(value, f"{path}/{i}")
            if found:
                return found
    return None


async def main(binary, machine, workdir):
    params = StdioServerParameters(command=binary, args=["mcp"], env=dict(os.environ))
    seen = {}
    async with Client(params, mode="auto", read_timeout_seconds=60) as client:
        seen["protocol_version"] = client.protocol_version
        assert client.protocol_version == "2026-07-28", client.protocol_version
        tools = (await client.list_tools()).tools
        seen["tools"] = sorted(t.name for t in tools)
        for tool in tools:
            bad = not_flat(tool.input_schema)
            assert bad is None, f"{tool.name}: {bad}"
            assert tool.annotations and tool.annotations.title, tool.name

        async def call(name, args):
            result = await client.call_tool(name, {"machine": machine, **args})
            assert not result.is_error, f"{name}: {result}"
            return result.structured_content

        await call("machines", {})
        job = await call("exec_start", {"cmd": "echo from-python"})
        exec_id = job["exec_id"]
        done = await call("exec_wait", {"exec_id": exec_id[:13], "timeout_seconds": 30})
        assert done["state"] == "succeeded", done
        assert (await call("exec_status", {"exec_id": "last"}))["exec_id"] == exec_id
        logs = await call("exec_logs", {"exec_id": exec_id})
        assert logs["stdout"]["text"] == "from-python\n", logs
        listed = await call("exec_list", {"state": "finished"})
        assert any(j["exec_id"] == exec_id for j in listed["jobs"]), listed
        ran = await call("exec_run", {"cmd": "echo ran", "timeout_seconds": 30})
        assert ran["state"] == "succeeded", ran
        cancelled = await call("exec_cancel", {"exec_id": ran["exec_id"]})
        assert cancelled["state"] == "succeeded", cancelled
        path = os.path.join(workdir, "py-file.txt")
        await call("file_write", {"path": path, "content": "py\n"})
        read = await call("file_read", {"path": path})
        assert read["text"] == "py\n", read
        seen["ok"] = True
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
