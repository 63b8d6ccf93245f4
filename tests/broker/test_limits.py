"""Per-caller limits: concurrent calls and rate per caller, and the request size cap
(also for a body sent without Content-Length)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx2
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from broker.errors import CallLimited
from broker.kube.auth import Identity
from broker.server.limits import BodyLimit, CallerLimits, caller_limits


def call_of(user: str) -> Any:
    """An MCP tool-call context whose HTTP request carries ``user`` (as KubernetesAuth
    leaves it)."""
    request = SimpleNamespace(state=SimpleNamespace(identity=Identity(user)))
    return SimpleNamespace(request_context=SimpleNamespace(request=request))


async def test_concurrent_calls_are_capped_per_caller() -> None:
    guard = caller_limits(CallerLimits(rate_per_s=1000, burst=1000, concurrent=2))
    async with guard("t", call_of("alice")), guard("t", call_of("alice")):
        with pytest.raises(CallLimited, match="already have 2 calls in progress"):
            async with guard("t", call_of("alice")):
                pass
        async with guard("t", call_of("bob")):  # bob has his own share
            pass
    async with guard("t", call_of("alice")):  # finished calls free their slots
        pass


async def test_rate_is_a_token_bucket_per_caller() -> None:
    guard = caller_limits(CallerLimits(rate_per_s=0.5, burst=3, concurrent=10))
    for _ in range(3):
        async with guard("t", call_of("alice")):
            pass
    with pytest.raises(CallLimited, match=r"retry in 2\.0 s") as refused:
        async with guard("t", call_of("alice")):
            pass
    assert refused.value.kind == "rate_limited"


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = await Request(scope, receive).body()
    await JSONResponse({"bytes": len(body)})(scope, receive, send)


async def chunks(n: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield b"x" * size


async def test_request_bodies_over_the_cap_get_413() -> None:
    app = BodyLimit(echo, max_bytes=1000)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.post("/", content=b"x" * 1000)).json() == {"bytes": 1000}
        declared = await http.post("/", content=b"x" * 1001)
        assert declared.status_code == 413
        assert "over 1000 bytes" in declared.json()["message"]
        streamed = await http.post("/", content=chunks(5, 300))  # chunked: no length
        assert streamed.status_code == 413
