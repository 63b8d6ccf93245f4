"""Verdict rules over the rest of the node (:mod:`broker.diagnosis.node_facts`): NVSwitch
SXids, Fabric Manager registration, PCIe AER and link state, RDMA ports and GPU resets.
Each rule looks at one kind of evidence and decides or passes, like those in
:mod:`broker.diagnosis.rules`, which runs :data:`NODE_RULES` after the XID rules.

Time is causal here too: an event counts only inside the container's run (with the same
clock-skew grace as XIDs), or as a state that still holds now (a link trained narrow, a
fabric never registered, a port down). A state seen only now never earns ``high``: when
it began is not known. A source the agent could not read is said in the answer and only
ever lowers confidence (:func:`qualify`).
"""

from __future__ import annotations

import re

from broker.diagnosis.allocation import pod_requests
from broker.diagnosis.evidence import (
    PCIE_REPLAY_WARN,
    Case,
    Rule,
    Verdict,
    add_allocation,
    matches,
)
from broker.diagnosis.node_facts import (
    AER_EVENT_KINDS,
    RESET_KINDS,
    FabricState,
    GpuEvent,
    NodeFacts,
    PcieLink,
)
from broker.diagnosis.pod_status import first_lines, owner_of, relative, span
from broker.diagnosis.timeline import step

# What an exit says when the network between nodes failed (NCCL over IB/RoCE, sockets).
NETWORK = re.compile(
    r"NCCL WARN NET/\w+|NET/IB|NET/Socket|\bibv_\w+|IBV_WC_\w+|transport retry counter exceeded"
    r"|\bRDMA\b|connection reset by peer|remote process exited|ncclRemoteError"
    r"|NCCL error.*\b(?:remote|network|socket)\b|\bmlx5",
    re.I,
)
# CUDA's "system not yet initialized" (cudaErrorSystemNotReady, error 802): on NVSwitch
# systems, the GPUs Fabric Manager has not registered.
FABRIC_INIT = re.compile(
    r"system not yet initiali[sz]ed|SYSTEM_NOT_READY|SystemNotReady|\berror(?: code)?[ :=]*802\b"
    r"|\(802\)",
    re.I,
)
# What a job that lost its NVLink fabric says: NCCL/CUDA errors, or a hang and a watchdog.
FABRIC_WORDS = re.compile(r"nccl|nvlink|cuda|watchdog|timed? ?out|hang", re.I)


def _lower(v: Verdict) -> None:
    v.confidence = {"high": "medium", "medium": "low"}.get(v.confidence, v.confidence)


def _gpu_message(c: Case) -> bool:
    return matches("cuda", c.message) or matches("hardware", c.message)


def _whole_gpus(c: Case) -> int:
    """Whole GPUs the pod used (MIG slices never talk NVLink to each other)."""
    if c.slice_only():
        return 0
    held = c.gpus_held()
    return len(held) if held else pod_requests(c.pod).get("nvidia.com/gpu", 0)


def _nearest(events: list[GpuEvent]) -> GpuEvent:
    return min(events, key=lambda e: (e.on_pod_gpu is not True, abs(e.at.offset_s or 0.0)))


def _fabric_steps(node: str) -> list[dict[str, str]]:
    return [
        step(
            "nvidia-smi -q -d FABRIC",
            f"on node {node}: each GPU's Fabric Manager registration state and status",
        ),
        step(
            "systemctl status nvidia-fabricmanager",
            f"on node {node} (host shell): is Fabric Manager running, and does its version "
            "match the driver; /var/log/fabricmanager.log names the failing switch or link",
        ),
    ]


# -- rules ---------------------------------------------------------------------------------


