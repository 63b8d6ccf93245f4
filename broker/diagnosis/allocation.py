"""Who holds which GPU: pure functions over pod and node JSON and the agent's answers.

Kubernetes knows how many ``nvidia.com/gpu`` (or ``nvidia.com/mig-*``) a pod asked for
and which node it runs on, but not which devices the device plugin gave it: that is
decided at container start and kept by the kubelet. What can be known, best first:

1. the agent's ``get_gpu_processes`` with pod mapping (host ``/proc`` mounted): the GPU
   each running process of the pod uses;
2. ``NVIDIA_VISIBLE_DEVICES`` set in the pod spec itself (UUIDs or indexes);
3. arithmetic: a pod that requested every GPU of the node holds all of them; a node with
   one GPU, or one GPU carrying the requested MIG profile, leaves no choice.

Otherwise the answer says it cannot be known, and which chart value would tell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from broker.kube.names import GPU_RESOURCE

Obj = dict[str, Any]

MIG_PREFIX = "nvidia.com/mig-"
ENABLE_MAPPING = (
    "Set the chart value hostProc.enabled=true: the agent then maps each GPU process to "
    "its pod through the host's /proc (only while the pod's processes run)."
)
_QUANTITY = re.compile(r"^\s*(\d+)\s*$")
_UUID = re.compile(r"^(GPU|MIG)-[0-9A-Fa-f-]+$")


def is_gpu_resource(name: str) -> bool:
    """``nvidia.com/gpu``, MIG profiles, shared replicas: every NVIDIA extended resource."""
    return name.startswith("nvidia.com/")


def quantity(value: Any) -> int:
    """An extended-resource quantity (always an integer); 0 when absent or malformed."""
    m = _QUANTITY.match(str(value)) if value is not None else None
    return int(m[1]) if m else 0


def _gpu_map(resources: Mapping[str, Any] | None) -> dict[str, int]:
    """GPU resources of one container: limits (extended resources need limits == requests)."""
    resources = resources or {}
    merged: dict[str, int] = {}
    for key in ("requests", "limits"):
        for name, value in (resources.get(key) or {}).items():
            if is_gpu_resource(str(name)) and quantity(value) > 0:
                merged[str(name)] = quantity(value)
    return merged


def container_requests(pod: Mapping[str, Any]) -> list[Obj]:
    """Per container: ``{"name", "init", "resources": {resource: count}}`` (GPU ones only)."""
    spec = pod.get("spec") or {}
    out: list[Obj] = []
    for init, key in ((True, "initContainers"), (False, "containers")):
        for c in spec.get(key) or []:
            wanted = _gpu_map(c.get("resources"))
            if wanted:
                out.append({"name": str(c.get("name")), "init": init, "resources": wanted})
    return out


def pod_requests(pod: Mapping[str, Any]) -> dict[str, int]:
    """The pod's effective GPU requests, as the scheduler counts them: per resource,
    the larger of the sum over app containers and the largest init container."""
    total: dict[str, int] = {}
    init_max: dict[str, int] = {}
    for c in container_requests(pod):
        for name, n in c["resources"].items():
            if c["init"]:
                init_max[name] = max(init_max.get(name, 0), n)
            else:
                total[name] = total.get(name, 0) + n
    for name, n in init_max.items():
        total[name] = max(total.get(name, 0), n)
    return total


def holds_devices(pod: Mapping[str, Any]) -> bool:
    """Bound to a node and not finished: the kubelet keeps its devices allocated."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    return bool(spec.get("nodeName")) and status.get("phase") not in ("Succeeded", "Failed")


def allocation_state(pod: Mapping[str, Any]) -> str:
    """``holding`` (devices allocated), ``waiting`` (not scheduled yet) or ``released``."""
    if holds_devices(pod):
        return "holding"
    if not (pod.get("spec") or {}).get("nodeName") and (pod.get("status") or {}).get(
        "phase"
    ) not in ("Succeeded", "Failed"):
        return "waiting"
    return "released"


