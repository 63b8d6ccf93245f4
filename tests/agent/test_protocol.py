"""The JSON-RPC / MCP core (agent.protocol), driven in-process through create_session
with the fake backend: lifecycle, version negotiation, error codes, concurrency,
deadlines and cancellation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from agent.catalog import STRUCTURED_ONLY, TOOL_NAMES
from agent.protocol import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LATEST_VERSION,
    MAX_HUNG,
    MAX_MESSAGE_BYTES,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    SUPPORTED_VERSIONS,
    Session,
    scan_id,
)
from agent.schema import validate
from tests.agent.helpers import Wire

SLOW = {"faults": [{"gpu": 0, "kind": "slow_nvml", "seconds": 30}]}


def slow_wire(wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]) -> Wire:
    """A session whose GPU queries hang (slow_nvml) under a 0.3 s call deadline."""
    w = wire("--backend", "fake", "--scenario", scenario(SLOW), "--call-timeout", "0.3")
    w.initialize()
    return w


# --- lifecycle and versions ----------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_initialize_echoes_each_supported_version(wire: Callable[..., Wire], version: str) -> None:
    result = wire("--backend", "fake").initialize(version)
    assert result["protocolVersion"] == version
    assert result["serverInfo"]["name"] == "k8s-gpu-mcp-agent"
    assert result["serverInfo"]["version"]
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert "get_gpu_health" in result["instructions"]


@pytest.mark.parametrize("version", ["2024-01-01", "2026-07-28", "latest", ""])
def test_initialize_answers_latest_for_unknown_versions(
    wire: Callable[..., Wire], version: str
) -> None:
    assert wire("--backend", "fake").initialize(version)["protocolVersion"] == LATEST_VERSION


@pytest.mark.parametrize("params", [{}, {"protocolVersion": 20250618}, {"protocolVersion": None}])
def test_initialize_requires_a_version_string(
    wire: Callable[..., Wire], params: dict[str, Any]
) -> None:
    response = wire("--backend", "fake").request("initialize", params)
    assert response["error"]["code"] == INVALID_PARAMS
    assert "protocolVersion" in response["error"]["message"]


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_structured_only_applies_where_structured_content_exists(
    wire: Callable[..., Wire], version: str
) -> None:
    """The extension drops the answer's text copy only when structuredContent carries it
    (2025-06-18 on): an older session keeps the JSON text, its only copy."""
    w = wire("--backend", "fake")
    init = w.initialize(version, {"extensions": {STRUCTURED_ONLY: {}}})
    result = w.call("get_gpu_inventory")
    text = result["content"][0]["text"]
    if version >= "2025-06-18":
        assert init["capabilities"]["extensions"] == {STRUCTURED_ONLY: {}}
        assert result["structuredContent"]["gpus"] and "structuredContent" in text
    else:
        assert "extensions" not in init["capabilities"]
        assert json.loads(text)["gpus"]
    # An unknown extension, or a malformed declaration, changes nothing.
    for declared in ({"extensions": {"example.org/other": {}}}, {"extensions": []}):
        other = wire("--backend", "fake")
        assert "extensions" not in other.initialize(version, declared)["capabilities"]
        assert json.loads(other.call("get_gpu_inventory")["content"][0]["text"])["gpus"]


def test_tool_shape_follows_the_negotiated_version(wire: Callable[..., Wire]) -> None:
    shapes = {}
    for version in SUPPORTED_VERSIONS:
        w = wire("--backend", "fake")
        w.initialize(version)
        tools = w.request("tools/list")["result"]["tools"]
        assert [t["name"] for t in tools] == list(TOOL_NAMES)
        shapes[version] = tools[0].keys()
        result = w.call("get_gpu_inventory")
        assert ("structuredContent" in result) == (version >= "2025-06-18")
        assert json.loads(result["content"][0]["text"])["gpus"]
    assert "annotations" not in shapes["2024-11-05"]
    assert "outputSchema" not in shapes["2024-11-05"]
    assert "annotations" in shapes["2025-03-26"]
    assert "outputSchema" not in shapes["2025-03-26"]
    for version in ("2025-06-18", "2025-11-25"):
        assert {
            "name",
            "title",
            "description",
            "inputSchema",
            "outputSchema",
            "annotations",
        } <= set(shapes[version])


def test_ping_answers_empty_result_before_and_after_initialize(wire: Callable[..., Wire]) -> None:
    w = wire("--backend", "fake")
    assert w.request("ping")["result"] == {}
    w.initialize()
    assert w.request("ping", {"_meta": {"x": 1}})["result"] == {}


def test_tools_list_rejects_a_non_string_cursor(fake_wire: Wire) -> None:
    assert fake_wire.request("tools/list", {"cursor": 3})["error"]["code"] == INVALID_PARAMS
    assert fake_wire.request("tools/list", {"cursor": "x"})["result"]["tools"]


# --- error codes ---------------------------------------------------------------------------

# A line that does not parse is still answered with its id when the id can be read (the
# client waits on it); null otherwise.
ERROR_CASES: list[tuple[str, str, int, Any]] = [
    ("broken json", '{"jsonrpc": "2.0", "id": 1, "method": "ping"', PARSE_ERROR, 1),
    ("not utf-8", b'{"jsonrpc":"2.0","id":1,"method":"\xff"}'.decode("latin-1"), -1, 1),
    ("NaN", '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":NaN}}', PARSE_ERROR, 1),
    ("deep nesting", "[" * 100_000 + "]" * 100_000, PARSE_ERROR, None),
    ("batch", '[{"jsonrpc":"2.0","id":1,"method":"ping"}]', INVALID_REQUEST, None),
    ("empty batch", "[]", INVALID_REQUEST, None),
    ("scalar", "42", INVALID_REQUEST, None),
    ("string", '"ping"', INVALID_REQUEST, None),
    ("null", "null", INVALID_REQUEST, None),
    ("no jsonrpc", '{"id":7,"method":"ping"}', INVALID_REQUEST, 7),
    ("jsonrpc 1.0", '{"jsonrpc":"1.0","id":7,"method":"ping"}', INVALID_REQUEST, 7),
    ("null id", '{"jsonrpc":"2.0","id":null,"method":"ping"}', INVALID_REQUEST, None),
    ("float id", '{"jsonrpc":"2.0","id":1.5,"method":"ping"}', INVALID_REQUEST, None),
    ("bool id", '{"jsonrpc":"2.0","id":true,"method":"ping"}', INVALID_REQUEST, None),
    ("object id", '{"jsonrpc":"2.0","id":{},"method":"ping"}', INVALID_REQUEST, None),
    ("no method", '{"jsonrpc":"2.0","id":7}', INVALID_REQUEST, 7),
    ("method number", '{"jsonrpc":"2.0","id":7,"method":5}', INVALID_REQUEST, 7),
    ("params string", '{"jsonrpc":"2.0","id":7,"method":"ping","params":"x"}', INVALID_REQUEST, 7),
    ("params array", '{"jsonrpc":"2.0","id":7,"method":"ping","params":[1]}', INVALID_PARAMS, 7),
    (
        "unknown method",
        '{"jsonrpc":"2.0","id":"a","method":"resources/list"}',
        METHOD_NOT_FOUND,
        "a",
    ),
    ("discover", '{"jsonrpc":"2.0","id":7,"method":"server/discover"}', METHOD_NOT_FOUND, 7),
    (
        "unknown tool",
        '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"rm_rf"}}',
        INVALID_PARAMS,
        7,
    ),
    ("tool name missing", '{"jsonrpc":"2.0","id":7,"method":"tools/call"}', INVALID_PARAMS, 7),
    (
        "arguments not object",
        '{"jsonrpc":"2.0","id":7,"method":"tools/call",'
        '"params":{"name":"get_gpu_health","arguments":[60]}}',
        INVALID_PARAMS,
        7,
    ),
    (
        "argument wrong type",
        '{"jsonrpc":"2.0","id":7,"method":"tools/call",'
        '"params":{"name":"get_gpu_health","arguments":{"since_minutes":"60"}}}',
        INVALID_PARAMS,
        7,
    ),
    (
        "argument out of range",
        '{"jsonrpc":"2.0","id":7,"method":"tools/call",'
        '"params":{"name":"analyze_xid_errors","arguments":{"since_minutes":0}}}',
        INVALID_PARAMS,
        7,
    ),
    (
        "unknown argument",
        '{"jsonrpc":"2.0","id":7,"method":"tools/call",'
        '"params":{"name":"get_gpu_inventory","arguments":{"verbose":true}}}',
        INVALID_PARAMS,
        7,
    ),
]


@pytest.mark.parametrize(
    ("line", "code", "rid"),
    [pytest.param(line, code, rid, id=name) for name, line, code, rid in ERROR_CASES],
)
def test_bad_messages_get_the_right_error_and_the_session_goes_on(
    fake_wire: Wire, line: str, code: int, rid: Any
) -> None:
    raw: str | bytes = line
    if code == -1:  # invalid UTF-8 must arrive as bytes
        raw, code = line.encode("latin-1"), PARSE_ERROR
    before = fake_wire.count()
    fake_wire.send(raw)
    assert fake_wire.count() == before + 1, "exactly one answer"
    answer = fake_wire.last()
    assert answer["error"]["code"] == code, answer
    assert answer["id"] == rid and type(answer["id"]) is type(rid)
    assert answer["error"]["message"]
    assert fake_wire.request("ping")["result"] == {}


def test_invalid_arguments_say_what_is_wrong(fake_wire: Wire) -> None:
    response = fake_wire.request(
        "tools/call", {"name": "get_gpu_health", "arguments": {"since_minutes": -5, "x": 1}}
    )
    error = response["error"]
    assert error["code"] == INVALID_PARAMS
    assert "since_minutes must be > 0" in error["message"]
    assert "unknown property 'x'" in error["message"]
    assert len(error["data"]["problems"]) == 2


def test_unknown_tool_lists_the_tools_that_exist(fake_wire: Wire) -> None:
    error = fake_wire.request("tools/call", {"name": "nvidia_smi"})["error"]
    assert error["code"] == INVALID_PARAMS
    assert "Unknown tool: nvidia_smi" in error["message"]
    assert "get_gpu_health" in error["message"]


@pytest.mark.parametrize(
    "line",
    [
        '{"jsonrpc":"2.0","method":"notifications/initialized"}',
        '{"jsonrpc":"2.0","method":"notifications/whatever","params":{"a":1}}',
        '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":99}}',
        '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}',
        '{"jsonrpc":"2.0","method":"notifications/cancelled","params":[1]}',
        '{"jsonrpc":"2.0","method":"tools/list"}',
        '{"jsonrpc":"2.0","id":5,"result":{}}',
        '{"jsonrpc":"2.0","id":5,"error":{"code":1,"message":"x"}}',
        "   ",
        "",
    ],
)
def test_notifications_and_responses_get_no_answer(fake_wire: Wire, line: str) -> None:
    before = fake_wire.count()
    fake_wire.send(line)
    assert fake_wire.request("ping")["result"] == {}
    assert fake_wire.count() == before + 1  # only the ping's answer


def test_oversized_message_is_refused_without_parsing(fake_wire: Wire) -> None:
    line = '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' + "x" * MAX_MESSAGE_BYTES
    fake_wire.send(line + '"}}')
    answer = fake_wire.last()
    assert answer["id"] == 1  # read from the first bytes: the client waiting on 1 is answered
    assert answer["error"]["code"] == INVALID_REQUEST
    assert f"{MAX_MESSAGE_BYTES} byte limit" in answer["error"]["message"]
    assert fake_wire.request("ping")["result"] == {}


@pytest.mark.parametrize(
    ("head", "rid"),
    [
        (b'{"jsonrpc":"2.0","id":"a\\"b","method":"x","params":{"p":"', 'a"b'),
        (b'{"params":{"id":3,"s":"\\"id\\":5"},"id":-12,"pad":"', -12),
        (b'{"method":"id","params":["id",{"id":4}],"id":"z","pad":"', "z"),
        (b'{"id":1.5,"pad":"', None),  # not a valid JSON-RPC id
        (b'{"id":true,"pad":"', None),
        (b'[{"id":1},', None),  # a batch: no top-level id
        (b'{"pad":"' + b"x" * 1000, None),
        (b'\xff\xfe{"id":2', 2),
        (b'{"id": 99999999999999999999', None),  # beyond what we read as a number
    ],
)
def test_scan_id_finds_only_the_top_level_id(head: bytes, rid: Any) -> None:
    assert scan_id(head) == rid


def test_oversized_message_with_an_unreadable_id_is_answered_with_null(
    fake_wire: Wire,
) -> None:
    fake_wire.send('{"jsonrpc":"2.0","params":{"pad":"' + "x" * MAX_MESSAGE_BYTES + '"},"id":4}')
    answer = fake_wire.last()
    assert answer["id"] is None and answer["error"]["code"] == INVALID_REQUEST


def test_error_messages_echo_input_only_so_far(fake_wire: Wire) -> None:
    huge = "m" * 300_000
    answers = [
        fake_wire.request(huge),
        fake_wire.request("tools/call", {"name": huge}),
        fake_wire.request("tools/call", {"name": "get_gpu_health", "arguments": {huge: 1}}),
        fake_wire.request(
            "tools/call",
            {"name": "get_gpu_health", "arguments": {f"k{i}": i for i in range(5000)}},
        ),
    ]
    for answer in answers:
        size = len(json.dumps(answer))
        assert size < 4000, (size, json.dumps(answer)[:300])
    assert "…(300000 bytes)" in answers[0]["error"]["message"]
    assert "…(300000 bytes)" in answers[1]["error"]["message"]
    assert "more problem(s)" in answers[3]["error"]["message"]


def test_string_and_integer_ids_are_distinct_and_echoed(fake_wire: Wire) -> None:
    fake_wire.send('{"jsonrpc":"2.0","id":"1","method":"ping"}')
    fake_wire.send('{"jsonrpc":"2.0","id":1,"method":"ping"}')
    assert fake_wire.answers("1") and fake_wire.wait_for("1")["result"] == {}
    assert fake_wire.wait_for(1)["result"] == {}


# --- concurrency, deadlines, cancellation --------------------------------------------------


def test_pipelined_calls_are_each_answered_once(fake_wire: Wire) -> None:
    ids = [fake_wire.send_request("tools/call", {"name": n}) for n in TOOL_NAMES * 3]
    ids.append(fake_wire.send_request("ping"))
    for rid in ids:
        fake_wire.wait_for(rid)
    for rid in ids:
        assert len(fake_wire.answers(rid)) == 1
        answer = fake_wire.answers(rid)[0]
        assert "result" in answer and not answer["result"].get("isError"), answer


def test_hung_call_times_out_and_the_agent_stays_responsive(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    w = slow_wire(wire, scenario)
    started = time.monotonic()
    rid = w.send_request("tools/call", {"name": "get_gpu_health"})
    # Answered while the health call is stuck: out of order.
    assert w.request("ping")["result"] == {}
    assert not w.answers(rid)
    result = w.wait_for(rid, timeout=5)["result"]
    elapsed = time.monotonic() - started
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert "0.3 s" in text and "--call-timeout" in text and "NVML" in text
    assert 0.25 <= elapsed < 3
    assert w.session.hung >= 1
    assert w.request("tools/list")["result"]["tools"]


def test_cancelled_running_call_gets_no_answer(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    w = slow_wire(wire, scenario)
    rid = w.send_request("tools/call", {"name": "get_gpu_inventory"})
    w.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid}})
    time.sleep(0.6)  # past the deadline that would have produced an answer
    assert w.answers(rid) == []
    assert w.request("ping")["result"] == {}


def test_cancelled_queued_call_never_runs_or_answers(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    w = slow_wire(wire, scenario)
    running = [w.send_request("tools/call", {"name": "get_gpu_health"}) for _ in range(4)]
    queued = w.send_request("tools/call", {"name": "get_gpu_health"})
    w.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": queued}})
    for rid in running:
        assert w.wait_for(rid, timeout=5)["result"]["isError"] is True
    time.sleep(0.5)
    assert w.answers(queued) == []


def test_too_many_stuck_calls_are_refused_quickly(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    w = wire("--backend", "fake", "--scenario", scenario(SLOW), "--call-timeout", "0.5")
    for _ in range(MAX_HUNG // 4):  # in waves of four: a queued call would time out unstarted
        wave = [w.send_request("tools/call", {"name": "get_gpu_processes"}) for _ in range(4)]
        for rid in wave:
            w.wait_for(rid, timeout=10)
    assert w.session.hung == MAX_HUNG
    started = time.monotonic()
    result = w.call("get_gpu_health")
    assert time.monotonic() - started < 0.45  # refused at once, not after another deadline
    assert result["isError"] is True
    assert "still stuck" in result["content"][0]["text"]


def test_duplicate_in_flight_id_is_rejected(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    w = slow_wire(wire, scenario)
    call = {
        "jsonrpc": "2.0",
        "id": "dup",
        "method": "tools/call",
        "params": {"name": "get_gpu_health"},
    }
    w.send(call)
    w.send(call)
    first = w.wait_for("dup")
    assert (
        first["error"]["code"] == INVALID_REQUEST and "already in use" in first["error"]["message"]
    )
    time.sleep(0.6)
    assert len(w.answers("dup")) == 2  # the rejection, then the original call's timeout


def test_close_answers_every_accepted_request_first(fake_wire: Wire) -> None:
    ids = [fake_wire.send_request("tools/call", {"name": "get_gpu_health"}) for _ in range(6)]
    fake_wire.close()
    for rid in ids:
        assert len(fake_wire.answers(rid)) == 1
    before = fake_wire.count()
    fake_wire.send_request("ping")  # after close: ignored
    assert fake_wire.count() == before


def test_a_broken_writer_does_not_break_the_session(
    scenario: Callable[[dict[str, Any]], str],
) -> None:
    from agent.app import create_session

    def write(data: bytes) -> None:
        raise BrokenPipeError("reader went away")

    session = create_session(["--backend", "fake", "--scenario", scenario({})], write)
    session.feed(
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_gpu_health"}}'
    )
    session.feed('{"jsonrpc":"2.0","id":2,"method":"ping"}')
    session.close()  # returns: the answers were dropped, nothing hangs


def test_busy_queue_is_refused_with_internal_error(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str], monkeypatch: Any
) -> None:
    import agent.protocol

    monkeypatch.setattr(agent.protocol, "MAX_QUEUED", 2)
    w = slow_wire(wire, scenario)
    ids = [w.send_request("tools/call", {"name": "get_gpu_health"}) for _ in range(7)]
    refused = w.wait_for(ids[-1], timeout=1)
    assert refused["error"]["code"] == INTERNAL_ERROR
    assert "busy" in refused["error"]["message"]


# --- the argument validator ----------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "since_minutes": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
        "count": {"type": "integer", "minimum": 1},
        "mode": {"type": "string", "enum": ["a", "b"], "maxLength": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "flag": {"type": ["boolean", "null"]},
    },
    "required": ["mode"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"mode": "a"}, None),
        ({"mode": "a", "since_minutes": 10, "count": 2.0, "tags": [], "flag": None}, None),
        ({}, "arguments.mode is required"),
        ({"mode": "c"}, 'arguments.mode must be one of ["a", "b"]'),
        ({"mode": "a", "since_minutes": 0}, "arguments.since_minutes must be > 0"),
        ({"mode": "a", "since_minutes": 11}, "arguments.since_minutes must be ≤ 10"),
        ({"mode": "a", "since_minutes": True}, "must be number, got boolean"),
        ({"mode": "a", "count": 1.5}, "arguments.count must be integer, got number"),
        ({"mode": "a", "count": 0}, "arguments.count must be ≥ 1"),
        ({"mode": "a", "count": 10**400}, None),
        ({"mode": "a", "tags": ["x", 3]}, "arguments.tags[1] must be string, got integer"),
        ({"mode": "a", "flag": "yes"}, "arguments.flag must be boolean or null, got string"),
        ({"mode": "a", "extra": 1}, "unknown property 'extra'"),
        ([], "arguments must be object, got array"),
    ],
)
def test_validator(value: Any, problem: str | None) -> None:
    problems = validate(value, SCHEMA)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_non_finite_numbers_never_reach_the_wire() -> None:
    from agent.protocol import dumps, tool_result

    result = tool_result({"power_w": float("nan"), "x": [float("inf"), 1.5]}, LATEST_VERSION)
    wire = json.loads(dumps({"jsonrpc": "2.0", "id": 1, "result": result}))
    assert wire["result"]["structuredContent"] == {"power_w": None, "x": [None, 1.5]}
    assert json.loads(wire["result"]["content"][0]["text"]) == {"power_w": None, "x": [None, 1.5]}


def test_close_does_not_wait_for_a_cancelled_call(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    w = wire("--backend", "fake", "--scenario", scenario(SLOW), "--call-timeout", "20")
    rid = w.send_request("tools/call", {"name": "get_gpu_health"})
    w.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid}})
    started = time.monotonic()
    w.session.close()
    assert time.monotonic() - started < 1  # not the 20 s deadline
    assert w.session.busy == 1  # the thread is still inside the backend: left alone
    assert w.answers(rid) == []


class _Failing:
    """A provider whose tools fail the two ways a tool can: on purpose and by surprise."""

    timeout_hint = "hint."

    def definitions(self) -> list[dict[str, Any]]:
        schema = {"type": "object", "properties": {}}
        return [
            {"name": "expected", "inputSchema": schema},
            {"name": "surprise", "inputSchema": schema},
        ]

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        from agent.errors import KmsgUnavailable

        if name == "expected":
            raise KmsgUnavailable("cannot read the kernel log: needs CAP_SYSLOG")
        raise ZeroDivisionError("division by zero")

    def close(self) -> None:
        pass


def test_tool_failures_become_error_results(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.protocol import Session

    out: list[bytes] = []
    session = Session(_Failing(), out.append)
    for rid, name in ((1, "expected"), (2, "surprise")):
        call = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name}}
        session.feed(json.dumps(call))
    session.close()
    answers = {m["id"]: m["result"] for m in map(json.loads, out)}
    assert answers[1] == {
        "content": [{"type": "text", "text": "cannot read the kernel log: needs CAP_SYSLOG"}],
        "isError": True,
    }
    assert answers[2]["isError"] is True
    assert "ZeroDivisionError: division by zero" in answers[2]["content"][0]["text"]
    assert "failed unexpectedly" in capsys.readouterr().err  # the operator sees it too


# --- the worker pool and the deadline watcher ---------------------------------------------


class _Gated:
    """A provider whose ``block`` tool waits for ``gate``; records threads and concurrency."""

    timeout_hint = "hint."

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.threads: list[int] = []
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()
        self.closed = False

    def definitions(self) -> list[dict[str, Any]]:
        schema = {"type": "object", "properties": {}}
        return [{"name": "fast", "inputSchema": schema}, {"name": "block", "inputSchema": schema}]

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.threads.append(threading.get_ident())
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            if name == "block":
                self.gate.wait(30)
            return {"tool": name}
        finally:
            with self._lock:
                self.running -= 1

    def close(self) -> None:
        self.closed = True


class _Out:
    """Collects a Session's answers by id."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.answers: dict[Any, list[dict[str, Any]]] = {}

    def write(self, data: bytes) -> None:
        message = json.loads(data)
        with self.cond:
            self.answers.setdefault(message["id"], []).append(message)
            self.cond.notify_all()

    def wait(self, rid: Any, timeout: float = 5.0) -> dict[str, Any]:
        with self.cond:
            assert self.cond.wait_for(lambda: rid in self.answers, timeout), f"no answer to {rid}"
            return self.answers[rid][0]


