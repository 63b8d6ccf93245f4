"""agent.fake: presets, every fault kind, kernel-log lines, validation, determinism, and the
default scenario's verdict through the real XID parser and health judge."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.backend import (
    CLOCK_EVENT_GPU_IDLE,
    CLOCK_EVENT_HW_THERMAL_SLOWDOWN,
    CLOCK_EVENT_SW_POWER_CAP,
)
from agent.errors import ScenarioError
from agent.fake import DEFAULT_SCENARIO_PATH, FAULT_KINDS, PRESETS, FakeBackend, load_scenario
from agent.health import judge_gpu, judge_node
from agent.xid import XidEvent, parse_xids

NOW = 1_764_300_000.0
UUID = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def backend(scenario: dict[str, Any]) -> FakeBackend:
    return FakeBackend(scenario, now=NOW)


def one_fault(kind: str, gpu: int = 0, **params: Any) -> FakeBackend:
    return backend({"faults": [{"gpu": gpu, "kind": kind, **params}]})


def xids(b: FakeBackend) -> list[XidEvent]:
    boot, records = b.kmsg()
    gpus = [(d.index, d.uuid, d.pci_bus_id) for d in b.health()]
    return parse_xids(records, boot, gpus)


def verdicts(b: FakeBackend, window_s: float = 3600.0) -> list[dict[str, Any]]:
    events = [e for e in xids(b) if e.timestamp >= NOW - window_s]
    return [judge_gpu(d, events) for d in b.health()]


def lines(b: FakeBackend) -> list[str]:
    return [r.message for r in b.kmsg()[1]]


# ---- a healthy node --------------------------------------------------------------------


def test_empty_scenario_is_a_healthy_8x_h100_node() -> None:
    b = backend({})
    inv = b.inventory()
    assert len(inv) == 8 and b.driver().gpu_count == 8
    for g in inv:
        assert g.name == "NVIDIA H100 80GB HBM3"
        assert g.memory_total_mib == 81559 and g.power_limit_w == 700.0
        assert g.compute_capability == "9.0" and g.sm_clock_max_mhz == 1980
        assert g.mig_mode_current is False and g.persistence_mode is True and not g.lost
    for h in b.health():
        assert (h.temp_slowdown_c, h.temp_shutdown_c) == (89, 92)
        assert len(h.nvlinks) == 18 and all(link.active for link in h.nvlinks)
        # Hopper remaps rows; NVML reports page retirement as not supported.
        assert h.remapped_rows is not None and h.retired_pages_pending is None
        assert "retired_pages_pending" in h.unsupported
        assert h.clock_event_reasons == CLOCK_EVENT_GPU_IDLE  # idle: nothing runs
    assert {v["status"] for v in verdicts(b)} == {"healthy"}
    driver = b.driver()
    assert (driver.driver_version, driver.cuda_driver_version) == ("575.57.08", "12.9")
    assert driver.nvml_version == "12.575.57.08"
    assert b.kmsg()[1] == [] and b.disabled_tools == frozenset()


def test_identities_are_deterministic_unique_and_realistic() -> None:
    a, again, other = backend({"node": "n1"}), backend({"node": "n1"}), backend({"node": "n2"})
    assert a.inventory() == again.inventory() and a.health() == again.health()
    uuids = [g.uuid for g in a.inventory()]
    assert all(u is not None and UUID.match(u) for u in uuids) and len(set(uuids)) == 8
    assert not set(uuids) & {g.uuid for g in other.inventory()}
    serials = [g.serial for g in a.inventory()]
    assert all(s is not None and re.fullmatch(r"\d{13}", s) for s in serials)
    assert [g.pci_bus_id for g in a.inventory()] == [
        f"00000000:{bus}:00.0" for bus in ("18", "2A", "3A", "5D", "9A", "AB", "BA", "DB")
    ]


def test_more_gpus_than_the_layout_get_unique_bus_ids() -> None:
    ids = [g.pci_bus_id for g in backend({"gpu_count": 16}).inventory()]
    assert len(set(ids)) == 16


@pytest.mark.parametrize(
    ("product", "name", "links", "mig", "remaps"),
    [
        ("H100-80GB", "NVIDIA H100 80GB HBM3", 18, True, True),
        ("A100-80GB", "NVIDIA A100-SXM4-80GB", 12, True, True),
        ("L4", "NVIDIA L4", 0, False, True),
        ("T4", "Tesla T4", 0, False, False),
    ],
)
def test_presets(product: str, name: str, links: int, mig: bool, remaps: bool) -> None:
    b = backend({"product": product, "gpu_count": 4})
    h = b.health()[0]
    assert h.name == name and len(h.nvlinks) == links
    assert ("nvlinks" in h.unsupported) == (links == 0)
    assert ("remapped_rows" in h.unsupported) == (not remaps)
    assert ("retired_pages_pending" in h.unsupported) == remaps
    assert (b.inventory()[0].mig_mode_current is None) == (not mig)
    topo = b.nvlink()
    levels = {p.level for p in topo.p2p}
    assert len(topo.p2p) == 6  # every pair of 4 GPUs
    if links:
        assert levels == {"NVLINK"} and topo.unsupported == []
        assert {p.nvlink_count for p in topo.p2p} == {links}
    else:
        assert "NVLINK" not in levels and topo.unsupported == ["nvlinks"]
    assert {v["status"] for v in verdicts(b)} == {"healthy"}


def test_processes_make_a_gpu_busy_and_are_reported() -> None:
    b = backend(
        {
            "processes": [
                {"gpu": 1, "pid": 10, "name": "python3", "used_memory_mib": 1000},
                {"gpu": 1, "pid": 11, "used_memory_mib": 500, "kind": "graphics"},
            ]
        }
    )
    procs = b.processes()[1].processes
    assert [(p.pid, p.name, p.used_memory_mib, p.kind) for p in procs] == [
        (10, "python3", 1000, "compute"),
        (11, None, 500, "graphics"),
    ]
    assert b.inventory()[1].memory_used_mib == 1500
    busy, idle = b.health()[1], b.health()[0]
    assert busy.clock_event_reasons == 0 and idle.clock_event_reasons == CLOCK_EVENT_GPU_IDLE
    assert busy.power_w is not None and idle.power_w is not None and busy.power_w > idle.power_w
    assert b.processes()[0].processes == []


# ---- faults ------------------------------------------------------------------------------


def test_every_fault_kind_is_covered_here() -> None:
    tested = {name[len("test_fault_") :] for name in globals() if name.startswith("test_fault_")}
    assert tested == set(FAULT_KINDS)


def test_fault_fell_off_bus() -> None:
    b = one_fault("fell_off_bus", gpu=2, ago_s=300)
    assert b.inventory()[2].lost and b.health()[2].lost and b.processes()[2].lost
    h = b.health()[2]
    assert h.error is not None and "GPU_IS_LOST" in h.error
    assert h.temperature_c is None and h.nvlinks == [] and h.pci_bus_id == "00000000:3A:00.0"
    log = lines(b)
    assert (
        "NVRM: Xid (PCI:0000:3a:00): 79, pid='<unknown>', name=<unknown>, "
        "GPU has fallen off the bus." in log
    )
    assert "NVRM: GPU 0000:3a:00.0: GPU has fallen off the bus." in log
    events = xids(b)
    assert [(e.xid, e.gpu_index, e.recovery_action) for e in events] == [(79, 2, None), (154, 2, 2)]
    assert events[0].timestamp == pytest.approx(NOW - 300)
    assert events[0].gpu_uuid == b.inventory()[2].uuid  # "GPU at PCI:..." line names it
    assert all(p.gpu_a != 2 and p.gpu_b != 2 for p in b.nvlink().p2p)
    assert verdicts(b)[2]["status"] == "critical"
    quiet = one_fault("fell_off_bus", gpu=2, recovery_action=None)
    assert [e.xid for e in xids(quiet)] == [79]


def test_fault_row_remap_failure() -> None:
    b = one_fault("row_remap_failure", gpu=5, pid=777, process="trainer")
    h = b.health()[5]
    assert h.remapped_rows is not None and h.remapped_rows.failure
    assert h.ecc_volatile_uncorrected and h.ecc_aggregate_uncorrected
    events = xids(b)
    assert sorted({e.xid for e in events}) == [48, 63, 64]
    assert {e.gpu_index for e in events} == {5}
    assert {e.pid for e in events if e.xid == 48} == {777}
    v = verdicts(b)[5]
    assert v["status"] == "critical" and "row_remap_failure" in {i["check"] for i in v["issues"]}


def test_fault_thermal_throttle() -> None:
    h = one_fault("thermal_throttle", gpu=6).health()[6]
    assert h.temperature_c is not None and h.temp_slowdown_c is not None
    assert h.temperature_c >= h.temp_slowdown_c
    assert h.clock_event_reasons is not None
    assert h.clock_event_reasons & CLOCK_EVENT_HW_THERMAL_SLOWDOWN
    assert not h.clock_event_reasons & CLOCK_EVENT_GPU_IDLE
    assert judge_gpu(h, [])["status"] == "degraded"
    hot = one_fault("thermal_throttle", temperature_c=93).health()[0]
    assert hot.temperature_c == 93 and judge_gpu(hot, [])["status"] == "critical"


def test_fault_xid() -> None:
    b = one_fault("xid", gpu=1, xid=13, ago_s=600, pid=4242, process="python")
    (line,) = lines(b)
    assert line.startswith("NVRM: Xid (PCI:0000:2a:00): 13, pid=4242, name=python, ")
    (event,) = xids(b)
    assert (event.xid, event.gpu_index, event.pid, event.process) == (13, 1, 4242, "python")
    assert event.timestamp == pytest.approx(NOW - 600)
    custom = one_fault("xid", xid=31, message="MMU Fault: custom text")
    assert lines(custom)[0].endswith(", MMU Fault: custom text")
    assert xids(one_fault("xid", xid=154))[0].recovery_action == 1


def test_fault_nvlink_errors() -> None:
    b = one_fault("nvlink_errors", gpu=0, link=7, crc_flit=500, replay=3, recovery=1, crc_data=0)
    state = b.health()[0].nvlinks[7]
    assert (state.crc_flit_errors, state.replay_errors, state.recovery_errors) == (500, 3, 1)
    assert state.active and lines(b) == []
    assert judge_gpu(b.health()[0], [])["status"] == "warning"
    down = one_fault("nvlink_errors", gpu=0, link=2, down=True)
    assert not down.health()[0].nvlinks[2].active
    assert [e.xid for e in xids(down)] == [74] and "link 2(" in lines(down)[0]
    assert {p.nvlink_count for p in down.nvlink().p2p if 0 in (p.gpu_a, p.gpu_b)} == {17}
    with pytest.raises(ScenarioError, match="has no NVLink"):
        backend({"product": "L4", "faults": [{"gpu": 0, "kind": "nvlink_errors"}]})
    with pytest.raises(ScenarioError, match=r"link: 18 is out of range"):
        one_fault("nvlink_errors", link=18)


def test_fault_pcie_replay() -> None:
    h = one_fault("pcie_replay", gpu=3, count=150).health()[3]
    assert h.pcie_replay_counter == 150 and judge_gpu(h, [])["status"] == "warning"


def test_fault_pcie_link_degraded() -> None:
    """Issue 15's "Gen4 x8 on a Gen5 x16 GPU": inventory shows it, health judges it."""
    b = one_fault("pcie_link_degraded", gpu=2, gen=4, width=8)
    inv = b.inventory()[2]
    assert (inv.pcie_link_gen, inv.pcie_link_width) == (4, 8)
    assert (inv.pcie_link_gen_max, inv.pcie_link_width_max) == (5, 16)
    verdict = judge_gpu(b.health()[2], [])
    assert verdict["status"] == "degraded" and verdict["issues"][0]["check"] == "pcie_link"
    assert "Gen4 x8, below the Gen5 x16" in verdict["issues"][0]["message"]
    assert judge_gpu(b.health()[1], [])["status"] == "healthy"
    with pytest.raises(ScenarioError, match="width: 32 is out of range"):
        one_fault("pcie_link_degraded", width=32)


