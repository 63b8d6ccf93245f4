"""The rest of the node in a failure case (tests/data/explain_cases.yaml): NVSwitch SXids,
GPU resets, PCIe AER and link state, Fabric Manager, RDMA ports and the agent's
``sources``, written into the agent answers exactly as the current agent shapes them
(``analyze_xid_errors``' ``sxids`` / ``gpu_events``; ``get_gpu_health``'s per-GPU
``metrics`` and issues, ``infiniband`` and ``sources``).

Case keys (times in seconds from the test's "now"):

    sxids:    [{sxid, at, fatal, switch, links, count, last}]
    resets:   [{gpu, at, kind}]            kind: reset | reattached | init_failed
    aer:      {gpu: {correctable, nonfatal, fatal, at}}   at: a timed AER line too
    link:     {gpu: {width, width_max, gen, gen_max}}
    fabric:   {state, status, gpus}        gpus: default every GPU
    ib_ports: [{device, port, state, phys_state, link_layer, rate, link_downed}]  (null: none)
    sources:  overrides of the agent's sources block (null: an agent without one)
"""

from __future__ import annotations

from typing import Any

from tests.broker import podfactory as pf

Obj = dict[str, Any]
_ORDER = ["healthy", "warning", "degraded", "critical"]


def _pci(gpu: int | None) -> str:
    return f"00000000:{(gpu or 0) + 16:02X}:00.0"


def _event(kind: str, gpu: int | None, at: float, message: str) -> Obj:
    return {
        "kind": kind,
        "gpu_index": gpu,
        "gpu_uuid": None if gpu is None else f"GPU-{gpu:08d}",
        "pci_bus_id": _pci(gpu),
        "time": pf.ts(at),
        "message": message,
    }


def log_answer(case: Obj, xids: Obj) -> None:
    """SXids and GPU events into the analyze_xid_errors answer."""
    groups = []
    for s in case.get("sxids") or []:
        fatal = bool(s.get("fatal", False))
        switch = int(s.get("switch", 0))
        links = list(s.get("links") or [])
        groups.append(
            {
                "sxid": s["sxid"],
                "fatal": fatal,
                "severity": "critical" if fatal else "warning",
                "switch": f"nvidia-nvswitch{switch}",
                "pci_bus_id": f"00000000:{0x05 + switch:02X}:00.0",
                "links": links,
                "count": int(s.get("count", 1)),
                "first_seen": pf.ts(s["at"]),
                "last_seen": pf.ts(s.get("last", s["at"])),
                "last_message": f"nvidia-nvswitch{switch}: SXid "
                f"(PCI:0000:{0x05 + switch:02x}:00.0): {s['sxid']}, "
                f"{'Fatal' if fatal else 'Non-fatal'}"
                + (f", Link {links[0]} error" if links else ""),
            }
        )
    events = []
    for r in case.get("resets") or []:
        kind = r.get("kind", "reset")
        text = {
            "reset": "nvidia {pci}: GPU reset requested by nvidia-smi",
            "reattached": "NVRM: GPU at PCI:{pci}: GPU-{gpu:08d}",
            "init_failed": "NVRM: GPU {pci}: RmInitAdapter failed! (0x62:0x55:2477)",
        }[kind]
        pci = _pci(r["gpu"])[4:].lower()
        events.append(_event(kind, r["gpu"], r["at"], text.format(pci=pci, gpu=r["gpu"])))
    for gpu, a in (case.get("aer") or {}).items():
        if "at" in a:
            fatal = bool(a.get("fatal"))
            kind = "pcie_aer_fatal" if fatal else "pcie_aer_nonfatal"
            word = "Fatal" if fatal else "Non-Fatal"
            pci = _pci(int(gpu))[4:].lower()
            text = f"pcieport 0000:00:01.0: AER: Uncorrected ({word}) error received: {pci}"
            events.append(_event(kind, int(gpu), a["at"], text))
    events.sort(key=lambda e: e["time"])
    xids["sxids"] = groups
    xids["gpu_events"] = events


