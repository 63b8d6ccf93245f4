"""The verdict as named rules, like the agent's health checks: each rule looks at one
kind of evidence and either decides (verdict, confidence, summary, evidence lines) or
passes. :data:`RULES` runs in order; the first rule that decides wins.

Confidence is calibrated, not hopeful: ``high`` only when the evidence is unambiguous
(the right GPU, inside the container's run, a catalog entry that means what the verdict
says, or a Kubernetes status that names the cause); ``unknown`` is preferred to a
confident wrong answer.
"""

from __future__ import annotations

from typing import Any

from broker.diagnosis.allocation import covers_gpu, pod_requests
from broker.diagnosis.causal import PERSISTENT_CHECKS, RESET_STATE, pcie_replays
from broker.diagnosis.evidence import (
    INFRA_EVENTS,
    INFRA_WAITING,
    MEMORY_EVENT_XIDS,
    PCIE_REPLAY_WARN,
    PCIE_XIDS,
    Case,
    Rule,
    Verdict,
    add_allocation,
    add_clean,
    add_health,
    add_slices,
    closeness,
    corroborates,
    gpu_free,
    gpu_indexes,
    health_gpus,
    held_words,
    matches,
    quote,
    remedy_for,
    slice_unsure,
    xid_line,
)
from broker.diagnosis.mig import pod_slice_label, profiles_requested
from broker.diagnosis.node_rules import NODE_RULES, qualify
from broker.diagnosis.pod_status import (
    POD_INFRA_REASONS,
    first_lines,
    iso,
    memory_limit,
    relative,
    span,
)
from broker.diagnosis.signals import DISRUPTION_REASONS, disruption, node_ready
from broker.diagnosis.timeline import gpu_label

# -- rules: pods that did not run to a failure -----------------------------------------


def completed(c: Case) -> Verdict | None:
    if c.failure.kind != "none":
        return None
    v = Verdict("none", "high", f"Pod {c.ns_name} did not fail: it completed successfully.")
    v.add("pod", "phase Succeeded; every container exited with code 0")
    return v


def running_on_unready_node(c: Case) -> Verdict | None:
    """A Running pod on a NotReady node: its status is stale and NoExecute taints will
    evict it; it is not "not failed"."""
    if c.failure.kind != "running":
        return None
    ready, since = node_ready(c.facts.node)
    if ready is not False:
        return None
    when = f" since {iso(since)}" if since else ""
    v = Verdict(
        "infrastructure",
        "medium",
        f"Pod {c.ns_name} says Running, but node {c.node} is NotReady{when}: the kubelet stopped "
        "reporting, so the pod's status is stale, and the node's unreachable/not-ready taints "
        "evict it once its toleration runs out.",
    )
    return v  # the NotReady condition joins the evidence with the node's other signals


def running_but_disrupted(c: Case) -> Verdict | None:
    if c.failure.kind != "running" or (d := disruption(c.pod)) is None:
        return None
    reason, message = d
    what = DISRUPTION_REASONS.get(reason, "being ended by the control plane")
    v = Verdict(
        "infrastructure",
        "medium",
        f"Pod {c.ns_name} is still running but is being {what.split(' (')[0]}: "
        f"condition DisruptionTarget ({reason}).",
    )
    v.add("pod", f"condition DisruptionTarget=True ({reason}): {message}".rstrip(": "))
    return v


def running(c: Case) -> Verdict | None:
    if c.failure.kind != "running":
        return None
    v = Verdict("none", "high", f"Pod {c.ns_name} is running and has not failed.")
    v.add("pod", "phase Running; no container has terminated with an error")
    for r in c.rows:
        if r["category"] == "hardware" and r["on_pod_gpu"] is not False:
            word = "holds" if r["on_pod_gpu"] else "may hold"
            v.notes.append(
                f"The pod has not failed, but XID {r['xid']} ({r['name']}) was logged on "
                f"{gpu_label(r)} at {r['last_seen']}, a GPU it {word}: watch it."
            )
    return v


def never_scheduled(c: Case) -> Verdict | None:
    f = c.failure
    if f.kind != "unschedulable":
        return None
    v = Verdict(
        "infrastructure", "high", f"Pod {c.ns_name} was never scheduled: {f.message or f.reason}"
    )
    v.add("pod", f"condition PodScheduled=False ({f.reason}): {f.message}")
    for e in c.events:
        if e.get("reason") == "FailedScheduling":
            v.add("events", f"FailedScheduling x{e.get('count') or 1}: {e.get('message')}")
            break
    if "nvidia.com/" in c.message:
        v.notes.append(
            "No node has enough free GPUs of the requested kind: GPUs are held by other "
            "pods, withdrawn by the device plugin, or on cordoned/tainted nodes."
        )
    return v


