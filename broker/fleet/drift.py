"""Configuration drift: which GPU nodes differ from their peers.

Nodes are compared only with nodes of the same GPU product. For each setting the majority
value is the norm and every other value is drift, named with the nodes that carry it and why
it matters. Pure: it judges the per-node answers of ``get_gpu_inventory`` and contacts
nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SETTINGS", "NodeConfig", "Setting", "find_drift", "node_config"]

Json = dict[str, Any]
NAMES_SHOWN = 10  # node names listed per value; the count is always exact
Reader = Callable[[Mapping[str, Any]], Any]  # a node's get_gpu_inventory answer -> a value


@dataclass(frozen=True)
class Setting:
    """One compared setting: how to read it from a node, and why a difference matters."""

    key: str
    why: str
    read: Reader


def _node(key: str) -> Reader:
    def read(inventory: Mapping[str, Any]) -> Any:
        return (inventory.get("driver") or {}).get(key) or (inventory.get("node") or {}).get(key)

    return read


def _gpus(key: str) -> Reader:
    """The node's value of a per-GPU field (see :func:`_gpus_by`)."""
    return _gpus_by(lambda gpu: _dig(gpu, key))


def _gpus_by(value_of: Callable[[Mapping[str, Any]], Any]) -> Reader:
    """The node's value of a per-GPU reading: the one value when all GPUs agree, else the
    sorted distinct values (a node whose GPUs disagree is itself worth a look)."""

    def read(inventory: Mapping[str, Any]) -> Any:
        values = [
            value_of(g)
            for g in inventory.get("gpus") or []
            if isinstance(g, Mapping) and not g.get("lost")
        ]
        distinct = _sorted({_hashable(v) for v in values if v is not None})
        if not distinct:
            return None
        return distinct[0] if len(distinct) == 1 else tuple(distinct)

    return read


def _gpu_count(inventory: Mapping[str, Any]) -> Any:
    count = (inventory.get("driver") or {}).get("gpu_count")
    return count if count is not None else len(inventory.get("gpus") or []) or None


def _dig(doc: Mapping[str, Any], dotted: str) -> Any:
    current: Any = doc
    for part in dotted.split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _sorted(values: Iterable[Any]) -> list[Any]:
    """In natural order (8 before 16) when the values compare, else by their text."""
    items = list(values)
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=str)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _mig_profiles(gpu: Mapping[str, Any]) -> Any:
    profiles = sorted(str(m.get("profile")) for m in gpu.get("mig_instances") or [])
    return tuple(profiles) if profiles else None


def _ib_active(inventory: Mapping[str, Any]) -> Any:
    ports = inventory.get("infiniband")
    if not isinstance(ports, list):
        return None  # no RDMA devices seen: nothing to compare
    return sum(1 for port in ports if isinstance(port, Mapping) and port.get("active"))


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "driver_version",
        "different drivers behave differently (fixes, XID handling, NCCL/CUDA compatibility); "
        "a multi-node job on mixed drivers can hang or diverge",
        _node("driver_version"),
    ),
    Setting(
        "cuda_driver_version",
        "the CUDA version the driver supports bounds which containers run on the node",
        _node("cuda_driver_version"),
    ),
    Setting(
        "gpu_count_seen",
        "GPUs the driver sees: fewer than the node's peers means a GPU fell off the bus or "
        "is hidden from the agent",
        _gpu_count,
    ),
    Setting(
        "vbios_version",
        "VBIOS differences change clocks, power and error handling; NVIDIA support asks for "
        "uniform firmware",
        _gpus("vbios_version"),
    ),
    Setting(
        "ecc_mode",
        "ECC off trades silent memory corruption for capacity; one node without it can "
        "corrupt a whole training run",
        _gpus("ecc_mode_current"),
    ),
    Setting(
        "ecc_mode_pending",
        "the ECC mode after the next GPU reset: a node whose pending mode differs will change "
        "behaviour on reboot",
        _gpus("ecc_mode_pending"),
    ),
    Setting(
        "persistence_mode",
        "without persistence mode the driver tears down and re-initialises the GPU between "
        "jobs: slow starts and lost state",
        _gpus("persistence_mode"),
    ),
    Setting(
        "mig_mode",
        "MIG on/off decides which resources the node offers (nvidia.com/gpu vs nvidia.com/mig-*)",
        _gpus("mig_mode_current"),
    ),
    Setting(
        "mig_profiles",
        "a different MIG layout offers different slices: jobs land unevenly",
        _gpus_by(_mig_profiles),
    ),
    Setting(
        "power_limit_w",
        "a lower power limit caps clocks under load: the node runs slower than its peers",
        _gpus("power_limit_w"),
    ),
    Setting(
        "sm_clock_max_mhz",
        "a lower maximum SM clock makes the node slower than its peers",
        _gpus("sm_clock_max_mhz"),
    ),
    Setting(
        "applications_clock_mhz",
        "locked or lowered application clocks slow every kernel on the node",
        _gpus("app_sm_clock_mhz"),
    ),
    Setting(
        "pcie_link_gen_max",
        "the fastest PCIe generation GPU and slot can reach: a lower one than the peers' "
        "(a Gen4 slot or riser for a Gen5 GPU) halves host<->GPU bandwidth",
        _gpus("pcie_link_gen_max"),
    ),
    Setting(
        "pcie_link_width",
        "a PCIe link narrower than the peers' (x8 instead of x16) halves host<->GPU "
        "bandwidth (data loading, NCCL over PCIe): usually a reseat or riser problem",
        _gpus("pcie_link_width"),
    ),
    Setting(
        "nvlink_links_up",
        "fewer active NVLink links than the peers means a failed link: collectives fall "
        "back to slower paths",
        _gpus("nvlink_links_up"),
    ),
    Setting(
        "infiniband_ports_active",
        "fewer active InfiniBand/RoCE ports than the peers cuts inter-node bandwidth for "
        "every multi-node job on the node",
        _ib_active,
    ),
)


