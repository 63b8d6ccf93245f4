"""``pods/exec`` over WebSocket, framed as the API server frames it.

Subprotocols ``v5.channel.k8s.io``, ``v4.channel.k8s.io``, their base64 variants and
the legacy ``channel.k8s.io``; the first one the client lists that the server knows
wins (none: 403, as the Go websocket server answers). Frames are one channel byte and
a payload: 0 stdin, 1 stdout, 2 stderr, 3 status (metav1.Status JSON from v4 on),
4 resize, 255 close (v5: ``[255, 0]`` half-closes stdin). Like the API server's stream
translator, the connection is upgraded first and every failure after that, including
"container not found" and a missing executable, arrives as a channel-3 Status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from . import commands
from .agent_runner import AgentRun
from .scenario import NodeFaults
from .status import bad_request

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
BASE64 = "base64.channel.k8s.io"
V1 = "channel.k8s.io"
SUPPORTED = (V5, V4, V4_BASE64, BASE64, V1)
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
GARBAGE = (
    b"\x1b[1;33mgpu-agent: probing GPUs...\x1b[0m\n",
    b"\x00\xff\xfe not json {{{ \x80\x81\n",
    b'{"jsonrpc": "2.0", "id": \n',
)
_MAX_PENDING = 2 << 20  # bytes of stdin held while waiting for a newline
_GRACE_S = 2.0  # after the client leaves: stdin EOF, then SIGKILL if the agent lingers


@dataclass(frozen=True)
class ExecRequest:
    command: list[str]
    container: str
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "t", "yes")


def parse_exec(request: web.Request, pod: dict[str, Any]) -> ExecRequest:
    """Validate the exec options the way the API server does (400 on bad input)."""
    command = request.query.getall("command", [])
    names = [c["name"] for c in pod["spec"]["containers"]]
    container = request.query.get("container", "")
    pod_name = pod["metadata"]["name"]
    if not container:
        if len(names) != 1:
            raise bad_request(
                f"a container name must be specified for pod {pod_name}, choose one of: "
                f"[{' '.join(names)}]"
            )
        container = names[0]
    elif container not in names:
        raise bad_request(f"container {container} is not valid for pod {pod_name}")
    opts = ExecRequest(
        command=list(command),
        container=container,
        stdin=_flag(request, "stdin"),
        stdout=_flag(request, "stdout"),
        stderr=_flag(request, "stderr"),
        tty=_flag(request, "tty"),
    )
    if not opts.command:
        raise bad_request("you must specify at least 1 command")
    if not (opts.stdin or opts.stdout or opts.stderr):
        raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
    if not pod["spec"].get("nodeName"):
        raise bad_request(f"pod {pod_name} does not have a host assigned")
    return opts


def negotiate(request: web.Request) -> str | None:
    """The subprotocol to speak, or None when the client offered nothing we know."""
    header = request.headers.get("Sec-WebSocket-Protocol")
    if header is None:
        return ""  # no header: the original channel.k8s.io framing
    offered = [p.strip() for p in header.split(",") if p.strip()]
    for proto in offered:
        if proto in SUPPORTED:
            return proto
        if proto.startswith("base64url.bearer.authorization.k8s.io."):
            continue  # a token carried in the subprotocol list (browsers)
    return None


def _status_success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def _status_exit(code: int) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: command terminated with "
        f"exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _status_internal(cause: str) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {cause}",
        "reason": "InternalError",
        "details": {"causes": [{"message": cause}]},
        "code": 500,
    }


def not_found_in_container(binary: str) -> str:
    """containerd + runc's words for an exec of a binary the image does not have."""
    if "/" in binary:
        why = f'exec: "{binary}": stat {binary}: no such file or directory'
    else:
        why = f'exec: "{binary}": executable file not found in $PATH'
    return (
        "error executing command in container: failed to exec in container: failed to start "
        f'exec "{secrets.token_hex(32)}": OCI runtime exec failed: exec failed: unable to '
        f"start container process: {why}: unknown"
    )


