"""Fixtures for the agent tests (defined with their helpers in tests/agent/helpers.py)."""

from tests.agent.helpers import (  # noqa: F401 - fixtures, found by pytest here
    fake_nvml_lib,
    fake_wire,
    scenario,
    wire,
)
