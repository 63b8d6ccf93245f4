"""Judge raw GPU facts (``GpuHealthData``) and recent XIDs: a status per GPU, and for each
problem an issue ``{check, severity, message, action}`` a person or an LLM can act on.

Statuses, worst last (``STATUS_ORDER``), and what each asks of an operator:
  healthy   nothing to do.
  warning   the GPU works; something deserves a look (a counter creeping up, a setting).
  degraded  the GPU works but slower or less reliably than it should, or needs a reset
            to finish a repair (pending remap): schedule it (drain, reset) soon.
  critical  do not run work on it: it is gone, out of spare memory rows, at its
            shutdown temperature, or the driver says it must be reset or rebooted.
            Drain the node now.

Missing facts (``None``) are never problems: the backend lists them in ``unsupported``
and so does the verdict. Pure functions, standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.backend import (
    CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING,
    CLOCK_EVENT_DISPLAY_CLOCK_SETTING,
    CLOCK_EVENT_GPU_IDLE,
    CLOCK_EVENT_HW_POWER_BRAKE_SLOWDOWN,
    CLOCK_EVENT_HW_SLOWDOWN,
    CLOCK_EVENT_HW_THERMAL_SLOWDOWN,
    CLOCK_EVENT_SW_POWER_CAP,
    CLOCK_EVENT_SW_THERMAL_SLOWDOWN,
    CLOCK_EVENT_SYNC_BOOST,
    GpuHealthData,
    NvLinkState,
)
from agent.catalog import STATUSES, rank, worst

if TYPE_CHECKING:
    from agent.xid import XidEvent

STATUS_ORDER = STATUSES  # the catalog's vocabulary, best first

# Temperature: warn this close (°C) below the GPU's own slowdown threshold. NVIDIA's
# "max operating" temperature, where software thermal slowdown starts, sits 2-5 °C under
# "slowdown" on data-centre parts (H100: 87/89/92 °C max-operating/slowdown/shutdown).
TEMP_WARN_MARGIN_C = 5
# Without thresholds (the GPU does not report them) only a very hot GPU is flagged.
TEMP_FALLBACK_WARN_C = 90
# Power: a single sample above the enforced limit by more than this is not noise.
POWER_OVER_LIMIT_RATIO = 1.05
# An enforced limit this far below the default means someone (an admin, the BMC, a DCGM
# policy) capped the GPU: it will run slower than its siblings.
POWER_CAPPED_RATIO = 0.90
# Cumulative counters since the driver loaded / the GPU was reset.
PCIE_REPLAY_WARN = 100
# AER correctable errors since boot: a few are normal on a busy link; many mean the link
# is marginal (the same story as replays).
PCIE_AER_CORRECTABLE_WARN = 100
NVLINK_CRC_FLIT_WARN = 100
NVLINK_REPLAY_WARN = 100
# Page retirement (pre-Ampere): 64 pages is the table size; NVIDIA's RMA guidance starts
# around 60 retired pages.
RETIRED_PAGES_RMA = 60

CLOCK_EVENT_NAMES = {
    CLOCK_EVENT_GPU_IDLE: "gpu_idle",
    CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING: "applications_clocks_setting",
    CLOCK_EVENT_SW_POWER_CAP: "sw_power_cap",
    CLOCK_EVENT_HW_SLOWDOWN: "hw_slowdown",
    CLOCK_EVENT_SYNC_BOOST: "sync_boost",
    CLOCK_EVENT_SW_THERMAL_SLOWDOWN: "sw_thermal_slowdown",
    CLOCK_EVENT_HW_THERMAL_SLOWDOWN: "hw_thermal_slowdown",
    CLOCK_EVENT_HW_POWER_BRAKE_SLOWDOWN: "hw_power_brake_slowdown",
    CLOCK_EVENT_DISPLAY_CLOCK_SETTING: "display_clock_setting",
}
# Not faults: an idle GPU drops its clocks; application clocks, sync boost and display
# clocks are configuration. SW power cap is the normal state of a GPU working at its
# power limit; one sample cannot tell "sustained" from "a busy second", so it is judged
# through the power check (a lowered limit) instead of here.
CLOCK_EVENTS_BENIGN = (
    CLOCK_EVENT_GPU_IDLE
    | CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING
    | CLOCK_EVENT_SYNC_BOOST
    | CLOCK_EVENT_DISPLAY_CLOCK_SETTING
    | CLOCK_EVENT_SW_POWER_CAP
)

# What slows a working GPU down, for comparing nodes (stragglers): idle and pure
# configuration masked; the power cap kept (a capped GPU is slower than its peers).
CLOCK_EVENTS_SLOWDOWN_MASK = (
    CLOCK_EVENT_GPU_IDLE
    | CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING
    | CLOCK_EVENT_SYNC_BOOST
    | CLOCK_EVENT_DISPLAY_CLOCK_SETTING
)

CLOCK_EVENTS_FAULT = (
    CLOCK_EVENT_SW_THERMAL_SLOWDOWN
    | CLOCK_EVENT_HW_THERMAL_SLOWDOWN
    | CLOCK_EVENT_HW_SLOWDOWN
    | CLOCK_EVENT_HW_POWER_BRAKE_SLOWDOWN
)

RECOVERY_ACTION_NAMES = {
    0: "none",
    1: "gpu_reset",
    2: "node_reboot",
    3: "drain_p2p",
    4: "drain_and_reset",
}

_NODE = "<node>"


def _drain(node: str) -> str:
    return (
        f"kubectl cordon {node} && kubectl drain {node} --ignore-daemonsets --delete-emptydir-data"
    )


def _reset(index: int) -> str:
    return f"nvidia-smi -r -i {index}"


class _Verdict:
    """Collects the issues of one GPU."""

    def __init__(self, data: GpuHealthData, node: str) -> None:
        self.d = data
        self.i = data.index
        self.node = node
        self.issues: list[dict[str, Any]] = []

    def add(self, check: str, severity: str, message: str, action: str, **extra: Any) -> None:
        self.issues.append(
            {"check": check, "severity": severity, "message": message, "action": action, **extra}
        )

    @property
    def who(self) -> str:
        pci = f" ({self.d.pci_bus_id})" if self.d.pci_bus_id else ""
        return f"GPU {self.i}{pci}"


def judge_gpu(
    data: GpuHealthData,
    xids: Sequence[XidEvent],
    *,
    node: str | None = None,
    boot_time: float | None = None,
) -> dict[str, Any]:
    """One GPU's verdict: status, issues (worst first), raw metrics and the queries it does
    not support. ``xids``: recent Xid events (those of other GPUs are ignored). ``node``
    names the Kubernetes node in the suggested kubectl commands. ``boot_time``: Xids
    before it (from the persistent log) are history the reboot cleared: at most a
    warning, and their recovery requests are done."""
    v = _Verdict(data, node or _NODE)
    mine = [
        e
        for e in xids
        if e.gpu_index == data.index
        or (e.gpu_index is None and data.pci_bus_id is not None and e.pci_bus_id == data.pci_bus_id)
    ]
    if boot_time is not None:
        before = [e for e in mine if e.timestamp < boot_time]
        mine = [e for e in mine if e.timestamp >= boot_time]
        _check_xids_before_boot(v, before, boot_time)
    if data.lost:
        _check_lost(v)
    else:
        _check_temperature(v)
        _check_power(v)
        _check_clock_events(v)
        _check_ecc(v)
        _check_retired_pages(v)
        _check_remapped_rows(v)
        _check_pcie(v)
        _check_pcie_link(v)
        _check_pcie_aer(v)
        _check_fabric(v)
        _check_nvlink(v)
    _check_xids(v, mine)
    recovery = _check_recovery_action(v, mine)
    issues = sorted(v.issues, key=lambda issue: -rank(issue["severity"]))
    status = issues[0]["severity"] if issues else "healthy"
    return {
        "index": data.index,
        "uuid": data.uuid,
        "name": data.name,
        "pci_bus_id": data.pci_bus_id,
        "status": status,
        "issues": issues,
        "metrics": _metrics(data, recovery, len(mine)),
        "unsupported": sorted(set(data.unsupported)),
    }


def judge_node(gpus: Sequence[dict[str, Any]]) -> str:
    """The node's status: its worst GPU's ("healthy" when it has none)."""
    return worst(*(gpu.get("status", "healthy") for gpu in gpus))


# ---- checks --------------------------------------------------------------------------


def _check_lost(v: _Verdict) -> None:
    why = f": {v.d.error}" if v.d.error else ""
    v.add(
        "gpu_lost",
        "critical",
        f"{v.who} has fallen off the bus / is inaccessible: NVML cannot talk to it{why}. "
        "Every workload on it has failed and the driver cannot recover it in place.",
        f"Drain the node ({_drain(v.node)}), then reset the GPU ({_reset(v.i)}) or, "
        "usually needed after Xid 79, reboot the node. Check PCIe seating and risers, power "
        "cables and the PSU, and thermals (BMC event log: ipmitool sel elist). If it falls "
        "off the bus again, collect nvidia-bug-report.sh output and RMA the GPU.",
    )


def _check_temperature(v: _Verdict) -> None:
    t, slow, shut = v.d.temperature_c, v.d.temp_slowdown_c, v.d.temp_shutdown_c
    if t is None:
        return
    cooling = (
        "Check cooling: fans and airflow, inlet (ambient) temperature, blocked filters or "
        "failed chassis fans, liquid-cooling flow; compare with the other GPUs in the node."
    )
    if shut is not None and t >= shut:
        v.add(
            "temperature",
            "critical",
            f"{v.who} is at {t} °C, at or above its shutdown temperature ({shut} °C): the "
            "GPU powers itself off to protect the hardware.",
            f"Drain the node now ({_drain(v.node)}) and fix cooling before reusing it. " + cooling,
        )
    elif slow is not None and t >= slow:
        v.add(
            "temperature",
            "degraded",
            f"{v.who} is at {t} °C, at or above its slowdown temperature ({slow} °C"
            + (f"; shutdown at {shut} °C" if shut is not None else "")
            + "): hardware thermal slowdown cuts its clocks, so jobs run much slower.",
            cooling + " Drain the node if it does not cool down.",
        )
    elif slow is not None and t >= slow - TEMP_WARN_MARGIN_C:
        v.add(
            "temperature",
            "warning",
            f"{v.who} is at {t} °C, within {TEMP_WARN_MARGIN_C} °C of its slowdown "
            f"temperature ({slow} °C).",
            cooling,
        )
    elif slow is None and shut is None and t >= TEMP_FALLBACK_WARN_C:
        v.add(
            "temperature",
            "warning",
            f"{v.who} is at {t} °C and does not report its slowdown/shutdown thresholds; "
            f"{TEMP_FALLBACK_WARN_C} °C and more is hot for any NVIDIA GPU.",
            cooling,
        )


def _check_power(v: _Verdict) -> None:
    p, limit, default = v.d.power_w, v.d.power_limit_w, v.d.power_default_limit_w
    if limit is not None and default is not None and limit < default * POWER_CAPPED_RATIO:
        v.add(
            "power_limit",
            "warning",
            f"{v.who}'s enforced power limit is {limit:g} W, below its default {default:g} W: "
            "it is power-capped and will run slower than its siblings.",
            "Find who lowered it: `nvidia-smi -q -d POWER` (Requested/Enforced limit), a "
            "DCGM or BMC power-capping policy, or a site script running `nvidia-smi -pl`. "
            f"Restore it with `nvidia-smi -i {v.i} -pl {default:g}` if the cap is unintended.",
        )
    if p is not None and limit is not None and limit > 0 and p > limit * POWER_OVER_LIMIT_RATIO:
        v.add(
            "power",
            "warning",
            f"{v.who} draws {p:g} W, more than {round((p / limit - 1) * 100)}% over its "
            f"enforced limit of {limit:g} W: power regulation is not holding it.",
            "Watch it (`nvidia-smi -q -d POWER,PERFORMANCE`); check the BMC event log for "
            "power-brake or PSU events. If it persists, collect nvidia-bug-report.sh output "
            "and contact NVIDIA support.",
        )


def _check_clock_events(v: _Verdict) -> None:
    reasons = v.d.clock_event_reasons
    if reasons is None:
        return
    active = reasons & CLOCK_EVENTS_FAULT  # unknown (future) bits are shown, not judged
    if not active:
        return
    names = ", ".join(name for bit, name in CLOCK_EVENT_NAMES.items() if active & bit)
    thermal = active & (CLOCK_EVENT_HW_THERMAL_SLOWDOWN | CLOCK_EVENT_SW_THERMAL_SLOWDOWN)
    brake = active & CLOCK_EVENT_HW_POWER_BRAKE_SLOWDOWN
    hardware = active & (
        CLOCK_EVENT_HW_THERMAL_SLOWDOWN
        | CLOCK_EVENT_HW_POWER_BRAKE_SLOWDOWN
        | CLOCK_EVENT_HW_SLOWDOWN
    )
    # Hardware slowdown halves clocks or worse; software thermal slowdown trims them.
    severity = "degraded" if hardware else "warning"
    causes = []
    if thermal:
        causes.append("the GPU (or its memory) is too hot")
    if brake:
        causes.append("the system asserted the external power brake (PSU or power-supply fault)")
    if active & CLOCK_EVENT_HW_SLOWDOWN and not (thermal or brake):
        causes.append("hardware slowdown: over-temperature, power brake or excessive power draw")
    actions = []
    if thermal:
        actions.append(
            "check cooling (fans, airflow, inlet temperature; memory temperature in "
            "`nvidia-smi -q -d TEMPERATURE`)"
        )
    if brake or (active & CLOCK_EVENT_HW_SLOWDOWN and not thermal):
        actions.append("check PSUs and power cabling and the BMC event log (ipmitool sel elist)")
    if not actions:
        actions.append("check `nvidia-smi -q -d PERFORMANCE` for the active reasons")
    v.add(
        "clock_events",
        severity,
        f"{v.who} is throttling its clocks ({names}): "
        + "; ".join(causes or ["see reasons"])
        + ". Jobs on it run slower, and one slow GPU slows a whole multi-GPU job.",
        _sentence("; ".join(actions))
        + f". If it persists, drain the node ({_drain(v.node)}) and fix the cause.",
    )


def _check_ecc(v: _Verdict) -> None:
    d = v.d
    if d.ecc_enabled is False:
        v.add(
            "ecc_mode",
            "warning",
            f"ECC is disabled on {v.who}: memory errors go undetected and can silently "
            "corrupt results.",
            f"Enable it (`nvidia-smi -i {v.i} -e 1`) and reset the GPU or reboot to apply.",
        )
    vol, agg = d.ecc_volatile_uncorrected, d.ecc_aggregate_uncorrected
    if vol:
        # Volatile = since the driver loaded: an uncorrectable error hit a running job
        # (it was killed, Xid 48/94/95) and the bad memory is still mapped until a reset
        # lets row remapping / page retirement take it out. Degraded, not critical: a
        # reset usually repairs it; the remap and retirement checks escalate when not.
        v.add(
            "ecc_uncorrectable",
            "degraded",
            f"{v.who} has {vol} uncorrectable ECC error(s) since the driver loaded "
            "(volatile): jobs using it were killed and may have produced bad data.",
            f"Drain its workloads ({_drain(v.node)}), then reset the GPU ({_reset(v.i)}) "
            "to apply row remapping / page retirement; check remapped rows "
            "(`nvidia-smi -q -d ROW_REMAPPER`). Contact NVIDIA support if errors recur "
            "after the reset.",
        )
    elif agg:
        # Aggregate = lifetime. With no error this session the memory was repaired by an
        # earlier remap/retirement; worth tracking against NVIDIA's RMA criteria.
        v.add(
            "ecc_uncorrectable_history",
            "warning",
            f"{v.who} has had {agg} uncorrectable ECC error(s) over its lifetime "
            "(aggregate), none since the driver loaded.",
            "No action now; track the count and the remapped rows (`nvidia-smi -q -d "
            "ECC,ROW_REMAPPER`) and contact NVIDIA support if it keeps growing.",
        )


def _check_retired_pages(v: _Verdict) -> None:
    d = v.d
    total = (d.retired_pages_dbe or 0) + (d.retired_pages_sbe or 0)
    if total >= RETIRED_PAGES_RMA:
        v.add(
            "retired_pages",
            "critical",
            f"{v.who} has retired {total} memory pages (the table holds 64).",
            f"Drain the node ({_drain(v.node)}), collect nvidia-bug-report.sh output and "
            "RMA the GPU (NVIDIA support).",
        )
    if d.retired_pages_pending:
        v.add(
            "retired_pages_pending",
            "degraded",
            f"{v.who} has memory pages waiting to be retired: the bad pages stay in use "
            "until the GPU is reset.",
            f"Drain its workloads ({_drain(v.node)}), then reset the GPU ({_reset(v.i)}) "
            "or reboot the node to retire them.",
        )


def _check_remapped_rows(v: _Verdict) -> None:
    rows = v.d.remapped_rows
    if rows is None:
        return
    if rows.failure:
        v.add(
            "row_remap_failure",
            "critical",
            f"Row remapping failed on {v.who}: a memory bank has no spare rows left "
            f"({rows.uncorrected} rows remapped for uncorrectable and {rows.corrected} for "
            "correctable errors). The bad memory can no longer be repaired; this meets "
            "NVIDIA's RMA criteria.",
            f"Drain the node ({_drain(v.node)}), stop scheduling on this GPU, collect "
            "nvidia-bug-report.sh output and contact NVIDIA support to RMA the GPU.",
        )
    if rows.pending:
        v.add(
            "row_remap_pending",
            "degraded",
            f"{v.who} has a memory row remap pending: the faulty row stays in use until "
            "the GPU is reset.",
            f"Drain its workloads ({_drain(v.node)}), then reset the GPU ({_reset(v.i)}) "
            "or reboot the node to apply the remap.",
        )


def _check_pcie(v: _Verdict) -> None:
    replays = v.d.pcie_replay_counter
    if replays is not None and replays >= PCIE_REPLAY_WARN:
        v.add(
            "pcie_replay",
            "warning",
            f"{v.who} has {replays} PCIe replays since the driver loaded "
            f"(warning at {PCIE_REPLAY_WARN}): the link is retransmitting packets, a sign of "
            "a marginal PCIe link (riser, retimer, seating) that can end in Xid 79.",
            "Check link width/speed (`nvidia-smi -q -d PCIE`, `lspci -vv` LnkSta) and the "
            "AER errors in the kernel log; reseat the GPU or riser at the next maintenance.",
        )


def _idle(d: GpuHealthData) -> bool | None:
    """Is the GPU idle now (None: cannot tell)? Links train down to save power at idle."""
    if d.clock_event_reasons is not None and d.clock_event_reasons & CLOCK_EVENT_GPU_IDLE:
        return True
    if d.utilization_gpu_pct is not None:
        return d.utilization_gpu_pct == 0
    return None if d.clock_event_reasons is None else False


def _or_q(value: int | None) -> str:
    return "?" if value is None else str(value)


def _check_pcie_link(v: _Verdict) -> None:
    """A link narrower than it can be (always a fault: width does not change at idle), or
    slower than it can be while the GPU works (speed drops at idle by design)."""
    d = v.d
    width, width_max = d.pcie_link_width, d.pcie_link_width_max
    gen, gen_max = d.pcie_link_gen, d.pcie_link_gen_max
    narrow = width is not None and width_max is not None and 0 < width < width_max
    slow = gen is not None and gen_max is not None and 0 < gen < gen_max and _idle(d) is False
    if not (narrow or slow):
        return
    now = f"Gen{_or_q(gen)} x{_or_q(width)}"
    best = f"Gen{_or_q(gen_max)} x{_or_q(width_max)}"
    v.add(
        "pcie_link",
        "degraded" if narrow else "warning",
        f"{v.who}'s PCIe link runs at {now}, below the {best} it can reach"
        + (" while the GPU is busy" if slow and not narrow else "")
        + ": host-to-GPU transfers (data loading, NCCL over PCIe) are slower than on its peers.",
        "Check the slot, riser and retimer (`nvidia-smi -q -d PCIE`, `lspci -vv` LnkSta vs "
        "LnkCap) and the AER counters; reseat the GPU or riser at the next maintenance.",
    )


def _check_pcie_aer(v: _Verdict) -> None:
    aer = v.d.pcie_aer
    if aer is None:
        return
    hard = [(n, c) for n, c in (("fatal", aer.fatal), ("non-fatal", aer.nonfatal)) if c]
    detail = ", ".join(f"{k} {n}" for k, n in sorted(aer.details.items())[:6])
    more = f" ({detail})" if detail else ""
    if hard:
        counts = " and ".join(f"{c} {n}" for n, c in hard)
        v.add(
            "pcie_aer",
            "degraded",
            f"{v.who} has {counts} uncorrectable PCIe AER error(s) since boot{more}: the "
            "link lost data, which ends in Xid 79 (fallen off the bus) or silent job failures.",
            "Check the kernel log for the AER lines and the slot/riser/retimer; reseat the GPU "
            "or riser and, if it repeats, replace the riser or move the GPU.",
        )
    elif aer.correctable is not None and aer.correctable >= PCIE_AER_CORRECTABLE_WARN:
        v.add(
            "pcie_aer",
            "warning",
            f"{v.who} has {aer.correctable} correctable PCIe AER errors since boot "
            f"(warning at {PCIE_AER_CORRECTABLE_WARN}){more}: a marginal link.",
            "Compare with its peers and the PCIe replay counter; reseat the GPU or riser at "
            "the next maintenance.",
        )


def _check_fabric(v: _Verdict) -> None:
    """NVSwitch systems: a GPU Fabric Manager has not registered cannot run CUDA work."""
    d = v.d
    state, status = d.fabric_state, d.fabric_status
    if state is None or state == "not_supported":
        return
    action = (
        "Check nvidia-fabricmanager on the node (`systemctl status nvidia-fabricmanager`, "
        "its log in /var/log/fabricmanager.log) and that its version matches the driver; "
        "restart it, then reset the GPUs if they stay unregistered."
    )
    if state == "not_started" or (state == "completed" and status not in (None, "success")):
        why = "never started" if state == "not_started" else f"failed ({status})"
        v.add(
            "fabric_manager",
            "critical",
            f"{v.who}'s NVLink fabric registration {why}: CUDA programs on it fail with "
            "'system not yet initialized' until Fabric Manager registers it.",
            action,
        )
    elif state == "in_progress":
        v.add(
            "fabric_manager",
            "warning",
            f"{v.who}'s NVLink fabric registration is still in progress: CUDA work waits or "
            "fails until it completes (normal for a minute after boot, a fault if it stays).",
            action,
        )
    elif d.fabric_degraded_bandwidth:
        v.add(
            "fabric_bandwidth",
            "degraded",
            f"{v.who}: the NVLink fabric reports degraded bandwidth (links or switches lost).",
            "Check get_nvlink_topology and SXids (analyze_xid_errors); schedule the node for "
            "an NVSwitch/NVLink check.",
        )


def _check_nvlink(v: _Verdict) -> None:
    links = v.d.nvlinks
    if not links:
        return
    down = [link.link for link in links if not link.active]
    if down:
        alldown = len(down) == len(links)
        v.add(
            "nvlink_down",
            "degraded",
            f"{v.who}: NVLink {_list(down)} {'are' if len(down) > 1 else 'is'} down"
            + (" (every link: is nvidia-fabricmanager running?)" if alldown else "")
            + ": peer-to-peer bandwidth is reduced and NCCL jobs may fail or slow down.",
            "Check `nvidia-smi nvlink -s -i "
            f"{v.i}` and the fabric manager (`systemctl status nvidia-fabricmanager`); reset "
            f"the GPU ({_reset(v.i)}) or reboot the node; contact NVIDIA support if a link "
            "stays down.",
        )
    noisy = [link for link in links if _nvlink_noisy(link)]
    if noisy:
        detail = "; ".join(
            f"link {k.link}: crc_flit {k.crc_flit_errors or 0}, crc_data "
            f"{k.crc_data_errors or 0}, replay {k.replay_errors or 0}, recovery "
            f"{k.recovery_errors or 0}"
            for k in noisy
        )
        v.add(
            "nvlink_errors",
            "warning",
            f"{v.who} has NVLink errors ({detail}): the link is retrying or retraining, "
            "which costs bandwidth and can precede a link failure (Xid 74).",
            f"Watch the counters (`nvidia-smi nvlink -e -i {v.i}`); if they keep growing, "
            "drain the node and have the NVLink/NVSwitch connection checked (contact NVIDIA "
            "support).",
        )


def _nvlink_noisy(link: NvLinkState) -> bool:
    # Recovery events and CRC errors in the data itself mean the link had to retrain or
    # dropped data; FLIT CRC and replays are retried in hardware and matter in bulk.
    return bool(
        (link.recovery_errors or 0) > 0
        or (link.crc_data_errors or 0) > 0
        or (link.crc_flit_errors or 0) >= NVLINK_CRC_FLIT_WARN
        or (link.replay_errors or 0) >= NVLINK_REPLAY_WARN
    )


def _check_xids(v: _Verdict, events: Sequence[XidEvent]) -> None:
    if not events:
        return
    from agent.xid import event_severity, info_for, iso_utc, recommended_action

    groups: dict[int, list[XidEvent]] = {}
    for e in events:
        if e.xid != 154:  # recovery-action reports are judged by _check_recovery_action
            groups.setdefault(e.xid, []).append(e)
    for xid, group in sorted(groups.items()):
        severities = {event_severity(e) for e in group}
        severity = "critical" if "critical" in severities else "warning"
        if severities == {"info"}:
            continue
        info = info_for(xid)
        last = max(group, key=lambda e: e.timestamp)
        pids = sorted({e.pid for e in group if e.pid is not None})
        who = f", pid {', '.join(map(str, pids))}" if pids else ""
        times = "once" if len(group) == 1 else f"{len(group)} times"
        # MIG: the GPU instances the driver attributed them to ("GPU-I:nn" tags)
        slices = sorted({e.gpu_instance_id for e in group if e.gpu_instance_id is not None})
        where = ""
        if slices:
            where = f" (MIG GPU instance {', '.join(map(str, slices))})"
            if len(slices) < len(group) and any(e.gpu_instance_id is None for e in group):
                where = where[:-1] + ", and untagged)"
        v.add(
            "xid",
            severity,
            f"Xid {xid} ({info.mnemonic}: {info.description}) logged {times} on {v.who}"
            f"{where}, last at {iso_utc(last.timestamp)}{who}.",
            recommended_action(info).replace("<index>", str(v.i)),
            **({"gpu_instance_ids": slices} if slices else {}),
        )


def _check_xids_before_boot(v: _Verdict, events: Sequence[XidEvent], boot_time: float) -> None:
    """Xids logged before the last reboot: the reboot reset the GPU, so they are history,
    but a GPU that failed before often fails again."""
    serious = [e for e in events if e.xid != 154]
    if not serious:
        return
    from agent.xid import event_severity, iso_utc

    worst_first = sorted(serious, key=lambda e: event_severity(e) != "critical")
    codes = sorted({e.xid for e in serious})
    if event_severity(worst_first[0]) == "info":
        return
    v.add(
        "xid_before_reboot",
        "warning",
        f"Xid {', '.join(map(str, codes))} logged on {v.who} before the last reboot "
        f"(boot at {iso_utc(boot_time)}; last at {iso_utc(max(e.timestamp for e in serious))}): "
        "the reboot reset the GPU, which answers now.",
        "Watch it (analyze_xid_errors): the same Xid again after a reboot means the GPU or "
        "its slot needs service; check the cause of the reboot.",
    )


def _check_recovery_action(v: _Verdict, events: Sequence[XidEvent]) -> int | None:
    """The driver's requested recovery action: NVML's field (current state) when the GPU
    answers it, else the latest Xid 154 report. Returns the action used."""
    action = v.d.recovery_action
    source = "NVML's GPU recovery action field"
    if action is None:
        reports = [e for e in events if e.xid == 154 and e.recovery_action is not None]
        if reports:
            action = max(reports, key=lambda e: e.timestamp).recovery_action
            source = "Xid 154 in the kernel log"
    if not action:
        return action
    drain = _drain(v.node)
    if action == 1:
        v.add(
            "recovery_action",
            "critical",
            f"{v.who} needs a GPU reset before it can run work again (driver recovery "
            f"action, from {source}).",
            f"Drain the node ({drain}), then reset the GPU ({_reset(v.i)}).",
        )
    elif action == 2:
        v.add(
            "recovery_action",
            "critical",
            f"{v.who} needs a node reboot; a GPU reset will not recover it (driver recovery "
            f"action, from {source}).",
            f"Drain the node ({drain}) and reboot it.",
        )
    elif action == 3:
        v.add(
            "recovery_action",
            "degraded",
            f"{v.who} must drain peer-to-peer traffic: P2P/NVLink transfers to it are "
            f"unsafe until it is reset (driver recovery action, from {source}).",
            f"Move multi-GPU jobs off the node ({drain}), then reset the GPU ({_reset(v.i)}).",
        )
    elif action == 4:
        v.add(
            "recovery_action",
            "degraded",
            f"{v.who} runs at reduced capacity and should be drained and reset (driver "
            f"recovery action, from {source}).",
            f"Drain the node at the next opportunity ({drain}), then reset the GPU "
            f"({_reset(v.i)}).",
        )
    else:
        v.add(
            "recovery_action",
            "warning",
            f"{v.who} reports an unknown recovery action {action} (from {source}).",
            "Check `nvidia-smi -q` (GPU Recovery Action) and NVIDIA's documentation for "
            "this driver.",
        )
    return action


# ---- raw metrics ---------------------------------------------------------------------


def _metrics(d: GpuHealthData, recovery: int | None, xid_events: int) -> dict[str, Any]:
    reasons = d.clock_event_reasons
    rows = d.remapped_rows
    links = d.nvlinks
    return {
        "temperature_c": d.temperature_c,
        "temp_slowdown_c": d.temp_slowdown_c,
        "temp_shutdown_c": d.temp_shutdown_c,
        "power_w": d.power_w,
        "power_limit_w": d.power_limit_w,
        "power_default_limit_w": d.power_default_limit_w,
        "clock_event_reasons": reasons,
        "clock_event_reasons_active": (
            None
            if reasons is None
            else [name for bit, name in CLOCK_EVENT_NAMES.items() if reasons & bit]
        ),
        "clock_slowdown_reasons": (
            None
            if reasons is None
            else [
                name
                for bit, name in CLOCK_EVENT_NAMES.items()
                if reasons & bit & ~CLOCK_EVENTS_SLOWDOWN_MASK
            ]
        ),
        "sm_clock_mhz": d.sm_clock_mhz,
        "sm_clock_max_mhz": d.sm_clock_max_mhz,
        "utilization_gpu_pct": d.utilization_gpu_pct,
        "utilization_memory_pct": d.utilization_memory_pct,
        "pcie_link_gen": d.pcie_link_gen,
        "pcie_link_gen_max": d.pcie_link_gen_max,
        "pcie_link_width": d.pcie_link_width,
        "pcie_link_width_max": d.pcie_link_width_max,
        "pcie_aer": None
        if d.pcie_aer is None
        else {
            "correctable": d.pcie_aer.correctable,
            "nonfatal": d.pcie_aer.nonfatal,
            "fatal": d.pcie_aer.fatal,
        },
        "fabric": None
        if d.fabric_state is None
        else {
            "state": d.fabric_state,
            "status": d.fabric_status,
            "clique_id": d.fabric_clique_id,
            "degraded_bandwidth": d.fabric_degraded_bandwidth,
        },
        "ecc_enabled": d.ecc_enabled,
        "ecc_volatile_uncorrected": d.ecc_volatile_uncorrected,
        "ecc_aggregate_uncorrected": d.ecc_aggregate_uncorrected,
        "ecc_volatile_corrected": d.ecc_volatile_corrected,
        "retired_pages_pending": d.retired_pages_pending,
        "retired_pages_dbe": d.retired_pages_dbe,
        "retired_pages_sbe": d.retired_pages_sbe,
        "remapped_rows": None
        if rows is None
        else {
            "corrected": rows.corrected,
            "uncorrected": rows.uncorrected,
            "pending": rows.pending,
            "failure": rows.failure,
        },
        "pcie_replay_counter": d.pcie_replay_counter,
        "nvlink": None
        if not links
        else {
            "links": len(links),
            "active": sum(1 for k in links if k.active),
            "replay_errors": sum(k.replay_errors or 0 for k in links),
            "recovery_errors": sum(k.recovery_errors or 0 for k in links),
            "crc_flit_errors": sum(k.crc_flit_errors or 0 for k in links),
            "crc_data_errors": sum(k.crc_data_errors or 0 for k in links),
        },
        "recovery_action": recovery,
        "recovery_action_name": None
        if recovery is None
        else RECOVERY_ACTION_NAMES.get(recovery, "unknown"),
        "xid_events": xid_events,
    }


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _list(items: Sequence[int]) -> str:
    return ", ".join(str(i) for i in items)
