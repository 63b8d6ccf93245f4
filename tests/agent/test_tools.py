"""The tool handlers (agent.tools) over the fake backend, in-process: results validate
against their output schemas, the kernel log's absence is reported, pods are mapped,
version skew hides tools, and an unreachable NVML is explained."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.errors import ScenarioError, UsageError
from agent.kmsg import boot_time
from agent.protocol import INVALID_PARAMS
from agent.tools import TOOL_DEFINITIONS, TOOL_NAMES
from tests.agent.conftest import AGENT, ROOT, Wire

SCHEMAS = {t["name"]: t["outputSchema"] for t in TOOL_DEFINITIONS}
POD_UID = "7c3f0c7e-2f0a-4a3c-9d61-1f0a9a1b2c3d"
CONTAINER = "a" * 64


def content(wire: Wire, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call a tool, check the result validates against its outputSchema, return it."""
    result = wire.call(name, arguments)
    assert result["isError"] is False, result["content"][0]["text"]
    data: dict[str, Any] = result["structuredContent"]
    jsonschema.validate(data, SCHEMAS[name])
    assert json.loads(result["content"][0]["text"]) == data
    return data


def error_text(wire: Wire, name: str, arguments: dict[str, Any] | None = None) -> str:
    result = wire.call(name, arguments)
    assert result["isError"] is True, result
    assert "structuredContent" not in result
    text: str = result["content"][0]["text"]
    return text


def test_every_tool_on_the_default_scenario(fake_wire: Wire) -> None:
    for name in TOOL_NAMES:
        data = content(fake_wire, name)
        assert data["node"]["name"] == os.environ.get("NODE_NAME", "gpu-node-1")
        assert data["node"]["backend"] == "fake"
        assert data["node"]["driver_version"] == "575.57.08"


def test_health_reports_the_default_faults_with_reasons(fake_wire: Wire) -> None:
    health = content(fake_wire, "get_gpu_health")
    assert health["status"] == "critical"
    gpus = {g["index"]: g for g in health["gpus"]}
    assert gpus[2]["status"] == "critical"  # fell off the bus
    assert gpus[5]["status"] == "critical"  # row remap failure
    assert gpus[6]["status"] != "healthy"  # thermal throttle
    assert [gpus[i]["status"] for i in (0, 1, 3, 4, 7)] == ["healthy"] * 5
    for issue in gpus[2]["issues"] + gpus[5]["issues"] + gpus[6]["issues"]:
        assert issue["message"] and issue["action"]
    assert health["xid_log"] == {
        "source": "scenario",
        "readable": True,
        "reason": None,
        "events_in_window": health["xid_log"]["events_in_window"],
        "unmatched_events": 0,
    }
    assert health["xid_log"]["events_in_window"] >= 2  # Xid 79 and the remap's Xids
    assert health["issues"] == []
    assert "2 critical" in health["summary"] and "5 healthy" in health["summary"]


def test_health_window_excludes_old_xids(fake_wire: Wire) -> None:
    recent = content(fake_wire, "get_gpu_health", {"since_minutes": 1})
    wide = content(fake_wire, "get_gpu_health", {"since_minutes": 7 * 24 * 60})
    assert recent["xid_log"]["events_in_window"] < wide["xid_log"]["events_in_window"]
    assert recent["since_minutes"] == 1


def test_unreadable_kernel_log_is_reported_not_healthy(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str], tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-kmsg")
    w = wire("--backend", "fake", "--scenario", scenario({}), "--kmsg", missing)
    w.initialize()
    health = content(w, "get_gpu_health")
    assert all(g["status"] == "healthy" for g in health["gpus"])
    assert health["status"] == "warning"  # a verdict without XIDs is not a clean bill
    assert health["xid_log"]["readable"] is False
    assert missing in health["xid_log"]["reason"]
    assert health["issues"][0]["check"] == "kernel_log"
    assert "CAP_SYSLOG" in health["issues"][0]["action"]
    assert "kernel log unreadable" in health["summary"]
    text = error_text(w, "analyze_xid_errors")
    assert missing in text and "does not exist" in text


def test_explicit_kmsg_file_wins_over_the_scenario(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str], tmp_path: Path
) -> None:
    # Bus 0x18 is GPU 0 of the H100 preset; the record is stamped one minute ago.
    usec = int((time.time() - boot_time() - 60) * 1e6)
    log = tmp_path / "kmsg"
    log.write_text(
        f"3,100,{usec},-;NVRM: Xid (PCI:0000:18:00): 31, pid=777, name=trainer, "
        "Ch 00000008, intr 00000000. MMU Fault\n"
        f"6,101,{usec},-;eth0: link up\n"
    )
    w = wire("--backend", "fake", "--scenario", scenario({}), "--kmsg", str(log))
    w.initialize()
    xids = content(w, "analyze_xid_errors", {"since_minutes": 5})
    assert xids["source"] == str(log)
    assert [(g["xid"], g["gpu_index"], g["count"]) for g in xids["xids"]] == [(31, 0, 1)]
    assert xids["xids"][0]["pids"] == [777]
    health = content(w, "get_gpu_health", {"since_minutes": 5})
    assert health["xid_log"]["events_in_window"] == 1


