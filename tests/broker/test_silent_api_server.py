"""``--timeout`` covers discovery: against an API server that accepts connections and never
answers, an MCP call through the real ``broker serve`` ends near the deadline with a
clear error (it took request_timeout x retries, about a minute, before)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.session import broker_session


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server on loopback that accepts and stays silent; yields its https:// URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for s in held:
            s.close()


def _kubeconfig(tmp: Path, server: str) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": "u", "user": {"token": "a-token-nobody-checks"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.e2e
@pytest.mark.timeout(60)
async def test_an_mcp_call_ends_at_the_timeout_when_the_api_server_is_silent(
    silent_server: str, tmp_path: Path
) -> None:
    kubeconfig = _kubeconfig(tmp_path, silent_server)
    async with broker_session(tmp_path, "--kubeconfig", str(kubeconfig), "--timeout", "2") as s:
        started = time.monotonic()
        result = await s.call_tool("get_gpu_health", {})
        took = time.monotonic() - started
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "no answer from the API server" in text and "within 2 s (--timeout)" in text
    assert 1.5 <= took <= 6, took
