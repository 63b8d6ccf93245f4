"""JSON-RPC 2.0 / MCP server core over newline-delimited messages (standard library only).

One :class:`Session` per connection. ``feed`` takes one message at a time from the
reader (stdin in ``gpu-agent``, an exec stream in the simulated cluster). Cheap
methods (``initialize``, ``ping``, ``tools/list``) are answered on the caller's
thread; ``tools/call`` runs on a small pool of persistent daemon worker threads, so
several requests may be in flight and are answered in any order. Every tool call has a
deadline counted from its receipt (time in the queue included), kept by one process-wide
watcher thread: a call stuck in a driver, or still queued behind stuck ones, is answered
with an error result when the deadline passes; a stuck thread is abandoned (daemon
threads never block exit) and replaced while the pool stays under its thread bound.
Nothing a client sends can end the session: answers that cannot be UTF-8 (lone
surrogates) go out \\u-escaped, and errors repeat client input only clipped.

The agent deliberately does not use the ``mcp`` SDK: importing it costs ~1.3 CPU-s
and 63 MiB, far over the in-pod budget (50Mi, 100m CPU).
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from agent.catalog import AGENT_NAME, STRUCTURED_ONLY
from agent.errors import AgentError, ToolArgumentError, clip
from agent.schema import validate

SUPPORTED_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
MAX_MESSAGE_BYTES = 1 << 20  # a longer line is refused (and skipped) without being parsed

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

MAX_WORKERS = 4  # NVML serialises most calls internally; more threads buy nothing
MAX_QUEUED = 256  # tool calls waiting for a worker before new ones are refused
MAX_HUNG = 8  # abandoned (timed-out) calls still running before new calls are refused
# A queued call with less than this share of its deadline left is answered with a timeout
# instead of being started (it would most likely be abandoned and cost a thread).
START_MARGIN = 0.1
# Threads inside tools never exceed MAX_WORKERS + MAX_HUNG (12): a stuck worker is
# replaced only while running + stuck threads stay under that; queued calls then wait
# for their deadline, which counts from receipt, and are answered with a timeout.
WORKER_IDLE_S = 60.0  # an idle pool thread retires after this long
# At EOF, in-flight calls get this long to finish before they are answered with an error
# and abandoned (see Session.close).
CLOSE_GRACE_S = 2.0

Json = dict[str, Any]
Writer = Callable[[bytes], None]


LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
log_threshold = LOG_LEVELS["warning"]  # set by --log-level


def log(message: str, level: str = "warning") -> None:
    """Write one diagnostic line to stderr (stdout carries only protocol).

    ``logging`` is not used: importing it costs more than the whole protocol core.
    """
    if LOG_LEVELS.get(level, 30) < log_threshold:
        return
    try:
        sys.stderr.write(f"gpu-agent: {level}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: nothing better to do
        pass


class RpcError(Exception):
    """A JSON-RPC error answer for the request being handled."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class ToolProvider(Protocol):
    """What the session needs from the tool layer (agent.tools.Toolbox implements it)."""

    timeout_hint: str  # appended to the timeout message: what probably hung, what to do

    def definitions(self) -> list[Json]:
        """The tools offered now (MCP Tool objects, newest protocol shape)."""
        ...

    def call(self, name: str, arguments: Json) -> Json:
        """Run a tool; return its structured result. Raise AgentError for a failure the
        user should read (it becomes an ``isError`` result)."""
        ...

    def close(self) -> None: ...


# --- protocol-version shaping -------------------------------------------------------------


def negotiate(requested: Any) -> str:
    """The version we answer: the client's when we speak it, else our latest (the client
    then decides whether to continue, per the MCP lifecycle)."""
    return requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION


def shape_tool(tool: Json, version: str) -> Json:
    """Drop Tool fields a client of an older protocol version does not know."""
    if version >= "2025-06-18":
        return tool
    drop = (
        {"title", "outputSchema"}
        if version == "2025-03-26"
        else {"title", "outputSchema", "annotations"}
    )
    return {k: v for k, v in tool.items() if k not in drop}


