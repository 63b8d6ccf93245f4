"""`helm lint --strict` passes on the default values and on every ci/*-values.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.helmchart import CHART, CI_FILES, Chart, kube_version_of

pytestmark = pytest.mark.needs_helm


def test_there_is_a_ci_values_file_per_gpu_mode() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    modes = schema["properties"]["gpu"]["properties"]["mode"]["enum"]
    covered = {
        p.read_text().split("mode:", 1)[1].split()[0] for p in CI_FILES if "mode:" in p.read_text()
    }
    assert set(modes) <= covered, f"no ci/*-values.yaml exercises {set(modes) - covered}"


def test_lint_default_values(chart: Chart) -> None:
    done = chart.run("lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("values", CI_FILES, ids=lambda p: p.name)
def test_lint_ci_values(chart: Chart, values: Path) -> None:
    kube = kube_version_of(values)
    done = chart.run("lint", "--strict", str(CHART), "-f", str(values), "--kube-version", kube)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout
