"""broker.cli.app: the commands against the simulated cluster (demo scenario), through
typer's runner: output, JSON, exit codes, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from broker.cli.app import app
from broker.sim import SimServer, sim_in_thread


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with sim_in_thread(nodes=10, scenario=None, in_process=True) as server:
        yield server


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def kc(sim: SimServer) -> list[str]:
    return ["--kubeconfig", str(sim.kubeconfig), "--timeout", "20"]


def test_help_texts_name_the_commands_and_exit_codes() -> None:
    top = run("--help")
    assert top.exit_code == 0
    for command in ("serve", "nodes", "sweep", "diagnose", "explain", "doctor", "sim"):
        assert command in top.output
    doctor = run("doctor", "--help")
    assert "Exit codes" in doctor.output and "check_setup" in doctor.output
    assert "yaml" in run("nodes", "--help").output
    sweep = run("sweep", "--help")
    assert "Exit codes" in sweep.output and "critical" in sweep.output
    assert "--kubeconfig" in sweep.output and "--namespace" in sweep.output
    serve = run("serve", "--help")
    assert "K8S_GPU_MCP_TOKEN" in serve.output and "--allowed-host" in serve.output


def test_nodes(sim: SimServer) -> None:
    table = run("nodes", *kc(sim))
    assert table.exit_code == 3, table.output  # gpu-node-005/006 cannot be diagnosed
    assert "gpu-node-006" in table.output and "no agent pod" in table.output
    doc = json.loads(run("nodes", "-o", "json", *kc(sim)).stdout)
    assert doc["summary"] == {"total": 10, "ready": 8, "not_ready": 2}
    t4 = json.loads(run("nodes", "-o", "json", "-l", "nvidia.com/gpu.count=4", *kc(sim)).stdout)
    assert sorted(n["node"] for n in t4["not_ready"]) == ["gpu-node-006"]
    assert [g["nodes"] for g in t4["ready"]] == [["gpu-node-010"]]


def test_sweep_table_and_exit_code_when_a_node_is_critical(sim: SimServer) -> None:
    result = run("sweep", *kc(sim))
    assert result.exit_code == 2, result.output
    out = result.output
    # Worst first: critical nodes above degraded above warning, healthy collapsed last.
    order = [out.index(n) for n in ("gpu-node-003", "gpu-node-004", "gpu-node-009", "2 nodes")]
    assert order == sorted(order)
    assert "CRITICAL" in out and "gpu-node-005" in out and "not_ready" in out


def test_sweep_json_is_the_mcp_answer(sim: SimServer) -> None:
    result = run("sweep", "-o", "json", *kc(sim))
    assert result.exit_code == 2
    answer = json.loads(result.stdout)
    assert answer["tool"] == "get_gpu_health"
    assert answer["summary"]["status"] == {
        "critical": 2,
        "degraded": 2,
        "warning": 2,
        "healthy": 2,
    }
    assert [e["node"] for e in answer["nodes"][:2]] == ["gpu-node-003", "gpu-node-002"]
    unreachable = {n for u in answer["summary"]["unreachable"] for n in u["nodes"]}
    assert unreachable == {"gpu-node-005", "gpu-node-006"}


def test_sweep_exit_codes_follow_the_worst_node(sim: SimServer) -> None:
    a100 = run("sweep", "-l", "nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB", *kc(sim))
    assert a100.exit_code == 0, a100.output  # healthy + warning
    pending = run("sweep", "--node", "gpu-node-001", "--node", "gpu-node-005", *kc(sim))
    assert pending.exit_code == 3, pending.output


def test_diagnose(sim: SimServer) -> None:
    critical = run("diagnose", "gpu-node-002", *kc(sim))
    assert critical.exit_code == 2, critical.output
    assert "GPU node gpu-node-002" in critical.output
    assert "fallen off the bus" in critical.output
    assert "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS" in critical.output  # the XID table
    pending = run("diagnose", "gpu-node-005", *kc(sim))
    assert pending.exit_code == 3
    assert "Could not read" in pending.output and "ContainerCreating" in pending.output
    doc = json.loads(run("diagnose", "gpu-node-009", "-o", "json", *kc(sim)).stdout)
    assert doc["status"] == "warning"
    assert set(doc["results"]) == {
        "get_gpu_health",
        "analyze_xid_errors",
        "get_gpu_inventory",
        "get_gpu_processes",
        "get_nvlink_topology",
    }


def test_explain(sim: SimServer) -> None:
    result = run("explain", "mixtral-sft-k8d2m", "-n", "ml-research", *kc(sim))
    assert result.exit_code == 0, result.output
    assert "HARDWARE" in result.output and "XID 48" in result.output
    missing = run("explain", "no-such-pod", "-n", "ml-research", *kc(sim))
    assert missing.exit_code == 1 and "no-such-pod" in missing.stderr


def test_errors_are_messages_with_exit_code_1(sim: SimServer, tmp_path: Any) -> None:
    unknown = run("diagnose", "gpu-node-999", *kc(sim))
    assert unknown.exit_code == 1
    assert "unknown GPU node(s): gpu-node-999" in unknown.stderr
    typo = run("diagnose", "gpu-node-0003", *kc(sim))
    assert typo.exit_code == 1 and "Did you mean gpu-node-003?" in typo.stderr
    selector = run("sweep", "-l", "a in (b", *kc(sim))
    assert selector.exit_code == 1 and "invalid node_selector" in selector.stderr
    missing = run("sweep", "--kubeconfig", str(tmp_path / "nope"))
    assert missing.exit_code == 1 and "no such file" in missing.stderr
    context = run("nodes", *kc(sim), "--context", "nope")
    assert context.exit_code == 1 and "context 'nope' is not in the kubeconfig" in context.stderr
    viewer = run(
        "sweep", "--node", "gpu-node-001", "-o", "json", "--context", "sim-viewer", *kc(sim)
    )
    assert viewer.exit_code == 3  # RBAC: the viewer may not exec; the node says why
    (denied,) = json.loads(viewer.stdout)["summary"]["unreachable"]
    assert denied["kind"] == "rbac" and "pods/exec" in denied["reason"]


def test_serve_refuses_a_public_address_without_a_token() -> None:
    result = run("serve", "--transport", "http", "--host", "0.0.0.0")
    assert result.exit_code == 1
    assert "needs a bearer token" in result.stderr


def test_nodes_failing_alike_are_one_row_with_the_fix(sim: SimServer) -> None:
    sweep = run("sweep", "-n", "gpu-tools", *kc(sim))
    assert sweep.exit_code == 3, sweep.output
    lines = sweep.stdout.splitlines()
    (row,) = [ln for ln in lines if "10 nodes" in ln]
    assert "no agent pod on this GPU node in namespace gpu-tools" in row
    assert "no agent pods at all: is the chart installed" in row
    assert not [ln for ln in lines if "gpu-node-004" in ln and "10 nodes" not in ln]
    nodes = run("nodes", "-n", "gpu-tools", *kc(sim))
    assert nodes.exit_code == 3
    assert sum("no agent pods at all" in ln for ln in nodes.stdout.splitlines()) == 1
    wide = run("nodes", "-n", "gpu-tools", "-o", "wide", *kc(sim))
    assert sum("gpu-node-0" in ln for ln in wide.stdout.splitlines()) == 10  # one row each
    doc = json.loads(run("sweep", "-n", "gpu-tools", "-o", "json", *kc(sim)).stdout)
    (cause,) = doc["summary"]["unreachable"]
    assert cause["count"] == 10 and "broker doctor" in cause["fix"]