def fabric_not_ready(c: Case) -> Verdict | None:
    """CUDA could not initialise because Fabric Manager has not registered the GPUs of an
    NVSwitch system (error 802, "system not yet initialized")."""
    if c.window is None:
        return None
    nf = c.host
    said = FABRIC_INIT.search(c.message)
    bad = [f for f in nf.fabric or [] if not f.ready and f.on_pod_gpu is not False]
    f = c.failure
    if not bad:
        if not said or not nf.fabric:
            return None  # not an NVSwitch system, or not known: the driver rules judge it
        v = Verdict(
            "infrastructure",
            "low",
            f"Infrastructure (likely): container {f.container} failed to initialise CUDA "
            f"({said[0]}), and Fabric Manager has registered every GPU of {c.node} now: the "
            "container most likely started before the fabric was ready (after a boot or a "
            "Fabric Manager restart). Run it again.",
        )
        v.add("pod", c.exit_line())
        v.add("fabric", "every GPU's Fabric Manager registration is complete now")
        v.steps.extend(_fabric_steps(str(c.node)))
        return v
    if not said and not matches("cuda", c.message):
        return None  # its own error, not CUDA's: the fabric is noted by qualify()
    worst: FabricState = min(bad, key=lambda s: s.on_pod_gpu is not True)
    if worst.state == "completed":
        verdict = "driver"
        what = (
            f"Fabric Manager failed to register GPU {worst.gpu_index} ({worst.status}): the "
            "NVIDIA driver stack (often a Fabric Manager version that does not match the "
            "driver, or an NVSwitch it could not train), not the code"
        )
    elif worst.state == "in_progress":
        verdict = "infrastructure"
        what = (
            "Fabric Manager is still registering the GPUs: the node is not ready for CUDA "
            "work yet (normal for a minute after boot; a fault if it stays)"
        )
    else:
        verdict = "infrastructure"
        what = (
            "Fabric Manager never registered the GPUs (nvidia-fabricmanager is not running "
            "on the node): a node setup problem; the GPUs and the code are fine"
        )
    sure = bool(said) and worst.on_pod_gpu is True
    v = Verdict(
        verdict,
        "high" if sure else ("medium" if said or worst.on_pod_gpu is True else "low"),
        f"{verdict.capitalize()}: container {f.container} could not use the GPUs of NVSwitch "
        f"node {c.node}: {what}.",
        gpus=sorted({s.gpu_index for s in bad}),
    )
    v.add("pod", c.exit_line())
    if said:
        v.add("pod", f"the termination message says CUDA could not initialise: {said[0]}")
    held = [s for s in bad if s.on_pod_gpu]
    groups: dict[str, list[int]] = {}
    for s in held or bad:
        groups.setdefault(s.text().split(": ", 1)[1], []).append(s.gpu_index)
    for what, indexes in groups.items():
        which = "GPU" + ("s " if len(indexes) > 1 else " ") + ", ".join(map(str, indexes))
        maybe = "" if held else " (GPUs this pod may have held)"
        v.add("fabric", f"{which}: {what}{maybe}")
    v.add(
        "fabric",
        "registration state is as of now; a registration that has not completed now had not "
        "completed when the container started either",
    )
    add_allocation(v, c)
    v.steps.extend(_fabric_steps(str(c.node)))
    return v