class Framer:
    """Writes channel frames for one negotiated subprotocol."""

    def __init__(self, ws: web.WebSocketResponse, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.base64 = protocol in (V4_BASE64, BASE64)
        self.json_status = protocol in (V5, V4, V4_BASE64)

    async def send(self, channel: int, data: bytes) -> None:
        if self.base64:
            await self.ws.send_str(str(channel) + base64.b64encode(data).decode())
        else:
            await self.ws.send_bytes(bytes([channel]) + data)

    async def status(self, body: dict[str, Any]) -> None:
        if self.json_status:
            await self.send(STATUS, json.dumps(body, separators=(",", ":")).encode())
        elif body["status"] != "Success":  # legacy protocols carry only an error text
            await self.send(STATUS, body["message"].encode())

    def decode(self, msg: Any) -> tuple[int, bytes] | None:
        if msg.type == WSMsgType.BINARY and not self.base64 and msg.data:
            return msg.data[0], msg.data[1:]
        if msg.type == WSMsgType.TEXT and self.base64 and msg.data:
            try:
                return int(msg.data[0]), base64.b64decode(msg.data[1:])
            except ValueError:
                return None
        return None


def _request_id(line: bytes) -> str | None:
    """A JSON-RPC message's id (as JSON text, so 1 and "1" differ), or None."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if isinstance(message, dict) and "id" in message:
        return json.dumps(message["id"])
    return None


def _method(line: bytes) -> str | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    method = message.get("method") if isinstance(message, dict) else None
    return method if isinstance(method, str) else None


class ExecSession:
    """One exec: the client's websocket on one side, the agent on the other."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        framer: Framer,
        opts: ExecRequest,
        faults: NodeFaults,
        abort: Callable[[], None],
    ) -> None:
        self.ws = ws
        self.framer = framer
        self.opts = opts
        self.faults = faults
        self.abort = abort
        self.run: AgentRun | None = None
        self._tool_calls = 0
        self._killing: asyncio.Task[None] | None = None
        self._unanswered: set[str] = set()
        self._out_partial = b""
        self._all_answered = asyncio.Event()
        self._all_answered.set()
        self._client_gone = asyncio.Event()
        self.dropped = False

    async def _handle_line(self, line: bytes) -> None:
        assert self.run is not None
        hang, kill_after = self.faults.exec_hang, self.faults.exec_kill_after
        if hang is not None or kill_after is not None:
            method = _method(line)
            if hang is not None and (hang == "*" or method == hang):
                return  # swallowed: the agent never sees it, so never answers
            if self._killing is not None:
                return  # the agent is being killed: nothing reaches it any more
            if kill_after is not None and method == "tools/call":
                self._tool_calls += 1
                if self._tool_calls >= kill_after:
                    # Killed with this call in flight: after the earlier answers went out.
                    self._killing = asyncio.create_task(self._kill_when_answered())
                    return
            if kill_after is not None:
                rid = _request_id(line)
                if rid is not None:
                    self._unanswered.add(rid)
                    self._all_answered.clear()
        await self.run.send(line)

    async def _close_stdin(self) -> None:
        assert self.run is not None
        if self._killing is not None:
            # A dying agent does not get a clean EOF: let the kill land first.
            await asyncio.shield(self._killing)
            return
        await self.run.close_stdin()

    async def _kill_when_answered(self) -> None:
        assert self.run is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_answered.wait(), _GRACE_S)
        self.run.kill()

    def _note_answers(self, data: bytes) -> None:
        *lines, self._out_partial = (self._out_partial + data).split(b"\n")
        for line in lines:
            rid = _request_id(line)
            if rid is not None:
                self._unanswered.discard(rid)
        if not self._unanswered:
            self._all_answered.set()

    async def _read_client(self) -> None:
        assert self.run is not None
        pending = b""
        try:
            async for msg in self.ws:
                frame = self.framer.decode(msg)
                if frame is None:
                    continue
                channel, data = frame
                if channel == STDIN and self.opts.stdin:
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        await self._handle_line(line + b"\n")
                    if len(pending) > _MAX_PENDING:  # no newline in sight: pass it on as is
                        await self._handle_line(pending)
                        pending = b""
                elif channel == CLOSE and self.framer.protocol == V5 and data[:1] == b"\x00":
                    if pending:
                        await self._handle_line(pending)
                        pending = b""
                    await self._close_stdin()
                # RESIZE and anything else: nothing to do without a TTY.
        finally:
            self._client_gone.set()
            if pending:
                with contextlib.suppress(Exception):
                    await self._handle_line(pending)
            await self._close_stdin()

    async def _pump_output(self) -> bool:
        """Forward agent output; False when the connection was cut on purpose."""
        assert self.run is not None
        lines = 0
        drop = self.faults.exec_drop_after
        garbage = self.faults.exec_garbage
        if drop == 0:
            return False
        if garbage and self.opts.stdout:
            for junk in GARBAGE:
                await self.framer.send(STDOUT, junk)
        while (item := await self.run.output.get()) is not None:
            channel, data = item
            if channel == STDOUT and not self.opts.stdout:
                continue
            if channel == STDERR and not self.opts.stderr:
                continue
            if channel == STDOUT and self.faults.exec_kill_after is not None:
                self._note_answers(data)
            if channel == STDOUT and garbage == "only":
                data = b"".join(GARBAGE[i % len(GARBAGE)] for i in range(data.count(b"\n") or 1))
            if channel == STDOUT and drop is not None:
                for i, byte in enumerate(data):
                    if byte == 0x0A:
                        lines += 1
                        if lines >= drop:
                            await self.framer.send(STDOUT, data[: i + 1])
                            return False
            await self.framer.send(channel, data)
        return True

    async def serve(self, run: AgentRun) -> None:
        self.run = run
        reader: asyncio.Task[None] | None = None
        try:
            try:
                await run.start()
            except OSError as exc:  # could not spawn the agent
                self.dropped = True  # nothing to wait for in the finally below
                await refuse(self.framer, self.ws, f"failed to start the agent: {exc}")
                return
            if not self.opts.stdin:
                await run.close_stdin()
            reader = asyncio.create_task(self._read_client())
            pump = asyncio.create_task(self._pump_output())
            gone = asyncio.create_task(self._client_gone.wait())
            try:
                await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
            if not pump.done():  # the client left: stdin is closed; grace, then SIGKILL
                done, _ = await asyncio.wait({pump}, timeout=_GRACE_S)
                if not done:
                    run.kill()
                    await asyncio.wait({pump}, timeout=_GRACE_S)
            delivered = True
            if not pump.done():
                pump.cancel()
            elif not pump.cancelled() and pump.exception() is None:
                delivered = pump.result()
            if not delivered:
                self.dropped = True
                run.kill()
                self.abort()
                return
            code = await run.wait()
            if not self.ws.closed:
                await self.framer.status(_status_success() if code == 0 else _status_exit(code))
                await self.ws.close()
        except ConnectionError:
            pass  # the client went away mid-write
        finally:
            if reader is not None:
                if not reader.done():
                    reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            if self._killing is not None:
                await asyncio.gather(self._killing, return_exceptions=True)
            await run.aclose()