def _call(session: Session, rid: int, name: str) -> None:
    session.feed(
        json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name}})
    )


def _pool_threads(old: set[int | None]) -> list[threading.Thread]:
    """Worker threads that did not exist when ``old`` was taken (other tests' stuck
    threads may still be winding down)."""
    return [t for t in threading.enumerate() if t.name == "gpu-agent worker" and t.ident not in old]


def _idents() -> set[int | None]:
    return {t.ident for t in threading.enumerate()}


def test_sequential_calls_reuse_one_worker_thread() -> None:
    provider, out = _Gated(), _Out()
    session = Session(provider, out.write)
    before = {t.ident for t in threading.enumerate()}
    for rid in range(30):
        _call(session, rid, "fast")
        assert out.wait(rid)["result"]["structuredContent"] == {"tool": "fast"}
    assert len(set(provider.threads)) == 1  # no thread per call
    new = [t for t in threading.enumerate() if t.ident not in before]
    assert len(new) <= 2  # the session's one worker (+ the deadline watcher, first time)
    assert not any(isinstance(t, threading.Timer) for t in threading.enumerate())
    session.close()
    assert provider.closed


def test_concurrency_is_bounded_and_the_queue_drains() -> None:
    provider, out = _Gated(), _Out()
    session = Session(provider, out.write)
    for rid in range(12):
        _call(session, rid, "block")
    deadline = time.monotonic() + 5
    while provider.running < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert provider.running == 4  # four workers busy, eight calls queued
    assert session.busy == 4
    provider.gate.set()
    for rid in range(12):
        assert out.wait(rid)["result"]["isError"] is False
    assert provider.peak == 4
    assert len(set(provider.threads)) <= 4
    session.close()


