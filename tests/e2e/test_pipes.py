"""The CLI as a subprocess whose output is a pipe (``broker sweep | grep NODE``): with a
tiny COLUMNS and long node names, no line is wrapped, folded or truncated; ``-o yaml``;
``broker serve`` on a terminal says what it is and stops on the first Ctrl-C;
``broker explain`` fails when the API server is unreachable or refuses the credentials."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from broker.sim import SimServer, sim_in_thread

pytestmark = pytest.mark.e2e

LONG = "gpu-node-in-rack-17-row-b-zone-us-east-1a-with-a-long-name-{:03d}"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    scenario = {
        "cpu_nodes": 0,
        "defaults": {"gpu_count": 2},
        "nodes": [
            {"name": LONG.format(1), "agent": {"faults": [{"gpu": 1, "kind": "fell_off_bus"}]}},
            {"name": LONG.format(2)},
            {"name": LONG.format(3), "agent_pod": "pending"},
        ],
    }
    with sim_in_thread(nodes=3, scenario=scenario, in_process=True) as server:
        yield server


def broker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "40", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        env=env,
        capture_output=True,  # pipes: not a terminal
        text=True,
        timeout=timeout,
        check=False,
    )


def kc(sim: SimServer) -> list[str]:
    return ["--kubeconfig", str(sim.kubeconfig), "--timeout", "20"]


def line_of(text: str, needle: str) -> str:
    (line,) = [ln for ln in text.splitlines() if needle in ln]
    return line


def test_sweep_lines_survive_a_pipe(sim: SimServer) -> None:
    result = broker("sweep", *kc(sim))
    assert result.returncode == 2, result.stderr
    critical = line_of(result.stdout, LONG.format(1))  # grep finds the whole row
    assert "CRITICAL" in critical
    node = LONG.format(1)
    # The recommended command is never split across lines.
    assert f"kubectl cordon {node} && kubectl drain {node} --ignore-daemonsets" in critical
    pending = line_of(result.stdout, LONG.format(3))
    assert "not_ready" in pending and "Pending (ContainerCreating)" in pending


def test_nodes_and_doctor_lines_survive_a_pipe(sim: SimServer) -> None:
    nodes = broker("nodes", *kc(sim))
    assert nodes.returncode == 3
    assert "ContainerCreating" in line_of(nodes.stdout, LONG.format(3))
    wide = broker("nodes", "-o", "wide", *kc(sim))
    assert "NAMESPACE" in wide.stdout
    assert "gpu-diagnostics" in line_of(wide.stdout, LONG.format(2))
    doctor = broker("doctor", *kc(sim))
    assert doctor.returncode == 0, doctor.stdout
    assert "describe pod k8s-gpu-mcp-" in line_of(doctor.stdout, "To improve (chart)")


def test_yaml_output_is_the_json_answer(sim: SimServer) -> None:
    as_json = json.loads(broker("nodes", "-o", "json", *kc(sim)).stdout)
    as_yaml = yaml.safe_load(broker("nodes", "-o", "yaml", *kc(sim)).stdout)
    assert as_yaml == as_json
    assert as_yaml["summary"] == {"total": 3, "ready": 2, "not_ready": 1}


def test_explain_fails_when_the_cluster_cannot_be_asked(sim: SimServer, tmp_path: Path) -> None:
    ok = broker("explain", "no-such-pod", "-n", "default", *kc(sim))
    assert ok.returncode == 1 and "no-such-pod" in ok.stderr
    bad_token = sim.kubeconfig.read_text().replace(sim.token, "not-the-token")
    refused = tmp_path / "refused"
    refused.write_text(bad_token)
    denied = broker("explain", "some-pod", "-n", "default", "--kubeconfig", str(refused))
    assert denied.returncode == 1
    assert "rejected the credentials" in denied.stderr
    closed = tmp_path / "closed"
    closed.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    unreachable = broker("explain", "some-pod", "-n", "default", "--kubeconfig", str(closed))
    assert unreachable.returncode == 1
    assert "cannot reach the API server" in unreachable.stderr


def test_serve_on_a_terminal_says_what_it_is_and_stops_on_one_ctrl_c(sim: SimServer) -> None:
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "broker", "serve", "--kubeconfig", str(sim.kubeconfig)],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:
        os.close(terminal)
        try:
            assert proc.stderr is not None
            banner = proc.stderr.readline().decode()
            assert banner.startswith("broker serve: MCP server on stdio")
            assert '"command": "broker"' in banner and "Ctrl-C" in banner
            time.sleep(0.5)  # let it reach the stdin read
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 130
        finally:
            proc.kill()
            os.close(controller)