def test_pcie_speed_below_max_counts_only_while_busy() -> None:
    slow = {"faults": [{"gpu": 0, "kind": "pcie_link_degraded", "gen": 3, "width": 16}]}
    idle = backend(slow).health()[0]
    assert judge_gpu(idle, [])["status"] == "healthy"  # links train down at idle by design
    busy = backend({**slow, "processes": [{"gpu": 0, "pid": 42}]}).health()[0]
    verdict = judge_gpu(busy, [])
    assert verdict["status"] == "warning" and "while the GPU is busy" in str(verdict["issues"])


def test_drift_inputs_and_live_readings() -> None:
    """Every configuration fact the fleet drift compares, and the straggler readings."""
    b = backend(
        {
            "processes": [{"gpu": 1, "pid": 7}],
            "gpus": [
                {
                    "index": 0,
                    "vbios_version": "96.00.74.00.1C",
                    "ecc_mode_pending": False,
                    "app_sm_clock_mhz": 1755,
                    "persistence_mode": False,
                    "power_limit_w": 500.0,
                },
                {"index": 3, "unsupported": ["app_sm_clock_mhz", "nvlinks", "ecc_enabled"]},
            ],
            "faults": [{"gpu": 2, "kind": "nvlink_errors", "link": 5, "down": True}],
        }
    )
    inv = b.inventory()
    assert inv[0].vbios_version == "96.00.74.00.1C" and inv[1].vbios_version == "96.00.99.00.01"
    assert (inv[0].ecc_mode_current, inv[0].ecc_mode_pending) == (True, False)
    assert (inv[0].app_sm_clock_mhz, inv[0].app_mem_clock_mhz) == (1755, 2619)
    assert (inv[0].power_limit_w, inv[0].power_default_limit_w, inv[0].power_max_limit_w) == (
        500.0,
        700.0,
        700.0,
    )
    assert inv[0].persistence_mode is False
    assert (inv[2].nvlink_links_up, inv[2].nvlink_links_total) == (17, 18)
    assert inv[3].nvlink_links_up is None and inv[3].ecc_mode_current is None
    assert {"app_sm_clock_mhz", "nvlink_links_up", "ecc_mode_current"} <= set(inv[3].unsupported)
    health = b.health()
    assert health[0].utilization_gpu_pct == 0 and health[1].utilization_gpu_pct >= 95
    assert health[1].sm_clock_mhz == health[1].sm_clock_max_mhz == 1980
    metrics = judge_gpu(health[1], [])["metrics"]
    assert metrics["clock_slowdown_reasons"] == [] and metrics["pcie_link_width"] == 16
    idle = judge_gpu(health[0], [])["metrics"]
    assert idle["clock_event_reasons_active"] == ["gpu_idle"]
    assert idle["clock_slowdown_reasons"] == []  # idle is masked


