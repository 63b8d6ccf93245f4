"""The agent zipapp the chart carries: fresh, reproducible, self-contained, and a working
MCP server under the real SDK client on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from agent import __version__
from agent.tools import TOOL_NAMES
from tests.release.scripts import PYZ, ROOT, builder


def test_committed_zipapp_matches_the_sources() -> None:
    stale = builder.stale_members(PYZ)
    assert not stale, (
        f"{PYZ.relative_to(ROOT)} is stale in {stale}: run `make zipapp` and commit it"
    )


def test_stale_check_notices_a_changed_source(tmp_path: Path) -> None:
    changed = tmp_path / "changed.pyz"
    with zipfile.ZipFile(PYZ) as src, zipfile.ZipFile(changed, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "agent/xid.pyc":
                data = data[:8] + bytes(8) + data[16:]  # the hash of some other source
            if item.filename == "agent/data/xid-catalog.tsv":
                data += b"999\tNEW\n"
            dst.writestr(item, data)
    assert builder.stale_members(changed) == ["agent/data/xid-catalog.tsv", "agent/xid.pyc"]


def test_layout_is_reproducible_and_names_no_build_path() -> None:
    data = PYZ.read_bytes()
    assert data.startswith(b"#!/usr/bin/env python3\n")
    assert os.access(PYZ, os.X_OK)
    with zipfile.ZipFile(PYZ) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        members = {n: zf.read(n) for n in names}
    expected_pyc = {f"{n}c" for n in builder.sources()}
    assert expected_pyc <= set(members) and "pynvml.pyc" in members
    assert {"__main__.py", "agent/data/xid-catalog.tsv", "agent/data/default-scenario.json"} <= set(
        members
    )
    assert b"Redistribution" in members["LICENSES/nvidia-ml-py.txt"]
    info = json.loads(members["ZIPAPP-INFO.json"])
    assert info["agent"] == __version__ and info["entry"] == "agent.__main__:main"
    for name, blob in members.items():
        assert str(ROOT).encode() not in blob, f"{name} names the build directory"


def test_build_is_byte_for_byte_reproducible(target_python: str, tmp_path: Path) -> None:
    first = builder.build(target_python)
    assert builder.build(target_python) == first
    # What it builds is what the committed file is checked against (the committed bytes
    # themselves may differ: another zlib or 3.13.x, another nvidia-ml-py 13.x).
    rebuilt = tmp_path / "gpu-agent.pyz"
    rebuilt.write_bytes(first)
    assert builder.stale_members(rebuilt) == []


def test_another_python_is_told_which_one_to_use() -> None:
    if sys.version_info[:2] == builder.TARGET_PYTHON:
        pytest.skip("this test needs a Python other than the zipapp's")
    done = subprocess.run(
        [sys.executable, "-I", str(PYZ), "--version"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "bytecode for Python 3.13" in done.stderr
    assert "agent.source=image" in done.stderr


def test_shebang_runs_it_as_the_pod_does(target_python: str, tmp_path: Path) -> None:
    # The pod's PATH finds the image's python3; here a python3 link plays that part.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(target_python)
    agent = bindir / "gpu-agent"
    agent.write_bytes(PYZ.read_bytes())
    agent.chmod(0o555)
    done = subprocess.run(
        ["gpu-agent", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": f"{bindir}:/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"gpu-agent {__version__}"


def test_pycache_env_keeps_stdlib_bytecode_for_later_execs(
    target_python: str, tmp_path: Path
) -> None:
    cache = tmp_path / "pycache"
    env = {"GPU_AGENT_PYCACHE": str(cache), "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin"}
    for _ in range(2):
        done = subprocess.run(
            [target_python, str(PYZ), "--backend", "fake"],
            input=_initialize_line(),
            capture_output=True,
            timeout=30,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[0])["result"]["serverInfo"]
    cached = {p.relative_to(cache).as_posix() for p in cache.rglob("*.pyc")}
    for module in ("/json/__init__", "/threading", "/dataclasses"):  # the agent imports them
        assert any(c.endswith(f"{module}.cpython-313.pyc") for c in cached), module


def _initialize_line() -> bytes:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "pytest", "version": "0"},
        },
    }
    return json.dumps(message).encode() + b"\n"


@asynccontextmanager
async def zipapp_session(
    python: str, *args: str, env: dict[str, str] | None = None, cwd: Path
) -> AsyncIterator[ClientSession]:
    """The real MCP SDK client over ``python -I -S gpu-agent.pyz ARGS``: no site-packages,
    no current directory, no PYTHON* variables, so only the zip and the standard library."""
    params = StdioServerParameters(
        command=python, args=["-I", "-S", str(PYZ), *args], env=env, cwd=str(cwd)
    )
    async with AsyncExitStack() as stack:
        errlog = stack.enter_context(_log_file(cwd / "stderr"))
        read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


def _log_file(path: Path) -> TextIO:
    return open(path, "w")  # noqa: SIM115  (closed by the caller's exit stack)


def _structured(result: Any) -> dict[str, Any]:
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    content: dict[str, Any] = result.structured_content
    return content


async def test_sdk_client_over_zipapp_fake_backend(target_python: str, tmp_path: Path) -> None:
    async with zipapp_session(target_python, "--backend", "fake", cwd=tmp_path) as session:
        assert session.server_info.version == __version__
        listed = await session.list_tools()
        assert sorted(t.name for t in listed.tools) == sorted(TOOL_NAMES)
        health = _structured(await session.call_tool("get_gpu_health", {}))
        xids = _structured(await session.call_tool("analyze_xid_errors", {"since_minutes": 1440}))
    assert health["status"] == "critical" and len(health["gpus"]) == 8  # packaged scenario
    assert 79 in {x["xid"] for x in xids["xids"]}  # packaged Xid catalog
    assert (tmp_path / "stderr").read_text() == ""


async def test_sdk_client_over_zipapp_nvml_backend(
    target_python: str, fake_nvml_lib: Path, tmp_path: Path
) -> None:
    from tests.agent.fakenvml import build as fakenvml

    config = tmp_path / "nvml.conf"
    config.write_text("gpu_count = 4\n")
    env = fakenvml.fake_env(fake_nvml_lib, config, base={"PATH": "/usr/bin:/bin"})
    args = ("--backend", "nvml", "--kmsg", "off")
    async with zipapp_session(target_python, *args, env=env, cwd=tmp_path) as session:
        inventory = _structured(await session.call_tool("get_gpu_inventory", {}))
    assert inventory["node"]["backend"] == "nvml"  # pynvml came from the zip (-S)
    assert [g["index"] for g in inventory["gpus"]] == [0, 1, 2, 3]
    assert inventory["gpus"][0]["name"].startswith("NVIDIA H100")
