"""The agent as a subprocess, driven by the real MCP SDK client (stdio_client +
ClientSession): what an IDE or the broker sees."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from mcp import types
from mcp.shared.exceptions import MCPError

from agent.catalog import STRUCTURED_ONLY, TOOL_DEFINITIONS, TOOL_NAMES
from agent.protocol import LATEST_VERSION
from tests.agent.helpers import ROOT, mcp_agent

ARGUMENTS: dict[str, dict[str, Any]] = {
    "get_gpu_health": {"since_minutes": 1440},
    "analyze_xid_errors": {"since_minutes": 1440},
}


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    assert json.loads(text.text) == result.structured_content  # same JSON for old clients
    return result.structured_content


@pytest.mark.parametrize("definition", TOOL_DEFINITIONS, ids=lambda d: d["name"])
def test_tool_schemas_are_valid_json_schema(definition: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(definition["inputSchema"])
    jsonschema.Draft202012Validator.check_schema(definition["outputSchema"])
    assert definition["inputSchema"]["type"] == "object"
    assert definition["outputSchema"]["type"] == "object"
    assert len(definition["description"]) > 80  # written for a model to choose tools by
    assert definition["annotations"]["readOnlyHint"] is True
    assert definition["annotations"]["destructiveHint"] is False


async def test_sdk_client_lists_and_calls_every_tool(tmp_path: Path) -> None:
    async with mcp_agent("--backend", "fake", stderr=tmp_path / "stderr") as session:
        assert session.protocol_version == LATEST_VERSION
        assert session.server_info.name == "k8s-gpu-mcp-agent"
        assert session.instructions and "get_gpu_health" in session.instructions
        listed = await session.list_tools()
        tools = {t.name: t for t in listed.tools}
        assert sorted(tools) == sorted(TOOL_NAMES)
        for tool in listed.tools:
            assert tool.annotations is not None and tool.annotations.read_only_hint is True
            assert tool.output_schema is not None
            jsonschema.Draft202012Validator.check_schema(tool.output_schema)

        results = {}
        for name in TOOL_NAMES:
            # call_tool itself validates structuredContent against the outputSchema.
            result = await session.call_tool(name, ARGUMENTS.get(name))
            content = structured(result)
            jsonschema.validate(content, tools[name].output_schema)
            assert content["node"]["backend"] == "fake"
            results[name] = content
        await session.send_ping()

    # The default scenario's faults show through the real client.
    health = results["get_gpu_health"]
    assert health["status"] == "critical"
    by_status = {g["index"]: g["status"] for g in health["gpus"]}
    assert len(by_status) == 8
    assert list(by_status.values()).count("healthy") >= 4
    xids = {g["xid"] for g in results["analyze_xid_errors"]["xids"]}
    assert 79 in xids
    assert (tmp_path / "stderr").read_text() == ""  # nothing logged on a clean run


async def test_structured_only_clients_get_a_one_line_text() -> None:
    """A client declaring the structured-only extension (the broker) gets the answer
    once, in structuredContent; the text block is one line, not a second copy."""
    declared = {STRUCTURED_ONLY: {}}
    async with mcp_agent("--backend", "fake", extensions=declared) as brief:
        assert brief.server_capabilities.extensions == declared  # the agent honours it
        short = await brief.call_tool("get_gpu_health", ARGUMENTS["get_gpu_health"])
    async with mcp_agent("--backend", "fake") as plain:
        assert not plain.server_capabilities.extensions
        full = await plain.call_tool("get_gpu_health", ARGUMENTS["get_gpu_health"])
    assert short.structured_content is not None
    assert short.structured_content["summary"] == structured(full)["summary"]
    (text,) = short.content
    assert isinstance(text, types.TextContent)
    assert text.text.startswith(short.structured_content["summary"])
    assert "structuredContent" in text.text and "\n" not in text.text
    assert len(text.text) < 200


async def test_sdk_rejects_bad_arguments_with_invalid_params() -> None:
    async with mcp_agent("--backend", "fake") as session:
        with pytest.raises(MCPError) as caught:
            await session.call_tool("get_gpu_health", {"since_minutes": "an hour"})
        assert caught.value.error.code == types.INVALID_PARAMS
        assert "since_minutes" in caught.value.error.message
        with pytest.raises(MCPError) as unknown:
            await session.call_tool("reboot_node", {})
        assert unknown.value.error.code == types.INVALID_PARAMS
        await session.send_ping()


async def test_concurrent_calls_over_one_session(scenario: Any) -> None:
    path = scenario({"faults": [{"gpu": 0, "kind": "slow_nvml", "seconds": 30}]})
    async with mcp_agent(
        "--backend", "fake", "--scenario", path, "--call-timeout", "0.5"
    ) as session:
        await session.list_tools()
        results: dict[int, types.CallToolResult] = {}

        async def call(i: int) -> None:
            results[i] = await session.call_tool("get_gpu_health", {})

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(call, i)
                # Answered while six stuck calls are in flight.
                await session.send_ping()
        assert len(results) == 6
        for result in results.values():
            assert result.is_error is True
            assert "--call-timeout" in result.content[0].text  # type: ignore[union-attr]


async def test_client_side_timeout_cancels_and_session_goes_on(scenario: Any) -> None:
    path = scenario({"faults": [{"gpu": 0, "kind": "slow_nvml", "seconds": 30}]})
    async with mcp_agent("--backend", "fake", "--scenario", path, "--call-timeout", "2") as session:
        with pytest.raises(MCPError):
            # The SDK gives up after 0.2 s and sends notifications/cancelled.
            await session.call_tool("get_gpu_inventory", {}, read_timeout_seconds=0.2)
        with anyio.fail_after(5):
            await session.send_ping()
            assert (await session.list_tools()).tools


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"])
async def test_raw_initialize_per_version_over_stdio(version: str) -> None:
    """Each protocol version over a real pipe, without the SDK's own version choice."""
    process = await anyio.open_process(
        [sys.executable, "-m", "agent", "--backend", "fake"],
        cwd=str(ROOT),
    )
    async with process:
        assert process.stdin is not None and process.stdout is not None
        lines = [
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {"protocolVersion": version},
            },
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "get_gpu_health"},
            },
        ]
        await process.stdin.send(b"".join(json.dumps(m).encode() + b"\n" for m in lines))
        await process.stdin.aclose()
        out = b""
        with anyio.fail_after(20):
            async for chunk in process.stdout:
                out += chunk
            assert await process.wait() == 0
    answers = {m["id"]: m for m in map(json.loads, out.splitlines())}
    assert answers[1]["result"]["protocolVersion"] == version
    result = answers[2]["result"]
    assert ("structuredContent" in result) == (version >= "2025-06-18")
    assert json.loads(result["content"][0]["text"])["status"] == "critical"


