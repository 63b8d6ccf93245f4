"""The rest of the kernel log: NVSwitch SXids and GPU reset / recovery events.

SXids are NVSwitch errors, logged by the nvidia-nvswitch driver (HGX/DGX systems)::

    nvidia-nvswitch3: SXid (PCI:0000:c5:00.0): 12028, Non-fatal, Link 44 egress ... error
    nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 24007, Fatal, Link 12 sourcetrack timeout

Follow-up lines of one error ("24007, Severity 1 Engine instance ...", "Data {...}")
carry no Fatal/Non-fatal word and are not counted again. A fatal SXid breaks the NVLink
fabric: jobs using the GPUs behind that switch fail or hang until the fabric is reset.
GPU events are the driver and PCIe lines that tell a
GPU's story besides Xids: attached again (after a reset or recovery), failed to
initialise, fell off the bus, PCIe AER errors reported by the root port. Patterns are
deliberately few and literal; unknown lines are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.backend import KmsgRecord
from agent.xid import iso_utc, normalize_pci_bus_id

_SXID = re.compile(
    r"(nvidia-nvswitch\d*): SXid \((?:PCI:)?([0-9A-Fa-f:.]+)\): (\d{1,6}),\s*"
    r"(Non-fatal|Fatal)(?:,\s*(.*))?$"
)
_LINK = re.compile(r"\bLink (\d{1,3})\b")
_ADDRESS = r"([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}(?:\.[0-7])?)"
# (kind, pattern): the first group is the GPU's PCI address.
_GPU_EVENTS = (
    ("attached", re.compile(r"NVRM: GPU at (?:PCI:)?" + _ADDRESS + r": GPU-")),
    ("init_failed", re.compile(r"NVRM: GPU " + _ADDRESS + r": (?:RmInitAdapter|rm_init_adapter)")),
    ("fell_off_bus", re.compile(r"NVRM: GPU " + _ADDRESS + r": GPU has fallen off the bus")),
    (
        "pcie_aer_fatal",
        re.compile(r"AER: Uncorrect(?:ed|able) \(Fatal\) error (?:received|message).*?" + _ADDRESS),
    ),
    (
        "pcie_aer_nonfatal",
        re.compile(
            r"AER: Uncorrect(?:ed|able) \(Non-Fatal\) error (?:received|message).*?" + _ADDRESS
        ),
    ),
    ("reset", re.compile(r"(?:nvidia|pci) " + _ADDRESS + r":.*\b(?:[Rr]eset|FLR)\b")),
)
MAX_EVENTS = 50  # newest kept: answers stay bounded on a node that logs in a loop
MAX_GROUPS = 50


@dataclass(frozen=True)
class SxidEvent:
    sxid: int
    fatal: bool
    switch: str  # nvidia-nvswitch3
    pci_bus_id: str  # NVML form
    link: int | None
    timestamp: float
    message: str


@dataclass(frozen=True)
class GpuEvent:
    kind: str  # attached again -> "reattached"; see _GPU_EVENTS
    pci_bus_id: str
    timestamp: float
    message: str
    gpu_index: int | None = None
    gpu_uuid: str | None = None


def parse_sxids(records: Iterable[KmsgRecord], boot_time: float) -> list[SxidEvent]:
    """SXid events from kernel-log records, oldest first."""
    events = []
    for record in records:
        if "SXid" not in record.message:
            continue
        for line in record.message.split("\n"):
            start = line.find("nvidia-nvswitch")
            m = _SXID.search(line, max(start, 0))
            if m is None:
                continue
            pci = normalize_pci_bus_id(m[2])
            if pci is None:
                continue
            link = _LINK.search(m[5] or "")
            events.append(
                SxidEvent(
                    sxid=int(m[3]),
                    fatal=m[4].lower() == "fatal",
                    switch=m[1],
                    pci_bus_id=pci,
                    link=int(link[1]) if link else None,
                    timestamp=boot_time + record.usec_since_boot / 1e6,
                    message=line[m.start() :].strip()[:300],
                )
            )
    events.sort(key=lambda e: e.timestamp)
    return events


def parse_gpu_events(
    records: Iterable[KmsgRecord],
    boot_time: float,
    gpus: Sequence[tuple[int, str | None, str | None]] = (),
) -> list[GpuEvent]:
    """GPU reset / recovery / PCIe events, oldest first. A GPU attached more than once
    in one boot was re-initialised (a reset, a recovery, or, without persistence mode,
    its last client closing): its later attachments are "reattached" (the first is the
    driver loading, not news). ``records`` must be in time order."""
    by_pci: dict[str, tuple[int | None, str | None]] = {}
    for index, uuid, pci in gpus:
        key = normalize_pci_bus_id(pci) if pci else None
        if key is not None:
            by_pci[key] = (index, uuid)
    seen: set[str] = set()
    events: list[GpuEvent] = []
    last_mono: int | None = None
    last_usec: int | None = None
    for record in records:
        mono = record.monotonic_usec
        if mono is None:
            mono = record.usec_since_boot
        # A new boot starts where the monotonic clock goes back (between older boots in
        # the persistent log) or where this boot's records begin: its first attach of a
        # GPU is the driver loading, not news.
        if (last_mono is not None and mono < last_mono) or (
            last_usec is not None and last_usec < 0 <= record.usec_since_boot
        ):
            seen.clear()
        last_mono, last_usec = mono, record.usec_since_boot
        text = record.message
        if "NVRM" not in text and "AER" not in text and "eset" not in text and "FLR" not in text:
            continue
        for line in text.split("\n"):
            for kind, pattern in _GPU_EVENTS:
                m = pattern.search(line)
                if m is None:
                    continue
                pci = normalize_pci_bus_id(m[1])
                if pci is None:
                    break
                if kind == "attached":
                    if pci not in seen:
                        seen.add(pci)
                        break
                    kind = "reattached"
                gpu_index, gpu_uuid = by_pci.get(pci, (None, None))
                events.append(
                    GpuEvent(
                        kind=kind,
                        pci_bus_id=pci,
                        timestamp=boot_time + record.usec_since_boot / 1e6,
                        message=line.strip()[:300],
                        gpu_index=gpu_index,
                        gpu_uuid=gpu_uuid,
                    )
                )
                break
    events.sort(key=lambda e: e.timestamp)
    return events


def sxid_groups(events: Sequence[SxidEvent]) -> list[dict[str, object]]:
    """Repeats of one SXid on one switch, grouped: fatal first, then newest."""
    groups: dict[tuple[int, str], list[SxidEvent]] = {}
    for e in events:
        groups.setdefault((e.sxid, e.pci_bus_id), []).append(e)
    rows: list[tuple[bool, float, dict[str, object]]] = []
    for (sxid, pci), items in groups.items():
        last = items[-1]
        fatal = any(e.fatal for e in items)
        links = sorted({e.link for e in items if e.link is not None})
        row: dict[str, object] = {
            "sxid": sxid,
            "fatal": fatal,
            "severity": "critical" if fatal else "warning",
            "switch": last.switch,
            "pci_bus_id": pci,
            "links": links[:32],
            "count": len(items),
            "first_seen": iso_utc(items[0].timestamp),
            "last_seen": iso_utc(last.timestamp),
            "last_message": last.message,
        }
        rows.append((not fatal, -last.timestamp, row))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [row for _, _, row in rows[:MAX_GROUPS]]


def event_rows(events: Sequence[GpuEvent]) -> list[dict[str, object]]:
    """The newest MAX_EVENTS GPU events as JSON rows, oldest first."""
    return [
        {
            "kind": e.kind,
            "gpu_index": e.gpu_index,
            "gpu_uuid": e.gpu_uuid,
            "pci_bus_id": e.pci_bus_id,
            "time": iso_utc(e.timestamp),
            "message": e.message,
        }
        for e in events[-MAX_EVENTS:]
    ]
