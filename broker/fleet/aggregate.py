"""Turn per-node tool results into one answer that stays small at any node count.

Pure functions, no I/O. The answer to a fanned-out tool call is::

    {"tool": ..., "targeted": "every GPU node" | "node_selector ..." | ...,
     "summary": {"nodes": {"total", "ok", "failed"},
                 "status": {"critical", "degraded", "warning", "healthy"},
                 "unreachable": [{"kind", "reason", "count", "nodes"}],  # grouped by reason
                 "elapsed_s", "deadline_s"},
     "nodes":   [{"node", "status", "findings" | "result"}],   # worst first
     "more":    [{"node", "status"}],                            # beyond `limit`
     "healthy": [names],                                         # healthy: names only
     "truncated": {...},                                         # only when lists were cut
     "fleet":   {...},                                           # tool-specific roll-up
     "warnings": [...]}

Nodes that gave no answer are grouped by ``kind`` and reason (the node's own name in
the reason generalised), each group with a count and the first few names. Name lists
are capped and the whole default-detail answer is kept within :data:`ANSWER_BUDGET`
bytes whatever the node count; ``truncated`` then says how many names were left out
and how to page for them: ``statuses`` (e.g. ``["unreachable"]``) lists one entry per
matching node in ``nodes``, ``offset``/``limit`` page through them. ``findings`` is a
compact, tool-specific digest; ``result`` is the agent's full answer, given when one
node is targeted or ``detail="full"`` (which has no size budget).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from broker.fleet.causes import cause_key, names_out
from broker.fleet.pool import NodeResult

__all__ = [
    "ANSWER_BUDGET",
    "DETAILS",
    "FILTERS",
    "STATUSES",
    "aggregate",
    "aggregate_output_schema",
    "exit_code",
    "findings",
    "judge",
    "slim",
]

Json = dict[str, Any]
Detail = Literal["auto", "findings", "full"]

STATUSES = ("critical", "degraded", "warning", "healthy")  # worst first
DETAILS = ("auto", "findings", "full")
FILTERS = (*STATUSES, "unreachable")
ANSWER_BUDGET = 64 * 1024  # bytes of JSON, default detail, whatever the node count
NAMES_CAP = 200  # names per list (healthy, more) before `truncated` takes over
GROUP_NAMES = 5  # names shown per group of unreachable nodes / fleet configuration
GROUPS_CAP = 20  # distinct failure reasons listed; the rest are summed as "other"
_RANK = {s: i for i, s in enumerate(STATUSES)}
_SEVERITY_RANK = {"critical": 0, "degraded": 1, "warning": 2, "info": 3}

# Exit codes of `broker sweep` / `broker diagnose` (documented in --help and the README).
EXIT_OK = 0
EXIT_CRITICAL = 2
EXIT_UNREACHABLE = 3


# -- per-tool judgement ------------------------------------------------------------------
def judge(tool: str, result: Mapping[str, Any]) -> str:
    """The node's status according to one tool's answer."""
    if tool == "get_gpu_health":
        status = str(result.get("status", "healthy"))
        return status if status in _RANK else "warning"
    if tool == "analyze_xid_errors":
        worst = (result.get("summary") or {}).get("worst_severity")
        return {"critical": "critical", "warning": "warning"}.get(str(worst), "healthy")
    gpus = result.get("gpus") or []
    if tool in ("get_gpu_inventory", "get_gpu_processes"):
        if any(g.get("lost") for g in gpus):
            return "critical"
        if any(g.get("error") for g in gpus):
            return "warning"
        return "healthy"
    if tool == "get_nvlink_topology":
        return "warning" if _bad_links(result) else "healthy"
    return "healthy"


_LINK_COUNTERS = ("replay_errors", "recovery_errors", "crc_flit_errors", "crc_data_errors")


def _bad_links(result: Mapping[str, Any]) -> list[Json]:
    bad: list[Json] = []
    for gpu in result.get("gpus") or []:
        for link in gpu.get("links") or []:
            counters = {k: link.get(k) for k in _LINK_COUNTERS if link.get(k)}
            if counters:
                bad.append({"gpu": gpu.get("index"), "link": link.get("link"), **counters})
    return bad


def findings(tool: str, result: Mapping[str, Any]) -> Json:
    """A compact digest of one node's answer: what is wrong and what to do."""
    if tool == "get_gpu_health":
        issues: list[Json] = [
            {"gpu": None, **_issue(i)} for i in result.get("issues") or [] if _notable(i)
        ]
        for gpu in result.get("gpus") or []:
            issues += [{"gpu": gpu.get("index"), **_issue(i)} for i in gpu.get("issues") or []]
        issues = [i for i in issues if _notable(i)]
        issues.sort(key=lambda i: _SEVERITY_RANK.get(str(i.get("severity")), 9))
        return {"summary": result.get("summary", ""), "issues": issues}
    if tool == "analyze_xid_errors":
        return {
            "events": (result.get("summary") or {}).get("events", 0),
            "xids": [
                {
                    k: x.get(k)
                    for k in (
                        "xid",
                        "name",
                        "severity",
                        "gpu_index",
                        "count",
                        "last_seen",
                        "recommended_action",
                    )
                }
                for x in result.get("xids") or []
            ],
        }
    if tool in ("get_gpu_inventory", "get_gpu_processes"):
        return {
            "gpus_with_errors": [
                {"gpu": g.get("index"), "lost": bool(g.get("lost")), "error": g.get("error")}
                for g in result.get("gpus") or []
                if g.get("lost") or g.get("error")
            ]
        }
    if tool == "get_nvlink_topology":
        return {"links_with_errors": _bad_links(result)}
    return {}


