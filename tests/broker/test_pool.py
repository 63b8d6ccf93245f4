"""NodePool over real agent subprocesses (MCP stdio): reuse, fan-out, deadlines,
cancellation, keepalive, idle close, re-open after failure, version skew."""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio
import pytest

from agent.catalog import TOOL_NAMES
from broker.errors import UnknownNode
from broker.fleet.pool import NodePool, NodeResult
from tests.broker.agents import LocalAgents

HUNG_NVML = {"faults": [{"gpu": 0, "kind": "slow_nvml", "seconds": 60}]}
# The agent answers a hung call itself after --call-timeout; until then it cannot exit.
HUNG_ARGS = ("--call-timeout", "2")
# Misbehaving "agents" that at least exit when their stdin closes.
SILENT = [sys.executable, "-c", "import sys; sys.stdin.read()"]
GARBAGE = [
    sys.executable,
    "-c",
    "print('Loading NVML...', flush=True); import sys; sys.stdin.read()",
]


async def until_closed(p: NodePool, limit_s: float = 5.0) -> None:
    """Wait until the pool holds no open session."""
    for _ in range(int(limit_s / 0.02)):
        if not p.stats()["open_sessions"]:
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"sessions still open after {limit_s} s: {p.stats()}")


def pool(agents: LocalAgents, **kwargs: Any) -> NodePool:
    return NodePool(connect=agents.connect, discover=agents.discover, **kwargs)


async def test_warm_session_is_reused(local_agents: LocalAgents) -> None:
    local_agents.add("n1", {"gpu_count": 3})
    async with pool(local_agents) as p:
        results = [await p.call("n1", "get_gpu_inventory", {}) for _ in range(3)]
        stats = p.stats()
    assert all(r.ok and r.error is None for r in results)
    assert results[0].result is not None and len(results[0].result["gpus"]) == 3
    assert local_agents.connects["n1"] == 1
    assert stats["opened"] == 1 and stats["open_sessions"] == 1 and stats["calls"] == 3


async def test_fan_out_keeps_order_and_reports_progress(local_agents: LocalAgents) -> None:
    names = ["n3", "n1", "n2"]
    for i, name in enumerate(names):
        local_agents.add(name, {"gpu_count": i + 1})
    seen: list[tuple[int, int, str]] = []

    async def progress(done: int, total: int, result: NodeResult) -> None:
        seen.append((done, total, result.node))

    async with pool(local_agents) as p:
        targets = await p.resolve(names)
        results = await p.fan_out(targets, "get_gpu_inventory", {}, on_progress=progress)
    assert [r.node for r in results] == names
    assert [len(r.result["gpus"]) for r in results if r.result] == [1, 2, 3]
    assert sorted(done for done, _, _ in seen) == [1, 2, 3]
    assert {total for _, total, _ in seen} == {3}
    assert {node for _, _, node in seen} == set(names)


async def test_unknown_node_is_an_input_error(local_agents: LocalAgents) -> None:
    local_agents.add("n1")
    async with pool(local_agents) as p:
        with pytest.raises(UnknownNode, match="nope") as info:
            await p.call("nope", "get_gpu_inventory", {})
        assert "n1" in str(info.value)  # the message lists the known nodes
        with pytest.raises(UnknownNode, match="ghost"):
            await p.resolve(["n1", "ghost"])
    assert "n1" not in local_agents.connects  # nothing was started


async def test_not_ready_node_is_reported_without_an_exec(local_agents: LocalAgents) -> None:
    local_agents.add("n1")
    local_agents.add("n2", ready=False, reason="agent pod k8s-gpu-mcp-agent-x is Pending")
    async with pool(local_agents) as p:
        ok, down = await p.fan_out(await p.resolve(["n1", "n2"]), "get_gpu_inventory", {})
    assert ok.ok
    assert not down.ok and down.error_kind == "not_ready"
    assert down.error is not None and "is Pending" in down.error
    assert "n2" not in local_agents.connects


