"""NVIDIA Xid errors: parse the kernel log's ``NVRM: Xid`` lines, map them to GPUs, and
judge them against NVIDIA's Xid catalog. Reading the log itself is ``agent.kmsg``'s job
(``read_kmsg`` is re-exported here, as the agent contract names it)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from agent.backend import KmsgRecord, MigInstance
from agent.kmsg import DEFAULT_KMSG, boot_time, kmsg_error, parse_kmsg_text, read_kmsg

__all__ = [
    "DEFAULT_KMSG",
    "RECOVERY_ACTIONS",
    "SEVERITY_ORDER",
    "XidEvent",
    "XidInfo",
    "XidLine",
    "analyze",
    "boot_time",
    "catalog",
    "event_severity",
    "info_for",
    "kmsg_error",
    "normalize_pci_bus_id",
    "parse_kmsg_text",
    "parse_xid_line",
    "parse_xids",
    "read_kmsg",
    "recommended_action",
]

SEVERITY_ORDER = ("info", "warning", "critical")
_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITY_ORDER)}

# Severity from the catalog's "Resolution Bucket (Immediate Action)": how much the
# immediate remedy disrupts the node is a fair measure of how badly the GPU is hurt.
#   critical - the GPU (or its node) is unusable or untrustworthy until an operator
#              acts: a GPU reset, a machine restart, a hardware workflow (ECC
#              double-bit errors, fatal NVLink errors) whose usual end is a reset or
#              an RMA, or "contact support" because no field remedy exists.
#   warning  - the GPU still works: one application faulted (restart it), or a
#              mechanical / software condition needs a look (cooling, UVM, firmware).
#   info     - the catalog says to ignore it (logged for the record).
_BUCKET_SEVERITY: dict[str, str] = {
    "RESET_GPU": "critical",
    "RESTART_BM": "critical",
    "RESTART_VM": "critical",
    "WORKFLOW_XID_48": "critical",
    "WORKFLOW_NVLINK_ERR": "critical",
    "WORKFLOW_NVLINK5_ERR": "critical",
    "CONTACT_SUPPORT": "critical",
    # Xid 154 names the recovery action itself; each event is re-judged from it
    # (see event_severity). Critical is the catalog-level default: most 154s ask
    # for a reset or a reboot.
    "XID_154": "critical",
    "RESTART_APP": "warning",
    "CHECK_MECHANICALS": "warning",
    "CHECK_UVM": "warning",
    "UPDATE_SWFW": "warning",
    # Xid 45 is mostly a side effect of a killed process or of another Xid; alone it
    # asks for a Fabric Manager restart.
    "WORKFLOW_XID_45": "warning",
    "IGNORE": "info",
}
# Codes whose catalog entry gives only free-text guidance (no bucket). Their
# mnemonics name fatal hardware faults of the same kind as catalogued RESET_GPU codes
# (62 PMU_HALT_ERROR, 140 UNRECOVERABLE_ECC_ERROR_ESCAPE); every other code without a
# bucket is a warning: worth a look, not a page.
_NO_BUCKET_CRITICAL = frozenset({167, 169, 171, 172})  # PCIE_FATAL_TIMEOUT, SEC2_HALT_ERROR,
# UNCORRECTABLE_DRAM_ERROR, UNCORRECTABLE_SRAM_ERROR

# What each bucket asks an operator to do, in words an LLM or a person can act on.
_BUCKET_TEXT: dict[str, str] = {
    "RESET_GPU": "Drain the GPU's workloads, then reset the GPU (nvidia-smi -r -i <index>) "
    "or reboot the node.",
    "RESTART_BM": "Drain the node and power-cycle it: the GPU cannot recover in place.",
    "RESTART_VM": "Restart the virtual machine that owns the GPU.",
    "RESTART_APP": "Restart the application; the GPU needs no action unless the error repeats.",
    "WORKFLOW_XID_48": "Uncorrectable (double-bit) ECC error: check remapped rows and retired "
    "pages, reset the GPU to apply pending remaps, and contact NVIDIA support if a remap failed.",
    "WORKFLOW_XID_45": "Usually a side effect of a killed process or another Xid: act on that "
    "one. Seen alone, restart NVIDIA Fabric Manager.",
    "WORKFLOW_NVLINK_ERR": "NVLink error: check link state and error counters "
    "(get_nvlink_topology); reset the GPU if links are down; contact support if it repeats.",
    "WORKFLOW_NVLINK5_ERR": "NVLink 5 error: check link state and error counters "
    "(get_nvlink_topology); reset the GPU if links are down; contact support if it repeats.",
    "CHECK_MECHANICALS": "Check cooling and power delivery (fans, airflow, power cables): the "
    "GPU reduced its clocks to protect itself.",
    "CHECK_UVM": "Check the nvidia-uvm driver and the application's unified-memory use.",
    "UPDATE_SWFW": "Update the driver and GPU firmware to a supported pair.",
    "CONTACT_SUPPORT": "Collect nvidia-bug-report.sh output and contact NVIDIA support.",
    "IGNORE": "No action needed; informational.",
    "XID_154": "Do what the driver's recovery action says (GPU reset or node reboot).",
}
_NO_BUCKET_TEXT = (
    "NVIDIA's Xid catalog gives free-text guidance for this code: look it up there "
    "(docs.nvidia.com/deploy/xid-errors) and collect nvidia-bug-report.sh output."
)
_UNKNOWN_TEXT = (
    "This Xid is not in the agent's catalog (a driver newer than the catalog?): look it up "
    "in NVIDIA's Xid catalog and collect nvidia-bug-report.sh output if it repeats."
)

# Xid 154's recovery actions (nvmlDeviceGpuRecoveryAction_t; RECOVERY_ACTION_* in
# backend.py) and how badly each hurts.
# value: (name, severity, what to do)
RECOVERY_ACTIONS: dict[int, tuple[str, str, str]] = {
    0: ("None", "info", "No recovery needed now: the driver cleared its request."),
    1: (
        "GPU Reset Required",
        "critical",
        "The driver asks for a GPU reset: drain the GPU's workloads, then reset it "
        "(nvidia-smi -r -i <index>).",
    ),
    2: (
        "Node Reboot Required",
        "critical",
        "The driver asks for a node reboot: cordon and drain the node, then reboot it.",
    ),
    3: (
        "Drain P2P",
        "warning",
        "The driver asks to drain peer-to-peer traffic: stop multi-GPU (NVLink/P2P) jobs "
        "on this GPU, then reset it when idle.",
    ),
    4: (
        "Drain and Reset",
        "critical",
        "The driver asks to drain and reset: drain the GPU's workloads, then reset it "
        "(nvidia-smi -r -i <index>).",
    ),
}


@dataclass(frozen=True)
class XidInfo:
    """One catalog entry: what an Xid means and what to do about it."""

    xid: int
    mnemonic: str
    description: str
    immediate_action: str | None  # catalog bucket, e.g. "RESET_GPU"; None if none given
    investigatory_action: str | None
    severity: str  # "critical" | "warning" | "info"
    known: bool = True  # False for codes the catalog does not list


@dataclass(frozen=True)
class XidEvent:
    """One Xid occurrence from the kernel log, mapped to a GPU where possible."""

    xid: int
    pci_bus_id: str  # NVML form "00000000:3B:00.0"
    timestamp: float  # epoch seconds (boot time + kmsg offset)
    pid: int | None
    process: str | None
    message: str  # the NVRM line as logged
    gpu_index: int | None
    gpu_uuid: str | None
    recovery_action: int | None = None  # Xid 154 only: RECOVERY_ACTION_* value
    # MIG: the GPU instance (and compute instance) the driver attributed the Xid to, from
    # the line's "GPU-I:nn" ("GPU-CI:nn") tag; None when the line carries no tag.
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


_catalog: dict[int, XidInfo] | None = None


def _catalog_path() -> str:
    # Not abspath: inside a zipapp __file__ is "<archive>/agent/xid.py", and the zip
    # loader matches data paths against the archive path exactly as it was given.
    return os.path.join(os.path.dirname(__file__), "data", "xid-catalog.tsv")


def _severity(xid: int, bucket: str | None) -> str:
    if bucket:
        # A bucket the table does not know yet (new catalog) is treated like an
        # unknown remedy: worth a look.
        return _BUCKET_SEVERITY.get(bucket, "warning")
    return "critical" if xid in _NO_BUCKET_CRITICAL else "warning"


def parse_catalog(text: str) -> dict[int, XidInfo]:
    """Parse the catalog TSV (header line, then xid, mnemonic, description,
    immediate_action, investigatory_action, ...). Rows that do not parse are skipped."""
    entries: dict[int, XidInfo] = {}
    lines = text.splitlines()
    for line in lines[1:]:
        cols = line.split("\t")
        if len(cols) < 5 or not cols[0].strip().isdigit():
            continue
        xid = int(cols[0])
        immediate = cols[3].strip() or None
        entries[xid] = XidInfo(
            xid=xid,
            mnemonic=cols[1].strip(),
            description=cols[2].strip(),
            immediate_action=immediate,
            investigatory_action=cols[4].strip() or None,
            severity=_severity(xid, immediate),
        )
    return entries


def catalog() -> dict[int, XidInfo]:
    """The Xid catalog shipped with the agent, parsed on first use."""
    global _catalog
    if _catalog is None:
        # The module's loader reads files beside it on disk and inside a zipapp alike
        # (what importlib.resources does, without its ~7 ms import).
        _catalog = parse_catalog(__loader__.get_data(_catalog_path()).decode("utf-8"))  # type: ignore[name-defined]
    return _catalog


def info_for(xid: int) -> XidInfo:
    """The catalog entry for ``xid``; a generic 'unknown' entry for codes it lacks."""
    found = catalog().get(xid)
    if found is not None:
        return found
    return XidInfo(
        xid=xid,
        mnemonic="UNKNOWN",
        description=f"Xid {xid} is not in the agent's catalog",
        immediate_action=None,
        investigatory_action=None,
        severity="warning",
        known=False,
    )


def recommended_action(info: XidInfo) -> str:
    """The immediate action in words."""
    if not info.known:
        return _UNKNOWN_TEXT
    if info.immediate_action is None:
        return _NO_BUCKET_TEXT
    return _BUCKET_TEXT.get(info.immediate_action, f"Catalog action: {info.immediate_action}.")


def event_severity(event: XidEvent) -> str:
    """Severity of one event: the catalog's, except Xid 154, judged by the recovery
    action it names (``None`` is informational, a reset or reboot critical)."""
    if event.xid == 154 and event.recovery_action is not None:
        known = RECOVERY_ACTIONS.get(event.recovery_action)
        return known[1] if known else "critical"
    return info_for(event.xid).severity


# --- parsing Xid lines ------------------------------------------------------------

# "NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off..."
# "NVRM: Xid (PCI:0000:18:00): 13, pid=12345, name=python3, Graphics SM Warp Exception..."
# "NVRM: Xid (0000:01:00): 31, Ch 0000000b, engmask 00000120, intr 10000000"  (old drivers)
# "NVRM: Xid (PCI:0000:3f:00): 46"
# On a GPU in MIG mode the driver adds the GPU instance (and, when it knows it, the compute
# instance) the error is attributed to. NVIDIA's open kernel modules print
#   "NVRM: Xid (PCI:%04x:%02x:%02x GPU-I:%02u GPU-CI:%02u): %d, pid=%s, name=%s, %s"
#   "NVRM: Xid (PCI:%04x:%02x:%02x GPU-I:%02u): %d, pid=%s, name=%s, %s"
# (src/nvidia/src/kernel/gpu/rc/kernel_rc.c, krcReportXid), and document the contained-error
# form "NVRM: Xid (PCI:0000:01:00 GPU-I:05): 94, pid=7194, Contained: CE User Channel (0x9).
# RST: No, D-RST: No" (src/nvidia/src/kernel/gpu/arch/ampere/kern_gpu_ga100.c). Errors the
# driver cannot attribute to one instance (Xid 95 uncontained, 79...) carry no tag.
_XID_LINE = re.compile(
    r"NVRM: Xid \((?:PCI:)?([0-9A-Fa-f]{1,8}:[0-9A-Fa-f]{1,2}:[0-9A-Fa-f]{1,2}(?:\.[0-7])?)"
    r"(?: GPU-I:(\d{1,3})(?: GPU-CI:(\d{1,3}))?)?\):"
    r" ?(\d{1,6})(?:,\s*(.*))?$"
)
_PID_NAME = re.compile(r"pid='?(<unknown>|\d+)'?(?:,\s*name=(<unknown>|[^,]*))?(?:,\s*|$)")
_RECOVERY_CODE = re.compile(r"to 0x([0-9A-Fa-f]{1,8})\b")
# "NVRM: GPU at PCI:0000:3b:00: GPU-bc0fa0b9-cac2-f507-b715-9bebdb69c71e"
_GPU_AT = re.compile(
    r"NVRM: GPU at (?:PCI:)?([0-9A-Fa-f]{1,8}:[0-9A-Fa-f]{1,2}:[0-9A-Fa-f]{1,2}(?:\.[0-7])?):"
    r" (GPU-[0-9A-Fa-f-]{8,})"
)
_PCI = re.compile(r"(?:([0-9A-Fa-f]{1,8}):)?([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})(?:\.([0-7]))?")


def normalize_pci_bus_id(value: str) -> str | None:
    """Any PCI address form ("0000:3b:00" as the kernel logs it, "0000:3B:00.0",
    "00000000:3b:00.0" as NVML reports it, "3b:00.0") -> NVML's "00000000:3B:00.0";
    None when it is not a PCI address."""
    m = _PCI.fullmatch(value.strip())
    if m is None:
        return None
    domain = int(m[1], 16) if m[1] else 0
    bus, device = int(m[2], 16), int(m[3], 16)
    if device > 0x1F:
        return None
    function = int(m[4]) if m[4] else 0
    return f"{domain:08X}:{bus:02X}:{device:02X}.{function:X}"


def _recovery_action(detail: str) -> int | None:
    # "GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"; the
    # number is authoritative (driver versions word the text differently).
    m = _RECOVERY_CODE.search(detail)
    if m is not None:
        return int(m[1], 16)
    lowered = detail.lower()
    for words, code in (
        ("reboot", 2),
        ("drain and reset", 4),
        ("drain p2p", 3),
        ("reset", 1),
    ):
        if words in lowered:
            return code
    return None


class XidLine(NamedTuple):
    """One well-formed ``NVRM: Xid`` line, parsed."""

    xid: int
    pci_bus_id: str  # NVML form "00000000:3B:00.0"
    pid: int | None
    process: str | None
    text: str  # the NVRM text as logged
    gpu_instance_id: int | None = None  # MIG "GPU-I:nn" tag
    compute_instance_id: int | None = None  # MIG "GPU-CI:nn" tag


def parse_xid_line(line: str) -> XidLine | None:
    """The Xid, NVML PCI id, pid, process, NVRM text and MIG instance tags of one log line,
    or None if it is not a well-formed Xid line."""
    start = line.find("NVRM: Xid")
    if start < 0:
        return None
    text = line[start:].rstrip()
    m = _XID_LINE.match(text)
    if m is None:
        return None
    pci = normalize_pci_bus_id(m[1])
    if pci is None:
        return None
    pid: int | None = None
    process: str | None = None
    detail = m[5] or ""
    pm = _PID_NAME.match(detail)
    if pm is not None:
        if pm[1] != "<unknown>":
            pid = int(pm[1])
        name = (pm[2] or "").strip()
        if name and name != "<unknown>":
            process = name
    return XidLine(
        int(m[4]),
        pci,
        pid,
        process,
        text,
        int(m[2]) if m[2] is not None else None,
        int(m[3]) if m[3] is not None else None,
    )


def parse_xids(
    records: Iterable[KmsgRecord],
    boot_time: float,
    gpus: Sequence[tuple[int, str | None, str | None]] = (),
) -> list[XidEvent]:
    """Xid events from kernel-log records, oldest first. ``gpus`` are (index, uuid,
    pci_bus_id) triples used to map each event's PCI address to a GPU; where a GPU is
    missing from them (e.g. it fell off the bus) the driver's own "GPU at PCI:...: GPU-..."
    line supplies the uuid. Malformed Xid lines and other drivers' lines are skipped."""
    by_pci: dict[str, tuple[int | None, str | None]] = {}
    for index, uuid, pci in gpus:
        key = normalize_pci_bus_id(pci) if pci else None
        if key is not None:
            by_pci[key] = (index, uuid)
    logged_uuids: dict[str, str] = {}
    events: list[XidEvent] = []
    for record in records:
        if "NVRM" not in record.message:  # cheap skip of other drivers' lines
            continue
        for line in record.message.split("\n"):
            at = _GPU_AT.search(line)
            if at is not None:
                key = normalize_pci_bus_id(at[1])
                if key is not None:
                    logged_uuids[key] = at[2]
                continue
            parsed = parse_xid_line(line)
            if parsed is None:
                continue
            gpu_index, gpu_uuid = by_pci.get(parsed.pci_bus_id, (None, None))
            events.append(
                XidEvent(
                    xid=parsed.xid,
                    pci_bus_id=parsed.pci_bus_id,
                    timestamp=boot_time + record.usec_since_boot / 1e6,
                    pid=parsed.pid,
                    process=parsed.process,
                    message=parsed.text,
                    gpu_index=gpu_index,
                    gpu_uuid=gpu_uuid,
                    recovery_action=_recovery_action(parsed.text) if parsed.xid == 154 else None,
                    gpu_instance_id=parsed.gpu_instance_id,
                    compute_instance_id=parsed.compute_instance_id,
                )
            )
    if logged_uuids:
        events = [
            replace(e, gpu_uuid=logged_uuids[e.pci_bus_id])
            if e.gpu_uuid is None and e.pci_bus_id in logged_uuids
            else e
            for e in events
        ]
    events.sort(key=lambda e: e.timestamp)
    return events