def test_fault_sxid() -> None:
    from agent.sxid import parse_sxids

    b = one_fault("sxid", gpu=2, sxid=24007, fatal=True, switch=1, count=3)
    boot, records = b.kmsg()
    events = parse_sxids(records, boot)
    assert [(e.sxid, e.fatal, e.switch, e.link) for e in events] == [
        (24007, True, "nvidia-nvswitch1", 9)
    ] * 3
    assert events[0].pci_bus_id == "00000000:06:00.0"
    with pytest.raises(ScenarioError, match="have no NVSwitch"):
        backend({"product": "L4", "faults": [{"gpu": 0, "kind": "sxid", "sxid": 1}]})


def test_fault_pcie_aer() -> None:
    b = one_fault("pcie_aer", gpu=5, correctable=250, nonfatal=1)
    host = b.host()
    assert host.source == "scenario" and host.infiniband is None
    ((bus, aer),) = host.aer.items()
    assert bus == b.inventory()[5].pci_bus_id
    assert (aer.correctable, aer.nonfatal, aer.fatal) == (250, 1, 0)


def test_fault_fabric_manager() -> None:
    b = one_fault("fabric_manager", gpu=0)
    h = b.health()
    assert (h[0].fabric_state, h[1].fabric_state) == ("not_started", "completed")
    verdict = judge_gpu(h[0], [])
    assert verdict["status"] == "critical" and verdict["issues"][0]["check"] == "fabric_manager"
    a100 = backend({"product": "A100-80GB"}).health()[0]
    assert a100.fabric_state is None and "fabric_state" in a100.unsupported