def node_resources(node: Mapping[str, Any], pods: Iterable[Mapping[str, Any]] | None) -> Obj:
    """Per GPU resource of the node: capacity, allocatable, allocated (sum of the requests
    of ``pods`` that hold devices there), free. ``pods`` None = unknown (no pod access)."""
    status = node.get("status") or {}
    name = (node.get("metadata") or {}).get("name")
    capacity = {k: quantity(v) for k, v in (status.get("capacity") or {}).items()}
    allocatable = {k: quantity(v) for k, v in (status.get("allocatable") or {}).items()}
    allocated: dict[str, int] = {}
    if pods is not None:
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") != name or not holds_devices(pod):
                continue
            for res, n in pod_requests(pod).items():
                allocated[res] = allocated.get(res, 0) + n
    out: Obj = {}
    names = {k for k in (*capacity, *allocatable, *allocated) if is_gpu_resource(k)}
    for res in sorted(names):
        alloc = allocated.get(res, 0) if pods is not None else None
        able = allocatable.get(res, 0)
        out[res] = {
            "capacity": capacity.get(res, 0),
            "allocatable": able,
            "allocated": alloc,
            "free": None if alloc is None else max(0, able - alloc),
            "withdrawn": max(0, capacity.get(res, 0) - able),
        }
    return out


def _visible_devices(pod: Mapping[str, Any]) -> list[str]:
    """Device ids named by ``NVIDIA_VISIBLE_DEVICES`` in the pod spec (literal values)."""
    found: list[str] = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        for env in c.get("env") or []:
            if env.get("name") != "NVIDIA_VISIBLE_DEVICES" or "value" not in env:
                continue
            for item in str(env.get("value") or "").split(","):
                item = item.strip()
                if item and item.lower() not in ("all", "none", "void") and item not in found:
                    found.append(item)
    return found


def _inventory_gpus(inventory: Mapping[str, Any] | None) -> list[Obj]:
    return [g for g in (inventory or {}).get("gpus") or [] if isinstance(g, dict)]


def _gpu_ref(index: int | None, uuid: str | None, **extra: Any) -> Obj:
    return {"index": index, "uuid": uuid, **extra}


def _seen_by_agent(
    processes: Mapping[str, Any], uid: str, gpus: Sequence[Mapping[str, Any]]
) -> tuple[list[Obj], list[str]]:
    """The GPUs (on MIG: the GPU instances) where the agent saw the pod's processes, and
    one line per MIG instance naming the process that pins it. NVML reports the GPU
    instance of each process, so this tells the pod's slice when nothing else can."""
    refs: list[Obj] = []
    pinned: list[str] = []
    for g in processes.get("gpus") or []:
        index, uuid = g.get("index"), g.get("uuid")
        mine = [p for p in g.get("processes") or [] if (p.get("pod") or {}).get("pod_uid") == uid]
        if not mine:
            continue
        listed: Sequence[Mapping[str, Any]] = next(
            (x.get("mig_instances") or [] for x in gpus if x.get("index") == index), []
        )
        instances: dict[int, Mapping[str, Any]] = {}
        for p in mine:
            gi = p.get("gpu_instance_id")
            if isinstance(gi, int):
                instances.setdefault(gi, p)
        if any(not isinstance(p.get("gpu_instance_id"), int) for p in mine):
            refs.append(_gpu_ref(index, uuid))  # a process of the whole GPU (MIG off)
        for gi, p in instances.items():
            m: Mapping[str, Any] = next((m for m in listed if m.get("gpu_instance_id") == gi), {})
            extra: Obj = {"gpu_instance_id": gi}
            if m.get("uuid"):
                extra["mig_uuid"] = m["uuid"]
            if m.get("profile"):
                extra["mig_profile"] = m["profile"]
            refs.append(_gpu_ref(index, uuid, **extra))
            name = f" ({p['name']})" if p.get("name") else ""
            what = f"MIG {m['profile']} GPU instance" if m.get("profile") else "MIG GPU instance"
            pinned.append(f"pid {p.get('pid')}{name} runs in GPU {index}'s {what} {gi}")
    return refs, pinned


