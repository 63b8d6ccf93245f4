"""broker.server: the MCP surface, with a real MCP client over in-memory JSON-RPC streams
and real agent processes behind the pool (the ``local_agents`` fake cluster)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client.session import ClientSession
from mcp.shared.memory import create_client_server_memory_streams

from agent.catalog import TOOL_DEFINITIONS
from broker.errors import ConfigError, UnknownNode
from broker.fleet.context import BrokerContext
from broker.fleet.pool import NodePool
from broker.server import BrokerApp, HttpSettings, build_node_server, build_server
from broker.server.http import check_http_settings, is_loopback, transport_security
from tests.broker.agents import LocalAgents

AGENT_TOOLS = [t["name"] for t in TOOL_DEFINITIONS]
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "2"}
T4 = {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.count": "2"}
HUNG_NVML = {"faults": [{"gpu": 0, "kind": "slow_nvml", "seconds": 60}]}


@asynccontextmanager
async def connected(app: BrokerApp) -> AsyncIterator[ClientSession]:
    """A real ClientSession talking JSON-RPC to ``app`` over in-memory streams."""
    low = app._lowlevel_server
    async with (
        create_client_server_memory_streams() as (client, server),
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(lambda: low.run(server[0], server[1], low.create_initialization_options()))
        async with ClientSession(client[0], client[1]) as session:
            await session.initialize()
            yield session
        tg.cancel_scope.cancel()


@asynccontextmanager
async def broker(
    agents: LocalAgents, **pool: Any
) -> AsyncIterator[tuple[BrokerContext, BrokerApp]]:
    async with (
        NodePool(connect=agents.connect, discover=agents.discover, **pool) as p,
        BrokerContext(p) as ctx,
    ):
        yield ctx, build_server(ctx)


def small_cluster(agents: LocalAgents) -> None:
    agents.add("n1", labels=H100)
    agents.add("n2", {"faults": [{"gpu": 1, "kind": "fell_off_bus", "ago_s": 60}]}, labels=H100)
    agents.add("n3", {"faults": [{"gpu": 0, "kind": "retired_pages_pending"}]}, labels=T4)
    agents.add("n4", ready=False, reason="agent pod p4 is Pending (ContainerCreating)", labels=T4)


async def eventually(check: Callable[[], bool], limit_s: float = 10.0) -> None:
    for _ in range(int(limit_s / 0.02)):
        if check():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"not true within {limit_s} s")


def sent_method(agents: LocalAgents, node: str, method: str) -> bool:
    return any(m.get("method") == method for m in agents.sent.get(node, []))


def text_json(result: types.CallToolResult) -> Any:
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    return json.loads(content.text)


def error_text(result: types.CallToolResult) -> str:
    assert result.is_error
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


async def test_tools_are_listed_read_only_with_the_agents_schemas(
    local_agents: LocalAgents,
) -> None:
    small_cluster(local_agents)
    async with broker(local_agents) as (_, app), connected(app) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert {"list_gpu_nodes", *AGENT_TOOLS} <= set(tools)
    for tool in tools.values():
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
        assert tool.annotations.destructive_hint is False
        assert tool.output_schema is not None
        # Read-only: no tool takes a command to run.
        assert not {"command", "cmd", "argv", "exec"} & set(tool.input_schema["properties"])
    for definition in TOOL_DEFINITIONS:
        tool = tools[definition["name"]]
        props = tool.input_schema["properties"]
        for name, schema in definition["inputSchema"]["properties"].items():
            assert props[name] == schema  # the agent's own arguments, verbatim
        assert {"node", "nodes", "node_selector", "detail", "limit"} <= set(props)
        assert tool.input_schema["additionalProperties"] is False
        # Output schemas go out one level deep (the agent's schema five times would double
        # tools/list); pinned mode (`serve --node`) lists the agent's schema verbatim.
        assert tool.output_schema["properties"]["nodes"] == {"type": "array"}
        assert {"summary", "nodes", "healthy"} <= set(tool.output_schema["required"])
        assert tool.description and tool.description.startswith(
            ("Judge the health of every NVIDIA GPU across", "The ", "Which ", "NVLink across")
        )
        assert "this node" not in tool.description


async def test_fan_out_answer_is_aggregated_worst_first(local_agents: LocalAgents) -> None:
    small_cluster(local_agents)
    async with broker(local_agents) as (_, app), connected(app) as session:
        result = await session.call_tool("get_gpu_health", {})
    assert not result.is_error
    answer = result.structured_content
    assert answer is not None
    assert text_json(result) == answer  # the same JSON as text, for text-only clients
    assert answer["summary"]["nodes"] == {"total": 4, "ok": 3, "failed": 1}
    assert answer["summary"]["status"] == {"critical": 1, "degraded": 1, "warning": 0, "healthy": 1}
    assert [(e["node"], e["status"]) for e in answer["nodes"]] == [
        ("n2", "critical"),
        ("n3", "degraded"),
    ]
    assert answer["nodes"][0]["findings"]["issues"][0]["check"] == "gpu_lost"
    assert answer["healthy"] == ["n1"]
    (pending,) = answer["summary"]["unreachable"]  # grouped by reason
    assert pending["nodes"] == ["n4"] and pending["kind"] == "not_ready"
    assert "Pending (ContainerCreating)" in pending["reason"]
    assert "n4" not in local_agents.connects  # a not-ready node is reported, not contacted


async def test_every_agent_tool_fans_out(local_agents: LocalAgents) -> None:
    small_cluster(local_agents)
    async with broker(local_agents) as (_, app), connected(app) as session:
        for tool in AGENT_TOOLS:
            result = await session.call_tool(tool, {})
            assert not result.is_error, tool
            answer = result.structured_content
            assert answer is not None and answer["tool"] == tool
            assert answer["summary"]["nodes"]["ok"] == 3, tool
            # n2's GPU 1 fell off the bus: every GPU tool notices.
            if tool != "get_nvlink_topology":
                assert answer["nodes"] and answer["nodes"][0]["node"] == "n2", tool


async def test_targeting(local_agents: LocalAgents) -> None:
    small_cluster(local_agents)
    async with broker(local_agents) as (_, app), connected(app) as session:
        one = (await session.call_tool("get_gpu_health", {"node": "n1"})).structured_content
        some = await session.call_tool("get_gpu_inventory", {"nodes": ["n1", "n3"]})
        by_label = await session.call_tool(
            "get_gpu_health", {"node_selector": "nvidia.com/gpu.product=Tesla-T4"}
        )
        none = await session.call_tool("get_gpu_health", {"node_selector": "team=nobody"})
        full = await session.call_tool("get_gpu_health", {"nodes": ["n1", "n2"], "detail": "full"})
    assert one is not None and one["targeted"] == "node n1"
    (entry,) = one["nodes"]  # one node: its full result, even when healthy
    assert entry["status"] == "healthy" and len(entry["result"]["gpus"]) == 2
    assert some.structured_content is not None
    assert some.structured_content["summary"]["nodes"]["total"] == 2
    assert some.structured_content["fleet"]["gpus"] == 4  # two 2-GPU nodes
    labelled = by_label.structured_content
    assert labelled is not None
    assert labelled["summary"]["nodes"]["total"] == 2  # n3 answers, n4 is not ready
    assert [u["nodes"] for u in labelled["summary"]["unreachable"]] == [["n4"]]
    empty = none.structured_content
    assert empty is not None and empty["summary"]["nodes"]["total"] == 0
    assert "no GPU node matched" in empty["warnings"][0]
    assert full.structured_content is not None
    assert all("result" in e for e in full.structured_content["nodes"])


async def test_input_errors_are_clear_and_contact_no_node(local_agents: LocalAgents) -> None:
    small_cluster(local_agents)
    async with broker(local_agents) as (_, app), connected(app) as session:
        unknown = await session.call_tool("get_gpu_health", {"node": "gpu-node-999"})
        unknown_many = await session.call_tool("get_gpu_health", {"nodes": ["n1", "nope"]})
        selector = await session.call_tool("get_gpu_health", {"node_selector": "zone in (a"})
        bad_type = await session.call_tool("get_gpu_health", {"since_minutes": "soon"})
        bad_range = await session.call_tool("analyze_xid_errors", {"since_minutes": -5})
        extra = await session.call_tool("get_gpu_health", {"command": "rm -rf /"})
        both = await session.call_tool("get_gpu_health", {"node": "n1", "nodes": ["n2"]})
        no_tool = await session.call_tool("reboot_node", {})
        nodes_bad = await session.call_tool("list_gpu_nodes", {"node_selector": "=x"})
    assert "unknown GPU node(s): gpu-node-999" in error_text(unknown)
    assert "Known GPU nodes: n1, n2, n3, n4" in error_text(unknown)
    assert "unknown GPU node(s): nope" in error_text(unknown_many)
    assert "invalid node_selector 'zone in (a'" in error_text(selector)
    assert "argument since_minutes" in error_text(bad_type)
    assert "'soon' is not of type 'number'" in error_text(bad_type)
    assert "argument since_minutes" in error_text(bad_range)
    assert "'command' was unexpected" in error_text(extra)
    assert "at most one of node, nodes and node_selector" in error_text(both)
    assert "reboot_node" in error_text(no_tool)
    assert "invalid node_selector" in error_text(nodes_bad)
    assert local_agents.connects == {}  # nothing was sent to any node


async def test_progress_is_reported_per_node(local_agents: LocalAgents) -> None:
    small_cluster(local_agents)
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with broker(local_agents) as (_, app), connected(app) as session:
        result = await session.call_tool("get_gpu_health", {}, progress_callback=on_progress)
    assert not result.is_error
    assert sorted(p for p, _, _ in seen) == [1, 2, 3, 4]
    assert {t for _, t, _ in seen} == {4}
    assert any("n4 failed (not_ready)" in (m or "") for _, _, m in seen)


async def test_cancelling_the_request_cancels_the_node_calls(local_agents: LocalAgents) -> None:
    local_agents.add("hung", HUNG_NVML, agent_args=("--call-timeout", "30"))
    local_agents.add("ok")
    async with broker(local_agents, call_timeout=30) as (ctx, app), connected(app) as session:
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.call_tool, "get_gpu_health", {})
            await eventually(lambda: sent_method(local_agents, "hung", "tools/call"))
            tg.cancel_scope.cancel()
        await eventually(lambda: sent_method(local_agents, "hung", "notifications/cancelled"))
        sent = local_agents.sent["hung"]
        call = next(m for m in sent if m.get("method") == "tools/call")
        cancelled = [m for m in sent if m.get("method") == "notifications/cancelled"]
        assert cancelled and cancelled[0]["params"]["requestId"] == call["id"]
        # The broker stays up: the next call works.
        again = await session.call_tool("get_gpu_inventory", {"node": "ok"})
        assert not again.is_error


async def test_list_gpu_nodes(local_agents: LocalAgents) -> None:
    small_cluster(local_agents)
    async with broker(local_agents) as (_, app), connected(app) as session:
        result = await session.call_tool("list_gpu_nodes", {})
        t4 = await session.call_tool("list_gpu_nodes", {"node_selector": "nvidia.com/gpu.product"})
    answer = result.structured_content
    assert answer is not None
    assert answer["summary"] == {"total": 4, "ready": 3, "not_ready": 1}
    assert answer["ready"] == [
        {
            "gpu_product": "NVIDIA-H100-80GB-HBM3",
            "gpu_count": "2",
            "count": 2,
            "nodes": ["n1", "n2"],
        },
        {"gpu_product": "Tesla-T4", "gpu_count": "2", "count": 1, "nodes": ["n3"]},
    ]
    assert "truncated" not in answer
    assert answer["not_ready"][0]["node"] == "n4"
    assert t4.structured_content is not None
    assert t4.structured_content["summary"]["total"] == 4
    assert local_agents.connects == {}  # listing contacts no node


async def test_pinned_node_exposes_the_agents_tools_as_they_are(
    local_agents: LocalAgents,
) -> None:
    small_cluster(local_agents)
    async with NodePool(connect=local_agents.connect, discover=local_agents.discover) as p:
        ctx = BrokerContext(p)
        app = await build_node_server(ctx, "n2")
        async with connected(app) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            health = await session.call_tool("get_gpu_health", {})
            bad = await session.call_tool("get_gpu_health", {"since_minutes": 0})
        direct = await p.call("n2", "get_gpu_health", {})
        with pytest.raises(UnknownNode):
            await build_node_server(ctx, "nope")
        # A node that cannot be reached still gets the catalog; calls say why.
        pending = await build_node_server(ctx, "n4")
        async with connected(pending) as session:
            pending_tools = {t.name for t in (await session.list_tools()).tools}
            failed = await session.call_tool("get_gpu_inventory", {})
    assert set(tools) == set(AGENT_TOOLS)
    for definition in TOOL_DEFINITIONS:
        tool = tools[definition["name"]]
        assert tool.input_schema == definition["inputSchema"]
        assert tool.output_schema == definition["outputSchema"]
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
    assert health.structured_content is not None and direct.result is not None
    assert health.structured_content["status"] == direct.result["status"] == "critical"
    assert health.structured_content["gpus"][1]["issues"] == direct.result["gpus"][1]["issues"]
    assert "argument since_minutes" in error_text(bad)
    assert pending_tools == set(AGENT_TOOLS)
    assert "Pending (ContainerCreating)" in error_text(failed)


def test_http_settings_refuse_unauthenticated_non_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    check_http_settings(HttpSettings(host="127.0.0.1"))
    with pytest.raises(ConfigError, match="needs a bearer token"):
        check_http_settings(HttpSettings(host="0.0.0.0"))
    with pytest.raises(ConfigError, match="too short"):
        check_http_settings(HttpSettings(host="0.0.0.0", token="short"))
    check_http_settings(HttpSettings(host="0.0.0.0", token="x" * 32))


def test_dns_rebinding_allow_lists() -> None:
    local = transport_security(HttpSettings())
    assert local.enable_dns_rebinding_protection
    assert "127.0.0.1:*" in local.allowed_hosts and "localhost:*" in local.allowed_hosts
    assert "http://localhost:*" in local.allowed_origins
    assert not any("evil" in h for h in local.allowed_hosts)
    bound = transport_security(HttpSettings(host="10.1.2.3", token="t" * 20))
    assert "10.1.2.3:*" in bound.allowed_hosts
    named = transport_security(
        HttpSettings(host="0.0.0.0", token="t" * 20, allowed_hosts=("broker.svc",))
    )
    assert named.enable_dns_rebinding_protection and "broker.svc:*" in named.allowed_hosts
    # A wildcard bind cannot know its names: the mandatory token is the guard then.
    wildcard = transport_security(HttpSettings(host="0.0.0.0", token="t" * 20))
    assert not wildcard.enable_dns_rebinding_protection


async def test_schema_tools_refuse_duplicates_and_survive_bugs(local_agents: LocalAgents) -> None:
    small_cluster(local_agents)
    async with broker(local_agents) as (_, app):
        with pytest.raises(ValueError, match="already registered"):
            app.add_schema_tool(TOOL_DEFINITIONS[0], app_handler_never_called)

        async def broken(arguments: dict[str, Any], mctx: Any) -> dict[str, Any]:
            raise KeyError("oops")

        app.add_schema_tool(
            {"name": "broken", "description": "x", "inputSchema": {"type": "object"}}, broken
        )
        async with connected(app) as session:
            failed = await session.call_tool("broken", {})
            still = await session.call_tool("list_gpu_nodes", {})
    assert "broken failed inside the broker (KeyError" in error_text(failed)
    assert not still.is_error


async def app_handler_never_called(arguments: dict[str, Any], mctx: Any) -> dict[str, Any]:
    raise AssertionError("not called")
