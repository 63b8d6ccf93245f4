"""Helpers and fixtures for the simulated cluster's tests: a running sim, an HTTPS client trusting
its CA, kubernetes-asyncio configured from its kubeconfig, and a kubectl runner."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.sim import SimServer, sim_in_thread, start_sim


class Api:
    """Raw HTTPS requests to the sim, as any client would send them."""

    def __init__(self, sim: SimServer, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "admin",
        accept: str = "application/json",
        body: Any = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        headers = {"Accept": accept}
        if token == "admin":
            token = self.sim.token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        async with self.session.request(
            method, self.sim.url + path, headers=headers, data=data, params=params
        ) as resp:
            raw = await resp.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode()
            return resp.status, parsed, resp.headers

    async def get(self, path: str, **kw: Any) -> tuple[int, Any, Any]:
        return await self.request("GET", path, **kw)


def client_ssl(sim: SimServer) -> ssl.SSLContext:
    assert sim.ca_pem is not None
    return ssl.create_default_context(cadata=sim.ca_pem.decode())


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimServer]:
    """The demo scenario (10 named GPU nodes, 2 CPU nodes), agents as subprocesses."""
    async with start_sim(workdir=tmp_path / "sim") as server:
        yield server


@pytest.fixture
async def api(sim: SimServer) -> AsyncIterator[Api]:
    connector = aiohttp.TCPConnector(ssl=client_ssl(sim))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Api(sim, session)


class Kubectl:
    """Runs the real kubectl against a sim with a private HOME (discovery cache)."""

    def __init__(self, binary: Path, sim: SimServer, home: Path) -> None:
        self.binary = binary
        self.sim = sim
        self.env = {**os.environ, "HOME": str(home), "KUBECONFIG": str(sim.kubeconfig)}
        self.env.pop("KUBERNETES_SERVICE_HOST", None)

    def __call__(
        self, *args: str, input: str | None = None, context: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), "--kubeconfig", str(self.sim.kubeconfig)]
        if context:
            argv += ["--context", context]
        return subprocess.run(
            argv + list(args),
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def threaded_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    """One demo-scenario sim on a background thread, shared by a module's kubectl tests."""
    with sim_in_thread(nodes=12, workdir=tmp_path_factory.mktemp("sim")) as server:
        yield server


@pytest.fixture(scope="module")
def run_kubectl(
    kubectl: Path, threaded_sim: SimServer, tmp_path_factory: pytest.TempPathFactory
) -> Kubectl:
    return Kubectl(kubectl, threaded_sim, tmp_path_factory.mktemp("home"))


def mcp_lines(*calls: tuple[str, dict[str, Any]]) -> str:
    """initialize + initialized + one tools/call per (tool, arguments), as stdin text."""
    msgs: list[dict[str, Any]] = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "sim-test", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]
    for i, (tool, arguments) in enumerate(calls, start=2):
        msgs.append(
            {
                "jsonrpc": "2.0",
                "id": i,
                "method": "tools/call",
                "params": {"name": tool, "arguments": arguments},
            }
        )
    return "".join(json.dumps(m) + "\n" for m in msgs)


class ExecResult:
    """What one exec produced, frame by frame."""

    def __init__(self, protocol: str | None) -> None:
        self.protocol = protocol
        self.frames: list[tuple[int, bytes]] = []
        self.closed_cleanly = False

    def channel(self, n: int) -> bytes:
        return b"".join(data for ch, data in self.frames if ch == n)

    @property
    def stdout_lines(self) -> list[bytes]:
        return [line for line in self.channel(1).split(b"\n") if line]

    def answers(self) -> dict[int, dict[str, Any]]:
        out = {}
        for line in self.stdout_lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and "id" in msg:
                out[msg["id"]] = msg
        return out

    @property
    def status(self) -> dict[str, Any] | None:
        raw = self.channel(3)
        return json.loads(raw) if raw else None


async def ws_exec(
    sim: SimServer,
    node: str,
    stdin: str = "",
    *,
    protocol: str = "v5.channel.k8s.io",
    command: tuple[str, ...] = ("gpu-agent",),
    pod: str | None = None,
    namespace: str | None = None,
    expect_answers: int = 0,
    half_close: bool = True,
    open_stdin: bool = True,
    limit_s: float = 30.0,
    context: str | None = None,
) -> ExecResult:
    """Exec into *node*'s agent pod through kubernetes-asyncio's WsApiClient, the way the
    broker does (``_preload_content=False``, the subprotocol in ``_headers``)."""
    import asyncio

    from kubernetes_asyncio import client, config
    from kubernetes_asyncio.stream import WsApiClient

    cfg = client.Configuration()
    await config.load_kube_config(
        config_file=str(sim.kubeconfig), client_configuration=cfg, context=context
    )
    pod = pod or sim.agent_pod(node)
    assert pod is not None
    async with WsApiClient(configuration=cfg) as api_client:
        core = client.CoreV1Api(api_client=api_client)
        cm = await core.connect_get_namespaced_pod_exec(
            pod,
            namespace or sim.namespace,
            command=list(command),
            stdin=open_stdin,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
            _headers={"sec-websocket-protocol": protocol},
        )
        async with cm as ws:
            result = ExecResult(ws._response.headers.get("Sec-WebSocket-Protocol"))

            async def read() -> None:
                async for msg in ws:
                    if msg.type.name == "BINARY":
                        result.frames.append((msg.data[0], msg.data[1:]))
                        if expect_answers and len(result.answers()) >= expect_answers:
                            if not half_close:
                                return  # v4: no half-close; the caller hangs up
                            await ws.send_bytes(b"\xff\x00")
                    elif msg.type.name in ("CLOSE", "CLOSING", "CLOSED"):
                        break
                result.closed_cleanly = ws.close_code == 1000

            reader = asyncio.create_task(read())
            for line in stdin.splitlines(keepends=True):
                await ws.send_bytes(b"\x00" + line.encode())
            if half_close and not expect_answers and open_stdin:
                await ws.send_bytes(b"\xff\x00")
            await asyncio.wait_for(reader, limit_s)
    return result
