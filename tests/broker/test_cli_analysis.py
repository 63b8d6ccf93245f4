"""``broker drift``, ``broker stragglers`` and ``broker explain --job`` through the CLI on a
small simulated cluster: tables, -o json, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.cli.app import app
from broker.sim import SimServer, sim_in_thread

BUSY = [{"gpu": g, "pid": 100 + g, "name": "python3", "used_memory_mib": 1000} for g in range(8)]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    nodes: list[dict[str, Any]] = [{"name": f"gpu-node-00{i}", "agent": {"processes": BUSY}}
                                   for i in range(1, 7)]  # fmt: skip
    nodes[0]["driver_version"] = "570.86.15"
    nodes[1]["agent"] = {"processes": BUSY, "faults": [{"gpu": 1, "kind": "thermal_throttle"}]}
    scenario = {"defaults": {"product": "H100-80GB", "gpu_count": 8}, "nodes": nodes}
    with sim_in_thread(nodes=6, scenario=scenario, in_process=True) as server:
        yield server


def run(sim: SimServer, *args: str) -> Any:
    return CliRunner().invoke(
        app, [*args, "--kubeconfig", str(sim.kubeconfig)], env={"COLUMNS": "200"}
    )


def test_drift_table_and_json(sim: SimServer) -> None:
    table = run(sim, "drift")
    assert table.exit_code == 2, table.output  # drift found
    (row,) = [ln for ln in table.stdout.splitlines() if "driver_version" in ln]
    assert "575.57.08 (5)" in row and "570.86.15" in row and "gpu-node-001" in row
    doc = json.loads(run(sim, "drift", "-o", "json").stdout)
    assert [f["setting"] for f in doc["findings"]] == ["driver_version"]
    same = run(sim, "drift", "--node", "gpu-node-002", "--node", "gpu-node-003")
    assert same.exit_code == 0 and "no drift" in same.stdout


def test_stragglers_rank_the_throttled_node(sim: SimServer) -> None:
    result = run(sim, "stragglers", "-o", "json")
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert [s["node"] for s in doc["stragglers"]] == ["gpu-node-002"]
    table = run(sim, "stragglers")
    assert "gpu-node-002" in table.stdout and "throttle_reason" in table.stdout


def test_explain_job_needs_its_namespace(sim: SimServer) -> None:
    result = run(sim, "explain", "--job", "train")
    assert result.exit_code == 2 and "--job NAME with -n NAMESPACE" in result.output
    missing = run(sim, "explain", "--job", "train", "-n", "ml")
    assert missing.exit_code == 1 and "no pod in namespace ml belongs" in missing.stderr
