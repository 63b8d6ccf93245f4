"""Stragglers: which nodes are slower than their peers right now, and the reading why.

A distributed job runs at the pace of its slowest GPU. Each node is summarised by its worst
GPU per reading (lowest SM clock, hottest, most throttled...), compared with the nodes of the
same GPU product by a robust statistic (median and median absolute deviation, so a few bad
nodes cannot hide themselves by moving the mean), and ranked. Direct evidence (power or
thermal throttling while busy; the GPU-idle reason is masked as the health checks mask it)
counts on its own. Pure: it judges ``get_gpu_health`` answers and contacts nothing.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["READINGS", "NodeReadings", "Reading", "find_stragglers", "node_readings"]

Json = dict[str, Any]
ROBUST_Z = 3.5  # Iglewicz & Hoaglin's cut-off for the modified z-score
MIN_RELATIVE = 0.05  # and at least 5 % away from the median: noise on uniform fleets is not slow
SLOW_REASONS = {
    "sw_power_cap": "power capping",
    "hw_power_brake_slowdown": "hardware power brake",
    "sw_thermal_slowdown": "thermal slowdown (software)",
    "hw_thermal_slowdown": "thermal slowdown (hardware)",
    "hw_slowdown": "hardware slowdown",
    "sync_boost": "sync boost (held back by another GPU)",
}


@dataclass(frozen=True)
class Reading:
    """One compared reading: its path in a GPU's health entry, and which way is slow."""

    key: str
    path: str
    slow_when: str  # "low" or "high"
    unit: str
    meaning: str
    busy_only: bool = False  # an idle GPU is slow and cool by design: compare busy GPUs only
    alone: bool = True  # False: supporting evidence only, never a straggler by itself


READINGS: tuple[Reading, ...] = (
    Reading("sm_clock_mhz", "metrics.sm_clock_mhz", "low", "MHz", "SM clock under load", True),
    Reading("temperature_c", "metrics.temperature_c", "high", "°C", "temperature", alone=False),
    Reading(
        "power_w",
        "metrics.power_w",
        "low",
        "W",
        "power draw (a busy GPU drawing less than its peers is held back)",
        busy_only=True,
    ),
    Reading("utilization_pct", "metrics.utilization_gpu_pct", "low", "%", "utilisation", True),
    Reading(
        "pcie_replay_counter",
        "metrics.pcie_replay_counter",
        "high",
        "replays",
        "PCIe replays (link errors retried)",
    ),
    Reading("nvlink_errors", "metrics.nvlink", "high", "errors", "NVLink error counters"),
)


_ALONE = {r.key for r in READINGS if r.alone} | {"throttle_reason"}


@dataclass(frozen=True)
class NodeReadings:
    """One node's worst-GPU value per reading, and its active slow-down reasons."""

    node: str
    product: str
    values: Mapping[str, float]
    worst_gpu: Mapping[str, int]
    reasons: Mapping[str, list[int]] = field(default_factory=dict)  # reason -> GPU indexes


def node_readings(
    node: str, health: Mapping[str, Any], *, product: str | None = None
) -> NodeReadings:
    """Summarise one node's ``get_gpu_health`` answer (lost GPUs are the health check's job)."""
    values: dict[str, float] = {}
    worst: dict[str, int] = {}
    reasons: dict[str, list[int]] = defaultdict(list)
    names = set()
    for gpu in health.get("gpus") or []:
        if not isinstance(gpu, Mapping) or gpu.get("lost") or gpu.get("error"):
            continue
        index = int(gpu.get("index", -1))
        names.add(str(gpu.get("name") or ""))
        metrics = gpu.get("metrics") or {}
        idle = "gpu_idle" in (metrics.get("clock_event_reasons_active") or [])
        for r in READINGS:
            if idle and r.busy_only:
                continue
            value = _value(gpu, r)
            if value is None:
                continue
            better = values.get(r.key)
            if better is None or (value < better if r.slow_when == "low" else value > better):
                values[r.key] = value
                worst[r.key] = index
        for reason in metrics.get("clock_event_reasons_active") or []:
            if reason in SLOW_REASONS:
                reasons[reason].append(index)
    names.discard("")
    return NodeReadings(
        node, product or (sorted(names)[0] if names else "unknown"), values, worst, dict(reasons)
    )


