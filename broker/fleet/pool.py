"""One MCP client session per GPU node, opened lazily, kept warm, fanned out across.

The pool knows no Kubernetes: it is handed a ``connect`` function (streams to one node's
agent) and a ``discover`` function (the GPU nodes), both wired by
:class:`broker.fleet.context.BrokerContext` (tests inject local agents instead).

Each node's session is owned by one task in the pool's task group (anyio scopes must
be entered and left by the same task); callers in any task share it. The owner opens
the transport, initialises MCP, lists the agent's tools once (unless the agent is of the
version whose contract the broker carries: see ``_ToolCatalog``), then keeps the session
honest: it pings when idle so proxies and the kubelet's streaming idle timeout see
traffic, closes it after ``idle_timeout``, and ends it at the first sign of a broken
stream so that the next call re-opens it.

Deadlines: a node's own deadline (``call_timeout``) covers its own open and call, never
its wait for an open slot; a fan-out's overall deadline (``sweep_timeout``) bounds the
whole sweep, and a node still queued when it runs out is reported as ``queued`` (not
reached), apart from nodes that did not answer (``timeout``). How many sessions open at
once adapts to the API server (:class:`~broker.fleet.limiter.AdaptiveLimit`). Up to
``max_sessions`` sessions (default: the cluster's size) stay open; beyond that the least
recently used idle one is closed. Cancelling the awaiting task cancels the node calls,
and the SDK tells each agent with ``notifications/cancelled``.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from agent import __version__ as AGENT_VERSION  # the version of agent.catalog
from agent.catalog import AGENT_NAME, STRUCTURED_ONLY, TOOL_DEFINITIONS
from broker import __version__
from broker.errors import (
    AgentProtocolError,
    ApiUnavailable,
    BrokerError,
    CallCancelled,
    NodeNotReady,
    NodeTimeout,
    NotReached,
    ToolMissing,
    UnknownNode,
    as_broker_error,
)
from broker.fleet import observe
from broker.fleet.breaker import CircuitBreaker
from broker.fleet.heap import HeapKeeper
from broker.fleet.limiter import AdaptiveLimit
from broker.kube.discovery import NodeTarget
from broker.transport import Connect, ReadStream

logger = logging.getLogger(__name__)

__all__ = ["Connect", "Discover", "NodePool", "NodeResult", "NodeTarget", "Progress"]

Discover = Callable[[bool], Awaitable[list[NodeTarget]]]
Progress = Callable[[int, int, "NodeResult"], Awaitable[None]]

_CLIENT_INFO = types.Implementation(name="k8s-gpu-mcp-broker", version=__version__)
# The pool reads structuredContent only: the agent may skip the answer's text copy.
_EXTENSIONS: dict[str, dict[str, Any]] = {STRUCTURED_ONLY: {}}
_CLOSE_GRACE_S = 5.0


@dataclass
class NodeResult:
    """The outcome of one tool call on one node."""

    node: str
    ok: bool
    result: dict[str, Any] | None  # the tool's structuredContent (also when isError, if any)
    error: str | None
    error_kind: str | None  # unreachable|rbac|timeout|queued|agent_error|tool_missing|
    #                         not_ready|protocol|cancelled|circuit_open
    elapsed_s: float

    @classmethod
    def failure(cls, node: str, error: BrokerError, elapsed_s: float) -> NodeResult:
        return cls(node, False, None, str(error), error.kind, elapsed_s)


class _ToolCatalog:
    """The agent's tools/list, shared by every session that got the same listing.

    Interning matters at scale: 1,000 nodes running one agent version hold one copy
    of the tool definitions (and one compiled output-schema validator per tool).

    An agent of the very version this broker carries the contract of
    (:mod:`agent.catalog`) is not asked: its catalog is :meth:`bundled` (``assumed``).
    The listing is the largest message of a session's opening (17 KiB to send, relay,
    parse and validate per node); a tool such an agent lacks is still refused by it
    ("Unknown tool"), which the pool reports as ToolMissing.
    """

    _interned: dict[tuple[str, ...], list[_ToolCatalog]] = {}  # by tool names
    _bundled: _ToolCatalog | None = None

    def __init__(
        self, tools: list[dict[str, Any]], listed: list[types.Tool] | None, assumed: bool = False
    ) -> None:
        self.tools = tools
        self.listed = listed
        self.assumed = assumed
        self.names = frozenset(t["name"] for t in tools)
        self._schemas = {t["name"]: t.get("outputSchema") for t in tools}
        self._validators: dict[str, Any] = {}
        self.validated: set[str] = set()  # tools whose first answer was checked

    @classmethod
    def intern(cls, listing: types.ListToolsResult) -> _ToolCatalog:
        # Model equality, not a dump of every listing: 0.6 ms per session opened.
        candidates = cls._interned.setdefault(tuple(t.name for t in listing.tools), [])
        for found in candidates:
            if found.listed == listing.tools:
                return found
        tools = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in listing.tools]
        found = cls(tools, listing.tools)
        candidates.append(found)
        return found

    @classmethod
    def bundled(cls) -> _ToolCatalog:
        """The tools of the agent version whose contract this broker carries."""
        if cls._bundled is None:
            cls._bundled = cls([dict(t) for t in TOOL_DEFINITIONS], None, assumed=True)
        return cls._bundled

    @staticmethod
    def covers(init: types.InitializeResult) -> bool:
        """Whether the bundled catalog is this agent's: the same agent at the same
        version, on a protocol version whose listing carries every field."""
        info = init.server_info
        return (
            info is not None
            and info.name == AGENT_NAME
            and info.version == AGENT_VERSION
            and init.protocol_version >= "2025-06-18"
        )

    def check(self, tool: str, structured: Any) -> str | None:
        """Why ``structured`` breaks the tool's outputSchema (None when it conforms)."""
        schema = self._schemas.get(tool)
        if not schema:
            return None
        validator = self._validators.get(tool)
        if validator is None:
            validators: Any = importlib.import_module("jsonschema.validators")
            cls = validators.validator_for(schema)
            validator = self._validators[tool] = cls(schema)
        error = next(iter(validator.iter_errors(structured)), None)
        return None if error is None else f"{error.message} at {list(error.absolute_path)}"


