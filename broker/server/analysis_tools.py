"""The fleet-analysis MCP tools: ``find_config_drift``, ``find_stragglers`` and
``explain_job`` (the nodes of one job compared, and why a multi-node job died)."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context

from broker.diagnosis.job import explain_job
from broker.fleet.analysis import JOB_PROPERTIES, config_drift, stragglers
from broker.fleet.context import BrokerContext
from broker.fleet.operations import TARGETING_PROPERTIES
from broker.server.app import READ_ONLY, BrokerApp

__all__ = ["DRIFT_TOOL", "EXPLAIN_JOB_TOOL", "STRAGGLERS_TOOL", "register_analysis_tools"]

Json = dict[str, Any]

_NODE_TARGETING = {k: TARGETING_PROPERTIES[k] for k in ("nodes", "node_selector")}
_GROUPS = {
    "type": "array",
    "description": "Nodes that could not answer, grouped by reason.",
    "items": {"type": "object"},
}

DRIFT_TOOL: Json = {
    "name": "find_config_drift",
    "title": "Find configuration drift across GPU nodes",
    "description": (
        "Across the cluster's GPU nodes (or those chosen with nodes / node_selector), "
        "compare nodes of the same GPU product and report every setting where some differ "
        "from the majority: driver and CUDA versions, VBIOS, ECC and persistence mode, MIG "
        "layout, power limit, clocks, PCIe link, NVLink links up, InfiniBand ports, GPUs seen "
        "vs advertised. Each finding names the outlier nodes, the majority value and why it "
        "matters. Use it for 'which node is different?'."
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
        "Across the cluster's GPU nodes, the nodes of one job (job + namespace), or those "
        "chosen with nodes / node_selector: compare live readings (SM clock, throttle "
        "reasons, temperature, power, utilisation, PCIe replays, NVLink errors) between "
        "nodes of the same GPU product and rank the outliers (median absolute deviation), "
        "each with the reading that makes it slow. Use it for 'my job got slower: which node?'."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {**_NODE_TARGETING, **JOB_PROPERTIES, "limit": TARGETING_PROPERTIES["limit"]},
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
        "Why did my distributed job die? For a Job, JobSet, Kubeflow PyTorchJob/MPIJob or "
        "LeaderWorkerSet: its pods, nodes and ranks; which pod failed first and when; that "
        "pod's explain_failure verdict (hardware / driver / application / infrastructure) "
        "with evidence; and the rest of the cascade (ranks that exited afterwards on "
        "NCCL/collective timeouts). One verdict for the job with the chain of evidence."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {
            "job": {"type": "string", "minLength": 1, "description": "The job's name."},
            "namespace": {"type": "string", "minLength": 1, "description": "Its namespace."},
        },
        "required": ["job", "namespace"],
        "additionalProperties": False,
    },
    "outputSchema": {
        "type": "object",
        "required": ["job", "verdict", "confidence", "summary", "chain"],
        "properties": {
            "job": {"type": "object"},
            "verdict": {
                "type": "string",
                "enum": ["hardware", "driver", "application", "infrastructure", "unknown", "none"],
            },
            "confidence": {"type": "string", "enum": ["high", "medium", "low"]},
            "summary": {"type": "string"},
            "first_failure": {"type": ["object", "null"]},
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
