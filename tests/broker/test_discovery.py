"""Joining agent pods to GPU nodes: every GPU node reported once, with the reason when
it cannot be used (the API-server side is covered against the sim in test_exec_transport)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from broker.errors import ApiUnavailable
from broker.kube.config import KubeApi
from broker.kube.discovery import Discovery, build_targets, is_gpu_node, pod_problem
from broker.kube.retry import RetryPolicy
from broker.sim import Rule, SimServer
from tests.broker.agents import sim_config

NS = "gpu-diagnostics"


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    gpus: int = 0,
    ready: bool = True,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "status": {
            "capacity": {"nvidia.com/gpu": str(gpus)} if gpus else {},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(
    name: str,
    node_name: str | None,
    *,
    phase: str = "Running",
    ready: bool = True,
    waiting: str | None = None,
    created: str = "2026-11-01T00:00:00Z",
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-02T00:00:00Z"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if waiting:
        status["containerStatuses"] = [{"state": {"waiting": {"reason": waiting}}}]
    return {
        "metadata": meta,
        "spec": {"nodeName": node_name} if node_name else {},
        "status": status,
    }


def test_gpu_nodes_by_label_or_capacity() -> None:
    assert is_gpu_node(node("a", labels={"nvidia.com/gpu.present": "true"}))
    assert is_gpu_node(node("b", gpus=8))
    assert not is_gpu_node(node("c"))
    assert not is_gpu_node(node("d", labels={"nvidia.com/gpu.present": "false"}))


def test_ready_pod_becomes_a_ready_target_with_node_labels() -> None:
    labels = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "H100"}
    (target,) = build_targets([node("gpu-1", labels=labels)], [pod("agent-x", "gpu-1")], NS)
    assert target.node == "gpu-1" and target.pod == "agent-x" and target.namespace == NS
    assert target.ready and target.reason is None
    assert target.labels == labels


def test_gpu_node_without_agent_pod_is_reported_not_dropped() -> None:
    nodes = [node("gpu-1", gpus=8), node("gpu-2", gpus=8), node("cpu-1")]
    targets = build_targets(nodes, [pod("agent-1", "gpu-1")], NS)
    assert [t.node for t in targets] == ["gpu-1", "gpu-2"]  # the CPU node is not listed
    missing = targets[1]
    assert not missing.ready and missing.pod is None
    assert missing.reason is not None and "no agent pod" in missing.reason
    assert f"kubectl -n {NS} get daemonset" in missing.reason


def test_not_running_and_not_ready_pods_carry_the_reason() -> None:
    nodes = [node(f"g{i}", gpus=1) for i in range(4)]
    pods = [
        pod("p0", "g0", phase="Pending", ready=False, waiting="ImagePullBackOff"),
        pod("p1", "g1", ready=False, waiting="CrashLoopBackOff"),
        pod("p2", "g2", ready=False),
        pod("p3", "g3", deleting=True),
    ]
    reasons = {t.node: t.reason or "" for t in build_targets(nodes, pods, NS)}
    assert "p0 is Pending (ImagePullBackOff)" in reasons["g0"]
    assert "not Ready (CrashLoopBackOff)" in reasons["g1"]
    assert "p2 is Running but not Ready" in reasons["g2"]
    assert "p3 is terminating" in reasons["g3"]


def test_node_not_ready_makes_the_target_not_ready() -> None:
    (target,) = build_targets([node("g", gpus=1, ready=False)], [pod("p", "g")], NS)
    assert not target.ready and target.reason is not None and "NotReady" in target.reason


def test_a_usable_pod_wins_over_a_broken_one_on_the_same_node() -> None:
    pods = [
        pod("old", "g", ready=False, created="2026-10-01T00:00:00Z"),
        pod("new", "g", created="2026-11-01T00:00:00Z"),
        pod("newest-broken", "g", phase="Pending", ready=False, created="2026-11-02T00:00:00Z"),
    ]
    (target,) = build_targets([node("g", gpus=1)], pods, NS)
    assert target.pod == "new" and target.ready


def test_agent_pods_are_listed_even_without_node_access() -> None:
    targets = build_targets(None, [pod("a", "g1"), pod("b", None, phase="Pending")], NS)
    assert [(t.node, t.ready, t.labels) for t in targets] == [("g1", True, {})]


def test_unscheduled_daemonset_pod_is_matched_by_its_node_affinity() -> None:
    pending = pod("p", None, phase="Pending", ready=False)
    pending["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["g"]}]}
                ]
            }
        }
    }
    (target,) = build_targets([node("g", gpus=1)], [pending], NS)
    assert target.pod == "p" and not target.ready
    assert target.reason is not None and "p is Pending" in target.reason


def test_pod_problem_none_for_a_healthy_pod() -> None:
    assert pod_problem(pod("p", "g")) is None


# -- against the simulated API server -------------------------------------------------


@pytest.mark.e2e
async def test_discovery_lists_the_sim_and_caches(sim: SimServer) -> None:
    api = await KubeApi.open(sim_config(sim), {})
    try:
        discovery = Discovery(api, ttl_s=60)
        targets = await discovery.targets()
        assert [t.node for t in targets] == sim.nodes
        assert all(t.ready and t.pod == sim.agent_pod(t.node) for t in targets)
        assert all(t.labels.get("nvidia.com/gpu.present") == "true" for t in targets)
        listed = len([r for r in sim.requests if r[0] == "GET"])
        assert await discovery.targets() is targets  # served from cache
        assert len([r for r in sim.requests if r[0] == "GET"]) == listed
        sim.set_agent_pod(sim.nodes[0], "pending")
        fresh = await discovery.targets(refresh=True)
        assert not fresh[0].ready and fresh[0].reason is not None and "Pending" in fresh[0].reason
    finally:
        await api.aclose()


@pytest.mark.e2e
async def test_lists_are_read_in_pages(sim: SimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from broker.kube import discovery as module

    monkeypatch.setattr(module, "PAGE", 3)  # 4 GPU nodes (and CPU nodes): several pages
    api = await KubeApi.open(sim_config(sim), {})
    try:
        targets = await Discovery(api).targets()
    finally:
        await api.aclose()
    assert [t.node for t in targets] == sim.nodes
    assert all(t.ready and t.labels.get("nvidia.com/gpu.present") == "true" for t in targets)
    pages = [r for r in sim.requests if r[0] == "GET" and "continue=" in r[1]]
    assert pages, sim.requests


@pytest.mark.e2e
async def test_stale_list_is_served_when_a_routine_refresh_fails(sim: SimServer) -> None:
    api = await KubeApi.open(sim_config(sim), {})
    try:
        discovery = Discovery(api, ttl_s=0.01, retry=RetryPolicy(attempts=1))
        first = await discovery.targets()
        sim.faults(None).api_500 = -1  # the API server fails every list from now on
        await anyio.sleep(0.02)
        assert await discovery.targets() is first
        assert discovery.warnings and "stale" in discovery.warnings[0]
        with pytest.raises(ApiUnavailable, match="500"):
            await discovery.targets(refresh=True)  # an explicit refresh says so
    finally:
        await api.aclose()


@pytest.mark.e2e
async def test_without_node_access_agent_pods_still_list(sim: SimServer) -> None:
    context = sim.add_user(
        "pods-only", [Rule(verbs=("list",), resources=("pods",), api_groups=("",))]
    )
    api = await KubeApi.open(sim_config(sim, context), {})
    try:
        discovery = Discovery(api)
        targets = await discovery.targets()
    finally:
        await api.aclose()
    assert [t.node for t in targets] == sim.nodes
    assert all(t.labels == {} for t in targets)
    assert discovery.warnings and "`kubectl auth can-i list nodes`" in discovery.warnings[0]