def test_fault_gpu_reset() -> None:
    from agent.sxid import parse_gpu_events

    b = one_fault("gpu_reset", gpu=3, ago_s=100)
    boot, records = b.kmsg()
    gpus = [(g.index, g.uuid, g.pci_bus_id) for g in b.inventory()]
    kinds = [(e.kind, e.gpu_index) for e in parse_gpu_events(records, boot, gpus)]
    assert kinds == [("reset", 3), ("reattached", 3)]


def test_fault_gpu_hang() -> None:
    """One GPU hangs, the others answer: the call waits the hang bound, then says so."""
    b = one_fault("gpu_hang", gpu=6, seconds=0.2)
    started = time.monotonic()
    health = b.health()
    assert time.monotonic() - started >= 0.2
    assert health[6].lost and "appears hung" in (health[6].error or "")
    assert not any(h.lost for h in health if h.index != 6)
    assert judge_gpu(health[6], [])["status"] == "critical"
    assert b.processes()[6].lost and b.inventory()[5].uuid is not None


def test_fault_power_cap() -> None:
    h = one_fault("power_cap", gpu=4).health()[4]
    assert h.power_limit_w == 350 and h.power_default_limit_w == 700.0
    assert h.clock_event_reasons == CLOCK_EVENT_SW_POWER_CAP
    verdict = judge_gpu(h, [])
    assert verdict["status"] == "warning" and verdict["issues"][0]["check"] == "power_limit"
    explicit = one_fault("power_cap", limit_w=500, power_w=520).health()[0]
    assert (explicit.power_limit_w, explicit.power_w) == (500, 520)


