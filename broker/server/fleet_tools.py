"""The cluster-wide MCP surface: ``list_gpu_nodes``, every agent tool fanned out across
the GPU nodes with targeting (``node``, ``nodes``, ``node_selector``) and an aggregated
answer (:mod:`broker.fleet.aggregate`), progress notifications while the fan-out runs, and
the cluster-side diagnosis tools and prompts. Pinned mode (``--node``): one node's agent
tools, as the agent lists them, results passed through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import mcp_types as types
from mcp.server.mcpserver import Context

from broker.diagnosis.preflight import preflight, preflight_output_schema
from broker.errors import BrokerError, UnknownNode
from broker.fleet.aggregate import aggregate_output_schema
from broker.fleet.causes import CAUSES_SCHEMA, nodes_with_causes, with_causes
from broker.fleet.clusters import CONTEXTS_OUTPUT_SCHEMA, list_contexts
from broker.fleet.context import BrokerContext
from broker.fleet.operations import (
    AGENT_TOOLS,
    NODES_OUTPUT_SCHEMA,
    TARGETING_PROPERTIES,
    list_nodes,
    nodes_answer,
    run_tool,
)
from broker.fleet.pool import NodeResult
from broker.server.analysis_tools import register_analysis_tools
from broker.server.app import READ_ONLY, BrokerApp, SchemaHandler, error_result, json_result
from broker.server.cluster_tools import register_cluster_tools
from broker.server.compact import strip_prose
from broker.server.prompts import register_prompts

__all__ = [
    "CHECK_SETUP_DEFINITION",
    "CLUSTER_DESCRIPTIONS",
    "LIST_NODES_DEFINITION",
    "build_node_server",
    "build_server",
    "fanned_definition",
]

logger = logging.getLogger(__name__)

Json = dict[str, Any]

# What each agent tool does across the cluster (the agent's own descriptions speak of
# "this node"); a tool missing here gets "Across the GPU nodes: " + the agent's text.
CLUSTER_DESCRIPTIONS = {
    "get_gpu_health": (
        "Judge the health of every NVIDIA GPU across the cluster's GPU nodes, concurrently: "
        "per node and GPU a status (healthy, warning, degraded, critical) and each issue "
        "with a message and the recommended action. START HERE: one call with no arguments "
        "covers every GPU node. Checks temperature against slowdown/shutdown thresholds, "
        "power, clock throttling, ECC, retired pages and row remapping, PCIe replays, "
        "NVLink errors, GPUs fallen off the bus, recent critical XIDs (since_minutes)."
    ),
    "analyze_xid_errors": (
        "The XID errors the NVIDIA driver logged across the GPU nodes in a time window "
        "(since_minutes): per node and GPU the XID, its meaning and severity, count, last "
        "time, process, and NVIDIA's recommended action."
    ),
    "get_gpu_processes": (
        "Which processes use each GPU across the GPU nodes, with their GPU memory (and "
        "pod/namespace when the agent can map them)."
    ),
    "get_gpu_inventory": (
        "The GPU hardware and drivers across the GPU nodes: driver and CUDA versions; per "
        "GPU model, UUID, serial, PCI bus id, memory, MIG and persistence mode, power "
        "limit, clocks, compute capability."
    ),
    "get_nvlink_topology": (
        "NVLink across the GPU nodes: link state and error counters per GPU, and the P2P "
        "topology between GPUs."
    ),
}
# The targeting arguments, described once per tool: short, the model reads them all.
_TARGETING_TEXT = {
    "node": "One GPU node by name; returns its full result.",
    "nodes": "Several GPU nodes by name.",
    "node_selector": "Label selector on node labels, e.g. "
    "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3. At most one of node, nodes, "
    "node_selector; none = every GPU node.",
    "detail": "auto: full result for one node, else compact findings; findings; full "
    "(every node's complete result, large).",
    "limit": "At most this many detailed node entries, worst first; the rest are named in `more`.",
}
_TARGETING = {
    name: {**schema, "description": _TARGETING_TEXT.get(name, schema.get("description", ""))}
    for name, schema in TARGETING_PROPERTIES.items()
}
_PROGRESS_EVERY_S = 0.1  # throttle for large fan-outs; small ones report every node


def fanned_definition(agent_tool: Mapping[str, Any]) -> Json:
    """The broker's definition of an agent tool: the agent's arguments plus targeting.

    The per-node result is typed ``object`` in the output schema: the agent's full schema
    five times over would double ``tools/list``; ``broker serve --node`` lists it as is."""
    agent_input = agent_tool.get("inputSchema") or {}
    properties = {**(agent_input.get("properties") or {}), **_TARGETING}
    annotations = {**(agent_tool.get("annotations") or {}), **READ_ONLY}
    title = agent_tool.get("title") or agent_tool["name"]
    annotations["title"] = f"{title} (cluster)"
    name = agent_tool["name"]
    lead = CLUSTER_DESCRIPTIONS.get(name) or (
        "Across the GPU nodes: " + str(agent_tool.get("description", ""))
    )
    return {
        "name": name,
        "title": annotations["title"],
        "description": lead,
        "inputSchema": {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        },
        "outputSchema": strip_prose(aggregate_output_schema(None)),
        "annotations": annotations,
    }


LIST_NODES_DEFINITION: Json = {
    "name": "list_gpu_nodes",
    "title": "List GPU nodes",
    "description": (
        "List the cluster's GPU nodes: the ones whose diagnostics agent can be reached, "
        "grouped by GPU model and count, and the ones that cannot be diagnosed now (agent "
        "pod missing, pending, crash-looping, node NotReady) with the reason and, for "
        "causes shared by many nodes, the fix. Optional node_selector filters by node "
        "labels. Contacts no node."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {"node_selector": _TARGETING["node_selector"]},
        "additionalProperties": False,
    },
    "outputSchema": strip_prose(
        {
            **NODES_OUTPUT_SCHEMA,
            "properties": {**NODES_OUTPUT_SCHEMA["properties"], "causes": CAUSES_SCHEMA},
        }
    ),
    "annotations": {"title": "List GPU nodes", **READ_ONLY},
}

CHECK_SETUP_DEFINITION: Json = {
    "name": "check_setup",
    "title": "Check the setup",
    "description": (
        "Check that this cluster can be diagnosed and say what to fix first: credentials "
        "and API server, your RBAC (list nodes, list pods, create pods/exec), GPU nodes, "
        "the agent DaemonSet (desired vs ready; which namespace it is in), the RuntimeClass, "
        "one agent over exec and the GPUs it sees, Pod Security. Call it when tools report "
        "nodes unreachable, not_ready or rbac, or no agent pods."
    ),
    "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
    "outputSchema": strip_prose(preflight_output_schema()),
    "annotations": {"title": "Check the setup", **READ_ONLY},
}


LIST_CONTEXTS_DEFINITION: Json = {
    "name": "list_contexts",
    "title": "List clusters (kubeconfig contexts)",
    "description": (
        "List the kubeconfig's contexts (clusters) and which are reachable now, with their "
        "GPU node counts. Pass a context's name as `context` (or several as `contexts`, "
        "['*'] for all) to any cluster-wide tool. Contacts each API server, no node."
    ),
    "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
    "outputSchema": CONTEXTS_OUTPUT_SCHEMA,
    "annotations": {"title": "List clusters", **READ_ONLY},
}


def progress_reporter(
    mctx: Context[Any, Any],
) -> Callable[[int, int, NodeResult], Awaitable[None]]:
    """A fan-out progress callback sending ``notifications/progress`` (throttled)."""
    last = 0.0

    async def report(done: int, total: int, result: NodeResult) -> None:
        nonlocal last
        now = time.monotonic()
        if total > 100 and done < total and now - last < _PROGRESS_EVERY_S:
            return
        last = now
        what = "answered" if result.ok else f"failed ({result.error_kind})"
        await mctx.report_progress(done, total, f"{done}/{total} nodes; {result.node} {what}")

    return report


def build_server(ctx: BrokerContext) -> BrokerApp:
    """The cluster-wide server: list_gpu_nodes, every agent tool fanned out, the
    cluster-diagnosis tools and the prompts."""
    app = BrokerApp(compact_outputs=True)

    async def list_gpu_nodes(arguments: Json, mctx: Context[Any, Any]) -> Json:
        selector = arguments.get("node_selector")
        targets = await list_nodes(ctx, selector)
        targeted = f"node_selector {selector!r}" if selector else "every GPU node"
        answer = nodes_answer(targets, targeted=targeted, warnings=ctx.warnings)
        return nodes_with_causes(answer, targets, namespace=ctx.namespace)

    async def check_setup(arguments: Json, mctx: Context[Any, Any]) -> Json:
        return await preflight(ctx, surface="mcp")

    app.add_schema_tool(LIST_NODES_DEFINITION, list_gpu_nodes)

    async def list_contexts_tool(arguments: Json, mctx: Context[Any, Any]) -> Json:
        return await list_contexts(ctx)

    app.add_schema_tool(LIST_CONTEXTS_DEFINITION, list_contexts_tool)
    for definition in AGENT_TOOLS.values():
        app.add_schema_tool(fanned_definition(definition), _fanned_handler(ctx, definition["name"]))
    register_cluster_tools(app, ctx)
    register_analysis_tools(app, ctx)
    app.add_schema_tool(CHECK_SETUP_DEFINITION, check_setup)
    register_prompts(app)
    return app


def _fanned_handler(ctx: BrokerContext, tool: str) -> SchemaHandler:
    async def handler(arguments: Json, mctx: Context[Any, Any]) -> Json:
        answer = await run_tool(ctx, tool, arguments, progress_reporter(mctx))
        return with_causes(answer, namespace=ctx.namespace)

    return handler


async def build_node_server(ctx: BrokerContext, node: str) -> BrokerApp:
    """One node's agent tools exactly as its agent lists them (falling back to the
    catalog this broker was built with when the agent cannot be reached now; each call
    then reports the node's error). Raises UnknownNode."""
    try:
        tools = await ctx.pool.list_tools(node)
    except UnknownNode:
        raise
    except BrokerError as exc:
        logger.warning("node %s: %s; serving the built-in tool catalog", node, exc)
        tools = list(AGENT_TOOLS.values())
    app = BrokerApp(
        name=f"k8s-gpu-mcp-{node}",
        instructions=f"Read-only diagnostics for the NVIDIA GPUs of Kubernetes node {node}. "
        "Start with get_gpu_health.",
    )
    for definition in tools:
        annotations = {**(definition.get("annotations") or {}), **READ_ONLY}
        app.add_schema_tool(
            {**definition, "annotations": annotations},
            _pinned_handler(ctx, node, definition["name"]),
        )
    return app


def _pinned_handler(ctx: BrokerContext, node: str, tool: str) -> SchemaHandler:
    async def handler(arguments: Json, mctx: Context[Any, Any]) -> types.CallToolResult:
        result = await ctx.pool.call(node, tool, arguments)
        if result.ok and result.result is not None:
            return json_result(result.result)
        return error_result(result.error or f"node {node}: no answer", result.result)

    return handler
