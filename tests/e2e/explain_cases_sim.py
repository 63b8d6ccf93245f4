"""A failure case set end to end: its simulated cluster (a broker/sim scenario whose pods in
namespace "cases" are named after the cases), explain_failure on each of those pods through
the real MCP client, the broker, the sim and the real agent on the fake backend, and each
answer held to its case's expectations. Shared by tests/e2e/test_explain_cases*.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp.client._memory import InMemoryTransport
from mcp.client.session import ClientSession

from broker.fleet.context import BrokerContext
from broker.kube.config import ClusterConfig
from broker.server import build_server
from broker.sim import SimServer, start_sim
from tests.broker.explain_cases import Case, calibration, check

Obj = dict[str, Any]
DATA = Path(__file__).resolve().parents[1] / "data"
CASES_NAMESPACE = "cases"  # other namespaces hold pods a case needs beside its own


@dataclass(frozen=True)
class SimCaseSet:
    """A case set and its sim scenario (``DATA/scenario_file``); ``not_in_sim``: the ids of
    the cases the sim cannot express, each with the reason."""

    cases: list[Case]
    scenario_file: str
    not_in_sim: dict[str, str]

    @property
    def scenario(self) -> Obj:
        data: Obj = yaml.safe_load((DATA / self.scenario_file).read_text())
        return data

    @property
    def pods(self) -> list[str]:
        return [
            str(w["name"])
            for w in self.scenario["workloads"]
            if w.get("namespace") == CASES_NAMESPACE
        ]

    def coverage_problems(self) -> list[str]:
        """Pods that are no case, and cases neither in the sim nor declared not to be."""
        ids, pods = {c.id for c in self.cases}, set(self.pods)
        out = [f"pod {p} is no case of the set" for p in sorted(pods - ids)]
        out += [
            f"case {i} is missing from the sim" for i in sorted(ids - pods - set(self.not_in_sim))
        ]
        out += [
            f"case {i} is in the sim and in not_in_sim" for i in sorted(pods & set(self.not_in_sim))
        ]
        out += [f"not_in_sim names no case: {i}" for i in sorted(set(self.not_in_sim) - ids)]
        return out


@asynccontextmanager
async def sim_for(
    case_set: SimCaseSet, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SimServer]:
    async with start_sim(
        scenario=case_set.scenario, in_process=True, workdir=tmp_path_factory.mktemp("sim")
    ) as server:
        yield server


@asynccontextmanager
async def broker_client(sim: SimServer) -> AsyncIterator[ClientSession]:
    """The broker on the sim, an initialised MCP client session on it (in memory)."""
    config = ClusterConfig(kubeconfig=str(sim.kubeconfig))
    async with BrokerContext.open(config, call_timeout=30) as ctx:
        app = build_server(ctx)
        async with InMemoryTransport(app) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            yield s


async def explain_all(sim: SimServer, pods: Iterable[str]) -> dict[str, Obj]:
    """explain_failure's structured answer for each pod of namespace "cases"."""
    answers: dict[str, Obj] = {}
    async with broker_client(sim) as session:
        for pod in pods:
            args = {"pod": pod, "namespace": CASES_NAMESPACE}
            result = await session.call_tool("explain_failure", args)
            assert not result.is_error, (pod, result.content)
            assert isinstance(result.structured_content, dict)
            answers[pod] = result.structured_content
    return answers


def judge(case_set: SimCaseSet, answers: dict[str, Obj]) -> tuple[list[str], Obj]:
    """What is wrong with the answers (one line per problem), and the calibration
    (right verdicts overall and per stated confidence) as the unit tests report it."""
    by_id = {c.id: c for c in case_set.cases}
    wrong = [
        f"{pod} ({answer['rule']}): {problem}"
        for pod, answer in answers.items()
        for problem in check(by_id[pod], answer)
    ]
    return wrong, calibration([(by_id[pod], answer) for pod, answer in answers.items()])