def test_fault_ecc_uncorrectable() -> None:
    b = one_fault("ecc_uncorrectable", gpu=1, volatile=2, aggregate=5)
    h = b.health()[1]
    assert (h.ecc_volatile_uncorrected, h.ecc_aggregate_uncorrected) == (2, 5)
    assert [e.xid for e in xids(b)] == [48]
    assert judge_gpu(h, [])["status"] == "degraded"
    with pytest.raises(ScenarioError, match="aggregate: 1 is out of range"):
        one_fault("ecc_uncorrectable", volatile=2, aggregate=1)


def test_fault_retired_pages_pending() -> None:
    b = one_fault("retired_pages_pending", gpu=0, dbe=2)
    h = b.health()[0]
    assert h.retired_pages_pending is True and h.retired_pages_dbe == 2
    assert "retired_pages_pending" not in h.unsupported  # the fault makes it supported
    assert [e.xid for e in xids(b)] == [63]
    assert judge_gpu(h, [])["status"] == "degraded"


def test_fault_recovery_action() -> None:
    b = one_fault("recovery_action", gpu=3, action=1)
    assert b.health()[3].recovery_action == 1
    (line,) = lines(b)
    assert line.endswith(
        "154, GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"
    )
    assert judge_gpu(b.health()[3], [])["status"] == "critical"
    with pytest.raises(ScenarioError, match="action: missing"):
        one_fault("recovery_action")


def test_fault_slow_nvml() -> None:
    """Calls block until the fault's time passes, or until close() releases them."""
    b = one_fault("slow_nvml", seconds=0.3)
    start = time.monotonic()
    b.health()
    assert time.monotonic() - start >= 0.3
    assert b.driver().gpu_count == 8  # not a per-GPU call: never blocks

    stuck = one_fault("slow_nvml", seconds=60)
    timer = threading.Timer(0.2, stuck.close)
    timer.start()
    start = time.monotonic()
    stuck.inventory()
    timer.join()
    assert time.monotonic() - start < 10  # close() released the blocked call


# ---- kernel log --------------------------------------------------------------------------


