"""Fixtures for the Helm chart tests: the real helm binary, run hermetically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chart.helmchart import Chart


@pytest.fixture(scope="session")
def chart(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Chart:
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        # No cluster is ever contacted: every command here is client-side.
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    return Chart(helm=helm, env=env)
