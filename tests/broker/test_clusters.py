"""Several clusters from one broker: two simulated clusters (and one that is down) in one
merged kubeconfig, reached per call with ``context`` / ``contexts``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from broker.cli.app import app
from broker.errors import ToolInputError
from broker.fleet.clusters import list_contexts
from broker.fleet.context import BrokerContext
from broker.fleet.operations import run_tool
from broker.kube.config import ClusterConfig, kubeconfig_contexts
from broker.sim import SimServer, sim_in_thread, start_sim

CRITICAL = {
    "nodes": [{"name": "gpu-node-001", "agent": {"faults": [{"gpu": 0, "kind": "fell_off_bus"}]}}]
}


def merged_kubeconfig(tmp: Path, clusters: dict[str, SimServer]) -> Path:
    """One kubeconfig naming each sim's own context after the cluster, plus ``down``:
    a cluster whose API server is not listening."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": []}
    merged["contexts"] = []
    for name, sim in clusters.items():
        doc = yaml.safe_load(sim.kubeconfig.read_text())
        context = next(c for c in doc["contexts"] if c["name"] == doc["current-context"])
        cluster = next(c for c in doc["clusters"] if c["name"] == context["context"]["cluster"])
        user = next(u for u in doc["users"] if u["name"] == context["context"]["user"])
        merged["clusters"].append({"name": name, "cluster": cluster["cluster"]})
        merged["users"].append({"name": name, "user": user["user"]})
        merged["contexts"].append(
            {"name": name, "context": {**context["context"], "cluster": name, "user": name}}
        )
    down = {**merged["clusters"][0]["cluster"], "server": "https://127.0.0.1:9"}
    merged["clusters"].append({"name": "down", "cluster": down})
    merged["contexts"].append({"name": "down", "context": {"cluster": "down", "user": "east"}})
    merged["current-context"] = "east"
    path = tmp / "kubeconfig"
    path.write_text(yaml.safe_dump(merged))
    return path


@pytest.fixture
async def two_clusters(tmp_path: Path) -> AsyncIterator[Path]:
    async with (
        start_sim(nodes=3, scenario={}, in_process=True, workdir=tmp_path / "east") as east,
        start_sim(nodes=2, scenario=CRITICAL, in_process=True, workdir=tmp_path / "west") as west,
    ):
        yield merged_kubeconfig(tmp_path, {"east": east, "west": west})


@pytest.mark.timeout(90)
async def test_contexts_are_listed_with_reachability(two_clusters: Path) -> None:
    config = ClusterConfig(kubeconfig=str(two_clusters))
    assert kubeconfig_contexts(config) == (["east", "west", "down"], "east")
    async with BrokerContext.open(config, call_timeout=10) as ctx:
        listed = await list_contexts(ctx, timeout_s=20)
    by_name = {c["context"]: c for c in listed["contexts"]}
    assert listed["current"] == "east" and by_name["east"]["current"]
    assert (by_name["east"]["gpu_nodes"], by_name["west"]["gpu_nodes"]) == (3, 2)
    assert by_name["east"]["reachable"] and by_name["west"]["reachable"]
    down = by_name["down"]
    assert not down["reachable"] and down["kind"] == "unreachable", down
    assert listed["summary"] == {"total": 3, "reachable": 2}


@pytest.mark.timeout(90)
async def test_one_call_sweeps_several_clusters_with_one_summary_each(
    two_clusters: Path,
) -> None:
    config = ClusterConfig(kubeconfig=str(two_clusters))
    async with BrokerContext.open(config, call_timeout=10) as ctx:
        both = await run_tool(ctx, "get_gpu_health", {"contexts": ["east", "west"]})
        west = await run_tool(ctx, "get_gpu_health", {"context": "west"})
        every = await run_tool(ctx, "get_gpu_health", {"contexts": ["*"]})
        named = await run_tool(
            ctx, "get_gpu_health", {"contexts": ["*"], "nodes": ["gpu-node-002"]}
        )
        with pytest.raises(ToolInputError, match="list_contexts"):
            await run_tool(ctx, "get_gpu_health", {"context": "nope"})
    assert both["summary"]["nodes"] == {"total": 5, "ok": 5, "failed": 0}
    assert both["summary"]["status"]["critical"] == 1
    assert [e["node"] for e in both["nodes"]] == ["west/gpu-node-001"]
    assert "east/gpu-node-001" in both["healthy"]
    clusters = {c["context"]: c for c in both["clusters"]}
    assert clusters["east"]["summary"]["nodes"]["total"] == 3
    assert clusters["west"]["summary"]["status"]["critical"] == 1
    # One context: that cluster alone, names as they are.
    assert west["summary"]["nodes"]["total"] == 2 and "clusters" not in west
    assert west["nodes"][0]["node"] == "gpu-node-001"
    # Every context: the cluster that is down says why, the others still answer.
    down = next(c for c in every["clusters"] if c["context"] == "down")
    assert down["error"]["kind"] == "unreachable" and "summary" not in down
    assert every["summary"]["nodes"]["total"] == 5
    # Node names pick that node in every cluster that has one.
    assert sorted(named["healthy"]) == ["east/gpu-node-002", "west/gpu-node-002"]


@pytest.mark.timeout(120)
def test_cli_sweeps_several_contexts_and_all_of_them(tmp_path: Path) -> None:
    with (
        sim_in_thread(nodes=3, scenario={}, in_process=True) as east,
        sim_in_thread(nodes=2, scenario=CRITICAL, in_process=True) as west,
    ):
        kubeconfig = str(merged_kubeconfig(tmp_path, {"east": east, "west": west}))
        common = ["--kubeconfig", kubeconfig, "--timeout", "10"]
        two = cli("sweep", *common, "--context", "east", "--context", "west", "-o", "json")
        one = cli("sweep", *common, "--context", "west", "-o", "json")
        every = cli("sweep", *common, "--all-contexts")
    assert two.exit_code == 2, two.output  # west/gpu-node-001 is critical
    doc = json.loads(two.stdout)
    assert [c["context"] for c in doc["clusters"]] == ["east", "west"]
    assert doc["summary"]["nodes"]["total"] == 5
    assert json.loads(one.stdout)["summary"]["nodes"]["total"] == 2
    assert every.exit_code == 2, every.output
    assert "west/gpu-node-001" in every.stdout
    assert "context down:" in every.stderr  # the cluster that is down says why


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