def test_a_stuck_worker_is_replaced_so_other_calls_still_run() -> None:
    provider, out = _Gated(), _Out()
    session = Session(provider, out.write, call_timeout=0.3, max_workers=1)
    _call(session, 1, "block")
    time.sleep(0.15)  # its deadline (from receipt) leaves room after call 1's expiry
    _call(session, 2, "fast")  # queued behind the stuck call
    stuck = out.wait(1)["result"]
    assert stuck["isError"] is True and "0.3 s" in stuck["content"][0]["text"]
    assert out.wait(2)["result"]["structuredContent"] == {"tool": "fast"}
    assert session.hung == 1 and session.busy == 1
    assert len(set(provider.threads)) == 2  # the replacement ran the second call
    provider.gate.set()  # the stuck call returns at last: its late result is dropped
    deadline = time.monotonic() + 5
    while session.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert session.hung == 0 and session.busy == 0
    assert len(out.answers[1]) == 1
    _call(session, 3, "fast")
    assert out.wait(3)["result"]["isError"] is False
    session.close()
    assert provider.closed  # nothing inside the backend any more


def test_one_watcher_keeps_every_sessions_deadlines() -> None:
    provider, out = _Gated(), _Out()
    sessions = [Session(provider, out.write, call_timeout=0.2 + i / 10) for i in range(3)]
    started = time.monotonic()
    for i, session in enumerate(sessions):
        _call(session, i, "block")
    took = []
    for i in range(3):
        out.wait(i)
        took.append(time.monotonic() - started)
    assert [round(t, 1) for t in took] == pytest.approx([0.2, 0.3, 0.4], abs=0.15)
    watchers = [t for t in threading.enumerate() if t.name == "gpu-agent deadlines"]
    assert len(watchers) == 1
    provider.gate.set()
    for session in sessions:
        session.close(grace=1)


