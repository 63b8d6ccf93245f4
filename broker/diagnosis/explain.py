"""Why did a pod fail? A pure verdict engine over what the API server and the node's agent
report: the pod (phase, container states, exit codes, termination messages), its events,
the node, the node's XIDs in a window around the failure and its GPUs' health now.

Verdicts: ``hardware``, ``driver``, ``application``, ``infrastructure``, ``unknown``, or
``none`` when the pod did not fail. Rules, in short:

- ``OOMKilled`` is the kernel's cgroup OOM killer acting on the container's *host*
  memory limit: an application sizing problem, never a GPU one.
- Hardware needs hardware evidence: a hardware XID in the window on a GPU the pod held
  (or may have held), or, for a pod known to hold it, a GPU that is critical now.
  A CUDA error message alone never blames the hardware.
- XID 13/31/43-style faults (NVIDIA's ``RESTART_APP`` bucket) are the application's.
- Scheduling, eviction, image and sandbox problems are infrastructure.

Everything here is deterministic over its inputs (``now`` included) so it can be tested
without a cluster; :mod:`broker.diagnosis.gather` gathers the inputs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.diagnosis.allocation import covers_gpu, gpu_assignment, pod_requests
from broker.diagnosis.pod_status import (
    POD_INFRA_REASONS,
    Failure,
    containers_view,
    find_failure,
    first_lines,
    iso,
    memory_limit,
    owner_of,
    parse_time,
    relative,
    span,
)
from broker.diagnosis.timeline import gpu_label, next_steps, step, timeline
from broker.kube.names import DEFAULT_NAMESPACE, GPU_RESOURCE
from broker.kube.reader import Missing

Obj = dict[str, Any]

VERDICTS = ("hardware", "driver", "application", "infrastructure", "unknown", "none")
CONFIDENCES = ("high", "medium", "low")
WINDOW_BEFORE_S = 900.0  # XIDs up to 15 min before the failure can have caused it
WINDOW_AFTER_S = 120.0  # the driver may log the XID after the process already died

# Waiting reasons that are not the container's own fault.
_INFRA_WAITING = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerError",
    "CreateContainerConfigError",
    "RunContainerError",
    "ContainerCannotRun",
    "PreCreateHookError",
    "PostStartHookError",
}
_INFRA_EVENTS = {
    "FailedMount",
    "FailedAttachVolume",
    "FailedCreatePodSandBox",
    "FailedKillPod",
    "NetworkNotReady",
    "Preempted",
    "Evicted",
    "NodeNotReady",
    "TaintManagerEviction",
    "UnexpectedAdmissionError",
}

_MESSAGE_PATTERNS: dict[str, re.Pattern[str]] = {
    "driver": re.compile(
        r"driver/library version mismatch|driver version is insufficient|forward compatibility"
        r"|nvidia-container-cli|driver not loaded|failed to initiali[sz]e nvml"
        r"|system not yet initiali[sz]ed|cuda_error_system_driver_mismatch",
        re.I,
    ),
    "no_device": re.compile(
        r"no cuda-capable device|found no nvidia driver|no nvidia gpu|cuda_error_no_device", re.I
    ),
    "gpu_oom": re.compile(r"cuda out of memory|cuda_error_out_of_memory|outofmemoryerror", re.I),
    "app_fault": re.compile(
        r"illegal memory access|illegal address|misaligned address|device-side assert"
        r"|illegal instruction|invalid device function|invalid argument",
        re.I,
    ),
    "hardware": re.compile(
        r"uncorrectable ecc|ecc error|fallen off the bus|gpu is lost|gpu has fallen"
        r"|unspecified launch failure|nvlink|hardware",
        re.I,
    ),
    "cuda": re.compile(r"cuda|nccl|cublas|cudnn|gpu", re.I),
}
# What each XID's meaning makes likely in the application's own message.
_XID_WORDS: dict[int, re.Pattern[str]] = {
    79: re.compile(r"fallen off the bus|gpu is lost|unspecified launch failure|device lost", re.I),
    48: re.compile(r"ecc|uncorrectable", re.I),
    63: re.compile(r"ecc|uncorrectable", re.I),
    64: re.compile(r"ecc|uncorrectable", re.I),
    94: re.compile(r"ecc|uncorrectable|contained", re.I),
    95: re.compile(r"ecc|uncorrectable|uncontained", re.I),
    74: re.compile(r"nvlink|nccl", re.I),
    13: re.compile(r"illegal memory access|illegal address|out of range|device-side assert", re.I),
    31: re.compile(r"illegal memory access|illegal address|page fault|mmu", re.I),
    43: re.compile(r"illegal|assert|fault", re.I),
}


@dataclass
class Facts:
    """Everything known about one pod's failure; None = could not be read."""

    namespace: str
    name: str
    pod: Obj | None
    events: list[Obj] | None = None
    node: Obj | None = None
    xids: Obj | None = None  # the agent's analyze_xid_errors answer
    health: Obj | None = None  # the agent's get_gpu_health answer
    processes: Obj | None = None  # the agent's get_gpu_processes answer
    inventory: Obj | None = None  # the agent's get_gpu_inventory answer
    missing: list[Missing] = field(default_factory=list)
    now: float = field(default_factory=time.time)
    agent_namespace: str = DEFAULT_NAMESPACE
    window_before_s: float = WINDOW_BEFORE_S
    window_after_s: float = WINDOW_AFTER_S


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