def _issue(issue: Mapping[str, Any]) -> Json:
    return {k: issue.get(k) for k in ("check", "severity", "message", "action")}


def _notable(issue: Mapping[str, Any]) -> bool:
    return issue.get("severity") != "info"


def _fleet(tool: str, answered: Sequence[tuple[str, Mapping[str, Any]]]) -> Json | None:
    """A roll-up over every answering node, where one is meaningful for the tool."""
    if tool == "get_gpu_inventory":
        groups: dict[tuple[Any, ...], Json] = {}
        for node, result in answered:
            gpus = result.get("gpus") or []
            driver = result.get("driver") or {}
            models = sorted({str(g.get("name")) for g in gpus if g.get("name")})
            key = (
                ", ".join(models) or "unknown",
                len(gpus),
                driver.get("driver_version"),
                driver.get("cuda_driver_version"),
            )
            group = groups.setdefault(
                key,
                {
                    "gpu_model": key[0],
                    "gpu_count": key[1],
                    "driver_version": key[2],
                    "cuda_driver_version": key[3],
                    "nodes": [],
                },
            )
            group["nodes"].append(node)
        configurations = sorted(groups.values(), key=lambda g: -len(g["nodes"]))
        for group in configurations:  # a count and the first names: small at any size
            group["node_count"] = len(group["nodes"])
            group["nodes"] = group["nodes"][:GROUP_NAMES]
        return {
            "gpus": sum(len(r.get("gpus") or []) for _, r in answered),
            "configurations": configurations[:GROUPS_CAP],
        }
    if tool == "get_gpu_processes":
        busy = idle = processes = used = 0
        for _, result in answered:
            for gpu in result.get("gpus") or []:
                procs = gpu.get("processes") or []
                busy += bool(procs)
                idle += not procs
                processes += len(procs)
                used += sum(p.get("used_memory_mib") or 0 for p in procs)
        return {
            "gpus_busy": busy,
            "gpus_idle": idle,
            "processes": processes,
            "used_memory_mib": used,
        }
    if tool == "analyze_xid_errors":
        counts: Counter[int] = Counter()
        for _, result in answered:
            for x in result.get("xids") or []:
                counts[int(x.get("xid", 0))] += int(x.get("count", 1))
        return {"xid_counts": {str(k): v for k, v in sorted(counts.items())}}
    return None


