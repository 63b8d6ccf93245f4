"""Per-caller limits of the HTTP broker: a token-bucket rate limit and a cap on concurrent
tool calls for each caller (their Kubernetes user with ``--auth kubernetes``; everyone
shares one budget with a single static token), and a cap on the size of a request body.
Connection counts and slow-client timeouts are the HTTP layer's (``broker.server.http``).

A call over the limit is answered at once, with an ``isError`` result that says when to
retry (kind ``rate_limited``); nothing is sent to any node.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.errors import CallLimited
from broker.server.app import CallGuard
from broker.server.auth import request_identity

__all__ = ["BodyLimit", "CallerLimits", "caller_limits"]


@dataclass(frozen=True)
class CallerLimits:
    """The figures (README, "Team broker")."""

    rate_per_s: float = 2.0  # sustained tool calls per second per caller
    burst: int = 20  # calls a caller may make at once after a quiet spell
    concurrent: int = 8  # tool calls in flight per caller
    max_request_bytes: int = 1 << 20  # one HTTP request body (an MCP message)


class _Bucket:
    __slots__ = ("tokens", "stamp", "in_flight")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.in_flight = 0


def caller_limits(limits: CallerLimits, max_tracked: int = 10_000) -> CallGuard:
    """A BrokerApp call guard enforcing ``limits`` per caller."""
    buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def bucket(caller: str, now: float) -> _Bucket:
        found = buckets.get(caller)
        if found is None:
            found = buckets[caller] = _Bucket(float(limits.burst), now)
            while len(buckets) > max_tracked:  # forget the longest-unseen caller
                oldest = next(iter(buckets))
                if buckets[oldest].in_flight:
                    break
                del buckets[oldest]
        buckets.move_to_end(caller)
        found.tokens = min(limits.burst, found.tokens + (now - found.stamp) * limits.rate_per_s)
        found.stamp = now
        return found

    @asynccontextmanager
    async def guard(tool: str, mctx: Context[Any, Any]) -> AsyncIterator[None]:
        who = request_identity(mctx)
        caller = who.user if who is not None else ""
        b = bucket(caller, time.monotonic())
        if b.in_flight >= limits.concurrent:
            raise CallLimited(
                f"{tool}: you already have {b.in_flight} calls in progress (the limit per "
                f"caller is {limits.concurrent}); wait for one to finish and retry"
            )
        if b.tokens < 1:
            wait = (1 - b.tokens) / limits.rate_per_s
            raise CallLimited(
                f"{tool}: rate limit reached ({limits.rate_per_s:g} calls/s per caller, "
                f"bursts of {limits.burst}); retry in {wait:.1f} s"
            )
        b.tokens -= 1
        b.in_flight += 1
        try:
            yield
        finally:
            b.in_flight -= 1

    return guard


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets a 413 (by Content-Length
    up front, or counted as it streams in)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers") or ():
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:  # a body without Content-Length (chunked)
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watch)
        except _TooLarge:
            if not started:  # else the app already answered (its own 4xx)
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {
                "error": "too_large",
                "message": f"the request body is over {self.max_bytes} bytes: send smaller "
                "MCP messages (tool arguments are small)",
            },
            status_code=413,
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass
