"""``kubectl mcp ...`` through the real kubectl binary: kubectl finds the ``kubectl-mcp``
plugin on PATH and runs it against the simulated cluster from KUBECONFIG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from broker.sim import SimServer, sim_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.needs_kubectl]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with sim_in_thread(nodes=10, scenario=None, in_process=True) as server:
        yield server


@pytest.fixture
def plugin_path(tmp_path: Path, kubectl: Path) -> str:
    """PATH with this checkout's ``kubectl-mcp`` (as the console script runs it) and kubectl."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "kubectl-mcp"
    script.write_text(
        f"#!{sys.executable}\nfrom broker.cli.kubectl_plugin import main\nmain()\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return os.pathsep.join([str(bindir), str(kubectl.parent), "/usr/bin", "/bin"])


def kubectl_mcp(
    kubectl: Path, path: str, sim: SimServer, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": path,
        "KUBECONFIG": str(sim.kubeconfig),
        "HOME": os.environ.get("HOME", "/tmp"),
        "COLUMNS": "160",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    return subprocess.run(
        [str(kubectl), "mcp", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_console_script_is_declared() -> None:
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "kubectl-mcp"]
    assert script.value == "broker.cli.kubectl_plugin:main"


def test_kubectl_lists_the_plugin(kubectl: Path, plugin_path: str, sim: SimServer) -> None:
    listed = subprocess.run(
        [str(kubectl), "plugin", "list"],
        env={"PATH": plugin_path, "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "kubectl-mcp" in listed.stdout


def test_kubectl_mcp_diagnose(kubectl: Path, plugin_path: str, sim: SimServer) -> None:
    result = kubectl_mcp(kubectl, plugin_path, sim, "diagnose", "gpu-node-003")
    assert result.returncode == 2, result.stderr  # critical
    assert "GPU node gpu-node-003" in result.stdout
    assert "Row remapping failed on GPU 5" in result.stdout
    assert "INFOROM_DRAM_RETIREMENT_FAILURE" in result.stdout


def test_kubectl_mcp_sweep_and_nodes(kubectl: Path, plugin_path: str, sim: SimServer) -> None:
    sweep = kubectl_mcp(kubectl, plugin_path, sim, "sweep", "-o", "json")
    assert sweep.returncode == 2, sweep.stderr
    answer = json.loads(sweep.stdout)
    assert answer["summary"]["status"]["critical"] == 2
    nodes = kubectl_mcp(kubectl, plugin_path, sim, "nodes")
    assert nodes.returncode == 3  # two GPU nodes cannot be diagnosed
    assert "gpu-node-005" in nodes.stdout and "ContainerCreating" in nodes.stdout
    explain = kubectl_mcp(kubectl, plugin_path, sim, "explain", "llama3-finetune-x7k2p")
    assert explain.returncode == 0, explain.stderr
    assert "HARDWARE" in explain.stdout and "gpu-node-002" in explain.stdout
    helptext = kubectl_mcp(kubectl, plugin_path, sim, "--help")
    assert "kubectl mcp" in helptext.stdout and "diagnose" in helptext.stdout
    assert " sim " not in helptext.stdout  # the simulator is not part of the plugin


def test_kubectl_mcp_doctor(kubectl: Path, plugin_path: str, sim: SimServer) -> None:
    doctor = kubectl_mcp(kubectl, plugin_path, sim, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr  # warnings only
    assert "An agent over exec" in doctor.stdout
    wrong = kubectl_mcp(kubectl, plugin_path, sim, "doctor", "-n", "gpu-tools", "-o", "json")
    assert wrong.returncode == 1
    assert "-n gpu-diagnostics" in json.loads(wrong.stdout)["first_problem"]["fix"]
