"""A second real client of the simulated cluster: the Go ``kubernetes-mcp-server``
(client-go, nobody here wrote it), driven by the real MCP SDK client over stdio.

Every one of its reading tools is called against a 50-GPU-node sim; each call must
get what a real cluster of this shape answers: the objects, or the error a real
cluster gives too (403 from RBAC, 404, no metrics-server, not OpenShift).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from broker.sim import SimServer, start_sim

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AGENT = "$AGENT"  # replaced by the agent pod on gpu-node-001
GPU_NODES = 50


@dataclass(frozen=True)
class Call:
    tool: str
    args: dict[str, Any]
    ok: bool  # False: a real cluster answers with an error too
    expect: str  # text the answer (or the error) must contain


CALLS: tuple[Call, ...] = (
    Call("configuration_contexts_list", {}, True, "sim-viewer"),
    Call("configuration_view", {"minified": True}, True, "current-context: sim"),
    Call("events_list", {}, True, "FailedScheduling"),
    Call("events_list", {"namespace": "ml-research", "fieldSelector": "type=Warning"}, True,
         "BackoffLimitExceeded"),
    Call("namespaces_list", {}, True, "gpu-diagnostics"),
    Call("nodes_log", {"name": "gpu-node-002", "query": "kubelet"}, True, " kubelet["),
    Call("nodes_log", {"name": "gpu-node-002", "query": "/kern.log"}, True,
         "GPU has fallen off the bus"),
    Call("nodes_stats_summary", {"name": "gpu-node-001"}, True, "llm-pretrain-worker-0"),
    Call("nodes_stats_summary", {"name": "gpu-node-001", "context": "sim-sre"}, False,
         'cannot get resource "nodes/proxy"'),
    Call("nodes_top", {}, False, "metrics API is not available"),
    Call("pods_get", {"namespace": "ml-research", "name": "llama3-finetune-x7k2p"}, True,
         "exitCode: 1"),
    Call("pods_get", {"namespace": "ml-research", "name": "nope"}, False, 'pods "nope" not found'),
    Call("pods_list", {"labelSelector": "app.kubernetes.io/component=agent"}, True,
         "k8s-gpu-mcp-"),
    Call("pods_list", {"fieldSelector": "status.phase=Pending"}, True, "llm-pretrain-big-0-p4v9c"),
    Call("pods_list_in_namespace", {"namespace": "gpu-diagnostics"}, True, "gpu-node-050"),
    Call("pods_log", {"namespace": "ml-research", "name": "llama3-finetune-x7k2p"}, True,
         "unspecified launch failure"),
    Call("pods_log", {"namespace": "data-eng", "name": "data-prep-6c9f7d8b4-h2m9x",
                      "previous": True}, True, "loading shard"),
    Call("pods_top", {}, False, "metrics API is not available"),
    Call("projects_list", {}, False, 'no matches for kind "Project"'),
    Call("resources_list", {"apiVersion": "v1", "kind": "Node",
                            "labelSelector": "nvidia.com/gpu.product=NVIDIA-L4"}, True,
         "gpu-node-006"),
    Call("resources_list", {"apiVersion": "apps/v1", "kind": "DaemonSet"}, True,
         "nvidia-device-plugin-daemonset"),
    Call("resources_get", {"apiVersion": "apps/v1", "kind": "DaemonSet",
                           "namespace": "gpu-diagnostics", "name": "k8s-gpu-mcp"}, True,
         "desiredNumberScheduled: 49"),
    Call("resources_list", {"apiVersion": "batch/v1", "kind": "Job", "namespace": "ml-research"},
         True, "llama3-finetune"),
    Call("resources_get", {"apiVersion": "batch/v1", "kind": "Job", "namespace": "ml-research",
                           "name": "llama3-finetune"}, True, "reason: BackoffLimitExceeded"),
    Call("resources_list", {"apiVersion": "batch/v1", "kind": "CronJob"}, True, "eval-nightly"),
    Call("resources_list", {"apiVersion": "apps/v1", "kind": "Deployment"}, True, "triton-llm"),
    Call("resources_list", {"apiVersion": "apps/v1", "kind": "ReplicaSet"}, True,
         "data-prep-6c9f7d8b4"),
    Call("resources_list", {"apiVersion": "apps/v1", "kind": "StatefulSet"}, True,
         "notebook-alice"),
    Call("resources_list", {"apiVersion": "v1", "kind": "Service"}, True, "triton-llm"),
    Call("resources_list", {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                            "namespace": "inference"}, True, "10.244."),
    Call("resources_list", {"apiVersion": "v1", "kind": "Secret", "namespace": "gpu-diagnostics"},
         True, "sh.helm.release.v1.k8s-gpu-mcp.v1"),
    Call("resources_list", {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "default"},
         True, "kube-root-ca.crt"),
    Call("resources_list", {"apiVersion": "v1", "kind": "ServiceAccount",
                            "namespace": "gpu-diagnostics"}, True, "k8s-gpu-mcp"),
    Call("resources_list", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "namespace": "kube-node-lease"}, True, "gpu-node-050"),
    Call("resources_get", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                           "namespace": "kube-node-lease", "name": "gpu-node-003"}, True,
         "holderIdentity: gpu-node-003"),
    Call("resources_list", {"apiVersion": "events.k8s.io/v1", "kind": "Event",
                            "namespace": "ml-research"}, True, "BackoffLimitExceeded"),
    Call("resources_list", {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass"}, True,
         "nvidia"),
    Call("resources_get", {"apiVersion": "v1", "kind": "Namespace", "name": "gpu-diagnostics"},
         True, "phase: Active"),
    Call("resources_list", {"apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetrics"},
         False, 'no matches for kind "NodeMetrics"'),
    Call("resources_list", {"apiVersion": "apps/v1", "kind": "DaemonSet",
                            "context": "sim-sre"}, False, 'cannot list resource "daemonsets"'),
    Call("helm_list", {"all_namespaces": True}, True, "k8s-gpu-mcp"),
    Call("pods_exec", {"namespace": "gpu-diagnostics", "name": AGENT,
                       "command": ["gpu-agent", "--version"]}, True, "gpu-agent 0."),
    Call("pods_exec", {"namespace": "gpu-diagnostics", "name": AGENT,
                       "command": ["sh", "-c", "exec sleep 0.1"]}, True, ""),
    Call("pods_exec", {"namespace": "gpu-diagnostics", "name": AGENT, "command": ["nvtop"]},
         False, "executable file not found in $PATH"),
    Call("pods_exec", {"namespace": "gpu-diagnostics", "name": AGENT,
                       "command": ["gpu-agent", "--version"], "context": "sim-viewer"}, False,
         'cannot create resource "pods/exec"'),
)  # fmt: skip


@asynccontextmanager
async def mcp_server(binary: Path, sim: SimServer, home: Path) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=str(binary),
        args=["--kubeconfig", str(sim.kubeconfig), "--toolsets", "core,config,helm"],
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "")},
    )
    errlog = (home / "server.log").open("w")  # noqa: ASYNC230 - opened once, before any I/O
    try:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session
    finally:
        errlog.close()


async def call(session: ClientSession, c: Call, agent: str) -> tuple[bool, str]:
    """(answered without error, the text) for one call."""
    args = {k: (agent if v == AGENT else v) for k, v in c.args.items()}
    result = await session.call_tool(c.tool, args)
    text = "\n".join(getattr(part, "text", "") for part in result.content)
    return not result.is_error, text


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimServer]:
    async with start_sim(nodes=GPU_NODES, workdir=tmp_path / "sim") as server:
        yield server


async def test_every_reading_tool_answers_as_a_real_cluster_would(
    kubernetes_mcp_server: Path, sim: SimServer, tmp_path: Path
) -> None:
    agent = sim.agent_pod("gpu-node-001")
    assert agent is not None
    async with mcp_server(kubernetes_mcp_server, sim, tmp_path) as session:
        tools = (await session.list_tools()).tools
        reading = {t.name for t in tools if t.annotations and t.annotations.read_only_hint}
        assert reading <= {c.tool for c in CALLS}, f"reading tools not covered: {reading}"
        wrong = []
        for c in CALLS:
            answered, text = await call(session, c, agent)
            if answered != c.ok or c.expect not in text:
                wrong.append(f"{c.tool} {json.dumps(c.args)}: {'ok' if answered else 'error'}: "
                             f"{text[:300]}")  # fmt: skip
    assert not wrong, "\n".join(wrong)


def _agent_has_one_shot_mode() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "agent", "--backend", "fake", "call", "get_gpu_health"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return probe.returncode == 0


async def test_pods_exec_runs_the_agents_one_shot_mode(
    kubernetes_mcp_server: Path, sim: SimServer, tmp_path: Path
) -> None:
    """A generic Kubernetes MCP server uses the agent through plain exec (no stdin)."""
    if not _agent_has_one_shot_mode():
        pytest.skip("this tree's agent has no `gpu-agent call TOOL` mode yet (issue 11, item 8)")
    agent = sim.agent_pod("gpu-node-002")
    assert agent is not None
    async with mcp_server(kubernetes_mcp_server, sim, tmp_path) as session:
        answered, text = await call(
            session,
            Call("pods_exec", {"namespace": "gpu-diagnostics", "name": agent,
                               "command": ["gpu-agent", "call", "get_gpu_health"]}, True, ""),
            agent,
        )  # fmt: skip
    assert answered, text
    health = json.loads(text)
    assert health["status"] in ("degraded", "critical")  # GPU 3 fell off the bus