async def _listed(client: ClientSession) -> _ToolCatalog:
    """The agent's own tools/list, interned."""
    listing = await client.send_request(types.ListToolsRequest(), types.ListToolsResult)
    return _ToolCatalog.intern(listing)


class _Flag:
    """An event that costs nothing until someone waits for it.

    Each ``anyio.Event`` holds an ``asyncio.Event`` and its waiter deque (760 bytes); a
    session has three, most never waited for or set long before, which is 11 MiB at
    5,000 open sessions. The event is made by the first waiter and dropped once set.
    """

    __slots__ = ("_set", "_event")

    def __init__(self) -> None:
        self._set = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self._set = True
        event, self._event = self._event, None
        if event is not None:
            event.set()  # its waiters hold it until they wake

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            await anyio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


class _Session:
    """One node's MCP session and its owner task's state."""

    __slots__ = (
        "target",
        "client",
        "catalog",
        "agent_version",
        "ready",
        "stop",
        "done",
        "error",
        "failure",
        "in_flight",
        "last_used",
        "last_seen",
        "open_started",
        "ready_at",
        "watched",
        "relist",
    )

    def __init__(self, target: NodeTarget) -> None:
        self.target = target
        self.client: ClientSession | None = None
        self.catalog: _ToolCatalog | None = None
        self.agent_version: str | None = None
        self.ready = _Flag()
        self.stop = _Flag()
        self.done = _Flag()
        self.error: BrokerError | None = None  # the open failed
        self.failure: BrokerError | None = None  # the stream failed after opening
        self.in_flight = 0
        now = time.monotonic()
        self.last_used = now
        self.last_seen = now
        self.open_started: float | None = None  # left the queue: the node's own clock runs
        self.ready_at = 0.0
        self.watched: _Watched | None = None
        self.relist = False  # a tool was missing: close once idle, so the next open re-lists

    @property
    def usable(self) -> bool:
        return self.client is not None and self.failure is None and not self.stop.is_set()