def _xid_rows(facts: Facts, failure_time: float | None, assignment: Obj) -> list[Obj]:
    """The agent's XID groups with their category, nearest time to the failure, and
    whether they hit a GPU the pod held."""
    rows: list[Obj] = []
    for g in (facts.xids or {}).get("xids") or []:
        first = parse_time(g.get("first_seen"))
        last = parse_time(g.get("last_seen"))
        if first is None or last is None:
            continue
        offset: float | None = None
        in_window = False
        if failure_time is not None:
            lo = failure_time - facts.window_before_s
            hi = failure_time + facts.window_after_s
            in_window = first <= hi and last >= lo
            # The occurrence nearest the failure (groups hold first and last only).
            nearest = min((first, last), key=lambda t: abs(t - failure_time))
            offset = nearest - failure_time
        index = g.get("gpu_index")
        rows.append(
            {
                "xid": g.get("xid"),
                "name": g.get("name"),
                "description": g.get("description"),
                "severity": g.get("severity"),
                "category": xid_category(g),
                "gpu_index": index,
                "gpu_uuid": g.get("gpu_uuid"),
                "pci_bus_id": g.get("pci_bus_id"),
                "count": g.get("count"),
                "first_seen": g.get("first_seen"),
                "last_seen": g.get("last_seen"),
                "offset_s": None if offset is None else round(offset, 1),
                "in_window": in_window,
                "on_pod_gpu": covers_gpu(assignment, index, g.get("gpu_uuid")),
                "pids": g.get("pids") or [],
                "processes": g.get("processes") or [],
                "immediate_action": g.get("immediate_action"),
                "recommended_action": g.get("recommended_action"),
                "recovery_action": g.get("recovery_action"),
                "last_message": g.get("last_message"),
            }
        )
    return rows


# -- the verdict ----------------------------------------------------------------------


@dataclass
class _Verdict:
    verdict: str
    confidence: str
    summary: str
    evidence: list[Obj] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, source: str, text: str) -> None:
        self.evidence.append({"source": source, "text": text})


def _exit_phrase(f: Failure) -> str:
    who = f"{'init ' if f.init else ''}container {f.container}"
    code = f"exit code {f.exit_code}" if f.exit_code is not None else "no exit code"
    reason = f" ({f.reason})" if f.reason else ""
    when = f" at {iso(f.finished)}" if f.finished else ""
    again = f"; it has restarted {f.restarts} time(s) since" if f.previous and f.restarts else ""
    return f"{who} terminated with {code}{reason}{when}{again}"


def _match(kind: str, text: str | None) -> bool:
    return bool(text) and bool(_MESSAGE_PATTERNS[kind].search(text or ""))


def _corroborates(row: Mapping[str, Any], message: str | None) -> bool:
    pattern = _XID_WORDS.get(int(row.get("xid") or 0))
    if pattern is not None:
        return bool(message) and bool(pattern.search(message or ""))
    return (
        _match(str(row.get("category")), message)
        if row.get("category")
        in (
            "hardware",
            "driver",
        )
        else False
    )


