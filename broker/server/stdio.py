"""The broker's stdio transport: the MCP SDK's, with every input line answered.

The SDK's stdio server drops a line it cannot parse (the client then waits forever),
reads lines of any length, and crashes its writer on an answer that cannot be encoded
(a lone UTF-16 surrogate echoed back). :class:`CheckedLines` sits in front of it and
answers such lines itself, as JSON-RPC says: -32700 for a line that is not JSON,
-32600 (with the request's id when it can be read) for one that is too large, not a
JSON-RPC message, or not valid Unicode. Only good lines reach the SDK.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import anyio
import mcp_types as types
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from broker.errors import clip
from broker.server.app import BrokerApp

__all__ = ["MAX_LINE_BYTES", "CheckedLines", "run_stdio"]

MAX_LINE_BYTES = 4 * 1024 * 1024  # as the SDK's HTTP body limit
_ID_SCAN_BYTES = 64 * 1024  # where to look for the id of an oversized request
_MAX_NAME = 256  # longest method, tool or prompt name worth looking up
_ID = re.compile(rb'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,256}")')


class CheckedLines:
    """An async iterator of good JSON-RPC lines read from ``source`` (binary); the others
    are answered through ``replies`` (the server's write stream, set once it exists)."""

    def __init__(self, source: BinaryIO, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._source = source
        self._max = max_line_bytes
        self._ready = anyio.Event()
        self._replies: Any = None

    def answer_through(self, replies: Any) -> None:
        self._replies = replies
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        while True:
            raw = await self._readline(self._max + 1)
            if not raw:
                return
            if len(raw) > self._max and not raw.endswith(b"\n"):
                size = len(raw) + await self._skip_rest()
                await self._reply(
                    _read_id(raw[:_ID_SCAN_BYTES]),
                    types.INVALID_REQUEST,
                    f"request of {size} bytes is over the broker's limit of "
                    f"{self._max} bytes per message; send less (e.g. a shorter node_selector)",
                )
                continue
            if not raw.strip():
                continue
            line = raw.decode("utf-8", "replace")
            problem = await self._check(line)
            if problem is None:
                yield line

    async def _readline(self, limit: int) -> bytes:
        # In a thread (stdin blocks); abandoned on cancellation so shutdown never waits.
        return await anyio.to_thread.run_sync(self._source.readline, limit, abandon_on_cancel=True)

    async def _skip_rest(self) -> int:
        skipped = 0
        while True:
            chunk = await self._readline(self._max)
            skipped += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                return skipped

    async def _check(self, line: str) -> str | None:
        """None when ``line`` is a JSON-RPC message the SDK can take; else answer it."""
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError) as exc:
            await self._reply(None, types.PARSE_ERROR, f"parse error: not JSON ({clip(exc)})")
            return "parse"
        msg_id = doc.get("id") if isinstance(doc, dict) else None
        if not isinstance(msg_id, (str, int)) or isinstance(msg_id, bool):
            msg_id = None
        if "\\ud" in line.lower() and not _encodable(doc):
            if msg_id is not None and not _encodable(msg_id):
                msg_id = None
            await self._reply(
                msg_id,
                types.INVALID_REQUEST,
                "invalid request: it holds a lone UTF-16 surrogate (e.g. \\ud800), which is "
                "not Unicode; send valid UTF-8 text",
            )
            return "surrogate"
        name_problem = _overlong_name(doc)
        if name_problem is not None:
            if msg_id is not None:  # a notification gets no answer, as JSON-RPC says
                await self._reply(msg_id, name_problem[0], name_problem[1])
            return "name"
        try:
            types.jsonrpc_message_adapter.validate_python(doc, by_name=False)
        except ValueError as exc:
            await self._reply(
                msg_id,
                types.INVALID_REQUEST,
                f"invalid request: not a JSON-RPC 2.0 message ({clip(exc, 200)})",
            )
            return "invalid"
        return None

    async def _reply(self, msg_id: str | int | None, code: int, message: str) -> None:
        await self._ready.wait()
        error = types.JSONRPCError(
            jsonrpc="2.0", id=msg_id, error=types.ErrorData(code=code, message=message)
        )
        await self._replies.send(SessionMessage(error))


def _overlong_name(doc: Any) -> tuple[int, str] | None:
    """A method, tool or prompt name no server has: answered here, so that no layer
    below echoes or logs a megabyte of it."""
    if not isinstance(doc, dict):
        return None
    method = doc.get("method")
    if isinstance(method, str) and len(method) > _MAX_NAME:
        return types.METHOD_NOT_FOUND, f"method not found: {clip(method, 100)!r}"
    params = doc.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    if isinstance(name, str) and len(name) > _MAX_NAME:
        return (
            types.INVALID_PARAMS,
            f"no tool or prompt has a name of {len(name)} characters ({clip(name, 60)!r}); "
            "list them with tools/list or prompts/list",
        )
    return None


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_id(prefix: bytes) -> str | int | None:
    """The id of a request cut short (clients write ``jsonrpc``, ``id``, ``method`` first)."""
    match = _ID.search(prefix)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, (str, int)) and _encodable(value) else None


def _private_stdin() -> BinaryIO:
    """A private duplicate of fd 0, with fd 0 itself pointed at /dev/null: a child process
    or a stray read must not consume MCP input (as the SDK does for the stdin it claims)."""
    try:
        private = os.dup(0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    except OSError:
        return sys.stdin.buffer
    return os.fdopen(private, "rb")


async def run_stdio(app: BrokerApp, source: BinaryIO | None = None) -> None:
    """Serve ``app`` over stdin/stdout until stdin ends (the SDK's run_stdio_async, with
    :class:`CheckedLines` in front)."""
    lines = CheckedLines(source if source is not None else _private_stdin())
    server = app._lowlevel_server  # noqa: SLF001 - MCPServer.run_stdio_async takes no stdin
    async with stdio_server(stdin=lines) as (read_stream, write_stream):  # type: ignore[arg-type]
        lines.answer_through(write_stream)
        await server.run(read_stream, write_stream, server.create_initialization_options())
