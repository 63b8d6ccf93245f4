"""The HTTP broker below authentication: connection floods under a lowered descriptor
limit, idle and slow-header connections, the token by default, and the settings it
refuses. The flood tests run the real ``broker serve`` in a subprocess whose
RLIMIT_NOFILE is lowered, against the simulated cluster, over loopback only."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anyio
import pytest
from typer.testing import CliRunner

from broker.cli.app import app
from broker.errors import ConfigError
from broker.server.http import (
    HttpSettings,
    check_http_settings,
    generate_token,
    token_path,
)
from broker.server.http_limits import connection_cap
from broker.sim import SimServer, sim_in_thread
from tests.e2e.session import JSON_HEADERS, http_broker

FD_LIMIT = 128
# Run the real CLI with a lowered descriptor limit (soft and hard: it cannot be raised).
WRAPPER = (
    "import resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, {FD_LIMIT})); "
    "from broker.cli import main; sys.argv = ['broker', *sys.argv[1:]]; main()"
)
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    """A small simulated cluster in its own thread (the tests here block)."""
    with sim_in_thread(nodes=2, scenario={}, in_process=True) as server:
        yield server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def broker_process(
    sim: SimServer, tmp: Path, *extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``broker serve --transport http`` with RLIMIT_NOFILE=128; yields (process, port)."""
    port = _free_port()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp)}
    env.pop("K8S_GPU_MCP_TOKEN", None)
    with open(tmp / "broker.stderr", "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRAPPER,
                "serve",
                "--transport",
                "http",
                "--port",
                str(port),
                "--kubeconfig",
                str(sim.kubeconfig),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        try:
            deadline = time.monotonic() + 30
            while _health(port) != 200:
                assert proc.poll() is None, (tmp / "broker.stderr").read_text()
                assert time.monotonic() < deadline, "the broker did not start"
                time.sleep(0.1)
            yield proc, port
        finally:
            proc.terminate()
            proc.wait(10)


def _health(port: int, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _post_init(port: int, token: str | None) -> int:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/mcp", json.dumps(INIT).encode(), headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _flood(port: int, count: int) -> list[socket.socket]:
    """Open up to ``count`` idle connections (stop at the first that cannot connect)."""
    held: list[socket.socket] = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(1.0)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            break
        held.append(s)
    return held


def _answers(held: list[socket.socket]) -> dict[str, int]:
    counts = {"503": 0, "closed": 0, "open": 0}
    for s in held:
        s.settimeout(0.02)
        try:
            data = s.recv(64)
        except TimeoutError:
            counts["open"] += 1
            continue
        except OSError:
            data = b""
        counts["503" if b" 503 " in data else "closed"] += 1
    return counts


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, within: float) -> None:
    deadline = time.monotonic() + within
    while _health(port) != 200:
        assert proc.poll() is None, "the broker exited"
        assert time.monotonic() < deadline, "the broker did not answer /healthz after the flood"
        time.sleep(0.2)


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_a_flood_past_the_connection_cap_is_refused_and_idle_ones_closed(
    sim: SimServer, tmp_path: Path
) -> None:
    with broker_process(sim, tmp_path) as (proc, port):
        token_file = token_path(port, {"XDG_RUNTIME_DIR": str(tmp_path)})
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert token in (tmp_path / "broker.stderr").read_text()  # printed once, to stderr

        silent = socket.create_connection(("127.0.0.1", port))
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finish
        slow_body = socket.create_connection(("127.0.0.1", port))
        slow_body.sendall(  # authenticated, then a body that never arrives in full
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Accept: application/json, text/event-stream\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + b"Content-Length: 1000\r\n\r\n{"
        )
        opened = time.monotonic()
        held = _flood(port, 300)
        answers = _answers(held)
        assert proc.poll() is None
        cap = connection_cap(None, FD_LIMIT)
        assert answers["503"] >= 1, answers  # refused past the cap, with a reason
        assert answers["open"] <= cap, answers

        for s in (silent, slow, slow_body):  # closed by the 10 s read deadline
            s.settimeout(20)
            assert s.recv(64) == b""
            s.close()
        assert 8 <= time.monotonic() - opened <= 18
        for s in held:
            s.close()
        _wait_healthy(proc, port, within=15)
        assert _post_init(port, None) == 401
        assert _post_init(port, token) == 200
    assert not token_file.exists()  # removed when the broker stops


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_descriptor_exhaustion_does_not_kill_the_broker(sim: SimServer, tmp_path: Path) -> None:
    # A cap above the descriptor limit: accept() itself fails with EMFILE.
    with broker_process(sim, tmp_path, "--max-connections", "1000") as (proc, port):
        token = token_path(port, {"XDG_RUNTIME_DIR": str(tmp_path)}).read_text().strip()
        held = _flood(port, 250)
        time.sleep(1.5)
        assert proc.poll() is None, (tmp_path / "broker.stderr").read_text()
        for s in held:
            s.close()
        _wait_healthy(proc, port, within=20)
        assert _post_init(port, token) == 200
    stderr = (tmp_path / "broker.stderr").read_text()
    assert "Traceback" not in stderr
    assert "Too many open files" in stderr  # the flood did reach the limit


def test_serve_refuses_bad_auth_settings_in_one_line() -> None:
    runner = CliRunner()
    for args, message in (
        (["--auth", "kubernetes", "--node", "gpu-node-1"], "cannot be combined with --auth"),
        (["--auth-token", "jeton-secret-très-long-1234"], "printable ASCII"),
        (["--auth", "none", "--host", "0.0.0.0"], "--auth none is refused"),
    ):
        result = runner.invoke(app, ["serve", "--transport", "http", *args], env={"COLUMNS": "300"})
        assert result.exit_code == 1, result.output
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- settings -------------------------------------------------------------------------------
def test_auth_modes_and_token_checks() -> None:
    check_http_settings(HttpSettings(auth="none"))  # loopback, explicit
    with pytest.raises(ConfigError, match="--auth none is refused on 0.0.0.0"):
        check_http_settings(HttpSettings(host="0.0.0.0", auth="none"))
    with pytest.raises(ConfigError, match="contradicts"):
        check_http_settings(HttpSettings(auth="none", token="t" * 20))
    check_http_settings(HttpSettings(host="0.0.0.0", auth="kubernetes"))  # callers' tokens
    with pytest.raises(ConfigError, match="drop the static bearer token"):
        check_http_settings(HttpSettings(auth="kubernetes", token="t" * 20))
    with pytest.raises(ConfigError, match="unknown --auth"):
        check_http_settings(HttpSettings(auth="basic"))
    with pytest.raises(ConfigError, match="printable ASCII"):
        check_http_settings(HttpSettings(token="jeton-secret-très-long"))
    with pytest.raises(ConfigError, match="printable ASCII"):
        check_http_settings(HttpSettings(token="a token with spaces 123"))
    with pytest.raises(ConfigError, match="needs a token"):
        check_http_settings(HttpSettings(), generated_ok=False)


def test_a_token_is_generated_only_when_needed() -> None:
    made = generate_token(HttpSettings())
    assert made.token and len(made.token) >= 32 and made.token_generated
    check_http_settings(made, generated_ok=False)
    assert generate_token(HttpSettings()).token != made.token
    given = HttpSettings(token="t" * 20)
    assert generate_token(given) is given
    assert generate_token(HttpSettings(auth="none")).token is None


def test_token_path_prefers_the_runtime_dir(tmp_path: Path) -> None:
    runtime = token_path(8080, {"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/u"})
    assert runtime == Path("/run/user/1000/k8s-gpu-mcp/broker-8080.token")
    home = token_path(9000, {"HOME": "/home/u"})
    assert home == Path("/home/u/.config/k8s-gpu-mcp/broker-9000.token")


def test_connection_cap_follows_the_descriptor_limit() -> None:
    assert connection_cap(None, 128) == 32
    assert connection_cap(None, 1024) == 256
    assert connection_cap(None, 1_000_000) == 256
    assert connection_cap(None, 16) == 8
    assert connection_cap(5, 1024) == 5


# -- abandoned MCP sessions -----------------------------------------------------------------
@pytest.mark.e2e
async def test_abandoned_sessions_are_capped_and_expire(sim: SimServer) -> None:
    token = "t" * 24
    settings = HttpSettings(token=token, max_sessions=3, session_idle_s=1.0)
    auth = {**JSON_HEADERS, "Authorization": f"Bearer {token}"}
    async with http_broker(sim, settings) as port, aiohttp.ClientSession() as http:

        async def open_session() -> int:
            async with http.post(f"http://127.0.0.1:{port}/mcp", json=INIT, headers=auth) as r:
                await r.read()
                return r.status

        assert [await open_session() for _ in range(3)] == [200, 200, 200]  # never closed
        assert await open_session() == 503  # the cap, instead of 10,000 x ~40 KiB
        await anyio.sleep(1.6)  # idle expiry reclaims them
        assert await open_session() == 200
