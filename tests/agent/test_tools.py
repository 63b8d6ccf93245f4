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

from agent.catalog import TOOL_DEFINITIONS, TOOL_NAMES
from agent.errors import ScenarioError, UsageError
from agent.kmsg import boot_time
from agent.protocol import INVALID_PARAMS
from tests.agent.helpers import AGENT, ROOT, Wire

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
        "disabled": False,
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


def test_processes_name_their_mig_gpu_instance(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    node = {
        "product": "A100-80GB",
        "mig": {"gpu": 0, "profiles": ["3g.40gb", "3g.40gb"]},
        "processes": [{"gpu": 0, "pid": 4242, "gpu_instance": 2}, {"gpu": 1, "pid": 77}],
    }
    w = wire("--backend", "fake", "--scenario", scenario(node))
    w.initialize()
    procs = {p["pid"]: p for g in content(w, "get_gpu_processes")["gpus"] for p in g["processes"]}
    assert (procs[4242]["gpu_instance_id"], procs[4242]["compute_instance_id"]) == (2, 0)
    assert (procs[77]["gpu_instance_id"], procs[77]["compute_instance_id"]) == (None, None)


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


def test_xids_on_a_mig_slice_name_the_instance_and_its_device(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    mig = {"gpu": 4, "profiles": ["1g.10gb", "3g.40gb"]}
    faults = [{"gpu": 4, "kind": "xid", "xid": 31, "gpu_instance": 2, "ago_s": 60}]
    w = wire("--backend", "fake", "--scenario", scenario({"mig": mig, "faults": faults}))
    inventory = content(w, "get_gpu_inventory")["gpus"][4]["mig_instances"]
    (row,) = [g for g in content(w, "analyze_xid_errors")["xids"] if g["xid"] == 31]
    assert (row["gpu_index"], row["gpu_instance_id"], row["mig_profile"]) == (4, 2, "3g.40gb")
    assert row["mig_uuid"] == inventory[1]["uuid"]
    assert "GPU-I:02" in row["last_message"]
    health = content(w, "get_gpu_health")["gpus"][4]
    (issue,) = [i for i in health["issues"] if i["check"] == "xid"]
    assert issue["gpu_instance_ids"] == [2]


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


# --- settings from the chart's environment --------------------------------------------------


def _recent_xid_log(tmp_path: Path) -> Path:
    """A kmsg-format log with one Xid 31 on GPU 0 (bus 0x18), stamped a minute ago."""
    usec = int((time.time() - boot_time() - 60) * 1e6)
    log = tmp_path / "kmsg-env"
    log.write_text(f"3,100,{usec},-;NVRM: Xid (PCI:0000:18:00): 31, pid=777, name=trainer, x\n")
    return log


@pytest.mark.parametrize(
    ("args", "env", "phrase"),
    [
        (["--kmsg", "off"], {}, "disabled by configuration (--kmsg off)"),
        (
            [],
            {"GPU_AGENT_KMSG": "off"},
            "XID analysis disabled by the chart (xid.enabled=false / securityContext non-root)",
        ),
    ],
)
def test_kmsg_off_is_said_plainly_and_does_not_downgrade_the_node(
    wire: Callable[..., Wire],
    scenario: Callable[[dict[str, Any]], str],
    args: list[str],
    env: dict[str, str],
    phrase: str,
) -> None:
    w = wire("--backend", "fake", "--scenario", scenario({}), *args, env=env)
    w.initialize()
    health = content(w, "get_gpu_health")
    assert health["status"] == "healthy"  # unlike an unreadable log (warning)
    assert health["xid_log"]["disabled"] is True
    assert health["xid_log"]["readable"] is False
    assert health["xid_log"]["source"] == "off"
    assert phrase in health["xid_log"]["reason"]
    (issue,) = health["issues"]
    assert issue["severity"] == "info" and phrase in issue["message"]
    assert "XID analysis disabled by configuration" in health["summary"]
    text = error_text(w, "analyze_xid_errors")
    assert phrase in text


def test_kmsg_from_the_environment_and_the_flag_wins(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str], tmp_path: Path
) -> None:
    log = _recent_xid_log(tmp_path)
    from_env = wire(
        "--backend", "fake", "--scenario", scenario({}), env={"GPU_AGENT_KMSG": str(log)}
    )
    xids = content(from_env, "analyze_xid_errors", {"since_minutes": 5})
    assert xids["source"] == str(log)
    assert [(g["xid"], g["gpu_index"]) for g in xids["xids"]] == [(31, 0)]
    flag = wire(
        "--backend", "fake", "--scenario", scenario({}), "--kmsg", str(log),
        env={"GPU_AGENT_KMSG": "off"},
    )  # fmt: skip
    assert content(flag, "analyze_xid_errors", {"since_minutes": 5})["source"] == str(log)
    blank = wire("--backend", "fake", env={"GPU_AGENT_KMSG": "  "})  # unset, in effect
    assert content(blank, "analyze_xid_errors")["source"] == "scenario"


def test_kmsg_auto_uses_the_scenario_for_the_fake_backend(wire: Callable[..., Wire]) -> None:
    w = wire("--backend", "fake", "--kmsg", "auto")
    assert content(w, "get_gpu_health")["xid_log"]["source"] == "scenario"


def test_kmsg_syslog_reads_the_real_ring_buffer(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    w = wire("--backend", "fake", "--scenario", scenario({}), "--kmsg", "syslog")
    result = w.call("analyze_xid_errors", {"since_minutes": 60})
    if result["isError"]:  # no CAP_SYSLOG here: the reason must say so
        assert "CAP_SYSLOG" in result["content"][0]["text"]
        pytest.skip("syslog(2) is not permitted on this machine")
    assert result["structuredContent"]["source"] == "syslog(2)"
    health = content(w, "get_gpu_health")
    assert health["xid_log"]["source"] == "syslog(2)" and health["xid_log"]["readable"]


def test_host_proc_from_the_environment(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str], tmp_path: Path
) -> None:
    proc = tmp_path / "hostproc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text(
        f"0::/kubepods/besteffort/pod{POD_UID}/{CONTAINER}\n"  # cgroupfs driver
    )
    path = scenario({"processes": [{"gpu": 0, "pid": 4242, "used_memory_mib": 1}]})
    w = wire("--backend", "fake", "--scenario", path, env={"GPU_AGENT_HOST_PROC": str(proc)})
    data = content(w, "get_gpu_processes")
    assert data["pod_mapping"] == {"enabled": True, "host_proc": str(proc)}
    (p,) = [p for g in data["gpus"] for p in g["processes"]]
    assert p["pod"]["pod_uid"] == POD_UID
    # A bad chart setting does not stop the agent; the tool says what is wrong.
    missing = str(tmp_path / "absent")
    bad = wire("--backend", "fake", "--scenario", path, env={"GPU_AGENT_HOST_PROC": missing})
    mapping = content(bad, "get_gpu_processes")["pod_mapping"]
    assert mapping["enabled"] is False
    assert f"GPU_AGENT_HOST_PROC={missing} is not a directory" in mapping["note"]
    # The option wins over the environment.
    flag = wire(
        "--backend", "fake", "--scenario", path, "--host-proc", str(proc),
        env={"GPU_AGENT_HOST_PROC": missing},
    )  # fmt: skip
    assert content(flag, "get_gpu_processes")["pod_mapping"]["host_proc"] == str(proc)