def _quote(row: Mapping[str, Any], message: str | None) -> str | None:
    """The line of the application's message that matches what the XID means."""
    pattern = _XID_WORDS.get(int(row.get("xid") or 0))
    for line in (message or "").splitlines():
        if pattern is not None and pattern.search(line):
            return first_lines(line.strip(), 200)
    return None


def _closeness(row: Mapping[str, Any], message: str | None) -> tuple[bool, float, bool]:
    """Sort key for the XID most likely behind the failure: one the application's own
    message agrees with, then the nearest in time, then one that came before it."""
    offset = float(row.get("offset_s") or 0.0)
    return (not _corroborates(row, message), abs(offset), offset > 0)


def _health_gpus(health: Mapping[str, Any] | None) -> list[Obj]:
    return [g for g in (health or {}).get("gpus") or [] if isinstance(g, dict)]


def _decide(
    facts: Facts, pod: Obj, f: Failure, rows: list[Obj], assignment: Obj, events: list[Obj]
) -> _Verdict:
    """The verdict, its confidence and the evidence for it."""
    ns_name = f"{facts.namespace}/{facts.name}"
    node = (pod.get("spec") or {}).get("nodeName")
    message = f.message or ""

    if f.kind == "none":
        v = _Verdict("none", "high", f"Pod {ns_name} did not fail: it completed successfully.")
        v.add("pod", "phase Succeeded; every container exited with code 0")
        return v
    if f.kind == "running":
        v = _Verdict("none", "high", f"Pod {ns_name} is running and has not failed.")
        v.add("pod", "phase Running; no container has terminated with an error")
        return v
    if f.kind == "unschedulable":
        v = _Verdict(
            "infrastructure",
            "high",
            f"Pod {ns_name} was never scheduled: {f.message or f.reason}",
        )
        v.add("pod", f"condition PodScheduled=False ({f.reason}): {f.message}")
        for e in events:
            if e.get("reason") == "FailedScheduling":
                v.add("events", f"FailedScheduling x{e.get('count') or 1}: {e.get('message')}")
                break
        if "nvidia.com/" in message:
            v.notes.append(
                "No node has enough free GPUs of the requested kind: GPUs are held by other "
                "pods, withdrawn by the device plugin, or on cordoned/tainted nodes."
            )
        return v
    if f.kind == "pending":
        v = _Verdict("unknown", "low", f"Pod {ns_name} has not started yet ({f.reason}).")
        infra = [e for e in events if e.get("reason") in _INFRA_EVENTS]
        if infra:
            e = infra[-1]
            v = _Verdict(
                "infrastructure",
                "medium",
                f"Pod {ns_name} cannot start: {e.get('reason')}: {e.get('message')}",
            )
            v.add("events", f"{e.get('reason')} x{e.get('count') or 1}: {e.get('message')}")
        return v
    if f.kind == "evicted":
        what = POD_INFRA_REASONS.get(str(f.reason), str(f.reason))
        v = _Verdict("infrastructure", "high", f"Pod {ns_name} was {what}: {f.message or ''}")
        v.add("pod", f"status.reason {f.reason}: {f.message}")
        return v
    if f.kind == "waiting":
        if _match("driver", message):
            v = _Verdict(
                "driver",
                "medium",
                f"Container {f.container} cannot start: the NVIDIA driver/runtime failed "
                f"({f.reason}).",
            )
            v.add("pod", f"container {f.container} waiting: {f.reason}: {message}")
            return v
        if f.reason in _INFRA_WAITING:
            v = _Verdict(
                "infrastructure",
                "medium",
                f"Container {f.container} cannot start: {f.reason}.",
            )
            v.add("pod", f"container {f.container} waiting: {f.reason}: {message}".rstrip(": "))
            return v
        v = _Verdict("unknown", "low", f"Container {f.container} is waiting: {f.reason}.")
        v.add("pod", f"container {f.container} waiting: {f.reason}: {message}".rstrip(": "))
        return v

    # A container terminated with an error (now or before its last restart).
    exit_line = _exit_phrase(f)
    if f.reason == "OOMKilled":
        limit = memory_limit(pod, f.container)
        v = _Verdict(
            "application",
            "high",
            f"Container {f.container} of {ns_name} was OOMKilled: it used more host memory "
            f"than its limit{f' of {limit}' if limit else ''}. This is host RAM (the "
            "cgroup OOM killer), not GPU memory.",
        )
        v.add("pod", exit_line)
        v.add(
            "pod",
            f"memory limit {limit}: the kernel killed the process when the container exceeded it"
            if limit
            else "no memory limit: the node itself ran out of memory",
        )
        v.notes.append(
            "GPU memory exhaustion shows as a CUDA 'out of memory' error in the logs, never "
            "as OOMKilled."
        )
        _add_clean_gpu_evidence(v, facts, rows)
        return v

    window = [r for r in rows if r["in_window"]]
    hardware = [r for r in window if r["category"] == "hardware"]
    causal_hw = [r for r in hardware if r["on_pod_gpu"] is not False]
    if causal_hw:
        best = min(causal_hw, key=lambda r: _closeness(r, message))
        corroborated = any(_corroborates(r, message) for r in causal_hw)
        on_gpu = any(r["on_pod_gpu"] for r in causal_hw)
        close = abs(best["offset_s"] or 0.0) <= 60
        confidence = "high" if on_gpu or corroborated or close else "medium"
        v = _Verdict(
            "hardware",
            confidence,
            f"Hardware: XID {best['xid']} ({best['description'] or best['name']}) on "
            f"{gpu_label(best)} of {node}, {relative(best['offset_s'] or 0.0)} "
            f"container {f.container} exited with code {f.exit_code}.",
        )
        v.add("pod", exit_line)
        for r in sorted(causal_hw, key=lambda r: _closeness(r, message)):
            held = {True: "a GPU this pod held", None: "a GPU this pod may have held"}[
                r["on_pod_gpu"]
            ]
            v.add(
                "xid",
                f"XID {r['xid']} {r['name']} ({r['severity']}) on {gpu_label(r)}, {held}: "
                f"{r['count']} time(s), nearest {relative(r['offset_s'] or 0.0)} the failure",
            )
        if assignment.get("known") and assignment.get("source"):
            v.add("allocation", f"GPUs of the pod: {assignment['source']}")
        if corroborated:
            quote = next(
                (q for r in causal_hw if (q := _quote(r, message))), first_lines(message, 200)
            )
            v.add("pod", f"the termination message agrees: {quote}")
        _add_health_evidence(v, facts, assignment, only_bad=True)
        _add_node_evidence(v, facts)
        return v

    driver = [r for r in window if r["category"] == "driver"]
    if driver:
        best = min(driver, key=lambda r: _closeness(r, message))
        v = _Verdict(
            "driver",
            "high" if _corroborates(best, message) else "medium",
            f"Driver/firmware: XID {best['xid']} ({best['description'] or best['name']}) on "
            f"{gpu_label(best)} {relative(best['offset_s'] or 0.0)} the failure.",
        )
        v.add("pod", exit_line)
        for r in driver:
            v.add("xid", f"XID {r['xid']} {r['name']} on {gpu_label(r)}: {r['count']} time(s)")
        return v
    if _match("driver", message):
        v = _Verdict(
            "driver",
            "medium",
            f"Driver: container {f.container} failed on an NVIDIA driver/CUDA compatibility error.",
        )
        v.add("pod", exit_line)
        v.add("pod", f"termination message: {first_lines(message, 300)}")
        return v
    if _match("no_device", message):
        v = _Verdict(
            "infrastructure",
            "medium",
            f"Infrastructure: container {f.container} saw no GPU: the device plugin or the "
            "NVIDIA container runtime did not give it one.",
        )
        v.add("pod", exit_line)
        v.add("pod", f"termination message: {first_lines(message, 300)}")
        return v

    app_xids = [
        r for r in window if r["category"] == "application" and r["on_pod_gpu"] is not False
    ]
    if app_xids:
        best = min(app_xids, key=lambda r: _closeness(r, message))
        corroborated = _corroborates(best, message)
        v = _Verdict(
            "application",
            "high" if corroborated else "medium",
            f"Application fault: XID {best['xid']} ({best['description'] or best['name']}) on "
            f"{gpu_label(best)} {relative(best['offset_s'] or 0.0)} container {f.container} "
            f"exited with code {f.exit_code}; NVIDIA classes it as an application error "
            "(restart the app, the GPU needs no action).",
        )
        v.add("pod", exit_line)
        v.add(
            "xid",
            f"XID {best['xid']} {best['name']} ({best['severity']}) on {gpu_label(best)}, "
            f"NVIDIA action {best['immediate_action']}: {best['recommended_action']}",
        )
        if corroborated:
            quote = _quote(best, message) or first_lines(message, 200)
            v.add("pod", f"the termination message agrees: {quote}")
        _add_clean_gpu_evidence(v, facts, rows)
        return v

    # GPU health now, for a GPU the pod is known to have held.
    bad_now = [
        g
        for g in _health_gpus(facts.health)
        if g.get("status") == "critical"
        and covers_gpu(assignment, g.get("index"), g.get("uuid")) is True
    ]
    if bad_now and _match("cuda", message):
        g = bad_now[0]
        v = _Verdict(
            "hardware",
            "medium",
            f"Hardware (likely): GPU {g.get('index')}, which this pod held, is critical now and "
            f"the container failed with a GPU error; no XID in the window ties the two in time.",
        )
        v.add("pod", exit_line)
        _add_health_evidence(v, facts, assignment, only_bad=True)
        return v

    if f.exit_code == 137 or f.signal == 9:
        killing = [e for e in events if e.get("reason") in ("Killing", "Unhealthy")]
        probe = next((e for e in killing if "probe" in str(e.get("message", "")).lower()), None)
        if probe is not None:
            v = _Verdict(
                "application",
                "medium",
                f"Container {f.container} was killed (SIGKILL) after failing its probe.",
            )
            v.add("pod", exit_line)
            v.add("events", f"{probe.get('reason')}: {probe.get('message')}")
            return v
        infra = [e for e in events if e.get("reason") in _INFRA_EVENTS]
        if infra:
            v = _Verdict(
                "infrastructure",
                "medium",
                f"Container {f.container} was killed (SIGKILL) by the node: "
                f"{infra[-1].get('reason')}.",
            )
            v.add("pod", exit_line)
            v.add("events", f"{infra[-1].get('reason')}: {infra[-1].get('message')}")
            return v
        v = _Verdict(
            "unknown",
            "low",
            f"Container {f.container} was killed with SIGKILL (exit 137) from outside, not "
            "by the OOM killer; nothing recorded says who.",
        )
        v.add("pod", exit_line)
        return v

    node_ready = _node_ready(facts.node)
    if node_ready is False:
        v = _Verdict(
            "infrastructure",
            "medium",
            f"Infrastructure: node {node} is NotReady; container {f.container} exited with "
            f"code {f.exit_code}.",
        )
        v.add("pod", exit_line)
        _add_node_evidence(v, facts)
        return v

    xids_checked = facts.xids is not None
    gpu_words = _match("cuda", message) or _match("hardware", message)
    if not xids_checked and gpu_words:
        v = _Verdict(
            "unknown",
            "low",
            f"Container {f.container} failed with a GPU-related error, but the node's XIDs "
            "could not be read, so hardware cannot be ruled in or out.",
        )
        v.add("pod", exit_line)
        v.add("pod", f"termination message: {first_lines(message, 300)}")
        return v
    confidence = "medium" if xids_checked else "low"
    if _match("gpu_oom", message):
        summary = (
            f"Application: container {f.container} ran out of GPU memory (CUDA out of memory): "
            "the workload needs a smaller batch/model shard or a larger GPU."
        )
        confidence = "high"
    else:
        summary = f"Application: container {f.container} exited with code {f.exit_code}" + (
            "; the node logged no XID around that time and nothing points at the GPU or the node."
            if xids_checked
            else "; the node's XIDs could not be checked."
        )
    v = _Verdict("application", confidence, summary)
    v.add("pod", exit_line)
    if message:
        v.add("pod", f"termination message: {first_lines(message, 300)}")
    _add_clean_gpu_evidence(v, facts, rows)
    return v