def not_started(c: Case) -> Verdict | None:
    if c.failure.kind != "pending":
        return None
    infra = [e for e in c.events if e.get("reason") in INFRA_EVENTS]
    if not infra:
        return Verdict(
            "unknown", "low", f"Pod {c.ns_name} has not started yet ({c.failure.reason})."
        )
    e = infra[-1]
    v = Verdict(
        "infrastructure",
        "medium",
        f"Pod {c.ns_name} cannot start: {e.get('reason')}: {e.get('message')}",
    )
    v.add("events", f"{e.get('reason')} x{e.get('count') or 1}: {e.get('message')}")
    return v


def deadline_exceeded(c: Case) -> Verdict | None:
    """status.reason DeadlineExceeded: the pod ran past its *own* activeDeadlineSeconds.
    The kubelet enforced the workload's limit; why the run took that long (slow input, a
    hang, a stuck GPU) is not recorded, so medium."""
    f = c.failure
    if f.kind != "evicted" or f.reason != "DeadlineExceeded":
        return None
    v = Verdict(
        "application",
        "medium",
        f"Application: pod {c.ns_name} ran past its own activeDeadlineSeconds and the kubelet "
        "stopped it; find out why the run took that long, or raise the deadline.",
    )
    v.add("pod", f"status.reason {f.reason}: {f.message}")
    add_clean(v, c)
    return v


def admission_without_gpu(c: Case) -> Verdict | None:
    """The kubelet rejected the pod because a GPU it counted on was gone at admission
    (UnexpectedAdmissionError, "Allocate failed ... nvidia.com/gpu"), and a GPU of the node
    is lost or waiting for a reset now: that GPU is why."""
    f = c.failure
    if f.kind != "evicted" or f.reason != "UnexpectedAdmissionError":
        return None
    if "nvidia.com/" not in (f.message or ""):
        return None
    gone = ("gpu_lost", RESET_STATE)
    bad = sorted(i for i, states in c.states.items() if any(k in gone for k, _ in states))
    if not bad:
        return None
    check, message = c.states[bad[0]][0]
    v = Verdict(
        "hardware",
        "medium",
        f"Hardware (likely): the kubelet rejected pod {c.ns_name} because a GPU it expected was "
        f"unavailable, and GPU {bad[0]} of {c.node} {PERSISTENT_CHECKS[check]}; the pod never "
        "ran on it.",
        remedy="drain",
        gpus=bad,
    )
    v.add("pod", f"status.reason {f.reason}: {f.message}")
    for i in bad:
        v.add("health", f"GPU {i} now: {c.states[i][0][1]}")
    add_health(v, c, bad)
    return v


def ended_by_the_node(c: Case) -> Verdict | None:
    """status.reason Evicted / Shutdown / NodeLost...: the kubelet or control plane ended it."""
    f = c.failure
    if f.kind != "evicted":
        return None
    what = POD_INFRA_REASONS.get(str(f.reason), str(f.reason))
    v = Verdict(
        "infrastructure", "high", f"Pod {c.ns_name} was {what}: {f.message or ''}".rstrip(": ")
    )
    v.add("pod", f"status.reason {f.reason}: {f.message}")
    return v


def exits_cleanly_in_a_loop(c: Case) -> Verdict | None:
    """CrashLoopBackOff whose last run exited 0: under restartPolicy Always the kubelet
    restarts a container that ends at all; the process ends although it should keep running."""
    f = c.failure
    if f.kind != "waiting" or f.reason != "CrashLoopBackOff":
        return None
    statuses = (c.pod.get("status") or {}).get("containerStatuses") or []
    cs: dict[str, Any] = next((s for s in statuses if s.get("name") == f.container), {})
    last = (cs.get("lastState") or {}).get("terminated") or {}
    if last.get("exitCode") != 0:
        return None
    v = Verdict(
        "application",
        "medium",
        f"Application: container {f.container} keeps exiting with code 0 and is restarted "
        f"(restartPolicy {(c.pod.get('spec') or {}).get('restartPolicy')}): its process ends "
        "although the pod is meant to keep running; check its command/entrypoint.",
    )
    v.add(
        "pod",
        f"container {f.container} waiting: CrashLoopBackOff after {f.restarts} restart(s); last "
        f"run exited 0 ({last.get('reason')}) at {last.get('finishedAt')}",
    )
    add_clean(v, c)
    return v


