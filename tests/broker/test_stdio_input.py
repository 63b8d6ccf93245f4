"""Every line a client sends over stdio gets an answer: the real ``broker serve`` process,
raw JSON-RPC lines on its stdin (what an MCP client library would never send, and an
attacker or a buggy client might), against the simulated cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from broker.server.stdio import MAX_LINE_BYTES
from broker.sim import SimServer, sim_in_thread

pytestmark = pytest.mark.e2e

INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    with sim_in_thread(nodes=2, scenario={}, in_process=True) as server:
        yield server


class RawClient:
    """``broker serve`` over pipes, one JSON-RPC line at a time."""

    def __init__(self, sim: SimServer) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broker", "serve", "--kubeconfig", str(sim.kubeconfig)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.send(INIT)
        assert self.receive()["id"] == 0
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, message: dict[str, Any] | bytes) -> None:
        line = message if isinstance(message, bytes) else json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the broker closed stdout (did it die?)"
        doc: dict[str, Any] = json.loads(line)
        return doc

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(15)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def client(sim: SimServer) -> Iterator[RawClient]:
    raw = RawClient(sim)
    try:
        yield raw
    finally:
        raw.close()


def _error(doc: dict[str, Any]) -> tuple[Any, int, str]:
    return doc["id"], doc["error"]["code"], doc["error"]["message"]


def test_a_line_that_is_not_json_gets_parse_error(client: RawClient) -> None:
    client.send(b"this is not json")
    msg_id, code, message = _error(client.receive())
    assert (msg_id, code) == (None, -32700) and "not JSON" in message
    client.send({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert client.receive() == {"jsonrpc": "2.0", "id": 2, "result": {}}


def test_json_that_is_not_json_rpc_gets_invalid_request_with_its_id(client: RawClient) -> None:
    client.send({"id": 5, "hello": "world"})
    assert _error(client.receive())[:2] == (5, -32600)
    client.send(b"[" * 100_000)  # too deep for any JSON parser
    assert _error(client.receive())[:2] == (None, -32700)


def test_a_lone_surrogate_is_refused_and_the_broker_lives(client: RawClient) -> None:
    client.send(b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}')
    assert _error(client.receive())[:2] == (None, -32600)
    client.send(
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call",'
        b'"params":{"name":"get_gpu_health","arguments":{"node":"\\udfff"}}}'
    )
    msg_id, code, message = _error(client.receive())
    assert (msg_id, code) == (3, -32600) and "surrogate" in message
    client.send({"jsonrpc": "2.0", "id": 4, "method": "ping"})
    assert client.receive()["id"] == 4


def test_an_oversized_request_is_answered_with_its_id_and_the_limit(client: RawClient) -> None:
    selector = "a=" + "x" * (MAX_LINE_BYTES + 10)
    call = {"name": "get_gpu_health", "arguments": {"node_selector": selector}}
    client.send({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": call})
    msg_id, code, message = _error(client.receive())
    assert (msg_id, code) == (11, -32600)
    assert f"limit of {MAX_LINE_BYTES} bytes" in message
    client.send({"jsonrpc": "2.0", "id": 12, "method": "ping"})
    assert client.receive()["id"] == 12


def test_a_huge_selector_gives_a_short_error(client: RawClient) -> None:
    call = {"name": "get_gpu_health", "arguments": {"node_selector": "a=" + "x" * 1_000_000}}
    client.send({"jsonrpc": "2.0", "id": 21, "method": "tools/call", "params": call})
    answer = client.receive()
    assert answer["id"] == 21 and answer["result"]["isError"]
    text = answer["result"]["content"][0]["text"]
    assert "invalid node_selector" in text and "more characters" in text
    assert len(json.dumps(answer)) < 2000  # was 3 MB


def test_megabyte_names_are_answered_at_once_and_briefly(client: RawClient) -> None:
    # The SDK echoed these whole, and laid out an unknown prompt's name in a rich log box
    # (seconds for 10 KB, so a 1 MB name stalled the broker).
    huge = "p" * 1_000_000
    for i, (method, params) in enumerate(
        [("prompts/get", {"name": huge}), ("tools/call", {"name": huge}), (huge, {})]
    ):
        started = time.monotonic()
        client.send({"jsonrpc": "2.0", "id": 30 + i, "method": method, "params": params})
        answer = client.receive()
        assert time.monotonic() - started < 5
        assert answer["id"] == 30 + i and len(json.dumps(answer)) < 600
    client.send(
        {"jsonrpc": "2.0", "id": 40, "method": "prompts/get", "params": {"name": "q" * 200}}
    )
    assert "error" in client.receive()  # under the name limit: the SDK answers, quickly
