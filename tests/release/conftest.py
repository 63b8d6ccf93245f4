"""Fixtures for the release checks: the zipapp builder, the Python the zipapp targets,
and helm with a private home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.agent.helpers import fake_nvml_lib  # noqa: F401  (a fixture, shared)
from tests.chart.helmchart import Chart
from tests.release.scripts import builder

__all__ = ["fake_nvml_lib"]


@pytest.fixture(scope="session")
def target_python() -> str:
    """The Python the zipapp's bytecode is for (3.13, as in the chart's image)."""
    try:
        return str(builder.find_python())
    except builder.BuildError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def chart(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Chart:
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),  # never contacted: client-side only
    }
    return Chart(helm=helm, env=env)
