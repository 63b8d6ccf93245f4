"""MCP over a Kubernetes pods/exec websocket: frames in, ``SessionMessage`` streams out.

``open_exec_streams`` starts the agent command in the node's agent pod and yields the
``(read_stream, write_stream)`` pair that ``mcp.ClientSession`` runs on, exactly like
the SDK's stdio transport but carried by the API server:

- asks for ``v5.channel.k8s.io`` and accepts ``v4.channel.k8s.io`` (the server picks;
  a server that refuses the offer outright is asked again for v4 alone);
- stdout is split into JSON-RPC lines across frame boundaries; stderr is kept as a
  small tail for error messages;
- the stream's outcome comes from the channel-3 status frame: a failure, or no status
  at all (a cut connection), is delivered to the session as an exception item, never
  mistaken for a clean end;
- stdin is half-closed (v5) only after every request sent has been answered (or
  cancelled), because the agent cancels in-flight work at stdin EOF;
- 403 on the upgrade names the missing permission, 404 says the pod is gone, 429 and
  5xx are retried with backoff honouring ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.message import SessionMessage

from broker.errors import (
    AgentProtocolError,
    ApiUnavailable,
    BrokerError,
    ExecFailed,
    NodeNotReady,
    NodeTimeout,
)
from broker.kube.config import KubeApi
from broker.kube.discovery import NodeTarget
from broker.kube.exec_socket import open_exec_socket
from broker.kube.retry import RetryPolicy
from broker.transport import channels

logger = logging.getLogger(__name__)

Streams = tuple["ExecReader", "ExecWriter"]


# asyncio's SSL transport gives every TLS connection a 256 KiB read buffer
# (SSLProtocol.max_size, CPython gh-109534). One websocket per open node session makes
# that the dominant per-session cost (5,000 sessions: 1.2 GiB). A large answer just
# takes a few more reads: at 4 KiB a warm 1,000-node sweep costs the same broker CPU as
# at 16 KiB or 64 KiB (measured), and each session holds 60 KiB less.
TLS_READ_BUFFER = 4 * 1024

# How long a failed write waits for the reader to read why the stream ended.
END_GRACE = 1.0


def limit_tls_read_buffer(size: int = TLS_READ_BUFFER) -> None:
    """Lower asyncio's per-connection TLS read buffer to ``size`` (never raises it)."""
    from asyncio import sslproto

    if sslproto.SSLProtocol.max_size > size:
        sslproto.SSLProtocol.max_size = size


def _request_key(value: Any) -> str:
    return str(value)


def parse_message(line: bytes) -> types.JSONRPCMessage:
    """One JSON-RPC message from one stdout line (raises ValueError when it is not one).

    Answers are validated as the response type their keys name instead of through the
    four-way union: the same checks at a fraction of the cost on large tool results.
    """
    doc = json.loads(line)
    if not isinstance(doc, dict):
        raise ValueError("a JSON-RPC message is a JSON object")
    if "result" in doc and "method" not in doc:
        return types.JSONRPCResponse.model_validate(doc)
    if "error" in doc and "method" not in doc:
        return types.JSONRPCError.model_validate(doc)
    return types.jsonrpc_message_adapter.validate_python(doc, by_name=False)