class _Watched:
    """The transport's read stream as the session sees it, watched by the pool.

    Every message refreshes the session's ``last_seen``. An exception item (the
    transport explaining why the stream failed) is recorded as the session's failure
    and ends the stream, as does end-of-stream itself: either way the session stops,
    pending requests fail at once with the recorded cause, and the next call re-opens.
    """

    __slots__ = ("_inner", "_session", "_ended", "_last")

    def __init__(self, inner: ReadStream[SessionMessage | Exception], session: _Session) -> None:
        self._inner = inner
        self._session = session
        self._ended = False
        self._last: SessionMessage | None = None

    async def receive(self) -> SessionMessage | Exception:
        if self._ended:
            raise anyio.EndOfStream
        try:
            item = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._end(None)
            raise anyio.EndOfStream from None
        if isinstance(item, Exception):
            self._end(item)
            raise anyio.EndOfStream
        self._session.last_seen = time.monotonic()
        self._last = item
        return item

    def forget_last(self) -> None:
        """Drop the payload of the last answer delivered, once its caller has it.

        The SDK's read loop holds its last message until the next one arrives: for an
        idle session that is one whole answer (about 30 KiB for an 8-GPU health
        result) per open session, 150 MiB at 5,000 nodes.
        """
        last, self._last = self._last, None
        if last is not None and isinstance(last.message, types.JSONRPCResponse):
            last.message.result = {}

    def _end(self, error: Exception | None) -> None:
        self._ended = True
        s = self._session
        if error is not None and s.failure is None:
            s.failure = as_broker_error(error, s.target.node)
        s.stop.set()

    def __aiter__(self) -> _Watched:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _Watched:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None


