"""The rest of the node, as facts for the verdict: NVSwitch SXids, GPU reset / recovery
and PCIe AER events from the kernel log (placed against the container's run like XIDs),
each GPU's PCIe link and AER counters, Fabric Manager registration, the RDMA ports, and
which of these sources the agent could read. Pure: it reads the agent's answers already
in :class:`~broker.diagnosis.facts.Facts` (``analyze_xid_errors``' ``sxids`` and
``gpu_events``; ``get_gpu_health``'s per-GPU ``metrics``, ``infiniband`` and
``sources``).

What is not known is said, never guessed: a source the agent could not read is listed in
:attr:`NodeFacts.unavailable` so the answer names it and the rules lower (never raise)
their confidence for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.diagnosis.allocation import covers_gpu
from broker.diagnosis.causal import RunWindow, place
from broker.diagnosis.facts import Facts
from broker.diagnosis.pod_status import parse_time, relative

Obj = dict[str, Any]

AER_EVENT_KINDS = {"pcie_aer_fatal": "fatal", "pcie_aer_nonfatal": "non-fatal"}
RESET_KINDS = {"reset", "reattached", "init_failed"}
FABRIC_READY = ("completed", None, "success")  # state, and the statuses that mean success


@dataclass(frozen=True)
class Timing:
    """Where an event falls against the run (see :func:`broker.diagnosis.causal.place`)."""

    timing: str | None = None  # before_start | during_run | after_exit | None (no run)
    offset_s: float | None = None  # to the exit; negative = before it
    near_exit: bool = False

    @property
    def in_run(self) -> bool:
        return self.timing == "during_run"

    def when(self) -> str:
        if self.offset_s is None:
            return "at a time the run cannot be placed against"
        return f"{relative(self.offset_s)} the exit"


@dataclass(frozen=True)
class SxidGroup:
    sxid: int
    fatal: bool
    switch: str
    pci_bus_id: str
    links: tuple[int, ...]
    count: int
    first_seen: str | None
    last_seen: str | None
    message: str
    at: Timing

    def label(self) -> str:
        links = f" link {', '.join(str(k) for k in self.links)}" if self.links else ""
        return (
            f"SXid {self.sxid} ({'fatal' if self.fatal else 'non-fatal'}) on {self.switch}{links}"
        )


@dataclass(frozen=True)
class GpuEvent:
    kind: str  # reattached | reset | init_failed | fell_off_bus | pcie_aer_fatal | ...
    gpu_index: int | None
    pci_bus_id: str | None
    time: str | None
    message: str
    on_pod_gpu: bool | None
    at: Timing

    def gpu(self) -> str:
        return (
            f"GPU {self.gpu_index}"
            if self.gpu_index is not None
            else f"the GPU at PCI {self.pci_bus_id}"
        )


@dataclass(frozen=True)
class PcieLink:
    """A GPU's PCIe link now: trained width/speed against the maximum, replays and AER
    counters since boot (None: not reported)."""

    gpu_index: int
    on_pod_gpu: bool | None
    gen: int | None
    gen_max: int | None
    width: int | None
    width_max: int | None
    flagged_slow: bool  # the agent flagged the speed (it does so only while the GPU works)
    replays: int | None
    aer_correctable: int | None
    aer_nonfatal: int | None
    aer_fatal: int | None

    @property
    def narrow(self) -> bool:
        return bool(self.width and self.width_max and self.width < self.width_max)

    @property
    def degraded(self) -> bool:
        """Trained below its maximum: narrower (always a fault), or slower while busy."""
        return self.narrow or self.flagged_slow

    @property
    def link_known(self) -> bool:
        return self.width is not None or self.gen is not None

    @property
    def uncorrectable(self) -> int:
        return (self.aer_nonfatal or 0) + (self.aer_fatal or 0)

    def link_text(self) -> str:
        def q(v: int | None) -> str:
            return "?" if v is None else str(v)

        return f"Gen{q(self.gen)} x{q(self.width)} (max Gen{q(self.gen_max)} x{q(self.width_max)})"

    def aer_text(self) -> str | None:
        parts = [
            f"{n} {what}"
            for what, n in (
                ("fatal", self.aer_fatal),
                ("non-fatal", self.aer_nonfatal),
                ("correctable", self.aer_correctable),
            )
            if n
        ]
        return ", ".join(parts) + " AER error(s) since boot" if parts else None


@dataclass(frozen=True)
class FabricState:
    gpu_index: int
    on_pod_gpu: bool | None
    state: str
    status: str | None
    degraded_bandwidth: bool | None

    @property
    def ready(self) -> bool:
        return self.state == "completed" and self.status in (None, "success")

    def text(self) -> str:
        status = f", status {self.status}" if self.status and self.status != "success" else ""
        return f"GPU {self.gpu_index}: Fabric Manager registration {self.state}{status}"


@dataclass(frozen=True)
class RdmaPort:
    device: str
    port: int
    state: str | None
    phys_state: str | None
    link_layer: str | None
    rate: str | None
    active: bool
    link_downed: int | None = None  # since boot (None: not reported)

    def label(self) -> str:
        kind = "RoCE" if self.link_layer == "Ethernet" else "InfiniBand"
        return f"{kind} port {self.device}/{self.port} {self.state or '?'}/{self.phys_state or '?'}"


@dataclass
class NodeFacts:
    """The node-level signals. A list is what the agent reported (possibly empty); None
    means the source was not read (see ``unavailable`` for why)."""

    sxids: list[SxidGroup] | None = None
    gpu_events: list[GpuEvent] | None = None
    pcie: list[PcieLink] | None = None
    fabric: list[FabricState] | None = None  # [] = not reported (no NVSwitch fabric)
    ib_ports: list[RdmaPort] | None = None
    sources: Obj | None = None  # the agent's own "sources" block
    unavailable: dict[str, str] = field(default_factory=dict)  # source -> why, in words

    def events(self, kinds: set[str] | dict[str, str]) -> list[GpuEvent]:
        return [e for e in self.gpu_events or [] if e.kind in kinds]


# -- reading the agent's answers --------------------------------------------------------


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _timing(first: float | None, last: float | None, window: RunWindow | None) -> Timing:
    if window is None or first is None or last is None:
        return Timing()
    timing, offset, near = place(first, last, window)
    return Timing(timing, round(offset, 1), near)


def _sxids(xids: Mapping[str, Any], window: RunWindow | None) -> list[SxidGroup] | None:
    if "sxids" not in xids:
        return None  # an agent from before SXids were read
    out = []
    for g in xids.get("sxids") or []:
        if not isinstance(g, dict) or _int(g.get("sxid")) is None:
            continue
        first = parse_time(g.get("first_seen") or g.get("last_seen"))
        last = parse_time(g.get("last_seen"))
        out.append(
            SxidGroup(
                sxid=int(g["sxid"]),
                fatal=bool(g.get("fatal")),
                switch=str(g.get("switch") or "an NVSwitch"),
                pci_bus_id=str(g.get("pci_bus_id") or "?"),
                links=tuple(int(k) for k in g.get("links") or [] if _int(k) is not None),
                count=_int(g.get("count")) or 1,
                first_seen=g.get("first_seen"),
                last_seen=g.get("last_seen"),
                message=str(g.get("last_message") or ""),
                at=_timing(first, last, window),
            )
        )
    return out


def _gpu_events(
    xids: Mapping[str, Any], window: RunWindow | None, assignment: Obj
) -> list[GpuEvent] | None:
    if "gpu_events" not in xids:
        return None
    out = []
    for e in xids.get("gpu_events") or []:
        if not isinstance(e, dict) or not e.get("kind"):
            continue
        t = parse_time(e.get("time"))
        index = _int(e.get("gpu_index"))
        out.append(
            GpuEvent(
                kind=str(e["kind"]),
                gpu_index=index,
                pci_bus_id=e.get("pci_bus_id"),
                time=e.get("time"),
                message=str(e.get("message") or ""),
                on_pod_gpu=covers_gpu(assignment, index, e.get("gpu_uuid")),
                at=_timing(t, t, window),
            )
        )
    return out


def _health_gpus(health: Mapping[str, Any]) -> list[Obj]:
    return [
        g
        for g in health.get("gpus") or []
        if isinstance(g, dict) and _int(g.get("index")) is not None
    ]


def _pcie(health: Mapping[str, Any], assignment: Obj) -> list[PcieLink]:
    out = []
    for g in _health_gpus(health):
        m = g.get("metrics") or {}
        aer = m.get("pcie_aer") or {}
        checks = {str(i.get("check")) for i in g.get("issues") or []}
        out.append(
            PcieLink(
                gpu_index=int(g["index"]),
                on_pod_gpu=covers_gpu(assignment, g.get("index"), g.get("uuid")),
                gen=_int(m.get("pcie_link_gen")),
                gen_max=_int(m.get("pcie_link_gen_max")),
                width=_int(m.get("pcie_link_width")),
                width_max=_int(m.get("pcie_link_width_max")),
                flagged_slow="pcie_link" in checks,
                replays=_int(m.get("pcie_replay_counter")),
                aer_correctable=_int(aer.get("correctable")),
                aer_nonfatal=_int(aer.get("nonfatal")),
                aer_fatal=_int(aer.get("fatal")),
            )
        )
    return out


def _fabric(health: Mapping[str, Any], assignment: Obj) -> list[FabricState]:
    out = []
    for g in _health_gpus(health):
        fab = (g.get("metrics") or {}).get("fabric") or {}
        state = fab.get("state")
        if not state or state == "not_supported":
            continue
        out.append(
            FabricState(
                gpu_index=int(g["index"]),
                on_pod_gpu=covers_gpu(assignment, g.get("index"), g.get("uuid")),
                state=str(state),
                status=fab.get("status"),
                degraded_bandwidth=fab.get("degraded_bandwidth"),
            )
        )
    return out


def _ports(health: Mapping[str, Any]) -> list[RdmaPort] | None:
    rows = health.get("infiniband")
    if not isinstance(rows, list):
        return None
    return [
        RdmaPort(
            device=str(p.get("device")),
            port=_int(p.get("port")) or 0,
            state=p.get("state"),
            phys_state=p.get("phys_state"),
            link_layer=p.get("link_layer"),
            rate=p.get("rate"),
            active=bool(p.get("active")),
            link_downed=_int(p.get("link_downed")),
        )
        for p in rows
        if isinstance(p, dict)
    ]


def node_facts(facts: Facts, window: RunWindow | None, assignment: Obj) -> NodeFacts:
    """The node-level signals of ``facts``, placed against ``window``."""
    nf = NodeFacts()
    why = nf.unavailable
    if facts.xids is None:
        why["kernel_log"] = (
            "the node's kernel log could not be read: NVSwitch SXids, GPU resets and PCIe "
            "AER lines are not known"
        )
    else:
        nf.sxids = _sxids(facts.xids, window)
        nf.gpu_events = _gpu_events(facts.xids, window, assignment)
        if nf.sxids is None or nf.gpu_events is None:
            why["kernel_log"] = (
                "the agent does not report NVSwitch SXids or GPU reset events (an older "
                "agent): upgrade the chart"
            )
    health = facts.health
    if health is None:
        why["health"] = (
            "GPU health could not be read: PCIe links, AER counters, Fabric Manager and RDMA "
            "ports are not known"
        )
        return nf
    nf.pcie = _pcie(health, assignment)
    nf.fabric = _fabric(health, assignment)
    nf.ib_ports = _ports(health)
    sources = health.get("sources")
    nf.sources = sources if isinstance(sources, dict) else None
    if nf.sources is None:
        why["sources"] = (
            "the agent does not say which node sources it read (an older agent): AER "
            "counters and RDMA ports may simply not be reported"
        )
        if nf.ib_ports is None:
            why["rdma"] = "RDMA (InfiniBand/RoCE) port state was not reported"
        return nf
    sysfs = nf.sources.get("sysfs") or {}
    root = sysfs.get("root") or "/sys"
    if sysfs.get("pcie_aer_gpus") == 0:
        why["aer"] = (
            f"PCIe AER counters are not available in the node's sysfs ({root}: AER "
            "disabled on the root port, an older kernel, or the host's /sys not mounted)"
        )
    if nf.ib_ports is None:
        why["rdma"] = (
            f"no InfiniBand/RoCE ports seen in the node's sysfs ({root}: no RDMA devices, "
            "or the host's /sys not mounted): the network's state is not known"
        )
    log = nf.sources.get("kernel_log") or {}
    if log.get("readable") is False and "kernel_log" not in why:
        why["kernel_log"] = "the node's kernel log could not be read"
    if not nf.fabric:
        fm = nf.sources.get("fabric_manager")
        why["fabric_manager"] = str(fm or "Fabric Manager state not reported")
    return nf


def timeline_items(nf: NodeFacts) -> list[Obj]:
    """SXids and GPU events for the explanation's timeline."""
    items: list[Obj] = []
    for s in nf.sxids or []:
        if s.last_seen:
            times = f" (x{s.count})" if s.count > 1 else ""
            items.append({"time": s.last_seen, "source": "sxid", "text": s.label() + times})
    for e in nf.gpu_events or []:
        if e.time:
            items.append(
                {
                    "time": e.time,
                    "source": "gpu_event",
                    "text": f"{e.kind} {e.gpu()}: {e.message}"[:200],
                }
            )
    return items