def _held_word(row: Mapping[str, Any]) -> str:
    return "holds" if row.get("on_pod_gpu") else "may hold"


def _node_ready(node: Mapping[str, Any] | None) -> bool | None:
    if not node:
        return None
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return None


def _add_clean_gpu_evidence(v: _Verdict, facts: Facts, rows: Sequence[Mapping[str, Any]]) -> None:
    """Say what rules the hardware out (no hardware XID in the window, health now)."""
    if facts.xids is None:
        v.notes.append("The node's XIDs could not be read: hardware was not ruled out by them.")
        return
    window = [r for r in rows if r["in_window"] and r["category"] in ("hardware", "driver")]
    if not window:
        v.add(
            "xid",
            f"no hardware or driver XID on the node within "
            f"{span(facts.window_before_s)} before to {span(facts.window_after_s)} after "
            "the failure",
        )
    if facts.health is not None:
        status = facts.health.get("status")
        v.add("health", f"GPU health on the node now: {status} ({facts.health.get('summary')})")


def _add_health_evidence(v: _Verdict, facts: Facts, assignment: Obj, only_bad: bool) -> None:
    for g in _health_gpus(facts.health):
        if only_bad and g.get("status") == "healthy":
            continue
        held = covers_gpu(assignment, g.get("index"), g.get("uuid"))
        if held is False:
            continue
        issues = [i for i in g.get("issues") or [] if i.get("severity") != "info"]
        text = str(issues[0].get("message")) if issues else "no issue"
        v.add("health", f"GPU {g.get('index')} is {g.get('status')} now: {text}")


