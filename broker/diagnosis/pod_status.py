"""What a pod's status says: its failure (the most recent container termination, a
wait that is not a normal start, eviction, unschedulability), its containers, its owner,
and the time helpers for Kubernetes' RFC 3339 stamps. Pure functions over pod JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

# Pod-level status reasons that mean the node or the control plane ended the pod.
POD_INFRA_REASONS = {
    "Evicted": "evicted by the kubelet",
    "NodeLost": "lost with its node",
    "UnexpectedAdmissionError": "rejected by the kubelet at admission",
    "Shutdown": "ended by a node shutdown",
    "Terminated": "ended by a node shutdown",
    "NodeShutdown": "ended by a node shutdown",
    "Preempting": "preempted",
    "DeadlineExceeded": "stopped at its activeDeadlineSeconds",
}
# Waiting reasons that are part of a normal start.
_STARTING = {"ContainerCreating", "PodInitializing", ""}


@dataclass
class Failure:
    """What went wrong with the pod, as its status says."""

    kind: str  # none | running | terminated | restarted | waiting | unschedulable |
    #            pending | evicted
    container: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    started: float | None = None
    finished: float | None = None
    restarts: int = 0
    previous: bool = False  # the failure is the container's last state (it restarted since)
    init: bool = False


# -- time helpers ---------------------------------------------------------------------


def parse_time(value: Any) -> float | None:
    """RFC 3339 (``2026-11-28T03:27:40Z``, fractional seconds allowed) -> epoch seconds."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(seconds: float) -> str:
    """2 s, 4 min 10 s, 1 h 5 min."""
    s = abs(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m} min {r} s" if r else f"{m} min"
    h, r = divmod(s, 3600)
    return f"{h} h {r // 60} min" if r >= 60 else f"{h} h"


def relative(offset: float) -> str:
    if abs(offset) < 1:
        return "at the moment"
    return f"{span(offset)} {'before' if offset < 0 else 'after'}"


# -- reading the pod ------------------------------------------------------------------


def first_lines(text: str | None, limit: int = 600) -> str | None:
    if not text:
        return None
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def find_failure(pod: Mapping[str, Any]) -> Failure:
    """The failure the pod's status records (the most recent one), or why there is none."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase = status.get("phase") or "Unknown"
    statuses = [(True, cs) for cs in status.get("initContainerStatuses") or []] + [
        (False, cs) for cs in status.get("containerStatuses") or []
    ]
    reason = status.get("reason")
    if reason in POD_INFRA_REASONS:
        latest = max(
            (
                parse_time((cs.get("state") or {}).get("terminated", {}).get("finishedAt")) or 0.0
                for _, cs in statuses
            ),
            default=0.0,
        )
        return Failure(
            kind="evicted",
            reason=str(reason),
            message=status.get("message"),
            finished=latest or None,
        )
    if not spec.get("nodeName"):
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return Failure(
                    kind="unschedulable",
                    reason=cond.get("reason") or "Unschedulable",
                    message=cond.get("message"),
                )
        return Failure(kind="pending", reason="not scheduled yet")

    candidates: list[Failure] = []
    for init, cs in statuses:
        name = cs.get("name")
        restarts = int(cs.get("restartCount") or 0)
        for previous, key in ((False, "state"), (True, "lastState")):
            term = (cs.get(key) or {}).get("terminated")
            if not term:
                continue
            code = term.get("exitCode")
            if code == 0 and term.get("reason") != "OOMKilled":
                continue
            candidates.append(
                Failure(
                    kind="restarted" if previous else "terminated",
                    container=name,
                    exit_code=code,
                    signal=term.get("signal"),
                    reason=term.get("reason"),
                    message=term.get("message"),
                    started=parse_time(term.get("startedAt")),
                    finished=parse_time(term.get("finishedAt")),
                    restarts=restarts,
                    previous=previous,
                    init=init,
                )
            )
    if candidates:
        return max(candidates, key=lambda f: (f.finished or 0.0, not f.previous))
    for init, cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and str(waiting.get("reason") or "") not in _STARTING:
            return Failure(
                kind="waiting",
                container=cs.get("name"),
                reason=waiting.get("reason"),
                message=waiting.get("message"),
                restarts=int(cs.get("restartCount") or 0),
                init=init,
            )
    if phase == "Succeeded":
        return Failure(kind="none", reason="Completed")
    if phase == "Running":
        return Failure(kind="running")
    return Failure(kind="pending", reason=phase)


def container_spec(pod: Mapping[str, Any], name: str | None) -> Obj:
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == name:
            return dict(c)
    return {}


def owner_of(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if not owner:
        return None
    return str(owner.get("kind")), str(owner.get("name"))


def containers_view(pod: Mapping[str, Any]) -> list[Obj]:
    """Per container: state, reason, exit code, restarts, and the last termination."""
    status = pod.get("status") or {}
    out: list[Obj] = []
    for init, key in ((True, "initContainerStatuses"), (False, "containerStatuses")):
        for cs in status.get(key) or []:
            state = cs.get("state") or {}
            kind = next(iter(state), "unknown")
            detail = state.get(kind) or {}
            last = (cs.get("lastState") or {}).get("terminated")
            out.append(
                {
                    "name": cs.get("name"),
                    "init": init,
                    "state": kind,
                    "reason": detail.get("reason"),
                    "exit_code": detail.get("exitCode"),
                    "restarts": int(cs.get("restartCount") or 0),
                    "ready": bool(cs.get("ready")),
                    "last_termination": None
                    if not last
                    else {
                        "exit_code": last.get("exitCode"),
                        "reason": last.get("reason"),
                        "finished_at": last.get("finishedAt"),
                    },
                }
            )
    return out


def memory_limit(pod: Mapping[str, Any], container: str | None) -> str | None:
    res = container_spec(pod, container).get("resources") or {}
    return (res.get("limits") or {}).get("memory") or (res.get("requests") or {}).get("memory")