def nvswitch_fatal_sxid(c: Case) -> Verdict | None:
    """A fatal NVSwitch SXid during the run of a pod that talked NVLink between its GPUs:
    the fabric broke under it."""
    nf = c.host
    fatal = [s for s in nf.sxids or [] if s.fatal and s.at.in_run]
    if not fatal or c.window is None or _whole_gpus(c) < 2:
        return None
    agrees = bool(FABRIC_WORDS.search(c.message)) or _gpu_message(c)
    if c.message and not agrees:
        return None  # its own error; qualify() notes the SXid
    best = min(fatal, key=lambda s: abs(s.at.offset_s or 0.0))
    f = c.failure
    v = Verdict(
        "hardware",
        "high" if best.at.near_exit and agrees else "medium",
        f"Hardware (NVLink fabric): fatal NVSwitch {best.label()} "
        f"{best.at.when()} of container {f.container} (exit code {f.exit_code}); the pod's "
        f"{_whole_gpus(c)} GPUs talk over NVLink through the node's NVSwitches, and a fatal "
        "SXid breaks that traffic until the fabric is reset.",
        remedy="drain",
    )
    v.add("pod", c.exit_line())
    v.add("nvswitch", f"SXids counted: those during {c.window_text()}")
    for s in fatal[:8]:
        times = "once" if s.count == 1 else f"{s.count} times"
        v.add("nvswitch", f"{s.label()}: {times}, nearest {s.at.when()}: {s.message}".rstrip(": "))
    if agrees and c.message:
        v.add("pod", f"the termination message agrees: {first_lines(c.message, 200)}")
    add_allocation(v, c)
    v.steps.extend(_fabric_steps(str(c.node)))
    v.steps.append(
        step(
            "nvidia-smi -r",
            f"on node {c.node}, once drained: reset every GPU and NVSwitch with Fabric "
            "Manager running (or reboot the node); repeated fatal SXids mean an NVSwitch RMA",
        )
    )
    return v


def pcie_aer_in_run(c: Case) -> Verdict | None:
    """Uncorrectable PCIe errors on the link of a GPU the pod held: an AER line inside the
    run, or (untimed) a link trained below its maximum that replays packets."""
    if c.window is None:
        return None
    nf = c.host
    f = c.failure
    events = [
        e
        for e in nf.events(AER_EVENT_KINDS)
        if e.at.in_run and e.at.near_exit and e.on_pod_gpu is not False
    ]
    links = {p.gpu_index: p for p in nf.pcie or []}
    if events:
        best = _nearest(events)
        sure = best.on_pod_gpu is True and not c.slice_only() and (not c.message or _gpu_message(c))
        v = Verdict(
            "hardware",
            "high" if sure else "medium",
            f"Hardware (PCIe): an uncorrectable ({AER_EVENT_KINDS[best.kind]}) PCIe AER error "
            f"on the link of {best.gpu()} {best.at.when()} of container {f.container} (exit "
            f"code {f.exit_code}): the link lost data between the host and the GPU.",
            remedy="pcie",
            gpus=sorted({e.gpu_index for e in events if e.gpu_index is not None}),
        )
        v.add("pod", c.exit_line())
        for e in events[:8]:
            held = {True: "a GPU this pod held", None: "a GPU this pod may have held"}
            v.add(
                "pcie",
                f"{e.kind} on {e.gpu()} ({held.get(e.on_pod_gpu, '')}), {e.at.when()}: {e.message}",
            )
        link = links.get(best.gpu_index) if best.gpu_index is not None else None
        if link is not None:
            _add_link(v, link)
        add_allocation(v, c)
        return v
    if not _gpu_message(c):
        return None
    suspects = [
        p
        for p in nf.pcie or []
        if p.on_pod_gpu is not False
        and (
            (p.degraded and (p.replays or 0) >= PCIE_REPLAY_WARN)
            or (p.uncorrectable and (p.degraded or (p.replays or 0) >= PCIE_REPLAY_WARN))
        )
    ]
    if not suspects:
        return None
    p = min(suspects, key=lambda p: p.on_pod_gpu is not True)
    v = Verdict(
        "hardware",
        "medium" if p.on_pod_gpu is True and not c.slice_only() else "low",
        f"Hardware (PCIe, likely): GPU {p.gpu_index}'s link runs at {p.link_text()}"
        + (f" and counts {p.replays} replays" if p.replays else "")
        + (f" and {p.uncorrectable} uncorrectable AER error(s)" if p.uncorrectable else "")
        + f", and container {f.container} failed with a GPU error; these counters are since "
        "boot, so when the link failed is not known.",
        remedy="pcie",
        gpus=[p.gpu_index],
    )
    v.add("pod", c.exit_line())
    v.add("pod", f"termination message: {first_lines(c.message, 200)}")
    _add_link(v, p)
    add_allocation(v, c)
    return v


