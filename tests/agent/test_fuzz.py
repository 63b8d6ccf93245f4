"""Malformed input on the agent's stdin: every request gets one answer with the right
JSON-RPC error code, notifications get none, and the agent keeps answering afterwards.
Hypothesis drives the in-process session (fast); one round goes through a real process."""

from __future__ import annotations

import io
import json
import random
import subprocess
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.app import serve
from agent.catalog import TOOL_NAMES
from agent.protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_MESSAGE_BYTES,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)
from tests.agent.helpers import AGENT, ROOT, Wire

ERROR_CODES = {PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS}
KNOWN = ("initialize", "ping", "tools/list", "tools/call")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Lone UTF-16 surrogates ("\ud800") are valid in JSON text and once killed the agent.
ids = (
    st.integers(-(2**63), 2**63)
    | st.text(max_size=12)
    | st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=4)
)
bad_ids = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.integers(), max_size=2)
)
methods = st.sampled_from(KNOWN + ("resources/list", "prompts/get", "")) | st.text(max_size=15)
tool_args = st.dictionaries(
    st.sampled_from(["since_minutes", "gpu", "verbose", ""]), json_values, max_size=3
)
call_params = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(TOOL_NAMES) | st.text(max_size=12) | json_values,
        "arguments": tool_args | json_values,
    },
)


def answers_for(wire: Wire, before: int) -> list[dict[str, Any]]:
    with wire._cond:
        return wire.messages[before:]


def assert_alive(wire: Wire) -> None:
    assert wire.request("ping", timeout=10)["result"] == {}


def make_wire() -> Wire:
    w = Wire(["--backend", "fake", "--call-timeout", "5"])
    w.initialize()
    return w


@FUZZ
@given(line=st.binary(max_size=300))
def test_random_bytes(line: bytes) -> None:
    wire = make_wire()
    try:
        before = wire.count()
        wire.send(line)
        got = answers_for(wire, before)
        assert len(got) <= 1
        for answer in got:
            assert answer["error"]["code"] in (PARSE_ERROR, INVALID_REQUEST), answer
            assert answer["id"] is None or isinstance(answer["id"], int | str)
        assert_alive(wire)
    finally:
        wire.close()


@FUZZ
@given(value=json_values)
def test_any_json_value(value: Any) -> None:
    wire = make_wire()
    try:
        before = wire.count()
        wire.send(json.dumps(value))
        got = answers_for(wire, before)
        if isinstance(value, dict):
            if value.get("jsonrpc") != "2.0":  # then it is always an invalid request
                assert len(got) == 1 and got[0]["error"]["code"] == INVALID_REQUEST
        else:
            assert len(got) == 1 and got[0]["error"]["code"] == INVALID_REQUEST
            assert got[0]["id"] is None
        assert_alive(wire)
    finally:
        wire.close()


@FUZZ
@given(
    rid=ids | bad_ids,
    has_id=st.booleans(),
    method=methods | json_values,
    params=st.none() | json_values | call_params,
    jsonrpc=st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2]),
)
def test_envelopes(rid: Any, has_id: bool, method: Any, params: Any, jsonrpc: Any) -> None:
    wire = make_wire()
    try:
        message: dict[str, Any] = {"jsonrpc": jsonrpc, "method": method}
        if has_id:
            message["id"] = rid
        if params is not None:
            message["params"] = params
        before = wire.count()
        wire.send(message)
        valid_id = isinstance(rid, int | str) and not isinstance(rid, bool)
        if has_id and valid_id and method == "tools/call" and jsonrpc == "2.0":
            wire.wait_for(rid, timeout=10)  # a tool may run on a worker first
        got = answers_for(wire, before)
        envelope_ok = jsonrpc == "2.0" and isinstance(method, str)
        if not has_id and envelope_ok and (params is None or isinstance(params, dict | list)):
            assert got == [], "a notification is never answered"
        else:
            assert len(got) == 1, got
            answer = got[0]
            if has_id and not valid_id:
                assert answer["error"]["code"] == INVALID_REQUEST and answer["id"] is None
            elif not envelope_ok:
                assert answer["error"]["code"] == INVALID_REQUEST
            elif "error" in answer:
                assert answer["error"]["code"] in ERROR_CODES, answer
                if method not in KNOWN:
                    assert answer["error"]["code"] in (METHOD_NOT_FOUND, INVALID_REQUEST)
            else:
                assert method in KNOWN
            if has_id and valid_id:
                assert answer["id"] == rid
        assert_alive(wire)
    finally:
        wire.close()