def cannot_start(c: Case) -> Verdict | None:
    f = c.failure
    if f.kind != "waiting":
        return None
    line = f"{'init ' if f.init else ''}container {f.container} waiting: {f.reason}: {c.message}"
    if matches("driver", c.message):
        v = Verdict(
            "driver",
            "medium",
            f"Container {f.container} cannot start: the NVIDIA driver/runtime failed ({f.reason}).",
        )
    elif f.reason in INFRA_WAITING:
        v = Verdict(
            "infrastructure", "medium", f"Container {f.container} cannot start: {f.reason}."
        )
    else:
        v = Verdict("unknown", "low", f"Container {f.container} is waiting: {f.reason}.")
    v.add("pod", line.rstrip(": "))
    return v


# -- rules: a container that ran and failed ---------------------------------------------


def host_oom(c: Case) -> Verdict | None:
    """OOMKilled is the kernel's cgroup OOM killer on *host* memory, never GPU memory."""
    f = c.failure
    if f.reason != "OOMKilled":
        return None
    limit = memory_limit(c.pod, f.container)
    v = Verdict(
        "application",
        "high",
        f"Container {f.container} of {c.ns_name} was OOMKilled: it used more host memory than "
        f"its limit{f' of {limit}' if limit else ''}. This is host RAM (the cgroup OOM "
        "killer), not GPU memory.",
    )
    v.add("pod", c.exit_line())
    v.add(
        "pod",
        f"memory limit {limit}: the kernel killed the process when the container exceeded it"
        if limit
        else "no memory limit: the node itself ran out of memory",
    )
    v.notes.append(
        "GPU memory exhaustion shows as a CUDA 'out of memory' error in the logs, never as "
        "OOMKilled."
    )
    add_clean(v, c)
    return v


def disrupted(c: Case) -> Verdict | None:
    """DisruptionTarget=True: preemption, taint-manager deletion, eviction, node shutdown."""
    if (d := disruption(c.pod)) is None:
        return None
    reason, message = d
    what = DISRUPTION_REASONS.get(reason, f"ended by the control plane ({reason})")
    v = Verdict(
        "infrastructure",
        "high",
        f"Infrastructure: pod {c.ns_name} was {what}; container {c.failure.container} "
        f"stopped with exit code {c.failure.exit_code} (a signal, not its own error).",
    )
    v.add("pod", f"condition DisruptionTarget=True ({reason}): {message}".rstrip(": "))
    v.add("pod", c.exit_line())
    return v


def hardware_xid_in_run(c: Case) -> Verdict | None:
    """A hardware XID on a GPU the pod held (or may have held), during its run, near the
    exit. High only when the GPU is known to be the pod's."""
    rows = [
        r
        for r in c.causal({"hardware"})
        if r["xid"] not in PCIE_XIDS
        # a GPU it only may have held, and an exit that names a cause a GPU fault does not
        # produce (a full disk, a Python error): two weak links, not the cause
        and not (r["on_pod_gpu"] is None and gpu_free(c.message))
    ]
    if not rows:
        return None
    rows.sort(key=lambda r: closeness(r, c.message))
    best = rows[0]
    # on a MIG GPU: high when the XID is the pod's slice's, or one that ends every slice
    sure = best["on_pod_gpu"] is True and not slice_unsure(best)
    f = c.failure
    v = Verdict(
        "hardware",
        "high" if sure else "medium",
        f"Hardware: XID {best['xid']} ({best['description'] or best['name']}) on "
        f"{gpu_label(best)} of {c.node}, {relative(best['offset_s'] or 0.0)} container "
        f"{f.container} exited with code {f.exit_code}.",
        remedy=remedy_for(rows),
        gpus=gpu_indexes(rows),
    )
    v.add("pod", c.exit_line())
    v.add("xid", f"XIDs counted: those during {c.window_text()}")
    for r in rows:
        v.add("xid", xid_line(r))
    add_allocation(v, c)
    if slice_unsure(best):
        v.add(
            "allocation",
            "the pod held a MIG slice of that GPU; which slice the XID hit is not known",
        )
    if q := next((q for r in rows if (q := quote(r, c.message))), None):
        v.add("pod", f"the termination message agrees: {q}")
    add_health(v, c, gpu_indexes(rows))
    if v.remedy == "restart_app":
        v.notes.append(
            "XID 94 is a contained memory error: only the affected application had to stop; "
            "the GPU keeps working. Restart the workload and watch for repeats."
        )
    return v