def test_kmsg_lines_are_ordered_and_relative_to_boot() -> None:
    b = backend(
        {
            "uptime_s": 1000,
            "kmsg": [
                {"ago_s": 10, "line": "late"},
                {"ago_s": 900, "line": "early", "priority": 5},
                {"ago_s": 1000, "line": "at boot"},
            ],
        }
    )
    boot, records = b.kmsg()
    assert boot == NOW - 1000
    assert [r.message for r in records] == ["at boot", "early", "late"]
    assert [r.usec_since_boot for r in records] == [0, 100_000_000, 990_000_000]
    assert records[1].priority == 5 and records[2].priority == 6
    seqs = [r.sequence for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


def test_kmsg_fault_lines_are_recent_relative_to_now() -> None:
    # Demo XIDs stay inside the default 60-minute window whenever the agent starts.
    start = time.time()
    b = FakeBackend({"faults": [{"gpu": 0, "kind": "xid", "xid": 13, "ago_s": 120}]})
    (event,) = xids(b)
    assert start - 121 <= event.timestamp <= time.time() - 119


# ---- overrides, unsupported, MIG, disabled tools ----------------------------------------


def test_gpu_overrides_and_nulls() -> None:
    b = backend(
        {
            "gpus": [
                {"index": 3, "temperature_c": 86, "pcie_replay_counter": None},
                {"index": 4, "remapped_rows": {"pending": True, "uncorrected": 1}},
                {"index": 5, "nvlinks": [{"link": 0, "active": False}], "unsupported": ["power_w"]},
            ]
        }
    )
    h = b.health()
    assert h[3].temperature_c == 86 and h[3].pcie_replay_counter is None
    assert "pcie_replay_counter" in h[3].unsupported
    assert h[4].remapped_rows is not None and h[4].remapped_rows.pending
    assert len(h[5].nvlinks) == 1 and h[5].power_w is None and "power_w" in h[5].unsupported
    assert [v["status"] for v in verdicts(b)][3:6] == ["warning", "degraded", "degraded"]


def test_scenario_unsupported_applies_to_every_gpu() -> None:
    b = backend({"unsupported": ["pcie_replay_counter", "processes", "temperature_c"]})
    for h in b.health():
        assert h.pcie_replay_counter is None and h.temperature_c is None
        assert {"pcie_replay_counter", "temperature_c"} <= set(h.unsupported)
    assert all(p.unsupported == ["processes"] for p in b.processes())
    assert {v["status"] for v in verdicts(b)} == {"healthy"}
    with pytest.raises(ScenarioError, match="lists as unsupported"):
        backend(
            {"unsupported": ["pcie_replay_counter"], "faults": [{"gpu": 0, "kind": "pcie_replay"}]}
        )


def test_mig_instances() -> None:
    b = backend({"mig": {"gpu": 4, "profiles": ["3g.40gb", "3g.40gb", "1g.10gb"]}})
    g = b.inventory()[4]
    assert g.mig_mode_current is True
    assert [(m.gpu_instance_id, m.profile, m.memory_total_mib) for m in g.mig_instances] == [
        (1, "3g.40gb", 40320),
        (2, "3g.40gb", 40320),
        (3, "1g.10gb", 9984),
    ]
    assert all(m.uuid and m.uuid.startswith("MIG-") for m in g.mig_instances)
    assert len({m.uuid for m in g.mig_instances}) == 3
    assert b.inventory()[3].mig_instances == [] and b.inventory()[3].mig_mode_current is False
    two = backend({"mig": [{"gpu": 0, "profiles": ["7g.80gb"]}, {"gpu": 1, "profiles": []}]})
    assert [len(g.mig_instances) for g in two.inventory()[:2]] == [1, 0]


def test_disabled_tools_are_exposed() -> None:
    b = backend({"disabled_tools": ["get_nvlink_topology"]})
    assert b.disabled_tools == frozenset({"get_nvlink_topology"})


# ---- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        ([], "scenario: : expected a JSON object, got an array"),
        ({"fautls": []}, "unknown key 'fautls'"),
        ({"product": "H200"}, "product: unknown product 'H200'; presets: H100-80GB"),
        ({"gpu_count": 65}, "gpu_count: 65 is out of range (0..64)"),
        ({"gpu_count": "8"}, "gpu_count: expected an integer, got the string '8'"),
        ({"gpu_count": True}, "gpu_count: expected an integer, got a boolean"),
        ({"uptime_s": 0}, "uptime_s: 0 is out of range"),
        ({"node": ""}, "node: expected a non-empty string"),
        ({"faults": {}}, "faults: expected a JSON array"),
        (
            {"faults": [{"gpu": 8, "kind": "pcie_replay"}]},
            "faults[0].gpu: bad gpu index 8: this node has GPUs 0..7",
        ),
        (
            {"faults": [{"gpu": 0, "kind": "melted"}]},
            "faults[0].kind: unknown fault kind 'melted'; expected one of:",
        ),
        ({"faults": [{"gpu": 0}]}, "faults[0].kind: unknown fault kind None"),
        ({"faults": [7]}, "faults[0]: expected a JSON object"),
        ({"faults": [{"kind": "pcie_replay"}]}, "faults[0].gpu: missing"),
        ({"faults": [{"gpu": 0.5, "kind": "pcie_replay"}]}, "expected a GPU index (integer)"),
        (
            {"faults": [{"gpu": 0, "kind": "pcie_replay", "seconds": 3}]},
            "unknown key 'seconds'; expected one of: count, gpu, kind",
        ),
        ({"faults": [{"gpu": 0, "kind": "xid"}]}, "faults[0].xid: missing"),
        ({"faults": [{"gpu": 0, "kind": "xid", "xid": 0}]}, "faults[0].xid: 0 is out of range"),
        (
            {"faults": [{"gpu": 0, "kind": "recovery_action", "action": 7}]},
            "action: 7 is out of range (0..4)",
        ),
        (
            {"faults": [{"gpu": 0, "kind": "slow_nvml", "seconds": -1}]},
            "seconds: -1 is out of range",
        ),
        (
            {"faults": [{"gpu": 0, "kind": "xid", "xid": 13, "ago_s": 10**9}]},
            "ago_s: 1000000000 is out of range",
        ),
        ({"processes": [{"gpu": 0}]}, "processes[0].pid: missing"),
        (
            {"processes": [{"gpu": 0, "pid": 5}, {"gpu": 0, "pid": 5}]},
            "pid 5 is listed twice on GPU 0",
        ),
        (
            {"processes": [{"gpu": 0, "pid": 5, "used_memory_mib": 10**6}]},
            "used_memory_mib: 1000000 is out of range",
        ),
        (
            {"processes": [{"gpu": 0, "pid": 5, "kind": "magic"}]},
            "expected 'compute' or 'graphics'",
        ),
        ({"unsupported": ["warp_drive"]}, "unsupported[0]: unknown query 'warp_drive'"),
        ({"kmsg": [{"ago_s": 10}]}, "kmsg[0].line: missing"),
        ({"kmsg": [{"ago_s": 10**9, "line": "x"}]}, "kmsg[0].ago_s: 1000000000 is out of range"),
        ({"kmsg": [{"line": "a\nb"}]}, "one record per entry"),
        ({"mig": {"gpu": 0, "profiles": ["9g.99gb"]}}, "expected a MIG profile like '3g.40gb'"),
        (
            {"mig": {"gpu": 0, "profiles": ["4g.40gb", "4g.40gb"]}},
            "need 8 compute slices; a GPU has 7",
        ),
        (
            {"product": "T4", "mig": {"gpu": 0, "profiles": ["1g.5gb"]}},
            "Tesla T4 does not support MIG",
        ),
        ({"disabled_tools": [3]}, "disabled_tools[0]: expected a tool name"),
        ({"gpus": [{"index": 1}, {"index": 1}]}, "gpus[1].index: GPU 1 is listed twice"),
        ({"gpus": [{"index": 1, "warp": 9}]}, "gpus[0]: unknown key 'warp'"),
        (
            {"gpus": [{"index": 1, "temperature_c": "hot"}]},
            "gpus[0].temperature_c: expected an integer",
        ),
        (
            {"gpus": [{"index": 1, "remapped_rows": {"failed": True}}]},
            "gpus[0].remapped_rows: unknown key 'failed'",
        ),
        ({"gpus": [{"index": 1, "name": None}]}, "gpus[0].name: cannot be null"),
        (
            {"gpus": [{"index": 1, "power_w": 9, "unsupported": ["power_w"]}]},
            "power_w: has a value but",
        ),
    ],
)
def test_bad_scenarios_are_rejected_with_a_located_message(scenario: Any, message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        FakeBackend(scenario)
    assert str(err.value).startswith("scenario: ")
    assert message in str(err.value)


def test_load_scenario_files(tmp_path: Path) -> None:
    good = tmp_path / "node.json"
    good.write_text(json.dumps({"gpu_count": 2, "faults": [{"gpu": 1, "kind": "fell_off_bus"}]}))
    b = load_scenario(str(good))
    assert b.driver().gpu_count == 2 and b.health()[1].lost

    missing = tmp_path / "nope.json"
    with pytest.raises(
        ScenarioError, match=rf"cannot read scenario file {re.escape(str(missing))}"
    ):
        load_scenario(str(missing))

    broken = tmp_path / "broken.json"
    broken.write_text('{"gpu_count": 2,\n  "faults": [}\n')
    with pytest.raises(ScenarioError, match=r"broken\.json: invalid JSON at line 2 column"):
        load_scenario(str(broken))

    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"faults": [{"gpu": 3, "kind": "xid", "xid": 79}], "gpu_count": 2}')
    with pytest.raises(ScenarioError, match=r"wrong\.json: faults\[0\]\.gpu: bad gpu index 3"):
        load_scenario(str(wrong))

    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(str(binary))


