"""A representative subset of the failure case set end to end: explain_failure through
the real MCP client, the broker, the simulated cluster and the real agent on the fake
backend (tests/data/explain_cases_sim.yaml). Each expected answer names its case in
tests/data/explain_cases.yaml, which the pure engine is held to in full."""

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
from tests.broker.explain_cases import CASES

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

DATA = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "data" / "explain_cases_sim.yaml").read_text()
)
EXPECT: dict[str, dict[str, Any]] = DATA["expect"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimServer]:
    async with start_sim(
        scenario=DATA["scenario"], in_process=True, workdir=tmp_path_factory.mktemp("sim")
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


async def test_every_sim_case_names_a_case_of_the_set() -> None:
    known = {c.id: c for c in CASES}
    for pod, want in EXPECT.items():
        case = known[want["case"]]
        assert (want["verdict"], want["confidence"]) == (
            case.expect["verdict"],
            case.expect["confidence"],
        ), pod


@pytest.mark.timeout(300)
async def test_sim_cases(sim: SimServer) -> None:
    wrong = []
    levels: dict[str, list[int]] = {}
    answers = {}
    rules: dict[str, str] = {}
    async with client(sim) as session:
        for pod in EXPECT:
            args = {"pod": pod, "namespace": "cases"}
            answers[pod] = await session.call_tool("explain_failure", args)
    for pod, want in EXPECT.items():
        result = answers[pod]
        assert not result.is_error, result.content
        r = result.structured_content
        assert isinstance(r, dict)
        commands = " | ".join(s["command"] for s in r["next_steps"])
        ok = (r["verdict"], r["confidence"]) == (want["verdict"], want["confidence"])
        ok = ok and all(t in commands for t in want.get("steps", []))
        ok = ok and not any(t in commands for t in want.get("no_steps", []))
        rules[pod] = r["rule"]
        bucket = levels.setdefault(r["confidence"], [0, 0])
        bucket[0] += r["verdict"] == want["verdict"]
        bucket[1] += 1
        if not ok:
            wrong.append(f"{pod}: {r['verdict']}/{r['confidence']} ({r['rule']}): {r['summary']}")
    print({k: f"{v[0]}/{v[1]}" for k, v in levels.items()}, rules)
    assert wrong == []
