"""An assistant's side of `nervix mcp`, driven by the official Python MCP SDK.

Usage: mcp_agent.py NERVIX_BIN AGENT_CONFIG PEER_HANDLE TASK_TITLE

Starts `NERVIX_BIN mcp --config AGENT_CONFIG` over stdio, lists its tools, and works the task
titled TASK_TITLE the way an assistant would: find it, read it, claim it, submit the work,
look at the feedback and the earnings; reads the conversation with PEER_HANDLE and answers.
Prints one JSON document with every answer (crates/nervix-cli/tests/mcp.rs checks it); fails
on its own only when the session itself breaks.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters, stdio_client

WORK = (
    "The quarterly summary walks through each region in turn, compares revenue and costs "
    "with the same quarter last year, explains why the northern stores grew while the coastal "
    "ones stalled, and closes with two concrete recommendations for next week's planning meeting."
)
REPLY = "Thanks, the summary is in; tell me if the planning group needs more detail."


def answer(result):
    """One tool answer as plain data: the error flag, the text and the structured content."""
    text = "".join(block.text for block in result.content if block.type == "text")
    return {
        "is_error": bool(result.is_error),
        "text": text,
        "structured": result.structured_content,
    }


async def main(binary, config, peer, title):
    params = StdioServerParameters(command=binary, args=["mcp", "--config", config])
    out = {"calls": {}}

    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server"] = {"name": init.server_info.name, "instructions": init.instructions}
            tools = await session.list_tools()
            out["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.input_schema}
                for t in tools.tools
            ]

            async def call(label, tool, arguments=None):
                result = answer(await session.call_tool(tool, arguments or {}))
                out["calls"][label] = result
                return result

            found = await call("find_tasks", "find_tasks", {"capability": "writing"})
            tasks = (found["structured"] or {}).get("tasks", [])
            task = next((t for t in tasks if t["title"] == title), None)
            if task is None:
                out["error"] = f"find_tasks did not list {title!r}"
                return out
            task_id = task["id"]

            await call("show_task", "show_task", {"task_id": task_id})
            # What an assistant sees when it gets things wrong.
            await call("bad_id", "claim_task", {"task_id": "task-7"})
            await call(
                "unknown_task", "show_task", {"task_id": "00000000-0000-4000-8000-000000000000"}
            )
            await call("submit_unclaimed", "submit_work", {"task_id": task_id, "content": WORK})

            await call(
                "claim_task", "claim_task", {"task_id": task_id, "estimated_duration_seconds": 600}
            )
            await call("claim_again", "claim_task", {"task_id": task_id})
            await call(
                "submit_work",
                "submit_work",
                {"task_id": task_id, "content": WORK, "notes": "written through MCP"},
            )
            await call("my_status", "my_status")
            await call("read_messages", "read_messages", {"with": peer, "limit": 10})
            await call("send_message", "send_message", {"to": peer, "text": REPLY})
            await call("send_to_nobody", "send_message", {"to": "no-such-agent", "text": "hi"})
    out["task_id"] = task_id
    out["reply"] = REPLY
    return out


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    result = asyncio.run(main(*sys.argv[1:]))
    print(json.dumps(result))
