"""The fleet-analysis MCP tools: ``find_config_drift``, ``find_stragglers`` and
``explain_job`` (the nodes of one job compared, and why a multi-node job died)."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context

from broker.diagnosis.job import explain_job
from broker.fleet.analysis import config_drift, stragglers
from broker.fleet.context import BrokerContext
from broker.fleet.operations import TARGETING_PROPERTIES
from broker.server.app import READ_ONLY, BrokerApp

__all__ = ["DRIFT_TOOL", "EXPLAIN_JOB_TOOL", "STRAGGLERS_TOOL", "register_analysis_tools"]

Json = dict[str, Any]

# Short texts: every client reads tools/list, many into the model's context.
_NODE_TARGETING = {
    "nodes": {**TARGETING_PROPERTIES["nodes"], "description": "Only these nodes."},
    "node_selector": {
        **TARGETING_PROPERTIES["node_selector"],
        "description": "Only nodes matching this label selector.",
    },
}
_GROUPS = {"type": "array", "items": {"type": "object"}}

DRIFT_TOOL: Json = {
    "name": "find_config_drift",
    "title": "Find configuration drift across GPU nodes",
    "description": (
        "Which GPU nodes are configured differently from their peers? Compares nodes of the "
        "same GPU product (driver, CUDA, VBIOS, ECC, persistence, MIG, power limit, clocks, "
        "PCIe link, NVLink, InfiniBand, GPUs seen) and names the outliers, the majority "
        "value and why it matters."
    ),
    "inputSchema": {"type": "object", "properties": _NODE_TARGETING, "additionalProperties": False},
    "outputSchema": {
        "type": "object",
        "required": ["summary", "findings"],
        "properties": {
            "summary": {"type": "object"},
            "findings": {"type": "array", "items": {"type": "object"}},
            "unreachable": _GROUPS,
        },
    },
    "annotations": {"title": "Find configuration drift", **READ_ONLY},
}

STRAGGLERS_TOOL: Json = {
    "name": "find_stragglers",
    "title": "Find the GPU nodes slowing a job down",
    "description": (
        "Which nodes slow a job down? Compares live readings (SM clock under load, "
        "throttling, temperature, power, utilisation, PCIe replays, NVLink errors) across "
        "nodes of the same GPU product, for every GPU node, nodes / node_selector, or one "
        "job's nodes; outliers ranked with the reading that makes them slow."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {
            **_NODE_TARGETING,
            "job": {
                "type": "string",
                "minLength": 1,
                "description": "A job's name (with namespace).",
            },
            "namespace": {"type": "string", "minLength": 1},
            "limit": {**TARGETING_PROPERTIES["limit"], "description": "At most this many nodes."},
        },
        "additionalProperties": False,
    },
    "outputSchema": {
        "type": "object",
        "required": ["summary", "stragglers"],
        "properties": {
            "summary": {"type": "object"},
            "stragglers": {"type": "array", "items": {"type": "object"}},
            "unreachable": _GROUPS,
        },
    },
    "annotations": {"title": "Find stragglers", **READ_ONLY},
}

EXPLAIN_JOB_TOOL: Json = {
    "name": "explain_job",
    "title": "Explain why a multi-node job died",
    "description": (
        "Why did my multi-node job die? For a Job, JobSet, PyTorchJob/MPIJob or "
        "LeaderWorkerSet: which pod (rank) failed first and why (explain_failure's verdict "
        "and evidence), and which ranks died afterwards on NCCL/collective timeouts."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {
            "job": {"type": "string", "minLength": 1},
            "namespace": {"type": "string", "minLength": 1},
        },
        "required": ["job", "namespace"],
        "additionalProperties": False,
    },
    "outputSchema": {
        "type": "object",
        "required": ["job", "verdict", "confidence", "summary", "chain"],
        "properties": {
            "verdict": {
                "type": "string",
                "enum": ["hardware", "driver", "application", "infrastructure", "unknown", "none"],
            },
            "confidence": {"type": "string", "enum": ["high", "medium", "low"]},
            "chain": {"type": "array", "items": {"type": "string"}},
        },
    },
    "annotations": {"title": "Explain a job failure", **READ_ONLY},
}


def register_analysis_tools(app: BrokerApp, ctx: BrokerContext) -> None:
    """Add the fleet-analysis tools to ``app``."""

    async def drift(arguments: Json, mctx: Context[Any, Any]) -> Json:
        return await config_drift(ctx, arguments)

    async def slow(arguments: Json, mctx: Context[Any, Any]) -> Json:
        return await stragglers(ctx, arguments)

    async def job(arguments: Json, mctx: Context[Any, Any]) -> Json:
        return await explain_job(ctx, str(arguments["job"]), str(arguments["namespace"]))

    app.add_schema_tool(DRIFT_TOOL, drift)
    app.add_schema_tool(STRAGGLERS_TOOL, slow)
    app.add_schema_tool(EXPLAIN_JOB_TOOL, job)
