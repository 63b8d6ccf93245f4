"""What every broker tool needs, and the one owner of the cluster connection.

``BrokerContext.open(config)`` opens the API clients (:class:`KubeApi`) and the cached
:class:`Discovery`, and hands the :class:`NodePool` what it needs: a ``connect`` function
(pods/exec to one node's agent) and ``discover`` (the GPU nodes). Closing the context
closes the pool, then the API clients. A context built around an injected pool (tests,
``BrokerContext(pool)``) opens API clients only on demand and closes only those.

Stable API (other modules code against it):

    async with BrokerContext.open(config, call_timeout=30) as ctx: ...
    ctx.pool            NodePool (open)
    ctx.config          ClusterConfig (kubeconfig, context, namespace, request_timeout)
    ctx.namespace       str: where the agent pods live (default gpu-diagnostics)
    ctx.call_timeout    float: one node's deadline (its own open + call), seconds
    ctx.warnings        list[str]: discovery caveats (e.g. no RBAC to list nodes)
    await ctx.api()     KubeApi: ``.rest`` (kubernetes_asyncio ApiClient), ``.server``,
                        ``.namespace``, ``refresh_credentials()``; raises ConfigError
    await ctx.targets() list[NodeTarget]: every GPU node, ready or not (cached)
    await ctx.in_context(name)  BrokerContext of another kubeconfig context (opened once,
                        with the same options, closed with this one); raises ConfigError
    ctx.context_name    str | None: this context's kubeconfig context
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from broker.errors import ApiUnavailable, BrokerError, sole_leaf
from broker.fleet.pool import NodePool
from broker.kube.config import ClusterConfig, KubeApi
from broker.kube.discovery import Discovery, NodeTarget
from broker.transport import Connect, TransportStreams

__all__ = ["BrokerContext", "exec_connect"]


def exec_connect(api: KubeApi, agent_command: Sequence[str]) -> Connect:
    """The pool's ``connect``: exec ``agent_command`` in the node's agent pod."""
    from broker.transport.exec import open_exec_streams

    command = list(agent_command)

    def connect(target: NodeTarget) -> AbstractAsyncContextManager[TransportStreams]:
        return open_exec_streams(api, target, command)

    return connect


@dataclass
class BrokerContext:
    """The open pool plus the Kubernetes API and discovery it runs on."""

    pool: NodePool
    config: ClusterConfig = field(default_factory=ClusterConfig)
    discovery: Discovery | None = None
    _api: KubeApi | None = field(default=None, repr=False)
    _own_api: KubeApi | None = field(default=None, init=False, repr=False)
    _api_lock: anyio.Lock = field(default_factory=anyio.Lock, init=False, repr=False)
    _options: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _siblings: dict[str, _Sibling] = field(default_factory=dict, init=False, repr=False)
    _tg: anyio.abc.TaskGroup | None = field(default=None, init=False, repr=False)
    _closing: anyio.Event = field(default_factory=anyio.Event, init=False, repr=False)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: ClusterConfig,
        *,
        call_timeout: float = 30.0,
        agent_command: Sequence[str] = ("gpu-agent",),
        discovery_ttl: float = 30.0,
        **pool_options: Any,
    ) -> AsyncIterator[BrokerContext]:
        """Open the cluster connection and a NodePool on it (options as for NodePool).

        An error that ends the block comes out as itself, not wrapped in the single-member
        ExceptionGroup the pool's task group would make of it.
        """
        api = await KubeApi.open(config)
        try:
            discovery = Discovery(api, ttl_s=discovery_ttl)
            async with (
                NodePool(
                    connect=exec_connect(api, agent_command),
                    discover=discovery.targets,
                    on_stale=discovery.invalidate,
                    call_timeout=call_timeout,
                    **pool_options,
                ) as pool,
                cls(pool, config, discovery, api) as ctx,
            ):
                ctx._options = {
                    "call_timeout": call_timeout,
                    "agent_command": agent_command,
                    "discovery_ttl": discovery_ttl,
                    **pool_options,
                }
                yield ctx
        except BaseExceptionGroup as group:
            leaf = sole_leaf(group)
            if leaf is None:
                raise
            raise leaf from None
        finally:
            with anyio.CancelScope(shield=True):  # no leaked aiohttp sessions
                await api.aclose()

    @property
    def namespace(self) -> str:
        """The namespace of the agent pods."""
        return self.config.namespace

    @property
    def call_timeout(self) -> float:
        """One node's deadline (its own open and call), in seconds."""
        return self.pool.call_timeout

    @property
    def warnings(self) -> list[str]:
        """Discovery caveats (e.g. no RBAC to list nodes)."""
        return list(self.discovery.warnings) if self.discovery else []

    async def api(self) -> KubeApi:
        """The cluster's API clients: the context's own, or opened here on first use.

        Raises :class:`broker.errors.ConfigError` when no cluster configuration is usable.
        """
        if self._api is not None:
            return self._api
        async with self._api_lock:
            if self._own_api is None:
                self._own_api = await KubeApi.open(self.config)
            return self._own_api

    async def targets(self, refresh: bool = False) -> list[NodeTarget]:
        """Every GPU node with its agent pod (ready or not, with the reason)."""
        return await self.pool.discover(refresh)

    @property
    def context_name(self) -> str | None:
        """This context's kubeconfig context (None in-cluster or when not known)."""
        return self._api.context if self._api is not None else self.config.context

    async def in_context(self, name: str | None) -> BrokerContext:
        """The broker context for kubeconfig context ``name``: this one for None or its
        own name, otherwise one opened on first use (same options) and kept until this
        one closes. Raises :class:`broker.errors.ConfigError` (unknown context...)."""
        if name is None or name == self.context_name:
            return self
        sibling = self._siblings.get(name)
        if sibling is None:
            if self._tg is None:
                raise RuntimeError("use `async with BrokerContext(...)` to reach other contexts")
            sibling = self._siblings[name] = _Sibling()
            self._tg.start_soon(self._hold, name, sibling)
        await sibling.ready.wait()
        if sibling.context is None:
            raise sibling.error or ApiUnavailable(f"context {name}: could not be opened")
        return sibling.context

    async def _hold(self, name: str, sibling: _Sibling) -> None:
        """Open context ``name`` in a task of its own (its pool's task group must be left
        by the task that entered it) and keep it open until this context closes."""
        options = self._options or {"call_timeout": self.pool.call_timeout}
        config = dataclasses.replace(self.config, context=name)
        try:
            async with BrokerContext.open(config, **options) as opened:
                sibling.context = opened
                sibling.ready.set()
                await self._closing.wait()
        except BrokerError as exc:
            sibling.error = exc
        except Exception as exc:  # a sibling's failure must not end this context
            sibling.error = ApiUnavailable(f"context {name}: {type(exc).__name__}: {exc}")
        finally:  # closed or failed: the next call opens it afresh
            sibling.context = None
            sibling.ready.set()
            if self._siblings.get(name) is sibling:
                del self._siblings[name]

    async def aclose(self) -> None:
        """Close the API clients opened on demand here (not the ones ``open`` made)."""
        api, self._own_api = self._own_api, None
        if api is not None:
            with anyio.CancelScope(shield=True):
                await api.aclose()

    async def __aenter__(self) -> BrokerContext:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()  # other contexts close now, each in its own task
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                await tg.__aexit__(exc_type, exc, tb)
        finally:
            await self.aclose()


@dataclass
class _Sibling:
    """Another kubeconfig context, opened by its holder task."""

    ready: anyio.Event = field(default_factory=anyio.Event)
    context: BrokerContext | None = None
    error: BrokerError | None = None