def slim(tool: str, result: Mapping[str, Any]) -> Json:
    """Only what :func:`judge`, :func:`findings` and the fleet roll-up read.

    A sweep holds every node's answer until the roll-up: a full 8-GPU health answer is
    about 30 KiB of Python objects, 150 MiB at 5,000 nodes; its digest is a few hundred
    bytes. The aggregate of slim answers equals the aggregate of full ones.
    """
    gpus = result.get("gpus") or []
    if tool == "get_gpu_health":
        return {
            "status": result.get("status"),
            "summary": result.get("summary"),
            "issues": result.get("issues") or [],
            "gpus": [
                {"index": g.get("index"), "issues": g["issues"]} for g in gpus if g.get("issues")
            ],
        }
    if tool == "analyze_xid_errors":
        return {"summary": result.get("summary"), "xids": result.get("xids") or []}
    if tool == "get_gpu_inventory":
        driver = result.get("driver") or {}
        keep = ("index", "name", "lost", "error")
        return {
            "driver": {k: driver.get(k) for k in ("driver_version", "cuda_driver_version")},
            "gpus": [{k: g.get(k) for k in keep} for g in gpus],
        }
    if tool == "get_gpu_processes":
        return {
            "gpus": [
                {
                    **{k: g.get(k) for k in ("index", "lost", "error")},
                    "processes": [
                        {"used_memory_mib": p.get("used_memory_mib")}
                        for p in g.get("processes") or []
                    ],
                }
                for g in gpus
            ]
        }
    if tool == "get_nvlink_topology":
        return {
            "gpus": [
                {
                    "index": g.get("index"),
                    "links": [
                        {
                            "link": link.get("link"),
                            **{k: link[k] for k in _LINK_COUNTERS if link.get(k)},
                        }
                        for link in g.get("links") or []
                        if any(link.get(k) for k in _LINK_COUNTERS)
                    ],
                }
                for g in gpus
            ]
        }
    return dict(result)