def gpu_state_still_holds(c: Case) -> Verdict | None:
    """A GPU the pod held that is still lost or still waiting for a reset, since an XID
    logged before the exit: that state explains every later failure on it."""
    if c.window is None or not c.states:
        return None
    for r in sorted(c.rows, key=lambda r: r["on_pod_gpu"] is not True):
        index = r.get("gpu_index")
        driver = r["category"] == "driver"
        if (
            r["category"] not in ("hardware", "driver")
            or not r["persists"]
            or r["on_pod_gpu"] is False
            or r["timing"] == "after_exit"
            or (driver and r["near_exit"])  # in the run: driver_xid_in_run judges it
        ):
            continue
        states = c.states.get(index) if isinstance(index, int) else None
        if driver and states:
            states = [s for s in states if s[0] == RESET_STATE]
        if not states:
            continue
        check, message = states[0]
        sure = r["on_pod_gpu"] is True and not slice_unsure(r)
        f = c.failure
        if driver:  # firmware or a failing GPU: as for driver XIDs in the run, medium at best
            confidence, label = ("medium" if sure else "low"), "Driver/firmware"
        else:
            confidence, label = ("high" if sure else "medium"), "Hardware"
        v = Verdict(
            r["category"],
            confidence,
            f"{label}: {gpu_label(r)} of {c.node} {PERSISTENT_CHECKS[check]} since XID "
            f"{r['xid']} at {r['first_seen']}, before this run of container {f.container} "
            f"(exit code {f.exit_code} at {iso(f.finished)}); a GPU in that state fails "
            "every workload on it.",
            remedy="reset_gpu" if check != "gpu_lost" else "drain",
            gpus=[index] if isinstance(index, int) else [],
        )
        v.add("pod", c.exit_line())
        v.add("health", f"GPU {index} now: {message}")
        if driver:
            v.notes.append(
                "GSP/driver timeouts can come from firmware or from a failing GPU: reset the "
                "GPU; if the XID returns after the reset, treat it as hardware."
            )
        v.add("xid", xid_line(r) + f"; {gpu_label(r)} {PERSISTENT_CHECKS[check]} since then")
        add_allocation(v, c)
        if q := quote(r, c.message):
            v.add("pod", f"the termination message agrees: {q}")
        return v
    return None


def pcie_link(c: Case) -> Verdict | None:
    """XIDs NVIDIA puts mostly on the PCIe link: hardware when the GPU's link is replaying
    packets; without that evidence, unknown rather than a guess."""
    rows = c.causal(set(), PCIE_XIDS)
    if not rows:
        return None
    best = min(rows, key=lambda r: closeness(r, c.message))
    replays = pcie_replays(c.facts.health, best.get("gpu_index"))
    what = f"XID {best['xid']} ({best['description'] or best['name']}) on {gpu_label(best)}"
    if replays is not None and (replays >= PCIE_REPLAY_WARN or replays < 0):
        count = f"{replays} PCIe replays" if replays >= 0 else "PCIe replays over the warning"
        v = Verdict(
            "hardware",
            "medium",
            f"Hardware (PCIe link): {what} {relative(best['offset_s'] or 0.0)} the exit, and "
            f"that GPU counts {count}: a marginal PCIe link (riser, retimer, seating), not "
            "the code.",
            remedy="pcie",
            gpus=gpu_indexes([best]),
        )
        v.add("pod", c.exit_line())
        v.add("health", f"{gpu_label(best)}: {count} since the driver loaded")
    else:
        v = Verdict(
            "unknown",
            "low",
            f"Unknown: {what} {relative(best['offset_s'] or 0.0)} the exit. NVIDIA's catalog "
            "puts it mostly on PCIe link quality, rarely on the application, and the GPU shows "
            "no PCIe replays to tell which.",
        )
    v.add("pod", c.exit_line())
    v.add("xid", xid_line(best))
    add_allocation(v, c)
    return v