def gpu_assignment(
    pod: Mapping[str, Any],
    node: Mapping[str, Any] | None = None,
    *,
    processes: Mapping[str, Any] | None = None,
    inventory: Mapping[str, Any] | None = None,
) -> Obj:
    """Which GPUs the pod holds (or held): ``{"known", "gpus": [{index, uuid, ...}] | None,
    "source", "note"}``. ``processes``/``inventory`` are the agent's answers, if any."""
    requests = pod_requests(pod)
    uid = (pod.get("metadata") or {}).get("uid")
    if not requests:
        return {"known": True, "gpus": [], "source": "pod spec", "note": "no GPU requested"}
    total = ", ".join(f"{n} {r}" for r, n in sorted(requests.items()))
    state = allocation_state(pod)
    if state == "waiting":
        return {
            "known": False,
            "gpus": None,
            "source": None,
            "note": f"The pod requests {total} but is not scheduled: no device is allocated yet.",
        }
    if node is not None and (node.get("metadata") or {}).get("name") != (pod.get("spec") or {}).get(
        "nodeName"
    ):
        node = None  # another node's facts say nothing about this pod's devices

    gpus = _inventory_gpus(inventory)

    # 1. The agent saw the pod's processes on GPUs (on MIG: in which GPU instance).
    mapping = (processes or {}).get("pod_mapping") or {}
    if processes is not None and mapping.get("enabled") and uid:
        seen, pinned = _seen_by_agent(processes, uid, gpus)
        if seen:
            source = "agent: GPU processes mapped to pods through the host's /proc"
            if pinned:
                source += "; " + "; ".join(pinned)
            return {"known": True, "gpus": seen, "source": source, "note": ""}

    by_uuid = {str(g.get("uuid")): g for g in gpus if g.get("uuid")}
    by_index = {int(g["index"]): g for g in gpus if isinstance(g.get("index"), int)}

    # 2. NVIDIA_VISIBLE_DEVICES in the pod spec.
    named = _visible_devices(pod)
    if named:
        refs: list[Obj] = []
        for item in named:
            if item.isdigit():
                g = by_index.get(int(item))
                refs.append(_gpu_ref(int(item), g.get("uuid") if g else None))
            elif _UUID.match(item):
                if item.startswith("MIG-"):
                    parent, mig = next(
                        (
                            (g, m)
                            for g in gpus
                            for m in g.get("mig_instances") or []
                            if m.get("uuid") == item
                        ),
                        (None, None),
                    )
                    extra: Obj = {"mig_uuid": item}
                    if mig is not None and mig.get("profile"):
                        extra["mig_profile"] = mig["profile"]
                    if mig is not None and isinstance(mig.get("gpu_instance_id"), int):
                        extra["gpu_instance_id"] = mig["gpu_instance_id"]
                    refs.append(
                        _gpu_ref(
                            parent.get("index") if parent else None,
                            parent.get("uuid") if parent else None,
                            **extra,
                        )
                    )
                else:
                    g = by_uuid.get(item)
                    refs.append(_gpu_ref(g.get("index") if g else None, item))
        if refs:
            return {
                "known": True,
                "gpus": refs,
                "source": "pod spec: NVIDIA_VISIBLE_DEVICES",
                "note": "",
            }

    node_status = (node or {}).get("status") or {}
    capacity = quantity((node_status.get("capacity") or {}).get(GPU_RESOURCE))
    whole = requests.get(GPU_RESOURCE, 0)
    # 3a. Every full GPU of the node (or its only one). MIG-enabled GPUs are not
    # nvidia.com/gpu, so the full GPUs are the inventory's non-MIG ones, or, without an
    # inventory, GPUs 0..N-1 when the node has no MIG at all.
    if inventory is not None:
        # MIG mode None is unknown, not "whole": a GPU that fell off the bus reads so.
        # When the known whole GPUs already make the node's count, the unknown ones
        # must be MIG GPUs; when only all of them together do, they are all whole.
        full = [g for g in gpus if g.get("mig_mode_current") is False]
        unknown = [g for g in gpus if g.get("mig_mode_current") is None]
        if unknown and len(full) + len(unknown) == capacity and len(full) != capacity:
            full += unknown
        candidates = [(g.get("index"), g.get("uuid")) for g in full]
    elif not any(str(k).startswith(MIG_PREFIX) for k in node_status.get("capacity") or {}):
        candidates = [(i, None) for i in range(capacity)]
    else:
        candidates = []
    if node is not None and whole and capacity and whole >= capacity == len(candidates):
        refs = [_gpu_ref(i, u) for i, u in candidates]
        why = "the node's only GPU" if capacity == 1 else f"all {capacity} GPUs of the node"
        return {
            "known": True,
            "gpus": refs,
            "source": f"arithmetic: the pod requested {whole} {GPU_RESOURCE}, {why}",
            "note": "",
        }

    # 3b. A MIG profile that exists on one GPU only.
    mig = [r for r in requests if r.startswith(MIG_PREFIX)]
    if mig and gpus:
        profile = mig[0][len(MIG_PREFIX) :]
        carriers = [
            g
            for g in gpus
            if any(m.get("profile") == profile for m in g.get("mig_instances") or [])
        ]
        listed = sum(
            1 for g in gpus for m in g.get("mig_instances") or [] if m.get("profile") == profile
        )
        advertised = quantity((node_status.get("capacity") or {}).get(mig[0]))
        # A GPU in unknown MIG mode (lost) may carry instances the inventory cannot list.
        hidden = advertised > listed and any(g.get("mig_mode_current") is None for g in gpus)
        if len(carriers) == 1 and not hidden:
            g = carriers[0]
            count = sum(1 for m in g.get("mig_instances") or [] if m.get("profile") == profile)
            note = (
                f"which of the GPU's {count} {profile} instances cannot be told from the API"
                if count > 1
                else ""
            )
            extra = {"mig_profile": profile}
            if count == 1:  # the only instance of that profile: the device is known
                (only,) = (m for m in g.get("mig_instances") or [] if m.get("profile") == profile)
                if only.get("uuid"):
                    extra["mig_uuid"] = only["uuid"]
                if isinstance(only.get("gpu_instance_id"), int):
                    extra["gpu_instance_id"] = only["gpu_instance_id"]
            return {
                "known": True,
                "gpus": [_gpu_ref(g.get("index"), g.get("uuid"), **extra)],
                "source": f"arithmetic: GPU {g.get('index')} is the node's only GPU with "
                f"{profile} MIG instances",
                "note": note,
            }

    # Unknown: say why and what would tell.
    of_node = f" of the node's {capacity}" if capacity else ""
    if state == "released":
        reason = "the pod has finished, so no process of it is left to map"
    elif processes is None:
        reason = "the node's agent could not be asked"
    elif not mapping.get("enabled"):
        reason = "the agent runs without host /proc, so it cannot map GPU processes to pods"
    else:
        reason = "the agent sees no GPU process of this pod"
    verb = "held" if state == "released" else "holds"
    note = (
        f"The pod {verb} {total}{of_node}; which devices the device plugin gave it is not "
        f"in the Kubernetes API ({reason})."
    )
    if not mapping.get("enabled"):
        note += " " + ENABLE_MAPPING
    return {"known": False, "gpus": None, "source": None, "note": note}


def covers_gpu(assignment: Mapping[str, Any], index: int | None, uuid: str | None) -> bool | None:
    """Whether a GPU (by index or uuid) is one the pod held: True/False, None = unknown."""
    if not assignment.get("known"):
        return None
    refs: Sequence[Mapping[str, Any]] = assignment.get("gpus") or []
    for ref in refs:
        if index is not None and ref.get("index") == index:
            return True
        if uuid is not None and ref.get("uuid") == uuid:
            return True
    if index is None and uuid is None:
        return None
    if any(ref.get("index") is None and ref.get("uuid") is None for ref in refs):
        return None
    return False


def pod_summary(pod: Mapping[str, Any]) -> Obj:
    """The allocation-relevant facts of one pod."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "node": spec.get("nodeName"),
        "phase": status.get("phase"),
        "state": allocation_state(pod),
        "owner": f"{owner.get('kind')}/{owner.get('name')}" if owner else None,
        "requests": pod_requests(pod),
        "containers": container_requests(pod),
    }
