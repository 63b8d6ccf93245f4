"""Helpers and fixtures for the agent tests: in-process sessions, agent subprocesses driven by the
real MCP SDK client, scenario files and the fake libnvidia-ml.so.1."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import pytest

from agent.app import create_session
from agent.protocol import Session

ROOT = Path(__file__).resolve().parents[2]
AGENT = (sys.executable, "-m", "agent")


class Wire:
    """An in-process agent session (the simulated cluster's path) with a recorder.

    Every line the agent writes is checked to be one complete JSON-RPC 2.0 message.
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._next_id = 1000
        self.session: Session = create_session(list(args), self._write, env=env)

    def _write(self, data: bytes) -> None:
        assert data.endswith(b"\n") and data.count(b"\n") == 1, data[:200]
        message = json.loads(data)
        assert message["jsonrpc"] == "2.0"
        assert ("result" in message) != ("error" in message), message
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def send(self, message: dict[str, Any] | bytes | str) -> None:
        raw = message if isinstance(message, bytes | str) else json.dumps(message)
        self.session.feed(raw)

    def request(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        """Send a request and return its response message."""
        rid = self.send_request(method, params)
        return self.wait_for(rid, **kw)

    def send_request(self, method: str, params: dict[str, Any] | None = None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self._next_id

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """tools/call; returns the CallToolResult (fails the test on a JSON-RPC error)."""
        response = self.request("tools/call", {"name": name, "arguments": arguments or {}})
        assert "result" in response, response
        result: dict[str, Any] = response["result"]
        return result

    def wait_for(self, rid: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.messages:
                    if message.get("id") == rid and type(message.get("id")) is type(rid):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no answer to id {rid!r} within {timeout} s")
                self._cond.wait(left)

    def answers(self, rid: Any) -> list[dict[str, Any]]:
        with self._cond:
            return [m for m in self.messages if m.get("id") == rid]

    def last(self) -> dict[str, Any]:
        with self._cond:
            return self.messages[-1]

    def count(self) -> int:
        with self._cond:
            return len(self.messages)

    def initialize(
        self, version: str = "2025-11-25", capabilities: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = self.request(
            "initialize",
            {
                "protocolVersion": version,
                "capabilities": capabilities or {},
                "clientInfo": {"name": "pytest", "version": "0"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        result: dict[str, Any] = response["result"]
        return result

    def close(self) -> None:
        self.session.close()
        if self.session.busy:
            # The agent leaves a backend with stuck calls alone; the test owns this fake
            # one, so release its blocked threads.
            self.session.provider.close()


@pytest.fixture
def wire() -> Iterator[Callable[..., Wire]]:
    """Factory: ``wire("--backend", "fake", ..., env={...})`` -> an in-process session
    (``env`` stands for the exec'd process's environment; default: this process's);
    closed after."""
    made: list[Wire] = []

    def make(*args: str, env: dict[str, str] | None = None) -> Wire:
        w = Wire(args, env)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


@pytest.fixture
def fake_wire(wire: Callable[..., Wire]) -> Wire:
    """An initialized in-process session on the default fake scenario."""
    w = wire("--backend", "fake")
    w.initialize()
    return w


@pytest.fixture
def scenario(tmp_path: Path) -> Callable[[dict[str, Any]], str]:
    """Factory: write a scenario dict to a file and return its path."""
    count = 0

    def write(content: dict[str, Any]) -> str:
        nonlocal count
        count += 1
        path = tmp_path / f"scenario-{count}.json"
        path.write_text(json.dumps(content))
        return str(path)

    return write


@asynccontextmanager
async def mcp_agent(
    *args: str,
    env: dict[str, str] | None = None,
    stderr: Path | None = None,
    extensions: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[Any]:
    """Run ``python -m agent ARGS`` and yield an initialized ``mcp.ClientSession``
    (declaring the MCP ``extensions`` given)."""
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=AGENT[0], args=[*AGENT[1:], *args], env=env, cwd=str(ROOT)
    )
    async with AsyncExitStack() as stack:
        errlog = stack.enter_context(_log_file(stderr))
        read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        session = await stack.enter_async_context(ClientSession(read, write, extensions=extensions))
        await session.initialize()
        yield session


def _log_file(path: Path | None) -> TextIO:
    """Where the agent's stderr goes (a file the test may read, else /dev/null)."""
    return open(path if path is not None else os.devnull, "w")  # noqa: SIM115


@pytest.fixture(scope="session")
def fake_nvml_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake libnvidia-ml.so.1 (compiled once per test session with gcc)."""
    from tests.agent.fakenvml import build as fakenvml

    if fakenvml.gcc() is None:
        pytest.skip("gcc not found: it is needed to build the fake libnvidia-ml.so.1")
    return fakenvml.build(ROOT / "build" / "fakenvml")
