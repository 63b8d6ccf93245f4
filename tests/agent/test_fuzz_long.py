"""The long fuzz run of the agent protocol (``make fuzz``; marker ``fuzz``, not in
``make test``). Whole conversations, not single lines: pipelined tool calls, cancels,
surrogate ids, huge names and keys, oversized and garbage lines, fed to one session.
Invariants: stdout carries only JSON-RPC lines, every request with a fresh valid id is
answered exactly once, errors stay small whatever the input, and the agent keeps
answering. One long stream also goes through a real ``gpu-agent`` process.

``FUZZ_EXAMPLES`` (environment) scales the run; the default (2,000) takes about a minute here.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.catalog import TOOL_NAMES
from agent.protocol import MAX_MESSAGE_BYTES
from tests.agent.helpers import AGENT, ROOT, Wire

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))
LONG = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_ERROR_BYTES = 8192  # whatever the input, an error answer stays this small

surrogates = st.characters(categories=["Cs"])
odd_text = st.text(st.characters() | surrogates, max_size=12)
huge_text = st.integers(1000, 200_000).map(lambda n: "h" * n)
ids = st.integers(-(2**53), 2**53) | odd_text
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | odd_text
values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(odd_text, kids, max_size=3),
    max_leaves=8,
)
arguments = st.dictionaries(
    st.sampled_from(["since_minutes", "x"]) | odd_text | huge_text,
    values | st.floats(-1e9, 1e9) | huge_text,
    max_size=3,
)


@st.composite
def steps(draw: st.DrawFn) -> tuple[str, Any]:
    """One thing a client might send: ("request", (method, params)), ("raw", line),
    ("cancel", index of an earlier request)."""
    kind = draw(st.sampled_from(["call", "call", "call", "request", "raw", "cancel", "big"]))
    if kind == "call":
        name = draw(st.sampled_from(TOOL_NAMES) | odd_text | huge_text)
        return "request", ("tools/call", {"name": name, "arguments": draw(arguments)})
    if kind == "request":
        method = draw(st.sampled_from(["ping", "tools/list", "initialize"]) | odd_text | huge_text)
        return "request", (method, draw(st.none() | st.dictionaries(odd_text, values)))
    if kind == "raw":
        return "raw", draw(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ")))
    if kind == "big":
        return "big", draw(st.integers(0, 3))
    return "cancel", draw(st.integers(0, 50))


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()  # ASCII: surrogates go as \\u escapes


@LONG
@given(script=st.lists(steps(), min_size=1, max_size=40), rids=st.lists(ids, min_size=40))
def test_conversations_keep_every_invariant(script: list[tuple[str, Any]], rids: list[Any]) -> None:
    wire = Wire(["--backend", "fake", "--call-timeout", "5"])
    try:
        wire.initialize()
        asked: list[Any] = []
        cancelled: set[int] = set()
        for n, (kind, payload) in enumerate(script):
            if kind == "request":
                rid = rids[n]
                method, params = payload
                message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
                if params is not None:
                    message["params"] = params
                if rid not in asked:  # a duplicate in-flight id is a client bug
                    asked.append(rid)
                    wire.send(_line(message))
            elif kind == "raw":
                wire.send(payload)
            elif kind == "big":
                rid = f"big-{n}"
                pad = "p" * (MAX_MESSAGE_BYTES + payload * 1000)
                head = {"jsonrpc": "2.0", "id": rid, "method": "ping", "params": {"pad": pad}}
                asked.append(rid)
                wire.send(_line(head))
            elif asked:
                target = asked[payload % len(asked)]
                cancelled.add(payload % len(asked))
                wire.send(
                    _line(
                        {
                            "jsonrpc": "2.0",
                            "method": "notifications/cancelled",
                            "params": {"requestId": target},
                        }
                    )
                )
        for i, rid in enumerate(asked):
            if i in cancelled:
                continue  # a cancelled call may or may not be answered; never twice
            wire.wait_for(rid, timeout=5)
        with wire._cond:
            messages = list(wire.messages)
        for rid in asked:
            got = [m for m in messages if m.get("id") == rid and type(m["id"]) is type(rid)]
            assert len(got) <= 1, got
        for message in messages:
            if "error" in message or message.get("result", {}).get("isError"):
                assert len(json.dumps(message)) <= MAX_ERROR_BYTES, json.dumps(message)[:300]
        assert wire.request("ping", timeout=10)["result"] == {}
    finally:
        wire.close()


def test_a_long_random_stream_through_a_real_process() -> None:
    """2,000 mixed lines on a real agent's stdin: only JSON on stdout, exit 0, every
    request answered once."""
    import random

    rng = random.Random(17)
    lines: list[bytes] = [
        _line(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {"protocolVersion": "2025-11-25"},
            }
        )
    ]
    expected: list[Any] = [0]
    for n in range(1, 2000):
        roll = rng.random()
        if roll < 0.4:
            rid: Any = n if rng.random() < 0.5 else f"{chr(0xD800 + n % 0x800)}-{n}"
            name = rng.choice([*TOOL_NAMES, "nope", "x" * rng.randrange(1, 5000)])
            params = {"name": name, "arguments": rng.choice([{}, {"since_minutes": 5}, {"z": 1}])}
            lines.append(
                _line({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})
            )
            expected.append(rid)
        elif roll < 0.7:
            lines.append(_line({"jsonrpc": "2.0", "id": n, "method": "ping"}))
            expected.append(n)
        else:
            lines.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 100))))
    stream = b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n"
    done = subprocess.run(
        [*AGENT, "--backend", "fake"],
        input=stream,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    seen: dict[Any, int] = {}
    for answer in answers:
        assert answer["jsonrpc"] == "2.0"
        if answer["id"] is not None:
            seen[answer["id"]] = seen.get(answer["id"], 0) + 1
    for rid in expected:
        assert seen.get(rid) == 1, rid
