"""``broker serve --transport http``: streamable HTTP at /mcp and /healthz, bearer-token
authentication, Host/Origin checks against DNS rebinding; a real MCP client over HTTP,
the simulated cluster behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from broker.errors import ConfigError
from broker.server import HttpSettings
from broker.server.app import BrokerApp
from broker.server.http import generate_token, http_app
from broker.sim import SimServer
from tests.e2e.session import JSON_HEADERS, http_broker, structured

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token-for-the-tests-0123456789"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


async def post(port: int, headers: dict[str, str], body: Any = INIT) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/mcp", json=body, headers={**JSON_HEADERS, **headers}
        )
        await response.read()
        response.release()
        return response


@asynccontextmanager
async def mcp_over_http(port: int, token: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        yield session


async def test_loopback_with_token(demo_sim: SimServer) -> None:
    settings = HttpSettings(host="127.0.0.1", token=TOKEN)
    async with http_broker(demo_sim, settings) as port:
        async with aiohttp.ClientSession() as http:
            health = await http.get(f"http://127.0.0.1:{port}/healthz")
            assert health.status == 200 and (await health.json())["status"] == "ok"
            health.release()

        anonymous = await post(port, {})
        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await post(port, {"Authorization": "Bearer not-the-token"})
        assert wrong.status == 401

        auth = {"Authorization": f"Bearer {TOKEN}"}
        rebound = await post(port, {**auth, "Host": f"evil.example:{port}"})
        assert rebound.status == 421  # DNS rebinding: a foreign Host is refused
        cross = await post(port, {**auth, "Origin": "http://evil.example"})
        assert cross.status == 403
        same = await post(port, {**auth, "Origin": f"http://localhost:{port}"})
        assert same.status == 200

        async with mcp_over_http(port, TOKEN) as session:
            tools = {t.name for t in (await session.list_tools()).tools}
            assert "get_gpu_health" in tools and "list_gpu_nodes" in tools
            answer = structured(await session.call_tool("get_gpu_health", {}))
            assert answer["summary"]["nodes"]["total"] == 10


async def test_loopback_generates_a_token_by_default(demo_sim: SimServer) -> None:
    with pytest.raises(ConfigError, match="needs a token"):
        http_app(BrokerApp(), HttpSettings(host="127.0.0.1"))
    settings = generate_token(HttpSettings(host="127.0.0.1"))
    async with http_broker(demo_sim, settings) as port:
        assert (await post(port, {})).status == 401
        async with mcp_over_http(port, settings.token) as session:
            nodes = structured(await session.call_tool("list_gpu_nodes", {}))
            assert nodes["summary"]["total"] == 10


async def test_auth_none_is_open_to_local_clients_only(demo_sim: SimServer) -> None:
    async with http_broker(demo_sim, HttpSettings(host="127.0.0.1", auth="none")) as port:
        assert (await post(port, {})).status == 200
        assert (await post(port, {"Host": "attacker.example"})).status == 421
        async with mcp_over_http(port, None) as session:
            nodes = structured(await session.call_tool("list_gpu_nodes", {}))
            assert nodes["summary"]["total"] == 10


async def test_all_interfaces_require_the_token(demo_sim: SimServer) -> None:
    settings = HttpSettings(host="0.0.0.0", token=TOKEN)
    async with http_broker(demo_sim, settings) as port:
        assert (await post(port, {})).status == 401
        assert (await post(port, {"Authorization": f"Basic {TOKEN}"})).status == 401
        async with mcp_over_http(port, TOKEN) as session:
            one = structured(await session.call_tool("get_gpu_health", {"node": "gpu-node-002"}))
            assert one["nodes"][0]["status"] == "critical"
