"""Fixtures for end-to-end tests: the simulated cluster (helpers: tests/e2e/session.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.sim import SimServer, start_sim


@pytest.fixture
async def demo_sim(tmp_path: Path) -> AsyncIterator[SimServer]:
    """The demo scenario (10 GPU nodes, faults on most), agents served in-process."""
    async with start_sim(nodes=10, scenario=None, in_process=True, workdir=tmp_path / "sim") as s:
        yield s