def _issue(g: Obj, check: str, severity: str, message: str) -> None:
    g["issues"].append({"check": check, "severity": severity, "message": message, "action": "x"})
    if _ORDER.index(severity) > _ORDER.index(g["status"]):
        g["status"] = severity


def health_answer(case: Obj, health: Obj) -> None:
    """PCIe link/AER, Fabric Manager, RDMA ports and sources into get_gpu_health."""
    gpus = {g["index"]: g for g in health["gpus"]}
    for gpu, link in (case.get("link") or {}).items():
        g = gpus[int(gpu)]
        m = g.setdefault("metrics", {})
        m["pcie_link_width_max"] = link.get("width_max", 16)
        m["pcie_link_width"] = link.get("width", m["pcie_link_width_max"])
        m["pcie_link_gen_max"] = link.get("gen_max", 5)
        m["pcie_link_gen"] = link.get("gen", m["pcie_link_gen_max"])
        if m["pcie_link_width"] < m["pcie_link_width_max"]:
            _issue(g, "pcie_link", "degraded", f"GPU {gpu}'s PCIe link runs narrow")
    for gpu, a in (case.get("aer") or {}).items():
        g = gpus[int(gpu)]
        counts = {k: int(a.get(k, 0)) for k in ("correctable", "nonfatal", "fatal")}
        g.setdefault("metrics", {})["pcie_aer"] = counts
        if counts["nonfatal"] or counts["fatal"]:
            _issue(g, "pcie_aer", "degraded", f"GPU {gpu} has uncorrectable AER errors")
        elif counts["correctable"] >= 100:
            _issue(g, "pcie_aer", "warning", f"GPU {gpu} has correctable AER errors")
    fabric = case.get("fabric")
    if fabric is not None:
        for index in fabric.get("gpus", list(gpus)):
            g = gpus[int(index)]
            state, status = fabric.get("state", "completed"), fabric.get("status", "success")
            g.setdefault("metrics", {})["fabric"] = {
                "state": state,
                "status": status,
                "clique_id": 1,
                "degraded_bandwidth": False,
            }
            if state == "not_started" or (state == "completed" and status != "success"):
                _issue(g, "fabric_manager", "critical", f"GPU {index}: fabric not registered")
            elif state == "in_progress":
                _issue(g, "fabric_manager", "warning", f"GPU {index}: fabric registering")
    ports = case.get("ib_ports")
    rows = None
    if ports is not None:
        rows = []
        for n, p in enumerate(ports):
            state, phys = p.get("state", "ACTIVE"), p.get("phys_state", "LinkUp")
            rows.append(
                {
                    "device": p.get("device", f"mlx5_{n}"),
                    "port": p.get("port", 1),
                    "state": state,
                    "phys_state": phys,
                    "rate": p.get("rate", "400 Gb/sec (4X NDR)"),
                    "link_layer": p.get("link_layer", "InfiniBand"),
                    "link_downed": p.get("link_downed"),
                    "active": state == "ACTIVE" and phys == "LinkUp",
                }
            )
    health["infiniband"] = rows
    health["status"] = max((g["status"] for g in health["gpus"]), key=_ORDER.index)
    if "sources" in case and case["sources"] is None:
        return  # an agent from before node sources were reported
    sources: Obj = {
        "kernel_log": {"source": "/dev/kmsg", "readable": True},
        "journal": None,
        "sysfs": {
            "root": "/sys",
            "pcie_aer_gpus": len(gpus),
            "infiniband_ports": None if rows is None else len(rows),
        },
        "fabric_manager": "reported by NVML"
        if fabric is not None
        else "not reported (no NVSwitch fabric, or a GPU/driver before Hopper)",
    }
    for key, value in (case.get("sources") or {}).items():
        if isinstance(value, dict) and isinstance(sources.get(key), dict):
            sources[key] = {**sources[key], **value}
        else:
            sources[key] = value
    health["sources"] = sources
