"""The human side of an explanation: the timeline (pod, containers, events, XIDs in time
order) and the next steps, as commands a user can run. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from broker.diagnosis.pod_status import Failure, iso, memory_limit, owner_of, parse_time
from broker.kube.reader import Missing

Obj = dict[str, Any]


def gpu_label(row: Mapping[str, Any]) -> str:
    """How an XID row names its GPU: by index, or by PCI address for a lost one; on a MIG
    GPU with the slice the driver attributed it to ("GPU 2 MIG 1g.10gb instance 5")."""
    gpu = (
        f"GPU {row['gpu_index']}"
        if row.get("gpu_index") is not None
        else f"the GPU at PCI {row.get('pci_bus_id')}"
    )
    if row.get("gpu_instance_id") is None:
        return gpu
    profile = f" {row['mig_profile']}" if row.get("mig_profile") else ""
    return f"{gpu} MIG{profile} instance {row['gpu_instance_id']}"


def timeline(
    pod: Mapping[str, Any], events: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
) -> list[Obj]:
    """Pod creation, container starts and exits, events and XIDs, oldest first (last 50)."""
    items: list[tuple[float, str, str]] = []
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    created = parse_time(meta.get("creationTimestamp"))
    if created:
        items.append((created, "pod", "pod created"))
    for cv in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        name = cv.get("name")
        for key in ("lastState", "state"):
            st = cv.get(key) or {}
            if "running" in st and (t := parse_time(st["running"].get("startedAt"))):
                items.append((t, "container", f"container {name} started"))
            if "terminated" in st:
                term = st["terminated"]
                if t := parse_time(term.get("startedAt")):
                    items.append((t, "container", f"container {name} started"))
                if t := parse_time(term.get("finishedAt")):
                    items.append(
                        (
                            t,
                            "container",
                            f"container {name} terminated: exit code {term.get('exitCode')} "
                            f"({term.get('reason')})",
                        )
                    )
    for e in events:
        t = parse_time(e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp"))
        if t is None:
            continue
        count = int(e.get("count") or 1)
        times = f" (x{count})" if count > 1 else ""
        items.append((t, "event", f"{e.get('type')} {e.get('reason')}{times}: {e.get('message')}"))
    for r in rows:
        for key in ("first_seen", "last_seen"):
            if key == "last_seen" and r["last_seen"] == r["first_seen"]:
                continue
            t = parse_time(r[key])
            if t is not None:
                items.append(
                    (
                        t,
                        "xid",
                        f"XID {r['xid']} {r['name']} on {gpu_label(r)}"
                        + (f" (last of {r['count']})" if key == "last_seen" else ""),
                    )
                )
    items.sort(key=lambda i: i[0])
    seen: set[tuple[float, str]] = set()
    out: list[Obj] = []
    for t, source, text in items:
        if (t, text) in seen:
            continue
        seen.add((t, text))
        out.append({"time": iso(t), "source": source, "text": text})
    return out[-50:]


def step(command: str, why: str) -> Obj:
    return {"command": command, "why": why}


def next_steps(
    pod: Mapping[str, Any],
    f: Failure,
    verdict: str,
    rows: Sequence[Mapping[str, Any]],
    missing: Sequence[Missing],
    remedy: str | None = None,
    gpus: Sequence[int] = (),
    extra: Sequence[Obj] = (),
) -> list[Obj]:
    """Commands to run next, for the verdict and its remedy (``restart_app``: the GPU
    keeps working; ``reset_gpu``; ``pcie``; ``drain``) and the rule's own ``extra`` steps,
    deduplicated, in order of use."""
    meta = pod.get("metadata") or {}
    ns, name = str(meta.get("namespace")), str(meta.get("name"))
    node = (pod.get("spec") or {}).get("nodeName")
    steps: list[Obj] = []
    logs = f"kubectl -n {ns} logs {name}" + (f" -c {f.container}" if f.container else "")
    if f.previous:
        logs += " --previous"
    owner = owner_of(pod)
    resets = [
        step(
            f"nvidia-smi -r -i {i}",
            f"on node {node}, once GPU {i} is idle (from the GPU Operator's driver pod or a host "
            "shell): reset the GPU to clear its error state",
        )
        for i in gpus
    ]
    if verdict == "hardware" and node and remedy == "restart_app":
        steps.append(step(logs, "the application's own account of the failure"))
        steps.append(
            step(
                f"kubectl mcp diagnose {node}",
                "a contained memory error needs no cordon: restart the workload, and watch the "
                "GPU for repeats (repeats on one GPU mean a reset, then an RMA)",
            )
        )
    elif verdict == "hardware" and node:
        steps.append(step(f"kubectl cordon {node}", "keep new pods off the faulty node"))
        steps.append(
            step(
                f"kubectl drain {node} --ignore-daemonsets --delete-emptydir-data",
                "move the remaining workloads before the GPU is reset or the node rebooted "
                "(NVIDIA's recommended action below)",
            )
        )
        if remedy == "reset_gpu":
            steps.extend(resets)
        if remedy == "pcie":
            steps.append(
                step(
                    "nvidia-smi -q -d PCIE",
                    f"on node {node}: link width/speed against the GPU's maximum and the replay "
                    "counter; reseat the GPU or riser if the link is degraded",
                )
            )
        steps.append(
            step(f"kubectl mcp diagnose {node}", "check the node's GPUs again after the repair")
        )
    elif verdict == "driver" and node:
        steps.append(
            step(f"kubectl mcp diagnose {node}", "driver version, GPU health and XIDs of the node")
        )
        if remedy == "reset_gpu":
            steps.append(
                step(
                    f"kubectl drain {node} --ignore-daemonsets --delete-emptydir-data",
                    "stop the GPU's workloads before the reset NVIDIA's catalog asks for",
                )
            )
            steps.extend(resets)
        steps.append(
            step(
                f"kubectl get node {node} -o jsonpath='{{.metadata.labels}}'",
                "the driver/CUDA versions the GPU feature discovery labels report",
            )
        )
    elif verdict == "application":
        steps.append(step(logs, "the application's own account of the failure"))
        if f.reason == "OOMKilled":
            limit = memory_limit(pod, f.container)
            bigger = _bigger_quantity(limit)
            target = _owner_target(owner)
            if bigger and target:
                steps.append(
                    step(
                        f"kubectl -n {ns} set resources {target} -c {f.container} "
                        f"--limits=memory={bigger} --requests=memory={bigger}",
                        f"give the container more host memory than its {limit} limit (or make "
                        "it use less: fewer workers, streaming instead of loading whole shards)",
                    )
                )
        elif any(r["category"] == "application" and r["in_window"] for r in rows):
            steps.append(
                step(
                    f"kubectl -n {ns} debug {name} -it --copy-to={name}-debug "
                    f"--container={f.container} -- env CUDA_LAUNCH_BLOCKING=1 sh",
                    "reproduce with synchronous kernel launches (or compute-sanitizer) to find "
                    "the faulting kernel",
                )
            )
    elif verdict == "infrastructure":
        steps.append(step(f"kubectl -n {ns} describe pod {name}", "conditions and events"))
        if node:
            steps.append(
                step(
                    f"kubectl describe node {node}",
                    "the node's conditions, taints and events (NotReady, pressure, health checks)",
                )
            )
        if f.kind == "unschedulable":
            steps.append(
                step(
                    "kubectl get nodes -l nvidia.com/gpu.present=true -o custom-columns="
                    "NAME:.metadata.name,GPUS:.status.allocatable.nvidia\\.com/gpu,"
                    "CORDONED:.spec.unschedulable",
                    "which GPU nodes exist and how many GPUs each offers (the broker tool "
                    "get_pod_gpu_allocation shows who holds them)",
                )
            )
    steps.extend(extra)
    if verdict in ("unknown", "none") and f.container:
        steps.append(step(logs, "the container's output"))
    if owner and owner[0] == "Job" and verdict not in ("none",):
        steps.append(
            step(
                f"kubectl -n {ns} get job {owner[1]} -o wide",
                "whether the Job retries (backoffLimit) or needs to be re-submitted",
            )
        )
    for m in missing:
        if m.check:
            steps.append(step(m.check, f"check the permission that would show {m.what}"))
    seen: set[str] = set()
    unique = []
    for s in steps:
        if s["command"] not in seen:
            seen.add(s["command"])
            unique.append(s)
    return unique


def _owner_target(owner: tuple[str, str] | None) -> str | None:
    if owner is None:
        return None
    kind, name = owner
    if kind == "ReplicaSet" and "-" in name:
        return f"deployment/{name.rsplit('-', 1)[0]}"
    if kind in ("StatefulSet", "DaemonSet", "Deployment"):
        return f"{kind.lower()}/{name}"
    return None


_QTY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")


def _bigger_quantity(limit: str | None) -> str | None:
    """1.5x a memory quantity, in the same unit (32Gi -> 48Gi)."""
    m = _QTY.match(limit or "")
    if not m:
        return None
    value = float(m[1]) * 1.5
    text = str(int(value)) if value == int(value) else f"{value:.1f}"
    return f"{text}{m[2] or ''}"
