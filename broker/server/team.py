"""The team broker: ``broker serve --transport http --auth kubernetes`` (the chart's
in-cluster Deployment), and the guards every HTTP broker gets (limits, metrics, logs).

Wiring only. The broker's own credentials (its ServiceAccount) are used for TokenReviews
and nothing else; every read and exec runs as the caller (:mod:`broker.fleet.identities`,
impersonation). ``/readyz`` answers 503 while the API server cannot be reached.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from broker.fleet.breaker import CircuitBreaker
from broker.fleet.identities import CallerContexts, caller_context
from broker.kube.auth import Identity, review_token
from broker.kube.config import ClusterConfig, KubeApi
from broker.server.app import BrokerApp
from broker.server.auth import KubernetesAuth, caller_guard
from broker.server.fleet_tools import build_server
from broker.server.limits import BodyLimit, CallerLimits, caller_limits
from broker.server.logs import tool_call_logger

if TYPE_CHECKING:
    from broker.server.metrics import BrokerMetrics

__all__ = ["TeamOptions", "guard_app", "observe_app", "team_app"]


@dataclass(frozen=True)
class TeamOptions:
    """Per-caller settings of the team broker."""

    token_ttl_s: float = 60.0  # a TokenReview answer is reused this long
    max_callers: int = 64  # callers with open contexts (pools, API clients) at once
    caller_idle_s: float = 900.0  # a caller's context closes after this long unused
    audiences: tuple[str, ...] = ()  # TokenReview audiences (empty: the API server's)
    limits: CallerLimits = field(default_factory=CallerLimits)
    breaker_failures: int = 5  # consecutive node failures before the node is skipped
    breaker_open_s: float = 30.0  # ... for this long (doubling while trials fail, max 5 min)

    def breaker(self) -> CircuitBreaker | None:
        if self.breaker_failures <= 0:
            return None
        return CircuitBreaker(self.breaker_failures, self.breaker_open_s)


def observe_app(app: BrokerApp, metrics: BrokerMetrics | None) -> None:
    """Count (Prometheus) and log (one line, with a request id) every tool call."""
    if metrics is not None:
        app.call_guards.append(metrics.guard())
    app.call_guards.append(tool_call_logger())


def guard_app(app: BrokerApp, limits: CallerLimits) -> None:
    """Per-caller call limits and the request size cap (HTTP)."""
    app.call_guards.append(caller_limits(limits))
    app.http_middleware.append(lambda inner: BodyLimit(inner, limits.max_request_bytes))


@asynccontextmanager
async def team_app(
    config: ClusterConfig,
    *,
    call_timeout: float = 30.0,
    max_concurrency: int = 64,
    team: TeamOptions | None = None,
    metrics: BrokerMetrics | None = None,
) -> AsyncIterator[BrokerApp]:
    """The cluster-wide MCP server, each call run as its authenticated caller. Serve it
    with :func:`broker.server.http.http_server` and ``HttpSettings(auth="kubernetes")``."""
    options = team or TeamOptions()
    own = await KubeApi.open(config)
    try:
        async with CallerContexts(
            config,
            max_callers=options.max_callers,
            idle_s=options.caller_idle_s,
            call_timeout=call_timeout,
            max_concurrency=max_concurrency,
            breaker=options.breaker(),  # one for all callers: a dead node is dead for all
        ) as contexts:
            app = build_server(caller_context())

            async def review(token: str) -> Identity:
                return await review_token(own, token, options.audiences)

            on_review: Callable[[str], None] | None = None
            if metrics is not None:
                metrics.callers_open.set_function(lambda: contexts.open_callers)
                on_review = _count_reviews(metrics)

            # Middleware inner first: authentication, then the size cap (guard_app) outside.
            app.http_middleware.append(
                lambda inner: KubernetesAuth(
                    inner, review, ttl_s=options.token_ttl_s, on_review=on_review
                )
            )
            observe_app(app, metrics)
            guard_app(app, options.limits)
            app.call_guards.append(caller_guard(contexts))  # last: limits come first
            app.readiness = _api_readiness(own)
            yield app
    finally:
        with anyio.CancelScope(shield=True):
            await own.aclose()


def _count_reviews(metrics: BrokerMetrics) -> Callable[[str], None]:
    def count(result: str) -> None:
        metrics.token_reviews.labels(result).inc()

    return count


def _api_readiness(api: KubeApi, cache_s: float = 5.0) -> Callable[[], Awaitable[str | None]]:
    """Ready while the API server's /readyz answers (checked at most every ``cache_s``)."""
    import aiohttp

    last: list[tuple[float, str | None]] = []

    async def check() -> str | None:
        now = time.monotonic()
        if last and now - last[0][0] < cache_s:
            return last[0][1]
        problem: str | None = None
        try:
            session = api.rest.rest_client.pool_manager
            with anyio.fail_after(3):
                async with session.get(api.server.rstrip("/") + "/readyz") as resp:
                    if resp.status != 200:
                        problem = f"the API server's /readyz answered {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            problem = f"cannot reach the API server at {api.server} ({type(exc).__name__})"
        last[:] = [(now, problem)]
        return problem

    return check
