"""The failure case sets end to end: explain_failure through the real MCP client, the
broker, the simulated cluster and the real agent on the fake backend. Each pod of
tests/data/explain_cases_sim.yaml (and of explain_cases_blind_sim.yaml, the set written
blind to the rules) is named after its case in explain_cases.yaml (explain_cases_blind.yaml)
and is held to that case's expected verdict, confidence, summary and next steps; the
calibration is printed (pytest -s)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from broker.sim import SimServer
from tests.broker.explain_cases import BLIND_CASES, CASES
from tests.e2e.explain_cases_sim import SimCaseSet, explain_all, judge, sim_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CASE_SETS = {
    "first": SimCaseSet(
        CASES,
        "explain_cases_sim.yaml",
        not_in_sim={"mig-node-lost-gpu-not-the-pods": "MIG on two GPUs: the sim has one"},
    ),
    "blind": SimCaseSet(BLIND_CASES, "explain_cases_blind_sim.yaml", not_in_sim={}),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=sorted(CASE_SETS))
async def case_sim(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, SimServer]]:
    """One simulated cluster per case set, holding every case of it."""
    async with sim_for(CASE_SETS[request.param], tmp_path_factory) as server:
        yield request.param, server


@pytest.mark.parametrize("name", sorted(CASE_SETS))
async def test_the_sim_holds_every_case_it_can_express(name: str) -> None:
    assert CASE_SETS[name].coverage_problems() == []


@pytest.mark.timeout(300)
async def test_every_case_end_to_end(case_sim: tuple[str, SimServer]) -> None:
    name, sim = case_sim
    case_set = CASE_SETS[name]
    answers = await explain_all(sim, case_set.pods)
    wrong, report = judge(case_set, answers)
    print(f"{name} set, end to end:", report)
    assert wrong == [], "\n".join(wrong)
    if name == "first":  # the agent's NVML process list pinned the pod's MIG slice
        pinned = answers["mig-process-pins-the-slice-xid94-on-the-other-1g"]["evidence"]
        assert any("runs in GPU 0's MIG 1g.10gb GPU instance 1" in e["text"] for e in pinned)
