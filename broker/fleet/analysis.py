"""Fleet analysis: gather the agents' answers across the targeted nodes concurrently, then
judge them together (:mod:`broker.fleet.drift`, :mod:`broker.fleet.stragglers`).

Nodes that could not answer are grouped by reason (one line per reason, a count and a few
names), so an answer stays small whatever the fleet size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from broker.errors import ToolInputError
from broker.fleet.context import BrokerContext
from broker.fleet.drift import find_drift, node_config
from broker.fleet.operations import Targeting, select_targets, split_arguments
from broker.fleet.pool import NodeResult
from broker.fleet.stragglers import find_stragglers, node_readings
from broker.kube.discovery import NodeTarget
from broker.kube.names import COUNT_LABEL, PRODUCT_LABEL
from broker.kube.reader import ClusterReader
from broker.kube.workloads import find_job_pods

__all__ = ["JOB_PROPERTIES", "config_drift", "stragglers"]

Json = dict[str, Any]
NAMES_SHOWN = 10

JOB_PROPERTIES: Json = {
    "job": {
        "type": "string",
        "minLength": 1,
        "description": "Compare only the nodes running this job's pods (a Job, JobSet, "
        "PyTorchJob/MPIJob or LeaderWorkerSet name; give namespace too).",
    },
    "namespace": {
        "type": "string",
        "minLength": 1,
        "description": "The job's namespace (with job).",
    },
}


async def config_drift(ctx: BrokerContext, arguments: Mapping[str, Any]) -> Json:
    """``find_config_drift``: settings where GPU nodes differ from their product's majority."""
    targeting, extra = split_arguments(arguments)
    _no_extra(extra)
    targets = await _targets(ctx, targeting)
    (inventory,) = await _both(ctx, targets, ("get_gpu_inventory",))
    configs = [
        node_config(
            t.node,
            inv.result,
            expected_gpus=_int(t.labels.get(COUNT_LABEL)),
            product_label=t.labels.get(PRODUCT_LABEL),
        )
        for t in targets
        if (inv := inventory[t.node]).ok and inv.result
    ]
    answer = find_drift(configs)
    answer["targeted"] = targeting.describe()
    answer["unreachable"] = _unreachable(inventory.values())
    return answer


async def stragglers(ctx: BrokerContext, arguments: Mapping[str, Any]) -> Json:
    """``find_stragglers``: nodes whose live readings lag their peers', ranked, with why."""
    job, namespace = arguments.get("job"), arguments.get("namespace")
    rest = {k: v for k, v in arguments.items() if k not in JOB_PROPERTIES}
    targeting, extra = split_arguments(rest)
    _no_extra(extra)
    if namespace and not job:
        raise ToolInputError("namespace is for job: give job=<name> too, or drop namespace")
    if job:
        if targeting.node or targeting.nodes or targeting.node_selector:
            raise ToolInputError("give either job or node/nodes/node_selector, not both")
        if not namespace:
            raise ToolInputError(f"job {job!r} needs its namespace (namespace=<ns>)")
        reader = ClusterReader(await ctx.api())
        found = await find_job_pods(reader, str(namespace), str(job))
        names = sorted({str((p.get("spec") or {}).get("nodeName")) for p in found.pods
                        if (p.get("spec") or {}).get("nodeName")})  # fmt: skip
        targeting = Targeting(nodes=tuple(names)) if names else targeting
        if not names:
            raise ToolInputError(f"no pod of {found.kind} {job} is on a node yet (all Pending?)")
    targets = await _targets(ctx, targeting)
    (health,) = await _both(ctx, targets, ("get_gpu_health",))
    readings = [
        node_readings(t.node, r.result, product=t.labels.get(PRODUCT_LABEL))
        for t in targets
        if (r := health[t.node]).ok and r.result
    ]
    answer = find_stragglers(readings, limit=targeting.limit)
    answer["targeted"] = f"the nodes of job {namespace}/{job}" if job else targeting.describe()
    answer["unreachable"] = _unreachable(health.values())
    return answer


def _no_extra(extra: Mapping[str, Any]) -> None:
    if extra:
        raise ToolInputError(f"unknown argument(s): {', '.join(sorted(extra))}")


async def _targets(ctx: BrokerContext, targeting: Targeting) -> list[NodeTarget]:
    return select_targets(await ctx.targets(), targeting)


async def _both(
    ctx: BrokerContext, targets: Sequence[NodeTarget], tools: Sequence[str]
) -> list[dict[str, NodeResult]]:
    """Each tool on every target, the tools concurrently (each a fan-out)."""
    out: list[dict[str, NodeResult]] = [{} for _ in tools]

    async def one(i: int, tool: str) -> None:
        results = await ctx.pool.fan_out(targets, tool, {}) if targets else []
        out[i] = {r.node: r for r in results}

    async with anyio.create_task_group() as tg:
        for i, tool in enumerate(tools):
            tg.start_soon(one, i, tool)
    return out


def _unreachable(results: Any) -> list[Json]:
    """Failed nodes grouped by reason: one entry per reason, a count and a few names."""
    by_reason: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in results:
        if not (r.ok and r.result):
            by_reason[
                (r.error_kind or "protocol", _generic(r.error or "no answer", r.node))
            ].append(r.node)
    groups = [
        {"kind": kind, "reason": reason, "count": len(nodes), "nodes": sorted(nodes)[:NAMES_SHOWN]}
        for (kind, reason), nodes in by_reason.items()
    ]
    return sorted(groups, key=lambda g: -int(g["count"]))


def _generic(reason: str, node: str) -> str:
    """The reason with the node's own name taken out, so equal causes group together."""
    return reason.replace(f"node {node}: ", "").replace(node, "<node>")


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None
