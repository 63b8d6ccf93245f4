"""pods/exec over WebSocket through kubernetes-asyncio into the real agent: v5 and v4
framing, status frames, refused commands, and every exec fault the sim injects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.sim import SimServer, start_sim
from tests.broker.sim.helpers import mcp_lines, ws_exec

pytestmark = pytest.mark.e2e
HEALTH = ("get_gpu_health", {})


def _structured(answer: dict[str, object]) -> dict[str, object]:
    result = answer["result"]
    assert isinstance(result, dict) and not result.get("isError"), answer
    structured = result["structuredContent"]
    assert isinstance(structured, dict)
    return structured


async def test_v5_exec_runs_the_real_agent_with_the_nodes_faults(sim: SimServer) -> None:
    res = await ws_exec(sim, "gpu-node-002", mcp_lines(("analyze_xid_errors", {})))
    assert res.protocol == "v5.channel.k8s.io"
    assert res.frames[0] == (1, b"")  # the API server's "connected" frame
    assert res.status == {"metadata": {}, "status": "Success"}
    assert res.closed_cleanly
    answers = res.answers()
    assert answers[1]["result"]["serverInfo"]["name"] == "k8s-gpu-mcp-agent"
    xids = _structured(answers[2])
    assert {x["xid"] for x in xids["xids"]} >= {79}
    assert xids["node"]["name"] == "gpu-node-002"


async def test_each_node_has_its_own_health(sim: SimServer) -> None:
    expect = {"gpu-node-001": "healthy", "gpu-node-003": "critical", "gpu-node-004": "degraded"}
    for node, status in expect.items():
        res = await ws_exec(sim, node, mcp_lines(HEALTH))
        health = _structured(res.answers()[2])
        assert health["status"] == status, (node, health)


async def test_v4_exec_answers_and_reports_exit_codes(sim: SimServer) -> None:
    res = await ws_exec(
        sim,
        "gpu-node-001",
        mcp_lines(HEALTH),
        protocol="v4.channel.k8s.io",
        expect_answers=2,
        half_close=False,
    )
    assert res.protocol == "v4.channel.k8s.io"
    assert _structured(res.answers()[2])["status"] == "healthy"
    # With no stdin the agent exits at once; v4 reports the exit code in a Status.
    bad = await ws_exec(
        sim, "gpu-node-001", protocol="v4.channel.k8s.io", command=("gpu-agent", "--bogus"),
        open_stdin=False,
    )  # fmt: skip
    assert bad.status is not None and bad.status["reason"] == "NonZeroExitCode"
    assert bad.status["details"] == {"causes": [{"reason": "ExitCode", "message": "2"}]}
    assert b"unrecognized arguments: --bogus" in bad.channel(2)
    ok = await ws_exec(
        sim, "gpu-node-001", protocol="v4.channel.k8s.io", command=("gpu-agent", "--version"),
        open_stdin=False,
    )  # fmt: skip
    assert ok.status == {"metadata": {}, "status": "Success"}
    assert ok.channel(1).startswith(b"gpu-agent ")


async def test_in_process_agents_answer_like_subprocesses(tmp_path: object) -> None:
    from pathlib import Path

    from broker.sim import start_sim

    assert isinstance(tmp_path, Path)
    async with start_sim(workdir=tmp_path / "s", in_process=True) as sim:
        res = await ws_exec(sim, "gpu-node-002", mcp_lines(HEALTH, ("get_gpu_inventory", {})))
        assert res.status == {"metadata": {}, "status": "Success"}
        health = _structured(res.answers()[2])
        assert health["status"] == "critical"
        inventory = _structured(res.answers()[3])
        assert len(inventory["gpus"]) == 8
        assert sim.running_agents == 0


async def test_a_binary_missing_from_the_image_fails_in_runcs_words(sim: SimServer) -> None:
    res = await ws_exec(sim, "gpu-node-001", command=("nvtop",), open_stdin=False)
    status = res.status
    assert status is not None and status["reason"] == "InternalError" and status["code"] == 500
    assert 'exec: "nvtop": executable file not found in $PATH: unknown' in status["message"]
    assert status["message"].startswith(
        "Internal error occurred: error executing command in container: failed to exec in "
        'container: failed to start exec "'
    )
    res = await ws_exec(sim, "gpu-node-001", command=("/opt/nope",), open_stdin=False)
    assert res.status is not None
    assert "stat /opt/nope: no such file or directory" in res.status["message"]
    # A workload pod's image has no agent.
    res = await ws_exec(
        sim, "gpu-node-004", command=("gpu-agent",), pod="triton-llm-7d9c8b6f5-q2w7x",
        namespace="inference", open_stdin=False,
    )  # fmt: skip
    assert res.status is not None and "executable file not found" in res.status["message"]


async def test_what_the_agent_image_ships_runs(sim: SimServer) -> None:
    """gpu-agent with any arguments and python3 -m agent run the real agent; sleep,
    echo and a one-command sh -c behave as in python:3.13-slim."""
    for command in (("gpu-agent", "--version"), ("python3", "-m", "agent", "--version"),
                    ("sh", "-c", "exec /usr/local/bin/gpu-agent --version")):  # fmt: skip
        res = await ws_exec(sim, "gpu-node-001", command=command, open_stdin=False)
        assert res.status == {"metadata": {}, "status": "Success"}, command
        assert res.channel(1).startswith(b"gpu-agent "), command
    res = await ws_exec(sim, "gpu-node-001", command=("gpu-agent", "--bogus"), open_stdin=False)
    assert res.status is not None and res.status["details"]["causes"][0]["message"] == "2"
    assert b"unrecognized arguments: --bogus" in res.channel(2)
    res = await ws_exec(sim, "gpu-node-001", command=("sleep", "0.2"), open_stdin=False)
    assert res.status == {"metadata": {}, "status": "Success"}
    res = await ws_exec(sim, "gpu-node-001", command=("sh", "-c", "echo ready"), open_stdin=False)
    assert res.channel(1) == b"ready\n" and res.status is not None
    res = await ws_exec(sim, "gpu-node-001", command=("sh", "-c", "nvtop"), open_stdin=False)
    assert res.channel(2) == b"sh: 1: nvtop: not found\n"
    assert res.status is not None and res.status["details"]["causes"][0]["message"] == "127"


async def test_programs_in_the_image_that_the_sim_does_not_run_say_so(sim: SimServer) -> None:
    for command in (("sh", "-c", "id"), ("nvidia-smi",), ("python3", "-c", "print(1)"),
                    ("sh", "-c", "gpu-agent --version | head -1")):  # fmt: skip
        res = await ws_exec(sim, "gpu-node-001", command=command, open_stdin=False)
        assert res.status is not None and res.status["reason"] == "NonZeroExitCode", command
        assert res.status["details"]["causes"][0]["message"] == "126"
        assert b"the simulated cluster does not run it" in res.channel(2), command


async def test_exec_into_an_agent_pod_that_is_not_running(sim: SimServer) -> None:
    res = await ws_exec(sim, "gpu-node-005", mcp_lines(HEALTH))  # ContainerCreating
    assert res.status is not None and res.status["message"] == (
        'Internal error occurred: unable to upgrade connection: container not found ("agent")'
    )
    assert res.answers() == {}


async def test_unknown_subprotocol_is_refused(sim: SimServer) -> None:
    with pytest.raises(Exception, match="403"):
        await ws_exec(sim, "gpu-node-001", protocol="v9.channel.k8s.io")


async def test_rbac_denies_exec_before_any_agent_starts(sim: SimServer) -> None:
    with pytest.raises(Exception, match="403"):
        await ws_exec(sim, "gpu-node-001", mcp_lines(HEALTH), context="sim-viewer")
    assert sim.running_agents == 0
    res = await ws_exec(sim, "gpu-node-001", mcp_lines(HEALTH), context="sim-sre")
    assert _structured(res.answers()[2])["status"] == "healthy"


async def test_client_certificate_user_can_exec(sim: SimServer) -> None:
    res = await ws_exec(sim, "gpu-node-001", mcp_lines(HEALTH), context="sim-cert")
    assert res.status == {"metadata": {}, "status": "Success"}


# Exec faults ---------------------------------------------------------------------------


async def test_fault_websocket_dropped_mid_stream(sim: SimServer) -> None:
    sim.faults("gpu-node-001").exec_drop_after = 1
    res = await ws_exec(sim, "gpu-node-001", mcp_lines(HEALTH))
    assert len(res.answers()) == 1  # initialize answered, then the connection was cut
    assert res.status is None and not res.closed_cleanly


async def test_fault_agent_killed_mid_call(sim: SimServer) -> None:
    sim.faults("gpu-node-001").exec_kill_after = 1
    res = await ws_exec(sim, "gpu-node-001", mcp_lines(HEALTH))
    assert 1 in res.answers() and 2 not in res.answers()
    assert res.status is not None and res.status["reason"] == "NonZeroExitCode"
    assert res.status["details"]["causes"][0]["message"] == "137"


async def test_fault_agent_hangs_on_tool_calls(sim: SimServer) -> None:
    sim.faults("gpu-node-001").exec_hang = "tools/call"
    res = await ws_exec(sim, "gpu-node-001", mcp_lines(HEALTH), limit_s=15)
    # The swallowed call is never answered; stdin EOF still ends the agent cleanly.
    assert list(res.answers()) == [1]
    sim.faults("gpu-node-001").exec_hang = "*"
    res = await ws_exec(sim, "gpu-node-001", mcp_lines(HEALTH), limit_s=15)
    assert res.answers() == {}


async def test_fault_agent_writes_garbage(sim: SimServer) -> None:
    faults = sim.faults("gpu-node-001")
    faults.exec_garbage = "prefix"
    res = await ws_exec(sim, "gpu-node-001", mcp_lines(HEALTH))
    assert len(res.answers()) == 2 and len(res.stdout_lines) > 2
    with pytest.raises(ValueError):
        json.loads(res.stdout_lines[0])
    faults.exec_garbage = "only"
    res = await ws_exec(sim, "gpu-node-001", mcp_lines(HEALTH))
    assert res.answers() == {} and res.stdout_lines


async def test_fault_version_skew_agent_lacks_a_tool(sim: SimServer) -> None:
    sim.update_agent("gpu-node-001", disabled_tools=["get_nvlink_topology"])
    lines = mcp_lines(("get_nvlink_topology", {}))
    lines += json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}) + "\n"
    res = await ws_exec(sim, "gpu-node-001", lines)
    answers = res.answers()
    tools = {t["name"] for t in answers[9]["result"]["tools"]}
    assert "get_nvlink_topology" not in tools and "get_gpu_health" in tools
    assert "error" in answers[2] or answers[2]["result"].get("isError")


async def test_in_process_sims_run_other_agent_modes_as_processes(tmp_path: Path) -> None:
    """In-process agents serve the MCP loop; `gpu-agent --version` (or a one-shot call)
    is the real command line, so it runs as a subprocess there too."""
    async with start_sim(nodes=2, in_process=True, workdir=tmp_path / "s") as sim:
        command = ("gpu-agent", "--version")
        res = await ws_exec(sim, "gpu-node-001", command=command, open_stdin=False)
        assert res.status == {"metadata": {}, "status": "Success"}
        assert res.channel(1).startswith(b"gpu-agent ")


PINNED = {
    "host_proc": True,
    "nodes": [{"name": "n1"}],
    "workloads": [
        {"name": "a", "namespace": "ml", "node": "n1", "gpus": 2, "visible_gpus": [2, 3],
         "gpu_processes": [2, 3]},
        {"name": "done", "namespace": "ml", "node": "n1", "gpus": 1, "gpu_processes": [5],
         "phase": "Failed", "state": "terminated", "exit_code": 1},
    ],
}  # fmt: skip


@pytest.mark.parametrize("in_process", [True, False])
async def test_pinned_devices_and_pod_processes_are_what_the_agent_sees(
    tmp_path: Path, in_process: bool
) -> None:
    async with start_sim(scenario=PINNED, in_process=in_process, workdir=tmp_path / "s") as sim:
        calls = (("get_gpu_inventory", {}), ("get_gpu_processes", {}))
        res = await ws_exec(sim, "n1", mcp_lines(*calls))
        pod = sim.cluster.pod("ml", "a")
        agent = sim.cluster.pod(sim.namespace, sim.agent_pod("n1") or "")
    assert res.status == {"metadata": {}, "status": "Success"}
    inventory, processes = _structured(res.answers()[2]), _structured(res.answers()[3])
    uuids = {g["index"]: g["uuid"] for g in inventory["gpus"]}  # type: ignore[attr-defined]
    assert pod is not None and agent is not None
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == f"{uuids[2]},{uuids[3]}"
    # The chart's hostProc.enabled, and the pod's processes mapped through that /proc.
    agent_env = {e["name"]: e.get("value") for e in agent["spec"]["containers"][0]["env"]}
    assert agent_env["GPU_AGENT_HOST_PROC"] == "/host/proc"
    assert processes["pod_mapping"]["enabled"] is True  # type: ignore[index]
    seen = {
        g["index"]: [p["pod"] for p in g["processes"]]
        for g in processes["gpus"]  # type: ignore[attr-defined]
    }
    container = pod["status"]["containerStatuses"][0]["containerID"].split("://")[1]
    mine = {"pod_uid": pod["metadata"]["uid"], "container_id": container}
    for index in (2, 3):
        (p,) = seen[index]
        assert {k: p[k] for k in mine} == mine, p
    assert all(seen[i] == [] for i in (0, 1, 4, 5, 6, 7))  # a finished pod runs nothing