class NodePool:
    """Sessions to every GPU node's agent, and calls across them.

    ``connect(target)`` opens the streams to one node's agent; ``discover(refresh)``
    lists the GPU nodes (used to resolve names in :meth:`call` and to size the pool).
    ``on_stale()`` is told when a node turned out not to be where discovery said.

    ``max_in_flight`` bounds a fan-out's node calls in flight (answers arriving faster
    than they are digested pile up otherwise: 5,000 at once cost 100 MiB and made the
    simulated API server 60% slower); ``max_concurrency`` is the ceiling of the adaptive
    open limit; ``sweep_timeout``
    (default ``max(call_timeout, 120)``) bounds a whole fan-out; ``max_sessions``
    caps open sessions (default: the number of GPU nodes discovered, least recently
    used closed first).

    ``validate_output`` checks answers against the tool's ``outputSchema``: ``"first"``
    (default) the first answer per tool from each agent build (same tools/list), since
    the build decides the shape; ``"always"`` every answer (jsonschema costs 0.7-3 ms per
    health result: per session it was a third of a cold sweep's CPU); ``"never"``.
    """

    def __init__(
        self,
        *,
        connect: Connect,
        discover: Discover,
        max_concurrency: int = 256,
        call_timeout: float = 30.0,
        sweep_timeout: float | None = None,
        max_sessions: int | None = None,
        max_in_flight: int = 256,
        idle_timeout: float = 300.0,
        ping_interval: float = 30.0,
        validate_output: Literal["first", "always", "never"] = "first",
        breaker: CircuitBreaker | None = None,
        on_stale: Callable[[], None] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_sessions is not None and max_sessions < 1:
            raise ValueError("max_sessions must be at least 1 (or None: the cluster's size)")
        if validate_output not in ("first", "always", "never"):
            raise ValueError("validate_output is 'first', 'always' or 'never'")
        if call_timeout <= 0 or idle_timeout <= 0 or ping_interval <= 0:
            raise ValueError("call_timeout, idle_timeout and ping_interval must be positive")
        if sweep_timeout is not None and sweep_timeout <= 0:
            raise ValueError("sweep_timeout must be positive")
        self.max_concurrency = max_concurrency
        self.call_timeout = call_timeout
        self.sweep_timeout = sweep_timeout or max(call_timeout, 120.0)
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.ping_interval = ping_interval
        self.validate_output = validate_output
        self.breaker = breaker  # None: every node is always tried
        self._connect = connect
        self._discover = discover
        self._on_stale = on_stale
        self._targets: dict[str, NodeTarget] = {}
        self._listed: list[NodeTarget] | None = None
        self._sessions: dict[str, _Session] = {}  # least recently used first
        self.opens = AdaptiveLimit(max_concurrency, start=min(32, max_concurrency))
        # Answers arriving faster than the event loop digests them pile up (30 KiB of
        # objects each): bounding the calls in flight bounds that, at no cost in
        # throughput once the CPU is the limit.
        self._in_flight = anyio.CapacityLimiter(max_in_flight)
        self._heap = HeapKeeper()
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False
        self._stats = {
            "opened": 0,
            "reopened": 0,
            "open_failures": 0,
            "closed_idle": 0,
            "closed_broken": 0,
            "evicted": 0,
            "pings": 0,
            "calls": 0,
            "timeouts": 0,
            "not_reached": 0,
        }

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> NodePool:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            with anyio.CancelScope(shield=True):
                await self.aclose()
        finally:
            tg, self._tg = self._tg, None
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(exc_type, exc, tb)  # re-raises the body's error
        return None

    async def aclose(self) -> None:
        """Close every session (each politely: stdin half-closed, websocket closed)."""
        self._closed = True
        sessions = list(self._sessions.values())
        for s in sessions:
            s.stop.set()
        with anyio.move_on_after(_CLOSE_GRACE_S):
            for s in sessions:
                await s.done.wait()

    def _require_open(self) -> anyio.abc.TaskGroup:
        if self._tg is None or self._closed:
            raise RuntimeError("NodePool is not open: use `async with NodePool(...) as pool`")
        return self._tg

    # -- discovery ---------------------------------------------------------------------
    async def discover(self, refresh: bool = False) -> list[NodeTarget]:
        """Every GPU node with its agent pod (ready or not, with the reason)."""
        targets = await self._discover(refresh)
        if targets is not self._listed:  # discovery hands back its cached list while fresh
            self._listed = targets
            self._targets = {t.node: t for t in targets}
        return targets

    async def resolve(self, nodes: Sequence[str]) -> list[NodeTarget]:
        """The targets of ``nodes`` (re-listing once for a name not known yet).
        Raises :class:`UnknownNode`."""
        targets = await self.discover()
        unknown = [n for n in nodes if n not in self._targets]
        if unknown:
            targets = await self.discover(refresh=True)  # maybe a node just joined
            unknown = [n for n in nodes if n not in self._targets]
        if unknown:
            raise UnknownNode(unknown, [t.node for t in targets])
        return [self._targets[n] for n in nodes]

    # -- calls -------------------------------------------------------------------------
    async def call(self, node: str, tool: str, arguments: dict[str, Any]) -> NodeResult:
        """Call ``tool`` on one node. Raises :class:`UnknownNode`; otherwise never raises
        for the node's failures (they come back in the :class:`NodeResult`)."""
        self._require_open()
        (target,) = await self.resolve([node])
        sweep_deadline = time.monotonic() + self.sweep_timeout
        return await self._checked_call(target, tool, arguments, sweep_deadline)

    async def fan_out(
        self,
        targets: Sequence[NodeTarget],
        tool: str,
        arguments: dict[str, Any],
        on_progress: Progress | None = None,
        keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> list[NodeResult]:
        """Call ``tool`` on every target concurrently; results in the order given.

        Each node has ``call_timeout`` for its own open and call; the whole fan-out has
        ``sweep_timeout``. Every failure is a result, never a raise. ``keep`` cuts each
        answer down as it arrives (only the digest is held until the sweep ends).
        """
        self._require_open()
        targets = list({t.node: t for t in targets}.values())
        observe.fan_out(len(targets))
        deadline = time.monotonic() + self.sweep_timeout
        results: list[NodeResult | None] = [None] * len(targets)
        done = 0

        async def one(index: int, target: NodeTarget) -> None:
            nonlocal done
            got_slot, slot = False, object()  # one limiter, shared by concurrent sweeps
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                await self._in_flight.acquire_on_behalf_of(slot)
                got_slot = True
            if got_slot:  # a node's own clock starts once it has a slot
                try:
                    result = await self._checked_call(target, tool, arguments, deadline)
                finally:
                    self._in_flight.release_on_behalf_of(slot)
            else:
                self._stats["not_reached"] += 1
                gone = NotReached(target.node, self.sweep_timeout)
                result = NodeResult.failure(target.node, gone, self.sweep_timeout)
            if keep is not None and result.result is not None:
                result.result = keep(result.result)
            results[index] = result
            done += 1
            if on_progress is not None:
                try:
                    with anyio.move_on_after(max(1.0, deadline - time.monotonic())):
                        await on_progress(done, len(targets), result)
                except Exception:  # a progress sink must not sink the sweep
                    logger.exception("on_progress callback failed")

        async with anyio.create_task_group() as tg:
            for i, target in enumerate(targets):
                tg.start_soon(one, i, target)
        self._heap.settle_if_due(len(self._sessions))
        return [r for r in results if r is not None]

    async def list_tools(self, node: str) -> list[dict[str, Any]]:
        """The node agent's tools/list (opens the session if needed). Raises BrokerError."""
        self._require_open()
        (target,) = await self.resolve([node])
        with anyio.move_on_after(self.sweep_timeout):
            s = await self._session(target)
            assert s.catalog is not None and s.client is not None
            if s.catalog.assumed:  # asked for: what this agent itself lists
                try:
                    with anyio.fail_after(self.call_timeout):
                        s.catalog = await _listed(s.client)
                except TimeoutError:
                    raise NodeTimeout(node, self.call_timeout, "tools/list") from None
                except MCPError as exc:
                    raise s.failure or as_broker_error(exc, node) from None
            return list(s.catalog.tools)
        raise NotReached(node, self.sweep_timeout)

    async def _checked_call(
        self, target: NodeTarget, tool: str, arguments: dict[str, Any], deadline: float
    ) -> NodeResult:
        """:meth:`_call_target` behind the node's circuit breaker, reported to observers."""
        breaker = self.breaker
        skipped = breaker.acquire(target.node) if breaker is not None else None
        if skipped is not None:
            result = NodeResult.failure(target.node, skipped, 0.0)
        elif breaker is None:
            result = await self._call_target(target, tool, arguments, deadline)
        else:
            try:
                result = await self._call_target(target, tool, arguments, deadline)
            except BaseException:  # cancelled: a trial call frees the trial slot
                breaker.record(target.node, "cancelled")
                raise
            breaker.record(target.node, result.error_kind, result.error)
        observe.node_call(target.node, result.error_kind, result.elapsed_s)
        return result

    async def _call_target(
        self, target: NodeTarget, tool: str, arguments: dict[str, Any], sweep_deadline: float
    ) -> NodeResult:
        started = time.monotonic()
        node = target.node
        self._stats["calls"] += 1
        session: _Session | None = None
        own_deadline: float | None = None
        try:
            if not target.ready:
                raise NodeNotReady(node, target.reason or "agent pod not ready")
            with anyio.move_on_after(max(0.0, sweep_deadline - started)):
                # Queued for an open slot, then the open (bounded by its own deadline).
                session = await self._session(target)
                # The node's clock started when its open left the queue (or now, warm).
                opened_for_us = session.open_started is not None and session.ready_at >= started
                own_start = session.open_started if opened_for_us else time.monotonic()
                assert own_start is not None
                own_deadline = own_start + self.call_timeout
                with anyio.fail_after(max(0.0, own_deadline - time.monotonic())):
                    return await self._invoke(session, tool, arguments, started)
            # The sweep's deadline ran out first.
            if session is None:
                self._stats["not_reached"] += 1
                err: BrokerError = NotReached(node, self.sweep_timeout)
            else:
                self._stats["timeouts"] += 1
                err = NodeTimeout(
                    node, round(time.monotonic() - started, 1), "the sweep's deadline"
                )
        except TimeoutError:
            self._stats["timeouts"] += 1
            if session is not None:
                session.stop.set()  # a hung agent: start afresh next time
            err = NodeTimeout(node, self.call_timeout, "tool call")
        except Exception as exc:  # every node failure becomes a result, never a raise
            err = as_broker_error(exc, node)
            if self._closed:
                err = CallCancelled(f"node {node}: the broker shut down during the call ({err})")
            if isinstance(err, NodeNotReady) and self._on_stale is not None:
                self._on_stale()  # re-list next time: the pod may be back (or gone)
        return NodeResult.failure(node, err, time.monotonic() - started)

    async def _session(self, target: NodeTarget) -> _Session:
        """A usable session for ``target``: the warm one, or a freshly opened one."""
        tg = self._require_open()
        last: BrokerError | None = None
        for _attempt in range(2):
            s = self._sessions.get(target.node)
            stale = s is not None and (
                (s.ready.is_set() and not s.usable) or s.target.pod != target.pod
            )
            ours = s is None or stale
            if ours:
                if s is not None:
                    s.stop.set()
                    self._stats["reopened"] += 1
                s = _Session(target)
                self._sessions[target.node] = s
                tg.start_soon(self._own, s)
            assert s is not None
            await s.ready.wait()
            if s.error is not None:
                if ours or last is not None:
                    raise s.error
                # We joined an open begun before this call (perhaps before a fault was
                # healed): its failure is not this call's answer, so open once more.
                last = s.error
                continue
            # The keepalive pings every quiet session each ping_interval (plus jitter), so
            # one quiet for longer missed its keepalive answer: probe it before trusting
            # it (half-open TCP, a dead proxy). Healthy idle sessions are not probed: at
            # 5,000 nodes a probe per call would double a warm sweep.
            quiet = time.monotonic() - s.last_seen > self.ping_interval * 1.5
            if s.usable and (not quiet or await self._alive(s)):
                self._touch(s)
                return s
            last = s.failure  # died before or during the liveness ping: re-open once
        raise last or ApiUnavailable(f"node {target.node}: the session could not be kept open")

    def _touch(self, s: _Session) -> None:
        """Mark ``s`` most recently used (the dict keeps least recently used first)."""
        node = s.target.node
        if self._sessions.get(node) is s and next(reversed(self._sessions)) != node:
            del self._sessions[node]
            self._sessions[node] = s

    def _evict(self) -> None:
        """Close least recently used idle sessions while more are open than allowed."""
        cap = self.max_sessions or len(self._targets)
        over = len(self._sessions) - cap  # O(1) when under the cap: called per open
        if not cap or over <= 0:
            return
        over = sum(1 for s in self._sessions.values() if s.usable) - cap
        for s in list(self._sessions.values()):
            if over <= 0:
                break
            if s.usable and not s.in_flight:
                s.stop.set()
                self._stats["evicted"] += 1
                over -= 1

    async def _alive(self, s: _Session) -> bool:
        """Ping before trusting a session that has been quiet (half-open TCP, dead proxy).

        Half the call timeout: a ping queued behind a busy event loop (thousands of
        sessions opening) is slow, not dead.
        """
        assert s.client is not None
        try:
            with anyio.fail_after(self.call_timeout / 2):
                await s.client.send_ping()
        except Exception as exc:
            s.failure = s.failure or as_broker_error(exc, s.target.node)
            s.stop.set()
            return False
        s.last_seen = time.monotonic()
        self._stats["pings"] += 1
        return True

    async def _invoke(
        self, s: _Session, tool: str, arguments: dict[str, Any], started: float
    ) -> NodeResult:
        assert s.client is not None and s.catalog is not None
        node = s.target.node
        if tool not in s.catalog.names:
            # Re-list next time: the container may be restarted with a newer agent in place.
            # Not now if other calls are in flight on the session (explain_failure asks one
            # node for several tools at once): closing would lose their answers too.
            s.relist = True
            if not s.in_flight:
                s.stop.set()
            raise ToolMissing(node, tool, s.agent_version)
        s.in_flight += 1
        try:
            result = await s.client.send_request(
                types.CallToolRequest(
                    params=types.CallToolRequestParams(name=tool, arguments=arguments)
                ),
                types.CallToolResult,
            )
        except MCPError as exc:
            if exc.error.code == types.CONNECTION_CLOSED:
                s.stop.set()
                raise s.failure or as_broker_error(exc, node) from None
            if exc.error.code == types.METHOD_NOT_FOUND or "unknown tool" in str(exc).lower():
                s.relist = True  # as above: the agent itself says it lacks the tool
                raise ToolMissing(node, tool, s.agent_version) from None
            raise
        finally:
            s.in_flight -= 1
            s.last_used = time.monotonic()
            if not s.in_flight and s.watched is not None:
                s.watched.forget_last()  # every caller has validated its answer by now
            if not s.in_flight and s.relist:
                s.stop.set()
        s.last_seen = s.last_used
        elapsed = time.monotonic() - started
        structured = result.structured_content
        if structured is None:
            structured = _json_from_text(result)
        if result.is_error:
            message = _text(result) or "the tool reported an error"
            return NodeResult(
                node, False, structured, f"node {node}: {message}", "agent_error", elapsed
            )
        check = self.validate_output == "always" or (
            self.validate_output == "first" and tool not in s.catalog.validated
        )
        if check:
            problem = s.catalog.check(tool, structured)
            if problem is not None:  # not marked checked: the next answer is checked too
                raise AgentProtocolError(
                    f"node {node}: {tool} returned data that breaks its outputSchema: {problem}"
                )
            s.catalog.validated.add(tool)
        return NodeResult(node, True, structured, None, None, elapsed)

    # -- the owner task of one session -------------------------------------------------
    async def _own(self, s: _Session) -> None:
        """Open the session, keep it until told to stop or it breaks, then close it.

        Opening holds one of the adaptive open slots; an open session holds none.
        """
        holding = False
        opened_in: float | None = None
        throttled = False
        try:
            await self.opens.acquire(s)
            holding = True
            s.open_started = time.monotonic()
            if s.stop.is_set():
                raise CallCancelled(f"node {s.target.node}: the session was closed")
            async with self._open(s):
                opened_in = time.monotonic() - s.open_started
                self.opens.release(s)
                self.opens.observe(opened_in)
                holding = False
                self._stats["opened"] += 1
                observe.session_opened()
                self._heap.opened()
                s.ready_at = time.monotonic()
                s.ready.set()
                self._evict()
                await self._keep(s)
        except BaseException as exc:
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            if not s.ready.is_set():
                s.error = (
                    CallCancelled(f"node {s.target.node}: the broker is shutting down")
                    if cancelled
                    else as_broker_error(exc, s.target.node)
                )
                throttled = "429" in str(s.error) or "throttl" in str(s.error).lower()
                self._stats["open_failures"] += 1
                observe.session_failed(s.error.kind)
            elif not cancelled:
                s.failure = s.failure or as_broker_error(exc, s.target.node)
            if cancelled or not isinstance(exc, Exception):
                raise
            logger.debug("session to %s ended: %s", s.target.node, exc)
        finally:
            if s.client is not None and s.ready.is_set():
                observe.session_closed()
            if holding:
                self.opens.release(s)
                if throttled or isinstance(s.error, NodeTimeout):
                    self.opens.observe(None, throttled=True)
            s.stop.set()
            s.ready_at = s.ready_at or time.monotonic()
            s.ready.set()
            s.done.set()
            self._forget(s)

    @asynccontextmanager
    async def _open(self, s: _Session) -> AsyncIterator[None]:
        """Transport, MCP initialize (and tools/list), bounded by the call timeout."""
        opened = False
        try:
            with anyio.fail_after(self.call_timeout) as scope:
                async with self._connect(s.target) as (read, write):
                    watched = s.watched = _Watched(read, s)
                    async with ClientSession(
                        watched, write, client_info=_CLIENT_INFO, extensions=_EXTENSIONS
                    ) as client:
                        try:
                            init = await client.initialize()
                            if _ToolCatalog.covers(init):
                                s.catalog = _ToolCatalog.bundled()
                            else:
                                s.catalog = await _listed(client)
                        except MCPError as exc:
                            if exc.error.code == types.CONNECTION_CLOSED and s.failure:
                                raise s.failure from None
                            raise
                        s.client = client
                        s.agent_version = init.server_info.version if init.server_info else None
                        del init  # this frame lives as long as the session
                        s.last_seen = s.last_used = time.monotonic()
                        scope.deadline = float("inf")  # the deadline was for opening only
                        opened = True
                        yield
        except TimeoutError:
            if opened:
                raise
            raise NodeTimeout(
                s.target.node, self.call_timeout, "opening the session: MCP initialize"
            ) from None

    async def _keep(self, s: _Session) -> None:
        """Idle loop: ping when quiet, close when idle too long or when told to stop."""
        assert s.client is not None
        # Spread keepalives: sessions opened in one sweep would otherwise ping in bursts.
        interval = self.ping_interval * (1.0 + (hash(s.target.node) % 997) / 997 * 0.2)
        while not s.stop.is_set():
            now = time.monotonic()
            if s.in_flight:  # busy: each call has its own deadline; look again later
                wake = now + interval
            else:
                wake = min(s.last_seen + interval, s.last_used + self.idle_timeout)
            with anyio.move_on_after(max(0.01, wake - now)):
                await s.stop.wait()
            if s.stop.is_set():
                if s.failure is not None:
                    self._stats["closed_broken"] += 1
                return
            now = time.monotonic()
            if s.in_flight:
                continue
            if now >= s.last_used + self.idle_timeout:
                self._stats["closed_idle"] += 1
                return
            if now >= s.last_seen + interval and not await self._alive(s):
                self._stats["closed_broken"] += 1
                return

    def _forget(self, s: _Session) -> None:
        if self._sessions.get(s.target.node) is s:
            del self._sessions[s.target.node]
            self._heap.closed(len(self._sessions))

    def stats(self) -> dict[str, int]:
        """Counters for diagnostics and the bench: open sessions, re-opens, failures..."""
        open_now = sum(1 for s in self._sessions.values() if s.usable)
        opening = sum(1 for s in self._sessions.values() if not s.ready.is_set())
        return {
            "open_sessions": open_now,
            "opening": opening,
            "open_limit": self.opens.limit,
            "open_limit_peak": self.opens.peak,
            "open_limit_cuts": self.opens.cuts,
            "gc_settles": self._heap.settles,
            **self._stats,
        }


def _text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent)).strip()


def _json_from_text(result: types.CallToolResult) -> dict[str, Any] | None:
    text = _text(result)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