def _add_link(v: Verdict, p: PcieLink) -> None:
    line = f"GPU {p.gpu_index} PCIe link now " + (
        p.link_text() + (", trained below its maximum" if p.degraded else "")
        if p.link_known
        else "width/speed not reported"
    )
    if p.replays is not None:
        line += f"; {p.replays} replays since the driver loaded"
    if aer := p.aer_text():
        line += f"; {aer}"
    v.add("pcie", line)


def gpu_reset_in_run(c: Case) -> Verdict | None:
    """A GPU the pod held was reset or re-initialised while the container ran: the reset
    ended every CUDA context on it. The cause is the Xid that triggered the reset."""
    if c.window is None:
        return None
    nf = c.host
    persistent = _persistence(c)
    events = []
    for e in nf.events(RESET_KINDS):
        if not e.at.in_run or e.on_pod_gpu is False:
            continue
        # Without persistence mode the driver re-initialises a GPU when its last client
        # exits: a re-attach at the exit is the exit's consequence, not its cause.
        at_exit = (e.at.offset_s or 0.0) >= -c.window.grace_s
        if e.kind == "reattached" and at_exit and persistent.get(e.gpu_index) is not True:
            continue
        events.append(e)
    if not events:
        return None
    best = min(
        events,
        key=lambda e: (e.on_pod_gpu is not True, e.kind != "reset", abs(e.at.offset_s or 0.0)),
    )
    f = c.failure
    trigger = None
    for r in sorted(c.rows, key=lambda r: -(r["offset_s"] or 0.0)):
        if (
            r.get("gpu_index") == best.gpu_index
            and r["category"] in ("hardware", "driver")
            and r["timing"] in ("during_run", "before_start")
            and r["offset_s"] is not None
            and best.at.offset_s is not None
            and best.at.offset_s - 900 <= r["offset_s"] <= best.at.offset_s + c.window.grace_s
        ):
            trigger = r
            break
    what = {
        "reset": "was reset",
        "reattached": "was re-initialised (the driver attached it again)",
        "init_failed": "failed to initialise",
    }[best.kind]
    head = (
        f"{best.gpu()} {what} {best.at.when()} of container {f.container} (exit code {f.exit_code})"
    )
    if trigger is not None:
        verdict = str(trigger["category"])
        sure = best.on_pod_gpu is True and not c.slice_only()
        v = Verdict(
            verdict,
            "high" if sure and verdict == "hardware" else ("medium" if sure else "low"),
            f"{verdict.capitalize()}: {head}, after XID {trigger['xid']} "
            f"({trigger['description'] or trigger['name']}) on it "
            f"{span((best.at.offset_s or 0.0) - (trigger['offset_s'] or 0.0))} earlier; the "
            "reset ended every CUDA context on the GPU.",
            remedy="reset_gpu" if verdict == "driver" else "drain",
            gpus=[best.gpu_index] if best.gpu_index is not None else [],
        )
        v.add("pod", c.exit_line())
        v.add(
            "xid",
            f"XID {trigger['xid']} {trigger['name']} on GPU {trigger['gpu_index']}, "
            f"{relative(trigger['offset_s'] or 0.0)} the exit",
        )
    elif best.kind == "init_failed":
        v = Verdict(
            "hardware",
            "medium" if best.on_pod_gpu is True else "low",
            f"Hardware (likely): {head}; no Xid on it says why.",
            remedy="drain",
            gpus=[best.gpu_index] if best.gpu_index is not None else [],
        )
    else:
        v = Verdict(
            "infrastructure",
            "medium" if best.on_pod_gpu is True else "low",
            f"Infrastructure: {head}, with no Xid on it before: a reset from outside "
            "(nvidia-smi -r, a health-remediation controller, an operator) ended the "
            "container's CUDA contexts.",
        )
    v.add("pod", c.exit_line())
    for e in events[:8]:
        v.add("gpu_event", f"{e.kind} on {e.gpu()} {e.at.when()}: {e.message}")
    add_allocation(v, c)
    return v