class ExecChannel:
    """One exec websocket carrying one MCP session, read and written by its callers.

    No task of its own: the session's receive loop pulls frames through :attr:`reader`
    and its requests go straight out through :attr:`writer`. Two pump tasks and two
    memory streams per session cost about 11 KiB each at 5,000 open sessions, and a
    task switch per message.
    """

    __slots__ = (
        "ws", "protocol", "node", "drain_timeout", "status", "failure", "stderr",
        "closing", "answers", "answers_at_half_close", "reader", "writer", "_pending",
        "_splitter", "_ready", "_ended", "_final", "_eof", "_half_closed", "_on_end",
    )  # fmt: skip

    def __init__(
        self,
        ws: Any,
        protocol: str,
        node: str,
        *,
        drain_timeout: float,
        stderr_limit: int = 4096,
    ) -> None:
        self.ws = ws
        self.protocol = protocol
        self.node = node
        self.drain_timeout = drain_timeout
        self.status: channels.ExecStatus | None = None
        self.failure: BrokerError | None = None
        self.stderr = channels.TailBuffer(stderr_limit)
        self.closing = False  # from here on the agent exiting is expected
        self.answers = 0  # responses received from the agent
        self.answers_at_half_close: int | None = None  # v5: when stdin was half-closed
        self.reader = ExecReader(self)
        self.writer = ExecWriter(self)
        self._pending: set[str] = set()  # request ids written and not yet answered
        self._splitter = channels.LineSplitter()
        self._ready: list[SessionMessage] = []  # parsed from a frame, not yet received
        self._ended = False  # no more frames will come
        self._final: BrokerError | None = None  # why it ended, not yet delivered
        self._eof = False  # the session closed its write side
        self._half_closed = False
        self._on_end: anyio.Event | None = None

    # -- reading: websocket -> session --------------------------------------------------
    async def receive(self) -> SessionMessage | Exception:
        """The next message; the failure that ended the stream once; then EndOfStream."""
        while not self._ready:
            if self._ended:
                final, self._final = self._final, None
                if final is not None:
                    return final
                raise anyio.EndOfStream
            await self._read_frame()
        return self._ready.pop(0)

    async def _read_frame(self) -> None:
        import aiohttp

        try:
            msg = await self.ws.receive()
        except (aiohttp.ClientError, OSError) as exc:
            self._fail(ApiUnavailable(f"node {self.node}: exec stream broke: {exc}"))
            self._end()
            return
        kind = msg.type
        if kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            self._end()
            return
        if kind == aiohttp.WSMsgType.ERROR:
            self._fail(ApiUnavailable(f"node {self.node}: exec websocket error: {msg.data}"))
            self._end()
            return
        data = msg.data if isinstance(msg.data, bytes) else str(msg.data).encode()
        # Drop the frame before anything waits: an idle session must not pin its last
        # (possibly large) answer in memory.
        del msg
        try:
            channel, payload = channels.decode(data, self.protocol)
        except channels.FrameError as exc:
            self._fail(AgentProtocolError(f"node {self.node}: bad exec frame: {exc}"))
            self._end()
            return
        del data
        if channel == channels.STDOUT:
            try:
                lines = self._splitter.feed(payload)
            except channels.FrameError as exc:
                self._fail(self._garbage(str(exc)))
                self._end()
                return
            await self._deliver(lines)
        elif channel == channels.STDERR:
            self.stderr.feed(payload)
        elif channel == channels.STATUS:
            self.status = channels.parse_status(payload)

    async def _deliver(self, lines: list[bytes]) -> None:
        for line in lines:
            if not line.strip():
                continue
            try:
                message = parse_message(line)
            except ValueError:
                self._fail(self._garbage(f"not JSON-RPC: {line[:120]!r}"))
                self._end()
                return
            if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
                self.answers += 1
                self._pending.discard(_request_key(message.id))
            self._ready.append(SessionMessage(message))
        if self._eof and not self._pending:
            await self.half_close()

    def _garbage(self, what: str) -> AgentProtocolError:
        return AgentProtocolError(
            f"node {self.node}: the agent wrote to stdout something that is not an MCP "
            f"message ({what}); stdout must carry only JSON-RPC lines — check the agent image "
            "and that nothing in it prints to stdout"
            + (f"; agent stderr: {self.stderr.text()}" if self.stderr.text() else "")
        )

    def _fail(self, error: BrokerError) -> None:
        if self.failure is None:
            self.failure = error

    def _end(self) -> None:
        """No more frames: turn how the stream ended into one last item (unless we ended it)."""
        if self._ended:
            return
        self._ended = True
        if self._on_end is not None:
            self._on_end.set()
        outcome = self.failure or self._outcome()
        if outcome is not None and not self.closing:
            self.failure = outcome
            self._final = outcome

    def _outcome(self) -> BrokerError | None:
        status = self.status
        tail = self.stderr.text()
        if status is None:
            if self.closing:
                return None
            return ApiUnavailable(
                f"node {self.node}: the exec stream ended without a status frame (the "
                "connection was cut by the API server, a proxy or the kubelet); the session "
                "will be re-opened on the next call" + (f"; agent stderr: {tail}" if tail else "")
            )
        if not status.success:
            return ExecFailed(self.node, _describe_failure(status), status.exit_code, tail)
        if self.closing:
            return None
        return ExecFailed(
            self.node, "the agent exited (code 0) while the session was open", 0, tail
        )

    # -- writing: session -> websocket --------------------------------------------------
    async def send(self, item: SessionMessage) -> None:
        if self._eof or self.closing:
            raise anyio.ClosedResourceError
        if not self._ended and not self.ws.closed:
            self._track(item.message)
            body = item.message.model_dump_json(by_alias=True, exclude_unset=True)
            try:
                await self.ws.send_bytes(channels.encode(channels.STDIN, body.encode() + b"\n"))
                return
            except (ConnectionError, OSError, RuntimeError) as exc:
                # aiohttp raises ClientConnectionResetError (a ConnectionError) on a dead
                # socket; the frames still unread (a status, the last stderr) explain it.
                broke = f"exec stream broke on write: {exc}"
        else:
            broke = "exec stream broke: the connection is closed"
        await self._await_end()
        self._fail(ApiUnavailable(f"node {self.node}: {broke}"))
        raise anyio.BrokenResourceError

    async def _await_end(self) -> None:
        """Give the session's reader a moment to read why the stream ended (it is reading:
        the receive loop never stops), so the caller is told that, not just "closed"."""
        if self._ended:
            return
        if self._on_end is None:
            self._on_end = anyio.Event()  # made only for a broken stream
        with anyio.move_on_after(END_GRACE):
            await self._on_end.wait()

    async def close_input(self) -> None:
        """The session is done writing: half-close stdin once every answer is in, because
        the agent cancels in-flight requests at stdin EOF (the reader finishes it)."""
        self._eof = True
        if not self._pending:
            await self.half_close()

    async def half_close(self) -> None:
        """v5: close the agent's stdin (once); from here on its exit is expected."""
        if self._half_closed:
            return
        self._half_closed = True
        self.closing = True
        if self.protocol == channels.V5 and not self.ws.closed and not self._ended:
            self.answers_at_half_close = self.answers
            # A dead stream is the reader's to report.
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                await self.ws.send_bytes(channels.encode_close(self.protocol))

    def _track(self, message: types.JSONRPCMessage) -> None:
        if isinstance(message, types.JSONRPCRequest):
            self._pending.add(_request_key(message.id))
        elif (
            isinstance(message, types.JSONRPCNotification)
            and message.method == "notifications/cancelled"
            and isinstance(message.params, dict)
        ):
            # A cancelled request may never be answered (the spec allows silence).
            self._pending.discard(_request_key(message.params.get("requestId")))

    # -- winding down -------------------------------------------------------------------
    async def shutdown(self, close_timeout: float, *, abandoned: bool = False) -> None:
        """Nobody reads any more: let late answers in, half-close, wait for the status.

        ``abandoned`` (the session was cancelled or timed out): its pending requests are
        not waited for, nor is the agent's exit; the stream is closed at once.
        """
        if abandoned:
            self.closing = True
        else:
            if self._pending and not self._ended:
                with anyio.move_on_after(self.drain_timeout):
                    while self._pending and not self._ended:
                        await self._read_frame()
            await self.half_close()
            self._ready.clear()
            if self.protocol == channels.V5:
                # After the half-close the agent exits and the server sends the status.
                with anyio.move_on_after(close_timeout):
                    while not self._ended:
                        await self._read_frame()
                        self._ready.clear()
        if not self.ws.closed:
            with anyio.move_on_after(close_timeout):
                await self.ws.close()


