"""The rest of the node (issue 12): PCIe AER counters and InfiniBand ports from a fake
sysfs tree (--host-sys), NVSwitch SXids and GPU reset events from the kernel log, and
how get_gpu_health / analyze_xid_errors report them and name their sources."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.backend import IbPort, KmsgRecord
from agent.catalog import TOOL_DEFINITIONS
from agent.node_checks import judge_gpu_events, judge_infiniband, judge_sxids
from agent.sxid import parse_gpu_events, parse_sxids, sxid_groups
from agent.sysfs import read_aer, read_host, read_infiniband, sysfs_pci_address
from tests.agent.helpers import Wire

SCHEMAS = {t["name"]: t["outputSchema"] for t in TOOL_DEFINITIONS}
GPU0 = "00000000:18:00.0"  # the default fake H100 node's GPU 0

AER_COR = """RxErr 0
BadTLP 180
BadDLLP 12
Rollover 0
Timeout 0
NonFatalErr 0
CorrIntErr 0
HeaderOF 0
TOTAL_ERR_COR 192
"""
AER_NONFATAL = """Undefined 0
DLP 0
CmpltTO 2
UnxCmplt 0
TOTAL_ERR_NONFATAL 2
"""
AER_FATAL = "Undefined 0\nDLP 0\nTOTAL_ERR_FATAL 0\n"


def make_sys(root: Path, aer: dict[str, tuple[str, str, str]], ports: list[dict[str, str]]) -> str:
    for bus_id, (cor, nonfatal, fatal) in aer.items():
        dev = root / "bus" / "pci" / "devices" / sysfs_pci_address(bus_id)
        dev.mkdir(parents=True)
        (dev / "aer_dev_correctable").write_text(cor)
        (dev / "aer_dev_nonfatal").write_text(nonfatal)
        (dev / "aer_dev_fatal").write_text(fatal)
    for p in ports:
        where = root / "class" / "infiniband" / p["device"] / "ports" / p["port"]
        where.mkdir(parents=True)
        for name in ("state", "phys_state", "rate", "link_layer"):
            (where / name).write_text(p[name] + "\n")
        if "link_downed" in p:
            (where / "counters").mkdir()
            (where / "counters" / "link_downed").write_text(p["link_downed"] + "\n")
    return str(root)


PORTS = [
    {
        "device": "mlx5_0",
        "port": "1",
        "state": "4: ACTIVE",
        "phys_state": "5: LinkUp",
        "rate": "400 Gb/sec (4X NDR)",
        "link_layer": "InfiniBand",
    },
    {
        "device": "mlx5_1",
        "port": "1",
        "state": "1: DOWN",
        "phys_state": "2: Polling",
        "rate": "10 Gb/sec (4X SDR)",
        "link_layer": "InfiniBand",
        "link_downed": "3",
    },
]


def test_sysfs_aer_and_infiniband(tmp_path: Path) -> None:
    root = make_sys(tmp_path, {GPU0: (AER_COR, AER_NONFATAL, AER_FATAL)}, PORTS)
    aer = read_aer(root, GPU0)
    assert aer is not None
    assert (aer.correctable, aer.nonfatal, aer.fatal) == (192, 2, 0)
    assert aer.details == {"BadTLP": 180, "BadDLLP": 12, "CmpltTO": 2}
    assert read_aer(root, "00000000:2A:00.0") is None  # no AER for that device
    ports = read_infiniband(root)
    assert ports == [
        IbPort("mlx5_0", 1, "ACTIVE", "LinkUp", "400 Gb/sec (4X NDR)", "InfiniBand"),
        IbPort("mlx5_1", 1, "DOWN", "Polling", "10 Gb/sec (4X SDR)", "InfiniBand", 3),
    ]
    assert read_infiniband(str(tmp_path / "nothing")) is None
    host = read_host(root, [GPU0, "00000000:2A:00.0"])
    assert list(host.aer) == [GPU0] and host.source == root


def test_infiniband_check_names_the_ports_and_the_cause() -> None:
    up = IbPort("mlx5_0", 1, "ACTIVE", "LinkUp", "400", "InfiniBand")
    polling = IbPort("mlx5_3", 1, "DOWN", "Polling", None, "InfiniBand")
    assert judge_infiniband([up]) == [] and judge_infiniband(None) == []
    (issue,) = judge_infiniband([up, polling])
    assert issue["severity"] == "warning"
    assert (
        "1 of 2 RDMA port(s)" in issue["message"]
        and "mlx5_3 port 1 DOWN/Polling" in issue["message"]
    )
    assert "cable" in issue["message"]


SW3 = "nvidia-nvswitch3: SXid (PCI:0000:c5:00.0): 12028, "
SW0 = "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 24007, "
SXID_LINES = [
    SW3 + "Non-fatal, Link 44 egress non-posted PRIV error (First)",
    SW3 + "Non-fatal, Link 45 egress non-posted PRIV error",
    SW0 + "Fatal, Link 12 sourcetrack timeout error",
    SW0 + "Severity 1 Engine instance 12 Sub-engine instance 00",  # follow-up: not counted
    "nvidia-nvswitch1: SXid (PCI:bogus): 1, Fatal",
    "NVRM: Xid (PCI:0000:18:00): 79, pid=1, name=x, GPU has fallen off the bus.",
]


def records(lines: list[str], start_s: float = 100.0) -> list[KmsgRecord]:
    return [
        KmsgRecord(priority=3, sequence=n, usec_since_boot=int((start_s + n) * 1e6), message=line)
        for n, line in enumerate(lines)
    ]


def test_sxids_are_parsed_grouped_and_judged() -> None:
    events = parse_sxids(records(SXID_LINES), boot_time=1_700_000_000.0)
    assert [(e.sxid, e.fatal, e.link) for e in events] == [
        (12028, False, 44),
        (12028, False, 45),
        (24007, True, 12),
    ]
    groups = sxid_groups(events)
    assert [(g["sxid"], g["fatal"], g["count"]) for g in groups] == [
        (24007, True, 1),
        (12028, False, 2),
    ]
    assert groups[1]["links"] == [44, 45] and groups[1]["pci_bus_id"] == "00000000:C5:00.0"
    (issue,) = judge_sxids(events)
    assert issue["severity"] == "critical" and "nvidia-nvswitch0" in issue["message"]
    (soft,) = judge_sxids(events[:2])
    assert soft["severity"] == "warning" and "12028" in soft["message"]
    assert judge_sxids([]) == []


def test_gpu_events_boot_attach_is_not_news_but_a_second_one_is() -> None:
    lines = [
        "NVRM: GPU at PCI:0000:18:00: GPU-aaaaaaaa-1111-2222-3333-444444444444",
        "NVRM: GPU at PCI:0000:2a:00: GPU-bbbbbbbb-1111-2222-3333-444444444444",
        "pcieport 0000:17:01.0: AER: Uncorrected (Non-Fatal) error received: 0000:18:00.0",
        "NVRM: GPU 0000:2a:00.0: RmInitAdapter failed! (0x62:0x40:2102)",
        "nvidia 0000:18:00.0: GPU reset requested",
        "NVRM: GPU at PCI:0000:18:00: GPU-aaaaaaaa-1111-2222-3333-444444444444",
        "usb 1-1: reset high-speed USB device number 2 using xhci_hcd",
    ]
    gpus = [(0, "GPU-aaaaaaaa-1111-2222-3333-444444444444", GPU0)]
    events = parse_gpu_events(records(lines), 0.0, gpus)
    assert [(e.kind, e.gpu_index) for e in events] == [
        ("pcie_aer_nonfatal", 0),
        ("init_failed", None),
        ("reset", 0),
        ("reattached", 0),
    ]
    issues = {i["check"]: i for i in judge_gpu_events(events)}
    assert issues["gpu_init"]["severity"] == "critical"
    assert "00000000:2A:00.0" in issues["gpu_init"]["message"]
    assert issues["gpu_reset"]["severity"] == "info" and "GPU 0" in issues["gpu_reset"]["message"]


def test_health_through_a_session_with_a_fake_sysfs_and_kernel_log(
    wire: Callable[..., Wire], tmp_path: Path
) -> None:
    root = make_sys(tmp_path / "sys", {GPU0: (AER_COR, AER_NONFATAL, AER_FATAL)}, PORTS)
    kmsg = tmp_path / "kmsg.txt"
    kmsg.write_text(
        "".join(f"3,{n},{(100 + n) * 10**6},-;{line}\n" for n, line in enumerate(SXID_LINES[:3]))
    )
    w = wire("--backend", "fake", "--host-sys", root, "--kmsg", str(kmsg))
    w.initialize()
    result = w.call("get_gpu_health", {"since_minutes": 525600})
    health = result["structuredContent"]
    jsonschema.validate(health, SCHEMAS["get_gpu_health"])
    checks = {i["check"]: i for i in health["issues"]}
    assert checks["nvswitch"]["severity"] == "critical"
    assert checks["infiniband"]["severity"] == "warning"
    assert health["status"] == "critical"
    assert health["summary"].endswith("; node: infiniband warning, nvswitch critical")
    gpu0 = health["gpus"][0]
    assert gpu0["metrics"]["pcie_aer"] == {"correctable": 192, "nonfatal": 2, "fatal": 0}
    assert [i["check"] for i in gpu0["issues"]] == ["pcie_aer"]
    assert gpu0["status"] == "degraded"
    assert [p["active"] for p in health["infiniband"]] == [True, False]
    assert [p["link_downed"] for p in health["infiniband"]] == [None, 3]
    assert health["sources"]["sysfs"] == {"root": root, "pcie_aer_gpus": 1, "infiniband_ports": 2}
    assert health["sources"]["kernel_log"] == {"source": str(kmsg), "readable": True}
    assert health["sources"]["fabric_manager"] == "reported by NVML"
    xids = w.call("analyze_xid_errors", {"since_minutes": 525600})["structuredContent"]
    jsonschema.validate(xids, SCHEMAS["analyze_xid_errors"])
    assert [(g["sxid"], g["count"]) for g in xids["sxids"]] == [(24007, 1), (12028, 2)]


def test_the_fake_scenario_expresses_the_rest_of_the_node(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    path = scenario(
        {
            "infiniband": [
                {"device": "mlx5_0"},
                {"device": "mlx5_1", "state": "DOWN", "phys_state": "Polling", "link_downed": 7},
            ],
            "faults": [
                {"gpu": 1, "kind": "sxid", "sxid": 12028, "count": 2},
                {"gpu": 2, "kind": "pcie_aer", "fatal": 1},
                {"gpu": 3, "kind": "fabric_manager", "state": "in_progress"},
                {"gpu": 4, "kind": "gpu_reset", "ago_s": 60},
            ],
        }
    )
    w = wire("--backend", "fake", "--scenario", path)
    w.initialize()
    health = w.call("get_gpu_health")["structuredContent"]
    jsonschema.validate(health, SCHEMAS["get_gpu_health"])
    checks = {i["check"]: i["severity"] for i in health["issues"]}
    assert checks == {"infiniband": "warning", "nvswitch": "warning", "gpu_reset": "info"}
    by_gpu = {g["index"]: {i["check"] for i in g["issues"]} for g in health["gpus"]}
    assert by_gpu[2] == {"pcie_aer"} and by_gpu[3] == {"fabric_manager"}
    assert health["sources"]["sysfs"]["root"] == "scenario"
    assert [p["link_downed"] for p in health["infiniband"]] == [None, 7]
    xids = w.call("analyze_xid_errors")["structuredContent"]
    assert [e["kind"] for e in xids["gpu_events"]] == ["reset", "reattached"]


@pytest.mark.parametrize("env_only", [True, False])
def test_host_sys_comes_from_the_option_or_the_environment(
    wire: Callable[..., Wire], tmp_path: Path, env_only: bool
) -> None:
    root = make_sys(tmp_path, {}, PORTS[:1])
    args = ("--backend", "fake") if env_only else ("--backend", "fake", "--host-sys", root)
    w = wire(*args, env={"GPU_AGENT_HOST_SYS": root} if env_only else {})
    w.initialize()
    health = w.call("get_gpu_health")["structuredContent"]
    assert health["sources"]["sysfs"]["root"] == root
    assert health["infiniband"][0]["device"] == "mlx5_0"
    inventory = w.call("get_gpu_inventory")["structuredContent"]
    jsonschema.validate(inventory, SCHEMAS["get_gpu_inventory"])
    assert [(p["device"], p["active"]) for p in inventory["infiniband"]] == [("mlx5_0", True)]


def test_a_host_sys_that_is_not_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    from agent.app import create_session
    from agent.errors import UsageError

    with pytest.raises(UsageError, match="--host-sys .*not a directory"):
        create_session(["--backend", "fake", "--host-sys", str(tmp_path / "no")], lambda _: None)


def test_each_boot_in_the_persistent_log_attaches_its_gpus_afresh() -> None:
    attach = "NVRM: GPU at PCI:0000:18:00: GPU-aaaaaaaa-1111-2222-3333-444444444444"
    rows = [
        KmsgRecord(3, 1, -900_000_000, attach, monotonic_usec=20_000_000),  # boot A
        KmsgRecord(3, 2, -500_000_000, attach, monotonic_usec=18_000_000),  # boot B
        KmsgRecord(3, 3, -100_000_000, attach, monotonic_usec=418_000_000),  # B: again
        KmsgRecord(3, 4, 30_000_000, attach),  # this boot
    ]
    events = parse_gpu_events(rows, 0.0, [(0, None, GPU0)])
    assert [(e.kind, e.timestamp) for e in events] == [("reattached", -100.0)]
