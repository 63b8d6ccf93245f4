"""Server-side printing: the meta.k8s.io/v1 Table kubectl asks for (``as=Table``).

Columns and cell logic follow the API server's printers for nodes, pods, events and
namespaces, so ``kubectl get`` prints the columns (and ``-o wide`` extras) users know.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def parse_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _since(stamp: str | None, now: float) -> str:
    t = parse_time(stamp)
    return "<unknown>" if t is None else human_duration(now - t)


def _col(
    name: str, description: str, priority: int = 0, fmt: str = "", typ: str = "string"
) -> dict[str, Any]:
    return {
        "name": name,
        "type": typ,
        "format": fmt,
        "description": description,
        "priority": priority,
    }


_NAME = _col("Name", "Name must be unique within a namespace.", fmt="name")
_AGE = _col(
    "Age",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
)

NODE_COLUMNS = [
    _NAME,
    _col("Status", "The status of the node"),
    _col("Roles", "The roles of the node"),
    _AGE,
    _col("Version", "Kubelet Version reported by the node."),
    _col("Internal-IP", "List of addresses reachable to the node.", 1),
    _col("External-IP", "List of addresses reachable to the node.", 1),
    _col("OS-Image", "OS Image reported by the node from /etc/os-release.", 1),
    _col("Kernel-Version", "Kernel Version reported by the node from 'uname -r'.", 1),
    _col("Container-Runtime", "ContainerRuntime Version reported by the node.", 1),
]

POD_COLUMNS = [
    _NAME,
    _col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    _col("Status", "The aggregate status of the containers in this pod."),
    _col("Restarts", "The number of times the containers in this pod have been restarted."),
    _AGE,
    _col("IP", "IP address allocated to the pod. Routable at least within the cluster.", 1),
    _col("Node", "NodeName is a request to schedule this pod onto a specific node.", 1),
    _col("Nominated Node", "Set only when this pod preempts other pods on the node.", 1),
    _col("Readiness Gates", "If specified, all readiness gates are evaluated.", 1),
]

EVENT_COLUMNS = [
    _col("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
    _col("Type", "Type of this event (Normal, Warning)."),
    _col("Reason", "A short, machine understandable string: why the object changed state."),
    _col("Object", "The object that this event is about."),
    _col("Subobject", "The subobject (field path) this event is about.", 1),
    _col("Source", "The component reporting this event.", 1),
    _col("Message", "A human-readable description of the status of this operation."),
    _col("First Seen", "The time at which the event was first recorded.", 1),
    _col("Count", "The number of times this event has occurred.", 1, typ="integer"),
    _col("Name", "Name must be unique within a namespace.", 1, fmt="name"),
]

NAMESPACE_COLUMNS = [
    _NAME,
    _col("Status", "The status of the namespace"),
    _AGE,
]


def _node_cells(obj: Obj, now: float) -> list[Any]:
    status = obj.get("status", {})
    ready = "Unknown"
    for cond in status.get("conditions", []):
        if cond.get("type") == "Ready":
            ready = "Ready" if cond.get("status") == "True" else "NotReady"
    if obj.get("spec", {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    labels = obj["metadata"].get("labels", {})
    roles = sorted(
        k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")
    ) + ([labels["kubernetes.io/role"]] if "kubernetes.io/role" in labels else [])
    info = status.get("nodeInfo", {})
    addrs = status.get("addresses", [])

    def addr(kind: str) -> str:
        return next((a["address"] for a in addrs if a.get("type") == kind), "<none>")

    return [
        obj["metadata"]["name"],
        ready,
        ",".join(roles) or "<none>",
        _since(obj["metadata"].get("creationTimestamp"), now),
        info.get("kubeletVersion", ""),
        addr("InternalIP"),
        addr("ExternalIP"),
        info.get("osImage", "<unknown>"),
        info.get("kernelVersion", "<unknown>"),
        info.get("containerRuntimeVersion", "<unknown>"),
    ]


def pod_status_reason(obj: Obj) -> tuple[str, int, int, int, float | None]:
    """(STATUS column, ready containers, total containers, restarts, last restart epoch)."""
    spec, status = obj.get("spec", {}), obj.get("status", {})
    reason = status.get("reason") or status.get("phase", "")
    total = len(spec.get("containers", []))
    ready = restarts = 0
    last_restart: float | None = None
    has_running = False
    for cs in reversed(status.get("containerStatuses", [])):
        restarts += int(cs.get("restartCount", 0))
        last_term = cs.get("lastState", {}).get("terminated")
        if last_term:
            t = parse_time(last_term.get("finishedAt"))
            if t is not None and (last_restart is None or t > last_restart):
                last_restart = t
        state = cs.get("state", {})
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state and state["terminated"].get("reason"):
            reason = state["terminated"]["reason"]
        elif "terminated" in state:
            term = state["terminated"]
            reason = (
                f"Signal:{term['signal']}"
                if term.get("signal")
                else f"ExitCode:{term.get('exitCode', 0)}"
            )
        elif cs.get("ready") and "running" in state:
            has_running = True
            ready += 1
    if reason == "Completed" and has_running:
        ready_cond = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions", [])
        )
        reason = "Running" if ready_cond else "NotReady"
    if obj["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason, ready, total, restarts, last_restart


def _pod_cells(obj: Obj, now: float) -> list[Any]:
    reason, ready, total, restarts, last_restart = pod_status_reason(obj)
    restarts_cell = str(restarts)
    if restarts and last_restart is not None:
        restarts_cell = f"{restarts} ({human_duration(now - last_restart)} ago)"
    spec, status = obj.get("spec", {}), obj.get("status", {})
    gates = spec.get("readinessGates") or []
    return [
        obj["metadata"]["name"],
        f"{ready}/{total}",
        reason,
        restarts_cell,
        _since(obj["metadata"].get("creationTimestamp"), now),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"0/{len(gates)}" if gates else "<none>",
    ]


def _event_cells(obj: Obj, now: float) -> list[Any]:
    inv, src = obj.get("involvedObject", {}), obj.get("source", {})
    first = obj.get("firstTimestamp") or obj["metadata"].get("creationTimestamp")
    last = obj.get("lastTimestamp") or first
    source = src.get("component", "") + (f", {src['host']}" if src.get("host") else "")
    return [
        _since(last, now),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{inv.get('kind', '').lower()}/{inv.get('name', '')}",
        inv.get("fieldPath", ""),
        source,
        obj.get("message", "").strip(),
        _since(first, now),
        int(obj.get("count", 1)),
        obj["metadata"]["name"],
    ]


def _namespace_cells(obj: Obj, now: float) -> list[Any]:
    return [
        obj["metadata"]["name"],
        obj.get("status", {}).get("phase", "Active"),
        _since(obj["metadata"].get("creationTimestamp"), now),
    ]


PRINTERS: dict[str, tuple[list[dict[str, Any]], Callable[[Obj, float], list[Any]]]] = {
    "nodes": (NODE_COLUMNS, _node_cells),
    "pods": (POD_COLUMNS, _pod_cells),
    "events": (EVENT_COLUMNS, _event_cells),
    "namespaces": (NAMESPACE_COLUMNS, _namespace_cells),
}


def to_table(
    resource: str,
    objects: Sequence[Obj],
    now: float,
    resource_version: str,
    include_object: str = "Metadata",
) -> Obj:
    """Render *objects* of *resource* as a meta.k8s.io/v1 Table."""
    columns, cells = PRINTERS[resource]
    rows = []
    for obj in objects:
        row: Obj = {"cells": cells(obj, now)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
