"""``broker serve`` as an IDE runs it (a stdio subprocess), with a real MCP client, against
the simulated cluster running the real agent."""

from __future__ import annotations

import time
from pathlib import Path

import mcp_types as types
import pytest

from agent.catalog import TOOL_DEFINITIONS
from broker.sim import SimServer
from tests.e2e.session import broker_session, structured

pytestmark = pytest.mark.e2e

AGENT_TOOLS = [t["name"] for t in TOOL_DEFINITIONS]


async def test_cluster_server_over_stdio(demo_sim: SimServer, tmp_path: Path) -> None:
    kube = ["--kubeconfig", str(demo_sim.kubeconfig), "--timeout", "20"]
    async with broker_session(tmp_path, *kube) as session:
        init_tools = (await session.list_tools()).tools
        names = {t.name for t in init_tools}
        assert {"list_gpu_nodes", *AGENT_TOOLS} <= names
        assert all(t.annotations and t.annotations.read_only_hint for t in init_tools)

        nodes = structured(await session.call_tool("list_gpu_nodes", {}))
        assert nodes["summary"] == {"total": 10, "ready": 8, "not_ready": 2}

        progress: list[float] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append(p)

        answers = {}
        for tool in AGENT_TOOLS:  # the client validates each answer against its outputSchema
            answers[tool] = structured(
                await session.call_tool(tool, {}, progress_callback=on_progress)
            )
            assert answers[tool]["summary"]["nodes"] == {"total": 10, "ok": 8, "failed": 2}
        assert progress.count(10) == len(AGENT_TOOLS)

        health = answers["get_gpu_health"]
        assert [e["node"] for e in health["nodes"]][:2] == ["gpu-node-003", "gpu-node-002"]
        assert health["healthy"] == ["gpu-node-001", "gpu-node-008"]
        xids = answers["analyze_xid_errors"]
        assert xids["fleet"]["xid_counts"]["79"] >= 1
        nvlink = answers["get_nvlink_topology"]
        assert [e["node"] for e in nvlink["nodes"]] == ["gpu-node-009"]

        one = structured(await session.call_tool("get_gpu_health", {"node": "gpu-node-002"}))
        assert one["nodes"][0]["result"]["gpus"][3]["status"] == "critical"

        unknown = await session.call_tool("get_gpu_inventory", {"node": "gpu-node-404"})
        assert unknown.is_error
        assert isinstance(unknown.content[0], types.TextContent)
        assert "unknown GPU node(s): gpu-node-404" in unknown.content[0].text


async def test_pinned_node_server_over_stdio(demo_sim: SimServer, tmp_path: Path) -> None:
    kube = ["--kubeconfig", str(demo_sim.kubeconfig), "--node", "gpu-node-003"]
    async with broker_session(tmp_path, *kube) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        health = structured(await session.call_tool("get_gpu_health", {"since_minutes": 120}))
    assert set(tools) == set(AGENT_TOOLS)
    for definition in TOOL_DEFINITIONS:
        assert tools[definition["name"]].input_schema == definition["inputSchema"]
        assert tools[definition["name"]].output_schema == definition["outputSchema"]
    # The agent's own answer, passed through: node identity and all.
    assert health["node"]["name"] == "gpu-node-003"
    assert health["status"] == "critical" and health["since_minutes"] == 120


async def test_serve_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - the server exits before initialize
        async with broker_session(tmp_path, "--kubeconfig", str(tmp_path / "missing")):
            pass
    assert time.monotonic() - started < 30
    assert "no such file" in (tmp_path / "broker.stderr").read_text()
