"""What the broker does for a caller, shared by the MCP server, the CLI and the demo:
pick target nodes, fan a tool out, aggregate; list the GPU nodes; diagnose one node.

Everything here works on a :class:`broker.fleet.context.BrokerContext` and returns plain JSON
(the same documents the MCP tools return as ``structuredContent``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import anyio

from agent.catalog import TOOL_DEFINITIONS
from broker.errors import ToolInputError, UnknownNode, clip
from broker.fleet.aggregate import DETAILS, Detail, aggregate
from broker.fleet.context import BrokerContext
from broker.fleet.pool import NodeResult, Progress
from broker.fleet.selector import InvalidSelector, parse_selector
from broker.kube.discovery import NodeTarget
from broker.kube.names import COUNT_LABEL, PRODUCT_LABEL

__all__ = [
    "AGENT_TOOLS",
    "DIAGNOSE_TOOLS",
    "TARGETING_PROPERTIES",
    "Targeting",
    "ToolInputError",
    "diagnose",
    "list_nodes",
    "nodes_answer",
    "run_tool",
    "select_nodes",
    "split_arguments",
]

Json = dict[str, Any]

AGENT_TOOLS: dict[str, Json] = {t["name"]: t for t in TOOL_DEFINITIONS}
DIAGNOSE_TOOLS = (
    "get_gpu_health",
    "analyze_xid_errors",
    "get_gpu_inventory",
    "get_gpu_processes",
    "get_nvlink_topology",
)
DEFAULT_LIMIT = 50

TARGETING_PROPERTIES: Json = {
    "node": {
        "type": "string",
        "minLength": 1,
        "description": "One GPU node by name (its full result is returned).",
    },
    "nodes": {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "minItems": 1,
        "maxItems": 5000,
        "description": "Several GPU nodes by name.",
    },
    "node_selector": {
        "type": "string",
        "minLength": 1,
        "description": (
            "A Kubernetes label selector on node labels, e.g. "
            "'nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3' or "
            "'topology.kubernetes.io/zone in (us-east-1a,us-east-1b)'. "
            "Give at most one of node, nodes, node_selector; none = every GPU node."
        ),
    },
    "detail": {
        "type": "string",
        "enum": list(DETAILS),
        "default": "auto",
        "description": (
            "auto (default): the full result for a single node, otherwise compact findings "
            "for nodes that are not healthy and names only for healthy ones; findings: "
            "always compact; full: every targeted node's complete result (large)."
        ),
    },
    "limit": {
        "type": "integer",
        "minimum": 1,
        "maximum": 5000,
        "default": DEFAULT_LIMIT,
        "description": "At most this many detailed node entries (worst first); the rest "
        "are listed by name and status in `more`.",
    },
}


@dataclass(frozen=True)
class Targeting:
    """Which nodes a fanned-out call goes to, and how much detail comes back."""

    node: str | None = None
    nodes: tuple[str, ...] = ()
    node_selector: str | None = None
    detail: Detail = "auto"
    limit: int = DEFAULT_LIMIT

    def describe(self) -> str:
        if self.node:
            return f"node {self.node}"
        if self.nodes:
            return f"nodes {', '.join(self.nodes)}"
        if self.node_selector:
            return f"GPU nodes matching node_selector {clip(self.node_selector)!r}"
        return "every GPU node"


def split_arguments(arguments: Mapping[str, Any]) -> tuple[Targeting, Json]:
    """Separate the broker's targeting arguments from the agent tool's own.

    Types are assumed checked against the tool's input schema already; this checks the
    combinations. Raises :class:`ToolInputError`.
    """
    agent_args = {k: v for k, v in arguments.items() if k not in TARGETING_PROPERTIES}
    given = [k for k in ("node", "nodes", "node_selector") if arguments.get(k) is not None]
    if len(given) > 1:
        raise ToolInputError(
            f"give at most one of node, nodes and node_selector (got {', '.join(given)}); "
            "omit all three to target every GPU node"
        )
    detail = arguments.get("detail", "auto")
    if detail not in DETAILS:
        raise ToolInputError(f"detail must be one of {', '.join(DETAILS)} (got {clip(detail)!r})")
    nodes = tuple(dict.fromkeys(str(n) for n in arguments.get("nodes") or ()))
    targeting = Targeting(
        node=arguments.get("node"),
        nodes=nodes,
        node_selector=arguments.get("node_selector"),
        detail=cast(Detail, detail),
        limit=int(arguments.get("limit", DEFAULT_LIMIT)),
    )
    return targeting, agent_args


def select_nodes(targets: Sequence[NodeTarget], targeting: Targeting) -> list[str]:
    """The node names a call goes to. Raises UnknownNode / ToolInputError (bad selector)."""
    known = [t.node for t in targets]
    if targeting.node or targeting.nodes:
        wanted = [targeting.node] if targeting.node else list(targeting.nodes)
        names = set(known)
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise UnknownNode(unknown, known)
        return wanted
    if targeting.node_selector:
        try:
            selector = parse_selector(targeting.node_selector)
        except InvalidSelector as exc:
            raise ToolInputError(str(exc)) from None
        return [t.node for t in targets if selector.matches(t.labels)]
    return known


async def run_tool(
    ctx: BrokerContext,
    tool: str,
    arguments: Mapping[str, Any],
    on_progress: Progress | None = None,
) -> Json:
    """Fan ``tool`` out to the targeted nodes and aggregate the answers.

    Raises ToolInputError / UnknownNode for the caller's mistakes, BrokerError when the
    cluster cannot be listed at all; per-node failures are part of the answer.
    """
    if tool not in AGENT_TOOLS:
        raise ToolInputError(f"unknown agent tool {clip(tool)!r}; known: {', '.join(AGENT_TOOLS)}")
    targeting, agent_args = split_arguments(arguments)
    started = time.monotonic()
    targets = await ctx.targets()
    names = select_nodes(targets, targeting)
    warnings = list(ctx.pool.warnings)
    if not names:
        warnings.append(
            f"no GPU node matched ({targeting.describe()}; {len(targets)} GPU node(s) known). "
            "Call list_gpu_nodes to see the nodes and their labels."
        )
    results = await ctx.pool.fan_out(names, tool, agent_args, on_progress) if names else []
    return aggregate(
        tool,
        results,
        detail=targeting.detail,
        limit=targeting.limit,
        elapsed_s=time.monotonic() - started,
        targeted=targeting.describe(),
        warnings=warnings,
    )


# -- list_gpu_nodes ------------------------------------------------------------------------
def nodes_answer(
    targets: Sequence[NodeTarget], *, targeted: str = "every GPU node", warnings: Sequence[str] = ()
) -> Json:
    """The GPU nodes, compact: ready ones grouped by GPU model, not-ready ones with why."""
    groups: dict[tuple[str, str], Json] = {}
    not_ready: list[Json] = []
    for t in targets:
        if not t.ready:
            not_ready.append({"node": t.node, "pod": t.pod, "reason": t.reason or "not ready"})
            continue
        key = (t.labels.get(PRODUCT_LABEL, "unknown"), t.labels.get(COUNT_LABEL, "?"))
        group = groups.setdefault(key, {"gpu_product": key[0], "gpu_count": key[1], "nodes": []})
        group["nodes"].append(t.node)
    ready = sum(len(g["nodes"]) for g in groups.values())
    return {
        "targeted": targeted,
        "summary": {"total": len(targets), "ready": ready, "not_ready": len(not_ready)},
        "ready": sorted(groups.values(), key=lambda g: (-len(g["nodes"]), g["gpu_product"])),
        "not_ready": not_ready,
        "warnings": list(warnings),
    }


NODES_OUTPUT_SCHEMA: Json = {
    "type": "object",
    "properties": {
        "targeted": {"type": "string"},
        "summary": {
            "type": "object",
            "properties": {
                "total": {"type": "integer", "minimum": 0},
                "ready": {"type": "integer", "minimum": 0},
                "not_ready": {"type": "integer", "minimum": 0},
            },
            "required": ["total", "ready", "not_ready"],
        },
        "ready": {
            "type": "array",
            "description": "Nodes whose agent can be reached, grouped by GPU model and count",
            "items": {
                "type": "object",
                "properties": {
                    "gpu_product": {"type": "string"},
                    "gpu_count": {"type": "string"},
                    "nodes": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["gpu_product", "gpu_count", "nodes"],
            },
        },
        "not_ready": {
            "type": "array",
            "description": "GPU nodes that cannot be diagnosed now, with the reason",
            "items": {
                "type": "object",
                "properties": {
                    "node": {"type": "string"},
                    "pod": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                },
                "required": ["node", "pod", "reason"],
            },
        },
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["targeted", "summary", "ready", "not_ready", "warnings"],
}


async def list_nodes(ctx: BrokerContext, node_selector: str | None = None) -> list[NodeTarget]:
    """The GPU nodes (fresh from the API server), optionally filtered by a label selector."""
    targets = await ctx.targets(refresh=True)
    if node_selector:
        names = set(select_nodes(targets, Targeting(node_selector=node_selector)))
        targets = [t for t in targets if t.node in names]
    return targets


# -- diagnose one node ---------------------------------------------------------------------
async def diagnose(ctx: BrokerContext, node: str, since_minutes: float | None = None) -> Json:
    """Every agent tool on one node, concurrently: ``{node, target, status, results, errors}``.

    ``status`` is the health status, or ``unreachable`` when health could not be read.
    Raises UnknownNode.
    """
    targets = await ctx.targets()
    (name,) = select_nodes(targets, Targeting(node=node))
    target = next(t for t in targets if t.node == name)
    results: dict[str, NodeResult] = {}

    async def one(tool: str) -> None:
        args: Json = {}
        if since_minutes is not None and "since_minutes" in (
            AGENT_TOOLS[tool]["inputSchema"].get("properties") or {}
        ):
            args["since_minutes"] = since_minutes
        results[tool] = await ctx.pool.call(name, tool, args)

    async with anyio.create_task_group() as tg:
        for tool in DIAGNOSE_TOOLS:
            tg.start_soon(one, tool)
    health = results["get_gpu_health"]
    status = health.result.get("status") if health.ok and health.result else None
    return {
        "node": name,
        "target": {
            "pod": target.pod,
            "namespace": target.namespace,
            "ready": target.ready,
            "reason": target.reason,
            "gpu_product": target.labels.get(PRODUCT_LABEL),
            "gpu_count": target.labels.get(COUNT_LABEL),
        },
        "status": str(status) if status else "unreachable",
        "results": {t: r.result for t, r in results.items() if r.ok and r.result is not None},
        "errors": {
            t: {"kind": r.error_kind or "protocol", "reason": r.error or "no answer"}
            for t, r in results.items()
            if not r.ok or r.result is None
        },
    }
