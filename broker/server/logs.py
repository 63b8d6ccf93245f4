"""The MCP server's log on stderr: plain lines, clipped.

MCPServer installs a rich handler unless logging is already configured. That handler
lays out each message in a box, which takes seconds for a 10 KB message (the SDK logs
an unknown prompt name as given, so a 1 MB name stalls the broker), and imports
``rich.traceback`` on the first exception, which fails once descriptors run out.
A plain handler with clipped messages has neither problem.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["MAX_LOG_CHARS", "install_plain_logging"]

MAX_LOG_CHARS = 2000


class _ClipFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        text = super().formatMessage(record)
        if len(text) > MAX_LOG_CHARS:
            text = f"{text[:MAX_LOG_CHARS]}... ({len(text) - MAX_LOG_CHARS} more characters)"
        return text


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
