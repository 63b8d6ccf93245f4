"""``explain_job``: why a distributed job died, told as one chain of evidence.

A multi-node job fails as a cascade: one rank dies (a GPU fault, an OOM, a bug) and every
other rank then exits on a collective timeout. The order is in the pods' own status (each
container's ``finishedAt``), so: find the job's pods (:mod:`broker.kube.workloads`), order
their failures, explain the first one fully with :func:`explain_pod` (and a few of the
others, to show what they died of), and call the rest what they are.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from broker.diagnosis.gather import explain_pod
from broker.diagnosis.pod_status import Failure, find_failure, iso, span
from broker.errors import BrokerError
from broker.fleet.context import BrokerContext
from broker.kube.reader import ClusterReader
from broker.kube.workloads import find_job_pods, pod_rank

__all__ = ["SECONDARY_PATTERN", "explain_job", "order_failures"]

Obj = dict[str, Any]
EXPLAINED_MAX = 6  # full explanations: the first failure plus a few others
TIE_S = 5.0  # failures closer than this cannot be ordered with confidence (clock skew)
PODS_SHOWN = 20
# What a rank that died *because another rank died* says: NCCL/Gloo/c10d timeouts and aborts.
SECONDARY_PATTERN = re.compile(
    r"NCCL|collective operation timeout|Watchdog caught collective|ProcessGroup\w*|c10d|"
    r"Rendezvous\w*(Timeout|Closed)|Connection reset by peer|remote process exited|"
    r"ncclRemoteError|ncclSystemError|Gloo",
    re.IGNORECASE,
)
_FAILED = {"terminated", "restarted", "evicted"}


async def explain_job(ctx: BrokerContext, job: str, namespace: str) -> Obj:
    """The explain_job answer for ``job`` in ``namespace``. Raises NotFound / BrokerError."""
    if not job.strip() or not namespace.strip():
        raise BrokerError("give the job's name and its namespace")
    reader = ClusterReader(await ctx.api())
    found = await find_job_pods(reader, namespace, job)
    ordered = order_failures(found.pods)
    failed = [entry for entry in ordered if entry["failed"]]
    header: Obj = {
        "job": {"kind": found.kind, "name": job, "namespace": namespace},
        "pods": {"total": len(found.pods), "failed": len(failed)},
        "nodes": sorted({str(e["node"]) for e in ordered if e["node"]}),
    }
    if not failed:
        states = Counter(str(e["state"]) for e in ordered)
        return {
            **header,
            "verdict": "none",
            "confidence": "high",
            "summary": f"no pod of {found.kind} {job} has failed "
            f"({', '.join(f'{n} {s}' for s, n in sorted(states.items()))})",
            "first_failure": None,
            "chain": [],
            "pod_list": _pod_list(ordered),
        }
    explained = await _explain_some(ctx, namespace, failed)
    first = failed[0]
    first_answer = explained.get(first["pod"]) or {}
    for entry in failed:
        answer = explained.get(entry["pod"])
        if answer is not None:
            entry["verdict"] = answer.get("verdict")
            entry["confidence"] = answer.get("confidence")
        # A rank that timed out in a collective after the first failure died of it, whatever
        # its own exit looked like (usually "application": the NCCL watchdog aborted it).
        cascade = entry is not failed[0] and entry["secondary"]
        if cascade and entry.get("verdict") in (None, "application", "unknown"):
            entry["verdict"] = "cascade"
    secondary = [e for e in failed[1:] if e["secondary"]]
    verdict = str(first_answer.get("verdict") or "unknown")
    confidence = _confidence(first_answer, failed)
    chain = _chain(first, first_answer, failed, secondary)
    return {
        **header,
        "verdict": verdict,
        "confidence": confidence,
        "summary": chain[0],
        "first_failure": {
            "pod": first["pod"],
            "rank": first["rank"],
            "node": first["node"],
            "finished_at": iso(first["finished"]),
            "exit_code": first["exit_code"],
            "reason": first["reason"],
            "explanation": _compact(first_answer),
        },
        "chain": chain,
        "verdicts": dict(Counter(str(e.get("verdict") or "not explained") for e in failed)),
        "pod_list": _pod_list(ordered),
    }


def order_failures(pods: Sequence[Mapping[str, Any]]) -> list[Obj]:
    """One entry per pod, failed ones first in the order they failed (then the others)."""
    entries = [_entry(p, find_failure(p)) for p in pods]
    failed = sorted(
        (e for e in entries if e["failed"]),
        key=lambda e: (e["finished"] is None, e["finished"] or 0.0, e["pod"]),
    )
    rest = sorted((e for e in entries if not e["failed"]), key=lambda e: e["pod"])
    return failed + rest


def _entry(pod: Mapping[str, Any], failure: Failure) -> Obj:
    meta = pod.get("metadata") or {}
    failed = failure.kind in _FAILED and not (
        failure.kind == "terminated" and failure.exit_code == 0
    )
    message = failure.message or ""
    return {
        "pod": str(meta.get("name")),
        "rank": pod_rank(pod),
        "node": (pod.get("spec") or {}).get("nodeName"),
        "state": failure.kind if failure.kind != "none" else (pod.get("status") or {}).get("phase"),
        "failed": failed,
        "finished": failure.finished,
        "exit_code": failure.exit_code,
        "reason": failure.reason,
        "secondary": bool(SECONDARY_PATTERN.search(message)),
        "message": message[:300] if message else None,
    }


async def _explain_some(
    ctx: BrokerContext, namespace: str, failed: Sequence[Obj]
) -> dict[str, Obj]:
    """explain_failure for the first failure, the first non-secondary others, and a sample."""
    chosen = [failed[0]]
    chosen += [e for e in failed[1:] if not e["secondary"]][: EXPLAINED_MAX - 2]
    chosen += [e for e in failed[1:] if e["secondary"] and e not in chosen][:1]
    out: dict[str, Obj] = {}

    async def one(entry: Obj) -> None:
        try:
            out[entry["pod"]] = await explain_pod(ctx, entry["pod"], namespace)
        except BrokerError as exc:
            out[entry["pod"]] = {"verdict": "unknown", "confidence": "low", "summary": str(exc)}

    async with anyio.create_task_group() as tg:
        for entry in chosen[:EXPLAINED_MAX]:
            tg.start_soon(one, entry)
    return out


def _confidence(first_answer: Mapping[str, Any], failed: Sequence[Obj]) -> str:
    """The first pod's confidence, lowered when the first failure is not clearly first."""
    confidence = str(first_answer.get("confidence") or "low")
    if len(failed) > 1:
        a, b = failed[0]["finished"], failed[1]["finished"]
        close = a is None or b is None or b - a < TIE_S
        if close and not failed[1]["secondary"]:
            return {"high": "medium", "medium": "low"}.get(confidence, "low")
    return confidence


