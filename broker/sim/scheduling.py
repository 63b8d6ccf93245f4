"""The scheduler's view of a scenario: what each node has free, why a Pending pod fits
nowhere (the FailedScheduling message, built as kube-scheduler builds it), and the
consistency check that refuses a scenario whose pods and nodes contradict each other.

Filters run in kube-scheduler's order and the first that fails names the node's
reason: NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector), then
NodeResourcesFit (every resource short, as separate reasons).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .errors import SimScenarioError
from .objects import gpu_resources, node_labels
from .products import product
from .scenario import NodeSpec, Scenario, WorkloadSpec

_HOLDS = ("Pending", "Running")  # phases whose pods keep their resources
_UNRESOLVABLE = "Preemption is not helpful for scheduling"
_NO_VICTIMS = "No preemption victims found for incoming pod"
# The workload pods' tolerations (objects.workload_pod): NoSchedule only for this key.
_TOLERATED = {("nvidia.com/gpu", "NoSchedule")}
_AGENT_REQUEST = {"cpu": 1, "memory": 16 * 1024**2}  # the chart's agent container


def cpu_milli(q: str) -> int:
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def memory_bytes(q: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
             "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}  # fmt: skip
    for suffix in sorted(units, key=len, reverse=True):
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * units[suffix])
    return int(float(q))


def allocatable(spec: NodeSpec) -> dict[str, int]:
    """What the kubelet offers: cpu (milli), memory (bytes), pods, GPU resources."""
    cpus, mem_gib = (product(spec.product).cpus, product(spec.product).memory_gib) if spec.gpu \
        else (16, 64)  # fmt: skip
    out = {"cpu": cpus * 1000 - 190, "memory": mem_gib * 1024**3 - 1882112 * 1024, "pods": 110}
    _, alloc = gpu_resources(spec)
    out.update({k: int(v) for k, v in alloc.items()})
    return out


def requests(w: WorkloadSpec) -> dict[str, int]:
    out = {"cpu": cpu_milli(w.cpu), "memory": memory_bytes(w.memory), "pods": 1}
    if w.gpus:
        out[w.gpu_resource] = w.gpus
    return out


def _used(specs: Sequence[NodeSpec], workloads: Sequence[WorkloadSpec]) -> dict[str, Counter[str]]:
    used: dict[str, Counter[str]] = {}
    for s in specs:
        c: Counter[str] = Counter()
        if s.gpu and s.agent_pod != "missing":
            c.update(_AGENT_REQUEST)
            c["pods"] += 2  # the agent and the device plugin
        used[s.name] = c
    for w in workloads:
        if w.node is not None and w.phase in _HOLDS:
            used[w.node].update(requests(w))
    return used


def _reasons(w: WorkloadSpec, node: NodeSpec, index: int, used: Counter[str]) -> list[str]:
    """Why *w* does not fit on *node* (empty: it fits)."""
    if node.unschedulable:
        return ["node(s) were unschedulable"]
    taints = [dict(t) for t in node.taints]
    if not node.ready:
        taints.append({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"})
    for t in taints:
        if t.get("effect") in ("NoSchedule", "NoExecute") and (
            (t["key"], t.get("effect")) not in _TOLERATED
        ):
            return [f"node(s) had untolerated taint {{{t['key']}: {t.get('value', '')}}}"]
    if w.node_selector:
        labels = node_labels(node, index)
        if any(labels.get(k) != v for k, v in w.node_selector.items()):
            return ["node(s) didn't match Pod's node affinity/selector"]
    have = allocatable(node)
    short = [
        f"Insufficient {res}"
        for res, want in requests(w).items()
        if res != "pods" and have.get(res, 0) - used.get(res, 0) < want
    ]
    if have["pods"] - used.get("pods", 0) < 1:
        short.append("Too many pods")
    return sorted(short)


def unschedulable_message(w: WorkloadSpec, specs: Sequence[NodeSpec],
                          used: dict[str, Counter[str]]) -> str | None:  # fmt: skip
    """kube-scheduler's FitError text for *w*, or None when some node fits it."""
    filters: Counter[str] = Counter()
    preemption: Counter[str] = Counter()
    for index, node in enumerate(specs):
        reasons = _reasons(w, node, index, used[node.name])
        if not reasons:
            return None
        filters.update(reasons)
        resolvable = all(r.startswith(("Insufficient", "Too many")) for r in reasons)
        preemption[_NO_VICTIMS if resolvable else _UNRESOLVABLE] += 1
    n = len(specs)

    def hist(c: Counter[str]) -> str:
        return ", ".join(sorted(f"{count} {reason}" for reason, count in c.items()))

    return (
        f"0/{n} nodes are available: {hist(filters)}. preemption: 0/{n} nodes are available: "
        f"{hist(preemption)}."
    )


def plan(sc: Scenario, specs: Sequence[NodeSpec]) -> dict[tuple[str, str], str]:
    """Check that *sc*'s workloads and *specs* (named and generated nodes) agree, and
    return the FailedScheduling message of each Pending, unplaced workload.

    Raises SimScenarioError naming the workload key when a node holds more than it has,
    a placed pod's nodeSelector does not match its node, or an unplaced Pending pod
    would fit on some node.
    """
    by_name = {s.name: (i, s) for i, s in enumerate(specs)}
    named = {n.name for n in sc.nodes}
    used = _used(specs, sc.workloads)
    running: dict[str, Counter[str]] = {}  # GPUs held so far, to name the pod that overflows
    for i, w in enumerate(sc.workloads):
        if w.node is None:
            continue
        index, node = by_name[w.node]
        if w.node_selector:
            labels = node_labels(node, index)
            bad = [k for k, v in w.node_selector.items() if labels.get(k) != v]
            if bad:
                raise SimScenarioError(
                    f"workloads[{i}].node_selector: {w.node} does not carry {bad[0]}="
                    f"{w.node_selector[bad[0]]}; the scheduler could not have placed it there"
                )
        if w.phase not in _HOLDS or not w.gpus:
            continue
        held = running.setdefault(w.node, Counter())
        held[w.gpu_resource] += w.gpus
        cap, _ = gpu_resources(node)
        limit = int(cap.get(w.gpu_resource, 0))
        if held[w.gpu_resource] > limit:
            raise SimScenarioError(
                f"workloads[{i}].gpus: {w.node} would have {held[w.gpu_resource]} "
                f"{w.gpu_resource} allocated but has {limit}; lower gpus, or put the pod on "
                "another node"
            )
    messages: dict[tuple[str, str], str] = {}
    for i, w in enumerate(sc.workloads):
        if w.node is not None or w.phase != "Pending":
            continue
        message = unschedulable_message(w, specs, used)
        if message is None:
            fits = next(s for i, s in enumerate(specs) if not _reasons(w, s, i, used[s.name]))
            origin = "" if fits.name in named else " (generated from `defaults` for --nodes)"
            raise SimScenarioError(
                f"workloads[{i}]: Pending with no node, but {fits.name}{origin} has room for "
                f"it, so a scheduler would have placed it; give it a node_selector no free "
                "node matches, more gpus, or a node"
            )
        messages[(w.namespace, w.name)] = message
    return messages
