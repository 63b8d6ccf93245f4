"""Fixtures shared by every test package: where the real binaries are."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"


def _binary(name: str) -> Path | None:
    local = TOOLS_BIN / name
    if local.exists() and os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    return Path(found) if found else None


def _require(name: str) -> Path:
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"the shipped {name} is an x86-64 binary; this machine is {platform.machine()}")
    path = _binary(name)
    if path is None:
        pytest.skip(f"{name} not found: run `make tools` to fetch it into .tools/bin")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def kubectl() -> Path:
    """The real kubectl binary (fetched by `make tools`)."""
    return _require("kubectl")


@pytest.fixture(scope="session")
def helm() -> Path:
    """The real helm binary (fetched by `make tools`)."""
    return _require("helm")


@pytest.fixture(scope="session")
def kubernetes_mcp_server() -> Path:
    """The Go kubernetes-mcp-server binary (fetched from npm by `make tools`)."""
    return _require("kubernetes-mcp-server")
