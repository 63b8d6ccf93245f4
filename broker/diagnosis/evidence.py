"""What the verdict rules share: the :class:`Verdict` a rule returns, the :class:`Case` it
reads, the vocabulary (XID groups, message patterns, waiting reasons) and the helpers that
write evidence lines. Pure; :mod:`broker.diagnosis.rules` holds the rules themselves."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from broker.diagnosis.allocation import covers_gpu
from broker.diagnosis.causal import RunWindow, checked_from
from broker.diagnosis.facts import Facts
from broker.diagnosis.mig import pod_slice_label
from broker.diagnosis.node_facts import NodeFacts, node_facts
from broker.diagnosis.pod_status import (
    Failure,
    first_lines,
    iso,
    relative,
    span,
)
from broker.diagnosis.signals import NodeSignal
from broker.diagnosis.timeline import gpu_label

Obj = dict[str, Any]

# Waiting reasons that are not the container's own fault.
INFRA_WAITING = {
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
INFRA_EVENTS = {
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
# XIDs NVIDIA's catalog puts on the PCIe link rather than the code ("mostly PCIe link
# quality, rarely the application"): judged with the GPU's PCIe replay count.
PCIE_XIDS = {32}
PCIE_REPLAY_WARN = 100  # the agent's warning threshold (agent/health.py)
# XIDs whose remedy is a GPU reset (memory errors, GSP/firmware), not a reboot.
RESET_XIDS = {48, 63, 64, 95, 119, 120, 140, 109, 62, 158}
CONTAINED_XIDS = {94}  # only the affected app restarts; the GPU keeps working
# XIDs the catalog describes as driver firmware errors / illegal accesses by the driver
# although its bucket says IGNORE (the driver recovers): the driver's, not informational.
DRIVER_FIRMWARE_XIDS = {37, 38, 66, 67}
MEMORY_EVENT_XIDS = {63}  # repair events: the error itself is another XID

MESSAGE_PATTERNS: dict[str, re.Pattern[str]] = {
    "driver": re.compile(
        r"driver/library version mismatch|driver version is insufficient|forward compatibility"
        r"|nvidia-container-cli|driver not loaded|failed to initiali[sz]e nvml"
        r"|system not yet initiali[sz]ed|cuda_error_system_driver_mismatch"
        r"|couldn't communicate with the nvidia driver",
        re.I,
    ),
    "no_device": re.compile(
        r"no cuda-capable device|found no nvidia driver|no nvidia gpu|cuda_error_no_device"
        r"|no cuda gpus are available",
        re.I,
    ),
    "gpu_oom": re.compile(r"cuda out of memory|cuda_error_out_of_memory|outofmemoryerror", re.I),
    # NCCL's failed system call (socket, InfiniBand verbs, /dev/shm) or a peer that went
    # away: the network, the node or another rank, rarely this process's own code.
    "nccl_system": re.compile(
        r"unhandled system error|ncclSystemError|remote process exited or there was a network"
        r"|ncclRemoteError",
        re.I,
    ),
    "hardware": re.compile(
        r"uncorrectable ecc|ecc error|fallen off the bus|gpu is lost|gpu has fallen"
        r"|unspecified launch failure|nvlink|hardware",
        re.I,
    ),
    "cuda": re.compile(r"cuda|nccl|cublas|cudnn|gpu", re.I),
}
# A message that names its error: a Python/Java-style exception class or a C errno.
NAMED_ERROR = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b|\[Errno \d+\]")
# What each XID's meaning makes likely in the application's own message.
XID_WORDS: dict[int, re.Pattern[str]] = {
    79: re.compile(r"fallen off the bus|gpu is lost|unspecified launch failure|device lost", re.I),
    48: re.compile(r"ecc|uncorrectable", re.I),
    63: re.compile(r"ecc|uncorrectable", re.I),
    64: re.compile(r"ecc|uncorrectable", re.I),
    94: re.compile(r"ecc|uncorrectable|contained", re.I),
    95: re.compile(r"ecc|uncorrectable|uncontained", re.I),
    140: re.compile(r"ecc|uncorrectable|illegal memory access", re.I),
    74: re.compile(r"nvlink|nccl", re.I),
    32: re.compile(r"unspecified launch failure|pcie|bus", re.I),
    13: re.compile(r"illegal memory access|illegal address|out of range|device-side assert", re.I),
    31: re.compile(r"illegal memory access|illegal address|page fault|mmu", re.I),
    43: re.compile(r"illegal|assert|fault", re.I),
}


@dataclass
class Verdict:
    """A rule's decision and the evidence behind it."""

    verdict: str
    confidence: str
    summary: str
    rule: str = ""
    evidence: list[Obj] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    remedy: str | None = None  # restart_app | reset_gpu | drain | pcie | None
    gpus: list[int] = field(default_factory=list)  # GPUs the remedy is for
    steps: list[Obj] = field(default_factory=list)  # next steps only this rule knows

    def add(self, source: str, text: str) -> None:
        entry = {"source": source, "text": text}
        if entry not in self.evidence:
            self.evidence.append(entry)


