"""Fixtures for the simulated cluster's tests (defined in tests/broker/sim/helpers.py)."""

from tests.broker.sim.helpers import (  # noqa: F401 - fixtures, found by pytest here
    api,
    run_kubectl,
    sim,
    threaded_sim,
)
