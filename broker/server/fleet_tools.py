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

from broker.errors import BrokerError, UnknownNode
from broker.fleet.aggregate import aggregate_output_schema
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
from broker.server.app import READ_ONLY, BrokerApp, SchemaHandler, error_result, json_result
from broker.server.cluster_tools import register_cluster_tools
from broker.server.prompts import register_prompts

__all__ = ["build_node_server", "build_server", "fanned_definition"]

logger = logging.getLogger(__name__)

Json = dict[str, Any]

_TARGETING_NOTE = (
    "\n\nCluster-wide: runs on every GPU node concurrently, or on those chosen with node, "
    "nodes or node_selector. Returns `summary` (nodes per status; `unreachable`: every node "
    "that could not answer, with the reason), `nodes` (nodes that are not healthy, worst "
    "first, with compact findings), `healthy` (names only) and `fleet` (a roll-up where "
    "useful). Give node=<name> for that node's complete result."
)
_PROGRESS_EVERY_S = 0.1  # throttle for large fan-outs; small ones report every node


def fanned_definition(agent_tool: Mapping[str, Any]) -> Json:
    """The broker's definition of an agent tool: the agent's arguments plus targeting."""
    agent_input = agent_tool.get("inputSchema") or {}
    properties = {**(agent_input.get("properties") or {}), **TARGETING_PROPERTIES}
    annotations = {**(agent_tool.get("annotations") or {}), **READ_ONLY}
    title = agent_tool.get("title") or agent_tool["name"]
    annotations["title"] = f"{title} (cluster)"
    return {
        "name": agent_tool["name"],
        "title": annotations["title"],
        "description": str(agent_tool.get("description", "")) + _TARGETING_NOTE,
        "inputSchema": {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        },
        "outputSchema": aggregate_output_schema(agent_tool.get("outputSchema")),
        "annotations": annotations,
    }


LIST_NODES_DEFINITION: Json = {
    "name": "list_gpu_nodes",
    "title": "List GPU nodes",
    "description": (
        "List the cluster's GPU nodes: the ones whose diagnostics agent can be reached, "
        "grouped by GPU model and count, and the ones that cannot be diagnosed now (agent "
        "pod missing, pending, crash-looping, node NotReady) with the reason. Optional "
        "node_selector filters by node labels. Contacts no node."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {"node_selector": TARGETING_PROPERTIES["node_selector"]},
        "additionalProperties": False,
    },
    "outputSchema": NODES_OUTPUT_SCHEMA,
    "annotations": {"title": "List GPU nodes", **READ_ONLY},
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
    app = BrokerApp()

    async def list_gpu_nodes(arguments: Json, mctx: Context[Any, Any]) -> Json:
        selector = arguments.get("node_selector")
        targets = await list_nodes(ctx, selector)
        targeted = f"node_selector {selector!r}" if selector else "every GPU node"
        return nodes_answer(targets, targeted=targeted, warnings=ctx.warnings)

    app.add_schema_tool(LIST_NODES_DEFINITION, list_gpu_nodes)

    async def list_contexts_tool(arguments: Json, mctx: Context[Any, Any]) -> Json:
        return await list_contexts(ctx)

    app.add_schema_tool(LIST_CONTEXTS_DEFINITION, list_contexts_tool)
    for definition in AGENT_TOOLS.values():
        app.add_schema_tool(fanned_definition(definition), _fanned_handler(ctx, definition["name"]))
    register_cluster_tools(app, ctx)
    register_prompts(app)
    return app


def _fanned_handler(ctx: BrokerContext, tool: str) -> SchemaHandler:
    async def handler(arguments: Json, mctx: Context[Any, Any]) -> Json:
        return await run_tool(ctx, tool, arguments, progress_reporter(mctx))

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