def _who(entry: Mapping[str, Any]) -> str:
    rank = f"rank {entry['rank']} " if entry["rank"] is not None else ""
    node = f" on {entry['node']}" if entry["node"] else ""
    return f"{rank}({entry['pod']}){node}"


def _chain(
    first: Obj, answer: Mapping[str, Any], failed: Sequence[Obj], secondary: Sequence[Obj]
) -> list[str]:
    when = iso(first["finished"]) or "at an unknown time"
    cause = str(answer.get("summary") or "no explanation could be gathered")
    lines = [f"{_who(first)} failed first ({when}): {cause}"]
    later = len(failed) - 1
    if later:
        gap = ""
        if first["finished"] is not None and failed[1]["finished"] is not None:
            gap = f", the next {span(failed[1]['finished'] - first['finished'])} later"
        timeouts = f"; {len(secondary)} of them with NCCL/collective timeouts" if secondary else ""
        lines.append(f"{later} other pod(s) failed afterwards{gap}{timeouts}")
        others = [
            e for e in failed[1:] if not e["secondary"] and e.get("verdict") not in (None, "none")
        ]
        for e in others[:3]:
            lines.append(f"{_who(e)}: {e.get('verdict')} ({e.get('reason') or e.get('exit_code')})")
    return lines


def _compact(answer: Mapping[str, Any]) -> Obj:
    keep = ("verdict", "confidence", "summary", "failure", "evidence", "next_steps")
    return {k: answer[k] for k in keep if k in answer}


def _pod_list(entries: Sequence[Obj]) -> Obj:
    keys = ("pod", "rank", "node", "state", "exit_code", "reason")
    shown = []
    for e in entries[:PODS_SHOWN]:
        item: Obj = {k: e[k] for k in keys if e[k] is not None}
        if e["finished"] is not None:
            item["finished_at"] = iso(e["finished"])
        if e.get("verdict"):
            item["verdict"] = e["verdict"]
        if e["secondary"]:
            item["collective_timeout"] = True
        shown.append(item)
    return {
        "shown": shown,
        **({"more": len(entries) - PODS_SHOWN} if len(entries) > PODS_SHOWN else {}),
    }
