"""MIG slices and the XIDs tied to them: which slice a pod holds, which GPU instance an XID
hit (the driver's ``GPU-I:nn`` tag, as the agent reports it), and which XIDs take the whole
GPU down whatever slice they were attributed to. Pure functions over the agent's answers.

On a GPU in MIG mode the driver attributes an error it can pin on one GPU instance to that
instance (``NVRM: Xid (PCI:0000:3b:00 GPU-I:05): 43, ...``). Such an error is contained:
the other slices keep running, so it is not the cause of a failure on another slice. The
exception is an XID whose fault lives in what every slice shares (see :func:`whole_gpu`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from broker.diagnosis.allocation import MIG_PREFIX

Obj = dict[str, Any]

# XIDs that end every slice of the GPU, decided from the remedy NVIDIA's catalog gives
# (agent/data/xid-catalog.tsv, "immediate_action"): a remedy that acts on the whole GPU or
# node means the fault is in what the slices share (the PCIe link, GSP/PMU firmware, the
# memory controller, the board), and the remedy itself ends every slice.
#   RESTART_BM / RESTART_VM: 79 fell off the bus, 151: the node or VM restarts.
#   RESET_GPU: 62 PMU halt, 64 remap failure, 95 uncontained ECC, 109 context-switch
#     timeout, 119/120 GSP timeout/error, 140 ECC escape, 143 init, 158 fatal timeout...
#     A GPU in MIG mode resets as a whole: every instance is drained and destroyed.
#   CONTACT_SUPPORT (no field remedy) and catalogued-critical codes with no bucket (167
#     PCIe fatal timeout, 169 SEC2 halt, 171/172 uncorrectable DRAM/SRAM): board faults.
#   CHECK_MECHANICALS: cooling and power are the board's.
#   154 with a reset / reboot / drain-and-reset recovery action: the driver asks for it.
# Not whole-GPU, so the tag decides: RESTART_APP (13, 31, 94 contained ECC: "only the
# affected app must restart"), IGNORE (43, 63...), WORKFLOW_XID_48 (a double-bit error is
# contained to its slice or not as the 94/95 logged with it says), WORKFLOW_XID_45 (a side
# effect), CHECK_UVM / UPDATE_SWFW (the process's or driver's, reported per channel), and
# NVLink (MIG instances do no peer-to-peer over NVLink).
WHOLE_GPU_BUCKETS = frozenset(
    {"RESTART_BM", "RESTART_VM", "RESET_GPU", "CONTACT_SUPPORT", "CHECK_MECHANICALS"}
)
WHOLE_GPU_RECOVERY = frozenset({"GPU Reset Required", "Node Reboot Required", "Drain and Reset"})


def whole_gpu(row: Mapping[str, Any]) -> bool:
    """Whether an XID group takes down every slice of its GPU (see WHOLE_GPU_BUCKETS)."""
    xid = int(row.get("xid") or 0)
    if xid == 154:
        return row.get("recovery_action") in WHOLE_GPU_RECOVERY
    bucket = row.get("immediate_action")
    if bucket is None:
        return row.get("severity") == "critical"
    return bucket in WHOLE_GPU_BUCKETS


def profiles_requested(requests: Mapping[str, int]) -> set[str]:
    """The MIG profiles a pod asked for (``nvidia.com/mig-1g.10gb`` -> ``1g.10gb``)."""
    return {r[len(MIG_PREFIX) :] for r, n in requests.items() if r.startswith(MIG_PREFIX) and n}


def _instances(inventory: Mapping[str, Any] | None, index: Any) -> list[Obj]:
    for g in (inventory or {}).get("gpus") or []:
        if isinstance(g, dict) and g.get("index") == index and index is not None:
            return [m for m in g.get("mig_instances") or [] if isinstance(m, dict)]
    return []


def instance(inventory: Mapping[str, Any] | None, index: Any, gpu_instance: Any) -> Obj | None:
    """The inventory's MIG instance ``gpu_instance`` of GPU ``index``, if listed."""
    if gpu_instance is None:
        return None
    return next(
        (m for m in _instances(inventory, index) if m.get("gpu_instance_id") == gpu_instance),
        None,
    )


