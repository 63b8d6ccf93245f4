"""MCP message streams to one node's agent: the exec frame codec (:mod:`.channels`) and
the pods/exec websocket adapter (:mod:`.exec`).

The stream types are the MCP SDK's own; this is the one place that names them, so an SDK
change touches one line.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage

if TYPE_CHECKING:
    from broker.kube.discovery import NodeTarget

__all__ = ["Connect", "ReadStream", "TransportStreams", "WriteStream"]

TransportStreams = tuple[ReadStream[SessionMessage | Exception], WriteStream[SessionMessage]]
"""(read, write): what ``ClientSession`` runs on."""

Connect = Callable[["NodeTarget"], AbstractAsyncContextManager[TransportStreams]]
"""Open the streams to one node's agent (an async context manager; closing ends it)."""