# --- analysis ---------------------------------------------------------------------


def _instance(
    instances: Mapping[int, Sequence[MigInstance]] | None,
    gpu_index: int | None,
    gpu_instance_id: int | None,
) -> MigInstance | None:
    """The MIG instance an instance-tagged Xid names, when the inventory lists it."""
    if not instances or gpu_index is None or gpu_instance_id is None:
        return None
    return next(
        (m for m in instances.get(gpu_index, ()) if m.gpu_instance_id == gpu_instance_id), None
    )


_MAX_LISTED = 20  # pids / process names kept per group, so output stays bounded


def iso_utc(timestamp: float) -> str:
    """Epoch seconds -> "2026-11-28T10:15:00Z" (clamped to years 1970..9999)."""
    clamped = min(max(timestamp, 0.0), 253402300799.0)  # 9999-12-31T23:59:59Z
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clamped))


def analyze(
    events: Iterable[XidEvent],
    since_minutes: float,
    now: float | None = None,
    instances: Mapping[int, Sequence[MigInstance]] | None = None,
) -> dict[str, Any]:
    """The ``analyze_xid_errors`` result: events at or after ``now - since_minutes``,
    grouped by (xid, GPU, MIG GPU instance), worst severity first, then most recent.
    ``instances``: the MIG instances of each GPU (by index), from the inventory, to name
    the MIG device (uuid, profile) an instance-tagged Xid hit.

    Returns ``{"window": {"since_minutes", "start", "end"},
    "summary": {"events", "groups", "critical", "warning", "info", "gpus_affected",
    "worst_severity"}, "xids": [group, ...]}``; each group has xid, name, description,
    severity, immediate_action, investigatory_action, recommended_action, gpu_index,
    gpu_uuid, pci_bus_id, count, first_seen, last_seen (UTC ISO-8601), pids, processes,
    recovery_action (Xid 154), last_message, and gpu_instance_id, compute_instance_id,
    mig_uuid, mig_profile (MIG-tagged Xids; null otherwise).
    """
    end = time.time() if now is None else now
    start = end - since_minutes * 60.0
    groups: dict[tuple[int, str, int | None], dict[str, Any]] = {}
    total = 0
    for event in events:
        if event.timestamp < start:
            continue
        total += 1
        key = (event.xid, event.pci_bus_id, event.gpu_instance_id)
        group = groups.get(key)
        if group is None:
            group = {"events": [], "pids": [], "processes": []}
            groups[key] = group
        group["events"].append(event)
        pids, names = group["pids"], group["processes"]
        if event.pid is not None and event.pid not in pids and len(pids) < _MAX_LISTED:
            pids.append(event.pid)
        if event.process and event.process not in names and len(names) < _MAX_LISTED:
            names.append(event.process)

    rows: list[tuple[int, float, dict[str, Any]]] = []
    for (xid, pci, gpu_instance), group in groups.items():
        evs: list[XidEvent] = sorted(group["events"], key=lambda e: e.timestamp)
        first, last = evs[0], evs[-1]
        info = info_for(xid)
        severity = event_severity(last)  # Xid 154: the latest recovery action counts
        index = next((e.gpu_index for e in evs if e.gpu_index is not None), None)
        uuid = next((e.gpu_uuid for e in evs if e.gpu_uuid is not None), None)
        action = recommended_action(info)
        recovery: str | None = None
        if xid == 154 and last.recovery_action is not None:
            known = RECOVERY_ACTIONS.get(last.recovery_action)
            if known is not None:
                recovery, _, action = known
            else:  # a value newer than this agent: report it raw, keep the catalog text
                recovery = f"0x{last.recovery_action:x}"
        if index is not None:
            action = action.replace("<index>", str(index))
        mig = _instance(instances, index, gpu_instance)
        compute = next(
            (e.compute_instance_id for e in reversed(evs) if e.compute_instance_id is not None),
            None,
        )
        row = {
            "xid": xid,
            "name": info.mnemonic,
            "description": info.description,
            "severity": severity,
            "immediate_action": info.immediate_action,
            "investigatory_action": info.investigatory_action,
            "recommended_action": action,
            "gpu_index": index,
            "gpu_uuid": uuid,
            "pci_bus_id": pci,
            "count": len(evs),
            "first_seen": iso_utc(first.timestamp),
            "last_seen": iso_utc(last.timestamp),
            "pids": group["pids"],
            "processes": group["processes"],
            "recovery_action": recovery,
            "last_message": last.message,
            "gpu_instance_id": gpu_instance,
            "compute_instance_id": compute,
            "mig_uuid": mig.uuid if mig is not None else None,
            "mig_profile": mig.profile if mig is not None else None,
        }
        rows.append((_SEVERITY_RANK.get(severity, 1), last.timestamp, row))
    rows.sort(
        key=lambda r: (
            -r[0],
            -r[1],
            r[2]["xid"],
            r[2]["pci_bus_id"],
            -1 if r[2]["gpu_instance_id"] is None else r[2]["gpu_instance_id"],
        )
    )
    xids = [r[2] for r in rows]

    counts = {name: 0 for name in SEVERITY_ORDER}
    for row in xids:
        counts[row["severity"]] = counts.get(row["severity"], 0) + 1
    return {
        "window": {
            "since_minutes": since_minutes,
            "start": iso_utc(max(start, 0.0)),
            "end": iso_utc(end),
        },
        "summary": {
            "events": total,
            "groups": len(xids),
            "critical": counts["critical"],
            "warning": counts["warning"],
            "info": counts["info"],
            "gpus_affected": len({r["pci_bus_id"] for r in xids}),
            "worst_severity": xids[0]["severity"] if xids else None,
        },
        "xids": xids,
    }