def _finite(value: Any) -> Any:
    """Replace NaN/Infinity (not JSON) by null, e.g. a driver's garbage reading."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Compact, strictly valid JSON (non-finite numbers become null)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False)


def encode(message: Json) -> bytes:
    """One wire line. Strings holding lone UTF-16 surrogates (``json.loads`` accepts
    "\\ud800") cannot be UTF-8: such a message is sent with \\u escapes instead, which is
    valid JSON and gives the client back exactly the id it sent."""
    text = dumps(message)
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:
        return _dumps_ascii(message).encode() + b"\n"


def _dumps_ascii(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), separators=(",", ":"))


def tool_result(structured: Json, version: str, *, brief: bool = False) -> Json:
    """A successful CallToolResult: structuredContent plus the same JSON as text, or
    (``brief``: the client declared the structured-only extension) a one-line text."""
    structured_ok = version >= "2025-06-18"  # structuredContent arrived with 2025-06-18
    if brief and structured_ok:
        summary = structured.get("summary")
        text = (summary + "; " if isinstance(summary, str) else "") + (
            "the full answer is in structuredContent"
        )
    else:
        text = dumps(structured)  # the whole answer goes through dumps() again when sent
    result: Json = {"content": [{"type": "text", "text": text}], "isError": False}
    if structured_ok:
        result["structuredContent"] = structured
    return result


def error_result(message: str) -> Json:
    """A CallToolResult for a tool that ran and failed: the model reads the message."""
    return {"content": [{"type": "text", "text": message}], "isError": True}


_METHODS = frozenset({"initialize", "ping", "tools/list", "tools/call"})


def _id_key(rid: Any) -> tuple[bool, Any]:
    # "1" and 1 are different ids
    return (isinstance(rid, str), rid)


def _valid_id(rid: Any) -> bool:
    return isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]]')
_ID_VALUE = re.compile(rb'\s*:\s*(-?(?:0|[1-9][0-9]{0,18})(?![0-9.eE])|"(?:[^"\\]|\\.)*")')


def scan_id(head: bytes | str) -> Any:
    """The top-level "id" of a message too long to parse, read from its first bytes
    (strings and brackets only, so an "id" inside params is not mistaken for it); None
    when it cannot be found there."""
    data = head.encode("utf-8", "surrogatepass") if isinstance(head, str) else head
    depth = 0
    for token in _TOKEN.finditer(data):
        text = token.group()
        if text in (b"{", b"["):
            depth += 1
        elif text in (b"}", b"]"):
            depth -= 1
            if depth <= 0:
                return None
        elif depth == 1 and text == b'"id"':
            value = _ID_VALUE.match(data, token.end())
            if value is None:
                continue  # "id" as a value, not a key
            try:
                rid = json.loads(value.group(1))
            except ValueError:
                return None
            return rid if _valid_id(rid) else None
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _Call:
    """One accepted tools/call request, from acceptance to its single answer."""

    __slots__ = (
        "rid",
        "name",
        "arguments",
        "done",
        "cancelled",
        "abandoned",
        "slot",
        "received",
        "started",
    )

    def __init__(self, rid: Any, name: str, arguments: Json) -> None:
        self.rid = rid
        self.name = name
        self.arguments = arguments
        self.done = False  # settled: answered, refused, or dropped (cancelled)
        self.cancelled = False
        self.abandoned = False  # settled while its worker is still inside the tool
        self.slot = False  # taken by a worker; False while queued
        self.received = time.monotonic()  # the deadline counts from here, queue included
        self.started = 0.0


class _Watcher:
    """The one thread that enforces every session's call deadlines (a heap of them).

    Starting a timer thread per call cost ~1 ms, more than a warm call itself. Entries of
    calls that finished stay in the heap until they reach its top and are dropped there;
    the watcher sleeps until the earliest deadline of a call still running.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Call, Session]] = []
        self._seq = 0
        self._started = False
        self._compact_at = 256

    def add(self, deadline: float, session: Session, call: _Call) -> None:
        with self._cond:
            self._seq += 1
            entry = (deadline, self._seq, call, session)
            heapq.heappush(self._heap, entry)
            if not self._started:
                try:
                    _start_thread(self._loop, "gpu-agent deadlines")
                    self._started = True
                except RuntimeError as exc:  # retried on the next call; its entry waits
                    log(f"cannot start the deadline thread: {exc}", "error")
            elif self._heap[0] is entry:  # earlier than what the watcher sleeps towards
                self._cond.notify()
            if len(self._heap) > self._compact_at:  # many finished calls: drop them
                self._heap = [e for e in self._heap if not e[2].done]
                heapq.heapify(self._heap)
                self._compact_at = max(256, 2 * len(self._heap))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    heap = self._heap
                    while heap and heap[0][2].done:
                        heapq.heappop(heap)
                    if not heap:
                        self._cond.wait()
                        continue
                    left = heap[0][0] - time.monotonic()
                    if left <= 0:
                        _, _, call, session = heapq.heappop(heap)
                        break
                    self._cond.wait(left)
            try:
                session._expire(call)
            except Exception as exc:  # never let one session stop every deadline
                log(f"deadline handling failed: {type(exc).__name__}: {exc}", "error")


