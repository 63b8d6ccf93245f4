"""Connection-level limits of the HTTP broker, below authentication.

uvicorn closes idle keep-alive connections but never a connection that has not finished
sending its first request, and it accepts until descriptors run out. When they do,
asyncio's accept loop logs the EMFILE and retries a second later; that log goes through
the MCP SDK's rich handler, which imports a module (one more descriptor), fails, and the
second failure escapes the event loop: the broker exits. Hence:

- :func:`guarded_h11`: a uvicorn protocol with a deadline for reading each request
  (headers and body) and a cap on open connections (the next one gets a 503 and is closed);
- :func:`raise_fd_limit` and :func:`connection_cap`: use the hard descriptor limit, and
  keep most descriptors for node sessions;
- :func:`install_loop_guard`: an event-loop exception handler that cannot fail.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["connection_cap", "guarded_h11", "install_loop_guard", "raise_fd_limit"]

_REFUSAL_BODY = (
    b'{"error":"busy","message":"the broker has too many open connections; retry shortly"}'
)
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
    + str(len(_REFUSAL_BODY)).encode()
    + b"\r\n\r\n"
    + _REFUSAL_BODY
)
# Keep this many descriptors per client connection for node sessions, files, the API.
_FDS_PER_CONNECTION = 4
_FD_SOFT_CEILING = 65536


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one (as Go's runtime does); returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _FD_SOFT_CEILING if hard == resource.RLIM_INFINITY else min(hard, _FD_SOFT_CEILING)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass  # keep the soft limit; the connection cap follows it
    return _FD_SOFT_CEILING if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(requested: int | None, fd_limit: int) -> int:
    """Open client connections allowed: ``requested``, or a share of the descriptors."""
    if requested is not None:
        return requested
    return max(8, min(256, fd_limit // _FDS_PER_CONNECTION))


def guarded_h11(max_connections: int, read_timeout: float) -> type[H11Protocol]:
    """A uvicorn h11 protocol class that refuses connections past ``max_connections``
    (503, then close) and closes a connection that takes longer than ``read_timeout``
    seconds to send a whole request (slow headers, slow body, or nothing at all)."""

    class GuardedH11(H11Protocol):
        _refused = False
        _read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            if len(self.server_state.connections) >= max_connections:
                self._refused = True
                assert isinstance(transport, asyncio.Transport)
                transport.write(_REFUSAL)
                transport.close()
                return
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            # Still reading a request (IDLE: headers incomplete; SEND_BODY: body incomplete).
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                self._arm()
            else:
                self._disarm()

        def _arm(self) -> None:
            if self._read_timer is None and not self.transport.is_closing():
                self._read_timer = self.loop.call_later(read_timeout, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                self.transport.close()  # a half-sent request's handler sees a disconnect

    return GuardedH11


def install_loop_guard(loop: asyncio.AbstractEventLoop) -> None:
    """An exception handler that never raises and writes at most one line a second to
    stderr (``os.write``: no imports, no allocation of descriptors)."""
    last = [0.0]
    suppressed = [0]

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        try:
            now = time.monotonic()
            if now - last[0] < 1.0:
                suppressed[0] += 1
                return
            last[0] = now
            exc = context.get("exception")
            text = str(context.get("message") or "event loop error")
            if exc is not None:
                text += f": {type(exc).__name__}: {exc}"
            if suppressed[0]:
                text += f" ({suppressed[0]} similar messages suppressed)"
                suppressed[0] = 0
            os.write(2, f"broker: {text[:500]}\n".encode("utf-8", "replace"))
        except BaseException:  # noqa: BLE001 - the one handler that must not fail
            pass

    loop.set_exception_handler(handler)
