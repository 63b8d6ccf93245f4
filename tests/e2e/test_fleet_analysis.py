"""find_config_drift and find_stragglers end to end: a real MCP client against the broker's
server on a 200-node simulated cluster (agents in-process), outliers planted in the scenario."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
from mcp.client._memory import InMemoryTransport
from mcp.client.session import ClientSession

from broker.fleet.context import BrokerContext
from broker.kube.config import ClusterConfig
from broker.server import build_server
from broker.sim import SimServer, start_sim

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

JOB = "llm-pretrain-64"
JOB_NODES = [f"gpu-node-{i:03d}" for i in range(101, 165)]  # 64 nodes, one rank each
DEAD = "ddp-train"  # 8 ranks; rank 3 dies 40 s after XID 79 on its node, the rest on NCCL
DEAD_NODES = [f"gpu-node-{i:03d}" for i in range(170, 178)]
PT = "bert-pretrain"  # a Kubeflow PyTorchJob of 2 workers
PT_NODES = ["gpu-node-180", "gpu-node-181"]


def scenario() -> dict[str, Any]:
    workloads = [
        {
            "name": f"{JOB}-worker-{rank}",
            "namespace": "ml-research",
            "node": node,
            "gpus": 8,
            "owner_kind": "Job",
            "owner_name": JOB,
            "labels": {
                "batch.kubernetes.io/job-name": JOB,
                "batch.kubernetes.io/job-completion-index": str(rank),
            },
            "phase": "Running",
            "state": "running",
            "started_ago_s": 3600,
        }
        for rank, node in enumerate(JOB_NODES)
    ]
    for rank, node in enumerate(DEAD_NODES):
        first = rank == 3
        workloads.append(
            {
                "name": f"{DEAD}-{rank}",
                "namespace": "ml-research",
                "node": node,
                "gpus": 8,
                "owner_kind": "Job",
                "owner_name": DEAD,
                "labels": {"batch.kubernetes.io/job-name": DEAD,
                           "batch.kubernetes.io/job-completion-index": str(rank)},
                "phase": "Failed",
                "state": "terminated",
                "exit_code": 1,
                "reason": "Error",
                "message": "RuntimeError: CUDA error: unspecified launch failure" if first else
                f"torch.distributed.DistBackendError: [Rank {rank}] Watchdog caught collective "
                "operation timeout: WorkNCCL(SeqNum=88, OpType=ALLREDUCE) ran for 600000 ms",
                "started_ago_s": 3600,
                "finished_ago_s": 300 if first else 240 - rank,
            }
        )  # fmt: skip
    for rank, node in enumerate(PT_NODES):  # a PyTorchJob: rank 1 OOMs first, rank 0 on NCCL
        workloads.append(
            {
                "name": f"{PT}-worker-{rank}",
                "namespace": "ml-research",
                "node": node,
                "gpus": 8,
                "owner_kind": "PyTorchJob",
                "owner_name": PT,
                "labels": {"training.kubeflow.org/replica-index": str(rank)},
                "phase": "Failed",
                "state": "terminated",
                "exit_code": 137 if rank == 1 else 1,
                "reason": "OOMKilled" if rank == 1 else "Error",
                "message": "" if rank == 1 else "ncclRemoteError: remote process exited",
                "started_ago_s": 3600,
                "finished_ago_s": 900 if rank == 1 else 870,
            }
        )
    busy = [
        {"gpu": g, "pid": 1000 + g, "name": "python3", "used_memory_mib": 70000} for g in range(8)
    ]
    nodes = [
        {"name": "gpu-node-007", "driver_version": "570.86.15"},
        {"name": "gpu-node-015", "agent": {"faults": [{"gpu": 3, "kind": "pcie_link_degraded",
                                                        "gen": 4, "width": 8}]}},
        {"name": "gpu-node-011", "agent": {"faults": [{"gpu": 2, "kind": "power_cap",
                                                        "limit_w": 450}]}},
        {"name": "gpu-node-130", "agent": {"processes": busy,
                                            "faults": [{"gpu": 5, "kind": "thermal_throttle"}]}},
    ]  # fmt: skip
    nodes += [{"name": n, "agent": {"processes": busy}} for n in JOB_NODES if n != "gpu-node-130"]
    nodes += [{"name": n} for n in DEAD_NODES if n != DEAD_NODES[3]]
    nodes += [{"name": n} for n in PT_NODES]
    nodes.append({"name": DEAD_NODES[3], "agent": {"faults": [
        {"gpu": 2, "kind": "fell_off_bus", "ago_s": 340}]}})  # fmt: skip
    return {
        "defaults": {"product": "H100-80GB", "gpu_count": 8},
        "nodes": nodes,
        "workloads": workloads,
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimServer]:
    workdir = tmp_path_factory.mktemp("sim")
    async with start_sim(nodes=200, scenario=scenario(), in_process=True, workdir=workdir) as s:
        yield s


@asynccontextmanager
async def broker(sim: SimServer) -> AsyncIterator[tuple[ClientSession, dict[str, Any]]]:
    config = ClusterConfig(kubeconfig=str(sim.kubeconfig))
    async with BrokerContext.open(config, call_timeout=60) as ctx:
        app = build_server(ctx)
        async with InMemoryTransport(app) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            schemas = {t.name: t.output_schema for t in (await s.list_tools()).tools}
            yield s, schemas


async def call(
    session: tuple[ClientSession, dict[str, Any]], tool: str, **args: Any
) -> dict[str, Any]:
    client, schemas = session
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    jsonschema.validate(result.structured_content, schemas[tool])
    return result.structured_content


async def test_drift_names_the_driver_and_power_outliers(sim: SimServer) -> None:
    async with broker(sim) as session:
        answer = await call(session, "find_config_drift")
        assert answer["summary"]["nodes_compared"] == 200 and answer["unreachable"] == []
        found = {f["setting"]: f for f in answer["findings"]}
        assert set(found) == {"driver_version", "power_limit_w", "pcie_link_width"}, answer[
            "findings"
        ]
        driver = found["driver_version"]
        assert driver["majority"] == "575.57.08" and driver["majority_count"] == 199
        assert driver["outliers"] == [{"value": "570.86.15", "count": 1, "nodes": ["gpu-node-007"]}]
        assert found["power_limit_w"]["outliers"][0]["nodes"] == ["gpu-node-011"]
    pcie = found["pcie_link_width"]  # GPU 3 of gpu-node-015 trained at x8 of x16
    assert pcie["majority"] == 16
    assert pcie["outliers"] == [{"value": [8, 16], "count": 1, "nodes": ["gpu-node-015"]}]


async def test_stragglers_in_the_job_rank_the_hot_node_first(sim: SimServer) -> None:
    async with broker(sim) as session:
        answer = await call(session, "find_stragglers", job=JOB, namespace="ml-research")
        assert answer["summary"]["nodes_compared"] == 64
        ranked = [s["node"] for s in answer["stragglers"]]
        assert ranked == ["gpu-node-130"], answer["stragglers"]
        reasons = {w["reading"] for w in answer["stragglers"][0]["why"]}
        assert "throttle_reason" in reasons


async def test_no_false_stragglers_on_uniform_healthy_nodes(sim: SimServer) -> None:
    async with broker(sim) as session:
        uniform = [f"gpu-node-{i:03d}" for i in range(20, 100)]
        answer = await call(session, "find_stragglers", nodes=uniform)
        assert answer["summary"]["nodes_compared"] == len(uniform)
        assert answer["stragglers"] == []


async def test_job_errors_are_clear(sim: SimServer) -> None:
    async with broker(sim) as session:
        client, _ = session
        result = await client.call_tool("find_stragglers", {"job": JOB})
        assert result.is_error and "namespace" in result.content[0].text  # type: ignore[union-attr]
        result = await client.call_tool(
            "find_stragglers", {"job": "nope", "namespace": "ml-research"}
        )
        assert result.is_error and "no pod in namespace ml-research" in result.content[0].text  # type: ignore[union-attr]


async def test_explain_job_names_the_first_failure_and_the_cascade(sim: SimServer) -> None:
    async with broker(sim) as session:
        answer = await call(session, "explain_job", job=DEAD, namespace="ml-research")
    assert answer["job"]["kind"] == "Job" and answer["pods"] == {"total": 8, "failed": 8}
    first = answer["first_failure"]
    assert first["pod"] == f"{DEAD}-3" and first["rank"] == 3 and first["node"] == DEAD_NODES[3]
    assert answer["verdict"] == "hardware", answer["chain"]
    assert "rank 3" in answer["chain"][0] and DEAD_NODES[3] in answer["chain"][0]
    assert "7 other pod(s) failed afterwards" in answer["chain"][1]
    assert "7 of them with NCCL/collective timeouts" in answer["chain"][1]
    assert answer["verdicts"] == {"hardware": 1, "cascade": 7}


async def test_explain_job_for_a_running_job_says_none(sim: SimServer) -> None:
    async with broker(sim) as session:
        answer = await call(session, "explain_job", job=JOB, namespace="ml-research")
    assert answer["verdict"] == "none" and answer["first_failure"] is None
    assert answer["pods"] == {"total": 64, "failed": 0}


async def test_explain_job_for_a_pytorchjob(sim: SimServer) -> None:
    async with broker(sim) as session:
        answer = await call(session, "explain_job", job=PT, namespace="ml-research")
    assert answer["job"]["kind"].startswith("PyTorchJob")
    first = answer["first_failure"]
    assert (first["pod"], first["rank"], first["reason"]) == (f"{PT}-worker-1", 1, "OOMKilled")
    assert answer["verdict"] == "application" and "OOMKilled" in answer["chain"][0]
    assert "1 of them with NCCL/collective timeouts" in answer["chain"][1]