def _start_thread(target: Callable[[], None], name: str) -> None:
    threading.Thread(target=target, name=name, daemon=True).start()


_WATCHER = _Watcher()
# A forked child has none of the parent's threads (nor a usable copy of its locks).
os.register_at_fork(after_in_child=_WATCHER._reset)


class Session:
    """One MCP connection. ``write`` gets complete newline-terminated JSON lines and is
    called from several threads (serialised here under a lock).

    Tool calls run on a small pool of persistent worker threads (at most
    ``max_workers``, started on demand, retired after ``WORKER_IDLE_S`` idle). A call
    that passes its deadline is answered with an error by the process-wide deadline
    watcher; its worker is abandoned inside the tool and replaced.
    """

    def __init__(
        self,
        provider: ToolProvider,
        write: Writer,
        *,
        call_timeout: float = 20.0,
        server_name: str = AGENT_NAME,
        server_version: str = "0",
        instructions: str = "",
        max_workers: int = MAX_WORKERS,
        close_grace: float = CLOSE_GRACE_S,
    ) -> None:
        self.provider = provider
        self._write = write
        self.call_timeout = call_timeout
        self.close_grace = close_grace
        self._server_info = {"name": server_name, "version": server_version}
        self._instructions = instructions
        self._max_workers = max_workers
        self.version = LATEST_VERSION  # until initialize says otherwise
        self.structured_only = False  # the client declared STRUCTURED_ONLY
        self.client_info: Json | None = None
        self.initialized = False
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)  # outstanding reached 0
        self._work = threading.Condition(self._lock)  # idle workers wait here
        self._inflight: dict[tuple[bool, Any], _Call] = {}
        self._queue: deque[_Call] = deque()
        self._workers = 0  # pool threads not abandoned: idle or running a call
        self._idle = 0  # pool threads waiting for a call
        self._inside = 0  # threads inside a tool (running or abandoned)
        self._hung = 0  # abandoned threads still inside a tool
        self._outstanding = 0  # accepted tools/call requests not yet answered or dropped
        self._closed = False  # input ended: no new messages
        self._stopping = False  # workers exit instead of waiting for calls
        self._write_failed = False

    # --- input ---------------------------------------------------------------------------

    def feed(self, line: bytes | str) -> None:
        """Handle one message (a line without its newline; surrounding blanks ignored)."""
        if self._closed:
            return
        if len(line) > MAX_MESSAGE_BYTES:
            self.refuse_oversized(len(line), line[:MAX_MESSAGE_BYTES])
            return
        line = line.strip()
        if not line:
            return
        try:
            message = json.loads(line, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            # e.g. NaN in params: the client still waits on its id, so answer it when the
            # id can be read (JSON-RPC allows null only when it cannot).
            self._send_error(scan_id(line), PARSE_ERROR, f"Parse error: {_short(exc)}")
            return
        try:
            self._dispatch(message)
        except Exception as exc:  # a bug must cost one answer, never the session
            log(f"internal error handling a message: {type(exc).__name__}: {exc}")
            rid = message.get("id") if isinstance(message, dict) else None
            self._send_error(rid if _valid_id(rid) else None, INTERNAL_ERROR, "Internal error")

    def refuse_oversized(self, size: int, head: bytes | str = b"") -> None:
        """Answer a message that was too long to read (the reader skipped it). ``head``,
        its first bytes, is scanned for a top-level "id" so the client waiting on that id
        gets its answer."""
        self._send_error(
            scan_id(head),
            INVALID_REQUEST,
            f"Invalid Request: message of {size} bytes exceeds the agent's "
            f"{MAX_MESSAGE_BYTES} byte limit per message; send smaller arguments",
        )

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, list):
            self._send_error(
                None,
                INVALID_REQUEST,
                "Invalid Request: JSON-RPC batches are not supported (MCP removed batching in "
                "2025-06-18); send one message per line",
            )
            return
        if not isinstance(message, dict):
            self._send_error(None, INVALID_REQUEST, "Invalid Request: a message must be an object")
            return
        has_id = "id" in message
        rid = message.get("id")
        if has_id and not _valid_id(rid):
            self._send_error(
                None, INVALID_REQUEST, "Invalid Request: id must be a string or integer"
            )
            return
        answer_id = rid if has_id else None
        if message.get("jsonrpc") != "2.0":
            self._send_error(answer_id, INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
            return
        if "method" not in message:
            if has_id and ("result" in message or "error" in message):
                return  # a response; this server never sends requests, so nothing waits for it
            self._send_error(answer_id, INVALID_REQUEST, 'Invalid Request: "method" is missing')
            return
        method = message["method"]
        if not isinstance(method, str):
            self._send_error(
                answer_id, INVALID_REQUEST, 'Invalid Request: "method" must be a string'
            )
            return
        params = message.get("params")
        if params is not None and not isinstance(params, dict | list):
            self._send_error(
                answer_id, INVALID_REQUEST, 'Invalid Request: "params" must be an object'
            )
            return
        if not has_id:
            self._notification(method, params)
            return
        try:
            result = self._request(rid, method, params)
        except RpcError as err:
            self._send_error(rid, err.code, err.message, err.data)
            return
        if result is not None:
            self._send({"jsonrpc": "2.0", "id": rid, "result": result})

    def _notification(self, method: str, params: Any) -> None:
        if method == "notifications/initialized":
            self.initialized = True
        elif method == "notifications/cancelled" and isinstance(params, dict):
            rid = params.get("requestId")
            if _valid_id(rid):
                self._cancel(rid)
        # unknown notifications are ignored, as JSON-RPC and MCP require

    def _request(self, rid: Any, method: str, raw_params: Json | list[Any] | None) -> Json | None:
        if method not in _METHODS:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {clip(method)}")
        if isinstance(raw_params, list):
            raise RpcError(INVALID_PARAMS, "Invalid params: params must be an object")
        params = raw_params or {}
        if method == "initialize":
            return self._initialize(params)
        if method == "ping":
            return {}
        if method == "tools/list":
            cursor = params.get("cursor")
            if cursor is not None and not isinstance(cursor, str):
                raise RpcError(INVALID_PARAMS, "Invalid params: cursor must be a string")
            return {"tools": [shape_tool(t, self.version) for t in self.provider.definitions()]}
        if method == "tools/call":
            self._accept_call(rid, params)
            return None  # answered by a worker
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {clip(method)}")

    def _initialize(self, params: Json) -> Json:
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise RpcError(INVALID_PARAMS, "Invalid params: protocolVersion (string) is required")
        self.version = negotiate(requested)
        info = params.get("clientInfo")
        self.client_info = info if isinstance(info, dict) else None
        capabilities: Json = {"tools": {"listChanged": False}}
        declared = params.get("capabilities")
        extensions = declared.get("extensions") if isinstance(declared, dict) else None
        self.structured_only = (
            isinstance(extensions, dict)
            and STRUCTURED_ONLY in extensions
            and self.version >= "2025-06-18"
        )
        if self.structured_only:
            capabilities["extensions"] = {STRUCTURED_ONLY: {}}
        result: Json = {
            "protocolVersion": self.version,
            "capabilities": capabilities,
            "serverInfo": dict(self._server_info),
        }
        if self._instructions:
            result["instructions"] = self._instructions
        return result

    # --- tool calls ------------------------------------------------------------------------

    def _accept_call(self, rid: Any, params: Json) -> None:
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "Invalid params: name (string) is required")
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise RpcError(INVALID_PARAMS, "Invalid params: arguments must be an object")
        tools = {t["name"]: t for t in self.provider.definitions()}
        tool = tools.get(name)
        if tool is None:
            known = ", ".join(sorted(tools)) or "none"
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {clip(name)} (this agent has: {known})")
        problems = validate(arguments, tool.get("inputSchema", {}))
        if problems:
            raise RpcError(
                INVALID_PARAMS,
                f"Invalid arguments for tool {name}: " + "; ".join(problems),
                {"problems": problems},
            )
        call = _Call(rid, name, arguments)
        key = _id_key(rid)
        spawn = refuse = False
        with self._lock:
            if key in self._inflight:
                raise RpcError(
                    INVALID_REQUEST, f"Invalid Request: id {clip(repr(rid))} is already in use"
                )
            if len(self._queue) >= MAX_QUEUED:
                raise RpcError(
                    INTERNAL_ERROR,
                    f"Agent busy: {MAX_QUEUED} tool calls are already waiting; retry later",
                )
            self._outstanding += 1
            if self._hung >= MAX_HUNG:
                refuse = call.done = True
            else:
                self._inflight[key] = call
                self._queue.append(call)
                spawn = self._kick_locked()
        if not refuse:
            _WATCHER.add(call.received + self.call_timeout, self, call)
        if refuse:
            message = (
                f"{self._hung} earlier tool calls are still stuck (each ran past the "
                f"{self.call_timeout:g} s --call-timeout); {self.provider.timeout_hint} "
                "This agent refuses new calls until they return: end this session and start a "
                "new one once the node is fixed."
            )
            self._answer(call, error_result(message))
        elif spawn:
            self._spawn()

    def _kick_locked(self) -> bool:
        """Get queued calls moving: wake an idle worker, and say whether another worker
        should be started (the caller starts it once the lock is released)."""
        if not self._queue or self._stopping:
            return False
        if self._idle:
            self._work.notify()
        if (
            len(self._queue) > self._idle
            and self._workers < self._max_workers
            and self._workers + self._hung < self._max_workers + MAX_HUNG
        ):
            self._workers += 1
            return True
        return False

    def _spawn(self) -> None:
        try:
            _start_thread(self._worker, "gpu-agent worker")
        except RuntimeError as exc:  # "can't start new thread": out of threads or memory
            log(f"cannot start a worker thread: {exc}", "error")
            failed: list[_Call] = []
            with self._lock:
                self._workers -= 1
                if self._workers == 0:  # nobody will ever take the queued calls: fail them
                    while self._queue:
                        call = self._queue.popleft()
                        call.done = True
                        self._inflight.pop(_id_key(call.rid), None)
                        if not call.cancelled:
                            failed.append(call)
            for call in failed:
                self._answer(
                    call,
                    error_result(
                        f"Tool {call.name} could not run: the agent cannot start a thread "
                        f"({exc}). Retry later; if it persists, the node or pod is out of "
                        "threads or memory."
                    ),
                )

    def _next_locked(self, late: list[_Call]) -> _Call | None:
        """The next queued call for a worker (waiting for one), or None: the worker is
        retired (idle too long, or the session stopped). Calls too close to their deadline
        to be worth starting are settled into ``late``: the worker answers them, and None
        with ``late`` filled means "answer those, then come back"."""
        while True:
            while not self._queue:
                if late:
                    return None
                if self._stopping:
                    self._workers -= 1
                    return None
                self._idle += 1
                woken = self._work.wait(WORKER_IDLE_S)
                self._idle -= 1
                if not woken and not self._queue:
                    self._workers -= 1
                    return None
            call = self._queue[0]
            left = call.received + self.call_timeout - time.monotonic()
            if left >= START_MARGIN * self.call_timeout:
                break
            # Started now, it would likely be abandoned inside the tool and cost a thread.
            if self._abandon_locked(call):
                late.append(call)
        self._queue.popleft()
        call.slot = True
        call.started = time.monotonic()
        self._inside += 1
        return call

    def _worker(self) -> None:
        lock = self._lock
        late: list[_Call] = []
        while True:
            with lock:
                call = self._next_locked(late)
                stuck = self._hung
            if late:
                for expired in late:
                    message = self._timeout_message(expired, False, stuck)
                    self._answer(expired, error_result(message))
                late.clear()
                if call is None:
                    continue
            if call is None:
                return
            result = self._execute(call)
            with lock:
                self._inside -= 1
                if call.abandoned:
                    # Back after its deadline (or after the session closed): the call was
                    # answered already. Rejoin the pool if it has room, else retire.
                    self._hung -= 1
                    if self._stopping or self._workers >= self._max_workers:
                        return
                    self._workers += 1
                    continue
                call.done = True
                self._inflight.pop(_id_key(call.rid), None)
                send = not call.cancelled  # MCP: a cancelled request gets no response
            self._debug_timing(call, "ok" if send else "cancelled", result)
            if send:
                self._answer(call, result)

    def _execute(self, call: _Call) -> Json:
        try:
            structured = self.provider.call(call.name, call.arguments)
            return tool_result(structured, self.version, brief=self.structured_only)
        except ToolArgumentError as exc:
            return error_result(f"Invalid arguments: {exc}")
        except AgentError as exc:
            return error_result(str(exc))
        except BaseException as exc:  # a tool bug costs one answer, never the worker thread
            text = _short(exc)
            log(f"tool {call.name} failed unexpectedly: {type(exc).__name__}: {text}", "error")
            return error_result(
                f"Tool {call.name} failed unexpectedly: {type(exc).__name__}: {text}. "
                "Retry once; if it persists, report it with the agent's stderr."
            )

    def _abandon_locked(self, call: _Call) -> bool:
        """Settle a call whose worker may still be inside the tool (deadline passed, or
        the session closed). True when an answer is due (False: already settled or
        cancelled)."""
        if call.done:
            return False
        call.done = True
        self._inflight.pop(_id_key(call.rid), None)
        if call.slot:  # its worker is stuck inside the tool: count it, replace it
            call.abandoned = True
            self._hung += 1
            self._workers -= 1
        else:  # still queued: it never runs
            self._queue.remove(call)  # O(queue), but only on a timeout or at close
        return not call.cancelled

    def _expire(self, call: _Call) -> None:
        """The deadline watcher's callback: answer a call that ran (or waited) too long."""
        with self._lock:
            if call.done:  # finished, cancelled-and-finished, or closed meanwhile
                return
            running = call.slot
            due = self._abandon_locked(call)
            spawn = self._kick_locked()
            stuck = self._hung
        if spawn:
            self._spawn()
        if due:
            self._answer(call, error_result(self._timeout_message(call, running, stuck)))

    def _timeout_message(self, call: _Call, running: bool, stuck: int) -> str:
        state = "timed out" if running else "timed out before it started"
        log(f"tool {call.name} (id {clip(repr(call.rid))}) {state} after {self.call_timeout:g} s")
        if running:
            return (
                f"Tool {call.name} did not finish within {self.call_timeout:g} s "
                f"(--call-timeout). {self.provider.timeout_hint} The agent stays responsive; "
                "the stuck call was abandoned."
            )
        return (
            f"Tool {call.name} did not start within its {self.call_timeout:g} s "
            f"--call-timeout (counted from receipt): it waited behind other calls, {stuck} "
            f"of them stuck. {self.provider.timeout_hint} Retry once the stuck calls are "
            "answered."
        )

    def _answer(self, call: _Call, result: Json) -> None:
        """Send a settled call's answer, then count it as answered."""
        try:
            self._send({"jsonrpc": "2.0", "id": call.rid, "result": result})
        finally:  # counted even if sending failed, so close() never waits for it
            with self._lock:
                self._outstanding -= 1
                if self._outstanding == 0:
                    self._drained.notify_all()

    def _debug_timing(self, call: _Call, state: str, result: Json) -> None:
        if log_threshold <= 10:
            took = (time.monotonic() - call.started) * 1000 if call.started else 0.0
            if state == "ok" and result.get("isError"):
                state = "error"
            log(f"tool {call.name} id={clip(repr(call.rid))}: {state} in {took:.1f} ms", "debug")

    def _cancel(self, rid: Any) -> None:
        with self._lock:
            call = self._inflight.get(_id_key(rid))
            if call is None or call.done:
                return  # unknown or finished: the spec says ignore
            call.cancelled = True
            if not call.slot:  # still queued: drop it before it starts
                self._queue.remove(call)
                call.done = True
                del self._inflight[_id_key(rid)]
            # No answer will be sent, so shutdown need not wait for it. A running call
            # cannot be interrupted: its thread finishes (or is abandoned) and the result
            # is dropped.
            self._outstanding -= 1
            if self._outstanding == 0:
                self._drained.notify_all()

    # --- output ----------------------------------------------------------------------------

    def _send_error(self, rid: Any, code: int, message: str, data: Any = None) -> None:
        error: Json = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        self._send({"jsonrpc": "2.0", "id": rid, "error": error})

    def _send(self, message: Json) -> None:
        """Write one message. Never raises: a worker or the reader that cannot answer
        must not die (an id holding a lone UTF-16 surrogate once killed the agent)."""
        try:
            data = encode(message)
        except Exception as exc:  # a bug: still answer, so the client is not left waiting
            log(f"cannot encode an answer ({type(exc).__name__}: {_short(exc)})", "error")
            rid = message.get("id")
            error = {
                "code": INTERNAL_ERROR,
                "message": "Internal error: the answer could not be encoded",
            }
            data = encode({"jsonrpc": "2.0", "id": rid if _valid_id(rid) else None, "error": error})
        with self._write_lock:
            if self._write_failed:
                return
            try:
                self._write(data)
            except Exception as exc:  # the reader went away; keep draining quietly
                self._write_failed = True
                log(f"cannot write answers any more ({type(exc).__name__}: {exc})")

    # --- shutdown --------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        """Threads still inside a tool: running (even if cancelled) or abandoned."""
        with self._lock:
            return self._inside

    @property
    def hung(self) -> int:
        """Tool calls abandoned (deadline passed, or input closed) that have not returned."""
        return self._hung

    def close(self, grace: float | None = None) -> None:
        """Input ended (EOF). Answer what is in flight, waiting at most ``grace`` seconds
        (default ``close_grace``; never longer than the call deadline), then answer any
        call still running with an error, abandon it and stop the workers. The backend is
        released unless a thread is still inside it.

        A client closes its input only after every answer arrived (MCP stdio), so a call
        still running well after EOF has no one waiting for it: a call stuck in the
        driver must not keep the process (or the simulated node) alive until its deadline.
        """
        wait = self.close_grace if grace is None else grace
        leftover: list[_Call] = []
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if wait >= self.call_timeout:
                while self._outstanding:  # every call is answered by its deadline anyway
                    self._drained.wait()
            else:
                end = time.monotonic() + wait
                while self._outstanding:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._drained.wait(left)
            for call in list(self._inflight.values()):
                if self._abandon_locked(call):
                    leftover.append(call)
            self._stopping = True
            self._work.notify_all()
        for call in leftover:
            state = "was still running" if call.slot else "had not started"
            log(
                f"tool {call.name} (id {clip(repr(call.rid))}) {state} {wait:g} s after "
                "input closed"
            )
            self._answer(
                call,
                error_result(
                    f"Tool {call.name} {state} {wait:g} s after the agent's input closed, so "
                    "it was abandoned (keep the session open until every answer arrives). "
                    + (self.provider.timeout_hint if call.slot else "")
                ),
            )
        if self.busy:
            log(f"{self.busy} tool call(s) still running at exit; backend left open under them")
            return
        try:
            self.provider.close()
        except Exception as exc:  # best effort at exit
            log(f"closing the backend failed: {type(exc).__name__}: {exc}")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