@FUZZ
@given(params=call_params)
def test_tool_calls(params: dict[str, Any]) -> None:
    wire = make_wire()
    try:
        answer = wire.request("tools/call", params)
        name, arguments = params.get("name"), params.get("arguments", {})
        if "result" in answer:
            assert name in TOOL_NAMES
            assert isinstance(arguments, dict | type(None))
            assert answer["result"]["isError"] is False, answer
        else:
            assert answer["error"]["code"] == INVALID_PARAMS, answer
        assert_alive(wire)
    finally:
        wire.close()


def test_serve_skips_oversized_lines_without_holding_them() -> None:
    wire = make_wire()
    try:
        huge = b'{"jsonrpc":"2.0","id":1,"method":"ping","pad":"' + b"x" * (3 * MAX_MESSAGE_BYTES)
        stream = io.BytesIO(
            huge + b'"}\n' + b'{"jsonrpc":"2.0","id":2,"method":"ping"}\n' + b"x" * 10
        )
        before = wire.count()
        serve(wire.session, stream)
        got = answers_for(wire, before)
        assert [a["id"] for a in got] == [1, 2, None]
        assert got[0]["error"]["code"] == INVALID_REQUEST
        assert f"{len(huge) + 3} bytes exceeds" in got[0]["error"]["message"]
        assert got[2]["error"]["code"] == PARSE_ERROR  # the unterminated tail at EOF
    finally:
        wire.close()


def test_one_round_through_a_real_process() -> None:
    rng = random.Random(20261128)
    garbage = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) for _ in range(40)]
    lines = [g.replace(b"\n", b" ") for g in garbage] + [
        b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}',
        b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nope"}}',
        b'{"jsonrpc":"2.0","id":3,"method":"nope"}',
        b"[1,2]",
        b'{"jsonrpc":"2.0","id":4,"method":"ping","pad":"' + b"y" * (2 * MAX_MESSAGE_BYTES) + b'"}',
        b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get_gpu_health"}}',
        b'{"jsonrpc":"2.0","id":6,"method":"ping"}',
        # lone UTF-16 surrogates in ids once killed the agent (issue 17)
        b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}',
        b'{"jsonrpc":"2.0","id":"\\udfff","method":"tools/call","params":{"name":"get_gpu_health"}}',
        b'{"jsonrpc":"2.0","id":7,"method":"ping"}',
    ]
    done = subprocess.run(
        [*AGENT, "--backend", "fake"],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    answers = [json.loads(line) for line in done.stdout.splitlines()]  # stdout: only JSON
    by_id = {a["id"]: a for a in answers if a["id"] is not None}
    assert by_id[1]["result"]["protocolVersion"] == "2025-06-18"
    assert by_id[2]["error"]["code"] == INVALID_PARAMS
    assert by_id[3]["error"]["code"] == METHOD_NOT_FOUND
    assert by_id[4]["error"]["code"] == INVALID_REQUEST  # refused unparsed, id read anyway
    assert by_id[5]["result"]["structuredContent"]["gpus"]
    assert by_id[6]["result"] == {}
    assert by_id["\ud800"]["result"] == {}
    assert by_id["\udfff"]["result"]["isError"] is False
    assert by_id[7]["result"] == {}
    anonymous = [a for a in answers if a["id"] is None]
    assert {a["error"]["code"] for a in anonymous} <= {PARSE_ERROR, INVALID_REQUEST}
    assert len(anonymous) >= 1  # the batch at least