# -- the aggregate -----------------------------------------------------------------------
def aggregate(
    tool: str,
    results: Iterable[NodeResult],
    *,
    detail: Detail = "auto",
    limit: int = 50,
    offset: int = 0,
    statuses: Sequence[str] = (),
    elapsed_s: float = 0.0,
    deadline_s: float | None = None,
    targeted: str = "every GPU node",
    warnings: Sequence[str] = (),
    budget: int = ANSWER_BUDGET,
) -> Json:
    """The fan-out answer (see the module docstring); ``limit`` caps detailed entries."""
    results = list(results)
    if detail == "auto":
        detail = "full" if len(results) == 1 else "findings"
    names_cap = NAMES_CAP
    while True:
        answer = _answer(
            tool, results, detail, limit, offset, statuses, names_cap, elapsed_s, targeted
        )
        if deadline_s is not None:
            answer["summary"]["deadline_s"] = round(deadline_s, 3)
        answer["warnings"] = list(warnings)
        if detail == "full" or (limit <= 1 and names_cap <= 1):
            return answer
        if len(json.dumps(answer, separators=(",", ":"))) <= budget:
            return answer
        # Over budget: fewer detailed entries and shorter name lists, then look again.
        limit, names_cap = max(1, limit // 2), max(1, names_cap // 2)


def _answer(
    tool: str,
    results: Sequence[NodeResult],
    detail: Detail,
    limit: int,
    offset: int,
    statuses: Sequence[str],
    names_cap: int,
    elapsed_s: float,
    targeted: str,
) -> Json:
    status_counts = dict.fromkeys(STATUSES, 0)
    failed: list[NodeResult] = []
    entries: list[tuple[int, int, str, Json]] = []
    healthy: list[str] = []
    answered: list[tuple[str, Mapping[str, Any]]] = []
    wanted = set(statuses)
    for r in results:
        if not r.ok or r.result is None:
            failed.append(r)
            if "unreachable" in wanted:
                gone: Json = {"node": r.node, "status": "unreachable"}
                gone |= {"kind": r.error_kind or "protocol", "reason": r.error or "no answer"}
                entries.append((len(STATUSES), 0, r.node, gone))
            continue
        answered.append((r.node, r.result))
        status = judge(tool, r.result)
        status_counts[status] += 1
        if wanted and status not in wanted:
            continue
        if status == "healthy" and detail != "full" and not wanted:
            healthy.append(r.node)
            continue
        entry: Json = {"node": r.node, "status": status, "elapsed_s": round(r.elapsed_s, 3)}
        if detail == "full":
            entry["result"] = r.result
            weight = 0
        else:
            entry["findings"] = findings(tool, r.result)
            weight = -_weight(entry["findings"])
        entries.append((_RANK[status], weight, r.node, entry))
    entries.sort(key=lambda e: e[:3])
    ok = len(answered)
    page = entries[offset : offset + limit]
    beyond = entries[offset + limit :]
    more = [{"node": e[2], "status": e[3]["status"]} for e in beyond] if not wanted else []
    healthy.sort()
    truncated: Json = {}
    if wanted and beyond:
        truncated["nodes"] = len(beyond)
    if len(more) > names_cap:
        truncated["more"] = len(more) - names_cap
    if len(healthy) > names_cap:
        truncated["healthy"] = len(healthy) - names_cap
    answer: Json = {
        "tool": tool,
        "targeted": targeted,
        "summary": {
            "nodes": {"total": len(results), "ok": ok, "failed": len(results) - ok},
            "status": status_counts,
            "unreachable": group_failures(failed),
            "elapsed_s": round(elapsed_s, 3),
        },
        "nodes": [e[3] for e in page],
        "more": more[:names_cap],
        "healthy": healthy[:names_cap],
    }
    if truncated:
        if wanted:
            truncated["hint"] = (
                f"{len(beyond)} more matching node(s): call again with the same status "
                f"filter and offset={offset + len(page)}"
            )
        else:
            truncated["hint"] = (
                "lists were cut to stay small: for one entry per node, call again with "
                "status=['healthy'] (or 'critical', 'degraded', 'warning', 'unreachable') "
                "and page with limit/offset"
            )
        answer["truncated"] = truncated
    fleet = _fleet(tool, answered)
    if fleet is not None:
        answer["fleet"] = fleet
    return answer


def _short(node: str) -> str:
    """The node's own name (``CONTEXT/NODE`` when several clusters answered)."""
    return node.rsplit("/", 1)[-1]


def group_failures(failed: Iterable[NodeResult]) -> list[Json]:
    """Nodes with no answer, grouped by kind and reason: count and the first names.

    The node's and pod's own names in a reason are taken out (:func:`cause_key`) so that
    one cause shows once however many nodes it hit.
    """
    groups: dict[tuple[str, str], Json] = {}
    for r in sorted(failed, key=lambda r: r.node):
        kind = r.error_kind or "protocol"
        key = cause_key(_short(r.node), kind, r.error or "no answer")
        # Shown: the first node's reason with its own node and pod names taken out.
        shown = names_out(_short(r.node), r.error or "no answer")
        group = groups.setdefault(key, {"kind": kind, "reason": shown, "count": 0})
        group["count"] += 1
        group.setdefault("nodes", [])
        if len(group["nodes"]) < GROUP_NAMES:
            group["nodes"].append(r.node)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], g["kind"], g["reason"]))
    if len(ordered) > GROUPS_CAP:
        rest = ordered[GROUPS_CAP - 1 :]
        other = {
            "kind": "other",
            "reason": f"{len(rest)} further distinct reasons (page with status=['unreachable'])",
            "count": sum(g["count"] for g in rest),
            "nodes": [n for g in rest for n in g["nodes"]][:GROUP_NAMES],
        }
        ordered = [*ordered[: GROUPS_CAP - 1], other]
    return ordered


