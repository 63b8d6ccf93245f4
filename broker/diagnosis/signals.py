"""What the cluster already knows about a pod's node and its disruption: node conditions
and taints set by NVIDIA NVSentinel, node-problem-detector or the GPU Operator's health
checks, the kubelet's pressure conditions, Ready and since when, and the pod's
``DisruptionTarget`` condition. Pure functions over node and pod JSON."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.diagnosis.pod_status import parse_time
from broker.kube.names import GPU_RESOURCE

Obj = dict[str, Any]

# Conditions every kubelet sets; "True" is a problem for the pressure ones only.
_KUBELET_CONDITIONS = {"Ready", "NetworkUnavailable"}
_PRESSURE = {"MemoryPressure", "DiskPressure", "PIDPressure"}
# Words that tie a condition, taint or annotation to the GPUs.
_GPU_WORDS = re.compile(r"gpu|xid|nvlink|nvswitch|ecc|pcie|dcgm|nvidia|fabric", re.I)
# Taints that mean "unhealthy", as opposed to nvidia.com/gpu=present (GPU-only pool).
_HEALTH_TAINT = re.compile(r"health|unhealthy|nvsentinel|quarantin|fault|xid|unreachable", re.I)
_NVSENTINEL_ANNOTATION = "quarantineHealthEvent"


@dataclass(frozen=True)
class NodeSignal:
    """One thing the node's object says is wrong."""

    kind: str  # condition | pressure | taint | annotation | withdrawn | not_ready
    text: str
    gpu: bool  # about the GPUs (NVSentinel, NPD GPU checks, GPU Operator)
    since: float | None = None


def node_ready(node: Mapping[str, Any] | None) -> tuple[bool | None, float | None]:
    """(Ready, since when) from the node's Ready condition; (None, None) when unknown."""
    for cond in ((node or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True", parse_time(cond.get("lastTransitionTime"))
    return None, None


def node_signals(node: Mapping[str, Any] | None) -> list[NodeSignal]:
    """Everything the node object reports as wrong, GPU-related first."""
    if not node:
        return []
    spec, status = node.get("spec") or {}, node.get("status") or {}
    meta = node.get("metadata") or {}
    out: list[NodeSignal] = []
    ready, since = node_ready(node)
    if ready is False:
        out.append(
            NodeSignal(
                "not_ready", "node is NotReady (the kubelet stopped reporting)", False, since
            )
        )
    for cond in status.get("conditions") or []:
        kind = str(cond.get("type") or "")
        if kind in _KUBELET_CONDITIONS or cond.get("status") != "True":
            continue
        words = f"{kind} {cond.get('reason') or ''} {cond.get('message') or ''}"
        reason = cond.get("reason") or "no reason"
        text = f"condition {kind}=True ({reason}): {cond.get('message') or ''}"
        out.append(
            NodeSignal(
                "pressure" if kind in _PRESSURE else "condition",
                text.rstrip(": "),
                kind not in _PRESSURE and bool(_GPU_WORDS.search(words)),
                parse_time(cond.get("lastTransitionTime")),
            )
        )
    for t in spec.get("taints") or []:
        key = str(t.get("key") or "")
        value = str(t.get("value") or "")
        if key == GPU_RESOURCE or not _HEALTH_TAINT.search(f"{key} {value}"):
            continue
        out.append(
            NodeSignal(
                "taint",
                f"taint {key}={value}:{t.get('effect')}",
                bool(_GPU_WORDS.search(key)),
                parse_time(t.get("timeAdded")),
            )
        )
    event = (meta.get("annotations") or {}).get(_NVSENTINEL_ANNOTATION)
    if event:
        out.append(
            NodeSignal("annotation", f"NVSentinel quarantine health event: {event[:300]}", True)
        )
    cap = (status.get("capacity") or {}).get(GPU_RESOURCE)
    able = (status.get("allocatable") or {}).get(GPU_RESOURCE)
    if cap is not None and able is not None and str(cap) != str(able):
        out.append(
            NodeSignal(
                "withdrawn",
                f"nvidia.com/gpu allocatable {able} of capacity {cap}: the device plugin withdrew "
                "unhealthy GPU(s)",
                True,
            )
        )
    out.sort(key=lambda s: not s.gpu)
    return out


def disruption(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of a ``DisruptionTarget=True`` pod condition: the control plane
    (preemption, taint manager, eviction API, node shutdown, PodGC) is ending the pod."""
    for cond in ((pod.get("status") or {}).get("conditions")) or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return str(cond.get("reason") or "DisruptionTarget"), str(cond.get("message") or "")
    return None


# What each DisruptionTarget reason means, in words.
DISRUPTION_REASONS = {
    "PreemptionByScheduler": "preempted by the scheduler for a higher-priority pod",
    "PreemptionByKubeScheduler": "preempted by the scheduler for a higher-priority pod",
    "DeletionByTaintManager": "deleted by the taint manager (a NoExecute taint on its node)",
    "EvictionByEvictionAPI": "evicted through the Eviction API (a drain or an autoscaler)",
    "DeletionByPodGC": "deleted by the pod garbage collector (its node is gone)",
    "TerminationByKubelet": "terminated by the kubelet (node pressure or graceful node shutdown)",
}
