"""Run the real agent behind an exec: as a subprocess (``python -m agent --backend fake``)
or in-process through ``agent.app.create_session`` (same protocol code, no fork: for
1,000-node scale runs). Both expose one interface to the exec handler."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import signal
import sys
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

Output = tuple[int, bytes] | None  # (channel, data); None once every output stream ended

_seq = itertools.count(1)


class AgentRun(ABC):
    """One running agent: feed stdin lines, read (channel, bytes) output, get an exit code."""

    def __init__(self) -> None:
        self.output: asyncio.Queue[Output] = asyncio.Queue()

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def send(self, data: bytes) -> None:
        """Write to the agent's stdin (ignored once stdin is closed or the agent died)."""

    @abstractmethod
    async def close_stdin(self) -> None: ...

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL: no further output; the exit code becomes 137."""

    @abstractmethod
    async def wait(self) -> int:
        """The exit code as the container runtime reports it (128+N for signal N)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release everything (kills the agent if it still runs)."""


def write_scenario(workdir: Path, node: str, scenario: dict[str, Any]) -> Path:
    """Write a per-exec copy of *node*'s agent scenario (concurrent execs never share one)."""
    path = workdir / f"{node}-{next(_seq)}.json"
    path.write_text(json.dumps(scenario))
    return path


def write_host_proc(workdir: Path, node: str, procs: dict[int, dict[str, str]]) -> Path:
    """*node*'s host /proc (``pid/cgroup``, ``pid/comm``) for the agent's pod mapping.
    Written once per node (a workload's processes do not change while the sim runs), into
    a fresh directory renamed into place, so a concurrent exec never reads half of it."""
    final = workdir / "host-proc" / node
    if final.is_dir():
        return final
    tmp = workdir / "host-proc" / f".{node}-{next(_seq)}"
    for pid, files in procs.items():
        (tmp / str(pid)).mkdir(parents=True)
        for name, text in files.items():
            (tmp / str(pid) / name).write_text(text)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(final)
    except OSError:  # another exec put it there first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _agent_pythonpath() -> str | None:
    spec = importlib.util.find_spec("agent")
    if spec is None or spec.origin is None:
        return None
    return str(Path(spec.origin).resolve().parent.parent)


class SubprocessRun(AgentRun):
    """``python -m agent --backend fake --scenario FILE [ARGS...]`` in its own session."""

    def __init__(
        self,
        args: list[str],
        scenario: Path,
        cwd: Path,
        node: str,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.node = node
        self.env = dict(env or {})  # the agent pod's settings (the chart's GPU_AGENT_*)
        self.argv = [sys.executable, "-m", "agent", "--backend", "fake", "--scenario",
                     str(scenario), *args]  # fmt: skip
        self.scenario = scenario
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._ended = 0
        self._stdin_closed = False

    async def start(self) -> None:
        env = dict(os.environ)
        env["NODE_NAME"] = self.node  # the chart's downward-API variable
        env.update(self.env)
        root = _agent_pythonpath()
        if root:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.cwd,
            env=env,
            start_new_session=True,  # a Ctrl-C to the sim is not delivered to agents twice
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._pumps = [
            asyncio.create_task(self._pump(self.proc.stdout, 1)),
            asyncio.create_task(self._pump(self.proc.stderr, 2)),
        ]

    async def _pump(self, stream: asyncio.StreamReader, channel: int) -> None:
        try:
            while chunk := await stream.read(65536):
                self.output.put_nowait((channel, chunk))
        finally:
            self._ended += 1
            if self._ended == 2:
                self.output.put_nowait(None)

    async def send(self, data: bytes) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None or self._stdin_closed or proc.returncode is not None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(data)
            await proc.stdin.drain()

    async def close_stdin(self) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None or self._stdin_closed:
            return
        self._stdin_closed = True
        proc.stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await proc.stdin.wait_closed()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        assert self.proc is not None
        rc = await self.proc.wait()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        return 128 - rc if rc < 0 else rc

    async def aclose(self) -> None:
        try:
            if self.proc is not None:
                self.kill()
                await self.close_stdin()
                await self.wait()
        finally:
            with contextlib.suppress(OSError):
                self.scenario.unlink()


class InProcessRun(AgentRun):
    """The agent's protocol core in this process (``agent.app.create_session``)."""

    def __init__(self, args: list[str], scenario: Path, env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.args = ["--backend", "fake", "--scenario", str(scenario), *args]
        self.env = {**os.environ, **(env or {})}  # what the exec'd process would see
        self.scenario = scenario
        self._loop = asyncio.get_running_loop()
        self._session: Any = None
        self._killed = False
        self._stdin_closed = False
        self._done = asyncio.Event()
        self._rc = 0

    def _write(self, data: bytes) -> None:  # from the loop or from agent worker threads
        if not self._killed:
            with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                self._loop.call_soon_threadsafe(self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        if not self._killed and not self._done.is_set():
            self.output.put_nowait((1, data))

    def _finish(self, rc: int) -> None:
        if not self._done.is_set():
            self._rc = rc
            self._done.set()
            self.output.put_nowait(None)

    async def start(self) -> None:
        from agent.app import create_session  # only the in-process mode loads the agent
        from agent.errors import AgentError

        try:
            self._session = create_session(self.args, self._write, env=self.env)
        except AgentError as exc:  # what `gpu-agent` prints before exiting 2
            self.output.put_nowait((2, f"gpu-agent: error: {exc}\n".encode()))
            self._finish(2)
        finally:
            with contextlib.suppress(OSError):
                self.scenario.unlink()  # the fake backend loaded it eagerly

    async def send(self, data: bytes) -> None:
        if self._session is None or self._killed or self._stdin_closed:
            return
        for line in data.splitlines():
            self._session.feed(line)

    async def close_stdin(self) -> None:
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self._session is None or self._killed:
            return
        session = self._session

        def finish() -> None:
            session.close()  # waits for every answer (each bounded by --call-timeout)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._drain_then_finish)

        threading.Thread(target=finish, name="sim agent close", daemon=True).start()

    def _drain_then_finish(self) -> None:
        # Answers queued by call_soon_threadsafe before this callback are already delivered.
        self._finish(0)

    def kill(self) -> None:
        if self._done.is_set():
            return
        self._killed = True
        session = self._session
        if session is not None and not self._stdin_closed:
            self._stdin_closed = True
            # Release the session off-loop; its answers are dropped (the process "died").
            threading.Thread(target=session.close, name="sim agent kill", daemon=True).start()
        self._finish(128 + signal.SIGKILL)

    async def wait(self) -> int:
        await self._done.wait()
        return self._rc

    async def aclose(self) -> None:
        if not self._done.is_set():
            self.kill()
        with contextlib.suppress(OSError):
            self.scenario.unlink()
