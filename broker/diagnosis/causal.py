"""Time as cause: the window in which an event can explain a container's failure, where
each XID falls against it, and the GPU states that still hold now. Pure functions.

An event explains a failure only if it happened while the container ran (after it
started, not after it exited, allowing a small clock-skew grace between the node's kernel
log and the kubelet's stamps), or if it left the GPU in a state that still holds (a GPU
still lost, or still waiting for a reset, explains every later failure on it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.diagnosis.pod_status import Failure, iso, parse_time, span

Obj = dict[str, Any]

CLOCK_SKEW_S = 30.0  # kernel log vs kubelet clocks; the kubelet stamps whole seconds
NEAR_EXIT_S = 900.0  # an XID this close before the exit can have ended the run
UNKNOWN_START_S = 900.0  # start unknown: look this far back from the exit

RESET_STATE = "recovery_action"  # the health check of a GPU waiting for a reset/reboot

# Health checks (agent/health.py) whose state holds until a reset, reboot or repair:
# a GPU in one of them fails every workload on it, whenever its XID was logged.
PERSISTENT_CHECKS: dict[str, str] = {
    "gpu_lost": "is lost (fallen off the bus)",
    "recovery_action": "waits for the reset or reboot the driver asked for",
    "row_remap_failure": "has failed row remapping (no spare rows)",
    "row_remap_pending": "has a row remap pending until a reset",
    "retired_pages_pending": "has memory pages waiting to be retired at a reset",
    "ecc_uncorrectable": "holds uncorrectable ECC errors until a reset",
}


@dataclass(frozen=True)
class RunWindow:
    """The container run a failure ended: [start - grace, end + grace]."""

    container: str | None
    start: float | None  # None: the status does not say when it started
    end: float
    grace_s: float = CLOCK_SKEW_S

    @property
    def lo(self) -> float:
        start = self.start if self.start is not None else self.end - UNKNOWN_START_S
        return start - self.grace_s

    @property
    def hi(self) -> float:
        return self.end + self.grace_s

    def describe(self, checked_from: float | None = None) -> str:
        """The window in words, clipped to where the XIDs were actually checked."""
        lo = self.lo if checked_from is None else max(self.lo, checked_from)
        who = f"container {self.container}" if self.container else "the container"
        if self.start is None:
            what = f"the {span(self.end - lo)} before {who} exited (its start is not recorded)"
        elif lo > self.lo + 1:
            what = f"the part of {who}'s run the node's log still holds"
        else:
            what = f"{who}'s run"
        return (
            f"{what}, {iso(lo)} to {iso(self.hi)} (±{span(self.grace_s)} for clock skew "
            "between the kernel log and the kubelet)"
        )


def run_window(f: Failure) -> RunWindow | None:
    """The run that ended in failure ``f`` (terminated or restarted), else None."""
    if f.kind not in ("terminated", "restarted") or f.finished is None:
        return None
    start = f.started if f.started is not None and f.started <= f.finished else None
    return RunWindow(f.container, start, f.finished)


def place(first: float, last: float, window: RunWindow) -> tuple[str, float, bool]:
    """Where an XID group (first..last occurrence) falls: ``before_start``,
    ``during_run`` or ``after_exit``; the offset to the exit of the occurrence nearest it
    within the run (or overall); whether that occurrence is near the exit."""
    if last < window.lo:
        timing = "before_start"
    elif first > window.hi:
        timing = "after_exit"
    else:
        timing = "during_run"
    if timing != "during_run":
        nearest = last if timing == "before_start" else first
    elif window.lo <= last <= window.hi:
        nearest = last  # groups keep first and last only: the latest one inside the run
    elif window.lo <= first <= window.hi:
        nearest = first
    else:
        nearest = last  # the group spans the run; no occurrence inside it is known
    offset = nearest - window.end
    near = timing == "during_run" and -NEAR_EXIT_S - window.grace_s <= offset <= window.grace_s
    return timing, offset, near


def gpu_states(health: Mapping[str, Any] | None) -> dict[int, list[tuple[str, str]]]:
    """Per GPU index: the persistent states its health reports now (check, message)."""
    out: dict[int, list[tuple[str, str]]] = {}
    for g in (health or {}).get("gpus") or []:
        if not isinstance(g, dict) or not isinstance(g.get("index"), int):
            continue
        for issue in g.get("issues") or []:
            check = str(issue.get("check") or "")
            if check in PERSISTENT_CHECKS:
                out.setdefault(int(g["index"]), []).append((check, str(issue.get("message"))))
    return out


def pcie_replays(health: Mapping[str, Any] | None, index: int | None) -> int | None:
    """The GPU's PCIe replay count from its health answer (None: not reported)."""
    for g in (health or {}).get("gpus") or []:
        if isinstance(g, dict) and g.get("index") == index:
            metrics = g.get("metrics") or {}
            value = metrics.get("pcie_replay_counter")
            if isinstance(value, int):
                return value
            # Flagged without a count: the replay check, or PCIe link checks (AER errors,
            # link width/speed below the maximum) where the agent reports them.
            if any(
                "pcie" in str(i.get("check")) or "aer" in str(i.get("check"))
                for i in g.get("issues") or []
            ):
                return -1
    return None


def checked_from(xids: Mapping[str, Any] | None) -> float | None:
    """Where the agent's XID answer starts (the kernel log may hold less than asked)."""
    return parse_time(((xids or {}).get("window") or {}).get("start"))
