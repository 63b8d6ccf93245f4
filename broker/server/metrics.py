"""Prometheus metrics of the broker (``--metrics-port``), served at ``/metrics`` on their
own port, without authentication (the chart's NetworkPolicy admits only the scrapers).

Tool calls by tool and outcome come from a BrokerApp call guard; node calls, fan-out
sizes and agent sessions from the fleet (:mod:`broker.fleet.observe`). Node names are not
labels: 5,000 nodes would be 5,000 series per metric; the per-node answer is in the
tool results and the logs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import Context
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from starlette.types import Receive, Scope, Send

from broker.errors import BrokerError
from broker.fleet import observe
from broker.server.app import CallGuard

__all__ = ["BrokerMetrics", "metrics_server"]

_NODE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FAN_OUT_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class BrokerMetrics:
    """The broker's metrics in their own registry (one per process, or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.tool_calls = Counter(
            "k8s_gpu_mcp_tool_calls",
            "MCP tool calls by tool and outcome (ok, or the error kind)",
            ["tool", "outcome"],
            registry=r,
        )
        self.tool_seconds = Histogram(
            "k8s_gpu_mcp_tool_call_duration_seconds",
            "MCP tool call duration, by tool",
            ["tool"],
            buckets=_NODE_BUCKETS,
            registry=r,
        )
        self.node_seconds = Histogram(
            "k8s_gpu_mcp_node_call_duration_seconds",
            "One node call (session open if needed, then the tool call), by outcome",
            ["outcome"],
            buckets=_NODE_BUCKETS,
            registry=r,
        )
        self.sessions_open = Gauge(
            "k8s_gpu_mcp_agent_sessions_open", "Open MCP sessions to node agents", registry=r
        )
        self.session_opens = Counter(
            "k8s_gpu_mcp_agent_session_opens",
            "Agent session opens by result (ok, or why it failed: the error kind)",
            ["result"],
            registry=r,
        )
        self.fan_out_nodes = Histogram(
            "k8s_gpu_mcp_fan_out_nodes",
            "Nodes per fan-out (one cluster-wide tool call)",
            buckets=_FAN_OUT_BUCKETS,
            registry=r,
        )
        self.callers_open = Gauge(
            "k8s_gpu_mcp_callers_open",
            "Callers with open per-caller contexts (--auth kubernetes)",
            registry=r,
        )
        self.token_reviews = Counter(
            "k8s_gpu_mcp_token_reviews",
            "TokenReviews sent to the API server (cache misses), by result",
            ["result"],
            registry=r,
        )

    # -- fleet observer (broker.fleet.observe) -------------------------------------------
    def node_call(self, node: str, kind: str | None, elapsed_s: float) -> None:
        self.node_seconds.labels(kind or "ok").observe(elapsed_s)

    def fan_out(self, nodes: int) -> None:
        self.fan_out_nodes.observe(nodes)

    def session_opened(self) -> None:
        self.session_opens.labels("ok").inc()
        self.sessions_open.inc()

    def session_failed(self, kind: str) -> None:
        self.session_opens.labels(kind).inc()

    def session_closed(self) -> None:
        self.sessions_open.dec()

    @asynccontextmanager
    async def observing(self) -> AsyncIterator[BrokerMetrics]:
        """Receive the fleet's reports while the block runs."""
        observe.subscribe(self)
        try:
            yield self
        finally:
            observe.unsubscribe(self)

    def guard(self) -> CallGuard:
        """A BrokerApp call guard counting each tool call by outcome."""

        @asynccontextmanager
        async def guard(tool: str, mctx: Context[Any, Any]) -> AsyncIterator[None]:
            started = time.monotonic()
            outcome = "error"
            try:
                yield
                outcome = "ok"
            except BrokerError as exc:
                outcome = exc.kind
                raise
            finally:
                self.tool_calls.labels(tool, outcome).inc()
                self.tool_seconds.labels(tool).observe(time.monotonic() - started)

        return guard


def metrics_server(metrics: BrokerMetrics, host: str, port: int) -> Any:
    """A uvicorn Server for GET /metrics (``await server.serve()``)."""
    import uvicorn
    from starlette.responses import PlainTextResponse

    exporter = make_asgi_app(metrics.registry)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") != "/metrics":
            await PlainTextResponse("not found: metrics are at /metrics\n", 404)(
                scope, receive, send
            )
            return
        await exporter(scope, receive, send)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # SIGTERM/SIGINT belong to the MCP server; this one stops with it

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", server_header=False
    )
    return Server(config)
