"""Pure encode/decode of Kubernetes exec websocket frames (``channel.k8s.io`` v4 and v5).

Each binary message is one channel byte followed by the payload: 0 stdin, 1 stdout,
2 stderr, 3 status (a ``metav1.Status`` JSON document), 4 resize, and, in v5 only,
255 close, whose one-byte payload names the channel being half-closed.
No I/O here: the transport feeds bytes in and gets frames out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
SUPPORTED = (V5, V4)

STDIN = 0
STDOUT = 1
STDERR = 2
STATUS = 3
RESIZE = 4
CLOSE = 255  # v5 only


class FrameError(ValueError):
    """A frame that cannot be decoded (empty, or an unknown channel)."""


def encode(channel: int, payload: bytes = b"") -> bytes:
    """One websocket binary message for ``channel``."""
    if not 0 <= channel <= 255:
        raise FrameError(f"channel {channel} is outside 0..255")
    return bytes((channel,)) + payload


def encode_close(protocol: str, channel: int = STDIN) -> bytes:
    """The v5 half-close message for ``channel`` (stdin by default).

    v4 has no half-close: the only way to end stdin is to close the connection.
    """
    if protocol != V5:
        raise FrameError(f"{protocol or 'this protocol'} has no close frame (v5 only)")
    return bytes((CLOSE, channel))


def decode(message: bytes, protocol: str = V5) -> tuple[int, bytes]:
    """Split one binary message into ``(channel, payload)``.

    A one-byte message is a channel with an empty payload (the API server opens each
    channel that way). Channel 255 is accepted only in v5.
    """
    if not message:
        raise FrameError("empty exec frame (no channel byte)")
    channel = message[0]
    if channel > RESIZE and not (channel == CLOSE and protocol == V5):
        raise FrameError(f"unknown exec channel {channel} for {protocol}")
    return channel, bytes(message[1:])


@dataclass(frozen=True)
class ExecStatus:
    """The command's outcome as the channel-3 status frame reports it."""

    success: bool
    exit_code: int | None  # 0 on success; None when the failure carries no code
    reason: str | None  # metav1.Status reason, e.g. "NonZeroExitCode", "InternalError"
    message: str


def parse_status(payload: bytes) -> ExecStatus:
    """Parse a channel-3 payload (``metav1.Status``) into an :class:`ExecStatus`.

    Success means exit code 0. A ``NonZeroExitCode`` failure carries the code in
    ``details.causes[reason=ExitCode].message``. Anything unparseable is a failure:
    a malformed status must never read as success.
    """
    try:
        doc: Any = json.loads(payload)
    except ValueError:
        text = payload.decode("utf-8", "replace")[:200]
        return ExecStatus(False, None, "MalformedStatus", f"unparseable status frame: {text!r}")
    if not isinstance(doc, dict):
        return ExecStatus(False, None, "MalformedStatus", f"status frame is not an object: {doc!r}")
    status = doc.get("status")
    message = str(doc.get("message") or "")
    reason = doc.get("reason")
    reason = str(reason) if reason is not None else None
    if status == "Success":
        return ExecStatus(True, 0, reason, message or "command exited 0")
    return ExecStatus(False, _exit_code(doc), reason, message or f"exec failed (status {status!r})")


def _exit_code(doc: dict[str, Any]) -> int | None:
    details = doc.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    if not isinstance(causes, list):
        return None
    for cause in causes:
        if not isinstance(cause, dict):
            continue
        if cause.get("reason") in ("ExitCode", None):
            try:
                return int(str(cause.get("message")))
            except ValueError:
                continue
    return None


class LineSplitter:
    """Reassemble newline-delimited messages from stdout chunks split anywhere.

    ``feed`` returns the complete lines (without the newline) and keeps the
    remainder. A line longer than ``max_line`` raises :class:`FrameError` rather
    than buffering without bound (an agent printing garbage without newlines).
    """

    __slots__ = ("_buffer", "max_line")

    def __init__(self, max_line: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self.max_line = max_line

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            self._buffer += chunk
            if len(self._buffer) > self.max_line:
                raise FrameError(
                    f"agent stdout line exceeds {self.max_line} bytes without a newline"
                )
            return []
        self._buffer += chunk
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        if len(self._buffer) > self.max_line:
            raise FrameError(f"agent stdout line exceeds {self.max_line} bytes without a newline")
        return [bytes(line) for line in lines]

    @property
    def pending(self) -> bytes:
        """Bytes received after the last newline (an unfinished message)."""
        return bytes(self._buffer)


class TailBuffer:
    """Keep the last ``limit`` bytes of a stream (the agent's stderr, for diagnostics)."""

    __slots__ = ("_data", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self._data = bytearray()
        self.limit = limit

    def feed(self, chunk: bytes) -> None:
        self._data += chunk
        if len(self._data) > self.limit:
            del self._data[: len(self._data) - self.limit]

    def text(self, max_lines: int = 5) -> str:
        """The last ``max_lines`` non-empty lines, joined with `` | ``."""
        lines = [ln.strip() for ln in self._data.decode("utf-8", "replace").splitlines()]
        return " | ".join([ln for ln in lines if ln][-max_lines:])
