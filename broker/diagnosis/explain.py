"""Why did a pod fail? A pure verdict engine over what the API server and the node's agent
report: the pod (phase, container states, start and exit times, exit codes, termination
messages, conditions), its events, the node (conditions, taints), the node's XIDs and its
GPUs' health now.

Verdicts: ``hardware``, ``driver``, ``application``, ``infrastructure``, ``unknown``, or
``none`` when the pod did not fail. The verdict is a list of named rules
(:mod:`broker.diagnosis.rules`); time is causal (:mod:`broker.diagnosis.causal`): an XID
counts only if it was logged while the container ran, or left its GPU in a state that
still holds. In short:

- ``OOMKilled`` is the kernel's cgroup OOM killer acting on the container's *host*
  memory limit: an application sizing problem, never a GPU one.
- Hardware needs hardware evidence: a hardware XID during the run on a GPU the pod held
  (or may have held), a GPU of the pod still lost or waiting for a reset, or, for a pod
  known to hold it, a GPU that is critical now. A CUDA error message alone never blames
  the hardware.
- XID 13/31-style faults (NVIDIA's ``RESTART_APP`` bucket) are the application's; XID 32
  is the PCIe link's when the GPU counts PCIe replays. Driver/firmware XIDs (GSP 119/120,
  and 37/38/66/67, which the catalog says to ignore) are the driver's; one that left its
  GPU waiting for a reset explains later failures on it too.
- Scheduling, eviction, preemption (``DisruptionTarget``), image and sandbox problems,
  containers lost with their node (``ContainerStatusUnknown``) and NotReady nodes are
  infrastructure; a pod's own ``activeDeadlineSeconds`` and a container that keeps
  exiting 0 under ``restartPolicy: Always`` are the application's.
- NCCL system/network errors with no XID on the pod's GPUs are ``unknown``: the network,
  a peer rank or ``/dev/shm`` are likelier than the code.

Everything here is deterministic over its inputs (``now`` included) so it can be tested
without a cluster; :mod:`broker.diagnosis.gather` gathers the inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.diagnosis.allocation import covers_gpu, gpu_assignment, pod_requests
from broker.diagnosis.causal import (
    RESET_STATE,
    RunWindow,
    checked_from,
    gpu_states,
    place,
    run_window,
)
from broker.diagnosis.evidence import DRIVER_FIRMWARE_XIDS, Case, health_gpus
from broker.diagnosis.facts import WINDOW_AFTER_S, WINDOW_BEFORE_S, Facts
from broker.diagnosis.mig import instance, pod_slices, profiles_requested, relation
from broker.diagnosis.node_facts import timeline_items, view
from broker.diagnosis.pod_status import (
    containers_view,
    find_failure,
    first_lines,
    iso,
    owner_of,
    parse_time,
)
from broker.diagnosis.rules import SETTLED_BY_KUBERNETES, decide
from broker.diagnosis.signals import node_ready, node_signals
from broker.diagnosis.timeline import gpu_label, next_steps, step, timeline

Obj = dict[str, Any]

VERDICTS = ("hardware", "driver", "application", "infrastructure", "unknown", "none")
CONFIDENCES = ("high", "medium", "low")

__all__ = [
    "CONFIDENCES",
    "VERDICTS",
    "WINDOW_AFTER_S",
    "WINDOW_BEFORE_S",
    "Facts",
    "explain",
    "xid_category",
]


# -- XIDs -----------------------------------------------------------------------------


def xid_category(group: Mapping[str, Any]) -> str:
    """What an XID says about the cause: hardware, driver, application, recovery (Xid 154:
    the action another XID needs), side_effect (Xid 45), informational, or unknown."""
    xid = int(group.get("xid") or 0)
    bucket = group.get("immediate_action")
    investigate = str(group.get("investigatory_action") or "")
    severity = group.get("severity")
    if bucket is None and "severity" not in group:
        from agent.xid import info_for

        info = info_for(xid)
        bucket, investigate, severity = (
            info.immediate_action,
            info.investigatory_action or "",
            info.severity,
        )
    if xid == 154:
        return "recovery"
    if xid == 45 or bucket == "WORKFLOW_XID_45":
        return "side_effect"
    if xid in (94, 95):  # contained/uncontained memory errors: the memory, not the code
        return "hardware"
    if xid in DRIVER_FIRMWARE_XIDS:  # the description names the driver; IGNORE is the remedy
        return "driver"
    if bucket == "IGNORE" or severity == "info":
        return "informational"
    if bucket == "RESTART_APP":
        return "application"
    if bucket in ("UPDATE_SWFW", "CHECK_UVM"):
        return "driver"
    if bucket == "RESET_GPU" and investigate.startswith("INVESTIGATE_SW"):
        return "driver"
    if severity == "critical" or bucket == "CHECK_MECHANICALS":
        return "hardware"
    return "unknown"


def _xid_rows(
    facts: Facts,
    window: RunWindow | None,
    assignment: Obj,
    slices: list[Obj],
    profiles: set[str],
) -> list[Obj]:
    """The agent's XID groups with their category, where they fall against the run
    (``timing``, ``offset_s`` to the exit, ``near_exit``), whether they hit a GPU the pod
    held (on MIG: its slice, see :mod:`broker.diagnosis.mig`), and whether their GPU is
    still in the state they left it in (``persists``)."""
    states = gpu_states(facts.health)
    rows: list[Obj] = []
    for g in (facts.xids or {}).get("xids") or []:
        first = parse_time(g.get("first_seen"))
        last = parse_time(g.get("last_seen"))
        if first is None or last is None:
            continue
        timing: str | None = None
        offset: float | None = None
        near = False
        if window is not None:
            timing, offset, near = place(first, last, window)
        index = g.get("gpu_index")
        category = xid_category(g)
        tag = g.get("gpu_instance_id")
        listed = instance(facts.inventory, index, tag)  # an agent that did not name it
        mig = {
            "gpu_instance_id": tag,
            "mig_uuid": g.get("mig_uuid") or (listed or {}).get("uuid"),
            "mig_profile": g.get("mig_profile") or (listed or {}).get("profile"),
        }
        on_pod = covers_gpu(assignment, index, g.get("gpu_uuid"))
        where = relation({**g, **mig}, slices, profiles)
        if where == "other":  # contained to another slice of the GPU
            on_pod = False
        elif where == "own":
            on_pod = True
        persists = (
            isinstance(index, int)
            and index in states
            and (
                category == "hardware"
                # a driver/firmware XID (GSP timeout...) that left its GPU waiting for a reset
                or (category == "driver" and any(c == RESET_STATE for c, _ in states[index]))
            )
            and timing in ("before_start", "during_run")
        )
        rows.append(
            {
                "xid": g.get("xid"),
                "name": g.get("name"),
                "description": g.get("description"),
                "severity": g.get("severity"),
                "category": category,
                "gpu_index": index,
                "gpu_uuid": g.get("gpu_uuid"),
                "pci_bus_id": g.get("pci_bus_id"),
                "count": g.get("count"),
                "first_seen": g.get("first_seen"),
                "last_seen": g.get("last_seen"),
                "offset_s": None if offset is None else round(offset, 1),
                "timing": timing,
                "near_exit": near,
                "persists": persists,
                # Counted as a possible cause: in the run, or its GPU state still holds.
                "in_window": timing == "during_run" or persists,
                "on_pod_gpu": on_pod,
                **mig,
                "slice": where,
                "pids": g.get("pids") or [],
                "processes": g.get("processes") or [],
                "immediate_action": g.get("immediate_action"),
                "investigatory_action": g.get("investigatory_action"),
                "recommended_action": g.get("recommended_action"),
                "recovery_action": g.get("recovery_action"),
                "last_message": g.get("last_message"),
            }
        )
    return rows


# -- entry point -----------------------------------------------------------------------


def explain(facts: Facts) -> Obj:
    """The explanation of one pod's failure (see module docstring for the rules)."""
    missing = list(facts.missing)
    base: Obj = {
        "pod": {"namespace": facts.namespace, "name": facts.name},
        "missing": [m.as_dict() for m in missing],
        "partial": bool(missing),
    }
    pod = facts.pod
    if pod is None:
        checks = [
            step(m.check, f"check the permission that would show {m.what}")
            for m in missing
            if m.check
        ]
        return {
            **base,
            "verdict": "unknown",
            "confidence": "low",
            "summary": f"Pod {facts.namespace}/{facts.name} could not be read, so its failure "
            "cannot be explained: " + ("; ".join(m.reason for m in missing) or "no data"),
            "failure": None,
            "containers": [],
            "gpus": None,
            "node": None,
            "xid_window": None,
            "xids": [],
            "gpu_health": None,
            "evidence": [],
            "notes": [],
            "timeline": [],
            "next_steps": checks,
            "nvidia_actions": [],
        }
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    events = list(facts.events or [])
    f = find_failure(pod)
    window = run_window(f)
    assignment = gpu_assignment(
        pod, facts.node, processes=facts.processes, inventory=facts.inventory
    )
    slices = pod_slices(assignment, facts.inventory)
    rows = _xid_rows(facts, window, assignment, slices, profiles_requested(pod_requests(pod)))
    case = Case(
        facts=facts,
        pod=pod,
        failure=f,
        rows=rows,
        assignment=assignment,
        events=events,
        window=window,
        states=gpu_states(facts.health),
        signals=node_signals(facts.node),
        slices=slices,
    )
    v = decide(case)
    for r in rows:
        if r["timing"] == "during_run" and r["category"] == "hardware" and r["on_pod_gpu"] is False:
            where = (
                "another MIG slice than the pod's, and the driver contains it to its slice"
                if r["slice"] == "other"
                else "a GPU this pod did not hold"
            )
            v.notes.append(
                f"XID {r['xid']} ({r['name']}) on {gpu_label(r)} came during the run but on "
                f"{where}: not its cause."
            )
    if missing and v.confidence == "high" and v.rule not in SETTLED_BY_KUBERNETES:
        v.confidence = "medium"  # something was not seen that could change the answer
    owner = owner_of(pod)
    xid_window = None
    if window is not None:
        xid_window = {
            "failure_time": iso(window.end),
            "start": iso(window.lo),
            "end": iso(window.hi),
            "container_started": iso(window.start),
            "clock_skew_grace_s": window.grace_s,
            "checked": facts.xids is not None,
            "checked_from": iso(checked_from(facts.xids)),
            "source": (facts.xids or {}).get("source"),  # the log the agent read
        }
    requests = pod_requests(pod)
    actions = []
    for r in rows:
        if r["in_window"] and r["category"] != "informational" and r["recommended_action"]:
            text = f"XID {r['xid']} on {gpu_label(r)}: {r['recommended_action']}"
            if text not in actions:
                actions.append(text)
    health = None
    if facts.health is not None:
        health = {
            "status": facts.health.get("status"),
            "summary": facts.health.get("summary"),
            "gpus": [
                {
                    "index": g.get("index"),
                    "uuid": g.get("uuid"),
                    "status": g.get("status"),
                    "held_by_pod": covers_gpu(assignment, g.get("index"), g.get("uuid")),
                    "issues": [
                        {
                            "check": i.get("check"),
                            "severity": i.get("severity"),
                            "message": i.get("message"),
                        }
                        for i in g.get("issues") or []
                    ],
                }
                for g in health_gpus(facts.health)
                if g.get("status") != "healthy"
                or covers_gpu(assignment, g.get("index"), g.get("uuid"))
            ],
        }
    return {
        **base,
        "pod": {
            "namespace": facts.namespace,
            "name": facts.name,
            "uid": meta.get("uid"),
            "phase": status.get("phase"),
            "node": spec.get("nodeName"),
            "owner": f"{owner[0]}/{owner[1]}" if owner else None,
            "restart_policy": spec.get("restartPolicy"),
            "created": meta.get("creationTimestamp"),
        },
        "verdict": v.verdict,
        "rule": v.rule,
        "confidence": v.confidence,
        "summary": v.summary,
        "failure": {
            "kind": f.kind,
            "container": f.container,
            "exit_code": f.exit_code,
            "signal": f.signal,
            "reason": f.reason,
            "message": first_lines(f.message, 1000),
            "started_at": iso(f.started),
            "finished_at": iso(f.finished),
            "restarts": f.restarts,
            "previous": f.previous,
        },
        "containers": containers_view(pod),
        "gpus": {"requests": requests, **assignment},
        "node": _node_view(facts.node, spec.get("nodeName")),
        "xid_window": xid_window,
        "xids": [r for r in rows if r["in_window"] or window is None],
        "gpu_health": health,
        "node_signals": view(case.host),
        "evidence": v.evidence,
        "notes": v.notes,
        "timeline": sorted(
            timeline(pod, events, rows) + timeline_items(case.host), key=lambda i: i["time"]
        )[-50:],
        "next_steps": next_steps(pod, f, v.verdict, rows, missing, v.remedy, v.gpus, v.steps),
        "nvidia_actions": actions,
    }


def _node_view(node: Mapping[str, Any] | None, name: str | None) -> Obj | None:
    if name is None:
        return None
    if not node:
        return {"name": name, "ready": None, "schedulable": None, "taints": []}
    spec = node.get("spec") or {}
    return {
        "name": name,
        "ready": node_ready(node)[0],
        "schedulable": not spec.get("unschedulable", False),
        "taints": [
            f"{t.get('key')}={t.get('value', '')}:{t.get('effect')}"
            for t in spec.get("taints") or []
        ],
    }
