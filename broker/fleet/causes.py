"""Say a shared failure once: nodes that failed for the same reason (no agent pods, RBAC
denied, timeouts), grouped, counted, with the one thing to do about it.

A fan-out answer already groups its failed nodes by reason (``summary.unreachable``,
broker.fleet.aggregate): each group gets its ``fix``. A node listing gets ``causes`` (the
not-ready nodes grouped the same way, with the fix). Reasons are compared with node and
pod names taken out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

__all__ = [
    "CAUSES_SCHEMA",
    "SAMPLE_NODES",
    "cause_key",
    "common_causes",
    "names_out",
    "nodes_with_causes",
    "with_causes",
]

Json = dict[str, Any]
Surface = Literal["cli", "mcp"]
SAMPLE_NODES = 10  # node names shown per cause; the count says how many there are

_POD = re.compile(r"\b(agent pod |pod=)[a-z0-9][a-z0-9.]*-[a-z0-9.-]+")
_POD_UID = re.compile(r"pod=[\w.-]+_[\w.-]+\([0-9a-f-]+\)")
_SECONDS = re.compile(r"\b\d+(\.\d+)? s\b")

CAUSES_SCHEMA: Json = {
    "type": "array",
    "description": "Failures shared by several nodes, said once: count, nodes, what to do",
    "items": {
        "type": "object",
        "properties": {
            "kind": {"type": "string"},
            "count": {"type": "integer"},
            "nodes": {"type": "array", "items": {"type": "string"}},
            "reason": {"type": "string"},
            "fix": {"type": "string"},
        },
        "required": ["kind", "count", "nodes", "reason", "fix"],
    },
}


def names_out(node: str, reason: str) -> str:
    """``reason`` with the node's and its agent pod's names replaced by <node> and <pod>."""
    text = re.sub(rf"(?<![\w.-]){re.escape(node)}(?![\w.-])", "<node>", reason)
    text = _POD_UID.sub("pod=<pod>", text)
    return _POD.sub(lambda m: f"{m.group(1)}<pod>", text)


def cause_key(node: str, kind: str, reason: str) -> tuple[str, str]:
    """(kind, reason without the node's or pod's name): equal for the same cause."""
    text = names_out(node, reason.replace(f"node {node}: ", ""))
    return kind, _SECONDS.sub("N s", text)


def common_causes(
    failures: Iterable[Mapping[str, Any]],
    *,
    total: int,
    namespace: str,
    surface: Surface = "mcp",
) -> list[Json]:
    """Failed nodes (``{"node", "kind", "reason"}``) grouped by cause, largest first, each
    with a count, up to SAMPLE_NODES names and the fix. ``total``: how many nodes were
    asked (all of them failing the same way is a setup problem, not a node problem)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for f in failures:
        key = cause_key(str(f["node"]), str(f.get("kind") or "unreachable"), str(f["reason"]))
        groups.setdefault(key, []).append(f)
    causes: list[Json] = []
    for (kind, reason), members in groups.items():
        nodes = sorted(str(m["node"]) for m in members)
        example = str(members[0]["reason"])
        causes.append(
            {
                "kind": kind,
                "count": len(nodes),
                "nodes": nodes[:SAMPLE_NODES],
                "reason": example if len(nodes) == 1 else reason,
                "fix": _fix(kind, reason, len(nodes), total, namespace, surface),
            }
        )
    causes.sort(key=lambda c: (-int(c["count"]), str(c["kind"])))
    return causes


def _fix(kind: str, reason: str, count: int, total: int, namespace: str, surface: Surface) -> str:
    doctor = "call check_setup" if surface == "mcp" else "run `broker doctor`"
    everyone = count == total and total > 1
    if kind == "not_ready" and reason.startswith("no agent pod"):
        if everyone:
            return (
                f"no agent pods at all: is the chart installed, and in namespace {namespace} "
                f"(is -n right)? {doctor} to find out"
            )
        return (
            "the agent DaemonSet does not run on these nodes: compare its nodeSelector and "
            f"tolerations with theirs (kubectl -n {namespace} get daemonset -o wide)"
        )
    if kind == "not_ready":
        return (
            f"the agent pods are not ready: `kubectl -n {namespace} describe pod <pod>` shows "
            f"why (events at the end); {doctor} to check the whole setup"
        )
    if kind == "rbac":
        return (
            f"your credentials may not exec into the agent pods in namespace {namespace}: "
            f"have a cluster admin add you to the chart value rbac.subjects; {doctor}"
        )
    if kind == "timeout":
        return (
            "no answer in time: a slow or overloaded API server, or agents stuck in the "
            "driver; retry (hung sessions are re-opened) or allow more time"
        )
    if everyone:
        return f"every node failed the same way: a setup problem, not a GPU problem; {doctor}"
    return "see the reason; retry once, then look at these nodes' agent pods"


def with_causes(answer: Json, *, namespace: str, surface: Surface = "mcp") -> Json:
    """A fan-out answer (``broker.fleet.aggregate``) whose ``summary.unreachable`` groups
    (nodes that failed for the same reason) each get the one thing to do about it: ``fix``."""
    summary = answer.get("summary") or {}
    groups = summary.get("unreachable") or []
    total = int((summary.get("nodes") or {}).get("total") or 0)
    total = total or sum(int(g.get("count") or 1) for g in groups)
    for group in groups:
        kind, reason = str(group.get("kind") or "unreachable"), str(group.get("reason") or "")
        count = int(group.get("count") or 1)
        reason = reason.removeprefix("node <node>: ")  # as the aggregate shows it
        group["fix"] = _fix(kind, reason, count, total, namespace, surface)
    return answer


def nodes_with_causes(
    answer: Json,
    targets: Iterable[Any],
    *,
    namespace: str,
    surface: Surface = "mcp",
) -> Json:
    """A node listing (``list_gpu_nodes``) with ``causes`` for the nodes that are not ready,
    counted over every target (the listing itself may show only some of them)."""
    targets = list(targets)
    failures = [
        {"node": t.node, "kind": "not_ready", "reason": t.reason or "not ready"}
        for t in targets
        if not t.ready
    ]
    if failures:
        answer["causes"] = common_causes(
            failures, total=len(targets), namespace=namespace, surface=surface
        )
    return answer
