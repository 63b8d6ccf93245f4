"""Builders of Kubernetes pod/node JSON and agent answers for the diagnosis unit tests,
shaped exactly as the API server and the agent send them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

NOW = 1_800_000_000.0  # a fixed "now" (2027-01-15): tests are deterministic
POD_UID = "11111111-2222-3333-4444-555555555555"  # pod()'s default uid


def ts(offset_s: float) -> str:
    """RFC 3339 time ``offset_s`` seconds from NOW (negative = before)."""
    return datetime.fromtimestamp(NOW + offset_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def terminated(
    exit_code: int = 1,
    reason: str = "Error",
    finished: float = -600,
    message: str | None = None,
    started: float = -3600,
) -> Obj:
    term: Obj = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": ts(started),
        "finishedAt": ts(finished),
    }
    if message:
        term["message"] = message
    return {"terminated": term}


def pod(
    name: str = "trainer-abc",
    namespace: str = "ml",
    *,
    node: str | None = "gpu-1",
    gpus: int = 8,
    resource: str = "nvidia.com/gpu",
    phase: str = "Failed",
    state: Obj | None = None,
    last_state: Obj | None = None,
    restarts: int = 0,
    memory: str = "64Gi",
    env: list[Obj] | None = None,
    owner: tuple[str, str] | None = ("Job", "trainer"),
    conditions: list[Obj] | None = None,
    status_reason: str | None = None,
    status_message: str | None = None,
    uid: str = POD_UID,
    init_containers: list[Obj] | None = None,
) -> Obj:
    limits: Obj = {"memory": memory}
    if gpus:
        limits[resource] = str(gpus)
    container: Obj = {"name": "main", "image": "img", "resources": {"limits": limits}}
    if env is not None:
        container["env"] = env
    meta: Obj = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "creationTimestamp": ts(-4000),
    }
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    spec: Obj = {"containers": [container], "restartPolicy": "Never"}
    if init_containers:
        spec["initContainers"] = init_containers
    if node:
        spec["nodeName"] = node
    status: Obj = {"phase": phase}
    if status_reason:
        status["reason"] = status_reason
        status["message"] = status_message
    if conditions is not None:
        status["conditions"] = conditions
    if node:
        status["containerStatuses"] = [
            {
                "name": "main",
                "state": state if state is not None else terminated(),
                "lastState": last_state or {},
                "restartCount": restarts,
                "ready": False,
            }
        ]
    return {"metadata": meta, "spec": spec, "status": status}


def node(
    name: str = "gpu-1",
    *,
    capacity: int = 8,
    allocatable: int | None = None,
    ready: bool = True,
    taints: list[Obj] | None = None,
    extra_capacity: Obj | None = None,
    unschedulable: bool = False,
) -> Obj:
    cap: Obj = {"nvidia.com/gpu": str(capacity), **(extra_capacity or {})}
    able: Obj = {
        "nvidia.com/gpu": str(capacity if allocatable is None else allocatable),
        **(extra_capacity or {}),
    }
    spec: Obj = {"taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.present": "true"}},
        "spec": spec,
        "status": {
            "capacity": cap,
            "allocatable": able,
            "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}],
        },
    }


def xid(
    code: int,
    *,
    at: float,
    gpu: int | None = 0,
    count: int = 1,
    last: float | None = None,
    severity: str | None = None,
    bucket: str | None = None,
    investigate: str | None = None,
    action: str = "catalog action",
    gi: int | None = None,
) -> Obj:
    """One analyze_xid_errors group; catalog fields from the agent's catalog by default.
    ``gi``: the MIG GPU instance the driver attributed it to (its ``GPU-I:nn`` tag)."""
    from agent.xid import info_for

    info = info_for(code)
    return {
        "xid": code,
        "name": info.mnemonic,
        "description": info.description,
        "severity": severity or info.severity,
        "immediate_action": bucket if bucket is not None else info.immediate_action,
        "investigatory_action": investigate or info.investigatory_action,
        "recommended_action": action,
        "gpu_index": gpu,
        "gpu_uuid": None if gpu is None else f"GPU-{gpu:08d}",
        "pci_bus_id": f"00000000:{(gpu or 0) + 16:02X}:00.0",
        "count": count,
        "first_seen": ts(at),
        "last_seen": ts(at if last is None else last),
        "pids": [],
        "processes": [],
        "recovery_action": None,
        "last_message": f"NVRM: Xid (PCI:0000:10:00{'' if gi is None else f' GPU-I:{gi:02d}'}): "
        f"{code}, ...",
        "gpu_instance_id": gi,
        "compute_instance_id": None,
        "mig_uuid": None,  # the broker finds the instance in the inventory
        "mig_profile": None,
    }


def xids(*groups: Obj) -> Obj:
    return {"xids": list(groups), "summary": {"events": len(groups)}}


def health(*bad: tuple[int, str, str], gpus: int = 8) -> Obj:
    """get_gpu_health with every GPU healthy except ``bad`` (index, status, check)."""
    out = []
    for i in range(gpus):
        status, issues = "healthy", []
        for index, st, check in bad:
            if index == i:
                status = st
                issues.append(
                    {"check": check, "severity": st, "message": f"GPU {i}: {check}", "action": "x"}
                )
        out.append({"index": i, "uuid": f"GPU-{i:08d}", "status": status, "issues": issues})
    order = ["healthy", "warning", "degraded", "critical"]
    worst = max((str(g["status"]) for g in out), key=lambda s: order.index(s))
    return {"status": worst, "summary": f"{gpus} GPU(s)", "gpus": out, "issues": []}


_MIG_MIB = {"10gb": 9984, "20gb": 20096, "40gb": 40320, "80gb": 81024}  # as A100-80GB reports


def inventory(gpus: int = 8, mig: dict[int, list[str]] | None = None) -> Obj:
    rows = []
    for i in range(gpus):
        instances = [
            {
                "gpu_instance_id": k + 1,
                "uuid": f"MIG-{i}-{k}",
                "profile": p,
                "memory_total_mib": _MIG_MIB.get(p.split(".")[-1], 0),
            }
            for k, p in enumerate((mig or {}).get(i, []))
        ]
        rows.append(
            {
                "index": i,
                "uuid": f"GPU-{i:08d}",
                "memory_total_mib": 81920,
                "mig_mode_current": bool(instances),
                "mig_instances": instances,
            }
        )
    return {"driver": {"driver_version": "575.57.08"}, "gpus": rows}


def processes(mapping: dict[int, str | None], enabled: bool = True, gpus: int = 8) -> Obj:
    """get_gpu_processes: ``mapping`` GPU index -> pod uid of its one process."""
    out = []
    for i in range(gpus):
        procs = []
        if i in mapping:
            pod_info = {"pod_uid": mapping[i]} if enabled and mapping[i] else None
            procs.append(
                {"pid": 100 + i, "name": "python3", "used_memory_mib": 1, "kind": "compute",
                 "pod": pod_info}
            )  # fmt: skip
        out.append({"index": i, "uuid": f"GPU-{i:08d}", "lost": False, "processes": procs})
    return {"pod_mapping": {"enabled": enabled, "host_proc": "/host/proc" if enabled else None},
            "gpus": out}  # fmt: skip


def event(reason: str, message: str, at: float = -60, kind: str = "Warning", count: int = 1) -> Obj:
    return {
        "type": kind,
        "reason": reason,
        "message": message,
        "count": count,
        "firstTimestamp": ts(at),
        "lastTimestamp": ts(at),
        "involvedObject": {"kind": "Pod", "name": "trainer-abc"},
    }
