"""Gather what the cluster-side tools need, concurrently, and hand it to the pure parts.

``explain_pod`` (explain_failure, ``broker explain``), ``describe_gpu_node`` and
``pod_gpu_allocation``: each reads nodes/pods/events through the API server
(:class:`broker.kube.reader.ClusterReader`) and asks the node's agent through the pool, at
the same time. Nothing read is required: an RBAC denial or an unreachable agent becomes a
``missing`` entry that names the permission (or the problem) and the answer is partial.
Bad input (no such pod or node) raises a :class:`BrokerError` with what to do next.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from broker.diagnosis.allocation import (
    gpu_assignment,
    holds_devices,
    is_gpu_resource,
    node_resources,
    pod_requests,
    pod_summary,
)
from broker.diagnosis.describe import describe_node
from broker.diagnosis.explain import explain
from broker.diagnosis.facts import WINDOW_AFTER_S, WINDOW_BEFORE_S, Facts
from broker.diagnosis.pod_status import find_failure
from broker.errors import ApiUnavailable, BrokerError, NotFound, Unauthenticated, UnknownNode, clip
from broker.fleet.context import BrokerContext
from broker.kube.discovery import NodeTarget
from broker.kube.reader import EXEC_ROLE, ClusterReader, Missing, missing_from

Obj = dict[str, Any]
T = TypeVar("T")

MAX_SINCE_MINUTES = 525600.0  # the agent's limit: one year
MIN_SINCE_MINUTES = 1440.0  # a day of XIDs: old ones matter while their GPU state holds
MAX_AGENT_NODES = 64  # allocation: ask at most this many nodes' agents for GPU processes


class _Gather:
    """Collects results of concurrent reads and the ``missing`` entries of failed ones."""

    def __init__(self, ctx: BrokerContext) -> None:
        self.ctx = ctx
        self.missing: list[Missing] = []

    async def read(self, what: str, read: Callable[[], Awaitable[T]]) -> T | None:
        """Run a cluster read; a BrokerError becomes a ``missing`` entry (None returned)."""
        try:
            return await read()
        except BrokerError as exc:
            self.missing.append(missing_from(exc, what))
            return None

    async def agent(self, node: str, tool: str, arguments: Obj, what: str) -> Obj | None:
        """One agent tool on ``node``; failures become ``missing`` entries."""
        try:
            result = await self.ctx.pool.call(node, tool, arguments)
        except UnknownNode as exc:
            self.missing.append(Missing(what, f"no agent: {exc}"))
            return None
        except BrokerError as exc:  # discovery itself failed (e.g. RBAC on agent pods)
            self.missing.append(missing_from(exc, what))
            return None
        if result.ok and result.result is not None:
            return result.result
        reason = result.error or f"node {node}: no answer"
        if result.error_kind == "rbac":
            ns = self.ctx.namespace
            self.missing.append(
                Missing(
                    what,
                    reason,
                    permission=f"create pods/exec in namespace {ns}",
                    check=f"kubectl auth can-i create pods --subresource=exec -n {ns}",
                    grant=EXEC_ROLE,
                )
            )
        else:
            self.missing.append(Missing(what, reason))
        return None


async def _reader(ctx: BrokerContext) -> ClusterReader:
    return ClusterReader(await ctx.api())


# -- explain_failure -------------------------------------------------------------------


async def find_pod(reader: ClusterReader, pod: str, namespace: str | None) -> Obj:
    """The pod, by name in ``namespace`` or, when None, in whichever namespace has it.
    Raises NotFound, RbacDenied, ApiUnavailable, or BrokerError when ambiguous."""
    if namespace:
        return await reader.pod(namespace, pod)
    found = await reader.pods(None, field_selector=f"metadata.name={pod}")
    if not found:
        raise NotFound(
            f"no pod named {clip(pod)!r} in any namespace; list them with `kubectl get pods -A`"
        )
    if len(found) > 1:
        spaces = ", ".join(sorted(str((p.get("metadata") or {}).get("namespace")) for p in found))
        raise BrokerError(
            f"pod {clip(pod)!r} exists in several namespaces ({spaces}): give namespace"
        )
    return found[0]


async def explain_pod(
    ctx: BrokerContext,
    pod: str,
    namespace: str | None = None,
    *,
    now: float | None = None,
    window_before_s: float = WINDOW_BEFORE_S,
    window_after_s: float = WINDOW_AFTER_S,
) -> Obj:
    """Why ``pod`` failed: the explain_failure answer (see :mod:`broker.diagnosis.explain`)."""
    if not pod or not pod.strip():
        raise BrokerError("give the pod's name (and its namespace)")
    reader = await _reader(ctx)
    gather = _Gather(ctx)
    where = f"{namespace}/{pod}" if namespace else pod
    try:
        doc: Obj | None = await find_pod(reader, pod, namespace)
    except (NotFound, ApiUnavailable, Unauthenticated):
        raise  # no pod, or no cluster to ask: an error, not a partial answer
    except BrokerError as exc:
        if type(exc) is BrokerError:  # ambiguous name: input error
            raise
        gather.missing.append(missing_from(exc, f"pod {where}"))
        doc = None
    ns = namespace or "default"
    if doc is not None:
        ns = str((doc.get("metadata") or {}).get("namespace") or ns)
    facts = Facts(
        namespace=ns,
        name=pod,
        pod=doc,
        agent_namespace=ctx.namespace,
        window_before_s=window_before_s,
        window_after_s=window_after_s,
    )
    if now is not None:
        facts.now = now
    if doc is None:
        facts.missing = gather.missing
        return explain(facts)

    pod_doc: Obj = doc
    node = (doc.get("spec") or {}).get("nodeName")
    failure = find_failure(doc)
    uses_gpu = any(is_gpu_resource(r) for r in pod_requests(doc))
    # XIDs from the container's start (or window_before_s before its exit when the start
    # is unknown), and at least a day back: the XID that left a GPU lost or waiting for a
    # reset explains later failures however old it is (the agent reads its log anyway).
    anchor = failure.started or (
        failure.finished - window_before_s if failure.finished is not None else facts.now
    )
    since = max(MIN_SINCE_MINUTES, (facts.now - anchor + window_before_s) / 60.0)
    since = min(since, MAX_SINCE_MINUTES)

    async def events() -> None:
        facts.events = await gather.read(
            f"events of pod {ns}/{pod}", lambda: reader.pod_events(pod_doc)
        )

    async def node_doc(name: str) -> None:
        facts.node = await gather.read(f"node {name}", lambda: reader.node(name))

    async def agent(name: str, tool: str, arguments: Obj, what: str, key: str) -> None:
        setattr(facts, key, await gather.agent(name, tool, arguments, f"{what} of node {name}"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(events)
        if node:
            tg.start_soon(node_doc, str(node))
        if node and uses_gpu:
            args = {"since_minutes": round(since, 3)}
            tg.start_soon(agent, str(node), "analyze_xid_errors", args, "XIDs", "xids")
            tg.start_soon(agent, str(node), "get_gpu_health", {}, "GPU health", "health")
            tg.start_soon(agent, str(node), "get_gpu_inventory", {}, "GPU inventory", "inventory")
            if holds_devices(doc):
                tg.start_soon(
                    agent, str(node), "get_gpu_processes", {}, "GPU processes", "processes"
                )
    facts.missing = _dedupe(gather.missing)
    return explain(facts)


# -- describe_gpu_node -----------------------------------------------------------------


async def describe_gpu_node(ctx: BrokerContext, node: str) -> Obj:
    """The describe_gpu_node answer for ``node``. Raises NotFound for an unknown node."""
    if not node or not node.strip():
        raise BrokerError("give the node's name (see list_gpu_nodes or `kubectl get nodes`)")
    reader = await _reader(ctx)
    gather = _Gather(ctx)
    try:
        node_doc: Obj | None = await reader.node(node)
    except NotFound:
        raise
    except BrokerError as exc:
        gather.missing.append(missing_from(exc, f"node {node}"))
        node_doc = None
    out: Obj = {}
    target: NodeTarget | None = None

    async def pods() -> None:
        out["pods"] = await gather.read(
            f"pods on node {node} (all namespaces)",
            lambda: reader.pods(None, field_selector=f"spec.nodeName={node}"),
        )

    async def events() -> None:
        out["events"] = await gather.read(
            f"events of node {node}", lambda: reader.node_events(node)
        )

    async def targets() -> None:
        nonlocal target
        found = await gather.read("agent pods", ctx.targets)
        target = next((t for t in found or [] if t.node == node), None)

    async def agent(key: str, tool: str, what: str) -> None:
        out[key] = await gather.agent(node, tool, {}, what)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pods)
        tg.start_soon(events)
        tg.start_soon(targets)
        tg.start_soon(agent, "inventory", "get_gpu_inventory", f"GPU inventory of node {node}")
        tg.start_soon(agent, "health", "get_gpu_health", f"GPU health of node {node}")
        tg.start_soon(agent, "processes", "get_gpu_processes", f"GPU processes of node {node}")
    return describe_node(
        node,
        node_doc,
        out.get("pods"),
        out.get("events"),
        target,
        out.get("inventory"),
        out.get("health"),
        out.get("processes"),
        _dedupe(gather.missing),
    )


def _dedupe(missing: list[Missing]) -> list[Missing]:
    """One entry per problem: a node whose agent is unreachable fails every tool, which
    is one missing piece ("GPU inventory, GPU health of node X"), not three."""
    merged: dict[tuple[str, str | None], Missing] = {}
    for m in missing:
        key = (m.reason, m.permission)
        seen = merged.get(key)
        if seen is None:
            merged[key] = m
            continue
        merged[key] = Missing(
            _join_whats(seen.what, m.what), seen.reason, seen.permission, seen.check, seen.grant
        )
    return list(merged.values())


def _join_whats(a: str, b: str) -> str:
    """ "XIDs of node n" + "GPU health of node n" -> "XIDs, GPU health of node n"."""
    head_a, sep_a, tail_a = a.rpartition(" of ")
    head_b, sep_b, tail_b = b.rpartition(" of ")
    if sep_a and sep_b and tail_a == tail_b:
        return f"{head_a}, {head_b} of {tail_a}"
    return f"{a}; {b}"


# -- get_pod_gpu_allocation ---------------------------------------------------------------


async def pod_gpu_allocation(
    ctx: BrokerContext,
    *,
    node: str | None = None,
    namespace: str | None = None,
    pod: str | None = None,
) -> Obj:
    """Which pods request or hold GPUs (scope: a node, a namespace, a pod, or the cluster),
    how many, in which containers, and which devices where that can be known."""
    reader = await _reader(ctx)
    gather = _Gather(ctx)
    scope = {"node": node, "namespace": namespace, "pod": pod}
    # Pods in scope (complete for a node or the cluster: then node totals are exact).
    pods: list[Obj] | None
    if pod:
        try:
            pods = [await find_pod(reader, pod, namespace)]
        except NotFound:
            raise
        except BrokerError as exc:
            if type(exc) is BrokerError:
                raise
            gather.missing.append(missing_from(exc, f"pod {namespace or '?'}/{pod}"))
            pods = None
    else:
        selector = f"spec.nodeName={node}" if node else None
        what = "pods" + (f" in namespace {namespace}" if namespace else " in every namespace")
        if node:
            what += f" on node {node}"
        pods = await gather.read(
            what, lambda: reader.pods(namespace or None, field_selector=selector)
        )
    gpu_pods = [p for p in pods or [] if pod_requests(p)]
    if node and pod:
        gpu_pods = [p for p in gpu_pods if (p.get("spec") or {}).get("nodeName") == node]

    # Nodes: the one in scope, or every node the pods are on.
    wanted = (
        {node}
        if node
        else {str(p["spec"]["nodeName"]) for p in gpu_pods if (p.get("spec") or {}).get("nodeName")}
    )
    nodes: dict[str, Obj] = {}
    if node:
        try:
            nodes[node] = await reader.node(node)
        except NotFound:
            raise
        except BrokerError as exc:
            gather.missing.append(missing_from(exc, f"node {node}"))
    elif wanted:
        listed = await gather.read("nodes", reader.nodes)
        nodes = {
            str(n["metadata"]["name"]): n
            for n in listed or []
            if str((n.get("metadata") or {}).get("name")) in wanted
        }

    # The agents of nodes where pods hold GPUs: which process (pod) uses which GPU.
    holding_nodes = sorted({str(p["spec"]["nodeName"]) for p in gpu_pods if holds_devices(p)})
    processes: dict[str, Obj] = {}
    inventories: dict[str, Obj] = {}
    known = {t.node for t in (await gather.read("agent pods", ctx.targets)) or []}
    asked = [n for n in holding_nodes if n in known][:MAX_AGENT_NODES]
    if len(holding_nodes) > len(asked):
        skipped = [n for n in holding_nodes if n not in asked]
        gather.missing.append(
            Missing(
                f"GPU device ids on {len(skipped)} node(s)",
                "not asked: "
                + (
                    "no agent known there"
                    if all(n not in known for n in skipped)
                    else "too many nodes"
                )
                + f" ({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})",
            )
        )

    async def ask(n: str) -> None:
        proc = await gather.agent(n, "get_gpu_processes", {}, f"GPU processes of node {n}")
        if proc is not None:
            processes[n] = proc
        inv = await gather.agent(n, "get_gpu_inventory", {}, f"GPU inventory of node {n}")
        if inv is not None:
            inventories[n] = inv

    async with anyio.create_task_group() as tg:
        for n in asked:
            tg.start_soon(ask, n)

    rows = []
    for p in gpu_pods:
        summary = pod_summary(p)
        where = summary["node"]
        summary["gpus"] = gpu_assignment(
            p,
            nodes.get(where) if where else None,
            processes=processes.get(where) if where else None,
            inventory=inventories.get(where) if where else None,
        )
        rows.append(summary)
    rows.sort(key=lambda r: (r["node"] or "~", r["namespace"] or "", r["name"] or ""))

    complete = pods is not None and not namespace and not pod  # every pod of the node(s)
    node_rows = [
        {"node": name, "resources": node_resources(doc, pods if complete else None)}
        for name, doc in sorted(nodes.items())
    ]
    held: dict[str, int] = {}
    for r in rows:
        if r["state"] == "holding":
            for res, n in r["requests"].items():
                held[res] = held.get(res, 0) + n
    mapping = {
        n: bool(((processes.get(n) or {}).get("pod_mapping") or {}).get("enabled")) for n in asked
    }
    return {
        "scope": scope,
        "summary": {
            "pods": len(rows),
            "holding": sum(1 for r in rows if r["state"] == "holding"),
            "waiting": sum(1 for r in rows if r["state"] == "waiting"),
            "released": sum(1 for r in rows if r["state"] == "released"),
            "gpus_held": held,
            "device_ids_known": sum(1 for r in rows if r["gpus"]["known"]),
        },
        "pods": rows,
        "nodes": node_rows,
        "pod_mapping": mapping,
        "missing": [m.as_dict() for m in _dedupe(gather.missing)],
        "partial": bool(gather.missing),
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


__all__ = [
    "describe_gpu_node",
    "explain_pod",
    "find_pod",
    "pod_gpu_allocation",
]
