"""One GPU node as Kubernetes and its agent see it, with a one-line verdict (pure).

Joins the Node object (NVIDIA GPU feature-discovery labels, capacity/allocatable GPU
resources, conditions, taints, cordon), the pods holding GPUs there, the agent pod's
state, and the agent's inventory and health answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.catalog import worst as worst_status
from broker.diagnosis.allocation import gpu_assignment, holds_devices, node_resources, pod_summary
from broker.kube.discovery import NodeTarget
from broker.kube.names import COUNT_LABEL, GPU_RESOURCE, PRODUCT_LABEL
from broker.kube.reader import Missing

Obj = dict[str, Any]

# Taints that GPU health tooling sets (NVIDIA's health checks, NVSentinel, node-problem-
# detector set-ups, the sim): any nvidia.com/* taint other than the plain "GPU here" one.
_PRESENT_TAINT = "nvidia.com/gpu"
_GFD_KEYS = {
    "product": PRODUCT_LABEL,
    "count": COUNT_LABEL,
    "memory_mib": "nvidia.com/gpu.memory",
    "family": "nvidia.com/gpu.family",
    "driver_version": "nvidia.com/cuda.driver-version.full",
    "cuda_runtime_version": "nvidia.com/cuda.runtime-version.full",
    "mig_strategy": "nvidia.com/mig.strategy",
    "sharing_strategy": "nvidia.com/gpu.sharing-strategy",
}


def gpu_labels(labels: Mapping[str, str]) -> Obj:
    """The GPU feature-discovery facts, from the node's ``nvidia.com/*`` labels."""
    out: Obj = {key: labels.get(label) for key, label in _GFD_KEYS.items()}
    if out["driver_version"] is None and labels.get("nvidia.com/cuda.driver.major"):
        out["driver_version"] = ".".join(
            labels.get(f"nvidia.com/cuda.driver.{k}", "") for k in ("major", "minor", "rev")
        ).strip(".")
    if out["cuda_runtime_version"] is None and labels.get("nvidia.com/cuda.runtime.major"):
        out["cuda_runtime_version"] = (
            f"{labels['nvidia.com/cuda.runtime.major']}."
            f"{labels.get('nvidia.com/cuda.runtime.minor', '0')}"
        )
    major, minor = (
        labels.get("nvidia.com/gpu.compute.major"),
        labels.get("nvidia.com/gpu.compute.minor"),
    )
    out["compute_capability"] = f"{major}.{minor}" if major and minor else None
    mig = {
        key[len("nvidia.com/mig-") : -len(".count")]: value
        for key, value in labels.items()
        if key.startswith("nvidia.com/mig-") and key.endswith(".count")
    }
    out["mig_devices"] = {k: int(v) for k, v in mig.items() if str(v).isdigit()}
    return out


def is_health_taint(taint: Mapping[str, Any]) -> bool:
    key = str(taint.get("key") or "")
    return ("health" in key) or (key.startswith("nvidia.com/") and key != _PRESENT_TAINT)


