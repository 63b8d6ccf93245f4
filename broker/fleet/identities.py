"""One BrokerContext per caller (``--auth kubernetes``): API clients that impersonate the
caller, their own discovery cache and their own node pool. Agent sessions are never shared
between callers: an exec opened as alice carries alice's RBAC and audit trail for as long
as it stays warm, so bob must never ride on it.

Contexts open on a caller's first call, close after ``idle_s`` without calls, and the least
recently used idle one closes when ``max_callers`` are open. Tool handlers keep the one
``ctx`` they were built with: :class:`CallerContext` stands in for it and forwards each
attribute to the context of the call in progress (set by :meth:`CallerContexts.use`).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, cast

import anyio
import anyio.abc

from broker.errors import ApiUnavailable, BrokerError
from broker.fleet.context import BrokerContext
from broker.kube.auth import Identity
from broker.kube.config import ClusterConfig

__all__ = ["CallerContext", "CallerContexts", "caller_context"]

logger = logging.getLogger(__name__)

_CURRENT: contextvars.ContextVar[BrokerContext] = contextvars.ContextVar("broker_context")


@dataclass(eq=False)
class _Entry:
    identity: Identity
    ctx: BrokerContext | None = None
    error: BaseException | None = None
    ready: anyio.Event = field(default_factory=anyio.Event)
    stop: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    in_use: int = 0
    last_used: float = field(default_factory=time.monotonic)


class CallerContexts:
    """The open per-caller contexts (an async context manager; closing closes them all).

    ``context_options`` go to :meth:`BrokerContext.open` (call_timeout, max_concurrency,
    pool options) for every caller.
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        max_callers: int = 64,
        idle_s: float = 900.0,
        **context_options: Any,
    ) -> None:
        if max_callers < 1 or idle_s <= 0:
            raise ValueError("max_callers must be at least 1 and idle_s positive")
        self.config = config
        self.max_callers = max_callers
        self.idle_s = idle_s
        self._options = context_options
        self._entries: dict[Identity, _Entry] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self.opened = 0  # contexts opened so far (tests, metrics)

    async def __aenter__(self) -> CallerContexts:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        for entry in list(self._entries.values()):
            entry.stop.set()
        tg, self._tg = self._tg, None
        if tg is not None:
            with anyio.move_on_after(10, shield=True):
                for entry in list(self._entries.values()):
                    await entry.done.wait()
            tg.cancel_scope.cancel()
            await tg.__aexit__(exc_type, exc, tb)
        return None

    @property
    def open_callers(self) -> int:
        return len(self.identities)

    @property
    def identities(self) -> list[Identity]:
        """The callers whose contexts are open now."""
        return [e.identity for e in self._entries.values() if e.ctx is not None]

    @asynccontextmanager
    async def use(self, identity: Identity) -> AsyncIterator[BrokerContext]:
        """``identity``'s context for the duration of one call; handlers built on
        :func:`caller_context` see it. Raises BrokerError when it cannot be opened."""
        entry = await self._acquire(identity)
        token = _CURRENT.set(cast(BrokerContext, entry.ctx))
        try:
            yield cast(BrokerContext, entry.ctx)
        finally:
            _CURRENT.reset(token)
            entry.in_use -= 1
            entry.last_used = time.monotonic()

    async def _acquire(self, identity: Identity) -> _Entry:
        if self._tg is None:
            raise RuntimeError("CallerContexts is not open: use `async with CallerContexts(...)`")
        for _ in range(3):  # a context closing as we arrive: take the next one
            entry = self._entries.get(identity)
            if entry is None or entry.stop.is_set():
                self._evict()
                entry = _Entry(identity)
                self._entries[identity] = entry
                self._tg.start_soon(self._own, entry)
            entry.in_use += 1
            try:
                await entry.ready.wait()
            except BaseException:
                entry.in_use -= 1
                raise
            if entry.ctx is not None and not entry.stop.is_set():
                return entry
            entry.in_use -= 1
            if entry.ctx is None and entry.error is not None:
                break
        error = entry.error if entry is not None else None
        if isinstance(error, BrokerError):
            raise error
        raise ApiUnavailable(
            f"could not open the Kubernetes API clients for {identity.user}: {error}; "
            "check the broker's log"
        )

    def _evict(self) -> None:
        """Close the least recently used idle context when the cap is reached."""
        live = [e for e in self._entries.values() if not e.stop.is_set()]
        if len(live) < self.max_callers:
            return
        idle = [e for e in live if e.in_use == 0 and e.ready.is_set()]
        if idle:
            min(idle, key=lambda e: e.last_used).stop.set()
        # else: every context is busy; go over the cap rather than fail a caller

    async def _own(self, entry: _Entry) -> None:
        """Open the caller's context, keep it until idle or told to stop, close it."""
        config = replace(self.config, impersonate=entry.identity)
        try:
            async with BrokerContext.open(config, **self._options) as ctx:
                entry.ctx = ctx
                self.opened += 1
                entry.ready.set()
                while not entry.stop.is_set():
                    quiet = time.monotonic() - entry.last_used
                    if entry.in_use == 0 and quiet >= self.idle_s:
                        entry.stop.set()  # now, so no call joins a closing context
                        break
                    wait = self.idle_s if entry.in_use else max(0.05, self.idle_s - quiet)
                    with anyio.move_on_after(wait):
                        await entry.stop.wait()
        except Exception as exc:
            entry.error = exc
            logger.warning("caller %s: %s", entry.identity.user, exc)
        finally:
            entry.stop.set()
            entry.ctx = None
            entry.ready.set()
            entry.done.set()
            if self._entries.get(entry.identity) is entry:
                del self._entries[entry.identity]


class CallerContext:
    """Stands in for a BrokerContext: every attribute is the current call's context's."""

    def __getattr__(self, name: str) -> Any:
        try:
            ctx = _CURRENT.get()
        except LookupError:
            raise RuntimeError(
                f"BrokerContext.{name} used outside a caller's call: with --auth kubernetes "
                "the context exists per caller (CallerContexts.use)"
            ) from None
        return getattr(ctx, name)


def caller_context() -> BrokerContext:
    """A BrokerContext for tool registration that resolves to the caller's per call."""
    return cast(BrokerContext, CallerContext())