def _add_node_evidence(v: _Verdict, facts: Facts) -> None:
    node = facts.node
    if not node:
        return
    spec, status = node.get("spec") or {}, node.get("status") or {}
    for t in spec.get("taints") or []:
        key = str(t.get("key") or "")
        if "health" in key or key.startswith("node.kubernetes.io/unreachable"):
            v.add("node", f"taint {key}={t.get('value', '')}:{t.get('effect')}")
    cap = (status.get("capacity") or {}).get(GPU_RESOURCE)
    able = (status.get("allocatable") or {}).get(GPU_RESOURCE)
    if cap is not None and able is not None and str(cap) != str(able):
        v.add(
            "node",
            f"nvidia.com/gpu allocatable {able} of capacity {cap}: the device plugin withdrew "
            "unhealthy GPU(s)",
        )
    if _node_ready(node) is False:
        v.add("node", "node is NotReady")


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
    failure_time = f.finished if f.kind in ("terminated", "restarted", "evicted") else None
    assignment = gpu_assignment(
        pod, facts.node, processes=facts.processes, inventory=facts.inventory
    )
    rows = _xid_rows(facts, failure_time, assignment)
    v = _decide(facts, pod, f, rows, assignment, events)
    if f.kind == "running":
        for r in rows:
            if r["category"] == "hardware" and r["on_pod_gpu"] is not False:
                v.notes.append(
                    f"The pod has not failed, but XID {r['xid']} ({r['name']}) was logged on "
                    f"{gpu_label(r)} at {r['last_seen']}, a GPU it {_held_word(r)}: watch it."
                )
    for r in rows:
        if r["in_window"] and r["category"] == "hardware" and r["on_pod_gpu"] is False:
            v.notes.append(
                f"XID {r['xid']} ({r['name']}) on {gpu_label(r)} falls in the window but on a "
                "GPU this pod did not hold: not its cause."
            )
    if missing and v.confidence == "high" and v.verdict not in ("none",):
        v.confidence = "medium"  # something was not seen: do not claim certainty
    owner = owner_of(pod)
    window = None
    if failure_time is not None:
        window = {
            "failure_time": iso(failure_time),
            "start": iso(failure_time - facts.window_before_s),
            "end": iso(failure_time + facts.window_after_s),
            "checked": facts.xids is not None,
        }
    requests = pod_requests(pod)
    actions = []
    for r in rows:
        if r["in_window"] and r["category"] not in ("informational",) and r["recommended_action"]:
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
                for g in _health_gpus(facts.health)
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
        "xid_window": window,
        "xids": [r for r in rows if r["in_window"] or failure_time is None],
        "gpu_health": health,
        "evidence": v.evidence,
        "notes": v.notes,
        "timeline": timeline(pod, events, rows),
        "next_steps": next_steps(pod, f, v.verdict, rows, missing),
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
        "ready": _node_ready(node),
        "schedulable": not spec.get("unschedulable", False),
        "taints": [
            f"{t.get('key')}={t.get('value', '')}:{t.get('effect')}"
            for t in spec.get("taints") or []
        ],
    }
