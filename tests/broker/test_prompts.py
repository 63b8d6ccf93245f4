"""The workflow prompts (broker.server.prompts), listed and fetched through a real MCP client:
each names tools that exist, in the order the workflow needs them."""

from __future__ import annotations

import re

import mcp_types as types
from mcp.client._memory import InMemoryTransport
from mcp.client.session import ClientSession

from agent.catalog import TOOL_NAMES
from broker.server.analysis_tools import DRIFT_TOOL, EXPLAIN_JOB_TOOL, STRAGGLERS_TOOL
from broker.server.app import BrokerApp
from broker.server.cluster_schemas import DEFINITIONS
from broker.server.prompts import PROMPT_NAMES, register_prompts

ANALYSIS = (DRIFT_TOOL, STRAGGLERS_TOOL, EXPLAIN_JOB_TOOL)
KNOWN_TOOLS = {"list_gpu_nodes", *TOOL_NAMES, *(d["name"] for d in (*DEFINITIONS, *ANALYSIS))}
CALL = re.compile(r"\b([a-z_]+)\(")


def tool_calls(text: str) -> list[str]:
    """The tools a prompt tells the model to call, in order of first mention."""
    return list(dict.fromkeys(CALL.findall(text)))


async def fetch(name: str, arguments: dict[str, str]) -> tuple[types.ListPromptsResult, str]:
    app = BrokerApp()
    register_prompts(app)
    async with InMemoryTransport(app) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        listing = await session.list_prompts()
        got = await session.get_prompt(name, arguments)
    (message,) = got.messages
    assert message.role == "user" and isinstance(message.content, types.TextContent)
    return listing, message.content.text


async def test_prompts_are_listed_with_their_arguments() -> None:
    listing, _ = await fetch("node_health_check", {"node": "gpu-node-002"})
    prompts = {p.name: p for p in listing.prompts}
    assert tuple(prompts) == PROMPT_NAMES
    args = {name: {a.name: a.required for a in p.arguments or []} for name, p in prompts.items()}
    assert args == {
        "node_health_check": {"node": True},
        "xid_triage": {"node": False, "since_minutes": False},
        "failed_pod_triage": {"pod": True, "namespace": False},
        "find_slow_node": {"job": False, "namespace": False},
        "job_failure_triage": {"job": True, "namespace": True},
    }
    assert all(p.title and p.description for p in prompts.values())


async def test_node_health_check_walks_from_kubernetes_to_the_gpus() -> None:
    _, text = await fetch("node_health_check", {"node": "gpu-node-002"})
    calls = tool_calls(text)
    assert set(calls) <= KNOWN_TOOLS
    assert calls[:4] == [
        "describe_gpu_node",
        "get_gpu_health",
        "analyze_xid_errors",
        "get_pod_gpu_allocation",
    ]
    assert 'describe_gpu_node(node="gpu-node-002")' in text
    assert "OOMKilled" in text and "missing" in text  # the ground rules travel along


async def test_xid_triage_scopes_to_a_node_or_the_cluster() -> None:
    _, one = await fetch("xid_triage", {"node": "gpu-node-003", "since_minutes": "120"})
    assert 'analyze_xid_errors(node="gpu-node-003", since_minutes=120)' in one
    _, every = await fetch("xid_triage", {})
    assert "analyze_xid_errors(since_minutes=60)" in every and "every GPU node" in every
    calls = tool_calls(every)
    assert set(calls) <= KNOWN_TOOLS
    assert calls.index("analyze_xid_errors") < calls.index("describe_gpu_node")
    assert calls.index("get_pod_gpu_allocation") < calls.index("explain_failure")
    for code in ("13", "48", "79", "154"):
        assert code in every


async def test_failed_pod_triage_starts_with_explain_failure() -> None:
    _, text = await fetch("failed_pod_triage", {"pod": "llama3-x", "namespace": "ml"})
    calls = tool_calls(text)
    assert set(calls) <= KNOWN_TOOLS
    assert calls[0] == "explain_failure"
    assert 'explain_failure(pod="llama3-x", namespace="ml")' in text
    assert "kubectl logs llama3-x -n ml --previous" in text
    _, bare = await fetch("failed_pod_triage", {"pod": "llama3-x"})
    assert 'explain_failure(pod="llama3-x")' in bare


async def test_find_slow_node_compares_then_drills_down() -> None:
    _, text = await fetch("find_slow_node", {"job": "llm", "namespace": "ml"})
    calls = tool_calls(text)
    assert set(calls) <= KNOWN_TOOLS
    assert calls[:2] == ["find_stragglers", "find_config_drift"]
    assert 'find_stragglers(job="llm", namespace="ml")' in text
    _, fleet = await fetch("find_slow_node", {})
    assert "find_stragglers()" in fleet and "the cluster's GPU nodes" in fleet


async def test_job_failure_triage_starts_with_explain_job() -> None:
    _, text = await fetch("job_failure_triage", {"job": "ddp", "namespace": "ml"})
    calls = tool_calls(text)
    assert set(calls) <= KNOWN_TOOLS
    assert calls[0] == "explain_job" and 'explain_job(job="ddp", namespace="ml")' in text
    assert "collective timeouts" in text
