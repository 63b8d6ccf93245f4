"""``broker doctor`` and the MCP tool ``check_setup`` on the simulated cluster: a ready
cluster passes; no chart, the chart in another namespace, RBAC denied, agent pods
pending, an agent seeing zero GPUs, Pod Security too strict, an unreachable API server
each fail with the fix for the first thing wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from broker.cli.app import app
from broker.fleet.context import BrokerContext
from broker.server import build_server
from broker.sim import Rule, SimServer, sim_in_thread, start_sim
from tests.broker.agents import sim_config
from tests.broker.test_server import connected

NS = "gpu-diagnostics"


def small(**defaults: Any) -> dict[str, Any]:
    return {"cpu_nodes": 1, "defaults": {"gpu_count": 2, **defaults}}


@pytest.fixture(scope="module")
def ready_sim() -> Iterator[SimServer]:
    with sim_in_thread(nodes=3, scenario=small(), in_process=True) as server:
        yield server


def doctor(sim: SimServer, *args: str) -> tuple[int, dict[str, Any], Any]:
    result = CliRunner().invoke(
        app, ["doctor", "-o", "json", "--kubeconfig", str(sim.kubeconfig), "--timeout", "20", *args]
    )
    return result.exit_code, json.loads(result.stdout), result


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in report["checks"] if c["check"] == name]
    return found


def test_a_ready_cluster_passes(ready_sim: SimServer) -> None:
    code, report, _ = doctor(ready_sim)
    assert code == 0, report
    assert report["ok"] is True and report["first_problem"] is None
    assert [c["check"] for c in report["checks"]] == [
        "cluster", "rbac", "gpu_nodes", "chart", "runtime_class", "agent", "pod_security",
    ]  # fmt: skip
    assert check(report, "gpu_nodes")["details"]["gpu_nodes"] == 3
    chart = check(report, "chart")
    assert chart["status"] == "ok" and "3 desired, 3 ready" in chart["summary"]
    # The sim's agent pods are the chart's defaults: the ring buffer only.
    assert chart["details"]["node_sources"] == {
        "kernel_log": "on", "journal": "off", "host_sysfs": "off", "host_proc": "off",
    }  # fmt: skip
    assert "node sources: kernel log on, journal off (hostJournal.enabled)" in chart["summary"]
    agent = check(report, "agent")
    assert agent["status"] == "ok" and "sees 2 GPU(s)" in agent["summary"]
    assert check(report, "rbac")["details"] == {"pods": True, "nodes": True, "exec": True}


def test_table_output_ends_with_the_verdict(ready_sim: SimServer) -> None:
    result = CliRunner().invoke(app, ["doctor", "--kubeconfig", str(ready_sim.kubeconfig)])
    assert result.exit_code == 0
    assert "✓" in result.stdout and "An agent over exec" in result.stdout
    assert result.stdout.rstrip().endswith("Ready: every check passed.")


def test_chart_is_read_from_the_daemonset_when_served(ready_sim: SimServer) -> None:
    _, report, _ = doctor(ready_sim)
    chart = check(report, "chart")
    assert chart["summary"].startswith(f"DaemonSet {NS}/")
    assert "not served" not in chart["summary"]


def test_chart_in_another_namespace_names_it(ready_sim: SimServer) -> None:
    code, report, _ = doctor(ready_sim, "-n", "gpu-tools")
    assert code == 1
    problem = report["first_problem"]
    assert problem["check"] == "chart"
    assert f"not installed in namespace gpu-tools, but in {NS}" in problem["summary"]
    assert f"-n {NS}" in problem["fix"]
    assert check(report, "agent")["status"] == "skip"


def test_rbac_denied_names_the_permission_with_the_same_context(ready_sim: SimServer) -> None:
    context = ready_sim.add_user("reader", [Rule(verbs=("get", "list", "watch"), resources=("*",))])
    code, report, _ = doctor(ready_sim, "--context", context)
    assert code == 1
    problem = report["first_problem"]
    assert problem["check"] == "rbac"
    assert f"create pods/exec in namespace {NS}" in problem["summary"]
    assert f"--context {context}" in problem["fix"]
    assert f"auth can-i create pods --subresource=exec -n {NS}" in problem["fix"]
    agent = check(report, "agent")  # the exec itself is refused too, and says so
    assert agent["status"] == "fail" and agent["details"]["kind"] == "rbac"


def test_unreachable_api_server_fails_the_first_check(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    result = CliRunner().invoke(
        app, ["doctor", "-o", "json", "--kubeconfig", str(kubeconfig), "--timeout", "2"]
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["first_problem"]["check"] == "cluster"
    assert "cannot reach the API server" in report["first_problem"]["summary"]
    assert {c["status"] for c in report["checks"][1:]} == {"skip"}
    missing = CliRunner().invoke(app, ["doctor", "--kubeconfig", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "no such file" in missing.stdout


@pytest.mark.parametrize(
    ("scenario", "first", "expected"),
    [
        ({**small(), "chart_installed": False}, "chart", "no agent pods at all"),
        (small(agent_pod="missing"), "chart", "0 desired, 0 ready; 2 GPU node(s) without"),
        (small(agent_pod="pending"), "chart", "not ready: 2 Pending: ContainerCreating"),
        (small(agent={"gpu_count": 0}), "agent", "sees 0 GPUs"),
    ],
    ids=["no-chart", "no-agent-pods", "agent-pods-pending", "zero-gpus"],
)
def test_broken_setups_name_the_first_problem(
    scenario: dict[str, Any], first: str, expected: str
) -> None:
    with sim_in_thread(nodes=2, scenario=scenario, in_process=True) as sim:
        code, report, _ = doctor(sim)
    assert code == 1
    problem = report["first_problem"]
    assert problem["check"] == first, report
    assert expected in problem["summary"]
    assert problem["fix"]
    if "Pending" in expected:
        assert "2 desired, 0 ready" in problem["summary"]
        assert "describe pod k8s-gpu-mcp-" in problem["fix"]
    if first == "agent":
        assert "NVIDIA_VISIBLE_DEVICES" in problem["fix"] and "gpu.mode=dra" in problem["fix"]
    if expected.startswith("no agent pods"):
        assert "helm install" in problem["fix"]


def test_pod_security_stricter_than_the_agent_needs(ready_sim: SimServer) -> None:
    namespace = ready_sim.cluster.namespace_object(NS)
    assert namespace is not None
    labels = namespace["metadata"]["labels"]
    labels["pod-security.kubernetes.io/enforce"] = "baseline"
    try:
        code, report, _ = doctor(ready_sim)
    finally:
        del labels["pod-security.kubernetes.io/enforce"]
    assert code == 1
    problem = report["first_problem"]
    assert problem["check"] == "pod_security"
    assert "enforces Pod Security 'baseline'" in problem["summary"]
    assert "pod-security.kubernetes.io/enforce=privileged" in problem["fix"]


async def test_check_setup_is_an_mcp_tool(tmp_path: Path) -> None:
    async with (
        start_sim(nodes=2, scenario=small(), in_process=True, workdir=tmp_path / "sim") as sim,
        BrokerContext.open(replace(sim_config(sim), namespace="gpu-tools")) as ctx,
        connected(build_server(ctx)) as session,
    ):
        tools = {t.name: t for t in (await session.list_tools()).tools}
        tool = tools["check_setup"]
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
        result = await session.call_tool("check_setup", {})
    assert not result.is_error
    report = result.structured_content
    assert report is not None and report["ok"] is False
    # Over MCP the fix speaks of the broker's configuration, not of CLI flags.
    assert "broker serve -n gpu-diagnostics" in report["first_problem"]["fix"]


def test_refused_credentials_fail_the_first_check(ready_sim: SimServer, tmp_path: Path) -> None:
    refused = tmp_path / "refused"
    refused.write_text(ready_sim.kubeconfig.read_text().replace(ready_sim.token, "wrong"))
    result = CliRunner().invoke(app, ["doctor", "-o", "yaml", "--kubeconfig", str(refused)])
    assert result.exit_code == 1
    report = yaml.safe_load(result.stdout)
    assert report["first_problem"]["check"] == "cluster"
    assert "rejected the credentials" in report["first_problem"]["summary"]
    assert "log in again" in report["first_problem"]["fix"]