def driver_xid_in_run(c: Case) -> Verdict | None:
    """Driver/firmware XIDs (GSP timeouts, UPDATE_SWFW...) on the pod's GPU in its run."""
    rows = c.causal({"driver"})
    if not rows:
        return None
    rows.sort(key=lambda r: closeness(r, c.message))
    best = rows[0]
    # the catalog asks no action for it (the driver recovers): it can have ended the run it
    # hit, but that is a weak link
    ignorable = best.get("immediate_action") == "IGNORE"
    sure = best["on_pod_gpu"] is True and not slice_unsure(best)
    v = Verdict(
        "driver",
        "medium" if sure and not ignorable else "low",
        f"Driver/firmware: XID {best['xid']} ({best['description'] or best['name']}) on "
        f"{gpu_label(best)} {relative(best['offset_s'] or 0.0)} container "
        f"{c.failure.container} exited with code {c.failure.exit_code}.",
        remedy="reset_gpu" if any(r.get("immediate_action") == "RESET_GPU" for r in rows) else None,
        gpus=gpu_indexes(rows),
    )
    v.add("pod", c.exit_line())
    v.add("xid", f"XIDs counted: those during {c.window_text()}")
    for r in rows:
        v.add(
            "xid",
            xid_line(r) + f"; NVIDIA: {r.get('immediate_action')}, then "
            f"{r.get('investigatory_action') or 'no further step'}",
        )
    add_allocation(v, c)
    add_health(v, c, gpu_indexes(rows))
    driver = ((c.facts.inventory or {}).get("driver") or {}).get("driver_version")
    if driver:
        v.add("node", f"NVIDIA driver {driver} on the node")
    v.notes.append(
        "GSP/driver timeouts can come from firmware or from a failing GPU: reset the GPU; "
        "if the XID returns after the reset, treat it as hardware."
    )
    return v


def driver_message(c: Case) -> Verdict | None:
    if not matches("driver", c.message):
        return None
    v = Verdict(
        "driver",
        "medium",
        f"Driver: container {c.failure.container} failed on an NVIDIA driver/CUDA "
        "compatibility error.",
    )
    v.add("pod", c.exit_line())
    v.add("pod", f"termination message: {first_lines(c.message, 300)}")
    return v


def no_device(c: Case) -> Verdict | None:
    if not matches("no_device", c.message):
        return None
    v = Verdict(
        "infrastructure",
        "medium",
        f"Infrastructure: container {c.failure.container} saw no GPU: the device plugin or the "
        "NVIDIA container runtime did not give it one.",
    )
    v.add("pod", c.exit_line())
    v.add("pod", f"termination message: {first_lines(c.message, 300)}")
    add_clean(v, c)
    return v


def application_xid_in_run(c: Case) -> Verdict | None:
    """RESTART_APP XIDs (13, 31...) on the pod's GPU in its run: the application's."""
    rows = [r for r in c.causal({"application"}) if r["xid"] not in PCIE_XIDS]
    if not rows:
        return None
    best = min(rows, key=lambda r: closeness(r, c.message))
    agreed = corroborates(best, c.message)
    f = c.failure
    v = Verdict(
        "application",
        # an XID with no tag on a MIG GPU may be another slice's process's fault
        "high" if agreed and not slice_unsure(best) else "medium",
        f"Application fault: XID {best['xid']} ({best['description'] or best['name']}) on "
        f"{gpu_label(best)} {relative(best['offset_s'] or 0.0)} container {f.container} "
        f"exited with code {f.exit_code}; NVIDIA classes it as an application error "
        "(restart the app, the GPU needs no action).",
    )
    v.add("pod", c.exit_line())
    v.add(
        "xid",
        f"XID {best['xid']} {best['name']} ({best['severity']}) on {gpu_label(best)}, "
        f"NVIDIA action {best['immediate_action']}: {best['recommended_action']}",
    )
    if agreed:
        said = quote(best, c.message) or first_lines(c.message, 200)
        v.add("pod", f"the termination message agrees: {said}")
    add_clean(v, c)
    return v


def memory_event_agrees(c: Case) -> Verdict | None:
    """A memory repair event (XID 63: row remapping / page retirement, which the catalog
    says to ignore) on the pod's GPU at its exit, and the app itself reports an ECC error:
    a memory error did hit, even if its own XID (48/94/95) is not in the log."""
    rows = [r for r in c.causal(set(), MEMORY_EVENT_XIDS) if corroborates(r, c.message)]
    if not rows:
        return None
    best = min(rows, key=lambda r: closeness(r, c.message))
    v = Verdict(
        "hardware",
        "medium",
        f"Hardware (likely): XID {best['xid']} ({best['description'] or best['name']}) on "
        f"{gpu_label(best)} {relative(best['offset_s'] or 0.0)} the exit, and container "
        f"{c.failure.container} reported an ECC error; the memory error's own XID is not in "
        "the log.",
        remedy="reset_gpu",
        gpus=gpu_indexes(rows),
    )
    v.add("pod", c.exit_line())
    v.add("xid", xid_line(best))
    v.add("pod", f"the termination message agrees: {quote(best, c.message)}")
    add_allocation(v, c)
    add_health(v, c, gpu_indexes(rows))
    return v