async def test_version_skew_names_the_tool_and_agent_version(local_agents: LocalAgents) -> None:
    local_agents.add("old", {"disabled_tools": ["get_nvlink_topology"]})
    async with pool(local_agents) as p:
        result = await p.call("old", "get_nvlink_topology", {})
        tools = await p.list_tools("old")
        still = await p.call("old", "get_gpu_inventory", {})
    assert result.error_kind == "tool_missing"
    assert result.error is not None
    assert "get_nvlink_topology" in result.error and "version 0.1.0" in result.error
    assert "get_nvlink_topology" not in {t["name"] for t in tools}
    assert "get_gpu_inventory" in {t["name"] for t in tools}
    assert still.ok  # the session stays usable


@pytest.mark.parametrize("carried", ["0.1.0", "0.0.9"])
async def test_tools_are_listed_only_for_an_agent_of_another_version(
    local_agents: LocalAgents, monkeypatch: pytest.MonkeyPatch, carried: str
) -> None:
    """An agent of the version whose contract the broker carries is not asked for its
    tools at every opening; any other version is, and its listing is what counts."""
    import broker.fleet.pool as pool_module

    monkeypatch.setattr(pool_module, "AGENT_VERSION", carried)
    same = carried == "0.1.0"  # the local agents run this checkout's agent (0.1.0)
    local_agents.add("n1")
    async with pool(local_agents) as p:
        assert (await p.call("n1", "get_gpu_inventory", {})).ok
        catalog = p._sessions["n1"].catalog
        assert catalog is not None and catalog.assumed is same
        listed = await p.list_tools("n1")  # always the agent's own answer
        assert {t["name"] for t in listed} == set(TOOL_NAMES)
        after = p._sessions["n1"].catalog
        assert after is not None and not after.assumed


async def test_a_missing_tool_spares_the_calls_in_flight_beside_it(
    local_agents: LocalAgents,
) -> None:
    """explain_failure asks one node for several tools at once: the one its agent lacks
    fails alone, and the session is re-listed only once those calls are answered."""
    local_agents.add("old", {"disabled_tools": ["get_gpu_health"]})
    results: dict[str, NodeResult] = {}
    async with pool(local_agents) as p:
        await p.call("old", "get_gpu_inventory", {})  # warm: the calls below share it

        async def call(tool: str) -> None:
            results[tool] = await p.call("old", tool, {})

        async with anyio.create_task_group() as tg:
            for tool in ("analyze_xid_errors", "get_gpu_inventory", "get_gpu_health"):
                tg.start_soon(call, tool)
        after = await p.call("old", "get_gpu_processes", {})
    assert results["get_gpu_health"].error_kind == "tool_missing"
    assert results["analyze_xid_errors"].ok, results["analyze_xid_errors"].error
    assert results["get_gpu_inventory"].ok, results["get_gpu_inventory"].error
    assert after.ok
    assert local_agents.connects["old"] == 2  # re-listed once idle


async def test_bad_arguments_come_back_as_an_agent_error(local_agents: LocalAgents) -> None:
    local_agents.add("n1")
    async with pool(local_agents) as p:
        result = await p.call("n1", "analyze_xid_errors", {"since_minutes": "soon"})
        after = await p.call("n1", "get_gpu_inventory", {})
    assert not result.ok and result.error_kind == "agent_error"
    assert result.error is not None and "since_minutes" in result.error
    assert after.ok


async def test_idle_session_is_closed_and_reopened(local_agents: LocalAgents) -> None:
    local_agents.add("n1")
    async with pool(local_agents, idle_timeout=0.3, ping_interval=10) as p:
        assert (await p.call("n1", "get_gpu_inventory", {})).ok
        await until_closed(p)
        assert p.stats()["closed_idle"] == 1
        assert (await p.call("n1", "get_gpu_inventory", {})).ok
    assert local_agents.connects["n1"] == 2


async def test_idle_sessions_are_pinged(local_agents: LocalAgents) -> None:
    local_agents.add("n1")
    async with pool(local_agents, ping_interval=0.2, idle_timeout=30) as p:
        assert (await p.call("n1", "get_gpu_inventory", {})).ok
        await anyio.sleep(0.75)
        stats = p.stats()
    assert stats["pings"] >= 2
    assert stats["open_sessions"] == 1
    assert [m["method"] for m in local_agents.sent["n1"]].count("ping") == stats["pings"]