def pod_slices(assignment: Mapping[str, Any], inventory: Mapping[str, Any] | None) -> list[Obj]:
    """The MIG slices the pod is known to hold: ``{index, gpu_instance_id, profile, uuid,
    memory_mib, candidates}`` per slice; ``candidates`` are the GPU instances it may be
    (one when known; several when only the profile is: which of them is not in the API)."""
    if not assignment.get("known"):
        return []
    out: list[Obj] = []
    for ref in assignment.get("gpus") or []:
        uuid, profile = ref.get("mig_uuid"), ref.get("mig_profile")
        if not uuid and not profile and ref.get("gpu_instance_id") is None:
            continue
        index = ref.get("index")
        listed = _instances(inventory, index)
        found = next((m for m in listed if uuid and m.get("uuid") == uuid), None)
        if found is None and ref.get("gpu_instance_id") is not None:
            found = next(
                (m for m in listed if m.get("gpu_instance_id") == ref["gpu_instance_id"]), None
            )
        if found is not None:
            candidates = [found]
        elif ref.get("gpu_instance_id") is not None:  # the agent saw it; the inventory lacks it
            candidates = [{"gpu_instance_id": ref["gpu_instance_id"], "profile": profile}]
        else:
            candidates = [m for m in listed if profile and m.get("profile") == profile]
        one = candidates[0] if len(candidates) == 1 else None
        out.append(
            {
                "index": index,
                "gpu_instance_id": one.get("gpu_instance_id") if one else None,
                "profile": (one.get("profile") if one else None) or profile,
                "uuid": (one.get("uuid") if one else None) or uuid,
                "memory_mib": one.get("memory_total_mib") if one else None,
                "candidates": [m.get("gpu_instance_id") for m in candidates],
            }
        )
    return out


def relation(
    row: Mapping[str, Any], slices: Sequence[Mapping[str, Any]], profiles: Iterable[str]
) -> str | None:
    """How an XID group stands to the pod's MIG slices:

    ``own`` (attributed to the pod's GPU instance), ``other`` (to another slice, or an
    instance of a profile the pod did not ask for: contained there), ``whole`` (an XID that
    ends every slice, on a GPU where the pod holds one), ``unknown`` (no tag, or a tag the
    pod's slice may be), or None when MIG does not enter into it."""
    index, tag, uuid = row.get("gpu_index"), row.get("gpu_instance_id"), row.get("mig_uuid")
    mine = [s for s in slices if index is not None and s.get("index") == index]
    if uuid and any(s.get("uuid") == uuid for s in slices):
        return "own"
    if mine:
        if whole_gpu(row):
            return "whole"
        if tag is None:
            return "unknown"
        if any(s.get("gpu_instance_id") == tag for s in mine):
            return "own"
        if any(tag in (s.get("candidates") or []) for s in mine):
            return "unknown"
        return "other"
    # The pod's slice is not known, or is on another GPU: a tagged instance of a profile
    # the pod did not ask for is not its slice.
    profile = row.get("mig_profile")
    wanted = set(profiles)
    if tag is not None and profile and wanted and profile not in wanted and not whole_gpu(row):
        return "other"
    return None


def slice_label(index: Any, gpu_instance: Any, profile: Any = None) -> str:
    """'GPU 2 MIG 1g.10gb instance 5' (the profile left out when not known)."""
    what = f"MIG {profile} instance" if profile else "MIG instance"
    return f"GPU {index} {what} {gpu_instance}"


def pod_slice_label(s: Mapping[str, Any]) -> str:
    """How the evidence names a slice the pod holds."""
    if s.get("gpu_instance_id") is not None:
        text = slice_label(s.get("index"), s["gpu_instance_id"], s.get("profile"))
    elif s.get("index") is not None:
        many = s.get("candidates") or []
        which = f" (one of instances {', '.join(map(str, many))})" if len(many) > 1 else ""
        text = f"a MIG {s.get('profile') or ''} slice of GPU {s.get('index')}{which}".replace(
            "MIG  slice", "MIG slice"
        )
    else:
        text = f"MIG device {s.get('uuid')} (on a GPU that does not list it now)"
    if s.get("uuid") and s.get("gpu_instance_id") is not None:
        text += f" ({s['uuid']})"
    return text
