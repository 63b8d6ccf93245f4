"""The cluster-side MCP tools: ``describe_gpu_node``, ``get_pod_gpu_allocation`` and
``explain_failure``, registered on the broker's server (``broker.server.app`` calls
:func:`register_cluster_tools`).

All read-only (``readOnlyHint``), with output schemas (:mod:`broker.server.cluster_schemas`).
Bad input (an unknown pod or node) is an ``isError`` answer that says what to do; a
missing permission is a partial answer that names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.diagnosis.gather import describe_gpu_node, explain_pod, pod_gpu_allocation
from broker.fleet.context import BrokerContext
from broker.server.cluster_schemas import DESCRIBE_NODE, EXPLAIN_FAILURE, POD_ALLOCATION_TOOL

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from broker.server.app import BrokerApp

Json = dict[str, Any]

__all__ = ["register_cluster_tools"]


def register_cluster_tools(app: BrokerApp, ctx: BrokerContext) -> None:
    """Add the three cluster-side tools to ``app`` (a :class:`broker.server.app.BrokerApp`)."""

    async def describe(arguments: Json, mctx: Context[Any, Any]) -> Json:
        return await describe_gpu_node(ctx, str(arguments["node"]))

    async def allocation(arguments: Json, mctx: Context[Any, Any]) -> Json:
        return await pod_gpu_allocation(
            ctx,
            node=arguments.get("node"),
            namespace=arguments.get("namespace"),
            pod=arguments.get("pod"),
        )

    async def explain(arguments: Json, mctx: Context[Any, Any]) -> Json:
        return await explain_pod(ctx, str(arguments["pod"]), arguments.get("namespace"))

    app.add_schema_tool(DESCRIBE_NODE, describe)
    app.add_schema_tool(POD_ALLOCATION_TOOL, allocation)
    app.add_schema_tool(EXPLAIN_FAILURE, explain)
