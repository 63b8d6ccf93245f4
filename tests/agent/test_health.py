"""agent.health: every check, its boundaries, the idle-bit masking and unsupported fields."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

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
    RemappedRows,
)
from agent.health import (
    CLOCK_EVENTS_BENIGN,
    CLOCK_EVENTS_FAULT,
    STATUS_ORDER,
    judge_gpu,
    judge_node,
)
from agent.xid import XidEvent

PCI = "00000000:2A:00.0"
NOW = 1_764_300_000.0


def link(n: int, **kw: Any) -> NvLinkState:
    base: dict[str, Any] = {
        "link": n,
        "active": True,
        "remote_pci_bus_id": "00000000:05:00.0",
        "replay_errors": 0,
        "recovery_errors": 0,
        "crc_flit_errors": 0,
        "crc_data_errors": 0,
    }
    base.update(kw)
    return NvLinkState(**base)


def gpu(**kw: Any) -> GpuHealthData:
    """A healthy, busy H100 with every query answered; ``kw`` overrides fields."""
    base: dict[str, Any] = {
        "index": 1,
        "uuid": "GPU-11111111-2222-3333-4444-555555555555",
        "name": "NVIDIA H100 80GB HBM3",
        "pci_bus_id": PCI,
        "temperature_c": 55,
        "temp_slowdown_c": 89,
        "temp_shutdown_c": 92,
        "power_w": 480.0,
        "power_limit_w": 700.0,
        "power_default_limit_w": 700.0,
        "clock_event_reasons": 0,
        "ecc_enabled": True,
        "ecc_volatile_uncorrected": 0,
        "ecc_aggregate_uncorrected": 0,
        "ecc_volatile_corrected": 0,
        "retired_pages_pending": False,
        "retired_pages_dbe": 0,
        "retired_pages_sbe": 0,
        "remapped_rows": RemappedRows(corrected=0, uncorrected=0, pending=False, failure=False),
        "pcie_replay_counter": 0,
        "nvlinks": [link(n) for n in range(4)],
        "recovery_action": 0,
    }
    base.update(kw)
    return GpuHealthData(**base)


def xid(
    code: int, *, index: int | None = 1, pci: str = PCI, ago: float = 60.0, **kw: Any
) -> XidEvent:
    fields: dict[str, Any] = {
        "xid": code,
        "pci_bus_id": pci,
        "timestamp": NOW - ago,
        "pid": None,
        "process": None,
        "message": f"NVRM: Xid (PCI:0000:2a:00): {code}, pid='<unknown>', name=<unknown>, test",
        "gpu_index": index,
        "gpu_uuid": None,
    }
    fields.update(kw)
    return XidEvent(**fields)


def checks(verdict: dict[str, Any]) -> dict[str, str]:
    """check -> severity (the worst, when a check appears more than once)."""
    out: dict[str, str] = {}
    for issue in verdict["issues"]:
        old = out.get(issue["check"], "healthy")
        out[issue["check"]] = max(old, issue["severity"], key=STATUS_ORDER.index)
    return out


def status_of(data: GpuHealthData, xids: list[XidEvent] | None = None) -> str:
    verdict = judge_gpu(data, xids or [])
    status: str = verdict["status"]
    return status


# ---- baseline and shape ----------------------------------------------------------------


def test_healthy_gpu_has_no_issues_and_reports_raw_metrics() -> None:
    verdict = judge_gpu(gpu(), [])
    assert verdict["status"] == "healthy"
    assert verdict["issues"] == []
    assert verdict["index"] == 1 and verdict["pci_bus_id"] == PCI
    m = verdict["metrics"]
    assert m["temperature_c"] == 55 and m["temp_slowdown_c"] == 89 and m["power_w"] == 480.0
    assert m["remapped_rows"] == {
        "corrected": 0,
        "uncorrected": 0,
        "pending": False,
        "failure": False,
    }
    assert m["nvlink"]["links"] == 4 and m["nvlink"]["active"] == 4
    assert m["recovery_action"] == 0 and m["recovery_action_name"] == "none"
    assert verdict["unsupported"] == []


def test_every_issue_is_complete_and_sorted_worst_first() -> None:
    data = gpu(
        temperature_c=86,  # warning
        pcie_replay_counter=500,  # warning
        remapped_rows=RemappedRows(0, 1, pending=True, failure=True),  # degraded + critical
        ecc_volatile_uncorrected=1,  # degraded
    )
    verdict = judge_gpu(data, [xid(79)])
    ranks = [STATUS_ORDER.index(i["severity"]) for i in verdict["issues"]]
    assert ranks == sorted(ranks, reverse=True)
    assert verdict["status"] == "critical"
    for issue in verdict["issues"]:
        assert set(issue) == {"check", "severity", "message", "action"}
        assert issue["severity"] in STATUS_ORDER[1:]
        assert len(issue["message"]) > 20 and len(issue["action"]) > 20


def test_node_name_appears_in_the_kubectl_commands() -> None:
    lost = gpu(lost=True, error="GPU is lost")
    named = judge_gpu(lost, [], node="gpu-node-7")["issues"][0]["action"]
    assert "kubectl cordon gpu-node-7 && kubectl drain gpu-node-7 --ignore-daemonsets" in named
    anonymous = judge_gpu(lost, [])["issues"][0]["action"]
    assert "kubectl drain <node>" in anonymous


# ---- temperature -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temp", "slowdown", "shutdown", "expected"),
    [
        (83, 89, 92, "healthy"),  # 6 below slowdown
        (84, 89, 92, "warning"),  # margin boundary: slowdown - 5
        (88, 89, 92, "warning"),
        (89, 89, 92, "degraded"),  # at slowdown
        (91, 89, 92, "degraded"),
        (92, 89, 92, "critical"),  # at shutdown
        (97, 89, 92, "critical"),
        (90, 93, 96, "warning"),  # the same 90 C on a T4 (its own thresholds) is a warning
        (93, 93, 96, "degraded"),
        (95, None, 92, "critical"),  # only a shutdown threshold known
        (91, None, 95, "healthy"),
        (89, None, None, "healthy"),  # no thresholds: generic fallback at 90 C
        (90, None, None, "warning"),
        (None, 89, 92, "healthy"),  # unsupported temperature: no verdict
    ],
)
def test_temperature_against_the_gpus_own_thresholds(
    temp: int | None, slowdown: int | None, shutdown: int | None, expected: str
) -> None:
    verdict = judge_gpu(
        gpu(temperature_c=temp, temp_slowdown_c=slowdown, temp_shutdown_c=shutdown), []
    )
    assert verdict["status"] == expected
    assert checks(verdict).get("temperature", "healthy") == expected


def test_temperature_messages_quote_the_thresholds() -> None:
    issue = judge_gpu(gpu(temperature_c=90), [])["issues"][0]
    assert "90 °C" in issue["message"] and "89 °C" in issue["message"]
    assert "cooling" in issue["action"].lower()


# ---- power -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("power", "limit", "default", "expected"),
    [
        (700.0, 700.0, 700.0, {}),  # at the limit: normal under load
        (735.0, 700.0, 700.0, {}),  # exactly 5 % over: noise
        (736.0, 700.0, 700.0, {"power": "warning"}),
        (600.0, 630.0, 700.0, {}),  # limit at 90 % of default
        (600.0, 629.0, 700.0, {"power_limit": "warning"}),
        (350.0, 350.0, 700.0, {"power_limit": "warning"}),
        (400.0, 350.0, 700.0, {"power_limit": "warning", "power": "warning"}),
        (None, 700.0, 700.0, {}),
        (800.0, None, None, {}),  # no limit known: nothing to compare with
        (300.0, 300.0, None, {}),  # no default: a lowered limit cannot be told
    ],
)
def test_power_against_enforced_and_default_limit(
    power: float | None, limit: float | None, default: float | None, expected: dict[str, str]
) -> None:
    verdict = judge_gpu(gpu(power_w=power, power_limit_w=limit, power_default_limit_w=default), [])
    assert checks(verdict) == expected


def test_power_cap_action_restores_the_default_limit() -> None:
    issue = judge_gpu(gpu(power_limit_w=350.0, power_w=340.0), [])["issues"][0]
    assert issue["check"] == "power_limit"
    assert "nvidia-smi -i 1 -pl 700" in issue["action"]


# ---- clock events ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        (0, "healthy"),
        (CLOCK_EVENT_GPU_IDLE, "healthy"),  # idle is not a fault
        (CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING, "healthy"),
        (CLOCK_EVENT_SYNC_BOOST, "healthy"),
        (CLOCK_EVENT_DISPLAY_CLOCK_SETTING, "healthy"),
        (CLOCK_EVENT_SW_POWER_CAP, "healthy"),  # working at the power limit
        (
            CLOCK_EVENT_GPU_IDLE
            | CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING
            | CLOCK_EVENT_SYNC_BOOST
            | CLOCK_EVENT_SW_POWER_CAP,
            "healthy",
        ),
        (0x1000, "healthy"),  # an unknown future bit is shown, not judged
        (CLOCK_EVENT_SW_THERMAL_SLOWDOWN, "warning"),
        (CLOCK_EVENT_GPU_IDLE | CLOCK_EVENT_SW_THERMAL_SLOWDOWN, "warning"),
        (CLOCK_EVENT_HW_THERMAL_SLOWDOWN, "degraded"),
        (CLOCK_EVENT_GPU_IDLE | CLOCK_EVENT_HW_THERMAL_SLOWDOWN, "degraded"),  # mask keeps thermal
        (CLOCK_EVENT_HW_POWER_BRAKE_SLOWDOWN, "degraded"),
        (CLOCK_EVENT_HW_SLOWDOWN, "degraded"),
        (None, "healthy"),
    ],
)
def test_clock_event_reasons_with_benign_bits_masked(reasons: int | None, expected: str) -> None:
    verdict = judge_gpu(gpu(clock_event_reasons=reasons), [])
    assert verdict["status"] == expected
    assert checks(verdict).get("clock_events", "healthy") == expected


def test_clock_event_names_and_advice() -> None:
    brake = judge_gpu(gpu(clock_event_reasons=CLOCK_EVENT_HW_POWER_BRAKE_SLOWDOWN), [])
    issue = brake["issues"][0]
    assert "hw_power_brake_slowdown" in issue["message"]
    assert "PSU" in issue["action"] and "ipmitool" in issue["action"]
    idle = judge_gpu(gpu(clock_event_reasons=CLOCK_EVENT_GPU_IDLE), [])
    assert idle["metrics"]["clock_event_reasons_active"] == ["gpu_idle"]
    assert CLOCK_EVENTS_FAULT & CLOCK_EVENTS_BENIGN == 0


# ---- memory: ECC, retired pages, row remapping ----------------------------------------


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        (
            {"ecc_volatile_uncorrected": 1, "ecc_aggregate_uncorrected": 1},
            {"ecc_uncorrectable": "degraded"},
        ),
        ({"ecc_aggregate_uncorrected": 3}, {"ecc_uncorrectable_history": "warning"}),
        ({"ecc_volatile_corrected": 50_000}, {}),  # corrected errors are corrected
        ({"ecc_enabled": False}, {"ecc_mode": "warning"}),
        (
            {
                "ecc_enabled": None,
                "ecc_volatile_uncorrected": None,
                "ecc_aggregate_uncorrected": None,
            },
            {},
        ),
        ({"retired_pages_pending": True}, {"retired_pages_pending": "degraded"}),
        ({"retired_pages_dbe": 40, "retired_pages_sbe": 19}, {}),
        ({"retired_pages_dbe": 40, "retired_pages_sbe": 20}, {"retired_pages": "critical"}),
        ({"remapped_rows": RemappedRows(3, 2, pending=False, failure=False)}, {}),
        (
            {"remapped_rows": RemappedRows(0, 1, pending=True, failure=False)},
            {"row_remap_pending": "degraded"},
        ),
        (
            {"remapped_rows": RemappedRows(0, 8, pending=False, failure=True)},
            {"row_remap_failure": "critical"},
        ),
        ({"remapped_rows": None}, {}),
    ],
)
def test_memory_checks(kw: dict[str, Any], expected: dict[str, str]) -> None:
    assert checks(judge_gpu(gpu(**kw), [])) == expected


def test_row_remap_failure_says_rma_and_pending_says_reset() -> None:
    failure = judge_gpu(gpu(remapped_rows=RemappedRows(0, 8, False, True)), [])["issues"][0]
    assert "RMA" in failure["action"] and "NVIDIA support" in failure["action"]
    pending = judge_gpu(gpu(remapped_rows=RemappedRows(0, 1, True, False)), [])["issues"][0]
    assert "nvidia-smi -r -i 1" in pending["action"]


# ---- PCIe and NVLink -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replays", "expected"), [(0, "healthy"), (99, "healthy"), (100, "warning"), (None, "healthy")]
)
def test_pcie_replay_threshold(replays: int | None, expected: str) -> None:
    assert status_of(gpu(pcie_replay_counter=replays)) == expected


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        ({"crc_flit_errors": 99}, {}),
        ({"crc_flit_errors": 100}, {"nvlink_errors": "warning"}),
        ({"replay_errors": 99}, {}),
        ({"replay_errors": 100}, {"nvlink_errors": "warning"}),
        ({"recovery_errors": 1}, {"nvlink_errors": "warning"}),
        ({"crc_data_errors": 1}, {"nvlink_errors": "warning"}),
        ({"active": False}, {"nvlink_down": "degraded"}),
        ({"crc_flit_errors": None, "replay_errors": None}, {}),  # counters unsupported
    ],
)
def test_nvlink_counters_and_state(changed: dict[str, Any], expected: dict[str, str]) -> None:
    links = [link(0), link(1, **changed), link(2)]
    assert checks(judge_gpu(gpu(nvlinks=links), [])) == expected


def test_nvlink_all_down_points_at_fabric_manager_and_lists_links() -> None:
    verdict = judge_gpu(gpu(nvlinks=[link(n, active=False) for n in range(3)]), [])
    issue = verdict["issues"][0]
    assert "0, 1, 2" in issue["message"] and "fabricmanager" in issue["message"]
    assert verdict["metrics"]["nvlink"]["active"] == 0


def test_no_nvlinks_means_no_nvlink_metrics() -> None:
    verdict = judge_gpu(gpu(nvlinks=[], unsupported=["nvlinks"]), [])
    assert verdict["status"] == "healthy"
    assert verdict["metrics"]["nvlink"] is None
    assert verdict["unsupported"] == ["nvlinks"]


# ---- lost GPU, XIDs, recovery action ---------------------------------------------------


def test_lost_gpu_is_critical_with_a_full_runbook() -> None:
    # Stale numbers on a lost GPU are not judged: the GPU itself is the problem.
    data = gpu(lost=True, error="GPU is lost (NVML_ERROR_GPU_IS_LOST)", temperature_c=99)
    verdict = judge_gpu(data, [])
    assert checks(verdict) == {"gpu_lost": "critical"}
    issue = verdict["issues"][0]
    assert "fallen off the bus" in issue["message"] and "NVML_ERROR_GPU_IS_LOST" in issue["message"]
    for step in ("kubectl drain", "nvidia-smi -r -i 1", "reboot", "PCIe", "power", "RMA"):
        assert step in issue["action"]


def test_recent_xids_are_judged_by_catalog_severity_and_grouped() -> None:
    events = [
        xid(79, ago=30),
        xid(13, ago=500, pid=4242, process="python"),
        xid(13, ago=400, pid=4242, process="python"),
        xid(13, ago=300, pid=4243, process="python"),
        xid(63),  # row-remap event: the catalog says ignore -> no issue
    ]
    verdict = judge_gpu(gpu(), events)
    xid_issues = [i for i in verdict["issues"] if i["check"] == "xid"]
    assert [(i["severity"], i["message"].split(" (")[0]) for i in xid_issues] == [
        ("critical", "Xid 79"),
        ("warning", "Xid 13"),
    ]
    assert "3 times" in xid_issues[1]["message"] and "pid 4242, 4243" in xid_issues[1]["message"]
    assert verdict["metrics"]["xid_events"] == 5


def test_xids_of_other_gpus_are_ignored_and_pci_matches_unmapped_events() -> None:
    other = xid(79, index=3, pci="00000000:3A:00.0")
    assert status_of(gpu(), [other]) == "healthy"
    unmapped_same_pci = xid(79, index=None)
    assert status_of(gpu(), [unmapped_same_pci]) == "critical"
    unmapped_other_pci = xid(79, index=None, pci="00000000:3A:00.0")
    assert status_of(gpu(), [unmapped_other_pci]) == "healthy"


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (0, "healthy"),
        (1, "critical"),
        (2, "critical"),
        (3, "degraded"),
        (4, "degraded"),
        (9, "warning"),
    ],
)
def test_recovery_action_field(action: int, expected: str) -> None:
    verdict = judge_gpu(gpu(recovery_action=action), [])
    assert verdict["status"] == expected
    assert verdict["metrics"]["recovery_action"] == action


def test_recovery_action_from_xid_154_when_the_field_is_unsupported() -> None:
    reports = [xid(154, ago=900, recovery_action=1), xid(154, ago=60, recovery_action=2)]
    data = gpu(recovery_action=None, unsupported=["recovery_action"])
    verdict = judge_gpu(data, reports)
    issue = [i for i in verdict["issues"] if i["check"] == "recovery_action"]
    assert len(issue) == 1 and issue[0]["severity"] == "critical"
    assert "reboot" in issue[0]["message"] and "Xid 154" in issue[0]["message"]  # latest wins
    assert verdict["metrics"]["recovery_action_name"] == "node_reboot"
    # Xid 154 is judged through the recovery action only, never as a second "xid" issue.
    assert not [i for i in verdict["issues"] if i["check"] == "xid"]


def test_recovery_action_field_outranks_an_old_xid_154() -> None:
    # The field is the current state: a reset since the Xid 154 cleared it.
    verdict = judge_gpu(gpu(recovery_action=0), [xid(154, recovery_action=1)])
    assert verdict["status"] == "healthy"


# ---- unsupported queries ---------------------------------------------------------------


def test_unsupported_queries_are_listed_never_issues() -> None:
    blank = {
        f.name: None
        for f in dataclasses.fields(GpuHealthData)
        if f.name
        not in ("index", "uuid", "name", "pci_bus_id", "lost", "error", "nvlinks", "unsupported")
    }
    names = sorted(blank) + ["nvlinks"]
    data = gpu(**blank, nvlinks=[], unsupported=[*reversed(names), "pcie_replay_counter"])
    verdict = judge_gpu(data, [])
    assert verdict["status"] == "healthy" and verdict["issues"] == []
    assert verdict["unsupported"] == sorted(names)  # sorted, without duplicates
    assert all(v is None for k, v in verdict["metrics"].items() if k != "xid_events")


# ---- node ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "healthy"),
        (["healthy", "healthy"], "healthy"),
        (["healthy", "warning"], "warning"),
        (["degraded", "warning", "healthy"], "degraded"),
        (["warning", "critical", "degraded"], "critical"),
    ],
)
def test_node_status_is_the_worst_gpus(statuses: list[str], expected: str) -> None:
    assert judge_node([{"status": s} for s in statuses]) == expected


def test_xid_issues_on_a_mig_gpu_name_the_gpu_instances() -> None:
    events = [xid(13, gpu_instance_id=3), xid(13, ago=30, gpu_instance_id=1), xid(13, ago=20)]
    verdict = judge_gpu(gpu(), events)
    (issue,) = [i for i in verdict["issues"] if i["check"] == "xid"]
    assert issue["gpu_instance_ids"] == [1, 3]
    assert "(MIG GPU instance 1, 3, and untagged)" in issue["message"]
    plain = judge_gpu(gpu(), [xid(13)])
    (issue,) = [i for i in plain["issues"] if i["check"] == "xid"]
    assert "gpu_instance_ids" not in issue and "MIG" not in issue["message"]
