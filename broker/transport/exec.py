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

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
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

Streams = tuple[
    MemoryObjectReceiveStream[SessionMessage | Exception],
    MemoryObjectSendStream[SessionMessage],
]


# asyncio's SSL transport gives every TLS connection a 256 KiB read buffer
# (SSLProtocol.max_size, CPython gh-109534). One websocket per open node session makes
# that the dominant per-session cost (5,000 sessions: 1.2 GiB). A large answer just
# takes a few more reads: at 4 KiB a warm 1,000-node sweep costs the same broker CPU as
# at 16 KiB or 64 KiB (measured), and each session holds 60 KiB less.
TLS_READ_BUFFER = 4 * 1024


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
    """One exec websocket carrying one MCP session: the two pumps and their bookkeeping."""

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
        self.closing = False
        self._pending: set[str] = set()
        self.answers = 0  # responses received from the agent
        self.answers_at_half_close: int | None = None  # v5: when stdin was half-closed
        self._answered = anyio.Event()
        self.reader_done = anyio.Event()
        self.writer_done = anyio.Event()
        self.read_in, self.read_out = anyio.create_memory_object_stream[SessionMessage | Exception](
            0
        )
        self.write_in, self.write_out = anyio.create_memory_object_stream[SessionMessage](0)

    # -- reading: websocket -> session --------------------------------------------------
    async def read_loop(self) -> None:
        import aiohttp

        splitter = channels.LineSplitter()
        ended = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type in ended:
                    break
                if msg.type == aiohttp.WSMsgType.ERROR:
                    self._fail(
                        ApiUnavailable(f"node {self.node}: exec websocket error: {msg.data}")
                    )
                    break
                data = msg.data if isinstance(msg.data, bytes) else str(msg.data).encode()
                # Drop the frame before waiting for the next one: an idle session must not
                # pin its last (possibly large) answer in memory.
                del msg
                if not await self._on_frame(data, splitter):
                    break
                del data
        except (aiohttp.ClientError, OSError) as exc:
            self._fail(ApiUnavailable(f"node {self.node}: exec stream broke: {exc}"))
        finally:
            await self._finish_reading()

    async def _on_frame(self, data: bytes, splitter: channels.LineSplitter) -> bool:
        """Handle one websocket message; False ends the stream."""
        try:
            channel, payload = channels.decode(data, self.protocol)
        except channels.FrameError as exc:
            self._fail(AgentProtocolError(f"node {self.node}: bad exec frame: {exc}"))
            return False
        if channel == channels.STDOUT:
            try:
                lines = splitter.feed(payload)
            except channels.FrameError as exc:
                self._fail(self._garbage(str(exc)))
                return False
            return await self._deliver(lines)
        if channel == channels.STDERR:
            self.stderr.feed(payload)
        elif channel == channels.STATUS:
            self.status = channels.parse_status(payload)
        return True

    async def _deliver(self, lines: list[bytes]) -> bool:
        for line in lines:
            if not line.strip():
                continue
            try:
                message = parse_message(line)
            except ValueError:
                self._fail(self._garbage(f"not JSON-RPC: {line[:120]!r}"))
                return False
            if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
                self.answers += 1
                self._pending.discard(_request_key(message.id))
                if not self._pending:
                    self._answered.set()
            try:
                await self.read_in.send(SessionMessage(message))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return False  # the session is gone; the shutdown path takes over
        return True

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

    async def _finish_reading(self) -> None:
        """Turn how the stream ended into an exception item (unless we ended it), then EOF."""
        outcome = self.failure or self._outcome()
        self.reader_done.set()
        self._answered.set()
        try:
            if outcome is not None and not self.closing:
                self.failure = outcome
                with anyio.move_on_after(1.0):
                    await self.read_in.send(outcome)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            self.read_in.close()

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
    async def write_loop(self) -> None:
        try:
            async with self.write_out:
                async for item in self.write_out:
                    self._track(item.message)
                    body = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await self.ws.send_bytes(channels.encode(channels.STDIN, body.encode() + b"\n"))
            # EOF from the session: half-close stdin only once every answer is in,
            # because the agent cancels in-flight requests at stdin EOF.
            if self._pending:
                self._answered = anyio.Event()
                if self._pending and not self.reader_done.is_set():
                    with anyio.move_on_after(self.drain_timeout):
                        await self._answered.wait()
            self.closing = True  # from here on the agent exiting is expected
            if self.protocol == channels.V5 and not self.ws.closed:
                self.answers_at_half_close = self.answers
                await self.ws.send_bytes(channels.encode_close(self.protocol))
        except (ConnectionError, OSError, RuntimeError) as exc:
            # aiohttp raises ClientConnectionResetError (a ConnectionError) on a dead socket.
            if not self.reader_done.is_set():
                self._fail(ApiUnavailable(f"node {self.node}: exec stream broke on write: {exc}"))
        finally:
            self.writer_done.set()

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
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(chan.read_loop)
            tg.start_soon(chan.write_loop)
            try:
                yield chan.read_out, chan.write_in
            finally:
                with anyio.CancelScope(shield=True):
                    await _shutdown(chan, close_timeout)
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if not ws.closed:
                with anyio.move_on_after(close_timeout):
                    await ws.close()
            if not ws.closed:  # close() was interrupted: drop the connection outright
                ws._response.close()
        for stream in (chan.read_in, chan.read_out, chan.write_in, chan.write_out):
            stream.close()


async def _shutdown(chan: ExecChannel, close_timeout: float) -> None:
    """Wind down: let the writer drain and half-close, wait for the status, close."""
    chan.write_in.close()
    with anyio.move_on_after(chan.drain_timeout + close_timeout):
        await chan.writer_done.wait()
    chan.closing = True
    if chan.protocol == channels.V5:
        # After the half-close the agent exits and the server sends the status frame.
        with anyio.move_on_after(close_timeout):
            await chan.reader_done.wait()
    chan.read_out.close()
    if not chan.ws.closed:
        with anyio.move_on_after(close_timeout):
            await chan.ws.close()