class ExecReader:
    """The session's read stream: items come off the websocket as they are asked for."""

    __slots__ = ("_chan",)

    def __init__(self, chan: ExecChannel) -> None:
        self._chan = chan

    async def receive(self) -> SessionMessage | Exception:
        return await self._chan.receive()

    def __aiter__(self) -> ExecReader:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self._chan.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        return None  # the channel closes with open_exec_streams

    async def __aenter__(self) -> ExecReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class ExecWriter:
    """The session's write stream: each message is one stdin frame, sent at once."""

    __slots__ = ("_chan",)

    def __init__(self, chan: ExecChannel) -> None:
        self._chan = chan

    async def send(self, item: SessionMessage) -> None:
        await self._chan.send(item)

    async def aclose(self) -> None:
        await self._chan.close_input()

    async def __aenter__(self) -> ExecWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _describe_failure(status: channels.ExecStatus) -> str:
    code = status.exit_code
    text = status.message
    if code is None and ("executable file not found" in text or "no such file" in text):
        return (
            "the agent command is not in the pod's image (is the DaemonSet running the "
            f"k8s-gpu-mcp agent image?): {text}"
        )
    if code is None:
        return f"the agent could not be started: {text}"
    if code == 137:
        return "the agent was killed (exit 137: SIGKILL, often the OOM killer or a pod limit)"
    if code == 143:
        return "the agent was terminated (exit 143: SIGTERM, the pod is shutting down?)"
    if code == 127:
        return "the agent command was not found in the pod (exit 127); is it the agent image?"
    return f"the agent exited with code {code}: {status.message}"