# ---- the default scenario ---------------------------------------------------------------


def test_default_scenario_verdict() -> None:
    b = load_scenario(None)
    assert DEFAULT_SCENARIO_PATH.endswith("agent/data/default-scenario.json")
    assert len(b.inventory()) == 8 and b.node == "gpu-node-1"
    now = time.time()
    boot, records = b.kmsg()
    events = parse_xids(records, boot, [(d.index, d.uuid, d.pci_bus_id) for d in b.health()])
    recent = [e for e in events if e.timestamp >= now - 3600]
    gpus = [judge_gpu(d, recent) for d in b.health()]
    statuses = {g["index"]: g["status"] for g in gpus}
    assert statuses == {
        0: "healthy",
        1: "healthy",
        2: "critical",
        3: "healthy",
        4: "healthy",
        5: "critical",
        6: "degraded",
        7: "healthy",
    }
    assert judge_node(gpus) == "critical"
    by_check = {g["index"]: {i["check"] for i in g["issues"]} for g in gpus}
    assert {"gpu_lost", "xid", "recovery_action"} <= by_check[2]
    assert {"row_remap_failure", "ecc_uncorrectable", "xid"} <= by_check[5]
    assert by_check[6] == {"temperature", "clock_events"}
    # Matching kmsg: Xid 79 for GPU 2, 48/63/64 for GPU 5, an old Xid 13 on GPU 0 that
    # falls outside the window, and other drivers' noise that is not an Xid.
    assert {(e.xid, e.gpu_index) for e in recent} >= {(79, 2), (154, 2), (48, 5), (63, 5), (64, 5)}
    assert {(e.xid, e.gpu_index) for e in events if e not in recent} == {(13, 0)}
    noise = [r.message for r in records if "Xid" not in r.message]
    assert len(noise) >= 6 and any(m.startswith("mlx5_core") for m in noise)


