"""What the broker does for a caller, shared by the MCP server, the CLI and the demo:
pick target nodes, fan a tool out, aggregate; list the GPU nodes; diagnose one node.

Everything here works on a :class:`broker.fleet.context.BrokerContext` and returns plain JSON
(the same documents the MCP tools return as ``structuredContent``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, cast

import anyio

from agent.catalog import TOOL_DEFINITIONS
from broker.errors import BrokerError, ToolInputError, UnknownNode, clip
from broker.fleet.aggregate import ANSWER_BUDGET, DETAILS, FILTERS, Detail, aggregate, slim
from broker.fleet.clusters import context_names
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
    "select_targets",
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
NODE_NAMES_CAP = 1000  # list_gpu_nodes: ready names in all (shared by the model groups)
NOT_READY_CAP = 100  # list_gpu_nodes: not-ready entries (each with its reason)

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
    "status": {
        "type": "array",
        "items": {"type": "string", "enum": list(FILTERS)},
        "minItems": 1,
        "description": "Only nodes with these statuses, one entry each (page with offset).",
    },
    "offset": {
        "type": "integer",
        "minimum": 0,
        "default": 0,
        "description": "Skip this many entries (paging).",
    },
    "context": {
        "type": "string",
        "minLength": 1,
        "description": "Kubeconfig context (cluster); see list_contexts.",
    },
    "contexts": {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "minItems": 1,
        "description": "Several contexts (['*']: all); nodes named CONTEXT/NODE.",
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
    offset: int = 0
    status: tuple[str, ...] = ()
    context: str | None = None
    contexts: tuple[str, ...] = ()

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
        offset=int(arguments.get("offset", 0)),
        status=tuple(dict.fromkeys(str(x) for x in arguments.get("status") or ())),
        context=arguments.get("context"),
        contexts=tuple(str(c) for c in arguments.get("contexts") or ()),
    )
    bad = [x for x in targeting.status if x not in FILTERS]
    if bad:
        raise ToolInputError(f"status filters are {', '.join(FILTERS)} (got {', '.join(bad)})")
    return targeting, agent_args


def select_targets(targets: Sequence[NodeTarget], targeting: Targeting) -> list[NodeTarget]:
    """The nodes a call goes to. Raises UnknownNode / ToolInputError (bad selector)."""
    if targeting.node or targeting.nodes:
        wanted = [targeting.node] if targeting.node else list(targeting.nodes)
        by_name = {t.node: t for t in targets}
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise UnknownNode(unknown, list(by_name))
        return [by_name[n] for n in wanted]
    if targeting.node_selector:
        try:
            selector = parse_selector(targeting.node_selector)
        except InvalidSelector as exc:
            raise ToolInputError(str(exc)) from None
        return [t for t in targets if selector.matches(t.labels)]
    return list(targets)


async def run_tool(
    ctx: BrokerContext,
    tool: str,
    arguments: Mapping[str, Any],
    on_progress: Progress | None = None,
) -> Json:
    """Fan ``tool`` out to the targeted nodes (of one cluster or several) and aggregate.

    Names are resolved to targets once, here; the pool gets the targets. Raises
    ToolInputError / UnknownNode for the caller's mistakes, BrokerError when the
    cluster cannot be listed at all; per-node failures are part of the answer.
    """
    if tool not in AGENT_TOOLS:
        raise ToolInputError(f"unknown agent tool {clip(tool)!r}; known: {', '.join(AGENT_TOOLS)}")
    targeting, agent_args = split_arguments(arguments)
    names = context_names(ctx, targeting.context, targeting.contexts)
    if len(names) > 1 or targeting.contexts:
        return await _run_across(ctx, names, tool, targeting, agent_args, on_progress)
    started = time.monotonic()
    sub = await ctx.in_context(names[0] if names else None)
    results, warnings = await _sweep(sub, tool, targeting, agent_args, on_progress, strict=True)
    return aggregate(
        tool,
        results,
        detail=targeting.detail,
        limit=targeting.limit,
        offset=targeting.offset,
        statuses=targeting.status,
        elapsed_s=time.monotonic() - started,
        deadline_s=sub.pool.sweep_timeout,
        targeted=targeting.describe(),
        warnings=warnings,
    )


async def _sweep(
    ctx: BrokerContext,
    tool: str,
    targeting: Targeting,
    agent_args: Json,
    on_progress: Progress | None,
    *,
    strict: bool,
) -> tuple[list[NodeResult], list[str]]:
    """One cluster: names → targets once, then the fan-out. ``strict``: a node name the
    cluster does not know raises UnknownNode (else it is skipped: several clusters)."""
    targets = await ctx.targets()
    wanted = [targeting.node] if targeting.node else list(targeting.nodes)
    known = {t.node for t in targets}
    if any(n not in known for n in wanted):
        targets = await ctx.targets(refresh=True)  # maybe a node just joined
        known = {t.node for t in targets}
    if wanted and not strict:
        targeting = replace(targeting, node=None, nodes=tuple(n for n in wanted if n in known))
        if not targeting.nodes:
            return [], []
    chosen = select_targets(targets, targeting)
    warnings = list(ctx.warnings)
    if not chosen:
        warnings.append(
            f"no GPU node matched ({targeting.describe()}; {len(targets)} GPU node(s) known). "
            "Call list_gpu_nodes to see the nodes and their labels."
        )
    # Answers folded into findings are cut to their digest as they arrive.
    digest = targeting.detail == "findings" or (targeting.detail == "auto" and len(chosen) > 1)
    keep = partial(slim, tool) if digest else None
    results = await ctx.pool.fan_out(chosen, tool, agent_args, on_progress, keep) if chosen else []
    return results, warnings


async def _run_across(
    ctx: BrokerContext,
    names: Sequence[str],
    tool: str,
    targeting: Targeting,
    agent_args: Json,
    on_progress: Progress | None,
) -> Json:
    """Several clusters concurrently: one combined answer (nodes named CONTEXT/NODE) and
    one summary per cluster in ``clusters`` (or why the cluster could not be swept)."""
    started = time.monotonic()
    swept: dict[str, tuple[list[NodeResult], list[str]] | BrokerError] = {}
    totals: dict[str, int] = {}  # nodes per cluster, as each cluster's fan-out reports
    answered: dict[str, int] = {}

    def progress_of(name: str) -> Progress:
        async def progress(done: int, cluster_total: int, result: NodeResult) -> None:
            totals[name], answered[name] = cluster_total, done
            if on_progress is not None:
                all_done = sum(answered.values())
                await on_progress(all_done, max(all_done, sum(totals.values())), result)

        return progress

    async def one(name: str) -> None:
        try:
            sub = await ctx.in_context(name)
            results, warnings = await _sweep(
                sub, tool, targeting, agent_args, progress_of(name), strict=False
            )
            swept[name] = ([replace(r, node=f"{name}/{r.node}") for r in results], warnings)
        except BrokerError as exc:
            swept[name] = exc

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(one, name)
    clusters: list[Json] = []
    combined: list[NodeResult] = []
    warnings: list[str] = []
    for name in names:
        outcome = swept[name]
        if isinstance(outcome, BrokerError):
            clusters.append(
                {"context": name, "error": {"kind": outcome.kind, "reason": str(outcome)}}
            )
            continue
        results, cluster_warnings = outcome
        combined += results
        warnings += [f"{name}: {w}" for w in cluster_warnings]
        summary = aggregate(tool, results, limit=1)["summary"]
        clusters.append({"context": name, "summary": summary})
    if targeting.node or targeting.nodes:
        wanted = [targeting.node] if targeting.node else list(targeting.nodes)
        found = {r.node.split("/", 1)[1] for r in combined}
        missing = [n for n in wanted if n not in found]
        if missing and not combined:
            raise UnknownNode(missing, [])
        if missing:
            warnings.append(f"node(s) {', '.join(missing)} not found in any of the contexts")
    answer = aggregate(
        tool,
        combined,
        detail=targeting.detail,
        limit=targeting.limit,
        offset=targeting.offset,
        statuses=targeting.status,
        elapsed_s=time.monotonic() - started,
        deadline_s=ctx.pool.sweep_timeout,
        targeted=f"{targeting.describe()} in contexts {', '.join(names)}",
        warnings=warnings,
        budget=ANSWER_BUDGET - len(json.dumps(clusters)),
    )
    answer["clusters"] = clusters
    return answer


# -- list_gpu_nodes ------------------------------------------------------------------------
def nodes_answer(
    targets: Sequence[NodeTarget],
    *,
    targeted: str = "every GPU node",
    warnings: Sequence[str] = (),
    names_cap: int | None = NODE_NAMES_CAP,
) -> Json:
    """The GPU nodes, compact: ready ones grouped by GPU model, not-ready ones with why.

    ``names_cap`` bounds the ready names (shared by the groups; each group keeps its
    ``count``) and the not-ready entries to :data:`NOT_READY_CAP`, so the answer stays
    small at 5,000 nodes (``truncated`` says how many were left out); None lists all.
    """
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
    ordered = sorted(groups.values(), key=lambda g: (-len(g["nodes"]), g["gpu_product"]))
    left_out = 0
    per_group = None if names_cap is None else max(10, names_cap // max(1, len(ordered)))
    for group in ordered:
        group["count"] = len(group["nodes"])
        if per_group is not None and len(group["nodes"]) > per_group:
            left_out += len(group["nodes"]) - per_group
            group["nodes"] = group["nodes"][:per_group]
    reasons_cap = None if names_cap is None else NOT_READY_CAP
    answer: Json = {
        "targeted": targeted,
        "summary": {"total": len(targets), "ready": ready, "not_ready": len(not_ready)},
        "ready": ordered,
        "not_ready": not_ready[:reasons_cap],
        "warnings": list(warnings),
    }
    if reasons_cap is not None and (left_out or len(not_ready) > reasons_cap):
        answer["truncated"] = {
            "ready": left_out,
            "not_ready": max(0, len(not_ready) - reasons_cap),
            "hint": "names were cut to stay small: narrow with node_selector (e.g. by GPU "
            "product or zone), or ask a cluster-wide tool with status=[...] and offset",
        }
    return answer


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
                    "count": {"type": "integer", "minimum": 0},
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
        "truncated": {"type": "object", "description": "Names left out; how to narrow"},
    },
    "required": ["targeted", "summary", "ready", "not_ready", "warnings"],
}


async def list_nodes(ctx: BrokerContext, node_selector: str | None = None) -> list[NodeTarget]:
    """The GPU nodes (fresh from the API server), optionally filtered by a label selector."""
    targets = await ctx.targets(refresh=True)
    if node_selector:
        targets = select_targets(targets, Targeting(node_selector=node_selector))
    return targets


# -- diagnose one node ---------------------------------------------------------------------
async def diagnose(ctx: BrokerContext, node: str, since_minutes: float | None = None) -> Json:
    """Every agent tool on one node, concurrently: ``{node, target, status, results, errors}``.

    ``status`` is the health status, or ``unreachable`` when health could not be read.
    Raises UnknownNode.
    """
    targets = await ctx.targets()
    (target,) = select_targets(targets, Targeting(node=node))
    name = target.node
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