@asynccontextmanager
async def open_exec_streams(
    api: KubeApi,
    target: NodeTarget,
    command: Sequence[str],
    *,
    container: str | None = None,
    connect_timeout: float = 30.0,
    drain_timeout: float = 5.0,
    close_timeout: float = 2.0,
    retry: RetryPolicy | None = None,
    protocols: Sequence[str] = channels.SUPPORTED,
    on_open: Callable[[ExecChannel], None] | None = None,
) -> AsyncIterator[Streams]:
    """Exec ``command`` in the target's agent pod; yield MCP ``SessionMessage`` streams.

    Failures of the stream (non-zero exit, no status frame, garbage on stdout) reach the
    reader as a :class:`~broker.errors.BrokerError` item just before end-of-stream.
    Connection failures raise from here (``RbacDenied``, ``NodeNotReady``,
    ``ApiUnavailable``, ``NodeTimeout``). ``protocols`` is the subprotocol offer, most
    preferred first (the server picks). ``on_open`` receives the :class:`ExecChannel`
    (negotiated protocol, stderr tail, final status) for diagnostics.
    """
    if target.pod is None or not target.ready:
        raise NodeNotReady(target.node, target.reason or "no agent pod")
    limit_tls_read_buffer()
    try:
        with anyio.fail_after(connect_timeout):
            ws, chosen = await open_exec_socket(
                api,
                target,
                command,
                container,
                retry or RetryPolicy(),
                offer=protocols,
                fallback=(channels.V4,),
            )
        protocol = chosen if chosen in channels.SUPPORTED else channels.V4
    except TimeoutError:
        raise NodeTimeout(target.node, connect_timeout, "opening the exec stream") from None
    chan = ExecChannel(ws, protocol, target.node, drain_timeout=drain_timeout)
    logger.debug(
        "exec into %s/%s (node %s) over %s", target.namespace, target.pod, target.node, protocol
    )
    if on_open is not None:
        on_open(chan)
    abandoned = False
    try:
        yield chan.reader, chan.writer
    except BaseException:
        abandoned = True  # cancelled, timed out or failed: nothing more to wait for
        raise
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await chan.shutdown(close_timeout, abandoned=abandoned)
            except Exception as exc:  # winding down must not mask what ended the session
                logger.debug("node %s: closing the exec stream: %s", target.node, exc)
            if not ws.closed:  # close() was interrupted: drop the connection outright
                ws._response.close()