async def test_hung_agent_times_out_and_the_session_is_reset(local_agents: LocalAgents) -> None:
    local_agents.add("hung", HUNG_NVML, agent_args=HUNG_ARGS)
    local_agents.add("ok")
    async with pool(local_agents, call_timeout=1.0) as p:
        started = time.monotonic()
        hung, ok = await p.fan_out(await p.resolve(["hung", "ok"]), "get_gpu_inventory", {})
        elapsed = time.monotonic() - started
        assert ok.ok
        assert hung.error_kind == "timeout" and hung.error is not None
        assert "within 1 s (tool call)" in hung.error
        assert elapsed < 2.0
        # The hung session is dropped; the next call opens a fresh agent.
        await p.call("hung", "get_gpu_inventory", {})
    assert local_agents.connects["hung"] == 2
    sent = local_agents.sent["hung"]
    cancelled = [m for m in sent if m.get("method") == "notifications/cancelled"]
    calls = [m for m in sent if m.get("method") == "tools/call"]
    assert cancelled and cancelled[0]["params"]["requestId"] == calls[0]["id"]


async def test_agent_that_never_answers_cannot_hold_up_a_fan_out(
    local_agents: LocalAgents,
) -> None:
    local_agents.add("silent", command=SILENT)
    for name in ("a", "b"):
        local_agents.add(name)
    async with pool(local_agents, call_timeout=1.5) as p:
        started = time.monotonic()
        results = await p.fan_out(await p.resolve(["a", "silent", "b"]), "get_gpu_inventory", {})
        elapsed = time.monotonic() - started
    assert elapsed < 2.5
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error_kind == "timeout"
    assert results[1].error is not None and "opening" in results[1].error


async def test_garbage_on_stdout_is_a_protocol_error(local_agents: LocalAgents) -> None:
    local_agents.add("noisy", command=GARBAGE)
    async with pool(local_agents, call_timeout=10) as p:
        started = time.monotonic()
        result = await p.call("noisy", "get_gpu_inventory", {})
    assert result.error_kind == "protocol", result
    assert time.monotonic() - started < 5  # noticed at once, not at the deadline


async def test_dropped_stream_is_noticed_and_the_next_call_recovers(
    local_agents: LocalAgents,
) -> None:
    local_agents.add("n1")
    async with pool(local_agents) as p:
        assert (await p.call("n1", "get_gpu_inventory", {})).ok
        await local_agents.cut("n1")
        await until_closed(p)
        result = await p.call("n1", "get_gpu_inventory", {})
    assert result.ok
    assert local_agents.connects["n1"] == 2


async def test_quiet_dead_session_is_checked_before_a_call(local_agents: LocalAgents) -> None:
    local_agents.add("n1")
    async with pool(local_agents, ping_interval=0.4, call_timeout=3.0) as p:
        assert (await p.call("n1", "get_gpu_inventory", {})).ok
        local_agents.freeze("n1")  # half-open: nothing sent reaches the agent any more
        await anyio.sleep(0.65)  # the keepalive went unanswered: quiet > 1.5 ping_interval
        # Sent down the dead session, the call would time out; probed first, it succeeds.
        result = await p.call("n1", "get_gpu_inventory", {})
    assert result.ok, result
    assert local_agents.connects["n1"] == 2
    # The probe was a ping, and the call went down the fresh session, not the dead one.
    first = local_agents.sent["n1"]
    assert [m.get("method") for m in first].count("tools/call") == 2


async def test_cancelling_the_caller_cancels_the_node_calls(local_agents: LocalAgents) -> None:
    local_agents.add("slow", HUNG_NVML, agent_args=HUNG_ARGS)
    local_agents.add("fast")
    async with pool(local_agents, call_timeout=30) as p:
        await p.call("fast", "get_gpu_inventory", {})  # warm one session
        started = time.monotonic()
        with anyio.move_on_after(0.8):
            await p.fan_out(await p.resolve(["slow", "fast"]), "get_gpu_inventory", {})
        assert time.monotonic() - started < 1.5
        await anyio.sleep(0.1)  # let the courtesy cancel reach the transport
        assert (await p.call("fast", "get_gpu_inventory", {})).ok
        assert p.stats()["open_sessions"] == 2  # a cancelled call does not break a session
    sent = local_agents.sent["slow"]
    call_ids = [m["id"] for m in sent if m.get("method") == "tools/call"]
    cancels = [
        m["params"]["requestId"] for m in sent if m.get("method") == "notifications/cancelled"
    ]
    assert call_ids and cancels == call_ids


