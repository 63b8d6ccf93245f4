"""Helpers for end-to-end tests: the real ``broker serve`` process (stdio) with a real MCP
client session on it, and reading a tool's structured answer."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


@asynccontextmanager
async def broker_session(tmp_path: Path, *args: str, **env: str) -> AsyncIterator[ClientSession]:
    """``python -m broker serve ARGS`` as a subprocess, an initialised ClientSession on it."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "broker", "serve", *args], env=env or None
    )
    # The subprocess's stderr goes to a file the test can read afterwards.
    with open(tmp_path / "broker.stderr", "w") as errlog:  # noqa: ASYNC230
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)