def test_finished_calls_do_not_pile_up_in_the_deadline_heap() -> None:
    from agent.protocol import _WATCHER

    provider, out = _Gated(), _Out()
    session = Session(provider, out.write, call_timeout=600)
    for rid in range(1500):
        _call(session, rid, "fast")
        out.wait(rid)
    assert len(_WATCHER._heap) < 600  # compacted, not one entry per call for 10 minutes
    session.close()


def test_close_abandons_a_stuck_call_after_the_grace_not_the_deadline() -> None:
    old = _idents()
    provider, out = _Gated(), _Out()
    session = Session(provider, out.write, call_timeout=30, max_workers=1)
    _call(session, 1, "block")
    _call(session, 2, "fast")  # queued behind it: never starts
    _call(session, 3, "block")
    session.feed('{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}')
    started = time.monotonic()
    session.close(grace=0.3)
    assert 0.25 <= time.monotonic() - started < 2
    running = out.wait(1)["result"]
    assert running["isError"] is True
    assert "still running" in running["content"][0]["text"]
    assert "input closed" in running["content"][0]["text"]
    queued = out.wait(2)["result"]
    assert queued["isError"] is True and "had not started" in queued["content"][0]["text"]
    assert 3 not in out.answers  # cancelled: no answer, even at close
    assert session.busy == 1 and not provider.closed  # backend left alone under the thread
    provider.gate.set()
    deadline = time.monotonic() + 5
    while (session.busy or _pool_threads(old)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert session.busy == 0
    assert _pool_threads(old) == []  # the late thread retired instead of rejoining


def test_close_stops_idle_workers() -> None:
    old = _idents()
    provider, out = _Gated(), _Out()
    sessions = [Session(provider, out.write) for _ in range(5)]
    for i, session in enumerate(sessions):
        _call(session, i, "fast")
        out.wait(i)
    assert len(_pool_threads(old)) >= 5
    for session in sessions:
        session.close()
    deadline = time.monotonic() + 5
    while _pool_threads(old) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _pool_threads(old) == []


def test_idle_workers_retire(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.protocol

    monkeypatch.setattr(agent.protocol, "WORKER_IDLE_S", 0.1)
    old = _idents()
    provider, out = _Gated(), _Out()
    session = Session(provider, out.write)
    _call(session, 1, "fast")
    out.wait(1)
    deadline = time.monotonic() + 5
    while _pool_threads(old) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _pool_threads(old) == []
    _call(session, 2, "fast")  # a new worker starts on demand
    assert out.wait(2)["result"]["isError"] is False
    session.close()


def test_a_worker_that_cannot_start_fails_its_calls_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import agent.protocol

    real = agent.protocol._start_thread

    def refuse_workers(target: Callable[[], None], name: str) -> None:
        if name == "gpu-agent worker":
            raise RuntimeError("can't start new thread")
        real(target, name)

    monkeypatch.setattr(agent.protocol, "_start_thread", refuse_workers)
    provider, out = _Gated(), _Out()
    session = Session(provider, out.write, call_timeout=30)
    _call(session, 1, "fast")
    result = out.wait(1)["result"]
    assert result["isError"] is True
    assert "cannot start a thread" in result["content"][0]["text"]
    started = time.monotonic()
    session.close()
    assert time.monotonic() - started < 1  # nothing left outstanding
    monkeypatch.setattr(agent.protocol, "_start_thread", real)
    fresh = Session(provider, out.write)
    _call(fresh, 2, "fast")
    assert out.wait(2)["result"]["isError"] is False
    fresh.close()


# --- hardening (issue 17) ----------------------------------------------------------------

SURROGATE_PING = '{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}'


def test_an_id_with_a_lone_surrogate_is_answered_and_the_session_goes_on() -> None:
    provider, out = _Gated(), _Out()
    session = Session(provider, out.write)
    session.feed(SURROGATE_PING)
    assert out.wait("\ud800")["result"] == {}  # the same id back, as a \\u escape
    _call(session, 1, "fast")
    assert out.wait(1)["result"]["isError"] is False
    session.close()


def test_tool_calls_with_surrogate_ids_do_not_kill_the_workers() -> None:
    provider, out = _Gated(), _Out()
    session = Session(provider, out.write)
    rids = [f"\\ud8{n:02x}" for n in range(8)]  # more than MAX_WORKERS
    for rid in rids:
        session.feed(
            '{"jsonrpc":"2.0","id":"' + rid + '","method":"tools/call","params":{"name":"fast"}}'
        )
    for rid in rids:
        assert out.wait(json.loads(f'"{rid}"'))["result"]["isError"] is False
    for n in range(20):  # every worker still serves
        _call(session, n, "fast")
    for n in range(20):
        assert out.wait(n)["result"]["structuredContent"] == {"tool": "fast"}
    session.close()


class _Unencodable(_Gated):
    """Returns a result the JSON encoder cannot handle (a tool bug)."""

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        if name == "block":
            raise SystemExit(3)  # even this must not end a worker thread
        return {"tool": object()}


def test_a_tool_bug_costs_one_answer_never_a_worker() -> None:
    provider, out = _Unencodable(), _Out()
    session = Session(provider, out.write, max_workers=1)
    for rid in range(6):
        _call(session, rid, "fast" if rid % 2 else "block")
    for rid in range(6):
        result = out.wait(rid)["result"]
        assert result["isError"] is True
        assert "failed unexpectedly" in result["content"][0]["text"]
    assert session.busy == 0
    session.close()


def test_queued_calls_time_out_from_receipt_with_bounded_threads() -> None:
    """A stalled backend, --call-timeout 1, 60 pipelined calls: every call is answered
    about 1 s after it was received, and threads stay bounded (MAX_WORKERS + MAX_HUNG)."""
    provider, out = _Gated(), _Out()
    session = Session(provider, out.write, call_timeout=1.0)
    old = _idents()
    sent: dict[int, float] = {}
    answered: dict[int, float] = {}
    for rid in range(60):
        sent[rid] = time.monotonic()
        _call(session, rid, "block")
    peak = 0
    for rid in range(60):
        while rid not in answered:
            peak = max(peak, len(_pool_threads(old)))
            with out.cond:
                if rid in out.answers:
                    answered[rid] = time.monotonic()
                    break
                out.cond.wait(0.01)
    try:
        lags = [answered[rid] - sent[rid] for rid in range(60)]
        assert max(lags) < 1.6, lags  # was 15 s: queued calls waited for a worker
        assert peak <= 4 + MAX_HUNG, peak  # was 62 threads
        texts = [out.answers[rid][0]["result"]["content"][0]["text"] for rid in range(60)]
        assert all(out.answers[rid][0]["result"]["isError"] for rid in range(60))
        assert sum("did not start" in t for t in texts) >= 50
        assert all("--call-timeout" in t for t in texts)
    finally:
        provider.gate.set()
    deadline = time.monotonic() + 5
    while session.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    _call(session, 100, "fast")  # the stuck threads came back: calls run again
    assert out.wait(100)["result"]["structuredContent"] == {"tool": "fast"}
    session.close()
