"""The failure case set end to end: explain_failure through the real MCP client, the
broker, the simulated cluster and the real agent on the fake backend. Each pod of
tests/data/explain_cases_sim.yaml is named after its case in tests/data/explain_cases.yaml
and is held to that case's expected verdict, confidence, summary and next steps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from mcp.client._memory import InMemoryTransport
from mcp.client.session import ClientSession

from broker.fleet.context import BrokerContext
from broker.kube.config import ClusterConfig
from broker.server import build_server
from broker.sim import SimServer, start_sim
from tests.broker.explain_cases import CASES, calibration, check

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SCENARIO: dict[str, Any] = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "data" / "explain_cases_sim.yaml").read_text()
)
BY_ID = {c.id: c for c in CASES}
PODS = [w["name"] for w in SCENARIO["workloads"]]
NOT_IN_SIM = {"mig-node-lost-gpu-not-the-pods"}  # MIG on two GPUs: the sim has one


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimServer]:
    async with start_sim(
        scenario=SCENARIO, in_process=True, workdir=tmp_path_factory.mktemp("sim")
    ) as server:
        yield server


@asynccontextmanager
async def client(sim: SimServer) -> AsyncIterator[ClientSession]:
    config = ClusterConfig(kubeconfig=str(sim.kubeconfig))
    async with BrokerContext.open(config, call_timeout=30) as ctx:
        app = build_server(ctx)
        async with InMemoryTransport(app) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            yield s


async def test_the_sim_holds_every_case_it_can_express() -> None:
    assert set(PODS) <= set(BY_ID), set(PODS) - set(BY_ID)
    assert set(BY_ID) - set(PODS) == NOT_IN_SIM


@pytest.mark.timeout(300)
async def test_every_case_end_to_end(sim: SimServer) -> None:
    answers: dict[str, dict[str, Any]] = {}
    async with client(sim) as session:
        for pod in PODS:
            result = await session.call_tool("explain_failure", {"pod": pod, "namespace": "cases"})
            assert not result.is_error, (pod, result.content)
            assert isinstance(result.structured_content, dict)
            answers[pod] = result.structured_content
    wrong = []
    for pod, r in answers.items():
        for problem in check(BY_ID[pod], r):
            wrong.append(f"{pod} ({r['rule']}): {problem}")
    print(calibration([(BY_ID[p], a) for p, a in answers.items()]))
    assert wrong == [], "\n".join(wrong)