def _persistence(c: Case) -> dict[int | None, bool | None]:
    return {
        g.get("index"): g.get("persistence_mode")
        for g in (c.facts.inventory or {}).get("gpus") or []
        if isinstance(g, dict)
    }


def network_port_down(c: Case) -> Verdict | None:
    """The exit says the inter-node network failed (NCCL NET/IB, ibv_, connection reset)
    and an RDMA port of the node is down or polling now."""
    said = NETWORK.search(c.message)
    nf = c.host
    if c.window is None or not said or not nf.ib_ports:
        return None
    down = [p for p in nf.ib_ports if not p.active]
    f = c.failure
    flapped = [p for p in nf.ib_ports if p.active and p.link_downed]
    if not down and flapped:
        names = ", ".join(f"{p.device}/{p.port} ({p.link_downed}x)" for p in flapped[:8])
        v = Verdict(
            "infrastructure",
            "low",
            f"Infrastructure (network, possible): container {f.container} failed on a network "
            f"error ({said[0]}); every RDMA port of {c.node} is active now, but the link of "
            f"{names} went down since boot (link_downed counter): a flapping link would "
            "explain it, though when it went down is not known.",
        )
        v.add("pod", c.exit_line())
        v.add("pod", f"the termination message names the network: {first_lines(c.message, 200)}")
        for p in flapped[:8]:
            v.add("rdma", f"{p.label()}: link went down {p.link_downed} time(s) since boot")
        v.steps.append(
            step(
                "ibstat",
                f"on node {c.node} (host shell): then `perfquery` / the switch's port "
                "counters for link errors; reseat or replace the cable or transceiver if the "
                "count keeps rising",
            )
        )
        return v
    if not down:
        v = Verdict(
            "unknown",
            "low",
            f"Unknown (network): container {f.container} failed on a network error "
            f"({said[0]}), but every RDMA port of {c.node} is active now: the fault may be on "
            "a peer node, the fabric between them, or a port that recovered since.",
        )
        v.add("pod", c.exit_line())
        v.add("pod", f"the termination message names the network: {first_lines(c.message, 200)}")
        v.add("rdma", f"all {len(nf.ib_ports)} port(s) of {c.node} active now")
        if owner := owner_of(c.pod):
            v.steps.append(
                step(
                    f"kubectl mcp explain --job {owner[1]} -n {c.facts.namespace}",
                    "which pod of the job failed first; its node's ports are the ones to check",
                )
            )
        return v
    cabled = [p for p in down if p.phys_state != "Disabled"]
    names = ", ".join(p.label() for p in (cabled or down)[:8])
    polling = any(p.phys_state == "Polling" for p in down)
    v = Verdict(
        "infrastructure",
        "medium" if cabled else "low",
        f"Infrastructure (network): container {f.container} failed on a network error "
        f"({said[0]}) and {len(down)} of {len(nf.ib_ports)} RDMA port(s) of {c.node} are not "
        f"active now: {names}"
        + (" (Polling: no link partner: cable, transceiver or switch port)" if polling else "")
        + ". The port state is as of now; when it went down is not known.",
    )
    v.add("pod", c.exit_line())
    v.add("pod", f"the termination message names the network: {first_lines(c.message, 200)}")
    for p in down[:8]:
        v.add("rdma", f"{p.label()}" + (f", {p.rate}" if p.rate else ""))
    active = len(nf.ib_ports) - len(down)
    v.add("rdma", f"{active} of {len(nf.ib_ports)} port(s) active now")
    if not cabled:
        v.notes.append(
            "Every port that is down is Disabled (switched off on purpose, or never cabled): "
            "compare with the job's other nodes before blaming the network."
        )
    v.steps.append(
        step(
            f"kubectl mcp diagnose {c.node}",
            "the node's RDMA ports and GPUs now; compare the active port count with the "
            "job's other nodes (kubectl mcp drift)",
        )
    )
    v.steps.append(
        step(
            "ibstat",
            f"on node {c.node} (host shell): port state, physical state and rate; then the "
            "cable, transceiver and switch port of the ports that are down",
        )
    )
    return v


