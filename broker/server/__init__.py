"""The MCP server an IDE or LLM agent talks to (``broker serve``).

Wiring only: :mod:`broker.server.app` (the server class and result helpers),
:mod:`broker.server.fleet_tools` (cluster-wide and pinned tools),
:mod:`broker.server.cluster_tools` (cluster-side diagnosis), :mod:`broker.server.prompts`,
:mod:`broker.server.http` (the HTTP transport).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from broker.errors import ConfigError, ToolInputError
from broker.fleet.context import BrokerContext
from broker.kube.config import ClusterConfig
from broker.server.app import BrokerApp
from broker.server.fleet_tools import build_node_server, build_server
from broker.server.http import (
    HttpSettings,
    check_http_settings,
    generate_token,
    http_app,
    run_http,
)
from broker.server.logs import configure_logging, install_plain_logging
from broker.server.stdio import run_stdio
from broker.server.team import TeamOptions, guard_app, observe_app, team_app

if TYPE_CHECKING:
    from broker.server.metrics import BrokerMetrics

__all__ = [
    "BrokerApp",
    "HttpSettings",
    "ServeOptions",
    "ToolInputError",
    "build_node_server",
    "build_server",
    "http_app",
    "serve",
]


@dataclass(frozen=True)
class ServeOptions:
    """What ``broker serve`` was asked for."""

    config: ClusterConfig = field(default_factory=ClusterConfig)
    node: str | None = None
    transport: str = "stdio"  # stdio | http
    http: HttpSettings = field(default_factory=HttpSettings)
    call_timeout: float = 30.0
    max_concurrency: int = 64
    team: TeamOptions = field(default_factory=TeamOptions)  # HTTP: limits, breaker, callers
    metrics_port: int | None = None  # Prometheus /metrics on its own port
    log_format: str = "text"  # text | json


async def serve(options: ServeOptions) -> None:
    """Run the broker's MCP server until the client goes away (stdio) or cancelled."""
    if options.transport not in ("stdio", "http"):
        raise ConfigError(f"unknown transport {options.transport!r}: use stdio or http")
    install_plain_logging()  # before any MCPServer installs its rich handler
    configure_logging(options.log_format)
    http = options.transport == "http"
    settings = options.http
    if http:
        check_http_settings(settings)  # before any cluster access: a bad flag fails fast
        settings = generate_token(settings)
    async with _metrics(options) as metrics:
        if http and settings.auth == "kubernetes":
            await _serve_team(options, settings, metrics)
            return
        breaker = options.team.breaker() if http else None
        async with BrokerContext.open(
            options.config,
            call_timeout=options.call_timeout,
            max_concurrency=options.max_concurrency,
            breaker=breaker,
        ) as ctx:
            if options.node:
                app = await build_node_server(ctx, options.node)
            else:
                app = build_server(ctx)
            observe_app(app, metrics)
            if options.transport == "stdio":
                await run_stdio(app)
            else:
                guard_app(app, options.team.limits)  # one token: one shared budget
                await run_http(app, settings)


@asynccontextmanager
async def _metrics(options: ServeOptions) -> AsyncIterator[BrokerMetrics | None]:
    """Prometheus metrics served on --metrics-port while the block runs (None: off)."""
    if options.metrics_port is None:
        yield None
        return
    from broker.server.metrics import BrokerMetrics, metrics_server  # prometheus: ~50 ms

    metrics = BrokerMetrics()
    server = metrics_server(metrics, options.http.host, options.metrics_port)
    async with metrics.observing(), anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        try:
            yield metrics
        finally:
            server.should_exit = True


async def _serve_team(
    options: ServeOptions, settings: HttpSettings, metrics: BrokerMetrics | None
) -> None:
    """--auth kubernetes: every call as its caller (TokenReview + impersonation)."""
    if options.node:
        raise ConfigError(
            "--node (one node's tools for one IDE) cannot be combined with --auth kubernetes "
            "(a broker for many callers): drop --node, and call tools with node=<name>"
        )
    async with team_app(
        options.config,
        call_timeout=options.call_timeout,
        max_concurrency=options.max_concurrency,
        team=options.team,
        metrics=metrics,
    ) as app:
        await run_http(app, settings)