def _value(gpu: Mapping[str, Any], reading: Reading) -> float | None:
    current: Any = gpu
    for part in reading.path.split("."):
        current = current.get(part) if isinstance(current, Mapping) else None
    if reading.key == "nvlink_errors" and isinstance(current, Mapping):
        counters = [
            v for k, v in current.items() if k.endswith("_errors") and isinstance(v, int | float)
        ]
        return float(sum(counters)) if counters else None
    if isinstance(current, bool) or not isinstance(current, int | float):
        return None
    return float(current)


def find_stragglers(nodes: Iterable[NodeReadings], *, limit: int = 20) -> Json:
    """Outlier nodes per product, ranked (most deviant first), each with the readings that
    make it slow. No outliers on a uniform fleet: a reading must be both a robust outlier
    and materially (≥ 5 %) off its peers' median."""
    groups: dict[str, list[NodeReadings]] = defaultdict(list)
    for n in nodes:
        groups[n.product].append(n)
    flagged: list[Json] = []
    medians: dict[str, Json] = {}
    for product, members in sorted(groups.items()):
        stats = {
            r.key: _stats([m.values[r.key] for m in members if r.key in m.values]) for r in READINGS
        }
        medians[product] = {k: s[0] for k, s in stats.items() if s is not None}
        common = _common_reasons(members)
        for m in members:
            entry = _judge(m, stats, common)
            if entry is not None:
                flagged.append({"product": product, **entry})
    flagged.sort(key=lambda e: (-e["score"], e["node"]))
    return {
        "summary": {
            "nodes_compared": sum(len(m) for m in groups.values()),
            "products": {p: len(m) for p, m in sorted(groups.items())},
            "stragglers": len(flagged),
            "method": f"per reading: modified z-score |z| > {ROBUST_Z} (median/MAD within the "
            f"same GPU product) and ≥ {MIN_RELATIVE:.0%} from the median; or power/thermal "
            "throttling that most peers do not show",
        },
        "peer_medians": medians,
        "stragglers": flagged[:limit],
        **({"more": len(flagged) - limit} if len(flagged) > limit else {}),
    }


def _stats(values: Sequence[float]) -> tuple[float, float] | None:
    if len(values) < 3:  # no peers to speak of
        return None
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    return median, mad


def _common_reasons(members: Sequence[NodeReadings]) -> set[str]:
    """Reasons most nodes share are the fleet's state (e.g. all power-capped), not a straggler."""
    counts: dict[str, int] = defaultdict(int)
    for m in members:
        for reason in m.reasons:
            counts[reason] += 1
    return {r for r, c in counts.items() if c * 2 > len(members)}


def _judge(
    m: NodeReadings, stats: Mapping[str, tuple[float, float] | None], common: set[str]
) -> Json | None:
    findings: list[Json] = []
    score = 0.0
    for r in READINGS:
        s = stats.get(r.key)
        value = m.values.get(r.key)
        if s is None or value is None:
            continue
        median, mad = s
        delta = value - median
        if (delta >= 0) == (r.slow_when == "low") or delta == 0:
            continue  # off in the harmless direction
        relative = abs(delta) / abs(median) if median else float("inf")
        z = 0.6745 * abs(delta) / mad if mad else float("inf")
        if z <= ROBUST_Z or relative < MIN_RELATIVE:
            continue
        score += min(z, 50.0) * relative
        findings.append(
            {
                "reading": r.key,
                "value": value,
                "peer_median": median,
                "unit": r.unit,
                "gpu": m.worst_gpu.get(r.key),
                "off_by": f"{relative:.0%} {'below' if r.slow_when == 'low' else 'above'} peers",
                "meaning": r.meaning,
            }
        )
    for reason, gpus in sorted(m.reasons.items()):
        if reason in common:
            continue
        score += 1.0
        findings.append(
            {
                "reading": "throttle_reason",
                "value": reason,
                "gpus": gpus,
                "meaning": f"{SLOW_REASONS[reason]} while most peers run unthrottled",
            }
        )
    if not any(f["reading"] in _ALONE for f in findings):
        return None
    return {"node": m.node, "score": round(score, 3), "why": findings}