@dataclass
class Case:
    """What every rule reads: the facts and what was derived from them."""

    facts: Facts
    pod: Obj
    failure: Failure
    rows: list[Obj]  # XID groups with timing (see explain._xid_rows)
    assignment: Obj
    events: list[Obj]
    window: RunWindow | None
    states: dict[int, list[tuple[str, str]]]  # persistent GPU states now
    signals: list[NodeSignal]
    slices: list[Obj] = field(default_factory=list)  # MIG slices it holds (mig.pod_slices)

    @property
    def ns_name(self) -> str:
        return f"{self.facts.namespace}/{self.facts.name}"

    @property
    def node(self) -> str | None:
        return (self.pod.get("spec") or {}).get("nodeName")

    @property
    def message(self) -> str:
        return self.failure.message or ""

    @cached_property
    def host(self) -> NodeFacts:
        """The rest of the node: SXids, GPU resets, PCIe, Fabric Manager, RDMA ports."""
        return node_facts(self.facts, self.window, self.assignment)

    @property
    def xids_checked(self) -> bool:
        return self.facts.xids is not None

    def exit_line(self) -> str:
        f = self.failure
        who = f"{'init ' if f.init else ''}container {f.container}"
        code = f"exit code {f.exit_code}" if f.exit_code is not None else "no exit code"
        reason = f" ({f.reason})" if f.reason else ""
        started = f" after running since {iso(f.started)}" if f.started else ""
        when = f" at {iso(f.finished)}" if f.finished else ""
        again = f"; it has restarted {f.restarts} time(s)" if f.previous and f.restarts else ""
        return f"{who} terminated with {code}{reason}{when}{started}{again}"

    def window_text(self) -> str:
        assert self.window is not None
        return self.window.describe(checked_from(self.facts.xids))

    def causal(self, categories: set[str], xids: set[int] | None = None) -> list[Obj]:
        """XID rows in the run, near the exit, on a GPU the pod held or may have held."""
        return [
            r
            for r in self.rows
            if r["timing"] == "during_run"
            and r["near_exit"]
            and r["on_pod_gpu"] is not False
            and (r["xid"] in xids if xids is not None else r["category"] in categories)
        ]

    def slice_only(self) -> bool:
        """The pod held a MIG slice: its GPU is known, the slice an XID hit is not."""
        return any(g.get("mig_profile") or g.get("mig_uuid") for g in self.gpus_held())

    def gpus_held(self) -> list[Obj]:
        return list(self.assignment.get("gpus") or []) if self.assignment.get("known") else []


Rule = Callable[[Case], Verdict | None]


# -- helpers --------------------------------------------------------------------------


def matches(kind: str, text: str | None) -> bool:
    return bool(text) and bool(MESSAGE_PATTERNS[kind].search(text or ""))


def corroborates(row: Mapping[str, Any], message: str | None) -> bool:
    """The application's own message says what this XID means."""
    pattern = XID_WORDS.get(int(row.get("xid") or 0))
    if pattern is not None:
        return bool(message) and bool(pattern.search(message or ""))
    if row.get("category") in ("hardware", "driver"):
        return matches(str(row.get("category")), message)
    return False


def gpu_free(message: str | None) -> bool:
    """A termination message that names an error (an exception, an errno) and says nothing
    of the GPU, its driver or CUDA (a full disk, a KeyError): what a GPU fault does not
    produce. A message that names no error ("exit") is not evidence either way."""
    return bool(NAMED_ERROR.search(message or "")) and not any(
        matches(kind, message) for kind in ("cuda", "hardware", "driver", "no_device", "gpu_oom")
    )


def quote(row: Mapping[str, Any], message: str | None) -> str | None:
    """The line of the application's message that matches what the XID means."""
    pattern = XID_WORDS.get(int(row.get("xid") or 0))
    for line in (message or "").splitlines():
        if pattern is not None and pattern.search(line):
            return first_lines(line.strip(), 200)
    return None


def closeness(row: Mapping[str, Any], message: str | None) -> tuple[bool, bool, float]:
    """Sort key for the XID most likely behind the failure: one the message agrees with,
    then one on a GPU the pod is known to hold, then the nearest to the exit."""
    return (
        not corroborates(row, message),
        row.get("on_pod_gpu") is not True,
        abs(float(row.get("offset_s") or 0.0)),
    )


def held_words(row: Mapping[str, Any]) -> str:
    where = row.get("slice")
    if where == "own":
        return "the MIG slice this pod held"
    if where == "other":
        return "another MIG slice than this pod's"
    if where == "whole":
        return "a GPU this pod held a MIG slice of, an XID that ends every slice"
    if where == "unknown" and row.get("on_pod_gpu") is True:
        return "a GPU this pod held a MIG slice of, on a slice that is not known"
    return {True: "a GPU this pod held", None: "a GPU this pod may have held"}.get(
        row.get("on_pod_gpu"), "a GPU this pod did not hold"
    )


def slice_unsure(row: Mapping[str, Any]) -> bool:
    """An XID on a GPU the pod holds a MIG slice of, with no tag that says it was the pod's
    slice (or one that may be): weaker evidence than an XID on a whole GPU."""
    return row.get("slice") == "unknown"