@dataclass(frozen=True)
class NodeConfig:
    """One node's settings as compared (``None``: not reported by this node's agent)."""

    node: str
    product: str
    values: Mapping[str, Any]


def node_config(
    node: str,
    inventory: Mapping[str, Any],
    *,
    expected_gpus: int | None = None,
    product_label: str | None = None,
) -> NodeConfig:
    """Read every setting of one node from its agent's answers."""
    values = {s.key: s.read(inventory) for s in SETTINGS}
    if expected_gpus is not None:
        values["gpu_count_expected"] = expected_gpus
    names = sorted({str(g.get("name")) for g in inventory.get("gpus") or [] if g.get("name")})
    product = product_label or (names[0] if names else "unknown")
    return NodeConfig(node, product, values)


def find_drift(configs: Iterable[NodeConfig], *, names_shown: int = NAMES_SHOWN) -> Json:
    """Findings per product group: for each setting where nodes differ, the majority value
    and the nodes that differ from it (grouped by value), worst spread first."""
    groups: dict[str, list[NodeConfig]] = defaultdict(list)
    for config in configs:
        groups[config.product].append(config)
    findings: list[Json] = []
    for product, members in sorted(groups.items()):
        findings += _group_findings(product, members, names_shown)
        findings += _count_findings(product, members, names_shown)
    findings.sort(key=lambda f: (-f["outlier_count"], f["product"], f["setting"]))
    outliers = sorted({n for f in findings for v in f["outliers"] for n in v["nodes"]})
    return {
        "summary": {
            "nodes_compared": sum(len(m) for m in groups.values()),
            "products": {p: len(m) for p, m in sorted(groups.items())},
            "findings": len(findings),
            "nodes_with_drift": len({n for f in findings for n in f["_all"]}),
        },
        "findings": [{k: v for k, v in f.items() if k != "_all"} for f in findings],
        "outlier_nodes_shown": outliers[: names_shown * 5],
    }


def _group_findings(product: str, members: Sequence[NodeConfig], shown: int) -> list[Json]:
    found: list[Json] = []
    if len(members) < 2:
        return found
    why = {s.key: s.why for s in SETTINGS}
    for setting in SETTINGS:
        by_value: dict[Any, list[str]] = defaultdict(list)
        for m in members:
            value = m.values.get(setting.key)
            if value is not None:
                by_value[_hashable(value)].append(m.node)
        if len(by_value) < 2:
            continue
        found.append(_finding(product, setting.key, why[setting.key], by_value, shown))
    return found


def _count_findings(product: str, members: Sequence[NodeConfig], shown: int) -> list[Json]:
    """GPUs seen by the agent vs the node's advertised count (a per-node fact, no majority)."""
    short: dict[Any, list[str]] = defaultdict(list)
    for m in members:
        seen, expected = m.values.get("gpu_count_seen"), m.values.get("gpu_count_expected")
        if isinstance(seen, int) and isinstance(expected, int) and seen != expected:
            short[f"{seen} seen of {expected}"].append(m.node)
    if not short:
        return []
    nodes = [n for v in short.values() for n in v]
    return [
        {
            "product": product,
            "setting": "gpu_count_vs_capacity",
            "why": "the driver sees a different number of GPUs than the node advertises "
            "(nvidia.com/gpu.count): a GPU fell off the bus, or the agent cannot see all GPUs",
            "majority": "seen = advertised",
            "majority_count": len(members) - len(nodes),
            "outlier_count": len(nodes),
            "outliers": [_names(v, ns, shown) for v, ns in sorted(short.items(), key=str)],
            "_all": nodes,
        }
    ]


def _finding(
    product: str, key: str, why: str, by_value: Mapping[Any, list[str]], shown: int
) -> Json:
    counts = Counter({v: len(ns) for v, ns in by_value.items()})
    (top, top_n), *rest = counts.most_common()
    total = sum(counts.values())
    tie = bool(rest) and rest[0][1] == top_n
    outliers = [
        _names(v, sorted(by_value[v]), shown)
        for v, _ in sorted(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
        if v != top or tie
    ]
    nodes = [n for v, ns in by_value.items() if v != top or tie for n in ns]
    return {
        "product": product,
        "setting": key,
        "why": why,
        "majority": None if tie else _plain(top),
        "majority_count": 0 if tie else top_n,
        "outlier_count": total if tie else total - top_n,
        "outliers": outliers,
        "note": "no majority: the nodes are split evenly" if tie else None,
        "_all": nodes,
    }


def _names(value: Any, nodes: Sequence[str], shown: int) -> Json:
    listed = sorted(nodes)
    return {
        "value": _plain(value),
        "count": len(listed),
        "nodes": listed[:shown],
        **({"more": len(listed) - shown} if len(listed) > shown else {}),
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
