"""Helpers for end-to-end tests: the real ``broker serve`` process (stdio) with a real MCP
client session on it, the HTTP broker in-process on a free port, and reading a tool's
structured answer."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from broker.fleet.context import BrokerContext
from broker.kube.config import ClusterConfig
from broker.server import BrokerApp, HttpSettings, build_server
from broker.server.http import http_server
from broker.sim import SimServer

JSON_HEADERS = {"Accept": "application/json, text/event-stream"}


@asynccontextmanager
async def broker_session(tmp_path: Path, *args: str, **env: str) -> AsyncIterator[ClientSession]:
    """``python -m broker serve ARGS`` as a subprocess, an initialised ClientSession on it."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "broker", "serve", *args], env=env or None
    )
    # The subprocess's stderr goes to a file the test can read afterwards.
    with open(tmp_path / "broker.stderr", "w") as errlog:  # noqa: ASYNC230
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


@asynccontextmanager
async def serve_http(app: BrokerApp, settings: HttpSettings) -> AsyncIterator[int]:
    """``app`` over HTTP (uvicorn, in this event loop) on a free port of ``settings.host``;
    yields the port once the server is accepting."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, 0))
    port = sock.getsockname()[1]
    try:
        server = http_server(app, replace(settings, port=port))
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            for _ in range(500):
                if server.started:
                    break
                await anyio.sleep(0.01)
            assert server.started, "uvicorn did not start"
            try:
                yield port
            finally:
                server.should_exit = True
    finally:
        sock.close()


@asynccontextmanager
async def http_broker(sim: SimServer, settings: HttpSettings) -> AsyncIterator[int]:
    """The broker serving HTTP on a free port of ``settings.host``; yields the port."""
    config = ClusterConfig(kubeconfig=str(sim.kubeconfig))
    async with (
        BrokerContext.open(config, call_timeout=20) as ctx,
        serve_http(build_server(ctx), settings) as port,
    ):
        yield port


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)
