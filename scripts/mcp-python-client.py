"""Drives `codex-remote mcp` with the official Python MCP SDK 2.x, which speaks MCP 2026-07-28:
`server/discover`, then every request with its own `_meta`. Checks every exec and file tool and
that no tool's inputSchema has `$ref`, `$defs`, `anyOf` or `oneOf`; then MCP tasks (a task run to
its end, one polled after the server was stopped and started again, one cancelled) and a job-end
notification through the SDK's own `Client.listen()` (`subscriptions/listen`). The SDK 2.3 has no
API for the tasks extension: `tasks/*` and the task-augmented `tools/call` are sent as raw
requests on the SDK's own session (its `_meta` stamp and stdio), the extension advertised with
the SDK's `advertise()`. Prints one JSON line with what it saw; exits non-zero on the first
failed check.

Usage: python mcp-python-client.py CODEX_REMOTE MACHINE WORKDIR
(tests/it/mcp_current.rs runs it from a venv made by scripts/mcp-python-client.sh)
"""

import asyncio
import json
import os
import sys

import time

from mcp import Client
from mcp.client.extension import advertise
from mcp.client.stdio import StdioServerParameters
from mcp.client.subscriptions import ResourceUpdated

TASKS = "io.modelcontextprotocol/tasks"

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
    await tasks_and_notifications(params, machine, seen)
    seen["ok"] = True
    print(json.dumps(seen))


async def raw(client, method, params):
    """A request the SDK has no API for, sent on its session with its `_meta` stamp."""
    session = client.session
    data = {"method": method, "params": params}
    opts = {"timeout": 60}
    session._stamp(data, opts)
    return await session._dispatcher.send_raw_request(method, data.get("params"), opts)


async def poll(client, task_id, want):
    deadline = time.monotonic() + 60
    while True:
        got = await raw(client, "tasks/get", {"taskId": task_id})
        assert got["taskId"] == task_id, got
        if got["status"] == want:
            return got
        assert time.monotonic() < deadline, f"task {task_id} never {want}: {got}"
        await asyncio.sleep(0.1)


async def tasks_and_notifications(params, machine, seen):
    def client():
        return Client(params, mode="auto", read_timeout_seconds=60, extensions=[advertise(TASKS)])

    def run(args):
        return {"name": "exec_run", "arguments": {"machine": machine, **args}}

    async with client() as c:
        created = await raw(c, "tools/call", run({"cmd": "echo py-task-end"}))
        assert created.get("resultType") == "task", created
        done = await poll(c, created["taskId"], "completed")
        assert done["result"]["structuredContent"]["tail"] == "py-task-end\n", done
        created = await raw(c, "tools/call", run({"cmd": "echo py-long; sleep 60"}))
        long_task = created["taskId"]
    seen["task_run_to_end"] = True
    # The first server is gone with its client; a new one answers for the same task.
    async with client() as c:
        got = await poll(c, long_task, "working")
        seen["task_after_restart"] = got["status"]
        machine_name, exec_id = long_task.rsplit("/", 1)
        uri = f"codex-remote://{machine_name}/jobs/{exec_id}"
        async with c.listen(resource_subscriptions=[uri]) as sub:
            assert uri in (sub.honored.resource_subscriptions or []), sub.honored
            await raw(c, "tasks/cancel", {"taskId": long_task})
            started = time.monotonic()
            with anyio_fail_after(30):
                async for event in sub:
                    if isinstance(event, ResourceUpdated) and event.uri == uri:
                        break
            seen["notified_after_s"] = round(time.monotonic() - started, 3)
        await poll(c, long_task, "cancelled")
        job = await c.read_resource(uri)
        status = json.loads(job.contents[0].text)
        assert status["state"] == "cancelled", status
        seen["cancelled_state"] = status["state"]


def anyio_fail_after(seconds):
    import anyio

    return anyio.fail_after(seconds)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