# Run after the XID rules that name a GPU fault, before the driver and application ones.
NODE_RULES: tuple[Rule, ...] = (
    fabric_not_ready,
    nvswitch_fatal_sxid,
    pcie_aer_in_run,
    gpu_reset_in_run,
    network_port_down,
)
_NAMES = {r.__name__ for r in NODE_RULES}


# -- what every verdict says about the rest of the node ---------------------------------------


def qualify(v: Verdict, c: Case, settled: bool) -> None:
    """Notes on the node's signals that are not the cause, and on the sources that could
    not be read; an unread source that could have changed the verdict lowers its
    confidence. ``settled``: Kubernetes itself recorded the cause (nothing to lower)."""
    if c.window is None or v.verdict == "none":
        return
    nf: NodeFacts = c.host
    mine = v.rule in _NAMES
    if not mine:
        _notes_not_cause(v, c, nf)
    if settled:
        return
    gaps = []
    if NETWORK.search(c.message) and "rdma" in nf.unavailable:
        gaps.append(nf.unavailable["rdma"])
    if FABRIC_INIT.search(c.message) and "fabric_manager" in nf.unavailable and not mine:
        gaps.append(f"Fabric Manager: {nf.unavailable['fabric_manager']}")
    if gaps and v.verdict in ("application", "unknown", "driver") and not mine:
        _lower(v)
        for g in gaps:
            v.notes.append(f"Not known, so not ruled out: {g}.")
    rest = [why for key, why in nf.unavailable.items() if key not in ("rdma", "fabric_manager")]
    if rest and (_gpu_message(c) or v.verdict in ("hardware", "driver", "unknown")):
        v.notes.append("Node sources not available: " + "; ".join(rest) + ".")


def _notes_not_cause(v: Verdict, c: Case, nf: NodeFacts) -> None:
    in_run = [s for s in nf.sxids or [] if s.at.in_run]
    if in_run and not any(s.fatal for s in in_run):
        s = in_run[0]
        v.notes.append(
            f"{len(in_run)} non-fatal NVSwitch SXid group(s) during the run (first: "
            f"{s.label()}, {s.at.when()}): the fabric corrected them; not a cause."
        )
    late = [s for s in nf.sxids or [] if s.fatal and s.at.timing == "after_exit"]
    if late:
        v.notes.append(
            f"Fatal {late[0].label()} came {late[0].at.when()}: after the container exited, "
            "so not its cause (later pods on the node will need the fabric reset)."
        )
    if any(s.fatal for s in in_run) and v.rule != "nvswitch_fatal_sxid":
        v.notes.append(
            "A fatal NVSwitch SXid came during the run, but "
            + (
                "this pod used at most one whole GPU, so no NVLink traffic of its own"
                if _whole_gpus(c) < 2
                else "the container's own exit message points elsewhere"
            )
            + ": noted, not counted as the cause."
        )
    for p in nf.pcie or []:
        if p.on_pod_gpu is True and p.aer_correctable and not p.uncorrectable and not p.degraded:
            v.notes.append(
                f"GPU {p.gpu_index} counts {p.aer_correctable} correctable PCIe AER errors "
                "since boot: corrected by the link, not a cause."
            )
    bad = [f for f in nf.fabric or [] if not f.ready and f.on_pod_gpu is not False]
    if bad and v.rule != "fabric_not_ready":
        v.notes.append(f"{bad[0].text()} now: noted; not what this verdict rests on.")
