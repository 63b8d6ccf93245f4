"""The MCP surface as an LLM sees it, through a real MCP client: tools/list within its
30 KB budget with valid output schemas, cluster-first descriptions, instructions that
name the starting tool, explain_failure and check_setup; errors that name MCP tools;
causes shared by many nodes said once."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator

from broker.fleet.context import BrokerContext
from broker.fleet.pool import NodePool
from broker.server import build_server
from tests.broker.agents import LocalAgents
from tests.broker.test_server import connected, error_text

TOOLS_LIST_BUDGET = 30_000  # bytes of json.dumps(tools/list); was 51,331


async def test_tools_list_is_small_and_its_schemas_are_valid(local_agents: LocalAgents) -> None:
    async with (
        NodePool(connect=local_agents.connect, discover=local_agents.discover) as pool,
        BrokerContext(pool) as ctx,
        connected(build_server(ctx)) as session,
    ):
        listed = await session.list_tools()
        instructions = session.instructions
    tools = listed.model_dump(by_alias=True, exclude_none=True)["tools"]
    size = len(json.dumps({"tools": tools}))
    assert size <= TOOLS_LIST_BUDGET, f"tools/list is {size} bytes"
    names = {t["name"] for t in tools}
    assert {"list_gpu_nodes", "get_gpu_health", "explain_failure", "check_setup"} <= names
    for tool in tools:
        Draft202012Validator.check_schema(tool["inputSchema"])
        Draft202012Validator.check_schema(tool["outputSchema"])
        assert "this node" not in tool["description"], tool["name"]
    start = [t["name"] for t in tools if "START HERE" in t["description"]]
    assert start == ["get_gpu_health"]  # one tool is clearly the place to start
    assert instructions is not None
    assert "Start with get_gpu_health" in instructions
    assert "why did my job" in instructions and "explain_failure" in instructions
    assert "check_setup" in instructions


async def test_errors_over_mcp_name_mcp_tools(local_agents: LocalAgents) -> None:
    local_agents.add("gpu-node-001")
    local_agents.add("gpu-node-002")
    async with (
        NodePool(connect=local_agents.connect, discover=local_agents.discover) as pool,
        BrokerContext(pool) as ctx,
        connected(build_server(ctx)) as session,
    ):
        result = await session.call_tool("get_gpu_health", {"node": "gpu-node-0002"})
    text = error_text(result)
    assert "Did you mean gpu-node-002?" in text
    assert "list_gpu_nodes" in text and "broker nodes" not in text


async def test_a_cause_shared_by_many_nodes_is_said_once(local_agents: LocalAgents) -> None:
    local_agents.add("gpu-node-001")
    for i in range(2, 8):
        local_agents.add(
            f"gpu-node-{i:03d}",
            ready=False,
            reason=f"agent pod k8s-gpu-mcp-{i}x9z is Pending (ContainerCreating)",
        )
    async with (
        NodePool(connect=local_agents.connect, discover=local_agents.discover) as pool,
        BrokerContext(pool) as ctx,
        connected(build_server(ctx)) as session,
    ):
        sweep = await session.call_tool("get_gpu_health", {})  # the client validates it
        nodes = await session.call_tool("list_gpu_nodes", {})
    assert not sweep.is_error and sweep.structured_content is not None
    (cause,) = sweep.structured_content["summary"]["unreachable"]
    assert cause["count"] == 6 and cause["kind"] == "not_ready"
    assert cause["reason"] == "node <node>: agent pod <pod> is Pending (ContainerCreating)"
    assert "describe pod" in cause["fix"] and "check_setup" in cause["fix"]
    assert nodes.structured_content is not None
    assert nodes.structured_content["causes"][0]["count"] == 6