def test_xids_are_grouped_with_counts(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    faults = [
        {"gpu": 1, "kind": "xid", "xid": 13, "ago_s": ago, "pid": 4242, "process": "python"}
        for ago in (600, 500, 400)
    ]
    w = wire("--backend", "fake", "--scenario", scenario({"faults": faults}))
    w.initialize()
    data = content(w, "analyze_xid_errors", {"since_minutes": 60})
    groups = [g for g in data["xids"] if g["xid"] == 13]
    assert len(groups) == 1 and groups[0]["count"] == 3 and groups[0]["gpu_index"] == 1
    assert groups[0]["first_seen"] < groups[0]["last_seen"]
    assert data["summary"]["events"] >= 3


def test_disabled_tools_are_hidden_and_unknown(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    w = wire(
        "--backend", "fake", "--scenario", scenario({"disabled_tools": ["get_nvlink_topology"]})
    )
    w.initialize()
    names = [t["name"] for t in w.request("tools/list")["result"]["tools"]]
    assert names == [n for n in TOOL_NAMES if n != "get_nvlink_topology"]
    error = w.request("tools/call", {"name": "get_nvlink_topology"})["error"]
    assert error["code"] == INVALID_PARAMS and "Unknown tool" in error["message"]


def test_node_name_comes_from_the_environment(
    wire: Callable[..., Wire], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NODE_NAME", "gpu-worker-17")
    w = wire("--backend", "fake")
    assert content(w, "get_gpu_inventory")["node"]["name"] == "gpu-worker-17"


def test_processes_without_host_proc_say_how_to_map_pods(fake_wire: Wire) -> None:
    data = content(fake_wire, "get_gpu_processes")
    assert data["pod_mapping"]["enabled"] is False
    assert "--host-proc" in data["pod_mapping"]["note"]
    procs = {p["pid"]: p for g in data["gpus"] for p in g["processes"]}
    assert procs[48211]["name"] == "python3" and procs[48211]["pod"] is None
    lost = [g for g in data["gpus"] if g["index"] == 2][0]
    assert lost["lost"] is True and lost["error"]


def test_processes_map_to_pods_through_host_proc(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str], tmp_path: Path
) -> None:
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text(
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{POD_UID.replace('-', '_')}.slice/"
        f"cri-containerd-{CONTAINER}.scope\n"
    )
    (proc / "4242" / "comm").write_text("train.py\n")
    processes = [
        {"gpu": 0, "pid": 4242, "used_memory_mib": 1000},
        {"gpu": 1, "pid": 999, "name": "gone", "used_memory_mib": 10},
    ]
    w = wire(
        "--backend",
        "fake",
        "--scenario",
        scenario({"processes": processes}),
        "--host-proc",
        str(proc),
    )
    w.initialize()
    data = content(w, "get_gpu_processes")
    assert data["pod_mapping"] == {"enabled": True, "host_proc": str(proc)}
    procs = {p["pid"]: p for g in data["gpus"] for p in g["processes"]}
    assert procs[4242]["pod"]["pod_uid"] == POD_UID
    assert procs[4242]["pod"]["container_id"] == CONTAINER
    assert procs[4242]["pod"]["runtime"] == "containerd"
    assert procs[4242]["name"] in ("train.py", None)  # the scenario may name it itself
    assert procs[999]["pod"] is None  # exited: no cgroup file, no error


def test_nvlink_topology_counts_active_links(fake_wire: Wire) -> None:
    data = content(fake_wire, "get_nvlink_topology")
    for gpu in data["gpus"]:
        assert gpu["active_links"] == sum(1 for link in gpu["links"] if link["active"])
    pairs = {(p["gpu_a"], p["gpu_b"]) for p in data["p2p"]}
    assert all(2 not in pair for pair in pairs)  # the lost GPU has no peers


def test_inventory_shows_mig_instances(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    w = wire(
        "--backend",
        "fake",
        "--scenario",
        scenario({"mig": {"gpu": 4, "profiles": ["3g.40gb", "3g.40gb"]}}),
    )
    data = content(w, "get_gpu_inventory")
    gpu = data["gpus"][4]
    assert gpu["mig_mode_current"] is True
    assert [m["profile"] for m in gpu["mig_instances"]] == ["3g.40gb", "3g.40gb"]
    assert data["driver"]["gpu_count"] == 8


def test_bad_start_up_input_is_an_agent_error(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str], tmp_path: Path
) -> None:
    with pytest.raises(ScenarioError):
        wire("--backend", "fake", "--scenario", str(tmp_path / "missing.json"))
    with pytest.raises(ScenarioError):
        wire("--backend", "fake", "--scenario", scenario({"gpu_count": "eight"}))
    with pytest.raises(UsageError, match="--scenario only applies"):
        wire("--backend", "nvml", "--scenario", scenario({}))
    with pytest.raises(UsageError, match="not a directory"):
        wire("--backend", "fake", "--host-proc", str(tmp_path / "nope"))
    with pytest.raises(UsageError, match="invalid choice"):
        wire("--backend", "dcgm")
    with pytest.raises(UsageError, match="call-timeout"):
        wire("--backend", "fake", "--call-timeout", "0")
    with pytest.raises(UsageError):
        wire("--help")


@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None, reason="a real NVML is installed here"
)
def test_unreachable_nvml_is_explained_and_the_agent_keeps_answering() -> None:
    lines = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25"},
        },
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_gpu_health"}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
    ]
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    done = subprocess.run(
        [*AGENT, "--backend", "nvml"],
        input="".join(json.dumps(m) + "\n" for m in lines).encode(),
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    answers = {m["id"]: m for m in map(json.loads, done.stdout.splitlines())}
    result = answers[2]["result"]
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert "NVML" in text and "runtimeClassName" in text
    assert len(answers[3]["result"]["tools"]) == len(TOOL_NAMES)