def gpu_bad_now(c: Case) -> Verdict | None:
    """A GPU the pod is known to hold is critical now and the container failed with a GPU
    error, with no XID to tie the two in time."""
    bad = [
        g
        for g in health_gpus(c.facts.health)
        if g.get("status") == "critical"
        and covers_gpu(c.assignment, g.get("index"), g.get("uuid")) is True
    ]
    if not bad or not matches("cuda", c.message):
        return None
    g = bad[0]
    v = Verdict(
        "hardware",
        "medium",
        f"Hardware (likely): GPU {g.get('index')}, which this pod held, is critical now and "
        "the container failed with a GPU error; no XID during its run ties the two in time.",
        remedy="drain",
        gpus=[int(g["index"])] if isinstance(g.get("index"), int) else [],
    )
    v.add("pod", c.exit_line())
    add_health(v, c)
    return v


def cluster_gpu_condition(c: Case) -> Verdict | None:
    """The agent could not be asked, but NVSentinel / node-problem-detector / the GPU
    Operator flagged the node's GPUs by the time of the failure."""
    no_gpus = c.assignment.get("known") and not c.assignment.get("gpus")
    if c.xids_checked or c.window is None or no_gpus:
        return None
    flagged = [
        s
        for s in c.signals
        if s.gpu
        and s.kind in ("condition", "annotation")
        and (s.since is None or s.since <= c.window.hi)
    ]
    if not flagged:
        return None
    v = Verdict(
        "hardware",
        "medium" if c.assignment.get("known") else "low",
        f"Hardware (from the cluster's own health checks): node {c.node} reports a GPU fault "
        f"({flagged[0].text.split(':')[0]}) by the time container {c.failure.container} exited; "
        "the node's agent could not be asked which GPU or when exactly.",
        remedy="drain",
    )
    v.add("pod", c.exit_line())
    for s in flagged:
        v.add("node", s.text + (f" (since {iso(s.since)})" if s.since else ""))
    add_allocation(v, c)
    return v


def container_vanished(c: Case) -> Verdict | None:
    """ContainerStatusUnknown: the kubelet could not find the container any more (a node
    reboot, a runtime restart); its exit code 137 is stamped, no signal was sent."""
    f = c.failure
    if f.reason != "ContainerStatusUnknown":
        return None
    ready, since = node_ready(c.facts.node)
    back = (
        f"; node {c.node} is Ready again only since {iso(since)}"
        if ready and since is not None and f.finished is not None and since > f.finished
        else ""
    )
    v = Verdict(
        "infrastructure",
        "medium",
        f"Infrastructure: container {f.container} vanished: the kubelet could not locate it "
        f"when the pod was terminated (a node reboot or container-runtime restart){back}.",
    )
    v.add("pod", c.exit_line())
    if back:
        v.add("node", back.removeprefix("; "))
    add_clean(v, c)
    return v


def killed_by_signal(c: Case) -> Verdict | None:
    """Exit 137/143 (SIGKILL/SIGTERM) from outside, not the OOM killer: who sent it?"""
    f = c.failure
    sig = {137: 9, 143: 15}.get(f.exit_code or 0) or f.signal
    if sig not in (9, 15):
        return None
    name = "SIGKILL" if sig == 9 else "SIGTERM"
    probe = next(
        (
            e
            for e in c.events
            if e.get("reason") in ("Killing", "Unhealthy")
            and "probe" in str(e.get("message", "")).lower()
        ),
        None,
    )
    if probe is not None:
        v = Verdict(
            "application",
            "medium",
            f"Container {f.container} was killed ({name}) after failing its probe: it stopped "
            "answering.",
        )
        v.add("pod", c.exit_line())
        v.add("events", f"{probe.get('reason')}: {probe.get('message')}")
        return v
    infra = [e for e in c.events if e.get("reason") in INFRA_EVENTS]
    if infra:
        e = infra[-1]
        v = Verdict(
            "infrastructure",
            "medium",
            f"Container {f.container} was stopped ({name}) from outside: {e.get('reason')}.",
        )
        v.add("pod", c.exit_line())
        v.add("events", f"{e.get('reason')}: {e.get('message')}")
        return v
    v = Verdict(
        "unknown",
        "low",
        f"Container {f.container} was stopped with {name} (exit {f.exit_code}) from outside, "
        "not by the OOM killer; nothing recorded says who (a deletion, a rollout, a "
        "preemption, or a timeout in the job's launcher).",
    )
    v.add("pod", c.exit_line())
    add_clean(v, c)
    return v