def describe_node(
    node_name: str,
    node: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]] | None,
    events: Sequence[Mapping[str, Any]] | None,
    target: NodeTarget | None,
    inventory: Mapping[str, Any] | None,
    health: Mapping[str, Any] | None,
    processes: Mapping[str, Any] | None,
    missing: Sequence[Missing],
) -> Obj:
    """The describe_gpu_node answer (any input may be None = could not be read)."""
    meta = (node or {}).get("metadata") or {}
    spec = (node or {}).get("spec") or {}
    status = (node or {}).get("status") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    conditions = [
        {
            "type": c.get("type"),
            "status": c.get("status"),
            "reason": c.get("reason"),
            "message": c.get("message"),
        }
        for c in status.get("conditions") or []
    ]
    ready = next((c["status"] == "True" for c in conditions if c["type"] == "Ready"), None)
    taints = [
        {
            "key": t.get("key"),
            "value": t.get("value"),
            "effect": t.get("effect"),
            "gpu_health": is_health_taint(t),
        }
        for t in spec.get("taints") or []
    ]
    gpu_pods = [
        p
        for p in pods or []
        if holds_devices(p) and any(k.startswith("nvidia.com/") for k in pod_summary(p)["requests"])
    ]
    resources = node_resources(node, pods) if node else {}
    holders = []
    for p in gpu_pods:
        summary = pod_summary(p)
        summary["gpus"] = gpu_assignment(p, node, processes=processes, inventory=inventory)
        holders.append(summary)

    agent: Obj = {
        "pod": target.pod if target else None,
        "namespace": target.namespace if target else None,
        "ready": target.ready if target else False,
        "reason": None
        if target and target.ready
        else (target.reason if target else "not a GPU node known to discovery"),
    }
    inv: Obj | None = None
    if inventory is not None:
        inv = {
            "driver": inventory.get("driver"),
            "gpus": [
                {
                    "index": g.get("index"),
                    "name": g.get("name"),
                    "uuid": g.get("uuid"),
                    "pci_bus_id": g.get("pci_bus_id"),
                    "memory_total_mib": g.get("memory_total_mib"),
                    "mig_mode": g.get("mig_mode_current"),
                    "mig_instances": len(g.get("mig_instances") or []),
                    "lost": g.get("lost", False),
                }
                for g in inventory.get("gpus") or []
            ],
        }
    hv: Obj | None = None
    if health is not None:
        hv = {
            "status": health.get("status"),
            "summary": health.get("summary"),
            "issues": list(health.get("issues") or []),
            "gpus": [
                {
                    "index": g.get("index"),
                    "uuid": g.get("uuid"),
                    "status": g.get("status"),
                    "issues": list(g.get("issues") or []),
                }
                for g in health.get("gpus") or []
            ],
            "xid_log": health.get("xid_log"),
        }
    recent = [
        {
            "type": e.get("type"),
            "reason": e.get("reason"),
            "message": e.get("message"),
            "count": e.get("count") or 1,
            "last_seen": e.get("lastTimestamp") or e.get("eventTime"),
        }
        for e in (events or [])[-20:]
    ]
    status_word, line = _verdict(
        node_name, ready, spec, resources, taints, agent, health, holders, node is not None
    )
    return {
        "node": node_name,
        "status": status_word,
        "verdict": line,
        "gpu": gpu_labels(labels) if node else None,
        "nvidia_labels": {k: v for k, v in sorted(labels.items()) if k.startswith("nvidia.com/")},
        "resources": resources,
        "ready": ready,
        "schedulable": None if node is None else not spec.get("unschedulable", False),
        "conditions": conditions,
        "taints": taints,
        "pods": holders if pods is not None else None,
        "agent": agent,
        "inventory": inv,
        "health": hv,
        "events": recent if events is not None else None,
        "missing": [m.as_dict() for m in missing],
        "partial": bool(missing),
    }


def _verdict(
    name: str,
    ready: bool | None,
    spec: Mapping[str, Any],
    resources: Mapping[str, Any],
    taints: Sequence[Mapping[str, Any]],
    agent: Mapping[str, Any],
    health: Mapping[str, Any] | None,
    holders: Sequence[Mapping[str, Any]],
    have_node: bool,
) -> tuple[str, str]:
    """(status, one line): the agent's GPU status joined with what Kubernetes says."""
    status = str(health.get("status")) if health else "unknown"
    parts: list[str] = []
    if health:
        worst = [g for g in health.get("gpus") or [] if g.get("status") == health.get("status")]
        if health.get("status") != "healthy" and worst:
            g = worst[0]
            issue = next(
                (i for i in g.get("issues") or [] if i.get("severity") == g.get("status")),
                (g.get("issues") or [{}])[0],
            )
            head = str(issue.get("message") or "").split(": ")[0].split(". ")[0]
            more = f" (+{len(worst) - 1} more GPU(s))" if len(worst) > 1 else ""
            label = "" if f"GPU {g.get('index')}" in head else f"GPU {g.get('index')}: "
            parts.append(f"{label}{head}{more}")
        elif health.get("status") == "healthy":
            parts.append(str(health.get("summary")))
    else:
        parts.append(f"GPU health unknown ({agent.get('reason') or 'agent not reachable'})")
    if ready is False:
        status = worst_status(status if status != "unknown" else "healthy", "critical")
        parts.append("node NotReady")
    if spec.get("unschedulable"):
        parts.append("cordoned")
    for t in taints:
        if t["gpu_health"]:
            parts.append(f"tainted {t['key']}={t.get('value') or ''}:{t['effect']}")
    gpu = resources.get(GPU_RESOURCE) or {}
    if gpu.get("withdrawn"):
        parts.append(
            f"{gpu['withdrawn']} GPU(s) withdrawn by the device plugin "
            f"(allocatable {gpu['allocatable']} of {gpu['capacity']})"
        )
    if gpu and gpu.get("allocated") is not None:
        parts.append(
            f"{gpu['allocated']}/{gpu['allocatable']} GPUs allocated to {len(holders)} pod(s)"
        )
    if not agent.get("ready") and health is None and agent.get("pod"):
        parts.append("agent pod not ready")
    if not have_node:
        parts.append("Node object unreadable")
    return status, f"{name}: {status.upper()} — " + "; ".join(p for p in parts if p)
