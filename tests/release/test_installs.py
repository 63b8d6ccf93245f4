"""What a user types after installing: every console script says its version, and the demo's
closing hint names a `broker` that works from the user's own shell."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from agent import __version__
from broker.cli import demo
from tests.release.scripts import ROOT

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("script", "name"),
    [("broker", "broker"), ("kubectl-mcp", "kubectl mcp"), ("gpu-agent", "gpu-agent")],
)
def test_console_scripts_print_their_version(script: str, name: str) -> None:
    done = subprocess.run([BIN / script, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{name} {__version__}"


def test_demo_hint_works_as_printed_without_the_venv_on_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    command = demo._broker_command()
    if command == "broker":
        pytest.skip("this Python's scripts are on PATH already (not a checkout's venv)")
    # `make demo` has the venv on PATH; the user's shell afterwards does not.
    done = subprocess.run(
        f"{shlex.quote(command)} --version",
        shell=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"broker {__version__}"


def test_demo_hint_is_absolute_outside_the_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    command = demo._broker_command()
    assert command == "broker" or Path(command).is_absolute()
