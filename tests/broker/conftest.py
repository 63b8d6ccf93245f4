"""Fixtures for the broker tests (helpers they use live in tests/broker/agents.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker.sim import SimServer, start_sim
from tests.broker.agents import LocalAgents


@pytest.fixture
def local_agents(tmp_path: Path) -> Iterator[LocalAgents]:
    with open(tmp_path / "agents.stderr", "w") as errlog:
        yield LocalAgents(tmp_path, errlog)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimServer]:
    """Four healthy GPU nodes; each exec served by the agent's core in-process."""
    async with start_sim(nodes=4, scenario={}, in_process=True, workdir=tmp_path / "sim") as server:
        yield server
