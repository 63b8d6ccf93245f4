"""The cluster-side MCP tools: ``describe_gpu_node``, ``get_pod_gpu_allocation`` and
``explain_failure``, registered on the broker's server (``broker.server`` calls
:func:`register_cluster_tools`), plus the core of ``broker explain`` for the CLI.

All read-only (``readOnlyHint``), with output schemas (:mod:`broker.cluster_schemas`).
Bad input (an unknown pod or node) is an ``isError`` answer that says what to do; a
missing permission is a partial answer that names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.cluster_schemas import DESCRIBE_NODE, EXPLAIN_FAILURE, POD_ALLOCATION_TOOL
from broker.context import BrokerContext
from broker.diagnosis import describe_gpu_node, explain_pod, pod_gpu_allocation
from broker.explain_render import render_explanation

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from broker.server import BrokerApp

Json = dict[str, Any]

__all__ = ["explain_for_cli", "register_cluster_tools", "render_explanation"]


def register_cluster_tools(app: BrokerApp, ctx: BrokerContext) -> None:
    """Add the three cluster-side tools to ``app`` (a :class:`broker.server.BrokerApp`)."""

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


async def explain_for_cli(ctx: BrokerContext, pod: str, namespace: str | None) -> Json:
    """``broker explain POD [-n NS]`` / ``kubectl mcp explain POD``: the explain_failure
    answer (render it with :func:`render_explanation`). Raises BrokerError on bad input."""
    return await explain_pod(ctx, pod, namespace or None)