async def test_closing_the_pool_mid_call_gives_cancelled_results(
    local_agents: LocalAgents,
) -> None:
    local_agents.add("slow", HUNG_NVML, agent_args=HUNG_ARGS)
    results: list[NodeResult] = []
    async with pool(local_agents, call_timeout=30) as p:

        async def sweep() -> None:
            results.extend(await p.fan_out(await p.resolve(["slow"]), "get_gpu_inventory", {}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(sweep)
            await anyio.sleep(0.8)
            started = time.monotonic()
            await p.aclose()
        assert time.monotonic() - started < 6
    assert [r.error_kind for r in results] == ["cancelled"]


async def test_open_concurrency_is_bounded(local_agents: LocalAgents) -> None:
    names = [f"n{i}" for i in range(4)]
    for name in names:
        local_agents.add(name)
    peak = 0
    inner = local_agents.connect

    def counting(target: Any) -> Any:
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def cm() -> Any:
            nonlocal peak
            counting.live += 1  # type: ignore[attr-defined]
            peak = max(peak, counting.live)  # type: ignore[attr-defined]
            try:
                await anyio.sleep(0.1)
                async with inner(target) as streams:
                    counting.live -= 1  # type: ignore[attr-defined]
                    yield streams
            finally:
                pass

        return cm()

    counting.live = 0  # type: ignore[attr-defined]
    async with NodePool(connect=counting, discover=local_agents.discover, max_concurrency=2) as p:
        results = await p.fan_out(await p.resolve(names), "get_gpu_inventory", {})
    assert all(r.ok for r in results)
    assert peak == 2


def test_pool_refuses_nonsense_settings(local_agents: LocalAgents) -> None:
    def bad(**options: Any) -> None:
        with pytest.raises(ValueError):
            NodePool(connect=local_agents.connect, discover=local_agents.discover, **options)

    bad(max_concurrency=0)
    bad(call_timeout=0)
    bad(sweep_timeout=0)
    bad(max_sessions=0)


async def test_calls_need_an_open_pool(local_agents: LocalAgents) -> None:
    local_agents.add("n1")
    p = pool(local_agents)
    with pytest.raises(RuntimeError, match="async with"):
        await p.call("n1", "get_gpu_inventory", {})


async def test_call_joining_an_open_that_then_fails_opens_its_own(
    local_agents: LocalAgents,
) -> None:
    """A call that arrives while an earlier, doomed open is in flight (the fault has
    since been healed) gets its own open instead of the stale failure."""
    from contextlib import asynccontextmanager

    from broker.errors import ApiUnavailable

    local_agents.add("n1")
    inner = local_agents.connect
    opens = 0

    @asynccontextmanager
    async def flaky(target: Any) -> Any:
        nonlocal opens
        opens += 1
        if opens == 1:  # the first open is slow and then fails
            await anyio.sleep(0.3)
            raise ApiUnavailable("node n1: the API server answered 500 (simulated)")
        async with inner(target) as streams:
            yield streams

    results: dict[str, NodeResult] = {}
    async with NodePool(connect=flaky, discover=local_agents.discover) as p:

        async def first() -> None:
            results["first"] = await p.call("n1", "get_gpu_inventory", {})

        async def second() -> None:
            await anyio.sleep(0.1)  # joins the first open while it is still in flight
            results["second"] = await p.call("n1", "get_gpu_inventory", {})

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(second)
    assert not results["first"].ok and "500" in (results["first"].error or "")
    assert results["second"].ok, results["second"].error
    assert opens == 2


def slow_connect(agents: LocalAgents, delay_s: float, only: set[str] | None = None) -> Any:
    """The agents' transport, each open (of ``only`` those nodes) taking ``delay_s``
    longer: a busy API server."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def connect(target: Any) -> Any:
        if only is None or target.node in only:
            await anyio.sleep(delay_s)
        async with agents.connect(target) as streams:
            yield streams

    return connect


async def test_waiting_for_an_open_slot_does_not_count_against_a_node(
    local_agents: LocalAgents,
) -> None:
    """One open at a time, each 0.8 s: the last node waits ~3 s for its turn, longer than
    the 2.5 s call timeout, and still answers (its own open and call take < 2.5 s)."""
    names = [f"n{i}" for i in range(4)]
    for name in names:
        local_agents.add(name)
    connect = slow_connect(local_agents, 0.8)
    async with NodePool(
        connect=connect, discover=local_agents.discover, max_concurrency=1, call_timeout=2.5
    ) as p:
        started = time.monotonic()
        results = await p.fan_out(await p.resolve(names), "get_gpu_inventory", {})
        elapsed = time.monotonic() - started
    assert elapsed > 2.5  # the queue really was longer than one node's deadline
    assert [r.error for r in results] == [None] * 4


async def test_sweep_deadline_reports_queued_nodes_apart_from_silent_ones(
    local_agents: LocalAgents,
) -> None:
    local_agents.add("warm")
    local_agents.add("hung", HUNG_NVML, agent_args=HUNG_ARGS)
    for name in ("q1", "q2"):
        local_agents.add(name)
    connect = slow_connect(local_agents, 1.5, only={"q1", "q2"})
    async with NodePool(
        connect=connect,
        discover=local_agents.discover,
        max_concurrency=1,
        call_timeout=2.0,
        sweep_timeout=1.2,
    ) as p:
        assert (await p.call("warm", "get_gpu_inventory", {})).ok
        await p.list_tools("hung")  # open, not called yet
        started = time.monotonic()
        targets = await p.resolve(["warm", "hung", "q1", "q2"])
        warm, hung, q1, q2 = await p.fan_out(targets, "get_gpu_inventory", {})
        elapsed = time.monotonic() - started
    assert warm.ok  # a warm session needs no slot
    assert hung.error_kind == "timeout"  # reached, but did not answer in time
    # q1 was still opening (within its own deadline), q2 never got its turn: not reached.
    assert (q1.error_kind, q2.error_kind) == ("queued", "queued")
    assert q2.error is not None and "not reached within the sweep's 1.2 s" in q2.error
    assert "did not fail" in q2.error
    assert elapsed < 2.0


async def test_sessions_beyond_the_cap_close_least_recently_used_first(
    local_agents: LocalAgents,
) -> None:
    for name in ("n1", "n2", "n3"):
        local_agents.add(name)
    async with pool(local_agents, max_sessions=2) as p:
        for name in ("n1", "n2", "n1", "n3"):  # n2 is now the least recently used
            assert (await p.call(name, "get_gpu_inventory", {})).ok
        await until(lambda: p.stats()["open_sessions"] == 2)
        assert (await p.call("n1", "get_gpu_inventory", {})).ok
        stats = p.stats()
    assert stats["evicted"] == 1
    assert local_agents.connects == {"n1": 1, "n2": 1, "n3": 1}  # n1 stayed warm


async def test_sessions_stay_warm_up_to_the_cluster_size(local_agents: LocalAgents) -> None:
    names = [f"n{i}" for i in range(3)]
    for name in names:
        local_agents.add(name)
    async with pool(local_agents) as p:
        for _ in range(2):
            results = await p.fan_out(await p.resolve(names), "get_gpu_inventory", {})
            assert all(r.ok for r in results)
        stats = p.stats()
    assert stats["open_sessions"] == 3 and stats["opened"] == 3 and stats["evicted"] == 0


async def until(check: Any, limit_s: float = 5.0) -> None:
    for _ in range(int(limit_s / 0.02)):
        if check():
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"not true within {limit_s} s")


async def test_calls_in_flight_are_bounded_and_waiting_does_not_count(
    local_agents: LocalAgents,
) -> None:
    names = [f"n{i}" for i in range(3)]
    for name in names:
        local_agents.add(name)
    async with pool(local_agents, max_in_flight=1, call_timeout=5.0) as p:
        targets = await p.resolve(names)
        async with anyio.create_task_group() as tg:  # two sweeps share the one slot

            async def sweep(into: list[NodeResult]) -> None:
                into.extend(await p.fan_out(targets, "get_gpu_inventory", {}))

            a: list[NodeResult] = []
            b: list[NodeResult] = []
            tg.start_soon(sweep, a)
            tg.start_soon(sweep, b)
    assert [r.ok for r in a + b] == [True] * 6, [r.error for r in a + b]
