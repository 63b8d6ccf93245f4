"""Helpers for the image tests: the built image, working containers of it, and MCP
client sessions with `gpu-agent` running inside one (`buildah run`)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

ROOT = Path(__file__).resolve().parents[2]
BUILD_ENV = ROOT / ".image" / "build.env"
# Where the NVIDIA container toolkit injects the driver's NVML on Debian-family images.
NVML_PATH = "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"
AGENT_TOOLS = frozenset(
    {
        "get_gpu_inventory",
        "get_gpu_health",
        "analyze_xid_errors",
        "get_gpu_processes",
        "get_nvlink_topology",
    }
)
# Nothing here may hang a test run: every buildah call and MCP step is bounded.
COMMAND_TIMEOUT_S = 120.0
SESSION_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BuiltImage:
    """What `.ci/build-image.sh` built, read from the `.image/build.env` it writes."""

    name: str
    version: str
    base: str
    archive: Path
    global_options: tuple[str, ...]

    def buildah(self, *args: str) -> list[str]:
        """A buildah command line on the image's store."""
        return ["buildah", *self.global_options, *args]

    def check(self, *args: str) -> str:
        """Run buildah on the store; return stdout, fail the test with stderr on error."""
        done = subprocess.run(
            self.buildah(*args),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"buildah {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout


@dataclass
class Container:
    """A working container of the image; `run` argv lines execute inside it (chroot)."""

    image: BuiltImage
    name: str
    volumes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def mount(self, source: Path, target: str) -> None:
        """Bind `source` read-only at `target` for every later run (as a runtime would)."""
        self.volumes.append(f"{source}:{target}:ro")

    def run_argv(self, argv: Sequence[str], user: str | None = None) -> list[str]:
        options = ["--isolation", "chroot"]
        for volume in self.volumes:
            options += ["--volume", volume]
        for key, value in self.env.items():
            options += ["--env", f"{key}={value}"]
        if user is not None:
            options += ["--user", user]
        return self.image.buildah("run", *options, self.name, "--", *argv)

    def run(
        self, argv: Sequence[str], user: str | None = None, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the container to completion (bounded), capturing its output."""
        return subprocess.run(
            self.run_argv(argv, user),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )

    def sh(self, script: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-c", script], user)


@dataclass
class AgentSession:
    """An initialised MCP client session with gpu-agent inside the container."""

    client: ClientSession
    started: float  # time.perf_counter() just before the container process was spawned
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@asynccontextmanager
async def agent_session(
    container: Container,
    args: Sequence[str],
    stderr_path: Path,
    user: str | None = None,
) -> AsyncIterator[AgentSession]:
    """`gpu-agent ARGS` inside the container, driven by the real MCP SDK client over the
    process's stdin/stdout, initialised. The process is stopped on exit."""
    argv = container.run_argv(["gpu-agent", *args], user)
    params = StdioServerParameters(command=argv[0], args=argv[1:])
    errlog: IO[str]
    with stderr_path.open("w") as errlog:
        started = time.perf_counter()
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, read_timeout_seconds=SESSION_TIMEOUT_S) as client,
        ):
            with anyio.fail_after(SESSION_TIMEOUT_S):
                await client.initialize()
            yield AgentSession(client, started, stderr_path)


def structured(result: Any) -> Mapping[str, Any]:
    """A tool result's structuredContent, failing with the text content when absent."""
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict), result.content
    content: Mapping[str, Any] = result.structured_content
    return content