def node_not_ready_in_run(c: Case) -> Verdict | None:
    ready, since = node_ready(c.facts.node)
    if ready is not False or c.window is None:
        return None
    if since is not None and since > c.window.hi:
        return None  # the node went NotReady after the exit: noted, not the cause
    when = f" since {iso(since)}" if since else ""
    v = Verdict(
        "infrastructure",
        "medium",
        f"Infrastructure: node {c.node} is NotReady{when}; container {c.failure.container} "
        f"exited with code {c.failure.exit_code} while the node was failing.",
    )
    v.add("pod", c.exit_line())
    return v


def gpu_oom(c: Case) -> Verdict | None:
    """CUDA out of memory: the workload's sizing. On a MIG slice the memory it had is the
    slice's (a 1g.10gb slice has ~10 GB of an 80 GB GPU), which the answer says."""
    if not matches("gpu_oom", c.message):
        return None
    held = c.slices[0] if c.slices else None
    profiles = sorted(profiles_requested(pod_requests(c.pod)))
    profile = (held or {}).get("profile") or (profiles[0] if profiles else None)
    if profile is None:
        v = Verdict(
            "application",
            "high",
            f"Application: container {c.failure.container} ran out of GPU memory (CUDA out of "
            "memory): the workload needs a smaller batch/model shard or a larger GPU.",
        )
    else:
        mib = (held or {}).get("memory_mib")
        size = f" ({mib} MiB)" if mib else ""
        v = Verdict(
            "application",
            "high",
            f"Application: container {c.failure.container} ran out of GPU memory (CUDA out of "
            f"memory) on its MIG {profile} slice{size}, which has only part of the GPU's "
            "memory: the workload needs a smaller batch/model shard, a larger MIG profile or "
            "a whole GPU.",
        )
    v.add("pod", c.exit_line())
    v.add("pod", f"termination message: {first_lines(c.message, 300)}")
    if profile is not None:
        v.add("allocation", _slice_memory(c, held, profile))
    add_clean(v, c)
    return v


def _slice_memory(c: Case, held: dict[str, Any] | None, profile: str) -> str:
    """The memory a MIG pod had: its slice's, against its GPU's."""
    index = (held or {}).get("index")
    gpu: dict[str, Any] = next(
        (
            g
            for g in (c.facts.inventory or {}).get("gpus") or []
            if index is not None and g.get("index") == index
        ),
        {},
    )
    total = gpu.get("memory_total_mib")
    whole = f" of GPU {index}'s {total} MiB" if total else ""
    if held is not None and held.get("memory_mib"):
        return (
            f"the pod's GPU memory is its MIG slice's ({pod_slice_label(held)}): "
            f"{held['memory_mib']} MiB{whole}"
        )
    return f"the pod requested a MIG {profile} slice: about {profile.split('.')[-1]} of GPU memory"


def gpu_error_unchecked(c: Case) -> Verdict | None:
    if c.xids_checked or not (matches("cuda", c.message) or matches("hardware", c.message)):
        return None
    v = Verdict(
        "unknown",
        "low",
        f"Container {c.failure.container} failed with a GPU-related error, but the node's "
        "XIDs could not be read, so hardware cannot be ruled in or out.",
    )
    v.add("pod", c.exit_line())
    v.add("pod", f"termination message: {first_lines(c.message, 300)}")
    return v


def nccl_system_error(c: Case) -> Verdict | None:
    """NCCL's "unhandled system error" / "remote process exited or there was a network
    error" with no GPU evidence on the pod's GPUs: a failed system call (socket, InfiniBand,
    /dev/shm) or a peer rank that died, rarely the process's own code."""
    if not matches("nccl_system", c.message):
        return None
    v = Verdict(
        "unknown",
        "low",
        f"Unknown: container {c.failure.container} failed on an NCCL system/network error; no "
        "XID on its GPUs explains it. A failed socket, InfiniBand or /dev/shm call, or another "
        "rank that died first, are the usual causes: check the job's other ranks "
        "(explain_job) and the node's network.",
    )
    v.add("pod", c.exit_line())
    v.add("pod", f"termination message: {first_lines(c.message, 300)}")
    add_clean(v, c)
    return v


