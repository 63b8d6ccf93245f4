"""The broker's log on stderr.

Text (the default): plain lines, clipped. MCPServer installs a rich handler unless logging
is already configured. That handler lays out each message in a box, which takes seconds
for a 10 KB message (the SDK logs an unknown prompt name as given, so a 1 MB name stalls
the broker), and imports ``rich.traceback`` on the first exception, which fails once
descriptors run out. A plain handler with clipped messages has neither problem.

JSON (``--log-format json``): one JSON object per line, each carrying the request id and
caller of the tool call it belongs to, and one ``tool_call`` line per call (tool, caller,
outcome, duration), so a log pipeline can follow a call across the broker's log lines.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TextIO

from mcp.server.mcpserver import Context

from broker.errors import BrokerError
from broker.server.app import CallGuard
from broker.server.auth import request_identity

__all__ = [
    "MAX_LOG_CHARS",
    "JsonFormatter",
    "configure_logging",
    "install_plain_logging",
    "request_id",
    "tool_call_logger",
]

_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")
logger = logging.getLogger("broker.calls")

MAX_LOG_CHARS = 2000


def _clip(text: str) -> str:
    if len(text) > MAX_LOG_CHARS:
        return f"{text[:MAX_LOG_CHARS]}... ({len(text) - MAX_LOG_CHARS} more characters)"
    return text


class _ClipFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return _clip(super().formatMessage(record))


def install_plain_logging(level: int = logging.WARNING) -> None:
    """Log to stderr as ``broker: LEVEL logger: message`` (once; before any MCPServer)."""
    root = logging.getLogger()
    if any(getattr(h, "_broker_plain", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ClipFormatter("broker: %(levelname)s %(name)s: %(message)s"))
    handler._broker_plain = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def request_id() -> str:
    """The id of the tool call in progress ("" outside one)."""
    return _REQUEST_ID.get()


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line: time, level, logger, message, request id, caller,
    and any ``extra={"fields": {...}}`` given to the log call."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _clip(record.getMessage()),
        }
        if rid := _REQUEST_ID.get():
            doc["request_id"] = rid
        if caller := _CALLER.get():
            doc["caller"] = caller
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure_logging(log_format: str, stream: TextIO | None = None) -> None:
    """``json``: JSON lines on stderr for the broker's loggers; ``text``: leave as is."""
    if log_format == "text":
        return
    if log_format != "json":
        raise ValueError(f"unknown log format {log_format!r}: use text or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    broker = logging.getLogger("broker")
    broker.handlers[:] = [handler]
    broker.setLevel(logging.INFO)
    broker.propagate = False


def tool_call_logger() -> CallGuard:
    """A BrokerApp call guard: a request id (the client's X-Request-Id when it sent one,
    else a fresh one, plus the MCP request id) and one ``tool_call`` log line per call."""

    @asynccontextmanager
    async def guard(tool: str, mctx: Context[Any, Any]) -> AsyncIterator[None]:
        rid = _incoming_id(mctx) or uuid.uuid4().hex[:16]
        who = request_identity(mctx)
        tokens = (_REQUEST_ID.set(rid), _CALLER.set(who.user if who else ""))
        started = time.monotonic()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except BrokerError as exc:
            outcome = exc.kind
            raise
        finally:
            fields = {
                "event": "tool_call",
                "tool": tool,
                "outcome": outcome,
                "duration_s": round(time.monotonic() - started, 4),
                "mcp_request_id": _mcp_id(mctx),
            }
            logger.info("tool %s: %s", tool, outcome, extra={"fields": fields})
            _CALLER.reset(tokens[1])
            _REQUEST_ID.reset(tokens[0])

    return guard


def _incoming_id(mctx: Context[Any, Any]) -> str:
    try:
        request = mctx.request_context.request
    except ValueError:
        return ""
    headers = getattr(request, "headers", None)
    value = headers.get("x-request-id", "") if headers is not None else ""
    # Echoed into logs: keep it short and printable.
    return value[:64] if value.isascii() and value.isprintable() else ""


def _mcp_id(mctx: Context[Any, Any]) -> str | int | None:
    try:
        rid = mctx.request_context.request_id
    except ValueError:
        return None
    return rid if isinstance(rid, (str, int)) else None