async def refuse(framer: Framer, ws: web.WebSocketResponse, cause: str) -> None:
    """Answer an exec that cannot start: a channel-3 InternalError, then close."""
    with contextlib.suppress(ConnectionError):
        await framer.status(_status_internal(cause))
        await ws.close()


async def serve_exec(
    request: web.Request,
    pod: dict[str, Any],
    faults: NodeFaults,
    make_run: Callable[[list[str]], Awaitable[AgentRun]],
    runnable: bool,
    agent_image: bool = True,
) -> web.StreamResponse:
    """Upgrade and serve one exec into *pod* (validated and authorised by the caller)."""
    opts = parse_exec(request, pod)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        if "spdy" in request.headers.get("Upgrade", "").lower():
            raise bad_request(
                "the simulated cluster serves exec over WebSocket only "
                f"({V5}, {V4}); SPDY upgrades are not implemented"
            )
        raise bad_request("Upgrade request required")
    protocol = negotiate(request)
    if protocol is None:
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        return web.Response(
            status=403,
            text=f"requested protocol(s) are not supported: [{offered}]; supports "
            f"[{' '.join(SUPPORTED)}]",
        )
    ws = web.WebSocketResponse(protocols=[protocol] if protocol else [], timeout=2.0)
    await ws.prepare(request)
    framer = Framer(ws, protocol or V1)
    # Like the API server: one empty frame on the lowest writable channel says "connected".
    first = STDOUT if opts.stdout else STDERR if opts.stderr else STATUS
    try:
        await framer.send(first, b"")
    except ConnectionError:
        return ws
    if not runnable:
        await refuse(
            framer, ws, f'unable to upgrade connection: container not found ("{opts.container}")'
        )
        return ws
    plan = commands.resolve(opts.command, agent_image)
    if isinstance(plan, commands.NotFound):
        await refuse(framer, ws, not_found_in_container(plan.binary))
        return ws
    transport = request.transport

    def abort() -> None:
        if transport is not None:
            transport.abort()

    session = ExecSession(ws, framer, opts, faults, abort)
    if isinstance(plan, commands.Builtin):
        run: AgentRun = commands.BuiltinRun(plan)
    else:
        run = await make_run(plan.args)
    await session.serve(run)
    return ws
