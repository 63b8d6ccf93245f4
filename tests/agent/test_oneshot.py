"""One-shot mode: ``gpu-agent call TOOL [JSON]`` and ``gpu-agent tools``, through the
real process (stdin closed, as under ``kubectl exec`` without ``-i``) and through real
kubectl against the simulated cluster."""

from __future__ import annotations

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
from tests.agent.helpers import AGENT, ROOT

SCHEMAS = {t["name"]: t["outputSchema"] for t in TOOL_DEFINITIONS}


def agent(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("tool", TOOL_NAMES)
def test_call_prints_the_tools_json_and_exits_0(tool: str) -> None:
    done = agent("--backend", "fake", "call", tool)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1  # one JSON document, one line
    result = json.loads(done.stdout)
    jsonschema.validate(result, SCHEMAS[tool])
    assert result["node"]["backend"] == "fake"


def test_call_takes_arguments_and_options_after_the_command() -> None:
    done = agent("call", "analyze_xid_errors", '{"since_minutes": 525600}', "--backend", "fake")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["window"]["since_minutes"] == 525600


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["call", "nope"], 2, "unknown tool 'nope'"),
        (["call"], 2, "call needs a tool name"),
        (["call", "get_gpu_health", "[60]"], 2, "must be a JSON object"),
        (["call", "get_gpu_health", "{oops"], 2, "must be a JSON object"),
        (["call", "get_gpu_health", "{}", "extra"], 2, "at most one JSON argument"),
        (["call", "get_gpu_health", '{"since_minutes": -1}'], 2, "must be > 0"),
        (["call", "get_gpu_inventory", '{"verbose": true}'], 2, "unknown property 'verbose'"),
        (["tools", "x"], 2, "tools takes no arguments"),
    ],
)
def test_usage_problems_exit_2_with_the_fix_on_stderr(
    args: list[str], code: int, says: str
) -> None:
    done = agent("--backend", "fake", *args)
    assert done.returncode == code, done.stderr
    assert done.stdout == ""
    assert says in done.stderr
    if "call" in args and "must be" not in says and "property" not in says:
        assert "get_gpu_health" in done.stderr  # the tools that exist are listed


def test_a_tool_that_fails_exits_1_with_its_message() -> None:
    done = agent("--backend", "nvml", "call", "get_gpu_health")  # no libnvidia-ml here
    assert done.returncode == 1
    assert done.stdout == ""
    assert "get_gpu_health failed" in done.stderr and "runtimeClassName" in done.stderr


def test_a_stuck_tool_is_bounded_by_the_call_timeout(
    scenario: Callable[[dict[str, Any]], str],
) -> None:
    slow = scenario({"faults": [{"gpu": 0, "kind": "slow_nvml", "seconds": 30}]})
    started = time.monotonic()
    done = agent("--backend", "fake", "--scenario", slow, "--call-timeout", "0.5",
                 "call", "get_gpu_processes")  # fmt: skip
    assert time.monotonic() - started < 10
    assert done.returncode == 1 and "did not finish within 0.5 s" in done.stderr


@pytest.mark.parametrize("args", [["tools"], ["call", "--list"]])
def test_tools_lists_every_tool(args: list[str]) -> None:
    done = agent(*args)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == list(TOOL_NAMES)


def test_version() -> None:
    done = agent("--version")
    assert (done.returncode, done.stdout) == (0, "gpu-agent 0.1.0\n")


@pytest.mark.e2e
@pytest.mark.needs_kubectl
def test_plain_kubectl_exec_without_stdin(kubectl: Path, tmp_path: Path) -> None:
    """`kubectl exec POD -- gpu-agent call get_gpu_health`: no -i, the JSON on stdout."""
    from broker.sim import sim_in_thread

    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": ""}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    with sim_in_thread(nodes=12, workdir=tmp_path / "sim") as sim:
        pod = sim.agent_pod("gpu-node-007")
        assert pod is not None

        def kubectl_exec(*args: str) -> subprocess.CompletedProcess[str]:
            argv = [str(kubectl), "--kubeconfig", str(sim.kubeconfig), "exec", "-n"]
            return subprocess.run(
                [*argv, "gpu-diagnostics", pod, "--", "gpu-agent", *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=False,
            )

        done = kubectl_exec("call", "get_gpu_health")
        assert done.returncode == 0, done.stderr
        health = json.loads(done.stdout)
        jsonschema.validate(health, SCHEMAS["get_gpu_health"])
        assert health["node"]["name"] == "gpu-node-007"
        done = kubectl_exec("call", "nope")
        assert done.returncode == 2 and "command terminated with exit code 2" in done.stderr
        assert "unknown tool 'nope'" in done.stderr


def test_run_command_serves_the_simulated_clusters_in_process_exec() -> None:
    from agent.app import run_command

    assert run_command(["--backend", "fake"]) is None  # the MCP server: create_session
    code, out, err = run_command(["--backend", "fake", "call", "get_gpu_inventory"]) or (
        9,
        b"",
        b"",
    )
    assert (code, err) == (0, b"")
    assert len(json.loads(out)["gpus"]) == 8
    code, out, err = run_command(["--backend", "fake", "call", "nope"]) or (9, b"", b"")
    assert (code, out) == (2, b"") and b"unknown tool 'nope'" in err
    code, out, err = run_command(["--bogus", "call", "get_gpu_health"]) or (9, b"", b"")
    assert code == 2 and b"unrecognized arguments" in err
    code, out, _ = run_command(["tools"]) or (9, b"", b"")
    assert code == 0 and out.decode().split()[0] == "get_gpu_inventory"