def test_default_scenario_file_is_plain_json() -> None:
    with open(DEFAULT_SCENARIO_PATH, encoding="utf-8") as f:
        scenario = json.load(f)
    assert scenario["product"] == "H100-80GB" and scenario["product"] in PRESETS
    assert [(f["gpu"], f["kind"]) for f in scenario["faults"]] == [
        (2, "fell_off_bus"),
        (5, "row_remap_failure"),
        (6, "thermal_throttle"),
    ]


def test_import_stays_light() -> None:
    # The fake backend is on the agent's start-up path (0.10 CPU-s budget): no heavy
    # or third-party modules.
    code = (
        "import sys, agent.fake, agent.health; "
        "print(sorted(m for m in ('hashlib', 'asyncio', 'pynvml', 'mcp', 'uuid', 'ssl', "
        "'agent.xid') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "[]"


def test_xid_fault_on_a_mig_slice_logs_the_drivers_instance_tag() -> None:
    mig = {"gpu": 0, "profiles": ["1g.10gb", "1g.10gb", "3g.40gb"]}
    faults = [
        {"gpu": 0, "kind": "xid", "xid": 13, "gpu_instance": 3, "compute_instance": 0},
        {"gpu": 0, "kind": "xid", "xid": 94, "gpu_instance": 2, "ago_s": 30},
    ]
    b = backend({"product": "A100-80GB", "mig": mig, "faults": faults})
    by_code = {e.xid: e for e in xids(b)}
    assert (by_code[13].gpu_instance_id, by_code[13].compute_instance_id) == (3, 0)
    assert "GPU-I:03 GPU-CI:00" in by_code[13].message
    assert (by_code[94].gpu_instance_id, by_code[94].compute_instance_id) == (2, None)


def test_fell_off_bus_on_a_mig_gpu_can_name_the_instance_and_lists_no_devices_after() -> None:
    mig = {"gpu": 0, "profiles": ["1g.10gb", "3g.40gb"]}
    fault = {"gpu": 0, "kind": "fell_off_bus", "gpu_instance": 2}
    b = backend({"product": "A100-80GB", "mig": mig, "faults": [fault]})
    (e79,) = [e for e in xids(b) if e.xid == 79]
    assert e79.gpu_instance_id == 2
    assert b.inventory()[0].mig_instances == []  # as NVML: a lost GPU lists nothing


def test_a_process_on_a_mig_gpu_runs_in_the_gpu_instance_it_names() -> None:
    mig = {"gpu": 0, "profiles": ["1g.10gb", "3g.40gb"]}
    processes = [
        {"gpu": 0, "pid": 4242, "gpu_instance": 2},
        {"gpu": 0, "pid": 4343},
        {"gpu": 1, "pid": 4444},
    ]
    b = backend({"product": "A100-80GB", "mig": mig, "processes": processes})
    by_pid = {p.pid: p for g in b.processes() for p in g.processes}
    assert (by_pid[4242].gpu_instance_id, by_pid[4242].compute_instance_id) == (2, 0)
    assert (by_pid[4343].gpu_instance_id, by_pid[4343].compute_instance_id) == (None, None)
    assert by_pid[4444].gpu_instance_id is None


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (
            {"processes": [{"gpu": 0, "pid": 7, "gpu_instance": 1}]},
            r"processes\[0\]\.gpu_instance: GPU 0 has no MIG instances",
        ),
        (
            {
                "product": "A100-80GB",
                "mig": {"gpu": 0, "profiles": ["3g.40gb", "3g.40gb"]},
                "processes": [{"gpu": 0, "pid": 7, "gpu_instance": 3}],
            },
            r"processes\[0\]\.gpu_instance: GPU 0 has no GPU instance 3; its MIG GPU "
            "instances are 1, 2",
        ),
        ({"faults": [{"gpu": 0, "kind": "xid", "xid": 13, "gpu_instance": 1}]}, "no MIG instances"),
        (
            {
                "product": "A100-80GB",
                "mig": {"gpu": 0, "profiles": ["3g.40gb"]},
                "faults": [{"gpu": 0, "kind": "xid", "xid": 13, "gpu_instance": 4}],
            },
            "no GPU instance 4; its MIG GPU instances are 1",
        ),
        (
            {"faults": [{"gpu": 0, "kind": "xid", "xid": 13, "compute_instance": 1}]},
            "needs gpu_instance",
        ),
    ],
)
def test_a_gpu_instance_must_exist(scenario: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        backend(scenario)