def view(nf: NodeFacts) -> Obj:
    """The node-level signals in the explain_failure answer (``node_signals``)."""

    def at(t: Timing) -> Obj:
        return {"timing": t.timing, "offset_s": t.offset_s}

    return {
        "sxids": None
        if nf.sxids is None
        else [
            {
                "sxid": s.sxid,
                "fatal": s.fatal,
                "switch": s.switch,
                "links": list(s.links),
                "count": s.count,
                "first_seen": s.first_seen,
                "last_seen": s.last_seen,
                **at(s.at),
            }
            for s in nf.sxids
        ],
        "gpu_events": None
        if nf.gpu_events is None
        else [
            {
                "kind": e.kind,
                "gpu_index": e.gpu_index,
                "time": e.time,
                "on_pod_gpu": e.on_pod_gpu,
                "message": e.message,
                **at(e.at),
            }
            for e in nf.gpu_events
        ],
        "pcie": None
        if nf.pcie is None
        else [
            {
                "gpu_index": p.gpu_index,
                "on_pod_gpu": p.on_pod_gpu,
                "link": p.link_text() if p.link_known else None,
                "degraded": p.degraded,
                "replays": p.replays,
                "aer": {
                    "correctable": p.aer_correctable,
                    "nonfatal": p.aer_nonfatal,
                    "fatal": p.aer_fatal,
                },
            }
            for p in nf.pcie
            if p.degraded or p.uncorrectable or p.aer_correctable or p.replays
        ],
        "fabric": None
        if nf.fabric is None
        else [
            {"gpu_index": f.gpu_index, "state": f.state, "status": f.status, "ready": f.ready}
            for f in nf.fabric
            if not f.ready or f.on_pod_gpu
        ],
        "ib_ports": None
        if nf.ib_ports is None
        else [
            {
                "device": p.device,
                "port": p.port,
                "state": p.state,
                "phys_state": p.phys_state,
                "link_layer": p.link_layer,
                "active": p.active,
                "link_downed": p.link_downed,
            }
            for p in nf.ib_ports
        ],
        "unavailable": [f"{k}: {v}" for k, v in nf.unavailable.items()],
    }
