"""Node-level checks beyond single GPUs: InfiniBand/RoCE ports, NVSwitch SXids and GPU
reset events. Each returns issues ``{check, severity, message, action}`` like
``agent.health``'s per-GPU checks. Pure functions, standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.backend import IbPort
from agent.sxid import GpuEvent, SxidEvent

Issue = dict[str, Any]
_MAX_NAMED = 8  # ports / switches / GPUs named in one message


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    return shown + (f" and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else "")


def judge_infiniband(ports: Sequence[IbPort] | None) -> list[Issue]:
    """A port that is not ACTIVE/LinkUp. Unused ports exist (a second port without a
    cable), so this is a warning; the fleet view compares active counts across peers."""
    if not ports:
        return []
    down = [p for p in ports if not p.active]
    if not down:
        return []
    described = [f"{p.device} port {p.port} {p.state or '?'}/{p.phys_state or '?'}" for p in down]
    polling = any(p.phys_state == "Polling" for p in down)
    return [
        {
            "check": "infiniband",
            "severity": "warning",
            "message": (
                f"{len(down)} of {len(ports)} RDMA port(s) are not active: {_names(described)}"
                + (
                    " (Polling: the port sees no link partner: cable, transceiver or switch port)"
                    if polling
                    else ""
                )
                + ". Multi-node jobs using them fail or fall back to slower paths."
            ),
            "action": (
                "Check `ibstat`/`ibv_devinfo` on the node, the cable and the switch port; "
                "compare with peer nodes (a port that is never cabled is expected to be down)."
            ),
        }
    ]


def judge_sxids(events: Sequence[SxidEvent]) -> list[Issue]:
    """SXids in the window: fatal ones break the NVLink fabric behind that switch."""
    if not events:
        return []
    fatal = [e for e in events if e.fatal]
    switches = sorted({e.switch for e in (fatal or events)})
    codes = sorted({e.sxid for e in (fatal or events)})
    if fatal:
        return [
            {
                "check": "nvswitch",
                "severity": "critical",
                "message": (
                    f"{len(fatal)} fatal NVSwitch SXid(s) ({_names([str(c) for c in codes])}) "
                    f"on {_names(switches)}: NVLink traffic through that switch is broken; "
                    "jobs using these GPUs fail or hang in NCCL."
                ),
                "action": (
                    "Drain the node; the fabric needs a reset (reset all GPUs and NVSwitches, "
                    "or reboot) with nvidia-fabricmanager running. Repeats: NVSwitch tray RMA."
                ),
            }
        ]
    return [
        {
            "check": "nvswitch",
            "severity": "warning",
            "message": (
                f"{len(events)} non-fatal NVSwitch SXid(s) ({_names([str(c) for c in codes])}) "
                f"on {_names(switches)}: the fabric corrected them, but they often precede "
                "link failures."
            ),
            "action": (
                "Watch for repeats (analyze_xid_errors) and NVLink error counters "
                "(get_nvlink_topology); schedule a check if they keep coming."
            ),
        }
    ]


def judge_gpu_events(events: Sequence[GpuEvent]) -> list[Issue]:
    """GPUs that failed to initialise (critical) or were reset/re-attached (info)."""
    issues = []
    failed = sorted({_who(e) for e in events if e.kind == "init_failed"})
    if failed:
        issues.append(
            {
                "check": "gpu_init",
                "severity": "critical",
                "message": (
                    f"The driver failed to initialise {_names(failed)} (RmInitAdapter failed): "
                    "the GPU cannot be used."
                ),
                "action": (
                    "Read the NVRM lines before the failure in the kernel log; reset the GPU or "
                    "reboot the node; if it persists, the GPU needs service."
                ),
            }
        )
    reset = sorted({_who(e) for e in events if e.kind in ("reattached", "reset")})
    if reset:
        issues.append(
            {
                "check": "gpu_reset",
                "severity": "info",
                "message": (
                    f"{_names(reset)} was reset or re-initialised in this window (the "
                    "driver attached it again): work running on it then was lost."
                ),
                "action": (
                    "Nothing if the reset was planned (or the GPU runs without persistence "
                    "mode, which re-initialises it when its last client exits); otherwise "
                    "look for the Xid that preceded it (analyze_xid_errors)."
                ),
            }
        )
    return issues


def _who(event: GpuEvent) -> str:
    return f"GPU {event.gpu_index}" if event.gpu_index is not None else event.pci_bus_id