def test_pod_resources_socket_is_reported_not_used(
    wire: Callable[..., Wire], tmp_path: Path
) -> None:
    import socket

    path = str(tmp_path / "kubelet.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        w = wire("--backend", "fake", env={"GPU_AGENT_POD_RESOURCES_SOCKET": path})
        status = content(w, "get_gpu_processes")["pod_mapping"]["pod_resources"]
    assert status["socket"] == path
    assert status["present"] is True and status["used"] is False
    assert "available but not yet used" in status["note"]
    os.unlink(path)
    gone = wire("--backend", "fake", env={"GPU_AGENT_POD_RESOURCES_SOCKET": path})
    status = content(gone, "get_gpu_processes")["pod_mapping"]["pod_resources"]
    assert status["present"] is False and "not a socket" in status["note"]
    unset = wire("--backend", "fake", env={})
    assert "pod_resources" not in content(unset, "get_gpu_processes")["pod_mapping"]


def test_node_name_and_log_level_from_an_explicit_environment(
    wire: Callable[..., Wire], capsys: pytest.CaptureFixture[str]
) -> None:
    import agent.protocol

    before = agent.protocol.log_threshold
    try:
        w = wire(
            "--backend", "fake", env={"NODE_NAME": "node-from-env", "GPU_AGENT_LOG_LEVEL": "debug"}
        )
        assert content(w, "get_gpu_inventory")["node"]["name"] == "node-from-env"
        assert "get_gpu_inventory" in capsys.readouterr().err  # debug timing lines
        quiet = wire(
            "--backend", "fake", "--log-level", "error", env={"GPU_AGENT_LOG_LEVEL": "debug"}
        )
        content(quiet, "get_gpu_inventory")
        assert capsys.readouterr().err == ""  # the option wins
    finally:
        agent.protocol.log_threshold = before


def test_nvlink_topology_names_gpus_that_could_not_be_read(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    w = wire(
        "--backend",
        "fake",
        "--scenario",
        scenario({"faults": [{"gpu": 2, "kind": "fell_off_bus"}]}),
    )
    data = content(w, "get_nvlink_topology")
    assert len(data["errors"]) == 1 and data["errors"][0].startswith("GPU 2: ")
    assert (
        content(wire("--backend", "fake", "--scenario", scenario({})), "get_nvlink_topology")[
            "errors"
        ]
        == []
    )
