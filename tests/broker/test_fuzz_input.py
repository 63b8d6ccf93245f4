"""Fuzz the broker's JSON-RPC input: the stdio line checker (every line passed on or
answered exactly once, every answer encodable) and the HTTP endpoint (no 5xx, the
server keeps answering). A few seconds in ``make test``; ``-m fuzz`` runs them longer."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.shared.message import SessionMessage

from broker.server import HttpSettings
from broker.server.stdio import CheckedLines
from broker.sim import SimServer
from tests.e2e.session import http_broker

LIMIT = 512  # small, so that oversized lines are common

ids = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=20),
    st.sampled_from(["\ud800", "a\udfffb"]),  # lone surrogates
    st.booleans(),
    st.floats(allow_nan=False),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30)),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
requests = st.fixed_dictionaries(
    {
        "jsonrpc": st.sampled_from(["2.0", "1.0"]),
        "id": ids,
        "method": st.sampled_from(["ping", "tools/call", "x"]),
    },
    optional={"params": json_values},
)


def _encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()  # ensure_ascii: surrogates travel as \\udXXX escapes


lines = st.one_of(
    st.binary(max_size=LIMIT * 2).map(lambda b: b.replace(b"\n", b" ")),
    json_values.map(_encode),
    requests.map(_encode),
    requests.map(lambda r: _encode({**r, "pad": "x" * LIMIT})),  # over the limit, id first
)


def _run_checker(batch: list[bytes]) -> tuple[list[str], list[SessionMessage]]:
    source = io.BytesIO(b"".join(line + b"\n" for line in batch))
    passed: list[str] = []
    replies: list[SessionMessage] = []

    async def main() -> None:
        send, receive = anyio.create_memory_object_stream[SessionMessage](len(batch) + 1)
        checker = CheckedLines(source, max_line_bytes=LIMIT)
        checker.answer_through(send)
        async for line in checker:
            passed.append(line)
        send.close()
        async with receive:
            replies.extend([m async for m in receive])

    anyio.run(main)
    return passed, replies


def _check_lines(batch: list[bytes]) -> None:
    passed, replies = _run_checker(batch)
    assert len(passed) + len(replies) == sum(1 for b in batch if b.strip())
    for line in passed:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    for reply in replies:
        assert isinstance(reply.message, types.JSONRPCError)
        assert reply.message.error.code in (types.PARSE_ERROR, types.INVALID_REQUEST)
        assert len(reply.message.error.message) < 600
        reply.message.model_dump_json(by_alias=True, exclude_unset=True).encode()


def _stdio_target(examples: int) -> Callable[[], None]:
    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(lines, max_size=8))
    def target(batch: list[bytes]) -> None:
        _check_lines(batch)

    return target


def test_fuzz_stdio_lines_short() -> None:
    _stdio_target(150)()


@pytest.mark.fuzz
@pytest.mark.timeout(600)
def test_fuzz_stdio_lines_long() -> None:
    _stdio_target(5000)()


# -- HTTP ---------------------------------------------------------------------------------
TOKEN = "fuzz-token-0123456789abcdef"
bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(_encode),
    requests.map(_encode),
    st.lists(requests, max_size=3).map(_encode),  # batches
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(
            ["application/json", "text/plain", "application/json; charset=latin-1", "x"]
        ),
        "accept": st.sampled_from(["application/json, text/event-stream", "*/*", "text/html", ""]),
        "mcp-session-id": st.text(alphabet="abcdef0123456789", max_size=40),
        "mcp-protocol-version": st.sampled_from(["2025-06-18", "1999-01-01", "x"]),
    },
)


def _http_target(port: int, examples: int) -> Callable[[], None]:
    url = f"http://127.0.0.1:{port}/mcp"

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(bodies, headers, st.sampled_from(["POST", "GET", "DELETE", "PUT"]))
    def target(body: bytes, extra: dict[str, str], method: str) -> None:
        with httpx2.Client(timeout=10) as http:
            auth = {"authorization": f"Bearer {TOKEN}"}
            response = http.request(method, url, content=body, headers={**auth, **extra})
            assert response.status_code < 500 or response.status_code == 503, (
                response.status_code,
                response.text[:300],
            )
            assert http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200

    return target


async def _fuzz_http(sim: SimServer, examples: int) -> None:
    async with http_broker(sim, HttpSettings(host="127.0.0.1", token=TOKEN)) as port:
        await anyio.to_thread.run_sync(_http_target(port, examples))


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_fuzz_http_short(sim: SimServer) -> None:
    await _fuzz_http(sim, 60)


@pytest.mark.e2e
@pytest.mark.fuzz
@pytest.mark.timeout(900)
async def test_fuzz_http_long(sim: SimServer) -> None:
    await _fuzz_http(sim, 3000)
