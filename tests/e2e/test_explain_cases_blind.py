"""The blind failure case set end to end (issue 12: every case passes through the broker on
the simulated cluster): each pod of tests/data/explain_cases_blind_sim.yaml is named after
its case in tests/data/explain_cases_blind.yaml and held to that case's expected verdict,
confidence, summary and next steps; the calibration is printed (pytest -s) as the unit
test tests/broker/test_explain_cases_blind.py prints it for the pure engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from broker.sim import SimServer
from tests.broker.explain_cases import BLIND_CASES
from tests.e2e.explain_cases_sim import SimCaseSet, explain_all, judge, sim_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CASE_SET = SimCaseSet(BLIND_CASES, "explain_cases_blind_sim.yaml", not_in_sim={})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimServer]:
    async with sim_for(CASE_SET, tmp_path_factory) as server:
        yield server


async def test_the_sim_holds_every_case_it_can_express() -> None:
    assert CASE_SET.coverage_problems() == []


@pytest.mark.timeout(300)
async def test_every_blind_case_end_to_end(sim: SimServer) -> None:
    wrong, report = judge(CASE_SET, await explain_all(sim, CASE_SET.pods))
    print("blind set, end to end:", report)
    assert wrong == [], "\n".join(wrong)