async def test_nvml_backend_over_the_fake_library(fake_nvml_lib: Path, tmp_path: Path) -> None:
    """The real pynvml ctypes layer under the tools, one GPU lost, through the SDK."""
    from tests.agent.fakenvml.build import fake_env, write_config

    config = write_config(tmp_path / "nvml.conf", {"gpu.3.lost": 1})
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("6,1,1000,-;Linux version 6.8.0\n")
    env = fake_env(fake_nvml_lib, config, base={})
    async with mcp_agent(
        "--backend", "nvml", "--kmsg", str(kmsg), env=env, stderr=tmp_path / "stderr"
    ) as session:
        listed = await session.list_tools()
        schemas = {t.name: t.output_schema for t in listed.tools}
        results = {}
        for name in TOOL_NAMES:
            content = structured(await session.call_tool(name, {}))
            jsonschema.validate(content, schemas[name])
            assert content["node"]["backend"] == "nvml"
            results[name] = content
    inventory = results["get_gpu_inventory"]
    assert inventory["driver"]["gpu_count"] == 8
    assert inventory["node"]["driver_version"] == inventory["driver"]["driver_version"]
    health = results["get_gpu_health"]
    statuses = {g["index"]: g["status"] for g in health["gpus"]}
    assert statuses[3] == "critical" and health["status"] == "critical"
    assert health["xid_log"]["readable"] is True and health["xid_log"]["source"] == str(kmsg)
    assert results["analyze_xid_errors"]["xids"] == []