def application_exit(c: Case) -> Verdict:
    """Nothing points at the GPU, the node or the control plane: the container's own exit."""
    f = c.failure
    earlier = [
        r
        for r in c.rows
        if r["timing"] == "during_run"
        and not r["near_exit"]
        and r["category"] == "hardware"
        and r["on_pod_gpu"] is not False
    ]
    if not c.xids_checked:
        confidence, tail = "low", "; the node's XIDs could not be checked."
    elif earlier:
        confidence = "low"
        tail = (
            f"; XID {earlier[0]['xid']} hit {gpu_label(earlier[0])} "
            f"{span(earlier[0]['offset_s'] or 0.0)} before the exit, but the container kept "
            "running after it and the GPU is not in a failed state now."
        )
    else:
        confidence = "medium"
        hit = [
            r
            for r in c.rows
            if r["timing"] == "during_run" and r["category"] in ("hardware", "driver")
        ]
        if not hit:
            tail = "; the node logged no hardware or driver XID during its run" + (
                " and its GPUs are healthy now."
                if (c.facts.health or {}).get("status") == "healthy"
                else "."
            )
        else:
            r = hit[0]
            if r["slice"] == "other":
                why = "the driver attributed it to another MIG slice than the pod's"
            elif r["on_pod_gpu"] is False:
                why = "it was not on the pod's GPUs"
            elif r["near_exit"] and gpu_free(c.message):
                why = "the exit names a cause such an XID does not produce"
            else:
                why = "the container kept running after it"
            tail = (
                f"; XID {r['xid']} on {gpu_label(r)} ({held_words(r)}) "
                f"{relative(r['offset_s'] or 0.0)} the exit is not the cause: {why}."
            )
    v = Verdict(
        "application",
        confidence,
        f"Application: container {f.container} exited with code {f.exit_code}{tail}",
    )
    v.add("pod", c.exit_line())
    if c.message:
        v.add("pod", f"termination message: {first_lines(c.message, 300)}")
    add_clean(v, c)
    return v


# Order matters: Kubernetes' own statements first, then the GPU evidence from the most to
# the least specific, then the container's own exit.
RULES: tuple[Rule, ...] = (
    completed,
    running_on_unready_node,
    running_but_disrupted,
    running,
    never_scheduled,
    not_started,
    deadline_exceeded,
    admission_without_gpu,
    ended_by_the_node,
    exits_cleanly_in_a_loop,
    cannot_start,
    host_oom,
    disrupted,
    hardware_xid_in_run,
    gpu_state_still_holds,
    pcie_link,
    *NODE_RULES,
    driver_xid_in_run,
    driver_message,
    no_device,
    application_xid_in_run,
    memory_event_agrees,
    gpu_bad_now,
    cluster_gpu_condition,
    container_vanished,
    killed_by_signal,
    node_not_ready_in_run,
    gpu_oom,
    gpu_error_unchecked,
    nccl_system_error,
)


# Rules whose verdict rests on Kubernetes' own record of who ended the pod (the kubelet's
# OOMKilled, status.reason, DisruptionTarget, PodScheduled): data the agent could not give
# cannot change it, so missing data does not lower their confidence.
SETTLED_BY_KUBERNETES = {
    completed.__name__,
    never_scheduled.__name__,
    ended_by_the_node.__name__,
    host_oom.__name__,
    disrupted.__name__,
}


def decide(c: Case) -> Verdict:
    """Run the rules; the first that decides gives the verdict. Then the cluster's own
    signals about the node join the evidence of any failure."""
    for rule in RULES:
        v = rule(c)
        if v is not None:
            v.rule = rule.__name__
            break
    else:
        v = application_exit(c)
        v.rule = application_exit.__name__
    qualify(v, c, settled=v.rule in SETTLED_BY_KUBERNETES)
    if v.verdict != "none":
        add_slices(v, c)
    if v.verdict != "none" or c.failure.kind == "running":
        for s in c.signals:
            v.add("node", s.text + (f" (since {iso(s.since)})" if s.since else ""))
    ready, since = node_ready(c.facts.node)
    if ready is False and c.window is not None and since is not None and since > c.window.hi:
        v.notes.append(
            f"Node {c.node} went NotReady at {iso(since)}, after the exit: not the cause, but "
            "what the node would have reported since is not known."
        )
    return v
