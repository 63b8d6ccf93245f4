"""What every broker tool needs: the node pool, the cluster configuration, the API.

``BrokerContext`` is handed to tool registration (``broker.server.app`` and
``broker.server.cluster_tools.register_cluster_tools(app, ctx)``). It owns nothing it did not
open: the pool belongs to whoever entered it; the API clients opened here on demand
(when the pool was built with injected transports, as in tests) are closed by
:meth:`aclose`.

Stable API (other modules code against it):

    async with BrokerContext.open(config, call_timeout=30, max_concurrency=64) as ctx: ...
    ctx.pool            NodePool (open)
    ctx.config          ClusterConfig (kubeconfig, context, namespace, request_timeout)
    ctx.namespace       str: where the agent pods live (default gpu-diagnostics)
    ctx.call_timeout    float: the per-node / per-fan-out deadline, seconds
    await ctx.api()     KubeApi: ``.rest`` (kubernetes_asyncio ApiClient), ``.server``,
                        ``.namespace``, ``refresh_credentials()``; raises ConfigError
    await ctx.targets() list[NodeTarget]: every GPU node, ready or not (cached)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio

from broker.errors import sole_leaf
from broker.fleet.pool import NodePool
from broker.kube.config import ClusterConfig, KubeApi
from broker.kube.discovery import NodeTarget

__all__ = ["BrokerContext"]


@dataclass
class BrokerContext:
    """The open pool plus lazy access to the Kubernetes API, for tool implementations."""

    pool: NodePool
    config: ClusterConfig = field(default_factory=ClusterConfig)
    _own_api: KubeApi | None = field(default=None, init=False, repr=False)
    _api_lock: anyio.Lock = field(default_factory=anyio.Lock, init=False, repr=False)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: ClusterConfig,
        *,
        call_timeout: float = 30.0,
        max_concurrency: int = 64,
        **pool_options: Any,
    ) -> AsyncIterator[BrokerContext]:
        """Open a NodePool on ``config`` (options as for NodePool) and a context on it.

        An error that ends the block comes out as itself, not wrapped in the single-member
        ExceptionGroup the pool's task group would make of it.
        """
        try:
            async with (
                NodePool(
                    config,
                    call_timeout=call_timeout,
                    max_concurrency=max_concurrency,
                    **pool_options,
                ) as pool,
                cls(pool, config) as ctx,
            ):
                yield ctx
        except BaseExceptionGroup as group:
            leaf = sole_leaf(group)
            if leaf is None:
                raise
            raise leaf from None

    @property
    def namespace(self) -> str:
        """The namespace of the agent pods."""
        return self.config.namespace

    @property
    def call_timeout(self) -> float:
        """The deadline of one node call (and of one whole fan-out), in seconds."""
        return self.pool.call_timeout

    async def api(self) -> KubeApi:
        """The cluster's API clients: the pool's own, or opened here on first use.

        Raises :class:`broker.errors.ConfigError` when no cluster configuration is usable.
        """
        if self.pool.api is not None:
            return self.pool.api
        async with self._api_lock:
            if self._own_api is None:
                self._own_api = await KubeApi.open(self.config)
            return self._own_api

    async def targets(self, refresh: bool = False) -> list[NodeTarget]:
        """Every GPU node with its agent pod (ready or not, with the reason)."""
        return await self.pool.discover(refresh)

    async def aclose(self) -> None:
        """Close the API clients this context opened (not the pool's)."""
        api, self._own_api = self._own_api, None
        if api is not None:
            with anyio.CancelScope(shield=True):
                await api.aclose()

    async def __aenter__(self) -> BrokerContext:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