def _weight(digest: Mapping[str, Any]) -> int:
    """How much there is to say about a node (ties within a status: more first)."""
    return sum(len(v) for v in digest.values() if isinstance(v, list))


def exit_code(answer: Mapping[str, Any]) -> int:
    """2 when any node is critical, else 3 when any node (or cluster) gave no answer,
    else 0."""
    summary = answer.get("summary") or {}
    if (summary.get("status") or {}).get("critical"):
        return EXIT_CRITICAL
    if (summary.get("nodes") or {}).get("failed"):
        return EXIT_UNREACHABLE
    if any("error" in c for c in answer.get("clusters") or []):
        return EXIT_UNREACHABLE
    return EXIT_OK


# -- the output schema of a fanned-out tool -----------------------------------------------
def aggregate_output_schema(agent_output_schema: Mapping[str, Any] | None) -> Json:
    """The JSON Schema of :func:`aggregate`'s answer, embedding the agent tool's own
    output schema for full per-node results."""
    status = {"type": "string", "enum": list(STATUSES)}
    names = {"type": "array", "items": {"type": "string"}}
    result_schema: Json = dict(agent_output_schema) if agent_output_schema else {"type": "object"}
    return {
        "type": "object",
        "properties": {
            "tool": {"type": "string"},
            "targeted": {"type": "string", "description": "Which nodes were asked"},
            "summary": {
                "type": "object",
                "properties": {
                    "nodes": {
                        "type": "object",
                        "properties": {
                            "total": {"type": "integer", "minimum": 0},
                            "ok": {"type": "integer", "minimum": 0},
                            "failed": {"type": "integer", "minimum": 0},
                        },
                        "required": ["total", "ok", "failed"],
                    },
                    "status": {
                        "type": "object",
                        "description": "Answering nodes per status",
                        "properties": {s: {"type": "integer", "minimum": 0} for s in STATUSES},
                        "required": list(STATUSES),
                    },
                    "unreachable": {
                        "type": "array",
                        "description": "Nodes that gave no answer, grouped by kind and reason",
                        "items": {
                            "type": "object",
                            "properties": {
                                "kind": {
                                    "type": "string",
                                    "description": "unreachable, rbac, timeout, queued, "
                                    "agent_error, tool_missing, not_ready, protocol, "
                                    "cancelled or circuit_open (kept failing: skipped for a "
                                    "while)",
                                },
                                "reason": {"type": "string"},
                                "fix": {"type": "string"},
                                "count": {"type": "integer", "minimum": 1},
                                "nodes": names,
                            },
                            "required": ["kind", "reason", "count", "nodes"],
                        },
                    },
                    "elapsed_s": {"type": "number"},
                    "deadline_s": {"type": "number"},
                },
                "required": ["nodes", "status", "unreachable", "elapsed_s"],
            },
            "nodes": {
                "type": "array",
                "description": "Answering nodes that are not healthy, worst first",
                "items": {
                    "type": "object",
                    "properties": {
                        "node": {"type": "string"},
                        "status": {"type": "string", "enum": list(FILTERS)},
                        "elapsed_s": {"type": "number"},
                        "findings": {"type": "object"},
                        "result": result_schema,
                    },
                    "required": ["node", "status"],
                },
            },
            "more": {
                "type": "array",
                "description": "Further non-healthy nodes beyond `limit` (names only)",
                "items": {
                    "type": "object",
                    "properties": {"node": {"type": "string"}, "status": status},
                    "required": ["node", "status"],
                },
            },
            "healthy": {**names, "description": "Healthy nodes (names only)"},
            "truncated": {"type": "object", "description": "Names left out; how to page"},
            "fleet": {"type": "object", "description": "Roll-up over every answering node"},
            "clusters": {
                "type": "array",
                "description": "Per context: {context, summary | error}",
                "items": {"type": "object"},
            },
            "warnings": names,
        },
        "required": ["tool", "targeted", "summary", "nodes", "more", "healthy", "warnings"],
    }