def xid_line(row: Mapping[str, Any]) -> str:
    count = int(row.get("count") or 1)
    times = "once" if count == 1 else f"{count} times"
    return (
        f"XID {row['xid']} {row['name']} ({row['severity']}) on {gpu_label(row)}, "
        f"{held_words(row)}: {times}, nearest {relative(row['offset_s'] or 0.0)} the exit"
    )


def health_gpus(health: Mapping[str, Any] | None) -> list[Obj]:
    return [g for g in (health or {}).get("gpus") or [] if isinstance(g, dict)]


def add_health(v: Verdict, c: Case, indexes: Sequence[int] | None = None) -> None:
    """The health now of the GPUs named (or every unhealthy GPU the pod may have held)."""
    for g in health_gpus(c.facts.health):
        if indexes is not None and g.get("index") not in indexes:
            continue
        if g.get("status") == "healthy":
            continue
        if covers_gpu(c.assignment, g.get("index"), g.get("uuid")) is False:
            continue
        issues = [i for i in g.get("issues") or [] if i.get("severity") != "info"]
        text = str(issues[0].get("message")) if issues else "no issue"
        v.add("health", f"GPU {g.get('index')} is {g.get('status')} now: {text}")


def add_allocation(v: Verdict, c: Case) -> None:
    if c.assignment.get("known") and c.assignment.get("source"):
        v.add("allocation", f"GPUs of the pod: {c.assignment['source']}")
    elif c.assignment.get("note"):
        v.add("allocation", str(c.assignment["note"]))
    for s in c.slices:
        v.add("allocation", f"the pod's MIG slice: {pod_slice_label(s)}")


def add_slices(v: Verdict, c: Case) -> None:
    """What the driver's GPU-instance tags say about the XIDs that count (in the run, or
    whose GPU state still holds) on GPUs where MIG enters into it."""
    rows = [r for r in c.rows if r.get("slice") and r["in_window"]]
    if not rows:
        return
    mine = "; ".join(pod_slice_label(s) for s in c.slices) or "not known"
    if any(r["slice"] in ("own", "other") for r in rows) and c.assignment.get("source"):
        # Which slice is the pod's decides these: say how that is known.
        v.add("allocation", f"GPUs of the pod: {c.assignment['source']}")
    for r in rows:
        what = f"XID {r['xid']} on {gpu_label(r)}"
        if r["slice"] == "own":
            text = (
                f"{what}: the driver attributed it to GPU instance {r['gpu_instance_id']}, "
                "the pod's own slice"
            )
        elif r["slice"] == "other":
            text = (
                f"{what}: the driver attributed it to another slice than the pod's ({mine}) "
                "and contains such an error there; the pod's slice kept running"
            )
        elif r["slice"] == "whole":
            tagged = (
                f"though the driver attributed it to GPU instance {r['gpu_instance_id']}, "
                if r.get("gpu_instance_id") is not None
                else ""
            )
            remedy = r.get("immediate_action") or r.get("recovery_action") or "critical"
            text = (
                f"{what}: {tagged}it takes the whole GPU down (NVIDIA: {remedy}), every "
                f"slice of it with it, the pod's ({mine}) included"
            )
        else:
            text = (
                f"{what}: no GPU-instance tag ties it to the pod's slice ({mine}); which "
                "slice of the GPU it hit is not known"
            )
        v.add("xid", text)


def add_clean(v: Verdict, c: Case) -> None:
    """What rules the GPUs out, true of the window it names."""
    if not c.xids_checked:
        v.notes.append("The node's XIDs could not be read: hardware was not ruled out by them.")
        return
    if c.window is not None:
        causal = [
            r
            for r in c.rows
            if r["timing"] == "during_run" and r["category"] in ("hardware", "driver")
        ]
        if not causal:
            v.add("xid", f"no hardware or driver XID on the node during {c.window_text()}")
        for r in c.rows:
            if r["timing"] == "after_exit":
                v.notes.append(
                    f"XID {r['xid']} ({r['name']}) on {gpu_label(r)} came "
                    f"{span(r['offset_s'] or 0.0)} after the exit: it cannot have caused it."
                )
            elif r["timing"] == "before_start" and r["category"] == "hardware":
                v.notes.append(
                    f"XID {r['xid']} ({r['name']}) on {gpu_label(r)} came before the "
                    "container started and its GPU is not in a failed state now: not the cause."
                )
    if c.facts.health is not None:
        status = c.facts.health.get("status")
        v.add("health", f"GPU health on the node now: {status} ({c.facts.health.get('summary')})")


def remedy_for(rows: Sequence[Mapping[str, Any]]) -> str:
    codes = {int(r.get("xid") or 0) for r in rows}
    if codes and codes <= CONTAINED_XIDS:
        return "restart_app"
    if codes & RESET_XIDS or any(r.get("immediate_action") == "RESET_GPU" for r in rows):
        return "reset_gpu"
    return "drain"


def gpu_indexes(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    return sorted({int(r["gpu_index"]) for r in rows if isinstance(r.get("gpu_index"), int)})
